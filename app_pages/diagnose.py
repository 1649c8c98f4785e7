"""Diagnose: upload dermoscopic images, read each melanoma probability and what drove it."""

from datetime import datetime

import numpy as np
import pandas as pd
import streamlit as st

import ui
from melanoma.audit import Action, Method, Model, Reading
from melanoma.cases import decode_upload, digest
from melanoma.combined import COMBINED_NAME, combine
from melanoma.diagnoses import short_differential
from melanoma.dicom import encapsulated_pdf
from melanoma.fhir import FhirCase, ModelFacts, bundle_file_name, bundle_json
from melanoma.images import IMAGE_EXTENSIONS, ImageError, display_copy
from melanoma.render import (
    DIVERGING_COLOURMAPS,
    SEQUENTIAL_COLOURMAPS,
    colour_bar,
    overlay,
)
from melanoma.report import CaseReport, ModelReading, case_report_pdf

st.title("Diagnose")
st.info(ui.DISCLAIMER, icon="⚕️")
models = ui.available_models()
ui.prepare_in_background()
ALL = "All installed models, side by side"
by_name = {entry.name: entry for entry in models}
combined_spec = ui.combined_spec()  # read once per page run, not once per image
choice = st.selectbox(
    "Model",
    [*ui.readings_best_first(models, combined_spec), ALL],
    format_func=lambda name: name if name == ALL else ui.describe_reading(name, models, combined_spec),
)
if choice == ALL:
    chosen = models
elif choice == COMBINED_NAME:
    chosen = [by_name[member] for member in combined_spec.members]
else:
    chosen = [by_name[choice]]

uploads = st.file_uploader(
    "Dermoscopic images (JPEG, PNG, BMP, TIFF, GIF, WebP, DICOM)",
    accept_multiple_files=True,
    type=[extension.lstrip(".") for extension in IMAGE_EXTENSIONS],
    help="Images stay in this server's memory: nothing is written to disk or sent elsewhere.",
)
if not uploads:
    st.caption("Upload one or more images to see the melanoma probability and the regions that drove it.")
    st.stop()
chosen = ui.loaded(chosen)

# Decode every file; a bad file is reported alone and the others are still scored.
cases = []
for upload in uploads:
    data = upload.getvalue()
    decoded = decode_upload(data, upload.name)
    if isinstance(decoded, ImageError):
        st.error(f"{decoded} This file was skipped; the other files are scored.")
    else:
        cases.append((upload.name, digest(data), decoded))
if not cases:
    st.stop()

progress = st.progress(0.0, text="Scoring images…")
rows = []
for index, (name, key, decoded) in enumerate(cases):
    row = {"File": name}
    decisions = [ui.decision(key, entry.name, decoded.pixels) for entry in chosen]
    for result in decisions:
        row[f"{result.model} probability"] = result.probability if result.assessed else None
        row[f"{result.model} decision"] = result.verdict
        if result.skin_cancer is not None:
            row[f"{result.model} skin cancer"] = result.skin_cancer_verdict
            row[f"{result.model} differential"] = short_differential(result.differential)
    recorded = [Reading.of(d, Model(d.model, by_name[d.model].card["sha256"])) for d in decisions]
    if len(decisions) > 1:
        reading = combine(decisions, combined_spec)
        row["combined probability"] = reading.probability if reading.assessed else None
        row["combined decision"] = reading.verdict
        row["models disagree"] = reading.disagreement
        recorded.append(Reading.of(reading, Model(COMBINED_NAME, None)))
    ui.audit(Action.READING, sha256=key, readings=recorded)  # before anything of it is shown
    rows.append(row)
    progress.progress((index + 1) / len(cases), text=f"Scored {index + 1} of {len(cases)} images")
progress.empty()

table = pd.DataFrame(rows)
probability_columns = [column for column in table.columns if column.endswith(" probability")]
st.subheader("Results")
# Shown in percent with one decimal on every row, as the detail view's metric (70.9%); the CSV
# below keeps probabilities from 0 to 1.
selection = st.dataframe(
    table.assign(**{column: table[column] * 100 for column in probability_columns}),
    hide_index=True,
    on_select="rerun",
    selection_mode="single-row",
    key="results",
    column_config={
        column: st.column_config.ProgressColumn(column, format="%.1f%%", min_value=0.0, max_value=100.0)
        for column in probability_columns
    },
)
st.download_button(
    "Download results (CSV)",
    table.to_csv(index=False).encode(),
    "melanoma_results.csv",
    "text/csv",
    **ui.audited(
        Action.RESULTS_DOWNLOAD, images=len(cases), models=[Model(entry.name, entry.card["sha256"]) for entry in chosen]
    ),
)

