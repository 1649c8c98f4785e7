"""Recompute metrics.json for an installed model on any labelled folder.

`python -m train.evaluate --model NAME --data-dir DIR [--out FILE]`: every image of DIR is
scored (in any of the three layouts) at the threshold stored in the model's card, by the same
code as the app's "Validate on your images" page (melanoma.validation). Without --out the result
is printed, so a model's shipped metrics are never overwritten by accident. An image that does
not decode is reported on stderr and left out, and the exit status is 1; images the
out-of-distribution gate rejects are counted in the metrics, and their number is printed.

Where the labels give every image's diagnosis (ISIC 2018 Task 3's one-hot ground truth, HAM10000's
dx, or a dx column in labels.csv), the metrics also hold the fraction of each diagnosis flagged at
the melanoma threshold and, for a diagnosis model, its seven-class metrics (balanced multi-class
accuracy, recall per class, the 7 × 7 confusion matrix, malignant-vs-benign ROC AUC); where they do
not, a line on stderr says what is left out and why.

`--split val` (or train, test) scores only the images that the model's split.csv puts in that part:
how recipes are compared where they are chosen, on validation, through the serving code.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import replace
from pathlib import Path

from melanoma.arguments import output_problem
from melanoma.card import CARD_FILE
from melanoma.combined import COMBINED_NAME, CombinedUnavailableError
from melanoma.data import (
    LAYOUT_FILES,
    SPLIT_FILE,
    DataError,
    LabelledImages,
    load_labelled_images,
    split_images,
)
from melanoma.files import write_json
from melanoma.framework import add_framework_logs_option
from melanoma.inference import load_predictor
from melanoma.progress import TerminalProgress
from melanoma.store import METRICS_FILE, MODEL_FILE, ModelUnavailableError, add_models_dir_option, measure_command
from melanoma.validation import ModelResult, validate_folder


def summary(result: ModelResult) -> dict:
    """What the terminal shows of the metrics: the headline numbers, and those by diagnosis where measured."""
    metrics = result.metrics
    shown = {key: metrics[key] for key in ("n_images", "n_melanoma", "roc_auc", "average_precision", "brier_score")}
    shown["not_assessed_by_gate"] = result.not_assessed
    if "flagged_by_diagnosis" in metrics:
        shown["flagged_by_diagnosis"] = {
            code: counts["flagged"] for code, counts in metrics["flagged_by_diagnosis"].items()
        }
    if "diagnoses" in metrics:
        measured = metrics["diagnoses"]
        shown.update(
            balanced_multiclass_accuracy=measured["balanced_multiclass_accuracy"],
            recall=measured["recall"],
            malignant_roc_auc=measured["malignant"]["roc_auc"],
        )
    return shown


SPLIT_PARTS = ("train", "val", "test")


def restrict_to_split(data: LabelledImages, folder: Path, part: str) -> LabelledImages:
    """Only the images of `data` that the split.csv in `folder` puts in `part`; all of them must be there."""
    if not (folder / SPLIT_FILE).is_file():
        raise DataError(
            [f"{folder / SPLIT_FILE}: not found, so --split {part} has no images to choose. Leave out --split."]
        )
    table = split_images(data, folder, (part,))
    if table.empty:
        raise DataError([f"{folder / SPLIT_FILE} puts no image in {part}; choose another --split."])
    return replace(data, table=table.drop(columns="split"))


def model_folder_problem(path: str) -> str | None:
    """Why --out may not be `path`: a file in an installed model's folder (or a held-out run's). That
    folder's metrics.json is train.run's and train.calibrate's, with the calibration, evidence and
    validation entries the app reads, which scoring a folder does not compute."""
    target = Path(path).resolve()
    folder = next(
        (above for above in target.parents if (above / CARD_FILE).is_file() or (above / MODEL_FILE).is_file()), None
    )
    if folder is None:
        return None
    return (
        f"--out {path} is in the model folder {folder}, whose {METRICS_FILE} train.run and train.calibrate write "
        "with the calibration effect, reliability evidence and validation AUC the app shows, which train.evaluate "
        f"does not compute. Write elsewhere, e.g. --out runs/{folder.name}-metrics.json; to refresh the model's own "
        f"metrics, run {measure_command(folder.name)}."
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m train.evaluate", description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True, help="an installed model's name, or combined (the combined reading)")
    add_models_dir_option(parser)
    parser.add_argument("--data-dir", required=True)
    parser.add_argument("--layout", default="auto", choices=["auto", *LAYOUT_FILES])
    parser.add_argument(
        "--split",
        choices=SPLIT_PARTS,
        help="only the images the model's split.csv puts in this part (val: where recipes are chosen); default all",
    )
    parser.add_argument(
        "--out",
        help="write the metrics here, e.g. runs/NAME-metrics.json (not into a model's folder: its metrics.json is "
        "train.run's and train.calibrate's)",
    )
    add_framework_logs_option(parser)  # read by the train package, which imports TensorFlow before this runs
    args = parser.parse_args(argv)
    # Checked before any image is scored: a bad path would otherwise fail, or overwrite, only at the end.
    if problem := output_problem(args.out, "--out") or (args.out and model_folder_problem(args.out)):
        parser.error(problem)
    try:
        predictor = load_predictor(args.model, args.models_dir)
        data = load_labelled_images(args.data_dir, args.layout)
        # The combined reading is measured by the same code as on the Validate page: its members, then their average.
        combined = args.model == COMBINED_NAME
        predictors, spec = (predictor.members, predictor.spec) if combined else ([predictor], None)
        if args.split:  # a combined reading's members share one split (train.combine)
            data = restrict_to_split(data, predictors[0].entry.folder, args.split)
        validation = validate_folder(predictors, data, spec, progress=TerminalProgress(sys.stderr))
    except (DataError, ModelUnavailableError, CombinedUnavailableError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    for problem in validation.skipped:
        print(f"skipped {problem}", file=sys.stderr)
    for note in validation.notes:
        print(note, file=sys.stderr)
    result = validation.results[-1]
    metrics = result.metrics
    metrics["split"] = f"{args.split} split of {args.data_dir}" if args.split else f"all images of {args.data_dir}"
    if args.out:
        write_json(args.out, metrics)
        print(f"wrote {args.out}")
    print(json.dumps(summary(result), indent=2))
    return 1 if validation.skipped else 0


if __name__ == "__main__":
    sys.exit(main())
