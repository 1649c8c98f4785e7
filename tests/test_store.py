"""Broken model folders are listed as unavailable with the reason; the others keep working."""

import json
import re
import shutil
import subprocess
import sys

import pytest

from melanoma.files import sha256_of
from melanoma.ood import FEATURES_FILE
from melanoma.store import (
    HISTORY_FILE,
    HistoryUnavailable,
    InstalledModel,
    ModelUnavailableError,
    find_model,
    list_models,
    load_keras_model,
)
from tests.conftest import ROOT


@pytest.fixture
def models_copy(trained_models, tmp_path):
    _, output_dir = trained_models
    for name in ("scratch_cnn", "efficientnet_b3"):
        shutil.copytree(output_dir / name, tmp_path / name, ignore=shutil.ignore_patterns("checkpoint", "logs"))
    shutil.copy(output_dir / FEATURES_FILE, tmp_path / FEATURES_FILE)  # the gates' shared extractor
    return tmp_path


def test_altered_weights_are_refused_and_others_still_load(models_copy):
    path = models_copy / "scratch_cnn" / "model.keras"
    path.write_bytes(path.read_bytes()[:-100])  # truncated
    entry = find_model("scratch_cnn", models_copy)
    with pytest.raises(ModelUnavailableError) as refusal:
        load_keras_model(entry)
    # The page shows this message: which model and file, both digests, and what to do.
    message = str(refusal.value)
    assert message.startswith("Model scratch_cnn is unavailable: model.keras does not match the sha256 in card.json")
    assert f"expected {entry.card.sha256[:12]}…, found {sha256_of(path)[:12]}…" in message
    assert message.endswith("Restore it from git or retrain.")
    assert not entry.available and entry.problem in message
    other = find_model("efficientnet_b3", models_copy)
    model = load_keras_model(other)
    assert model.name == "efficientnetb3" and model.input_shape == (None, other.input_size, other.input_size, 3)


@pytest.mark.parametrize(
    "damage, reason",
    [
        (lambda folder: (folder / "card.json").write_text("{not json"), "card.json is malformed"),
        (lambda folder: (folder / "card.json").write_text(json.dumps({"input_size": 75})), "missing key 'threshold'"),
        (lambda folder: (folder / "model.keras").unlink(), "model.keras is missing"),
    ],
)
def test_broken_folders_are_listed_unavailable(models_copy, damage, reason):
    damage(models_copy / "scratch_cnn")
    entries = {entry.name: entry for entry in list_models(models_copy)}
    assert not entries["scratch_cnn"].available and reason in entries["scratch_cnn"].problem
    assert entries["efficientnet_b3"].available


def edit_json(path, change) -> None:
    data = json.loads(path.read_text())
    change(data)
    path.write_text(json.dumps(data))


@pytest.mark.parametrize(
    "change, reason",
    [
        (lambda card: card.update(serving=[]), "serving must be a JSON object; found []"),
        (lambda card: card.update(threshold="abc"), "threshold must be a number from 0 to 1; found 'abc'"),
        (lambda card: card.update(threshold=True), "threshold must be a number from 0 to 1"),
        (lambda card: card.update(malignant_threshold=1.5), "malignant_threshold must be a number from 0 to 1"),
        (lambda card: card.update(sha256=5), "sha256 must be text"),
        (lambda card: card["serving"].update(ood="ood.npz"), "serving.ood must be a JSON object; found 'ood.npz'"),
        (lambda card: card["serving"]["ood"].pop("features_sha256"), "serving.ood.features_sha256 must be text"),
        (lambda card: card["serving"].update(input_size=0), "serving.input_size must be a whole number of pixels"),
        (lambda card: card["serving"].update(input_size="75"), "serving.input_size must be a whole number of pixels"),
        (lambda card: card["serving"].update(test_time_augmentation="no"), "must be true or false; found 'no'"),
        (lambda card: card["serving"].update(classes="MEL"), "serving.classes must be a list of names"),
        (lambda card: card["serving"]["calibration"].update(slope="1"), "serving.calibration.slope must be a number"),
        (lambda card: card["serving"].pop("input_size"), "missing key 'input_size'"),
    ],
)
def test_a_malformed_card_makes_only_its_model_unavailable_naming_the_field(models_copy, capsys, change, reason):
    """Each was an AttributeError, TypeError or ValueError from listing, serving or the CLI's formatting
    (serving: [] escaped inspect_model, so no model was listed); now the card is refused when read."""
    from melanoma.__main__ import main

    edit_json(models_copy / "scratch_cnn" / "card.json", change)
    entries = {entry.name: entry for entry in list_models(models_copy)}
    problem = entries["scratch_cnn"].problem
    assert problem.startswith("card.json is malformed (") and reason in problem
    assert entries["efficientnet_b3"].available
    assert main(["--models-dir", str(models_copy), "models"]) == 0
    rows = {line.split()[0]: line for line in capsys.readouterr().out.splitlines()[1:]}
    assert f"unavailable: {problem}" in rows["scratch_cnn"] and "  available" in rows["efficientnet_b3"]
    with pytest.raises(ModelUnavailableError, match="card.json is malformed"):
        load_keras_model(find_model("scratch_cnn", models_copy))


