"""Occlusion by incremental inference: the stem runs once on the intact image, then per patch
only on the window that the patch can change (Nakandala et al., SIGMOD 2019).

A grey patch changes a convolution's output only inside its receptive field. Through a model's
stem (the chain of convolutions, pools and per-pixel layers before its first branch or global
operation) that is a small window of the stem's output: for InceptionV3 at 299 px and patch 20,
about 6 × 6 of its 35 × 35 positions. Each occluded image's stem output is the intact one with that
window recomputed, exactly: the window is computed with 'valid' convolutions on a crop of the
image, and every position the full computation reads as padding is set to that padding here.

Models with a global operation before their first convolution (Shades-of-Gray colour constancy
estimates the illuminant from the whole image) have no such stem: every patch changes every
pixel, and `stem_plan` returns None.
"""

from __future__ import annotations

from dataclasses import dataclass

import keras
import numpy as np
import tensorflow as tf
from keras import layers

from melanoma.folding import FoldedBatchNorm
from melanoma.graph import called_once, consumers

# Layers that act on each pixel alone (at inference), and layers whose receptive field we track.
PER_PIXEL = (layers.Rescaling, layers.Normalization, layers.BatchNormalization, layers.Activation, layers.ReLU, FoldedBatchNorm)
SPATIAL = (layers.Conv2D, layers.DepthwiseConv2D, layers.MaxPooling2D, layers.AveragePooling2D, layers.ZeroPadding2D)
MAX_WINDOW_FRACTION = 0.25  # a deeper cut whose window covers more of its feature map saves too little


