"""The study's phases: learning rates at epochs 0/10/20, and whole blocks unfrozen from the top."""

import keras
import pytest

from melanoma.config import RECIPES, get_recipe
from melanoma.models.architectures import (
    base_layers,
    create_model,
    get_architecture,
    layers_with_trainable_weights,
    set_trainable,
)
from train.schedule import phases_run, plan_phases


def test_study_recipe_phases_for_inception():
    recipe = get_recipe("study")
    phases = plan_phases(
        get_architecture("inception_v3"), 25, recipe.phase_starts(25), recipe.learning_rates, pretrained=True
    )
    assert [(p.start_epoch, p.end_epoch, p.learning_rate, p.unfreeze_after, p.fine_tuning) for p in phases] == [
        (0, 10, 1e-4, "mixed9", True),
        (10, 20, 5e-5, "mixed8", True),
        (20, 25, 1e-5, "mixed7", True),
    ]


def test_a_short_run_trains_the_first_phases_in_order():
    """A 1-epoch run rounded the second phase's start (0.4) down to 0, dropped the first phase and trained
    at the second phase's rate with its blocks unfrozen."""
    recipe, inception = get_recipe("study"), get_architecture("inception_v3")

    def planned(epochs):
        phases = plan_phases(inception, epochs, recipe.phase_starts(epochs), recipe.learning_rates, pretrained=True)
        return [(p.index, p.start_epoch, p.end_epoch, p.learning_rate, p.unfreeze_after) for p in phases]

    assert planned(1) == [(0, 0, 1, 1e-4, "mixed9")]
    assert planned(2) == [(0, 0, 1, 1e-4, "mixed9"), (1, 1, 2, 5e-5, "mixed8")]
    assert planned(3) == [(0, 0, 1, 1e-4, "mixed9"), (1, 1, 2, 5e-5, "mixed8"), (2, 2, 3, 1e-5, "mixed7")]
    # every longer run, the shipped recipes' lengths among them, keeps the rounded fractions
    for name in RECIPES:
        fractions = get_recipe(name).phase_fractions
        for epochs in range(2, 101):
            assert get_recipe(name).phase_starts(epochs) == [round(f * epochs) for f in fractions], (name, epochs)
    assert [get_recipe(name).phase_starts(get_recipe(name).epochs) for name in ("study", "cpu", "cpu_transfer")] == [
        [0, 10, 20],
        [0, 5, 10],
        [0, 6, 13],
    ]


def test_scratch_and_unpretrained_networks_train_everything():
    recipe = get_recipe("study")
    for name, pretrained in (("scratch_cnn", True), ("efficientnet_b3", False)):
        phases = plan_phases(get_architecture(name), 25, recipe.phase_starts(25), recipe.learning_rates, pretrained)
        assert [(p.unfreeze_after, p.fine_tuning) for p in phases] == [(None, False)] * 3


@pytest.mark.parametrize(
    "name, size, trainable, learning",
    [
        ("inception_v3", 75, (31, 62, 82), (9, 18, 24)),
        ("efficientnet_b3", 32, (31, 61, 76), (11, 21, 26)),
        ("efficientnet_lite0", 32, (46, 98, 140), (16, 34, 49)),
    ],
)
def test_each_phase_unfreezes_whole_blocks_with_batch_norm_frozen(name, size, trainable, learning):
    """set_trainable counts the layers unfrozen, frozen batch normalisation and weightless layers included;
    `layers_with_trainable_weights` those that learn (the log once read "76 backbone layers trainable")."""
    model = create_model(name, size)
    backbone = base_layers(model)
    for after, count, with_weights in zip(get_architecture(name).unfreeze_after, trainable, learning):
        assert set_trainable(model, after, fine_tuning=True) == count
        assert layers_with_trainable_weights(model) == with_weights
        frozen, tail = backbone[:-count], backbone[-count:]
        assert (frozen[-1].name if frozen else None) == after  # the block boundary, named
        assert not any(layer.trainable for layer in frozen)
        assert all(layer.trainable != isinstance(layer, keras.layers.BatchNormalization) for layer in tail)
    assert model.get_layer(next(layer.name for layer in model.layers if layer.name.startswith("head_"))).trainable
    with pytest.raises(ValueError, match="no backbone layer 'block99_add' to unfreeze after"):
        set_trainable(model, "block99_add", fine_tuning=True)


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


def test_a_phase_that_keeps_its_layers_restarts_the_optimizer_as_a_new_one_would():
    """train.run compiles again only when the trainable layers change; otherwise it restarts the
    optimizer in place. Both must take the same steps from the same weights."""
    import numpy as np

    from train.run import restart_optimizer

    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(32, 5)).astype("float32"), rng.normal(size=(32, 1)).astype("float32")
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((5,)), keras.layers.Dense(4, activation="relu"), keras.layers.Dense(1)])
    model.compile(optimizer=keras.optimizers.Adam(1e-2), loss="mse")
    model.fit(x, y, batch_size=8, epochs=2, shuffle=False, verbose=0)  # moments and step count now non-zero
    start = model.get_weights()

    restart_optimizer(model.optimizer, 3e-3)
    assert int(model.optimizer.iterations) == 0 and float(model.optimizer.learning_rate) == pytest.approx(3e-3)
    model.fit(x, y, batch_size=8, epochs=2, shuffle=False, verbose=0)
    restarted = model.get_weights()

    model.set_weights(start)
    model.compile(optimizer=keras.optimizers.Adam(3e-3), loss="mse")
    model.fit(x, y, batch_size=8, epochs=2, shuffle=False, verbose=0)
    for after_restart, after_compile in zip(restarted, model.get_weights()):
        np.testing.assert_array_equal(after_restart, after_compile)