@pytest.mark.parametrize("auc", ["0.9", [0.9], 2.0])
def test_a_metrics_file_whose_auc_is_not_a_number_shows_no_auc(models_copy, capsys, auc):
    """A text roc_auc crashed the CLI's formatting; metrics.json is then unreadable like a broken one."""
    from melanoma.__main__ import main

    edit_json(models_copy / "scratch_cnn" / "metrics.json", lambda metrics: metrics.update(roc_auc=auc))
    entry = find_model("scratch_cnn", models_copy)
    assert entry.available and entry.metrics == {} and entry.test_auc is None
    assert main(["--models-dir", str(models_copy), "models"]) == 0
    row = next(line for line in capsys.readouterr().out.splitlines() if line.startswith("scratch_cnn")).split()
    assert row[3:5] == ["-", "available"]


def test_names_cannot_escape_the_models_folder(models_copy):
    with pytest.raises(ModelUnavailableError, match="No installed model"):
        find_model("../scratch_cnn", models_copy / "efficientnet_b3")


def test_the_models_folder_is_resolved_at_call_time(monkeypatch, tmp_path):
    """The app, the CLI and the tests read MELANOMA_MODELS_DIR when they need it, not at import."""
    from melanoma.store import SHIPPED_MODELS_DIR, resolve_models_dir

    monkeypatch.delenv("MELANOMA_MODELS_DIR", raising=False)
    assert resolve_models_dir() == SHIPPED_MODELS_DIR.resolve()
    monkeypatch.setenv("MELANOMA_MODELS_DIR", str(tmp_path / "elsewhere"))
    assert resolve_models_dir() == (tmp_path / "elsewhere").resolve()
    assert resolve_models_dir(tmp_path / "chosen") == (tmp_path / "chosen").resolve()  # an explicit folder wins


def test_a_process_exits_only_once_a_daemon_threads_network_read_is_over():
    """A daemon thread halted inside h5py at exit kept its lock and hung the server for good: exit
    must wait for a read in progress. Keras is replaced by a slow stand-in that says when it ends."""
    code = """
import sys, threading, time, types

started = threading.Event()

def slow_load(path, **options):
    started.set()
    time.sleep(1)
    print("read finished", flush=True)

sys.modules["keras"] = types.SimpleNamespace(models=types.SimpleNamespace(load_model=slow_load))
sys.modules["melanoma.models.layers"] = types.ModuleType("melanoma.models.layers")
from melanoma.models.saved import load_network

threading.Thread(target=load_network, args=("model.keras",), daemon=True).start()
started.wait()
print("main thread done", flush=True)
"""
    finished = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert finished.returncode == 0, finished.stderr
    assert finished.stdout.split() == ["main", "thread", "done", "read", "finished"]


@pytest.mark.parametrize(
    "text, reason",
    [
        (None, "no history.csv"),
        ("", "history.csv is unreadable (No columns to parse from file)"),
        ("loss,val_loss\n0.5,0.6\n", "history.csv holds no epochs"),
    ],
)
def test_a_missing_or_unreadable_history_says_why(tmp_path, text, reason):
    """A 0-byte history.csv raised pandas' EmptyDataError through the Compare page."""
    if text is not None:
        (tmp_path / HISTORY_FILE).write_text(text)
    with pytest.raises(HistoryUnavailable, match=re.escape(reason)):
        InstalledModel("a", tmp_path).history()
