"""The latency table: per target, the latency of every distinct block in each form plus the fixed parts.

On disk a table is two files side by side, each written atomically (temporary file in the same
folder, then ``os.replace``): ``NAME.csv`` holds one row per entry and reads with plain pandas;
``NAME.meta.json`` holds where and how it was measured (:class:`TableMeta`).

A row is one *entry* in one *form*, identified by ``(key, form)``:

- ``kind=block``: one distinct block signature; ``indices`` lists every block of the model that
  shares it, ``form`` is ``original`` or ``merged``;
- ``kind=fixed``: a part of the model outside every block (stem, downsampling, head), ``form=fixed``;
- ``kind=model``: the whole original model end to end (``form=model``), for reference only.

``source`` is ``measured`` or ``estimated`` and equals the table's ``mode``: estimated and measured
rows never share a table. Latencies are in milliseconds at the table's batch size; ``macs`` is
per sample (batch 1).
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping
from dataclasses import MISSING, asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any

import pandas as pd

from deploykit.errors import TableError
from deploykit.fileio import check_output_files, write_json_atomic, write_text_atomic
from deploykit.subnet import format_block_ranges

KINDS = ("block", "fixed", "model")
FORMS = {"block": ("original", "merged"), "fixed": ("fixed",), "model": ("model",)}
MODES = ("measured", "estimated")

# Column name → type, in file order. Shapes are "CxHxW" strings, indices "3;4;5".
COLUMNS: dict[str, type] = {
    "key": str, "kind": str, "form": str, "name": str, "family": str, "block_type": str,
    "indices": str, "count": int, "in_shape": str, "out_shape": str, "macs": int,
    "median_ms": float, "p90_ms": float, "mean_ms": float, "std_ms": float, "cv": float,
    "n": int, "repeats": int, "compile_s": float, "first_run_ms": float,
    "source": str, "measured_at": str,
}
_REQUIRED_NUMBERS = ("count", "macs", "median_ms", "n", "repeats")

# Settings a resumed table must share with the run that continues it.
SETTINGS = ("model", "target", "mode", "device", "device_string", "runtime", "runtime_version",
            "provider", "precision", "batch", "input_size", "threads", "protocol", "estimate")
# Of those, the ones that describe the machine rather than the request (--allow-mismatch covers them).
ENVIRONMENT = ("device_string", "runtime_version")


@dataclass(frozen=True)
class TableMeta:
    """Where and how a table's rows were obtained."""

    model: str
    target: str
    device: str                 # the hardware the target stands for (from the target file)
    device_string: str          # the device the runtime really ran on, as the backend names it
    runtime: str
    runtime_version: str
    provider: str | None
    precision: str
    batch: int
    input_size: tuple[int, int]
    threads: int | None
    protocol: Mapping[str, Any]
    mode: str                   # measured | estimated
    date: str                   # ISO time the table was started
    deploykit_version: str
    complete: bool = False      # every entry of the model is in the table
    profile_s: float = 0.0      # wall time spent profiling, summed over resumed runs
    calibration: tuple[float, float] | None = None   # predict → a · Σ + b (fitted by the fidelity check)
    estimate: Mapping[str, Any] | None = None        # roofline settings of an estimated table
    notes: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise TableError(f"table mode must be one of {', '.join(MODES)}, got {self.mode!r}")
        if not isinstance(self.batch, int) or isinstance(self.batch, bool) or self.batch <= 0:
            raise TableError(f"table batch must be a positive integer, got {self.batch!r}")
        size = tuple(self.input_size) if isinstance(self.input_size, (list, tuple)) else ()
        if len(size) != 2 or not all(isinstance(s, int) and s > 0 for s in size):
            raise TableError(f"table input_size must be [height, width], got {self.input_size!r}")
        object.__setattr__(self, "input_size", size)
        object.__setattr__(self, "protocol", dict(self.protocol or {}))
        object.__setattr__(self, "notes", tuple(self.notes))
        if self.estimate is not None:
            object.__setattr__(self, "estimate", dict(self.estimate))
        if self.calibration is not None:
            cal = tuple(self.calibration)
            if len(cal) != 2 or not all(isinstance(v, (int, float)) and math.isfinite(v) for v in cal):
                raise TableError(f"table calibration must be [a, b] (ms = a·Σ + b), got {self.calibration!r}")
            object.__setattr__(self, "calibration", (float(cal[0]), float(cal[1])))

    def as_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["input_size"] = list(self.input_size)
        data["notes"] = list(self.notes)
        data["calibration"] = list(self.calibration) if self.calibration is not None else None
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> TableMeta:
        if not isinstance(data, Mapping):
            raise TableError("table metadata must be a JSON object")
        names = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - names)
        if unknown:
            raise TableError(f"unknown table metadata field(s): {', '.join(unknown)}")
        required = [f.name for f in fields(cls) if f.default is MISSING and f.default_factory is MISSING]
        missing = [name for name in required if name not in data]
        if missing:
            raise TableError(f"table metadata lacks field(s): {', '.join(missing)}")
        try:
            return cls(**data)
        except TypeError as error:
            raise TableError(f"malformed table metadata: {error}") from None

    def settings(self) -> dict[str, Any]:
        """The fields that must agree between a table and a run that resumes it."""
        data = self.as_dict()
        return {name: data[name] for name in SETTINGS}


