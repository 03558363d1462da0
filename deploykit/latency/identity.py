"""Using a latency table on a machine: is it the machine that measured it, or one it was re-anchored for?

Every user of a table (``search``, ``lut predict``, ``verify --table``, ``run``) passes it through
:func:`table_for_this_machine` first. It compares the table's fingerprint (:mod:`.fingerprint`) with
this machine's for the table's target:

- the same machine: silent, the table is used as it is;
- another machine for which ``deploykit lut anchor`` stored a rescaling: one line saying so; the
  table comes back with :attr:`LatencyTable.rescale` set, so every prediction is in this machine's ms;
- another machine, not re-anchored (a table without a fingerprint, from before fingerprints, counts
  as one): a millisecond budget is refused — the table's milliseconds are another machine's — and
  anything else (ratio budgets, no budget) goes on with one line saying exactly what differs.

Estimated (roofline) tables are not measurements of any machine and pass unchanged; the commands
label them as estimates already.

"This machine" is the machine the command measures on: with ``--device URL`` the device agent's
(``host``, a :class:`deploykit.measure.host.MeasureHost`), whose fingerprint the agent reports.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from deploykit.errors import ConfigError, DeployKitError, RuntimeUnavailableError, TableError
from deploykit.latency.table import LatencyTable, TableMeta
from deploykit.measure.fingerprint import NOT_INSTALLED, Fingerprint, differences, for_target, this_machine
from deploykit.progress import Progress, silent
from deploykit.runsettings import RunSettings, require_same

if TYPE_CHECKING:
    from deploykit.measure.host import MeasureHost
BUDGET_UNITS = ("ms", "fraction", None)
# Below this spread between the unpruned and the all-merged anchor (relative to the unpruned one) the
# two points do not pin a slope down: the rescaling is the ratio of the unpruned anchors instead.
MIN_ANCHOR_SPREAD = 0.05


@dataclass(frozen=True)
class Verdict:
    """How a table relates to this machine."""

    same: bool                                   # measured on this machine (same fingerprint id)
    differences: tuple[str, ...]                 # what differs (empty when same)
    rescale: tuple[float, float] | None          # the stored rescaling for this machine, if valid
    anchored_on: str | None                      # when that rescaling was measured

    def describe(self) -> str:
        return "; ".join(self.differences)


def here_for(meta: TableMeta, host: MeasureHost | None = None) -> Fingerprint:
    """The measuring machine's fingerprint for the table's target and thread setting: this machine's,
    or that of the device ``host`` measures on (asked of its agent)."""
    from deploykit.targets import load_target

    try:
        target = load_target(meta.target)
    except DeployKitError:  # a custom target file that is not on this machine
        if host is not None and host.url is not None:
            raise
        return this_machine(runtime=meta.runtime, runtime_version=f"unknown (no target {meta.target} here)",
                            provider=meta.provider, device=NOT_INSTALLED, threads=meta.threads)
    target = target.with_settings(meta.measured_with())
    if host is None:
        return for_target(target, threads=meta.threads)
    return host.fingerprint(target, threads=meta.threads)


def judge(table: LatencyTable, here: Fingerprint) -> Verdict:
    """Compare ``table`` with ``here`` (see the module docstring)."""
    meta = table.meta
    rescale, anchored_on = _stored_rescale(table, here.id)
    if meta.fingerprint is None:
        return Verdict(False, ("the table carries no machine fingerprint (made before fingerprints were "
                               "recorded)",), rescale, anchored_on)
    theirs = Fingerprint.from_dict(meta.fingerprint)
    if theirs.id == here.id:
        return Verdict(True, (), rescale, anchored_on)
    found = differences(theirs, here) or [f"fingerprint {theirs.id} vs {here.id}"]
    return Verdict(False, tuple(found), rescale, anchored_on)


def open_table(source: LatencyTable | str | Path, *, budget_unit: str | None = None,
               say: Progress | None = None, host: MeasureHost | None = None) -> LatencyTable:
    """A table opened for use where ``host`` measures (default: here): read (``source`` a path), its
    coverage checked (a cut or interrupted table is an error before anything else is said), then
    :func:`table_for_this_machine` for ``budget_unit``. What search, ``lut predict``, verify and the
    pipeline call."""
    table = source if isinstance(source, LatencyTable) else LatencyTable.read(source)
    table.check_coverage()
    return table_for_this_machine(table, budget_unit=budget_unit, say=say, host=host)


@dataclass(frozen=True)
class SubnetPrediction:
    """``deploykit lut predict``'s answer: what opening the table said (``notes``: machine identity, for
    stderr) and the prediction with the table's stored fidelity (``lines``)."""

    notes: tuple[str, ...]
    lines: tuple[str, ...]


