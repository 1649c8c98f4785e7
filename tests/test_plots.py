"""The comparison page's tables and figures, from stored artefacts."""

import numpy as np
import pandas as pd
import pyarrow as pa

from melanoma import diagnoses, plots
from melanoma.card import ModelCard
from melanoma.combined import CombinedSpec
from melanoma.measured import Measured
from melanoma.store import InstalledModel

CARD = {"sha256": "ab" * 32, "input_size": 96, "threshold": 0.4, "weights_initialisation": "ImageNet"}


def entry(name: str, metrics: dict, holdout: dict | None = None) -> InstalledModel:
    return InstalledModel(
        name=name,
        folder=None,
        card=ModelCard.from_dict(CARD, name),
        metrics=metrics,
        holdout_metrics=holdout or {},
    )


def row(name: str, metrics: dict) -> Measured:
    """A model as the comparison tables and figures take it."""
    return Measured.of_model(entry(name, metrics))


def test_metrics_at_half_are_shown_as_numbers():
    """The 'at_0.5' key holds a dot; the table once showed None for every model."""
    metrics = {
        "roc_auc": 0.8,
        "at_0.5": {"sensitivity": 0.75, "specificity": 0.6},
        "at_threshold": {"sensitivity": 0.9},
    }
    table = plots.metrics_table([row("a", metrics)])
    assert table.loc[0, "Sensitivity @ 0.5"] == 0.75 and table.loc[0, "Specificity @ 0.5"] == 0.6
    assert "Brier score" not in table  # measured by no model: left out, not a column of blanks
    assert "None" not in table.astype(str).to_string()


def test_each_phase_boundary_is_drawn_once_where_the_setting_changed():
    # Resumed runs renumber phases (0, 1, 2, then 1, 2 again) while the settings change only three times.
    history = pd.DataFrame(
        {
            "epoch": range(1, 9),
            "phase": [0, 0, 1, 2, 1, 1, 2, 2],
            "learning_rate": [1e-3, 1e-3, 3e-4, 1e-4, 1e-4, 1e-4, 5e-5, 5e-5],
            "trainable_layers": [30] * 8,
        }
    )
    assert plots.phase_boundaries(history) == [3, 4, 7]
    figure = plots.training_figure(history.assign(loss=0.5, val_loss=0.6), "loss")
    assert sorted(shape.x0 for shape in figure.layout.shapes) == [2.5, 3.5, 6.5]


def test_a_models_training_curves_are_titled_by_their_metric_and_equally_tall():
    """Titled "<model>: <metric>", a third-width chart cut a long name off at its edge; wrapped, the
    accuracy chart of a 34-character name sat a line lower than its neighbours."""
    history = pd.DataFrame(
        {"epoch": [1, 2], "learning_rate": [1e-4] * 2, "trainable_layers": [46] * 2}
        | {m: [0.8, 0.9] for m in plots.TRAINING_METRICS}
        | {f"val_{m}": [0.7, 0.8] for m in plots.TRAINING_METRICS}
    )
    figures = [plots.training_figure(history, metric) for metric in plots.TRAINING_METRICS]
    assert [figure.layout.title.text for figure in figures] == ["Loss", "Accuracy", "AUC"]
    assert {(figure.layout.height, figure.layout.margin.t) for figure in figures} == {(300, 40)}


def test_holdout_table_reports_measured_sources_and_says_when_none_was():
    held_out = {
        "rosendahl": {
            "roc_auc": 0.71,
            "n_images": 2259,
            "n_melanoma": 342,
            "ci95": {"roc_auc": [0.68, 0.74]},
            "validation_roc_auc": 0.9,
            "flagged_by_diagnosis": {"BKL": {"n": 490, "flagged": 0.55}},
            "diagnoses": {"balanced_multiclass_accuracy": 0.51, "malignant": {"roc_auc": 0.8}},
        }
    }
    table = plots.holdout_table([row("scratch", {}), Measured.of_model(entry("lite", {}, held_out))])
    assert list(table.columns[:4]) == ["Model", "Held-out source", "ROC AUC", "ROC AUC 95% CI"]
    assert list(table.columns) == list(plots.HOLDOUT_COLUMNS)  # though the unmeasured row comes first
    assert list(plots.holdout_table([row("scratch", {})]).columns) == ["Model", "Held-out source", "Initialised from"]
    lite = table[table.Model == "lite"].iloc[0]
    assert (
        lite["Held-out source"] == "rosendahl" and lite["ROC AUC"] == 0.71 and lite["ROC AUC 95% CI"] == "0.680–0.740"
    )
    assert (lite["BKL flagged"], lite["Malignant ROC AUC"], lite["Balanced multi-class accuracy"]) == (
        "55% of 490",
        "0.800",
        "0.510",
    )
    assert table[table.Model == "scratch"].iloc[0]["Held-out source"] == "not measured"
    assert lite["Validation ROC AUC (training's best epoch)"] == 0.9


