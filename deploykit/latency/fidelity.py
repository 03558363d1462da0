"""Latency-table fidelity: how well a table's predictions match end-to-end measurements, and calibration.

A table predicts a subnet's latency as Σ fixed parts + Σ per block (merged form where pruned). Runtimes
fuse across block boundaries and overlap work, so the sum can be off by a roughly affine amount, and on
some hardware it can even mis-rank subnets. :func:`check_table` (``deploykit lut check``) measures
random subnets end to end on the table's own target under the table's own protocol, compares them with
the prediction, fits ``measured ≈ a · predicted + b`` by least squares and stores ``(a, b)`` as the
table's calibration (:attr:`TableMeta.calibration`, applied by :meth:`LatencyTable.predict`).

Sampling: with S samples over n prunable blocks, sample i prunes k_i = round(i · n / (S − 1)) blocks
(stratified over the whole range, so k = 0, the unpruned model, and k = n are always in), each a
random k-subset; the samples are measured in a shuffled order so that a slow drift of the machine's
load does not line up with depth. Everything is deterministic under ``seed``. Each subnet is built with
random weights (timing does not depend on them), merged at λ = 1, exported to ONNX and timed in a fresh
process. The points file is written after every sample, so an interrupted check resumes where it stopped.

Figures (errors relative to the measurement): Spearman ρ and Kendall τ-b (both with ties), the share of
subnets within ±5 % and ±10 %, the mean absolute % error (MAPE), the signed mean error (bias) and the
largest error. "After calibration" is in-sample (fitted on the same points); the leave-one-out figures
fit on all points but one and predict that one, which is the honest estimate for new subnets. A positive
affine map does not change a ranking, so ρ and τ are the same before and after.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import tempfile
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from deploykit.errors import ConfigError, TableError
from deploykit.fileio import atomic_path, check_output_files, write_text_atomic
from deploykit.latency.protocol import Measurement
from deploykit.latency.table import LatencyTable, format_indices, meta_path, parse_indices

Progress = Callable[[str], None]
# A measurer times one subnet (the pruned block indices) end to end: a Measurement or plain milliseconds.
Measurer = Callable[[tuple[int, ...]], "Measurement | float"]

NOTE_PREFIX = "lut check:"
# Largest relative difference between the unpruned model measured by the check and the table's own
# end-to-end row (measured during the profile) for which a calibration is stored without --force-store.
DRIFT_LIMIT = 0.25
POINT_COLUMNS = ("sample", "k", "pruned", "predicted_ms", "calibrated_ms", "measured_ms", "p90_ms", "cv", "n",
                 "error_pct", "calibrated_error_pct", "load_1min", "seed", "measured_on")


# --- the prediction API ----------------------------------------------------------------------------

def predict_subnet(table: LatencyTable, subnet: Any) -> float:
    """The table's (calibrated, where it has a calibration) latency for ``subnet``: a
    :class:`deploykit.subnet.Subnet` or an iterable of pruned block indices. A Subnet must be of the
    table's model and input size. This only forwards to :meth:`LatencyTable.predict`."""
    from deploykit.subnet import Subnet

    if isinstance(subnet, Subnet):
        meta = table.meta
        if subnet.model != meta.model or tuple(subnet.input_size) != tuple(meta.input_size):
            raise TableError(f"the subnet is {subnet.model} at {_size(subnet.input_size)} but the table is "
                             f"for {meta.model} at {_size(meta.input_size)}")
        return table.predict(subnet.pruned)
    return table.predict(tuple(subnet))


# --- statistics ------------------------------------------------------------------------------------

def rankdata(values: Sequence[float]) -> np.ndarray:
    """1-based ranks; tied values share the average of their ranks."""
    v = np.asarray(values, dtype=float)
    order = np.argsort(v, kind="mergesort")
    ordered = v[order]
    ranks = np.empty(len(v))
    start = 0
    while start < len(v):
        stop = start
        while stop + 1 < len(v) and ordered[stop + 1] == ordered[start]:
            stop += 1
        ranks[order[start:stop + 1]] = (start + stop) / 2 + 1
        start = stop + 1
    return ranks


