"""Scoring images with a loaded model: batched, with optional flip test-time augmentation."""

from __future__ import annotations

import numpy as np

from melanoma.images import to_model_input


def _flips(batch: np.ndarray) -> list[np.ndarray]:
    """The image and its three flips: a lesion has no preferred orientation."""
    return [batch, batch[:, :, ::-1], batch[:, ::-1, :], batch[:, ::-1, ::-1]]


def predict_pixels(model, pixels: np.ndarray, batch_size: int = 32, tta: bool = False) -> np.ndarray:
    """Melanoma probabilities for uint8 images already at the model's input size.

    The flips go through the model in the same batches as the images, and Keras' compiled
    predict function is reused across calls (eager calls of a deep model cost seconds on a CPU).
    """
    if len(pixels) == 0:
        return np.zeros((0,), np.float32)
    views = _flips(pixels) if tta else [pixels]
    stacked = np.concatenate(views).astype(np.float32)
    outputs = [np.asarray(model.predict_on_batch(stacked[i:i + batch_size])).reshape(-1)
               for i in range(0, len(stacked), batch_size)]
    return np.concatenate(outputs).reshape(len(views), len(pixels)).mean(axis=0)


def model_input_size(model) -> int:
    return int(model.input_shape[1])


def predict_images(model, images: list[np.ndarray], batch_size: int = 32, tta: bool = False) -> np.ndarray:
    """Probabilities for RGB uint8 images of any size (each resized like the training images)."""
    size = model_input_size(model)
    if not images:
        return np.zeros((0,), np.float32)
    return predict_pixels(model, np.stack([to_model_input(image, size) for image in images]), batch_size, tta)


class Predictor:
    """An installed model ready to score images the way its card says (input size, TTA, threshold)."""

    def __init__(self, entry, model):
        self.entry = entry
        self.model = model

    @property
    def name(self) -> str:
        return self.entry.name

    @property
    def threshold(self) -> float:
        return self.entry.threshold

    @property
    def tta(self) -> bool:
        return self.entry.card.get("test_time_augmentation", "none") != "none"

    def probabilities(self, images: list[np.ndarray], batch_size: int = 32) -> np.ndarray:
        return predict_images(self.model, images, batch_size, self.tta)


def load_predictor(name: str, models_dir=None) -> Predictor:
    """Find an installed model by name, verify and load it; raises ModelUnavailableError."""
    from melanoma.store import DEFAULT_MODELS_DIR, find_model, load_keras_model

    entry = find_model(name, models_dir or DEFAULT_MODELS_DIR)
    return Predictor(entry, load_keras_model(entry))
