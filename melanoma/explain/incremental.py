"""Occlusion by incremental inference: the network runs once on the intact image, then per patch
only on the windows that the patch can change (Nakandala et al., "Krypton", SIGMOD 2019).

A grey patch changes a convolution's output only inside its receptive field. Layer after layer,
each patch's changed region is a window of the feature map that grows with every spatial layer:
through EfficientNet-Lite's expansion, depthwise and projection convolutions and residual
additions (it has no squeeze-and-excitation, which would spread a change over the whole map), or
through InceptionV3's stem and its first inception blocks, whose branches are joined by
concatenation, up to the blocks whose 7-wide convolutions reach the whole map. Each occluded image's
features are the intact ones with those windows recomputed, exactly: a window is computed with
'valid' convolutions on the region it reads, built from the intact feature map with the patch's
own window pasted in, and every position the full computation reads as padding is padding here.

Where the windows cover too much of their map to save work, the plan cuts the network at a
tensor that alone carries everything onwards; each window is pasted into the intact cut tensor
and the rest of the network runs whole (Krypton's fall-back).

Models with a global operation before their first convolution (Shades-of-Gray colour constancy
estimates the illuminant from the whole image) change everywhere under any patch: `plan_occlusion`
returns None for them, and they take the whole-image path.
"""

from __future__ import annotations

from dataclasses import dataclass

import keras
import numpy as np
import tensorflow as tf
from keras import layers

from melanoma.explain.folding import FoldedBatchNorm
from melanoma.explain.graph import LayerGraph

# Layers that act on each pixel alone (at inference).
PER_PIXEL = (
    layers.Rescaling,
    layers.Normalization,
    layers.BatchNormalization,
    layers.Activation,
    layers.ReLU,
    FoldedBatchNorm,
)
# A cut whose window covers more than this share of its feature map saves too little to be worth
# the windows' bookkeeping; within it, the deeper the cut, the faster. InceptionV3 at 299 px, patch 20,
# ms per occluded image in chunks of 16 on two shared cores: whole network 109; cut at max_pooling2d_1
# 83, mixed0 78, mixed1 78, mixed2 66-71, mixed3 63 (12 × 12 of 17 × 17, the plan); past mixed3 the
# 7-wide convolutions make every window the whole map. EfficientNet-B3's first squeeze-and-excitation
# (block1a) spreads any patch over its map, so its cut stays before it and saves 3% of a pass.
MAX_WINDOW_FRACTION = 0.5


