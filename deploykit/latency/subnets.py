"""Measuring whole subnets: build the merged subnet, export it to ONNX and time it on the target.

:class:`SubnetMeasurer` is what a profile's end-to-end phase and ``deploykit lut check`` call for each
subnet; :class:`SubnetTiming` is the one record both keep of a measurement, and both keep their
measurements in a *points file* (:func:`write_points`, :func:`read_points`: a CSV rewritten after every
subnet, so that an interrupted run resumes).
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Hashable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from deploykit.checks import is_number
from deploykit.clock import utc_now
from deploykit.errors import TableError
from deploykit.fileio import write_text_atomic
from deploykit.paired import PairedMeasurement
from deploykit.progress import Progress
from deploykit.protocol import Measurement

# A measurer times one subnet (the pruned block indices) end to end: a Measurement or plain milliseconds.
Measurer = Callable[[tuple[int, ...]], "Measurement | float"]


class SubnetMeasurer:
    """Times a subnet end to end: prune, λ = 1, merge, export to ONNX, time (``time_onnx``).

    Weights are random unless ``model`` is given: timing does not depend on them. Without ``time_onnx``
    it only exports (:meth:`export`).
    """

    def __init__(self, model_name: str, *, input_size: tuple[int, int], batch: int, work: Path,
                 time_onnx: Callable[[Path, tuple[int, ...]], Measurement] | None = None, model: Any = None,
                 time_paired: Callable[[Path, Path, tuple[int, ...]], PairedMeasurement] | None = None):
        from deploykit.models import create_model
        from deploykit.prune import prunable

        module = model if model is not None else create_model(model_name, input_size=tuple(input_size))
        self.net = prunable(module.eval(), input_size=tuple(input_size)).eval()
        self.shape = (batch, 3, *input_size)
        self.work, self.time_onnx, self.time_paired = work, time_onnx, time_paired
        self._exported: tuple[int, ...] | None = None   # the subnet whose ONNX file is in work/
        self._reference: Path | None = None             # the unpruned model's ONNX file, for pairing
        self._ahead: dict[tuple[int, ...], Path] = {}    # subnets exported by export_ahead

    @property
    def prunable_indices(self) -> tuple[int, ...]:
        return self.net.prunable_indices

    def export(self, pruned: tuple[int, ...], path: Path) -> Path:
        """The subnet with these blocks merged (λ = 1), exported to ONNX at ``path``."""
        from deploykit.export import export_onnx

        self.net.prune(pruned)
        if pruned:
            self.net.set_progress(1.0)
        return export_onnx(self.net.eval().merge(), self.shape, path)

    def __call__(self, pruned: tuple[int, ...]) -> Measurement | PairedMeasurement:
        """Time the subnet in a fresh process — paired with the unpruned model where built with
        ``time_paired``; the same subnet asked for again in a row is not exported again (a held-out
        subnet is measured in several processes)."""
        if self.time_onnx is None and self.time_paired is None:
            raise TypeError("this SubnetMeasurer was built to export only (no time_onnx)")
        path = self._ahead.get(tuple(pruned))
        if path is None or not path.is_file():
            path = self.work / "subnet.onnx"
            if self._exported != tuple(pruned) or not path.is_file():
                self._exported = None
                self.export(pruned, path)
                self._exported = tuple(pruned)
        if self.time_paired is None:
            return self.time_onnx(path, self.shape)
        return self.time_paired(path, self._reference_file(), self.shape)

    def export_ahead(self, subsets: Sequence[tuple[int, ...]]) -> None:
        """Export these subnets now, several at once where this machine allows
        (:mod:`deploykit.latency.parallel_export`), so that timing them exports nothing; an earlier
        batch's files are removed first. Call it only while nothing is being measured."""
        from deploykit.latency.parallel_export import export_in_parallel

        for path in self._ahead.values():
            path.unlink(missing_ok=True)
        self._ahead = {}  # emptied first: a batch that fails leaves no stale entry behind
        jobs = [(tuple(subset), self.work / f"subnet-ahead-{number}.onnx")
                for number, subset in enumerate(subsets)]
        self._ahead = dict(zip((subset for subset, _ in jobs), export_in_parallel(self.export, jobs)))

    def _reference_file(self) -> Path:
        """The unpruned model's ONNX file, exported once (every export prunes the net afresh)."""
        path = self.work / "reference.onnx"
        if self._reference is None or not path.is_file():
            self._reference = self.export((), path)
        return path


