"""What a clinician is told besides the probability: whether the image is in scope, and one combined reading."""

import hashlib
import io
import json
import warnings
from dataclasses import replace

import numpy as np
import pytest
from PIL import Image
from sklearn.metrics import roc_auc_score

from melanoma.card import read_card
from melanoma.cases import Decision, decide, decide_all, percent_apart, skin_cancer_word
from melanoma.combined import (
    COMBINED_FILE,
    LOG_ODDS_MEAN,
    CombinedSpec,
    DifferentialSpec,
    combine,
    select_differential,
)
from melanoma.config import DEFAULT_MODELS
from melanoma.data import join_split, load_labelled_images, load_pixels, read_split
from melanoma.diagnoses import CODES
from melanoma.images import read_image, to_model_input
from melanoma.inference import load_predictor
from melanoma.ood import FeatureGate, image_problem
from melanoma.store import SHIPPED_MODELS_DIR
from tests.conftest import SHARED_DATA
from tests.synthetic import lesion_image
from train.gate_check import non_dermoscopic_images


def lesions(n: int, seed: int) -> list[np.ndarray]:
    """New lesion images from the fixture's distribution: its generator, size and JPEG compression."""
    rng = np.random.default_rng(seed)
    images = []
    for index in range(n):
        buffer = io.BytesIO()
        lesion_image(bool(index % 2), rng).save(buffer, format="JPEG", quality=95)
        images.append(np.asarray(Image.open(buffer).convert("RGB")))
    return images


def test_cheap_checks_name_blank_noise_and_documents_and_pass_lesions():
    images = non_dermoscopic_images()
    assert "uniform" in image_problem(images["blank_white"]) and "uniform" in image_problem(images["single_red"])
    assert "noise" in image_problem(images["noise_uniform_0"])
    assert "colour" in image_problem(images["document_0"])
    assert "mostly black" in image_problem(images["skimage_hubble_deep_field"])
    assert all(image_problem(image) == "" for image in lesions(10, seed=3))


def lesion_like(skin: tuple[int, int, int], lesion: tuple[int, int, int], size: int = 160) -> np.ndarray:
    """A soft round lesion of one colour on skin of another."""
    y, x = np.mgrid[:size, :size] / size - 0.5
    weight = np.exp(-(x**2 + y**2) / 0.04)[..., None]
    return np.round((1 - weight) * np.array(skin) + weight * np.array(lesion)).astype(np.uint8)


@pytest.mark.parametrize(
    "skin, lesion",
    [((205, 160, 140), (180, 132, 112)), ((200, 196, 194), (110, 106, 104))],
    ids=["pale lesion on pale skin (grey contrast 5.9)", "nearly grey lesion (saturation 0.032)"],
)
def test_a_faint_or_nearly_grey_lesion_passes_the_cheap_checks(skin, lesion):
    """Like the 20 shared HAM10000 images they refused at 160 px as "nearly uniform" or "almost no colour"."""
    assert image_problem(lesion_like(skin, lesion)) == ""


SHIPPED_SIZES = sorted({read_card(card.parent).serving.input_size for card in SHIPPED_MODELS_DIR.glob("*/card.json")})
# The shared images the cheap checks refused at 128, 160 or 192 px before they were measured on all 10,015.
ONCE_REFUSED = (
    "ISIC_0024337 ISIC_0024693 ISIC_0024931 ISIC_0024982 ISIC_0025249 ISIC_0025342 ISIC_0025456 ISIC_0025688 "
    "ISIC_0026016 ISIC_0026238 ISIC_0026567 ISIC_0026815 ISIC_0027044 ISIC_0027181 ISIC_0028973 ISIC_0029147 "
    "ISIC_0029150 ISIC_0030676 ISIC_0031072 ISIC_0031107 ISIC_0032170 ISIC_0032249"
).split()


