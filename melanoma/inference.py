"""Scoring images with a loaded model: batched, with optional flip test-time augmentation."""

from __future__ import annotations

import numpy as np

from melanoma.images import to_model_input
from melanoma.ood import (
    FeatureGate,
    GateResult,
    features_of,
    image_problem,
    load_features_model,
)


TTA_DESCRIPTION = "the mean over the image and its three flips"


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


class Predictor:
    """An installed model ready to score images the way its card says: input size, TTA, calibration.

    `probabilities` are calibrated (the number a clinician reads and the threshold applies to);
    explanations work on `model`, the network's own output, which calibration maps monotonically.
    """

    def __init__(self, entry, model):
        self.entry = entry
        self.model = model
        self.serving = entry.serving
        ood = self.serving.ood
        # load_keras_model verified both files' sha256 against the card before we got here.
        self.feature_gate = FeatureGate.load(entry.folder / ood["file"]) if ood else None
        self.features = load_features_model(entry.folder / ood["features"]) if ood else None

    @property
    def name(self) -> str:
        return self.entry.name

    @property
    def threshold(self) -> float:
        return self.entry.threshold

    def raw_probabilities(self, pixels: np.ndarray, batch_size: int = 32) -> np.ndarray:
        """The network's output (with TTA) for images already at its input size, before calibration."""
        return predict_pixels(self.model, pixels, batch_size, self.serving.test_time_augmentation)

    def score_pixels(self, pixels: np.ndarray, batch_size: int = 32) -> np.ndarray:
        """Calibrated probabilities for uint8 images already at the model's input size."""
        return self.serving.calibration(self.raw_probabilities(pixels, batch_size))

    def probabilities(self, images: list[np.ndarray], batch_size: int = 32) -> np.ndarray:
        """Calibrated probabilities for RGB images of any size."""
        if not len(images):
            return np.zeros((0,), np.float64)
        return self.score_pixels(self._views(images), batch_size)

    def gate(self, images: list[np.ndarray], views: np.ndarray | None = None,
             features: np.ndarray | None = None) -> list[GateResult]:
        """For each image: does it look like the dermoscopic images this model was trained on?

        A model without a fitted gate (trained before it existed) passes every image that clears
        the cheap checks, with a score of 0. A caller scoring the same images already may pass
        their `views` at this model's input size and their `features` from `gate_features` (one
        extractor serves every model), so neither is computed again.
        """
        if not len(images):
            return []
        views = self._views(images) if views is None else views
        problems = [image_problem(view) for view in views]
        if self.feature_gate is None:
            return [GateResult(not problem, 0.0, problem or "") for problem in problems]
        features = self.gate_features(images) if features is None else features
        scores = self.feature_gate.distances(features) / self.feature_gate.threshold
        return [GateResult(bool(not problem and score <= 1.0), float(score),
                           problem or ("" if score <= 1.0 else "it is unlike the dermoscopic images the model was trained on"))
                for problem, score in zip(problems, scores)]

    def gate_features(self, images: list[np.ndarray]) -> np.ndarray | None:
        """The images' features in the gate's shared ImageNet extractor; None for a model without a gate."""
        if self.feature_gate is None:
            return None
        gate_views = np.stack([to_model_input(image, int(self.features.input_shape[1])) for image in images])
        return features_of(self.features, gate_views)

    def _views(self, images) -> np.ndarray:
        size = self.serving.input_size
        return np.stack([to_model_input(image, size) for image in images])


def load_predictor(name: str, models_dir=None) -> Predictor:
    """Find an installed model by name, verify and load it; raises ModelUnavailableError."""
    from melanoma.store import find_model, load_keras_model

    entry = find_model(name, models_dir)
    return Predictor(entry, load_keras_model(entry))
