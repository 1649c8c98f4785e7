"""Recompute metrics.json for an installed model on any labelled folder.

`python -m train.evaluate --model NAME --data-dir DIR [--out FILE]`: every image of DIR is
scored (in any of the three layouts) at the threshold stored in the model's card, by the same
code as the app's "Validate on your images" page (melanoma.validation). Without --out the result
is printed, so a model's shipped metrics are never overwritten by accident. An image that does
not decode is reported on stderr and left out, and the exit status is 1; images the
out-of-distribution gate rejects are counted in the metrics, and their number is printed.
"""

from __future__ import annotations

import argparse
import json
import sys

from melanoma.data import DataError, load_labelled_images
from melanoma.files import write_json
from melanoma.framework import add_framework_logs_option
from melanoma.inference import load_predictor
from melanoma.progress import TerminalProgress
from melanoma.store import ModelUnavailableError, add_models_dir_option
from melanoma.validation import validate_folder


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m train.evaluate", description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True)
    add_models_dir_option(parser)
    parser.add_argument("--data-dir", required=True)
    parser.add_argument("--layout", default="auto", choices=["auto", "isic2018", "ham10000", "generic"])
    parser.add_argument("--out", help="write metrics.json here (e.g. models/NAME/metrics.json)")
    add_framework_logs_option(parser)  # read by the train package, which imports TensorFlow before this runs
    args = parser.parse_args(argv)
    try:
        predictor = load_predictor(args.model, args.models_dir)
        data = load_labelled_images(args.data_dir, args.layout)
        validation = validate_folder([predictor], data, progress=TerminalProgress(sys.stderr))
    except (DataError, ModelUnavailableError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    for problem in validation.skipped:
        print(f"skipped {problem}", file=sys.stderr)
    result = validation.results[0]
    metrics = result.metrics
    metrics["split"] = f"all images of {args.data_dir}"
    if args.out:
        write_json(args.out, metrics)
        print(f"wrote {args.out}")
    summary = {k: metrics[k] for k in ("n_images", "n_melanoma", "roc_auc", "average_precision", "brier_score")}
    summary["not_assessed_by_gate"] = result.not_assessed
    print(json.dumps(summary, indent=2))
    return 1 if validation.skipped else 0


if __name__ == "__main__":
    sys.exit(main())
