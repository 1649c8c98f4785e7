"""The shipped models: intact, and as good on their own test split as metrics.json says.

Skipped when the shared HAM10000 folder is absent (set MELANOMA_SHARED_DATA to point at it).
"""

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import roc_auc_score

from melanoma.config import DEFAULT_MODELS
from melanoma.data import load_pixels
from melanoma.files import sha256_of
from melanoma.inference import load_predictor, predict_pixels
from melanoma.store import DEFAULT_MODELS_DIR, list_models
from tests.conftest import SHARED_DATA

SHIPPED = list(DEFAULT_MODELS)
pytestmark = pytest.mark.skipif(not (SHARED_DATA / "HAM10000_metadata.csv").is_file(),
                                reason=f"shared HAM10000 data not found at {SHARED_DATA}")


@pytest.mark.parametrize("name", SHIPPED)
def test_shipped_model_matches_its_card_and_metrics(name):
    installed = {entry.name: entry for entry in list_models(DEFAULT_MODELS_DIR)}
    if name not in installed:
        pytest.skip(f"{name} is not shipped in {DEFAULT_MODELS_DIR}")
    entry = installed[name]
    assert entry.available, entry.problem
    assert sha256_of(entry.folder / "model.keras") == entry.card["sha256"]
    split = pd.read_csv(entry.folder / "split.csv", dtype={"image_id": str})
    test = split[split.split == "test"]
    # 200 test images, every melanoma among them kept in proportion.
    sample = pd.concat([part.sample(n=round(200 * len(part) / len(test)), random_state=0) for _, part in test.groupby("label")])
    paths = [str(next((SHARED_DATA / "images").glob(f"{image_id}.*"))) for image_id in sample.image_id]
    predictor = load_predictor(name, DEFAULT_MODELS_DIR)
    probabilities = predict_pixels(predictor.model, load_pixels(paths, entry.input_size), tta=predictor.tta)
    auc = roc_auc_score(sample.label, probabilities)
    # 200 images give a standard error of about 0.03 on the AUC; 0.08 is well beyond noise.
    assert abs(auc - entry.metrics["roc_auc"]) < 0.08, f"AUC on 200 test images {auc:.3f} vs metrics.json {entry.metrics['roc_auc']:.3f}"
    assert np.mean(probabilities[sample.label.to_numpy() == 1]) > np.mean(probabilities[sample.label.to_numpy() == 0])
