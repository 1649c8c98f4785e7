"""Diagnose: upload dermoscopic images, read each melanoma probability and what drove it.

The probability comes first: every image's reading, the results table and the chosen case's
verdicts are shown before this page starts a map, and a map anywhere on the server waits while any
session's reading is pending (ui.PRIORITY). Downloads are built only when asked for, and recorded
in the audit trail before they leave the server (ui.recorded).
"""

import functools
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

import numpy as np
import pandas as pd
import streamlit as st

import ui
from melanoma.audit import Action, Method, Model, Reading
from melanoma.cases import NO_MAP_NOT_ASSESSED, Decision, decode_upload, digest
from melanoma.combined import COMBINED_NAME, CombinedReading, CombinedSpec, combine
from melanoma.dicom import NO_STUDY_UID, DicomInfo, encapsulated_pdf
from melanoma.explain.render import (
    DIVERGING_COLOURMAPS,
    SEQUENTIAL_COLOURMAPS,
    colour_bar,
    overlay,
    signed_scale,
)
from melanoma.fhir import FhirCase, ModelFacts, bundle_file_name, bundle_json
from melanoma.images import IMAGE_EXTENSIONS, DecodedImage, ImageError, display_copy, file_stem
from melanoma.report import CaseReport, ModelReading, case_report_pdf
from melanoma.store import InstalledModel


@dataclass(frozen=True)
class Case:
    """One uploaded image and what the chosen models read in it."""

    name: str
    key: str  # sha256 of the upload: the cache and audit key, never the file name
    image: DecodedImage
    decisions: tuple[Decision, ...]  # one per chosen model, in their order
    combined: CombinedReading | None  # with several models chosen


Upload = tuple[str, str, DecodedImage]  # (file name, sha256, decoded image): the name is shown, never logged


def decoded_uploads(uploads) -> list[Upload]:
    """Each readable upload as (name, sha256, image); a bad file is reported alone and the others are
    still scored. With none readable, the page stops."""
    decoded = []
    for upload in uploads:
        data = upload.getvalue()
        image = decode_upload(data, upload.name)
        if isinstance(image, ImageError):
            st.error(f"{image} This file was skipped; the other files are scored.")
        else:
            decoded.append((upload.name, digest(data), image))
    if not decoded:
        st.stop()
    return decoded


def read_case(
    name: str,
    key: str,
    image: DecodedImage,
    decisions: tuple[Decision, ...],
    chosen: list[InstalledModel],
    spec: CombinedSpec | None,
) -> Case:
    """The case with its decisions and, for several models, their combined reading: recorded before it is shown."""
    recorded = [Reading.of(d, Model(d.model, entry.card.sha256)) for d, entry in zip(decisions, chosen)]
    combined = combine(list(decisions), spec) if len(decisions) > 1 else None
    if combined is not None:
        recorded.append(Reading.of(combined, Model(COMBINED_NAME, combined.definition_sha256)))
    ui.audit(Action.READING, sha256=key, readings=recorded)
    return Case(name, key, image, decisions, combined)


def read_all(decoded: list[Upload], models: list[InstalledModel], which: str) -> list[tuple[Decision, ...]]:
    """Every decoded upload's decisions by `models`, read all at once, with a progress bar naming `which` models."""
    progress = st.progress(0.0, text=f"Reading {len(decoded)} images…")
    decisions = ui.decisions(
        [(key, image.pixels) for _, key, image in decoded],
        [entry.name for entry in models],
        lambda finished, total: progress.progress(finished / total, text=f"Read by {finished} of {total} {which}"),
    )
    progress.empty()
    return decisions