@pytest.mark.skipif(not (SHARED_DATA / "images").is_dir(), reason=f"shared HAM10000 data not found at {SHARED_DATA}")
def test_shared_ham10000_images_pass_the_cheap_checks_at_every_shipped_input_size():
    """Those once refused, and 200 others; every one of the 10,015 passes (measured when the thresholds were set)."""
    others = sorted(path.stem for path in (SHARED_DATA / "images").glob("ISIC_*.jpg"))
    chosen = ONCE_REFUSED + list(np.random.default_rng(0).choice(others, 200, replace=False))
    refused = []
    for image_id in chosen:
        pixels = read_image(str(SHARED_DATA / "images" / f"{image_id}.jpg")).pixels
        refused += [(image_id, size, p) for size in SHIPPED_SIZES if (p := image_problem(to_model_input(pixels, size)))]
    assert SHIPPED_SIZES and not refused


def test_feature_gate_thresholds_at_the_validation_percentile_and_round_trips(tmp_path):
    rng = np.random.default_rng(0)
    train, val = rng.normal(0, 1, (500, 20)), rng.normal(0, 1, (200, 20))
    gate = FeatureGate.fit(train, val, components=8, percentile=95)
    assert np.mean(gate.distances(val) > gate.threshold) == pytest.approx(0.05, abs=0.01)
    assert np.all(gate.distances(rng.normal(4, 1, (50, 20))) > gate.threshold)  # far away: all outside
    gate.save(tmp_path / "ood.npz")
    loaded = FeatureGate.load(tmp_path / "ood.npz")
    np.testing.assert_allclose(loaded.distances(val), gate.distances(val), rtol=1e-6)


@pytest.mark.parametrize("n_train, n_val", [(0, 20), (9, 20), (100, 0)])
def test_feature_gate_refuses_too_few_images(n_train, n_val):
    """From no training image its statistics were NaN, and the saved gate refused every image."""
    rng = np.random.default_rng(0)
    with pytest.raises(ValueError, match=f"needs at least 10 training images .* got {n_train} and {n_val}"):
        FeatureGate.fit(rng.normal(0, 1, (n_train, 20)), rng.normal(0, 1, (n_val, 20)))


def test_the_transfer_model_gate_passes_lesions_and_flags_photographs(trained_models):
    """On the fixture's 120 images the minority class is partly memorised (its training features sit
    closer together than new melanomas'), so new melanoma-like images score higher than benign ones;
    what must hold is the separation from photographs, and that common lesions pass."""
    _, output_dir = trained_models
    predictor = load_predictor("efficientnet_lite0", output_dir)
    assert predictor.feature_gate is not None
    own = predictor.gate(lesions(40, seed=11))
    others = non_dermoscopic_images()
    foreign = predictor.gate(list(others.values()))
    assert np.mean([r.in_distribution for r in own[::2]]) >= 0.9  # the benign-looking half
    assert np.mean([not r.in_distribution for r in foreign]) >= 0.95, [
        n for n, r in zip(others, foreign) if r.in_distribution
    ]
    photographs = [r.score for name, r in zip(others, foreign) if name.startswith(("skimage", "sklearn"))]
    assert np.median([r.score for r in own]) < min(photographs)


def test_a_flagged_image_gets_no_verdict(trained_models):
    _, output_dir = trained_models
    decision = decide(load_predictor("efficientnet_lite0", output_dir), non_dermoscopic_images()["document_0"])
    assert not decision.assessed and decision.summary().startswith("Not assessed")


def test_images_read_in_one_batch_get_the_decisions_they_get_alone(trained_models):
    """What the app's batching (melanoma.batching) relies on: a clinic's images read together,
    a document among them, decide as each would alone."""
    _, output_dir = trained_models
    predictor = load_predictor("efficientnet_lite0", output_dir)
    images = [*lesions(3, seed=11), non_dermoscopic_images()["document_0"]]
    together = decide_all(predictor, images)
    for alone, batched in zip((decide(predictor, image) for image in images), together):
        assert batched.probability == pytest.approx(alone.probability, abs=1e-6)
        assert (batched.assessed, batched.melanoma, batched.ood_reason) == (
            alone.assessed,
            alone.melanoma,
            alone.ood_reason,
        )
    assert [decision.assessed for decision in together] == [True, True, True, False]


def test_traced_graphs_read_any_batch_size_without_tracing_again(trained_models):
    """What the app's model loading (ui._load) relies on: after trace_graphs, a clinic's batches of
    any size reuse the network's and the gate extractor's prediction graphs."""
    _, output_dir = trained_models
    predictor = load_predictor("efficientnet_lite0", output_dir)
    predictor.trace_graphs()
    graphs = [predictor.network.predict_function, predictor.features.predict_function]
    traced = [graph.experimental_get_tracing_count() for graph in graphs]
    for count in (3, 5, 1):
        predictor.read(lesions(count, seed=count))
    assert [graph.experimental_get_tracing_count() for graph in graphs] == traced


