"""One reading from several models: the average of their calibrated probabilities.

Three numbers and possibly three verdicts leave the clinician to reconcile them. The combined
reading averages the calibrated melanoma probabilities of a set of members chosen on the
validation split (`python -m train.combine`: forward selection by validation ROC AUC, never the
test split) and reads the average against its own threshold, chosen on validation like every
model's. The average is the mean of the probabilities or of their log-odds, whichever
cross-validation within the validation split trusts more (`Combination`). `combined.json`,
beside the model folders, records the members, how they are averaged, why each other candidate
was left out, the threshold, and validation and test metrics.

Where diagnosis models are installed, the combined reading also carries one averaged differential:
the mean of the calibrated diagnosis probabilities of diagnosis members chosen the same way, by
validation balanced multi-class accuracy (ISIC 2018 Task 3's metric), its melanoma column the
combined melanoma probability, and its skin-cancer probability read against its own threshold.
One differential replaces one per diagnosis model, which could name different leading diagnoses.

The combined reading is served like a model, under the name `combined`: `python -m melanoma
predict --model combined`, `explain`, `train.evaluate --model combined` and the app all use
`CombinedPredictor`, which scores every member in one pass per image (one decode, one resize per
input size, one feature extraction for the gates).
"""

from __future__ import annotations

import hashlib
import json
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import cv2
import numpy as np
from scipy.special import expit
from sklearn.metrics import balanced_accuracy_score, roc_auc_score
from sklearn.model_selection import StratifiedKFold

from melanoma import diagnoses
from melanoma.calibration import EPSILON, clipped_logit
from melanoma.card import json_object, names, proportion
from melanoma.cases import Decision, not_recognised, percent_apart
from melanoma.images import to_model_input

if TYPE_CHECKING:
    from collections.abc import Callable

    from melanoma.inference import Scores

COMBINED_FILE = "combined.json"
COMBINED_NAME = "combined"  # the name under which the combined reading is chosen, like a model's
MIN_GAIN = 0.001  # validation ROC AUC a further member must add to join
COMBINATION_CV_REPEATS = 10  # repeats of the 5-fold cross-validation that chooses how to average
# Validation balanced multi-class accuracy a further diagnosis member must add to the differential:
# about one more image of a rare diagnosis (dermatofibroma, vascular) recognised, not noise.
DIFFERENTIAL_MIN_GAIN = 0.01
DIFFERENTIAL_CV_REPEATS = 10  # repeats of the 5-fold cross-validation that chooses the differential's rule
FORWARD_SELECTION = "forward selection"
EVERY_CANDIDATE = "the mean of every candidate"


def mean_probability(probabilities: list[np.ndarray]) -> np.ndarray:
    """The plain mean of the members' calibrated probabilities (or diagnosis probability vectors)."""
    return np.mean(np.stack(probabilities), axis=0)


def mean_log_odds(probabilities: list[np.ndarray]) -> np.ndarray:
    """The probability whose log-odds are the mean of the members' (the geometric mean of their odds):
    one confident member moves it more than the plain mean lets it."""
    return expit(clipped_logit(np.stack(probabilities)).mean(axis=0))


@dataclass(frozen=True)
class Combination:
    """One way to average the members' calibrated melanoma probabilities into the combined one."""

    name: str  # what combined.json's "combination" holds
    phrase: str  # how a reading names its number
    average: Callable[[list[np.ndarray]], np.ndarray]


PROBABILITY_MEAN = Combination(
    "mean of the members' calibrated probabilities", "mean calibrated probability", mean_probability
)
LOG_ODDS_MEAN = Combination(
    "mean of the members' calibrated log-odds (the geometric mean of their odds)",
    "combined calibrated probability (mean log-odds)",
    mean_log_odds,
)
COMBINATIONS = {combination.name: combination for combination in (PROBABILITY_MEAN, LOG_ODDS_MEAN)}


def combination_named(name: str) -> Combination:
    try:
        return COMBINATIONS[name]
    except KeyError:
        raise ValueError(f"its combination {name!r} is not one of: {'; '.join(COMBINATIONS)}") from None


class CombinedUnavailableError(RuntimeError):
    """No usable combined reading; the message says which file or member and what to do."""


