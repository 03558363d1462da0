"""``deploykit lut check``: how well a table's prediction matches end-to-end measurements, and calibration.

A table predicts a subnet's latency with its fitted predictor (see :mod:`deploykit.latency.predictor`)
or, without one, as Σ fixed parts + Σ per block (merged form where pruned). :func:`check_table`
measures random subnets end to end on the table's own target under the table's own protocol, compares
them with the prediction that ``search`` uses, fits ``measured ≈ a · predicted + b`` by least squares
and stores ``(a, b)`` as the table's calibration (:attr:`TableMeta.calibration`, applied by
:meth:`LatencyTable.predict` after the predictor or sum).

Sampling (:func:`deploykit.latency.sampling.plan_subnets`): the unpruned and the all-merged model, and
subnets spread evenly over the isolated sum's prediction between them (as a profile's held-out
subnets), measured in a shuffled order so that a slow drift of the machine's load does not line up
with depth. Each subnet is built with random weights, merged at λ = 1, exported and
timed in a fresh process (:class:`deploykit.latency.subnets.SubnetMeasurer`). The points file is
written after every sample, so an interrupted check resumes where it stopped.

Figures (:mod:`deploykit.latency.stats`; errors relative to the measurement): Spearman ρ, Kendall τ-b,
the share within ±5 % and ±10 %, MAPE, bias and the largest error. "After calibration" is in-sample;
the leave-one-out figures fit on all points but one and predict that one, the honest estimate for new
subnets. A positive affine map does not change a ranking, so ρ and τ are the same before and after.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from deploykit.checks import require_int
from deploykit.errors import TableError
from deploykit.fileio import check_output_files
from deploykit.latency.options import CHECK_SAMPLES, CHECK_SEED, DRIFT_LIMIT
from deploykit.latency.parallel_export import export_batches
from deploykit.latency.plot import plot_fidelity
from deploykit.latency.sampling import plan_subnets
from deploykit.latency.stats import Figures, fit_calibration, leave_one_out
from deploykit.latency.subnets import (
    Measurer,
    SubnetMeasurer,
    SubnetTiming,
    load_now,
    read_points,
    write_points,
)
from deploykit.latency.table import LatencyTable, meta_path
from deploykit.measure.host import MeasureHost, host_or_local
from deploykit.paired import PairedMeasurement, anchored_ms
from deploykit.progress import Progress, silent
from deploykit.shapes import format_shape
from deploykit.subnet import format_block_ranges, format_indices, parse_indices

NOTE_PREFIX = "lut check:"
POINT_COLUMNS = ("sample", "k", "pruned", "predicted_ms", "calibrated_ms", "measured_ms", "p90_ms", "cv", "n",
                 "error_pct", "calibrated_error_pct", "load_1min", "seed", "measured_on",
                 "ratio", "reference_ms")


@dataclass(frozen=True)
class Point:
    """One subnet measured end to end; ``predicted_ms`` is the table's predictor or plain sum, without
    the calibration."""

    sample: int
    pruned: tuple[int, ...]
    predicted_ms: float
    measured_ms: float
    p90_ms: float = math.nan
    cv: float = math.nan
    n: int = 0
    load: float = math.nan       # the machine's 1-minute load average when it was measured
    ratio: float = math.nan      # paired: the subnet / the unpruned model, timed in one process
    reference_ms: float = math.nan  # paired: the unpruned model's median in that process


@dataclass
class CheckResult:
    """What :func:`check_table` measured, the figures, the calibration, and the files it wrote."""

    table: LatencyTable                      # with the new calibration (as stored, if it was)
    points: list[Point]
    before: Figures                          # the prediction search uses (predictor or sum, calibrated)
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
    prediction: str = "table sum"            # what "before" is: the prediction that search uses
    anchor_ms: float | None = None           # paired: the unpruned model's median over the processes

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
            "prediction": self.prediction, "paired": self.anchor_ms is not None, "anchor_ms": self.anchor_ms,
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
        rows = [(self.prediction, self.before)]  # with a calibration, that already is the previous one
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
            kind = self.prediction.split(",")[0]
            lines.append(f"unpruned model: measured now {unpruned.measured_ms:.3f} ms, {kind} "
                         f"{unpruned.predicted_ms:.3f} ms{row}")
        if self.anchor_ms is not None:
            lines.append(f"paired: each subnet timed as a ratio to the unpruned model in one process; "
                         f"ms = ratio × {self.anchor_ms:.3f} ms, the unpruned model's median over "
                         f"{len(self.points)} processes")
        lines += [f"note: {note}" for note in self.notes]
        wrote = str(self.csv_path) + (f" and {self.png_path}" if self.png_path else "")
        lines.append(f"wrote {wrote}")
        return "\n".join(lines)


def check_table(table: LatencyTable | str | Path, *, samples: int = CHECK_SAMPLES, seed: int = CHECK_SEED,
                measure: Measurer | None = None, out_dir: str | Path | None = None,
                allow_mismatch: bool = False, fresh: bool = False, store: bool = True, plot: bool = True,
                force_store: bool = False, model: Any = None, host: MeasureHost | None = None,
                progress: Progress | None = None, paired: bool | None = None) -> CheckResult:
    """Measure ``samples`` random subnets end to end, compare with the table, fit and store a calibration.

    ``measure`` times one subnet (its pruned indices); by default each subnet is built from the table's
    model with random weights, merged, exported and timed on the table's target under the table's protocol
    in a fresh process — which needs the table's target here, on the machine that measured the table (its
    fingerprint), or on one it was re-anchored for (``lut anchor``; its rescaled predictions are checked
    and no calibration is stored), unless ``allow_mismatch``. ``out_dir`` is where the points CSV and the
    plot go (default: beside the table). Points already in that CSV for the same plan and table are reused
    unless ``fresh``. With ``store`` the calibration is written into the table's metadata (atomically) —
    unless the unpruned model, measured now, differs from the table's own end-to-end row by more than
    :data:`DRIFT_LIMIT` (the machine is not in the state it was profiled in: load, clock, another runtime
    build; the fit would encode that), which ``force_store`` overrides. ``model`` replaces the timm model
    the table names (for tests and custom models). ``host`` is where the subnets are measured (default:
    this machine; a device agent with ``--device URL``: then "this machine" above is the device).
    With ``paired`` each subnet is timed as a ratio to the unpruned model in the same process
    (:mod:`deploykit.paired`) and its milliseconds are that ratio × the unpruned model's median over all
    the check's processes; None: as :func:`deploykit.latency.options.pairs_by_default` says for the
    table's target and run settings.
    """
    started = time.perf_counter()
    say = progress or silent
    host = host_or_local(host)
    cpus = os.cpu_count()
    if not isinstance(table, LatencyTable):
        table = LatencyTable.read(table)
    _require_checkable(table)
    require_int("--samples", samples, least=2, rule="an integer ≥ 2 (a calibration fits two parameters)")
    raw = table.with_meta(calibration=None)
    anchored_note = None
    plan = plan_subnets(table.prunable_indices, samples, seed, spread_by=table.isolated_sum)
    if len(plan) < samples:
        say(f"the table's model has only {len(plan)} distinct subnets; checking all of them")
    folder = Path(out_dir) if out_dir is not None else table.path.parent
    csv_path = folder / f"fidelity_{table.meta.target}_{table.path.stem}.csv"
    png_path = csv_path.with_suffix(".png") if plot else None
    check_output_files(csv_path, png_path)  # before measuring anything, not after the first subnet
    with contextlib.ExitStack() as stack:
        if measure is None:
            work = stack.enter_context(tempfile.TemporaryDirectory(prefix="deploykit-lut-check-"))
            measure, measured_on, rescale, cpus = _default_measurer(table, Path(work), allow_mismatch, model,
                                                                    host, say, paired=paired)
            if rescale is not None:  # re-anchored here: compare with what this machine is predicted to do
                raw = raw.with_rescale(rescale)
                store = False
                anchored_note = ("the table is re-anchored for this machine: these figures are for its "
                                 "rescaled predictions; a calibration is stored only on the machine that "
                                 "measured the table")
        else:
            measured_on = "injected measurer"
        known = {} if fresh else _reusable(csv_path, seed, measured_on, say)
        points, reused = _measure_plan(plan, raw, measure, known, csv_path, seed, measured_on, say,
                                       load=host.load_1min)
    points, anchor_ms = _anchored(points)
    predicted = np.array([p.predicted_ms for p in points])
    measured = np.array([p.measured_ms for p in points])
    a, b = fit_calibration(predicted, measured)
    loo = leave_one_out(predicted, measured)
    previous = None
    if table.meta.calibration is not None:
        pa, pb = table.meta.calibration
        previous = Figures.compare(pa * predicted + pb, measured)
    # "before": the prediction search uses (predictor or sum, then the calibration the table has, then
    # this machine's rescaling where the table was re-anchored here)
    used_table = table if raw.rescale is None else table.with_rescale(raw.rescale)
    used = np.array([used_table.predict(p.pruned) for p in points])
    before, after = Figures.compare(used, measured), Figures.compare(a * predicted + b, measured)
    notes: list[str] = [anchored_note] if anchored_note else []
    if after.n < 10:
        notes.append(f"only {after.n} subnets: the figures and the calibration are rough; "
                     "use --samples 20 or more")
    loads = [p.load for p in points if not math.isnan(p.load)]
    if loads and max(loads) > (cpus or 1) * 0.75:
        notes.append(f"the machine was busy during the check (1-minute load {min(loads):.1f}.."
                     f"{max(loads):.1f} on {cpus} CPUs): timings are noisy; see load_1min in "
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
    label = prediction_label(table)
    if png_path is not None:
        meta = table.meta
        plot_fidelity(png_path, predicted=predicted, measured=measured, depth=[len(p.pruned) for p in points],
                      calibration=(a, b), before=before, after=after, label=label,
                      title=f"{meta.model} {format_shape(meta.input_size)} b{meta.batch} on {meta.target} "
                            f"({meta.device_string})")
    return CheckResult(table=result_table, points=points, before=before, after=after,
                       cross_validated=Figures.compare(loo, measured) if loo is not None else None,
                       previous=previous, calibration=(a, b), stored=stored, csv_path=csv_path,
                       png_path=png_path, measured_now=len(points) - reused, reused=reused,
                       elapsed_s=time.perf_counter() - started, seed=seed,
                       model_row_ms=table.model_latency(), notes=notes, prediction=label, anchor_ms=anchor_ms)


def prediction_label(table: LatencyTable) -> str:
    """What the table's prediction is: its fitted predictor or plain sum, calibrated or not."""
    kind = "predictor" if table.meta.predictor is not None else "table sum"
    return f"{kind}, calibrated" if table.meta.calibration is not None else kind


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


