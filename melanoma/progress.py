"""Progress on a terminal for the command-line tools, and silence everywhere else."""

from __future__ import annotations

import sys
from typing import TextIO


class TerminalProgress:
    """`scored 64 of 500 images` on one rewritten line when the stream is a terminal; nothing when piped.

    Shared by `python -m melanoma predict` and `python -m train.evaluate`: progress for people at a terminal, never in a
    log or in output another program reads.
    """

    def __init__(self, stream: TextIO | None = None):
        self.stream = stream or sys.stderr
        self.active = self.stream.isatty()

    def __call__(self, done: int, total: int) -> None:
        if self.active:
            print(f"\rscored {done} of {total} images", end="\n" if done >= total else "", file=self.stream, flush=True)
