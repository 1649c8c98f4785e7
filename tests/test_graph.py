"""The one place that reads Keras' private layer graph: fails loudly if a Keras release changes it."""

import keras
from keras import layers

from melanoma.graph import called_once, consumers, producers


def test_producers_and_consumers_follow_a_branching_graph():
    inputs = keras.Input((8, 8, 3))
    convolution = layers.Conv2D(4, 3, name="conv")
    norm = layers.BatchNormalization(name="bn")
    x = norm(convolution(inputs))
    left, right = layers.ReLU(name="left")(x), layers.ReLU(name="right")(x)
    model = keras.Model(inputs, layers.Add(name="add")([left, right]))
    assert producers(model.get_layer("bn")) == [convolution]
    assert consumers(convolution) == [norm]
    assert {layer.name for layer in consumers(norm)} == {"left", "right"}
    assert [layer.name for layer in producers(model.get_layer("add"))] == ["left", "right"]
    assert called_once(norm)


def test_a_layer_called_twice_has_no_single_producer():
    shared = layers.Dense(2, name="shared")
    a, b = keras.Input((3,)), keras.Input((3,))
    keras.Model([a, b], layers.Add()([shared(a), shared(b)]))
    assert not called_once(shared) and producers(shared) == []
