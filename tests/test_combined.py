"""The combined reading: members chosen on validation, served under one name by every door."""

import json
import re
import shutil

import numpy as np
import pytest
from PIL import Image
from scipy.special import expit
from sklearn.metrics import roc_auc_score

from melanoma import plots
from melanoma.__main__ import main as cli
from melanoma.combined import (
    COMBINED_FILE,
    LOG_ODDS_MEAN,
    PROBABILITY_MEAN,
    CombinedPredictor,
    CombinedSpec,
    CombinedUnavailableError,
    mean_log_odds,
    select_members,
)
from melanoma.images import read_image, to_model_input
from melanoma.inference import load_predictor
from melanoma.measured import Measured
from tests.conftest import DIAGNOSIS_MODEL


def test_forward_selection_adds_what_helps_on_validation_and_says_why_the_rest_is_left_out():
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 2, 400)
    truth = labels + rng.normal(0, 1.0, 400)
    good, helper = expit(truth + rng.normal(0, 0.4, 400)), expit(truth + rng.normal(0, 0.4, 400))
    noise = expit(rng.normal(0, 1, 400))
    selection = select_members(labels, {"good": good, "helper": helper, "noise": noise})
    assert selection["members"] == ["good", "helper"] or selection["members"] == ["helper", "good"]
    assert selection["steps"][-1]["validation_roc_auc"] == selection["validation_roc_auc"]
    assert selection["validation_roc_auc"] > max(selection["candidates"]["good"], selection["candidates"]["helper"])
    assert set(selection["left_out"]) == {"noise"}
    assert selection["left_out"]["noise"].startswith(
        f"adding it would change the combination's validation ROC AUC from {selection['validation_roc_auc']:.4f} to"
    )


def test_the_log_odds_mean_is_the_geometric_mean_of_the_odds():
    assert mean_log_odds([np.array([0.5, 0.0]), np.array([0.9, 1.0])]) == pytest.approx([0.75, 0.5])


def test_cross_validation_within_validation_chooses_how_to_average_the_members():
    """A member whose probabilities are small but well ranked moves the plain mean by little; in the
    mean of the log-odds it counts as much as the other, and held-out validation images say so."""
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 2, 400)
    small = expit(2 * (1.5 * labels + rng.normal(0, 1, 400)) - 6)
    even = expit(2 * (1.5 * labels + rng.normal(0, 1, 400)) - 1.5)
    selection = select_members(labels, {"small": small, "even": even})
    scores = selection["cross_validated"]
    assert selection["combination"] == LOG_ODDS_MEAN.name and set(selection["members"]) == {"small", "even"}
    assert scores[LOG_ODDS_MEAN.name] > scores[PROBABILITY_MEAN.name] + 0.03
    assert selection["validation_roc_auc"] == pytest.approx(roc_auc_score(labels, mean_log_odds([small, even])))
    alone = select_members(labels, {"even": even})  # nothing to average: the plain mean, without a comparison
    assert alone["combination"] == PROBABILITY_MEAN.name and "cross_validated" not in alone


def test_the_combinations_metrics_say_where_its_flags_fall_when_every_test_image_has_a_diagnosis():
    import pandas as pd

    from train.combine import combined_metrics

    table = pd.DataFrame({"split": ["val", "test", "test", "test", "test"], "dx": ["NV", "MEL", "BKL", "BKL", "NV"]})
    labels = {"val": np.array([0]), "test": np.array([1, 0, 0, 0])}
    combined = {"val": np.array([0.1]), "test": np.array([0.9, 0.6, 0.2, 0.1])}
    flagged = combined_metrics(table, labels, combined, 0.5)["flagged_by_diagnosis"]
    assert (flagged["MEL"], flagged["BKL"], flagged["NV"]) == (
        {"n": 1, "flagged": 1.0},
        {"n": 2, "flagged": 0.5},
        {"n": 1, "flagged": 0.0},
    )
    assert "flagged_by_diagnosis" not in combined_metrics(
        table.assign(dx=["NV", "MEL", "", "BKL", "NV"]), labels, combined, 0.5
    )


