"""Plotly figures and tables for comparing models: the installed ones from their stored artefacts,
and on the Validate page every model as measured on a clinician's images (`validation_table`).

Tables whose cells a model may leave unmeasured (the seven-diagnosis columns of a melanoma model)
hold text, a dash where nothing was measured, so that no page ever shows None or nan.
"""

from __future__ import annotations

import numbers
import textwrap

import pandas as pd
import plotly.graph_objects as go

from melanoma import diagnoses
from melanoma.measured import Measured

PALETTE = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f")
LEGEND_LINE = 48  # characters: a legend entry of a half-width column, which Plotly never wraps itself
PLOT_HEIGHT = 420  # pixels: a curves chart's title and axes; its legend adds its own height below
LEGEND_LINE_HEIGHT = 19  # pixels per line of legend text, the gap between entries included
TICKS_AND_AXIS_TITLE = 60  # pixels between the plot area and a legend beneath it
# Confusion matrices sit side by side in rows of a fixed width, so their titles wrap to fit it.
MATRICES_PER_ROW, TITLE_LINE = 5, 24  # two-class matrices; title characters per line
WIDE_MATRICES_PER_ROW, WIDE_TITLE_LINE = 2, 48  # 7 × 7 diagnosis matrices, at least half the page wide
TRAINING_METRICS = {"loss": "Loss", "accuracy": "Accuracy", "auc": "AUC"}  # history.csv column: its chart's title
DASH = "–"  # a value a model did not measure
DECIMALS = 3  # of every measurement a table shows
MALIGNANT_TEXT = ", ".join(diagnoses.MALIGNANT)


def wrapped(text: str, width: int) -> str:
    """`text` broken into lines of at most `width` characters for Plotly (<br>): at spaces, and a model's
    name longer than that after one of its underscores rather than in the middle of a word."""
    words = (word.replace("_", "_ ") if len(word) > width else word for word in text.split(" "))
    return "<br>".join(line.replace("_ ", "_") for line in textwrap.wrap(" ".join(words), width))


# Higher is better for every column but the Brier score and the calibration error.
# Each column's path of keys into metrics.json (a path, not a dotted string: "at_0.5" holds a dot).
METRIC_COLUMNS = {
    "ROC AUC": (("roc_auc",), True),
    "Average precision": (("average_precision",), True),
    "Sensitivity @ threshold": (("at_threshold", "sensitivity"), True),
    "Specificity @ threshold": (("at_threshold", "specificity"), True),
    "Sensitivity @ 0.5": (("at_0.5", "sensitivity"), True),
    "Specificity @ 0.5": (("at_0.5", "specificity"), True),
    "Balanced accuracy @ threshold": (("at_threshold", "balanced_accuracy"), True),
    "Brier score": (("brier_score",), False),
    "Calibration error (ECE)": (("expected_calibration_error",), False),
}


def _get(metrics: dict, *keys: str):
    value = metrics
    for key in keys:
        value = value.get(key) if isinstance(value, dict) else None
    return value


def _number(value: float | None) -> str:
    """Three decimals, or a dash where nothing was measured."""
    return DASH if value is None else f"{value:.{DECIMALS}f}"


def _interval(interval: list[float] | None) -> str:
    """A 95% interval as 'low–high', or a dash where none was measured."""
    return f"{interval[0]:.3f}–{interval[1]:.3f}" if interval else DASH


def _auc_interval(metrics: dict) -> str:
    return _interval(_get(metrics, "ci95", "roc_auc"))


def _count(value: int | None) -> str:
    """A count of images, or a dash where none was recorded."""
    return DASH if value is None else str(value)


def _images(metrics: dict) -> str:
    """'342 (52)': the images measured and the melanomas among them."""
    return f"{_count(metrics.get('n_images'))} ({_count(metrics.get('n_melanoma'))})"