@dataclass(frozen=True)
class Geometry:
    """How one spatial layer maps input positions to output positions along one axis."""

    kernel: int
    stride: int
    pad_before: int
    size_in: int
    size_out: int

    def affected(self, low: int, high: int) -> tuple[int, int]:
        """Outputs whose inputs meet [low, high): output j reads [j·s − p, j·s − p + k)."""
        first = -((self.kernel - 1 - low - self.pad_before) // self.stride)  # ceil((low + p − k + 1) / s)
        last = (high - 1 + self.pad_before) // self.stride
        return max(first, 0), min(last + 1, self.size_out)

    def window_in(self, start: int | np.ndarray, length: int) -> tuple[int | np.ndarray, int]:
        """The input window (start, length) that outputs [start, start + length) read, padding included."""
        return start * self.stride - self.pad_before, (length - 1) * self.stride + self.kernel


def _geometry(layer, size_in: int, axis: int) -> Geometry:
    if isinstance(layer, layers.ZeroPadding2D):
        before, after = layer.padding[axis]
        return Geometry(1, 1, before, size_in, size_in + before + after)
    if isinstance(layer, (layers.MaxPooling2D, layers.AveragePooling2D)):
        kernel, stride = layer.pool_size[axis], layer.strides[axis]
    else:
        kernel, stride = layer.kernel_size[axis], layer.strides[axis]
    if layer.padding == "valid":
        return Geometry(kernel, stride, 0, size_in, (size_in - kernel) // stride + 1)
    size_out = -(-size_in // stride)
    return Geometry(kernel, stride, max((size_out - 1) * stride + kernel - size_in, 0) // 2, size_in, size_out)


def _supported(layer) -> bool:
    if isinstance(layer, PER_PIXEL) or isinstance(layer, layers.ZeroPadding2D):
        return True
    if isinstance(layer, (layers.MaxPooling2D, layers.AveragePooling2D)):
        # An average pool with 'same' padding divides by the number of real pixels: not a padded window.
        return layer.data_format == "channels_last" and (isinstance(layer, layers.MaxPooling2D) or layer.padding == "valid")
    if isinstance(layer, (layers.Conv2D, layers.DepthwiseConv2D)):
        return layer.data_format == "channels_last" and tuple(layer.dilation_rate) == (1, 1) and getattr(layer, "groups", 1) == 1
    return False


def stem_chain(model) -> list:
    """The layers after the input, in order, while each one is supported and feeds exactly one layer."""
    chain, layer = [], model.layers[0]
    while len(consumers(layer)) == 1:
        following = consumers(layer)[0]
        if not _supported(following) or not called_once(following):
            break
        chain.append(following)
        layer = following
    return chain


@dataclass(frozen=True)
class StemPlan:
    """Where to cut the model for one patch grid, and each patch's window through the stem."""

    stem: list  # the chain layers up to the cut, in order
    geometry: list[tuple[Geometry, Geometry]]  # per spatial layer in `stem`: (rows, columns)
    lengths: np.ndarray  # (spatial layers + 1, 2): the window's size at each spatial layer's input and at the cut
    starts: np.ndarray  # (patches, spatial layers + 1, 2): each window's top-left corner, at the same places


def stem_plan(model, height: int, width: int, corners: list[tuple[int, int]], patch_size: int) -> StemPlan | None:
    """The deepest cut whose window stays within MAX_WINDOW_FRACTION of its feature map, or None."""
    chain, best = stem_chain(model), None
    geometry, size = [], (height, width)
    for depth, layer in enumerate(chain, start=1):
        if isinstance(layer, SPATIAL):
            geometry.append(tuple(_geometry(layer, size[axis], axis) for axis in (0, 1)))
            size = (geometry[-1][0].size_out, geometry[-1][1].size_out)
        ends_a_run = depth == len(chain) or isinstance(chain[depth], SPATIAL)
        if geometry and ends_a_run:
            plan = _plan(chain[:depth], list(geometry), corners, patch_size, size)
            if np.prod(plan.lengths[-1]) <= MAX_WINDOW_FRACTION * size[0] * size[1]:
                best = plan
    return best


def _plan(stem: list, geometry: list, corners: list[tuple[int, int]], patch_size: int, size: tuple[int, int]) -> StemPlan:
    # Forward: the positions each patch can change at the cut; one window size covers them all.
    reach = []
    for top, left in corners:
        span = [(top, top + patch_size), (left, left + patch_size)]
        for per_axis in geometry:
            span = [per_axis[axis].affected(*span[axis]) for axis in (0, 1)]
        reach.append(span)
    lengths = np.zeros((len(geometry) + 1, 2), np.int32)
    lengths[-1] = [max(span[axis][1] - span[axis][0] for span in reach) for axis in (0, 1)]
    # Backward: each window's start at the cut (moved inwards at the border), then at every layer's input.
    starts = np.zeros((len(corners), len(geometry) + 1, 2), np.int32)
    starts[:, -1] = [[min(span[axis][0], size[axis] - lengths[-1][axis]) for axis in (0, 1)] for span in reach]
    for step in range(len(geometry) - 1, -1, -1):
        for axis in (0, 1):
            starts[:, step, axis], lengths[step, axis] = geometry[step][axis].window_in(starts[:, step + 1, axis],
                                                                                      lengths[step + 1, axis])
    return StemPlan(stem, geometry, lengths, starts)


def _spatial_op(layer, x: tf.Tensor) -> tf.Tensor:
    """The layer on an already padded window: 'valid' padding, its own weights and activation."""
    if isinstance(layer, layers.ZeroPadding2D):
        return x
    if isinstance(layer, (layers.MaxPooling2D, layers.AveragePooling2D)):
        pool = tf.nn.max_pool2d if isinstance(layer, layers.MaxPooling2D) else tf.nn.avg_pool2d
        return pool(x, layer.pool_size, layer.strides, "VALID")
    x = tf.cast(x, layer.compute_dtype)
    kernel = tf.cast(layer.kernel, layer.compute_dtype)
    if isinstance(layer, layers.DepthwiseConv2D):
        x = tf.nn.depthwise_conv2d(x, kernel, [1, *layer.strides, 1], "VALID")
    else:
        x = tf.nn.conv2d(x, kernel, layer.strides, "VALID")
    if layer.use_bias:
        x = x + tf.cast(layer.bias, layer.compute_dtype)
    return layer.activation(x)


def _padding_value(layer, dtype: tf.DType) -> float:
    """What the full computation reads outside the feature map: −∞ for a max pool, else zero."""
    return dtype.min if isinstance(layer, layers.MaxPooling2D) else 0.0


def _inside(starts: tf.Tensor, length: tf.Tensor, size: int) -> tf.Tensor:
    """(patches, length): whether each window position lies inside [0, size)."""
    positions = starts[:, None] + tf.range(length)[None]
    return (positions >= 0) & (positions < size)


class IncrementalScorer:
    """Scores occlusions of one image through a compiled graph traced once per model, input size and cut."""

    def __init__(self, model, plan: StemPlan, height: int, width: int):
        self.stem, self.geometry = plan.stem, plan.geometry
        self.height, self.width = height, width
        cut = plan.stem[-1].output
        stem_model, self.tail_model = keras.Model(model.inputs, cut), keras.Model(cut, model.output)
        self.intact_stem = tf.function(lambda image: stem_model(image[None], training=False),
                                       input_signature=[tf.TensorSpec([height, width, 3], tf.float32)])
        self.score = tf.function(self._score, input_signature=[
            tf.TensorSpec([height, width, 3], tf.float32),  # the intact image
            tf.TensorSpec([1, *cut.shape[1:]], cut.dtype),  # its stem output
            tf.TensorSpec([], tf.float32),  # the fill value
            tf.TensorSpec([None, 4], tf.int32),  # each patch: top, left, bottom, right
            tf.TensorSpec([None, len(plan.geometry) + 1, 2], tf.int32),  # StemPlan.starts
            tf.TensorSpec([len(plan.geometry) + 1, 2], tf.int32),  # StemPlan.lengths
        ])

    def _score(self, image, intact_stem, fill, boxes, starts, lengths):
        # The occluded crops, built directly: rows and columns of the image, clipped (the positions
        # outside it are replaced by the first spatial layer's padding below).
        rows = starts[:, 0, 0, None] + tf.range(lengths[0][0])[None]
        columns = starts[:, 0, 1, None] + tf.range(lengths[0][1])[None]
        crops = tf.gather(tf.gather(image, tf.clip_by_value(rows, 0, self.height - 1)),
                          tf.clip_by_value(columns, 0, self.width - 1), axis=2, batch_dims=1)
        in_patch = ((rows >= boxes[:, 0:1]) & (rows < boxes[:, 2:3]))[:, :, None] \
            & ((columns >= boxes[:, 1:2]) & (columns < boxes[:, 3:4]))[:, None, :]
        x = tf.where(in_patch[..., None], fill, crops)
        step = 0
        for layer in self.stem:
            if isinstance(layer, SPATIAL):
                per_axis = self.geometry[step]
                inside = _inside(starts[:, step, 0], lengths[step][0], per_axis[0].size_in)[:, :, None] \
                    & _inside(starts[:, step, 1], lengths[step][1], per_axis[1].size_in)[:, None, :]
                x = tf.where(inside[..., None], x, tf.cast(_padding_value(layer, x.dtype), x.dtype))
                x = _spatial_op(layer, x)
                step += 1
            else:
                x = layer(x, training=False)
        # Paste each recomputed window into a copy of the intact stem output, then finish the model.
        count, window = tf.shape(boxes)[0], lengths[-1]
        window_rows = starts[:, -1, 0, None] + tf.range(window[0])[None]
        window_columns = starts[:, -1, 1, None] + tf.range(window[1])[None]
        indices = tf.stack([
            tf.broadcast_to(tf.range(count)[:, None, None], [count, window[0], window[1]]),
            tf.broadcast_to(window_rows[:, :, None], [count, window[0], window[1]]),
            tf.broadcast_to(window_columns[:, None, :], [count, window[0], window[1]]),
        ], axis=-1)
        features = tf.tensor_scatter_nd_update(tf.repeat(intact_stem, count, axis=0), indices, tf.cast(x, intact_stem.dtype))
        return tf.reshape(tf.cast(self.tail_model(features, training=False), tf.float32), [-1])
