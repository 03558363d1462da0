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

What a table predicts (:meth:`LatencyTable.predict`): its fitted predictor where the metadata holds one
(:mod:`deploykit.latency.predictor`), else the isolated sum Σ fixed + Σ per block; then the legacy
``calibration`` ``a · x + b`` where the table has one. A table is used only when its rows cover what
its metadata says the model has (:meth:`LatencyTable.check_coverage`): an interrupted or damaged table
is an error naming what is missing, never a smaller candidate set or a wrong figure.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import MISSING, asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any

import pandas as pd

from deploykit.checks import is_int, require_int
from deploykit.deployment import DeploymentSettings
from deploykit.errors import ConfigError, TableError, one_line
from deploykit.fileio import check_output_files, read_json, write_json_atomic, write_text_atomic
from deploykit.latency.predictor import Predictor
from deploykit.latency.table_schema import check_meta_fields, check_rows_match_model
from deploykit.runsettings import RunSettings
from deploykit.shapes import check_input_size
from deploykit.subnet import Subnet, format_block_ranges, parse_indices

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
    "ci_low_ms": float, "ci_high_ms": float, "ci_half_width": float,
    "others_cpu": float, "contended": float,
}
_REQUIRED_NUMBERS = ("count", "macs", "median_ms", "n", "repeats")
# Columns added after tables were shipped: a table without them reads with empty (nan) values.
# others_cpu / contended: the contention guard's reading (cores other processes used; 1.0 when that was
# more than the measurement allowed, i.e. the figure is flagged).
OPTIONAL_COLUMNS = ("ci_low_ms", "ci_high_ms", "ci_half_width", "others_cpu", "contended")

# Settings a resumed table must share with the run that continues it.
SETTINGS = ("model", "target", "mode", "device", "device_string", "runtime", "runtime_version",
            "provider", "precision", "batch", "input_size", "threads", "run_settings", "protocol", "estimate")
# Of those, the ones that describe the machine rather than the request (--allow-mismatch covers them),
# with the machine's fingerprint (compared apart: it is not a setting of the request).
ENVIRONMENT = ("device_string", "runtime_version", "fingerprint")


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
    complete: bool = False      # the profile finished: every entry, and the fit and held-out check it asked
    profile_s: float = 0.0      # wall time spent profiling, summed over resumed runs
    calibration: tuple[float, float] | None = None   # predict → a · x + b (fitted by `lut check`)
    estimate: Mapping[str, Any] | None = None        # roofline settings of an estimated table
    notes: tuple[str, ...] = ()
    predictor: Mapping[str, Any] | None = None       # Predictor.as_dict(); None: the isolated sum
    fidelity: Mapping[str, Any] | None = None        # held-out figures of the prediction (profile)
    layout: Mapping[str, Any] | None = None          # what the model has: blocks, prunable, fixed parts
    # Identity (see deploykit.measure.fingerprint and .identity): the machine that measured the table,
    # its speed anchors (unpruned and all-merged model end to end), the rescalings `lut anchor` stored
    # for other machines (by fingerprint id), and the conditions of the profile (affinity, load, drift).
    fingerprint: Mapping[str, Any] | None = None
    anchors: Mapping[str, Any] | None = None
    rescalings: Mapping[str, Any] = field(default_factory=dict)
    conditions: Mapping[str, Any] | None = None
    # The device agent the rows were measured through (``--device URL``); None: measured where profiled.
    # The machine itself is the fingerprint (the device's, never the client's).
    device_url: str | None = None
    # The run settings every row was measured with (RunSettings.as_dict(); None: a table from before
    # settings were recorded, measured with ``threads`` and the runtime's defaults otherwise), and the
    # probe that chose them where the target left them to ``auto``.
    run_settings: Mapping[str, Any] | None = None
    settings_probe: Mapping[str, Any] | None = None

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise TableError(f"table mode must be one of {', '.join(MODES)}, got {self.mode!r}")
        require_int("table batch", self.batch, least=1, error=TableError)
        object.__setattr__(self, "input_size",
                           check_input_size(self.input_size, what="table input_size", error=TableError))
        object.__setattr__(self, "protocol", dict(self.protocol or {}))
        object.__setattr__(self, "notes", tuple(self.notes))
        for name in ("estimate", "predictor", "fidelity", "layout", "fingerprint", "anchors", "conditions",
                     "run_settings", "settings_probe"):
            value = getattr(self, name)
            if value is not None and not isinstance(value, Mapping):
                raise TableError(f"table {name} must be a JSON object, got {value!r}")
            if value is not None:
                object.__setattr__(self, name, dict(value))
        if self.run_settings is not None:
            try:
                RunSettings.from_dict(self.run_settings, what="table run_settings")
            except ConfigError as error:
                raise TableError(str(error)) from None
        if self.predictor is not None:
            Predictor.from_dict(self.predictor)  # malformed: an error now, not at the first prediction
        if self.layout is not None:
            _check_layout(self.layout)
        if not isinstance(self.rescalings, Mapping):
            raise TableError(f"table rescalings must be a JSON object, got {self.rescalings!r}")
        object.__setattr__(self, "rescalings", dict(self.rescalings))
        if self.device_url is not None and not isinstance(self.device_url, str):
            raise TableError(f"table device_url must be a URL or null, got {self.device_url!r}")
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
        check_meta_fields(data)
        try:
            return cls(**data)
        except TypeError as error:
            raise TableError(f"malformed table metadata: {error}") from None

    def measured_with(self) -> RunSettings:
        """The run settings the rows were measured with (an older table: its ``threads``, the
        runtime's defaults otherwise)."""
        if self.run_settings is not None:
            return RunSettings.from_dict(self.run_settings)
        return RunSettings(threads=self.threads)

    def deployment(self, measured_by: str) -> DeploymentSettings:
        """What ``MODEL.settings.json`` says for a model whose figures come from this table."""
        return DeploymentSettings(target=self.target, runtime=self.runtime, provider=self.provider,
                                  settings=self.measured_with(), measured_by=measured_by)

    def settings(self) -> dict[str, Any]:
        """The fields that must agree between a table and a run that resumes it."""
        data = self.as_dict()
        return {name: data[name] for name in SETTINGS}


