"""The options shared by the tools that work on installed models after training.

`train.calibrate`, `train.combine` and `train.gate_check` all take the data the models were
trained on (read in the layout training read it in), a set of installed models and the models
folder, the same way.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from melanoma.arguments import comma_names, sensitivity
from melanoma.data import LAYOUT_FILES, LabelledImages, load_labelled_images
from melanoma.framework import add_framework_logs_option
from melanoma.metrics import TARGET_SENSITIVITY
from melanoma.store import (
    SHIPPED_MODELS_DIR,
    InstalledModel,
    ModelUnavailableError,
    add_models_dir_option,
    find_model,
    list_models,
)

THRESHOLD_RULE_HELP = "the threshold is the highest whose validation sensitivity reaches this"


def model_names(text: str) -> list[str]:
    """--models' names; none at all is refused, since it would otherwise mean every installed model (or none)."""
    names = list(comma_names(text))
    if not names:
        raise argparse.ArgumentTypeError(
            f"expected comma-separated installed model names (e.g. scratch_cnn,efficientnet_lite0), got {text!r}. "
            "Name at least one, or leave out --models for every installed model."
        )
    return names


def installed_models_parser(prog: str, description: str) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=prog, description=description)
    parser.add_argument("--data-dir", required=True, help="the labelled images the models were trained on")
    parser.add_argument(
        "--models", type=model_names, help="comma-separated installed model names; default: every installed model"
    )
    parser.add_argument(
        "--layout",
        choices=["auto", *LAYOUT_FILES],
        help="the labels file's layout; default: the one each model's card records it was trained with (else auto)",
    )
    add_models_dir_option(parser)
    add_framework_logs_option(parser)
    return parser


def trained_data(args: argparse.Namespace, entries: list[InstalledModel]) -> list[LabelledImages]:
    """--data-dir as each model was trained on it: read in --layout, else in the layout its card records,
    so that a folder holding several labels files gives the labels training read (each layout read once)."""
    read: dict[str, LabelledImages] = {}
    layouts = [args.layout or entry.card.training.data.get("layout") or "auto" for entry in entries]
    for layout in layouts:
        if layout not in read:
            read[layout] = load_labelled_images(args.data_dir, layout)
    return [read[layout] for layout in layouts]


def add_target_sensitivity_option(parser: argparse.ArgumentParser) -> None:
    """--target-sensitivity, for the tools that choose an operating threshold."""
    parser.add_argument("--target-sensitivity", type=sensitivity, default=TARGET_SENSITIVITY, help=THRESHOLD_RULE_HELP)


def chosen_models(args: argparse.Namespace) -> list[str]:
    """The --models names, else every installed model. Every name is checked before any tool starts, so
    a misspelt one stops it before it writes anything (ModelUnavailableError lists the installed ones);
    so is a --models-dir that is missing or holds no model, which would otherwise leave nothing to do."""
    installed = list_models(args.models_dir)
    if not installed:
        folder = Path(args.models_dir)
        found = "does not exist" if not folder.exists() else "holds no installed model (a folder with a card.json)"
        raise ModelUnavailableError(
            f"--models-dir {folder} {found}; expected the folder of installed models. Pass the folder they are in "
            f"(without --models-dir: $MELANOMA_MODELS_DIR, else {SHIPPED_MODELS_DIR}), or train one into it with "
            f"python -m train.run --output-dir {folder}."
        )
    if args.models is None:
        return [entry.name for entry in installed]
    for name in args.models:
        find_model(name, args.models_dir)
    return args.models
