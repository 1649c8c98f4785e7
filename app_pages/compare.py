"""Compare models: the installed models' stored test metrics, curves and training histories."""

import streamlit as st

import ui
from melanoma import plots
from melanoma.combined import MIN_GAIN
from melanoma.measured import Measured
from melanoma.store import HistoryUnavailable, best_first, measure_command

st.title("Compare models")
installed = ui.available_models()
models = [entry for entry in installed if not entry.metrics_problem]
spec = ui.combined_spec()
for entry in installed:
    if entry.metrics_problem:
        st.warning(
            f"**{entry.name}** has no test metrics, so only its training curves are shown: {entry.metrics_problem}"
        )
if not models:
    st.error(f"No installed model has a metrics.json. Measure each model with `{measure_command('NAME')}`.")
    st.stop()
first = models[0].metrics
st.caption(
    f"Measured on each model's held-out test split ({first.get('n_images', '?')} images, "
    f"{first.get('n_melanoma', '?')} melanomas for {models[0].name}); the threshold was chosen on validation."
)

# The combined reading is compared like a model (ranked with them by test ROC AUC, as the models
# are), but it has no training history of its own. While a model it reads is missing it cannot be
# chosen, so it is neither ranked nor highlighted among them: its row comes last.
combined = [Measured.of_combined(spec)] if spec else []
missing = ui.members_missing(installed, spec) if spec else []
rows = best_first([Measured.of_model(entry) for entry in models] + ([] if missing else combined))
rows += combined if missing else []
table = plots.metrics_table(rows)
best = plots.best_per_column(table[table.Model != spec.label] if missing else table)
st.subheader("Test metrics")
ui.show_table(table, best)
if missing:
    st.info(
        f"The combined reading ({spec.label}, last) cannot be chosen here: {', '.join(missing)} "
        f"{'is' if len(missing) == 1 else 'are'} not installed or not usable. Its row is what combined.json "
        "recorded, left out of the ranking and the highlights; install those models to choose it."
    )
st.caption(
    "Highlighted: the best model in each column (lowest for the Brier score and the calibration error). "
    "Probabilities are calibrated on each model's validation split (Platt scaling); ECE: expected calibration "
    "error over 15 equal-width bins."
    + (f" The combined reading's row, {spec.legend} Chosen on validation by `python -m train.combine`." if spec else "")
)

if spec and spec.selection.get("steps"):
    with st.expander(f"How the combined reading's {len(spec.members)} models were chosen (validation split)"):
        ui.show_table(plots.selection_table(spec.selection))
        st.caption(
            "Forward selection by `python -m train.combine`: it starts from the candidate with the best validation "
            "ROC AUC and adds, one at a time, the one that raises the combination's most, while it adds at least "
            f"{MIN_GAIN}. The test split chooses nothing."
        )

st.subheader("At a clinic the model never saw")
st.caption(
    "Each row is a separate run that trained and validated on the other sources and was tested on every "
    "image of the held-out one (`python -m train.run --holdout-source SOURCE`). It is a hard, noisy window: "
    "48 % of rosendahl's images are benign keratoses, basal cell carcinomas or actinic keratoses, against 11 % "
    "in HAM10000's other sources. A diagnostic, never used to choose. The combined reading's row is its "
    "members' held-out runs combined (`python -m train.combine` measures it when every member has one). BKL "
    "flagged: the benign keratoses there at or above the held-out run's own melanoma threshold (chosen on its "
    "validation split); the malignant AUC and balanced accuracy are a diagnosis model's. The validation AUC is "
    "the run's best epoch as training measured it (raw outputs, no flips), which the combined reading has none of."
)
ui.show_table(plots.holdout_table(rows))

st.subheader("Mean predicted probability per true label (the study's table)")
ui.show_table(plots.mean_probability_table(rows))

st.subheader("Confusion matrices at the operating threshold")
ui.figure_rows(
    {f"cm-{entry.name}": plots.confusion_figure(entry) for entry in plots.drawn(rows, "confusion matrices")},
    plots.MATRICES_PER_ROW,
)

left, right = st.columns(2)
left.plotly_chart(plots.curves_figure(rows, "roc"), width="stretch")
right.plotly_chart(plots.curves_figure(rows, "pr"), width="stretch")
st.plotly_chart(plots.calibration_figure(rows, legend_columns=2), width="stretch")  # two half-width columns
st.caption(
    "Solid: the calibrated probabilities the app shows. Dotted: the network's raw output before calibration, "
    "which class weighting or balanced sampling pushes towards melanoma."
)
if gaps := plots.left_out(rows):
    st.caption(gaps)

measured = plots.diagnosis_models(rows)
if measured:
    st.subheader("Seven diagnoses")
    st.caption(
        "Diagnosis models name the most probable of seven diagnoses; on their test split: balanced "
        "multi-class accuracy (the mean recall over the diagnoses, ISIC 2018 Task 3's metric), recall per "
        f"diagnosis, and skin cancer ({plots.MALIGNANT_TEXT}) against the rest at the model's malignant "
        f"threshold. A dash: the model does not tell the diagnoses apart. {plots.diagnosis_legend()}."
    )
    st.dataframe(plots.diagnosis_table(rows), hide_index=True, width="stretch")
    ui.figure_rows(
        {f"dx-cm-{entry.name}": plots.diagnosis_confusion_figure(entry) for entry in measured},
        plots.WIDE_MATRICES_PER_ROW,
    )
flagged = plots.flagged_table(rows)
if not flagged.empty:
    st.subheader("Flagged as suspicious for melanoma, by true diagnosis")
    st.caption(
        "The share of each true diagnosis in the test split at or above the model's melanoma threshold: under "
        "MEL its sensitivity, elsewhere where its false alarms fall (a flagged BCC or AKIEC is still a cancer "
        "found). Only models tested on images with a known diagnosis have a row."
    )
    st.dataframe(flagged, hide_index=True, width="stretch")

st.subheader("Training curves")
st.caption("Dashed lines: the schedule's phase boundaries (learning rate and trainable layers change).")
for entry in installed:
    try:
        history = entry.history()
    except HistoryUnavailable as reason:
        st.caption(f"{entry.name}: no training curves, {reason}.")
        continue
    st.markdown(f"**{entry.name}**")
    ui.figure_rows(
        {f"{entry.name}-{metric}": plots.training_figure(history, metric) for metric in plots.TRAINING_METRICS},
        per_row=len(plots.TRAINING_METRICS),
    )