@dataclass(frozen=True)
class DifferentialSpec:
    """The validated averaged differential: its diagnosis members and its skin-cancer threshold."""

    members: tuple[str, ...]
    malignant_threshold: float

    @classmethod
    def from_dict(cls, stored: object) -> "DifferentialSpec | None":
        """combined.json's "differential", checked; None where it has none."""
        if stored is None:
            return None
        stored = json_object(stored, "differential")
        return cls(
            _members(stored["members"], "differential.members"),
            proportion(stored["malignant_threshold"], "differential.malignant_threshold"),
        )


def _members(value: object, key: str) -> tuple[str, ...]:
    """The models a combination averages: at least one, each by name and once (a repeated one would
    weigh more in the mean), none the combined reading itself (which would read itself without end)."""
    members = names(value, key)
    if not members:
        raise ValueError(f"{key} must name at least one model; found none")
    if repeated := sorted({member for member in members if members.count(member) > 1}):
        raise ValueError(f"{key} must name each model once; found {', '.join(map(repr, repeated))} more than once")
    if COMBINED_NAME in members:
        raise ValueError(f"{key} must name installed models; found {COMBINED_NAME!r}, the combined reading itself")
    return members


@dataclass(frozen=True)
class CombinedSpec:
    """The validated combination: its members, threshold, test metrics and how it was chosen."""

    members: tuple[str, ...]  # those whose melanoma probabilities are averaged
    threshold: float
    metrics: dict
    selection: dict = field(default_factory=dict)  # candidates, steps, reasons for leaving each out
    holdout_metrics: dict = field(default_factory=dict)  # source -> the members' held-out runs combined
    differential: DifferentialSpec | None = None  # None: no diagnosis models were combined
    combination: Combination = PROBABILITY_MEAN
    sha256: str | None = None  # of the combined.json read: which definition a reading followed

    @property
    def name(self) -> str:
        """The reading's name, as a model's: what `predict --model` and the app's picker take."""
        return COMBINED_NAME

    @property
    def models(self) -> tuple[str, ...]:
        """Every model the combined reading reads: the melanoma members, then the differential's others."""
        others = tuple(m for m in self.differential.members if m not in self.members) if self.differential else ()
        return self.members + others

    @property
    def label(self) -> str:
        """'combined (3 models; differential of 5)': the name a table row, a matrix's title or a chart's
        legend shows; short enough for them, where `composition` says which models."""
        count = len(self.members)
        differential = f"; differential of {len(self.differential.members)}" if self.differential else ""
        return f"{COMBINED_NAME} ({count} model{'s' if count != 1 else ''}{differential})"

    @property
    def composition(self) -> str:
        """'a, b (mean of …); differential of c, d': which models the reading averages, and how."""
        return f"{', '.join(self.members)} ({self.combination.name}){self.differential_note}"

    @property
    def legend(self) -> str:
        """'combined (3 models; …): a, b, c (…); …': the label with what it stands for, beside a table that shows it."""
        return f"{self.label}: {self.composition}."

    @property
    def malignant_threshold(self) -> float | None:
        return self.differential.malignant_threshold if self.differential else None

    @property
    def differential_note(self) -> str:
        """'; differential of c, d' after a description of the melanoma members, or '' without one."""
        return f"; differential of {', '.join(self.differential.members)}" if self.differential else ""

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
            raw = path.read_bytes()
            return cls._from_stored(json.loads(raw.decode("utf-8")), hashlib.sha256(raw).hexdigest())
        except (OSError, ValueError, KeyError, TypeError) as error:
            reason = f"missing key {error}" if isinstance(error, KeyError) else f"{type(error).__name__}: {error}"
            raise CombinedUnavailableError(
                f"{path} is unreadable ({reason}); recreate it with "
                "python -m train.combine --data-dir DIR, or restore it from git."
            ) from None

    @classmethod
    def _from_stored(cls, stored: object, sha256: str) -> "CombinedSpec":
        """combined.json's object, every field a reading or a listing uses checked: ValueError or KeyError naming it."""
        stored = json_object(stored, "the file")
        metrics = json_object(stored["metrics"], "metrics")
        proportion(metrics.get("roc_auc"), "metrics.roc_auc")  # the test AUC every listing shows
        return cls(
            _members(stored["members"], "members"),
            proportion(stored["threshold"], "threshold"),
            metrics,
            json_object(stored.get("selection", {}), "selection"),
            json_object(stored.get("holdout_metrics", {}), "holdout_metrics"),
            DifferentialSpec.from_dict(stored.get("differential")),
            combination_named(stored.get("combination", PROBABILITY_MEAN.name)),
            sha256,
        )

    @classmethod
    def load(cls, models_dir: str | Path) -> "CombinedSpec | None":
        """The validated combination in this models folder, or None when there is none (or it is unreadable)."""
        try:
            return cls.read(models_dir)
        except CombinedUnavailableError:
            return None

    @classmethod
    def problem_in(cls, models_dir: str | Path) -> str | None:
        """Why this models folder's combined.json cannot be read, for the listings to say; None when it
        reads, or when there is none (a folder without a combined reading is not at fault)."""
        if not (Path(models_dir) / COMBINED_FILE).is_file():
            return None
        try:
            cls.read(models_dir)
        except CombinedUnavailableError as error:
            return str(error)
        return None