def test_train_combine_records_the_selection_and_leaves_out_a_model_with_another_split(trained_models):
    _, output_dir = trained_models
    stored = json.loads((output_dir / COMBINED_FILE).read_text())
    selection = stored["selection"]
    assert set(stored["members"]) | set(selection["left_out"]) == {*selection["candidates"], DIAGNOSIS_MODEL}
    assert selection["left_out"][DIAGNOSIS_MODEL].startswith("validated and tested on other images than")
    assert stored["metrics"]["validation_roc_auc"] == selection["validation_roc_auc"]
    assert stored["members"][0] == max(selection["candidates"], key=selection["candidates"].get)

    # Each fact once in the file: the members and combination chosen, not repeated in the record of choosing.
    assert "members" not in selection and "combination" not in selection
    assert stored["members"] == [step["added"] for step in selection["steps"]]
    scored = selection.get("cross_validated", {})
    log_odds_ahead = scored.get(LOG_ODDS_MEAN.name, 0) > scored.get(PROBABILITY_MEAN.name, 0) + 1e-9
    assert stored["combination"] == (LOG_ODDS_MEAN if log_odds_ahead else PROBABILITY_MEAN).name
    assert set(scored) in (set(), {PROBABILITY_MEAN.name, LOG_ODDS_MEAN.name})


def test_pretrained_only_leaves_the_randomly_initialised_models_out_and_says_so(trained_models, tmp_path, capsys):
    from train.combine import main as combine

    data_dir, output_dir = trained_models
    models = tmp_path / "models"
    models.mkdir()
    for path in output_dir.iterdir():
        if path.name != COMBINED_FILE:
            (models / path.name).symlink_to(path)
    assert combine(["--data-dir", str(data_dir), "--models-dir", str(models), "--pretrained-only"]) == 0
    stored = json.loads((models / COMBINED_FILE).read_text())
    assert stored["members"] == ["efficientnet_lite0"]  # the one ImageNet model on this split
    for name in ("scratch_cnn", "inception_v3", "efficientnet_b3"):
        assert stored["selection"]["left_out"][name] == (
            "not a candidate under --pretrained-only: its card gives its initial weights as "
            "'random (trained from scratch)'"
        )
    arguments = ["--data-dir", str(data_dir), "--models-dir", str(models), "--models", "scratch_cnn"]
    assert combine([*arguments, "--pretrained-only"]) == 2
    assert capsys.readouterr().err.startswith(
        f"error: no candidate model is left in {models}:\n  scratch_cnn: not a candidate under --pretrained-only"
    )


def test_train_combine_measures_the_combination_where_every_member_has_a_held_out_run(trained_models, tmp_path):
    """Held-out runs that are copies of the members (same weights, same split) must reproduce the
    test metrics exactly; a source a member has no weights for is named with what to train."""
    from train.combine import main as combine

    data_dir, output_dir = trained_models
    models = tmp_path / "models"
    shutil.copytree(output_dir, models)
    member = models / "scratch_cnn"
    shutil.copytree(output_dir / "scratch_cnn", member / "holdout-clinic_x")
    shutil.copy(output_dir / "imagenet_features.keras", member)  # the copied card's gate path, one folder up
    (member / "holdout-clinic_y").mkdir()
    shutil.copy(output_dir / "scratch_cnn" / "metrics.json", member / "holdout-clinic_y")
    shutil.copytree(output_dir / "scratch_cnn", member / "holdout-clinic_z")  # weights newer than their card
    with open(member / "holdout-clinic_z" / "model.keras", "ab") as weights:
        weights.write(b"retrained")
    assert combine(["--data-dir", str(data_dir), "--models-dir", str(models), "--models", "scratch_cnn"]) == 0
    stored = json.loads((models / COMBINED_FILE).read_text())
    held_out = stored["holdout_metrics"]["clinic_x"]
    assert held_out["roc_auc"] == stored["metrics"]["roc_auc"]
    assert held_out["at_threshold"] == stored["metrics"]["at_threshold"]
    assert held_out.get("flagged_by_diagnosis") == stored["metrics"].get("flagged_by_diagnosis")
    assert held_out["members_roc_auc"] == {"scratch_cnn": held_out["roc_auc"]}
    assert list(stored["holdout_not_measured"]) == ["clinic_y", "clinic_z"]
    assert "scratch_cnn has no readable holdout-clinic_y/card.json" in stored["holdout_not_measured"]["clinic_y"]
    assert "does not match the sha256" in stored["holdout_not_measured"]["clinic_z"]
    assert "train.calibrate --models NAME --holdout-source clinic_z" in stored["holdout_not_measured"]["clinic_z"]
    row = plots.holdout_table([Measured.of_combined(CombinedSpec.read(models))]).iloc[0]
    assert row["Held-out source"] == "clinic_x" and row["ROC AUC"] == held_out["roc_auc"]