def predict_subnet(table_file: str | Path, *, prune: str | None = None,
                   subnet: str | Path | None = None) -> SubnetPrediction:
    """The latency the table at ``table_file`` predicts, as used here (:func:`open_table`), for the subnet
    given as a block list ``prune`` (of the table's model) or a ``subnet`` file, with the unpruned
    prediction, the speed-up and the held-out fidelity the table stores. Bad input is an error before
    any note is given."""
    from deploykit.subnet import choose_subnet

    notes: list[str] = []
    table = open_table(table_file, budget_unit=None, say=notes.append)
    meta = table.meta
    chosen = choose_subnet(path=subnet, prune=prune, model=meta.model if prune else None,
                           input_size=meta.input_size if prune else None)
    predicted, unpruned = table.predict_subnet(chosen), table.predict(())
    how = "fitted predictor" if meta.predictor is not None else "isolated sum"
    if meta.calibration:
        how += ", calibrated: {:.4f}·x {:+.3f} ms".format(*meta.calibration)
    return SubnetPrediction(tuple(notes), (
        f"{meta.model} at {meta.input_size[0]}x{meta.input_size[1]} b{meta.batch} on {meta.target} "
        f"({meta.mode}, {how}): pruned {list(chosen.pruned)} → {predicted:.3f} ms; "
        f"unpruned {unpruned:.3f} ms; speed-up {unpruned / predicted:.2f}×",
        table.fidelity_line()))


def table_for_this_machine(table: LatencyTable, *, budget_unit: str | None = None,
                           say: Progress | None = None, here: Fingerprint | None = None,
                           host: MeasureHost | None = None) -> LatencyTable:
    """``table`` ready to predict for this machine; see the module docstring.

    ``budget_unit`` is ``ms`` (a millisecond budget: refused on a foreign table that is not
    re-anchored here), ``fraction`` (a ratio budget) or None (no budget: predictions are shown).
    ``host`` is where the command measures (default: this machine): with a device agent the table is
    compared with the device's fingerprint; ``here`` gives that fingerprint directly.
    """
    if budget_unit not in BUDGET_UNITS:
        raise ValueError(f"budget_unit must be one of {BUDGET_UNITS}, got {budget_unit!r}")
    say = say or silent
    if table.meta.mode == "estimated":
        return table
    verdict = judge(table, here or here_for(table.meta, host))
    where = str(table.path) if table.path else "the latency table"
    if verdict.same:
        return table.with_rescale(verdict.rescale)
    if verdict.rescale is not None:
        a, b = verdict.rescale
        say(f"note: {where} was measured on another machine ({verdict.describe()}); re-anchored for this one "
            f"on {verdict.anchored_on}: predictions here = {a:.4f} × the table's {'+' if b >= 0 else '−'} "
            f"{abs(b):.3f} ms")
        return table.with_rescale(verdict.rescale)
    anchor = anchor_command(table, host)
    if budget_unit == "ms":
        raise TableError(f"{where} was measured on another machine ({verdict.describe()}): its milliseconds "
                         f"are that machine's, so a millisecond budget is refused; re-anchor it here in "
                         f"seconds with `{anchor}`, or give the budget as a fraction (e.g. 0.7)")
    what = ("a ratio budget is relative to the unpruned model and goes on" if budget_unit == "fraction"
            else "its milliseconds are that machine's")
    say(f"note: {where} was measured on another machine ({verdict.describe()}); {what} (`{anchor}` "
        "re-anchors it for this machine)")
    return table


