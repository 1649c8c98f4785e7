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


def comma_names(text: str) -> tuple[str, ...]:
    """'a, b,,c' -> ('a', 'b', 'c'): the names a comma-separated option gives, blanks left out."""
    return tuple(name.strip() for name in text.split(",") if name.strip())