def _default_measurer(table: LatencyTable, work: Path, allow_mismatch: bool, model: Any, host: MeasureHost,
                      say: Progress, *, paired: bool | None = None
                      ) -> tuple[Measurer, str, tuple[float, float] | None, int | None]:
    """Refuse a table from another machine than ``host``'s (unless re-anchored for it, or
    ``allow_mismatch``), then build the subnet measurer on the table's target there; also the rescaling
    to compare with, if re-anchored, and the measuring machine's logical CPUs."""
    from deploykit.latency.identity import anchor_command, judge, measuring_setup
    from deploykit.latency.options import pairs_by_default

    meta = table.meta
    target, protocol = measuring_setup(table, doing="check", host=host)
    if paired is None:
        paired = pairs_by_default(protocol.apply_settings(target), local=host.url is None)
    here = host.fingerprint(target, threads=meta.threads)
    verdict = judge(table, here)
    machine = "this one" if host.url is None else host.describe()
    if not verdict.same and verdict.rescale is not None:
        say(f"note: the table was measured on another machine ({verdict.describe()}); re-anchored for "
            f"{machine} on {verdict.anchored_on}: checking its rescaled predictions")
    elif not verdict.same and not allow_mismatch:
        raise TableError(f"{table.path} was measured on another machine ({verdict.describe()}); re-anchor it "
                         f"{host.where} first ({anchor_command(table, host)}), or pass --allow-mismatch to "
                         "check its unscaled predictions")
    elif not verdict.same:
        say(f"warning: checking on another machine than the table's (--allow-mismatch): {verdict.describe()}")
    say(f"building {meta.model} at {format_shape(meta.input_size)} (random weights: timing does not depend "
        "on them)" + ("" if host.url is None else f"; measuring on {host.describe()}"))
    measurer = SubnetMeasurer(meta.model, input_size=meta.input_size, batch=meta.batch, work=work,
                              model=model, time_onnx=lambda path, shape: host.measure(
                                  path, target=target, protocol=protocol, input_shape=shape),
                              time_paired=(lambda path, reference, shape: host.measure_paired(
                                  path, reference, target=target, protocol=protocol, input_shape=shape))
                              if paired else None)
    if tuple(measurer.prunable_indices) != tuple(table.prunable_indices):
        raise TableError(f"{table.path} prunes blocks {list(table.prunable_indices)} but {meta.model} "
                         f"here has prunable blocks {list(measurer.prunable_indices)}: the table is from "
                         "another model definition; profile it again")
    rescale = None if verdict.same else verdict.rescale
    # the machine in the points file: its points are reused only by a check on the same machine
    measured_on = (f"{here.device} (fingerprint {here.id}) / {here.runtime} {here.runtime_version}"
                   + (" / paired" if paired else ""))
    return measurer, measured_on, rescale, here.logical_cores


