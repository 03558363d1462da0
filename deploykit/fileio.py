"""Writing results atomically: a temporary file beside the target, then a rename; reading JSON artifacts.

A reader (or a resumed run) sees the old file or the new one, never a half-written one.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from deploykit.errors import ConfigError, DeployKitError, one_line


@contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path in ``path``'s folder; it replaces ``path`` when the block succeeds and
    is removed when it fails. For writers that want a file name (``torch.save``, ``savefig``)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(handle)
    os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes the file private; results are shared artifacts
    try:
        yield Path(tmp)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_bytes_atomic(path: str | Path, data: bytes) -> Path:
    with atomic_path(path) as tmp, open(tmp, "wb") as stream:
        stream.write(data)
        stream.flush()
        os.fsync(stream.fileno())
    return Path(path)


def write_text_atomic(path: str | Path, text: str) -> Path:
    return write_bytes_atomic(path, text.encode("utf-8"))


def write_json_atomic(path: str | Path, data: Any) -> Path:
    return write_text_atomic(path, json.dumps(data, indent=2) + "\n")


def read_json(path: str | Path, *, what: str, error: type[DeployKitError] = ConfigError) -> Any:
    """The JSON in the file ``path`` (a ``what``: "subnet file", "verify report"); a missing file or one
    that is not JSON is one ``error`` line naming it."""
    path = Path(path)
    if not path.is_file():
        raise error(f"{what} not found: {path}")
    try:
        return json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as failure:
        raise error(f"{what} {path} is not valid JSON: {one_line(failure)}") from None


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask
