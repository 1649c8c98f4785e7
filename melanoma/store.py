"""The installed models: what is in the models folder, whether each is usable, and loading.

A model folder holds model.keras, card.json, metrics.json and history.csv. A folder that is
broken (missing weights, a malformed card) is listed as unavailable with the reason; altered
weights are found when the model loads (listing reads no weights, so it stays quick), which then
marks it unavailable with the reason. Every other model keeps working.
"""

from __future__ import annotations

import argparse
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol, TypeVar

import pandas as pd

from melanoma.card import CARD_FILE, ModelCard, ServingSpec, proportion, read_card
from melanoma.files import read_json_object, sha256_of

SHIPPED_MODELS_DIR = Path(__file__).resolve().parent.parent / "models"
MODEL_FILE = "model.keras"
METRICS_FILE = "metrics.json"
HISTORY_FILE = "history.csv"
HOLDOUT_PREFIX = "holdout-"  # <model>/holdout-<source>/: a run that never saw that source (train.run --holdout-source)


class ModelUnavailableError(RuntimeError):
    """A model that cannot be served; the message says why and how to fix it."""


class HistoryUnavailable(ValueError):
    """A model folder without a readable training history; the message says why."""


def measure_command(name: str) -> str:
    """The command that writes a model's own metrics.json: train.calibrate, which measures what the app
    shows (train.evaluate refuses to write into a model's folder, since it does not)."""
    return f"python -m train.calibrate --models {name} --keep-gate --data-dir DIR"


@dataclass
class InstalledModel:
    """One model folder, with its card and stored metrics; `problem` is set when it cannot be used."""

    name: str
    folder: Path
    card: ModelCard | None = None  # None when card.json is missing or malformed (`problem` says which)
    metrics: dict = field(default_factory=dict)
    holdout_metrics: dict[str, dict] = field(default_factory=dict)  # source -> metrics of a source-held-out run
    problem: str | None = None
    metrics_problem: str | None = None  # why it has no test metrics (metrics.json missing or unreadable), and the fix

    @property
    def available(self) -> bool:
        return self.problem is None

    @property
    def serving(self) -> ServingSpec:
        return self.card.serving

    @property
    def input_size(self) -> int:
        return self.serving.input_size

    @property
    def threshold(self) -> float:
        return self.card.operating.threshold

    @property
    def architecture(self) -> str:
        """The registry name of the model's architecture."""
        return self.card.network.architecture_name

    @property
    def malignant_threshold(self) -> float | None:
        """A diagnosis model's operating threshold on P(skin cancer); None for a melanoma model."""
        return self.card.operating.malignant_threshold

    @property
    def test_auc(self) -> float | None:
        return self.metrics.get("roc_auc")

    def history(self) -> pd.DataFrame:
        """The training history, a row per epoch; HistoryUnavailable saying why there is none (no
        history.csv, or one that is no table of epochs), for a page to say and go on."""
        path = self.folder / HISTORY_FILE
        if not path.is_file():
            raise HistoryUnavailable(f"no {HISTORY_FILE}")
        try:
            history = pd.read_csv(path)
        except (OSError, ValueError) as error:  # pandas' EmptyDataError and ParserError are ValueErrors
            raise HistoryUnavailable(f"{HISTORY_FILE} is unreadable ({error})") from None
        if "epoch" not in history or history.empty:
            raise HistoryUnavailable(f"{HISTORY_FILE} holds no epochs (expected an epoch column and a row per epoch)")
        return history


def inspect_model(folder: Path) -> InstalledModel:
    """Read one model folder without loading the weights; never raises."""
    entry = InstalledModel(name=folder.name, folder=folder)
    try:
        entry.card = read_card(folder)
    except FileNotFoundError:
        entry.problem = f"{CARD_FILE} is missing; retrain with python -m train.run --models {folder.name}."
        return entry
    except (OSError, ValueError, TypeError, KeyError) as error:  # json's decode error is a ValueError
        reason = f"missing key {error}" if isinstance(error, KeyError) else error
        entry.problem = f"{CARD_FILE} is malformed ({reason}); retrain or restore it from git."
        return entry
    if not (folder / MODEL_FILE).is_file():
        entry.problem = f"{MODEL_FILE} is missing; retrain with python -m train.run --models {folder.name}."
        return entry
    try:
        entry.metrics = _read_metrics(folder / METRICS_FILE)
    except FileNotFoundError:
        entry.metrics_problem = f"{METRICS_FILE} is missing"
    except (OSError, ValueError) as error:
        entry.metrics_problem = f"{METRICS_FILE} is unreadable ({error})"
    if not entry.metrics:  # no test metrics shown (AUC "-"); the model itself still serves
        reason = entry.metrics_problem or f"{METRICS_FILE} holds no measurements"
        entry.metrics_problem = f"{reason}; measure the model with {measure_command(folder.name)}."
    for holdout in sorted(folder.glob(f"{HOLDOUT_PREFIX}*/{METRICS_FILE}")):
        try:
            entry.holdout_metrics[holdout.parent.name[len(HOLDOUT_PREFIX) :]] = _read_metrics(holdout)
        except (OSError, ValueError):
            continue  # a broken diagnostic leaves the model itself usable
    return entry


