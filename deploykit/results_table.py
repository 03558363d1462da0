"""The speed-vs-accuracy table (``deploykit table``): one row per trained variant, per-target latency.

A *variant directory* holds a ``result.json`` from ``deploykit train baseline`` or ``train subnet`` and
zero or more ``verify*.json`` reports (:class:`~deploykit.verify.VerifyReport`), at most one per
target. A *run directory* holds variant directories as immediate subfolders. Every figure in the
table is read from those files; nothing is estimated: a missing value stays blank.

Δ top-1 is fair only against an unpruned model trained as long: a pruned variant fine-tuned for 2 more
epochs from a 4-epoch original must be compared with that original trained 4 + 2 epochs, not with the
4-epoch one (extra epochs alone raise top-1 on a short-trained original). So every variant's *training
budget* is followed back through the weights it started from (``result.json`` ``weights`` → the
variant directory that holds them → its own ``weights`` …): ``4+2`` is 4 epochs from scratch, then 2.
A pruned row's Δ is against the unpruned variant of the same model and validation data with the same
budget (preferring one that started from the same weights); where there is none, against the original
it started from (or the first one listed) and its ``Δ vs`` cell says that the budgets differ. An
unpruned row's Δ is against the variant it was trained from, when that is listed too (what the extra
epochs alone gave). The ``Δ vs`` column names each row's reference and its budget.

Kept apart from :mod:`deploykit.report` so that the command does not import torch.
"""

from __future__ import annotations

import io
import math
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from deploykit.checks import is_int
from deploykit.errors import ConfigError
from deploykit.fileio import check_output_files, read_json, write_bytes_atomic, write_text_atomic
from deploykit.verify import VerifyReport
from deploykit.verify.rounds import RoundRobin
from deploykit.verify.timing import DEFAULT_ROUNDS

RESULT_FILE = "result.json"
REPORT_GLOB = "verify*.json"
TOP1, DELTA, PARAMS, MACS = "top-1 %", "Δ top-1", "params M", "MACs M"
EPOCHS, DELTA_VS = "epochs", "Δ vs"
BASE_COLUMNS = ("variant", "model", "method", "pruned", EPOCHS, TOP1, DELTA, DELTA_VS, PARAMS, MACS)
UNEQUAL, UNKNOWN = "not the same budget", "budget unknown"
LOG_FILE = "log.csv"  # one row per finished epoch (written by deploykit train)
PREDICTED, MEASURED, SPEEDUP, NUMERICS = "predicted ms", "measured ms", "speed-up", "numerics"
TARGET_FIELDS = (PREDICTED, MEASURED, SPEEDUP, NUMERICS)
# With one round-robin measurement of every variant (deploykit.verify.rounds), the spread of its
# figures: half the range of the round medians (ms) and of the per-round speed-ups.
MEASURED_SPREAD, SPEEDUP_SPREAD = "measured ±", "speed-up ±"
ROUND_ROBIN_FIELDS = (PREDICTED, MEASURED, MEASURED_SPREAD, SPEEDUP, SPEEDUP_SPREAD, NUMERICS)
NO_LATENCY = "no variant has a measured latency: run deploykit verify --out DIR/verify-TARGET.json first"

# How each numeric column reads in Markdown and HTML (matched on the column's end); CSV keeps raw floats.
_FORMATS: dict[str, Callable[[float], str]] = {
    TOP1: "{:.2f}".format, DELTA: "{:+.2f}".format, PARAMS: "{:.2f}".format, MACS: "{:.1f}".format,
    PREDICTED: "{:.3f}".format, MEASURED: "{:.3f}".format, SPEEDUP: "{:.2f}×".format,
    MEASURED_SPREAD: "±{:.3f}".format, SPEEDUP_SPREAD: "±{:.2f}".format,
}


# --- reading variants -------------------------------------------------------------------------------

