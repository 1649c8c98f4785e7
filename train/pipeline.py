"""The tf.data input pipeline: in-memory pixels in, augmented shuffled batches out.

Pixels arrive already decoded and resized by `melanoma.data.load_pixels`, the serving code path,
so this module only shuffles, augments (training split only), batches and prefetches.
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf

from melanoma.config import Recipe


def augment(image: tf.Tensor, recipe: Recipe) -> tf.Tensor:
    """Random flips, right-angle rotations, optional rescaling and small colour changes (0–255 float)."""
    size = tf.shape(image)[0]
    image = tf.image.random_flip_left_right(image)
    image = tf.image.random_flip_up_down(image)
    image = tf.image.rot90(image, k=tf.random.uniform([], 0, 4, dtype=tf.int32))
    if recipe.scale_augment:
        # Zoom in by up to 25%: dermoscopes and clinics frame lesions at different magnifications.
        crop = tf.cast(tf.cast(size, tf.float32) * tf.random.uniform([], 0.75, 1.0), tf.int32)
        image = tf.image.random_crop(image, tf.stack([crop, crop, 3]))
        image = tf.image.resize(image, tf.stack([size, size]), antialias=True)
    image = image / 255.0
    image = tf.image.random_brightness(image, 0.08)
    image = tf.image.random_contrast(image, 0.9, 1.1)
    image = tf.image.random_saturation(image, 0.9, 1.1)
    image = tf.image.random_hue(image, 0.02)
    return tf.clip_by_value(image, 0.0, 1.0) * 255.0


def make_dataset(pixels: np.ndarray, labels: np.ndarray, batch_size: int, recipe: Recipe,
                 training: bool, seed: int = 42, repeat: bool = False) -> tf.data.Dataset:
    """Batches of (float32 0–255 images, float32 labels); shuffled and augmented when training.

    `repeat` makes the stream endless, for epochs defined as a number of sampled images.
    """
    dataset = tf.data.Dataset.from_tensor_slices((pixels, labels.astype(np.float32)))
    if training:
        dataset = dataset.shuffle(len(labels), seed=seed, reshuffle_each_iteration=True)
    if repeat:
        dataset = dataset.repeat()
    dataset = dataset.map(lambda x, y: (tf.cast(x, tf.float32), y), num_parallel_calls=tf.data.AUTOTUNE)
    if training and recipe.augment:
        dataset = dataset.map(lambda x, y: (augment(x, recipe), y), num_parallel_calls=tf.data.AUTOTUNE)
    return dataset.batch(batch_size).prefetch(tf.data.AUTOTUNE)
