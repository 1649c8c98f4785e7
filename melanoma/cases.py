"""One uploaded case: decode, score with one or more models, explain. No Streamlit here.

The app keeps uploads in memory; these functions take bytes and return arrays and numbers, so
the app, the CLI and the tests all compute the same thing.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import numpy as np

from melanoma.diagnoses import MALIGNANT, NAMES, OTHER_CANCERS, ranked, short_differential
from melanoma.images import DecodedImage, ImageError, decode_image, to_model_input
from melanoma.metrics import Evidence, evidence_for


def not_recognised(flagged: bool | None) -> str:
    """The skin cancers a melanoma-only verdict leaves open, and what that means for this verdict
    (None: a reading without one): said under one model's (scope_sentence), and under a combined
    reading's when none of its models names these cancers."""
    meaning = {
        True: "a flagged lesion may be one of them rather than a melanoma",
        False: '"not flagged" does not rule them out',
        None: "this reading does not rule them out",
    }[flagged]
    return f"{NAMES['BCC']}, {NAMES['AKIEC']} or other non-melanoma skin cancers, so {meaning}."


def scope_sentence(flagged: bool) -> str:
    """What a melanoma-only model's verdict does not cover."""
    return (
        "This model separates melanoma from all other lesions; "
        f"it was not trained to recognise {not_recognised(flagged)}"
    )


def percent_apart(value: float, threshold: float) -> tuple[str, str]:
    """A probability and the threshold it is read against, in percent: one decimal, or as many more
    as two different numbers need to read differently ("10.6%, below the threshold 10.6%" reads as
    a contradiction; rounding never reverses their order, it only merges them)."""
    for decimals in range(1, 7):
        shown = f"{value:.{decimals}%}", f"{threshold:.{decimals}%}"
        if shown[0] != shown[1] or value == threshold:
            break
    return shown


# Said where a map would be, in the app and the PDF report, for a model whose gate refused the image.
NO_MAP_NOT_ASSESSED = (
    "No explanation map: this model did not assess the image, so a map would only show what drove an output "
    "that is not a melanoma probability."
)


@dataclass(frozen=True)
class Decision:
    """A probability read against the model's validated threshold, in a clinician's words."""

    model: str
    probability: float
    threshold: float
    sensitivity: float | None
    specificity: float | None
    evidence: Evidence | None = None  # the validation and test lesions scored like this, and how many were melanomas
    in_distribution: bool = True  # the out-of-distribution gate's verdict on the image
    ood_reason: str = ""
    # A diagnosis model's: P(skin cancer) with its threshold, and the diagnoses most probable first.
    malignant_probability: float | None = None
    malignant_threshold: float | None = None
    differential: tuple[tuple[str, float], ...] = ()

    @property
    def assessed(self) -> bool:
        """Only an image that looks like the training images gets a verdict."""
        return self.in_distribution

    def calibration_meaning(self) -> str:
        """The calibrated probability's evidence: one statement, from enough lesions to mean something."""
        if self.evidence is None:
            return (
                "This model's metrics hold no reliability evidence to say how often such a score was a melanoma; "
                "recalibrate it with python -m train.calibrate."
            )
        return f"{self.evidence.sentence()} The probability is calibrated on the validation split."

    @property
    def melanoma(self) -> bool:
        return self.probability >= self.threshold

    @property
    def verdict(self) -> str:
        """The table's word for this decision."""
        if not self.assessed:
            return "not assessed: not a dermoscopic lesion image"
        return "suspicious" if self.melanoma else "not flagged"

    @property
    def skin_cancer(self) -> bool | None:
        """A diagnosis model's verdict on P(skin cancer); None for a melanoma model."""
        if self.malignant_probability is None or self.malignant_threshold is None:
            return None
        return self.malignant_probability >= self.malignant_threshold

    @property
    def skin_cancer_verdict(self) -> str | None:
        """The table's word for a diagnosis model's skin-cancer reading; None for a melanoma model."""
        if self.skin_cancer is None:
            return None
        if not self.assessed:
            return "not assessed"
        return skin_cancer_word(self.skin_cancer, self.melanoma)

    def skin_cancer_summary(self) -> str | None:
        """The line beside the melanoma verdict: a basal cell carcinoma the melanoma threshold leaves
        unflagged still reads "Other skin cancer: suspicious"."""
        if self.skin_cancer is None or not self.assessed:
            return None
        cancers = ", ".join(NAMES[code] for code in MALIGNANT)
        probability, threshold = percent_apart(self.malignant_probability, self.malignant_threshold)
        measured = (
            f"probability of a skin cancer ({cancers}) {probability}, "
            f"{'at or above' if self.skin_cancer else 'below'} its operating threshold {threshold}"
        )
        if not self.skin_cancer and self.melanoma:  # "not flagged" would contradict the melanoma verdict
            return f"Skin cancer: melanoma only (the verdict above); no other skin cancer suspected: {measured}."
        if not self.skin_cancer:
            return f"Skin cancer: not flagged: {measured}."
        if self.melanoma:
            return f"Skin cancer: suspicious: {measured} (melanoma above)."
        others = dict(self.differential)
        named = ", ".join(f"{NAMES[code]} {others[code]:.1%}" for code in OTHER_CANCERS)
        return f"Other skin cancer: suspicious: {measured}; {named}."

    def scope_note(self, alone: bool = True) -> str | None:
        """For a melanoma-only model, what its verdict does not cover: "not flagged" beside a basal cell
        carcinoma must not read as reassurance from a model never trained to recognise one, and a flag
        may be one of those cancers rather than a melanoma. Beside a combined reading (not `alone`), whose
        lines say it where it applies, the note is not repeated per model."""
        if not alone or self.malignant_probability is not None or self.differential or not self.assessed:
            return None
        return scope_sentence(self.melanoma)

    @property
    def shows_differential(self) -> bool:
        """A differential to show: a diagnosis model's, on an image its gate did not refuse."""
        return bool(self.differential) and self.assessed

    def differential_text(self) -> str | None:
        """The diagnoses most probable first, in a clinician's words, with calibrated probabilities."""
        if not self.shows_differential:
            return None
        return "Differential: " + "; ".join(f"{NAMES[code]} {p:.1%}" for code, p in self.differential) + "."

    def brief_differential(self) -> str | None:
        """The leading diagnoses in one line for a table's cell ('BCC 61%, BKL 20%, MEL 9%'), or None."""
        return short_differential(self.differential) if self.shows_differential else None

    def summary(self) -> str:
        if not self.assessed:
            return (
                f"Not assessed: {self.ood_reason}. This model was made for dermoscopic images of skin lesions; its "
                f"output for this image ({self.probability:.1%}) is not a melanoma probability."
            )
        verdict = "Suspicious for melanoma" if self.melanoma else "Not flagged as melanoma"
        relation = "at or above" if self.melanoma else "below"
        probability, threshold = percent_apart(self.probability, self.threshold)
        return f"{verdict}: probability {probability}, {relation} the operating threshold {threshold}."

    def threshold_meaning(self) -> str:
        if self.sensitivity is None or self.specificity is None:
            return "This model's card holds no test-split sensitivity and specificity."
        return (
            f"At this threshold the model flagged {self.sensitivity:.0%} of the melanomas in its test split "
            f"(sensitivity) and cleared {self.specificity:.0%} of the other lesions (specificity)."
        )