def spearman(x: Sequence[float], y: Sequence[float]) -> float:
    """Spearman's ρ: the Pearson correlation of the average ranks (nan when either side is constant)."""
    return _pearson(rankdata(x), rankdata(y))


def kendall(x: Sequence[float], y: Sequence[float]) -> float:
    """Kendall's τ-b, which accounts for ties on either side (nan when either side is constant)."""
    x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    i, j = np.triu_indices(len(x), 1)
    dx, dy = np.sign(x[i] - x[j]), np.sign(y[i] - y[j])
    pairs = len(i)
    denominator = math.sqrt(float(pairs - np.sum(dx == 0)) * float(pairs - np.sum(dy == 0)))
    return float(np.sum(dx * dy) / denominator) if denominator > 0 else math.nan


def _pearson(x: np.ndarray, y: np.ndarray) -> float:
    x, y = x - x.mean(), y - y.mean()
    denominator = math.sqrt(float(np.dot(x, x)) * float(np.dot(y, y)))
    return float(np.dot(x, y) / denominator) if denominator > 0 else math.nan


@dataclass(frozen=True)
class Figures:
    """How predictions compare with measurements. Shares in [0, 1]; errors in % of the measurement."""

    n: int
    spearman: float
    kendall: float
    within_5: float
    within_10: float
    mape: float
    bias: float
    max_error: float

    @classmethod
    def compare(cls, predicted: Sequence[float], measured: Sequence[float]) -> Figures:
        p, m = np.asarray(predicted, dtype=float), np.asarray(measured, dtype=float)
        if len(p) != len(m) or len(p) == 0:
            raise TableError("fidelity figures need as many predictions as measurements, and at least one")
        if (m <= 0).any():
            raise TableError("a measured latency is not positive; the measurement is broken")
        error = (p - m) / m * 100.0
        return cls(n=len(p), spearman=spearman(p, m), kendall=kendall(p, m),
                   within_5=float(np.mean(np.abs(error) <= 5.0)),
                   within_10=float(np.mean(np.abs(error) <= 10.0)),
                   mape=float(np.mean(np.abs(error))), bias=float(np.mean(error)),
                   max_error=float(np.max(np.abs(error))))

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def fit_calibration(predicted: Sequence[float], measured: Sequence[float]) -> tuple[float, float]:
    """Least squares ``measured ≈ a · predicted + b``; needs two different predictions at least."""
    x, y = np.asarray(predicted, dtype=float), np.asarray(measured, dtype=float)
    if len(x) < 2 or np.ptp(x) == 0:
        raise TableError(f"a calibration needs at least two subnets with different predicted latencies "
                         f"(have {len(set(x.tolist()))}); use more --samples")
    design = np.stack([x, np.ones_like(x)], axis=1)
    (a, b), *_ = np.linalg.lstsq(design, y, rcond=None)
    return float(a), float(b)


def leave_one_out(predicted: Sequence[float], measured: Sequence[float]) -> np.ndarray | None:
    """Each point predicted by the calibration fitted on all the others; None with too few points."""
    x, y = np.asarray(predicted, dtype=float), np.asarray(measured, dtype=float)
    if len(x) < 3:
        return None
    out = np.empty(len(x))
    for i in range(len(x)):
        keep = np.arange(len(x)) != i
        if np.ptp(x[keep]) == 0:
            return None
        a, b = fit_calibration(x[keep], y[keep])
        out[i] = a * x[i] + b
    return out


# --- sampling --------------------------------------------------------------------------------------