def read_cases(
    uploads, choice: str, chosen: list[InstalledModel], spec: CombinedSpec | None, later: Callable[[], None]
) -> tuple[list[Case], list[InstalledModel]]:
    """Every readable upload as a case read by the chosen models that load, and those models.

    The combined reading's melanoma members read first, and their cases are shown as soon as they
    have (`show_first_results`): the combined probability and verdict are theirs alone (with a
    member that fails to load, every model reads in one step, as combine then averages them all). The
    differential's other models read next, once the other pages' first readings begun by then have
    ended (`later`, ui.ReadingsFirst), and complete every case; each stage's readings are recorded
    before they are shown. A rerun of this session on the same images (a slider moved)
    skips the first table, which would only flash above the complete one.
    """
    decoded = decoded_uploads(uploads)
    wanted_first = ui.models_read_first(choice, chosen, spec)
    rest = [entry for entry in chosen if entry not in wanted_first]
    first = ui.loaded(wanted_first, required=not rest)
    if len(first) < len(wanted_first):  # a member failed: the reading is the mean of every model read, in one step
        first, rest = ui.loaded(first + rest), []
    first_read = read_all(decoded, first, "models")
    cases = [read_case(*upload, read, first, spec) for upload, read in zip(decoded, first_read)]
    if not rest:
        return cases, first
    completed = st.session_state.setdefault("read_completely", set())  # (image digests, models) read to the end
    images_and_models = (tuple(key for _, key, _ in decoded), tuple(entry.name for entry in rest))
    shown_first = st.empty()
    if images_and_models not in completed:  # else every reading below is cached: no table to flash, no turn to wait
        with shown_first.container():
            show_first_results(cases, len(rest))
        later()
    if second := ui.loaded(rest, required=False):  # loaded after the first results: a cold server may still be at it
        second_read = read_all(decoded, second, "models of the differential")
        cases = [
            read_case(*upload, early + late, first + second, spec)
            for upload, early, late in zip(decoded, first_read, second_read)
        ]
    shown_first.empty()
    completed.add(images_and_models)
    return cases, first + second


def results_row(case: Case) -> dict:
    """One image's row: the combined reading first, where there is one (the verdict the page leads
    with, in view without scrolling past seven models' columns), then each model's."""
    row = {"File": case.name}
    if case.combined is not None:
        row["combined probability"] = case.combined.probability if case.combined.assessed else None
        row["combined decision"] = case.combined.verdict
        row["models disagree"] = case.combined.disagreement
        if (averaged := case.combined.averaged) is not None:
            row["combined skin cancer"] = averaged.skin_cancer_verdict
            row["combined differential"] = averaged.brief_differential()
    for result in case.decisions:
        row[f"{result.model} probability"] = result.probability if result.assessed else None
        row[f"{result.model} decision"] = result.verdict
        if result.skin_cancer is not None:
            row[f"{result.model} skin cancer"] = result.skin_cancer_verdict
            row[f"{result.model} differential"] = result.brief_differential()
    return row


def results_table(cases: list[Case]) -> tuple[pd.DataFrame, dict]:
    """The cases' table and the column settings that show its probabilities in percent with one
    decimal on every row, as the detail view's metric (70.9%); its CSV keeps them from 0 to 1."""
    table = pd.DataFrame([results_row(case) for case in cases])
    probability_columns = [column for column in table.columns if column.endswith(" probability")]
    return table, {
        column: st.column_config.ProgressColumn(column, format="%.1f%%", min_value=0.0, max_value=100.0)
        for column in probability_columns
    }


def in_percent(table: pd.DataFrame, column_config: dict) -> pd.DataFrame:
    """The table as shown: its probability columns (those `column_config` formats) in percent."""
    return table.assign(**{column: table[column] * 100 for column in column_config})


def show_first_results(cases: list[Case], waiting: int) -> None:
    """The combined reading's probabilities and verdicts while the differential's `waiting` other models read."""
    table, column_config = results_table(cases)
    st.subheader("Results")
    st.dataframe(in_percent(table, column_config), hide_index=True, column_config=column_config)
    st.caption(
        f"The combined reading's probability and verdict for each image. The differential's {waiting} other "
        f"{'models read' if waiting != 1 else 'model reads'} these images next; its skin-cancer verdict and "
        "differential follow here, and a model that finds an image unlike its training images makes that "
        "image's combined reading 'not assessed'."
    )


def show_results(cases: list[Case], models_used: list[Model]) -> Case:
    """The results table and its CSV; returns the case to detail: the selected row, else the newest upload."""
    table, column_config = results_table(cases)
    st.subheader("Results")
    selection = st.dataframe(
        in_percent(table, column_config),
        hide_index=True,
        on_select="rerun",
        selection_mode="single-row",
        # One key per set of images: a selected row belongs to the images it was selected among, so
        # removing an upload clears it instead of pointing it at another image, or past the last one.
        key="results-" + digest("".join(case.key for case in cases).encode()),
        column_config=column_config,
    )
    st.download_button(
        "Download results (CSV)",
        ui.recorded(
            lambda: table.to_csv(index=False).encode(), Action.RESULTS_DOWNLOAD, images=len(cases), models=models_used
        ),
        "melanoma_results.csv",
        "text/csv",
        on_click="ignore",
    )
    selected_rows = selection.selection.rows if selection else []
    if len(cases) > 1:
        st.caption("Select a row to open its detail view.")
    return cases[selected_rows[0] if selected_rows else -1]


