"""Calibrated probabilities: what a clinician reads as "78 %" should be right about 78 % of the time.

Class weights n/(2·n_class) train the network as if melanoma were as common as everything else,
so its raw output overstates the melanoma probability. Platt scaling (a logistic regression on
the logit of the raw output, fitted on the validation split) undoes that prior shift and any
over- or under-confidence with two numbers, and keeps the ranking, so ROC AUC is unchanged.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
from sklearn.linear_model import LogisticRegression

EPSILON = 1e-7  # how far from 0 and 1 a probability is kept before a log: numpy's and the models' graphs alike
ECE_BINS = 15


def finite_probabilities(probabilities: np.ndarray) -> np.ndarray:
    """The model's outputs as float64; ValueError when any is NaN or infinite, which no sort, bin or fit
    may quietly place (a NaN sorts first and lowers the sensitivity a threshold reaches)."""
    probabilities = np.asarray(probabilities, dtype=np.float64)
    bad = int(np.count_nonzero(~np.isfinite(probabilities)))
    if bad:
        raise ValueError(
            f"expected finite probabilities from the model; {bad} of {probabilities.size} outputs are NaN or "
            "infinite, so its weights are probably damaged (a diverged run or a corrupt file). Retrain it with "
            "python -m train.run."
        )
    return probabilities


def clipped_logit(probabilities: np.ndarray) -> np.ndarray:
    """log(p / (1 − p)), with p kept EPSILON away from 0 and 1 so that no log-odds is infinite."""
    p = np.clip(np.asarray(probabilities, dtype=np.float64), EPSILON, 1 - EPSILON)
    return np.log(p / (1 - p))


@dataclass(frozen=True)
class PlattScaling:
    """p_calibrated = sigmoid(slope · logit(p_raw) + intercept); slope 1, intercept 0 is the identity."""

    slope: float = 1.0
    intercept: float = 0.0
    method: str = "platt"
    fitted_on: str = "none"

    def __call__(self, probabilities: np.ndarray) -> np.ndarray:
        z = self.slope * clipped_logit(probabilities) + self.intercept
        return (1.0 / (1.0 + np.exp(-z))).astype(np.float64)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, values: dict | None) -> "PlattScaling":
        return cls(**values) if values else cls()


def fit_platt(labels: np.ndarray, probabilities: np.ndarray, fitted_on: str = "validation split") -> PlattScaling:
    """Slope and intercept by maximum likelihood on these (validation) labels, with Platt's targets.

    Platt (1999) fits to (n₊ + 1) / (n₊ + 2) and 1 / (n₋ + 2) instead of 1 and 0, so a validation
    split that the model separates perfectly gives a steep but finite slope rather than a map that
    rounds every probability to 0 or 1. Soft targets are fitted as each image twice, once per
    class, weighted by its target.
    """
    labels, probabilities = np.asarray(labels).astype(int), finite_probabilities(probabilities)
    if labels.min() == labels.max():
        raise ValueError("cannot calibrate: the validation split holds only one class.")
    positives, negatives = int(labels.sum()), int((1 - labels).sum())
    targets = np.where(labels == 1, (positives + 1) / (positives + 2), 1 / (negatives + 2))
    logits = clipped_logit(probabilities)[:, None]
    regression = LogisticRegression(C=np.inf, max_iter=1000).fit(
        np.concatenate([logits, logits]),
        np.r_[np.ones(len(labels)), np.zeros(len(labels))],
        sample_weight=np.r_[targets, 1 - targets],
    )
    return PlattScaling(float(regression.coef_[0, 0]), float(regression.intercept_[0]), fitted_on=fitted_on)


def expected_calibration_error(labels: np.ndarray, probabilities: np.ndarray, bins: int = ECE_BINS) -> float:
    """Mean |fraction of melanomas − mean probability| over equal-width bins, weighted by bin size."""
    labels, probabilities = np.asarray(labels, dtype=np.float64), finite_probabilities(probabilities)
    index = np.minimum((probabilities * bins).astype(int), bins - 1)
    error = 0.0
    for b in range(bins):
        members = index == b
        if members.any():
            error += members.mean() * abs(labels[members].mean() - probabilities[members].mean())
    return float(error)
