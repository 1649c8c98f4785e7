"""Command line: `python -m melanoma models | predict | explain`.

explain writes an occlusion-sensitivity or Grad-CAM overlay of one image (and the raw map).

predict scores image files and folders in batches and prints, per image, the calibrated melanoma
probability and the decision at the model's validated threshold, or NOT ASSESSED when the image
does not look like a dermoscopic image of a skin lesion (the out-of-distribution gate); unreadable
files are reported on stderr and skipped, and the exit status is 1 when any file was skipped.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from melanoma.framework import add_framework_logs_option, import_tensorflow_quietly
from melanoma.images import IMAGE_EXTENSIONS, ImageError, read_image
from melanoma.store import ModelUnavailableError, add_models_dir_option, list_models


def expand_paths(paths: list[str]) -> list[Path]:
    """Files as given, and the image files inside given folders (recursively, sorted)."""
    files: list[Path] = []
    for path in map(Path, paths):
        if path.is_dir():
            files.extend(sorted(p for p in path.rglob("*") if p.suffix.lower() in IMAGE_EXTENSIONS))
        else:
            files.append(path)
    return files


def command_models(args: argparse.Namespace) -> int:
    models = list_models(args.models_dir)
    if not models:
        print(f"No models installed in {args.models_dir}. Train them with: python -m train.run --data-dir DIR")
        return 1
    print(f"{'model':<18}{'input':>8}{'threshold':>11}{'test AUC':>10}  status")
    for entry in models:
        if entry.available:
            auc = f"{entry.test_auc:.3f}" if entry.test_auc is not None else "-"
            print(f"{entry.name:<18}{entry.input_size:>8}{entry.threshold:>11.3f}{auc:>10}  available")
        else:
            print(f"{entry.name:<18}{'-':>8}{'-':>11}{'-':>10}  unavailable: {entry.problem}")
    return 0


def command_predict(args: argparse.Namespace) -> int:
    from melanoma.inference import load_predictor
    from melanoma.progress import TerminalProgress

    predictor = load_predictor(args.model, args.models_dir)
    skipped = 0
    files = expand_paths(args.paths)
    progress = TerminalProgress(sys.stderr)  # at a terminal only; nothing when stderr is piped or captured
    for start in range(0, len(files), args.batch_size):
        batch, images = [], []
        for path in files[start:start + args.batch_size]:
            try:
                images.append(read_image(str(path)).pixels)
                batch.append(path)
            except (ImageError, OSError) as error:
                skipped += 1
                print(f"skipped {path}: {error}", file=sys.stderr)
        probabilities = predictor.probabilities(images, args.batch_size)
        for path, probability, gate in zip(batch, probabilities, predictor.gate(images)):
            decision = bool(probability >= predictor.threshold)
            if args.json:  # unrounded: a rounded probability could contradict the decision at the threshold
                print(json.dumps({"path": str(path), "model": predictor.name, "probability": float(probability),
                                  "threshold": predictor.threshold, "melanoma": decision,
                                  "in_distribution": gate.in_distribution, "ood_score": gate.score,
                                  "ood_reason": gate.reason}))
            elif gate.in_distribution:
                print(f"{path}\t{probability:.4f}\t{'MELANOMA' if decision else 'other'}")
            else:
                print(f"{path}\t{probability:.4f}\tNOT ASSESSED: {gate.reason}; no verdict for this image")
        progress(min(start + args.batch_size, len(files)), len(files))
    if not files:
        print("No image files found in the given paths.", file=sys.stderr)
        return 1
    return 1 if skipped else 0


def command_explain(args: argparse.Namespace) -> int:
    import numpy as np
    from PIL import Image

    from melanoma.cases import model_view
    from melanoma.explain import grad_cam, occlusion_sensitivity
    from melanoma.inference import load_predictor
    from melanoma.render import check_colourmap, overlay

    signed = args.method == "occlusion"
    try:  # every option is checked before the image is decoded or a model loaded
        colourmap = check_colourmap(args.colourmap or ("blue-white-red" if signed else "inferno"), signed)
        pixels = read_image(args.image).pixels
    except (ImageError, OSError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    predictor = load_predictor(args.model, args.models_dir)
    view = model_view(predictor, pixels)
    scores = occlusion_sensitivity(predictor.model, view, args.patch_size) if signed else grad_cam(predictor.model, view)
    Image.fromarray(overlay(pixels, scores, args.alpha, colourmap, signed)).save(args.out)
    if args.npy:
        np.save(args.npy, scores)
    probability = float(predictor.probabilities([pixels])[0])
    print(f"{args.image}\t{probability:.4f}\t{args.method} overlay written to {args.out}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m melanoma", description="Melanoma decision support from the command line.")
    add_models_dir_option(parser)
    add_framework_logs_option(parser)
    # Options shared by every subcommand are accepted after it too (`predict --models-dir DIR`),
    # where people put them; SUPPRESS keeps an absent one from overriding the value given before.
    shared = argparse.ArgumentParser(add_help=False)
    shared.add_argument("--models-dir", default=argparse.SUPPRESS, help="folder of installed models")
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("models", parents=[shared], help="list the installed models")
    predict = commands.add_parser("predict", parents=[shared], help="melanoma probability for image files or folders")
    predict.add_argument("--model", required=True, help="an installed model's name (see: python -m melanoma models)")
    predict.add_argument("--json", action="store_true", help="one JSON object per line")
    predict.add_argument("--batch-size", type=int, default=32)
    predict.add_argument("paths", nargs="+")
    explain = commands.add_parser("explain", parents=[shared], help="write an explanation overlay for one image")
    explain.add_argument("--model", required=True)
    explain.add_argument("--method", choices=["occlusion", "gradcam"], default="occlusion")
    explain.add_argument("--patch-size", type=int, default=20, help="occlusion patch, in pixels of the model input")
    explain.add_argument("--alpha", type=float, default=0.5, help="overlay opacity")
    explain.add_argument("--colourmap", help="blue-white-red / green-white-purple (occlusion), inferno / jet / viridis / magma")
    explain.add_argument("--out", required=True, help="overlay PNG")
    explain.add_argument("--npy", help="also save the raw map (model input resolution) as .npy")
    explain.add_argument("image")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command != "models" and not args.framework_logs:
        import_tensorflow_quietly()
    handlers = {"models": command_models, "predict": command_predict, "explain": command_explain}
    try:
        return handlers[args.command](args)
    except ModelUnavailableError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
