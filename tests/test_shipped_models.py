"""The shipped models: intact, calibrated, and as good on their own test split as metrics.json says.

The integrity checks need no images; the accuracy check skips when the shared HAM10000 folder is
absent (set MELANOMA_SHARED_DATA to point at it).
"""

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import roc_auc_score

from melanoma.data import load_pixels
from melanoma.files import sha256_of
from melanoma.images import read_image
from melanoma.inference import load_predictor
from melanoma.store import SHIPPED_MODELS_DIR, list_models
from tests.conftest import SHARED_DATA

# One of the study's three (inception_v3's 89 MB and efficientnet_b3's 43 MB are not shipped, to keep models/
# well under 200 MB),
# Lite0 with and without colour constancy and a second seed of the former, Lite2 at 192 px, and the
# five Lite0s trained on the seven diagnoses.
SHIPPED = [
    "scratch_cnn",
    "efficientnet_lite0",
    "efficientnet_lite0_plain",
    "efficientnet_lite0_seed7",
    "efficientnet_lite2_192",
    "efficientnet_lite0_diagnosis",
    "efficientnet_lite0_diagnosis_plain",
    "efficientnet_lite0_diagnosis_sampled",
    "efficientnet_lite0_diagnosis_sampled_192",
    "efficientnet_lite0_diagnosis_sampled_cc_192",
]
needs_images = pytest.mark.skipif(
    not (SHARED_DATA / "HAM10000_metadata.csv").is_file(), reason=f"shared HAM10000 data not found at {SHARED_DATA}"
)


def shipped(name: str):
    installed = {entry.name: entry for entry in list_models(SHIPPED_MODELS_DIR)}
    assert name in installed, f"{name} is not shipped in {SHIPPED_MODELS_DIR}"
    entry = installed[name]
    assert entry.available, entry.problem
    return entry


@pytest.mark.parametrize("name", SHIPPED)
def test_shipped_model_is_intact_and_small(name):
    entry = shipped(name)
    path = entry.folder / "model.keras"
    assert sha256_of(path) == entry.card.sha256
    assert path.stat().st_size < 100 * 2**20


@pytest.mark.parametrize("name", SHIPPED)
@needs_images
def test_shipped_model_matches_its_metrics(name):
    entry = shipped(name)
    split = pd.read_csv(entry.folder / "split.csv", dtype={"image_id": str})
    test = split[split.split == "test"]
    # 200 test images, every melanoma among them kept in proportion.
    sample = pd.concat(
        [part.sample(n=round(200 * len(part) / len(test)), random_state=0) for _, part in test.groupby("label")]
    )
    paths = [str(next((SHARED_DATA / "images").glob(f"{image_id}.*"))) for image_id in sample.image_id]
    predictor = load_predictor(name, SHIPPED_MODELS_DIR)
    probabilities = predictor.calibrate(predictor.raw_outputs(load_pixels(paths, entry.input_size))).melanoma
    auc = roc_auc_score(sample.label, probabilities)
    # 200 images give a standard error of about 0.03 on the AUC; 0.08 is well beyond noise.
    assert abs(auc - entry.metrics["roc_auc"]) < 0.08, (
        f"AUC on 200 test images {auc:.3f} vs metrics.json {entry.metrics['roc_auc']:.3f}"
    )
    assert np.mean(probabilities[sample.label.to_numpy() == 1]) > np.mean(probabilities[sample.label.to_numpy() == 0])


@pytest.mark.parametrize("name", SHIPPED)
@needs_images
def test_shipped_gate_passes_its_test_images_and_stops_other_pictures(name):
    from train.gate_check import non_dermoscopic_images

    entry = shipped(name)
    split = pd.read_csv(entry.folder / "split.csv", dtype={"image_id": str})
    test = split[split.split == "test"].sample(n=200, random_state=1)
    paths = [str(next((SHARED_DATA / "images").glob(f"{image_id}.*"))) for image_id in test.image_id]
    predictor = load_predictor(name, SHIPPED_MODELS_DIR)
    own = predictor.gate(list(load_pixels(paths, 160)))
    others = non_dermoscopic_images()
    foreign = predictor.gate(list(others.values()))
    assert np.mean([not r.in_distribution for r in own]) <= 0.02
    assert np.mean([not r.in_distribution for r in foreign]) >= 0.95, [
        n for n, r in zip(others, foreign) if r.in_distribution
    ]


@pytest.mark.parametrize("name", SHIPPED)
def test_the_app_explains_the_registry_gradcam_layer_the_tests_check(name):
    """ui.gradcam and the CLI pass Predictor.gradcam_layer; the explanation tests use the registry's."""
    from melanoma.models.architectures import get_architecture

    predictor = load_predictor(name, SHIPPED_MODELS_DIR)
    layer = get_architecture(predictor.entry.architecture).gradcam_layer
    assert predictor.gradcam_layer == layer
    assert len(predictor.model.get_layer(layer).output.shape) == 4


@needs_images
def test_the_shipped_models_score_as_they_did_before_this_round():
    """Calibrated probabilities of eight shared images, computed before the refactors with the code that
    trained each model (4d5cacc for the first three, bbdd815 for the rest): each shipped model still gives them."""
    reference = json.loads((Path(__file__).parent / "data" / "shipped_probabilities.json").read_text())
    images = [read_image(str(SHARED_DATA / "images" / f"{image_id}.jpg")).pixels for image_id in reference["images"]]
    for name, expected in reference["probabilities"].items():
        probabilities = load_predictor(name, SHIPPED_MODELS_DIR).probabilities(images)
        np.testing.assert_allclose(probabilities, expected, atol=1e-6, err_msg=name)


@needs_images
def test_the_shipped_combined_differential_is_the_mean_its_file_says():
    """The shipped combined reading's averaged differential, recomputed from its members on 150 test
    images: one set of numbers (MEL = the combined melanoma probability), and a balanced accuracy
    near the one combined.json records."""
    from sklearn.metrics import balanced_accuracy_score

    from melanoma import diagnoses
    from melanoma.combined import CombinedPredictor

    combined = CombinedPredictor.load(SHIPPED_MODELS_DIR)
    differential = combined.spec.differential
    assert differential is not None and set(differential.members) <= set(SHIPPED)
    split = pd.read_csv(combined.members[0].entry.folder / "split.csv", dtype={"image_id": str})
    test = split[split.split == "test"].sample(n=150, random_state=2)
    labelled = pd.read_csv(SHARED_DATA / "HAM10000_metadata.csv").set_index("image_id")
    images = [read_image(str(SHARED_DATA / "images" / f"{image_id}.jpg")).pixels for image_id in test.image_id]
    scores = combined.read(images).scores
    np.testing.assert_allclose(scores.diagnoses[:, diagnoses.index_of("MEL")], scores.melanoma, atol=1e-9)
    np.testing.assert_allclose(scores.diagnoses.sum(axis=1), 1.0, atol=1e-9)
    truth = [diagnoses.index_of(labelled.dx[image_id].upper()) for image_id in test.image_id]
    recorded = combined.spec.metrics["diagnoses"]["balanced_multiclass_accuracy"]
    # 150 images hold a handful of the rare diagnoses, so only a large change shows here.
    assert abs(balanced_accuracy_score(truth, scores.predicted) - recorded) < 0.2
