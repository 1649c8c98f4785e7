"""The model card: what a model folder's card.json holds, read and written here alone.

A card has the model's identity (name, the weights' sha256) and four sections: the network and
where its weights started, how to serve it, its operating points, and the training run that made
it. On disk the sections share one flat JSON object (the layout every shipped card has), except
`serving`, which is its own object. Cards written before a key existed still read: each missing
key takes the default below, and a card from before the "serving" object gets one from its older
`input_size` and `test_time_augmentation` keys. Every value that serving or a listing uses is
checked here, so a malformed card is refused with the field named, never a crash later.
"""

from __future__ import annotations

import dataclasses
import numbers
from dataclasses import dataclass, field
from pathlib import Path

from melanoma.calibration import PlattScaling
from melanoma.diagnoses import CODES, MALIGNANT, ClassCalibration
from melanoma.files import read_json_object, write_json

CARD_FILE = "card.json"
OOD_FILES = ("file", "sha256", "features", "features_sha256")  # what serving.ood must name: the gate and its extractor


def _is_number(value: object) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def proportion(value: object, key: str) -> float:
    """A number from 0 to 1 read from a JSON file (a threshold, an AUC); ValueError naming `key` otherwise."""
    if not _is_number(value) or not 0.0 <= value <= 1.0:
        raise ValueError(f"{key} must be a number from 0 to 1; found {value!r:.80}")
    return float(value)


def json_object(value: object, key: str) -> dict:
    """A JSON object read from a file; ValueError naming `key` when it is another kind of value."""
    if not isinstance(value, dict):
        raise ValueError(f"{key} must be a JSON object; found {value!r:.80}")
    return value


def _optional_object(value: object, key: str) -> dict | None:
    return None if value is None else json_object(value, key)


def names(value: object, key: str) -> tuple[str, ...]:
    """A list of names (a diagnosis model's classes, a combination's members); ValueError naming `key` otherwise."""
    if not isinstance(value, list) or not all(isinstance(item, str) and item for item in value):
        raise ValueError(f"{key} must be a list of names; found {value!r:.80}")
    return tuple(value)


def _calibration(value: object, key: str, fields: tuple[str, ...]) -> dict | None:
    """A calibration object whose `fields` (those it has) are numbers, or lists of them: scoring computes with them."""
    section = _optional_object(value, key)
    for name in fields if section is not None else ():
        values = section.get(name, [])
        if not all(map(_is_number, values if isinstance(values, list) else [values])):
            raise ValueError(f"{key}.{name} must be a number (or a list of numbers); found {values!r:.80}")
    return section


def _input_size(value: object, key: str) -> int:
    if not _is_number(value) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{key} must be a whole number of pixels, at least 1; found {value!r:.80}")
    return value


def _ood(value: object) -> dict | None:
    """The gate's files and their sha256, each named as text: serving opens and verifies them."""
    ood = _optional_object(value, "serving.ood")
    for key in OOD_FILES if ood is not None else ():
        if not isinstance(ood.get(key), str) or not ood[key]:
            raise ValueError(f"serving.ood.{key} must be text naming a file or its sha256; found {ood.get(key)!r:.80}")
    return ood


@dataclass(frozen=True)
class ServingSpec:
    """How to score with a model: the one place serving reads."""

    input_size: int
    test_time_augmentation: bool
    calibration: PlattScaling  # of the melanoma probability (a diagnosis model's raw P(MEL))
    ood: dict | None = None  # {"file": "ood.npz", "sha256": ...}: the fitted out-of-distribution gate
    classes: tuple[str, ...] = ()  # a diagnosis model's softmax outputs, in order; empty for a melanoma model
    class_calibration: ClassCalibration | None = None  # of a diagnosis model's softmax

    @property
    def is_diagnosis(self) -> bool:
        return bool(self.classes)

    @classmethod
    def from_card(cls, card: dict) -> ServingSpec:
        """The serving object of a card.json, or its older keys (before that object existed)."""
        if card.get("serving") is None:
            tta = card.get("test_time_augmentation", "none") != "none"
            return cls(_input_size(card["input_size"], "input_size"), tta, PlattScaling())
        serving = json_object(card["serving"], "serving")
        if not isinstance(serving["test_time_augmentation"], bool):
            raise ValueError(
                f"serving.test_time_augmentation must be true or false; found {serving['test_time_augmentation']!r:.80}"
            )
        classes = names(serving.get("classes") or [], "serving.classes")
        calibration = _calibration(serving.get("calibration"), "serving.calibration", ("slope", "intercept"))
        class_calibration = _calibration(
            serving.get("class_calibration"), "serving.class_calibration", ("temperature", "biases")
        )
        return cls(
            _input_size(serving["input_size"], "serving.input_size"),
            serving["test_time_augmentation"],
            PlattScaling.from_dict(calibration),
            _ood(serving.get("ood")),
            classes,
            ClassCalibration.from_dict(class_calibration) if classes else None,
        )

    def to_dict(self) -> dict:
        spec = {
            "input_size": self.input_size,
            "test_time_augmentation": self.test_time_augmentation,
            "calibration": self.calibration.to_dict(),
            "ood": self.ood,
        }
        if self.is_diagnosis:
            spec.update(classes=list(self.classes), class_calibration=self.class_calibration.to_dict())
        return spec