def read_meta(path: str | Path) -> TableMeta:
    """The metadata of the table at ``path`` (its CSV or its ``.meta.json``)."""
    meta_file = meta_path(table_path(path))
    data = read_json(meta_file, what="latency table metadata", error=TableError)
    try:
        return TableMeta.from_dict(data)
    except TableError as error:
        raise TableError(f"{meta_file}: {error}") from None


def read_deployment(path: str | Path):
    """The run settings the table at ``path`` was measured with, as the
    :class:`deploykit.deployment.DeploymentSettings` an exported model carries beside it."""
    return read_meta(path).deployment(measured_by=str(path))


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
    # ``a · prediction + b`` for this machine, set by deploykit.latency.identity.table_for_this_machine
    # from a rescaling `lut anchor` stored; never written to the files.
    rescale: tuple[float, float] | None = None

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
            raise TableError(f"cannot read latency table {csv}: {one_line(error)}") from None
        table = cls(meta=meta, rows=rows, path=csv)
        check_rows_match_model(meta.model, table.rows, f"latency table {csv}")
        return table

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
        """Append one row (all :data:`COLUMNS`; those in :data:`OPTIONAL_COLUMNS` may be left out and are
        then empty); a duplicate ``(key, form)`` is a TableError."""
        row = {**dict.fromkeys(OPTIONAL_COLUMNS, math.nan), **row}
        missing = [name for name in COLUMNS if name not in row]
        if missing:
            raise TableError(f"table row lacks column(s): {', '.join(missing)}")
        # Latencies to the nanosecond: the CSV stays readable and reads back to equal floats.
        new = pd.DataFrame([{name: round(float(row[name]), 6) if kind is float else row[name]
                             for name, kind in COLUMNS.items()}])
        self.rows = _validate_rows(pd.concat([self.rows, _typed(new)], ignore_index=True), self.meta,
                                   self.path)

    def discard(self, key: str, form: str) -> None:
        """Remove the row ``(key, form)`` (to measure it again); nothing happens when it is absent."""
        keep = ~((self.rows["key"] == key) & (self.rows["form"] == form))
        self.rows = self.rows[keep].reset_index(drop=True)

    def with_meta(self, **changes: Any) -> LatencyTable:
        return LatencyTable(meta=replace(self.meta, **changes), rows=self.rows.copy(), path=self.path,
                            rescale=self.rescale)

    def with_rescale(self, rescale: tuple[float, float] | None) -> LatencyTable:
        """A copy whose predictions end with ``a · x + b`` (None: no rescaling)."""
        return LatencyTable(meta=self.meta, rows=self.rows.copy(), path=self.path, rescale=rescale)

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

    @property
    def groups(self) -> tuple[tuple[int, ...], ...]:
        """The prunable blocks of each merged-form entry (blocks listed together share one row)."""
        rows = self.rows[(self.rows["kind"] == "block") & (self.rows["form"] == "merged")]
        return tuple(sorted(tuple(sorted(parse_indices(text))) for text in rows["indices"]))

    @property
    def predictor(self) -> Predictor | None:
        """The fitted predictor from the metadata, or None (the table predicts the isolated sum)."""
        cache = self._derived()
        if "predictor" not in cache:
            data = self.meta.predictor
            cache["predictor"] = None if data is None else Predictor.from_dict(data)
        return cache["predictor"]

    def block_latency(self, index: int, form: str = "original") -> float:
        """Median latency (ms) of block ``index`` in ``form`` (original or merged)."""
        if form not in FORMS["block"]:
            raise TableError(f"block form must be original or merged, got {form!r}")
        latencies = self._latencies(form)
        if index not in latencies:
            have = self.block_indices if form == "original" else self.prunable_indices
            raise TableError(f"the table has no {form} latency for block {index} "
                             f"(it covers blocks {format_block_ranges(have)} in {form} form)")
        return latencies[index]

    def fixed_latency(self) -> float:
        """Σ over the fixed parts (stem, downsampling, head), ms."""
        cache = self._derived()
        if "fixed" not in cache:
            fixed = self.rows[self.rows["kind"] == "fixed"]
            cache["fixed"] = float((fixed["median_ms"] * fixed["count"]).sum())
        return cache["fixed"]

    def model_latency(self) -> float | None:
        """The whole original model measured end to end (ms), if the table has that row."""
        model = self.rows[self.rows["kind"] == "model"]
        return None if model.empty else float(model["median_ms"].iloc[0])

    def isolated_sum(self, pruned_indices: Iterable[int] = ()) -> float:
        """Σ fixed + Σ per block (merged form for pruned blocks, original for the rest), ms: the
        prediction of a table without a predictor, and the prior a predictor is fitted toward. Works
        on a table whose profile is still running (it needs the block rows only)."""
        pruned = self._pruned(pruned_indices)
        originals = self._index_map("original")
        total = self.fixed_latency()
        total += sum(self.block_latency(i, "merged" if i in pruned else "original") for i in originals)
        return total

    def predict(self, pruned_indices: Iterable[int] = ()) -> float:
        """Predicted latency (ms) of the subnet with these blocks merged: the fitted predictor where the
        table has one, else the isolated sum; then ``a · x + b`` where the table has a calibration.
        A table whose rows do not cover its model is a TableError naming what is missing."""
        self.check_coverage()
        pruned = self._pruned(pruned_indices)
        predictor = self.predictor
        if predictor is None:
            total = self.isolated_sum(pruned)
        else:
            outside = sorted(pruned - set(predictor.blocks))
            if outside:
                self.block_latency(outside[0], "merged")  # names the block and what can be pruned
            total = predictor.predict(pruned)
        if self.meta.calibration is not None:
            a, b = self.meta.calibration
            total = a * total + b
        if self.rescale is not None:  # this machine's rescaling (lut anchor): always the last step
            a, b = self.rescale
            total = a * total + b
        return total

    def predict_subnet(self, subnet: Subnet) -> float:
        """:meth:`predict` for a :class:`deploykit.subnet.Subnet`, which must be of this table's model
        and input size."""
        meta = self.meta
        if subnet.model != meta.model or tuple(subnet.input_size) != tuple(meta.input_size):
            raise TableError(f"the subnet is {subnet.model} at {_show(tuple(subnet.input_size))} but the "
                             f"table is for {meta.model} at {_show(tuple(meta.input_size))}")
        return self.predict(subnet.pruned)

    def check_coverage(self) -> None:
        """Refuse a table that cannot be used as it is: its profile did not finish, or its rows do not
        cover what its metadata (or, for tables without a recorded layout, its own rows) say the model
        has. The TableError names everything that is missing."""
        cache = self._derived()
        if "coverage" not in cache:
            cache["coverage"] = self._coverage_problems()
        problems = cache["coverage"]
        if problems:
            where = f"latency table {self.path}" if self.path else "the latency table"
            if problems == ["incomplete"]:
                raise TableError(f"{where} is incomplete (its profile was interrupted or is still running); "
                                 "rerun the same `deploykit profile` command to finish it")
            raise TableError(f"{where} does not cover its model: {'; '.join(problems)} — the file was cut "
                             "short or edited; profile it again")

    def fidelity_line(self) -> str:
        """One line: the held-out figures the profile stored, or why there are none."""
        figures = self.meta.fidelity
        kind = "fitted predictor" if self.meta.predictor is not None else "isolated sum"
        if figures is None:
            if self.meta.mode == "estimated":
                return "table fidelity: none (a roofline estimate, not a measurement)"
            return (f"table fidelity: not measured ({kind}); `deploykit lut check` measures it, "
                    "`deploykit profile` stores it in new tables")
        try:
            return (f"table fidelity ({kind}, {int(figures['n'])} held-out subnets): "
                    f"ρ {figures['spearman']:.3f}, "
                    f"±5% {figures['within_5']:.0%}, ±10% {figures['within_10']:.0%}, "
                    f"MAPE {figures['mape']:.1f}%, max {figures['max_error']:.1f}%"
                    + _repeatability_note(figures.get("repeatability"))
                    + ("; measured before the `lut check` calibration" if self.meta.calibration else ""))
        except (KeyError, TypeError, ValueError):
            return "table fidelity: malformed in the metadata (profile the table again)"

    def check_matches(self, *, target: Any = None, batch: int | None = None,
                      input_size: int | tuple[int, int] | None = None,
                      allow_mismatch: bool = False) -> list[str]:
        """Compare what the table was made for with what is asked (None = not checked).

        Returns the differences; raises a TableError naming each of them unless ``allow_mismatch``.
        ``target`` is a target name or an object with a ``name``. The machine (CPU, runtime version,
        device, ...) is not compared here: :func:`deploykit.latency.identity.table_for_this_machine`
        compares fingerprints.
        """
        asked: dict[str, Any] = {}
        if target is not None:
            asked["target"] = getattr(target, "name", target)
        if batch is not None:
            asked["batch"] = batch
        if input_size is not None:
            asked["input size"] = check_input_size(input_size)
        have = {"target": self.meta.target, "batch": self.meta.batch, "input size": self.meta.input_size}
        differences = [f"{name} {_show(have[name])} (asked {_show(value)})"
                       for name, value in asked.items() if have[name] != value]
        if differences and not allow_mismatch:
            where = f"latency table {self.path}" if self.path else "the latency table"
            raise TableError(f"{where} does not match: {'; '.join(differences)} "
                             "— measure a table for this setup or pass --allow-mismatch")
        return differences

    def _derived(self) -> dict[str, Any]:
        """Values computed from the rows and metadata, kept until either is replaced."""
        cache = getattr(self, "_cache", None)
        if cache is None or cache["rows"] is not self.rows or cache["meta"] is not self.meta:
            cache = {"rows": self.rows, "meta": self.meta}
            self._cache = cache
        return cache

    def _index_map(self, form: str) -> dict[int, int]:
        """Block index → row label, for block rows of ``form``."""
        cache = self._derived()
        if form not in cache:
            mapping: dict[int, int] = {}
            blocks = self.rows[(self.rows["kind"] == "block") & (self.rows["form"] == form)]
            for label, text in blocks["indices"].items():
                for index in parse_indices(text):
                    mapping[index] = label
            cache[form] = mapping
        return cache[form]

    def _latencies(self, form: str) -> dict[int, float]:
        """Block index → median latency (ms) in ``form``."""
        cache = self._derived()
        key = f"{form} ms"
        if key not in cache:
            medians = self.rows["median_ms"]
            cache[key] = {index: float(medians.at[label]) for index, label in self._index_map(form).items()}
        return cache[key]

    def _pruned(self, indices: Iterable[int]) -> set[int]:
        """The pruned block indices as a set; a non-integer or a block the table lacks is a TableError."""
        pruned = set()
        for index in indices:
            if not is_int(index):
                raise TableError(f"block indices must be integers, got {index!r}")
            pruned.add(index)
        originals = self._index_map("original")
        if not originals:
            raise TableError("the table has no block rows; was the profile interrupted? (rerun it to resume)")
        unknown = sorted(pruned - set(originals))
        if unknown:
            raise TableError(f"block(s) {format_block_ranges(unknown)} are not in the table "
                             f"(it covers blocks {format_block_ranges(originals)})")
        return pruned

    def _coverage_problems(self) -> list[str]:
        """What is missing, in words: [] when usable, ["incomplete"] for an unfinished profile."""
        if not self.meta.complete:
            return ["incomplete"]
        originals, merged = set(self._index_map("original")), set(self._index_map("merged"))
        kinds = set(self.rows["kind"])
        problems: list[str] = []
        layout = self.meta.layout
        if layout is not None:
            expected, prunable = set(range(layout["blocks"])), set(layout["prunable"])
            fixed = set(self.rows.loc[self.rows["kind"] == "fixed", "name"])
            problems += _missing("original-form row", expected - originals)
            problems += _missing("merged-form row", prunable - merged)
            problems += _unexpected(originals - expected, "blocks the model does not have")
            problems += _unexpected(merged - prunable, "merged forms of blocks that cannot be pruned")
            lost = [name for name in layout["fixed"] if name not in fixed]
            if lost:
                problems.append(f"no row for fixed part(s) {', '.join(lost)}")
        else:  # a table from before layouts were recorded: what its own rows imply
            gaps = set(range(max(originals, default=-1) + 1)) - originals
            problems += _missing("original-form row", gaps)
            problems += _missing("original-form row", merged - originals)
        if not originals:
            problems.append("no block rows at all")
        if "model" not in kinds:
            problems.append("no whole-model row (every profile ends with it)")
        predictor = self.meta.predictor
        if predictor is not None and not problems:
            priced = set(self.predictor.blocks)
            if priced != merged:
                problems.append(f"its predictor prices blocks {format_block_ranges(priced)} but the "
                                f"prunable blocks are {format_block_ranges(merged)}")
        return problems


