"""Custom layers saved inside the models (registered, so safe-mode loading accepts them)."""

from __future__ import annotations

import keras
from keras import ops


@keras.saving.register_keras_serializable(package="melanoma")
class ShadesOfGray(keras.layers.Layer):
    """Shades-of-Gray colour constancy (Finlayson & Trezzi 2004) on 0–255 RGB pixels.

    Dermoscopes differ in illuminant and white balance; the ISIC 2018 winners normalised colour
    this way so a model does not learn one clinic's camera. Each image's channels are scaled so
    their Minkowski p-norm means become equal; the output stays in 0–255.
    """

    def __init__(self, power: float = 6.0, **kwargs):
        super().__init__(**kwargs)
        self.power = power

    def call(self, images):
        images = ops.cast(images, "float32")
        illuminant = ops.power(ops.mean(ops.power(images + 1e-6, self.power), axis=(1, 2), keepdims=True), 1.0 / self.power)
        gain = ops.mean(illuminant, axis=-1, keepdims=True) / (illuminant + 1e-6)
        return ops.clip(images * gain, 0.0, 255.0)

    def get_config(self):
        return {**super().get_config(), "power": self.power}
