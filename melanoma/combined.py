"""One reading from several models: the mean of their calibrated probabilities.

Three numbers and possibly three verdicts leave the clinician to reconcile them. The combined
reading averages the calibrated melanoma probabilities of a set of members chosen on the
validation split (`python -m train.combine`: forward selection by validation ROC AUC, never the
test split) and reads the mean against its own threshold, chosen on validation like every
model's. `combined.json`, beside the model folders, records the members, why each other
candidate was left out, the threshold, and validation and test metrics.

The combined reading is served like a model, under the name `combined`: `python -m melanoma
predict --model combined`, `explain`, `train.evaluate --model combined` and the app all use
`CombinedPredictor`, which scores every member in one pass per image (one decode, one resize per
input size, one feature extraction for the gates).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import cv2
import numpy as np
from sklearn.metrics import roc_auc_score

from melanoma.images import to_model_input

if TYPE_CHECKING:
    from melanoma.cases import Decision

COMBINED_FILE = "combined.json"
COMBINED_NAME = "combined"  # the name under which the combined reading is chosen, like a model's
MIN_GAIN = 0.001  # validation ROC AUC a further member must add to join


class CombinedUnavailableError(RuntimeError):
    """No usable combined reading; the message says which file or member and what to do."""


@dataclass(frozen=True)
class CombinedSpec:
    """The validated combination: its members, threshold, test metrics and how it was chosen."""

    members: tuple[str, ...]
    threshold: float
    metrics: dict
    selection: dict = field(default_factory=dict)  # candidates, steps, reasons for leaving each out
    holdout_metrics: dict = field(default_factory=dict)  # source -> the members' held-out runs combined

    @property
    def label(self) -> str:
        """'combined (a + b)': the name a table shows, saying which models it averages."""
        return f"{COMBINED_NAME} ({' + '.join(self.members)})"

    @property
    def test_auc(self) -> float | None:
        return self.metrics.get("roc_auc")

    @classmethod
    def read(cls, models_dir: str | Path) -> "CombinedSpec":
        """The validated combination in this models folder; raises CombinedUnavailableError saying why not."""
        path = Path(models_dir) / COMBINED_FILE
        if not path.is_file():
            raise CombinedUnavailableError(
                f"No combined reading is installed: {path} does not exist. Create it with python -m train.combine "
                "--data-dir DIR (it chooses the members on the validation split), or choose a single model."
            )
        try:
            stored = json.loads(path.read_text(encoding="utf-8"))
            return cls(
                tuple(stored["members"]),
                float(stored["threshold"]),
                stored["metrics"],
                stored.get("selection", {}),
                stored.get("holdout_metrics", {}),
            )
        except (OSError, ValueError, KeyError, TypeError) as error:
            raise CombinedUnavailableError(
                f"{path} is unreadable ({type(error).__name__}: {error}); recreate it with "
                "python -m train.combine --data-dir DIR, or restore it from git."
            ) from None

    @classmethod
    def load(cls, models_dir: str | Path) -> "CombinedSpec | None":
        """The validated combination in this models folder, or None when there is none (or it is unreadable)."""
        try:
            return cls.read(models_dir)
        except CombinedUnavailableError:
            return None


@dataclass(frozen=True)
class CombinedReading:
    probability: float
    threshold: float | None  # None: no validated threshold for this set of models
    members: tuple[str, ...]
    disagreement: bool
    assessed: bool  # False when any member's gate says the image is not a dermoscopic lesion image
    # The diagnosis members' decisions, whose skin-cancer line and differential the summary repeats:
    # the mean is a melanoma probability only, so a basal cell carcinoma would otherwise go unnamed here.
    diagnosis_members: tuple[Decision, ...] = ()

    @property
    def melanoma(self) -> bool | None:
        return None if self.threshold is None else self.probability >= self.threshold

    @property
    def verdict(self) -> str:
        """The table's word for this reading."""
        if not self.assessed:
            return "not assessed"
        return "no validated threshold" if self.melanoma is None else "suspicious" if self.melanoma else "not flagged"

    def summary_lines(self) -> tuple[str, ...]:
        """The reading in sentences the page shows one per line: the verdict, any disagreement, then each
        diagnosis member's skin-cancer line and differential."""
        if not self.assessed:
            return (
                "Combined reading: not assessed, because at least one model finds this image unlike the "
                "dermoscopic images it was trained on.",
            )
        members = ", ".join(self.members)
        mean = f"mean calibrated probability of {len(self.members)} models ({members}) {self.probability:.1%}"
        if self.threshold is None:
            verdict = f"{mean}; no combined threshold was validated for this set of models, so no combined verdict"
        else:
            relation = "at or above" if self.melanoma else "below"
            verdict = (
                f"{'Suspicious for melanoma' if self.melanoma else 'Not flagged as melanoma'}: {mean}, "
                f"{relation} the combined threshold {self.threshold:.1%}"
            )
        lines = [f"Combined reading: {verdict}."]
        if self.disagreement:
            lines.append("The models disagree about the verdict: read each one below.")
        for d in self.diagnosis_members:
            lines += [
                line
                for line in (f"{d.model} (diagnosis model): {d.skin_cancer_summary()}", d.differential_text())
                if line
            ]
        return tuple(lines)

    def summary(self) -> str:
        """The reading as one paragraph (the report and the FHIR conclusion)."""
        return " ".join(self.summary_lines())


