"""The options shared by the tools that work on installed models after training.

`train.calibrate`, `train.combine` and `train.gate_check` all take the data the models were
trained on, a set of installed models and the models folder, the same way.
"""

from __future__ import annotations

import argparse

from melanoma.framework import add_framework_logs_option
from melanoma.store import add_models_dir_option, list_models


def installed_models_parser(prog: str, description: str) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=prog, description=description)
    parser.add_argument("--data-dir", required=True, help="the labelled images the models were trained on")
    parser.add_argument("--models", help="comma-separated installed model names; default: every installed model")
    add_models_dir_option(parser)
    add_framework_logs_option(parser)
    return parser


def chosen_models(args: argparse.Namespace) -> list[str]:
    return [name.strip() for name in args.models.split(",") if name.strip()] if args.models else \
        [entry.name for entry in list_models(args.models_dir)]