def test_a_rerun_with_an_output_cache_scores_nothing_and_selects_the_same(trained_models, tmp_path, monkeypatch):
    from melanoma.inference import Predictor
    from train.combine import main as combine

    data_dir, output_dir = trained_models
    models = tmp_path / "models"
    shutil.copytree(output_dir, models)
    arguments = ["--data-dir", str(data_dir), "--models-dir", str(models), "--output-cache", str(tmp_path / "cache")]
    assert combine(arguments) == 0
    first = json.loads((models / COMBINED_FILE).read_text())

    def scored_again(self, pixels, batch_size=32):
        raise AssertionError(f"{self.name} was scored again")

    with monkeypatch.context() as patched:
        patched.setattr(Predictor, "raw_outputs", scored_again)
        assert combine(arguments) == 0
    second = json.loads((models / COMBINED_FILE).read_text())
    first.pop("created_at"), second.pop("created_at")
    assert second == first
    for entry in (tmp_path / "cache").glob("*.npy"):  # a damaged entry is scored again, not an error
        entry.write_bytes(b"not an array")
    assert combine(arguments) == 0
    third = json.loads((models / COMBINED_FILE).read_text())
    third.pop("created_at")
    assert third == first


def install_held_out_copies(output_dir, models_dir, members: list[str]) -> None:
    """Each member's trained fixture copied in as its own held-out run at "clinic_x" (copies, since
    scoring records outputs in the held-out folder)."""
    for name in members:
        (models_dir / name).mkdir()
        shutil.copytree(
            output_dir / name,
            models_dir / name / "holdout-clinic_x",
            ignore=shutil.ignore_patterns("logs", "checkpoint"),
        )
        (models_dir / name / "imagenet_features.keras").symlink_to(output_dir / "imagenet_features.keras")  # its gate


def test_each_members_held_out_run_is_scored_under_its_own_name(trained_models, tmp_path):
    """Every held-out folder is called holdout-<source>: two members' runs once collided under that
    one name, and the 'combination' was the last member alone."""
    from sklearn.metrics import brier_score_loss

    from melanoma.data import join_split, load_labelled_images, read_split
    from train.combine import held_out_readings, score_splits

    data_dir, output_dir = trained_models
    members = ["scratch_cnn", "efficientnet_b3"]
    install_held_out_copies(output_dir, tmp_path, members)
    labelled = load_labelled_images(data_dir).table
    measured, not_measured = held_out_readings(members, PROBABILITY_MEAN, str(tmp_path), labelled, 0.9)
    assert not not_measured and set(measured["clinic_x"]["members_roc_auc"]) == set(members)
    # The held-out runs are copies of the members, so the combination is the mean of the members' own readings.
    table = join_split(labelled, read_split(output_dir / members[0]))
    scores, labels = score_splits([load_predictor(name, str(output_dir)) for name in members], table)
    brier = {name: brier_score_loss(labels["test"], scores["test"][name].melanoma) for name in members}
    mean = brier_score_loss(
        labels["test"], PROBABILITY_MEAN.average([scores["test"][name].melanoma for name in members])
    )
    assert measured["clinic_x"]["brier_score"] == pytest.approx(mean, abs=1e-9)
    # Not one member's alone (the collision's symptom): apart by more than float rounding. How far
    # apart depends on the fixture's weights (once 9e-5), so the margin tests rounding, not size.
    assert all(alone != pytest.approx(mean, abs=1e-7) for alone in brier.values()), (mean, brier)