def plan_subnets(prunable: Sequence[int], samples: int, seed: int) -> list[tuple[int, ...]]:
    """``samples`` distinct subnets (pruned index tuples), stratified over k = 0..n, in measuring order.

    The unpruned model is always in. Where a stratum has no unused subset left (k = 0 or k = n twice),
    the nearest k that has one is taken. Fewer than ``samples`` come back only when the whole space
    (2^n subnets) is smaller.
    """
    if isinstance(samples, bool) or not isinstance(samples, int) or samples < 1:
        raise ConfigError(f"--samples must be a positive integer, got {samples!r}")
    blocks = tuple(sorted(prunable))
    n = len(blocks)
    rng = np.random.default_rng(seed)
    total = 2 ** n if n < 63 else samples
    count = min(samples, total)
    taken: set[tuple[int, ...]] = set()
    plan: list[tuple[int, ...]] = []
    for i in range(count):
        k = 0 if i == 0 else round(i * n / (count - 1))
        for shift in sorted(range(-n, n + 1), key=abs):
            subset = _draw(blocks, k + shift, taken, rng) if 0 <= k + shift <= n else None
            if subset is not None:
                break
        if subset is None:  # cannot happen while len(taken) < 2^n; kept as a guard
            break
        taken.add(subset)
        plan.append(subset)
    first, rest = plan[:1], plan[1:]
    order = rng.permutation(len(rest))
    return first + [rest[i] for i in order]


def _draw(blocks: tuple[int, ...], k: int, taken: set, rng: np.random.Generator) -> tuple[int, ...] | None:
    """A random unused k-subset of ``blocks``, or None when every k-subset is used."""
    if math.comb(len(blocks), k) <= sum(1 for s in taken if len(s) == k):
        return None
    while True:
        subset = tuple(sorted(int(b) for b in rng.choice(blocks, size=k, replace=False))) if k else ()
        if subset not in taken:
            return subset


# --- the check -------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Point:
    """One subnet measured end to end; ``predicted_ms`` is the table's plain sum (no calibration)."""

    sample: int
    pruned: tuple[int, ...]
    predicted_ms: float
    measured_ms: float
    p90_ms: float = math.nan
    cv: float = math.nan
    n: int = 0
    load: float = math.nan       # the machine's 1-minute load average when it was measured


@dataclass
class CheckResult:
    """What :func:`check_table` measured, the figures, the calibration, and the files it wrote."""

    table: LatencyTable                      # with the new calibration (as stored, if it was)
    points: list[Point]
    before: Figures                          # the table's plain sums
    after: Figures                           # with the fitted calibration (in-sample)
    cross_validated: Figures | None          # leave-one-out calibration
    previous: Figures | None                 # with the calibration the table had before, if any
    calibration: tuple[float, float]
    stored: bool
    csv_path: Path
    png_path: Path | None
    measured_now: int
    reused: int
    elapsed_s: float
    seed: int
    model_row_ms: float | None               # the table's end-to-end row for the unpruned model
    notes: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        meta = self.table.meta
        unpruned = next((p for p in self.points if not p.pruned), None)
        return {
            "table": str(self.table.path), "table_date": meta.date, "model": meta.model,
            "target": meta.target,
            "device": meta.device_string, "runtime": meta.runtime, "runtime_version": meta.runtime_version,
            "batch": meta.batch, "input_size": list(meta.input_size), "samples": len(self.points),
            "seed": self.seed, "k_range": [min(len(p.pruned) for p in self.points),
                                           max(len(p.pruned) for p in self.points)],
            "before": self.before.as_dict(), "after": self.after.as_dict(),
            "leave_one_out": self.cross_validated.as_dict() if self.cross_validated else None,
            "previous_calibration": self.previous.as_dict() if self.previous else None,
            "calibration": list(self.calibration), "stored": self.stored,
            "unpruned_measured_ms": unpruned.measured_ms if unpruned else None,
            "unpruned_predicted_ms": unpruned.predicted_ms if unpruned else None,
            "model_row_ms": self.model_row_ms, "drift": _drift(self.points, self.model_row_ms),
            "measured_now": self.measured_now, "reused": self.reused,
            "elapsed_s": self.elapsed_s, "csv": str(self.csv_path),
            "png": str(self.png_path) if self.png_path else None, "notes": list(self.notes),
        }

    def summary(self) -> str:
        meta = self.table.meta
        ks = [len(p.pruned) for p in self.points]
        a, b = self.calibration
        lines = [f"lut check {self.table.path}: {meta.model} on {meta.target} ({meta.device_string}, "
                 f"{meta.runtime} {meta.runtime_version}), {len(self.points)} subnets with "
                 f"k = {min(ks)}..{max(ks)} of {len(self.table.prunable_indices)} prunable blocks pruned "
                 f"({self.measured_now} measured now, {self.reused} reused), {self.elapsed_s:.0f} s",
                 f"{'':22}{'ρ':>7}{'τ':>7}{'±5%':>8}{'±10%':>8}{'MAPE':>8}{'bias':>8}{'max':>8}"]
        rows = [("table sum", self.before)]
        if self.previous is not None:
            rows.append(("previous calibration", self.previous))
        rows.append(("calibrated (fit)", self.after))
        if self.cross_validated is not None:
            rows.append(("leave-one-out", self.cross_validated))
        lines += [_figure_row(label, figures) for label, figures in rows]
        where = f"stored in {meta_path(self.table.path)}" if self.stored else "not stored"
        lines.append(f"calibration: measured ≈ {a:.4f} · predicted {'+' if b >= 0 else '−'} {abs(b):.3f} ms "
                     f"({where})")
        unpruned = next((p for p in self.points if not p.pruned), None)
        if unpruned is not None:
            row = f"; the table's end-to-end row {self.model_row_ms:.3f} ms" if self.model_row_ms else ""
            lines.append(f"unpruned model: measured now {unpruned.measured_ms:.3f} ms, table sum "
                         f"{unpruned.predicted_ms:.3f} ms{row}")
        lines += [f"note: {note}" for note in self.notes]
        wrote = str(self.csv_path) + (f" and {self.png_path}" if self.png_path else "")
        lines.append(f"wrote {wrote}")
        return "\n".join(lines)


