"""The training input stream: each epoch a pure function of the seed and its number."""

from dataclasses import replace

import numpy as np
import tensorflow as tf

from melanoma.config import get_recipe
from train.pipeline import epoch_order, evaluation_batches, training_batches

RNG = np.random.default_rng(0)
PIXELS = RNG.integers(0, 256, (50, 24, 24, 3), dtype=np.uint8)
LABELS = (np.arange(50) % 3 == 0).astype(int)
AUGMENTED = get_recipe("cpu")  # flips, rotations, zoom and colour changes


def batches(dataset: tf.data.Dataset, count: int) -> list[tuple[np.ndarray, np.ndarray]]:
    return [(images.numpy(), labels.numpy()) for images, labels in dataset.take(count)]


def same(a: list, b: list) -> bool:
    return len(a) == len(b) and all(np.array_equal(x, y) and np.array_equal(s, t) for (x, s), (y, t) in zip(a, b))


def test_a_stream_started_at_epoch_k_sees_what_an_uninterrupted_one_sees_from_k():
    # 70 images per epoch in batches of 16: five batches, the last of six images.
    uninterrupted = batches(training_batches(PIXELS, LABELS, 16, AUGMENTED, seed=7, images_per_epoch=70), 15)
    resumed = batches(training_batches(PIXELS, LABELS, 16, AUGMENTED, seed=7, first_epoch=2, images_per_epoch=70), 5)
    assert [len(labels) for _, labels in uninterrupted[:5]] == [16, 16, 16, 16, 6]
    assert same(uninterrupted[10:], resumed)
    assert not same(uninterrupted[:5], uninterrupted[5:10])  # a new order and new augmentations each epoch
    other_seed = batches(training_batches(PIXELS, LABELS, 16, AUGMENTED, seed=8, images_per_epoch=70), 5)
    assert not same(uninterrupted[:5], other_seed)


def test_augmentation_does_not_depend_on_how_many_threads_run_it():
    dataset = training_batches(PIXELS, LABELS, 16, AUGMENTED, seed=3)
    options = tf.data.Options()
    options.threading.private_threadpool_size = 1
    assert same(batches(dataset, 8), batches(dataset.with_options(options), 8))


def test_every_image_is_seen_once_before_any_is_repeated():
    order = epoch_order(50, 70, seed=1, epoch=tf.constant(4, tf.int64)).numpy()
    assert len(order) == 70 and sorted(order[:50]) == list(range(50)) and len(set(order[50:])) == 20
    assert not np.array_equal(order, epoch_order(50, 70, seed=1, epoch=tf.constant(5, tf.int64)).numpy())


def test_labels_travel_with_their_images_and_unaugmented_pixels_are_untouched():
    images, labels = next(iter(training_batches(PIXELS, LABELS, 50, replace(AUGMENTED, augment=False), seed=2)))
    index = [int(np.flatnonzero((PIXELS == image).all(axis=(1, 2, 3)))[0]) for image in images.numpy().astype(np.uint8)]
    assert sorted(index) == list(range(50)) and index != list(range(50))  # a permutation, shuffled
    assert np.array_equal(labels.numpy(), LABELS[index]) and np.array_equal(images.numpy(), PIXELS[index])


def test_augmented_images_keep_the_value_range_and_the_labels():
    images, labels = next(iter(training_batches(PIXELS, LABELS, 50, AUGMENTED, seed=2)))
    assert images.dtype == tf.float32 and 0.0 <= float(tf.reduce_min(images)) and float(tf.reduce_max(images)) <= 255.0
    assert sorted(labels.numpy().tolist()) == sorted(LABELS.tolist())


def test_evaluation_batches_keep_the_split_order():
    images, labels = zip(*batches(evaluation_batches(PIXELS, LABELS, 16), 4))
    assert np.array_equal(np.concatenate(images), PIXELS) and np.array_equal(np.concatenate(labels), LABELS)


def test_colour_jitter_widens_the_colour_changes_and_keeps_the_value_range():
    """On plain mid-grey images only the colour changes move pixels (flips, rotations and zoom leave
    them grey), so the spread of the mean brightness measures the colour ranges alone."""
    grey = np.full((200, 16, 16, 3), 128, np.uint8)
    recipe = replace(AUGMENTED, scale_augment=False)

    def brightness_spread(colour_jitter: float) -> float:
        dataset = training_batches(grey, np.zeros(200, int), 200, recipe, seed=5, colour_jitter=colour_jitter)
        images = next(iter(dataset))[0].numpy()
        assert 0.0 <= images.min() and images.max() <= 255.0
        return float(images.mean(axis=(1, 2, 3)).std())

    usual, wide = brightness_spread(1.0), brightness_spread(2.5)
    assert 8 < usual < 15  # brightness ±0.08 of 255, uniform: a standard deviation of about 11.8
    assert 2.0 < wide / usual < 3.0
