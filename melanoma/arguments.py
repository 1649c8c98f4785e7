"""argparse types shared by the command-line tools, so that a number out of range is a usage error
as it is read, not a crash (or a silent default) after the work has begun. No heavy imports: the
listing commands that use them must not load TensorFlow."""

from __future__ import annotations

import argparse
import os
from collections.abc import Callable
from pathlib import Path


def whole_number(minimum: int) -> Callable[[str], int]:
    """An argparse type: an integer of at least `minimum` (a count, a size, a seed)."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            value = minimum - 1
        if value < minimum:
            raise argparse.ArgumentTypeError(f"expected a whole number of at least {minimum}; got {text!r}")
        return value

    return parse


def sensitivity(text: str) -> float:
    """An argparse type: a target sensitivity, a proportion above 0 and at most 1. 95 (a percentage)
    or 0 would otherwise be accepted here and fail, or choose nothing, after minutes of scoring."""
    try:
        value = float(text)
    except ValueError:
        value = 0.0
    if not 0.0 < value <= 1.0:
        raise argparse.ArgumentTypeError(
            f"expected a sensitivity above 0 and at most 1, such as 0.9 for 90 %; got {text!r}"
        )
    return value


def comma_names(text: str) -> tuple[str, ...]:
    """'a, b,,c' -> ('a', 'b', 'c'): the names a comma-separated option gives, blanks left out."""
    return tuple(name.strip() for name in text.split(",") if name.strip())


def output_problem(path: str | None, option: str, suffix: str | None = None) -> str | None:
    """What is wrong with a file a command would write (None when nothing is), found before any work
    that would otherwise fail only at the end: the wrong kind of name, a folder there, or no writable
    folder to put it in. A missing folder is not created, since a misspelt one would be."""
    if path is None:
        return None
    target = Path(path)
    if suffix and target.suffix.lower() != suffix:
        return f"{option} must name a {suffix} file; received {path!r}. Give a name ending in {suffix}."
    if target.is_dir():
        return f"{option}: {path} is a folder; expected a file to write. Give a file name inside it."
    folder = target.parent
    nearest = next(above for above in (folder, *folder.parents) if above.exists())
    if not nearest.is_dir():
        return f"{option}: {path} is under {nearest}, which is a file, not a folder. Give a path in a folder."
    if nearest != folder:
        return f"{option}: the folder {folder} does not exist. Create it, or write elsewhere."
    if not os.access(folder, os.W_OK):
        return f"{option}: the folder {folder} is not writable. Write to a folder you may write to."
    return None
