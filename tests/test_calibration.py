"""Calibration: a deliberately over-confident model gets honest probabilities, and the ranking stays."""

import numpy as np
import pytest
from sklearn.calibration import calibration_curve
from sklearn.metrics import roc_auc_score

from melanoma.calibration import PlattScaling, expected_calibration_error, fit_platt
from melanoma.card import ServingSpec
from melanoma.metrics import at_threshold, threshold_for_sensitivity
from train.calibrate import calibrate_and_evaluate


def overconfident(n: int, seed: int):
    """Labels with a 10 % prevalence and scores that are a true probability pushed far towards 0 and 1,
    and up: what class weighting does to a network."""
    rng = np.random.default_rng(seed)
    true_probability = rng.beta(1, 6, n)
    labels = (rng.random(n) < true_probability).astype(int)
    logit = np.log(true_probability / (1 - true_probability))
    return labels, 1 / (1 + np.exp(-(2.0 * logit + 4.0)))


def test_ece_of_perfectly_calibrated_scores_is_small_and_of_shifted_ones_large():
    rng = np.random.default_rng(1)
    p = rng.random(20000)
    y = (rng.random(20000) < p).astype(int)
    assert expected_calibration_error(y, p) < 0.02
    assert expected_calibration_error(y, np.clip(p + 0.2, 0, 1)) > 0.15


def test_platt_scaling_lowers_the_test_ece_of_an_overconfident_model_and_keeps_the_ranking():
    y_val, p_val = overconfident(2000, seed=0)
    y_test, p_test = overconfident(2000, seed=1)
    calibration = fit_platt(y_val, p_val)
    before, after = expected_calibration_error(y_test, p_test), expected_calibration_error(y_test, calibration(p_test))
    assert before > 0.2 and after < 0.04
    assert calibration.slope == pytest.approx(0.5, abs=0.08) and calibration.intercept == pytest.approx(-2.0, abs=0.3)
    assert roc_auc_score(y_test, calibration(p_test)) == pytest.approx(roc_auc_score(y_test, p_test))


def test_calibrate_and_evaluate_reports_before_and_after_and_thresholds_on_the_calibrated_scale():
    (y_val, p_val), (y_test, p_test) = overconfident(1500, 2), overconfident(1500, 3)
    calibration, threshold, metrics = calibrate_and_evaluate(
        {"val": y_val, "test": y_test}, {"val": p_val, "test": p_test}, 0.9
    )
    effect = metrics["calibration_effect"]
    calibrated = calibration(p_test)
    assert effect["test_ece_before"] == pytest.approx(expected_calibration_error(y_test, p_test))
    assert effect["test_ece_after"] == pytest.approx(expected_calibration_error(y_test, calibrated))
    assert effect["test_brier_before"] == pytest.approx(np.mean((p_test - y_test) ** 2))
    assert effect["test_brier_after"] == pytest.approx(np.mean((calibrated - y_test) ** 2))
    assert (
        effect["test_ece_after"] < effect["test_ece_before"]
        and effect["test_brier_after"] < effect["test_brier_before"]
    )
    assert metrics["expected_calibration_error"] == pytest.approx(effect["test_ece_after"])
    # the threshold is a calibrated probability: the highest at which the validation sensitivity reaches 0.9
    assert np.mean(calibration(p_val)[y_val == 1] >= threshold) >= 0.9
    assert (
        threshold == threshold_for_sensitivity(y_val, calibration(p_val), 0.9) == metrics["at_threshold"]["threshold"]
    )
    # the reliability curves, before on the raw test scores and after on the calibrated ones
    for key, scores in (("calibration_before", p_test), ("calibration", calibrated)):
        fraction, predicted = calibration_curve(y_test, scores, n_bins=10)
        assert metrics[key] == {
            "mean_predicted": pytest.approx(predicted.tolist()),
            "fraction_melanoma": pytest.approx(fraction.tolist()),
        }


def test_calibrate_and_evaluate_keeps_the_studys_measures_of_the_raw_outputs():
    """The study's table reads the raw sigmoid outputs at 0.5; metrics.json's own at_0.5 and means are calibrated."""
    (y_val, p_val), (y_test, p_test) = overconfident(1500, 2), overconfident(1500, 3)
    _, _, metrics = calibrate_and_evaluate({"val": y_val, "test": y_test}, {"val": p_val, "test": p_test}, 0.9)
    assert metrics["uncalibrated"] == {
        "at_0.5": at_threshold(y_test, p_test, 0.5),
        "mean_probability_by_label": {"0": p_test[y_test == 0].mean(), "1": p_test[y_test == 1].mean()},
    }
    assert metrics["uncalibrated"]["at_0.5"] != metrics["at_0.5"]  # calibration moved the decisions at 0.5


def test_serving_spec_round_trips_and_reads_cards_written_before_it():
    spec = ServingSpec(160, True, PlattScaling(0.5, -1.0, fitted_on="validation split"))
    assert ServingSpec.from_card({"serving": spec.to_dict()}) == spec
    legacy = ServingSpec.from_card(
        {"input_size": 96, "test_time_augmentation": "mean over the image and its three flips"}
    )
    assert legacy == ServingSpec(96, True, PlattScaling())
    assert np.allclose(PlattScaling()(np.array([0.1, 0.5, 0.9])), [0.1, 0.5, 0.9])


def test_a_perfectly_separated_validation_split_gives_a_finite_map():
    """Platt's soft targets: without them the slope diverges and every probability rounds to 0 or 1."""
    labels = np.r_[np.zeros(50), np.ones(10)].astype(int)
    scores = np.r_[np.linspace(0.01, 0.3, 50), np.linspace(0.7, 0.99, 10)]
    calibration = fit_platt(labels, scores)
    assert 0 < calibration.slope < 50  # steep, finite, and the ranking kept
    calibrated = calibration(np.array([0.5]))[0]
    assert 0.01 < calibrated < 0.99


def test_the_graphs_platt_layer_clips_and_maps_like_numpys_platt_scaling():
    from melanoma.models.layers import PlattOutput

    scaling = PlattScaling(slope=0.7, intercept=-1.3)
    probabilities = np.array([0.0, 1e-9, 0.2, 0.5, 0.9, 1.0], np.float32)
    in_graph = np.asarray(PlattOutput(scaling.slope, scaling.intercept)(probabilities[:, None]))[:, 0]
    np.testing.assert_allclose(in_graph, scaling(probabilities), rtol=1e-5)
