"""Diagnosis models: seven classes read from every layout, calibrated, served, explained and shown."""

import json
import shutil

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import balanced_accuracy_score, confusion_matrix, roc_auc_score

from melanoma import diagnoses
from melanoma.__main__ import main as cli
from melanoma.cases import model_view
from melanoma.data import DataError, load_labelled_images, load_pixels
from melanoma.images import read_image
from melanoma.inference import load_predictor
from melanoma.metrics import evaluate_diagnoses, flagged_by_diagnosis
from melanoma.store import ModelUnavailableError
from tests.conftest import DIAGNOSIS_MODEL
from tests.synthetic import make_dataset
from train.run import main as train


def write_labels(folder, text: str):
    make_dataset(folder, "generic", n=8)
    (folder / "labels.csv").write_text(text)
    return folder


def test_a_dx_column_gives_the_diagnosis_and_the_melanoma_label(tmp_path):
    ids = [f"ISIC_{i:07d}" for i in range(8)]
    codes = ["mel", "MEL", "nv", "BCC", "akiec", "bkl", "df", "vasc"]
    folder = write_labels(tmp_path, "image_id,dx\n" + "".join(f"{i},{c}\n" for i, c in zip(ids, codes)))
    table = load_labelled_images(folder).table
    assert list(table.dx) == ["MEL", "MEL", "NV", "BCC", "AKIEC", "BKL", "DF", "VASC"]
    assert list(table.label) == [1, 1, 0, 0, 0, 0, 0, 0]


def test_an_unknown_code_and_a_contradicting_label_name_their_line(tmp_path):
    ids = [f"ISIC_{i:07d}" for i in range(8)]
    rows = [(ids[0], 1, "MEL"), (ids[1], 0, "naevus"), (ids[2], 1, "NV")] + [(i, 0, "NV") for i in ids[3:]]
    folder = write_labels(tmp_path, "image_id,label,dx\n" + "".join(f"{i},{label},{d}\n" for i, label, d in rows))
    with pytest.raises(DataError) as raised:
        load_labelled_images(folder)
    assert raised.value.problems == [
        f"labels.csv line 3: unknown dx 'naevus'; expected one of {diagnoses.ALLOWED_TEXT} (any case), or an empty "
        "value where the diagnosis is not known.",
        f"labels.csv line 4: label '1' contradicts dx 'NV' for {ids[2]}; label is 1 exactly when dx is MEL.",
    ]


def test_isic_and_ham_layouts_carry_the_diagnosis(tmp_path):
    isic = load_labelled_images(make_dataset(tmp_path / "isic", "isic2018", n=10)).table
    ham = load_labelled_images(make_dataset(tmp_path / "ham", "ham10000", n=10)).table
    for table in (isic, ham):
        assert list(table.dx) == ["MEL" if label else "NV" for label in table.label]


def test_class_calibration_recovers_a_known_temperature_and_prior_shift():
    rng = np.random.default_rng(0)
    true = diagnoses.ClassCalibration(2.0, (0.0, 1.5, -0.5, 0.3, 0.0, -1.0, 0.7))
    raw = rng.dirichlet(np.ones(7) * 0.5, size=20000)
    calibrated = true(raw)
    codes = [diagnoses.CODES[rng.choice(7, p=p)] for p in calibrated]
    fitted = diagnoses.fit_class_calibration(codes, raw)
    assert fitted.temperature == pytest.approx(2.0, rel=0.05)
    assert np.allclose(fitted.biases, true.biases, atol=0.1)
    assert np.allclose(diagnoses.ClassCalibration()(raw), raw, atol=1e-6)  # the default is the identity


def test_the_differential_keeps_the_melanoma_probability_that_the_verdict_reads():
    probabilities = np.array([[0.2, 0.5, 0.1, 0.05, 0.1, 0.03, 0.02]])
    adjusted = diagnoses.with_melanoma_probability(np.log(probabilities), np.array([0.36]))
    assert adjusted[0, 0] == pytest.approx(0.36) and adjusted.sum() == pytest.approx(1.0)
    assert adjusted[0, 1] / adjusted[0, 2] == pytest.approx(5.0)  # the others keep their proportions
    assert diagnoses.malignant_probability(adjusted)[0] == pytest.approx(0.36 + 0.8 * 0.15)
    # A softmax certain of melanoma (the rest rounds to 0) still shares 1 − P(MEL) by its logits.
    certain = diagnoses.with_melanoma_probability(
        np.array([[0.0, -800.0, -801.0, -900, -900, -900, -900]]), np.array([0.7])
    )
    assert certain.sum() == pytest.approx(1.0) and certain[0, 1] == pytest.approx(0.3 / (1 + np.exp(-1)))


