"""A profile's end-to-end phase: measure whole subnets, fit the table's predictor, store its fidelity.

After the isolated entries, ``deploykit profile`` measures subnets end to end
(:func:`deploykit.latency.sampling.plan_end_to_end`, all in one shuffled order, each in a fresh
process):

- for the **fitted** predictor, the designed subnets (the unpruned model, each identical-block group
  merged alone, everything merged) and ``fit_samples`` random ones, on which
  :func:`deploykit.latency.predictor.fit_predictor` fits ``base + Σ δ_i + Σ δ_{i,i+1}`` toward the
  isolated entries;
- ``holdout`` further subnets that no fit ever sees, spread evenly over the range of the isolated-sum
  prediction (:func:`deploykit.latency.sampling.spread_by_prediction`), each measured in
  :data:`HOLDOUT_PROCESSES` fresh processes (one export; the median kept; paired: one, the process's
  state cancels in the ratio), on which the table's prediction (the fitted predictor, or the isolated
  sum for ``isolated``) is compared with the measurement: Spearman ρ,
  Kendall τ, the share within ±5 % / ±10 %, MAPE, bias and max error go into the metadata
  (``fidelity``).

Subnets are exported in batches, several at once, before the batch is timed
(:mod:`deploykit.latency.parallel_export`): no export overlaps a measurement.

Every measurement is appended to ``NAME.fit.csv`` beside the table as soon as it is taken, so an
interrupted profile resumes without measuring a subnet twice; the predictor and figures are written
into the table only at the end, together with ``complete``.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from deploykit.clock import utc_now
from deploykit.latency.options import MAX_DESIGNED, EndToEndOptions
from deploykit.latency.parallel_export import export_batches
from deploykit.latency.predictor import Prior, fit_predictor
from deploykit.latency.probe import drift_warning
from deploykit.latency.sampling import EndToEndPlan, plan_end_to_end
from deploykit.latency.stats import Figures, Repeatability
from deploykit.latency.subnets import (
    Measurer,
    SubnetTiming,
    anchor_timings,
    load_now,
    read_points,
    write_points,
)
from deploykit.latency.table import LatencyTable
from deploykit.progress import Progress, silent
from deploykit.subnet import format_block_ranges, format_indices, parse_indices

MIN_HOLDOUT = 10          # fewer held-out subnets than this: the figures are stored with a warning
# A held-out subnet is the reference the figures are judged against: it is measured in this many fresh
# processes and the median kept, so that one process landing 30 % slow is not counted as the table's
# error (the fit is robust to such points; the figures are not).
HOLDOUT_PROCESSES = 3
# How the held-out subnets were chosen, stored with the figures (tables without it drew them by k alone)
HOLDOUT_DRAW = "spread evenly over the isolated-sum prediction"
POINT_COLUMNS = ("phase", "k", "pruned", "measured_ms", "p90_ms", "cv", "n", "load_1min", "predicted_ms",
                 "measured_at", "ratio", "reference_ms")


def points_path(table_csv: Path) -> Path:
    """``foo.csv`` → ``foo.fit.csv``: the end-to-end measurements of the table's profile."""
    return table_csv.with_name(table_csv.name[:-len(".csv")] + ".fit.csv")


def prior_of(table: LatencyTable) -> Prior:
    """What the isolated entries say, as the fit's prior."""
    delta = {i: table.block_latency(i, "merged") - table.block_latency(i, "original")
             for i in table.prunable_indices}
    return Prior(base_ms=table.isolated_sum(()), delta_ms=delta, groups=table.groups)