def show_image_facts(case: Case) -> None:
    """What decoding noticed, and a DICOM file's study; the patient's identity only when asked for."""
    for note in case.image.notes:
        st.caption(f"Note: {note}.")
    dicom = case.image.dicom
    if dicom is None:
        return
    st.caption(dicom.summary())
    if st.toggle(
        "Show the patient's identity from the DICOM file",
        key=f"identity-{case.key}",
        help="Off by default: the name, ID and birth date stay in the file unless you ask.",
    ):
        identity = dicom.identity
        st.write(
            f"Patient {identity.patient_name or '(no name)'}, ID {identity.patient_id or '(none)'}, "
            f"born {identity.birth_date or '(not given)'}"
        )


def show_decision(result: Decision, alone: bool) -> None:
    """One model's probability and verdicts, as the clinician reads them before any map; `alone`: with
    no combined reading above it (Decision.scope_note)."""
    if not result.assessed:
        st.metric(f"{result.model}: melanoma probability", "not assessed")
        st.warning(result.summary())
        return
    st.metric(f"{result.model}: melanoma probability", f"{result.probability:.1%}")
    (st.error if result.melanoma else st.success)(result.summary())
    if result.skin_cancer is not None:
        (st.error if result.skin_cancer else st.success)(result.skin_cancer_summary())
        st.markdown(result.differential_text())
    elif note := result.scope_note(alone):
        st.info(note)
    st.caption(result.calibration_meaning())
    st.caption(result.threshold_meaning())


def map_caption(scores: np.ndarray, signed: bool, target: str, patch_size: int | None) -> str:
    """What the map's colours mean, or why it shows nothing."""
    if signed:
        if float(np.abs(scores).max()) < 0.0005:
            return (
                f"No single {patch_size}-pixel patch moves the probability by 0.001 or more: "
                "the output does not rest on any one region at this patch size. Try a larger patch or Grad-CAM."
            )
        return (
            f"Blue: greying this region out raises the probability (it argues against {target}). "
            f"Red: greying it out lowers the probability (it supports {target}). "
            f"Full scale ±{signed_scale(scores):.3f}."
        )
    if scores.max() == 0:
        return (
            f"No region raises the {target} output (Grad-CAM is zero everywhere), as for an image the model "
            f"finds clearly not {target}."
        )
    return f"Dark to bright: how strongly each region drove the {target} output (Grad-CAM, relative)."


@dataclass(frozen=True)
class MapSettings:
    """The explanation settings the clinician chose."""

    signed: bool  # occlusion sensitivity; else Grad-CAM
    patch_size: int
    fine: bool
    opacity: float
    colourmap: str
    output: str  # ui.MELANOMA_OUTPUT or ui.MALIGNANT_OUTPUT


def explanation(entry: InstalledModel, case: Case, shown: np.ndarray, settings: MapSettings, placeholder) -> np.ndarray:
    """One model's map. Occlusion is progressive: a coarse preview within moments, then the exact
    map, then the fine one when asked, each drawn in `placeholder` until the next one is ready."""
    if not settings.signed:
        with st.spinner(f"Grad-CAM for {entry.name}…"):
            return ui.gradcam(case.key, entry.name, case.image.pixels, settings.output)
    stages = ui.occlusion_stages(entry, settings.patch_size, settings.fine)
    for stage in stages:
        grid = f"patch {stage.patch_size}" + (f", stride {stage.stride}" if stage.stride else "")
        with st.spinner(f"Occlusion sensitivity for {entry.name} ({stage.label} map: {grid})…"):
            scores = ui.occlusion(
                case.key, entry.name, stage.patch_size, case.image.pixels, stage.stride, settings.output
            )
        if stage is not stages[-1]:
            placeholder.image(
                overlay(shown, scores, settings.opacity, settings.colourmap, signed=True),
                width="stretch",
                caption=f"{stage.label.capitalize()} map ({grid}); the next one is on its way…",
            )
    return scores


