"""`python -m melanoma models|predict` and `python -m train.evaluate` on the trained test models."""

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from melanoma.__main__ import main
from melanoma.arguments import output_problem
from melanoma.explain.render import signed_scale
from melanoma.images import read_image
from melanoma.inference import load_predictor
from tests.conftest import DIAGNOSIS_MODEL
from tests.test_installed_tools import folder_without_the_split
from train import evaluate


def test_models_lists_installed_models_with_threshold_and_auc(trained_models, capsys):
    _, output_dir = trained_models
    assert main(["--models-dir", str(output_dir), "models"]) == 0
    lines = capsys.readouterr().out.splitlines()
    card = json.loads((output_dir / "scratch_cnn" / "card.json").read_text())
    metrics = json.loads((output_dir / "scratch_cnn" / "metrics.json").read_text())
    row = next(line for line in lines if line.startswith("scratch_cnn")).split()
    assert row[1:4] == ["75", f"{card['threshold']:.3f}", f"{metrics['roc_auc']:.3f}"]


def test_predict_json_matches_the_library_and_skips_bad_files(trained_models, tmp_path, capsys):
    data_dir, output_dir = trained_models
    images = sorted((data_dir / "images").glob("*.jpg"))[:5]
    folder = tmp_path / "batch"
    folder.mkdir()
    for path in images:
        shutil.copy(path, folder / path.name)
    (folder / "broken.jpg").write_bytes(b"not an image")
    code = main(["--models-dir", str(output_dir), "predict", "--model", "scratch_cnn", "--json", str(folder)])
    captured = capsys.readouterr()
    assert code == 1 and "broken.jpg" in captured.err
    rows = [json.loads(line) for line in captured.out.splitlines()]
    assert len(rows) == 5 and {"path", "model", "probability", "threshold", "melanoma"} <= set(rows[0])
    predictor = load_predictor("scratch_cnn", output_dir)
    expected = predictor.probabilities([read_image(str(folder / p.name)).pixels for p in images])
    assert np.allclose([r["probability"] for r in rows], expected, atol=1e-5)
    assert all(r["melanoma"] == (r["probability"] >= r["threshold"]) for r in rows)


def test_predict_unknown_model_lists_installed(trained_models, capsys):
    _, output_dir = trained_models
    assert main(["--models-dir", str(output_dir), "predict", "--model", "nope", "x.jpg"]) == 2
    assert (
        "Installed models: efficientnet_b3, efficientnet_lite0, efficientnet_lite0_diagnosis, inception_v3, "
        "scratch_cnn."
    ) in capsys.readouterr().err


