"""Fit what serving needs besides the weights, on a model's own splits, without retraining.

`python -m train.calibrate --data-dir DIR [--models a,b] [--models-dir models]` scores each
model's images from its split.csv; fits Platt scaling on validation and chooses the operating
threshold on the calibrated validation probabilities; fits the out-of-distribution gate on the
training split's features with its threshold from validation; then rewrites the card's serving
section and metrics.json. The weights file is never touched, so the card's sha256 still holds.
Training ends with the same two steps (`calibrate_and_evaluate`, `fit_gate`).
"""

from __future__ import annotations

import functools
import os
import sys
import tempfile
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import pandas as pd

from melanoma import diagnoses
from melanoma.calibration import PlattScaling, expected_calibration_error, fit_platt
from melanoma.card import CARD_FILE, OperatingPoints, ServingSpec
from melanoma.data import DataError, diagnoses_problem, load_pixels, split_images
from melanoma.diagnoses import ClassCalibration, fit_class_calibration
from melanoma.files import sha256_of, write_json
from melanoma.metrics import (
    evaluate_diagnoses,
    evaluate_predictions,
    flagged_by_diagnosis,
    reliability_evidence,
    threshold_for_sensitivity,
    threshold_rule,
)
from melanoma.ood import (
    FEATURES_SIZE,
    VALIDATION_PERCENTILE,
    FeatureGate,
    ensure_imagenet_features,
    features_of,
    load_features_model,
)
from melanoma.store import (
    HOLDOUT_PREFIX,
    METRICS_FILE,
    MODEL_FILE,
    InstalledModel,
    ModelUnavailableError,
    find_model,
    inspect_model,
    load_keras_model,
)
from train.tools import add_target_sensitivity_option, chosen_models, installed_models_parser, trained_data

# metrics.json's key for the study's own measures (its table compares raw sigmoid outputs), taken
# on the raw test outputs: every other measure there is on the calibrated ones.
UNCALIBRATED = "uncalibrated"
UNCALIBRATED_MEASURES = ("at_0.5", "mean_probability_by_label")


def calibrate_and_evaluate(
    labels: dict[str, np.ndarray], raw: dict[str, np.ndarray], target_sensitivity: float, seed: int = 0
):
    """Fit calibration on validation, threshold on calibrated validation, metrics on calibrated test.

    Returns (calibration, threshold, metrics); metrics also says what calibration changed on the
    test split (expected calibration error and Brier score before and after), and keeps the
    study's measures of the raw outputs (`UNCALIBRATED`), which calibration would otherwise hide.
    """
    calibration = fit_platt(labels["val"], raw["val"])
    calibrated = {split: calibration(probabilities) for split, probabilities in raw.items()}
    threshold = threshold_for_sensitivity(labels["val"], calibrated["val"], target_sensitivity)
    metrics = evaluate_predictions(labels["test"], calibrated["test"], threshold, seed=seed)
    before = evaluate_predictions(labels["test"], raw["test"], 0.5, seed=seed)
    metrics["calibration_effect"] = {
        "method": "Platt scaling on the validation split",
        "test_ece_before": expected_calibration_error(labels["test"], raw["test"]),
        "test_ece_after": expected_calibration_error(labels["test"], calibrated["test"]),
        "test_brier_before": before["brier_score"],
        "test_brier_after": metrics["brier_score"],
        "validation_ece_before": expected_calibration_error(labels["val"], raw["val"]),
        "validation_ece_after": expected_calibration_error(labels["val"], calibrated["val"]),
    }
    metrics["calibration_before"] = before["calibration"]
    metrics[UNCALIBRATED] = {key: before[key] for key in UNCALIBRATED_MEASURES}
    return calibration, threshold, metrics


