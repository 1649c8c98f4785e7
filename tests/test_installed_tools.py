"""train.evaluate, train.calibrate, train.combine and train.gate_check refuse bad input with a message and
exit status 2, before they score, fit or write anything."""

import json
import shutil
import sys
from pathlib import Path

import pytest

from melanoma.combined import COMBINED_FILE
from melanoma.data import load_labelled_images
from tests.conftest import DIAGNOSIS_MODEL
from train import evaluate
from train.calibrate import main as calibrate
from train.combine import main as combine
from train.gate_check import main as gate_check

MODEL = "scratch_cnn"
WRITTEN = ("card.json", "metrics.json", "ood.npz")  # what train.calibrate rewrites


def own_models(output_dir: Path, tmp_path: Path, name: str = MODEL) -> Path:
    """A models folder with a copy of the fixture's model `name` (its weights linked) that a test may break or
    rewrite without touching the shared fixture."""
    models = tmp_path / "models"
    (models / name).mkdir(parents=True)
    (models / "imagenet_features.keras").symlink_to(output_dir / "imagenet_features.keras")
    for path in (output_dir / name).iterdir():
        if path.name == "model.keras":
            (models / name / path.name).symlink_to(path)
        elif path.is_file():
            shutil.copy(path, models / name / path.name)
    return models


def folder_without_the_split(data_dir: Path, tmp_path: Path) -> Path:
    """A labelled folder with one image of each class of `data_dir`: none of a model's validation split."""
    other = tmp_path / "other"
    (other / "images").mkdir(parents=True)
    header, *rows = (data_dir / "labels.csv").read_text().splitlines()
    kept = [next(row for row in rows if row.split(",")[1] == label) for label in ("0", "1")]
    (other / "labels.csv").write_text("\n".join([header, *kept]) + "\n")
    for line in kept:
        name = line.split(",")[0] + ".jpg"
        shutil.copy(data_dir / "images" / name, other / "images" / name)
    return other


def contents(models: Path, model: str = MODEL) -> dict[str, tuple]:
    """What train.calibrate would change: the files' bytes, and their inodes (a rewrite of the same bytes
    replaces the file)."""
    return {name: ((models / model / name).read_bytes(), (models / model / name).stat().st_ino) for name in WRITTEN}


def test_gate_check_without_scikit_image_is_refused_rather_than_checking_fewer_images(tmp_path, monkeypatch, capsys):
    """With requirements-train.txt alone it checked 17 of its 35 images and printed rates like the full set's."""
    monkeypatch.setitem(sys.modules, "skimage", None)  # not installed
    monkeypatch.setitem(sys.modules, "skimage.data", None)
    assert gate_check(["--data-dir", str(tmp_path), "--models-dir", str(tmp_path)]) == 2
    error = capsys.readouterr().err
    assert error.startswith("error: train.gate_check shows each gate 18 photographs that scikit-image ships")
    assert "pip install -r requirements-train.txt" in error


@pytest.mark.parametrize(
    "split_csv",
    [None, "", 'image_id,split\n"ISIC_0000000,val\n', "image_id,group\nISIC_0000000,g\n"],
    ids=["missing", "empty", "unclosed quote", "no split column"],
)
@pytest.mark.parametrize("tool", ["evaluate", "calibrate", "combine", "gate_check"])
def test_a_missing_or_damaged_split_csv_is_an_error_naming_it(trained_models, tmp_path, capsys, tool, split_csv):
    data_dir, output_dir = trained_models
    models = own_models(output_dir, tmp_path)
    split = models / MODEL / "split.csv"
    split.unlink()
    if split_csv is not None:
        split.write_text(split_csv)
    common = ["--models-dir", str(models), "--data-dir", str(data_dir)]
    run = {
        "evaluate": lambda: evaluate.main([*common, "--model", MODEL, "--split", "val"]),
        "calibrate": lambda: calibrate([*common, "--models", MODEL]),
        "combine": lambda: combine([*common, "--models", MODEL]),
        "gate_check": lambda: gate_check([*common, "--models", MODEL]),
    }[tool]
    assert run() == 2
    error = capsys.readouterr().err
    assert error.startswith("error: ") and str(split) in error
    if split_csv is not None:  # evaluate --split has its own advice for a model without split.csv: leave out --split
        assert "retrain the model" in error
    assert not (models / COMBINED_FILE).exists()


