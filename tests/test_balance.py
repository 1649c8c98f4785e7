"""Class balancing: weights, sampling and square-root sampling give every class the same expected
share of the loss, and a sampled stream is as reproducible as a permuted one."""

import numpy as np
import pytest
import tensorflow as tf

from melanoma.config import get_recipe
from melanoma.data import DataError
from train.balance import METHODS, balance
from train.pipeline import epoch_draws, training_batches

# HAM10000's training split by diagnosis, roughly: one large class, one middling, one rare.
CLASSES = np.repeat([0, 1, 2], [640, 90, 10])


def expected_loss_share(classes: np.ndarray, method: str) -> np.ndarray:
    """Each class's share of the expected loss of one drawn image."""
    balancing = balance(classes, 3, method)
    draws = balancing.draw_probabilities
    if draws is None:
        draws = np.full(len(classes), 1 / len(classes))
    weights = np.array([balancing.class_weights[c] for c in classes])
    return np.bincount(classes, weights=draws * weights, minlength=3)


@pytest.mark.parametrize("method", METHODS)
def test_every_method_gives_each_class_an_equal_share_of_the_loss_with_mean_weight_one(method):
    shares = expected_loss_share(CLASSES, method)
    assert shares == pytest.approx([1 / 3] * 3)  # the mean weight over the draws is therefore 1


def test_the_methods_trade_repetitions_for_weights():
    weights = balance(CLASSES, 3, "weights")
    assert weights.draw_probabilities is None
    assert weights.class_weights[2] == pytest.approx(740 / (3 * 10))  # n / (k * n_class): 24.7
    sampling = balance(CLASSES, 3, "sampling")
    assert set(sampling.class_weights.values()) == {1.0}
    assert sampling.draw_probabilities[CLASSES == 2].sum() == pytest.approx(1 / 3)
    root = balance(CLASSES, 3, "sqrt-sampling")
    # The rare class: drawn sqrt(10) / (sqrt(640) + sqrt(90) + sqrt(10)) of the time, weighted the rest.
    share = np.sqrt(10) / (np.sqrt(640) + np.sqrt(90) + np.sqrt(10))
    assert root.draw_probabilities[CLASSES == 2].sum() == pytest.approx(share)
    assert root.class_weights[2] == pytest.approx(1 / (3 * share))  # 3.0, against 24.7 by weights alone
    assert root.draw_probabilities.sum() == pytest.approx(1.0)


@pytest.mark.parametrize("method", METHODS)
def test_an_emphasised_class_gets_its_factor_times_the_others_share_of_the_loss(method):
    balancing = balance(CLASSES, 3, method, {1: 2.0})
    draws = balancing.draw_probabilities
    draws = np.full(len(CLASSES), 1 / len(CLASSES)) if draws is None else draws
    weights = np.array([balancing.class_weights[c] for c in CLASSES])
    shares = np.bincount(CLASSES, weights=draws * weights, minlength=3)
    assert shares == pytest.approx([0.25, 0.5, 0.25])
    assert np.sum(draws * weights) == pytest.approx(1.0)  # still a mean weight of 1 over the draws
    if method == "sampling":  # drawn twice as often, weighted like the others
        assert draws[CLASSES == 1].sum() == pytest.approx(0.5) and set(balancing.class_weights.values()) == {1.0}


def test_a_class_without_training_images_or_an_unknown_method_is_refused():
    with pytest.raises(DataError, match="no image of class 2"):
        balance(np.array([0, 0, 1]), 3, "sampling")
    with pytest.raises(ValueError, match="expected one of weights, sampling, sqrt-sampling"):
        balance(CLASSES, 3, "oversample")


def test_a_sampled_epoch_draws_the_classes_as_asked_and_is_a_function_of_seed_and_epoch():
    probabilities = balance(CLASSES, 3, "sampling").draw_probabilities
    epoch = tf.constant(3, tf.int64)
    drawn = epoch_draws(probabilities, 6000, seed=5, epoch=epoch).numpy()
    assert np.bincount(CLASSES[drawn], minlength=3) / 6000 == pytest.approx([1 / 3] * 3, abs=0.03)
    assert np.array_equal(drawn, epoch_draws(probabilities, 6000, seed=5, epoch=epoch).numpy())
    assert not np.array_equal(drawn, epoch_draws(probabilities, 6000, seed=5, epoch=epoch + 1).numpy())


def test_a_sampled_stream_resumed_at_epoch_k_sees_what_an_uninterrupted_one_sees():
    pixels = np.random.default_rng(0).integers(0, 256, (len(CLASSES), 8, 8, 3), dtype=np.uint8)
    probabilities = balance(CLASSES, 3, "sqrt-sampling").draw_probabilities
    recipe = get_recipe("cpu")

    def labels(first_epoch: int, count: int) -> list[np.ndarray]:
        stream = training_batches(pixels, CLASSES, 32, recipe, 7, first_epoch, 64, probabilities)
        return [batch_labels.numpy() for _, batch_labels in stream.take(count)]

    uninterrupted, resumed = labels(0, 6), labels(2, 2)
    assert all(np.array_equal(a, b) for a, b in zip(uninterrupted[4:], resumed))
    assert np.mean(np.concatenate(uninterrupted) == 2) > 0.05  # the rare class, 1.4 % of the images, is drawn
