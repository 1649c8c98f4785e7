"""The tf.data input pipeline: in-memory pixels in, augmented shuffled batches out.

Pixels arrive already decoded and resized by `melanoma.data.load_pixels`, the serving code path,
so this module only orders, augments (training split only), batches and prefetches.

Every random choice is a stateless op seeded from (run seed, epoch, position in the epoch), so an
epoch's images and augmentations are a pure function of those numbers: the parallel map stays
deterministic on any number of threads, and a run resumed at epoch k sees what an uninterrupted
run would have seen from epoch k on.
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf

from melanoma.config import BRIGHTNESS, CONTRAST, HUE, SATURATION, Recipe

RANDOM_CHOICES = 9  # independent seeds per image: two flips, rotation, zoom, crop and four colour changes


def augment(image: tf.Tensor, recipe: Recipe, seed: tf.Tensor, colour_jitter: float = 1.0) -> tf.Tensor:
    """Random flips, right-angle rotations, optional rescaling and colour changes (0–255 float).

    `seed` is a [2] integer tensor; the same seed gives the same augmentation. `colour_jitter`
    scales the colour changes' ranges (hue at most half the wheel, contrast and saturation at least ×0.1).
    """
    seeds = tf.random.experimental.stateless_split(seed, RANDOM_CHOICES)
    size = tf.shape(image)[0]
    image = tf.image.stateless_random_flip_left_right(image, seeds[0])
    image = tf.image.stateless_random_flip_up_down(image, seeds[1])
    image = tf.image.rot90(image, k=tf.random.stateless_uniform([], seeds[2], 0, 4, dtype=tf.int32))
    if recipe.scale_augment:
        # Zoom in by up to 25%: dermoscopes and clinics frame lesions at different magnifications.
        crop = tf.cast(tf.cast(size, tf.float32) * tf.random.stateless_uniform([], seeds[3], 0.75, 1.0), tf.int32)
        image = tf.image.stateless_random_crop(image, tf.stack([crop, crop, 3]), seeds[4])
        image = tf.image.resize(image, tf.stack([size, size]), antialias=True)
    image = image / 255.0
    contrast, saturation = min(CONTRAST * colour_jitter, 0.9), min(SATURATION * colour_jitter, 0.9)
    image = tf.image.stateless_random_brightness(image, BRIGHTNESS * colour_jitter, seeds[5])
    image = tf.image.stateless_random_contrast(image, 1 - contrast, 1 + contrast, seeds[6])
    image = tf.image.stateless_random_saturation(image, 1 - saturation, 1 + saturation, seeds[7])
    image = tf.image.stateless_random_hue(image, min(HUE * colour_jitter, 0.5), seeds[8])
    return tf.clip_by_value(image, 0.0, 1.0) * 255.0


def epoch_order(n_images: int, images_per_epoch: int, seed: int, epoch: tf.Tensor) -> tf.Tensor:
    """Indices of one epoch's images: fresh permutations of all `n_images`, concatenated and cut
    to `images_per_epoch`, so every image is seen before any is repeated."""
    permutations = -(-images_per_epoch // n_images)
    draws = tf.random.stateless_uniform([permutations, n_images], tf.stack([tf.constant(seed, tf.int64), epoch]))
    return tf.reshape(tf.argsort(draws, axis=1), [-1])[:images_per_epoch]


def epoch_draws(draw_probabilities: np.ndarray, images_per_epoch: int, seed: int, epoch: tf.Tensor) -> tf.Tensor:
    """Indices of one epoch's images drawn with replacement, each with its probability (class
    balancing by sampling, `train.balance`)."""
    logits = tf.math.log(tf.constant(draw_probabilities, tf.float64))[tf.newaxis]
    seed_pair = tf.stack([tf.constant(seed, tf.int64), epoch])
    return tf.random.stateless_categorical(logits, images_per_epoch, seed_pair, dtype=tf.int64)[0]


def training_batches(
    pixels: np.ndarray,
    labels: np.ndarray,
    batch_size: int,
    recipe: Recipe,
    seed: int,
    first_epoch: int = 0,
    images_per_epoch: int | None = None,
    draw_probabilities: np.ndarray | None = None,
    colour_jitter: float = 1.0,
) -> tf.data.Dataset:
    """Endless batches of (float32 0–255 images, float32 labels), epoch after epoch from `first_epoch`.

    Each epoch is `images_per_epoch` images (default: one pass over the split) in
    ceil(images_per_epoch / batch_size) batches, the last one possibly short; fit with that many
    steps per epoch. Images are augmented when the recipe says so. With `draw_probabilities` (one
    per image, summing to 1), an epoch draws its images with replacement instead of passing over them.
    `colour_jitter` scales the augmentation's colour ranges (`augment`).
    """
    images = tf.constant(pixels)
    targets = tf.constant(labels.astype(np.float32))
    n_images, per_epoch = len(labels), images_per_epoch or len(labels)

    def one_epoch(epoch: tf.Tensor) -> tf.data.Dataset:
        if draw_probabilities is None:
            order = epoch_order(n_images, per_epoch, seed, epoch)
        else:
            order = epoch_draws(draw_probabilities, per_epoch, seed, epoch)
        # One seed per image: (run seed, its position counted from the start of training).
        positions = epoch * per_epoch + tf.range(per_epoch, dtype=tf.int64)
        seeds = tf.stack([tf.fill([per_epoch], tf.constant(seed, tf.int64)), positions], axis=1)

        def example(index: tf.Tensor, image_seed: tf.Tensor):
            image = tf.cast(tf.gather(images, index), tf.float32)
            augmented = augment(image, recipe, image_seed, colour_jitter) if recipe.augment else image
            return augmented, tf.gather(targets, index)

        return (
            tf.data.Dataset.from_tensor_slices((order, seeds))
            .map(example, num_parallel_calls=tf.data.AUTOTUNE)
            .batch(batch_size)
        )

    return tf.data.Dataset.range(first_epoch, np.iinfo(np.int64).max).flat_map(one_epoch).prefetch(tf.data.AUTOTUNE)


def evaluation_batches(pixels: np.ndarray, labels: np.ndarray, batch_size: int) -> tf.data.Dataset:
    """Batches of (float32 0–255 images, float32 labels) in the split's order, unaugmented."""
    dataset = tf.data.Dataset.from_tensor_slices((pixels, labels.astype(np.float32)))
    dataset = dataset.map(lambda x, y: (tf.cast(x, tf.float32), y), num_parallel_calls=tf.data.AUTOTUNE)
    return dataset.batch(batch_size).prefetch(tf.data.AUTOTUNE)
