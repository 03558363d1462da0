"""Speed anchors: the unpruned and the all-merged model end to end, and re-anchoring a table elsewhere.

A table records two end-to-end figures of the machine that measured it (at the end of
``deploykit profile``): the unpruned model and the model with every prunable block merged.
``deploykit lut anchor TABLE`` (:func:`anchor_table`) measures the same two models on another machine,
interleaved (unpruned, merged, unpruned, merged, …; each in a fresh process) — or, for a table whose
predictions are on the paired scale, paired (:func:`paired_anchor_figures`: the all-merged model as a
ratio to the unpruned one in each fresh process, the table's anchors its own predictions, see
:func:`deploykit.latency.identity.table_anchors`) — and stores the affine map from the table's anchors
to this machine's (:func:`deploykit.latency.identity.fit_rescale`) in the
table's metadata, keyed by this machine's fingerprint id: the table then predicts this machine's
milliseconds (:func:`deploykit.latency.identity.table_for_this_machine`). Two measurements do not
prove the table's fidelity here; ``deploykit lut check`` does. With ``--device URL`` "this machine" is
the device agent's (``host``): the anchors are measured there and the rescaling is keyed by its
fingerprint.
"""

from __future__ import annotations

import statistics
import tempfile
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from deploykit.checks import require_int
from deploykit.clock import utc_now
from deploykit.errors import TableError
from deploykit.fileio import write_json_atomic
from deploykit.latency.identity import (
    anchor_scale,
    describe_record,
    fit_rescale,
    measuring_setup,
    table_anchors,
)
from deploykit.latency.options import ANCHOR_ROUNDS
from deploykit.latency.table import LatencyTable, meta_path, read_meta
from deploykit.measure.fingerprint import Fingerprint, differences
from deploykit.measure.host import MeasureHost, host_or_local
from deploykit.measure.rounds import measure_paired_rounds
from deploykit.progress import Progress, silent
from deploykit.protocol import Measurement

TimeOnnx = Callable[[Path], Measurement]



def interleaved(files: Mapping[str, Path], *, time_onnx: TimeOnnx, rounds: int,
                say: Progress | None = None) -> dict[str, list[Measurement]]:
    """Time every file once per round, in the same order each round (A, B, A, B, …), so that a drift
    of the machine touches all of them alike. ``{name: [one Measurement per round]}``."""
    require_int("--rounds", rounds, least=1)
    runs: dict[str, list[Measurement]] = {name: [] for name in files}
    for number in range(1, rounds + 1):
        for name, path in files.items():
            result = time_onnx(path)
            runs[name].append(result)
            if say:
                say(f"round {number}/{rounds}: {name} {result.brief()}")
    return runs


def anchor_figures(runs: Mapping[str, list[Measurement]], *, pruned: tuple[int, ...]) -> dict[str, Any]:
    """The anchors from interleaved runs: the median over rounds of each model's median."""
    figures: dict[str, Any] = {"rounds": len(runs["unpruned"]), "pruned": list(pruned),
                               "measured_at": utc_now(), "scale": "alone"}
    for name in ("unpruned", "merged"):
        medians = [m.median_ms for m in runs.get(name, [])]
        figures[f"{name}_ms"] = statistics.median(medians) if medians else None
        figures[f"{name}_rounds_ms"] = medians
    return figures


def paired_anchor_figures(rounds: Mapping[str, Any], *, pruned: tuple[int, ...]) -> dict[str, Any]:
    """The anchors on the paired scale from :func:`deploykit.measure.rounds.measure_paired_rounds` (the
    all-merged model against the unpruned one): the unpruned model's median over the processes (as the
    reference) and the all-merged model's median ratio to it × that."""
    anchor, ratios = rounds["reference"]["median_ms"], list(rounds["round_ratios"])
    ratio = statistics.median(ratios)
    return {"rounds": len(ratios), "pruned": list(pruned), "measured_at": utc_now(), "scale": "paired",
            "unpruned_ms": anchor, "unpruned_rounds_ms": list(rounds["reference"]["round_medians_ms"]),
            "merged_ratio": ratio, "merged_round_ratios": ratios, "merged_ms": ratio * anchor}


def export_anchor_models(model_name: str, *, input_size: tuple[int, int], batch: int, work: Path,
                         model: Any = None, unpruned: Path | None = None) -> tuple[dict[str, Path], tuple]:
    """The unpruned and the all-merged model as ONNX files in ``work`` (random weights: timing does
    not depend on them), built like ``lut check`` builds its subnets; ``unpruned`` reuses a file
    already exported. Returns the files and the merged block indices."""
    from deploykit.latency.subnets import SubnetMeasurer

    subnets = SubnetMeasurer(model_name, input_size=tuple(input_size), batch=batch, work=work, model=model,
                             time_onnx=_no_timing)
    pruned = tuple(subnets.prunable_indices)
    files = {"unpruned": unpruned or subnets.export((), work / "anchor_unpruned.onnx")}
    if pruned:
        files["merged"] = subnets.export(pruned, work / "anchor_merged.onnx")
    return files, pruned


def _no_timing(path: Path, shape: tuple[int, ...]) -> Measurement:
    raise RuntimeError("internal: the anchor models are exported here and timed by the caller")


# --- deploykit lut anchor --------------------------------------------------------------------------