@dataclass(frozen=True)
class SubnetTiming:
    """One subnet measured end to end, with the machine's 1-minute load average at that moment."""

    pruned: tuple[int, ...]
    measured_ms: float
    p90_ms: float = math.nan
    cv: float = math.nan
    n: int = 0
    load: float = math.nan
    measured_at: str = ""        # ISO time (UTC)
    ratio: float = math.nan      # paired: the subnet / the unpruned model, timed in one process
    reference_ms: float = math.nan  # paired: the unpruned model's median in that process

    @classmethod
    def of(cls, pruned: tuple[int, ...], measured: Any, *, load: float | None = None) -> SubnetTiming:
        """From what a measurer returned: a Measurement, or milliseconds > 0. ``load``: the measuring
        machine's 1-minute load average (default: this machine's now)."""
        load = load_now() if load is None else load
        if isinstance(measured, PairedMeasurement):  # ms in process until anchored (anchor_timings)
            model = measured.model
            return cls(tuple(pruned), model.median_ms, model.p90_ms, model.cv, model.n, load, utc_now(),
                       ratio=measured.ratio, reference_ms=measured.reference.median_ms)
        if isinstance(measured, Measurement):
            return cls(tuple(pruned), measured.median_ms, measured.p90_ms, measured.cv, measured.n,
                       load, utc_now())
        if not is_number(measured, above=0):
            raise TableError(f"the measurer returned {measured!r} for subnet {list(pruned)}; "
                             "expected milliseconds > 0")
        return cls(tuple(pruned), float(measured), load=load, measured_at=utc_now())


def anchor_timings(timings: Mapping[Hashable, SubnetTiming]) -> tuple[dict, float | None]:
    """Paired timings with milliseconds = ratio × the unpruned model's median over their processes,
    and that anchor; unpaired ones as they are (anchor None). One measurement never mixes the kinds."""
    from dataclasses import replace

    from deploykit.paired import anchored_ms

    paired = [key for key, t in timings.items() if not math.isnan(t.ratio)]
    if not paired:
        return dict(timings), None
    if len(paired) != len(timings):
        raise TableError("paired and unpaired end-to-end points are mixed (a points file of another kind "
                         "of measurement?); measure again with --fresh")
    keys = list(timings)
    anchor, ms = anchored_ms([timings[k].ratio for k in keys], [timings[k].reference_ms for k in keys])
    return {k: replace(timings[k], measured_ms=m) for k, m in zip(keys, ms)}, anchor


def write_points(path: Path, rows: Sequence[Mapping[str, Any]], columns: Sequence[str]) -> None:
    """A points file: one row per measured subnet, written atomically."""
    frame = pd.DataFrame(list(rows), columns=list(columns))
    write_text_atomic(path, frame.to_csv(index=False, float_format="%.6f"))


def read_points(path: Path, *, dtype: Mapping[str, type], parse: Callable[[Any], tuple[Hashable, Any] | None],
                what: str, say: Progress) -> dict:
    """What an earlier (possibly interrupted) run measured, as ``parse`` keys each row (None: skip it).
    No file: {}. A file that is not ``what``: {} and a line that says so (those subnets are measured again:
    a bad points file never stops a run)."""
    if not path.is_file():
        return {}
    try:
        frame = pd.read_csv(path, keep_default_na=False, dtype=dict(dtype))
        found = dict(item for row in frame.itertuples(index=False) if (item := parse(row)) is not None)
    except (ValueError, TypeError, AttributeError, TableError, pd.errors.ParserError,
            pd.errors.EmptyDataError):
        say(f"ignoring {path}: {what}")
        return {}
    return found



def load_now() -> float:
    """The 1-minute load average (nan where the platform has none)."""
    return os.getloadavg()[0] if hasattr(os, "getloadavg") else math.nan
