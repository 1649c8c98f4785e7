"""Scoring images with a loaded model: batched, with optional flip test-time augmentation."""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np

from melanoma import diagnoses
from melanoma.card import ServingSpec
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
    """The network's outputs for uint8 images already at the model's input size: shape (n,) for a
    melanoma model, (n, classes) for a diagnosis model.

    The flips go through the model in the same batches as the images, and Keras' compiled
    predict function is reused across calls (eager calls of a deep model cost seconds on a CPU).
    """
    outputs_per_image = int(model.output_shape[-1])
    if len(pixels) == 0:
        return np.zeros((0,) if outputs_per_image == 1 else (0, outputs_per_image), np.float32)
    views = _flips(pixels) if tta else [pixels]
    stacked = np.concatenate(views).astype(np.float32)
    outputs = [
        np.asarray(model.predict_on_batch(stacked[i : i + batch_size])) for i in range(0, len(stacked), batch_size)
    ]
    mean = np.concatenate(outputs).reshape(len(views), len(pixels), outputs_per_image).mean(axis=0)
    return mean[:, 0] if outputs_per_image == 1 else mean


@dataclass(frozen=True)
class Scores:
    """Calibrated readings of a batch of images: the melanoma probability (n,), and for a diagnosis
    model the seven diagnoses' probabilities (n, 7) whose MEL column equals it."""

    melanoma: np.ndarray
    diagnoses: np.ndarray | None = None
    # The diagnoses' probabilities under equal class priors (n, 7): the network's own softmax, trained
    # with balanced classes. A balanced metric (ISIC 2018 Task 3's) rewards their argmax; the calibrated
    # `diagnoses`, with the training data's priors, are what a clinician reads.
    equal_prior: np.ndarray | None = None

    @property
    def malignant(self) -> np.ndarray | None:
        """P(skin cancer) per image, for a diagnosis model."""
        return None if self.diagnoses is None else diagnoses.malignant_probability(self.diagnoses)

    @property
    def predicted(self) -> np.ndarray | None:
        """The predicted diagnosis index per image, under equal class priors."""
        return None if self.equal_prior is None else self.equal_prior.argmax(axis=1)


def calibrated_scores(serving: ServingSpec, raw: np.ndarray) -> Scores:
    """Calibrated readings from a network's raw outputs, by its card's serving section alone (so that
    outputs recorded without their weights can still be read as the model would read them)."""
    melanoma = serving.calibration(diagnoses.melanoma_column(raw))
    if not serving.is_diagnosis:
        return Scores(melanoma)
    calibrated = diagnoses.with_melanoma_probability(serving.class_calibration.logits(raw), melanoma)
    return Scores(melanoma, calibrated, np.asarray(raw))


def class_output(network, codes: tuple[str, ...], name: str):
    """`network`'s softmax read as one probability, the sum over `codes` (a Keras model with
    one output, which the explanations take like a melanoma model's sigmoid)."""
    import keras

    from melanoma.models.layers import ClassSum

    summed = ClassSum(tuple(diagnoses.index_of(code) for code in codes), name=name)(network.output)
    return keras.Model(network.inputs, summed, name=f"{network.name}_{name}")