def test_summary(metrics: dict) -> str:
    """A model card's line on its test split: ROC AUC with its 95% interval, and the rates at the threshold."""
    return (
        f"{_number(metrics.get('roc_auc'))} (95% CI {_auc_interval(metrics)}); sensitivity "
        f"{_number(_get(metrics, 'at_threshold', 'sensitivity'))}, specificity "
        f"{_number(_get(metrics, 'at_threshold', 'specificity'))} at the threshold"
    )


def holdout_summary(metrics: dict) -> str:
    """A model card's line on a held-out source: its ROC AUC and how many images it rests on."""
    return (
        f"ROC AUC {_number(metrics.get('roc_auc'))} (95% CI {_auc_interval(metrics)}) on "
        f"{_count(metrics.get('n_images'))} images ({_count(metrics.get('n_melanoma'))} melanomas)"
    )


def calibration_summary(effect: dict) -> str:
    """A model card's line on calibration: the method, and the test ECE and Brier score before → after it."""

    def change(measure: str) -> str:
        return f"{_number(effect.get(f'test_{measure}_before'))} → {_number(effect.get(f'test_{measure}_after'))}"

    return (
        f"{effect.get('method', DASH)}; test expected calibration error {change('ece')}, Brier score {change('brier')}"
    )


def _text(value: object) -> str:
    """A cell as a column of text shows it: a measurement to DECIMALS places, a dash for none."""
    if pd.isna(value):
        return DASH
    if isinstance(value, numbers.Real) and not isinstance(value, numbers.Integral):
        return _number(value)
    return str(value)


def dash_missing(table: pd.DataFrame) -> pd.DataFrame:
    """The table with a dash in every cell nothing was measured for.

    Streamlit's grid draws a missing value as "None", whatever a pandas Styler's `na_rep` says; a
    clinician must read a dash. A column with a gap becomes text throughout: numbers beside a dash
    are no Arrow column, and Streamlit logged a traceback converting them on every render. Columns
    without gaps keep their type, so they stay right-aligned numbers.
    """
    shown = table.copy()
    for column in shown.columns[shown.isna().any()]:
        shown[column] = [_text(value) for value in shown[column]]
    return shown


def metrics_table(models: list[Measured]) -> pd.DataFrame:
    """One row per model: the test metrics a clinician compares, AUC with its 95% interval."""
    rows = []
    for entry in models:
        row = {
            "Model": entry.name,
            "Input": entry.input,
            "Initialised from": entry.initialised_from,
            "Threshold": entry.threshold,
        }
        for column, (keys, _) in METRIC_COLUMNS.items():
            row[column] = _get(entry.metrics, *keys)
        row["ROC AUC 95% CI"] = _auc_interval(entry.metrics)
        rows.append(row)
    table = pd.DataFrame(rows)
    # A metric no model measured is left out rather than shown as a column of blanks.
    for column in METRIC_COLUMNS:
        table[column] = pd.to_numeric(table[column], errors="coerce")
    return table.drop(columns=[c for c in METRIC_COLUMNS if table[c].isna().all()])


def best_per_column(table: pd.DataFrame) -> dict[str, str]:
    """For each metric column, the model with the best value (lowest for the Brier score and the calibration error)."""
    best = {}
    for column, (_, higher_is_better) in METRIC_COLUMNS.items():
        if column not in table:
            continue
        values = pd.to_numeric(table[column], errors="coerce")
        if values.notna().any():
            best[column] = table.Model[values.idxmax() if higher_is_better else values.idxmin()]
    return best


def mean_probability_table(models: list[Measured]) -> pd.DataFrame:
    """The study's table: mean predicted melanoma probability for each true label."""
    return pd.DataFrame(
        [
            {
                "Model": entry.name,
                "True label 0 (other)": _get(entry.metrics, "mean_probability_by_label", "0"),
                "True label 1 (melanoma)": _get(entry.metrics, "mean_probability_by_label", "1"),
            }
            for entry in models
        ]
    )