def check_table(table: LatencyTable | str | Path, *, samples: int = 40, seed: int = 0,
                measure: Measurer | None = None, out_dir: str | Path | None = None,
                allow_mismatch: bool = False, fresh: bool = False, store: bool = True, plot: bool = True,
                force_store: bool = False, model: Any = None,
                progress: Progress | None = None) -> CheckResult:
    """Measure ``samples`` random subnets end to end, compare with the table, fit and store a calibration.

    ``measure`` times one subnet (its pruned indices); by default each subnet is built from the table's
    model with random weights, merged, exported and timed on the table's target under the table's
    protocol in a fresh process — which needs the table's target here (same device string and runtime
    version unless ``allow_mismatch``). ``out_dir`` is where the points CSV and the plot go (default:
    beside the table). Points already in that CSV for the same plan and table are reused unless
    ``fresh``. With ``store`` the calibration is written into the table's metadata (atomically) —
    unless the unpruned model, measured now, differs from the table's own end-to-end row by more than
    :data:`DRIFT_LIMIT` (the machine is not in the state it was profiled in: load, clock, another
    runtime build; the fit would encode that), which ``force_store`` overrides. ``model`` replaces
    the timm model the table names (for tests and custom models).
    """
    started = time.perf_counter()
    say = progress or (lambda line: None)
    if not isinstance(table, LatencyTable):
        table = LatencyTable.read(table)
    _require_checkable(table)
    if isinstance(samples, bool) or not isinstance(samples, int) or samples < 2:
        raise ConfigError(f"--samples must be an integer ≥ 2 (a calibration fits two parameters), "
                          f"got {samples!r}")
    raw = table.with_meta(calibration=None)
    plan = plan_subnets(table.prunable_indices, samples, seed)
    if len(plan) < samples:
        say(f"the table's model has only {len(plan)} distinct subnets; checking all of them")
    folder = Path(out_dir) if out_dir is not None else table.path.parent
    csv_path = folder / f"fidelity_{table.meta.target}_{table.path.stem}.csv"
    png_path = csv_path.with_suffix(".png") if plot else None
    check_output_files(csv_path, png_path)  # before measuring anything, not after the first subnet
    with contextlib.ExitStack() as stack:
        if measure is None:
            work = stack.enter_context(tempfile.TemporaryDirectory(prefix="deploykit-lut-check-"))
            measure, measured_on = _default_measurer(table, Path(work), allow_mismatch, model, say)
        else:
            measured_on = "injected measurer"
        known = {} if fresh else _reusable(csv_path, seed, measured_on, say)
        points, reused = _measure_plan(plan, raw, measure, known, csv_path, seed, measured_on, say)
    predicted = np.array([p.predicted_ms for p in points])
    measured = np.array([p.measured_ms for p in points])
    a, b = fit_calibration(predicted, measured)
    loo = leave_one_out(predicted, measured)
    previous = None
    if table.meta.calibration is not None:
        pa, pb = table.meta.calibration
        previous = Figures.compare(pa * predicted + pb, measured)
    before, after = Figures.compare(predicted, measured), Figures.compare(a * predicted + b, measured)
    notes: list[str] = []
    if after.n < 10:
        notes.append(f"only {after.n} subnets: the figures and the calibration are rough; "
                     "use --samples 20 or more")
    loads = [p.load for p in points if not math.isnan(p.load)]
    if loads and max(loads) > (os.cpu_count() or 1) * 0.75:
        notes.append(f"the machine was busy during the check (1-minute load {min(loads):.1f}.."
                     f"{max(loads):.1f} on {os.cpu_count()} CPUs): timings are noisy; see load_1min in "
                     "the points file")
    drift = _drift(points, table.model_latency())
    stored, result_table = False, table.with_meta(calibration=(a, b))
    if a <= 0:
        notes.append(f"the fitted slope a = {a:.4g} is not positive (the table ranks these subnets "
                     "backwards); the calibration is not stored")
    elif store and drift is not None and abs(drift) > DRIFT_LIMIT and not force_store:
        notes.append(f"the unpruned model measures {drift:+.0%} against the table's own end-to-end row: "
                     "this machine is not in the state the table was profiled in (load? clock?), so the fit "
                     "would encode that; the calibration is not stored (rerun on a quiet machine, or "
                     "--force-store)")
    elif store:
        result_table = _store(table, (a, b), before, after, len(points), seed)
        stored = True
    _write_points(csv_path, points, seed, measured_on, calibration=(a, b))
    if png_path is not None:
        _plot(png_path, points, (a, b), before, after, table)
    return CheckResult(table=result_table, points=points, before=before, after=after,
                       cross_validated=Figures.compare(loo, measured) if loo is not None else None,
                       previous=previous, calibration=(a, b), stored=stored, csv_path=csv_path,
                       png_path=png_path, measured_now=len(points) - reused, reused=reused,
                       elapsed_s=time.perf_counter() - started, seed=seed,
                       model_row_ms=table.model_latency(), notes=notes)


