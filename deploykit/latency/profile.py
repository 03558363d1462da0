"""Profiling a model on a target: one latency-table entry per distinct block and form, per fixed part.

:func:`find_entries` splits a model into what the latency table prices:

- **blocks** (through :class:`deploykit.prune.PrunableNet`, so every registered family works):
  blocks with the same family, type, input/output shape and structure (module repr, parameter
  shapes; weights do not matter) share one entry, timed once in original and once in merged form;
- **fixed parts**: the modules outside every block that contain no block (stem, downsampling,
  norm, head). Consecutive fixed modules where each one consumes the previous one's output (a
  ResNet's conv1 → bn1 → act1 → maxpool) are timed together, as the runtime would fuse them;
  modules that leave their input unchanged (Identity, Dropout in eval) are left out;
- the whole original **model**, end to end, for reference.

:func:`profile` exports every entry to ONNX, times it on the target (or estimates it from the
target's peak figures with ``estimate=True``) and writes the table after every entry, so an
interrupted profile resumes where it stopped. A measured profile then ends with its end-to-end phase
(:mod:`deploykit.latency.endtoend`): whole subnets measured, the predictor fitted, its held-out
fidelity stored — resumable too.

Every measurement goes through one :class:`deploykit.measure.host.MeasureHost` (``host``): this
machine, or a device agent (``--device URL``), whose runtime, device string and fingerprint the table
then records, with the agent's URL (``device_url``) — never the client's.
"""

from __future__ import annotations

import hashlib
import math
import os
import re
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, fx, nn

from deploykit.checks import require_int
from deploykit.clock import utc_now
from deploykit.errors import ConfigError, DeployKitError, ModelError, RuntimeUnavailableError, TableError
from deploykit.fileio import check_output_files, write_json_atomic
from deploykit.latency.anchor import anchor_figures, export_anchor_models, interleaved
from deploykit.latency.endtoend import finish_profile, points_path
from deploykit.latency.estimate import Roofline, estimate_onnx
from deploykit.latency.options import EndToEndOptions, pairs_by_default
from deploykit.latency.probe import ProbeResult, chosen_robust_cv, settle
from deploykit.latency.sentinel import NOISE_WIDTH, Sentinel, SentinelPolicy, for_process_noise
from deploykit.latency.subnets import Measurer, SubnetMeasurer
from deploykit.latency.table import (
    ENVIRONMENT,
    SETTINGS,
    LatencyTable,
    TableMeta,
    layout_of,
    meta_path,
    read_meta,
    table_path,
)
from deploykit.macs import count_macs, eval_mode
from deploykit.measure.fingerprint import Fingerprint, differences
from deploykit.measure.host import MeasureHost, host_or_local
from deploykit.progress import Progress, silent
from deploykit.prune import prunable
from deploykit.runsettings import RunSettings
from deploykit.shapes import check_input_size, format_shape
from deploykit.subnet import format_block_ranges, format_indices

PROFILE_ANCHOR_ROUNDS = 2  # interleaved rounds of the two speed anchors at the end of a profile


# --- entries ---------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Entry:
    """One thing to time: a block signature in one form, a fixed part, or the whole model."""

    key: str
    kind: str                      # block | fixed | model
    form: str                      # original | merged | fixed | model
    name: str                      # first block sharing the entry / the fixed part / the model name
    family: str
    block_type: str
    indices: tuple[int, ...]       # blocks sharing the entry (block rows only)
    count: int                     # how many times the entry occurs in the model
    in_shape: tuple[int, ...]      # without the batch dimension
    out_shape: tuple[int, ...]
    macs: int                      # per sample
    module: nn.Module = field(compare=False, repr=False)

    def label(self) -> str:
        what = self.family if self.kind == "block" else self.block_type
        shared = f", ×{self.count}" if self.count > 1 else ""
        return f"{self.form} {self.name} ({what} {format_shape(self.in_shape)}{shared})"

    def row(self, stats: dict[str, float], *, source: str) -> dict[str, Any]:
        """The table row for this entry with the given statistics."""
        return {
            "key": self.key, "kind": self.kind, "form": self.form, "name": self.name,
            "family": self.family, "block_type": self.block_type, "indices": format_indices(self.indices),
            "count": self.count, "in_shape": format_shape(self.in_shape),
            "out_shape": format_shape(self.out_shape), "macs": self.macs, **stats, "source": source,
            "measured_at": utc_now(),
        }


def find_entries(model: nn.Module, *, model_name: str, input_size: int | tuple[int, int] = (224, 224),
                 in_chans: int = 3) -> list[Entry]:
    """Every entry of ``model`` in execution order (each block group: original, then merged), then
    the whole model. Raises ModelError when the model has no block of a supported family."""
    size = check_input_size(input_size, error=ModelError)
    input_shape = (in_chans, *size)
    net = prunable(model, input_size=size, in_chans=in_chans).eval()
    block_names = [info.name for info in net.blocks]
    segments, positions, out_shape = _trace_fixed(model, block_names, input_shape)
    placed: list[tuple[int, list[Entry]]] = [(position, [entry]) for position, entry in segments]
    for position, group in _block_groups(model, net, positions):
        placed.append((position, group))
    placed.sort(key=lambda item: item[0])
    entries = [entry for _, group in placed for entry in group]
    entries.append(Entry(key="model", kind="model", form="model", name=model_name, family="",
                         block_type=type(model).__name__, indices=(), count=1, in_shape=input_shape,
                         out_shape=out_shape, macs=count_macs(model, input_shape), module=model))
    return entries


