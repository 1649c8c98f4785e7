"""The Compare and Model cards pages with incomplete stored artefacts: one model's gap never hides the others."""

import json
import shutil
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from melanoma.plots import DASH
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


def test_gaps_in_stored_metrics_and_histories_leave_out_only_what_they_lack(install):
    """Each of these took the whole Compare or Model cards page down, every model with it."""
    models = install("scratch_cnn", "efficientnet_lite0")
    scratch, lite = models / "scratch_cnn", models / "efficientnet_lite0"
    edit_json(scratch / "metrics.json", lambda metrics: [metrics.pop(key) for key in ("roc_curve", "ci95")])
    edit_json(scratch / "metrics.json", lambda metrics: metrics.update(roc_auc=None))
    edit_json(lite / "metrics.json", lambda metrics: metrics.pop("at_threshold"))
    edit_json(models / "combined.json", lambda spec: [spec["metrics"].pop(key) for key in ("roc_curve", "calibration")])
    (lite / "holdout-rosendahl").mkdir()
    (lite / "holdout-rosendahl" / "metrics.json").write_text(json.dumps({"n_melanoma": 3}))  # no AUC, no images
    (scratch / "history.csv").write_text("")
    history = (lite / "history.csv").read_text().splitlines()
    (lite / "history.csv").write_text(
        "\n".join(",".join(line.split(",")[:1] + line.split(",")[4:]) for line in history)
    )

    at = page("compare")
    assert {"scratch_cnn", "efficientnet_lite0"} <= set(at.dataframe[0].value.Model)
    gaps = next(caption.value for caption in at.caption if caption.value.startswith("Left out"))
    assert "from the confusion matrices, efficientnet_lite0 (no at_threshold.confusion_matrix)" in gaps
    roc = gaps.split("from the ROC curves, ")[1].split(" (no roc_curve)")[0]
    assert "scratch_cnn" in roc and "combined" in roc and "from the calibration curves, combined" in gaps
    assert "scratch_cnn: no training curves, history.csv is unreadable (No columns to parse from file)." in [
        caption.value for caption in at.caption
    ]
    assert "**efficientnet_lite0**" in [markdown.value for markdown in at.markdown]  # its curves, without phases

    at = page("model_cards")
    text = " ".join(markdown.value for markdown in at.markdown)
    assert f"**Test ROC AUC**: {DASH} (95% CI {DASH}); sensitivity" in text
    assert (
        f"**Held-out source rosendahl** (a run that never saw it): ROC AUC {DASH} (95% CI {DASH}) on {DASH} images"
        in text
    )


def test_an_older_card_shows_what_it_records_and_no_default_as_a_record(install):
    """A card with only threshold, sha256 and input size read "Parameters: 0", "Trained: None epochs in
    0 min on unknown", "Command: ``" and an unnamed recipe."""
    models = install("scratch_cnn", combined=False)

    def older(card: dict) -> None:
        kept = {"threshold": card["threshold"], "sha256": card["sha256"], "input_size": card["serving"]["input_size"]}
        card.clear()
        card.update(kept)

    edit_json(models / "scratch_cnn" / "card.json", older)
    at = page("model_cards")
    labels = [markdown.value.split("**")[1] for markdown in at.markdown if markdown.value.startswith("**")]
    assert labels[:3] == ["Input", "Test-time augmentation", "Weights initialised from"]
    assert not {"Parameters", "Training data", "Recipe", "Trained", "Class balance", "Command"} & set(labels)
    assert at.expander[0].label == "scratch_cnn: scratch_cnn"
    assert not at.table  # no split counts recorded


def test_a_combined_reading_whose_models_are_not_installed_is_listed_last_unranked_and_unhighlighted(
    install, monkeypatch
):
    """Compare ranked it first and highlighted it as the best, though no page could choose it."""
    import ui

    highlighted = []
    show_table = ui.show_table
    monkeypatch.setattr(ui, "show_table", lambda table, best=None: highlighted.append(best) or show_table(table, best))
    models = install("scratch_cnn", "efficientnet_lite0")
    edit_json(
        models / "combined.json", lambda spec: spec.update(members=["scratch_cnn", "absent_model"], differential=None)
    )
    edit_json(models / "combined.json", lambda spec: spec["metrics"].update(roc_auc=0.999))
    at = page("compare")
    label = next(option for option in at.dataframe[0].value.Model if option.startswith("combined"))
    assert list(at.dataframe[0].value.Model)[-1] == label
    (info,) = [info.value for info in at.info if "cannot be chosen" in info.value]
    assert "absent_model is not installed" in info and "scratch_cnn" not in info
    best = highlighted[0]  # the test metrics' table
    assert best["ROC AUC"] == at.dataframe[0].value.Model[0] and label not in best.values()