@dataclass(frozen=True)
class Variant:
    """One trained model: what its ``result.json`` says and its verify reports, one per target."""

    directory: Path
    kind: str  # "baseline" or "subnet"
    model: str
    method: str  # "original" for a baseline
    pruned: tuple[int, ...]
    top1: float  # baseline: top1; subnet: top1_merged (what ships)
    params: int | None
    macs: int | None
    reports: tuple[VerifyReport, ...] = ()
    budget: TrainingBudget | None = None  # None: not known (no epoch count, or its weights cannot be found)
    start: Path | None = None  # the variant directory whose weights it started from, if it is one
    data: tuple[Any, ...] | None = None  # which validation data its top-1 is on (see _data_key)

    def report(self, target: str) -> VerifyReport | None:
        return next((r for r in self.reports if r.target == target), None)


@dataclass(frozen=True)
class TrainingBudget:
    """How long a variant's weights were trained: epochs per training run, oldest first, starting from
    random weights (``scratch``) or from weights trained elsewhere (``pretrained``)."""

    origin: str
    epochs: tuple[int, ...]

    @property
    def key(self) -> tuple[str, int]:
        return self.origin, sum(self.epochs)

    def text(self) -> str:
        parts = (["pretrained"] if self.origin == "pretrained" else []) + [str(e) for e in self.epochs]
        return "+".join(parts) or "0"


def find_variant_dirs(path: str | Path) -> list[Path]:
    """``path`` itself when it holds a result.json, else its immediate subfolders that do."""
    path = Path(path)
    if (path / RESULT_FILE).is_file():
        return [path]
    if not path.is_dir():
        raise ConfigError(f"{path}: not found (expected a variant directory with {RESULT_FILE} "
                          "or a run directory of them)")
    found = [child for child in sorted(path.iterdir()) if _is_variant(child)]
    if not found:
        raise ConfigError(f"{path}: neither a variant directory (no {RESULT_FILE}) nor a run directory "
                          f"(no immediate subdirectory has one)")
    return found


def _is_variant(folder: Path) -> bool:
    """A subfolder with a model's result.json; a supernet's (a run directory has one) is not a variant."""
    try:
        kind = read_json(folder / RESULT_FILE, what="result").get("kind")
    except ConfigError:
        return (folder / RESULT_FILE).is_file()  # unreadable: load_variant names the problem
    return kind != "supernet"


def load_variants(paths: Iterable[str | Path]) -> list[Variant]:
    """Variants in the order given; those found inside one run directory baseline-first, then by name.
    A directory reached twice is listed once."""
    variants: list[Variant] = []
    seen: set[Path] = set()
    for path in paths:
        found = [load_variant(d) for d in find_variant_dirs(path) if d.resolve() not in seen]
        found.sort(key=lambda v: (v.kind != "baseline", v.directory.name))
        seen.update(v.directory.resolve() for v in found)
        variants.extend(found)
    return variants


def load_variant(directory: str | Path) -> Variant:
    directory = Path(directory)
    source = directory / RESULT_FILE
    try:
        data = read_json(source, what="result", kind=None)
    except ConfigError as error:
        raise ConfigError(f"cannot read it as JSON: {error}") from None
    if not isinstance(data, dict) or data.get("kind") not in ("baseline", "subnet"):
        raise ConfigError(f"{source}: malformed: expected a JSON object with kind 'baseline' or 'subnet' "
                          "(written by deploykit train)")
    subnet = data["kind"] == "subnet"
    model = data.get("model")
    if not isinstance(model, str) or not model:
        raise ConfigError(f"{source}: malformed: 'model' must be a model name")
    pruned = data.get("pruned", []) if subnet else []
    if not isinstance(pruned, list) or not all(type(i) is int for i in pruned):  # bool is no index
        raise ConfigError(f"{source}: malformed: 'pruned' must be a list of block indices")
    method = data.get("method") if subnet else "original"
    if not isinstance(method, str):
        raise ConfigError(f"{source}: malformed: 'method' must be a string")
    return Variant(directory=directory, kind=data["kind"], model=model, method=method, pruned=tuple(pruned),
                   top1=_number(data, "top1_merged" if subnet else "top1", source, required=True),
                   params=_number(data, "params", source), macs=_number(data, "macs", source),
                   reports=load_reports(directory), budget=_budget(directory, data, seen=frozenset()),
                   start=_start_directory(data.get("weights"), directory), data=_data_key(data))


# --- training budgets -------------------------------------------------------------------------------

