"""Training on several devices of one machine (MirroredStrategy), as on a multi-GPU box: here two
logical CPU devices stand in for the GPUs, in a fresh process (devices are fixed at TensorFlow's start)."""

import json
import subprocess
import sys

import pytest

from tests.conftest import ROOT
from tests.synthetic import make_dataset

SCRIPT = """
import sys
import tensorflow as tf

cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
import train.run as run

run.distribution_strategy = lambda: tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
sys.exit(run.main(sys.argv[1:]))
"""


@pytest.mark.parametrize(
    "name, weights, recipe", [("scratch_cnn", "none", "cpu"), ("efficientnet_lite0", "imagenet", "cpu_transfer")]
)
def test_two_replicas_train_every_phase_and_write_a_servable_model(tmp_path, name, weights, recipe):
    data = make_dataset(tmp_path / "data", "generic", n=40)
    result = subprocess.run(
        [
            sys.executable,
            "-c",
            SCRIPT,
            "--data-dir",
            str(data),
            "--output-dir",
            str(tmp_path / "models"),
            "--models",
            name,
            "--weights",
            weights,
            "--recipe",
            recipe,
            "--epochs",
            "3",
            "--image-size",
            "64",
            "--batch-size",
            "8",
            "--epoch-images",
            "32",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    card = json.loads((tmp_path / "models" / name / "card.json").read_text())
    assert card["replicas"] == 2 and len(card["phases"]) == 3 and 0 < card["threshold"] < 1