# The held-out table's columns, in order (what a clinician compares on the left); unfilled ones are left out.
HOLDOUT_COLUMNS = (
    "Model",
    "Held-out source",
    "ROC AUC",
    "ROC AUC 95% CI",
    "BKL flagged",
    "Malignant ROC AUC",
    "Balanced multi-class accuracy",
    "Images (melanomas)",
    "Validation ROC AUC (training's best epoch)",
    "Initialised from",
)


def holdout_table(models: list[Measured]) -> pd.DataFrame:
    """ROC AUC at a source the model never saw (a run trained without it), one row per model and source;
    the combined reading's are its members' held-out runs combined. Where the source's images have a
    diagnosis: the benign keratoses flagged as melanoma and, for a diagnosis model, its skin-cancer AUC
    and balanced multi-class accuracy there.

    A model without such a run gets a row that says so: a missing number must not read as a good one.
    """
    rows = []
    for entry in models:
        initialised = entry.initialised_from
        if not entry.holdout_metrics:
            rows.append({"Model": entry.name, "Held-out source": "not measured", "Initialised from": initialised})
        for source, metrics in entry.holdout_metrics.items():
            measured = metrics.get("diagnoses", {})
            rows.append(
                {
                    "Model": entry.name,
                    "Held-out source": source,
                    "ROC AUC": metrics.get("roc_auc"),
                    "ROC AUC 95% CI": _auc_interval(metrics),
                    "BKL flagged": _flagged(_get(metrics, "flagged_by_diagnosis", "BKL") or {"n": 0}),
                    "Malignant ROC AUC": _number(_get(measured, "malignant", "roc_auc")),
                    "Balanced multi-class accuracy": _number(measured.get("balanced_multiclass_accuracy")),
                    "Images (melanomas)": _images(metrics),
                    # A run's best epoch, as Keras measured it in training (raw, no flips); the combined
                    # reading was never trained, and its calibrated flip-averaged AUC is another measure.
                    "Validation ROC AUC (training's best epoch)": None
                    if entry.is_combined
                    else metrics.get("validation_roc_auc"),
                    "Initialised from": initialised,
                }
            )
    # Only the columns some row fills: a table of unmeasured models says so without empty columns.
    return pd.DataFrame(rows, columns=[column for column in HOLDOUT_COLUMNS if any(column in row for row in rows)])


def selection_table(selection: dict) -> pd.DataFrame:
    """How train.combine chose the combined reading on validation, from combined.json's "selection":
    each candidate's own validation ROC AUC, then for a member the step that added it and the
    combination's AUC after it, for the others why they were left out."""
    steps = {step["added"]: (number, step["validation_roc_auc"]) for number, step in enumerate(selection["steps"], 1)}
    rows = []
    for name in [*steps, *(name for name in selection.get("left_out", {}) if name not in steps)]:
        if name in steps:
            number, combined = steps[name]
            decision = f"added at step {number}: the combination's validation ROC AUC {combined:.4f}"
        else:
            decision = f"left out: {selection['left_out'][name]}"
        rows.append(
            {"Model": name, "Own validation ROC AUC": selection.get("candidates", {}).get(name), "Decision": decision}
        )
    return dash_missing(pd.DataFrame(rows, columns=["Model", "Own validation ROC AUC", "Decision"]))


def _matrix_figure(
    matrix: list[list[int]], labels: list[str], title: str, height: int, line: int = TITLE_LINE
) -> go.Figure:
    """A confusion matrix as a heatmap, rows the truth (top to bottom), columns the prediction."""
    figure = go.Figure(
        go.Heatmap(
            z=matrix, x=labels, y=labels, text=matrix, texttemplate="%{text}", colorscale="Blues", showscale=False
        )
    )
    title = wrapped(title, line)
    # Anchored at the top, with a margin that grows by a line per line, so a long title never covers the matrix.
    title_height = 20 * (title.count("<br>") + 1)
    figure.update_layout(
        title=dict(text=title, y=1, yref="container", yanchor="top", pad=dict(t=10), font=dict(size=14)),
        xaxis_title="Predicted",
        yaxis_title="True",
        yaxis_autorange="reversed",
        height=height + title_height,
        margin=dict(l=10, r=10, t=20 + title_height, b=10),
    )
    return figure