def _budget(directory: Path, data: dict[str, Any], *, seen: frozenset[Path]) -> TrainingBudget | None:
    """This variant's epochs after those of the variant it started from (followed back to the start)."""
    epochs = _own_epochs(directory, data)
    if epochs is None:
        return None
    own = (epochs,) if epochs else ()
    weights = data.get("weights")
    if weights is None:  # a subnet always starts from an original: one that does not say which is unknown
        return TrainingBudget("scratch", own) if data.get("kind") == "baseline" else None
    start = _start_directory(weights, directory)
    if start is None:
        return TrainingBudget("pretrained", own) if _weights_exist(weights, directory) else None
    if start.resolve() in seen:
        return None
    try:
        before = _budget(start, read_json(start / RESULT_FILE, what="result"), seen=seen | {start.resolve()})
    except (ConfigError, ValueError, AttributeError):
        return None
    return None if before is None else TrainingBudget(before.origin, before.epochs + own)


def _own_epochs(directory: Path, data: dict[str, Any]) -> int | None:
    """``epochs`` of result.json; else the rows of the run's epoch log; else unknown."""
    epochs = data.get("epochs")
    if is_int(epochs, least=0):
        return epochs
    try:
        lines = (directory / LOG_FILE).read_text().splitlines()
    except OSError:
        return None
    return max(len(lines) - 1, 0) if lines else None


def _candidate_paths(weights: str, directory: Path) -> Iterator[Path]:
    """Where the weights a result.json names may be: as written (relative to where training ran, often
    the current folder), or relative to any folder above the variant directory."""
    path = Path(weights).expanduser()
    yield path
    if not path.is_absolute():
        for folder in directory.resolve().parents:
            yield folder / path


def _start_directory(weights: Any, directory: Path) -> Path | None:
    """The variant directory whose weights file ``weights`` is (one holding a result.json), if any."""
    if not isinstance(weights, str) or weights.startswith("package:"):
        return None
    for path in _candidate_paths(weights, directory):
        if path.is_file() and (path.parent / RESULT_FILE).is_file():
            return path.parent
    return None


def _weights_exist(weights: Any, directory: Path) -> bool:
    if isinstance(weights, str) and weights.startswith("package:"):
        return True
    return isinstance(weights, str) and any(p.is_file() for p in _candidate_paths(weights, directory))


def _data_key(data: dict[str, Any]) -> tuple[Any, ...] | None:
    """What must agree for two top-1 figures to be comparable: the validation data."""
    described = data.get("data")
    if not isinstance(described, dict):
        return None
    size = data.get("input_size", described.get("input_size"))
    return (described.get("name"), tuple(size) if isinstance(size, list) else size,
            described.get("val_limit"), described.get("val_fraction"), described.get("split_seed"))


def load_reports(directory: Path) -> tuple[VerifyReport, ...]:
    """Every ``verify*.json`` in ``directory``; two for one target is ambiguous and refused."""
    by_target: dict[str, tuple[Path, VerifyReport]] = {}
    for path in sorted(directory.glob(REPORT_GLOB)):
        report = VerifyReport.read(path)
        if report.target in by_target:
            raise ConfigError(f"{directory}: two verify reports for target {report.target}: "
                              f"{by_target[report.target][0].name} and {path.name} (keep one)")
        by_target[report.target] = (path, report)
    return tuple(report for _, report in by_target.values())


def _number(data: dict[str, Any], key: str, source: Path, *, required: bool = False) -> Any:
    value = data.get(key)
    if value is None and not required:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ConfigError(f"{source}: malformed: '{key}' must be a number, got {value!r}")
    return value


# --- the frame --------------------------------------------------------------------------------------

def speed_accuracy_frame(paths: Iterable[str | Path], *,
                         measurements: Sequence[str | Path] = ()) -> pd.DataFrame:
    """The table for the variants under ``paths`` (see :func:`load_variants`); ``measurements``:
    round-robin files (``latency-TARGET.json``) whose figures replace the verify reports' for the
    variants they measured, so that the compared figures come from one measurement."""
    return variants_frame(load_variants(paths), round_robins=[RoundRobin.read(p) for p in measurements])


