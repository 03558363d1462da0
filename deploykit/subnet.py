"""The ``Subnet`` artifact: which blocks of which model run pruned, and where that choice came from.

The search stage writes it (``subnet.json``); progressive subnet training reads it. On disk it is one
JSON object::

    {"model": "convnext_atto", "input_size": [32, 32], "pruned": [1, 4, 7],
     "predicted_ms": 1.23, "table": "latency_tables/x.csv", "proxy": {"kind": "supernet", "top1": 97.1}}

``predicted_ms``, ``table`` and ``proxy`` are optional; any other key is an error. A joint search over
several latency tables (``deploykit search --table A --budget x --table B --budget y``) also writes
``budgets``: one object per table (its path, target, budget, predicted ms, slack, and whether that budget
binds); ``predicted_ms`` and ``table`` are then the first table's. Files without ``budgets`` (one table,
or written before joint search existed) read as before.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

from deploykit.checks import is_int
from deploykit.errors import ConfigError, TableError
from deploykit.fileio import read_json, write_json_atomic
from deploykit.shapes import check_input_size


@dataclass(frozen=True)
class Subnet:
    """A model name, its input size, the indices of the blocks that run pruned, and provenance."""

    model: str
    input_size: tuple[int, int]
    pruned: tuple[int, ...]
    predicted_ms: float | None = None
    table: str | None = None
    proxy: dict[str, Any] | None = None
    budgets: list[dict[str, Any]] | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.model, str) or not self.model:
            raise ConfigError(f"subnet 'model' must be a non-empty string, got {self.model!r}")
        size = check_input_size(self.input_size, what="subnet 'input_size'")
        if not _int_list(self.pruned) or min(self.pruned, default=0) < 0:
            raise ConfigError(f"subnet 'pruned' must be a list of block indices ≥ 0, got {self.pruned!r}")
        if len(set(self.pruned)) != len(self.pruned):
            raise ConfigError(f"subnet 'pruned' lists a block twice: {list(self.pruned)}")
        if self.predicted_ms is not None and (isinstance(self.predicted_ms, bool)
                                              or not isinstance(self.predicted_ms, (int, float))):
            raise ConfigError(f"subnet 'predicted_ms' must be a number, got {self.predicted_ms!r}")
        if self.table is not None and not isinstance(self.table, str):
            raise ConfigError(f"subnet 'table' must be a path string, got {self.table!r}")
        if self.proxy is not None and not isinstance(self.proxy, dict):
            raise ConfigError(f"subnet 'proxy' must be an object, got {self.proxy!r}")
        if self.budgets is not None and (not isinstance(self.budgets, list)
                                         or not all(isinstance(b, dict) for b in self.budgets)):
            raise ConfigError(f"subnet 'budgets' must be a list of objects, got {self.budgets!r}")
        object.__setattr__(self, "input_size", tuple(size))
        object.__setattr__(self, "pruned", tuple(sorted(self.pruned)))

    def as_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["input_size"], data["pruned"] = list(self.input_size), list(self.pruned)
        if self.budgets is None:  # a one-table search writes what it always wrote
            del data["budgets"]
        return data

    @classmethod
    def from_dict(cls, data: Any, *, source: str = "subnet") -> Subnet:
        if not isinstance(data, dict):
            raise ConfigError(f"{source}: expected a JSON object, got {type(data).__name__}")
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ConfigError(f"{source}: unknown key(s) {', '.join(unknown)} "
                              f"(allowed: {', '.join(sorted(known))})")
        missing = [name for name in ("model", "input_size", "pruned") if name not in data]
        if missing:
            raise ConfigError(f"{source}: missing key(s) {', '.join(missing)}")
        try:
            return cls(**data)
        except ConfigError as error:
            raise ConfigError(f"{source}: {error}") from None

    @classmethod
    def read(cls, path: str | Path) -> Subnet:
        return cls.from_dict(read_json(path, what="subnet file"), source=str(path))

    def write(self, path: str | Path) -> Path:
        """Write atomically (temporary file in the same folder, then rename)."""
        return write_json_atomic(path, self.as_dict())


def parse_block_list(text: str) -> tuple[int, ...]:
    """``"0,3,5"`` → (0, 3, 5); ranges such as ``"2-4"`` are allowed; the empty string → ()."""
    indices: list[int] = []
    for part in (p.strip() for p in str(text).split(",")):
        if not part:
            continue
        try:
            if "-" in part[1:]:
                low, high = (int(end) for end in part.split("-", 1))
                if high < low:
                    raise ConfigError(f"reversed block range {part!r} in {text!r} (write {high}-{low})")
                indices.extend(range(low, high + 1))
            else:
                indices.append(int(part))
        except ValueError:
            raise ConfigError(f"malformed block list {text!r} (expected e.g. 0,3,5 or 2-4)") from None
    if any(i < 0 for i in indices):
        raise ConfigError(f"block indices must be ≥ 0, got {text!r}")
    return tuple(sorted(set(indices)))


def format_block_ranges(indices: Iterable[int]) -> str:
    """(0, 1, 2, 5) → ``"0-2, 5"``, () → ``"none"``: the inverse of :func:`parse_block_list`, for messages."""
    indices = sorted(set(indices))
    spans, start = [], None
    for i, index in enumerate(indices):
        if start is None:
            start = index
        if i + 1 == len(indices) or indices[i + 1] != index + 1:
            spans.append(f"{start}" if start == index else f"{start}-{index}")
            start = None
    return ", ".join(spans) or "none"


def parse_indices(text: str) -> tuple[int, ...]:
    """A block list as a CSV cell stores it (a table's rows, points files): ``"3;4;5"`` → (3, 4, 5); the
    empty string → (). Semicolons, because the cell sits in a comma-separated file."""
    try:
        return tuple(int(part) for part in str(text).split(";") if part != "")
    except ValueError:
        raise TableError(f"malformed block indices {text!r} (expected e.g. 3;4;5)") from None


def format_indices(indices: Iterable[int]) -> str:
    """The inverse of :func:`parse_indices`: (3, 4, 5) → ``"3;4;5"``."""
    return ";".join(str(i) for i in indices)


def _int_list(values: Any) -> bool:
    return isinstance(values, (list, tuple)) and all(is_int(v) for v in values)


def choose_subnet(*, path: str | Path | None = None, prune: str | None = None, model: str | None = None,
                  input_size: tuple[int, int] | None = None) -> Subnet:
    """The subnet a command was given: a ``subnet.json`` file, or a model and a block list.

    ``model`` and ``input_size`` may accompany a file only if they agree with it.
    """
    if (path is None) == (prune is None):
        raise ConfigError("give the subnet either as --subnet subnet.json or as --prune 0,3,5 (not both)")
    if prune is not None:
        if model is None:
            raise ConfigError("--prune needs --model (the file given by --subnet names its model)")
        return Subnet(model=model, input_size=input_size or (224, 224), pruned=parse_block_list(prune))
    subnet = Subnet.read(path)
    if model is not None and model != subnet.model:
        raise ConfigError(f"--model {model} disagrees with {path}, which is for {subnet.model}")
    if input_size is not None and tuple(input_size) != subnet.input_size:
        raise ConfigError(f"--input-size {list(input_size)} disagrees with {path}, which was chosen at "
                          f"{list(subnet.input_size)}")
    return subnet