@dataclass(frozen=True)
class AnchorResult:
    """What ``lut anchor`` measured and stored."""

    path: Path
    fingerprint: Fingerprint
    record: dict[str, Any]
    differences: tuple[str, ...]
    elapsed_s: float
    machine: str = "this machine"    # or "the device at URL"
    device_option: str = ""          # " --device URL" when anchored through a device agent

    def summary(self) -> str:
        same = (f"{self.machine} is the machine that measured the table" if not self.differences
                else f"{self.machine} differs from the table's: " + "; ".join(self.differences))
        accepted = "here" if not self.device_option else f"for {self.machine}"
        return "\n".join([
            f"anchored {self.path} for {self.machine} (fingerprint {self.fingerprint.id}) in "
            f"{self.elapsed_s:.0f} s: {describe_record(self.record)}",
            same,
            f"stored in {meta_path(self.path)}; millisecond budgets are now accepted {accepted}",
            f"the table's fidelity on {self.machine} is not checked yet: deploykit lut check "
            f"{self.path}{self.device_option}",
        ])


def anchor_table(path: str | Path, *, rounds: int = ANCHOR_ROUNDS, progress: Progress | None = None,
                 model: Any = None, time_onnx: TimeOnnx | None = None,
                 host: MeasureHost | None = None) -> AnchorResult:
    """Measure the table's two anchor models where ``host`` measures (default: this machine) and store
    the rescaling (module docstring).

    ``model`` replaces the timm model the table names; ``time_onnx`` replaces the fresh-process
    measurement of one model on the table's target (tests).
    """
    require_int("--rounds", rounds, least=1)  # before anything is built
    started = time.perf_counter()
    say = progress or silent
    host = host_or_local(host)
    table = LatencyTable.read(path)
    meta = table.meta
    _require_anchorable(table)
    mapped = table_anchors(table)
    target, protocol = measuring_setup(table, doing="anchor", host=host)
    here = host.fingerprint(target, threads=meta.threads)
    shape = (meta.batch, 3, *meta.input_size)
    if time_onnx is None:
        def time_onnx(onnx: Path) -> Measurement:
            return host.measure(onnx, target=target, protocol=protocol, input_shape=shape)
    paired = _pairs(table, host, say)
    say(f"building {meta.model} at {meta.input_size[0]}x{meta.input_size[1]}, unpruned and all-merged "
        "(random weights: timing does not depend on them)")
    with tempfile.TemporaryDirectory(prefix="deploykit-anchor-") as work:
        files, pruned = export_anchor_models(meta.model, input_size=meta.input_size, batch=meta.batch,
                                             work=Path(work), model=model)
        expected = (meta.anchors or {}).get("pruned")
        if expected is not None and tuple(expected) != tuple(pruned):
            raise TableError(f"{table.path}'s all-merged anchor merges blocks {list(expected)}, but "
                             f"{meta.model} here has prunable blocks {list(pruned)}: the table is from "
                             "another model definition; profile it again")
        if paired and "merged" in files:
            figures = paired_anchor_figures(measure_paired_rounds(
                files["merged"], files["unpruned"], target=target, protocol=protocol, input_shape=shape,
                rounds=rounds, host=host, progress=say), pruned=pruned)
        else:
            figures = anchor_figures(interleaved(files, time_onnx=time_onnx, rounds=rounds, say=say),
                                     pruned=pruned)
    (a, b), kind = fit_rescale(mapped, figures)
    record = {"a": a, "b": b, "kind": kind, "date": figures["measured_at"], "fingerprint": here.stored(),
              "here": figures, "table": mapped}
    _store(table, here.id, record)
    theirs = Fingerprint.from_dict(meta.fingerprint) if meta.fingerprint else None
    found = tuple(differences(theirs, here)) if theirs else ("the table carries no machine fingerprint",)
    return AnchorResult(path=table.path, fingerprint=here, record=record, differences=found,
                        elapsed_s=time.perf_counter() - started, machine=host.describe(),
                        device_option=f" --device {host.url}" if host.url else "")


def _pairs(table: LatencyTable, host: MeasureHost, say: Progress) -> bool:
    """Whether the anchors are measured paired: where the table predicts on the paired scale and the
    host can time two models in one process (a device agent times one file per request)."""
    if anchor_scale(table) != "paired":
        return False
    if host.url is not None:
        say(f"note: {table.path} predicts on the paired scale, but {host.describe()} times one model per "
            "process: the anchors are timed alone there, a scale that can differ by a few per cent")
        return False
    say("the table's subnets were measured paired: the all-merged model is timed as a ratio to the "
        "unpruned one in each fresh process, and the table's anchors are its own predictions of the two")
    return True


def _require_anchorable(table: LatencyTable) -> None:
    where = table.path
    if table.meta.mode == "estimated":
        raise TableError(f"{where} is an estimated (roofline) table: it has no measured anchors to map; "
                         f"profile a measured table on {table.meta.device}")
    if not table.meta.complete:
        raise TableError(f"{where} is incomplete (its profile was interrupted); finish it with the same "
                         "`deploykit profile` command first")


def _store(table: LatencyTable, fingerprint_id: str, record: dict[str, Any]) -> None:
    """Add the rescaling to the metadata on disk (atomically), refusing if the table changed meanwhile."""
    current = read_meta(table.path)
    if current.anchors != table.meta.anchors or current.date != table.meta.date:
        raise TableError(f"{table.path} changed on disk while it was being anchored (profiled again?); "
                         "anchor it again")
    updated = replace(current, rescalings={**current.rescalings, fingerprint_id: record})
    write_json_atomic(meta_path(table.path), updated.as_dict())
