"""Test-split metrics for a melanoma classifier, and a diagnosis model's multi-class ones, as stored in metrics.json.

Everything here is plain numpy/scikit-learn so the numbers can be recomputed anywhere; the tests
check them against scikit-learn's own functions.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
from scipy.stats import binomtest
from sklearn.calibration import calibration_curve
from sklearn.metrics import (
    average_precision_score,
    brier_score_loss,
    confusion_matrix,
    precision_recall_curve,
    roc_auc_score,
    roc_curve,
)

from melanoma import diagnoses
from melanoma.calibration import expected_calibration_error, finite_probabilities

# The operating-threshold rule everywhere (training, recalibration, the combined reading, the
# Validate page's default): the highest threshold whose validation sensitivity reaches this.
TARGET_SENSITIVITY = 0.90


def threshold_rule(target: float = TARGET_SENSITIVITY) -> str:
    """The rule in words, as cards and combined.json record it."""
    return f"highest threshold with calibrated validation sensitivity >= {target}"


def threshold_for_sensitivity(y_true: np.ndarray, y_prob: np.ndarray, target: float = TARGET_SENSITIVITY) -> float:
    """The highest threshold whose sensitivity on these (validation) labels is at least `target`.

    `target` is a proportion in (0, 1]: above 1 (a percentage such as 95) no threshold reaches it, and
    at 0 any would."""
    if not 0.0 < target <= 1.0:
        raise ValueError(f"target sensitivity must be in (0, 1], such as 0.9 for 90 %; got {target}.")
    y_true, y_prob = np.asarray(y_true), finite_probabilities(y_prob)
    positives = np.sort(y_prob[y_true == 1])[::-1]
    if len(positives) == 0:
        raise ValueError("cannot choose a threshold: the validation split has no melanoma.")
    needed = int(np.ceil(target * len(positives) - 1e-9))
    return float(positives[max(needed, 1) - 1])


def both_classes(y_true: np.ndarray) -> np.ndarray:
    """The labels as booleans; ValueError when the split holds melanomas only or none, which leaves no ROC
    AUC to measure (scikit-learn gives NaN with a warning, and the bootstrap an IndexError)."""
    y_true = np.asarray(y_true).astype(bool)
    melanomas = int(y_true.sum())
    if melanomas in (0, len(y_true)):
        raise ValueError(
            f"expected melanomas and other lesions in the split; it holds {melanomas} melanomas and "
            f"{len(y_true) - melanomas} other lesions, so no ROC AUC can be measured. Measure on a split with both "
            "(a held-out source must have both)."
        )
    return y_true


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


BOOTSTRAP_CHUNK = 100  # resamples counted at once: bounds the memory at 100 x n images


def confidence_intervals(y_true: np.ndarray, y_prob: np.ndarray, threshold: float, seed: int = 0) -> dict:
    """95% intervals: a percentile bootstrap for the ROC AUC, Wilson's score interval for the
    sensitivity and specificity at the threshold (proportions of a fixed count of melanomas and of
    other lesions: a bootstrap of a proportion of 100 % is [100 %, 100 %], as if nothing could be missed)."""
    y_true, y_prob = np.asarray(y_true).astype(bool), np.asarray(y_prob, dtype=np.float64)
    flagged = y_prob >= threshold
    return {
        "roc_auc": roc_auc_interval(y_true, y_prob, seed=seed),
        "sensitivity": proportion_interval(int((flagged & y_true).sum()), int(y_true.sum())),
        "specificity": proportion_interval(int((~flagged & ~y_true).sum()), int((~y_true).sum())),
    }


def proportion_interval(k: int, n: int) -> list[float] | None:
    """Wilson's 95% score interval for k of n; None when there is nothing to count."""
    if n == 0:
        return None
    interval = binomtest(k, n).proportion_ci(method="wilson")
    return [float(interval.low), float(interval.high)]