@dataclass
class Calibrated:
    """What calibration fits for serving, and the test metrics it yields."""

    calibration: PlattScaling
    threshold: float
    metrics: dict
    class_calibration: ClassCalibration | None = None  # a diagnosis model's
    malignant_threshold: float | None = None  # a diagnosis model's

    def operating_points(self, target_sensitivity: float) -> OperatingPoints:
        """The card's operating thresholds, with the rules that chose them."""
        rule = threshold_rule(target_sensitivity)
        if self.malignant_threshold is None:
            return OperatingPoints(self.threshold, rule)
        malignant_rule = f"on P({' + '.join(diagnoses.MALIGNANT)}): {rule} for skin cancer"
        return OperatingPoints(self.threshold, rule, self.malignant_threshold, malignant_rule)

    def serving(self, input_size: int, tta: bool, ood: dict | None) -> ServingSpec:
        classes = diagnoses.CODES if self.class_calibration else ()
        return ServingSpec(input_size, tta, self.calibration, ood, classes, self.class_calibration)


def calibrate_outputs(
    labels: dict[str, np.ndarray],
    codes: dict[str, list[str]],
    raw: dict[str, np.ndarray],
    target_sensitivity: float,
    seed: int = 0,
) -> Calibrated:
    """Calibrate a network's raw validation and test outputs and measure the test split.

    A melanoma model's outputs are (n,) probabilities. A diagnosis model's are (n, 7): its P(MEL)
    gets the melanoma model's Platt step and threshold; its softmax a temperature and per-class
    biases, and P(skin cancer) a second threshold by the same sensitivity rule; the test metrics
    gain the multi-class ones. Where the test images' diagnoses are known (`codes`), the metrics
    say what fraction of each diagnosis the melanoma threshold flags.
    """
    is_diagnosis = next(iter(raw.values())).ndim == 2
    melanoma_raw = {split: diagnoses.melanoma_column(outputs) for split, outputs in raw.items()}
    calibration, threshold, metrics = calibrate_and_evaluate(labels, melanoma_raw, target_sensitivity, seed=seed)
    metrics["reliability_evidence"] = reliability_evidence(
        np.concatenate([labels["val"], labels["test"]]),
        calibration(np.concatenate([melanoma_raw["val"], melanoma_raw["test"]])),
    )
    if all(codes["test"]):
        metrics["flagged_by_diagnosis"] = flagged_by_diagnosis(
            codes["test"], calibration(melanoma_raw["test"]), threshold
        )
    if not is_diagnosis:
        return Calibrated(calibration, threshold, metrics)
    class_calibration = fit_class_calibration(codes["val"], raw["val"])
    probabilities = {
        split: diagnoses.with_melanoma_probability(
            class_calibration.logits(raw[split]), calibration(melanoma_raw[split])
        )
        for split in raw
    }
    malignant_val = np.isin(codes["val"], diagnoses.MALIGNANT).astype(int)
    malignant_threshold = threshold_for_sensitivity(
        malignant_val, diagnoses.malignant_probability(probabilities["val"]), target_sensitivity
    )
    metrics["diagnoses"] = evaluate_diagnoses(
        codes["test"], probabilities["test"], malignant_threshold, seed=seed, predicted=raw["test"].argmax(axis=1)
    )
    return Calibrated(calibration, threshold, metrics, class_calibration, malignant_threshold)


GATE_FILE = "ood.npz"
GATE_TRAINING_IMAGES = 3000  # plenty for 64 principal directions; keeps the fit to a minute on a CPU