def skin_cancer_word(skin_cancer: bool, melanoma: bool) -> str:
    """The skin-cancer verdict in a word: below its own threshold beside a melanoma verdict it is
    "melanoma only", since a "not flagged" there would contradict that verdict (melanoma is a skin cancer)."""
    return "suspicious" if skin_cancer else "melanoma only" if melanoma else "not flagged"


def digest(data: bytes) -> str:
    """A content key for caching results per image (never the file name, which may repeat)."""
    return hashlib.sha256(data).hexdigest()


def decode_upload(data: bytes, name: str) -> DecodedImage | ImageError:
    """The decoded image, or the ImageError that says why this file cannot be used."""
    try:
        return decode_image(data, name)
    except ImageError as error:
        return error


def decide(predictor, pixels: np.ndarray) -> Decision:
    """One model's decision on one image: calibrated probability, verdict, gate, and for a
    diagnosis model the skin-cancer reading and the differential."""
    return decide_all(predictor, [pixels])[0]


def decide_all(predictor, images: list[np.ndarray]) -> list[Decision]:
    """The model's decision on each image, read in one batch."""
    reading = predictor.read(images)
    return [decision_from(predictor, reading, index) for index in range(len(images))]


def decision_from(predictor, reading, index: int) -> Decision:
    """The decision on image `index` of a batch that `predictor` has read (melanoma.inference.Reading)."""
    probability, gate = float(reading.scores.melanoma[index]), reading.gates[index]
    metrics = predictor.entry.metrics
    rates = metrics.get("at_threshold", {})
    diagnosis = {}
    if reading.scores.diagnoses is not None:
        diagnosis = {
            "malignant_probability": float(reading.scores.malignant[index]),
            "malignant_threshold": predictor.entry.malignant_threshold,
            "differential": tuple(ranked(reading.scores.diagnoses[index])),
        }
    return Decision(
        predictor.name,
        probability,
        predictor.threshold,
        rates.get("sensitivity"),
        rates.get("specificity"),
        evidence_for(metrics.get("reliability_evidence", []), probability),
        gate.in_distribution,
        gate.reason,
        **diagnosis,
    )


def model_view(predictor, pixels: np.ndarray) -> np.ndarray:
    """The image exactly as the model sees it (square, at its input size), as float32."""
    return to_model_input(pixels, predictor.entry.input_size).astype(np.float32)
