"""The study's phases: learning rates at epochs 0/10/20 and 25/45/65 trainable Inception layers."""

import keras
import pytest

from melanoma.architectures import base_layers, create_model, get_architecture, set_trainable_layers
from melanoma.config import get_recipe
from train.schedule import phases_run, plan_phases


def test_study_recipe_phases_for_inception():
    recipe = get_recipe("study")
    phases = plan_phases(
        get_architecture("inception_v3"), 25, recipe.phase_starts(25), recipe.learning_rates, pretrained=True
    )
    assert [(p.start_epoch, p.end_epoch, p.learning_rate, p.trainable_layers) for p in phases] == [
        (0, 10, 1e-4, 25),
        (10, 20, 5e-5, 45),
        (20, 25, 1e-5, 65),
    ]


def test_efficientnet_counts_and_scratch_trains_everything():
    recipe = get_recipe("study")
    effnet = plan_phases(get_architecture("efficientnet_b3"), 25, recipe.phase_starts(25), recipe.learning_rates, True)
    assert [p.trainable_layers for p in effnet] == [30, 60, 80]
    scratch = plan_phases(get_architecture("scratch_cnn"), 25, recipe.phase_starts(25), recipe.learning_rates, False)
    assert [p.trainable_layers for p in scratch] == [None, None, None]


def test_trainable_layers_are_the_last_ones_with_batch_norm_frozen():
    model = create_model("inception_v3", 75)
    backbone = base_layers(model)
    for count in (25, 45, 65):
        assert set_trainable_layers(model, count) == count
        tail = backbone[-count:]
        assert not any(layer.trainable for layer in backbone[:-count])
        assert all(layer.trainable != isinstance(layer, keras.layers.BatchNormalization) for layer in tail)
    assert model.get_layer("head_melanoma_probability").trainable


def test_unknown_model_name_lists_the_valid_ones():
    with pytest.raises(KeyError, match="scratch_cnn, inception_v3, efficientnet_b3, efficientnet_lite0"):
        get_architecture("resnet50")


def test_the_card_records_the_phases_as_run_when_a_resume_changed_the_plan():
    rates = [1e-3] * 2 + [3e-4] * 2 + [3e-4] * 1 + [1e-4] * 2  # 4 epochs planned, then resumed to 7
    history = [{"epoch": i + 1, "learning_rate": rate, "trainable_layers": 30} for i, rate in enumerate(rates)]
    assert phases_run(history) == [
        {"index": 0, "start_epoch": 0, "end_epoch": 2, "learning_rate": 1e-3, "trainable_layers": 30},
        {"index": 1, "start_epoch": 2, "end_epoch": 5, "learning_rate": 3e-4, "trainable_layers": 30},
        {"index": 2, "start_epoch": 5, "end_epoch": 7, "learning_rate": 1e-4, "trainable_layers": 30},
    ]