def test_the_combined_rows_validation_auc_is_not_set_beside_its_members_training_measure():
    """The column showed the members' best training epoch (raw, Keras) beside the combined reading's
    calibrated flip-averaged AUC (0.950 against 0.92-0.94 at rosendahl): two measures as one."""
    held_out = {"rosendahl": {"roc_auc": 0.7, "n_images": 10, "n_melanoma": 2, "validation_roc_auc": 0.95}}
    combined = Measured.of_combined(CombinedSpec(("lite",), 0.1, {}, holdout_metrics=held_out))
    table = plots.holdout_table([combined, Measured.of_model(entry("lite", {}, held_out))])
    column = table["Validation ROC AUC (training's best epoch)"]
    assert column.isna().tolist() == [True, False]


def test_a_missing_measurement_reads_as_a_dash_and_complete_columns_stay_numbers():
    """Streamlit's grid draws a null as "None" whatever a Styler's na_rep says, so the tables carry the dash."""
    table = pd.DataFrame([{"Model": "a", "ROC AUC": 0.71, "Threshold": 0.2}, {"Model": "b", "Threshold": 0.3}])
    shown = plots.dash_missing(table)
    assert list(shown["ROC AUC"]) == ["0.710", plots.DASH] and not shown.isna().any().any()
    assert shown["Threshold"].dtype == float and table["ROC AUC"].isna().iloc[1]  # the input is left as it was
    # Numbers beside a dash are no Arrow column: Streamlit logged a traceback converting every such table.
    assert pa.Table.from_pandas(shown).num_rows == 2


def test_long_names_wrap_so_half_width_charts_keep_their_plot_area():
    """A combined reading names its members; unwrapped, its legend entry and matrix title ran off the column."""
    combined = "combined (efficientnet_b3 + efficientnet_lite0 + inception_v3 + scratch_cnn)"
    metrics = {
        "roc_auc": 0.906,
        "roc_curve": {"fpr": [0, 1], "tpr": [0, 1]},
        "brier_score": 0.15,
        "calibration": {"mean_predicted": [0.2], "fraction_melanoma": [0.3]},
        "at_threshold": {"threshold": 0.103, "confusion_matrix": [[56, 14], [1, 29]]},
    }
    models = [row(combined, metrics)]
    for figure in (plots.curves_figure(models, "roc"), plots.calibration_figure(models)):
        legend = figure.data[0].name
        assert (
            legend.replace("<br>", " ")
            == f"{combined} ({'AUC 0.906' if figure.data[-1].name == 'chance' else 'Brier 0.150'})"
        )
        assert (
            max(len(line) for line in legend.split("<br>")) <= plots.LEGEND_LINE
            and figure.layout.legend.orientation == "h"
        )
    title = plots.confusion_figure(models[0]).layout.title.text
    assert title.replace("<br>", " ") == f"{combined} (threshold 0.103)"
    assert max(len(line) for line in title.split("<br>")) <= plots.TITLE_LINE


def test_a_name_longer_than_a_line_breaks_after_an_underscore():
    """A 7 × 7 matrix or legend line broke 'efficientnet_lite0_diagnosis_sampled_cc_192' as '…_diagn' / 'osis_…'."""
    name = "efficientnet_lite0_diagnosis_sampled_cc_192 (threshold 0.086)"
    assert plots.wrapped(name, 24).split("<br>") == [
        "efficientnet_lite0_",
        "diagnosis_sampled_cc_",
        "192 (threshold 0.086)",
    ]
    # A name that fits on a line of its own moves there whole.
    assert plots.wrapped("combined (efficientnet_b3)", 24) == "combined<br>(efficientnet_b3)"