def test_the_gate_statistics_are_covered_by_the_sha256_check(trained_models, tmp_path):
    import shutil

    from melanoma.store import ModelUnavailableError

    _, output_dir = trained_models
    shutil.copytree(output_dir / "efficientnet_lite0", tmp_path / "efficientnet_lite0")
    with open(tmp_path / "efficientnet_lite0" / "ood.npz", "ab") as handle:
        handle.write(b"x")
    with pytest.raises(ModelUnavailableError, match="ood.npz does not match the sha256"):
        load_predictor("efficientnet_lite0", tmp_path)
    shutil.copy(output_dir / "efficientnet_lite0" / "ood.npz", tmp_path / "efficientnet_lite0" / "ood.npz")
    shutil.copy(output_dir / "imagenet_features.keras", tmp_path / "imagenet_features.keras")
    load_predictor("efficientnet_lite0", tmp_path)  # intact again
    with open(tmp_path / "imagenet_features.keras", "ab") as handle:
        handle.write(b"x")
    with pytest.raises(ModelUnavailableError, match="imagenet_features.keras does not match the sha256"):
        load_predictor("efficientnet_lite0", tmp_path)


def test_combined_reading_is_the_mean_of_the_calibrated_members(trained_models):
    data_dir, output_dir = trained_models
    spec = CombinedSpec.load(output_dir)
    assert set(spec.members) <= set(DEFAULT_MODELS)  # chosen on validation among the models sharing a split
    image = lesions(1, seed=21)[0]
    predictors = [load_predictor(name, output_dir) for name in spec.members]
    decisions = [decide(predictor, image) for predictor in predictors]
    for predictor, decision in zip(predictors, decisions):
        calibration = predictor.serving.calibration
        assert (calibration.slope, calibration.intercept) != (1.0, 0.0)  # fitted: calibrated and raw differ
        raw = predictor.raw_probabilities(to_model_input(image, predictor.serving.input_size)[None])
        assert decision.probability == pytest.approx(calibration(raw)[0])
    reading = combine(decisions, spec)
    assert reading.probability == pytest.approx(np.mean([d.probability for d in decisions]))
    assert reading.threshold == spec.threshold and reading.melanoma == (reading.probability >= spec.threshold)
    # The audit trail's record of which definition the reading followed: the file's own sha256.
    assert reading.definition_sha256 == hashlib.sha256((output_dir / COMBINED_FILE).read_bytes()).hexdigest()
    # The stored metrics are those of the same mean on the members' shared test split, at the stored threshold.
    test = join_split(load_labelled_images(data_dir).table, read_split(output_dir / spec.members[0])).query(
        "split == 'test'"
    )
    # Scored in batches of 4, one image and its flips: the shape `decide` compiled already, so nothing is traced again.
    mean = np.mean(
        [
            p.calibrate(p.raw_outputs(load_pixels(list(test.path), p.serving.input_size), batch_size=4)).melanoma
            for p in predictors
        ],
        axis=0,
    )
    stored = json.loads((output_dir / COMBINED_FILE).read_text())["metrics"]
    assert stored["n_images"] == len(test) and stored["at_threshold"]["threshold"] == spec.threshold
    assert stored["roc_auc"] == pytest.approx(roc_auc_score(test.label, mean))
    assert stored["brier_score"] == pytest.approx(np.mean((mean - test.label.to_numpy()) ** 2), rel=1e-5)


def test_models_do_not_disagree_about_an_image_a_gate_refused():
    """A refused member's raw output is no verdict: the reading is not assessed, and not a disagreement."""
    refused = Decision("a", 0.9, 0.5, 0.9, 0.6, in_distribution=False, ood_reason="unlike the training images")
    for spec in (None, CombinedSpec(("a", "b"), 0.5, {})):
        reading = combine([refused, Decision("b", 0.1, 0.5, 0.9, 0.6)], spec)
        assert not reading.assessed and not reading.disagreement and reading.verdict == "not assessed"