def variants_frame(variants: Sequence[Variant], *, round_robins: Sequence[RoundRobin] = ()) -> pd.DataFrame:
    """One row per variant: :data:`BASE_COLUMNS`, then :data:`TARGET_FIELDS` per target (by name), or
    :data:`ROUND_ROBIN_FIELDS` for a target measured round-robin."""
    robins = {r.target: r for r in round_robins}
    targets = sorted({r.target for v in variants for r in v.reports} | set(robins))
    labels = variant_labels(variants)
    label_of = {id(v): label for v, label in zip(variants, labels)}
    rows = []
    for label, v in zip(labels, variants):
        reference = delta_reference(v, variants)
        row: dict[str, Any] = {
            "variant": label, "model": v.model, "method": v.method, "pruned": _pruned_text(v.pruned),
            EPOCHS: v.budget.text() if v.budget is not None else "",
            TOP1: v.top1, DELTA: _delta(v.top1, reference.variant.top1 if reference else None),
            DELTA_VS: reference.describe(label_of[id(reference.variant)]) if reference else "",
            PARAMS: _millions(v.params), MACS: _millions(v.macs)}
        for target in targets:
            row.update(_target_cells(v, target, variants))
            if target in robins:
                row.update(_round_robin_cells(v, target, robins[target]))
        rows.append(row)
    columns = [*BASE_COLUMNS, *(f"{t} {f}" for t in targets
                                for f in (ROUND_ROBIN_FIELDS if t in robins else TARGET_FIELDS))]
    return pd.DataFrame(rows, columns=columns)


@dataclass(frozen=True)
class Reference:
    """The variant a row's Δ top-1 is taken against, and whether it had the same training budget."""

    variant: Variant
    note: str = ""  # "" (same budget, or an unpruned row's own origin), UNEQUAL or UNKNOWN

    def describe(self, label: str) -> str:
        budget = self.variant.budget
        shown = f"{label} ({budget.text()} ep)" if budget is not None else label
        return f"{shown}; {self.note}" if self.note else shown


def delta_reference(variant: Variant, variants: Sequence[Variant]) -> Reference | None:
    """What ``variant``'s Δ top-1 is against (see the module docstring); None: nothing comparable."""
    unpruned = [v for v in variants if v.kind == "baseline" and v is not variant and v.model == variant.model
                and _same_data(v, variant)]
    origin = next((v for v in unpruned if _same_dir(v.directory, variant.start)), None)
    if variant.kind == "baseline":
        return Reference(origin) if origin is not None else None
    if variant.budget is not None:
        equal = [v for v in unpruned if v.budget is not None and v.budget.key == variant.budget.key]
        equal.sort(key=lambda v: not _same_dir(v.start, variant.start))
        if equal:
            return Reference(equal[0])
    fallback = origin or next(iter(unpruned), None)
    if fallback is None:
        return None
    return Reference(fallback, UNKNOWN if variant.budget is None or fallback.budget is None else UNEQUAL)


def _same_data(a: Variant, b: Variant) -> bool:
    return a.data is None or b.data is None or a.data == b.data


def _same_dir(a: Path | None, b: Path | None) -> bool:
    return a is not None and b is not None and a.resolve() == b.resolve()


def variant_labels(variants: Sequence[Variant]) -> list[str]:
    """Directory names; ``parent/name`` where names collide, the whole path where even that does."""
    names = Counter(v.directory.name for v in variants)
    labels = [v.directory.name if names[v.directory.name] == 1 else f"{v.directory.parent.name}/"
              f"{v.directory.name}" for v in variants]
    twice = Counter(labels)
    return [label if twice[label] == 1 else str(v.directory) for label, v in zip(labels, variants)]


def _target_cells(variant: Variant, target: str, variants: Sequence[Variant]) -> dict[str, Any]:
    report = variant.report(target)
    cells: dict[str, Any] = {f"{target} {f}": math.nan for f in TARGET_FIELDS}
    if report is None:
        return cells
    latency = report.latency or {}
    model_stats = latency.get("model") or {}
    cells[f"{target} {PREDICTED}"] = _or_nan(report.predicted_ms)
    cells[f"{target} {MEASURED}"] = _or_nan(model_stats.get("median_ms"))
    cells[f"{target} {SPEEDUP}"] = _speedup(variant, report, variants)
    cells[f"{target} {NUMERICS}"] = {True: "pass", False: "FAIL", None: "–"}[report.passed]
    return cells