# What each figure draws of a model's metrics: a model whose metrics lack it is left out of that figure alone.
FIGURE_DATA = {
    "confusion matrices": ("at_threshold", "confusion_matrix"),
    "ROC curves": ("roc_curve",),
    "precision–recall curves": ("pr_curve",),
    "calibration curves": ("calibration",),
}


def drawn(models: list[Measured], figure: str) -> list[Measured]:
    """The models whose metrics hold what `figure` (a FIGURE_DATA name) draws."""
    return [entry for entry in models if _get(entry.metrics, *FIGURE_DATA[figure])]


def left_out(models: list[Measured]) -> str:
    """A caption naming the models each figure leaves out and what their metrics lack; '' when none is."""
    gaps = []
    for figure, keys in FIGURE_DATA.items():
        shown = {entry.name for entry in drawn(models, figure)}
        if absent := [entry.name for entry in models if entry.name not in shown]:
            gaps.append(f"from the {figure}, {', '.join(absent)} (no {'.'.join(keys)})")
    return f"Left out, where the stored metrics lack what a figure draws: {'; '.join(gaps)}." if gaps else ""


def confusion_figure(entry: Measured) -> go.Figure:
    """Melanoma against the rest at the model's threshold."""
    return _matrix_figure(
        _get(entry.metrics, *FIGURE_DATA["confusion matrices"]),
        ["other", "melanoma"],
        f"{entry.name} (threshold {_number(_get(entry.metrics, 'at_threshold', 'threshold'))})",
        280,
    )


def diagnosis_models(models: list[Measured]) -> list[Measured]:
    """The models whose metrics hold the seven-diagnosis ones (diagnosis models, measured on images with a dx)."""
    return [entry for entry in models if "diagnoses" in entry.metrics]


def diagnosis_confusion_figure(entry: Measured) -> go.Figure:
    """A diagnosis model's 7 × 7 confusion matrix: rows the true diagnosis, columns its most probable one."""
    measured = entry.metrics["diagnoses"]
    return _matrix_figure(
        measured["confusion_matrix"], measured["classes"], f"{entry.name}: seven diagnoses", 420, WIDE_TITLE_LINE
    )


def diagnosis_legend() -> str:
    """What each code in the tables and matrices stands for."""
    return "; ".join(f"{code}: {name}" for code, name in diagnoses.NAMES.items())


def diagnosis_table(models: list[Measured]) -> pd.DataFrame:
    """One row per model: the seven-diagnosis metrics of a diagnosis model, and skin cancer (the
    diagnoses in melanoma.diagnoses.MALIGNANT) against the rest at its malignant threshold; dashes
    for a melanoma model, which does not tell the diagnoses apart."""
    rows = []
    for entry in models:
        measured = entry.metrics.get("diagnoses", {})
        rates = _get(measured, "malignant", "at_threshold") or {}
        rows.append(
            {
                "Model": entry.name,
                "Balanced multi-class accuracy": _number(_get(measured, "balanced_multiclass_accuracy")),
                "Malignant ROC AUC": _number(_get(measured, "malignant", "roc_auc")),
                "Malignant ROC AUC 95% CI": _interval(_get(measured, "malignant", "ci95", "roc_auc")),
                "Malignant threshold": _number(rates.get("threshold")),
                "Malignant sensitivity @ threshold": _number(rates.get("sensitivity")),
                "Malignant specificity @ threshold": _number(rates.get("specificity")),
                **{f"Recall {code}": _number(_get(measured, "recall", code)) for code in diagnoses.CODES},
            }
        )
    return pd.DataFrame(rows)