def test_combined_reading_says_when_models_disagree_and_gives_no_verdict_without_a_validated_threshold():
    decisions = [Decision("a", 0.8, 0.5, 0.9, 0.6), Decision("b", 0.2, 0.5, 0.9, 0.6)]
    reading = combine(decisions, None)
    assert reading.probability == pytest.approx(0.5) and reading.disagreement and reading.melanoma is None
    assert "disagree" in reading.summary() and "no combined verdict" in reading.summary()
    assert combine(decisions, CombinedSpec(("a", "b"), 0.4, {})).melanoma is True
    # Two melanoma-only models: the reading says that the other skin cancers went unread.
    assert reading.summary_lines()[-1].startswith(
        "None of the models averaged here was trained to recognise basal cell carcinoma, actinic keratosis"
    )
    assert reading.summary_lines()[-1].endswith("so this reading does not rule them out.")  # it has no verdict
    # Each model's note follows its own verdict: a flag may be another cancer; no flag rules none out.
    assert decisions[0].scope_note().endswith("so a flagged lesion may be one of them rather than a melanoma.")
    assert decisions[1].scope_note().endswith('so "not flagged" does not rule them out.')
    assert decisions[0].scope_note(alone=False) is None  # beside a combined reading, which says it itself
    flagged = combine(decisions, CombinedSpec(("a", "b"), 0.4, {}))
    assert flagged.summary_lines()[-1].endswith("so a flagged lesion may be one of them rather than a melanoma.")
    assert reading.definition_sha256 is None  # a plain mean follows no combined.json


def test_a_melanoma_verdict_is_not_contradicted_by_a_skin_cancer_line_below_its_own_threshold():
    differential = (("NV", 0.8), ("MEL", 0.11), ("BKL", 0.07), ("BCC", 0.01), ("AKIEC", 0.005), ("VASC", 0.003))
    decision = Decision("d", 0.11, 0.09, 0.9, 0.7, None, True, "", 0.125, 0.16, (*differential, ("DF", 0.002)))
    assert decision.melanoma is True and decision.skin_cancer is False
    assert decision.skin_cancer_summary().startswith(
        "Skin cancer: melanoma only (the verdict above); no other skin cancer suspected: probability of a skin cancer"
    )
    assert skin_cancer_word(False, True) == "melanoma only" and skin_cancer_word(False, False) == "not flagged"
    assert decision.skin_cancer_verdict == "melanoma only"  # the results table's cell, as the CLI's and the line
    assert decision.scope_note() is None  # a diagnosis model reads the other skin cancers itself


def test_a_probability_just_below_its_threshold_never_reads_as_equal_to_it():
    """'probability 10.6%, below the operating threshold 10.6%' read as a contradiction."""
    differential = (("NV", 0.8), ("MEL", 0.1), ("BCC", 0.05), ("BKL", 0.03), ("AKIEC", 0.01), ("VASC", 0.01))
    close = Decision("a", 0.10561, 0.10564, 0.9, 0.6, None, True, "", 0.16, 0.1604, (*differential, ("DF", 0.0)))
    assert close.summary() == "Not flagged as melanoma: probability 10.561%, below the operating threshold 10.564%."
    assert "probability of a skin cancer (melanoma, basal cell carcinoma, actinic keratosis / Bowen's disease) " in (
        close.skin_cancer_summary()
    )
    assert "16.00%, below its operating threshold 16.04%" in close.skin_cancer_summary()
    reading = combine([close, Decision("b", 0.10561, 0.10564, 0.9, 0.6)], CombinedSpec(("a", "b"), 0.10564, {}))
    assert "(a, b) 10.561%, below the combined threshold 10.564%" in reading.summary()
    assert (
        Decision("c", 0.7319, 0.41, 0.9, 0.6)
        .summary()
        .endswith("probability 73.2%, at or above the operating threshold 41.0%.")
    )
    assert percent_apart(0.5, 0.5) == ("50.0%", "50.0%")  # equal numbers read equal


