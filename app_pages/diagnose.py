"""Diagnose: upload dermoscopic images, read each melanoma probability and what drove it."""

from datetime import datetime

import numpy as np
import pandas as pd
import streamlit as st

import ui
from melanoma.cases import decode_upload, digest
from melanoma.combined import combine
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
choice = st.selectbox("Model", [*by_name, ALL], format_func=lambda name: name if name == ALL else ui.describe(by_name[name]))
chosen = models if choice == ALL else [by_name[choice]]

uploads = st.file_uploader("Dermoscopic images (JPEG, PNG, BMP, TIFF, GIF, WebP)", accept_multiple_files=True,
                           type=[extension.lstrip(".") for extension in IMAGE_EXTENSIONS],
                           help="Images stay in this server's memory: nothing is written to disk or sent elsewhere.")
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

combined_spec = ui.combined_spec()  # read once per page run, not once per image
progress = st.progress(0.0, text="Scoring images…")
rows = []
for index, (name, key, decoded) in enumerate(cases):
    row = {"File": name}
    decisions = [ui.decision(key, entry.name, decoded.pixels) for entry in chosen]
    for result in decisions:
        row[f"{result.model} probability"] = result.probability if result.assessed else None
        row[f"{result.model} decision"] = ("not assessed: not a dermoscopic lesion image" if not result.assessed
                                           else "suspicious" if result.melanoma else "not flagged")
    if len(decisions) > 1:
        reading = combine(decisions, combined_spec)
        row["combined probability"] = reading.probability if reading.assessed else None
        row["combined decision"] = ("not assessed" if not reading.assessed else "no validated threshold" if reading.melanoma is None
                                    else "suspicious" if reading.melanoma else "not flagged")
        row["models disagree"] = reading.disagreement
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
    hide_index=True, on_select="rerun", selection_mode="single-row", key="results",
    column_config={column: st.column_config.ProgressColumn(column, format="%.1f%%", min_value=0.0, max_value=100.0)
                   for column in probability_columns},
)
st.download_button("Download results (CSV)", table.to_csv(index=False).encode(), "melanoma_results.csv", "text/csv")

selected_rows = selection.selection.rows if selection else []
case_index = selected_rows[0] if selected_rows else len(cases) - 1  # the newest upload by default
if len(cases) > 1:
    st.caption("Select a row to open its detail view.")
name, key, decoded = cases[case_index]

st.subheader(f"Detail: {name}")
for note in decoded.notes:
    st.caption(f"Note: {note}.")
with st.expander("Explanation settings", expanded=False):
    method = st.radio("Map", ["Occlusion sensitivity", "Grad-CAM"], horizontal=True)
    patch_size = st.slider("Occlusion patch size (pixels of the model input)", 8, 64, 20, step=2)
    fine = st.checkbox("Fine occlusion map: 16-pixel patches every 4 pixels, averaged (slower; shown after the map above)",
                       value=False)
    opacity = st.slider("Overlay opacity", 0.0, 1.0, 0.5, step=0.05)
    colourmaps = DIVERGING_COLOURMAPS if method == "Occlusion sensitivity" else tuple(SEQUENTIAL_COLOURMAPS)
    colourmap = st.selectbox("Colour map", colourmaps)

reading = None
if len(chosen) > 1:
    reading = combine([ui.decision(key, entry.name, decoded.pixels) for entry in chosen], combined_spec)
    show = st.warning if not reading.assessed or reading.disagreement else st.error if reading.melanoma else st.info
    show(reading.summary())

signed = method == "Occlusion sensitivity"
final_map = ui.occlusion_stages(chosen[0], patch_size, fine)[-1] if signed else None  # the same grid for every model
described = f"{method}, fine map (stride {final_map.stride})" if final_map and final_map.stride else method
readings = []
shown = display_copy(decoded.pixels)
for column, entry in zip(st.columns(len(chosen)), chosen):
    with column:
        result = ui.decision(key, entry.name, decoded.pixels)
        if result.assessed:
            st.metric(f"{entry.name}: melanoma probability", f"{result.probability:.1%}")
            (st.error if result.melanoma else st.success)(result.summary())
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
                    scores = ui.occlusion(key, entry.name, stage.patch_size, decoded.pixels, stage.stride)
                if stage is not stages[-1]:
                    placeholder.image(overlay(shown, scores, opacity, colourmap, signed=True), width="stretch",
                                      caption=f"{stage.label.capitalize()} map ({grid}); the next one is on its way…")
        else:
            with st.spinner(f"Grad-CAM for {entry.name}…"):
                scores = ui.gradcam(key, entry.name, decoded.pixels)
        blended = overlay(shown, scores, opacity, colourmap, signed=signed)
        placeholder.image(blended, caption=f"{described} overlay", width="stretch")
        st.image(colour_bar(colourmap, signed), width="stretch")
        if signed:
            scale = float(np.abs(scores).max())
            if scale < 0.0005:
                st.caption(f"No single {final_map.patch_size}-pixel patch moves the probability by 0.001 or more: the output does not "
                           "rest on any one region at this patch size. Try a larger patch or Grad-CAM.")
            else:
                st.caption(f"Blue: greying this region out raises the probability (it argues against melanoma). "
                           f"Red: greying it out lowers the probability (it supports melanoma). Full scale ±{scale:.3f}.")
        elif scores.max() == 0:
            st.caption("No region raises the melanoma output (Grad-CAM is zero everywhere), as for an image the model "
                       "finds clearly not melanoma.")
        else:
            st.caption("Dark to bright: how strongly each region drove the melanoma output (Grad-CAM, relative).")
        st.download_button(f"Download overlay ({entry.name})", ui.png_bytes(blended), f"{name.rsplit('.', 1)[0]}_{entry.name}_overlay.png",
                           "image/png", key=f"download-{entry.name}")
        readings.append(ModelReading.from_decision(result, entry.card, blended))

# One report per case, covering every chosen model: the record a clinician files for this lesion.
st.subheader("Report")
saved_notes = st.session_state.setdefault("case_notes", {})  # image digest -> notes, kept while other cases are viewed
if f"notes-{key}" not in st.session_state:
    st.session_state[f"notes-{key}"] = saved_notes.get(key, "")
saved_notes[key] = st.text_area("Clinician's notes for the report", key=f"notes-{key}", max_chars=2000,
                                help="Kept in this session's memory only; they go into the PDF report and nowhere else.")
report = CaseReport(name, shown, tuple(readings), described, final_map.patch_size if signed else None, colourmap, opacity,
                    datetime.now().astimezone(), ui.DISCLAIMER, saved_notes[key],
                    reading.summary() if reading is not None else None, decoded.notes)
st.download_button("Download report (PDF)", case_report_pdf(report), f"{name.rsplit('.', 1)[0]}_report.pdf",
                   "application/pdf", key=f"report-{key}",
                   help="One page: the image and its overlays, each model's reading, your notes and the disclaimer.")
