"""Occlusion sensitivity of a melanoma probability (the study's map, patch 20).

The one implementation shared by the app and the CLI. Both take a model as the project saves
them (0–255 RGB in, melanoma probability out), or a diagnosis model's softmax read as one
probability (`melanoma.inference.class_output`), and an RGB image at the model's input size.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Iterator

import numpy as np
import tensorflow as tf

from melanoma.explain.folding import fold_batch_norms
from melanoma.explain.incremental import IncrementalScorer, OcclusionPlan, incremental_steps, plan_occlusion
from melanoma.explain.per_model import cached

GREY = 127.5  # tf-explain's fill value, in 0–255 pixel space, before the model's preprocessing
CHUNK = 16  # occluded images scored per call: on two cores, larger batches were no faster
# Folding the batch norms (melanoma.explain.folding) takes about a second per model, once, and saves
# 5-30% of each forward pass: worth it for a 299-px map (225 patches), not a 96-px one (25).
FOLD_FROM_PATCHES = 100
# Each incremental plan compiles its own graph (about 1-2 s for EfficientNet-Lite0): worth it for a
# full map, not for the 3 × 3 preview, which ten whole-image passes deliver sooner.
INCREMENTAL_FROM_PATCHES = 32


def patch_grid(height: int, width: int, patch_size: int, stride: int | None = None) -> list[tuple[int, int]]:
    """Top-left corners of the patches: from the top-left corner, every `stride` pixels.

    With stride = patch size (the default) this is tf-explain's grid; the last row and column
    of patches are cut at the image border.
    """
    stride = stride or patch_size
    return [(top, left) for top in range(0, height, stride) for left in range(0, width, stride)]


def _scorer(model, height: int, width: int):
    """A compiled function scoring occlusions of one image, traced once per model and input size.

    The batch dimension is left open, so the last chunk holds exactly the patches that remain:
    no padding images, each of which would cost a full forward pass.
    """

    @tf.function(
        input_signature=[
            tf.TensorSpec([height, width, 3], tf.float32),
            tf.TensorSpec([None, height, width, 1], tf.float32),
            tf.TensorSpec([], tf.float32),
        ]
    )
    def score(image: tf.Tensor, masks: tf.Tensor, fill: tf.Tensor) -> tf.Tensor:
        # masks: (n, H, W, 1), 1 inside the patch; the occluded images never exist in numpy.
        occluded = image[None] * (1.0 - masks) + fill * masks
        return tf.reshape(tf.cast(model(occluded, training=False), tf.float32), [-1])

    return score


def occlusion_sensitivity(
    model,
    image: np.ndarray,
    patch_size: int = 20,
    stride: int | None = None,
    fill: float = GREY,
    incremental: bool = True,
    read: Callable[[np.ndarray], np.ndarray] | None = None,
) -> np.ndarray:
    """Per pixel: p(intact) − p(image with its patch filled grey); positive = supports melanoma.

    p is the model's one output, or with `read` the number it computes from the model's outputs
    (n, outputs) per image: a probability calibrated in numpy, which no Keras head could state
    without repeating its formula. Pixels covered by several patches (stride < patch size) get the
    mean of their patches. With `incremental`, models without a global first step recompute, layer
    by layer, only the windows that each patch reaches (melanoma.explain.incremental); the map is
    the same, to float rounding.
    """
    image = np.asarray(image, dtype=np.float32)
    height, width = image.shape[:2]
    corners = patch_grid(height, width, patch_size, stride)
    # Row 0 stays empty: the intact image is scored in the same batches as its occlusions.
    masks = np.zeros((len(corners) + 1, height, width, 1), np.float32)
    for index, (top, left) in enumerate(corners, start=1):
        masks[index, top : top + patch_size, left : left + patch_size] = 1.0
    image_tensor, fill_tensor = tf.constant(image), tf.constant(fill, tf.float32)
    if len(corners) >= FOLD_FROM_PATCHES:
        model = cached(model, ("folded",), lambda: fold_batch_norms(model))
    use_plan = incremental and len(corners) >= INCREMENTAL_FROM_PATCHES
    plan = plan_occlusion(model, height, width, corners, patch_size) if use_plan else None
    if plan is None:
        score = cached(model, ("scorer", height, width), lambda: _scorer(model, height, width))
        scores = np.concatenate(
            [
                score(image_tensor, tf.constant(masks[i : i + CHUNK]), fill_tensor).numpy()
                for i in range(0, len(masks), CHUNK)
            ]
        )
    else:
        scores = _incremental_scores(model, plan, image_tensor, fill_tensor, corners, patch_size)
    outputs = scores.reshape(len(masks), -1)  # the scorers flatten each image's outputs
    scores = read(outputs) if read is not None else outputs[:, 0]
    drops = scores[0] - scores[1:]
    total = np.tensordot(drops, masks[1:, ..., 0], axes=1)
    coverage = masks[1:, ..., 0].sum(axis=0)
    return np.divide(total, coverage, out=np.zeros_like(total), where=coverage > 0).astype(np.float32)


def _incremental_scores(
    model, plan: OcclusionPlan, image: tf.Tensor, fill: tf.Tensor, corners: list[tuple[int, int]], patch_size: int
) -> np.ndarray:
    """Scores of the intact image (first) and each occlusion, recomputing only each patch's windows."""
    height, width = image.shape[:2]
    # The window sizes are compiled into the graph: one trace per model, input size and window sizes.
    scorer = cached(
        model,
        ("incremental", height, width, len(plan.steps), plan.lengths.tobytes()),
        lambda: IncrementalScorer(model, plan),
    )
    intact = scorer.intact(image)
    intact = list(intact) if isinstance(intact, (list, tuple)) else [intact]
    # Row 0 is an empty patch: its windows are recomputed unchanged, which scores the intact image.
    boxes = np.array(
        [(0, 0, 0, 0)] + [(top, left, top + patch_size, left + patch_size) for top, left in corners], np.int32
    )
    starts = np.concatenate([plan.starts[:1], plan.starts]).astype(np.int32)
    return np.concatenate(
        [
            scorer.score(
                image, intact, fill, tf.constant(boxes[i : i + CHUNK]), tf.constant(starts[i : i + CHUNK])
            ).numpy()
            for i in range(0, len(boxes), CHUNK)
        ]
    )


