"""Custom layers saved inside the models (registered, so safe-mode loading accepts them)."""

from __future__ import annotations

import keras
from keras import ops

from melanoma.calibration import EPSILON


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
        illuminant = ops.power(
            ops.mean(ops.power(images + 1e-6, self.power), axis=(1, 2), keepdims=True), 1.0 / self.power
        )
        gain = ops.mean(illuminant, axis=-1, keepdims=True) / (illuminant + 1e-6)
        return ops.clip(images * gain, 0.0, 255.0)

    def get_config(self):
        return {**super().get_config(), "power": self.power}


@keras.saving.register_keras_serializable(package="melanoma")
class ClassSum(keras.layers.Layer):
    """The summed probability of some classes of a softmax over the diagnoses: P(MEL), or the
    malignant P(MEL) + P(BCC) + P(AKIEC), as one (batch, 1) output that the explanations read
    like a melanoma model's sigmoid."""

    def __init__(self, indices: tuple[int, ...] = (0,), **kwargs):
        super().__init__(**kwargs)
        self.indices = tuple(int(i) for i in indices)

    def call(self, probabilities):
        return ops.sum(ops.take(probabilities, list(self.indices), axis=-1), axis=-1, keepdims=True)

    def compute_output_shape(self, input_shape):
        return (input_shape[0], 1)

    def get_config(self):
        return {**super().get_config(), "indices": list(self.indices)}


@keras.saving.register_keras_serializable(package="melanoma")
class PlattOutput(keras.layers.Layer):
    """Platt scaling inside the graph: sigmoid(slope · logit(p) + intercept), as
    `melanoma.calibration.PlattScaling` does in numpy, so an explanation can measure drops of the
    calibrated probability that a combined reading averages; with `log_odds`, the calibrated
    log-odds before the sigmoid, for a combination that averages those."""

    def __init__(self, slope: float = 1.0, intercept: float = 0.0, log_odds: bool = False, **kwargs):
        super().__init__(**kwargs)
        self.slope, self.intercept, self.log_odds = float(slope), float(intercept), bool(log_odds)

    def call(self, probabilities):
        p = ops.clip(ops.cast(probabilities, "float32"), EPSILON, 1.0 - EPSILON)
        odds = self.slope * ops.log(p / (1.0 - p)) + self.intercept
        return odds if self.log_odds else ops.sigmoid(odds)

    def get_config(self):
        return {**super().get_config(), "slope": self.slope, "intercept": self.intercept, "log_odds": self.log_odds}