class Predictor:
    """An installed model ready to score images the way its card says: input size, TTA, calibration.

    `probabilities` are calibrated (the number a clinician reads and the threshold applies to).
    `occlusion` maps drops of those calibrated numbers, in the units the page and the CLI show;
    Grad-CAM, which is relative, works on `model`, the network's own melanoma output (for a
    diagnosis model its softmax's P(MEL)), and on `malignant_model`, a diagnosis model's raw
    softmax sum P(MEL) + P(BCC) + P(AKIEC).
    """

    def __init__(self, entry, model):
        from melanoma.store import ModelUnavailableError

        self.entry = entry
        self.network = model
        self.serving = entry.serving
        outputs, expected = int(model.output_shape[-1]), len(self.serving.classes) or 1
        if outputs != expected:
            entry.problem = (
                f"the network has {outputs} outputs but card.json's serving section names "
                f"{len(self.serving.classes)} classes (a diagnosis model's card lists its classes, "
                f"{diagnoses.ALLOWED_TEXT}; a melanoma model's none). Retrain it, or restore its card from git."
            )
            raise ModelUnavailableError(f"Model {entry.name} is unavailable: {entry.problem}")
        self.model = class_output(model, (diagnoses.MELANOMA,), "melanoma") if self.serving.is_diagnosis else model
        self.malignant_model = (
            class_output(model, diagnoses.MALIGNANT, "malignant") if self.serving.is_diagnosis else None
        )
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

    @property
    def is_diagnosis(self) -> bool:
        return self.serving.is_diagnosis

    @property
    def gradcam_layer(self) -> str | None:
        """The registry's Grad-CAM layer for this model's architecture, the one the tests check;
        None for an architecture the registry does not know (Grad-CAM then takes the last feature map)."""
        from melanoma.models.architectures import UnknownModelError, get_architecture

        try:
            return get_architecture(self.entry.architecture).gradcam_layer
        except UnknownModelError:
            return None

    @functools.cached_property
    def calibrated_model(self):
        """`model` with the card's Platt scaling after it: the calibrated melanoma probability as a
        Keras model (one image at a time, without test-time augmentation), for explanations."""
        return self._with_platt_output(log_odds=False)

    @functools.cached_property
    def calibrated_log_odds_model(self):
        """`calibrated_model` stopped before its sigmoid: the calibrated melanoma log-odds."""
        return self._with_platt_output(log_odds=True)

    def _with_platt_output(self, log_odds: bool):
        import keras

        from melanoma.models.layers import PlattOutput

        calibration = self.serving.calibration
        name = "calibrated_log_odds" if log_odds else "calibrated"
        output = PlattOutput(calibration.slope, calibration.intercept, log_odds, name=name)(self.model.output)
        return keras.Model(self.model.inputs, output, name=f"{self.model.name}_{name}")

    def occlusion(
        self, pixels: np.ndarray, patch_size: int = 20, stride: int | None = None, malignant: bool = False
    ) -> np.ndarray:
        """Occlusion sensitivity of the calibrated probability this model's reading shows: the
        melanoma one, or with `malignant` a diagnosis model's P(skin cancer), for an RGB image of
        any size (seen at the input size, without test-time augmentation).

        Each patch's drop is one of the number the clinician reads. The raw softmax sum is not: the
        class calibration and the melanoma column's Platt scaling reorder it, and on a real lesion
        half of its patches had the calibrated drop's opposite sign.
        """
        from melanoma.cases import model_view
        from melanoma.explain.occlusion import occlusion_sensitivity

        view = model_view(self, pixels)
        if not malignant:
            return occlusion_sensitivity(self.calibrated_model, view, patch_size, stride)
        self._check_skin_cancer_map()
        return occlusion_sensitivity(
            self.network, view, patch_size, stride, read=lambda raw: calibrated_scores(self.serving, raw).malignant
        )

    def grad_cam(self, pixels: np.ndarray, malignant: bool = False) -> np.ndarray:
        """Grad-CAM of the network's melanoma output (or, with `malignant`, its raw skin-cancer sum)
        for an RGB image of any size: relative, so Platt scaling, a monotone map of the melanoma
        log-odds, leaves it as it is."""
        from melanoma.cases import model_view
        from melanoma.explain.gradcam import grad_cam

        if malignant:
            self._check_skin_cancer_map()
        network = self.malignant_model if malignant else self.model
        return grad_cam(network, model_view(self, pixels), self.gradcam_layer)

    def _check_skin_cancer_map(self) -> None:
        if not self.is_diagnosis:
            raise ValueError(
                f"A skin-cancer map needs a diagnosis model; {self.name} reads melanoma only. "
                "Ask for its melanoma map, or choose a diagnosis model."
            )

    def raw_outputs(self, pixels: np.ndarray, batch_size: int = 32) -> np.ndarray:
        """The network's outputs (with TTA) for images already at its input size: (n,) melanoma
        probabilities, or (n, 7) diagnosis probabilities; before calibration."""
        return predict_pixels(self.network, pixels, batch_size, self.serving.test_time_augmentation)

    def raw_probabilities(self, pixels: np.ndarray, batch_size: int = 32) -> np.ndarray:
        """The network's melanoma output (with TTA) for images already at its input size, before calibration."""
        return diagnoses.melanoma_column(self.raw_outputs(pixels, batch_size))

    def calibrate(self, raw: np.ndarray) -> Scores:
        """Calibrated readings from the network's raw outputs."""
        return calibrated_scores(self.serving, raw)

    def scores(self, images: list[np.ndarray], batch_size: int = 32) -> Scores:
        """Calibrated readings for RGB images of any size."""
        if not len(images):
            return self.calibrate(np.zeros((0, len(self.serving.classes)) if self.is_diagnosis else (0,)))
        return self.calibrate(self.raw_outputs(self._views(images), batch_size))

    def probabilities(self, images: list[np.ndarray], batch_size: int = 32) -> np.ndarray:
        """Calibrated melanoma probabilities for RGB images of any size."""
        return self.scores(images, batch_size).melanoma

    def read(self, images: list[np.ndarray]) -> "Reading":
        """Calibrated scores and gate verdicts for RGB images of any size, resized once."""
        return read_together([self], images)[0]

    def trace_graphs(self) -> None:
        """Build the prediction graphs (the network's and the gate extractor's) for every batch size
        now, before a clinician's images queue behind them: Keras traces its predict function at
        the first batch shape and again, with the batch dimension left open, at the second. On a
        loaded server that second trace, met by the first batch of several images, held every
        queued image: p95 34.7 s against 9.8 s once traced at load (benchmarks/clinic_load.py,
        sessions uploading as each signed in). It costs the model's loading one more small read."""
        size = self.serving.input_size
        blank = np.zeros((size, size, 3), np.uint8)
        self.read([blank])
        self.read([blank, blank])

    def gate(
        self, images: list[np.ndarray], views: np.ndarray | None = None, features: np.ndarray | None = None
    ) -> list[GateResult]:
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
        return [
            GateResult(
                bool(not problem and score <= 1.0),
                float(score),
                problem or ("" if score <= 1.0 else "it is unlike the dermoscopic images the model was trained on"),
            )
            for problem, score in zip(problems, scores)
        ]

    def gate_features(self, images: list[np.ndarray]) -> np.ndarray | None:
        """The images' features in the gate's shared ImageNet extractor; None for a model without a gate."""
        if self.feature_gate is None:
            return None
        gate_views = np.stack([to_model_input(image, int(self.features.input_shape[1])) for image in images])
        return features_of(self.features, gate_views)

    def _views(self, images) -> np.ndarray:
        size = self.serving.input_size
        return np.stack([to_model_input(image, size) for image in images])


