"""Choose and validate the combined reading of installed models: `python -m train.combine --data-dir DIR`.

The candidates (every installed model, or `--models`) that share one split (the same validation
and test images, as runs with the same data and seed have) are scored on it. Members are chosen
by forward selection on the validation split's ROC AUC (melanoma.combined.select_members), and
averaged by the mean of their calibrated probabilities or of their log-odds, whichever
cross-validation within the validation split scores higher; the average gets the highest
threshold whose validation sensitivity reaches the target; the test split only measures the
result. `<models-dir>/combined.json` records the members, how they are averaged, why every other
candidate was left out, the threshold, and validation and test metrics.

Where the candidates include diagnosis models and every image has a diagnosis, the averaged
differential's members are chosen the same way by validation balanced multi-class accuracy
(melanoma.combined.select_differential), its skin-cancer threshold by the sensitivity rule on
validation; combined.json's "differential" records them and its test metrics gain the multi-class ones.

Where every member also has a source-held-out run (`train.run --holdout-source`,
`<member>/holdout-<source>/`), the same combination is measured at that clinic: the held-out runs
score its images and their average gets its threshold from their validation split, as one model's
held-out run does. Held-out weights stay out of git, so their outputs are recorded beside their
cards (RecordedOutputs) and read from there when the weights are gone. Sources some member lacks
are named in combined.json with what to train.
"""

from __future__ import annotations

import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.metrics import balanced_accuracy_score, roc_auc_score

from melanoma import diagnoses
from melanoma.card import CARD_FILE
from melanoma.combined import (
    COMBINED_FILE,
    DIFFERENTIAL_MIN_GAIN,
    MIN_GAIN,
    Combination,
    averaged_scores,
    combination_named,
    select_differential,
    select_members,
)
from melanoma.data import (
    DataError,
    diagnoses_problem,
    join_split,
    load_pixels,
    read_split,
    split_images,
)
from melanoma.files import write_json
from melanoma.inference import Predictor, Scores, load_predictor
from melanoma.metrics import (
    evaluate_diagnoses,
    evaluate_predictions,
    flagged_by_diagnosis,
    threshold_for_sensitivity,
    threshold_rule,
)
from melanoma.store import (
    HOLDOUT_PREFIX,
    MODEL_FILE,
    ModelUnavailableError,
    inspect_model,
    load_keras_model,
)
from train.outputs import RECORDED_OUTPUTS, OutputCache, RecordedOutputs, RecordedRun
from train.tools import add_target_sensitivity_option, chosen_models, installed_models_parser, trained_data

SCORED_SPLITS = ("val", "test")


def split_key(split: pd.DataFrame) -> frozenset:
    """What must be equal for models to be combined: which images they validated and tested on."""
    return frozenset((image, part) for image, part in zip(split.image_id, split.split) if part in SCORED_SPLITS)


def shared_split(predictors: list) -> tuple[list, dict[str, str]]:
    """The candidates that share the split most of them share, and why each other one was left out."""
    splits = {p.name: read_split(p.entry.folder) for p in predictors}
    groups: dict[frozenset, list] = {}
    for predictor in predictors:
        groups.setdefault(split_key(splits[predictor.name]), []).append(predictor)
    chosen = max(groups.values(), key=len)
    reference = chosen[0].name
    left_out = {
        p.name: (
            f"validated and tested on other images than {reference}; retrain it with the same data and "
            "split seed (--seed, or --split-seed with another --seed) to make it a candidate"
        )
        for p in predictors
        if p not in chosen
    }
    return chosen, left_out


def score_splits(predictors: list, table: pd.DataFrame, cache: OutputCache | None = None) -> tuple[dict, dict]:
    """Each predictor's calibrated readings (melanoma.inference.Scores) of the validation and test
    images of `table` (decoded once per input size, and not at all for outputs the cache holds), and
    the labels: ({split: {name: scores}}, {split: labels})."""
    cache = cache or OutputCache(None)
    parts = {s: table[table.split == s] for s in SCORED_SPLITS}
    image_ids = {s: list(part.image_id) for s, part in parts.items()}
    scores: dict[str, dict[str, Scores]] = {s: {} for s in SCORED_SPLITS}
    for size in sorted({p.serving.input_size for p in predictors}):
        pixels: dict[str, np.ndarray] = {}
        for predictor in (p for p in predictors if p.serving.input_size == size):
            for s, part in parts.items():
                raw = cache.get(predictor, image_ids[s])
                if raw is None:
                    if s not in pixels:
                        pixels[s] = load_pixels(list(part.path), size)
                    raw = predictor.raw_outputs(pixels[s])
                    cache.keep(predictor, image_ids[s], raw)
                scores[s][predictor.name] = predictor.calibrate(raw)
    return scores, {s: part.label.to_numpy() for s, part in parts.items()}


