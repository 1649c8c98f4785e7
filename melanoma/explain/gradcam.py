"""Grad-CAM (Selvaraju et al. 2017) of a melanoma probability, or of a diagnosis model's class set.

Takes a model as the project saves them (0–255 RGB in, probability out) and an RGB image at the
model's input size; one forward and one backward pass.
"""

from __future__ import annotations

from typing import Callable

import keras
import numpy as np
import tensorflow as tf

from melanoma.explain.per_model import cached
from melanoma.models.layers import ClassSum


def _grad_cam_function(model, layer_name: str, height: int, width: int):
    """Grad-CAM of one model and layer as a compiled function, traced once per input size.

    Eager execution of a deep model's forward and backward pass costs more than the maths.
    """
    head, log_odds = _explained_head(model)
    feature_model = keras.Model(model.inputs, [model.get_layer(layer_name).output, head.input])

    @tf.function(input_signature=[tf.TensorSpec([1, height, width, 3], tf.float32)])
    def cam(image: tf.Tensor) -> tf.Tensor:
        with tf.GradientTape() as tape:
            features, pooled = feature_model(image, training=False)
            # The log-odds, not the probability: the sigmoid's slope p(1 - p) scales every
            # gradient alike (the normalised map is the same) but is 0 when p rounds to 1.
            logits = tf.matmul(tf.cast(pooled, tf.float32), head.kernel) + head.bias
            target = log_odds(logits)[0]
        gradients = tape.gradient(target, features)
        weights = tf.reduce_mean(tf.cast(gradients, tf.float32), axis=(1, 2), keepdims=True)
        return tf.nn.relu(tf.reduce_sum(weights * tf.cast(features, tf.float32), axis=-1))[0]

    return cam


def _explained_head(model) -> tuple[keras.layers.Dense, Callable[[tf.Tensor], tf.Tensor]]:
    """The Dense head whose input Grad-CAM differentiates, and the log-odds of the explained
    probability as a function of the head's logits: the sigmoid's logit for a melanoma model; for
    a diagnosis softmax read through ClassSum, log(P(classes) / (1 − P(classes)))."""
    last = model.layers[-1]
    if isinstance(last, ClassSum):
        head = model.layers[-2]
        if isinstance(head, keras.layers.Dense) and head.activation is keras.activations.softmax:
            inside = list(last.indices)
            outside = [i for i in range(head.units) if i not in inside]
            return (
                head,
                lambda logits: (
                    tf.reduce_logsumexp(tf.gather(logits, inside, axis=1), axis=1)
                    - tf.reduce_logsumexp(tf.gather(logits, outside, axis=1), axis=1)
                ),
            )
    elif isinstance(last, keras.layers.Dense) and last.units == 1 and last.activation is keras.activations.sigmoid:
        return last, lambda logits: logits[:, 0]
    raise ValueError(
        f"Grad-CAM expects a model ending in Dense(1, activation='sigmoid'), or a softmax read through "
        f"ClassSum; {model.name} ends in {type(last).__name__} {last.name!r}. Build it through "
        "melanoma.models.architectures and load it through melanoma.inference."
    )


def grad_cam(model, image: np.ndarray, layer_name: str | None = None) -> np.ndarray:
    """Grad-CAM (Selvaraju et al. 2017) of the melanoma logit, in [0, 1] at the input size.

    One forward and one backward pass; the layer defaults to the last 4-D feature map.
    """
    height, width = image.shape[:2]
    layer_name = layer_name or last_feature_map(model)
    compute = cached(
        model, ("grad-cam", layer_name, height, width), lambda: _grad_cam_function(model, layer_name, height, width)
    )
    weighted = compute(tf.constant(np.asarray(image, np.float32)[None]))
    cam = tf.image.resize(weighted[..., None], (height, width), method="bilinear")[..., 0].numpy()
    peak = cam.max()
    return (cam / peak if peak > 0 else cam).astype(np.float32)


def last_feature_map(model) -> str:
    """The name of the last layer with a 4-D output (batch, height, width, channels) before pooling."""
    for layer in reversed(model.layers):
        shape = getattr(layer, "output", None) is not None and layer.output.shape
        if shape is not None and len(shape) == 4 and shape[1] and shape[1] > 1:
            return layer.name
    raise ValueError(f"model {model.name} has no convolutional feature map for Grad-CAM; name a layer explicitly.")