def structure_hash(module: nn.Module, in_shape: Sequence[int]) -> str:
    """A hash of what decides a module's latency: its structure and input shape, not its weights."""
    text = _EVAL_IDENTITY.sub("Identity()", repr(module))
    if isinstance(module, fx.GraphModule):
        text += module.code
    tensors = [(name, tuple(t.shape), str(t.dtype))
               for name, t in (*module.named_parameters(), *module.named_buffers())]
    text += repr(tensors) + repr(tuple(in_shape))
    return hashlib.sha1(text.encode()).hexdigest()[:10]


# Drop-path and dropout differ from block to block in timm models (a rate, or Identity where the rate
# is 0) but do nothing in eval mode, where every entry is timed.
_EVAL_IDENTITY = re.compile(r"\b(?:DropPath|DropBlock2d|Dropout\w*)\([^()]*\)")


def _block_groups(model: nn.Module, net, positions: dict[str, int]) -> Iterator[tuple[int, list[Entry]]]:
    groups: dict[str, list] = {}
    with torch.no_grad():
        for info in net.blocks:
            original = model.get_submodule(info.name)
            merged = net.wrapper(info.index).merged().eval() if info.prunable else None
            signature = structure_hash(original, info.in_shape)
            if merged is not None:
                signature += structure_hash(merged, info.in_shape)
            digest = hashlib.sha1(f"{info.family}{info.block_type}{info.out_shape}{signature}".encode())
            key = f"{info.family}/{format_shape(info.in_shape)}/{digest.hexdigest()[:10]}"
            groups.setdefault(key, []).append((info, original, merged))
    for key, members in groups.items():
        info, original, merged = members[0]
        indices = tuple(member[0].index for member in members)
        common = dict(key=key, kind="block", name=info.name, family=info.family, block_type=info.block_type,
                      indices=indices, count=len(indices), in_shape=info.in_shape, out_shape=info.out_shape)
        group = [Entry(form="original", macs=info.macs, module=original, **common)]
        if merged is not None:
            group.append(Entry(form="merged", macs=info.merged_macs, module=merged, **common))
        yield positions[info.name], group


class _Member:
    """One fixed module as seen during the traced forward."""

    def __init__(self, name: str, module: nn.Module, in_shape: tuple[int, ...]):
        self.name, self.module, self.in_shape = name, module, in_shape
        self.out_shape: tuple[int, ...] | None = None  # stays None unless it returns one tensor
        self.identity = False


def _fixed_candidates(model: nn.Module, block_names: Sequence[str]) -> list[tuple[str, nn.Module]]:
    """Modules outside every block that contain no block: the coarsest such split of the model."""
    blocks = set(block_names)
    found: list[tuple[str, nn.Module]] = []

    def walk(module: nn.Module, prefix: str) -> None:
        for child_name, child in module.named_children():
            name = prefix + child_name
            if name in blocks:
                continue
            if any(block.startswith(name + ".") for block in blocks):
                walk(child, name + ".")
            else:
                found.append((name, child))

    walk(model, "")
    return found


def _trace_fixed(model: nn.Module, block_names: Sequence[str], input_shape: tuple[int, ...]):
    """Run one forward with hooks: the fixed segments (position, Entry), block positions, output shape."""
    segments: list[tuple[int, list[_Member]]] = []
    positions: dict[str, int] = {}
    state: dict[str, Any] = {"last": None, "version": -1, "open": None, "step": 0, "stash": {}}

    def step() -> int:
        state["step"] += 1
        return state["step"]

    def fixed_pre(name: str):
        def hook(module, args, kwargs):
            single = len(args) == 1 and not kwargs and isinstance(args[0], Tensor)
            if not single:  # cannot be timed alone with one input; the model row still covers it
                state["open"], state["last"] = None, None
                return
            member = _Member(name, module, tuple(args[0].shape[1:]))
            state["stash"][id(module)] = (member, args[0], args[0].detach().clone())
            # Chained only if it gets the previous fixed module's output untouched (no functional
            # op in between, not even an in-place one: the version counter would have moved).
            x = args[0]
            if state["open"] is not None and x is state["last"] and x._version == state["version"]:
                state["open"].append(member)
            else:
                state["open"] = [member]
                segments.append((step(), state["open"]))
        return hook

    def fixed_post(module, args, kwargs, output):
        stashed = state["stash"].pop(id(module), None)
        if stashed is None:
            return
        member, given, before = stashed
        if not isinstance(output, Tensor):
            state["open"], state["last"] = None, None
            return
        member.out_shape = tuple(output.shape[1:])
        member.identity = output is given and torch.equal(output, before)
        state["last"], state["version"] = output, output._version

    def block_pre(name: str):
        def hook(module, args):
            positions.setdefault(name, step())
            state["open"], state["last"] = None, None
        return hook

    handles = []
    try:
        for name, module in _fixed_candidates(model, block_names):
            handles.append(module.register_forward_pre_hook(fixed_pre(name), with_kwargs=True))
            handles.append(module.register_forward_hook(fixed_post, with_kwargs=True))
        for name in block_names:
            handles.append(model.get_submodule(name).register_forward_pre_hook(block_pre(name)))
        param = next(model.parameters())
        x = torch.randn(1, *input_shape, generator=torch.Generator().manual_seed(0)).to(param)
        with torch.no_grad(), eval_mode(model):
            out = model(x)
    except (RuntimeError, ValueError) as error:
        raise ModelError(f"the model does not run at input shape {input_shape}: {error}") from None
    finally:
        for handle in handles:
            handle.remove()
    entries = []
    for position, members in segments:
        entry = _fixed_entry([m for m in members if m.out_shape is not None and not m.identity])
        if entry is not None:
            entries.append((position, entry))
    return _merge_repeats(entries), positions, tuple(out.shape[1:])