@dataclass(frozen=True)
class CombinedReading:
    probability: float
    threshold: float | None  # None: no validated threshold for this set of models
    members: tuple[str, ...]
    disagreement: bool  # the members' verdicts differ on an image that every model read assessed
    assessed: bool  # False when any member's gate says the image is not a dermoscopic lesion image
    # The validated averaged differential, read like one diagnosis model's decision; without one, the
    # diagnosis members' own decisions, whose skin-cancer lines and differentials the summary repeats:
    # the mean is a melanoma probability only, so a basal cell carcinoma would otherwise go unnamed here.
    averaged: Decision | None = None
    averaged_members: tuple[str, ...] = ()  # the diagnosis models whose differentials `averaged` is the mean of
    diagnosis_members: tuple[Decision, ...] = ()
    combination: Combination = PROBABILITY_MEAN  # how `probability` averages the members'
    definition_sha256: str | None = None  # the validated combined.json's (CombinedSpec.sha256); None for a plain mean

    @property
    def melanoma(self) -> bool | None:
        return None if self.threshold is None else self.probability >= self.threshold

    @property
    def models(self) -> tuple[str, ...]:
        """Every model this reading read: the averaged members, then the differential's others."""
        return self.members + tuple(m for m in self.averaged_members if m not in self.members)

    # The averaged differential's numbers under the names a diagnosis model's Decision gives them, so
    # `predict --json`, the audit trail and FHIR read either alike.
    @property
    def malignant_probability(self) -> float | None:
        return self.averaged.malignant_probability if self.averaged else None

    @property
    def malignant_threshold(self) -> float | None:
        return self.averaged.malignant_threshold if self.averaged else None

    @property
    def differential(self) -> tuple[tuple[str, float], ...]:
        return self.averaged.differential if self.averaged else ()

    @property
    def skin_cancer(self) -> bool | None:
        return self.averaged.skin_cancer if self.averaged else None

    @property
    def verdict(self) -> str:
        """The table's word for this reading."""
        if not self.assessed:
            return "not assessed"
        return "no validated threshold" if self.melanoma is None else "suspicious" if self.melanoma else "not flagged"

    def summary_lines(self) -> tuple[str, ...]:
        """The reading in sentences the page shows one per line: the verdict, any disagreement, then the
        averaged differential's skin-cancer line and differential (without one, each diagnosis member's)."""
        if not self.assessed:
            return (
                "Combined reading: not assessed, because at least one model finds this image unlike the "
                "dermoscopic images it was trained on.",
            )
        members = ", ".join(self.members)
        mean = f"{self.combination.phrase} of {len(self.members)} models ({members})"
        if self.threshold is None:
            verdict = (
                f"{mean} {self.probability:.1%}; no combined threshold was validated for this set of models, "
                "so no combined verdict"
            )
        else:
            relation = "at or above" if self.melanoma else "below"
            probability, threshold = percent_apart(self.probability, self.threshold)
            verdict = (
                f"{'Suspicious for melanoma' if self.melanoma else 'Not flagged as melanoma'}: {mean} {probability}, "
                f"{relation} the combined threshold {threshold}"
            )
        lines = [f"Combined reading: {verdict}."]
        if self.disagreement:
            lines.append("The models disagree about the verdict: read each one below.")
        if self.averaged:
            count = len(self.averaged_members)
            models = f"{count} diagnosis model{'' if count == 1 else 's'}"
            lines.append(f"Averaged differential of {models}: {self.averaged.skin_cancer_summary()}")
            lines.append(self.averaged.differential_text())
        for d in self.diagnosis_members:
            lines += [
                line
                for line in (f"{d.model} (diagnosis model): {d.skin_cancer_summary()}", d.differential_text())
                if line
            ]
        if not self.averaged and not self.diagnosis_members:
            lines.append(f"None of the models averaged here was trained to recognise {not_recognised(self.melanoma)}")
        return tuple(lines)

    def differential_members_line(self) -> str:
        """Which diagnosis models the averaged differential averages, or '' where none is read: the page shows it
        under the reading, small, since five long model names made its verdict hard to find."""
        if not (self.assessed and self.averaged):
            return ""
        return f"The averaged differential's models: {', '.join(self.averaged_members)}."

    def summary(self) -> str:
        """The reading as one paragraph, naming every model it averages (the report and the FHIR conclusion)."""
        return " ".join(line for line in (*self.summary_lines(), self.differential_members_line()) if line)