def _drift(points: list[Point], model_row_ms: float | None) -> float | None:
    """Unpruned model measured now / the table's end-to-end row − 1 (None without either)."""
    unpruned = next((p for p in points if not p.pruned), None)
    if unpruned is None or not model_row_ms:
        return None
    return unpruned.measured_ms / model_row_ms - 1


def _require_checkable(table: LatencyTable) -> None:
    where = table.path or "the table"
    if table.meta.mode == "estimated":
        raise TableError(f"{where} is an estimated (roofline) table: its fidelity can only be checked by "
                         f"measuring on the hardware it stands for ({table.meta.device}); profile a measured "
                         f"table there (deploykit profile --target {table.meta.target}) and check that")
    if not table.meta.complete:
        raise TableError(f"{where} is incomplete (its profile was interrupted); rerun the same "
                         "`deploykit profile` command to finish it first")
    if not table.prunable_indices:
        raise TableError(f"{where} has no merged-form rows: there is nothing to prune and nothing to check")
    if table.path is None:
        raise TableError("the table to check has no path (read it from a file or write it first)")


def _default_measurer(table: LatencyTable, work: Path, allow_mismatch: bool, model: Any,
                      say: Progress) -> tuple[Measurer, str]:
    """Refuse a table from another machine, then build the subnet measurer on the table's target."""
    from deploykit.latency.measure import measure_onnx, runtime_info
    from deploykit.latency.protocol import Protocol
    from deploykit.targets import availability, load_target

    meta = table.meta
    target = load_target(meta.target)
    changed = [f"{name} {theirs!r} (the target file now says {ours!r})"
               for name, theirs, ours in (("runtime", meta.runtime, target.runtime),
                                          ("provider", meta.provider, target.provider),
                                          ("precision", meta.precision, target.precision))
               if theirs != ours]
    if changed:
        raise TableError(f"{table.path} was measured with {'; '.join(changed)}; profile it again")
    ok, reason = availability(target)
    if not ok:
        raise TableError(f"cannot check {table.path} here: target {target.name} is not available ({reason})")
    info = runtime_info(target)
    differences = table.check_matches(device=info["device"], runtime_version=info["runtime_version"],
                                      allow_mismatch=allow_mismatch)
    if differences:
        say("warning: checking on another machine than the table's (--allow-mismatch): "
            + "; ".join(differences))
    try:
        protocol = Protocol.from_dict(meta.protocol)
    except ConfigError as error:
        raise TableError(f"{meta_path(table.path)}: bad protocol: {error}") from None
    say(f"building {meta.model} at {_size(meta.input_size)} (random weights: timing does not depend on them)")
    measurer = SubnetMeasurer(meta.model, input_size=meta.input_size, batch=meta.batch, work=work,
                              model=model, time_onnx=lambda path, shape: measure_onnx(
                                  path, target=target, protocol=protocol, input_shape=shape))
    if tuple(measurer.prunable_indices) != tuple(table.prunable_indices):
        raise TableError(f"{table.path} prunes blocks {list(table.prunable_indices)} but {meta.model} "
                         f"here has prunable blocks {list(measurer.prunable_indices)}: the table is from "
                         "another model definition; profile it again")
    return measurer, f"{info['device']} / {info['runtime']} {info['runtime_version']}"