def _round_robin_cells(variant: Variant, target: str, robin: RoundRobin) -> dict[str, Any]:
    """The variant's figures from the round-robin measurement (blank where it was not measured)."""
    cells: dict[str, Any] = {f"{target} {f}": math.nan for f in (MEASURED, MEASURED_SPREAD, SPEEDUP,
                                                                 SPEEDUP_SPREAD)}
    measured = robin.models.get(variant.directory.name)
    if measured is None:
        return cells
    low, high = measured.range_ms
    cells[f"{target} {MEASURED}"] = measured.median_ms
    cells[f"{target} {MEASURED_SPREAD}"] = (high - low) / 2
    if measured.speedup is not None:
        slow, fast = measured.speedup_range
        cells[f"{target} {SPEEDUP}"] = measured.speedup
        cells[f"{target} {SPEEDUP_SPREAD}"] = (fast - slow) / 2
    return cells


def _speedup(variant: Variant, report: VerifyReport, variants: Sequence[Variant]) -> float:
    """The report's own speed-up (measured interleaved against its reference); 1.00 for the model that
    other rows' reports on this target used as their reference; else blank."""
    if report.speedup is not None:
        return float(report.speedup)
    for other in variants:
        theirs = other.report(report.target) if other is not variant else None
        if theirs is not None and theirs.reference_sha256 == report.model_sha256:
            return 1.0
    return math.nan


def _delta(top1: float, original: float | None) -> float:
    """Top-1 minus the original's, rounded past float noise (79.1 − 80.0 is not −0.9000000000000057)."""
    return math.nan if original is None else round(top1 - original, 6)


def _pruned_text(pruned: tuple[int, ...]) -> str:
    return f"{len(pruned)}: {','.join(map(str, pruned))}" if pruned else "0"


def _millions(value: float | None) -> float:
    return math.nan if value is None else value / 1e6


def _or_nan(value: float | None) -> float:
    return math.nan if value is None else float(value)


# --- writing ----------------------------------------------------------------------------------------

def display_frame(frame: pd.DataFrame) -> pd.DataFrame:
    """Every cell as text: numbers formatted per column (:data:`_FORMATS`), blanks for missing values."""
    shown = frame.astype(object).copy()
    for column in frame.columns:
        form = _format_of(column) or str
        shown[column] = [("" if _missing(value) else form(value)) for value in frame[column]]
    return shown


def format_markdown(frame: pd.DataFrame) -> str:
    """A GitHub Markdown table, columns padded to equal width, numbers right-aligned."""
    shown = display_frame(frame)
    header = [str(c) for c in shown.columns]
    body = [[str(cell).replace("|", "\\|") for cell in row] for row in shown.itertuples(index=False)]
    widths = [max([len(h), 3, *(len(row[i]) for row in body)]) for i, h in enumerate(header)]
    right = [_format_of(c) is not None for c in shown.columns]

    def line(cells: Sequence[str]) -> str:
        padded = [c.rjust(w) if r else c.ljust(w) for c, w, r in zip(cells, widths, right)]
        return "| " + " | ".join(padded) + " |"

    rule = "| " + " | ".join("-" * (w - 1) + ":" if r else "-" * w for w, r in zip(widths, right)) + " |"
    return "\n".join([line(header), rule, *(line(row) for row in body)])


def render_table(frame: pd.DataFrame, suffix: str) -> str:
    """The table as the text of a ``.md``, ``.csv`` or ``.html`` file."""
    renderers: dict[str, Callable[[pd.DataFrame], str]] = {
        ".md": lambda f: format_markdown(f) + "\n",
        ".csv": lambda f: f.to_csv(index=False),
        ".html": lambda f: display_frame(f).to_html(index=False, border=0) + "\n",
    }
    if suffix.lower() not in renderers:
        raise ConfigError(f"cannot write a table as {suffix or 'a file without a suffix'!r}: "
                          f"use {', '.join(renderers)}")
    return renderers[suffix.lower()](frame)


def _format_of(column: str) -> Callable[[float], str] | None:
    return next((form for end, form in _FORMATS.items() if str(column).endswith(end)), None)