def test_cli_runs_as_a_module(trained_models):
    _, output_dir = trained_models
    result = subprocess.run(
        [sys.executable, "-m", "melanoma", "--models-dir", str(output_dir), "models"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0 and "inception_v3" in result.stdout


def test_evaluate_recomputes_metrics_on_a_labelled_folder(trained_models, tmp_path):
    data_dir, output_dir = trained_models
    out = tmp_path / "metrics.json"
    assert (
        evaluate.main(
            ["--model", "scratch_cnn", "--models-dir", str(output_dir), "--data-dir", str(data_dir), "--out", str(out)]
        )
        == 0
    )
    metrics = json.loads(out.read_text())
    assert metrics["n_images"] == 120 and metrics["roc_auc"] > 0.9


def test_evaluate_on_the_models_own_test_split_repeats_the_training_runs_metrics(
    trained_models, tmp_path, capsys, monkeypatch
):
    """Intervals included: they were bootstrapped with seed 0 against the run's own seed (the fixture's 1;
    shipped scratch_cnn's ROC AUC interval read [0.8179, 0.8762] against metrics.json's [0.8154, 0.8765])."""
    from melanoma import validation

    seeds, measure = [], validation.evaluate_predictions
    monkeypatch.setattr(
        validation, "evaluate_predictions", lambda *args, seed=0: seeds.append(seed) or measure(*args, seed=seed)
    )
    data_dir, output_dir = trained_models
    common = ["--model", "scratch_cnn", "--models-dir", str(output_dir), "--data-dir", str(data_dir)]
    assert evaluate.main([*common, "--split", "test", "--out", str(tmp_path / "metrics.json")]) == 0
    assert seeds == [1]  # the fixture's test AUC is 1.0, whose interval is [1, 1] whatever the seed
    printed = json.loads(capsys.readouterr().out.split("\n", 1)[1])  # after "wrote ..."
    shipped = json.loads((output_dir / "scratch_cnn" / "metrics.json").read_text())
    split = pd.read_csv(output_dir / "scratch_cnn" / "split.csv")
    assert printed["n_images"] == shipped["n_images"] == (split.split == "test").sum()
    assert printed["roc_auc"] == pytest.approx(shipped["roc_auc"], abs=1e-6)
    measured = json.loads((tmp_path / "metrics.json").read_text())
    assert json.loads((output_dir / "scratch_cnn" / "card.json").read_text())["seed"] == 1
    assert measured["ci95"].keys() == shipped["ci95"].keys()
    for key, interval in shipped["ci95"].items():
        assert measured["ci95"][key] == pytest.approx(interval, abs=1e-6), key


def test_evaluate_on_a_split_refuses_a_folder_without_its_images(trained_models, tmp_path, capsys):
    data_dir, output_dir = trained_models
    other = folder_without_the_split(data_dir, tmp_path)
    common = ["--model", "scratch_cnn", "--models-dir", str(output_dir), "--data-dir", str(other)]
    assert evaluate.main([*common, "--split", "val"]) == 2
    assert "Pass the --data-dir the model was trained on" in capsys.readouterr().err


@pytest.mark.parametrize("method", ["occlusion", "gradcam"])
def test_explain_writes_the_overlay_and_the_raw_map(trained_models, tmp_path, capsys, method):
    data_dir, output_dir = trained_models
    image = image_to_explain(data_dir, output_dir)
    out, raw = tmp_path / "overlay.png", tmp_path / "map.npy"
    assert (
        main(
            [
                "--models-dir",
                str(output_dir),
                "explain",
                "--model",
                "scratch_cnn",
                "--method",
                method,
                "--out",
                str(out),
                "--npy",
                str(raw),
                str(image),
            ]
        )
        == 0
    )
    assert Image.open(out).size == Image.open(image).size
    scores = np.load(raw)
    assert scores.shape == (75, 75) and np.abs(scores).max() > 0
    # The PNG carries no colour scale, so the line says it: the occlusion map's ±, or that Grad-CAM is relative.
    scale = f", full scale ±{signed_scale(scores):.3f}" if method == "occlusion" else " (relative)"
    assert capsys.readouterr().out.strip().endswith(f"overlay written to {out}{scale}")


def test_a_models_occlusion_map_is_in_the_calibrated_probability_it_prints(trained_models, tmp_path):
    """The map's drops are of the calibrated probability the model reports, not of the network's raw
    output, whose scale the caption's and the colour scale's "full scale" would misstate."""
    from melanoma.cases import model_view

    data_dir, output_dir = trained_models
    image = image_to_explain(data_dir, output_dir)
    raw_map = tmp_path / "map.npy"
    options = ["--patch-size", "25", "--out", str(tmp_path / "map.png"), "--npy", str(raw_map)]
    assert main(["--models-dir", str(output_dir), "explain", "--model", "scratch_cnn", *options, str(image)]) == 0
    predictor = load_predictor("scratch_cnn", output_dir)
    view = model_view(predictor, read_image(str(image)).pixels)
    grey = view.copy()
    grey[25:50, 25:50] = 127.5
    raw = predictor.network.predict_on_batch(np.stack([view, grey]))[:, 0]
    shown = predictor.serving.calibration(raw)
    assert abs((raw[0] - raw[1]) - (shown[0] - shown[1])) > 1e-3  # the two scales differ here
    assert np.load(raw_map)[30, 30] == pytest.approx(shown[0] - shown[1], abs=1e-5)


def image_to_explain(data_dir, output_dir):
    """The image the model scores highest: its melanoma evidence is what both maps should show.
    (Label smoothing keeps scratch_cnn clear of 1.0 on the fixture, so even there a patch can move it.)"""
    from melanoma.data import load_pixels

    images = sorted((data_dir / "images").glob("*.jpg"))
    predictor = load_predictor("scratch_cnn", output_dir)
    probabilities = predictor.raw_probabilities(load_pixels([str(p) for p in images], predictor.serving.input_size))
    return images[int(np.argmax(probabilities))]


def test_models_dir_is_accepted_after_the_subcommand_too(trained_models, capsys):
    _, output_dir = trained_models
    assert main(["models", "--models-dir", str(output_dir)]) == 0
    after = capsys.readouterr().out
    assert main(["--models-dir", str(output_dir), "models"]) == 0
    assert after == capsys.readouterr().out and "scratch_cnn" in after
    assert main(["--models-dir", "/nonexistent", "models", "--models-dir", str(output_dir)]) == 0  # the later one wins


def test_predict_scans_every_format_the_uploader_accepts(tmp_path):
    from melanoma.__main__ import expand_paths
    from melanoma.images import IMAGE_EXTENSIONS

    for extension in IMAGE_EXTENSIONS:
        (tmp_path / f"lesion{extension.upper()}").write_bytes(b"")
    (tmp_path / "notes.txt").write_text("not an image")
    found = {path.suffix.lower() for path in expand_paths([str(tmp_path)])}
    assert found == set(IMAGE_EXTENSIONS) and {".gif", ".webp"} <= found


def test_predict_json_says_whether_each_image_is_in_scope(trained_models, tmp_path, capsys):
    from train.gate_check import non_dermoscopic_images

    data_dir, output_dir = trained_models
    lesion = sorted((data_dir / "images").glob("*.jpg"))[0]
    Image.fromarray(non_dermoscopic_images()["document_0"]).save(tmp_path / "letter.png")
    assert (
        main(
            [
                "--models-dir",
                str(output_dir),
                "predict",
                "--model",
                "efficientnet_lite0",
                "--json",
                str(lesion),
                str(tmp_path / "letter.png"),
            ]
        )
        == 0
    )
    rows = {Path(r["path"]).name: r for r in map(json.loads, capsys.readouterr().out.splitlines())}
    assert rows[lesion.name]["in_distribution"] is True and rows["letter.png"]["in_distribution"] is False
    assert "colour" in rows["letter.png"]["ood_reason"]
    assert rows[lesion.name]["melanoma"] in (True, False) and rows["letter.png"]["melanoma"] is None  # no verdict
    diagnosis = ["--models-dir", str(output_dir), "predict", "--model", DIAGNOSIS_MODEL, "--json"]
    assert main([*diagnosis, str(tmp_path / "letter.png")]) == 0
    row = json.loads(capsys.readouterr().out)
    assert row["in_distribution"] is False and row["melanoma"] is None and row["skin_cancer"] is None
    assert (
        main(
            ["--models-dir", str(output_dir), "predict", "--model", "efficientnet_lite0", str(tmp_path / "letter.png")]
        )
        == 0
    )
    assert "NOT ASSESSED" in capsys.readouterr().out


@pytest.mark.parametrize("model", ["efficientnet_lite0", "combined"])
def test_explain_draws_no_map_for_an_image_the_gate_refuses(trained_models, tmp_path, capsys, model):
    """predict calls such an image NOT ASSESSED; a map of it would explain no probability at all."""
    from train.gate_check import non_dermoscopic_images

    _, output_dir = trained_models
    letter, out, raw = tmp_path / "letter.png", tmp_path / "map.png", tmp_path / "map.npy"
    Image.fromarray(non_dermoscopic_images()["document_0"]).save(letter)
    options = ["--out", str(out), "--npy", str(raw), str(letter)]
    assert main(["--models-dir", str(output_dir), "explain", "--model", model, *options]) == 1
    line = capsys.readouterr().out
    assert "NOT ASSESSED: " in line and "colour" in line and "no map written" in line
    assert not out.exists() and not raw.exists()


def test_explain_with_an_unknown_colourmap_lists_the_valid_ones(trained_models, tmp_path, capsys):
    data_dir, output_dir = trained_models
    image = sorted((data_dir / "images").glob("*.jpg"))[0]
    code = main(
        [
            "explain",
            "--models-dir",
            str(output_dir),
            "--model",
            "scratch_cnn",
            "--colourmap",
            "rainbow",
            "--out",
            str(tmp_path / "map.png"),
            str(image),
        ]
    )
    assert code == 2 and not (tmp_path / "map.png").exists()
    error = capsys.readouterr().err
    assert "Unknown colour map 'rainbow'" in error and "blue-white-red, green-white-purple" in error


@pytest.mark.parametrize("model", ["scratch_cnn", "combined"])
def test_predict_prints_no_framework_noise_on_stderr(trained_models, model):
    """TensorFlow's start-up lines (oneDNN, CUDA drivers, cuInit), and its retracing warnings when the
    combined reading's members trace their predict functions, read as failures to a newcomer."""
    data_dir, output_dir = trained_models
    image = sorted((data_dir / "images").glob("*.jpg"))[0]
    command = [
        sys.executable,
        "-m",
        "melanoma",
        "predict",
        "--models-dir",
        str(output_dir),
        "--model",
        model,
        str(image),
    ]
    quiet = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert quiet.returncode == 0 and image.name in quiet.stdout
    assert quiet.stderr.strip() == "", quiet.stderr
    loud = subprocess.run([*command[:3], "--framework-logs", *command[3:]], capture_output=True, text=True, timeout=300)
    assert loud.returncode == 0 and loud.stdout == quiet.stdout


def test_quiet_import_holds_tensorflows_python_logger_to_errors():
    """The combined reading's members each trace a predict function, and TensorFlow's logger then warns
    of "retracing" on stderr (the shipped combined reading did, on every predict)."""
    import logging

    import tensorflow as tf

    from melanoma.framework import import_tensorflow_quietly

    tf.get_logger().setLevel(logging.WARNING)
    import_tensorflow_quietly()
    assert tf.get_logger().level == logging.ERROR


@pytest.mark.parametrize("tool", ["run", "evaluate", "calibrate", "combine", "gate_check"])
def test_training_tools_print_no_framework_noise_and_offer_its_logs(tool):
    """The train package imports TensorFlow quietly before any tool parses its arguments."""
    result = subprocess.run(
        [sys.executable, "-m", f"train.{tool}", "--help"], capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0 and "--framework-logs" in result.stdout
    assert result.stderr.strip() == "", result.stderr


@pytest.mark.parametrize(
    "options, expected",
    [
        (["predict", "--model", "scratch_cnn", "--batch-size", "0", "x.jpg"], "--batch-size: expected a whole number"),
        (["explain", "--model", "scratch_cnn", "--patch-size", "-5", "--out", "m.png", "x.jpg"], "--patch-size"),
        (["explain", "--model", "scratch_cnn", "--alpha", "5", "--out", "m.png", "x.jpg"], "expected an opacity"),
    ],
)
def test_a_number_out_of_range_is_a_usage_error(options, expected, capsys):
    with pytest.raises(SystemExit) as stopped:
        main(options)
    assert stopped.value.code == 2 and expected in capsys.readouterr().err


@pytest.mark.parametrize(
    "out, npy, expected",
    [
        ("map.xyz", None, "--out must name a .png file; received"),
        ("missing/map.png", None, "--out: the folder"),
        ("map.png", "missing/map.npy", "--npy: the folder"),
    ],
)
def test_explain_checks_where_it_writes_before_it_computes(
    trained_models, tmp_path, capsys, monkeypatch, out, npy, expected
):
    """Nothing is computed, and nothing half-written, when a file could not be written at the end."""
    import melanoma.inference

    data_dir, output_dir = trained_models
    monkeypatch.setattr(melanoma.inference, "load_predictor", lambda *args: pytest.fail("a model was loaded"))
    image = sorted((data_dir / "images").glob("*.jpg"))[0]
    options = ["--out", str(tmp_path / out)] + (["--npy", str(tmp_path / npy)] if npy else [])
    code = main(["--models-dir", str(output_dir), "explain", "--model", "scratch_cnn", *options, str(image)])
    assert code == 2 and expected in capsys.readouterr().err
    assert not list(tmp_path.iterdir())


def test_a_folder_scan_finds_dicom_files_by_their_preamble(tmp_path):
    """PACS exports (DICOM/IM000001, UID-named files such as ….320) were skipped for their extension."""
    from melanoma.__main__ import expand_paths

    (tmp_path / "DICOM").mkdir()
    for name in ("IM000001", "1.2.840.113619.2.320", "lesion.JPG"):
        (tmp_path / "DICOM" / name).write_bytes(bytes(128) + b"DICM")
    (tmp_path / "DICOM" / "DICOMDIR.txt").write_bytes(bytes(200))
    assert [path.name for path in expand_paths([str(tmp_path)])] == ["1.2.840.113619.2.320", "IM000001", "lesion.JPG"]


def test_an_output_path_under_a_file_or_missing_folder_is_named(tmp_path):
    """explain --out and train.evaluate --out are checked by one function, which said a file above the
    path was a missing folder, and which train.evaluate's twin let through when the folder was missing."""
    (tmp_path / "file").write_text("")
    under_a_file = output_problem(str(tmp_path / "file" / "deeper" / "map.png"), "--out", ".png")
    assert under_a_file == (
        f"--out: {tmp_path / 'file' / 'deeper' / 'map.png'} is under {tmp_path / 'file'}, which is a file, not a "
        "folder. Give a path in a folder."
    )
    assert "does not exist" in output_problem(str(tmp_path / "missing" / "map.npy"), "--npy", ".npy")
    assert output_problem(str(tmp_path / "map.png"), "--out", ".png") is None and output_problem(None, "--out") is None


@pytest.mark.parametrize("model", ["scratch_cnn", "combined"])
def test_a_skin_cancer_map_needs_a_diagnosis_model(trained_models, tmp_path, capsys, model):
    data_dir, output_dir = trained_models
    image = sorted((data_dir / "images").glob("*.jpg"))[0]
    out = tmp_path / "map.png"
    options = ["explain", "--model", model, "--output", "malignant", "--out", str(out), str(image)]
    assert main(["--models-dir", str(output_dir), *options]) == 2
    assert "--output malignant needs a diagnosis model" in capsys.readouterr().err and not out.exists()


def test_images_of_one_name_get_a_bundle_each(trained_models, tmp_path, capsys):
    """lesion.jpg and lesion.png, or a/x.jpg and b/x.jpg, would otherwise share one Bundle file."""
    data_dir, output_dir = trained_models
    first, second = sorted((data_dir / "images").glob("*.jpg"))[:2]
    for folder in ("a", "b"):
        (tmp_path / folder).mkdir()
    shutil.copy(first, tmp_path / "a" / "lesion.jpg")
    shutil.copy(second, tmp_path / "b" / "lesion.jpg")
    Image.open(first).save(tmp_path / "a" / "lesion.png")
    fhir = tmp_path / "fhir"
    options = [
        "predict",
        "--model",
        "scratch_cnn",
        "--json",
        "--fhir",
        str(fhir),
        str(tmp_path / "a"),
        str(tmp_path / "b"),
    ]
    assert main(["--models-dir", str(output_dir), *options]) == 0
    captured = capsys.readouterr()
    assert len(captured.out.splitlines()) == 3
    assert sorted(path.name for path in fhir.iterdir()) == [
        "lesion-2.fhir.json",
        "lesion-3.fhir.json",
        "lesion.fhir.json",
    ]
    assert f"{tmp_path / 'a' / 'lesion.png'}'s Bundle is lesion-2.fhir.json" in captured.err


def test_predict_refuses_a_file_as_the_fhir_folder_before_scoring(trained_models, tmp_path, capsys):
    data_dir, output_dir = trained_models
    (tmp_path / "fhir").write_text("notes")
    image = sorted((data_dir / "images").glob("*.jpg"))[0]
    options = ["predict", "--model", "scratch_cnn", "--fhir", str(tmp_path / "fhir"), str(image)]
    assert main(["--models-dir", str(output_dir), *options]) == 2
    captured = capsys.readouterr()
    assert "is a file; give a folder for the Bundles" in captured.err and not captured.out
