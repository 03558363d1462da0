"""The training loop every stage shares: epochs of AdamW steps on one process or under DDP, with
optional distillation, per-epoch validation, CSV logs, atomic checkpoints and exact resume.

A stage describes itself as a :class:`Task`: the student to train, the frozen teacher (or none),
the data, its settings (``meta``: a resumed run must match them) and a :class:`Policy` that sets the
student's gates (pruned set, λ) before each step from the global step alone.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader

from deploykit.data import Datasets, eval_loader, train_loader
from deploykit.errors import ConfigError
from deploykit.fileio import check_writable_dir
from deploykit.training.checkpoint import (
    CHECKPOINT,
    FORMAT,
    check_resumable,
    plain,
    read_checkpoint,
    rng_state,
    save_atomic,
    set_rng_state,
    write_csv,
)
from deploykit.training.config import DistillConfig, OptimConfig, RunConfig
from deploykit.training.distributed import (
    DistContext,
    all_reduce_sum,
    amp_dtype,
    autocast,
    broadcast_buffers,
    check_agree,
)
from deploykit.training.losses import training_loss
from deploykit.training.padding_taps import skip_padding_taps
from deploykit.training.schedule import learning_rate


class Policy:
    """Sets the student's gates before each step. The base policy trains the network as it is."""

    #: True when the set of parameters used changes between steps (DDP must look for unused ones).
    dynamic = False

    def apply(self, step: int) -> dict[str, Any]:
        """Set the gates for global step ``step``; return what to log (λ, pruned set)."""
        return {}

    def digest(self) -> int:
        """A checksum of the current gates, compared across ranks at the start of each epoch."""
        return 0

    def state(self) -> dict[str, Any]:
        """Extra values for the checkpoint."""
        return {}


Validate = Callable[[nn.Module, DataLoader, DistContext, "torch.dtype | None"], dict[str, float]]


@dataclass
class Task:
    """One stage's training problem, as the loop needs it."""

    kind: str
    student: nn.Module
    datasets: Datasets
    meta: dict[str, Any]
    make_policy: Callable[[int], Policy]
    validate: Validate
    teacher: nn.Module | None = None
    distill: DistillConfig | None = None


@dataclass
class Fit:
    """The outcome of :func:`fit`: per-epoch rows, the trained student, and what evaluation needs."""

    history: list[dict[str, Any]]
    student: nn.Module
    policy: Policy
    val_loader: DataLoader
    dtype: torch.dtype | None
    wall_s: float
    total_steps: int
    steps: list[dict[str, Any]] = field(default_factory=list)


StepHook = Callable[[int, nn.Module], None]