class SubnetMeasurer:
    """Times a subnet end to end: prune, λ = 1, merge, export to ONNX, time (``time_onnx``)."""

    def __init__(self, model_name: str, *, input_size: tuple[int, int], batch: int, work: Path,
                 time_onnx: Callable[[Path, tuple[int, ...]], Measurement], model: Any = None):
        from deploykit.models import create_model
        from deploykit.prune import prunable

        module = model if model is not None else create_model(model_name, input_size=tuple(input_size))
        self.net = prunable(module.eval(), input_size=tuple(input_size)).eval()
        self.shape = (batch, 3, *input_size)
        self.work, self.time_onnx = work, time_onnx

    @property
    def prunable_indices(self) -> tuple[int, ...]:
        return self.net.prunable_indices

    def __call__(self, pruned: tuple[int, ...]) -> Measurement:
        from deploykit.export import export_onnx

        self.net.prune(pruned)
        if pruned:
            self.net.set_progress(1.0)
        merged = self.net.eval().merge()
        path = export_onnx(merged, self.shape, self.work / "subnet.onnx")
        try:
            return self.time_onnx(path, self.shape)
        finally:
            path.unlink(missing_ok=True)


def _measure_plan(plan: list[tuple[int, ...]], raw: LatencyTable, measure: Measurer, known: dict,
                  csv_path: Path, seed: int, measured_on: str, say: Progress) -> tuple[list[Point], int]:
    points: list[Point] = []
    reused = 0
    width = len(str(len(plan)))
    for number, pruned in enumerate(plan):
        predicted = raw.predict(pruned)
        head = f"[{number + 1:>{width}}/{len(plan)}] k={len(pruned):<2} pruned {_blocks(pruned)}:"
        old = known.get((number, pruned))
        if old is not None and math.isclose(old.predicted_ms, predicted, rel_tol=1e-6, abs_tol=1e-9):
            points.append(old)
            reused += 1
            say(f"{head} {old.measured_ms:.3f} ms (reused from {csv_path.name})")
            continue
        began = time.perf_counter()
        point = _point(number, pruned, predicted, measure(pruned))
        points.append(point)
        _write_points(csv_path, points, seed, measured_on, calibration=None)
        error = (predicted - point.measured_ms) / point.measured_ms * 100
        spread = f" (cv {point.cv * 100:.0f}%)" if not math.isnan(point.cv) else ""
        say(f"{head} measured {point.measured_ms:.3f} ms{spread}, table {predicted:.3f} ms ({error:+.1f}%) "
            f"[{time.perf_counter() - began:.1f} s]")
    return points, reused