def test_a_held_out_combination_is_measured_again_from_recorded_outputs_without_weights(trained_models, tmp_path):
    """Held-out weights stay out of git: the outputs their first scoring recorded (tracked beside the
    card) measure the combination again on a fresh clone, and stop counting once the weights change."""
    from melanoma.data import load_labelled_images
    from melanoma.files import read_json_object, write_json
    from train.combine import held_out_readings
    from train.outputs import RECORDED_OUTPUTS

    data_dir, output_dir = trained_models
    members = ["scratch_cnn", "efficientnet_b3"]
    install_held_out_copies(output_dir, tmp_path, members)
    labelled = load_labelled_images(data_dir).table
    stale = tmp_path / "scratch_cnn" / "holdout-clinic_x" / RECORDED_OUTPUTS / "0123456789abcdef-earlier-weights.npy"
    stale.parent.mkdir()
    np.save(stale, np.zeros(3))
    with_weights, _ = held_out_readings(members, LOG_ODDS_MEAN, str(tmp_path), labelled, 0.9)
    assert not stale.exists()  # recording for new weights removes the old weights' outputs
    for name in members:
        run = tmp_path / name / "holdout-clinic_x"
        assert len(list((run / RECORDED_OUTPUTS).glob("*.npy"))) == 2  # validation and test
        (run / "model.keras").unlink()
    recorded, not_measured = held_out_readings(members, LOG_ODDS_MEAN, str(tmp_path), labelled, 0.9)
    assert not not_measured and recorded == with_weights
    # Another data folder, without the run's images, is named as the cause instead of failing.
    _, not_measured = held_out_readings(members, LOG_ODDS_MEAN, str(tmp_path), labelled.iloc[:0], 0.9)
    assert "this data folder holds 0 val and 0 test images" in not_measured["clinic_x"]
    # New weights (a retrained run's card) make the old outputs someone else's.
    card_path = tmp_path / "efficientnet_b3" / "holdout-clinic_x" / "card.json"
    write_json(card_path, {**read_json_object(card_path), "sha256": "0" * 64})
    measured, not_measured = held_out_readings(members, LOG_ODDS_MEAN, str(tmp_path), labelled, 0.9)
    assert not measured
    assert "efficientnet_b3 has neither a servable holdout-clinic_x/model.keras" in not_measured["clinic_x"]
    assert "--holdout-source clinic_x" in not_measured["clinic_x"]


def test_predict_combined_is_the_mean_of_its_members(trained_models, capsys):
    data_dir, output_dir = trained_models
    images = sorted((data_dir / "images").glob("*.jpg"))[:4]
    assert cli(["--models-dir", str(output_dir), "predict", "--model", "combined", "--json", *map(str, images)]) == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    spec = CombinedSpec.read(output_dir)
    pixels = [read_image(str(p)).pixels for p in images]
    expected = np.mean([load_predictor(m, output_dir).probabilities(pixels) for m in spec.members], axis=0)
    assert [r["probability"] for r in rows] == pytest.approx(expected, abs=1e-6)
    assert all(r["model"] == "combined" and r["threshold"] == spec.threshold for r in rows)


def test_models_lists_the_combined_reading_with_its_test_auc(trained_models, capsys):
    _, output_dir = trained_models
    assert cli(["--models-dir", str(output_dir), "models"]) == 0
    row = next(line for line in capsys.readouterr().out.splitlines() if line.startswith("combined ")).split()
    spec = CombinedSpec.read(output_dir)
    assert row[1:4] == ["-", f"{spec.threshold:.3f}", f"{spec.test_auc:.3f}"]


def test_a_log_odds_combinations_map_is_the_drop_of_its_combined_probability(trained_models):
    """Averaging the members' drops of probability would misstate a log-odds combination: a member
    at 0.01 that a patch moves to 0.03 moves their mean log-odds more than one moved from 0.5 to 0.4."""
    data_dir, output_dir = trained_models
    members = [load_predictor(name, output_dir) for name in ("scratch_cnn", "efficientnet_lite0")]
    spec = CombinedSpec(tuple(member.name for member in members), 0.5, {}, combination=LOG_ODDS_MEAN)
    image = read_image(str(sorted((data_dir / "images").glob("*.jpg"))[1])).pixels
    scores = CombinedPredictor(spec, members).occlusion(image, 25)
    size = members[0].serving.input_size
    assert members[1].serving.input_size == size  # the exact case
    view = to_model_input(image, size).astype(np.float32)
    grey = view.copy()
    grey[:25, :25] = 127.5
    calibrated = [member.calibrated_model.predict_on_batch(np.stack([view, grey]))[:, 0] for member in members]
    intact, occluded = (LOG_ODDS_MEAN.average([p[row : row + 1] for p in calibrated])[0] for row in (0, 1))
    assert scores[5, 5] == pytest.approx(intact - occluded, abs=1e-4)
    plain = np.mean([p[0] - p[1] for p in calibrated])
    assert abs(plain - (intact - occluded)) > 1e-4  # the two averages differ here, so the test tells them apart