def combined_metrics(table: pd.DataFrame, labels: dict, combined: dict, threshold: float) -> dict:
    """The combination's test metrics at its threshold and, where every test image has a diagnosis,
    the share of each diagnosis it flags (where its false alarms fall)."""
    metrics = evaluate_predictions(labels["test"], combined["test"], threshold)
    test_codes = list(table.dx[table.split == "test"])
    if all(test_codes):
        metrics["flagged_by_diagnosis"] = flagged_by_diagnosis(test_codes, combined["test"], threshold)
    return metrics


def held_out_readings(
    members: list[str],
    combination: Combination,
    models_dir: str,
    labelled: pd.DataFrame,
    target_sensitivity: float,
) -> tuple[dict, dict]:
    """The combination at each source its members' held-out runs never saw: (metrics by source,
    why each other source was not measured). Runs scored with their weights have their outputs
    recorded in their folders (RecordedOutputs); runs with recorded outputs are read from them."""
    sources = sorted(
        {run.name[len(HOLDOUT_PREFIX) :] for m in members for run in (Path(models_dir) / m).glob(f"{HOLDOUT_PREFIX}*")}
    )
    measured, not_measured = {}, {}
    recorded = RecordedOutputs()
    for source in sources:
        # Named after their members: every held-out folder is called holdout-<source>.
        runs = {m: replace(inspect_model(Path(models_dir) / m / f"{HOLDOUT_PREFIX}{source}"), name=m) for m in members}
        if unreadable := [m for m, run in runs.items() if run.card is None]:
            not_measured[source] = (
                f"needs every member's held-out run; {', '.join(unreadable)} "
                f"{'has' if len(unreadable) == 1 else 'have'} no readable {HOLDOUT_PREFIX}{source}/{CARD_FILE}. Train "
                f"it with its own options and --holdout-source {source}, then run train.combine again."
            )
            continue
        splits = [read_split(run.folder) for run in runs.values()]
        if len({split_key(split) for split in splits}) > 1:
            not_measured[source] = (
                f"the members' {HOLDOUT_PREFIX}{source} runs validated on different images; train them with the "
                "same split seed (--seed, or --split-seed)."
            )
            continue
        # In image-id order, so that the recorded outputs' keys do not depend on the labels file's row order.
        table = join_split(labelled, splits[0]).sort_values("image_id", kind="stable")
        image_ids = {s: list(table.image_id[table.split == s]) for s in SCORED_SPLITS}
        if lacking := [s for s in SCORED_SPLITS if len(set(table.label[table.split == s])) < 2]:
            found = " and ".join(f"{len(image_ids[s])} {s}" for s in SCORED_SPLITS)
            not_measured[source] = (
                f"of the {HOLDOUT_PREFIX}{source} runs' split, this data folder holds {found} images, and the "
                f"{' and '.join(lacking)} ones are not both melanomas and other lesions; pass the data set they "
                "were trained on with --data-dir."
            )
            continue
        covered = {m for m, run in runs.items() if recorded.covers(RecordedRun(run), image_ids)}
        if missing := [m for m, run in runs.items() if m not in covered and not run.available]:
            not_measured[source] = (
                f"needs every member's held-out run with its weights or its recorded outputs; {', '.join(missing)} "
                f"{'has' if len(missing) == 1 else 'have'} neither a servable {HOLDOUT_PREFIX}{source}/{MODEL_FILE} "
                f"(held-out weights are not kept in git) nor outputs recorded in {HOLDOUT_PREFIX}{source}/"
                f"{RECORDED_OUTPUTS}/ for its card's weights and these images. Train it again with its own options and "
                f"--holdout-source {source}, then run train.combine again (it records the outputs there, to commit)."
            )
            continue
        try:  # held-out weights stay out of git, so they can be older than their tracked card
            predictors = [
                RecordedRun(run) if m in covered else Predictor(run, load_keras_model(run)) for m, run in runs.items()
            ]
        except ModelUnavailableError as error:
            not_measured[source] = (
                f"{HOLDOUT_PREFIX}{source}: {error} Retrain that run with --holdout-source {source}, or refit it with "
                f"python -m train.calibrate --models NAME --holdout-source {source}; then run train.combine again."
            )
            continue
        scores, labels = score_splits(predictors, table, recorded)
        combined = {s: combination.average([scores[s][m].melanoma for m in members]) for s in SCORED_SPLITS}
        threshold = threshold_for_sensitivity(labels["val"], combined["val"], target_sensitivity)
        metrics = combined_metrics(table, labels, combined, threshold)
        metrics["split"] = f"held-out source {source}"
        metrics["validation_roc_auc"] = float(roc_auc_score(labels["val"], combined["val"]))
        metrics["members_roc_auc"] = {
            m: float(roc_auc_score(labels["test"], scores["test"][m].melanoma)) for m in members
        }
        measured[source] = metrics
    return measured, not_measured


