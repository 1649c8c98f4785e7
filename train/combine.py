"""Validate the combined reading of several installed models: `python -m train.combine --data-dir DIR`.

The members must share one split (the same validation and test images, as runs with the same
data and seed have). Their calibrated probabilities are averaged; the threshold is the highest
whose validation sensitivity reaches the target; the metrics are measured on the test split and
written with the members to `<models-dir>/combined.json`, which the app and the comparison page read.
"""

from __future__ import annotations

import sys
import time

import pandas as pd

from melanoma.combined import COMBINED_FILE, mean_probability
from melanoma.data import DataError, join_split, load_labelled_images, load_pixels, read_split
from melanoma.files import write_json
from melanoma.inference import load_predictor
from melanoma.metrics import evaluate_predictions, threshold_for_sensitivity
from melanoma.store import ModelUnavailableError
from train.tools import chosen_models, installed_models_parser


def shared_split(predictors) -> pd.DataFrame:
    """The members' common split.csv; members with different validation or test images cannot be combined."""
    splits = {p.name: read_split(p.entry.folder) for p in predictors}
    keyed = {name: set(zip(s.image_id, s.split)) - {(i, "train") for i in s.image_id} for name, s in splits.items()}
    first = next(iter(keyed))
    differing = [name for name, pairs in keyed.items() if pairs != keyed[first]]
    if differing:
        raise DataError([f"{', '.join(differing)} validated and tested on other images than {first}; retrain them with "
                         "the same data and --seed, or combine only models that share a split."])
    return splits[first]


def main(argv: list[str] | None = None) -> int:
    parser = installed_models_parser("python -m train.combine", __doc__.splitlines()[0])
    parser.add_argument("--target-sensitivity", type=float, default=0.90)
    args = parser.parse_args(argv)
    names = chosen_models(args)
    try:
        predictors = [load_predictor(name, args.models_dir) for name in names]
        split = shared_split(predictors)
        table = join_split(load_labelled_images(args.data_dir).table, split)
    except (DataError, ModelUnavailableError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    parts = {s: table[table.split == s] for s in ("val", "test")}
    combined = {}
    for split_name, part in parts.items():
        combined[split_name] = mean_probability(
            [p.score_pixels(load_pixels(list(part.path), p.serving.input_size)) for p in predictors])
    threshold = threshold_for_sensitivity(parts["val"].label.to_numpy(), combined["val"], args.target_sensitivity)
    metrics = evaluate_predictions(parts["test"].label.to_numpy(), combined["test"], threshold)
    metrics["split"] = "test"
    write_json(f"{args.models_dir}/{COMBINED_FILE}", {
        "members": names, "combination": "mean of the members' calibrated probabilities", "threshold": threshold,
        "threshold_rule": f"highest threshold with validation sensitivity >= {args.target_sensitivity}",
        "created_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "metrics": metrics})
    print(f"combined reading of {', '.join(names)}: test ROC AUC {metrics['roc_auc']:.3f}, threshold {threshold:.3f}, "
          f"sensitivity {metrics['at_threshold']['sensitivity']:.3f}, specificity {metrics['at_threshold']['specificity']:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
