"""Where a run writes a model while it trains, so that an installed model is only ever replaced whole.

A run writes into a hidden sibling of the model's folder, `.NAME.training/`, and swaps it in for
the folder once every artefact is written. Until then the installed model, its card, its split and
its history stay as they were: a run that is interrupted or fails leaves them untouched (the app
keeps serving them, and `train.calibrate` keeps reading their split), and `--resume` continues from
the staging folder's checkpoint.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from melanoma.store import HOLDOUT_PREFIX
from train.callbacks import read_state

STAGING_SUFFIX = ".training"
REPLACED_SUFFIX = ".replaced"


def staging_folder(folder: Path) -> Path:
    """The hidden folder a run for `folder` writes into (model listings skip hidden folders)."""
    return folder.with_name(f".{folder.name}{STAGING_SUFFIX}")


def resumable(folder: Path) -> Path | None:
    """The folder whose checkpoint --resume continues: the interrupted run's staging folder, else a
    checkpoint left in the model's own folder (a finished run, which --resume extends, or a run
    interrupted before runs were staged); None when neither has one."""
    for candidate in (staging_folder(folder), folder):
        if read_state(candidate) is not None:
            return candidate
    return None


def start_staging(folder: Path, resume: bool) -> Path:
    """The staging folder this run writes into: the interrupted run's when resuming, a copy of the
    model's folder when resuming from a checkpoint kept there, else an empty one."""
    staging = staging_folder(folder)
    origin = resumable(folder) if resume else None
    if origin is None and staging.exists():
        shutil.rmtree(staging)  # an abandoned run's files must not mix with this run's
    elif origin == folder and not staging.exists():
        shutil.copytree(folder, staging, ignore=lambda _, names: [n for n in names if _travels_with_folder(n)])
    staging.mkdir(parents=True, exist_ok=True)
    return staging


def install(staging: Path, folder: Path) -> None:
    """Swap the complete run in for the model's folder. What lives beside the model rather than being
    part of it (its held-out-source runs, finished or staged) moves into the new folder."""
    replaced = folder.with_name(f".{folder.name}{REPLACED_SUFFIX}")
    if replaced.exists():
        shutil.rmtree(replaced)  # left by a swap that was interrupted after it had installed its run
    if folder.exists():
        for entry in folder.iterdir():
            if _travels_with_folder(entry.name) and not (staging / entry.name).exists():
                entry.rename(staging / entry.name)
        folder.rename(replaced)
    staging.rename(folder)
    shutil.rmtree(replaced, ignore_errors=True)


def _travels_with_folder(name: str) -> bool:
    """A held-out-source run inside a model's folder, or its staging folder."""
    return name.startswith(HOLDOUT_PREFIX) or name.startswith(f".{HOLDOUT_PREFIX}")
