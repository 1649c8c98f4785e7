"""Per-epoch bookkeeping that makes a run resumable and its history complete."""

from __future__ import annotations

import json
import time
from pathlib import Path

import keras
import pandas as pd

from melanoma.data import DataError
from melanoma.files import atomic_write, write_json
from melanoma.store import HISTORY_FILE

CHECKPOINT_DIR = "checkpoint"  # beside the model, out of git: what --resume continues from
BEST_WEIGHTS = "best.weights.h5"  # the best validation AUC so far, which the run ships
LAST_MODEL = "last.keras"  # the last completed epoch, with the optimizer
STATE_FILE = "state.json"  # epochs done, the best validation AUC and the run's lineage
HISTORY_COLUMNS = [
    "epoch",
    "phase",
    "learning_rate",
    "trainable_layers",  # backbone layers unfrozen from the top (set_trainable), not all of them with weights
    "loss",
    "accuracy",
    "auc",
    "val_loss",
    "val_accuracy",
    "val_auc",
    "seconds",
]


class EpochRecorder(keras.callbacks.Callback):
    """After every epoch: append to history.csv, keep the best-validation-AUC weights, checkpoint.

    All files are replaced atomically, so a run killed at any moment resumes from its last
    complete epoch and never leaves a half-written file behind.

    Why not Keras' own: CSVLogger appends in place (a kill mid-write leaves a torn row) and knows
    nothing of the phase, learning rate and trainable layers that each row here records;
    BackupAndRestore resumes within one `fit` call, but each unfreezing phase is its own `fit`
    with its own trainable set and optimizer, and resuming must also restore the best weights
    and the best validation AUC so far. ModelCheckpoint alone covers neither.
    """

    def __init__(
        self,
        folder: Path,
        history: list[dict],
        best_val_auc: float,
        phase: int,
        trainable_layers: int,
        learning_rate: float,
        lineage: dict,
    ):
        super().__init__()
        self.folder = folder
        self.lineage = lineage
        self.history = history
        self.best_val_auc = best_val_auc
        self.phase, self.trainable_layers, self.learning_rate = phase, trainable_layers, learning_rate
        self.started = time.monotonic()

    def on_epoch_begin(self, epoch, logs=None):
        self.started = time.monotonic()

    def on_epoch_end(self, epoch, logs=None):
        logs = logs or {}
        row = {
            "epoch": epoch + 1,
            "phase": self.phase,
            "learning_rate": self.learning_rate,
            "trainable_layers": self.trainable_layers,
            "seconds": round(time.monotonic() - self.started, 1),
        }
        row.update({key: float(logs[key]) for key in HISTORY_COLUMNS if key in logs})
        self.history.append(row)
        atomic_write(
            self.folder / HISTORY_FILE,
            lambda p: pd.DataFrame(self.history, columns=HISTORY_COLUMNS).to_csv(p, index=False),
        )
        val_auc = float(logs.get("val_auc", float("-inf")))
        checkpoint = self.folder / CHECKPOINT_DIR
        if val_auc > self.best_val_auc:
            self.best_val_auc = val_auc
            atomic_write(checkpoint / BEST_WEIGHTS, self.model.save_weights)
        atomic_write(checkpoint / LAST_MODEL, self.model.save)
        state = {"epochs_done": epoch + 1, "best_val_auc": self.best_val_auc, "lineage": self.lineage}
        write_json(checkpoint / STATE_FILE, state)


def read_state(folder: Path) -> dict | None:
    """The interrupted run's progress ({"epochs_done", "best_val_auc"} and, since checkpoints record it,
    "lineage": TrainConfig.lineage); None when there is none.
    Raises DataError for a damaged one: resuming from it would fail, or continue the wrong run."""
    path = folder / CHECKPOINT_DIR / STATE_FILE
    if not path.is_file():
        return None
    try:
        state = json.loads(path.read_text(encoding="utf-8"))
        if not (isinstance(state["epochs_done"], int) and isinstance(state["best_val_auc"], (int, float))):
            raise ValueError(f"epochs_done and best_val_auc must be numbers; found {state}")
        if not isinstance(state.get("lineage", {}), dict):
            raise ValueError(f"lineage must be an object; found {state['lineage']!r:.80}")
    except (OSError, ValueError, KeyError, TypeError) as error:
        what = f"{STATE_FILE} is unreadable ({type(error).__name__}: {error})"
        raise DataError([damaged_checkpoint(folder, what)]) from error
    return state


def damaged_checkpoint(folder: Path, what: str) -> str:
    """What to say of a checkpoint that cannot be resumed from, and what to do."""
    return (
        f"{folder / CHECKPOINT_DIR}: {what}. Remove that folder and leave out --resume to train from scratch, or "
        "restore the checkpoint."
    )
