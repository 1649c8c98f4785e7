"""Choose and validate the combined reading of installed models: `python -m train.combine --data-dir DIR`.

The candidates (every installed model, or `--models`) that share one split (the same validation
and test images, as runs with the same data and seed have) are scored on it. Members are chosen
by forward selection on the validation split's ROC AUC (melanoma.combined.select_members); the
mean of their calibrated probabilities gets the highest threshold whose validation sensitivity
reaches the target; the test split only measures the result. `<models-dir>/combined.json` records
the members, why every other candidate was left out, the threshold, and validation and test metrics.
"""

from __future__ import annotations

import sys
import time

import numpy as np
import pandas as pd
from sklearn.metrics import roc_auc_score

from melanoma.combined import COMBINED_FILE, mean_probability, select_members
from melanoma.data import DataError, join_split, load_labelled_images, load_pixels, read_split
from melanoma.files import write_json
from melanoma.inference import load_predictor
from melanoma.metrics import evaluate_predictions, flagged_by_diagnosis, threshold_for_sensitivity, threshold_rule
from melanoma.store import ModelUnavailableError
from train.tools import add_target_sensitivity_option, chosen_models, installed_models_parser

SCORED_SPLITS = ("val", "test")


def split_key(split: pd.DataFrame) -> frozenset:
    """What must be equal for models to be combined: which images they validated and tested on."""
    return frozenset((image, part) for image, part in zip(split.image_id, split.split) if part in SCORED_SPLITS)


def shared_split(predictors: list) -> tuple[pd.DataFrame, list, dict[str, str]]:
    """The split most candidates share, those candidates, and why each other one was left out."""
    splits = {p.name: read_split(p.entry.folder) for p in predictors}
    groups: dict[frozenset, list] = {}
    for predictor in predictors:
        groups.setdefault(split_key(splits[predictor.name]), []).append(predictor)
    chosen = max(groups.values(), key=len)
    reference = chosen[0].name
    left_out = {
        p.name: (
            f"validated and tested on other images than {reference}; retrain it with the same data and "
            "--seed to make it a candidate"
        )
        for p in predictors
        if p not in chosen
    }
    return splits[reference], chosen, left_out


def main(argv: list[str] | None = None) -> int:
    parser = installed_models_parser("python -m train.combine", __doc__.splitlines()[0])
    add_target_sensitivity_option(parser)
    args = parser.parse_args(argv)
    predictors, left_out = [], {}
    for name in chosen_models(args):
        try:
            predictors.append(load_predictor(name, args.models_dir))
        except ModelUnavailableError as error:
            left_out[name] = f"unavailable: {error}"
    if not predictors:
        print(f"error: no candidate model could be loaded from {args.models_dir}.", file=sys.stderr)
        return 2
    try:
        split, candidates, other_split = shared_split(predictors)
        table = join_split(load_labelled_images(args.data_dir).table, split)
    except DataError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    left_out.update(other_split)
    parts = {s: table[table.split == s] for s in SCORED_SPLITS}
    labels = {s: part.label.to_numpy() for s, part in parts.items()}
    scores: dict[str, dict[str, np.ndarray]] = {s: {} for s in SCORED_SPLITS}
    for size in sorted({p.serving.input_size for p in candidates}):
        pixels = {s: load_pixels(list(part.path), size) for s, part in parts.items()}
        for predictor in (p for p in candidates if p.serving.input_size == size):
            for s in SCORED_SPLITS:
                scores[s][predictor.name] = predictor.score_pixels(pixels[s])
    selection = select_members(labels["val"], scores["val"])
    selection["left_out"].update(left_out)
    members = selection["members"]
    combined = {s: mean_probability([scores[s][m] for m in members]) for s in SCORED_SPLITS}
    threshold = threshold_for_sensitivity(labels["val"], combined["val"], args.target_sensitivity)
    metrics = evaluate_predictions(labels["test"], combined["test"], threshold)
    metrics["split"] = "test"
    metrics["validation_roc_auc"] = selection["validation_roc_auc"]
    if all(parts["test"].dx):
        metrics["flagged_by_diagnosis"] = flagged_by_diagnosis(list(parts["test"].dx), combined["test"], threshold)
    selection["candidates_test_roc_auc"] = {
        name: float(roc_auc_score(labels["test"], p)) for name, p in scores["test"].items()
    }
    write_json(
        f"{args.models_dir}/{COMBINED_FILE}",
        {
            "members": members,
            "combination": "mean of the members' calibrated probabilities",
            "selection_rule": "forward selection by validation ROC AUC (each member must add at least 0.001); "
            "the test split chooses nothing",
            "threshold": threshold,
            "threshold_rule": threshold_rule(args.target_sensitivity),
            "created_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "selection": selection,
            "metrics": metrics,
        },
    )
    print(
        f"combined reading of {', '.join(members)}: validation ROC AUC {selection['validation_roc_auc']:.3f}, "
        f"test ROC AUC {metrics['roc_auc']:.3f}, threshold {threshold:.3f}, sensitivity "
        f"{metrics['at_threshold']['sensitivity']:.3f}, specificity {metrics['at_threshold']['specificity']:.3f}"
    )
    for name, reason in selection["left_out"].items():
        print(f"  left out {name}: {reason}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
