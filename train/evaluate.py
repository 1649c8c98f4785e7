"""Recompute metrics.json for an installed model on any labelled folder.

`python -m train.evaluate --model NAME --data-dir DIR [--out FILE]`: every image of DIR is
scored (in any of the three layouts) at the threshold stored in the model's card. Without
--out the result is printed, so a model's shipped metrics are never overwritten by accident.
"""

from __future__ import annotations

import argparse
import json
import sys

from melanoma.data import DataError, load_labelled_images, load_pixels
from melanoma.files import write_json
from melanoma.framework import import_tensorflow_quietly
from melanoma.inference import load_predictor
from melanoma.metrics import evaluate_predictions
from melanoma.store import DEFAULT_MODELS_DIR, ModelUnavailableError


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m train.evaluate", description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True)
    parser.add_argument("--models-dir", default=str(DEFAULT_MODELS_DIR))
    parser.add_argument("--data-dir", required=True)
    parser.add_argument("--layout", default="auto", choices=["auto", "isic2018", "ham10000", "generic"])
    parser.add_argument("--out", help="write metrics.json here (e.g. models/NAME/metrics.json)")
    parser.add_argument("--framework-logs", action="store_true", help="show TensorFlow's start-up logs (debugging)")
    args = parser.parse_args(argv)
    if not args.framework_logs:
        import_tensorflow_quietly()
    try:
        predictor = load_predictor(args.model, args.models_dir)
        data = load_labelled_images(args.data_dir, args.layout)
        pixels = load_pixels(list(data.table.path), predictor.entry.input_size)
    except (DataError, ModelUnavailableError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    probabilities = predictor.score_pixels(pixels)
    metrics = evaluate_predictions(data.table.label.to_numpy(), probabilities, predictor.threshold)
    metrics["split"] = f"all images of {args.data_dir}"
    if args.out:
        write_json(args.out, metrics)
        print(f"wrote {args.out}")
    print(json.dumps({k: metrics[k] for k in ("n_images", "n_melanoma", "roc_auc", "average_precision", "brier_score")}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
