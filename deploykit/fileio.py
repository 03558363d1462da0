"""Writing results atomically: a temporary file beside the target, then a rename; reading JSON artifacts.

A reader (or a resumed run) sees the old file or the new one, never a half-written one. An output
that cannot be written (its folder is a regular file or read-only, the path is a folder, the disk is
full) is one :class:`~deploykit.errors.OutputError` naming the path and the reason, and leaves no
temporary file behind.
"""

from __future__ import annotations

import json
import os
import re
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from deploykit.errors import ConfigError, DeployKitError, OutputError, one_line, os_error_reason


def ensure_dir(path: str | Path) -> Path:
    """Create the folder ``path`` and its parents if needed; an OutputError says why it cannot be."""
    path = Path(path)
    if path.is_dir():
        return path
    _refuse_blocked(path)
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise OutputError(f"cannot create folder {path}: {os_error_reason(error)}") from None
    return path


def check_output_file(path: str | Path) -> Path:
    """Fail early, with an OutputError, where ``path`` plainly cannot become a file: it is a folder,
    or a regular file stands where one of its folders should be. Creates and writes nothing."""
    path = Path(path)
    if path.is_dir():
        raise OutputError(f"cannot write {path}: it is a folder")
    _refuse_blocked(path.parent)
    return path


def check_writable_dir(path: str | Path) -> Path:
    """Prove that files can be written in the folder ``path``, or in the nearest existing folder
    above it where ``path`` is still to be made (a probe file, removed at once). Creates nothing,
    so a job refused later leaves no empty folder: long jobs call this before they start rather
    than fail at their end."""
    path = Path(path)
    _refuse_blocked(path)
    existing = next(folder for folder in (path, *path.parents) if folder.is_dir())
    try:
        handle, probe = tempfile.mkstemp(dir=existing, prefix=".deploykit-probe-")
    except OSError as error:
        if existing == path:
            raise OutputError(f"cannot write in folder {path}: {_reason(error)}") from None
        raise OutputError(f"cannot create folder {path}: {_reason(error)} in folder {existing}") from None
    os.close(handle)
    os.unlink(probe)
    return path


def check_output_files(*paths: str | Path | None) -> tuple[Path, ...]:
    """:func:`check_output_file` for each path (``None`` skipped) and :func:`check_writable_dir` for
    each folder: for a job that writes several files, or writes late, so that it fails before it
    starts and writes either all of its files or none."""
    checked = tuple(check_output_file(path) for path in paths if path is not None)
    for folder in dict.fromkeys(path.parent for path in checked):
        check_writable_dir(folder)
    return checked


@contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path in ``path``'s folder; it replaces ``path`` when the block succeeds and
    is removed when it fails. For writers that want a file name (``torch.save``, ``savefig``).
    An OSError while writing becomes an OutputError naming ``path``."""
    path = check_output_file(path)
    ensure_dir(path.parent)
    try:
        handle, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    except OSError as error:
        raise OutputError(f"cannot write {path}: {_reason(error)} in folder {path.parent}") from None
    os.close(handle)
    try:
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes the file private; results are shared artifacts
        yield Path(tmp)
        os.replace(tmp, path)
    except OutputError:  # said already, by a writer inside the block
        Path(tmp).unlink(missing_ok=True)
        raise
    except OSError as error:
        Path(tmp).unlink(missing_ok=True)
        raise OutputError(f"cannot write {path}: {_reason(error)}") from None
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


@contextmanager
def scratch_dir(path: str | Path) -> Iterator[Path]:
    """A temporary folder beside ``path`` (same file system, so its files can be renamed onto
    ``path``), removed afterwards. For writers that produce intermediate files."""
    path = check_output_file(path)
    ensure_dir(path.parent)
    try:
        work = tempfile.TemporaryDirectory(dir=path.parent, prefix=f".{path.name}.")
    except OSError as error:
        raise OutputError(f"cannot write {path}: {_reason(error)} in folder {path.parent}") from None
    with work as folder:
        yield Path(folder)


def replace_file(source: str | Path, path: str | Path) -> Path:
    """Rename ``source`` onto ``path`` (atomic on one file system); an OutputError if it cannot be."""
    try:
        os.replace(source, path)
    except OSError as error:
        raise OutputError(f"cannot write {path}: {_reason(error)}") from None
    return Path(path)


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


def _reason(error: OSError) -> str:
    """The OS's reason alone: the message names the path already (the error may name a temporary)."""
    return (error.strerror or os_error_reason(error)).lower()