selected_rows = selection.selection.rows if selection else []
case_index = selected_rows[0] if selected_rows else len(cases) - 1  # the newest upload by default
if len(cases) > 1:
    st.caption("Select a row to open its detail view.")
name, key, decoded = cases[case_index]

st.subheader(f"Detail: {name}")
for note in decoded.notes:
    st.caption(f"Note: {note}.")
if decoded.dicom is not None:
    st.caption(decoded.dicom.summary())
    if st.toggle(
        "Show the patient's identity from the DICOM file",
        key=f"identity-{key}",
        help="Off by default: the name, ID and birth date stay in the file unless you ask.",
    ):
        identity = decoded.dicom.identity
        st.write(
            f"Patient {identity.patient_name or '(no name)'}, ID {identity.patient_id or '(none)'}, "
            f"born {identity.birth_date or '(not given)'}"
        )
with st.expander("Explanation settings", expanded=False):
    method = st.radio("Map", ["Occlusion sensitivity", "Grad-CAM"], horizontal=True)
    patch_size = st.slider("Occlusion patch size (pixels of the model input)", 8, 64, 20, step=2)
    fine = st.checkbox(
        "Fine occlusion map: 16-pixel patches every 4 pixels, averaged (slower; shown after the map above)", value=False
    )
    opacity = st.slider("Overlay opacity", 0.0, 1.0, 0.5, step=0.05)
    colourmaps = DIVERGING_COLOURMAPS if method == "Occlusion sensitivity" else tuple(SEQUENTIAL_COLOURMAPS)
    colourmap = st.selectbox("Colour map", colourmaps)
    output = ui.MELANOMA_OUTPUT
    if any(entry.serving.is_diagnosis for entry in chosen):
        output = st.radio(
            "Explain",
            [ui.MELANOMA_OUTPUT, ui.MALIGNANT_OUTPUT],
            horizontal=True,
            format_func=lambda o: (
                "melanoma probability" if o == ui.MELANOMA_OUTPUT else "skin-cancer probability (diagnosis models)"
            ),
            help="A diagnosis model's map can explain P(melanoma) or P(any skin cancer); "
            "melanoma models always explain the melanoma probability.",
        )

reading = None
if len(chosen) > 1:
    reading = combine([ui.decision(key, entry.name, decoded.pixels) for entry in chosen], combined_spec)
    show = st.warning if not reading.assessed or reading.disagreement else st.error if reading.melanoma else st.info
    show(reading.summary())

signed = method == "Occlusion sensitivity"
final_map = ui.occlusion_stages(chosen[0], patch_size, fine)[-1] if signed else None  # the same grid for every model
described = f"{method}, fine map (stride {final_map.stride})" if final_map and final_map.stride else method
readings, decisions = [], []
shown = display_copy(decoded.pixels)
models_used = [Model(entry.name, entry.card["sha256"]) for entry in chosen]
ui.audit(Action.EXPLANATION, sha256=key, models=models_used, method=Method.OCCLUSION if signed else Method.GRAD_CAM)
for column, entry in zip(st.columns(len(chosen)), chosen):
    with column:
        result = ui.decision(key, entry.name, decoded.pixels)
        if result.assessed:
            st.metric(f"{entry.name}: melanoma probability", f"{result.probability:.1%}")
            (st.error if result.melanoma else st.success)(result.summary())
            if result.skin_cancer is not None:
                (st.error if result.skin_cancer else st.success)(result.skin_cancer_summary())
                st.markdown(result.differential_text())
            st.caption(result.calibration_meaning())
            st.caption(result.threshold_meaning())
        else:
            st.metric(f"{entry.name}: melanoma probability", "not assessed")
            st.warning(result.summary())
        left, right = st.columns(2)
        left.image(shown, caption="Uploaded image", width="stretch")
        placeholder = right.empty()
        if signed:
            # Progressive: a coarse preview within moments, then the exact map, then the fine one when asked.
            stages = ui.occlusion_stages(entry, patch_size, fine)
            for stage in stages:
                grid = f"patch {stage.patch_size}" + (f", stride {stage.stride}" if stage.stride else "")
                with st.spinner(f"Occlusion sensitivity for {entry.name} ({stage.label} map: {grid})…"):
                    scores = ui.occlusion(key, entry.name, stage.patch_size, decoded.pixels, stage.stride, output)
                if stage is not stages[-1]:
                    placeholder.image(
                        overlay(shown, scores, opacity, colourmap, signed=True),
                        width="stretch",
                        caption=f"{stage.label.capitalize()} map ({grid}); the next one is on its way…",
                    )
        else:
            with st.spinner(f"Grad-CAM for {entry.name}…"):
                scores = ui.gradcam(key, entry.name, decoded.pixels, output)
        blended = overlay(shown, scores, opacity, colourmap, signed=signed)
        target = "skin cancer" if output == ui.MALIGNANT_OUTPUT and entry.serving.is_diagnosis else "melanoma"
        placeholder.image(
            blended,
            caption=f"{described} overlay" + (" (skin-cancer output)" if target != "melanoma" else ""),
            width="stretch",
        )
        st.image(colour_bar(colourmap, signed), width="stretch")
        if signed:
            scale = float(np.abs(scores).max())
            if scale < 0.0005:
                st.caption(
                    f"No single {final_map.patch_size}-pixel patch moves the probability by 0.001 or more: "
                    "the output does not rest on any one region at this patch size. Try a larger patch or Grad-CAM."
                )
            else:
                st.caption(
                    f"Blue: greying this region out raises the probability (it argues against {target}). "
                    f"Red: greying it out lowers the probability (it supports {target}). Full scale ±{scale:.3f}."
                )
        elif scores.max() == 0:
            st.caption(
                f"No region raises the {target} output (Grad-CAM is zero everywhere), as for an image the model "
                f"finds clearly not {target}."
            )
        else:
            st.caption(f"Dark to bright: how strongly each region drove the {target} output (Grad-CAM, relative).")
        st.download_button(
            f"Download overlay ({entry.name})",
            ui.png_bytes(blended),
            f"{name.rsplit('.', 1)[0]}_{entry.name}_overlay.png",
            "image/png",
            key=f"download-{entry.name}",
        )
        readings.append(ModelReading.from_decision(result, entry.card, blended))
        decisions.append(result)

# One report per case, covering every chosen model: the record a clinician files for this lesion.
st.subheader("Report")
saved_notes = st.session_state.setdefault("case_notes", {})  # image digest -> notes, kept while other cases are viewed
if f"notes-{key}" not in st.session_state:
    st.session_state[f"notes-{key}"] = saved_notes.get(key, "")
saved_notes[key] = st.text_area(
    "Clinician's notes for the report",
    key=f"notes-{key}",
    max_chars=2000,
    help="Kept in this session's memory only; they go into the PDF report and nowhere else.",
)
created = datetime.now().astimezone()
report = CaseReport(
    name,
    shown,
    tuple(readings),
    described,
    final_map.patch_size if signed else None,
    colourmap,
    opacity,
    created,
    ui.DISCLAIMER,
    saved_notes[key],
    reading.summary() if reading is not None else None,
    decoded.notes,
)
pdf = case_report_pdf(report)
download_recorded = ui.audited(Action.REPORT_DOWNLOAD, sha256=key, models=models_used)
st.download_button(
    "Download report (PDF)",
    pdf,
    f"{name.rsplit('.', 1)[0]}_report.pdf",
    "application/pdf",
    key=f"report-{key}",
    **download_recorded,
    help="One page: the image and its overlays, each model's reading, your notes and the disclaimer.",
)
case = FhirCase(
    tuple((d, ModelFacts.from_card(entry.card, entry.metrics)) for d, entry in zip(decisions, chosen)),
    created,
    pdf,
    saved_notes[key],
    reading,
    decoded.dicom,
)
st.download_button(
    "Download for the health record (FHIR R4 Bundle)",
    bundle_json(case),
    bundle_file_name(name, decoded.dicom),
    "application/fhir+json",
    key=f"fhir-{key}",
    **download_recorded,
    help="A preliminary DiagnosticReport with an Observation and a Device per model and the PDF "
    "attached, for an electronic health record that takes FHIR R4.",
)
if decoded.dicom is not None:
    try:
        encapsulated = encapsulated_pdf(pdf, decoded.dicom, created)
    except ValueError as error:
        st.caption(f"No DICOM report: {error}")
    else:
        st.download_button(
            "Download report for PACS (DICOM Encapsulated PDF, same study)",
            encapsulated.data,
            encapsulated.file_name,
            "application/dicom",
            key=f"dicom-{key}",
            **download_recorded,
            help="The PDF as a new series in the image's study, so the archive files it beside the image.",
        )