def _flagged(counts: dict) -> str:
    """'67% of 12': the share of one diagnosis flagged, with how many images it rests on."""
    return DASH if not counts["n"] else f"{counts['flagged']:.0%} of {counts['n']}"


def flagged_table(models: list[Measured]) -> pd.DataFrame:
    """Per model measured on images with a known diagnosis: the share of each true diagnosis flagged as
    suspicious for melanoma at its threshold, which shows where its false alarms (and other cancers) fall."""
    return pd.DataFrame(
        [
            {"Model": entry.name, **{code: _flagged(flagged[code]) for code in diagnoses.CODES}}
            for entry in models
            if (flagged := entry.metrics.get("flagged_by_diagnosis"))
        ]
    )


def _legend_below(figure: go.Figure, columns: int) -> None:
    """The legend under the axes, `columns` entries to a row, and the chart as tall as both: beside the
    plot, long names (a combined reading names its members) squeeze the plot area to a sliver, and under
    it in a fixed height ten models' entries covered the axis title and scrolled."""
    lines = [(trace.name or "").count("<br>") + 1 for trace in figure.data if trace.showlegend is not False]
    legend_height = LEGEND_LINE_HEIGHT * sum(max(lines[i : i + columns]) for i in range(0, len(lines), columns))
    below_axes = TICKS_AND_AXIS_TITLE + legend_height
    figure.update_layout(
        height=PLOT_HEIGHT + below_axes,
        margin=dict(b=below_axes),
        legend=dict(
            orientation="h",
            yref="container",
            y=0,
            yanchor="bottom",
            x=0,
            xanchor="left",
            entrywidth=1 / columns,
            entrywidthmode="fraction",
            maxheight=1,  # the whole chart's height: Plotly's default, half of it, scrolled long legends
        ),
    )


def curves_figure(models: list[Measured], kind: str) -> go.Figure:
    """ROC (kind='roc') or precision-recall (kind='pr') curves of the models that hold them, overlaid,
    for a half-width column."""
    figure = go.Figure()
    for entry in drawn(models, "ROC curves" if kind == "roc" else "precision–recall curves"):
        if kind == "roc":
            curve = entry.metrics["roc_curve"]
            figure.add_trace(
                go.Scatter(
                    x=curve["fpr"],
                    y=curve["tpr"],
                    mode="lines",
                    name=wrapped(f"{entry.name} (AUC {_number(entry.metrics.get('roc_auc'))})", LEGEND_LINE),
                )
            )
        else:
            curve = entry.metrics["pr_curve"]
            figure.add_trace(
                go.Scatter(
                    x=curve["recall"],
                    y=curve["precision"],
                    mode="lines",
                    name=wrapped(f"{entry.name} (AP {_number(entry.metrics.get('average_precision'))})", LEGEND_LINE),
                )
            )
    if kind == "roc":
        figure.add_trace(
            go.Scatter(x=[0, 1], y=[0, 1], mode="lines", line=dict(dash="dot", color="grey"), name="chance")
        )
        figure.update_layout(xaxis_title="1 − specificity (false-positive rate)", yaxis_title="Sensitivity")
    else:
        figure.update_layout(xaxis_title="Recall (sensitivity)", yaxis_title="Precision (PPV)")
    figure.update_layout(title="ROC curves" if kind == "roc" else "Precision–recall curves")
    _legend_below(figure, 1)
    return figure


