"""The seven diagnoses of ISIC 2018 Task 3 / HAM10000: their codes, the words a clinician uses,
and which of them are skin cancers.

A diagnosis model's softmax has one output per code, in `CODES` order; every reader of labels
(the three data layouts, the Validate page's labels.csv) maps its own spelling onto these codes
here, so an unknown code fails the same way everywhere.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
from scipy.optimize import minimize

from melanoma.calibration import EPSILON

CODES = ("MEL", "NV", "BCC", "AKIEC", "BKL", "DF", "VASC")
MELANOMA = "MEL"
# Skin cancers: melanoma, basal cell carcinoma, and actinic keratosis / Bowen's disease
# (intraepidermal carcinoma, which ISIC counts as malignant).
MALIGNANT = ("MEL", "BCC", "AKIEC")
OTHER_CANCERS = ("BCC", "AKIEC")
NAMES = {
    "MEL": "melanoma",
    "NV": "melanocytic naevus",
    "BCC": "basal cell carcinoma",
    "AKIEC": "actinic keratosis / Bowen's disease",
    "BKL": "benign keratosis (seborrhoeic keratosis, solar lentigo, lichenoid keratosis)",
    "DF": "dermatofibroma",
    "VASC": "vascular lesion (angioma, angiokeratoma, pyogenic granuloma, haemorrhage)",
}
ALLOWED_TEXT = ", ".join(CODES)


def parse_code(value: str) -> str | None:
    """The code for a label as written (any case: 'mel', 'AKIEC'); None when it is not one of the seven."""
    code = str(value).strip().upper()
    return code if code in CODES else None


def index_of(code: str) -> int:
    """The code's position in a diagnosis model's output."""
    return CODES.index(code)


def melanoma_column(outputs: np.ndarray) -> np.ndarray:
    """The raw melanoma probability within a network's outputs: a melanoma model's (n,) as they
    are, a diagnosis model's (n, 7) softmax its MEL column."""
    outputs = np.asarray(outputs)
    return outputs[:, index_of(MELANOMA)] if outputs.ndim == 2 else outputs


@dataclass(frozen=True)
class ClassCalibration:
    """Calibrated diagnosis probabilities: softmax(log(p_raw) / temperature + bias).

    Class weights train the network as if the seven diagnoses were equally common, so its softmax
    overstates the rare ones; the per-class biases undo that prior shift and the temperature any
    over- or under-confidence (temperature scaling with a bias vector, fitted by maximum
    likelihood on the validation split). Temperature 1 with no biases is the identity.
    """

    temperature: float = 1.0
    biases: tuple[float, ...] = ()
    method: str = "temperature and per-class bias"
    fitted_on: str = "none"

    def logits(self, raw: np.ndarray) -> np.ndarray:
        """Calibrated logits (up to a constant per image) of raw softmax probabilities."""
        logits = np.log(np.clip(np.asarray(raw, dtype=np.float64), EPSILON, 1.0)) / self.temperature
        return logits + np.asarray(self.biases) if self.biases else logits

    def __call__(self, raw: np.ndarray) -> np.ndarray:
        return softmax(self.logits(raw))

    def to_dict(self) -> dict:
        return {**asdict(self), "biases": list(self.biases)}

    @classmethod
    def from_dict(cls, values: dict | None) -> "ClassCalibration":
        return cls(**{**values, "biases": tuple(values.get("biases", ()))}) if values else cls()


def fit_class_calibration(codes: list[str], raw: np.ndarray, fitted_on: str = "validation split") -> ClassCalibration:
    """Temperature and biases that minimise the validation split's negative log-likelihood.

    The first class's bias stays 0 (adding one number to every bias changes nothing); a class
    absent from the validation split keeps its bias 0 rather than being pushed towards zero.
    """
    targets = np.array([index_of(code) for code in codes])
    log_raw = np.log(np.clip(np.asarray(raw, dtype=np.float64), EPSILON, 1.0))
    present = np.isin(np.arange(log_raw.shape[1]), targets)

    def loss(parameters: np.ndarray) -> float:
        biases = np.where(present, np.r_[0.0, parameters[1:]], 0.0)
        logits = log_raw / np.exp(parameters[0]) + biases
        logits -= logits.max(axis=1, keepdims=True)
        return float(-(logits[np.arange(len(targets)), targets] - np.log(np.exp(logits).sum(axis=1))).mean())

    fitted = minimize(loss, np.zeros(log_raw.shape[1]), method="L-BFGS-B")
    biases = np.where(present, np.r_[0.0, fitted.x[1:]], 0.0)
    return ClassCalibration(float(np.exp(fitted.x[0])), tuple(float(b) for b in biases), fitted_on=fitted_on)


def softmax(logits: np.ndarray) -> np.ndarray:
    shifted = np.exp(logits - logits.max(axis=-1, keepdims=True))
    return shifted / shifted.sum(axis=-1, keepdims=True)


def with_melanoma_probability(logits: np.ndarray, melanoma: np.ndarray) -> np.ndarray:
    """Diagnosis probabilities whose MEL column is the (Platt-calibrated) melanoma probability that
    the verdict reads, the other diagnoses sharing the rest in the proportions their calibrated
    `logits` give (taken in logits, so they survive a softmax that rounds them to 0): the
    differential and the melanoma line never say two different numbers."""
    column = index_of(MELANOMA)
    others = [i for i in range(np.shape(logits)[1]) if i != column]
    probabilities = np.empty(np.shape(logits), dtype=np.float64)
    probabilities[:, others] = (
        softmax(np.asarray(logits, dtype=np.float64)[:, others]) * (1.0 - np.asarray(melanoma))[:, None]
    )
    probabilities[:, column] = melanoma
    return probabilities


def malignant_probability(probabilities: np.ndarray) -> np.ndarray:
    """P(skin cancer): the summed probability of the malignant diagnoses."""
    return np.asarray(probabilities)[:, [index_of(code) for code in MALIGNANT]].sum(axis=1)


def ranked(probabilities: np.ndarray) -> list[tuple[str, float]]:
    """One image's diagnoses, most probable first, as (code, probability)."""
    order = np.argsort(-np.asarray(probabilities), kind="stable")
    return [(CODES[i], float(probabilities[i])) for i in order]


def short_differential(differential: list[tuple[str, float]] | tuple, shown: int = 3) -> str:
    """'BCC 61%, BKL 20%, MEL 9%': the leading diagnoses of a `ranked` differential in one line,
    for tables and terminals."""
    return ", ".join(f"{code} {probability:.0%}" for code, probability in differential[:shown])
