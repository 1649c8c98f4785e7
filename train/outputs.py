"""Networks' raw outputs kept between runs: a cache folder for `train.combine`'s reruns, and the
outputs of held-out-source runs recorded beside their cards, tracked in git because their weights
are not, so the combination at that source can be measured again without them."""

from __future__ import annotations

import hashlib
import json
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from melanoma.card import ServingSpec
from melanoma.files import atomic_write
from melanoma.inference import Scores, calibrated_scores
from melanoma.store import InstalledModel, inspect_model

RECORDED_OUTPUTS = "outputs"  # a held-out run's recorded raw outputs, beside its card


class OutputCache:
    """Each model's raw network outputs on the scored images, kept in a folder between runs, so that
    a rerun after one more training scores only the new model. An entry is keyed by the weights'
    sha256, the input size, the test-time augmentation and the image ids: recalibrating a model
    reuses it (calibration is applied after), new weights or other images miss it."""

    def __init__(self, folder: str | Path | None):
        self.folder = Path(folder) if folder else None

    @staticmethod
    def key(predictor, image_ids: list[str]) -> str:
        serving = predictor.serving
        fingerprint = [predictor.entry.card.sha256, serving.input_size, serving.test_time_augmentation, image_ids]
        return hashlib.sha256(json.dumps(fingerprint).encode()).hexdigest()[:32]

    def path(self, predictor, image_ids: list[str]) -> Path | None:
        """Where the entry lives; None when nothing is kept."""
        return None if self.folder is None else self.folder / f"{self.key(predictor, image_ids)}.npy"

    def get(self, predictor, image_ids: list[str]) -> np.ndarray | None:
        """The cached outputs, or None when there are none (or the file is damaged: it is then rescored)."""
        if (path := self.path(predictor, image_ids)) is None or not path.is_file():
            return None
        try:
            raw = np.load(path)
        except (OSError, ValueError):
            return None
        return raw if len(raw) == len(image_ids) else None

    def keep(self, predictor, image_ids: list[str], raw: np.ndarray) -> None:
        if (path := self.path(predictor, image_ids)) is not None:
            atomic_write(path, lambda temporary: np.save(temporary, raw))


class RecordedOutputs(OutputCache):
    """A held-out run's raw outputs on its own validation and test images, recorded in its folder
    (`holdout-<source>/outputs/`, tracked in git) by train.run as the run finishes and by
    train.combine whenever the run's weights score them. Its weights stay
    out of git, so a fresh clone measures the combination at that source from these: the card's
    calibration reads them as the model would. Entries start with the weights' sha256, so retrained
    weights miss them, and recording for new weights removes the old weights' entries."""

    def __init__(self):
        super().__init__(None)

    @staticmethod
    def weights_prefix(predictor) -> str:
        """What every entry for the predictor's weights starts with."""
        return f"{predictor.entry.card.sha256[:16]}-"

    def path(self, predictor, image_ids: list[str]) -> Path:
        name = f"{self.weights_prefix(predictor)}{self.key(predictor, image_ids)}.npy"
        return predictor.entry.folder / RECORDED_OUTPUTS / name

    def covers(self, predictor, image_ids: dict[str, list[str]]) -> bool:
        """Whether outputs for these weights are recorded for every split's images (none for an empty split)."""
        return all(ids and self.get(predictor, ids) is not None for ids in image_ids.values())

    def keep(self, predictor, image_ids: list[str], raw: np.ndarray) -> None:
        """Record the outputs, first removing other weights' entries; a folder that cannot be written
        leaves them unrecorded (said on stderr) rather than losing the whole combine run."""
        path, prefix = self.path(predictor, image_ids), self.weights_prefix(predictor)
        try:
            path.parent.mkdir(exist_ok=True)
            for stale in path.parent.glob("*.npy"):
                if not stale.name.startswith(prefix):
                    stale.unlink()
            super().keep(predictor, image_ids, raw)
        except OSError as error:
            print(
                f"warning: {predictor.name}'s held-out outputs were not recorded in {path.parent}: {error}",
                file=sys.stderr,
            )


@dataclass
class RecordedRun:
    """A held-out run read from its recorded outputs (RecordedOutputs), with or without its weights:
    through its card's calibration, as the model would read them; it cannot score new images."""

    entry: InstalledModel

    @property
    def name(self) -> str:
        return self.entry.name

    @property
    def serving(self) -> ServingSpec:
        return self.entry.serving

    def calibrate(self, raw: np.ndarray) -> Scores:
        return calibrated_scores(self.serving, raw)

    def raw_outputs(self, pixels: np.ndarray) -> np.ndarray:
        raise RuntimeError(
            f"internal error: {self.entry.folder} was read from its recorded outputs, which do not cover these "
            "images (held_out_readings checks that they do before scoring); please report it."
        )


def record_trained_outputs(folder: Path, table: pd.DataFrame, raw: dict[str, np.ndarray]) -> None:
    """A held-out run's outputs as `train.run` computed them on its validation and test images (`raw`
    by split, in `table`'s order), recorded as `train.combine` would record them: a run trained
    today can be measured in a combination after its weights are gone."""
    run, recorded = RecordedRun(inspect_model(folder)), RecordedOutputs()
    for split, outputs in raw.items():
        ids = table.image_id[table.split == split].to_numpy()
        order = np.argsort(ids, kind="stable")  # train.combine reads them in image-id order
        recorded.keep(run, [str(i) for i in ids[order]], np.asarray(outputs)[order])
