"""argparse types shared by the command-line tools, so that a number out of range is a usage error
as it is read, not a crash (or a silent default) after the work has begun. No heavy imports: the
listing commands that use them must not load TensorFlow."""

from __future__ import annotations

import argparse
from collections.abc import Callable


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