def averaged_differential(
    table: pd.DataFrame, scores: dict, melanoma: dict, target_sensitivity: float
) -> tuple[dict | None, dict | None, str]:
    """The averaged differential of the diagnosis candidates: (its combined.json section, its test
    metrics, why there is none). Members by validation balanced multi-class accuracy, the
    skin-cancer threshold by the sensitivity rule on validation, the MEL column the combined
    melanoma probability `melanoma` ({split: (n,)}); the test split only measures."""
    candidates = [name for name, readings in scores["val"].items() if readings.diagnoses is not None]
    codes = {s: list(table.dx[table.split == s]) for s in SCORED_SPLITS}
    if not candidates:
        return None, None, "no candidate is a diagnosis model (train.run --target diagnosis)"
    scored = table[table.split.isin(SCORED_SPLITS)]
    if problem := diagnoses_problem(scored, "choosing and measuring it on validation and test needs"):
        return None, None, problem
    selection = select_differential(codes["val"], {name: scores["val"][name].equal_prior for name in candidates})
    members = selection.pop("members")  # the section's own field: each fact once in combined.json
    averaged = {s: averaged_scores([scores[s][m] for m in members], melanoma[s]) for s in SCORED_SPLITS}
    malignant_val = np.isin(codes["val"], diagnoses.MALIGNANT).astype(int)
    malignant_threshold = threshold_for_sensitivity(malignant_val, averaged["val"].malignant, target_sensitivity)
    test = averaged["test"]
    metrics = evaluate_diagnoses(codes["test"], test.diagnoses, malignant_threshold, predicted=test.predicted)
    metrics["validation_balanced_multiclass_accuracy"] = selection["validation_balanced_multiclass_accuracy"]
    test_true = [diagnoses.index_of(code) for code in codes["test"]]
    selection["candidates_test_balanced_multiclass_accuracy"] = {
        name: float(balanced_accuracy_score(test_true, scores["test"][name].predicted)) for name in candidates
    }
    section = {
        "members": members,
        "combination": "mean of the members' calibrated diagnosis probabilities, its melanoma column the combined "
        "melanoma probability",
        "selection_rule": "forward selection by validation balanced multi-class accuracy (the most probable diagnosis "
        f"of the members' mean softmax under equal class priors; each member must add at least "
        f"{DIFFERENTIAL_MIN_GAIN}), or the mean of every candidate where repeated (up to 5-fold) cross-validation "
        "within the validation split scores that higher; the test split chooses nothing",
        "malignant_threshold": malignant_threshold,
        "malignant_threshold_rule": threshold_rule(target_sensitivity),
        "selection": selection,
    }
    return section, metrics, ""