COARSE_GRID = 3  # the progressive preview: 3 × 3 patches, ten forward passes whatever the input size
FINE_PATCH, FINE_STRIDE = 16, 4  # the fine map: overlapping patches every 4 pixels, averaged per pixel


def coarse_patch_size(image_size: int, grid: int = COARSE_GRID) -> int:
    """The patch that covers the image with a grid × grid preview."""
    return -(-image_size // grid)


@dataclass(frozen=True)
class MapStage:
    """One map of the progressive mode: a label for the page, and the patch grid it uses."""

    label: str  # "coarse", "full" or "fine"
    patch_size: int
    stride: int | None = None  # None: the patch size (tf-explain's grid)


def occlusion_stages(image_size: int, patch_size: int = 20, fine: bool = False) -> list[MapStage]:
    """The maps shown in turn, quickest first: a coarse 3 × 3 preview when it is coarser than the
    asked map, the asked map, and the fine map when asked for. The last one is the answer."""
    coarse = coarse_patch_size(image_size)
    stages = [MapStage("coarse", coarse)] if coarse > patch_size else []
    stages.append(MapStage("full", patch_size))
    if fine:
        stages.append(MapStage("fine", FINE_PATCH, FINE_STRIDE))
    return stages


def progressive_occlusion(
    model, image: np.ndarray, patch_size: int = 20, fine: bool = False
) -> Iterator[tuple[str, np.ndarray]]:
    """Each of `occlusion_stages` in turn, as (label, map): a quick look first, then the exact map(s)."""
    for stage in occlusion_stages(max(image.shape[:2]), patch_size, fine):
        yield stage.label, occlusion_sensitivity(model, image, stage.patch_size, stage.stride)


def occlusion_path(model, image_size: int, patch_size: int = 20) -> dict:
    """How this model's occlusion maps are computed, in words for its card (the map is the same either way)."""
    plan = plan_occlusion(model, image_size, image_size, patch_grid(image_size, image_size, patch_size), patch_size)
    if plan is None and not incremental_steps(model):
        first = model.layers[1].name if len(model.layers) > 1 else "none"
        return {
            "path": "whole image",
            "why": f"its first step ({first}) reads the whole image, so a patch changes every "
            "feature; each occluded image runs through the whole network",
        }
    if plan is None:
        return {
            "path": "whole image",
            "why": f"for patch {patch_size} at {image_size} px, a patch's windows cover more "
            "than half of every feature map where the network could be cut, so "
            "recomputing them would save nothing; each occluded image runs whole",
        }
    return {
        "path": "incremental",
        "recomputed_up_to": plan.steps[-1].layer.name,
        "why": f"for patch {patch_size} at {image_size} px, each patch's windows are recomputed up to "
        f"{plan.steps[-1].layer.name} and the rest of the network runs whole",
    }
