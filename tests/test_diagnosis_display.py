"""The seven diagnoses on the Compare, Model cards and Validate pages: the stored or measured numbers as shown,
and a dash, never None or nan, where a melanoma model measured none."""

import json

import numpy as np
import pandas as pd
import pytest
from streamlit.testing.v1 import AppTest

from melanoma import validation
from melanoma.diagnoses import CODES
from melanoma.store import find_model
from tests.conftest import DIAGNOSIS_MODEL
from tests.test_validation import diagnosis_zip

TIMEOUT = 300


@pytest.fixture
def open_page(trained_models, monkeypatch):
    """Open a page of the app on the fixture's models."""
    _, output_dir = trained_models
    monkeypatch.setenv("MELANOMA_MODELS_DIR", str(output_dir))

    def opened(path: str) -> AppTest:
        at = AppTest.from_file("../app.py", default_timeout=TIMEOUT).run()
        at.switch_page(path).run()
        assert not at.exception
        return at

    return opened


def tables_with(at: AppTest, column: str) -> list[pd.DataFrame]:
    """The tables on the page that have this column."""
    return [frame.value for frame in at.dataframe if column in frame.value.columns]


def diagnosis_matrices(at: AppTest) -> list[list[list[int]]]:
    """The z of each heatmap the page sent whose columns are the seven diagnosis codes."""
    specs = [json.loads(chart.proto.spec)["data"][0] for chart in at.get("plotly_chart")]
    return [spec["z"] for spec in specs if spec["type"] == "heatmap" and spec["x"] == list(CODES)]


def shown(value: float | None) -> str:
    return "–" if value is None else f"{value:.3f}"


def expected_row(measured: dict) -> dict[str, str]:
    """The diagnosis table's cells for a model's stored evaluate_diagnoses result."""
    malignant = measured["malignant"]
    low, high = malignant["ci95"]["roc_auc"]
    return {
        "Balanced multi-class accuracy": shown(measured["balanced_multiclass_accuracy"]),
        "Malignant ROC AUC": shown(malignant["roc_auc"]),
        "Malignant ROC AUC 95% CI": f"{low:.3f}–{high:.3f}",
        "Malignant sensitivity @ threshold": shown(malignant["at_threshold"]["sensitivity"]),
        **{f"Recall {code}": shown(measured["recall"][code]) for code in CODES},
    }


def flagged_cells(flagged: dict) -> list[str]:
    """The flagged table's cells for a model's stored flagged_by_diagnosis result."""
    return [
        f"{counts['flagged']:.0%} of {counts['n']}" if counts["n"] else "–"
        for counts in (flagged[code] for code in CODES)
    ]


def shows(row: pd.Series, measured: dict) -> bool:
    """Whether a diagnosis table's row shows these seven-diagnosis metrics."""
    expected = expected_row(measured)
    return row[list(expected)].to_dict() == expected


def test_compare_shows_the_diagnosis_models_metrics_and_a_dash_for_melanoma_models(open_page, trained_models):
    at = open_page("app_pages/compare.py")
    metrics = find_model(DIAGNOSIS_MODEL, trained_models[1]).metrics
    [table] = tables_with(at, "Balanced multi-class accuracy")
    table = table.set_index("Model")
    assert shows(table.loc[DIAGNOSIS_MODEL], metrics["diagnoses"])
    assert set(table.loc["scratch_cnn"]) == {"–"}  # a melanoma model: a dash in every multi-class column
    assert not {"None", "nan"} & set(table.to_numpy().ravel())
    assert diagnosis_matrices(at) == [metrics["diagnoses"]["confusion_matrix"]]
    [flagged] = tables_with(at, "BKL")
    # The melanoma models were tested on binary labels: only the diagnosis model knows its test split's diagnoses.
    assert list(flagged.Model) == [DIAGNOSIS_MODEL]
    assert flagged[list(CODES)].iloc[0].tolist() == flagged_cells(metrics["flagged_by_diagnosis"])


def test_the_diagnosis_models_card_shows_its_matrix_recall_and_share_flagged(open_page, trained_models):
    at = open_page("app_pages/model_cards.py")
    entry = find_model(DIAGNOSIS_MODEL, trained_models[1])
    metrics = entry.metrics
    weights = entry.card.training.class_weights
    balance = f"**Class balance**: by weights; loss weights MEL {weights['0']:.2f}, NV {weights['1']:.2f}, BCC "
    assert any(text.value.startswith(balance) for text in at.markdown)  # the codes, not the indices
    [table] = tables_with(at, "Balanced multi-class accuracy")  # on the diagnosis model's card only
    assert table.Model.tolist() == [DIAGNOSIS_MODEL] and shows(table.iloc[0], metrics["diagnoses"])
    assert diagnosis_matrices(at) == [metrics["diagnoses"]["confusion_matrix"]]
    [flagged] = tables_with(at, "BKL")
    assert flagged.Model.tolist() == [DIAGNOSIS_MODEL]
    assert flagged[list(CODES)].iloc[0].tolist() == flagged_cells(metrics["flagged_by_diagnosis"])


