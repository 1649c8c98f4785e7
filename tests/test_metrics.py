"""metrics.json values against scikit-learn, and the validation threshold rule."""

import numpy as np
import pytest
from scipy.stats import binomtest
from sklearn.calibration import calibration_curve
from sklearn.metrics import (
    average_precision_score,
    balanced_accuracy_score,
    confusion_matrix,
    f1_score,
    recall_score,
    roc_auc_score,
    roc_curve,
)

from melanoma.calibration import expected_calibration_error, fit_platt
from melanoma.metrics import (
    confidence_intervals,
    evaluate_predictions,
    proportion_interval,
    reliability_evidence,
    roc_auc_interval,
    threshold_for_sensitivity,
)


@pytest.fixture
def predictions():
    rng = np.random.default_rng(0)
    y = (rng.random(500) < 0.2).astype(int)
    p = np.clip(0.3 * y + rng.normal(0.35, 0.2, 500), 0, 1)
    return y, p


def test_metrics_agree_with_scikit_learn(predictions):
    y, p = predictions
    m = evaluate_predictions(y, p, threshold=0.5)
    predicted = (p >= 0.5).astype(int)
    assert m["roc_auc"] == pytest.approx(roc_auc_score(y, p))
    assert m["average_precision"] == pytest.approx(average_precision_score(y, p))
    assert m["at_0.5"]["sensitivity"] == pytest.approx(recall_score(y, predicted))
    assert m["at_0.5"]["specificity"] == pytest.approx(recall_score(1 - y, 1 - predicted))
    assert m["at_0.5"]["balanced_accuracy"] == pytest.approx(balanced_accuracy_score(y, predicted))
    assert m["at_0.5"]["f1"] == pytest.approx(f1_score(y, predicted))
    assert m["brier_score"] == pytest.approx(np.mean((p - y) ** 2))
    assert m["mean_probability_by_label"] == {
        "0": pytest.approx(p[y == 0].mean()),
        "1": pytest.approx(p[y == 1].mean()),
    }
    low, high = m["ci95"]["roc_auc"]
    assert low < m["roc_auc"] < high and high - low < 0.2
    assert m["at_0.5"]["confusion_matrix"] == confusion_matrix(y, predicted).tolist()  # [[tn, fp], [fn, tp]]
    fpr, tpr, _ = roc_curve(y, p)  # 105 points: under the 200 kept, so stored whole
    assert m["roc_curve"] == {"fpr": pytest.approx(fpr.tolist()), "tpr": pytest.approx(tpr.tolist())}
    fraction, predicted_mean = calibration_curve(y, p, n_bins=10)
    assert m["calibration"] == {
        "mean_predicted": pytest.approx(predicted_mean.tolist()),
        "fraction_melanoma": pytest.approx(fraction.tolist()),
    }


def test_threshold_reaches_the_target_sensitivity_and_is_the_highest(predictions):
    y, p = predictions
    threshold = threshold_for_sensitivity(y, p, 0.9)
    assert (p[y == 1] >= threshold).mean() >= 0.9
    higher = np.nextafter(threshold, 1.0)
    assert (p[y == 1] >= higher).mean() < 0.9


@pytest.mark.parametrize("target", [0.0, -0.1, 1.01, 95.0, float("nan")])
def test_a_target_sensitivity_outside_0_to_1_is_refused(predictions, target):
    """95 (a percentage) crashed with an IndexError, and 0 chose the highest melanoma's score without a word."""
    y, p = predictions
    with pytest.raises(ValueError, match=r"target sensitivity must be in \(0, 1\], such as 0.9"):
        threshold_for_sensitivity(y, p, target)