def mean_probability(probabilities: list[np.ndarray]) -> np.ndarray:
    """The combined score: the plain mean of the members' calibrated probabilities."""
    return np.mean(np.stack(probabilities), axis=0)


def combine(decisions: list, spec: CombinedSpec | None) -> CombinedReading:
    """The combined reading of one image from per-model decisions (melanoma.cases.Decision).

    With a validated combination whose members are all among the decisions, the reading is
    theirs alone, against its threshold (the other models are shown, not averaged in); otherwise
    the mean of every decision, without a verdict. Each diagnosis model among them adds its
    skin-cancer reading and differential, in its own name.
    """
    by_model = {decision.model: decision for decision in decisions}
    validated = spec is not None and all(member in by_model for member in spec.members)
    chosen = [by_model[member] for member in spec.members] if validated else decisions
    probability = float(mean_probability([np.array([d.probability]) for d in chosen])[0])
    verdicts = {decision.melanoma for decision in chosen}
    return CombinedReading(
        probability,
        spec.threshold if validated else None,
        tuple(d.model for d in chosen),
        len(verdicts) > 1,
        all(d.assessed for d in chosen),
        tuple(d for d in chosen if d.skin_cancer is not None),
    )


def select_members(labels: np.ndarray, probabilities: dict[str, np.ndarray], min_gain: float = MIN_GAIN) -> dict:
    """Forward selection on validation: start from the best model by validation ROC AUC, then add,
    one at a time, the candidate whose addition raises the mean's validation AUC most, while it
    raises it by at least `min_gain` (Caruana et al. 2004, without replacement).

    Returns {"members", "steps" (the validation AUC after each addition), "validation_roc_auc",
    "candidates" (each one's own validation AUC), "left_out" (candidate -> why)}.
    """
    own = {name: float(roc_auc_score(labels, p)) for name, p in probabilities.items()}
    members = [max(own, key=own.get)]
    steps = [{"added": members[0], "validation_roc_auc": own[members[0]]}]
    current = own[members[0]]
    while True:
        trials = {
            name: float(roc_auc_score(labels, mean_probability([probabilities[m] for m in (*members, name)])))
            for name in probabilities
            if name not in members
        }
        if not trials or max(trials.values()) < current + min_gain:
            break
        best = max(trials, key=trials.get)
        members.append(best)
        current = trials[best]
        steps.append({"added": best, "validation_roc_auc": current})
    left_out = {
        name: (
            f"adding it would change the combination's validation ROC AUC from {current:.4f} to "
            f"{auc:.4f} (a member must add at least {min_gain}); its own validation AUC is {own[name]:.4f}"
        )
        for name, auc in trials.items()
    }
    return {"members": members, "steps": steps, "validation_roc_auc": current, "candidates": own, "left_out": left_out}