def _fixed_entry(members: list[_Member]) -> Entry | None:
    if not members:
        return None
    module = members[0].module if len(members) == 1 else nn.Sequential(*(m.module for m in members))
    name = "+".join(m.name for m in members)
    in_shape, out_shape = members[0].in_shape, members[-1].out_shape
    return Entry(key=f"fixed/{name}/{structure_hash(module, in_shape)}", kind="fixed", form="fixed",
                 name=name, family="", block_type=type(module).__name__, indices=(), count=1,
                 in_shape=in_shape, out_shape=out_shape, macs=count_macs(module, in_shape), module=module)


def _merge_repeats(entries: list[tuple[int, Entry]]) -> list[tuple[int, Entry]]:
    """A fixed part called several times on the same shape is one entry with its count."""
    merged: dict[str, tuple[int, Entry]] = {}
    for position, entry in entries:
        if entry.key in merged:
            first, seen = merged[entry.key]
            merged[entry.key] = (first, replace(seen, count=seen.count + 1))
        else:
            merged[entry.key] = (position, entry)
    return list(merged.values())


# --- profiling -------------------------------------------------------------------------------------

@dataclass
class ProfileResult:
    """What :func:`profile` did."""

    table: LatencyTable
    path: Path
    entries: int
    done_now: int
    kept: int
    elapsed_s: float

    def summary(self) -> str:
        """What was written and where, and what the table says about the unpruned model."""
        rows = self.table.rows
        kinds = ", ".join(f"{(rows['kind'] == k).sum()} {k}" for k in ("fixed", "block", "model"))
        verb = "estimated" if self.table.meta.mode == "estimated" else "measured"
        lines = [f"wrote {self.path} and {meta_path(self.path).name}: {len(rows)} rows ({kinds}); "
                 f"{self.done_now} {verb} now, {self.kept} kept from before, in {self.elapsed_s:.1f} s"]
        model = self.table.model_latency()
        if model is not None and self.table.block_indices:
            full = self.table.predict([])
            merged = self.table.predict(self.table.prunable_indices)
            how = "fitted predictor" if self.table.meta.predictor is not None else "isolated sum"
            lines.append(f"{self.table.meta.model} end to end: {model:.3f} ms {verb}; the table ({how}) "
                         f"predicts {full:.3f} ms unpruned and {merged:.3f} ms with all "
                         f"{len(self.table.prunable_indices)} prunable blocks merged")
        lines.append(self.table.fidelity_line())
        return "\n".join(lines)


def default_table_path(model_name: str, target_name: str, input_size: tuple[int, int], batch: int, *,
                       estimate: bool = False, root: str | Path = "latency_tables") -> Path:
    """``latency_tables/<target>/<model>_<size>_b<batch>[_estimated].csv``."""
    size = str(input_size[0]) if input_size[0] == input_size[1] else f"{input_size[0]}x{input_size[1]}"
    suffix = "_estimated" if estimate else ""
    return Path(root) / target_name / f"{model_name}_{size}_b{batch}{suffix}.csv"


