"""Plotly figures and tables for comparing installed models, from their stored artefacts only."""

from __future__ import annotations

import pandas as pd
import plotly.graph_objects as go

from melanoma.store import InstalledModel

# Higher is better for every column but the Brier score.
METRIC_COLUMNS = {
    "ROC AUC": ("roc_auc", True),
    "Average precision": ("average_precision", True),
    "Sensitivity @ threshold": ("at_threshold.sensitivity", True),
    "Specificity @ threshold": ("at_threshold.specificity", True),
    "Sensitivity @ 0.5": ("at_0.5.sensitivity", True),
    "Specificity @ 0.5": ("at_0.5.specificity", True),
    "Balanced accuracy @ threshold": ("at_threshold.balanced_accuracy", True),
    "Brier score": ("brier_score", False),
}


def _get(metrics: dict, dotted: str):
    value = metrics
    for key in dotted.split("."):
        value = value.get(key) if isinstance(value, dict) else None
    return value


def metrics_table(models: list[InstalledModel]) -> pd.DataFrame:
    """One row per model: the test metrics a clinician compares, AUC with its 95% interval."""
    rows = []
    for entry in models:
        row = {"Model": entry.name, "Input": f"{entry.input_size} px", "Threshold": entry.threshold}
        for column, (key, _) in METRIC_COLUMNS.items():
            row[column] = _get(entry.metrics, key)
        low, high = _get(entry.metrics, "ci95.roc_auc") or (None, None)
        row["ROC AUC 95% CI"] = f"{low:.3f}–{high:.3f}" if low is not None else "–"
        rows.append(row)
    return pd.DataFrame(rows)


def best_per_column(table: pd.DataFrame) -> dict[str, str]:
    """For each metric column, the model with the best value (lowest for the Brier score)."""
    best = {}
    for column, (_, higher_is_better) in METRIC_COLUMNS.items():
        values = pd.to_numeric(table[column], errors="coerce")
        if values.notna().any():
            best[column] = table.Model[values.idxmax() if higher_is_better else values.idxmin()]
    return best


def mean_probability_table(models: list[InstalledModel]) -> pd.DataFrame:
    """The study's table: mean predicted melanoma probability for each true label."""
    return pd.DataFrame([{
        "Model": entry.name,
        "True label 0 (other)": _get(entry.metrics, "mean_probability_by_label.0"),
        "True label 1 (melanoma)": _get(entry.metrics, "mean_probability_by_label.1"),
    } for entry in models])


def confusion_figure(entry: InstalledModel, at: str = "at_threshold") -> go.Figure:
    matrix = _get(entry.metrics, f"{at}.confusion_matrix")
    labels = ["other", "melanoma"]
    figure = go.Figure(go.Heatmap(z=matrix, x=labels, y=labels, text=matrix, texttemplate="%{text}",
                                  colorscale="Blues", showscale=False))
    threshold = _get(entry.metrics, f"{at}.threshold")
    figure.update_layout(title=f"{entry.name} (threshold {threshold:.3f})", xaxis_title="Predicted", yaxis_title="True",
                         yaxis_autorange="reversed", height=320, margin=dict(l=10, r=10, t=50, b=10))
    return figure


def curves_figure(models: list[InstalledModel], kind: str) -> go.Figure:
    """ROC (kind='roc') or precision-recall (kind='pr') curves of all models, overlaid."""
    figure = go.Figure()
    for entry in models:
        if kind == "roc":
            curve = entry.metrics["roc_curve"]
            figure.add_trace(go.Scatter(x=curve["fpr"], y=curve["tpr"], mode="lines",
                                        name=f"{entry.name} (AUC {entry.metrics['roc_auc']:.3f})"))
        else:
            curve = entry.metrics["pr_curve"]
            figure.add_trace(go.Scatter(x=curve["recall"], y=curve["precision"], mode="lines",
                                        name=f"{entry.name} (AP {entry.metrics['average_precision']:.3f})"))
    if kind == "roc":
        figure.add_trace(go.Scatter(x=[0, 1], y=[0, 1], mode="lines", line=dict(dash="dot", color="grey"), name="chance"))
        figure.update_layout(xaxis_title="1 − specificity (false-positive rate)", yaxis_title="Sensitivity")
    else:
        figure.update_layout(xaxis_title="Recall (sensitivity)", yaxis_title="Precision (PPV)")
    figure.update_layout(title="ROC curves" if kind == "roc" else "Precision–recall curves", height=420)
    return figure


def calibration_figure(models: list[InstalledModel]) -> go.Figure:
    figure = go.Figure()
    for entry in models:
        calibration = entry.metrics["calibration"]
        figure.add_trace(go.Scatter(x=calibration["mean_predicted"], y=calibration["fraction_melanoma"],
                                    mode="lines+markers", name=f"{entry.name} (Brier {entry.metrics['brier_score']:.3f})"))
    figure.add_trace(go.Scatter(x=[0, 1], y=[0, 1], mode="lines", line=dict(dash="dot", color="grey"), name="perfect"))
    figure.update_layout(title="Calibration", xaxis_title="Mean predicted probability", yaxis_title="Fraction melanoma", height=420)
    return figure


def training_figure(entry: InstalledModel, history: pd.DataFrame, metric: str) -> go.Figure:
    """Training and validation `metric` per epoch, with the schedule's phase boundaries marked."""
    figure = go.Figure()
    figure.add_trace(go.Scatter(x=history.epoch, y=history[metric], mode="lines+markers", name="training"))
    figure.add_trace(go.Scatter(x=history.epoch, y=history[f"val_{metric}"], mode="lines+markers", name="validation"))
    for boundary in history.epoch[history.phase.diff().fillna(0) != 0]:
        figure.add_vline(x=boundary - 0.5, line_dash="dash", line_color="grey")
    figure.update_layout(title=f"{entry.name}: {metric}", xaxis_title="Epoch", height=300, margin=dict(t=40, b=10))
    return figure
