"""One small exception hierarchy: every error a user can cause is a DeployKitError.

The CLI prints ``str(error)`` as one line and exits non-zero; a traceback means a bug in deploykit.
"""

from __future__ import annotations

import re

_LINE_BREAKS = re.compile("[\r\n\x0b\x0c\x1c\x1d\x1e\x85\u2028\u2029]+")  # what str.splitlines splits at


class DeployKitError(Exception):
    """Base class of every user-facing error. Its message is one line by construction: line breaks in
    it (a file name, a JSON key or a device's text quoted in it) become spaces."""

    def __init__(self, *args) -> None:
        super().__init__(*(_LINE_BREAKS.sub(" ", arg) if isinstance(arg, str) else arg for arg in args))


class ModelError(DeployKitError):
    """Unknown model name, unloadable weights, or a model deploykit cannot prune."""


class BlockSelectionError(DeployKitError):
    """A block index out of range or naming a block that cannot be pruned."""


class MergeError(DeployKitError):
    """Merging was asked for in a state where it is not exact (train mode, λ < 1)."""


class ConfigError(DeployKitError):
    """A bad option value, or a malformed configuration / target file."""


class RuntimeUnavailableError(DeployKitError):
    """A runtime, execution provider or device is absent, or would silently fall back."""


class TableError(DeployKitError):
    """A latency table that is malformed or does not match what is asked."""


class DeviceError(DeployKitError):
    """A device agent (``deploykit serve``) cannot be reached, is busy, timed out or stopped answering."""


class AuthError(DeviceError):
    """A request to a device agent without the right token."""


def error_class(name: str) -> type[DeployKitError]:
    """The DeployKitError subclass called ``name`` (as a worker or a device agent reports it), else
    DeployKitError itself: an error's type travels between processes by name, never pickled."""
    cls = globals().get(str(name))
    return cls if isinstance(cls, type) and issubclass(cls, DeployKitError) else DeployKitError
class OutputError(DeployKitError, OSError):
    """An output that cannot be written: its folder is a regular file or read-only, the path is a
    folder, the disk is full. Nothing half-written is left behind. Also an OSError, so that code
    that handles a failed write as one keeps doing so."""


def one_line(error: BaseException, limit: int = 300) -> str:
    """An exception's message as one short line; its type name when the message is empty (a 0-byte
    file makes ``torch.load`` raise ``EOFError('')``)."""
    lines = [line.strip() for line in str(error).strip().splitlines() if line.strip()]
    text = " ".join(lines[:2]) if lines else type(error).__name__
    return _cut(text, limit)


def last_line(output: str | None, limit: int = 300) -> str:
    """The last non-empty line of a process's output ("" when there is none): where a dying worker or
    agent says why (a traceback ends with its exception)."""
    lines = [line.strip() for line in (output or "").splitlines() if line.strip()]
    return _cut(lines[-1], limit) if lines else ""


def _cut(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def os_error_reason(error: OSError) -> str:
    """An OSError as a short reason with the file it names: ``permission denied: /sys/x``."""
    reason = (error.strerror or one_line(error)).lower()
    names = [str(name) for name in (error.filename, error.filename2) if name is not None]
    return f"{reason}: {' → '.join(names)}" if names else reason