def finish_profile(table: LatencyTable, *, options: EndToEndOptions, measure: Measurer, points_file: Path,
                   fresh: bool = False, progress: Progress | None = None,
                   load: Callable[[], float] = load_now) -> LatencyTable:
    """Measure the plan (reusing what ``points_file`` holds unless ``fresh``), fit, compare on the held-out
    subnets; the table with ``predictor`` and ``fidelity`` set (not yet written). ``load`` gives the
    measuring machine's 1-minute load average for the points file (a device agent's with ``--device``)."""
    say = progress or silent
    groups = table.groups
    kind = options.resolve(len(groups))
    if options.predictor == "auto" and kind == "isolated":
        say(f"predictor: isolated ({len(groups)} identical-block groups; the fitted predictor would need "
            f"{len(groups) + 2} designed subnets, more than {MAX_DESIGNED})")
    plan = plan_end_to_end(groups, fit_samples=options.fit_samples, holdout=options.holdout,
                           seed=options.seed, designed=kind == "fitted", spread_by=table.isolated_sum)
    known = {} if fresh else _read_points(points_file, say)
    holdout_processes = 1 if options.paired else HOLDOUT_PROCESSES
    measured = _measure(plan, measure, known, points_file, say, load, holdout_processes)
    timings, anchor = anchor_timings(measured)
    if anchor is not None:
        say(f"paired: every subnet's ms = its ratio to the unpruned model × {anchor:.3f} ms, the unpruned "
            f"model's median over the phase's {len(timings)} subnets' processes")
    predictor = None
    if kind == "fitted":
        fit_points = [(s, timings[s].measured_ms) for s in plan.fit]
        predictor = fit_predictor(fit_points, prior_of(table), record={
            "designed": len(plan.designed), "random": len(plan.random), "seed": options.seed,
            "prior": "isolated table entries", "points_file": points_file.name})
        say(f"fitted the predictor on {len(fit_points)} subnets: ridge {predictor.fit['ridge']:g}, "
            f"{predictor.fit['pair_types_kept']} of {predictor.fit['pair_types_tried']} adjacent-pair types "
            f"kept, leave-one-out error {predictor.fit['loo_rms_pct']:.2f}% (RMS)")
    predict = predictor.predict if predictor is not None else table.isolated_sum
    _write_points(points_file, plan, timings, predict)
    fidelity = _fidelity(plan, timings, predict, kind, options, points_file, say)
    if fidelity is not None:
        fidelity = _with_repeatability(fidelity, whole_model_repeats(table, timings), table, say)
        if anchor is not None:
            fidelity = {**fidelity, "paired": True, "anchor_ms": anchor}
    notes = table.meta.notes
    if table.meta.calibration is not None:  # fitted on the old prediction: it does not apply to the new one
        say("dropping the table's `lut check` calibration: the new prediction was measured end to end")
        notes = (*notes, "end-to-end phase: the earlier `lut check` calibration was dropped")
    return table.with_meta(predictor=None if predictor is None else predictor.as_dict(), fidelity=fidelity,
                           calibration=None, notes=notes)


def _measure(plan: EndToEndPlan, measure: Measurer, known: dict, points_file: Path, say: Progress,
             load: Callable[[], float], holdout_processes: int) -> dict[tuple[int, ...], SubnetTiming]:
    timings: dict[tuple[int, ...], SubnetTiming] = {}
    width = len(str(len(plan.order)))
    todo = [subset for _, subset in plan.order if subset not in known]
    batches = export_batches(todo, measure)
    for number, (phase, subset) in enumerate(plan.order, 1):
        head = f"[end to end {number:>{width}}/{len(plan.order)}] {phase:<7} k={len(subset):<2} " \
               f"pruned {format_block_ranges(subset)}:"
        if subset in known:
            timings[subset] = known[subset]
            say(f"{head} {known[subset].measured_ms:.3f} ms (already measured)")
            continue
        began = time.perf_counter()
        if subset in batches:
            measure.export_ahead(batches[subset])
        timing = _median_timing(subset, measure, holdout_processes if phase == "holdout" else 1, load)
        timings[subset] = timing
        _write_points(points_file, plan, timings, None)
        spread = f" (cv {timing.cv * 100:.0f}%)" if not math.isnan(timing.cv) else ""
        paired = "" if math.isnan(timing.ratio) else f", {timing.ratio:.4f} × the unpruned model in process"
        say(f"{head} {timing.measured_ms:.3f} ms{spread}{paired} [{time.perf_counter() - began:.1f} s]")
    return timings