def test_the_combined_map_is_the_drop_of_the_mean_calibrated_probability(trained_models, tmp_path):
    data_dir, output_dir = trained_models
    combined = CombinedPredictor.load(output_dir)
    image = read_image(str(sorted((data_dir / "images").glob("*.jpg"))[0])).pixels
    scores = combined.occlusion(image, 25)
    size = combined.melanoma_members[0].serving.input_size
    assert all(member.serving.input_size == size for member in combined.melanoma_members)  # the exact case
    view = to_model_input(image, size).astype(np.float32)
    grey = view.copy()
    grey[:25, :25] = 127.5
    drops = [
        member.calibrated_model.predict_on_batch(np.stack([view, grey]))[:, 0] for member in combined.melanoma_members
    ]
    assert scores[5, 5] == pytest.approx(np.mean([d[0] - d[1] for d in drops]), abs=1e-4)
    out = tmp_path / "overlay.png"
    assert (
        cli(
            [
                "--models-dir",
                str(output_dir),
                "explain",
                "--model",
                "combined",
                "--out",
                str(out),
                str(sorted((data_dir / "images").glob("*.jpg"))[0]),
            ]
        )
        == 0
    )
    assert Image.open(out).size == (image.shape[1], image.shape[0])


def test_a_missing_member_or_file_is_named_and_the_other_models_still_serve(trained_models, tmp_path, capsys):
    _, output_dir = trained_models
    models = tmp_path / "models"
    shutil.copytree(output_dir, models)
    spec = CombinedSpec.read(models)
    shutil.rmtree(models / spec.members[0])
    with pytest.raises(CombinedUnavailableError, match=f"its member {spec.members[0]} is unavailable"):
        CombinedPredictor.load(models)
    assert cli(["--models-dir", str(models), "predict", "--model", "combined", "x.jpg"]) == 2
    assert f"its member {spec.members[0]} is unavailable" in capsys.readouterr().err
    other = next(name for name in ("scratch_cnn", "efficientnet_lite0", "inception_v3") if name != spec.members[0])
    assert load_predictor(other, models).name == other
    (models / COMBINED_FILE).unlink()
    assert cli(["--models-dir", str(models), "predict", "--model", "combined", "x.jpg"]) == 2
    assert "No combined reading is installed" in capsys.readouterr().err


def test_train_evaluate_measures_the_combined_reading_on_a_folder(trained_models, capsys):
    from train import evaluate

    data_dir, output_dir = trained_models
    assert evaluate.main(["--model", "combined", "--models-dir", str(output_dir), "--data-dir", str(data_dir)]) == 0
    printed = json.loads(capsys.readouterr().out)
    spec = CombinedSpec.read(output_dir)
    images = sorted((data_dir / "images").glob("*.jpg"))
    labels = {
        row.split(",")[0]: int(row.split(",")[1]) for row in (data_dir / "labels.csv").read_text().splitlines()[1:]
    }
    pixels = [read_image(str(p)).pixels for p in images]
    mean = np.mean([load_predictor(m, output_dir).probabilities(pixels) for m in spec.members], axis=0)
    from sklearn.metrics import roc_auc_score

    assert printed["roc_auc"] == pytest.approx(roc_auc_score([labels[p.stem] for p in images], mean))
    assert printed["n_images"] == len(images)


