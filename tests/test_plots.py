"""The comparison page's tables and figures, from stored artefacts."""

import pandas as pd

from melanoma import plots
from melanoma.store import InstalledModel


def entry(name: str, metrics: dict, holdout: dict | None = None) -> InstalledModel:
    return InstalledModel(name=name, folder=None, card={"input_size": 96, "threshold": 0.4, "weights_initialisation": "ImageNet"},
                          metrics=metrics, holdout_metrics=holdout or {})


def test_metrics_at_half_are_shown_as_numbers():
    """The 'at_0.5' key holds a dot; the table once showed None for every model."""
    metrics = {"roc_auc": 0.8, "at_0.5": {"sensitivity": 0.75, "specificity": 0.6}, "at_threshold": {"sensitivity": 0.9}}
    table = plots.metrics_table([entry("a", metrics)])
    assert table.loc[0, "Sensitivity @ 0.5"] == 0.75 and table.loc[0, "Specificity @ 0.5"] == 0.6
    assert "Brier score" not in table  # measured by no model: left out, not a column of blanks
    assert "None" not in table.astype(str).to_string()


def test_each_phase_boundary_is_drawn_once_where_the_setting_changed():
    # Resumed runs renumber phases (0, 1, 2, then 1, 2 again) while the settings change only three times.
    history = pd.DataFrame({"epoch": range(1, 9), "phase": [0, 0, 1, 2, 1, 1, 2, 2],
                            "learning_rate": [1e-3, 1e-3, 3e-4, 1e-4, 1e-4, 1e-4, 5e-5, 5e-5],
                            "trainable_layers": [30] * 8})
    assert plots.phase_boundaries(history) == [3, 4, 7]
    figure = plots.training_figure(entry("a", {}), history.assign(loss=0.5, val_loss=0.6), "loss")
    assert sorted(shape.x0 for shape in figure.layout.shapes) == [2.5, 3.5, 6.5]


def test_holdout_table_reports_measured_sources_and_says_when_none_was():
    held_out = {"rosendahl": {"roc_auc": 0.71, "n_images": 2259, "n_melanoma": 342, "ci95": {"roc_auc": [0.68, 0.74]},
                              "validation_roc_auc": 0.9}}
    table = plots.holdout_table([entry("lite", {}, held_out), entry("scratch", {})])
    lite = table[table.Model == "lite"].iloc[0]
    assert lite["Held-out source"] == "rosendahl" and lite["ROC AUC"] == 0.71 and lite["ROC AUC 95% CI"] == "0.680–0.740"
    assert table[table.Model == "scratch"].iloc[0]["Held-out source"] == "not measured"


def test_long_names_wrap_so_half_width_charts_keep_their_plot_area():
    """A combined reading names its members; unwrapped, its legend entry and matrix title ran off the column."""
    combined = "combined (efficientnet_b3 + efficientnet_lite0 + inception_v3 + scratch_cnn)"
    metrics = {"roc_auc": 0.906, "roc_curve": {"fpr": [0, 1], "tpr": [0, 1]}, "brier_score": 0.15,
               "calibration": {"mean_predicted": [0.2], "fraction_melanoma": [0.3]},
               "at_threshold": {"threshold": 0.103, "confusion_matrix": [[56, 14], [1, 29]]}}
    models = [entry(combined, metrics)]
    for figure in (plots.curves_figure(models, "roc"), plots.calibration_figure(models)):
        legend = figure.data[0].name
        assert legend.replace("<br>", " ") == f"{combined} ({'AUC 0.906' if figure.data[-1].name == 'chance' else 'Brier 0.150'})"
        assert max(len(line) for line in legend.split("<br>")) <= plots.LEGEND_LINE and figure.layout.legend.orientation == "h"
    title = plots.confusion_figure(models[0]).layout.title.text
    assert title.replace("<br>", " ") == f"{combined} (threshold 0.103)"
    assert max(len(line) for line in title.split("<br>")) <= plots.TITLE_LINE
