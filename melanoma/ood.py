"""Is this image like the ones the model was trained on? A gate before any verdict is shown.

A classifier answers every input, a temple or a scanned letter included. Two checks stand before
its answer:

- cheap image checks for what is plainly not a photograph of skin: a near-uniform image, a
  mostly black one, colourless images such as documents and screenshots, and noise
  (pixel-to-pixel changes as large as the image's whole contrast);
- a distance in ImageNet features (EfficientNet-Lite0's pooled features from its ImageNet
  checkpoint, one frozen extractor shared by every model), fitted on the model's training split:
  Mahalanobis in the top principal directions plus the energy outside them (an image unlike the
  training set often lands off that subspace), with its threshold at a high percentile of the
  validation split's distances.

ImageNet features know cats, flowers and rockets, which the classifiers' own fine-tuned features
were never taught to tell apart from lesions: on the shipped Lite0's splits, its own features
flagged 3.4 % of its test split and 89 % of 35 non-dermoscopic images; ImageNet features 0.2 %
and 94 %. The fitted statistics live in `ood.npz` beside the weights and the extractor in
`imagenet_features.keras` in the models folder; the card records both sha256.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from melanoma.files import atomic_write, sha256_of

FEATURES_FILE = "imagenet_features.keras"
FEATURES_VARIANT = "lite0"  # the EfficientNet-Lite whose ImageNet checkpoint the extractor is built from
FEATURES_SIZE = 160
COMPONENTS = 64
VALIDATION_PERCENTILE = 99.5
MIN_TRAINING_IMAGES = 10  # one principal direction, at the ten images per direction FeatureGate.fit keeps
# Image checks, on 0-255 RGB at the models' input sizes (128, 160 and 192 px), each measured on all
# 10,015 shared HAM10000 images, which all pass them (and on train.gate_check's other images).
# Standard deviation of the grey image: at least 5.4 in the shared images (a pale lesion on pale
# skin), 0 in a blank or single-colour image.
MIN_CONTRAST = 4.0
MAX_NOISE_RATIO = 0.5  # mean |neighbour difference| / standard deviation: at most 0.43 in the shared images
# Mean HSV saturation: at least 0.033 in the shared images (ISIC_0025456, a nearly grey lesion; the
# next is 0.061), 0.000 in a greyscale picture or a document.
MIN_SATURATION = 0.02
# Fraction of near-black pixels (grey < 30): at most 0.36 in any of the 10,015 shared images (the
# dark corners of a dermoscope's round field), 0.90 in a photograph of the night sky.
MAX_DARK_FRACTION = 0.6


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
    if float(np.mean(grey < 30)) > MAX_DARK_FRACTION:
        return "the image is mostly black (an unlit or night-time picture, not a lit dermoscopic field)"
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
    def fit(
        cls,
        train_features: np.ndarray,
        val_features: np.ndarray,
        components: int = COMPONENTS,
        percentile: float = VALIDATION_PERCENTILE,
    ) -> "FeatureGate":
        """Fit on the training split's features and threshold on the validation split's. Too few
        images are refused: from none the statistics are NaN, and the saved gate refuses every image."""
        if len(train_features) < MIN_TRAINING_IMAGES or not len(val_features):
            raise ValueError(
                f"fitting the out-of-distribution gate needs at least {MIN_TRAINING_IMAGES} training images (ten per "
                f"principal direction) and one validation image; got {len(train_features)} and {len(val_features)}. "
                "Fit it on a split with more images."
            )
        mean = train_features.mean(axis=0)
        centred = train_features - mean
        _, singular, directions = np.linalg.svd(centred, full_matrices=False)
        # At least ten training images per direction: the variance of a direction estimated from
        # fewer is noise, and dividing by it would flag ordinary images.
        k = max(1, min(components, len(singular), len(train_features) // 10))
        variances = singular[:k] ** 2 / max(len(train_features) - 1, 1) + 1e-6
        residual = float(np.sum(singular[k:] ** 2) / max(len(train_features), 1)) + 1e-6
        gate = cls(
            mean.astype(np.float32), directions[:k].astype(np.float32), variances.astype(np.float32), residual, 1.0
        )
        threshold = float(np.percentile(gate.distances(val_features), percentile))
        return cls(gate.mean, gate.components, gate.variances, residual, threshold)

    def distances(self, features: np.ndarray) -> np.ndarray:
        centred = np.asarray(features, np.float32) - self.mean
        projected = centred @ self.components.T
        residual = np.sum((centred - projected @ self.components) ** 2, axis=1)
        return np.mean(projected**2 / self.variances, axis=1) + residual / self.residual_scale

    def save(self, path: Path) -> str:
        """Write the statistics atomically; returns their sha256 for the card."""

        def write(temporary: str) -> None:
            with open(temporary, "wb") as handle:
                np.savez(
                    handle,
                    mean=self.mean,
                    components=self.components,
                    variances=self.variances,
                    residual_scale=np.float64(self.residual_scale),
                    threshold=np.float64(self.threshold),
                )

        atomic_write(path, write)
        return sha256_of(path)

    @classmethod
    def load(cls, path: Path) -> "FeatureGate":
        with np.load(path, allow_pickle=False) as stored:
            return cls(
                stored["mean"],
                stored["components"],
                stored["variances"],
                float(stored["residual_scale"]),
                float(stored["threshold"]),
            )


def build_imagenet_features():
    """EfficientNet-Lite0 from its ImageNet checkpoint, cut at the pooled features (training only:
    it reads the checkpoint package; serving loads the saved Keras file)."""
    import keras

    from melanoma.models import efficientnet_lite, pretrained

    classifier = efficientnet_lite.imagenet_classifier(FEATURES_VARIANT, FEATURES_SIZE)
    state, provenance = pretrained.read_checkpoint(FEATURES_VARIANT, "imagenet")
    efficientnet_lite.load_checkpoint_weights(classifier, state, provenance["file"])
    return keras.Model(classifier.input, classifier.get_layer("imagenet_pool").output, name="imagenet_lite0_features")


def ensure_imagenet_features(models_dir: Path) -> Path:
    """The shared extractor's file in the models folder, written once (atomically) when missing."""
    path = Path(models_dir) / FEATURES_FILE
    if not path.is_file():
        extractor = build_imagenet_features()
        atomic_write(path, extractor.save)
    return path


@functools.lru_cache(maxsize=4)
def _load_features(path: str):
    from melanoma.models.saved import load_network

    return load_network(path)


def load_features_model(path: Path):
    """The shared extractor, loaded once per process and file (every model's gate uses the same one)."""
    return _load_features(str(Path(path).resolve()))


def features_of(extractor, pixels: np.ndarray, batch_size: int = 64) -> np.ndarray:
    """Pooled features of uint8 images already at the extractor's input size."""
    if not len(pixels):
        return np.zeros((0, int(extractor.output_shape[-1])), np.float32)
    return np.concatenate(
        [
            np.asarray(extractor.predict_on_batch(pixels[i : i + batch_size].astype(np.float32)))
            for i in range(0, len(pixels), batch_size)
        ]
    )