def test_train_calibrate_refits_a_held_out_run_and_names_a_missing_one(trained_models, tmp_path):
    """A held-out run's weights are not in git: one retrained elsewhere is installed by refitting its card."""
    from train.calibrate import main as calibrate

    data_dir, output_dir = trained_models
    models = tmp_path / "models"
    shutil.copytree(output_dir, models)
    held_out = models / "scratch_cnn" / "holdout-clinic_x"
    shutil.copytree(output_dir / "scratch_cnn", held_out)
    card = json.loads((held_out / "card.json").read_text())
    card["serving"]["ood"]["features_sha256"] = "0" * 64  # pinned to another folder's extractor
    (held_out / "card.json").write_text(json.dumps(card))
    arguments = ["--data-dir", str(data_dir), "--models-dir", str(models), "--models", "scratch_cnn"]
    assert calibrate([*arguments, "--holdout-source", "clinic_x"]) == 0
    refitted = json.loads((held_out / "card.json").read_text())["serving"]["ood"]
    assert refitted["features"] == "../../imagenet_features.keras"
    assert (
        refitted["features_sha256"]
        == json.loads((models / "scratch_cnn" / "card.json").read_text())["serving"]["ood"]["features_sha256"]
    )
    assert calibrate([*arguments, "--holdout-source", "clinic_q"]) == 2


def test_a_combined_differential_of_one_diagnosis_model_is_that_models_own(trained_models, tmp_path, capsys):
    """train.combine over the fixture's diagnosis model alone: every door then reads its averaged
    differential, which for one member must be the model's own reading, threshold and test metrics."""
    from train import evaluate
    from train.combine import main as combine

    data_dir, output_dir = trained_models
    diagnosis_data, models = data_dir.parent / "diagnosis_data", tmp_path / "models"
    models.mkdir()
    for name in (DIAGNOSIS_MODEL, "imagenet_features.keras"):
        (models / name).symlink_to(output_dir / name)
    assert combine(["--data-dir", str(diagnosis_data), "--models-dir", str(models), "--models", DIAGNOSIS_MODEL]) == 0
    assert "averaged differential of efficientnet_lite0_diagnosis: validation" in capsys.readouterr().out
    spec, model = CombinedSpec.read(models), load_predictor(DIAGNOSIS_MODEL, models)
    assert spec.differential.members == (DIAGNOSIS_MODEL,) and spec.models == (DIAGNOSIS_MODEL,)
    assert "members" not in json.loads((models / COMBINED_FILE).read_text())["differential"]["selection"]
    assert spec.differential.malignant_threshold == pytest.approx(model.entry.malignant_threshold)
    own, combined = model.entry.metrics["diagnoses"], spec.metrics["diagnoses"]
    assert combined["confusion_matrix"] == own["confusion_matrix"] and combined["recall"] == own["recall"]
    assert combined["balanced_multiclass_accuracy"] == pytest.approx(own["balanced_multiclass_accuracy"])
    assert combined["malignant"]["roc_auc"] == pytest.approx(own["malignant"]["roc_auc"])

    images = sorted((diagnosis_data / "images").glob("*.jpg"))[:6]
    rows = {}
    for name in ("combined", DIAGNOSIS_MODEL):
        assert cli(["--models-dir", str(models), "predict", "--model", name, "--json", *map(str, images)]) == 0
        rows[name] = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    for combined_row, own_row in zip(rows["combined"], rows[DIAGNOSIS_MODEL]):
        assert combined_row["diagnoses"] == pytest.approx(own_row["diagnoses"], abs=1e-6)
        assert combined_row["diagnoses"]["MEL"] == pytest.approx(combined_row["probability"])
        assert combined_row["malignant"] == pytest.approx(own_row["malignant"], abs=1e-6)
        assert combined_row["malignant_threshold"] == spec.differential.malignant_threshold

    out = tmp_path / "metrics.json"
    arguments = ["--models-dir", str(models), "--data-dir", str(diagnosis_data), "--split", "test", "--out", str(out)]
    assert evaluate.main(["--model", "combined", *arguments]) == 0
    measured = json.loads(out.read_text())["diagnoses"]
    assert measured["balanced_multiclass_accuracy"] == pytest.approx(own["balanced_multiclass_accuracy"])
    assert measured["malignant"]["roc_auc"] == pytest.approx(own["malignant"]["roc_auc"])