def _missing(value: Any) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


# --- the Pareto plot --------------------------------------------------------------------------------

def pareto_front(points: Sequence[tuple[float, float]]) -> list[int]:
    """Indices of the (latency, top-1) points that no other point dominates (at most as slow and at least
    as accurate, one of them strictly), fastest first."""
    def dominated(i: int) -> bool:
        x, y = points[i]
        return any(ox <= x and oy >= y and (ox, oy) != (x, y) for ox, oy in points)

    return sorted((i for i in range(len(points)) if not dominated(i)), key=lambda i: points[i])


def render_pareto_png(frame: pd.DataFrame) -> bytes:
    """Per target with a measured row: top-1 against measured latency and, where speed-ups were measured,
    top-1 against the speed-up (interleaved with the reference in one run: the figure that survives a
    noisy machine, where milliseconds from separate runs may not). The Pareto front is a step line with
    its points highlighted. PNG bytes, drawn with Agg (no pyplot state)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    panels = []
    for target, column in _measured_columns(frame):
        rows = frame.dropna(subset=[column, TOP1])
        if len(rows):
            panels.append((target, rows, column, "measured latency (ms)", False))
        rows = frame.dropna(subset=[f"{target} {SPEEDUP}", TOP1])
        if len(rows):
            panels.append((target, rows, f"{target} {SPEEDUP}", "speed-up vs the original (measured, ×)",
                           True))
    if not panels:
        raise ConfigError(NO_LATENCY)
    figure = Figure(figsize=(5.6 * len(panels), 4.6), layout="constrained")
    FigureCanvasAgg(figure)
    for axes, (target, rows, column, xlabel, higher_is_better) in zip(
            figure.subplots(1, len(panels), squeeze=False)[0], panels):
        xs, ys = rows[column].astype(float).tolist(), rows[TOP1].astype(float).tolist()
        spread = f"{column} ±" if column.endswith(SPEEDUP) else f"{target} {MEASURED_SPREAD}"
        xerr = rows[spread].astype(float).fillna(0.0).tolist() if spread in rows else None
        _pareto_panel(axes, xs, ys, [str(v) for v in rows["variant"]], higher_is_better, xerr=xerr)
        models = ", ".join(dict.fromkeys(rows["model"]))
        axes.set(xlabel=xlabel, ylabel="top-1 (%)", title=f"{models} on {target}")
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=120)
    return buffer.getvalue()


def _pareto_panel(axes, xs: list[float], ys: list[float], labels: list[str], higher_is_better: bool, *,
                  xerr: list[float] | None = None) -> None:
    """Scatter every point (with its spread over the measurement's rounds as an error bar, where there
    is one), the front (no point better on both axes) as a step line, labels beside."""
    cost = [-x if higher_is_better else x for x in xs]
    front = pareto_front(list(zip(cost, ys)))
    front_points = sorted(((xs[i], ys[i]) for i in front), reverse=higher_is_better)
    if xerr is not None:
        axes.errorbar(xs, ys, xerr=xerr, fmt="none", ecolor="0.4", elinewidth=1, capsize=3,
                      label="range over rounds / 2")
    axes.scatter(xs, ys, color="0.55", s=26, label="variant")
    axes.step(*zip(*front_points), where="post", color="tab:red", linewidth=1.2)
    axes.scatter(*zip(*front_points), color="tab:red", s=40, zorder=3, label="Pareto front")
    for (x, y), names in _labels_by_point(xs, ys, labels).items():
        axes.annotate(", ".join(names), (x, y), textcoords="offset points", xytext=(4, 4), fontsize=8)
    axes.margins(0.15)
    axes.legend(loc="best", fontsize=8)


def _labels_by_point(xs: list[float], ys: list[float], labels: list[str]) -> dict[tuple[float, float], list]:
    """The labels of each distinct point: variants that share one model (two budgets that chose the same
    subnet) sit on the same spot and get one label naming both, not two drawn over each other."""
    by_point: dict[tuple[float, float], list[str]] = {}
    for x, y, label in zip(xs, ys, labels):
        by_point.setdefault((x, y), []).append(label)
    return by_point


def _measured_columns(frame: pd.DataFrame) -> list[tuple[str, str]]:
    ending = f" {MEASURED}"
    return [(str(c)[: -len(ending)], str(c)) for c in frame.columns if str(c).endswith(ending)]


# --- one measurement of every variant ---------------------------------------------------------------

def measure_variants(paths: Sequence[str | Path], *, target, protocol, rounds: int = DEFAULT_ROUNDS,
                     out: str | Path | None = None, table=None, host=None, paired: bool | None = None,
                     progress=None) -> Path:
    """Time every variant's ``model.onnx`` under ``paths`` in one round-robin measurement on ``target``
    (:func:`deploykit.verify.rounds.measure_models`; ``paired`` as there), speed-ups against the first
    unpruned variant;
    write it to ``out`` (default: ``latency-TARGET.json`` in the first RUN directory). The path."""
    from deploykit.verify.rounds import FILE_PATTERN, measure_models

    variants = load_variants(paths)
    files = {v.directory.name: v.directory / "model.onnx" for v in variants
             if (v.directory / "model.onnx").is_file()}
    unpruned = [v.directory.name for v in variants if v.kind == "baseline" and v.directory.name in files]
    reference = unpruned[0] if unpruned else None
    path = Path(out) if out is not None else Path(paths[0]) / FILE_PATTERN.format(target=target.name)
    check_output_files(path)
    robin = measure_models(files, reference=reference, target=target, protocol=protocol, rounds=rounds,
                           table=table, host=host, paired=paired, progress=progress)
    return robin.write(path)


def run_measurements(paths: Sequence[str | Path], *, except_targets: Iterable[str] = ()) -> list[Path]:
    """The round-robin files (``latency-TARGET.json``) that ``deploykit run`` left in the run directories
    among ``paths``, one per target (the first found), leaving out ``except_targets`` (measured anew):
    ``deploykit table RUN`` then shows the figures the run's own table.md shows."""
    from deploykit.verify.rounds import FILE_PATTERN

    found: dict[str, Path] = {}
    skip = set(except_targets)
    for path in map(Path, paths):
        if not path.is_dir() or (path / RESULT_FILE).is_file():
            continue
        for file in sorted(path.glob(FILE_PATTERN.format(target="*"))):
            target = RoundRobin.read(file).target
            if target not in skip:
                found.setdefault(target, file)
    return list(found.values())