def _median_timing(subset: tuple[int, ...], measure: Measurer, processes: int,
                   load: Callable[[], float]) -> SubnetTiming:
    """The subnet measured ``processes`` times (each a fresh process); the timing with the median ms
    (paired: the median ratio)."""
    timings = sorted((SubnetTiming.of(subset, measure(subset), load=load()) for _ in range(processes)),
                     key=lambda timing: timing.measured_ms if math.isnan(timing.ratio) else timing.ratio)
    return timings[len(timings) // 2]


def _fidelity(plan: EndToEndPlan, timings: dict, predict: Callable, kind: str, options: EndToEndOptions,
              points_file: Path, say: Progress) -> dict[str, Any] | None:
    held = list(plan.holdout)
    if not held:
        say("no held-out subnet (--holdout 0, or the model has too few subnets): no fidelity stored")
        return None
    figures = Figures.compare([predict(s) for s in held], [timings[s].measured_ms for s in held])
    record = {**figures.as_dict(), "predictor": "fitted" if kind == "fitted" else "isolated sum",
              "seed": options.seed, "holdout_draw": HOLDOUT_DRAW, "points_file": points_file.name,
              "date": utc_now()}
    if figures.n < MIN_HOLDOUT:
        record["note"] = f"only {figures.n} held-out subnets: rough figures"
        say(f"warning: only {figures.n} held-out subnets (at least {MIN_HOLDOUT} give steady figures)")
    say(f"held-out check on {figures.n} subnets never used in fitting: ρ {figures.spearman:.3f}, "
        f"±5% {figures.within_5:.0%}, ±10% {figures.within_10:.0%}, MAPE {figures.mape:.1f}%, "
        f"max {figures.max_error:.1f}%")
    return record


def whole_model_repeats(table: LatencyTable, timings: dict) -> list[float]:
    """Every fresh-process measurement of the unpruned model the profile took: the sentinel's (its
    latest measuring run), the speed anchor's rounds and the unpruned end-to-end point."""
    runs = (table.meta.conditions or {}).get("runs", [])
    sentinel = next((run["sentinel"] for run in reversed(runs) if run.get("sentinel")), {})
    values = [float(check["ms"]) for check in sentinel.get("checks", [])]
    values += [float(ms) for ms in (table.meta.anchors or {}).get("unpruned_rounds_ms", [])]
    if () in timings and math.isnan(timings[()].ratio):
        values.append(timings[()].measured_ms)
    # paired: every process measured the unpruned model beside its subnet
    values += [t.reference_ms for t in timings.values() if not math.isnan(t.reference_ms)]
    return values


def _with_repeatability(fidelity: dict[str, Any], values: list[float], table: LatencyTable,
                        say: Progress) -> dict[str, Any]:
    repeat = Repeatability.of(values)
    if repeat is None:
        return fidelity
    say(repeat.line())
    meta = table.meta
    if meta.mode == "measured" and meta.run_settings is not None:
        warning = drift_warning(repeat.within_5, repeat.n, meta.settings_probe, meta.measured_with())
        if warning:
            say(warning)
    return {**fidelity, "repeatability": repeat.as_dict()}


def _write_points(path: Path, plan: EndToEndPlan, timings: dict, predict: Callable | None) -> None:
    """Every measured subnet of the plan, in measuring order (predictions once there is a predictor)."""
    rows = []
    for phase, subset in plan.order:
        timing = timings.get(subset)
        if timing is None:
            continue
        rows.append({"phase": phase, "k": len(subset), "pruned": format_indices(subset),
                     "measured_ms": timing.measured_ms, "p90_ms": timing.p90_ms, "cv": timing.cv,
                     "n": timing.n, "load_1min": timing.load, "measured_at": timing.measured_at,
                     "predicted_ms": predict(subset) if predict else math.nan, "ratio": timing.ratio,
                     "reference_ms": timing.reference_ms})
    write_points(path, rows, POINT_COLUMNS)


def _read_points(path: Path, say: Progress) -> dict[tuple[int, ...], SubnetTiming]:
    """Subnets an earlier (interrupted) run of this profile measured already."""
    def timing(row) -> tuple[tuple[int, ...], SubnetTiming]:
        subset = parse_indices(row.pruned)
        return subset, SubnetTiming(subset, float(row.measured_ms), float(row.p90_ms or "nan"),
                                    float(row.cv or "nan"), int(row.n), float(row.load_1min or "nan"),
                                    measured_at=str(row.measured_at),
                                    ratio=float(getattr(row, "ratio", "") or "nan"),
                                    reference_ms=float(getattr(row, "reference_ms", "") or "nan"))

    found = read_points(path, dtype={"pruned": str, "measured_at": str}, parse=timing,
                        what="not the end-to-end points of a profile", say=say)
    if found:
        say(f"resuming the end-to-end phase from {path}: {len(found)} subnets already measured")
    return found