def anchor_command(table: LatencyTable, host: MeasureHost | None = None) -> str:
    """The ``deploykit lut anchor`` command that re-anchors ``table`` where ``host`` measures."""
    device = f" --device {host.url}" if host is not None and host.url is not None else ""
    return f"deploykit lut anchor {table.path or 'TABLE'}{device}"


def measuring_setup(table: LatencyTable, *, doing: str, host: MeasureHost | None = None) -> tuple[Any, Any]:
    """The table's target and protocol, to measure where ``host`` measures (default: this machine)
    the way the table was measured.

    A target file that now names another runtime, provider or precision is a TableError; a target
    whose runtime or hardware is not there a RuntimeUnavailableError. ``doing`` names the command for
    the messages (``check``, ``anchor``).
    """
    from deploykit.measure.host import host_or_local
    from deploykit.protocol import Protocol
    from deploykit.targets import load_target

    host = host_or_local(host)

    meta = table.meta
    try:
        target = load_target(meta.target)
    except ConfigError as error:
        raise TableError(f"cannot {doing} {table.path} here: its target {meta.target!r} is not known here "
                         f"({error})") from None
    changed = [f"{name} {theirs!r} (the target file now says {ours!r})"
               for name, theirs, ours in (("runtime", meta.runtime, target.runtime),
                                          ("provider", meta.provider, target.provider),
                                          ("precision", meta.precision, target.precision)) if theirs != ours]
    if changed:
        raise TableError(f"{table.path} was measured with {'; '.join(changed)}; profile it again")
    ok, reason = host.availability(target)
    if not ok:
        raise RuntimeUnavailableError(f"cannot {doing} {table.path} {host.where}: its target {target.name} "
                                      f"cannot run on {host.describe()} ({reason})")
    try:
        protocol = Protocol.from_dict(meta.protocol)
    except ConfigError as error:
        raise TableError(f"{table.path}: the table's protocol is malformed: {error}") from None
    return with_table_settings(target, table), protocol


def with_table_settings(target: Any, table: LatencyTable, asked: RunSettings | None = None) -> Any:
    """``target`` with the run settings ``table`` was measured with: a table is used only with those.
    ``asked``: settings the user gave explicitly (``--threads``, ``--spinning``); one that differs from
    the table's is a ConfigError saying both."""
    if table.meta.mode != "measured":  # a roofline estimate was measured with nothing
        return target if asked is None else target.with_settings(asked.over(target.settings))
    measured = table.meta.measured_with()
    if asked is not None:
        require_same(asked, measured, source=str(table.path or "the latency table"),
                     remedy="a table is used only with the settings it was measured with (profile it "
                            "again with yours for a table of them)")
    return target.with_settings(measured)


# --- rescalings --------------------------------------------------------------------------------------

def table_anchors(table: LatencyTable) -> dict[str, float | None]:
    """The table's speed anchors: ``unpruned_ms`` and ``merged_ms`` (the all-merged model) end to end,
    on the scale its predictions are on, and that ``scale`` (:func:`anchor_scale`).

    A table whose end-to-end phase was paired predicts on the paired scale (every point is a ratio to
    the unpruned model × that model's median as an in-process reference), a few per cent from models
    timed alone, and not by the same factor for every model (measured: OpenVINO mobilenetv2_100's
    all-merged model 0.687 × the unpruned one alone, 0.725 × paired). Its anchors are its own
    predictions of the two models, so that a rescaling fitted to the two measured paired here makes the
    table predict exactly those. Other tables: the two models as the profile timed them alone; a table
    from before anchors has only its end-to-end model row (``merged_ms`` None)."""
    if anchor_scale(table) == "paired":
        return _predicted_anchors(table)
    anchors = table.meta.anchors or {}
    unpruned = anchors.get("unpruned_ms", table.model_latency())
    if unpruned is None or not unpruned > 0:
        where = table.path or "the latency table"
        raise TableError(f"{where} has no speed anchor (no end-to-end measurement of the model): profile "
                         "it again with this version of deploykit")
    merged = anchors.get("merged_ms")
    return {"unpruned_ms": float(unpruned), "merged_ms": float(merged) if merged else None, "scale": "alone"}


