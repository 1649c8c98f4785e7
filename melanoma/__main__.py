"""Command line: `python -m melanoma models | predict | explain | audit`.

explain writes an occlusion-sensitivity or Grad-CAM overlay of one image (and the raw map); an image
the out-of-distribution gate refuses is printed as NOT ASSESSED, gets no map, and exits with 1.

predict scores image files and folders in batches and prints, per image, the calibrated melanoma
probability and the decision at the model's validated threshold, or NOT ASSESSED when the image
does not look like a dermoscopic image of a skin lesion (the out-of-distribution gate); unreadable
files are reported on stderr and skipped, and the exit status is 1 when any file was skipped (or
its --fhir Bundle could not be written). A diagnosis model adds the skin-cancer probability with
its verdict and the differential; the model `combined` is the validated combined reading
(python -m train.combine).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from melanoma import audit, diagnoses
from melanoma.arguments import output_problem, whole_number
from melanoma.cases import skin_cancer_word
from melanoma.combined import COMBINED_NAME, CombinedSpec, CombinedUnavailableError
from melanoma.data import is_image_file
from melanoma.framework import add_framework_logs_option, import_tensorflow_quietly
from melanoma.images import ImageError, read_image
from melanoma.store import ModelUnavailableError, add_models_dir_option, list_models


def opacity(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"expected an opacity from 0 (image only) to 1 (map only); got {text!r}")
    return value


def expand_paths(paths: list[str]) -> list[Path]:
    """Files as given, and the image files inside given folders (recursively, sorted): by their
    extension, or DICOM files by their preamble whatever their name (PACS exports: DICOM/IM000001)."""
    files: list[Path] = []
    for path in map(Path, paths):
        if path.is_dir():
            files.extend(sorted(p for p in path.rglob("*") if is_image_file(p)))
        else:
            files.append(path)
    return files


def command_models(args: argparse.Namespace) -> int:
    models = list_models(args.models_dir)
    if not models:
        print(f"No models installed in {args.models_dir}. Train them with: python -m train.run --data-dir DIR")
        return 1
    width = max(len(entry.name) for entry in models) + 2
    print(f"{'model':<{width}}{'input':>8}{'threshold':>11}{'test AUC':>10}  status")
    for entry in models:
        if entry.available:
            auc = f"{entry.test_auc:.3f}" if entry.test_auc is not None else "-"
            kind = ", diagnosis model (7 classes)" if entry.serving.is_diagnosis else ""
            print(f"{entry.name:<{width}}{entry.input_size:>8}{entry.threshold:>11.3f}{auc:>10}  available{kind}")
        else:
            print(f"{entry.name:<{width}}{'-':>8}{'-':>11}{'-':>10}  unavailable: {entry.problem}")
    spec = CombinedSpec.load(args.models_dir)
    if spec is not None:
        print(f"{COMBINED_NAME:<{width}}{'-':>8}{spec.threshold:>11.3f}{spec.test_auc:>10.3f}  {spec.composition}")
    elif problem := CombinedSpec.problem_in(args.models_dir):
        print(f"{COMBINED_NAME:<{width}}{'-':>8}{'-':>11}{'-':>10}  unavailable: {problem}")
    return 0


def command_predict(args: argparse.Namespace) -> int:
    from melanoma.cases import decision_from
    from melanoma.combined import combine
    from melanoma.inference import load_predictor, read_together
    from melanoma.progress import TerminalProgress

    if args.fhir and Path(args.fhir).exists() and not Path(args.fhir).is_dir():
        print(f"error: --fhir {args.fhir} is a file; give a folder for the Bundles.", file=sys.stderr)
        return 2
    predictor = load_predictor(args.model, args.models_dir)
    combined = args.model == COMBINED_NAME
    models = predictor.members if combined else [predictor]
    skipped = unwritten = 0
    bundles: dict[str, Path] = {}  # Bundle file name -> the image whose Bundle it is, in this run
    files = expand_paths(args.paths)
    progress = TerminalProgress(sys.stderr)  # at a terminal only; nothing when stderr is piped or captured
    for start in range(0, len(files), args.batch_size):
        batch, decoded = [], []
        for path in files[start : start + args.batch_size]:
            try:
                decoded.append(read_image(str(path)))
                batch.append(path)
            except (ImageError, OSError) as error:
                skipped += 1
                print(f"skipped {path}: {error}", file=sys.stderr)
        if batch:
            readings = read_together(models, [image.pixels for image in decoded])
            gates = predictor.combine_readings(readings).gates if combined else readings[0].gates
            for index, path in enumerate(batch):
                # Every verdict through melanoma.cases (and melanoma.combined), as the app reaches them.
                decisions = [decision_from(model, reading, index) for model, reading in zip(models, readings)]
                verdict = combine(decisions, predictor.spec) if combined else decisions[0]
                print(prediction_line(path, predictor.name, verdict, gates[index], args.json))
                if args.fhir:
                    try:
                        write_bundle(
                            Path(args.fhir),
                            path,
                            decoded[index].dicom,
                            models,
                            decisions,
                            verdict if combined else None,
                            bundles,
                        )
                    except OSError as error:  # a full disk, a folder not writable: this image's Bundle only
                        unwritten += 1
                        print(
                            f"error: {path}'s FHIR Bundle could not be written to {args.fhir} ({error}). "
                            "Make the folder writable, or give another --fhir folder, and run again.",
                            file=sys.stderr,
                        )
        progress(min(start + args.batch_size, len(files)), len(files))
    if not files:
        print("No image files found in the given paths.", file=sys.stderr)
        return 1
    return 1 if skipped or unwritten else 0


def write_bundle(
    folder: Path, image: Path, dicom, models: list, decisions: list, combined, bundles: dict[str, Path]
) -> None:
    """One image's FHIR Bundle in `folder`: an Observation and a Device per model (and the combined
    reading's Observation), named after the DICOM instance or the image file. Two images of one run
    with the same name (lesion.jpg and lesion.png, a/x.jpg and b/x.jpg) get -2, -3, ... rather than
    one Bundle in place of the other; `bundles` records the names this run has written."""
    from datetime import datetime

    from melanoma.fhir import FhirCase, ModelFacts, bundle_file_name, bundle_json

    facts = [ModelFacts.from_card(model.entry.card, model.entry.metrics) for model in models]
    case = FhirCase(tuple(zip(decisions, facts)), datetime.now().astimezone(), combined=combined, dicom=dicom)
    name = wanted = bundle_file_name(image.name, dicom)
    repeat = 1
    while name in bundles:
        repeat += 1
        name = wanted.replace(".fhir.json", f"-{repeat}.fhir.json")
    if name != wanted:
        print(f"note: {image}'s Bundle is {name}: {wanted} holds {bundles[wanted]}'s", file=sys.stderr)
    bundles[name] = image
    folder.mkdir(parents=True, exist_ok=True)
    (folder / name).write_text(bundle_json(case), encoding="utf-8")


def prediction_line(path: Path, model: str, verdict, gate, as_json: bool) -> str:
    """One image's line from its verdict (a melanoma.cases.Decision, or a CombinedReading): JSON, or
    tab-separated path, probability, verdict (and, from a diagnosis model or the combined reading's
    averaged differential, the skin-cancer probability, verdict and short differential)."""
    skin_cancer = getattr(verdict, "skin_cancer", None)
    if as_json:  # unrounded: a rounded probability could contradict the decision at the threshold
        # No verdict (null) for an image the gate refused, as the text's NOT ASSESSED and FHIR's
        # dataAbsentReason: a false there would read as "not melanoma".
        assessed = gate.in_distribution
        line = {
            "path": str(path),
            "model": model,
            "probability": verdict.probability,
            "threshold": verdict.threshold,
            "melanoma": bool(verdict.melanoma) if assessed and verdict.melanoma is not None else None,
            "in_distribution": gate.in_distribution,
            "ood_score": gate.score,
            "ood_reason": gate.reason,
        }
        if skin_cancer is not None:
            line.update(
                diagnoses={code: dict(verdict.differential)[code] for code in diagnoses.CODES},
                malignant=verdict.malignant_probability,
                malignant_threshold=verdict.malignant_threshold,
                skin_cancer=bool(skin_cancer) if assessed else None,
            )
        return json.dumps(line)
    if not gate.in_distribution:
        return f"{path}\t{verdict.probability:.4f}\tNOT ASSESSED: {gate.reason}; no verdict for this image"
    line = f"{path}\t{verdict.probability:.4f}\t{'SUSPICIOUS for melanoma' if verdict.melanoma else 'not flagged'}"
    if skin_cancer is not None:
        word = skin_cancer_word(skin_cancer, verdict.melanoma).replace("suspicious", "SUSPICIOUS")
        line += (
            f"\tskin cancer {verdict.malignant_probability:.4f} {word}"
            f"\t{diagnoses.short_differential(verdict.differential)}"
        )
    return line


def command_explain(args: argparse.Namespace) -> int:
    import numpy as np
    from PIL import Image

    from melanoma.explain.render import check_colourmap, overlay, signed_scale
    from melanoma.inference import load_predictor

    signed = args.method == "occlusion"
    try:  # every option is checked before the image is decoded or a model loaded
        colourmap = check_colourmap(args.colourmap or ("blue-white-red" if signed else "inferno"), signed)
        if problem := output_problem(args.out, "--out", ".png") or output_problem(args.npy, "--npy", ".npy"):
            raise ValueError(problem)
        pixels = read_image(args.image).pixels
    except (ImageError, OSError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    predictor = load_predictor(args.model, args.models_dir)
    if args.output == "malignant" and (args.model == COMBINED_NAME or not predictor.is_diagnosis):
        reads = "its map explains its melanoma probability" if args.model == COMBINED_NAME else "it reads melanoma only"
        print(
            f"error: --output malignant needs a diagnosis model; {predictor.name}: {reads}. Leave out --output, "
            "or choose a diagnosis model (python -m melanoma models).",
            file=sys.stderr,
        )
        return 2
    reading = predictor.read([pixels])  # the gate's verdict first: a refused image gets no map
    probability = float(reading.scores.melanoma[0])
    if not reading.gates[0].in_distribution:
        print(
            f"{args.image}\t{probability:.4f}\tNOT ASSESSED: {reading.gates[0].reason}; no map written "
            "(the models read dermoscopic images of skin lesions: explain one of those)"
        )
        return 1
    # The combined reading explains its melanoma probability only (refused above otherwise).
    skin_cancer = {"malignant": True} if args.output == "malignant" else {}
    scores = (
        predictor.occlusion(pixels, args.patch_size, **skin_cancer)
        if signed
        else predictor.grad_cam(pixels, **skin_cancer)
    )
    Image.fromarray(overlay(pixels, scores, args.alpha, colourmap, signed)).save(args.out)
    if args.npy:
        np.save(args.npy, scores)
    # The number the map explains, named: a skin-cancer map beside the melanoma probability misleads.
    explained = (
        f"skin-cancer probability {float(reading.scores.malignant[0]):.4f}"
        if skin_cancer
        else f"melanoma probability {probability:.4f}"
    )
    # The colour scale, which the PNG does not carry: ±0.01 and ±0.3 maps are drawn alike otherwise.
    scale = f", full scale ±{signed_scale(scores):.3f}" if signed else " (relative)"
    print(f"{args.image}\t{explained}\t{args.method} overlay written to {args.out}{scale}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m melanoma", description="Melanoma decision support from the command line."
    )
    add_models_dir_option(parser)
    add_framework_logs_option(parser)
    # Options shared by every subcommand are accepted after it too (`predict --models-dir DIR`),
    # where people put them; SUPPRESS keeps an absent one from overriding the value given before.
    shared = argparse.ArgumentParser(add_help=False)
    shared.add_argument("--models-dir", default=argparse.SUPPRESS, help="folder of installed models")
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("models", parents=[shared], help="list the installed models")
    predict = commands.add_parser("predict", parents=[shared], help="melanoma probability for image files or folders")
    predict.add_argument(
        "--model", required=True, help="an installed model's name, or combined (see: python -m melanoma models)"
    )
    predict.add_argument("--json", action="store_true", help="one JSON object per line")
    predict.add_argument(
        "--fhir",
        metavar="DIR",
        help="also write one FHIR R4 Bundle per image into DIR (a DiagnosticReport "
        "with an Observation and a Device per model)",
    )
    predict.add_argument("--batch-size", type=whole_number(1), default=32)
    predict.add_argument("paths", nargs="+")
    explain = commands.add_parser("explain", parents=[shared], help="write an explanation overlay for one image")
    explain.add_argument("--model", required=True, help="an installed model's name, or combined")
    explain.add_argument("--method", choices=["occlusion", "gradcam"], default="occlusion")
    explain.add_argument(
        "--output",
        choices=["melanoma", "malignant"],
        default="melanoma",
        help="what the map explains: the melanoma probability, or a diagnosis model's skin-cancer one",
    )
    explain.add_argument(
        "--patch-size", type=whole_number(1), default=20, help="occlusion patch, in pixels of the model input"
    )
    explain.add_argument("--alpha", type=opacity, default=0.5, help="overlay opacity, from 0 to 1")
    explain.add_argument(
        "--colourmap", help="blue-white-red / green-white-purple (occlusion), inferno / jet / viridis / magma"
    )
    explain.add_argument("--out", required=True, help="overlay PNG")
    explain.add_argument("--npy", help="also save the raw map (model input resolution) as .npy")
    explain.add_argument("image")
    audit.add_arguments(
        commands.add_parser("audit", help="export the audit trail (who read which image, with what result)")
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command not in ("models", "audit") and not args.framework_logs:
        import_tensorflow_quietly()
    handlers = {
        "models": command_models,
        "predict": command_predict,
        "explain": command_explain,
        "audit": audit.command_audit,
    }
    try:
        return handlers[args.command](args)
    except (ModelUnavailableError, CombinedUnavailableError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
