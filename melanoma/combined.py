"""One reading from several models: the mean of their calibrated probabilities.

Three numbers and possibly three verdicts leave the clinician to reconcile them. The combined
reading averages the members' calibrated probabilities and reads the mean against its own
threshold, chosen on the validation split like every model's (`python -m train.combine`, which
writes `combined.json` beside the model folders with the members, threshold and test metrics).
A set of models without such a file gets the mean but no verdict, and any disagreement between
the members' verdicts is said plainly.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

COMBINED_FILE = "combined.json"


@dataclass(frozen=True)
class CombinedSpec:
    members: tuple[str, ...]
    threshold: float
    metrics: dict

    @classmethod
    def load(cls, models_dir: str | Path) -> "CombinedSpec | None":
        """The validated combination in this models folder, or None when there is none (or it is unreadable)."""
        path = Path(models_dir) / COMBINED_FILE
        try:
            stored = json.loads(path.read_text(encoding="utf-8"))
            return cls(tuple(stored["members"]), float(stored["threshold"]), stored["metrics"])
        except (OSError, ValueError, KeyError, TypeError):
            return None


@dataclass(frozen=True)
class CombinedReading:
    probability: float
    threshold: float | None  # None: no validated threshold for this set of models
    members: tuple[str, ...]
    disagreement: bool
    assessed: bool  # False when any member's gate says the image is not a dermoscopic lesion image

    @property
    def melanoma(self) -> bool | None:
        return None if self.threshold is None else self.probability >= self.threshold

    def summary(self) -> str:
        if not self.assessed:
            return ("Combined reading: not assessed, because at least one model finds this image unlike the "
                    "dermoscopic images it was trained on.")
        mean = f"mean calibrated probability of {len(self.members)} models {self.probability:.1%}"
        if self.threshold is None:
            verdict = f"{mean}; no combined threshold was validated for this set of models, so no combined verdict"
        else:
            relation = "at or above" if self.melanoma else "below"
            verdict = (f"{'Suspicious for melanoma' if self.melanoma else 'Not flagged as melanoma'}: {mean}, "
                       f"{relation} the combined threshold {self.threshold:.1%}")
        disagreement = " The models disagree about the verdict: read each one below." if self.disagreement else ""
        return f"Combined reading: {verdict}.{disagreement}"


def mean_probability(probabilities: list[np.ndarray]) -> np.ndarray:
    """The combined score: the plain mean of the members' calibrated probabilities."""
    return np.mean(np.stack(probabilities), axis=0)


def combine(decisions: list, spec: CombinedSpec | None) -> CombinedReading:
    """The combined reading of one image from its per-model decisions (melanoma.cases.Decision)."""
    members = tuple(decision.model for decision in decisions)
    probability = float(mean_probability([np.array([d.probability]) for d in decisions])[0])
    threshold = spec.threshold if spec is not None and set(spec.members) == set(members) else None
    verdicts = {decision.melanoma for decision in decisions}
    return CombinedReading(probability, threshold, members, len(verdicts) > 1, all(d.assessed for d in decisions))
