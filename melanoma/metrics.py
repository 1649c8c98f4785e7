"""Test-split metrics for a binary melanoma classifier, as stored in metrics.json.

Everything here is plain numpy/scikit-learn so the numbers can be recomputed anywhere; the tests
check them against scikit-learn's own functions.
"""

from __future__ import annotations

import numpy as np
from sklearn.calibration import calibration_curve
from sklearn.metrics import average_precision_score, brier_score_loss, confusion_matrix, precision_recall_curve, roc_auc_score, roc_curve

from melanoma.calibration import expected_calibration_error


def threshold_for_sensitivity(y_true: np.ndarray, y_prob: np.ndarray, target: float = 0.90) -> float:
    """The highest threshold whose sensitivity on these (validation) labels is at least `target`."""
    y_true, y_prob = np.asarray(y_true), np.asarray(y_prob, dtype=np.float64)
    positives = np.sort(y_prob[y_true == 1])[::-1]
    if len(positives) == 0:
        raise ValueError("cannot choose a threshold: the validation split has no melanoma.")
    needed = int(np.ceil(target * len(positives) - 1e-9))
    return float(positives[max(needed, 1) - 1])


def at_threshold(y_true: np.ndarray, y_prob: np.ndarray, threshold: float) -> dict:
    """Confusion matrix and the rates a clinician reads, for `probability >= threshold`."""
    y_pred = (np.asarray(y_prob) >= threshold).astype(int)
    tn, fp, fn, tp = confusion_matrix(y_true, y_pred, labels=[0, 1]).ravel()

    def ratio(a: float, b: float) -> float | None:
        return float(a / b) if b else None

    sensitivity, specificity = ratio(tp, tp + fn), ratio(tn, tn + fp)
    ppv = ratio(tp, tp + fp)
    return {
        "threshold": float(threshold),
        "confusion_matrix": [[int(tn), int(fp)], [int(fn), int(tp)]],
        "accuracy": ratio(tp + tn, tp + tn + fp + fn),
        "balanced_accuracy": None if sensitivity is None or specificity is None else (sensitivity + specificity) / 2,
        "sensitivity": sensitivity,
        "specificity": specificity,
        "ppv": ppv,
        "npv": ratio(tn, tn + fn),
        "f1": ratio(2 * tp, 2 * tp + fp + fn),
    }


def bootstrap_intervals(y_true: np.ndarray, y_prob: np.ndarray, threshold: float, n: int = 1000, seed: int = 0) -> dict:
    """95% percentile-bootstrap intervals for AUC, sensitivity and specificity."""
    rng = np.random.default_rng(seed)
    y_true, y_prob = np.asarray(y_true), np.asarray(y_prob)
    samples = {"roc_auc": [], "sensitivity": [], "specificity": []}
    for _ in range(n):
        index = rng.integers(0, len(y_true), len(y_true))
        t, p = y_true[index], y_prob[index]
        if t.min() == t.max():
            continue
        samples["roc_auc"].append(roc_auc_score(t, p))
        rates = at_threshold(t, p, threshold)
        samples["sensitivity"].append(rates["sensitivity"])
        samples["specificity"].append(rates["specificity"])
    return {key: [float(np.percentile(v, 2.5)), float(np.percentile(v, 97.5))] for key, v in samples.items()}


def _thin(points: np.ndarray, limit: int = 200) -> list:
    """Keep at most `limit` curve points (evenly spaced, ends kept) so metrics.json stays small."""
    if len(points) <= limit:
        return points.tolist()
    keep = np.unique(np.linspace(0, len(points) - 1, limit).round().astype(int))
    return points[keep].tolist()


def evaluate_predictions(y_true: np.ndarray, y_prob: np.ndarray, threshold: float, seed: int = 0) -> dict:
    """Everything metrics.json holds about one model on one labelled split."""
    y_true = np.asarray(y_true).astype(int)
    y_prob = np.asarray(y_prob, dtype=np.float64)
    fpr, tpr, _ = roc_curve(y_true, y_prob)
    precision, recall, _ = precision_recall_curve(y_true, y_prob)
    prob_true, prob_pred = calibration_curve(y_true, y_prob, n_bins=10, strategy="uniform")
    return {
        "n_images": int(len(y_true)),
        "n_melanoma": int(y_true.sum()),
        "roc_auc": float(roc_auc_score(y_true, y_prob)),
        "average_precision": float(average_precision_score(y_true, y_prob)),
        "brier_score": float(brier_score_loss(y_true, y_prob)),
        "expected_calibration_error": expected_calibration_error(y_true, y_prob),
        "mean_probability_by_label": {
            "0": float(y_prob[y_true == 0].mean()),
            "1": float(y_prob[y_true == 1].mean()),
        },
        "at_0.5": at_threshold(y_true, y_prob, 0.5),
        "at_threshold": at_threshold(y_true, y_prob, threshold),
        "ci95": bootstrap_intervals(y_true, y_prob, threshold, seed=seed),
        "roc_curve": {"fpr": _thin(fpr), "tpr": _thin(tpr)},
        "pr_curve": {"precision": _thin(precision[::-1]), "recall": _thin(recall[::-1])},
        "calibration": {"mean_predicted": prob_pred.tolist(), "fraction_melanoma": prob_true.tolist()},
    }
