"""The Compare and Model cards pages with incomplete stored artefacts: one model's gap never hides the others."""

import json
import shutil
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from train import evaluate

TIMEOUT = 300
LINKED = {"model.keras", "ood.npz"}  # large, and never edited here


def copy_or_link(source: str, target: str) -> None:
    """Copies what a test may edit; links the weights, which are large and never edited here."""
    Path(target).symlink_to(source) if Path(source).name in LINKED else shutil.copy2(source, target)


@pytest.fixture
def install(trained_models, tmp_path, monkeypatch):
    """`install(*names, combined=True)`: a models folder of these fixture models (and combined.json)
    for a test to damage, with the app pointed at it; no page here loads weights, so no warm-up."""
    import ui

    _, output_dir = trained_models
    monkeypatch.setattr(ui, "prepare_in_background", lambda: None)
    models = tmp_path / "models"

    def installed(*names: str, combined: bool = True) -> Path:
        models.mkdir()
        for name in names:
            shutil.copytree(output_dir / name, models / name, copy_function=copy_or_link)
        for item in output_dir.glob("*.keras"):  # the gates' shared feature extractor
            (models / item.name).symlink_to(item)
        if combined:
            shutil.copy(output_dir / "combined.json", models)
        monkeypatch.setenv("MELANOMA_MODELS_DIR", str(models))
        return models

    return installed


def page(name: str) -> AppTest:
    at = AppTest.from_file("../app.py", default_timeout=TIMEOUT).run()
    assert not at.exception
    at.switch_page(f"app_pages/{name}.py").run()
    assert not at.exception, at.exception
    return at


def edit_json(path: Path, change) -> None:
    data = json.loads(path.read_text())
    change(data)
    path.write_text(json.dumps(data))


def test_without_any_metrics_compare_gives_the_command_train_evaluate_recommends(install):
    """It advised train.evaluate --out models/NAME/metrics.json, which train.evaluate refuses."""
    models = install("scratch_cnn", combined=False)
    (models / "scratch_cnn" / "metrics.json").unlink()
    at = page("compare")
    advice = "python -m train.calibrate --models NAME --keep-gate --data-dir DIR"
    assert advice in at.error[0].value
    refused = evaluate.model_folder_problem(str(models / "scratch_cnn" / "metrics.json"))
    assert advice.replace("NAME", "scratch_cnn") in refused


def test_a_model_with_unreadable_metrics_is_named_with_the_fix_and_keeps_its_training_curves(install):
    """It vanished from Compare without a word, and its card said nothing of test metrics."""
    models = install("scratch_cnn", "efficientnet_lite0", combined=False)
    (models / "scratch_cnn" / "metrics.json").write_text('{"roc_auc": 0.85, ')  # cut off
    at = page("compare")
    (warning,) = [w.value for w in at.warning if "scratch_cnn" in w.value]
    assert "metrics.json is unreadable (" in warning
    assert "python -m train.calibrate --models scratch_cnn --keep-gate --data-dir DIR" in warning
    assert list(at.dataframe[0].value.Model) == ["efficientnet_lite0"]
    assert "**scratch_cnn**" in [markdown.value for markdown in at.markdown]  # its training curves' heading
    at = page("model_cards")
    card = next(expander for expander in at.expander if expander.label.startswith("scratch_cnn"))
    assert any(
        markdown.value.startswith("**No test metrics**: metrics.json is unreadable") for markdown in card.markdown
    )
