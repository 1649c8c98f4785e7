"""Validate on your images: a labelled zip scored by every installed model and the combined reading.

The page only reads the upload and shows results; checking, scoring and measuring are
melanoma.validation's, the same code as `python -m train.evaluate`.
"""

import streamlit as st

import ui
from melanoma import diagnoses, plots
from melanoma.audit import Action, Model
from melanoma.cases import digest
from melanoma.data import DataError
from melanoma.metrics import TARGET_SENSITIVITY
from melanoma.store import list_models
from melanoma.validation import (
    NAMES_SHOWN,
    per_image_table,
    read_zip,
    target_table,
    validate,
)

# A zip of a few hundred full-resolution dermoscopic images exceeds the server's 50 MB per-file limit.
MAX_ZIP_MB = 300

st.title("Validate on your images")
ui.disclaimer()
st.caption(
    "Upload a zip of dermoscopic images with a `labels.csv` (columns `image_id,label`; 1 = melanoma, "
    "0 = other; `image_id` is the file name without its extension), at the top of the zip or in its one "
    "folder. Every installed model, and their combined reading, is measured on these images. Add a `dx` "
    f"column ({', '.join(diagnoses.CODES)}; `label` may then be left out), or upload ISIC 2018 Task 3's "
    "one-hot ground truth CSV instead, to see how each diagnosis fares and the diagnosis models' own metrics."
)
models = ui.available_models()
upload = st.file_uploader(
    "Labelled images (zip)",
    type=["zip"],
    max_upload_size=MAX_ZIP_MB,
    help="The zip is read in this server's memory: nothing is written to disk or sent elsewhere.",
)
if upload is None:
    st.stop()
data = upload.getvalue()
sha256 = digest(data)  # once per run: it reads every byte of a zip of up to MAX_ZIP_MB
try:
    labelled = read_zip(data, upload.name)
except DataError as error:
    ui.refuse(error)
for warning in labelled.warnings:
    st.warning(warning)
chosen = ui.loaded(
    models, hint="It is left out of these results; once it is restored, reload this page to measure it too."
)

# Scored once per upload and set of models; moving the slider below reruns the page, not the models.
key = (sha256, tuple(entry.name for entry in chosen), ui.models_dir())
stored = st.session_state.get("validation")
if stored is None or stored[0] != key:
    progress = st.progress(0.0, text="Scoring images…")
    try:
        result = validate(
            [ui.predictor(entry.name) for entry in chosen],
            labelled.images,
            labelled.read,
            ui.combined_spec(),
            lambda done, total: progress.progress(
                done / total, text=f"Scored {done} of {total} images with {len(chosen)} models"
            ),
            installed=[entry.name for entry in list_models(ui.models_dir())],
        )
    except DataError as error:
        ui.refuse(error)
    finally:
        progress.empty()
    st.session_state["validation"] = (key, result)
else:
    result = stored[1]
ui.audit(
    Action.VALIDATION_RUN,
    sha256=sha256,
    images=len(result.labels),
    models=[Model(entry.name, entry.card.sha256) for entry in chosen],
)  # before any result is shown

if result.skipped:
    st.warning(
        f"{len(result.skipped)} image(s) could not be read and were left out; the others are scored:\n"
        + ui.markdown_list(result.skipped, NAMES_SHOWN)
    )
for note in result.notes:
    st.info(note)

st.subheader("Results")
st.caption(
    f"{len(result.labels)} images, {int(result.labels.sum())} melanomas. Probabilities are calibrated; the "
    "threshold is the one each model ships with. Images the out-of-distribution gate does not assess are "
    "counted in every column, as in the models' own test metrics; many of them mean these images are not "
    "what the models were made for."
)
ui.show_table(plots.validation_table(result))

st.subheader("Threshold for a chosen sensitivity on these images")
target = st.slider("Target sensitivity", 0.50, 1.00, TARGET_SENSITIVITY, 0.01, format="%.2f")
ui.show_table(target_table(result, target))
st.caption(
    "The highest threshold at which at least this fraction of these melanomas is flagged, and the "
    "specificity it gives here: the rule that chose each shipped threshold on its validation split. Measured "
    "on the same images it is chosen on, so it flatters; confirm it on further images before relying on it."
)

st.subheader("Confusion matrices at the shipped threshold")
entries = [model.measured for model in result.results]
ui.figure_rows(
    {f"validation-cm-{entry.name}": plots.confusion_figure(entry) for entry in entries}, plots.MATRICES_PER_ROW
)
left, right = st.columns(2)
left.plotly_chart(plots.curves_figure(entries, "roc"), width="stretch")
right.plotly_chart(plots.calibration_figure(entries), width="stretch")

flagged = plots.flagged_table(entries)
if not flagged.empty:
    st.subheader("Flagged as suspicious for melanoma, by true diagnosis")
    st.caption(
        "The share of each diagnosis among these images at or above each model's shipped threshold: under "
        "MEL its sensitivity, elsewhere where its false alarms fall (a flagged BCC or AKIEC is still a cancer "
        f"found). {plots.diagnosis_legend()}."
    )
    st.dataframe(flagged, hide_index=True, width="stretch")
measured = plots.diagnosis_models(entries)
if measured:
    st.subheader("Seven diagnoses")
    st.caption(
        "The diagnosis models on these images: balanced multi-class accuracy (the mean recall over the "
        f"diagnoses present), recall per diagnosis, and skin cancer ({plots.MALIGNANT_TEXT}) against the "
        "rest at the model's shipped malignant threshold."
    )
    st.dataframe(plots.diagnosis_table(measured), hide_index=True, width="stretch")
    ui.figure_rows(
        {f"validation-dx-cm-{entry.name}": plots.diagnosis_confusion_figure(entry) for entry in measured},
        plots.WIDE_MATRICES_PER_ROW,
    )
st.download_button(
    "Download per-image results (CSV)",
    ui.recorded(
        lambda: per_image_table(result).to_csv(index=False).encode(),
        Action.RESULTS_DOWNLOAD,
        sha256=sha256,
        images=len(result.labels),
    ),
    "validation_results.csv",
    "text/csv",
    on_click="ignore",
)