def profile(model_name: str, target: Any, *, input_size: int | tuple[int, int] | None = None,
            batch: int | None = None, out: str | Path | None = None, protocol: Any = None,
            estimate: bool = False, force: bool = False, allow_mismatch: bool = False,
            progress: Progress | None = None, model: nn.Module | None = None,
            opset: int | None = None, sentinel: SentinelPolicy | None = None,
            anchor_rounds: int = PROFILE_ANCHOR_ROUNDS, end_to_end: EndToEndOptions | None = None,
            measure_subnet: Measurer | None = None, host: MeasureHost | None = None) -> ProfileResult:
    """Build (or resume) the latency table of ``model_name`` on ``target``.

    ``input_size`` and ``batch`` default to the target's. Measured tables time every entry with the
    target's runtime under ``protocol`` (:class:`deploykit.protocol.Protocol`), watched by a sentinel
    (``sentinel``, see :mod:`deploykit.latency.sentinel`), then the speed anchors: the unpruned
    and the all-merged model, interleaved over ``anchor_rounds`` rounds; the metadata records this
    machine's fingerprint. A measured profile ends with ``end_to_end`` (:class:`EndToEndOptions`;
    default: the fitted predictor, 10 random fit and 10 held-out subnets): whole subnets are measured
    (by ``measure_subnet``, default: merged, exported and timed like the entries), the predictor is
    fitted and its held-out figures stored; only then is the table ``complete``. With
    ``estimate=True`` every entry is a roofline estimate from the target's peak figures instead.

    An existing table at ``out`` is resumed when its settings match and refused (TableError naming the
    differing settings) when they do not. With ``force`` the new table (and its end-to-end points) is
    built beside it (``.NAME.pending.csv``) and replaces it only once complete, so an interrupted
    ``force`` run leaves the old table intact and the next one resumes the new table.
    ``allow_mismatch`` lets a resume go on where only the machine differs (its fingerprint). ``model``
    gives the module to profile instead of creating ``model_name`` with timm. ``host`` is where every
    measurement runs (default: this machine; a device agent for ``--device URL``): the target must be
    available there, not necessarily here.
    """
    from deploykit.runtimes import check_target

    check_target(target)  # a target its runtime cannot serve as written: one line naming the key
    started = time.perf_counter()
    say = progress or silent
    host = host_or_local(host)
    size = check_input_size(input_size if input_size is not None else target.input_size, error=ModelError)
    batch = require_int("batch", batch if batch is not None else target.batch, least=1)
    if estimate:
        if host.url is not None:
            raise ConfigError("--estimate measures nothing: it takes no --device")
        roofline = Roofline.from_target(target)
        meta = _estimated_meta(model_name, target, size, batch, roofline)
        time_entry = _estimator(roofline)
    else:
        protocol = _protocol(protocol)
        target = protocol.apply_settings(target)
        _require_available(target, host)
    path = table_path(out) if out is not None else default_table_path(model_name, target.name, size, batch,
                                                                     estimate=estimate)
    options = end_to_end if end_to_end is not None else EndToEndOptions()
    check_output_files(path, meta_path(path))  # before measuring anything, not at the first entry
    if model is None:
        from deploykit.models import create_model

        model = create_model(model_name, input_size=size)
    entries = find_entries(model.eval(), model_name=model_name, input_size=size)
    probe = None
    if not estimate:
        target, probe = _settle_settings(target, entries[-1], batch=batch, protocol=protocol, host=host,
                                         resumed=_resumed_settings(path, force=force), opset=opset, say=say)
        meta = _measured_meta(model_name, target, size, batch, protocol, host, probe=probe)
        time_entry = _measurer(target, protocol, host)
        if host.url is not None:
            say(f"measuring on {host.describe()} ({meta.device_string}, {meta.runtime} "
                f"{meta.runtime_version}; fingerprint {meta.fingerprint['id']})")
    table, work_path = _open_table(path, meta, force=force, allow_mismatch=allow_mismatch, say=say)
    try:
        _check_same_model(table, entries, work_path)
    except TableError:
        if work_path == path:
            raise
        say("--force: starting the new table over (its rows are from another model definition)")
        table = LatencyTable(meta=meta, path=work_path)
    if table.rows.empty:  # end-to-end points are measured after every row: without rows they are stale
        points_path(work_path).unlink(missing_ok=True)
    table = table.with_meta(layout=_layout(entries), device_url=host.url)
    spent_before = table.meta.profile_s

    def save(table: LatencyTable, **changes) -> LatencyTable:
        table = table.with_meta(profile_s=spent_before + time.perf_counter() - started, **changes)
        table.write(work_path)
        return table

    with tempfile.TemporaryDirectory(prefix="deploykit-profile-") as folder:
        runner = _Runner(table, entries, save=save, time_entry=time_entry, batch=batch, work=Path(folder),
                         opset=opset, mode=meta.mode, say=say)
        todo = runner.announce_kept()
        if meta.mode == "measured":
            changes = _measure_watched(runner, todo, model_name, target, protocol, size, batch, model,
                                       _sentinel_policy(sentinel, table.meta, say), anchor_rounds, say, host)
            table = save(runner.table, **changes)
            if measure_subnet is None:  # an injected measurer pairs or not by itself
                options = replace(options, paired=_paired(options, target, host))
            measure = measure_subnet or _LazySubnets(lambda: _subnet_measurer(
                model_name, size, batch, Path(folder), model, target, protocol, host, options.paired, say))
            table = finish_profile(table, options=options, measure=measure,
                                   points_file=points_path(work_path), progress=say, load=host.load_1min)
        else:  # estimates are additive by construction; nothing to measure end to end
            for number, entry in todo:
                runner.measure(number, entry)
            table = runner.table
        table = save(table, complete=True)
    if work_path != path:
        table = _swap_in(table, work_path, path, say)
    return ProfileResult(table=table, path=path, entries=len(entries), done_now=runner.done,
                         kept=len(entries) - len(todo), elapsed_s=time.perf_counter() - started)