@dataclass(frozen=True)
class OperatingPoints:
    """The thresholds a verdict compares with, and the rules that chose them on validation."""

    threshold: float  # on the calibrated melanoma probability
    threshold_rule: str = ""
    malignant_threshold: float | None = None  # a diagnosis model's, on P(MEL + BCC + AKIEC)
    malignant_threshold_rule: str | None = None


RANDOM_INITIALISATION = "random (trained from scratch)"  # a card's weights_initialisation without pretraining
UNKNOWN_INITIALISATION = "unknown"  # a card that does not say


@dataclass(frozen=True)
class Network:
    """What the network is and where its weights started."""

    architecture_name: str  # the registry's name (melanoma.models.architectures)
    target: str = "melanoma"  # melanoma: one sigmoid; diagnosis: a softmax over the seven diagnoses
    architecture: str = ""  # in words
    input: str = ""
    preprocessing: str = ""
    weights_initialisation: str = UNKNOWN_INITIALISATION
    initial_weights: dict = field(default_factory=dict)  # the ImageNet checkpoint's package, file and sha256
    parameters: int = 0
    occlusion_maps: dict | None = None  # which occlusion path the model takes, and why

    @property
    def pretrained(self) -> bool:
        """Whether its weights started from a pretrained checkpoint (ImageNet, or a file), as far as the card says."""
        return self.weights_initialisation not in (RANDOM_INITIALISATION, UNKNOWN_INITIALISATION)


@dataclass(frozen=True)
class Training:
    """The run that made the weights: enough to repeat it and to judge it."""

    recipe: dict = field(default_factory=dict)
    config: dict = field(default_factory=dict)  # train.config.TrainConfig as run
    phases: list = field(default_factory=list)  # as run, with their epochs, learning rates and trainable layers
    data: dict = field(default_factory=dict)  # source, layout, split counts, what the split is grouped by
    class_weights: dict = field(default_factory=dict)
    seed: int = 0
    epochs_trained: int | None = None
    best_validation_auc: float | None = None
    training_seconds: float = 0.0
    machine: str = "unknown"
    replicas: int = 1
    library_versions: dict = field(default_factory=dict)
    command: str = ""
    trained_at: str | None = None  # UTC, ISO 8601
    notes: str | None = None

    @property
    def class_balance_text(self) -> str:
        """How the run made the classes count equally, and each class's loss weight by name
        ('weights' for cards from before train.run --class-balance, which had no other way)."""
        names = CODES if len(self.class_weights) == len(CODES) else ("other", "melanoma")
        weights = ", ".join(f"{names[int(index)]} {weight:.2f}" for index, weight in self.class_weights.items())
        emphasis = ", ".join(f"{code} x{factor:g}" for code, factor in self.config.get("emphasis") or ())
        emphasised = f", emphasising {emphasis}" if emphasis else ""
        return f"by {self.config.get('class_balance', 'weights')}{emphasised}; loss weights {weights}"

    @property
    def recipe_text(self) -> str:
        """The recipe by name with the values the run used, and the recipe's own where they differ: a
        recipe's notes give its defaults, which a run's flags may override. The epochs and learning
        rates come from `phases`, as run: a resumed run's `config` holds only its last command."""
        run, own = [], []

        def compare(used: str, default: str | None) -> None:
            run.append(used)
            if default is not None and default != used:
                own.append(default)

        def rates(values) -> str:
            return " / ".join(f"{rate:g}" for rate in values)

        recipe, config = self.recipe, self.config
        if config.get("image_size"):
            compare(f"input {config['image_size']} px", recipe.get("image_size") and f"input {recipe['image_size']} px")
        if config.get("batch_size"):
            compare(f"batch {config['batch_size']}", recipe.get("batch_size") and f"batch {recipe['batch_size']}")
        full_pass = "a full pass of the training split per epoch"
        compare(f"{config['epoch_images']:,} images per epoch" if config.get("epoch_images") else full_pass, full_pass)
        recipe_epochs = recipe.get("epochs") and f"{recipe['epochs']} epochs"
        recipe_rates = recipe.get("learning_rates") and f"learning rates {rates(recipe['learning_rates'])}"
        if self.phases:
            compare(f"{self.phases[-1]['end_epoch']} epochs", recipe_epochs)
            run.append(
                "learning rate "
                + ", ".join(
                    f"{p['learning_rate']:g} (epochs {p['start_epoch'] + 1}–{p['end_epoch']})" for p in self.phases
                )
            )
            if recipe_rates and list(recipe["learning_rates"]) != [p["learning_rate"] for p in self.phases]:
                own.append(recipe_rates)
        elif config.get("epochs"):
            compare(f"{config['epochs']} epochs", recipe_epochs)
            if config.get("learning_rates"):
                compare(f"learning rates {rates(config['learning_rates'])}", recipe_rates)
        if config.get("colour_jitter", 1.0) != 1.0:  # cards from before --colour-jitter have none: the recipe's ranges
            compare(f"colour augmentation ranges x{config['colour_jitter']:g}", "colour augmentation ranges x1")
        text = f"{recipe.get('name') or 'unnamed recipe'}, run with {', '.join(run)}"
        return f"{text} (the recipe's own: {', '.join(own)})" if own else text