@dataclass(frozen=True)
class Geometry:
    """How one spatial layer maps input positions to output positions along one axis."""

    kernel: int
    stride: int
    pad_before: int
    size_in: int
    size_out: int

    def affected(self, low: np.ndarray, high: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Outputs whose inputs meet [low, high): output j reads [j·s − p, j·s − p + k)."""
        first = -((self.kernel - 1 - low - self.pad_before) // self.stride)  # ceil((low + p − k + 1) / s)
        last = (high - 1 + self.pad_before) // self.stride
        return np.maximum(first, 0), np.minimum(last + 1, self.size_out)

    def window_in(self, start, length: int):
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


def _kind(layer, graph: LayerGraph) -> str | None:
    """'pixel', 'spatial' or 'merge' (an addition or a channel concatenation) for a layer the windows can
    pass through; None otherwise."""
    if not graph.called_once(layer):
        return None
    if isinstance(layer, PER_PIXEL):
        return "pixel"
    if isinstance(layer, layers.Add) or (isinstance(layer, layers.Concatenate) and layer.axis in (-1, 3)):
        return "merge"
    if isinstance(layer, layers.ZeroPadding2D):
        return "spatial"
    if isinstance(layer, (layers.MaxPooling2D, layers.AveragePooling2D)):
        return "spatial" if layer.data_format == "channels_last" else None
    if isinstance(layer, (layers.Conv2D, layers.DepthwiseConv2D)):
        supported = (
            layer.data_format == "channels_last"
            and tuple(layer.dilation_rate) == (1, 1)
            and getattr(layer, "groups", 1) == 1
        )
        return "spatial" if supported else None
    return None


@dataclass(frozen=True)
class Step:
    """One layer of the incremental part: what it reads, and how."""

    layer: keras.layers.Layer
    kind: str  # 'pixel', 'spatial' or 'merge'
    inputs: tuple[int, ...]  # the tracked tensors it reads; 0 is the image, i ≥ 1 is step i's output
    geometry: tuple[Geometry, Geometry] | None  # spatial layers: (rows, columns)


@dataclass(frozen=True)
class OcclusionPlan:
    """Where to cut the model for one patch grid, and each patch's window in every tensor up to the cut."""

    steps: list[Step]  # the layers before the cut, in order; the last one produces the cut tensor
    sizes: np.ndarray  # (tensors, 2): each tracked tensor's map size; tensor 0 is the image
    lengths: np.ndarray  # (tensors, 2): the window's size in each tensor, the same for every patch
    starts: np.ndarray  # (patches, tensors, 2): each patch's window corner in each tensor

    def direct(self, step: int, tensor: int) -> bool:
        """Whether `step` reads exactly `tensor`'s windows (no region to assemble) for every patch."""
        region_starts, region_length = self.region(step)
        return (
            tensor > 0
            and np.array_equal(region_length, self.lengths[tensor])
            and np.array_equal(region_starts, self.starts[:, tensor])
        )

    def region(self, step: int) -> tuple[np.ndarray, np.ndarray]:
        """The input region that step `step` reads for each patch: (patches, 2) corners and a size."""
        spec = self.steps[step - 1]
        if spec.geometry is None:  # per-pixel layers and merges read their own output window
            return self.starts[:, step], self.lengths[step]
        per_axis = [
            spec.geometry[axis].window_in(self.starts[:, step, axis], int(self.lengths[step, axis])) for axis in (0, 1)
        ]
        return np.stack([per_axis[0][0], per_axis[1][0]], axis=-1), np.array([per_axis[0][1], per_axis[1][1]])


def incremental_steps(model) -> list[Step]:
    """The supported layers from the input, in the model's (topological) order, until one is not."""
    graph, index, steps = LayerGraph(model), {id(model.layers[0]): 0}, []
    for layer in model.layers[1:]:
        kind = _kind(layer, graph)
        parents = graph.producers(layer)
        if kind is None or not parents or any(id(parent) not in index for parent in parents):
            break
        if kind != "merge" and len(parents) != 1:
            break
        steps.append(
            Step(layer, kind, tuple(index[id(parent)] for parent in parents), None)
        )  # geometry: plan_occlusion
        index[id(layer)] = len(steps)
    return steps


def _cut_candidates(model, steps: list[Step]) -> list[int]:
    """Steps whose output alone carries everything onwards: the rest of the network reads nothing earlier."""
    position = {id(model.layers[0]): 0} | {id(step.layer): number for number, step in enumerate(steps, start=1)}
    graph, last_reader = LayerGraph(model), {}
    for tensor_layer in [model.layers[0], *(step.layer for step in steps)]:
        readers = graph.consumers(tensor_layer)
        last_reader[position[id(tensor_layer)]] = (
            max(position.get(id(reader), len(steps) + 1) for reader in readers) if readers else 0
        )
    return [
        number
        for number in range(1, len(steps) + 1)
        if all(last_reader[earlier] <= number for earlier in range(number))
    ]


def plan_occlusion(
    model, height: int, width: int, corners: list[tuple[int, int]], patch_size: int
) -> OcclusionPlan | None:
    """The deepest cut whose window stays within MAX_WINDOW_FRACTION of its map; None without one."""
    steps = incremental_steps(model)
    count = len(steps) + 1
    sizes, lengths = np.zeros((count, 2), np.int64), np.zeros((count, 2), np.int64)
    low, high = np.zeros((len(corners), count, 2), np.int64), np.zeros((len(corners), count, 2), np.int64)
    sizes[0] = (height, width)
    corner_array = np.asarray(corners, np.int64).reshape(-1, 2)
    low[:, 0], high[:, 0] = corner_array, np.minimum(corner_array + patch_size, sizes[0])
    starts = np.zeros_like(low)
    lengths[0], starts[:, 0] = _uniform(low[:, 0], high[:, 0], sizes[0])
    planned = []
    for number, step in enumerate(steps, start=1):
        first = step.inputs[0]
        if step.kind == "spatial":
            geometry = tuple(_geometry(step.layer, int(sizes[first, axis]), axis) for axis in (0, 1))
            step = Step(step.layer, step.kind, step.inputs, geometry)
            sizes[number] = (geometry[0].size_out, geometry[1].size_out)
            for axis in (0, 1):
                # Forward from the whole (uniform) window: what it reaches is what must be recomputed.
                window_low = starts[:, first, axis]
                low[:, number, axis], high[:, number, axis] = geometry[axis].affected(
                    window_low, window_low + lengths[first, axis]
                )
        elif step.kind == "merge":
            sizes[number] = sizes[first]
            low[:, number] = np.min([starts[:, tensor] for tensor in step.inputs], axis=0)
            high[:, number] = np.max([starts[:, tensor] + lengths[tensor] for tensor in step.inputs], axis=0)
        else:
            sizes[number], low[:, number], high[:, number] = (
                sizes[first],
                starts[:, first],
                starts[:, first] + lengths[first],
            )
        lengths[number], starts[:, number] = _uniform(low[:, number], high[:, number], sizes[number])
        planned.append(step)
    best = None
    for cut in _cut_candidates(model, planned):
        has_spatial = any(step.kind == "spatial" for step in planned[:cut])
        if has_spatial and np.prod(lengths[cut]) <= MAX_WINDOW_FRACTION * np.prod(sizes[cut]):
            best = cut
    if best is None:
        return None
    return OcclusionPlan(planned[:best], sizes[: best + 1], lengths[: best + 1], starts[:, : best + 1])


def _uniform(low: np.ndarray, high: np.ndarray, size: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """One window size for every patch (the largest reach), each window moved inwards at the border."""
    length = np.minimum((high - low).max(axis=0), size)
    return length, np.clip(np.minimum(low, size - length), 0, None)


def _averages_real_pixels(layer) -> bool:
    """Whether the layer is an average pool with 'same' padding, which divides by the pixels inside the map."""
    return isinstance(layer, layers.AveragePooling2D) and layer.padding == "same"


def _spatial_op(layer, x: tf.Tensor, in_map: tf.Tensor | None = None) -> tf.Tensor:
    """The layer on an already padded region: 'valid' padding, its own weights and activation.

    `in_map` (patches, rows, columns, 1), 1 where the region lies inside the map: the divisor of an
    average pool with 'same' padding (`_averages_real_pixels`), None for every other layer.
    """
    if isinstance(layer, layers.ZeroPadding2D):
        return x
    if isinstance(layer, (layers.MaxPooling2D, layers.AveragePooling2D)):
        pool = tf.nn.max_pool2d if isinstance(layer, layers.MaxPooling2D) else tf.nn.avg_pool2d
        pooled = pool(x, layer.pool_size, layer.strides, "VALID")
        return pooled if in_map is None else pooled / pool(in_map, layer.pool_size, layer.strides, "VALID")
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


def _positions(starts: tf.Tensor, length: int) -> tf.Tensor:
    """(patches, length): the map positions a window or region covers along one axis."""
    return starts[:, None] + tf.range(int(length))[None]


def _region_positions(region_starts: tf.Tensor, region_length) -> tuple[tf.Tensor, tf.Tensor]:
    """(patches, rows) and (patches, columns): the map positions that each patch's region covers."""
    return _positions(region_starts[:, 0], region_length[0]), _positions(region_starts[:, 1], region_length[1])


def _in_map(rows: tf.Tensor, columns: tf.Tensor, size) -> tf.Tensor:
    """(patches, rows, columns): whether each position lies inside a map of `size`."""
    return ((rows >= 0) & (rows < int(size[0])))[:, :, None] & ((columns >= 0) & (columns < int(size[1])))[:, None, :]


def _gather_2d(values: tf.Tensor, rows: tf.Tensor, columns: tf.Tensor, shared: bool) -> tf.Tensor:
    """values[rows, columns] per patch: (patches, rows, columns, channels); `shared` = one map for all patches."""
    if shared:
        picked = tf.gather(values[0], rows)  # (patches, rows, width, channels)
    else:
        picked = tf.gather(values, rows, axis=1, batch_dims=1)
    return tf.gather(picked, columns, axis=2, batch_dims=1)


class IncrementalScorer:
    """Scores occlusions of one image through a compiled graph traced once per model and patch grid."""

    def __init__(self, model, plan: OcclusionPlan):
        self.plan = plan
        height, width = (int(size) for size in plan.sizes[0])
        # The intact tensors that some step reads beyond its own windows, and the cut tensor.
        self.assembled = sorted(
            {
                tensor
                for number, step in enumerate(plan.steps, start=1)
                for tensor in step.inputs
                if tensor > 0 and not plan.direct(number, tensor)
            }
            | {len(plan.steps)}
        )
        cut = plan.steps[-1].layer.output
        intact_model = keras.Model(model.inputs, [plan.steps[tensor - 1].layer.output for tensor in self.assembled])
        self.tail_model = keras.Model(cut, model.output)
        self.intact = tf.function(
            lambda image: intact_model(image[None], training=False),
            input_signature=[tf.TensorSpec([height, width, 3], tf.float32)],
        )
        self.score = tf.function(
            self._score,
            input_signature=[
                tf.TensorSpec([height, width, 3], tf.float32),  # the intact image
                [
                    tf.TensorSpec(
                        [1, *plan.steps[tensor - 1].layer.output.shape[1:]], plan.steps[tensor - 1].layer.output.dtype
                    )
                    for tensor in self.assembled
                ],  # its tensors that regions are read from
                tf.TensorSpec([], tf.float32),  # the fill value
                tf.TensorSpec([None, 4], tf.int32),  # each patch: top, left, bottom, right
                tf.TensorSpec([None, len(plan.steps) + 1, 2], tf.int32),  # OcclusionPlan.starts
            ],
        )

    def _read(
        self,
        tensor: int,
        windows: dict,
        intact: dict,
        image,
        fill,
        boxes,
        starts,
        region_starts,
        region_length,
        padding: float,
    ):
        """Each patch's occluded values of `tensor` over a region: its window where it has one, the intact
        tensor elsewhere, and the layer's padding outside the map."""
        rows, columns = _region_positions(region_starts, region_length)
        height, width = (int(size) for size in self.plan.sizes[tensor])
        if tensor == 0:  # the image: grey inside the patch
            x = _gather_2d(
                image[None], tf.clip_by_value(rows, 0, height - 1), tf.clip_by_value(columns, 0, width - 1), True
            )
            in_patch = ((rows >= boxes[:, 0:1]) & (rows < boxes[:, 2:3]))[:, :, None] & (
                (columns >= boxes[:, 1:2]) & (columns < boxes[:, 3:4])
            )[:, None, :]
            x = tf.where(in_patch[..., None], fill, x)
        else:
            length = [int(size) for size in self.plan.lengths[tensor]]
            window_rows, window_columns = rows - starts[:, tensor, 0:1], columns - starts[:, tensor, 1:2]
            x = _gather_2d(
                windows[tensor],
                tf.clip_by_value(window_rows, 0, length[0] - 1),
                tf.clip_by_value(window_columns, 0, length[1] - 1),
                False,
            )
            in_window = ((window_rows >= 0) & (window_rows < length[0]))[:, :, None] & (
                (window_columns >= 0) & (window_columns < length[1])
            )[:, None, :]
            outside = _gather_2d(
                intact[tensor], tf.clip_by_value(rows, 0, height - 1), tf.clip_by_value(columns, 0, width - 1), True
            )
            x = tf.where(in_window[..., None], x, outside)
        inside = _in_map(rows, columns, (height, width))
        return tf.where(inside[..., None], x, tf.cast(padding, x.dtype))

    def _score(self, image, intact_tensors, fill, boxes, starts):
        plan, intact = self.plan, dict(zip(self.assembled, intact_tensors))
        windows = {}
        for number, step in enumerate(plan.steps, start=1):
            region_length = plan.region(number)[1]
            if step.geometry is None:
                region_starts = starts[:, number]
            else:
                per_axis = [
                    step.geometry[axis].window_in(starts[:, number, axis], int(plan.lengths[number, axis]))
                    for axis in (0, 1)
                ]
                region_starts = tf.stack([per_axis[0][0], per_axis[1][0]], axis=-1)
            padding = _padding_value(step.layer, tf.float32) if step.kind == "spatial" else 0.0
            inputs = [
                windows[tensor]
                if plan.direct(number, tensor)
                else self._read(
                    tensor, windows, intact, image, fill, boxes, starts, region_starts, region_length, padding
                )
                for tensor in step.inputs
            ]
            if step.kind == "spatial":
                in_map = None
                if _averages_real_pixels(step.layer):
                    inside = _in_map(*_region_positions(region_starts, region_length), plan.sizes[step.inputs[0]])
                    in_map = tf.cast(inside[..., None], inputs[0].dtype)
                windows[number] = _spatial_op(step.layer, inputs[0], in_map)
            elif step.kind == "merge":
                windows[number] = step.layer(inputs)
            else:
                windows[number] = step.layer(inputs[0], training=False)
        # Paste each recomputed window into a copy of the intact cut tensor, then finish the model.
        cut = len(plan.steps)
        count, window = tf.shape(boxes)[0], plan.lengths[cut]
        rows, columns = _positions(starts[:, cut, 0], int(window[0])), _positions(starts[:, cut, 1], int(window[1]))
        shape = [count, int(window[0]), int(window[1])]
        indices = tf.stack(
            [
                tf.broadcast_to(tf.range(count)[:, None, None], shape),
                tf.broadcast_to(rows[:, :, None], shape),
                tf.broadcast_to(columns[:, None, :], shape),
            ],
            axis=-1,
        )
        features = tf.tensor_scatter_nd_update(
            tf.repeat(intact[cut], count, axis=0), indices, tf.cast(windows[cut], intact[cut].dtype)
        )
        return tf.reshape(tf.cast(self.tail_model(features, training=False), tf.float32), [-1])