def test_multiclass_metrics_equal_scikit_learn():
    rng = np.random.default_rng(1)
    codes = [diagnoses.CODES[i] for i in rng.integers(0, 7, 300)]
    probabilities = rng.dirichlet(np.ones(7), 300)
    metrics = evaluate_diagnoses(codes, probabilities, 0.4)
    true = [diagnoses.index_of(c) for c in codes]
    assert metrics["confusion_matrix"] == confusion_matrix(true, probabilities.argmax(1), labels=range(7)).tolist()
    assert metrics["balanced_multiclass_accuracy"] == pytest.approx(
        balanced_accuracy_score(true, probabilities.argmax(1))
    )
    malignant = np.isin(codes, diagnoses.MALIGNANT)
    assert metrics["malignant"]["roc_auc"] == pytest.approx(
        roc_auc_score(malignant, probabilities[:, [0, 2, 3]].sum(1))
    )
    flagged = flagged_by_diagnosis(codes, probabilities[:, 0], 0.2)
    assert flagged["BKL"]["flagged"] == pytest.approx(np.mean(probabilities[np.array(codes) == "BKL", 0] >= 0.2))


def test_the_fixture_diagnosis_model_learned_its_classes_and_reads_consistently(trained_models):
    _, output_dir = trained_models
    card = json.loads((output_dir / DIAGNOSIS_MODEL / "card.json").read_text())
    metrics = json.loads((output_dir / DIAGNOSIS_MODEL / "metrics.json").read_text())
    assert card["target"] == "diagnosis" and card["serving"]["classes"] == list(diagnoses.CODES)
    assert 0 < card["malignant_threshold"] < 1
    assert metrics["diagnoses"]["balanced_multiclass_accuracy"] >= 0.8
    assert metrics["diagnoses"]["malignant"]["roc_auc"] >= 0.9
    predictor = load_predictor(DIAGNOSIS_MODEL, output_dir)
    images = sorted((output_dir.parent / "diagnosis_data" / "images").glob("*.jpg"))[:14]
    scores = predictor.scores([read_image(str(p)).pixels for p in images])
    assert np.allclose(scores.diagnoses.sum(axis=1), 1.0) and np.allclose(scores.diagnoses[:, 0], scores.melanoma)
    raw = predictor.raw_outputs(load_pixels([str(p) for p in images], predictor.serving.input_size))
    assert np.allclose(scores.melanoma, predictor.serving.calibration(raw[:, 0]), atol=1e-6)


def test_predict_json_and_table_carry_the_differential(trained_models, capsys):
    _, output_dir = trained_models
    folder = output_dir.parent / "diagnosis_data" / "images"
    image = sorted(folder.glob("*.jpg"))[5]  # the third lesion: BCC (its first image is too pale for the gate)
    assert cli(["--models-dir", str(output_dir), "predict", "--model", DIAGNOSIS_MODEL, "--json", str(image)]) == 0
    row = json.loads(capsys.readouterr().out)
    scores = load_predictor(DIAGNOSIS_MODEL, output_dir).scores([read_image(str(image)).pixels])
    assert row["diagnoses"] == pytest.approx(dict(zip(diagnoses.CODES, scores.diagnoses[0])), abs=1e-6)
    assert row["malignant"] == pytest.approx(scores.malignant[0], abs=1e-6)
    assert row["skin_cancer"] == (row["malignant"] >= row["malignant_threshold"])
    assert cli(["--models-dir", str(output_dir), "predict", "--model", DIAGNOSIS_MODEL, str(image)]) == 0
    line = capsys.readouterr().out.strip().split("\t")
    assert line[2] == ("SUSPICIOUS for melanoma" if row["melanoma"] else "not flagged")  # as the app's verdicts
    assert line[3].startswith(f"skin cancer {row['malignant']:.4f} ")
    assert line[4] == diagnoses.short_differential(diagnoses.ranked(scores.diagnoses[0])) and line[4].startswith("BCC")


def test_the_skin_cancer_map_is_the_drop_of_the_calibrated_probability_shown(trained_models, tmp_path, capsys):
    """The map explains the number the reading shows, calibrated P(skin cancer), not the network's raw
    softmax sum: the class calibration and the melanoma column's Platt scaling reorder that sum."""
    _, output_dir = trained_models
    predictor = load_predictor(DIAGNOSIS_MODEL, output_dir)
    image = sorted((output_dir.parent / "diagnosis_data" / "images").glob("*.jpg"))[5]
    raw_map = tmp_path / "map.npy"
    options = ["--output", "malignant", "--patch-size", "25", "--out", str(tmp_path / "map.png"), "--npy", str(raw_map)]
    assert cli(["--models-dir", str(output_dir), "explain", "--model", DIAGNOSIS_MODEL, *options, str(image)]) == 0
    view = model_view(predictor, read_image(str(image)).pixels)
    grey = view.copy()
    grey[25:50, 25:50] = 127.5
    raw = predictor.network.predict_on_batch(np.stack([view, grey]))
    shown = predictor.calibrate(raw).malignant
    summed = raw[:, [0, 2, 3]].sum(axis=1)
    assert abs((summed[0] - summed[1]) - (shown[0] - shown[1])) > 1e-3  # the two maps differ here
    assert np.load(raw_map)[30, 30] == pytest.approx(shown[0] - shown[1], abs=1e-5)
    # The line names the number the map explains, as predict reads it (with test-time augmentation).
    reading = predictor.scores([read_image(str(image)).pixels])
    assert capsys.readouterr().out.split("\t")[1] == f"skin-cancer probability {reading.malignant[0]:.4f}"


