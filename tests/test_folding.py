"""Folding batch normalisations into convolutions changes the speed, not the output."""

import keras
import numpy as np
import pytest
from keras import layers

from melanoma.config import DEFAULT_MODELS
from melanoma.explain.folding import FoldedBatchNorm, fold_batch_norms


def trained_statistics(model: keras.Model, seed: int = 0) -> keras.Model:
    """Batch-norm statistics as after training (the freshly built ones are an identity map)."""
    rng = np.random.default_rng(seed)
    for layer in model.layers:
        if isinstance(layer, layers.BatchNormalization):
            layer.set_weights(
                [
                    rng.uniform(0.5, 1.5, w.shape)
                    if name.endswith(("gamma", "variance"))
                    else rng.normal(0, 0.5, w.shape)
                    for name, w in zip([v.path for v in layer.weights], layer.get_weights())
                ]
            )
    return model


def outputs(model: keras.Model, images: np.ndarray) -> np.ndarray:
    return keras.ops.convert_to_numpy(model(images, training=False))


def test_folds_only_a_normalisation_that_alone_follows_a_linear_convolution():
    keras.utils.set_random_seed(0)
    inputs = keras.Input((24, 24, 3))
    x = layers.BatchNormalization(name="bn_conv")(layers.Conv2D(8, 3, padding="same", use_bias=False)(inputs))
    x = layers.ReLU()(x)
    x = layers.BatchNormalization(name="bn_depthwise")(layers.DepthwiseConv2D(3, depth_multiplier=2, padding="same")(x))
    x = layers.BatchNormalization(name="bn_after_relu_conv")(layers.Conv2D(8, 3, activation="relu")(x))
    shared = layers.Conv2D(8, 1)(x)  # feeds a normalisation and the sum below: not foldable
    x = layers.Add()([layers.BatchNormalization(name="bn_shared")(shared), shared])
    model = trained_statistics(keras.Model(inputs, layers.GlobalAveragePooling2D()(x)))
    folded = fold_batch_norms(model)
    kinds = {layer.name: type(layer) for layer in folded.layers}
    assert kinds["bn_conv"] is kinds["bn_depthwise"] is FoldedBatchNorm
    assert kinds["bn_after_relu_conv"] is kinds["bn_shared"] is layers.BatchNormalization
    images = np.random.default_rng(1).uniform(0, 1, (4, 24, 24, 3)).astype(np.float32)
    np.testing.assert_allclose(outputs(folded, images), outputs(model, images), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("name", DEFAULT_MODELS)
def test_every_architecture_computes_the_same_feature_maps(name):
    """Compared on the last feature map: with random weights, all images get nearly one probability."""
    from melanoma.explain.gradcam import last_feature_map
    from melanoma.models.architectures import create_model

    model = trained_statistics(create_model(name, 96, colour_constancy=True))
    folded = fold_batch_norms(model)
    assert any(isinstance(layer, FoldedBatchNorm) for layer in folded.layers)
    images = np.random.default_rng(2).uniform(0, 255, (2, 96, 96, 3)).astype(np.float32)
    layer = last_feature_map(model)
    expected = outputs(keras.Model(model.inputs, model.get_layer(layer).output), images)
    actual = outputs(keras.Model(folded.inputs, folded.get_layer(layer).output), images)
    scale = np.abs(expected).max()
    assert np.std(expected) > 0.1 * scale  # the map varies, so a wrong fold would show
    np.testing.assert_allclose(actual, expected, rtol=1e-4, atol=1e-4 * scale)