def roc_auc_interval(y_true: np.ndarray, y_prob: np.ndarray, n: int = 1000, seed: int = 0) -> list[float]:
    """The 95% percentile-bootstrap interval of the ROC AUC.

    Each resample is a count per image, drawn as `n` calls of `rng.integers` would draw it; the
    AUC is then the Mann-Whitney statistic over the distinct scores (ties count half), as
    `roc_auc_score` computes it, for a chunk of resamples at once instead of one call each. A
    resample without both classes is left out.
    """
    rng = np.random.default_rng(seed)
    y_true, y_prob = both_classes(y_true), np.asarray(y_prob, dtype=np.float64)
    size = len(y_true)
    order = np.argsort(y_prob, kind="stable")
    scores, melanoma = y_prob[order], y_true[order]
    starts = np.flatnonzero(np.r_[True, scores[1:] != scores[:-1]])  # each distinct score's first position
    samples = []
    for first in range(0, n, BOOTSTRAP_CHUNK):
        chunk = min(BOOTSTRAP_CHUNK, n - first)
        counts = np.stack([np.bincount(rng.integers(0, size, size), minlength=size) for _ in range(chunk)])[:, order]
        positives = np.add.reduceat(counts * melanoma, starts, axis=1)  # per resample and distinct score
        negatives = np.add.reduceat(counts * ~melanoma, starts, axis=1)
        n_pos, n_neg = positives.sum(axis=1), negatives.sum(axis=1)
        both = (n_pos > 0) & (n_neg > 0)
        below = np.cumsum(negatives, axis=1) - negatives
        pairs = (positives * (below + 0.5 * negatives)).sum(axis=1)
        samples.append(pairs[both] / (n_pos * n_neg)[both])
    low, high = np.percentile(np.concatenate(samples), [2.5, 97.5])
    return [float(low), float(high)]


def _thin(points: np.ndarray, limit: int = 200) -> list:
    """Keep at most `limit` curve points (evenly spaced, ends kept) so metrics.json stays small."""
    if len(points) <= limit:
        return points.tolist()
    keep = np.unique(np.linspace(0, len(points) - 1, limit).round().astype(int))
    return points[keep].tolist()


def evaluate_predictions(y_true: np.ndarray, y_prob: np.ndarray, threshold: float, seed: int = 0) -> dict:
    """Everything metrics.json holds about one model on one labelled split."""
    y_true = both_classes(y_true).astype(int)
    y_prob = finite_probabilities(y_prob)
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
        "ci95": confidence_intervals(y_true, y_prob, threshold, seed=seed),
        "roc_curve": {"fpr": _thin(fpr), "tpr": _thin(tpr)},
        "pr_curve": {"precision": _thin(precision[::-1]), "recall": _thin(recall[::-1])},
        "calibration": {"mean_predicted": prob_pred.tolist(), "fraction_melanoma": prob_true.tolist()},
    }


def flagged_by_diagnosis(codes: list[str], probabilities: np.ndarray, threshold: float) -> dict:
    """Per true diagnosis: how many images, and the fraction flagged at the melanoma threshold.

    Where the specificity goes: a melanoma model that flags two thirds of benign keratoses shows
    it here, whatever its target.
    """
    codes = np.asarray(codes)
    flagged = np.asarray(probabilities) >= threshold
    return {
        code: {
            "n": int((codes == code).sum()),
            "flagged": float(flagged[codes == code].mean()) if (codes == code).any() else None,
        }
        for code in diagnoses.CODES
    }


EQUAL_PRIORS_RULE = "the most probable diagnosis under equal class priors (the network's own softmax)"