def test_a_long_legend_grows_the_chart_instead_of_squeezing_its_axes():
    """Ten models' legend under a fixed-height chart covered the axis title, scrolled, and left the curves a
    strip; the axes now keep their height and the legend adds its own, row by row, each row as tall as its
    longest entry."""
    metrics = {
        "roc_auc": 0.9,
        "roc_curve": {"fpr": [0, 1], "tpr": [0, 1]},
        "brier_score": 0.1,
        "calibration": {"mean_predicted": [0.2], "fraction_melanoma": [0.3]},
    }
    names = [f"model_{index}" for index in range(10)]
    names[4] = f"combined ({' + '.join(names[:4])})"  # with its AUC or Brier score, two legend lines
    models = [row(name, metrics) for name in names]
    # ROC: eleven rows (ten models and chance), one of two lines; calibration, two to a row: six rows
    # (ten models and "perfect"), the third (entries 4 and 5) of two lines.
    for figure, columns, lines in (
        (plots.curves_figure(models, "roc"), 1, 12),
        (plots.calibration_figure(models, 2), 2, 7),
    ):
        assert figure.layout.margin.b == plots.TICKS_AND_AXIS_TITLE + plots.LEGEND_LINE_HEIGHT * lines
        assert figure.layout.height == plots.PLOT_HEIGHT + figure.layout.margin.b
        legend = figure.layout.legend
        assert (legend.yref, legend.y, legend.yanchor) == ("container", 0, "bottom")
        assert (legend.entrywidth, legend.entrywidthmode, legend.maxheight) == (1 / columns, "fraction", 1)


# --- the seven diagnoses ----------------------------------------------------------------------------------


def diagnosis_entry() -> Measured:
    """A diagnosis model's metrics from hand-made readings whose results are counted below by hand:
    MEL read as MEL and NV, both NV as NV, the BCC as BCC, the BKL as NV."""
    from melanoma.metrics import evaluate_diagnoses, flagged_by_diagnosis

    codes = ["MEL", "MEL", "NV", "NV", "BCC", "BKL"]
    predicted = ["MEL", "NV", "NV", "NV", "BCC", "NV"]
    probabilities = np.full((6, 7), 0.05)
    probabilities[np.arange(6), [diagnoses.index_of(code) for code in predicted]] = 0.7
    melanoma = np.array([0.9, 0.3, 0.6, 0.1, 0.7, 0.2])  # flagged at 0.5: a MEL, an NV and the BCC
    metrics = {
        "diagnoses": evaluate_diagnoses(codes, probabilities, 0.5),
        "flagged_by_diagnosis": flagged_by_diagnosis(codes, melanoma, 0.5),
    }
    return row("lite_dx", metrics)


def test_the_diagnosis_confusion_matrix_shows_the_metrics_matrix_labelled_with_codes():
    model = diagnosis_entry()
    figure = plots.diagnosis_confusion_figure(model)
    heatmap = figure.data[0]
    assert figure.layout.title.text == "lite_dx: seven diagnoses"
    matrix = model.metrics["diagnoses"]["confusion_matrix"]
    assert [list(row) for row in heatmap.z] == matrix
    assert list(heatmap.x) == list(heatmap.y) == list(diagnoses.CODES)
    assert matrix[0][:2] == [1, 1] and matrix[1][1] == 2 and matrix[2][2] == 1 and matrix[4][1] == 1  # rows true
    assert sum(map(sum, matrix)) == 6


def test_the_diagnosis_table_gives_the_multiclass_metrics_and_a_dash_for_a_melanoma_model():
    table = plots.diagnosis_table([diagnosis_entry(), row("scratch", {"roc_auc": 0.8})]).set_index("Model")
    model = table.loc["lite_dx"]
    # Recall MEL 1/2, NV 2/2, BCC 1/1, BKL 0/1; balanced accuracy their mean; DF, VASC and AKIEC absent.
    assert model["Balanced multi-class accuracy"] == "0.625"
    recall = [model[f"Recall {code}"] for code in diagnoses.CODES]
    assert recall == ["0.500", "1.000", "1.000", "–", "0.000", "–", "–"]
    # P(malignant) = P(MEL) + P(BCC) + P(AKIEC): 0.8 for the first MEL and the BCC, 0.15 for the MEL read as NV
    # and for the three benign ones. ROC AUC (2·3 + 0.5·3) / 9; at 0.5, 2 of 3 cancers and every benign one.
    assert model["Malignant ROC AUC"] == "0.833" and model["Malignant sensitivity @ threshold"] == "0.667"
    assert model["Malignant specificity @ threshold"] == "1.000" and model["Malignant threshold"] == "0.500"
    assert set(table.loc["scratch"]) == {"–"}
    assert not {"None", "nan"} & set(table.to_numpy().ravel())  # ("Malignant" itself holds "nan")
    assert [e.name for e in plots.diagnosis_models([diagnosis_entry(), row("scratch", {})])] == ["lite_dx"]