def fhir_bundle(report: CaseReport, case: Case, chosen: list[InstalledModel]) -> str:
    """The case as a FHIR R4 Bundle with its PDF report attached."""
    facts = tuple((d, ModelFacts.from_card(entry.card, entry.metrics)) for d, entry in zip(case.decisions, chosen))
    return bundle_json(
        FhirCase(facts, report.created, case_report_pdf(report), report.notes, case.combined, case.image.dicom)
    )


def dicom_report(report: CaseReport, source: DicomInfo) -> bytes:
    """The PDF report as a DICOM Encapsulated PDF in the photograph's study."""
    return encapsulated_pdf(case_report_pdf(report), source, report.created).data


st.title("Diagnose")
ui.disclaimer()
models = ui.available_models()
ALL = "All installed models, side by side"
READINGS_PER_ROW = 3  # each model's verdict, image and map; more to a row shrinks the map past reading
combined_spec = ui.combined_spec()  # read once per page run, not once per image
choice = st.selectbox(
    "Model",
    [*ui.readings_best_first(models, combined_spec), ALL],
    format_func=lambda name: name if name == ALL else ui.describe_reading(name, models, combined_spec),
)
chosen = models if choice == ALL else ui.reading_models(choice, models, combined_spec)

uploads = st.file_uploader(
    "Dermoscopic images (JPEG, PNG, BMP, TIFF, GIF, WebP, DICOM)",
    accept_multiple_files=True,
    type=[extension.lstrip(".") for extension in IMAGE_EXTENSIONS],
    help="Images stay in this server's memory: nothing is written to disk or sent elsewhere.",
)
if not uploads:
    st.caption("Upload one or more images to see the melanoma probability and the regions that drove it.")
    st.stop()

with ui.PRIORITY.reading() as later:  # no map starts anywhere on this server while these images are read
    cases, chosen = read_cases(uploads, choice, chosen, combined_spec, later)
    models_used = [Model(entry.name, entry.card.sha256) for entry in chosen]
    case = show_results(cases, models_used)

mapped = ui.mapped_models(choice, chosen, case.combined)
unmapped = [entry for entry in chosen if entry not in mapped]
decision_of = {entry.name: result for entry, result in zip(chosen, case.decisions)}

st.subheader(f"Detail: {case.name}")
stem = file_stem(case.name, case.image.dicom)  # of every download's name
show_image_facts(case)
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
    if any(entry.serving.is_diagnosis for entry in mapped):
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

if case.combined is not None:
    reading = case.combined
    flagged = reading.melanoma or reading.skin_cancer
    show = st.warning if not reading.assessed or reading.disagreement else st.error if flagged else st.info
    show("  \n".join(reading.summary_lines()))  # a Markdown line break between sentences
    if members := reading.differential_members_line():
        st.caption(members)
# Every verdict is on the page before this session starts a map.
columns = ui.column_grid(len(mapped), READINGS_PER_ROW)
for column, entry in zip(columns, mapped):
    with column:
        show_decision(decision_of[entry.name], case.combined is None)
if unmapped:
    with st.expander(f"The differential's other models ({len(unmapped)}): their own readings, without maps"):
        for column, entry in zip(ui.column_grid(len(unmapped), READINGS_PER_ROW), unmapped):
            with column:
                show_decision(decision_of[entry.name], alone=False)

signed = method == "Occlusion sensitivity"
settings = MapSettings(signed, patch_size, fine, opacity, colourmap, output)
final_map = ui.occlusion_stages(mapped[0], patch_size, fine)[-1] if signed else None  # the same grid for every model
described = f"{method}, fine map (stride {final_map.stride})" if final_map and final_map.stride else method
shown = display_copy(case.image.pixels)
method_used = Method.OCCLUSION if signed else Method.GRAD_CAM
mapped_used = [model for entry, model in zip(chosen, models_used) if entry in mapped]
# A model whose gate refused the image gets no map: its output there is no probability to explain.
explained = [model for entry, model in zip(mapped, mapped_used) if decision_of[entry.name].assessed]
if explained:
    ui.audit(Action.EXPLANATION, sha256=case.key, models=explained, method=method_used)