@dataclass(frozen=True)
class Reading:
    """A batch of images read by one model: calibrated scores and the gate's verdict per image."""

    scores: Scores
    gates: list[GateResult]


def read_together(predictors: list[Predictor], images: list[np.ndarray], map_images=map) -> list[Reading]:
    """Each predictor's reading of the same images, with each input size's resize done once for the
    models that share it and the gate's features once for the extractor they share: what
    `Predictor.read` does for each, without repeating the shared work. `map_images` resizes (a
    thread pool's `map` spreads it over cores: PIL releases the GIL)."""
    views: dict[int, np.ndarray] = {}
    features: dict[int, np.ndarray | None] = {}  # id(extractor) -> the images' features
    readings = []
    for predictor in predictors:
        size = predictor.serving.input_size
        if size not in views:
            views[size] = np.stack(list(map_images(to_model_input, images, [size] * len(images))))
        if id(predictor.features) not in features:
            features[id(predictor.features)] = predictor.gate_features(images)
        readings.append(
            Reading(
                predictor.calibrate(predictor.raw_outputs(views[size])),
                predictor.gate(images, views[size], features[id(predictor.features)]),
            )
        )
    return readings


def load_predictor(name: str, models_dir=None):
    """Find an installed model by name (or the combined reading, `combined`), verify and load it.

    Raises ModelUnavailableError (or, for the combined reading, CombinedUnavailableError naming the
    member at fault).
    """
    from melanoma.combined import COMBINED_NAME, CombinedPredictor
    from melanoma.store import find_model, load_keras_model, resolve_models_dir

    if name == COMBINED_NAME:
        return CombinedPredictor.load(resolve_models_dir(models_dir))
    entry = find_model(name, models_dir)
    return Predictor(entry, load_keras_model(entry))
