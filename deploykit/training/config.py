"""Frozen, validated configuration of a training run: the run itself, the optimizer, distillation,
the supernet's sampling and the subnet's pruning method.

The one source of every training default: ``deploykit train``'s options read their defaults from these
dataclasses (and :func:`stage_optim`), the Python API and ``deploykit run`` use them as they are.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

from deploykit.checks import require_number
from deploykit.errors import ConfigError

METHODS = ("progressive", "abrupt", "drop")
STAGES = ("baseline", "supernet", "subnet")
DEVICES = ("auto", "cpu", "cuda")


@dataclass(frozen=True)
class RunConfig:
    """Where a run writes, how long it trains and on what.

    ``batch_size`` is the global batch: under ``torchrun`` each of N processes takes ``batch_size / N``
    samples per step, so a run on one process and on N processes follows the same schedule.
    """

    out: Path
    epochs: int = 10
    batch_size: int = 64
    seed: int = 0
    device: str = "auto"
    amp: bool = True
    workers: int = 0
    threads: int | None = None
    eval_batch_size: int = 256
    log_steps: bool = False
    resume: bool = False

    def __post_init__(self) -> None:
        object.__setattr__(self, "out", Path(self.out))
        _positive("epochs", self.epochs)
        _positive("batch size", self.batch_size)
        _positive("eval batch size", self.eval_batch_size)
        if self.workers < 0:
            raise ConfigError(f"workers must be ≥ 0, got {self.workers}")
        if self.threads is not None:
            _positive("threads", self.threads)
        if self.device not in DEVICES:
            raise ConfigError(f"device must be auto, cpu or cuda, got {self.device!r}")


@dataclass(frozen=True)
class OptimConfig:
    """AdamW with linear warm-up then cosine decay to ``min_lr``, stepped per batch. The defaults are
    fine-tuning's (supernet, subnet); :func:`stage_optim` gives each stage's."""

    lr: float = 5e-4
    weight_decay: float = 0.05
    warmup_epochs: float = 0.0
    min_lr: float = 0.0

    def __post_init__(self) -> None:
        _positive("learning rate", self.lr)
        for label, value in (("weight decay", self.weight_decay), ("warm-up epochs", self.warmup_epochs),
                             ("min lr", self.min_lr)):
            if not math.isfinite(value) or value < 0:
                raise ConfigError(f"{label} must be ≥ 0, got {value}")


def stage_optim(stage: str) -> OptimConfig:
    """The optimizer defaults of a training stage (``baseline``, ``supernet``, ``subnet``): training from
    scratch warms up for an epoch at a higher rate; fine-tuning the original does neither."""
    if stage not in STAGES:
        raise ConfigError(f"unknown training stage {stage!r}; choose one of {', '.join(STAGES)}")
    return OptimConfig(lr=2e-3, warmup_epochs=1.0) if stage == "baseline" else OptimConfig()


@dataclass(frozen=True)
class DistillConfig:
    """Knowledge distillation from the frozen original: ``loss = CE + weight · T² · KL(p_T ‖ q_T)``."""

    temperature: float = 2.0
    weight: float = 1.0

    def __post_init__(self) -> None:
        _positive("distillation temperature", self.temperature)
        if not math.isfinite(self.weight) or self.weight < 0:
            raise ConfigError(f"distillation weight must be ≥ 0, got {self.weight}")


@dataclass(frozen=True)
class SupernetConfig:
    """Each step prunes ``k ~ U{0..max_pruned}`` blocks drawn uniformly from ``candidates``.

    ``None`` means every prunable block / all of them / a third of the epochs. Sampled blocks run at
    the global λ, which ramps 0 → 1 per step over ``ramp_epochs`` and then stays 1.
    """

    max_pruned: int | None = None
    candidates: tuple[int, ...] | None = None
    ramp_epochs: float | None = None

    def __post_init__(self) -> None:
        if self.max_pruned is not None and self.max_pruned < 0:
            raise ConfigError(f"max pruned blocks must be ≥ 0, got {self.max_pruned}")
        if self.candidates is not None:
            object.__setattr__(self, "candidates", tuple(sorted(set(self.candidates))))
            if not self.candidates:
                raise ConfigError("the candidate block list is empty")
        _ramp_ok(self.ramp_epochs)


@dataclass(frozen=True)
class SubnetConfig:
    """How the subnet's pruned blocks are removed.

    ``progressive``: λ ramps 0 → 1 per step over ``progressive_epochs`` (default a third of the
    epochs), then stays 1; ``abrupt``: λ = 1 from the first step; ``drop``: the blocks are removed
    outright (only blocks whose input and output shapes agree).
    """

    method: str = "progressive"
    progressive_epochs: float | None = None

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise ConfigError(f"unknown method {self.method!r}; choose one of {', '.join(METHODS)}")
        _ramp_ok(self.progressive_epochs)
        if self.method != "progressive" and self.progressive_epochs not in (None, 0):
            raise ConfigError(f"--progressive-epochs applies to --method progressive only, not {self.method}")


def default_ramp(ramp_epochs: float | None, epochs: int) -> float:
    """The ramp length in epochs: as given (at most ``epochs``), or a third of the run."""
    if ramp_epochs is None:
        return epochs / 3.0
    if ramp_epochs > epochs:
        raise ConfigError(f"the λ ramp ({ramp_epochs:g} epochs) is longer than the run ({epochs} epochs)")
    return float(ramp_epochs)


def _ramp_ok(value: float | None) -> None:
    if value is not None and (not math.isfinite(value) or value < 0):
        raise ConfigError(f"ramp length in epochs must be ≥ 0, got {value}")


def _positive(label: str, value) -> None:
    require_number(label, value, above=0, rule="positive")