readings = []
for column, entry, model in zip(columns, mapped, mapped_used):
    result = decision_of[entry.name]
    with column:
        left, right = st.columns(2)
        left.image(shown, caption="Uploaded image", width="stretch")
        if not result.assessed:
            right.info(NO_MAP_NOT_ASSESSED)
            readings.append(ModelReading.from_decision(result, entry.card, None, alone=case.combined is None))
            continue
        placeholder = right.empty()
        scores = explanation(entry, case, shown, settings, placeholder)
        blended = overlay(shown, scores, opacity, colourmap, signed=signed)
        target = "skin cancer" if output == ui.MALIGNANT_OUTPUT and entry.serving.is_diagnosis else "melanoma"
        placeholder.image(
            blended,
            caption=f"{described} overlay" + (" (skin-cancer output)" if target != "melanoma" else ""),
            width="stretch",
        )
        st.image(colour_bar(colourmap, signed), width="stretch")
        st.caption(map_caption(scores, signed, target, final_map.patch_size if signed else None))
        st.download_button(
            f"Download overlay ({entry.name})",
            ui.recorded(
                functools.partial(ui.png_bytes, blended),
                Action.OVERLAY_DOWNLOAD,
                sha256=case.key,
                models=[model],
                method=method_used,
            ),
            f"{stem}_{entry.name}_overlay.png",
            "image/png",
            key=f"download-{entry.name}",
            on_click="ignore",
        )
        scale = signed_scale(scores) if signed else None
        readings.append(ModelReading.from_decision(result, entry.card, blended, case.combined is None, scale))
readings += [ModelReading.from_decision(decision_of[entry.name], entry.card, None, alone=False) for entry in unmapped]

# One report per case, covering every chosen model: the record a clinician files for this lesion.
st.subheader("Report")
saved_notes = st.session_state.setdefault("case_notes", {})  # image digest -> notes, kept while other cases are viewed
if f"notes-{case.key}" not in st.session_state:
    st.session_state[f"notes-{case.key}"] = saved_notes.get(case.key, "")
notes = saved_notes[case.key] = st.text_area(
    "Clinician's notes for the report",
    key=f"notes-{case.key}",
    max_chars=2000,
    help="Kept in this session's memory only. They go into the PDF report, the FHIR Bundle (as a note and "
    "in its attached PDF) and, for a DICOM image, the DICOM report: whoever receives those reads them.",
)

report = CaseReport(
    stem if case.image.dicom else case.name,  # a PACS export's file name may be the patient's: its UID instead
    shown,
    tuple(readings),
    described,
    final_map.patch_size if signed else None,
    colourmap,
    opacity,
    datetime.now().astimezone(),
    ui.DISCLAIMER,
    notes,
    case.combined.summary() if case.combined is not None else None,
    case.image.notes,
)
downloads = {"sha256": case.key, "models": models_used}
st.download_button(
    "Download report (PDF)",
    ui.recorded(functools.partial(case_report_pdf, report), Action.REPORT_DOWNLOAD, **downloads),
    f"{stem}_report.pdf",
    "application/pdf",
    key=f"report-{case.key}",
    on_click="ignore",
    help="The image and its overlays, each model's reading, your notes and the disclaimer: one A4 page, "
    "or more when many models read the image.",
)
st.download_button(
    "Download for the health record (FHIR R4 Bundle)",
    ui.recorded(functools.partial(fhir_bundle, report, case, chosen), Action.REPORT_DOWNLOAD, **downloads),
    bundle_file_name(case.name, case.image.dicom),
    "application/fhir+json",
    key=f"fhir-{case.key}",
    on_click="ignore",
    help="A preliminary DiagnosticReport with an Observation and a Device per model and the PDF "
    "attached, for an electronic health record that takes FHIR R4.",
)
if case.image.dicom is not None and not case.image.dicom.study_instance_uid:
    st.caption(f"No DICOM report. {NO_STUDY_UID}")
elif case.image.dicom is not None:
    st.download_button(
        "Download report for PACS (DICOM Encapsulated PDF, same study)",
        ui.recorded(functools.partial(dicom_report, report, case.image.dicom), Action.REPORT_DOWNLOAD, **downloads),
        f"{stem}_report.dcm",
        "application/dicom",
        key=f"dicom-{case.key}",
        on_click="ignore",
        help="The PDF as a new series in the image's study, so the archive files it beside the image.",
    )
