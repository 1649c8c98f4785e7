"""Is this image like the ones the model was trained on? A gate before any verdict is shown.

A classifier answers every input, a temple or a scanned letter included. Two checks stand before
its answer:

- cheap image checks for what is plainly not a photograph of skin: a near-uniform image,
  colourless images such as documents and screenshots, and noise (pixel-to-pixel changes as
  large as the image's whole contrast);
- a distance in the model's own penultimate features (the pooled feature vector the head reads),
  fitted on the training split: Mahalanobis in the top principal directions plus the energy
  outside them (an image unlike the training set often lands off that subspace), with its
  threshold at a high percentile of the validation split's distances.

The fitted statistics live in `ood.npz` beside the weights; the card records their sha256.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from melanoma.files import atomic_write, sha256_of

FEATURE_LAYER = "head_pool"
COMPONENTS = 32
VALIDATION_PERCENTILE = 99.0
# Image checks, on 0-255 RGB; each measured on the shared HAM10000 images, which all pass them.
MIN_CONTRAST = 8.0  # standard deviation of the grey image
MAX_NOISE_RATIO = 0.5  # mean |neighbour difference| / standard deviation
MIN_SATURATION = 0.06  # mean HSV saturation: skin and lesions are coloured, documents are not


@dataclass(frozen=True)
class GateResult:
    in_distribution: bool
    score: float  # feature distance divided by the threshold: above 1 is outside
    reason: str  # empty when in distribution


def image_problem(pixels: np.ndarray) -> str:
    """Why these pixels cannot be a dermoscopic photograph, or '' when the cheap checks pass."""
    rgb = np.asarray(pixels, dtype=np.float32)
    grey = rgb.mean(axis=-1)
    contrast = float(grey.std())
    if contrast < MIN_CONTRAST:
        return "the image is nearly uniform (blank or a single colour)"
    high, low = rgb.max(axis=-1), rgb.min(axis=-1)
    saturation = float(np.mean((high - low) / np.maximum(high, 1.0)))
    if saturation < MIN_SATURATION:
        return "the image has almost no colour (a document, screenshot or greyscale picture)"
    steps = (np.abs(np.diff(grey, axis=0)).mean() + np.abs(np.diff(grey, axis=1)).mean()) / 2
    if steps / contrast > MAX_NOISE_RATIO:
        return "the image looks like noise (neighbouring pixels differ as much as the whole image)"
    return ""


@dataclass(frozen=True)
class FeatureGate:
    """Mahalanobis distance in the top principal directions of the training features, plus the
    residual energy outside them relative to the training set's."""

    mean: np.ndarray
    components: np.ndarray  # (k, d), orthonormal rows
    variances: np.ndarray  # (k,)
    residual_scale: float  # mean squared residual of the training features
    threshold: float

    @classmethod
    def fit(cls, train_features: np.ndarray, val_features: np.ndarray, components: int = COMPONENTS,
            percentile: float = VALIDATION_PERCENTILE) -> "FeatureGate":
        mean = train_features.mean(axis=0)
        centred = train_features - mean
        _, singular, directions = np.linalg.svd(centred, full_matrices=False)
        k = min(components, len(singular))
        variances = singular[:k] ** 2 / max(len(train_features) - 1, 1) + 1e-6
        residual = float(np.sum(singular[k:] ** 2) / max(len(train_features), 1)) + 1e-6
        gate = cls(mean.astype(np.float32), directions[:k].astype(np.float32), variances.astype(np.float32), residual, 1.0)
        threshold = float(np.percentile(gate.distances(val_features), percentile))
        return cls(gate.mean, gate.components, gate.variances, residual, threshold)

    def distances(self, features: np.ndarray) -> np.ndarray:
        centred = np.asarray(features, np.float32) - self.mean
        projected = centred @ self.components.T
        residual = np.sum((centred - projected @ self.components) ** 2, axis=1)
        return np.mean(projected ** 2 / self.variances, axis=1) + residual / self.residual_scale

    def save(self, path: Path) -> str:
        """Write the statistics atomically; returns their sha256 for the card."""
        def write(temporary: str) -> None:
            with open(temporary, "wb") as handle:
                np.savez(handle, mean=self.mean, components=self.components, variances=self.variances,
                         residual_scale=np.float64(self.residual_scale), threshold=np.float64(self.threshold))

        atomic_write(path, write)
        return sha256_of(path)

    @classmethod
    def load(cls, path: Path) -> "FeatureGate":
        with np.load(path, allow_pickle=False) as stored:
            return cls(stored["mean"], stored["components"], stored["variances"], float(stored["residual_scale"]),
                       float(stored["threshold"]))


def feature_model(model):
    """The model cut at its pooled penultimate features."""
    import keras

    return keras.Model(model.input, model.get_layer(FEATURE_LAYER).output)


def features_of(model, pixels: np.ndarray, batch_size: int = 64) -> np.ndarray:
    extractor = feature_model(model)
    return np.concatenate([np.asarray(extractor.predict_on_batch(pixels[i:i + batch_size].astype(np.float32)))
                           for i in range(0, len(pixels), batch_size)]) if len(pixels) else np.zeros((0, 1), np.float32)