def test_diagnosis_target_on_binary_labels_is_refused_before_training(tmp_path, capsys):
    data = make_dataset(tmp_path / "data", "generic", n=20)
    code = train(
        [
            "--data-dir",
            str(data),
            "--output-dir",
            str(tmp_path / "out"),
            "--models",
            "scratch_cnn",
            "--target",
            "diagnosis",
            "--weights",
            "none",
        ]
    )
    assert (
        code == 2
        and "--target diagnosis needs the diagnosis of every image, and 20 of 20 have none" in capsys.readouterr().err
    )
    assert not (tmp_path / "out").exists()


def test_a_card_without_class_names_is_refused_with_the_reason(trained_models, tmp_path):
    _, output_dir = trained_models
    models = tmp_path / "models"
    shutil.copytree(output_dir / DIAGNOSIS_MODEL, models / DIAGNOSIS_MODEL)
    shutil.copy(output_dir / "imagenet_features.keras", models / "imagenet_features.keras")
    card = json.loads((models / DIAGNOSIS_MODEL / "card.json").read_text())
    del card["serving"]["classes"]
    (models / DIAGNOSIS_MODEL / "card.json").write_text(json.dumps(card))
    with pytest.raises(
        ModelUnavailableError, match="the network has 7 outputs but card.json's serving section names 0 classes"
    ):
        load_predictor(DIAGNOSIS_MODEL, models)


def test_a_bcc_reads_other_skin_cancer_beside_melanoma_not_flagged(trained_models, monkeypatch):
    from streamlit.testing.v1 import AppTest

    _, output_dir = trained_models
    monkeypatch.setenv("MELANOMA_MODELS_DIR", str(output_dir))
    image = sorted((output_dir.parent / "diagnosis_data" / "images").glob("*.jpg"))[5]
    assert pd.read_csv(output_dir.parent / "diagnosis_data" / "labels.csv").dx[5] == "BCC"
    at = AppTest.from_file("../app.py", default_timeout=300)
    at.run()
    at.selectbox[0].set_value(DIAGNOSIS_MODEL)
    at.file_uploader[0].set_value(("lesion.jpg", image.read_bytes(), "image/jpeg"))
    at.run()
    assert not at.exception
    successes, errors = [box.value for box in at.success], [box.value for box in at.error]
    assert any(text.startswith("Not flagged as melanoma") for text in successes)
    assert any(text.startswith("Other skin cancer: suspicious") and "basal cell carcinoma" in text for text in errors)
    assert any(text.startswith("Differential: basal cell carcinoma") for text in (m.value for m in at.markdown))


def test_grad_cam_of_softmax_classes_is_the_cam_of_their_log_odds():
    """Computed by hand: d/dF of log(P(in) / P(out)) through the pooled head is the same at every
    position, sum_k W[c, k] g_k / (H W), with g_k = p_k / P(in) inside and -p_k / P(out) outside."""
    import keras
    import tensorflow as tf
    from keras import layers

    from melanoma.explain.gradcam import grad_cam
    from melanoma.inference import class_output

    keras.utils.set_random_seed(0)
    inputs = keras.Input((32, 32, 3))
    features = layers.Conv2D(6, 3, padding="same", activation="relu", name="features")(
        layers.Rescaling(1 / 255)(inputs)
    )
    head = layers.Dense(7, activation="softmax", name="head_diagnosis_probabilities")
    network = keras.Model(inputs, head(layers.GlobalAveragePooling2D()(features)))
    image = np.random.default_rng(3).integers(0, 256, (32, 32, 3)).astype(np.float32)
    for codes in (("MEL",), diagnoses.MALIGNANT):
        cam = grad_cam(class_output(network, codes, "explained"), image, "features")
        maps = keras.Model(inputs, features)(image[None]).numpy()[0]
        kernel, bias = (w.numpy() for w in head.weights)
        logits = maps.mean(axis=(0, 1)) @ kernel + bias
        p = np.exp(logits - logits.max()) / np.exp(logits - logits.max()).sum()
        inside = np.isin(np.arange(7), [diagnoses.index_of(c) for c in codes])
        g = np.where(inside, p / p[inside].sum(), -p / p[~inside].sum())
        expected = np.maximum(maps @ (kernel @ g) / (32 * 32), 0)
        expected = tf.image.resize(expected[None, ..., None], (32, 32), method="bilinear")[0, ..., 0].numpy()
        assert expected.max() > 0
        np.testing.assert_allclose(cam, expected / expected.max(), atol=1e-4)