def _measure_plan(plan: list[tuple[int, ...]], raw: LatencyTable, measure: Measurer, known: dict,
                  csv_path: Path, seed: int, measured_on: str, say: Progress,
                  load: Callable[[], float] = load_now) -> tuple[list[Point], int]:
    points: list[Point] = []
    reused = 0
    width = len(str(len(plan)))
    earlier = [_still_valid(known, number, pruned, raw) for number, pruned in enumerate(plan)]
    batches = export_batches([pruned for pruned, old in zip(plan, earlier) if old is None], measure)
    for number, (pruned, old) in enumerate(zip(plan, earlier)):
        predicted = raw.predict(pruned)
        head = f"[{number + 1:>{width}}/{len(plan)}] k={len(pruned):<2} pruned {_blocks(pruned)}:"
        if old is not None:
            points.append(old)
            reused += 1
            say(f"{head} {old.measured_ms:.3f} ms (reused from {csv_path.name})")
            continue
        began = time.perf_counter()
        if pruned in batches:
            measure.export_ahead(batches[pruned])
        point = _point(number, pruned, predicted, measure(pruned), load())
        points.append(point)
        _write_points(csv_path, points, seed, measured_on, calibration=None)
        error = (predicted - point.measured_ms) / point.measured_ms * 100
        spread = f" (cv {point.cv * 100:.0f}%)" if not math.isnan(point.cv) else ""
        paired = "" if math.isnan(point.ratio) else f" in process, {point.ratio:.4f} × the unpruned model"
        say(f"{head} measured {point.measured_ms:.3f} ms{spread}{paired}, table {predicted:.3f} ms "
            f"({error:+.1f}%) "
            f"[{time.perf_counter() - began:.1f} s]")
    return points, reused