def test_validate_shows_the_share_of_each_diagnosis_flagged_on_a_zip_with_dx(open_page, trained_models, monkeypatch):
    results = []
    original = validation.validate
    monkeypatch.setattr(validation, "validate", lambda *a, **k: results.append(original(*a, **k)) or results[-1])
    at = open_page("app_pages/validate.py")
    dx_zip = diagnosis_zip(trained_models[1].parent / "diagnosis_data")
    at.file_uploader[0].set_value(("dx.zip", dx_zip, "application/zip")).run()
    assert not at.exception
    [result] = results
    [flagged] = tables_with(at, "BKL")
    assert flagged.Model.tolist() == [model.name for model in result.results]  # every model and the combined reading
    for model, (_, row) in zip(result.results, flagged.iterrows()):
        # Recomputed from the probabilities: the share of each diagnosis at or above the model's threshold.
        expected = [
            f"{np.mean(model.probabilities[result.codes == code] >= model.threshold):.0%} of 20" for code in CODES
        ]
        assert row[list(CODES)].tolist() == expected
    [table] = tables_with(at, "Balanced multi-class accuracy")
    measured = next(model for model in result.results if model.name == DIAGNOSIS_MODEL).metrics["diagnoses"]
    assert table.Model.tolist() == [DIAGNOSIS_MODEL] and shows(table.iloc[0], measured)
    assert diagnosis_matrices(at) == [measured["confusion_matrix"]]


def diagnose_on_a_combined_reading(
    trained_models, folder, members: list[str], monkeypatch, seed: int = 4, corrupt: str | None = None
) -> tuple[AppTest, bytes]:
    """The Diagnose page on the combined reading of `members`, whose differential is the fixture's
    diagnosis model, in a models folder of its own; one lesion uploaded, inside every gate's scope
    (that of seed 4; a test that needs an image no other has read passes another seed). The model
    named `corrupt` gets weights that fail their sha256 check."""
    import io
    import shutil

    from melanoma.combined import COMBINED_FILE
    from tests.synthetic import lesion_image

    _, output_dir = trained_models
    folder.mkdir()
    for name in {*members, DIAGNOSIS_MODEL, "imagenet_features.keras"} - {corrupt}:
        (folder / name).symlink_to(output_dir / name)
    if corrupt:
        shutil.copytree(output_dir / corrupt, folder / corrupt)
        with open(folder / corrupt / "model.keras", "ab") as weights:
            weights.write(b"tampered")
    stored = {
        "members": members,
        "threshold": 0.3,
        "metrics": {"roc_auc": 0.99},
        "differential": {"members": [DIAGNOSIS_MODEL], "malignant_threshold": 0.2},
    }
    (folder / COMBINED_FILE).write_text(json.dumps(stored))
    monkeypatch.setenv("MELANOMA_MODELS_DIR", str(folder))
    buffer = io.BytesIO()
    lesion_image(False, np.random.default_rng(seed)).save(buffer, format="JPEG", quality=95)
    at = AppTest.from_file("../app.py", default_timeout=TIMEOUT).run()
    combined = next(option for option in at.selectbox[0].options if option.startswith("Combined reading"))
    assert combined.endswith(f"; differential of {DIAGNOSIS_MODEL}")
    at.selectbox[0].set_value(combined).run()
    at.file_uploader[0].set_value(("lesion.jpg", buffer.getvalue(), "image/jpeg")).run()
    return at, buffer.getvalue()


def test_diagnose_shows_the_combined_readings_averaged_differential(trained_models, tmp_path, monkeypatch):
    """With "Combined reading" chosen, the banner and the results table carry the library's averaged
    differential and its skin-cancer verdict: one differential, not one per diagnosis model."""
    from melanoma.cases import decide
    from melanoma.combined import CombinedSpec, combine
    from melanoma.images import decode_image
    from melanoma.inference import load_predictor

    members, models = ["efficientnet_lite0", DIAGNOSIS_MODEL], tmp_path / "models"
    at, upload = diagnose_on_a_combined_reading(trained_models, models, members, monkeypatch)
    assert not at.exception

    pixels = decode_image(upload).pixels
    decisions = [decide(load_predictor(name, models), pixels) for name in members]
    reading = combine(decisions, CombinedSpec.read(models))
    assert reading.averaged is not None and reading.assessed
    banners = [element.value for kind in ("info", "error", "warning") for element in at.get(kind)]
    assert "  \n".join(reading.summary_lines()) in banners
    assert "Averaged differential of 1 diagnosis model: " in reading.summary_lines()[-2]
    assert f"The averaged differential's models: {DIAGNOSIS_MODEL}." in [caption.value for caption in at.caption]
    table = at.dataframe[0].value
    assert list(table.columns[:6]) == [
        "File",
        "combined probability",
        "combined decision",
        "models disagree",
        "combined skin cancer",
        "combined differential",
    ]  # the reading the page leads with, before each model's columns
    row = table.iloc[0]
    assert row["combined skin cancer"] == reading.averaged.skin_cancer_verdict
    assert row["combined differential"].startswith(reading.differential[0][0])