def test_the_flagged_table_gives_the_percentage_of_each_true_diagnosis():
    table = plots.flagged_table([diagnosis_entry(), row("scratch", {"roc_auc": 0.8})])
    assert list(table.Model) == ["lite_dx"]  # a model tested without diagnoses has no row
    assert table.iloc[0][list(diagnoses.CODES)].tolist() == [
        "50% of 2",
        "50% of 2",
        "100% of 1",
        "–",
        "0% of 1",
        "–",
        "–",
    ]
    assert plots.flagged_table([row("scratch", {})]).empty


def test_a_figure_leaves_out_a_model_whose_metrics_lack_what_it_draws_and_says_so():
    """One metrics.json without roc_curve (or with a null AUC, no at_threshold, no calibration) took
    the whole Compare page down, every other model's figures with it."""
    complete = row(
        "a",
        {
            "roc_auc": 0.8,
            "average_precision": 0.5,
            "brier_score": 0.1,
            "roc_curve": {"fpr": [0, 1], "tpr": [0, 1]},
            "pr_curve": {"recall": [0, 1], "precision": [1, 0]},
            "calibration": {"mean_predicted": [0.5], "fraction_melanoma": [0.5]},
            "at_threshold": {"threshold": 0.3, "confusion_matrix": [[5, 1], [1, 3]]},
        },
    )
    partial = row("b", {"roc_auc": None, "pr_curve": {"recall": [0, 1], "precision": [1, 0]}})
    models = [complete, partial]
    roc, pr = plots.curves_figure(models, "roc"), plots.curves_figure(models, "pr")
    assert [trace.name for trace in roc.data] == ["a (AUC 0.800)", "chance"]
    assert [trace.name for trace in pr.data] == ["a (AP 0.500)", f"b (AP {plots.DASH})"]
    assert [trace.name for trace in plots.calibration_figure(models).data] == ["a (Brier 0.100)", "perfect"]
    assert plots.drawn(models, "confusion matrices") == [complete]
    assert plots.left_out(models) == (
        "Left out, where the stored metrics lack what a figure draws: from the confusion matrices, b "
        "(no at_threshold.confusion_matrix); from the ROC curves, b (no roc_curve); from the calibration "
        "curves, b (no calibration)."
    )
    assert plots.left_out([complete]) == ""


def test_a_model_card_shows_a_dash_for_each_measurement_its_metrics_lack():
    assert plots.test_summary({"roc_auc": 0.8}) == (
        f"0.800 (95% CI {plots.DASH}); sensitivity {plots.DASH}, specificity {plots.DASH} at the threshold"
    )
    assert plots.holdout_summary({"n_melanoma": 342}) == (
        f"ROC AUC {plots.DASH} (95% CI {plots.DASH}) on {plots.DASH} images (342 melanomas)"
    )
    assert plots.calibration_summary({"method": "Platt", "test_ece_after": 0.02}) == (
        f"Platt; test expected calibration error {plots.DASH} → 0.020, Brier score {plots.DASH} → {plots.DASH}"
    )
    held_out = plots.holdout_table([Measured.of_model(entry("lite", {}, {"rosendahl": {"n_melanoma": 342}}))])
    assert held_out.loc[0, "Images (melanomas)"] == f"{plots.DASH} (342)"


def test_a_history_without_settings_or_a_validation_column_draws_what_it_has():
    history = pd.DataFrame({"epoch": [1, 2], "loss": [0.6, 0.5]})
    assert plots.phase_boundaries(history) == []
    assert [trace.name for trace in plots.training_figure(history, "loss").data] == ["training"]


def test_a_brier_score_not_recorded_reads_as_a_dash_not_zero():
    """Without calibration_effect the raw curve's legend read "Brier 0.000", the best score there is."""
    curve = {"mean_predicted": [0.5], "fraction_melanoma": [0.5]}
    model = row("a", {"brier_score": 0.1, "calibration": curve, "calibration_before": curve})
    names = [trace.name for trace in plots.calibration_figure([model]).data]
    assert names == ["a (Brier 0.100)", f"a before calibration (Brier {plots.DASH})", "perfect"]