def _still_valid(known: dict, number: int, pruned: tuple[int, ...], raw: LatencyTable) -> Point | None:
    """An earlier run's point for this plan position, if the table still predicts what it did then."""
    old = known.get((number, pruned))
    if old is not None and math.isclose(old.predicted_ms, raw.predict(pruned), rel_tol=1e-6, abs_tol=1e-9):
        return old
    return None


def _point(number: int, pruned: tuple[int, ...], predicted: float, measured: Any, load: float) -> Point:
    """A point from what the measurer returned: a paired measurement keeps its ratio (its milliseconds
    are the in-process ones until :func:`_anchored`), anything else goes through SubnetTiming."""
    if isinstance(measured, PairedMeasurement):
        model = measured.model
        return Point(number, pruned, predicted, model.median_ms, model.p90_ms, model.cv, model.n, load,
                     ratio=measured.ratio, reference_ms=measured.reference.median_ms)
    timing = SubnetTiming.of(pruned, measured, load=load)
    return Point(number, pruned, predicted, timing.measured_ms, timing.p90_ms, timing.cv, timing.n,
                 timing.load)


def _anchored(points: list[Point]) -> tuple[list[Point], float | None]:
    """Paired points with milliseconds = ratio × the unpruned model's median over their processes, and
    that anchor; other points as they are (anchor None). A check never mixes the two kinds."""
    paired = [p for p in points if not math.isnan(p.ratio)]
    if not paired:
        return points, None
    if len(paired) != len(points):
        raise TableError("a paired check found unpaired points (a points file of another kind of check?); "
                         "rerun it with --fresh")
    anchor, measured = anchored_ms([p.ratio for p in points], [p.reference_ms for p in points])
    return [replace(p, measured_ms=ms) for p, ms in zip(points, measured)], anchor


def _reusable(csv_path: Path, seed: int, measured_on: str, say: Progress) -> dict:
    """Points of an earlier (possibly interrupted) check with the same seed on the same machine."""
    def point(row) -> tuple[tuple[int, tuple[int, ...]], Point] | None:
        if int(row.seed) != seed or row.measured_on != measured_on:
            return None
        pruned = parse_indices(row.pruned)
        return (int(row.sample), pruned), Point(int(row.sample), pruned, float(row.predicted_ms),
                                                float(row.measured_ms), float(row.p90_ms or "nan"),
                                                float(row.cv or "nan"), int(row.n),
                                                float(getattr(row, "load_1min", "") or "nan"),
                                                float(getattr(row, "ratio", "") or "nan"),
                                                float(getattr(row, "reference_ms", "") or "nan"))

    found = read_points(csv_path, dtype={"pruned": str, "measured_on": str}, parse=point,
                        what="not a points file of this check", say=say)
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
                     "load_1min": p.load, "seed": seed, "measured_on": measured_on, "ratio": p.ratio,
                     "reference_ms": p.reference_ms})
    write_points(path, rows, POINT_COLUMNS)


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


def _figure_row(label: str, f: Figures) -> str:
    return (f"{label:<22}{f.spearman:>7.3f}{f.kendall:>7.3f}{f.within_5:>8.0%}{f.within_10:>8.0%}"
            f"{f.mape:>7.1f}%{f.bias:>+7.1f}%{f.max_error:>7.1f}%")




def result_json(result: CheckResult) -> str:
    """The result as one JSON document (what ``--format json`` prints)."""
    return json.dumps(result.as_dict(), indent=2)


def _blocks(indices: tuple[int, ...]) -> str:
    """(0, 1, 2, 5) → ``0-2,5`` (compact, for progress lines)."""
    return format_block_ranges(indices).replace(", ", ",")