def _refuse_blocked(folder: Path) -> None:
    blocker = _file_in_the_way(folder)
    if blocker is not None:
        raise OutputError(f"cannot create folder {folder}: {blocker} exists and is not a folder")


def _file_in_the_way(path: Path) -> Path | None:
    """The nearest existing ancestor of ``path`` (or ``path`` itself) when it is not a folder."""
    for candidate in (path, *path.parents):
        if candidate.exists() or candidate.is_symlink():
            return None if candidate.is_dir() else candidate
    return None


# --- reading JSON: one bounded reader for every JSON a command or the agent reads ---------------------

MAX_JSON_BYTES = 16 * 2**20    # deploykit's own JSON files are kilobytes; a table's meta.json the largest
MAX_JSON_DEPTH = 32            # deploykit's own nest at most a few levels
_JSON_STRING = re.compile(r'"[^"\\]*(?:\\.[^"\\]*)*"', re.DOTALL)
_JSON_BRACKET = re.compile(r"[\[\]{}]")


def parse_json(text: str | bytes, *, what: str, error: type[DeployKitError] = ConfigError,
               kind: type | tuple[type, ...] | None = dict, max_bytes: int = MAX_JSON_BYTES,
               max_depth: int = MAX_JSON_DEPTH) -> Any:
    """The JSON value in ``text`` (a ``what``: "subnet file …"), bounded before it is parsed: at most
    ``max_bytes`` long, nested at most ``max_depth`` deep, and (``kind``, None: any) of that type at its
    top. Anything else is one ``error`` line: never a RecursionError, MemoryError or a traceback."""
    size = len(text.encode("utf-8", "surrogatepass") if isinstance(text, str) else text)
    if size > max_bytes:
        raise error(f"{what} is {size} bytes, over the limit of {max_bytes} for a JSON file")
    if isinstance(text, bytes):
        try:
            text = text.decode("utf-8")
        except UnicodeDecodeError as failure:
            raise error(f"{what} is not valid JSON: not UTF-8 text ({one_line(failure, 120)})") from None
    depth = json_depth(text)
    if depth > max_depth:
        raise error(f"{what} is not valid JSON for deploykit: nested {depth} levels deep, over the "
                    f"limit of {max_depth}")
    try:
        value = json.loads(text)
    except (ValueError, RecursionError) as failure:  # ValueError: JSONDecodeError, a 5000-digit int
        raise error(f"{what} is not valid JSON: {one_line(failure, 200)}") from None
    if kind is not None and not isinstance(value, kind):
        expected = "a JSON object" if kind is dict else "a JSON " + "/".join(
            _JSON_NAMES.get(k, k.__name__) for k in (kind if isinstance(kind, tuple) else (kind,)))
        raise error(f"{what} must hold {expected}, not {_JSON_NAMES.get(type(value), type(value).__name__)}")
    return value


def json_depth(text: str) -> int:
    """How deeply the arrays and objects in the JSON ``text`` nest (brackets inside strings aside),
    found without parsing it; linear in its length."""
    depth = deepest = 0
    for char in _JSON_BRACKET.findall(_JSON_STRING.sub("", text)):
        if char in "[{":
            depth += 1
            deepest = max(deepest, depth)
        elif char in "]}":
            depth -= 1
    return deepest


_JSON_NAMES = {dict: "object", list: "array", str: "string", int: "number", float: "number",
               bool: "boolean", type(None): "null"}


def read_json(path: str | Path, *, what: str, error: type[DeployKitError] = ConfigError,
              kind: type | tuple[type, ...] | None = dict, max_bytes: int = MAX_JSON_BYTES) -> Any:
    """The JSON in the file ``path`` (a ``what``: "subnet file", "verify report"), read through
    :func:`parse_json`'s bounds; a missing or unreadable file, or one that is not such JSON, is one
    ``error`` line naming it. Reads at most ``max_bytes`` + 1 bytes (a FIFO or /dev/zero ends too)."""
    path = Path(path)
    if not path.is_file():
        raise error(f"{what} not found: {path}")
    try:
        with path.open("rb") as stream:
            data = stream.read(max_bytes + 1)
    except OSError as failure:
        raise error(f"cannot read {what} {path}: {os_error_reason(failure)}") from None
    return parse_json(data, what=f"{what} {path}", error=error, kind=kind, max_bytes=max_bytes)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask
