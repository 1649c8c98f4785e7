"""What a network learns, by training target: its outputs, targets, loss and the metrics Keras tracks.

Both targets keep the same two history columns, `auc` and `val_auc`, for the melanoma ROC AUC, so
the best epoch is chosen on validation melanoma AUC either way, and a diagnosis model's history
compares directly with a binary one's.
"""

from __future__ import annotations

import keras
import numpy as np
import pandas as pd

from melanoma import diagnoses
from melanoma.config import TrainConfig


def output_count(config: TrainConfig) -> int:
    """The network's outputs: one sigmoid, or one softmax output per diagnosis."""
    return len(diagnoses.CODES) if config.target == "diagnosis" else 1


def learning_targets(part: pd.DataFrame, target: str) -> np.ndarray:
    """What the network learns for these images: the melanoma label, or the one-hot diagnosis."""
    if target == "diagnosis":
        return np.eye(len(diagnoses.CODES), dtype=np.float32)[[diagnoses.index_of(code) for code in part.dx]]
    return part.label.to_numpy()


@keras.saving.register_keras_serializable(package="melanoma_training")
class MelanomaAUC(keras.metrics.AUC):
    """ROC AUC of the melanoma column of a softmax over the diagnoses: the binary model's `auc`."""

    def update_state(self, y_true, y_pred, sample_weight=None):
        column = diagnoses.index_of(diagnoses.MELANOMA)
        return super().update_state(y_true[:, column], y_pred[:, column], sample_weight)


def loss_and_metrics(config: TrainConfig) -> tuple[keras.losses.Loss, list[keras.metrics.Metric]]:
    """The loss and the tracked metrics (accuracy and melanoma AUC) for the run's target."""
    if config.target == "diagnosis":
        return (
            keras.losses.CategoricalCrossentropy(label_smoothing=config.label_smoothing),
            [keras.metrics.CategoricalAccuracy(name="accuracy"), MelanomaAUC(name="auc")],
        )
    return (
        keras.losses.BinaryCrossentropy(label_smoothing=config.label_smoothing),
        [keras.metrics.BinaryAccuracy(name="accuracy"), keras.metrics.AUC(name="auc")],
    )