@pytest.mark.parametrize("tool", [calibrate, combine, gate_check])
def test_a_data_folder_without_the_models_split_is_refused_before_fitting(trained_models, tmp_path, capsys, tool):
    data_dir, output_dir = trained_models
    models = own_models(output_dir, tmp_path)
    before = contents(models)
    other = folder_without_the_split(data_dir, tmp_path)
    assert tool(["--models-dir", str(models), "--data-dir", str(other), "--models", MODEL]) == 2
    error = capsys.readouterr().err
    assert error.startswith("error: ") and "Pass the --data-dir the model was trained on" in error
    assert contents(models) == before and not (models / COMBINED_FILE).exists()


def test_calibrate_checks_every_name_before_rewriting_any_model(trained_models, tmp_path, capsys):
    data_dir, output_dir = trained_models
    models = own_models(output_dir, tmp_path)
    before = contents(models)
    arguments = ["--models-dir", str(models), "--data-dir", str(data_dir), "--models", f"{MODEL},no_such_model"]
    assert calibrate(arguments) == 2
    assert "No installed model named 'no_such_model'" in capsys.readouterr().err
    assert contents(models) == before


NO_NAMES = "expected comma-separated installed model names"
NOT_A_PROPORTION = "expected a sensitivity above 0 and at most 1, such as 0.9 for 90 %"


@pytest.mark.parametrize("tool", [calibrate, combine])
@pytest.mark.parametrize(
    "option, value, expected",
    [
        ("--models", "", NO_NAMES),
        ("--models", ",", NO_NAMES),
        ("--models", " , ", NO_NAMES),
        # 95 crashed with an IndexError after every image was scored, and 0 was accepted.
        ("--target-sensitivity", "95", NOT_A_PROPORTION),
        ("--target-sensitivity", "0", NOT_A_PROPORTION),
        ("--target-sensitivity", "ninety", NOT_A_PROPORTION),
    ],
)
def test_an_option_out_of_range_is_a_usage_error(trained_models, tmp_path, capsys, tool, option, value, expected):
    data_dir, output_dir = trained_models
    models = own_models(output_dir, tmp_path)
    before = contents(models)
    with pytest.raises(SystemExit) as exited:
        tool(["--models-dir", str(models), "--data-dir", str(data_dir), option, value])
    assert exited.value.code == 2
    assert f"argument {option}: {expected}" in capsys.readouterr().err
    assert contents(models) == before and not (models / COMBINED_FILE).exists()


@pytest.mark.parametrize("tool", [calibrate, combine, gate_check])
@pytest.mark.parametrize("folder, found", [("misspelt", "does not exist"), ("empty", "holds no installed model")])
def test_a_models_dir_without_models_is_an_error_naming_it(trained_models, tmp_path, capsys, tool, folder, found):
    """calibrate and gate_check did nothing and exited 0, and combine gave no reason."""
    data_dir, _ = trained_models
    (tmp_path / "empty").mkdir()
    models = tmp_path / folder
    assert tool(["--models-dir", str(models), "--data-dir", str(data_dir)]) == 2
    error = capsys.readouterr().err
    assert (
        error.startswith(f"error: --models-dir {models} {found}") and "expected the folder of installed models" in error
    )
    assert "$MELANOMA_MODELS_DIR" in error and not (models / COMBINED_FILE).exists()


def test_combine_refuses_an_unknown_model_name_and_writes_nothing(trained_models, tmp_path, capsys):
    data_dir, output_dir = trained_models
    models = own_models(output_dir, tmp_path)
    arguments = ["--models-dir", str(models), "--data-dir", str(data_dir), "--models", f"{MODEL},{MODEL}n"]
    assert combine(arguments) == 2
    error = capsys.readouterr().err
    assert error.startswith(f"error: No installed model named '{MODEL}n'") and f"Installed models: {MODEL}." in error
    assert not (models / COMBINED_FILE).exists()