@dataclass(frozen=True)
class ModelCard:
    """One model's card.json, typed."""

    name: str
    sha256: str  # of model.keras: the weights a reading was made with
    network: Network
    serving: ServingSpec
    operating: OperatingPoints
    training: Training = field(default_factory=Training)
    version: str | None = None  # a release name, where one was given

    @property
    def version_text(self) -> str:
        """The model's version as a report states it: the card's own, else when these weights were trained."""
        if self.version:
            return self.version
        return f"trained {self.training.trained_at}" if self.training.trained_at else "unknown (the card records none)"

    @classmethod
    def from_dict(cls, card: dict, folder_name: str) -> ModelCard:
        """A card.json object; ValueError names a missing key. Older cards name the model after its folder
        and its architecture after the model."""
        for key in ("threshold", "sha256"):
            if key not in card:
                raise ValueError(f"missing key {key!r}")
        if "serving" not in card and "input_size" not in card:  # the latter: cards before "serving"
            raise ValueError("missing key 'serving'")
        if not isinstance(card["sha256"], str):
            raise ValueError(f"sha256 must be text (model.keras' sha256); found {card['sha256']!r:.80}")
        name = card.get("name", folder_name)
        serving, operating = ServingSpec.from_card(card), _operating_points(card)
        if serving.is_diagnosis and operating.malignant_threshold is None:  # its skin-cancer verdict compares with it
            raise ValueError(
                "a diagnosis model's card (serving.classes lists its diagnoses) must have malignant_threshold, its "
                f"threshold on P({' + '.join(MALIGNANT)}); found none. Fit it with python -m train.calibrate "
                f"--models {name} --data-dir DIR."
            )
        return cls(
            name=name,
            sha256=card["sha256"],
            network=_section(Network, {"architecture_name": name, **card}),
            serving=serving,
            operating=operating,
            training=_section(Training, card),
            version=card.get("version"),
        )

    def to_dict(self) -> dict:
        """The card.json object: the flat sections, then serving, the weights' sha256 and the version if any."""
        flat = {"name": self.name}
        for section in (self.network, self.training, self.operating):
            flat.update({key: value for key, value in dataclasses.asdict(section).items() if value is not None})
        flat.update(serving=self.serving.to_dict(), sha256=self.sha256)
        if self.version:
            flat["version"] = self.version
        return flat

    def save(self, folder: Path) -> None:
        write_json(folder / CARD_FILE, self.to_dict())


def _section(kind: type, card: dict):
    """One flat section of a card: its keys that the card has; the others keep their defaults."""
    return kind(**{f.name: card[f.name] for f in dataclasses.fields(kind) if f.name in card})


def _operating_points(card: dict) -> OperatingPoints:
    """The card's thresholds, checked: verdicts compare probabilities with them."""
    points = _section(OperatingPoints, card)
    proportion(points.threshold, "threshold")
    if points.malignant_threshold is not None:
        proportion(points.malignant_threshold, "malignant_threshold")
    return points


def read_card(folder: Path) -> ModelCard:
    """A model folder's card; FileNotFoundError when it has none, ValueError when it is malformed."""
    return ModelCard.from_dict(read_json_object(folder / CARD_FILE), folder.name)