def calibration_figure(models: list[Measured], legend_columns: int = 1) -> go.Figure:
    """Reliability curves on the images measured (each model's test split, or a clinician's on the Validate
    page): calibrated (solid) and, where recorded, the raw output (dotted);
    the legend beneath in `legend_columns`, one for each half of the chart's width."""
    figure = go.Figure()
    for index, entry in enumerate(drawn(models, "calibration curves")):
        colour = PALETTE[index % len(PALETTE)]
        calibration = entry.metrics["calibration"]
        name = wrapped(f"{entry.name} (Brier {_number(entry.metrics.get('brier_score'))})", LEGEND_LINE)
        figure.add_trace(
            go.Scatter(
                x=calibration["mean_predicted"],
                y=calibration["fraction_melanoma"],
                line=dict(color=colour),
                mode="lines+markers",
                name=name,
            )
        )
        before = entry.metrics.get("calibration_before")
        if before:
            brier_before = _number(_get(entry.metrics, "calibration_effect", "test_brier_before"))
            figure.add_trace(
                go.Scatter(
                    x=before["mean_predicted"],
                    y=before["fraction_melanoma"],
                    mode="lines+markers",
                    line=dict(color=colour, dash="dot"),
                    marker=dict(symbol="circle-open"),
                    name=wrapped(f"{entry.name} before calibration (Brier {brier_before})", LEGEND_LINE),
                )
            )
    figure.add_trace(go.Scatter(x=[0, 1], y=[0, 1], mode="lines", line=dict(dash="dot", color="grey"), name="perfect"))
    figure.update_layout(title="Calibration", xaxis_title="Mean predicted probability", yaxis_title="Fraction melanoma")
    _legend_below(figure, legend_columns)
    return figure


def training_figure(history: pd.DataFrame, metric: str) -> go.Figure:
    """Training and validation `metric` per epoch, with the schedule's phase boundaries marked. Titled
    by the metric alone: a row of them sits under its model's name, which at a third of the page
    width ran off the chart's edge, and wrapped, it set one chart of the row lower than the others."""
    figure = go.Figure()
    for column, name in ((metric, "training"), (f"val_{metric}", "validation")):
        if column in history:  # an older or partial history.csv may lack one
            figure.add_trace(go.Scatter(x=history.epoch, y=history[column], mode="lines+markers", name=name))
    for boundary in phase_boundaries(history):
        figure.add_vline(x=boundary - 0.5, line_dash="dash", line_color="grey")
    figure.update_layout(title=TRAINING_METRICS[metric], xaxis_title="Epoch", height=300, margin=dict(t=40, b=10))
    return figure


def phase_boundaries(history: pd.DataFrame) -> list[int]:
    """The epochs that start a new setting (learning rate or trainable layers), once each.

    A run resumed with another --epochs renumbers its phases, so the phase index alone would
    mark the same change twice; the settings themselves change only where the phase really did.
    A history.csv from before these columns marks none.
    """
    setting = history[[column for column in ("learning_rate", "trainable_layers") if column in history]]
    changed = (setting != setting.shift()).any(axis=1)
    changed.iloc[:1] = False
    return [int(epoch) for epoch in history.epoch[changed]]


def validation_table(validation) -> pd.DataFrame:
    """One row per model (and the combined reading) on a clinician's own images (melanoma.validation.Validation).

    The images the out-of-distribution gate rejects are counted in every column, and their number
    is a column of its own: a model rejecting many of them was not made for such images.
    """
    rows = []
    for result in validation.results:
        metrics, rates = result.metrics, result.metrics["at_threshold"]
        interval = _get(metrics, "ci95", "sensitivity"), _get(metrics, "ci95", "specificity")
        rows.append(
            {
                "Model": result.name,
                "Images (melanomas)": _images(metrics),
                "ROC AUC": metrics["roc_auc"],
                "ROC AUC 95% CI": _auc_interval(metrics),
                "Threshold": result.threshold,
                "Sensitivity @ threshold": rates["sensitivity"],
                "Sensitivity 95% CI": _interval(interval[0]),
                "Specificity @ threshold": rates["specificity"],
                "Specificity 95% CI": _interval(interval[1]),
                "Not assessed by the gate (melanomas)": (
                    f"{result.not_assessed} ({validation.not_assessed_melanomas(result)})"
                ),
            }
        )
    return pd.DataFrame(rows)