def predict_subnet(table: LatencyTable, subnet: Any) -> float:
    """The table's latency for ``subnet``: a :class:`deploykit.subnet.Subnet` (of the table's model and
    input size) or an iterable of pruned block indices. Forwards to :meth:`LatencyTable.predict`."""
    if isinstance(subnet, Subnet):
        return table.predict_subnet(subnet)
    return table.predict(tuple(subnet))


def layout_of(*, blocks: int, prunable: Iterable[int], fixed: Iterable[str]) -> dict[str, Any]:
    """The ``layout`` a profile records: how many blocks, which can be pruned, the fixed parts' names."""
    return {"blocks": int(blocks), "prunable": sorted(int(i) for i in prunable), "fixed": list(fixed)}


def _check_layout(layout: Mapping[str, Any]) -> None:
    blocks, prunable, fixed = layout.get("blocks"), layout.get("prunable"), layout.get("fixed")
    ok = (set(layout) == {"blocks", "prunable", "fixed"} and isinstance(blocks, int) and blocks >= 0
          and isinstance(prunable, list) and all(isinstance(i, int) and 0 <= i < blocks for i in prunable)
          and isinstance(fixed, list) and all(isinstance(name, str) for name in fixed))
    if not ok:
        raise TableError(f"table layout must be {{blocks: N, prunable: [indices < N], fixed: [names]}}, "
                         f"got {dict(layout)!r}")


def _missing(what: str, indices: set[int]) -> list[str]:
    return [f"block(s) {format_block_ranges(indices)} have no {what}"] if indices else []


def _unexpected(indices: set[int], what: str) -> list[str]:
    return [f"rows for block(s) {format_block_ranges(indices)}: {what}"] if indices else []


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
    rows = rows.assign(**{name: math.nan for name in OPTIONAL_COLUMNS if name not in rows.columns})
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
        raise TableError(f"{where} has a malformed value: {one_line(error)}") from None
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


def _repeatability_note(repeat: Mapping[str, Any] | None) -> str:
    """How steady the machine was: the same unpruned model's fresh-process measurements (the floor)."""
    if not repeat:
        return ""
    return (f" (the unpruned model itself: {repeat['within_5']:.0%} of {int(repeat['n'])} measurements "
            f"within ±5% of their median)")