def test_reliability_evidence_counts_equal_bins_and_says_one_thing_with_its_interval():
    from melanoma.metrics import evidence_for, reliability_evidence

    rng = np.random.default_rng(4)
    probabilities = rng.uniform(0, 1, 2000)
    labels = (rng.uniform(0, 1, 2000) < probabilities).astype(int)
    rows = reliability_evidence(labels, probabilities, bins=20)
    assert [row["n"] for row in rows] == [100] * 20
    top = rows[-1]
    inside = probabilities >= top["low"]
    assert top["melanomas"] == labels[inside].sum() and top["high"] == probabilities.max()
    interval = binomtest(int(top["melanomas"]), 100).proportion_ci(method="wilson")
    assert tuple(top["ci95"]) == pytest.approx((interval.low, interval.high))
    evidence = evidence_for(rows, 0.99)
    assert evidence.n == 100 and evidence.melanomas == top["melanomas"]
    assert evidence.sentence().startswith(
        f"Of 100 validation and test lesions this model scored between {top['low']:.1%}"
    )


def test_the_auc_interval_is_the_percentiles_of_scikit_learn_on_each_resample():
    """The vectorised bootstrap draws the same resamples as one `rng.integers` call each and
    scores them as roc_auc_score does, ties included."""
    rng = np.random.default_rng(5)
    labels = rng.integers(0, 2, 40)
    probabilities = np.round(rng.random(40) * 0.6 + 0.3 * labels, 1)  # many ties
    samples = []
    draws = np.random.default_rng(7)
    for _ in range(200):
        index = draws.integers(0, 40, 40)
        t, p = labels[index], probabilities[index]
        if t.min() != t.max():
            samples.append(roc_auc_score(t, p))
    measured = roc_auc_interval(labels, probabilities, n=200, seed=7)
    np.testing.assert_allclose(
        measured, [np.percentile(samples, 2.5), np.percentile(samples, 97.5)], rtol=0, atol=1e-12
    )


def test_sensitivity_and_specificity_intervals_are_wilsons_and_not_degenerate_at_100_percent():
    """A percentile bootstrap gave [1.0, 1.0] for 12 of 12 melanomas flagged, claiming no miss was possible."""
    labels = np.r_[np.ones(12), np.zeros(30)]
    probabilities = np.r_[np.full(12, 0.9), np.full(27, 0.1), np.full(3, 0.8)]
    intervals = confidence_intervals(labels, probabilities, 0.5)
    low, high = intervals["sensitivity"]
    assert high == pytest.approx(1.0) and low == pytest.approx(0.7575, abs=1e-4) and low < 0.8
    expected = binomtest(27, 30).proportion_ci(method="wilson")
    assert intervals["specificity"] == pytest.approx([expected.low, expected.high])
    assert proportion_interval(0, 0) is None


@pytest.mark.parametrize(
    "measure",
    [
        threshold_for_sensitivity,
        expected_calibration_error,
        reliability_evidence,
        fit_platt,
        lambda labels, probabilities: evaluate_predictions(labels, probabilities, 0.5),
    ],
    ids=["threshold", "ece", "reliability evidence", "platt", "evaluate"],
)
def test_a_nan_or_infinite_output_is_refused_with_its_count_not_sorted_or_binned_away(predictions, measure):
    y, p = predictions
    damaged = p.copy()
    damaged[np.flatnonzero(y)[:2]] = [np.nan, np.inf]  # a NaN melanoma sorted first lowered the sensitivity reached
    with pytest.raises(ValueError, match="2 of 500 outputs are NaN or infinite.*Retrain"):
        measure(y, damaged)


@pytest.mark.parametrize(
    "measure",
    [roc_auc_interval, lambda y, p: evaluate_predictions(y, p, 0.5), lambda y, p: confidence_intervals(y, p, 0.5)],
    ids=["auc interval", "evaluate", "confidence intervals"],
)
@pytest.mark.parametrize("label", [0, 1])
def test_a_split_of_one_class_is_refused_with_its_counts_not_an_index_error(predictions, measure, label):
    _, p = predictions
    counts = "0 melanomas and 500 other lesions" if label == 0 else "500 melanomas and 0 other lesions"
    with pytest.raises(ValueError, match=f"it holds {counts}, so no ROC AUC can be measured. Measure on a split"):
        measure(np.full(len(p), label), p)