@pytest.mark.parametrize(
    "kind, expected",
    [
        ("a folder", "is a folder; expected a file to write"),
        ("under a file", "which is a file, not a folder"),
        ("in a missing folder", "does not exist. Create it, or write elsewhere"),  # was created, as explain's was not
        # Its own help's example: the file lost the calibration and evidence entries the app reads.
        ("a model's metrics.json", "train.run and train.calibrate write"),
        ("a file in a model's folder", "train.run and train.calibrate write"),
    ],
)
def test_evaluate_checks_the_out_path_before_scoring(trained_models, tmp_path, capsys, monkeypatch, kind, expected):
    data_dir, output_dir = trained_models
    models = own_models(output_dir, tmp_path)
    before = contents(models)
    (tmp_path / "file").write_text("")
    out = {
        "a folder": tmp_path,
        "under a file": tmp_path / "file" / "metrics.json",
        "in a missing folder": tmp_path / "missing" / "metrics.json",
        "a model's metrics.json": models / MODEL / "metrics.json",
        "a file in a model's folder": models / MODEL / "scratch.json",
    }[kind]

    def not_reached(*args, **kwargs):
        raise AssertionError("scored before checking --out")

    monkeypatch.setattr(evaluate, "validate_folder", not_reached)
    arguments = ["--model", MODEL, "--models-dir", str(models), "--data-dir", str(data_dir), "--out", str(out)]
    with pytest.raises(SystemExit) as exited:
        evaluate.main(arguments)
    assert exited.value.code == 2
    error = capsys.readouterr().err
    assert "error: --out" in error and str(out.parent) in error and expected in error
    assert contents(models) == before
    assert not (tmp_path / "missing").exists() and not (models / MODEL / "scratch.json").exists()


@pytest.mark.parametrize("broken", ["card.json", "model.keras"])
def test_calibrate_names_a_model_it_cannot_read_before_rewriting_any(trained_models, tmp_path, capsys, broken):
    data_dir, output_dir = trained_models
    models = own_models(output_dir, tmp_path)
    (models / MODEL / broken).unlink()
    assert calibrate(["--models-dir", str(models), "--data-dir", str(data_dir), "--models", MODEL]) == 2
    error = capsys.readouterr().err
    assert error.startswith(f"error: {MODEL} cannot be calibrated: {broken} is missing")


def test_calibrate_keep_gate_refuses_a_model_without_a_gate(trained_models, tmp_path, capsys):
    """It fitted a gate on no training image, saved NaN statistics that refuse every image, and exited 0."""
    data_dir, output_dir = trained_models
    models = own_models(output_dir, tmp_path)
    card = json.loads((models / MODEL / "card.json").read_text())
    card["serving"]["ood"] = None
    (models / MODEL / "card.json").write_text(json.dumps(card))
    before = contents(models)
    arguments = ["--models-dir", str(models), "--data-dir", str(data_dir), "--models", MODEL, "--keep-gate"]
    assert calibrate(arguments) == 2
    error = capsys.readouterr().err
    assert error.startswith(f"error: {MODEL}: --keep-gate expected a fitted out-of-distribution gate to keep")
    assert "Leave out --keep-gate to fit one" in error
    assert contents(models) == before


@pytest.mark.parametrize("failure", ["model.keras changed", "card.json unwritable"])
def test_a_recalibration_that_fails_before_its_end_leaves_the_installed_model_as_it_was(
    trained_models, tmp_path, capsys, monkeypatch, failure
):
    """The new ood.npz was written into the model folder before the weights' check and the card: a refusal
    that said "nothing was written" left a card whose gate sha256 no longer matched, and the model unloadable."""
    import train.calibrate
    from melanoma.card import ModelCard
    from melanoma.inference import load_predictor

    data_dir, output_dir = trained_models
    models = own_models(output_dir, tmp_path)
    before = contents(models)
    if failure == "model.keras changed":
        real = train.calibrate.sha256_of
        monkeypatch.setattr(
            train.calibrate, "sha256_of", lambda path: "0" * 64 if path.name == "model.keras" else real(path)
        )
    else:

        def unwritable(card, folder):
            raise OSError("disk full")

        monkeypatch.setattr(ModelCard, "save", unwritable)
    arguments = ["--models-dir", str(models), "--data-dir", str(data_dir), "--models", MODEL]
    if failure == "model.keras changed":
        assert calibrate(arguments) == 2
        assert "model.keras changed while calibrating; nothing was written" in capsys.readouterr().err
    else:
        with pytest.raises(OSError, match="disk full"):
            calibrate(arguments)
    assert contents(models) == before
    assert sorted(path.name for path in (models / MODEL).iterdir() if path.name.startswith(".")) == []
    monkeypatch.undo()
    assert load_predictor(MODEL, models).name == MODEL