def fit_gate(
    train_paths: list[str],
    val_paths: list[str],
    folder: Path,
    models_dir: Path,
    seed: int = 0,
    written_to: Path | None = None,
) -> dict:
    """Fit the gate in ImageNet features on (a sample of) the training images, threshold it on
    validation, save it beside the model (and the shared extractor in the models folder, once).

    Returns the card's serving.ood entry: the files (relative to the model folder), their sha256
    and what the gate was fitted on. `written_to` is where the gate file is written when not yet in
    the model folder (recalibration moves it there with the card).
    """
    features_path = ensure_imagenet_features(models_dir)
    rng = np.random.default_rng(seed)
    sample = sorted(rng.permutation(len(train_paths))[:GATE_TRAINING_IMAGES])
    try:
        gate = FeatureGate.fit(
            gate_features(features_path, tuple(train_paths[i] for i in sample)),
            gate_features(features_path, tuple(val_paths)),
        )
    except ValueError as error:  # too few images: nothing is written, so the model keeps its card and gate
        raise DataError([f"{folder}: {error}"]) from None
    return {
        "file": GATE_FILE,
        "sha256": gate.save(written_to or folder / GATE_FILE),
        "features": os.path.relpath(features_path, folder),
        "features_sha256": sha256_of(features_path),
        "method": f"Mahalanobis distance in the top {len(gate.variances)} principal directions of ImageNet "
        "EfficientNet-Lite0 features, plus the energy outside them",
        "fitted_on": f"{len(sample)} training images; threshold at the {VALIDATION_PERCENTILE:g}th percentile of "
        "the validation split",
    }


@functools.lru_cache(maxsize=2)
def gate_features(features_path: Path, paths: tuple[str, ...]) -> np.ndarray:
    """The extractor's features of these images (read-only), computed once per process: the models
    of one run share their split, so each of them would otherwise extract the same features again."""
    features = features_of(load_features_model(features_path), load_pixels(list(paths), FEATURES_SIZE))
    features.setflags(write=False)
    return features


def calibration_target(
    name: str, models_dir: str, holdout_source: str | None, keep_gate: bool = False
) -> InstalledModel:
    """The installed model `name` or, with `holdout_source`, its run held out from that source
    (`<name>/holdout-<source>/`, under the model's name). Its gate may be missing or stale, since
    calibration refits it, unless `keep_gate` (`gate_kept`); its card and weights must be there."""
    entry = find_model(name, models_dir)
    if holdout_source:
        held_out = entry.folder / f"{HOLDOUT_PREFIX}{holdout_source}"
        if not (held_out / MODEL_FILE).is_file():
            raise ModelUnavailableError(
                f"{name} has no held-out run for {holdout_source!r} ({held_out / MODEL_FILE} is missing): train it "
                f"with the model's own options and --holdout-source {holdout_source}."
            )
        entry = replace(inspect_model(held_out), name=name)
    if entry.card is None or not (entry.folder / MODEL_FILE).is_file():
        raise ModelUnavailableError(f"{name} cannot be calibrated: {entry.problem}")
    if keep_gate:
        gate_kept(entry)
    return entry


def gate_kept(entry: InstalledModel) -> dict:
    """The card's gate, which --keep-gate keeps. A card without one is refused: calibrating only
    validation and test leaves no training image to fit one on (a gate fitted on none refuses every image)."""
    if entry.serving.ood is None:
        raise ModelUnavailableError(
            f"{entry.name}: --keep-gate expected a fitted out-of-distribution gate to keep, but the card "
            f"({entry.folder}) has none (serving.ood is null). Leave out --keep-gate to fit one on the training split."
        )
    return entry.serving.ood


def calibrated_parts(keep_gate: bool) -> tuple[str, ...]:
    """The splits calibration scores: validation and test, and training where the gate is refitted."""
    return ("val", "test") if keep_gate else ("train", "val", "test")