def combined_diagnoses(member_diagnoses: list[np.ndarray], melanoma: np.ndarray) -> np.ndarray:
    """The averaged differential (n, 7): the mean of the members' calibrated diagnosis probabilities,
    its melanoma column the combined melanoma probability and the other diagnoses sharing the rest in
    the mean's proportions, so the differential and the combined verdict never say two numbers."""
    mean = mean_probability(member_diagnoses)
    return diagnoses.with_melanoma_probability(np.log(np.clip(mean, EPSILON, 1.0)), melanoma)


def averaged_scores(members: list[Scores], melanoma: np.ndarray) -> Scores:
    """The averaged differential of diagnosis models' scores of a batch, around the combined
    melanoma probability: `combined_diagnoses`, and the mean of their equal-prior softmaxes."""
    from melanoma.inference import Scores

    return Scores(
        melanoma,
        combined_diagnoses([member.diagnoses for member in members], melanoma),
        mean_probability([member.equal_prior for member in members]),
    )


def combined_scores(spec: CombinedSpec, scores: dict[str, Scores]) -> Scores:
    """The combined reading's scores of a batch from its models' (`scores[name]` for each of `spec.models`)."""
    from melanoma.inference import Scores

    melanoma = spec.combination.average([scores[member].melanoma for member in spec.members])
    if spec.differential is None:
        return Scores(melanoma)
    return averaged_scores([scores[member] for member in spec.differential.members], melanoma)


def combine(decisions: list, spec: CombinedSpec | None) -> CombinedReading:
    """The combined reading of one image from per-model decisions (melanoma.cases.Decision).

    With a validated combination whose members are all among the decisions, the reading is
    theirs alone, against its threshold (the other models are shown, not averaged in); otherwise
    the plain mean of every decision, without a verdict. Its validated differential, where every
    diagnosis member is among the decisions, is read as one; otherwise each diagnosis model among
    the averaged ones adds its skin-cancer reading and differential, in its own name.
    """
    by_model = {decision.model: decision for decision in decisions}
    validated = spec is not None and all(member in by_model for member in spec.members)
    chosen = [by_model[member] for member in spec.members] if validated else decisions
    combination = spec.combination if validated else PROBABILITY_MEAN
    probability = float(combination.average([np.array([d.probability]) for d in chosen])[0])
    # Reported only where the reading is assessed: an image a gate refused has no verdict to disagree about.
    verdicts_differ = len({decision.melanoma for decision in chosen}) > 1
    differential = spec.differential if validated else None
    if differential and all(by_model.get(member) and by_model[member].differential for member in differential.members):
        members = [by_model[member] for member in differential.members]
        vectors = [np.array([[dict(d.differential)[code] for code in diagnoses.CODES]]) for d in members]
        mean = combined_diagnoses(vectors, np.array([probability]))
        assessed = all(by_model[name].assessed for name in spec.models)
        averaged = Decision(
            "averaged differential",
            probability,
            spec.threshold,
            None,
            None,
            in_distribution=assessed,
            malignant_probability=float(diagnoses.malignant_probability(mean)[0]),
            malignant_threshold=differential.malignant_threshold,
            differential=tuple(diagnoses.ranked(mean[0])),
        )
        return CombinedReading(
            probability,
            spec.threshold,
            tuple(d.model for d in chosen),
            assessed and verdicts_differ,
            assessed,
            averaged,
            differential.members,
            combination=combination,
            definition_sha256=spec.sha256,
        )
    assessed = all(d.assessed for d in chosen)
    return CombinedReading(
        probability,
        spec.threshold if validated else None,
        tuple(d.model for d in chosen),
        assessed and verdicts_differ,
        assessed,
        diagnosis_members=tuple(d for d in chosen if d.skin_cancer is not None),
        combination=combination,
        definition_sha256=spec.sha256 if validated else None,
    )