def test_a_combination_validated_on_log_odds_reads_and_names_them():
    decisions = [Decision("a", 0.05, 0.5, 0.9, 0.6), Decision("b", 0.9, 0.5, 0.9, 0.6)]
    reading = combine(decisions, CombinedSpec(("a", "b"), 0.45, {}, combination=LOG_ODDS_MEAN))
    assert reading.probability == pytest.approx(1 / (1 + np.sqrt(19 / 9)))  # odds (1/19 * 9) ** 0.5
    assert reading.melanoma is False  # the plain mean, 0.475, would have been above 0.45
    assert "combined calibrated probability (mean log-odds) of 2 models (a, b) 40.8%" in reading.summary()


def test_the_combined_reading_names_the_other_skin_cancer_its_diagnosis_member_reads():
    """A basal cell carcinoma below the combined melanoma threshold is not left unnamed beside it."""
    differential = (
        ("BCC", 0.905),
        ("NV", 0.042),
        ("MEL", 0.027),
        ("BKL", 0.018),
        ("VASC", 0.007),
        ("AKIEC", 0.001),
        ("DF", 0.0),
    )
    diagnosis = Decision("d", 0.027, 0.087, 0.9, 0.7, None, True, "", 0.933, 0.179, differential)
    reading = combine([Decision("a", 0.05, 0.08, 0.9, 0.6), diagnosis], CombinedSpec(("a", "d"), 0.09, {}))
    summary = reading.summary()
    assert reading.melanoma is False and summary.startswith("Combined reading: Not flagged as melanoma")
    assert "d (diagnosis model): Other skin cancer: suspicious" in summary
    assert "basal cell carcinoma 90.5%" in summary and "Differential: basal cell carcinoma 90.5%" in summary
    lines = reading.summary_lines()  # the page shows them one per line; the report joins them
    assert len(lines) == 3 and lines[1].startswith("d (diagnosis model): Other skin cancer: suspicious")
    assert lines[2].startswith("Differential: basal cell carcinoma 90.5%") and summary == " ".join(lines)
    not_assessed = replace(diagnosis, in_distribution=False, ood_reason="unlike the training images")
    assert "diagnosis model" not in combine([not_assessed], None).summary()


def test_the_combined_reading_reads_one_averaged_differential_when_one_was_validated():
    """Two diagnosis models that lead with different diagnoses give one differential, whose melanoma
    probability is the combined verdict's, and one skin-cancer verdict against its own threshold."""
    first = (("BCC", 0.60), ("BKL", 0.20), ("NV", 0.10), ("MEL", 0.04), ("AKIEC", 0.04), ("DF", 0.01), ("VASC", 0.01))
    second = (("BKL", 0.50), ("BCC", 0.30), ("NV", 0.10), ("MEL", 0.06), ("AKIEC", 0.02), ("DF", 0.01), ("VASC", 0.01))
    d1 = Decision("d1", 0.04, 0.08, 0.9, 0.7, None, True, "", 0.68, 0.2, first)
    d2 = Decision("d2", 0.06, 0.08, 0.9, 0.7, None, True, "", 0.38, 0.2, second)
    melanoma_model = Decision("m", 0.02, 0.1, 0.9, 0.6)
    spec = CombinedSpec(("m", "d1"), 0.09, {}, differential=DifferentialSpec(("d1", "d2"), 0.25))
    assert spec.models == ("m", "d1", "d2")
    reading = combine([melanoma_model, d1, d2], spec)
    assert reading.members == ("m", "d1") and reading.probability == pytest.approx(0.03) and reading.melanoma is False
    differential = dict(reading.differential)
    assert differential["MEL"] == pytest.approx(0.03)  # the combined melanoma probability, not the members' 0.05
    # The other diagnoses share the rest in the proportions of the members' mean: BCC 0.45, BKL 0.35, ...
    assert differential["BCC"] / differential["BKL"] == pytest.approx(0.45 / 0.35)
    assert sum(differential.values()) == pytest.approx(1.0) and reading.differential[0][0] == "BCC"
    assert reading.malignant_probability == pytest.approx(0.03 + 0.97 * (0.45 + 0.03) / 0.95)
    assert reading.malignant_threshold == 0.25 and reading.skin_cancer is True
    lines = reading.summary_lines()
    assert lines[1].startswith("Averaged differential of 2 diagnosis models: Other skin cancer: suspicious")
    assert lines[2].startswith(f"Differential: basal cell carcinoma {differential['BCC']:.1%}")
    assert len(lines) == 3 and not any("(diagnosis model)" in line for line in lines)
    # The page shows the averaged models' names in a caption; the report's paragraph ends with them.
    assert reading.differential_members_line() == "The averaged differential's models: d1, d2."
    assert reading.summary() == " ".join(lines) + " The averaged differential's models: d1, d2."
    # Without every diagnosis member, no averaged differential: the member that is read speaks for itself.
    fallback = combine([melanoma_model, d1], spec)
    assert fallback.averaged is None and fallback.skin_cancer is None and fallback.melanoma is False
    assert fallback.summary_lines()[1].startswith("d1 (diagnosis model): Other skin cancer: suspicious")
    # A member whose gate refuses the image leaves the whole reading unassessed.
    refused = combine([melanoma_model, d1, replace(d2, in_distribution=False)], spec)
    assert not refused.assessed and "averaged differential" not in refused.summary().lower()
    assert refused.differential_members_line() == ""  # no caption of models for a reading not given
    # Nor does a table cell give a differential for it, nor for a model whose gate refused the image.
    assert refused.averaged.brief_differential() is None and d1.brief_differential() == "BCC 60%, BKL 20%, NV 10%"
    assert replace(d1, in_distribution=False).brief_differential() is None