def fit(task: Task, *, run: RunConfig, optim: OptimConfig, ctx: DistContext,
        on_epoch_end: Callable[[dict[str, Any]], None] | None = None, on_step: StepHook | None = None) -> Fit:
    """Train ``task.student`` for ``run.epochs`` epochs (resuming from ``run.out`` if asked).

    ``on_step(step, student)`` runs before each optimizer step, after the policy set that step's gates
    (``step`` steps are done): for measurements along the way, e.g. ``bench/recovery.py``'s curves. It
    must leave the student's gates and mode as it found them."""
    started = time.perf_counter()
    check_writable_dir(run.out)  # fail now, not when the first epoch is written (creates nothing)
    if run.batch_size % ctx.world:
        raise ConfigError(f"batch size {run.batch_size} does not split evenly over {ctx.world} processes")
    local_batch = run.batch_size // ctx.world
    loader = train_loader(task.datasets.train, batch_size=local_batch, seed=run.seed, rank=ctx.rank,
                          world=ctx.world, workers=run.workers)
    val_loader = eval_loader(task.datasets.val, batch_size=run.eval_batch_size, rank=ctx.rank,
                             world=ctx.world, workers=run.workers)
    steps_per_epoch = len(loader)
    policy = task.make_policy(steps_per_epoch)
    student = task.student.to(ctx.device)
    teacher = _frozen(task.teacher, ctx) if task.teacher is not None else None
    optimizer = make_optimizer(student, optim)
    dtype = amp_dtype(ctx, run.amp)
    scaler = torch.amp.GradScaler("cuda") if dtype == torch.float16 else None
    meta = plain({**task.meta, "epochs": run.epochs, "batch_size": run.batch_size, "seed": run.seed,
                  "optim": vars(optim), "distill": vars(task.distill) if task.distill else None,
                  "steps_per_epoch": steps_per_epoch})
    state = _resume_state(run, meta) if run.resume else _fresh(run)
    history: list[dict[str, Any]] = list(state.get("history", []))
    step_rows: list[dict[str, Any]] = list(state.get("steps", []))
    if state:
        student.load_state_dict(state["state_dict"])
        optimizer.load_state_dict(state["optimizer"])
        if scaler is not None and state.get("scaler"):
            scaler.load_state_dict(state["scaler"])
        set_rng_state(state["rng"])
        ctx.log(f"resuming {run.out / CHECKPOINT} after epoch {state['epoch']}/{run.epochs}")
    wrapped = _parallel(student, ctx, dynamic=policy.dynamic)
    total_steps = steps_per_epoch * run.epochs
    warmup = round(optim.warmup_epochs * steps_per_epoch)
    # the same sums without their zero terms: a 7×7 kernel on a 1×1 map (padding_taps.py)
    with skip_padding_taps(student, teacher):
        for epoch in range(int(state.get("epoch", 0)), run.epochs):
            epoch_start = time.perf_counter()
            loader.sampler.set_epoch(epoch)
            student.train()
            sums = torch.zeros(5, dtype=torch.float64, device=ctx.device)
            logged: dict[str, Any] = {}
            for batch_index, (images, labels) in enumerate(_progress(loader, ctx, epoch, run.epochs)):
                step = epoch * steps_per_epoch + batch_index
                logged = policy.apply(step)
                if on_step is not None:
                    on_step(step, student)
                if batch_index == 0:
                    check_agree(policy.digest(), ctx, f"the gates of step {step}")
                lr = learning_rate(step, base=optim.lr, total_steps=total_steps, warmup_steps=warmup,
                                   min_lr=optim.min_lr)
                for group in optimizer.param_groups:
                    group["lr"] = lr
                images = images.to(ctx.device, non_blocking=True)
                labels = labels.to(ctx.device, non_blocking=True)
                parts = _step(wrapped, teacher, task.distill, optimizer, scaler, images, labels, ctx, dtype)
                sums += parts
                if run.log_steps:
                    step_rows.append(_step_row(step, epoch, lr, logged, parts, ctx))
            all_reduce_sum(sums, ctx)
            broadcast_buffers(student, ctx)
            row = _epoch_row(epoch, steps_per_epoch, sums, logged, optimizer)
            row.update(task.validate(student, val_loader, ctx, dtype))
            row["epoch_s"] = round(time.perf_counter() - epoch_start, 3)
            history.append(row)
            if ctx.is_main:
                _write_epoch(run, task, meta, epoch, student, optimizer, scaler, policy, history, step_rows)
            ctx.log(_summary(row, run.epochs))
            if on_epoch_end is not None:
                on_epoch_end(row)
    return Fit(history=history, student=student, policy=policy, val_loader=val_loader, dtype=dtype,
               wall_s=time.perf_counter() - started, total_steps=total_steps, steps=step_rows)


def make_optimizer(model: nn.Module, optim: OptimConfig) -> torch.optim.Optimizer:
    """AdamW; no weight decay on biases and norm parameters (anything with fewer than 2 dims)."""
    decay, no_decay = [], []
    for param in model.parameters():
        if param.requires_grad:
            (decay if param.ndim >= 2 else no_decay).append(param)
    groups = [{"params": decay, "weight_decay": optim.weight_decay},
              {"params": no_decay, "weight_decay": 0.0}]
    return torch.optim.AdamW([g for g in groups if g["params"]], lr=optim.lr)


def _step(model, teacher, distill, optimizer, scaler, images, labels, ctx, dtype) -> torch.Tensor:
    """One optimizer step; returns [loss·n, ce·n, kd·n, correct, n] for this rank's batch."""
    with autocast(ctx, dtype):
        logits = model(images)
        teacher_logits = None
        if teacher is not None:
            with torch.no_grad():
                teacher_logits = teacher(images)
    loss, ce, kd = training_loss(logits, labels, teacher_logits, distill)
    optimizer.zero_grad(set_to_none=True)
    if scaler is not None:
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()
    else:
        loss.backward()
        optimizer.step()
    count = labels.new_tensor(labels.numel(), dtype=torch.float64)
    correct = (logits.detach().argmax(dim=-1) == labels).sum().double()
    losses = torch.stack([loss.detach().double(), ce.double(), kd.double()]) * count
    return torch.cat([losses, correct[None], count[None]])