class _Runner:
    """Measures entries into the table, writing it after each one (and again for a drift window)."""

    def __init__(self, table: LatencyTable, entries: list[Entry], *, save, time_entry, batch: int, work: Path,
                 opset: int | None, mode: str, say: Progress):
        self.table, self.entries, self.save, self.time_entry = table, entries, save, time_entry
        self.batch, self.work, self.opset, self.mode, self.say = batch, work, opset, mode, say
        self.width = len(str(len(entries)))
        self.done = 0
        self._model_file: Path | None = None

    def head(self, number: int, entry: Entry) -> str:
        return f"[{number:>{self.width}}/{len(self.entries)}] {entry.label()}"

    def announce_kept(self) -> list[tuple[int, Entry]]:
        """Progress which entries the table already has; the others, numbered, in order."""
        todo = []
        for number, entry in enumerate(self.entries, 1):
            if self.table.has(entry.key, entry.form):
                self.say(f"{self.head(number, entry)} already in the table")
            else:
                todo.append((number, entry))
        return todo

    def model_file(self) -> Path:
        """The whole model as ONNX, exported once (the sentinel, the model row and the anchor use it)."""
        if self._model_file is None:
            entry = self.entries[-1]
            self._model_file = _export(entry, self.batch, self.work / "model.onnx", self.opset)
        return self._model_file

    def measure(self, number: int, entry: Entry, *, again: bool = False) -> None:
        began = time.perf_counter()
        is_model = entry.kind == "model"
        onnx_file = self.model_file() if is_model else _export(entry, self.batch,
                                                               self.work / f"entry{number}.onnx", self.opset)
        stats = self.time_entry(onnx_file, (self.batch, *entry.in_shape))
        if not is_model:
            onnx_file.unlink()
        if again:
            self.table.discard(entry.key, entry.form)
        self.table.add(entry.row(stats, source=self.mode))
        self.table = self.save(self.table)
        self.done += 0 if again else 1
        note = " (again)" if again else ""
        self.say(f"{self.head(number, entry)}{note} {_shown_stats(stats, self.mode)} "
                 f"[{time.perf_counter() - began:.1f} s]")


def _sentinel_policy(asked: SentinelPolicy | None, meta: TableMeta, say: Progress) -> SentinelPolicy:
    """The sentinel's policy, its drift limit no tighter than the run settings' own fresh-process noise
    where the settings probe measured it (:func:`deploykit.latency.sentinel.for_process_noise`)."""
    policy = asked or SentinelPolicy()
    noise = chosen_robust_cv(meta.settings_probe)
    widened = for_process_noise(policy, noise)
    if widened != policy:
        say(f"sentinel: drift limit ±{widened.max_drift:.0%}, {NOISE_WIDTH:g} × the robust cv ({noise:.1%}) "
            f"of the chosen settings' fresh processes in the settings probe (±{policy.max_drift:.0%} asked)")
    return widened


def _measure_watched(runner: _Runner, todo: list[tuple[int, Entry]], model_name: str, target: Any, protocol,
                     size: tuple[int, int], batch: int, model: nn.Module, policy: SentinelPolicy,
                     anchor_rounds: int, say: Progress, host: MeasureHost) -> dict[str, Any]:
    """Measure ``todo`` under the sentinel, then the anchors; the metadata changes to save."""
    def time_model() -> float:
        return host.measure(runner.model_file(), target=target, protocol=protocol,
                            input_shape=(batch, *runner.entries[-1].in_shape)).median_ms

    def redo(window: list[tuple[int, Entry]]) -> None:
        for number, entry in window:
            runner.measure(number, entry, again=True)

    run: dict[str, Any] = {"started": utc_now(),
                           "load_start": host.load_average(), "measured": len(todo), "device_url": host.url}
    measured_any = bool(todo)
    if todo:
        watch = Sentinel(measure=time_model, policy=policy, say=say, load=host.load_average,
                         snapshot=host.process_snapshot)
        whole = [(number, entry) for number, entry in todo if entry.kind == "model"]
        if whole:  # the model row first: it is the sentinel's start value, measured once
            runner.measure(*whole[0])
            todo = [(number, entry) for number, entry in todo if entry.kind != "model"]
            row = runner.table.model_latency()
            start = watch.start(row, item=whole[0])
            more = policy.start_samples - 1
            say(f"sentinel: the whole model's row ({row:.3f} ms)"
                + (f" and {more} more measurement(s): the start value is their median, {start:.3f} ms" if more
                   else " is the start value"))
        else:
            say(f"sentinel: the whole model measures {watch.start():.3f} ms at the start")
        for number, entry in todo:
            runner.measure(number, entry)
            watch.add((number, entry))
            if watch.due() or number == todo[-1][0]:
                watch.settle(redo, lambda window: format_block_ranges(n for n, _ in window))
        run["sentinel"] = watch.record()
    changes: dict[str, Any] = {}
    if runner.table.meta.anchors is None or measured_any:
        changes["anchors"] = _anchors(runner, model_name, target, protocol, size, batch, model, anchor_rounds,
                                      say, host)
    run["load_end"] = host.load_average()
    old = runner.table.meta.conditions or {}
    threads = protocol.resolve_threads(target.threads)
    changes["conditions"] = {"affinity": host.affinity(threads), "runs": [*old.get("runs", []), run]}
    return changes