def test_the_combined_reading_maps_its_members_and_lists_the_differentials_other_models(
    trained_models, tmp_path, monkeypatch
):
    """A model that only adds to the combined reading's differential gets its own reading, in an
    expander, but no map: its melanoma output is not part of the reading. The members get their maps,
    and the audit trail records maps for the members only."""
    import os

    from melanoma import audit

    members = ["efficientnet_lite0", "scratch_cnn"]
    at, _ = diagnose_on_a_combined_reading(trained_models, tmp_path / "models", members, monkeypatch)
    assert not at.exception

    [expander] = [e for e in at.expander if e.label.startswith("The differential's other models")]
    assert expander.label.startswith("The differential's other models (1)")
    assert [metric.label for metric in expander.metric] == [f"{DIAGNOSIS_MODEL}: melanoma probability"]
    assert [metric.label for metric in at.metric if metric.label.endswith(": melanoma probability")] == [
        f"{name}: melanoma probability" for name in (*members, DIAGNOSIS_MODEL)
    ]
    overlays = [button.label for button in at.get("download_button") if button.label.startswith("Download overlay")]
    assert overlays == [f"Download overlay ({name})" for name in members]
    [explained] = [
        event for event in audit.read_events(os.environ[audit.AUDIT_DIR_ENV]) if event["action"] == "explanation"
    ]
    assert [model["model"] for model in explained["models"]] == members


def readings_recorded() -> list[list[dict]]:
    """The readings of each reading event in the audit trail, oldest first."""
    import os

    from melanoma import audit

    events = audit.read_events(os.environ[audit.AUDIT_DIR_ENV])
    return [event["readings"] for event in events if event["action"] == "reading"]


def test_the_combined_reading_is_recorded_first_from_its_members_then_complete(trained_models, tmp_path, monkeypatch):
    """The members' readings, and the combined probability and verdict they alone decide, are recorded
    (and shown) before the differential's other models read; then the complete reading, with the
    same combined probability and the averaged differential's skin-cancer reading."""
    members = ["efficientnet_lite0", "scratch_cnn"]
    at, _ = diagnose_on_a_combined_reading(trained_models, tmp_path / "models", members, monkeypatch)
    assert not at.exception

    first, complete = readings_recorded()
    assert [reading["model"] for reading in first] == [*members, "combined"]
    assert [reading["model"] for reading in complete] == [*members, DIAGNOSIS_MODEL, "combined"]
    assert first[-1]["probability"] == complete[-1]["probability"]
    assert "skin_cancer_probability" not in first[-1] and "skin_cancer_probability" in complete[-1]
    [table] = at.dataframe  # the complete table replaced the first one
    assert f"{DIAGNOSIS_MODEL} probability" in table.value.columns
    assert not [caption for caption in at.caption if "these images next" in caption.value]


def test_the_members_reading_is_shown_before_the_differentials_other_models_read(trained_models, tmp_path, monkeypatch):
    """Should the differential's other model fail as it reads, the members' reading is already on the
    page, and in the audit trail, with the note that the differential is still to come."""
    import ui
    from melanoma.cases import decide_all

    def diagnosis_model_fails(active, images):
        if active.name == DIAGNOSIS_MODEL:
            raise RuntimeError("the diagnosis model failed")
        return decide_all(active, images)

    monkeypatch.setattr(ui, "decide_all", diagnosis_model_fails)
    members = ["efficientnet_lite0", "scratch_cnn"]
    at, _ = diagnose_on_a_combined_reading(trained_models, tmp_path / "models", members, monkeypatch, seed=5)

    assert "the diagnosis model failed" in at.exception[0].message
    [first] = readings_recorded()
    assert [reading["model"] for reading in first] == [*members, "combined"]
    [table] = at.dataframe
    assert table.value.iloc[0]["combined probability"] == pytest.approx(100 * first[-1]["probability"])
    assert f"{DIAGNOSIS_MODEL} probability" not in table.value.columns
    assert [caption for caption in at.caption if "1 other model reads these images next" in caption.value]


def test_with_a_member_that_fails_to_load_every_other_model_reads_in_one_step(trained_models, tmp_path, monkeypatch):
    """The reading is then the plain mean of every model read, without a verdict (melanoma.combined.combine):
    no first table from the members that loaded, whose mean would differ from it."""
    members = ["efficientnet_lite0", "scratch_cnn"]
    at, _ = diagnose_on_a_combined_reading(
        trained_models, tmp_path / "models", members, monkeypatch, seed=6, corrupt="scratch_cnn"
    )

    assert not at.exception
    assert [error.value for error in at.error if "scratch_cnn" in error.value]
    [readings] = readings_recorded()
    assert [reading["model"] for reading in readings] == ["efficientnet_lite0", DIAGNOSIS_MODEL, "combined"]
    assert readings[-1]["threshold"] is None
    assert at.dataframe[0].value.iloc[0]["combined decision"] == "no validated threshold"