def forward_selection(
    candidates: dict[str, np.ndarray],
    score: Callable[[np.ndarray], float],
    key: str,
    measure: str,
    min_gain: float,
    average: Callable[[list[np.ndarray]], np.ndarray] = mean_probability,
) -> dict:
    """Forward selection on validation: start from the candidate whose own `score` is best, then add,
    one at a time, the one whose addition raises the score of the members' `average` most, while it
    raises it by at least `min_gain` (Caruana et al. 2004, without replacement).

    Returns {"members", "steps" (the score after each addition), `key` (the members' score, e.g.
    "validation_roc_auc"), "candidates" (each one's own score), "left_out" (candidate -> why, the score
    named `measure`)}.
    """
    own = {name: float(score(outputs)) for name, outputs in candidates.items()}
    members = [max(own, key=own.get)]
    steps = [{"added": members[0], key: own[members[0]]}]
    current = own[members[0]]
    while True:
        trials = {
            name: float(score(average([candidates[m] for m in (*members, name)])))
            for name in candidates
            if name not in members
        }
        if not trials or max(trials.values()) < current + min_gain:
            break
        best = max(trials, key=trials.get)
        members.append(best)
        current = trials[best]
        steps.append({"added": best, key: current})
    left_out = {
        name: (
            f"adding it would change the combination's validation {measure} from {current:.4f} to "
            f"{value:.4f} (a member must add at least {min_gain}); its own {measure} is {own[name]:.4f}"
        )
        for name, value in trials.items()
    }
    return {"members": members, "steps": steps, key: current, "candidates": own, "left_out": left_out}


def cross_validated_score(
    held_out: Callable[[np.ndarray, np.ndarray], np.ndarray],
    strata: np.ndarray,
    folds: int,
    repeats: int,
    score: Callable[[np.ndarray], float],
) -> float:
    """How well a selection rule does on images it did not choose by: repeated stratified k-fold
    cross-validation within the validation split. `held_out(fitted, held)` selects on the rows
    `fitted` and returns its outputs for the rows `held`; each repeat's outputs, pooled over its
    folds, are scored once by `score`, so that a rare class's few images count in one score rather
    than in noisy per-fold ones. The mean over the repeats."""
    scores = []
    for repeat in range(repeats):
        pooled = None
        with warnings.catch_warnings():
            # A diagnosis with fewer validation images than folds (3 dermatofibromas) is spread over
            # as many folds as it has images; scikit-learn warns once per repeat that it does so.
            warnings.filterwarnings("ignore", "The least populated class", UserWarning)
            splits = list(StratifiedKFold(folds, shuffle=True, random_state=repeat).split(strata, strata))
        for fitted, held in splits:
            outputs = held_out(fitted, held)
            if pooled is None:
                pooled = np.empty((len(strata), *outputs.shape[1:]), dtype=outputs.dtype)
            pooled[held] = outputs
        scores.append(score(pooled))
    return float(np.mean(scores))