def _anchors(runner: _Runner, model_name: str, target: Any, protocol, size: tuple[int, int], batch: int,
             model: nn.Module, rounds: int, say: Progress, host: MeasureHost) -> dict[str, Any]:
    """The speed anchors: the unpruned and the all-merged model, interleaved, ``rounds`` rounds."""
    files, pruned = export_anchor_models(model_name, input_size=size, batch=batch, work=runner.work,
                                         model=model, unpruned=runner.model_file())
    shape = (batch, *runner.entries[-1].in_shape)
    runs = interleaved(files, rounds=rounds, say=lambda line: say(f"anchor {line}"),
                       time_onnx=lambda path: host.measure(path, target=target, protocol=protocol,
                                                           input_shape=shape))
    return anchor_figures(runs, pruned=pruned)


def _paired(options: EndToEndOptions, target, host: MeasureHost) -> bool:
    """Whether the end-to-end phase is paired: as told, else :func:`pairs_by_default`."""
    return options.paired if options.paired is not None else pairs_by_default(target, local=host.url is None)


def _subnet_measurer(model_name: str, size, batch: int, work: Path, model, target, protocol,
                     host: MeasureHost, paired: bool, say: Progress) -> SubnetMeasurer:
    """The end-to-end phase's measurer, built when its first subnet is measured."""
    if paired:
        say(f"end-to-end phase paired ({target.settings.describe()}; each subnet timed as a ratio to the "
            "unpruned model in its process; --no-paired times each subnet alone)")
    return SubnetMeasurer(
        model_name, input_size=size, batch=batch, work=work, model=model,
        time_onnx=lambda onnx, shape: host.measure(onnx, target=target, protocol=protocol, input_shape=shape),
        time_paired=(lambda onnx, reference, shape: host.measure_paired(
            onnx, reference, target=target, protocol=protocol, input_shape=shape)) if paired else None)


class _LazySubnets:
    """Builds the subnet measurer (a copy of the model, traced) only once a subnet needs measuring."""

    def __init__(self, build: Callable[[], Measurer]):
        self.build, self.measurer = build, None

    def __call__(self, pruned: tuple[int, ...]):
        return self._built()(pruned)

    def export_ahead(self, subsets) -> None:
        self._built().export_ahead(subsets)

    def _built(self) -> Measurer:
        if self.measurer is None:
            self.measurer = self.build()
        return self.measurer


def _layout(entries: list[Entry]) -> dict[str, Any]:
    """What the table must cover: the blocks, the prunable ones, the fixed parts."""
    blocks = [e for e in entries if e.kind == "block"]
    return layout_of(blocks=len({i for e in blocks for i in e.indices}),
                     prunable={i for e in blocks if e.form == "merged" for i in e.indices},
                     fixed=[e.name for e in entries if e.kind == "fixed"])



def _protocol(protocol: Any):
    from deploykit.protocol import Protocol

    if protocol is None:
        return Protocol()
    if not isinstance(protocol, Protocol):
        raise ConfigError(f"protocol must be a Protocol, got {type(protocol).__name__}")
    return protocol


def _require_available(target: Any, host: MeasureHost) -> None:
    """Refuse a target whose runtime or hardware is absent where ``host`` measures (asked of the device
    agent with ``--device``); the reason carries the install hint."""
    ok, reason = host.availability(target)
    if not ok:
        other = ("" if host.url is not None
                 else "--device URL measures on a device agent (`deploykit serve`) that has it, ")
        raise RuntimeUnavailableError(f"cannot profile on target {target.name} {host.where}: {reason}; "
                                      f"{other}--estimate builds a roofline table from its peak figures "
                                      "instead")


def _base_meta(model_name: str, target: Any, size: tuple[int, int], batch: int) -> dict[str, Any]:
    from deploykit import __version__

    return dict(model=model_name, target=target.name, device=target.device, runtime=target.runtime,
                provider=target.provider, precision=target.precision, batch=batch, input_size=size,
                date=utc_now(),
                deploykit_version=__version__)


def _measured_meta(model_name: str, target: Any, size, batch: int, protocol, host: MeasureHost, *,
                   probe: ProbeResult | None = None) -> TableMeta:
    """The metadata of a table measured where ``host`` measures: its runtime, device, fingerprint and
    the run settings (``target``'s, settled) with the probe that chose them."""
    info = host.runtime_info(target)
    here = host.fingerprint(target, threads=target.threads)
    return TableMeta(**_base_meta(model_name, target, size, batch), mode="measured",
                     device_string=info["device"], runtime_version=info["runtime_version"],
                     threads=target.threads, protocol=protocol.as_dict(), fingerprint=here.stored(),
                     device_url=host.url, run_settings=target.settings.as_dict(),
                     settings_probe=probe.as_dict() if probe is not None else None)


