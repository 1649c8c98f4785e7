"""The options shared by the tools that work on installed models after training.

`train.calibrate`, `train.combine` and `train.gate_check` all take the data the models were
trained on, a set of installed models and the models folder, the same way.
"""

from __future__ import annotations

import argparse

from melanoma.framework import add_framework_logs_option
from melanoma.metrics import TARGET_SENSITIVITY
from melanoma.store import add_models_dir_option, list_models

THRESHOLD_RULE_HELP = "the threshold is the highest whose validation sensitivity reaches this"


def installed_models_parser(prog: str, description: str) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=prog, description=description)
    parser.add_argument("--data-dir", required=True, help="the labelled images the models were trained on")
    parser.add_argument("--models", help="comma-separated installed model names; default: every installed model")
    add_models_dir_option(parser)
    add_framework_logs_option(parser)
    return parser


def add_target_sensitivity_option(parser: argparse.ArgumentParser) -> None:
    """--target-sensitivity, for the tools that choose an operating threshold."""
    parser.add_argument("--target-sensitivity", type=float, default=TARGET_SENSITIVITY, help=THRESHOLD_RULE_HELP)


def chosen_models(args: argparse.Namespace) -> list[str]:
    return (
        [name.strip() for name in args.models.split(",") if name.strip()]
        if args.models
        else [entry.name for entry in list_models(args.models_dir)]
    )