def _point(number: int, pruned: tuple[int, ...], predicted: float, measured: Any) -> Point:
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else math.nan
    if isinstance(measured, Measurement):
        return Point(number, pruned, predicted, measured.median_ms, measured.p90_ms, measured.cv, measured.n,
                     load)
    if isinstance(measured, bool) or not isinstance(measured, (int, float)) or not measured > 0:
        raise TableError(f"the measurer returned {measured!r} for subnet {list(pruned)}; "
                         "expected milliseconds > 0")
    return Point(number, pruned, predicted, float(measured), load=load)


def _reusable(csv_path: Path, seed: int, measured_on: str, say: Progress) -> dict:
    """Points of an earlier (possibly interrupted) check with the same seed on the same machine."""
    if not csv_path.is_file():
        return {}
    try:
        rows = pd.read_csv(csv_path, keep_default_na=False, dtype={"pruned": str, "measured_on": str})
        found = {}
        for row in rows.itertuples(index=False):
            if int(row.seed) != seed or row.measured_on != measured_on:
                continue
            pruned = parse_indices(row.pruned)
            found[(int(row.sample), pruned)] = Point(int(row.sample), pruned, float(row.predicted_ms),
                                                     float(row.measured_ms), float(row.p90_ms or "nan"),
                                                     float(row.cv or "nan"), int(row.n),
                                                     float(getattr(row, "load_1min", "") or "nan"))
    except (ValueError, TypeError, AttributeError, TableError, pd.errors.ParserError,
            pd.errors.EmptyDataError):
        say(f"ignoring {csv_path}: not a points file of this check")
        return {}
    if found:
        say(f"resuming from {csv_path}: up to {len(found)} points can be reused (--fresh measures all again)")
    return found


def _write_points(path: Path, points: list[Point], seed: int, measured_on: str,
                  calibration: tuple[float, float] | None) -> None:
    rows = []
    for p in points:
        calibrated = calibration[0] * p.predicted_ms + calibration[1] if calibration else math.nan
        rows.append({"sample": p.sample, "k": len(p.pruned), "pruned": format_indices(p.pruned),
                     "predicted_ms": p.predicted_ms, "calibrated_ms": calibrated,
                     "measured_ms": p.measured_ms,
                     "p90_ms": p.p90_ms, "cv": p.cv, "n": p.n,
                     "error_pct": (p.predicted_ms - p.measured_ms) / p.measured_ms * 100,
                     "calibrated_error_pct": (calibrated - p.measured_ms) / p.measured_ms * 100,
                     "load_1min": p.load, "seed": seed, "measured_on": measured_on})
    frame = pd.DataFrame(rows, columns=list(POINT_COLUMNS))
    write_text_atomic(path, frame.to_csv(index=False, float_format="%.6f"))