def _resumed_settings(path: Path, *, force: bool) -> RunSettings | None:
    """The run settings of the table this profile would resume (the pending one with ``force``)."""
    candidate = pending_path(path) if force else path
    if not meta_path(candidate).exists():
        return None
    try:
        meta = read_meta(candidate)
    except TableError:
        return None  # _open_table says what is wrong with it
    if meta.mode != "measured" and not force:  # before any probe: this table is never resumed here
        raise TableError(f"{path} is a {meta.mode} table and this run is measured: measured and "
                         "estimated rows never mix; use another --out, or --force to start it over")
    return meta.measured_with() if meta.run_settings is not None else None


def _settle_settings(target: Any, model_entry: Entry, *, batch: int, protocol, host: MeasureHost,
                     resumed: RunSettings | None, opset: int | None,
                     say: Progress) -> tuple[Any, ProbeResult | None]:
    """``target`` with every run setting fixed: a resumed table's, else the probe's choice for what the
    target leaves to ``auto`` (printed as a small table), else the target's own."""
    if resumed is not None and target.auto_settings:
        say(f"run settings of the table being resumed: {resumed.describe()}")
        return target.with_settings(resumed), None
    if not target.auto_settings:
        return target.with_settings(target.settings), None
    with tempfile.TemporaryDirectory(prefix="deploykit-probe-") as folder:
        onnx_file = _export(model_entry, batch, Path(folder) / "model.onnx", opset)
        return settle(target, onnx_file, input_shape=(batch, *model_entry.in_shape), protocol=protocol,
                      host=host, say=say)


def _estimated_meta(model_name: str, target: Any, size, batch: int, roofline: Roofline) -> TableMeta:
    return TableMeta(**_base_meta(model_name, target, size, batch), mode="estimated",
                     device_string=f"roofline estimate for {target.device}",
                     runtime_version="none (estimated)", threads=None, protocol={},
                     estimate=roofline.as_dict())


def _measurer(target: Any, protocol, host: MeasureHost) -> Callable[[Path, tuple[int, ...]], dict[str, Any]]:
    def time_entry(onnx_file: Path, input_shape: tuple[int, ...]) -> dict[str, float]:
        result = host.measure(onnx_file, target=target, protocol=protocol, input_shape=input_shape)
        return measurement_stats(result)
    return time_entry


_STAT_NAMES = ("median_ms", "p90_ms", "mean_ms", "std_ms", "cv", "n", "repeats", "compile_s", "first_run_ms",
               "ci_low_ms", "ci_high_ms", "ci_half_width", "others_cpu", "contended")


def measurement_stats(result) -> dict[str, float]:
    """A measurement's figures as a table row holds them (floats; ``contended`` as 1.0 or 0.0)."""
    return {name: float(getattr(result, name)) for name in _STAT_NAMES}


def _estimator(roofline: Roofline) -> Callable[[Path, tuple[int, ...]], dict[str, float]]:
    def time_entry(onnx_file: Path, input_shape: tuple[int, ...]) -> dict[str, float]:
        ms = estimate_onnx(onnx_file, roofline).ms
        return {"median_ms": ms, "p90_ms": ms, "mean_ms": ms, "std_ms": 0.0, "cv": 0.0, "n": 0,
                "repeats": 0, "compile_s": float("nan"), "first_run_ms": float("nan")}
    return time_entry


def _export(entry: Entry, batch: int, path: Path, opset: int | None) -> Path:
    from deploykit.export import export_onnx

    try:
        return export_onnx(entry.module, (batch, *entry.in_shape), path, opset=opset)
    except DeployKitError as error:
        raise type(error)(f"{entry.form} {entry.name}: {error}") from None


def _shown_stats(stats: dict[str, float], mode: str) -> str:
    if mode == "estimated":
        return f"{stats['median_ms']:.4f} ms (estimated)"
    half = stats.get("ci_half_width", math.nan)
    interval = f"±{half * 100:.1f}% CI, " if math.isfinite(half) else ""
    return f"{stats['median_ms']:.3f} ms ({interval}cv {stats['cv'] * 100:.0f}%, n {int(stats['n'])})"


# --- resuming --------------------------------------------------------------------------------------

def pending_path(path: Path) -> Path:
    """Where ``--force`` builds the new table beside ``path`` until it is complete."""
    return path.with_name(f".{path.stem}.pending.csv")


def _open_table(path: Path, meta: TableMeta, *, force: bool, allow_mismatch: bool,
                say: Progress) -> tuple[LatencyTable, Path]:
    """The table to continue and the path to write it to (``path``, or the pending one with ``force``)."""
    exists = path.exists() or meta_path(path).exists()
    if not exists:
        return LatencyTable(meta=meta, path=path), path
    if not force:
        return _resume(path, meta, allow_mismatch=allow_mismatch, say=say, pending=pending_path(path)), path
    pending = pending_path(path)
    if pending.exists() or meta_path(pending).exists():
        try:
            table = _resume(pending, meta, allow_mismatch=False, say=say, pending=None)
            say(f"--force: resuming the new table beside {path} ({pending.name}); {path} stays as it is "
                "until the new one is complete")
            return table, pending
        except TableError as error:
            say(f"--force: starting the new table over ({error})")
    else:
        say(f"--force: building the new table beside {path} ({pending.name}); {path} stays as it is until "
            "the new one is complete")
    return LatencyTable(meta=meta, path=pending), pending