def recalibrate_installed(
    entry: InstalledModel, table: pd.DataFrame, models_dir: str, target_sensitivity: float, keep_gate: bool = False
) -> dict:
    """Calibrate one installed model (`calibration_target`) in place on `table`, the images of its
    split.csv with their split (`split_images` of `calibrated_parts`); returns the calibration effect.

    With `keep_gate` the out-of-distribution gate stays as it is (its files and sha256 unchanged):
    for refreshing the metrics and evidence of a model whose gate is already fitted.
    """
    from melanoma.inference import Predictor

    kept_gate = gate_kept(entry) if keep_gate else None
    if not keep_gate:  # refitted below: an old or damaged gate must not stop that
        entry.card = replace(entry.card, serving=replace(entry.card.serving, ood=None))
    predictor = Predictor(entry, load_keras_model(entry))
    parts = {s: table[table.split == s] for s in ("train", "val", "test")}
    pixels = {s: load_pixels(list(parts[s].path), entry.input_size) for s in ("val", "test")}
    labels = {s: parts[s].label.to_numpy() for s in ("val", "test")}
    codes = {s: list(parts[s].dx) for s in ("val", "test")}
    raw = {s: predictor.raw_outputs(pixels[s]) for s in ("val", "test")}
    seed = entry.card.training.seed
    fitted = calibrate_outputs(labels, codes, raw, target_sensitivity, seed=seed)
    metrics = fitted.metrics
    for key in ("split", "validation_roc_auc"):
        if key in entry.metrics:
            metrics[key] = entry.metrics[key]
    # Every file is written beside the model first and moved in only once all are: a refusal or a
    # failure before then leaves the installed gate, metrics and card as they were, and matching.
    with tempfile.TemporaryDirectory(dir=entry.folder, prefix=".calibrating-") as prepared:
        prepared = Path(prepared)
        ood = kept_gate or fit_gate(
            list(parts["train"].path),
            list(parts["val"].path),
            entry.folder,
            Path(models_dir),
            seed,
            written_to=prepared / GATE_FILE,
        )
        tta = predictor.serving.test_time_augmentation
        card = replace(
            entry.card,
            serving=fitted.serving(entry.input_size, tta, ood),
            operating=fitted.operating_points(target_sensitivity),
        )
        if sha256_of(entry.folder / MODEL_FILE) != card.sha256:
            raise ModelUnavailableError(f"{entry.name}: {MODEL_FILE} changed while calibrating; nothing was written.")
        write_json(prepared / METRICS_FILE, metrics)
        card.save(prepared)
        moved = ([] if kept_gate else [GATE_FILE]) + [METRICS_FILE, CARD_FILE]  # the card, naming the gate, last
        for written in moved:
            os.replace(prepared / written, entry.folder / written)
    return metrics["calibration_effect"]


def main(argv: list[str] | None = None) -> int:
    parser = installed_models_parser("python -m train.calibrate", __doc__.splitlines()[0])
    add_target_sensitivity_option(parser)
    parser.add_argument(
        "--keep-gate", action="store_true", help="leave each model's out-of-distribution gate as it is (no refit)"
    )
    parser.add_argument(
        "--holdout-source",
        metavar="SOURCE",
        help="calibrate each model's run held out from SOURCE (<model>/holdout-SOURCE/) instead of the model",
    )
    args = parser.parse_args(argv)
    try:
        entries = [
            calibration_target(name, args.models_dir, args.holdout_source, args.keep_gate)
            for name in chosen_models(args)
        ]
        # Every model's split is checked against the data before the first is rewritten.
        tables = [
            split_images(data, entry.folder, calibrated_parts(args.keep_gate))
            for entry, data in zip(entries, trained_data(args, entries))
        ]
        for entry, table in zip(entries, tables):
            scored = table[table.split != "train"]
            needs = (
                f"{entry.name} is a diagnosis model: fitting its class calibration on validation and measuring it "
                "on test needs"
            )
            if entry.serving.is_diagnosis and (problem := diagnoses_problem(scored, needs)):
                raise DataError([problem])
        for entry, table in zip(entries, tables):
            effect = recalibrate_installed(entry, table, args.models_dir, args.target_sensitivity, args.keep_gate)
            print(
                f"{entry.name}: test ECE {effect['test_ece_before']:.3f} -> {effect['test_ece_after']:.3f}, "
                f"Brier {effect['test_brier_before']:.3f} -> {effect['test_brier_after']:.3f}"
            )
    except (DataError, ModelUnavailableError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