def _store(table: LatencyTable, calibration: tuple[float, float], before: Figures, after: Figures,
           samples: int, seed: int) -> LatencyTable:
    """Write the calibration into the table's metadata, refusing if the rows changed meanwhile."""
    current = LatencyTable.read(table.path)
    if not current.rows.equals(table.rows):
        raise TableError(f"{table.path} changed on disk during the check (a profile resumed?); "
                         "check it again")
    a, b = calibration
    note = (f"{NOTE_PREFIX} {time.strftime('%Y-%m-%dT%H:%M:%S%z')}, {samples} subnets (seed {seed}): "
            f"measured ≈ {a:.4f}·Σ {'+' if b >= 0 else '−'} {abs(b):.3f} ms; MAPE {before.mape:.1f}% → "
            f"{after.mape:.1f}%, ±10% {before.within_10:.0%} → {after.within_10:.0%}, "
            f"ρ {before.spearman:.3f}, τ {before.kendall:.3f}")
    notes = (*(n for n in current.meta.notes if not n.startswith(NOTE_PREFIX)), note)
    calibrated = current.with_meta(calibration=calibration, notes=notes)
    calibrated.write(table.path)
    return calibrated


def _plot(path: Path, points: list[Point], calibration: tuple[float, float], before: Figures,
          after: Figures, table: LatencyTable) -> None:
    """Predicted vs measured (plain sum and calibrated), y = x and a ±10 % band; Agg, no pyplot state."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    a, b = calibration
    raw = np.array([p.predicted_ms for p in points])
    measured = np.array([p.measured_ms for p in points])
    ks = np.array([len(p.pruned) for p in points])
    figure = Figure(figsize=(7.0, 5.6), layout="constrained")
    FigureCanvasAgg(figure)
    axes = figure.add_subplot()
    low = min(raw.min(), measured.min(), (a * raw + b).min()) * 0.95
    high = max(raw.max(), measured.max(), (a * raw + b).max()) * 1.05
    line = np.array([low, high])
    axes.fill_between(line, line * 0.9, line * 1.1, color="0.9", label="±10 %")
    axes.plot(line, line, color="0.3", linewidth=0.8, label="measured = predicted")
    dots = axes.scatter(raw, measured, c=ks, cmap="viridis", s=28, label="table sum")
    axes.scatter(a * raw + b, measured, c=ks, cmap="viridis", marker="x", s=28, label="calibrated")
    figure.colorbar(dots, ax=axes, label="pruned blocks k")
    axes.set(xlim=(low, high), ylim=(low, high), xlabel="predicted latency (ms)",
             ylabel="measured latency (ms)")
    meta = table.meta
    axes.set_title(f"{meta.model} {_size(meta.input_size)} b{meta.batch} on {meta.target} "
                   f"({meta.device_string})", fontsize=9)
    text = (f"n = {before.n}   ρ = {before.spearman:.3f}   τ = {before.kendall:.3f}\n"
            f"sum: MAPE {before.mape:.1f}%  ±5% {before.within_5:.0%}  ±10% {before.within_10:.0%}\n"
            f"calibrated ({a:.3f}·Σ {'+' if b >= 0 else '−'} {abs(b):.2f}): MAPE {after.mape:.1f}%  "
            f"±5% {after.within_5:.0%}  ±10% {after.within_10:.0%}")
    axes.text(0.02, 0.98, text, transform=axes.transAxes, va="top", fontsize=8, family="monospace")
    axes.legend(loc="lower right", fontsize=8)
    with atomic_path(path) as tmp:
        figure.savefig(tmp, dpi=120, format="png")


def _figure_row(label: str, f: Figures) -> str:
    return (f"{label:<22}{f.spearman:>7.3f}{f.kendall:>7.3f}{f.within_5:>8.0%}{f.within_10:>8.0%}"
            f"{f.mape:>7.1f}%{f.bias:>+7.1f}%{f.max_error:>7.1f}%")


def _size(size: Iterable[int]) -> str:
    h, w = tuple(size)
    return f"{h}x{w}"


def _blocks(indices: tuple[int, ...]) -> str:
    if not indices:
        return "none"
    spans, start = [], indices[0]
    for i, index in enumerate(indices):
        if i + 1 == len(indices) or indices[i + 1] != index + 1:
            spans.append(str(start) if start == index else f"{start}-{index}")
            if i + 1 < len(indices):
                start = indices[i + 1]
    return ",".join(spans)


def write_json(result: CheckResult) -> str:
    """The result as one JSON document (what ``--format json`` prints)."""
    return json.dumps(result.as_dict(), indent=2)