def select_members(
    labels: np.ndarray,
    probabilities: dict[str, np.ndarray],
    min_gain: float = MIN_GAIN,
    repeats: int = COMBINATION_CV_REPEATS,
) -> dict:
    """The melanoma members and how to average them: forward selection by validation ROC AUC.

    With about a hundred validation melanomas, the ROC AUCs of different averages of the same members
    differ by less than their noise, so the average is chosen as the differential's rule is: for each
    `Combination`, forward selection refitted on four fifths of the validation split and scored by
    the ROC AUC of the rest (`cross_validated_score`: up to 5 folds, 10 repeats); the better one then
    selects the members on the whole split. The result is forward_selection's, with "combination"
    and "cross_validated" (combination -> held-out ROC AUC) added.
    """
    labels = np.asarray(labels).astype(int)

    def select(combination: Combination, rows: np.ndarray) -> dict:
        return forward_selection(
            {name: outputs[rows] for name, outputs in probabilities.items()},
            lambda p: roc_auc_score(labels[rows], p),
            "validation_roc_auc",
            "ROC AUC",
            min_gain,
            combination.average,
        )

    folds = min(5, int(np.bincount(labels, minlength=2).min()))  # a tiny validation split gets fewer folds
    cross_validated = {}
    if len(probabilities) > 1 and folds >= 2:
        for combination in COMBINATIONS.values():

            def held_out(fitted: np.ndarray, held: np.ndarray, combination=combination) -> np.ndarray:
                members = select(combination, fitted)["members"]
                return combination.average([probabilities[m][held] for m in members])

            cross_validated[combination.name] = cross_validated_score(
                held_out, labels, folds, repeats, lambda average: roc_auc_score(labels, average)
            )
    # The plain mean stays unless another scores higher by more than float rounding (folds whose
    # selection keeps one member score every average alike).
    chosen = PROBABILITY_MEAN
    for combination in COMBINATIONS.values():
        if cross_validated.get(combination.name, 0.0) > cross_validated.get(chosen.name, 0.0) + 1e-9:
            chosen = combination
    selection = select(chosen, np.arange(len(labels)))
    selection["combination"] = chosen.name
    if cross_validated:
        selection["cross_validated"] = cross_validated
    return selection


def select_differential(
    codes: list[str],
    equal_prior: dict[str, np.ndarray],
    min_gain: float = DIFFERENTIAL_MIN_GAIN,
    repeats: int = DIFFERENTIAL_CV_REPEATS,
) -> dict:
    """The differential's members, scored by validation balanced multi-class accuracy, each image's
    diagnosis the most probable of the members' mean softmax under equal class priors
    (`Scores.equal_prior`, the rule that metric rewards).

    Balanced accuracy rests on a few images of the rare diagnoses, so forward selection can fit
    the validation split's noise. Which rule to trust is therefore decided on validation too: the
    forward selection, refitted on four fifths and scored on the rest (`cross_validated_score`),
    against the mean of every candidate; the better one chooses the members.
    The result is forward_selection's, with "rule" and "cross_validated" (rule -> score) added.
    """
    true = np.array([diagnoses.index_of(code) for code in codes])

    def select(rows: np.ndarray) -> dict:
        return forward_selection(
            {name: outputs[rows] for name, outputs in equal_prior.items()},
            lambda p: balanced_accuracy_score(true[rows], p.argmax(axis=1)),
            "validation_balanced_multiclass_accuracy",
            "balanced multi-class accuracy",
            min_gain,
        )

    selection = select(np.arange(len(true)))
    selection["rule"] = FORWARD_SELECTION
    folds = min(5, int(np.bincount(true).max()))  # a tiny validation split gets fewer folds
    if len(equal_prior) < 2 or folds < 2:
        return selection
    # The mean of every candidate fits nothing, so its validation score needs no cross-validation.
    every = mean_probability(list(equal_prior.values())).argmax(axis=1)

    def held_out(fitted: np.ndarray, held: np.ndarray) -> np.ndarray:
        members = select(fitted)["members"]
        return mean_probability([equal_prior[m][held] for m in members]).argmax(axis=1)

    forward_score = cross_validated_score(
        held_out, true, folds, repeats, lambda chosen: balanced_accuracy_score(true, chosen)
    )
    every_score = float(balanced_accuracy_score(true, every))
    selection["cross_validated"] = {FORWARD_SELECTION: forward_score, EVERY_CANDIDATE: every_score}
    if every_score > selection["cross_validated"][FORWARD_SELECTION]:
        selection["rule"] = EVERY_CANDIDATE
        selection["members"] = list(equal_prior)
        selection["validation_balanced_multiclass_accuracy"] = every_score
        selection["left_out"] = {}
    return selection