def read_meta(path: str | Path) -> TableMeta:
    """The metadata of the table at ``path`` (its CSV or its ``.meta.json``)."""
    meta_file = meta_path(table_path(path))
    if not meta_file.is_file():
        raise TableError(f"latency table metadata not found: {meta_file}")
    try:
        return TableMeta.from_dict(json.loads(meta_file.read_text()))
    except json.JSONDecodeError as error:
        raise TableError(f"{meta_file} is not valid JSON: {error}") from None
    except TableError as error:
        raise TableError(f"{meta_file}: {error}") from None


def meta_path(path: str | Path) -> Path:
    """``foo.csv`` → ``foo.meta.json``."""
    path = Path(path)
    return path.with_name(path.name[:-len(".csv")] + ".meta.json")


def table_path(path: str | Path) -> Path:
    """The CSV path of a table given its CSV or its ``.meta.json`` path (a bare name gets ``.csv``)."""
    path = Path(path)
    if path.name.endswith(".meta.json"):
        return path.with_name(path.name[:-len(".meta.json")] + ".csv")
    return path if path.suffix == ".csv" else path.with_name(path.name + ".csv")


def empty_rows() -> pd.DataFrame:
    return _typed(pd.DataFrame({name: [] for name in COLUMNS}))


@dataclass
class LatencyTable:
    """Rows (a DataFrame with :data:`COLUMNS`) and metadata; read, written, resumed and queried."""

    meta: TableMeta
    rows: pd.DataFrame = field(default_factory=empty_rows)
    path: Path | None = None

    def __post_init__(self) -> None:
        self.rows = _validate_rows(self.rows, self.meta, self.path)

    # --- files ---------------------------------------------------------------------------------

    @classmethod
    def read(cls, path: str | Path) -> LatencyTable:
        """Read ``NAME.csv`` and ``NAME.meta.json`` (either path may be given)."""
        csv = table_path(path)
        meta = read_meta(csv)
        if not csv.is_file():
            raise TableError(f"latency table file not found: {csv}")
        try:
            rows = pd.read_csv(csv, dtype={n: "str" for n, t in COLUMNS.items() if t is str},
                               keep_default_na=False, na_values={n: [""] for n, t in COLUMNS.items()
                                                                 if t is not str})
        except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError, ValueError) as error:
            raise TableError(f"cannot read latency table {csv}: {str(error).splitlines()[0]}") from None
        return cls(meta=meta, rows=rows, path=csv)

    def write(self, path: str | Path | None = None) -> Path:
        """Write both files atomically; returns the CSV path."""
        if path is None and self.path is None:
            raise TableError("no path to write the latency table to")
        csv = table_path(path if path is not None else self.path)
        check_output_files(csv, meta_path(csv))  # both writable, or neither is written
        # Metadata first: it never depends on the rows (``complete`` only turns true once the rows
        # are all there), so a crash between the two writes leaves a table that resumes correctly.
        write_json_atomic(meta_path(csv), self.meta.as_dict())
        write_text_atomic(csv, self.rows.to_csv(index=False))
        self.path = csv
        return csv

    # --- building ------------------------------------------------------------------------------

    def has(self, key: str, form: str) -> bool:
        return bool(((self.rows["key"] == key) & (self.rows["form"] == form)).any())

    def add(self, row: Mapping[str, Any]) -> None:
        """Append one row (all :data:`COLUMNS`); a duplicate ``(key, form)`` is a TableError."""
        missing = [name for name in COLUMNS if name not in row]
        if missing:
            raise TableError(f"table row lacks column(s): {', '.join(missing)}")
        # Latencies to the nanosecond: the CSV stays readable and reads back to equal floats.
        new = pd.DataFrame([{name: round(float(row[name]), 6) if kind is float else row[name]
                             for name, kind in COLUMNS.items()}])
        self.rows = _validate_rows(pd.concat([self.rows, _typed(new)], ignore_index=True), self.meta,
                                   self.path)

    def with_meta(self, **changes: Any) -> LatencyTable:
        return LatencyTable(meta=replace(self.meta, **changes), rows=self.rows.copy(), path=self.path)

    # --- queries -------------------------------------------------------------------------------

    def __len__(self) -> int:
        return len(self.rows)

    def equals(self, other: LatencyTable) -> bool:
        return self.meta == other.meta and self.rows.equals(other.rows)

    @property
    def block_indices(self) -> tuple[int, ...]:
        """Every block index the table covers (original form)."""
        return tuple(sorted(self._index_map("original")))

    @property
    def prunable_indices(self) -> tuple[int, ...]:
        """Block indices that have a merged-form row."""
        return tuple(sorted(self._index_map("merged")))

    def block_latency(self, index: int, form: str = "original") -> float:
        """Median latency (ms) of block ``index`` in ``form`` (original or merged)."""
        if form not in FORMS["block"]:
            raise TableError(f"block form must be original or merged, got {form!r}")
        rows = self._index_map(form)
        if index not in rows:
            have = self.block_indices if form == "original" else self.prunable_indices
            raise TableError(f"the table has no {form} latency for block {index} "
                             f"(it covers blocks {format_block_ranges(have)} in {form} form)")
        return float(self.rows.at[rows[index], "median_ms"])

    def fixed_latency(self) -> float:
        """Σ over the fixed parts (stem, downsampling, head), ms."""
        fixed = self.rows[self.rows["kind"] == "fixed"]
        return float((fixed["median_ms"] * fixed["count"]).sum())

    def model_latency(self) -> float | None:
        """The whole original model measured end to end (ms), if the table has that row."""
        model = self.rows[self.rows["kind"] == "model"]
        return None if model.empty else float(model["median_ms"].iloc[0])

    def predict(self, pruned_indices: Iterable[int] = ()) -> float:
        """Predicted latency (ms) of the subnet with these blocks merged: Σ fixed + Σ per block
        (merged form for pruned blocks, original for the rest), then ``a · Σ + b`` if calibrated."""
        pruned = set()
        for index in pruned_indices:
            if not isinstance(index, int) or isinstance(index, bool):
                raise TableError(f"block indices must be integers, got {index!r}")
            pruned.add(index)
        originals = self._index_map("original")
        if not originals:
            raise TableError("the table has no block rows; was the profile interrupted? (rerun it to resume)")
        unknown = sorted(pruned - set(originals))
        if unknown:
            raise TableError(f"block(s) {format_block_ranges(unknown)} are not in the table "
                             f"(it covers blocks {format_block_ranges(originals)})")
        total = self.fixed_latency()
        total += sum(self.block_latency(i, "merged" if i in pruned else "original") for i in originals)
        if self.meta.calibration is not None:
            a, b = self.meta.calibration
            total = a * total + b
        return total

    def check_matches(self, *, target: Any = None, device: str | None = None,
                      runtime_version: str | None = None, batch: int | None = None,
                      input_size: int | tuple[int, int] | None = None,
                      allow_mismatch: bool = False) -> list[str]:
        """Compare the table with what is asked (None = not checked).

        Returns the differences; raises a TableError naming each of them unless ``allow_mismatch``.
        ``target`` is a target name or an object with a ``name``; ``device`` is compared with the
        device string the table was measured on.
        """
        asked: dict[str, Any] = {}
        if target is not None:
            asked["target"] = getattr(target, "name", target)
        if device is not None:
            asked["device"] = device
        if runtime_version is not None:
            asked["runtime version"] = str(runtime_version)
        if batch is not None:
            asked["batch"] = batch
        if input_size is not None:
            size = (input_size, input_size) if isinstance(input_size, int) else tuple(input_size)
            asked["input size"] = size
        have = {"target": self.meta.target, "device": self.meta.device_string,
                "runtime version": self.meta.runtime_version, "batch": self.meta.batch,
                "input size": self.meta.input_size}
        differences = [f"{name} {_show(have[name])} (asked {_show(value)})"
                       for name, value in asked.items() if have[name] != value]
        if differences and not allow_mismatch:
            where = f"latency table {self.path}" if self.path else "the latency table"
            raise TableError(f"{where} does not match: {'; '.join(differences)} "
                             "— measure a table for this setup or pass --allow-mismatch")
        return differences

    def _index_map(self, form: str) -> dict[int, int]:
        """Block index → row label, for block rows of ``form``."""
        mapping: dict[int, int] = {}
        blocks = self.rows[(self.rows["kind"] == "block") & (self.rows["form"] == form)]
        for label, text in blocks["indices"].items():
            for index in parse_indices(text):
                mapping[index] = label
        return mapping