class CombinedPredictor:
    """The combined reading served like a model: the validated members scored together, once per
    image, and their calibrated melanoma probabilities averaged."""

    name = COMBINED_NAME

    def __init__(self, spec: CombinedSpec, members: list):
        self.spec = spec
        self.members = members

    @classmethod
    def load(cls, models_dir: str | Path) -> "CombinedPredictor":
        """Load every member; a member missing or failing its sha256 is named, with what to do."""
        from melanoma.inference import load_predictor
        from melanoma.store import ModelUnavailableError

        spec = CombinedSpec.read(models_dir)
        members = []
        for member in spec.members:
            try:
                members.append(load_predictor(member, models_dir))
            except ModelUnavailableError as error:
                raise CombinedUnavailableError(
                    f"The combined reading cannot be served: its member {member} is unavailable ({error}). Restore "
                    f"{member} (from git, or retrain it), or recreate the combination without it with python -m "
                    "train.combine --data-dir DIR. Every other model still serves on its own."
                ) from None
        return cls(spec, members)

    @property
    def threshold(self) -> float:
        return self.spec.threshold

    def read(self, images: list[np.ndarray]):
        """The combined reading of RGB images of any size (melanoma.inference.Reading)."""
        from melanoma.inference import read_together

        return self.combine_readings(read_together(self.members, images))

    def combine_readings(self, readings: list):
        """The members' readings of a batch (in `members` order) as one: the mean calibrated
        probability, and a gate verdict that is in distribution only when every member's is."""
        from melanoma.inference import Reading, Scores
        from melanoma.ood import GateResult

        gates = []
        for verdicts in zip(*(reading.gates for reading in readings)):
            refused = [verdict for verdict in verdicts if not verdict.in_distribution]
            gates.append(
                GateResult(
                    not refused, max(verdict.score for verdict in verdicts), refused[0].reason if refused else ""
                )
            )
        return Reading(Scores(mean_probability([reading.scores.melanoma for reading in readings])), gates)

    def probabilities(self, images: list[np.ndarray]) -> np.ndarray:
        return self.read(images).scores.melanoma

    def occlusion(self, pixels: np.ndarray, patch_size: int = 20) -> np.ndarray:
        """Occlusion sensitivity of the combined probability, at the largest member's input size.

        Each member's map is taken on its calibrated output (so the drops add up on the scale that
        is averaged) with its patch scaled to its input size, so every member greys out the same
        region of the image; the maps are resized to one grid and averaged. Where every member has
        the same input size this is exactly the drop of the combined probability per patch.
        """
        from melanoma.explain.occlusion import occlusion_sensitivity

        size = max(member.serving.input_size for member in self.members)
        maps = []
        for member in self.members:
            own = member.serving.input_size
            view = to_model_input(pixels, own).astype(np.float32)
            scores = occlusion_sensitivity(member.calibrated_model, view, max(1, round(patch_size * own / size)))
            maps.append(scores if own == size else cv2.resize(scores, (size, size), interpolation=cv2.INTER_NEAREST))
        return np.mean(maps, axis=0)

    def grad_cam(self, pixels: np.ndarray) -> np.ndarray:
        """The members' Grad-CAM maps (each peak 1), resized to the largest input size and averaged."""
        from melanoma.explain.gradcam import grad_cam

        size = max(member.serving.input_size for member in self.members)
        views = [to_model_input(pixels, member.serving.input_size).astype(np.float32) for member in self.members]
        maps = [
            cv2.resize(grad_cam(member.model, view, member.gradcam_layer), (size, size), interpolation=cv2.INTER_LINEAR)
            for member, view in zip(self.members, views)
        ]
        return np.mean(maps, axis=0)
