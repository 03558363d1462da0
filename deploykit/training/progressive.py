"""``deploykit train subnet``: train a chosen subnet with distillation from the original, then merge it.

Methods (docs/method.md), same data, budget and distillation for each:

- ``progressive``: λ of every pruned block ramps 0 → 1 per step over the first ``progressive_epochs``
  (default a third of the run), then stays 1: the original weights are eased into the pruned form;
- ``abrupt``: λ = 1 from the first step (the activations are removed at once);
- ``drop``: the blocks are removed outright (plain depth pruning; only shape-preserving blocks).

At the end the network (λ = 1, eval) is merged into a plain module; its top-1 is measured before and
after the merge and the two must agree. Writes ``merged.safetensors`` (a model file: the merged
tensors plus the architecture record that rebuilds them, loadable without unpickling; see
:mod:`deploykit.modelfile`), ``subnet.json``, ``log.csv``, ``checkpoint.pt`` and ``result.json`` into
``run.out``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from deploykit.data import DataConfig
from deploykit.errors import ConfigError, MergeError
from deploykit.macs import count_macs, count_params
from deploykit.modelfile import ModelRecord, save_model
from deploykit.prune import PrunableNet, prunable
from deploykit.subnet import Subnet
from deploykit.training.build import (
    data_meta,
    dropped,
    original_model,
    require_weights,
    stage_data,
    validate_plain,
    write_result,
)
from deploykit.training.config import (
    DistillConfig,
    OptimConfig,
    RunConfig,
    SubnetConfig,
    default_ramp,
    stage_optim,
)
from deploykit.training.distributed import DistContext
from deploykit.training.evaluation import evaluate
from deploykit.training.loop import Fit, Policy, StepHook, Task, fit
from deploykit.training.schedule import ramp_lambda, ramp_steps

MERGE_TOLERANCE = 1e-4  # max |merged − unmerged| logit error relative to the logit scale (fp32)
MERGED_FILE = "merged.safetensors"


class LambdaRamp(Policy):
    """Every pruned block at ``λ = ramp_lambda(step)``; no ramp (abrupt) is λ = 1 throughout."""

    dynamic = True

    def __init__(self, net: PrunableNet, ramp: int):
        self.net, self.ramp_steps, self.lam = net, ramp, 0.0

    def apply(self, step: int) -> dict[str, Any]:
        self.lam = ramp_lambda(step, self.ramp_steps)
        self.net.set_progress(self.lam)
        return {"lam": self.lam}

    def digest(self) -> int:
        return round(self.lam * 1e9)


class Dropped(Policy):
    """The blocks are gone: λ is 1 by definition."""

    def apply(self, step: int) -> dict[str, Any]:
        return {"lam": 1.0}


@dataclass(frozen=True)
class SubnetResult:
    """Top-1 of the trained subnet before and after merging, and where the merged model is."""

    out: Path
    method: str
    pruned: tuple[int, ...]
    top1_unmerged: float
    top1_merged: float
    loss_unmerged: float
    loss_merged: float
    merge_rel_error: float
    params: int
    macs: int
    merged_path: Path
    wall_s: float
    history: tuple[dict[str, Any], ...]

    def summary(self) -> str:
        return (f"subnet ({self.method}) top-1 {self.top1_unmerged:.2f}% unmerged, "
                f"{self.top1_merged:.2f}% merged: {self.merged_path}")


def train_subnet(subnet: Subnet, *, weights: str | Path | None, data: DataConfig, run: RunConfig,
                 config: SubnetConfig | None = None, optim: OptimConfig | None = None,
                 distill: DistillConfig | None = None,
                 on_epoch_end: Callable[[dict[str, Any]], None] | None = None,
                 on_step: StepHook | None = None) -> SubnetResult:
    """Train ``subnet`` from the original ``weights`` with ``config.method``; merge; write the results.
    ``on_step``: see :func:`~deploykit.training.loop.fit`."""
    config, distill = config or SubnetConfig(), distill or DistillConfig()
    optim = optim or stage_optim("subnet")
    weights = require_weights(weights, "subnet")
    if not subnet.pruned:
        raise ConfigError("no block to prune: give --prune 0,3,5 or a subnet file that prunes blocks")
    if tuple(subnet.input_size) != tuple(data.input_size):
        raise ConfigError(f"the subnet was chosen at input size {list(subnet.input_size)} but the data is "
                          f"prepared at {list(data.input_size)}")
    with stage_data(data, device=run.device, run=run) as (ctx, datasets):
        original = original_model(subnet.model, num_classes=datasets.num_classes, weights=weights,
                                  new_head=False, input_size=data.input_size, ctx=ctx)
        net = prunable(original, input_size=subnet.input_size)
        ramp_epochs = _ramp_epochs(config, run.epochs)
        if config.method == "drop":
            student = dropped(original, net, subnet.pruned)
            make_policy: Callable[[int], Policy] = lambda steps_per_epoch: Dropped()  # noqa: E731
        else:
            student = net.prune(subnet.pruned)
            make_policy = lambda steps_per_epoch: LambdaRamp(net, ramp_steps(ramp_epochs, steps_per_epoch))  # noqa: E731
        meta = {"model": subnet.model, "input_size": subnet.input_size, "num_classes": datasets.num_classes,
                "weights": str(weights), "data": data_meta(data), "pruned": subnet.pruned,
                "method": config.method, "progressive_epochs": ramp_epochs}
        ctx.log(f"subnet {subnet.model}: {config.method} pruning of blocks {list(subnet.pruned)}"
                + (f", λ ramp over {ramp_epochs:g} epochs" if config.method == "progressive" else ""))
        task = Task(kind="subnet", student=student, datasets=datasets, meta=meta, make_policy=make_policy,
                    validate=validate_plain, teacher=original, distill=distill)
        fitted = fit(task, run=run, optim=optim, ctx=ctx, on_epoch_end=on_epoch_end, on_step=on_step)
        return _finish(fitted, subnet, config, run, ctx, meta)


def _ramp_epochs(config: SubnetConfig, epochs: int) -> float:
    if config.method == "progressive":
        return default_ramp(config.progressive_epochs, epochs)
    return 0.0


def _finish(fitted: Fit, subnet: Subnet, config: SubnetConfig, run: RunConfig, ctx: DistContext,
            meta: dict[str, Any]) -> SubnetResult:
    student = fitted.student.eval()
    fitted.policy.apply(fitted.total_steps - 1)  # the last step's gates, also after resuming a finished run
    merged = student.merge() if isinstance(student, PrunableNet) else student
    top1_unmerged, loss_unmerged = evaluate(student, fitted.val_loader, ctx=ctx, dtype=fitted.dtype)
    top1_merged, loss_merged = evaluate(merged, fitted.val_loader, ctx=ctx, dtype=fitted.dtype)
    rel_error = _merge_error(student, merged, fitted.val_loader, ctx)
    size = (3, *subnet.input_size)
    result = SubnetResult(out=run.out, method=config.method, pruned=subnet.pruned,
                          top1_unmerged=top1_unmerged, top1_merged=top1_merged,
                          loss_unmerged=loss_unmerged, loss_merged=loss_merged,
                          merge_rel_error=rel_error, params=count_params(merged),
                          macs=count_macs(merged, size), merged_path=run.out / MERGED_FILE,
                          wall_s=fitted.wall_s, history=tuple(fitted.history))
    if ctx.is_main:
        _write(result, merged, subnet, _record(subnet, config, meta["num_classes"]), fitted, run, meta)
        ctx.log(f"subnet ({config.method}): top-1 {top1_unmerged:.2f}% unmerged, {top1_merged:.2f}% merged "
                f"(logit error {rel_error:.1e}); wrote {result.merged_path}, {run.out / 'result.json'}")
    if rel_error > MERGE_TOLERANCE:
        raise MergeError(f"the merged model differs from the trained one (relative logit error "
                         f"{rel_error:.2e} > {MERGE_TOLERANCE:g}); results kept in {run.out}")
    return result


@torch.no_grad()
def _merge_error(student: nn.Module, merged: nn.Module, loader, ctx: DistContext) -> float:
    """Max |merged − unmerged| over one validation batch, relative to the largest logit."""
    images, _ = next(iter(loader))
    images = images.to(ctx.device)
    reference, other = student(images).double(), merged(images).double()
    return ((reference - other).abs().max() / reference.abs().max().clamp_min(1e-12)).item()


def _record(subnet: Subnet, config: SubnetConfig, num_classes: int) -> ModelRecord:
    """The merged model's architecture: its blocks merged, or removed outright by ``drop``."""
    removed = config.method == "drop"
    return ModelRecord(model=subnet.model, num_classes=num_classes, input_size=subnet.input_size,
                       pruned=() if removed else subnet.pruned, dropped=subnet.pruned if removed else ())


def _write(result: SubnetResult, merged: nn.Module, subnet: Subnet, record: ModelRecord, fitted: Fit,
           run: RunConfig, meta: dict[str, Any]) -> None:
    """The merged model file, the subnet and result.json — with the run's settings (the weights it
    started from, the data: ``deploykit table`` follows them to the training budget and validation
    data of the row's Δ reference)."""
    save_model(merged.cpu(), result.merged_path, record)
    subnet.write(run.out / "subnet.json")
    write_result(result, kind="subnet", **{**meta, "model": subnet.model},
                 train_wall_s=round(fitted.wall_s, 3), epochs=run.epochs)
