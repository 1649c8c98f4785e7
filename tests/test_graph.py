"""The one place that reads Keras' private layer graph: fails loudly if a Keras release changes it."""

import keras
from keras import layers

from melanoma.explain.graph import LayerGraph


def test_producers_and_consumers_follow_a_branching_graph():
    inputs = keras.Input((8, 8, 3))
    convolution = layers.Conv2D(4, 3, name="conv")
    norm = layers.BatchNormalization(name="bn")
    x = norm(convolution(inputs))
    left, right = layers.ReLU(name="left")(x), layers.ReLU(name="right")(x)
    model = keras.Model(inputs, layers.Add(name="add")([left, right]))
    graph = LayerGraph(model)
    assert graph.producers(model.get_layer("bn")) == [convolution]
    assert graph.consumers(convolution) == [norm]
    assert {layer.name for layer in graph.consumers(norm)} == {"left", "right"}
    assert [layer.name for layer in graph.producers(model.get_layer("add"))] == ["left", "right"]
    assert graph.called_once(norm)


def test_a_layer_called_twice_has_no_single_producer():
    shared = layers.Dense(2, name="shared")
    a, b = keras.Input((3,)), keras.Input((3,))
    graph = LayerGraph(keras.Model([a, b], layers.Add()([shared(a), shared(b)])))
    assert not graph.called_once(shared) and graph.producers(shared) == []


def test_a_model_built_from_an_inner_tensor_leaves_the_graph_as_it_was():
    """Keras calls every layer after the inner tensor again (the occlusion's tail): not the model's own edges."""
    inputs = keras.Input((8, 8, 3))
    cut = layers.Conv2D(4, 3, name="conv")(inputs)
    norm = layers.BatchNormalization(name="bn")
    model = keras.Model(inputs, layers.ReLU(name="relu")(norm(cut)))
    keras.Model(cut, model.output)
    assert len(norm._inbound_nodes) == 2  # the tail's call, beside the model's
    graph = LayerGraph(model)
    assert graph.called_once(norm) and graph.producers(norm) == [model.get_layer("conv")]
    assert [layer.name for layer in graph.consumers(norm)] == ["relu"]
