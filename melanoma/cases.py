"""One uploaded case: decode, score with one or more models, explain. No Streamlit here.

The app keeps uploads in memory; these functions take bytes and return arrays and numbers, so
the app, the CLI and the tests all compute the same thing.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import numpy as np

from melanoma.images import DecodedImage, ImageError, decode_image, to_model_input


@dataclass(frozen=True)
class Decision:
    """A probability read against the model's validated threshold, in a clinician's words."""

    model: str
    probability: float
    threshold: float
    sensitivity: float | None
    specificity: float | None
    observed_rate: float | None = None  # fraction of melanomas among test lesions scored like this
    in_distribution: bool = True  # the out-of-distribution gate's verdict on the image
    ood_reason: str = ""

    @property
    def assessed(self) -> bool:
        """Only an image that looks like the training images gets a verdict."""
        return self.in_distribution

    def calibration_meaning(self) -> str:
        if self.observed_rate is None:
            return "This model's card holds no test-split calibration curve to say how often such a score was right."
        return (f"In testing, about {round(100 * self.observed_rate)} of 100 lesions with a score like this were "
                "melanomas (the probability is calibrated on the validation split).")

    @property
    def melanoma(self) -> bool:
        return self.probability >= self.threshold

    def summary(self) -> str:
        if not self.assessed:
            return (f"Not assessed: {self.ood_reason}. This model was made for dermoscopic images of skin lesions; its "
                    f"output for this image ({self.probability:.1%}) is not a melanoma probability.")
        verdict = "Suspicious for melanoma" if self.melanoma else "Not flagged as melanoma"
        relation = "at or above" if self.melanoma else "below"
        return f"{verdict}: probability {self.probability:.1%}, {relation} the operating threshold {self.threshold:.1%}."

    def threshold_meaning(self) -> str:
        if self.sensitivity is None or self.specificity is None:
            return "This model's card holds no test-split sensitivity and specificity."
        return (f"At this threshold the model flagged {self.sensitivity:.0%} of the melanomas in its test split "
                f"(sensitivity) and cleared {self.specificity:.0%} of the other lesions (specificity).")


def digest(data: bytes) -> str:
    """A content key for caching results per image (never the file name, which may repeat)."""
    return hashlib.sha256(data).hexdigest()


def decode_upload(data: bytes, name: str) -> DecodedImage | ImageError:
    """The decoded image, or the ImageError that says why this file cannot be used."""
    try:
        return decode_image(data, name)
    except ImageError as error:
        return error


def observed_melanoma_rate(metrics: dict, probability: float) -> float | None:
    """The test split's fraction of melanomas in the reliability-curve bin nearest this probability."""
    curve = metrics.get("calibration") or {}
    predicted, observed = curve.get("mean_predicted") or [], curve.get("fraction_melanoma") or []
    if not predicted:
        return None
    return float(observed[int(np.argmin(np.abs(np.asarray(predicted) - probability)))])


def decide(predictor, pixels: np.ndarray) -> Decision:
    probability = float(predictor.probabilities([pixels])[0])
    gate = predictor.gate([pixels])[0]
    metrics = predictor.entry.metrics
    rates = metrics.get("at_threshold", {})
    return Decision(predictor.name, probability, predictor.threshold, rates.get("sensitivity"), rates.get("specificity"),
                    observed_melanoma_rate(metrics, probability), gate.in_distribution, gate.reason)


def model_view(predictor, pixels: np.ndarray) -> np.ndarray:
    """The image exactly as the model sees it (square, at its input size), as float32."""
    return to_model_input(pixels, predictor.entry.input_size).astype(np.float32)