def parse_indices(text: str) -> tuple[int, ...]:
    """``"3;4;5"`` → (3, 4, 5); the empty string → ()."""
    try:
        return tuple(int(part) for part in str(text).split(";") if part != "")
    except ValueError:
        raise TableError(f"malformed block indices {text!r} (expected e.g. 3;4;5)") from None


def format_indices(indices: Iterable[int]) -> str:
    return ";".join(str(i) for i in indices)


def format_shape(shape: Iterable[int]) -> str:
    return "x".join(str(s) for s in shape)


def _typed(rows: pd.DataFrame) -> pd.DataFrame:
    rows = rows.copy()
    for name, kind in COLUMNS.items():
        if kind is str:
            rows[name] = rows[name].astype(str)
        elif kind is int:
            rows[name] = rows[name].astype("int64")
        else:
            rows[name] = rows[name].astype("float64")
    return rows[list(COLUMNS)].reset_index(drop=True)


def _validate_rows(rows: pd.DataFrame, meta: TableMeta, path: Path | None) -> pd.DataFrame:
    where = f"latency table {path}" if path else "latency table"
    missing = [name for name in COLUMNS if name not in rows.columns]
    if missing:
        raise TableError(f"{where} lacks column(s): {', '.join(missing)}")
    extra = [name for name in rows.columns if name not in COLUMNS]
    if extra:
        raise TableError(f"{where} has unknown column(s): {', '.join(map(str, extra))}")
    for name in _REQUIRED_NUMBERS:
        if rows[name].isna().any():
            raise TableError(f"{where}: column {name} has empty values")
    try:
        rows = _typed(rows)
    except (ValueError, TypeError) as error:
        raise TableError(f"{where} has a malformed value: {str(error).splitlines()[0]}") from None
    for row in rows.itertuples(index=False):
        if row.kind not in KINDS:
            raise TableError(f"{where}: row {row.key!r} has kind {row.kind!r}, expected one of {KINDS}")
        if row.form not in FORMS[row.kind]:
            raise TableError(f"{where}: row {row.key!r} of kind {row.kind} has form {row.form!r}, "
                             f"expected {' or '.join(FORMS[row.kind])}")
        if row.source != meta.mode:
            raise TableError(f"{where}: row {row.key!r} ({row.form}) is {row.source} but the table is "
                             f"{meta.mode}; measured and estimated rows never mix")
        if not (row.median_ms >= 0 and math.isfinite(row.median_ms)):
            raise TableError(f"{where}: row {row.key!r} ({row.form}) has latency {row.median_ms}")
        if row.kind == "block":
            parse_indices(row.indices)
    duplicated = rows.duplicated(["key", "form"])
    if duplicated.any():
        first = rows[duplicated].iloc[0]
        raise TableError(f"{where}: entry {first['key']!r} ({first['form']}) appears more than once")
    for form in FORMS["block"]:
        seen: set[int] = set()
        for text in rows[(rows["kind"] == "block") & (rows["form"] == form)]["indices"]:
            indices = set(parse_indices(text))
            if indices & seen:
                twice = format_block_ranges(indices & seen)
                raise TableError(f"{where}: block(s) {twice} appear in two {form} rows")
            seen |= indices
    return rows


def _show(value: Any) -> str:
    if isinstance(value, tuple) and len(value) == 2 and all(isinstance(v, int) for v in value):
        return f"{value[0]}x{value[1]}"
    return repr(value) if isinstance(value, str) else str(value)

