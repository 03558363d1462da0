"""Everything that depends on the global step alone, so every rank computes the same value and a
resumed run continues exactly: the λ ramp, the learning rate, and the supernet's sampled pruned set."""

from __future__ import annotations

import math
import zlib
from collections.abc import Sequence

import numpy as np


def ramp_lambda(step: int, ramp_steps: int) -> float:
    """λ used by training step ``step`` (0-based): ``min(1, (step + 1) / ramp_steps)``; 1 if no ramp.

    The ramp rises by ``1 / ramp_steps`` per step, so the last step of the ramp trains at λ = 1
    and the network can be merged right after it.
    """
    if ramp_steps <= 0:
        return 1.0
    return min(1.0, (step + 1) / ramp_steps)


def ramp_steps(ramp_epochs: float, steps_per_epoch: int) -> int:
    """A ramp of (possibly fractional) epochs in steps; a positive ramp lasts at least one step."""
    if ramp_epochs <= 0:
        return 0
    return max(1, round(ramp_epochs * steps_per_epoch))


def learning_rate(step: int, *, base: float, total_steps: int, warmup_steps: int = 0,
                  min_lr: float = 0.0) -> float:
    """Linear warm-up from ``base / warmup_steps`` to ``base``, then cosine decay to ``min_lr``."""
    if step < warmup_steps:
        return base * (step + 1) / warmup_steps
    span = max(1, total_steps - warmup_steps)
    progress = min(1.0, (step - warmup_steps) / span)
    return min_lr + 0.5 * (base - min_lr) * (1.0 + math.cos(math.pi * progress))


def sample_pruned(candidates: Sequence[int], max_pruned: int, *, seed: int, step: int) -> tuple[int, ...]:
    """The supernet's pruned set at ``step``: ``k ~ U{0..max_pruned}``, then ``k`` distinct candidates.

    Seeded by ``(seed, step)`` only, so every rank draws the same set and a resumed run the same sequence.
    """
    rng = np.random.default_rng([seed, step])
    count = int(rng.integers(0, min(max_pruned, len(candidates)) + 1))
    chosen = rng.choice(np.asarray(candidates, dtype=np.int64), size=count, replace=False)
    return tuple(sorted(int(i) for i in chosen))


def pruned_digest(pruned: Sequence[int]) -> int:
    """A checksum of a pruned set, to check cheaply that every rank drew the same one."""
    return zlib.crc32(",".join(str(int(i)) for i in pruned).encode())