def test_the_differential_members_are_chosen_by_validation_balanced_accuracy():
    rng = np.random.default_rng(0)
    codes = [CODES[i % 7] for i in range(700)]
    truth = np.eye(7)[[CODES.index(code) for code in codes]]

    def model(noise: float) -> np.ndarray:
        logits = truth * 2 + rng.normal(0, noise, truth.shape)
        return np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)

    candidates = {"good": model(1.5), "helper": model(1.5), "noise": model(50.0)}
    selection = select_differential(codes, candidates)
    assert set(selection["members"]) == {"good", "helper"} and set(selection["left_out"]) == {"noise"}
    # Cross-validation within validation decides between the selection and the mean of every candidate:
    cross_validated = selection["cross_validated"]
    assert selection["rule"] == "forward selection" and cross_validated["forward selection"] > 0.5
    assert cross_validated["the mean of every candidate"] < cross_validated["forward selection"] - 0.1
    key = "validation_balanced_multiclass_accuracy"
    assert selection[key] > max(selection["candidates"]["good"], selection["candidates"]["helper"]) + 0.01
    assert selection["left_out"]["noise"].startswith(
        f"adding it would change the combination's validation balanced multi-class accuracy from {selection[key]:.4f}"
    )


def test_many_equally_good_diagnosis_models_are_all_averaged_when_cross_validation_says_so():
    """Forward selection keeps the few whose sum happens to fit the validation split's rare
    diagnoses; the mean of many independent, equally good models does better on images it did
    not choose on, and cross-validation within validation sees that."""
    rng = np.random.default_rng(1)
    codes = [CODES[i % 7] for i in range(350)]
    truth = np.eye(7)[[CODES.index(code) for code in codes]]
    candidates = {f"m{i}": truth + rng.normal(0, 0.9, truth.shape) for i in range(8)}
    candidates = {name: np.exp(x) / np.exp(x).sum(axis=1, keepdims=True) for name, x in candidates.items()}
    selection = select_differential(codes, candidates)
    cross_validated = selection["cross_validated"]
    assert cross_validated["the mean of every candidate"] > cross_validated["forward selection"]
    assert selection["rule"] == "the mean of every candidate" and selection["members"] == list(candidates)
    assert selection["left_out"] == {} and len(selection["steps"]) < len(candidates)


def test_a_diagnosis_rarer_than_the_folds_is_cross_validated_without_warnings():
    """Validation holds 3 dermatofibromas and 5 folds: each fold gets at most one, as scikit-learn
    allows, and train.combine's output stays free of its warning."""
    rng = np.random.default_rng(2)
    common = [code for code in CODES if code != "DF"]
    codes = [common[i % 6] for i in range(300)] + ["DF"] * 3
    truth = np.eye(7)[[CODES.index(code) for code in codes]]
    candidates = {f"m{i}": truth + rng.normal(0, 0.9, truth.shape) for i in range(3)}
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        selection = select_differential(codes, candidates)
    assert set(selection["cross_validated"]) == {"forward selection", "the mean of every candidate"}