def test_a_differential_naming_no_member_or_a_melanoma_model_is_refused_with_what_to_do(trained_models, tmp_path):
    _, output_dir = trained_models
    models = tmp_path / "models"
    models.mkdir()
    for name in ("efficientnet_lite0", "imagenet_features.keras"):
        (models / name).symlink_to(output_dir / name)
    stored = {"members": ["efficientnet_lite0"], "threshold": 0.1, "metrics": {"roc_auc": 0.9}}
    (models / COMBINED_FILE).write_text(
        json.dumps({**stored, "differential": {"members": [], "malignant_threshold": 0.2}})
    )
    with pytest.raises(
        CombinedUnavailableError, match=r"differential.members must name at least one model; found none\)"
    ):
        CombinedSpec.read(models)
    (models / COMBINED_FILE).write_text(json.dumps({**stored, "combination": "median"}))
    with pytest.raises(CombinedUnavailableError, match="its combination 'median' is not one of: mean of the members'"):
        CombinedSpec.read(models)
    differential = {"members": ["efficientnet_lite0"], "malignant_threshold": 0.2}
    (models / COMBINED_FILE).write_text(json.dumps({**stored, "differential": differential}))
    with pytest.raises(CombinedUnavailableError, match="efficientnet_lite0 are not diagnosis models"):
        CombinedPredictor.load(models)
    assert load_predictor("efficientnet_lite0", models).name == "efficientnet_lite0"  # still serves alone


STORED = {"members": ["efficientnet_lite0"], "threshold": 0.1, "metrics": {"roc_auc": 0.9}}


@pytest.mark.parametrize(
    "stored, reason",
    [
        ({**STORED, "members": []}, "members must name at least one model; found none"),
        ({**STORED, "members": "efficientnet_lite0"}, "members must be a list of names; found 'efficientnet_lite0'"),
        ({**STORED, "members": [1]}, "members must be a list of names"),
        # A repeated member weighed double in the mean; the combined reading as a member recursed without end.
        ({**STORED, "members": ["a", "a", "b"]}, "members must name each model once; found 'a' more than once"),
        ({**STORED, "members": ["combined"]}, "members must name installed models; found 'combined', the combined"),
        (
            {**STORED, "differential": {"members": ["a", "a"], "malignant_threshold": 0.5}},
            "differential.members must name each model once",
        ),
        ({**STORED, "metrics": {}}, "metrics.roc_auc must be a number from 0 to 1; found None"),
        ({**STORED, "metrics": []}, "metrics must be a JSON object; found []"),
        ({**STORED, "metrics": {"roc_auc": "0.9"}}, "metrics.roc_auc must be a number from 0 to 1; found '0.9'"),
        ({**STORED, "threshold": "0.1"}, "threshold must be a number from 0 to 1; found '0.1'"),
        ({**STORED, "selection": []}, "selection must be a JSON object"),
        ({**STORED, "differential": "abc"}, "differential must be a JSON object; found 'abc'"),
        ({**STORED, "differential": {"members": ["a"]}}, "missing key 'malignant_threshold'"),
        ({key: value for key, value in STORED.items() if key != "members"}, "missing key 'members'"),
        (["efficientnet_lite0"], "the file must be a JSON object"),
    ],
)
def test_a_malformed_combined_json_is_refused_naming_the_field(trained_models, tmp_path, capsys, stored, reason):
    """members: [] was accepted and failed every reading (numpy: need at least one array to stack), a
    string was read as one member per letter, and metrics: {} or [] crashed the models listing."""
    _, output_dir = trained_models
    models = tmp_path / "models"
    models.mkdir()
    for name in ("efficientnet_lite0", "imagenet_features.keras"):
        (models / name).symlink_to(output_dir / name)
    (models / COMBINED_FILE).write_text(json.dumps(stored))
    with pytest.raises(CombinedUnavailableError, match=f"{COMBINED_FILE} is unreadable \\(.*{re.escape(reason)}"):
        CombinedSpec.read(models)
    assert CombinedSpec.load(models) is None
    assert cli(["--models-dir", str(models), "predict", "--model", "combined", "x.jpg"]) == 2
    assert reason in capsys.readouterr().err
    assert cli(["--models-dir", str(models), "models"]) == 0  # the model itself is still listed, and serves
    listed = capsys.readouterr().out
    assert "efficientnet_lite0" in listed
    combined_row = next(line for line in listed.splitlines() if line.startswith("combined "))
    assert "unavailable: " in combined_row and reason in combined_row  # said, not silently left out