def evaluate_diagnoses(
    codes: list[str],
    probabilities: np.ndarray,
    malignant_threshold: float,
    seed: int = 0,
    predicted: np.ndarray | None = None,
) -> dict:
    """A diagnosis model's multi-class metrics: the 7 × 7 confusion matrix (rows true, columns
    predicted, in `CODES` order), recall per class, balanced multi-class accuracy (ISIC 2018
    Task 3's metric: the mean recall over the classes present), one-vs-rest ROC AUC per class, and
    malignant-vs-benign ROC AUC with sensitivity and specificity at the malignant threshold.

    `predicted` is each image's predicted class index (`Scores.predicted`: the most probable
    diagnosis under equal class priors, the rule a balanced metric rewards); by default the top of
    the calibrated `probabilities`.
    """
    true = np.array([diagnoses.index_of(code) for code in codes])
    probabilities = np.asarray(probabilities, dtype=np.float64)
    rule = "the most probable calibrated diagnosis" if predicted is None else EQUAL_PRIORS_RULE
    predicted = probabilities.argmax(axis=1) if predicted is None else np.asarray(predicted)
    matrix = confusion_matrix(true, predicted, labels=list(range(len(diagnoses.CODES))))
    recall = {
        code: (float(matrix[i, i] / matrix[i].sum()) if matrix[i].sum() else None)
        for i, code in enumerate(diagnoses.CODES)
    }
    present = [value for value in recall.values() if value is not None]
    auc = {
        code: (float(roc_auc_score(true == i, probabilities[:, i])) if 0 < (true == i).sum() < len(true) else None)
        for i, code in enumerate(diagnoses.CODES)
    }
    malignant_true = np.isin(np.asarray(codes), diagnoses.MALIGNANT).astype(int)
    malignant = diagnoses.malignant_probability(probabilities)
    two_classes = 0 < malignant_true.sum() < len(malignant_true)
    return {
        "classes": list(diagnoses.CODES),
        "predicted_by": rule,
        "confusion_matrix": matrix.tolist(),
        "recall": recall,
        "balanced_multiclass_accuracy": float(np.mean(present)),
        "accuracy": float((predicted == true).mean()),
        "roc_auc_one_vs_rest": auc,
        "malignant": {
            "roc_auc": float(roc_auc_score(malignant_true, malignant)) if two_classes else None,
            "at_threshold": at_threshold(malignant_true, malignant, malignant_threshold),
            "ci95": confidence_intervals(malignant_true, malignant, malignant_threshold, seed=seed)
            if two_classes
            else None,
            "n_malignant": int(malignant_true.sum()),
        },
    }


EVIDENCE_BINS = 20  # equal-count bins: about 100 lesions each over HAM10000's validation and test splits


@dataclass(frozen=True)
class Evidence:
    """What happened to lesions scored like this one: of `n` validation and test lesions whose
    calibrated probability lay in [low, high], `melanomas` were melanomas (95 % Wilson interval)."""

    low: float
    high: float
    n: int
    melanomas: int
    ci95: tuple[float, float]

    def sentence(self) -> str:
        return (
            f"Of {self.n} validation and test lesions this model scored between {self.low:.1%} and {self.high:.1%}, "
            f"{self.melanomas} were melanomas ({self.melanomas / self.n:.0%}; 95% interval "
            f"{self.ci95[0]:.0%}–{self.ci95[1]:.0%})."
        )


def reliability_evidence(labels: np.ndarray, probabilities: np.ndarray, bins: int = EVIDENCE_BINS) -> list[dict]:
    """Equal-count bins of calibrated probability with the melanomas observed in each.

    Equal-width bins leave the upper ones with a handful of lesions, whose observed rate can
    contradict the calibrated number beside it; equal-count bins give every statement about 1/bins
    of the lesions (validation and test together: calibration was fitted on validation alone).
    """
    labels, probabilities = np.asarray(labels).astype(int), finite_probabilities(probabilities)
    order = np.argsort(probabilities, kind="stable")
    rows = []
    for chunk in np.array_split(order, min(bins, len(order))):
        k, n = int(labels[chunk].sum()), len(chunk)
        low, high = proportion_interval(k, n)
        rows.append(
            asdict(Evidence(float(probabilities[chunk].min()), float(probabilities[chunk].max()), n, k, (low, high)))
        )
    return rows


def evidence_for(rows: list[dict], probability: float) -> Evidence | None:
    """The bin that holds `probability` (the nearest one when it falls between or beyond them)."""
    if not rows:
        return None
    distance = [
        0.0
        if row["low"] <= probability <= row["high"]
        else min(abs(probability - row["low"]), abs(probability - row["high"]))
        for row in rows
    ]
    row = rows[int(np.argmin(distance))]
    return Evidence(row["low"], row["high"], row["n"], row["melanomas"], tuple(row["ci95"]))