def anchor_scale(table: LatencyTable) -> str:
    """``paired`` for a table whose predictions are on the paired scale (its end-to-end phase was
    paired), else ``alone``."""
    return "paired" if (table.meta.fidelity or {}).get("paired") else "alone"


def _predicted_anchors(table: LatencyTable) -> dict[str, float | None]:
    """The table's predictions (its calibration included, no rescaling) of the unpruned and the all-merged
    model."""
    plain = table.with_rescale(None)
    merged_blocks = (table.meta.anchors or {}).get("pruned", table.prunable_indices)
    merged = plain.predict(merged_blocks) if merged_blocks else None
    return {"unpruned_ms": plain.predict(()), "merged_ms": merged, "scale": "paired"}


def fit_rescale(table: Mapping[str, float | None],
                here: Mapping[str, float | None]) -> tuple[tuple[float, float], str]:
    """The affine map ``a·x + b`` taking the table's anchors onto the ones measured here, and its kind.

    Through both anchors (``affine``) where the table has an all-merged anchor and it is at least
    :data:`MIN_ANCHOR_SPREAD` below the unpruned one (and the slope comes out positive); otherwise the
    ratio of the unpruned anchors (``ratio``, b = 0).
    """
    u_t, m_t = table["unpruned_ms"], table.get("merged_ms")
    u_h, m_h = here["unpruned_ms"], here.get("merged_ms")
    if m_t and m_h and (u_t - m_t) / u_t >= MIN_ANCHOR_SPREAD:
        a = (u_h - m_h) / (u_t - m_t)
        if a > 0:
            return (a, u_h - a * u_t), "affine"
    return (u_h / u_t, 0.0), "ratio"


def _stored_rescale(table: LatencyTable,
                    fingerprint_id: str) -> tuple[tuple[float, float] | None, str | None]:
    """The rescaling ``lut anchor`` stored for ``fingerprint_id``, if it still maps the table's anchors
    (a table profiled again since has other anchors: its old rescalings are stale and ignored)."""
    record = table.meta.rescalings.get(fingerprint_id)
    if not isinstance(record, Mapping):
        return None, None
    try:
        a, b = float(record["a"]), float(record["b"])
        mapped = float(record["table"]["unpruned_ms"])
        current = table_anchors(table)["unpruned_ms"]
    except (KeyError, TypeError, ValueError, TableError):
        return None, None
    if not (math.isfinite(a) and math.isfinite(b) and a > 0 and math.isclose(mapped, current, rel_tol=1e-9)):
        return None, None
    return (a, b), str(record.get("date", "an unknown date"))


def describe_record(record: Mapping[str, Any]) -> str:
    """One line for a stored rescaling (``lut anchor``'s summary)."""
    here, mapped = record["here"], record["table"]
    merged = (f"; all-merged {here['merged_ms']:.3f} ms here, {mapped['merged_ms']:.3f} ms in the table"
              if here.get("merged_ms") and mapped.get("merged_ms") else "")
    b = record["b"]
    return (f"unpruned {here['unpruned_ms']:.3f} ms here, {mapped['unpruned_ms']:.3f} ms in the table"
            f"{merged} "
            f"→ predictions here = {record['a']:.4f} × the table's {'+' if b >= 0 else '−'} {abs(b):.3f} ms "
            f"({record['kind']})")