def _frozen(teacher: nn.Module, ctx: DistContext) -> nn.Module:
    teacher = teacher.to(ctx.device).eval()
    for param in teacher.parameters():
        param.requires_grad_(False)
    return teacher


def _parallel(student: nn.Module, ctx: DistContext, *, dynamic: bool) -> nn.Module:
    if not ctx.distributed:
        return student
    device_ids = [ctx.device.index] if ctx.device.type == "cuda" else None
    return DistributedDataParallel(student, device_ids=device_ids, find_unused_parameters=dynamic)


def _fresh(run: RunConfig) -> dict[str, Any]:
    path = run.out / CHECKPOINT
    if path.exists():
        raise ConfigError(f"{run.out} already holds a run ({path}); pass --resume to continue it, "
                          "or choose another --out")
    return {}


def _resume_state(run: RunConfig, meta: dict[str, Any]) -> dict[str, Any]:
    path = run.out / CHECKPOINT
    if not path.is_file():
        raise ConfigError(f"nothing to resume: {path} does not exist")
    state = read_checkpoint(path)
    check_resumable(state["meta"], meta, path)
    return state


def _write_epoch(run, task, meta, epoch, student, optimizer, scaler, policy, history, step_rows) -> None:
    checkpoint = {"format": FORMAT, "kind": task.kind, "meta": meta, "epoch": epoch + 1,
                  "state_dict": student.state_dict(), "optimizer": optimizer.state_dict(),
                  "scaler": scaler.state_dict() if scaler is not None else None, "rng": rng_state(),
                  "history": history, "steps": step_rows, **policy.state()}
    save_atomic(checkpoint, run.out / CHECKPOINT)
    write_csv(history, run.out / "log.csv")
    if run.log_steps:
        write_csv(step_rows, run.out / "steps.csv")


def _step_row(step, epoch, lr, logged, parts, ctx) -> dict[str, Any]:
    totals = all_reduce_sum(parts.clone(), ctx)
    count = totals[4].item()
    return {"step": step, "epoch": epoch + 1, "loss": totals[0].item() / count,
            "ce": totals[1].item() / count, "kd": totals[2].item() / count, "lr": lr,
            **{key: _loggable(value) for key, value in logged.items()}}


def _epoch_row(epoch, steps_per_epoch, sums, logged, optimizer) -> dict[str, Any]:
    loss, ce, kd, correct, count = sums.tolist()
    return {"epoch": epoch + 1, "step": (epoch + 1) * steps_per_epoch, "train_loss": loss / count,
            "train_ce": ce / count, "train_kd": kd / count, "train_top1": 100.0 * correct / count,
            "lam": float(logged.get("lam", float("nan"))), "lr": optimizer.param_groups[0]["lr"]}


def _loggable(value: Any) -> Any:
    if isinstance(value, (tuple, list)):
        return ";".join(str(v) for v in value)
    return value


def _summary(row: dict[str, Any], epochs: int) -> str:
    parts = [f"epoch {row['epoch']}/{epochs}", f"loss {row['train_loss']:.4f}"]
    if row["train_kd"]:
        parts[-1] += f" (ce {row['train_ce']:.4f}, kd {row['train_kd']:.4f})"
    parts.append(f"train top-1 {row['train_top1']:.2f}%")
    parts += [f"val top-1{key.removeprefix('val_top1').replace('_', ' ')} {value:.2f}%"
              for key, value in row.items() if key.startswith("val_top1")]
    if row["lam"] == row["lam"]:  # not NaN
        parts.append(f"λ {row['lam']:.3f}")
    parts += [f"lr {row['lr']:.2e}", f"{row['epoch_s']:.1f} s"]
    return "  ".join(parts)


def _progress(loader: DataLoader, ctx: DistContext, epoch: int, epochs: int):
    """A progress bar on stderr for interactive runs on rank 0; the plain loader otherwise."""
    if not (ctx.is_main and sys.stderr.isatty()):
        return loader
    try:
        from tqdm import tqdm
    except ImportError:
        return loader

    return tqdm(loader, desc=f"epoch {epoch + 1}/{epochs}", file=sys.stderr, leave=False, unit="batch")