def _resume(path: Path, meta: TableMeta, *, allow_mismatch: bool, say: Progress,
            pending: Path | None) -> LatencyTable:
    try:
        # No CSV yet: interrupted between the first metadata write and the first rows.
        table = LatencyTable.read(path) if path.exists() else LatencyTable(meta=read_meta(path), path=path)
    except TableError as error:
        raise TableError(f"cannot resume: {error} (--force starts the table over)") from None
    changed = _differences(table.meta, meta)
    if not changed:
        if not table.rows.empty:
            say(f"resuming {path}: {len(table)} rows already there")
        return table
    if table.meta.mode != meta.mode:
        raise TableError(f"{path} is a {table.meta.mode} table and this run is {meta.mode}: measured and "
                         "estimated rows never mix; use another --out, or --force to start it over")
    if allow_mismatch and all(name in ENVIRONMENT for name in changed):
        note = f"resumed on a different machine: {'; '.join(changed.values())}"
        say(f"warning: {note} (--allow-mismatch)")
        return table.with_meta(notes=(*table.meta.notes, note), fingerprint=meta.fingerprint)
    detail = "; ".join(changed.values())
    unfinished = (f"; an unfinished --force run is at {pending.name}: --force resumes it"
                  if pending is not None and (pending.exists() or meta_path(pending).exists()) else "")
    raise TableError(f"{path} was profiled with other settings ({detail}); use the same settings to "
                     f"resume it, another --out, or --force to start it over{unfinished}")


def _swap_in(table: LatencyTable, pending: Path, path: Path, say: Progress) -> LatencyTable:
    """Replace the old table by the complete new one: the CSV, then the metadata (each atomically)."""
    table = table.with_meta(**_points_named_for(table.meta, path))
    write_json_atomic(meta_path(pending), table.meta.as_dict())
    os.replace(pending, path)
    os.replace(meta_path(pending), meta_path(path))
    if points_path(pending).exists():  # the end-to-end points belong to the new table
        os.replace(points_path(pending), points_path(path))
    else:
        points_path(path).unlink(missing_ok=True)
    say(f"--force: the new table replaced {path}")
    return LatencyTable(meta=table.meta, rows=table.rows, path=path)


def _points_named_for(meta: TableMeta, path: Path) -> dict[str, Any]:
    """The metadata records that name the end-to-end points file, naming the one beside ``path``
    (a ``--force`` profile wrote them under the pending table's name)."""
    name = points_path(path).name
    changes: dict[str, Any] = {}
    if meta.fidelity and "points_file" in meta.fidelity:
        changes["fidelity"] = {**meta.fidelity, "points_file": name}
    fit = (meta.predictor or {}).get("fit")
    if fit and "points_file" in fit:
        changes["predictor"] = {**meta.predictor, "fit": {**fit, "points_file": name}}
    return changes


def _differences(have: TableMeta, want: TableMeta) -> dict[str, str]:
    """Setting name → "name: table X, now Y" for every setting that differs; the machine (fingerprint)
    as one entry saying what differs, which then stands for the device string and runtime version."""
    old, new = have.settings(), want.settings()
    found = {}
    machine = None
    if want.fingerprint is not None and (have.fingerprint or {}).get("id") != want.fingerprint.get("id"):
        if have.fingerprint:
            machine = differences(Fingerprint.from_dict(have.fingerprint),
                                  Fingerprint.from_dict(want.fingerprint))
        else:
            machine = ["the table carries no machine fingerprint"]
    for name in SETTINGS:
        if old[name] == new[name] or (have.fingerprint and machine and name in ENVIRONMENT):
            continue
        if isinstance(old[name], dict) and isinstance(new[name], dict):
            keys = sorted(set(old[name]) | set(new[name]))
            parts = [f"{name}.{k}: table {old[name].get(k)!r}, now {new[name].get(k)!r}"
                     for k in keys if old[name].get(k) != new[name].get(k)]
            found[name] = "; ".join(parts)
        else:
            found[name] = f"{name}: table {old[name]!r}, now {new[name]!r}"
    if machine:
        found["fingerprint"] = "machine: " + "; ".join(machine)
    return found


def _check_same_model(table: LatencyTable, entries: list[Entry], path: Path) -> None:
    known = {(entry.key, entry.form) for entry in entries}
    foreign = [f"{key} ({form})" for key, form in zip(table.rows["key"], table.rows["form"])
               if (key, form) not in known]
    if foreign:
        raise TableError(f"{path} has entries this model does not have ({', '.join(foreign[:3])}"
                         f"{', ...' if len(foreign) > 3 else ''}): it was profiled from another model "
                         "definition; use --force to start it over")
