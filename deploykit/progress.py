"""How long work reports progress: a function that takes one line. One home for its type, the one that
says nothing, and the one the CLI passes (stderr, flushed at once so that it interleaves with logs and
never mixes with a command's result on stdout)."""

from __future__ import annotations

import sys
from collections.abc import Callable

Progress = Callable[[str], None]


def silent(line: str) -> None:
    """The progress of a caller that wants none."""


def to_stderr(line: str) -> None:
    """The CLI's progress: one line on stderr, flushed."""
    print(line, file=sys.stderr, flush=True)