class CombinedPredictor:
    """The combined reading served like a model: the validated models scored together, once per
    image, their calibrated melanoma probabilities (and diagnosis probabilities) averaged."""

    name = COMBINED_NAME

    def __init__(self, spec: CombinedSpec, members: list):
        self.spec = spec
        self.members = members  # a Predictor for each of spec.models, in that order

    @classmethod
    def load(cls, models_dir: str | Path) -> "CombinedPredictor":
        """Load every member; a member missing or failing its sha256 is named, with what to do."""
        from melanoma.inference import load_predictor
        from melanoma.store import ModelUnavailableError

        spec = CombinedSpec.read(models_dir)
        members = []
        for member in spec.models:
            try:
                members.append(load_predictor(member, models_dir))
            except ModelUnavailableError as error:
                raise CombinedUnavailableError(
                    f"The combined reading cannot be served: its member {member} is unavailable ({error}). Restore "
                    f"{member} (from git, or retrain it), or recreate the combination without it with python -m "
                    "train.combine --data-dir DIR. Every other model still serves on its own."
                ) from None
        not_diagnosis = [
            m.name for m in members if spec.differential and m.name in spec.differential.members and not m.is_diagnosis
        ]
        if not_diagnosis:
            raise CombinedUnavailableError(
                f"The combined reading cannot be served: its differential member(s) {', '.join(not_diagnosis)} "
                "are not diagnosis models (retrained with another target under the same name?). Recreate the "
                "combination with python -m train.combine --data-dir DIR. Every model still serves on its own."
            )
        return cls(spec, members)

    @property
    def threshold(self) -> float:
        return self.spec.threshold

    @property
    def melanoma_members(self) -> list:
        """The members whose calibrated melanoma probabilities are averaged (what the maps explain)."""
        return [member for member in self.members if member.name in self.spec.members]

    def read(self, images: list[np.ndarray]):
        """The combined reading of RGB images of any size (melanoma.inference.Reading)."""
        from melanoma.inference import read_together

        return self.combine_readings(read_together(self.members, images))

    def combine_readings(self, readings: list):
        """The members' readings of a batch (in `members` order) as one: the combined scores
        (`combined_scores`), and a gate verdict that is in distribution only when every member's is."""
        from melanoma.inference import Reading
        from melanoma.ood import GateResult

        gates = []
        for verdicts in zip(*(reading.gates for reading in readings)):
            refused = [verdict for verdict in verdicts if not verdict.in_distribution]
            gates.append(
                GateResult(
                    not refused, max(verdict.score for verdict in verdicts), refused[0].reason if refused else ""
                )
            )
        scores = {member.name: reading.scores for member, reading in zip(self.members, readings)}
        return Reading(combined_scores(self.spec, scores), gates)

    def probabilities(self, images: list[np.ndarray]) -> np.ndarray:
        return self.read(images).scores.melanoma

    def occlusion(self, pixels: np.ndarray, patch_size: int = 20) -> np.ndarray:
        """Occlusion sensitivity of the combined probability, at the largest member's input size.

        Each member's map is taken on the scale its combination averages (its calibrated probability,
        or its calibrated log-odds), so the drops add up, with its patch scaled to its input size, so
        every member greys out the same region of the image; the maps are resized to one grid and
        averaged. A mean drop D of log-odds is turned back into one of probability, P − expit(logit(P)
        − D), at the combined probability P of the intact image. Where every member has the same
        input size this is exactly the drop of the combined probability per patch.
        """
        from melanoma.explain.occlusion import occlusion_sensitivity

        log_odds = self.spec.combination is LOG_ODDS_MEAN
        size = max(member.serving.input_size for member in self.melanoma_members)
        maps, intact = [], []
        for member in self.melanoma_members:
            own = member.serving.input_size
            network = member.calibrated_log_odds_model if log_odds else member.calibrated_model
            view = to_model_input(pixels, own).astype(np.float32)
            scores = occlusion_sensitivity(network, view, max(1, round(patch_size * own / size)))
            maps.append(scores if own == size else cv2.resize(scores, (size, size), interpolation=cv2.INTER_NEAREST))
            if log_odds:
                intact.append(float(np.asarray(network(view[None], training=False)).reshape(-1)[0]))
        drops = np.mean(maps, axis=0)
        if not log_odds:
            return drops
        combined = float(np.mean(intact))  # the intact image's combined log-odds
        return (expit(combined) - expit(combined - drops)).astype(np.float32)

    def grad_cam(self, pixels: np.ndarray) -> np.ndarray:
        """The members' Grad-CAM maps (each peak 1), resized to the largest input size and averaged."""
        from melanoma.explain.gradcam import grad_cam

        members = self.melanoma_members
        size = max(member.serving.input_size for member in members)
        views = [to_model_input(pixels, member.serving.input_size).astype(np.float32) for member in members]
        maps = [
            cv2.resize(grad_cam(member.model, view, member.gradcam_layer), (size, size), interpolation=cv2.INTER_LINEAR)
            for member, view in zip(members, views)
        ]
        return np.mean(maps, axis=0)
