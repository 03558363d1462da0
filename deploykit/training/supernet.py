"""``deploykit train supernet``: one set of weights for every subnet (docs/method.md).

Every prunable block is wrapped. Each step draws the pruned set (``k ~ U{0..K}`` blocks, then which,
seeded by the step so every rank draws the same), runs those blocks in pruned form at the global λ
(ramping 0 → 1 per step over the first ``ramp_epochs``) and the rest as original, and trains on
cross-entropy plus distillation from the frozen original. Validation reports the supernet with no
block pruned and with a fixed probe subnet of K blocks.

Writes ``supernet.pt`` (read by :func:`deploykit.training.load_supernet` and the search's
``supernet:CKPT`` proxy), ``checkpoint.pt`` (also loadable the same way), ``log.csv``, ``result.json``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader

from deploykit.data import DataConfig
from deploykit.errors import ConfigError
from deploykit.prune import PrunableNet, prunable
from deploykit.training.build import data_meta, original_model, require_weights, stage_data, write_result
from deploykit.training.checkpoint import FORMAT, plain, save_atomic
from deploykit.training.config import (
    DistillConfig,
    OptimConfig,
    RunConfig,
    SupernetConfig,
    default_ramp,
    stage_optim,
)
from deploykit.training.distributed import DistContext
from deploykit.training.evaluation import evaluate, gates
from deploykit.training.loop import Policy, Task, fit
from deploykit.training.schedule import pruned_digest, ramp_lambda, ramp_steps, sample_pruned


class SampledGates(Policy):
    """Each step: a fresh pruned set from :func:`sample_pruned`, all at the global λ."""

    dynamic = True

    def __init__(self, net: PrunableNet, candidates: tuple[int, ...], max_pruned: int, ramp: int, seed: int):
        self.net, self.candidates, self.max_pruned = net, candidates, max_pruned
        self.ramp_steps, self.seed, self.lam = ramp, seed, 0.0

    def apply(self, step: int) -> dict[str, Any]:
        pruned = sample_pruned(self.candidates, self.max_pruned, seed=self.seed, step=step)
        self.lam = ramp_lambda(step, self.ramp_steps)
        self.net.prune(pruned)
        if pruned:
            self.net.set_progress(self.lam)
        return {"lam": self.lam, "pruned": pruned}

    def digest(self) -> int:
        return pruned_digest(self.net.pruned) ^ round(self.lam * 1e6)

    def state(self) -> dict[str, Any]:
        return {"lam": self.lam, "candidates": list(self.candidates)}


@dataclass(frozen=True)
class SupernetResult:
    out: Path
    supernet_path: Path
    candidates: tuple[int, ...]
    max_pruned: int
    probe: tuple[int, ...]
    lam: float
    top1: float
    top1_probe: float
    wall_s: float
    history: tuple[dict[str, Any], ...]

    def summary(self) -> str:
        return f"supernet top-1 {self.top1:.2f}% (none pruned): {self.supernet_path}"


def train_supernet(model: str, *, weights: str | Path | None, data: DataConfig, run: RunConfig,
                   config: SupernetConfig | None = None, optim: OptimConfig | None = None,
                   distill: DistillConfig | None = None,
                   on_epoch_end: Callable[[dict[str, Any]], None] | None = None) -> SupernetResult:
    """Train the weight-sharing supernet of ``model`` from the original ``weights``."""
    config, distill = config or SupernetConfig(), distill or DistillConfig()
    optim = optim or stage_optim("supernet")
    weights = require_weights(weights, "supernet")
    with stage_data(data, device=run.device, run=run) as (ctx, datasets):
        original = original_model(model, num_classes=datasets.num_classes, weights=weights, new_head=False,
                                  input_size=data.input_size, ctx=ctx)
        net = prunable(original, input_size=data.input_size)
        candidates, max_pruned = _sampling(net, config)
        ramp_epochs = default_ramp(config.ramp_epochs, run.epochs)
        probe = _probe(candidates, max_pruned, run.seed)
        meta = {"model": model, "input_size": data.input_size, "num_classes": datasets.num_classes,
                "weights": str(weights), "data": data_meta(data), "candidates": candidates,
                "max_pruned": max_pruned, "ramp_epochs": ramp_epochs}
        ctx.log(f"supernet {model}: {len(candidates)} candidate blocks, up to {max_pruned} pruned per step, "
                f"λ ramp over {ramp_epochs:g} epochs; probe subnet {list(probe)}")
        policies: list[SampledGates] = []

        def make_policy(steps_per_epoch: int) -> SampledGates:
            ramp = ramp_steps(ramp_epochs, steps_per_epoch)
            policies.append(SampledGates(net, candidates, max_pruned, ramp, run.seed))
            return policies[-1]

        def validate(student: nn.Module, loader: DataLoader, ctx: DistContext, dtype) -> dict[str, float]:
            return _validate(net, probe, policies[-1].lam, loader, ctx, dtype)

        task = Task(kind="supernet", student=net, datasets=datasets, meta=meta, make_policy=make_policy,
                    validate=validate, teacher=original, distill=distill)
        fitted = fit(task, run=run, optim=optim, ctx=ctx, on_epoch_end=on_epoch_end)
        lam = ramp_lambda(fitted.total_steps - 1, policies[-1].ramp_steps)
        last = fitted.history[-1]
        result = SupernetResult(out=run.out, supernet_path=run.out / "supernet.pt", candidates=candidates,
                                max_pruned=max_pruned, probe=probe, lam=lam, top1=last["val_top1"],
                                top1_probe=last.get("val_top1_probe", last["val_top1"]), wall_s=fitted.wall_s,
                                history=tuple(fitted.history))
        if ctx.is_main:
            checkpoint = {"format": FORMAT, "kind": "supernet", "meta": plain(meta), "lam": lam,
                          "candidates": list(candidates), "state_dict": net.state_dict()}
            save_atomic(checkpoint, result.supernet_path)
            write_result(result, kind="supernet", model=model)
            ctx.log(f"supernet: val top-1 {result.top1:.2f}% (none pruned), {result.top1_probe:.2f}% "
                    f"(probe {list(probe)}) at λ {lam:g}; wrote {result.supernet_path}")
        return result


def _sampling(net: PrunableNet, config: SupernetConfig) -> tuple[tuple[int, ...], int]:
    candidates = config.candidates if config.candidates is not None else net.prunable_indices
    net.prune(candidates)  # validates the indices (a BlockSelectionError names a bad one)
    net.prune(())
    max_pruned = len(candidates) if config.max_pruned is None else config.max_pruned
    if max_pruned > len(candidates):
        raise ConfigError(f"--max-pruned {max_pruned} exceeds the {len(candidates)} candidate blocks")
    return tuple(candidates), max_pruned


def _probe(candidates: tuple[int, ...], max_pruned: int, seed: int) -> tuple[int, ...]:
    """A fixed subnet with ``max_pruned`` blocks, reported each epoch next to the unpruned network."""
    rng = torch.Generator().manual_seed(seed)
    order = torch.randperm(len(candidates), generator=rng)[:max_pruned]
    return tuple(sorted(candidates[i] for i in order.tolist()))


def _validate(net: PrunableNet, probe: tuple[int, ...], lam: float, loader: DataLoader, ctx: DistContext,
              dtype) -> dict[str, float]:
    with gates(net, (), lam):
        top1, loss = evaluate(net, loader, ctx=ctx, dtype=dtype)
    row = {"val_loss": loss, "val_top1": top1}
    if probe:
        with gates(net, probe, lam):
            row["val_loss_probe"], row["val_top1_probe"] = evaluate(net, loader, ctx=ctx, dtype=dtype)[::-1]
    return row