@pytest.mark.parametrize("dx", ["no dx column", "one empty dx"])
def test_calibrating_a_diagnosis_model_needs_every_diagnosis_before_scoring(
    trained_models, tmp_path, capsys, monkeypatch, dx
):
    """It scored every image and then crashed with 'ValueError: tuple.index(x): x not in tuple'."""
    import train.calibrate

    _, output_dir = trained_models
    models = own_models(output_dir, tmp_path, DIAGNOSIS_MODEL)
    before = contents(models, DIAGNOSIS_MODEL)
    source = output_dir.parent / "diagnosis_data"
    data = tmp_path / "data"
    shutil.copytree(source / "images", data / "images")
    rows = [row.split(",") for row in (source / "labels.csv").read_text().splitlines()[1:]]
    labels = [f"{image},{int(code == 'MEL')},{code},{group}" for image, code, group in rows]
    if dx == "no dx column":
        (data / "labels.csv").write_text(
            "image_id,label,group\n" + "".join(f"{image},{int(code == 'MEL')},{group}\n" for image, code, group in rows)
        )
    else:
        split = (models / DIAGNOSIS_MODEL / "split.csv").read_text().splitlines()
        validated = next(row.split(",")[0] for row in split if row.endswith(",val"))
        index = next(i for i, row in enumerate(rows) if row[0] == validated)
        labels[index] = labels[index].replace(f",{rows[index][1]},", ",,")
        (data / "labels.csv").write_text("image_id,label,dx,group\n" + "\n".join(labels) + "\n")
    monkeypatch.setattr(train.calibrate, "load_pixels", lambda *args: pytest.fail("scored before checking the labels"))
    assert calibrate(["--models-dir", str(models), "--data-dir", str(data), "--models", DIAGNOSIS_MODEL]) == 2
    error = capsys.readouterr().err
    assert f"{DIAGNOSIS_MODEL} is a diagnosis model: fitting its class calibration on validation" in error
    missing = 1 if dx == "one empty dx" else None
    assert (f"and {missing} of " if missing else " have none (ISIC_") in error and "Give each image its dx: " in error
    assert contents(models, DIAGNOSIS_MODEL) == before


@pytest.mark.parametrize("layout", [None, "generic"])
def test_calibrate_reads_the_labels_in_the_layout_the_model_was_trained_on(
    trained_models, tmp_path, capsys, monkeypatch, layout
):
    """Beside labels.csv, which training read, auto-detection chose HAM10000_metadata.csv's other labels."""
    import train.calibrate

    data_dir, output_dir = trained_models
    models = own_models(output_dir, tmp_path)
    data = tmp_path / "data"
    shutil.copytree(data_dir, data)
    trained = load_labelled_images(data_dir).table.set_index("image_id").label
    flipped = "".join(f"lesion_{image},{image},{'nv' if label else 'mel'}\n" for image, label in trained.items())
    (data / "HAM10000_metadata.csv").write_text("lesion_id,image_id,dx\n" + flipped)
    read = {}

    def recalibrate(entry, table, *args):
        read.update(zip(table.image_id, table.label))
        return {f"test_{measure}_{when}": 0.0 for measure in ("ece", "brier") for when in ("before", "after")}

    monkeypatch.setattr(train.calibrate, "recalibrate_installed", recalibrate)
    chosen = ["--layout", layout] if layout else []
    assert calibrate(["--models-dir", str(models), "--data-dir", str(data), "--models", MODEL, *chosen]) == 0
    assert read and all(label == trained[image] for image, label in read.items())
    assert calibrate(["--models-dir", str(models), "--data-dir", str(data), "--layout", "ham10000"]) == 0
    assert all(label != trained[image] for image, label in read.items())