def main(argv: list[str] | None = None) -> int:
    parser = installed_models_parser("python -m train.combine", __doc__.splitlines()[0])
    add_target_sensitivity_option(parser)
    parser.add_argument(
        "--pretrained-only",
        action="store_true",
        help="consider only candidates whose cards say their weights started from a pretrained checkpoint (ImageNet "
        "or a file): on other clinics' images, randomly initialised members made the combined reading worse than its "
        "best member",
    )
    parser.add_argument(
        "--output-cache",
        metavar="DIR",
        help="keep each model's raw outputs on the validation and test images here, so that a rerun after one more "
        "training scores only the new model (entries are keyed by the weights' sha256 and the images)",
    )
    args = parser.parse_args(argv)
    cache = OutputCache(args.output_cache)
    try:  # a misspelt name is an error; an installed model that cannot be a candidate is left out, with why
        names = chosen_models(args)
    except ModelUnavailableError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    predictors, left_out = [], {}
    for name in names:
        try:
            predictor = load_predictor(name, args.models_dir)
        except ModelUnavailableError as error:
            left_out[name] = f"unavailable: {error}"
            continue
        if args.pretrained_only and not predictor.entry.card.network.pretrained:
            initialisation = predictor.entry.card.network.weights_initialisation
            left_out[name] = (
                f"not a candidate under --pretrained-only: its card gives its initial weights as {initialisation!r}"
            )
            continue
        predictors.append(predictor)
    if not predictors:
        reasons = "".join(f"\n  {name}: {reason}" for name, reason in left_out.items())
        advice = " Leave out --pretrained-only, or install a pretrained model." if args.pretrained_only else ""
        print(f"error: no candidate model is left in {args.models_dir}:{reasons}{advice}", file=sys.stderr)
        return 2
    try:
        candidates, other_split = shared_split(predictors)
        (labelled,) = trained_data(args, [candidates[0].entry])  # the candidates share one split, so one data set
        table = split_images(labelled, candidates[0].entry.folder, SCORED_SPLITS)
    except DataError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    left_out.update(other_split)
    scores, labels = score_splits(candidates, table, cache)
    selection = select_members(labels["val"], {name: readings.melanoma for name, readings in scores["val"].items()})
    selection["left_out"].update(left_out)
    # The file's own fields, which the app reads, and not again in the selection's record.
    members = selection.pop("members")
    combination = combination_named(selection.pop("combination"))
    combined = {s: combination.average([scores[s][m].melanoma for m in members]) for s in SCORED_SPLITS}
    threshold = threshold_for_sensitivity(labels["val"], combined["val"], args.target_sensitivity)
    metrics = combined_metrics(table, labels, combined, threshold)
    metrics["split"] = "test"
    metrics["validation_roc_auc"] = selection["validation_roc_auc"]
    differential, differential_metrics, no_differential = averaged_differential(
        table, scores, combined, args.target_sensitivity
    )
    if differential_metrics:
        metrics["diagnoses"] = differential_metrics
    held_out, not_measured = held_out_readings(
        members, combination, args.models_dir, labelled.table, args.target_sensitivity
    )
    selection["candidates_test_roc_auc"] = {
        name: float(roc_auc_score(labels["test"], readings.melanoma)) for name, readings in scores["test"].items()
    }
    write_json(
        f"{args.models_dir}/{COMBINED_FILE}",
        {
            "members": members,
            "combination": combination.name,
            "selection_rule": f"forward selection by validation ROC AUC (each member must add at least {MIN_GAIN}), "
            "averaging by whichever combination repeated (up to 5-fold) cross-validation within the validation split "
            "scores higher (each repeat's held-out outputs pooled into one ROC AUC); the test split chooses nothing",
            "threshold": threshold,
            "threshold_rule": threshold_rule(args.target_sensitivity),
            "created_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "selection": selection,
            "metrics": metrics,
            "holdout_metrics": held_out,
            "holdout_not_measured": not_measured,
            **({"differential": differential} if differential else {"no_differential": no_differential}),
        },
    )
    print(
        f"combined reading of {', '.join(members)}: validation ROC AUC {selection['validation_roc_auc']:.3f}, "
        f"test ROC AUC {metrics['roc_auc']:.3f}, threshold {threshold:.3f}, sensitivity "
        f"{metrics['at_threshold']['sensitivity']:.3f}, specificity {metrics['at_threshold']['specificity']:.3f}"
    )
    if "cross_validated" in selection:
        scored = ", ".join(f"{name} {value:.4f}" for name, value in selection["cross_validated"].items())
        print(f"  averaged by the {combination.name} (cross-validated within validation: {scored})")
    else:
        print(f"  averaged by the {combination.name} (one candidate, or too few melanomas to cross-validate)")
    for name, reason in selection["left_out"].items():
        print(f"  left out {name}: {reason}")
    if differential:
        print(
            f"averaged differential of {', '.join(differential['members'])}: validation balanced multi-class "
            f"accuracy {differential_metrics['validation_balanced_multiclass_accuracy']:.3f}, test "
            f"{differential_metrics['balanced_multiclass_accuracy']:.3f}, skin-cancer threshold "
            f"{differential['malignant_threshold']:.3f}, test malignant ROC AUC "
            f"{differential_metrics['malignant']['roc_auc'] or float('nan'):.3f}"
        )
        chosen = differential["selection"]
        if "cross_validated" in chosen:
            scored = ", ".join(f"{rule} {value:.3f}" for rule, value in chosen["cross_validated"].items())
            print(f"  chosen by {chosen['rule']} (cross-validated within validation: {scored})")
        for name, reason in chosen["left_out"].items():
            print(f"  left out of the differential {name}: {reason}")
    else:
        print(f"no averaged differential: {no_differential}")
    for source, measured in held_out.items():
        members_auc = ", ".join(f"{m} {auc:.3f}" for m, auc in measured["members_roc_auc"].items())
        print(f"  held-out source {source}: ROC AUC {measured['roc_auc']:.3f} (members: {members_auc})")
    for source, reason in not_measured.items():
        print(f"  held-out source {source} not measured: {reason}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