def _read_metrics(path: Path) -> dict:
    """A metrics.json; ValueError when it is no object or its test ROC AUC is no number from 0 to 1,
    so every listing and ranking that uses the AUC gets a number or None."""
    metrics = read_json_object(path)
    if metrics.get("roc_auc") is not None:
        proportion(metrics["roc_auc"], f"{path}'s roc_auc")
    return metrics


def resolve_models_dir(chosen: str | Path | None = None) -> Path:
    """The models folder: `chosen`, else $MELANOMA_MODELS_DIR, else the shipped models/.

    The one place it is resolved, at call time, so the app, the CLI and the tests agree even when
    the variable is set after import.
    """
    return Path(chosen or os.environ.get("MELANOMA_MODELS_DIR") or SHIPPED_MODELS_DIR).resolve()


def add_models_dir_option(parser: argparse.ArgumentParser) -> None:
    """`--models-dir`, the same for every command-line tool and benchmark, defaulting as `resolve_models_dir`."""
    parser.add_argument(
        "--models-dir",
        default=str(resolve_models_dir()),
        help="folder of installed models (default: $MELANOMA_MODELS_DIR, else the project's models/)",
    )


def list_models(models_dir: str | Path | None = None) -> list[InstalledModel]:
    """Every model folder (a folder with a card or weights), sorted by name; hidden ones are a
    training run's work in progress (train.staging), not installed models."""
    models_dir = resolve_models_dir(models_dir)
    if not models_dir.is_dir():
        return []
    folders = [
        p
        for p in sorted(models_dir.iterdir())
        if p.is_dir() and not p.name.startswith(".") and ((p / CARD_FILE).exists() or (p / MODEL_FILE).exists())
    ]
    return [inspect_model(folder) for folder in folders]


class HasTestAuc(Protocol):
    @property
    def test_auc(self) -> float | None: ...


Ranked = TypeVar("Ranked", bound=HasTestAuc)


def best_first(models: list[Ranked]) -> list[Ranked]:
    """Models (or Compare's rows) ordered by test AUC, best first: the app's default choice is the first."""
    return sorted(models, key=lambda entry: -(entry.test_auc or 0.0))


def find_model(name: str, models_dir: str | Path | None = None) -> InstalledModel:
    """The installed model called `name`; an unknown name lists the installed ones.

    Only folders directly under the models folder can be chosen, so a name can never point a
    loader at an arbitrary file elsewhere on disk.
    """
    models = {entry.name: entry for entry in list_models(models_dir)}
    if name not in models:
        installed = ", ".join(models) or "none (train one with python -m train.run)"
        raise ModelUnavailableError(
            f"No installed model named {name!r} in {models_dir}. Installed models: {installed}."
        )
    return models[name]


def verify_file(entry: InstalledModel, filename: str, expected: str) -> Path:
    """The path of one of the model's files, after checking its sha256 against the card."""
    path = entry.folder / filename
    actual = sha256_of(path) if path.is_file() else "missing"
    if actual != expected:
        entry.problem = (
            f"{filename} does not match the sha256 in {CARD_FILE} (expected {expected[:12]}…, found {actual[:12]}…): "
            "the file was altered, truncated or removed. Restore it from git or retrain."
        )
        raise ModelUnavailableError(f"Model {entry.name} is unavailable: {entry.problem}")
    return path


def load_keras_model(entry: InstalledModel):
    """Load the weights after checking their sha256 (and the gate's) against the card, in Keras' safe mode."""
    if not entry.available:
        raise ModelUnavailableError(f"Model {entry.name} is unavailable: {entry.problem}")
    ood = entry.serving.ood
    if ood:
        verify_file(entry, ood["file"], ood["sha256"])
        verify_file(entry, ood["features"], ood["features_sha256"])
    path = verify_file(entry, MODEL_FILE, entry.card.sha256)
    from melanoma.models.saved import load_network

    try:
        return load_network(path)
    except Exception as error:  # a corrupt archive surfaces as many different exception types
        entry.problem = (
            f"{MODEL_FILE} could not be loaded ({type(error).__name__}: {error}). Restore it from git or retrain."
        )
        raise ModelUnavailableError(f"Model {entry.name} is unavailable: {entry.problem}") from error