def table_measurements(paths: Sequence[str | Path], measured: str | Path | None = None) -> list[Path]:
    """The round-robin files a table of ``paths`` shows: ``measured`` (the one this command just took)
    first, then :func:`run_measurements` for every other target."""
    if measured is None:
        return run_measurements(paths)
    return [Path(measured), *run_measurements(paths, except_targets=[RoundRobin.read(measured).target])]


# --- the command ------------------------------------------------------------------------------------

@dataclass(frozen=True)
class TableOutput:
    """What :func:`write_speed_accuracy` produced: the Markdown table, and the files it wrote."""

    frame: pd.DataFrame
    markdown: str
    table_path: Path | None
    plot_path: Path | None


def write_speed_accuracy(paths: Sequence[str | Path], *, out: str | Path | None = None,
                         plot: str | Path | None = None,
                         measurements: Sequence[str | Path] = ()) -> TableOutput:
    """Build the table for ``paths``; write it to ``out`` (suffix: .md, .csv, .html) and the Pareto plot
    to ``plot`` (.png). Everything is rendered before anything is written, and each file is written
    atomically, so an error leaves no file behind."""
    frame = speed_accuracy_frame(paths, measurements=measurements)
    text = render_table(frame, Path(out).suffix) if out is not None else None
    if plot is not None and Path(plot).suffix.lower() != ".png":
        raise ConfigError(f"the Pareto plot is a PNG file: --plot {plot} should end in .png")
    image = render_pareto_png(frame) if plot is not None else None
    check_output_files(out, plot)  # both writable, or neither is written
    table_path = write_text_atomic(out, text) if out is not None else None
    plot_path = write_bytes_atomic(plot, image) if plot is not None else None
    return TableOutput(frame=frame, markdown=format_markdown(frame), table_path=table_path,
                       plot_path=plot_path)
