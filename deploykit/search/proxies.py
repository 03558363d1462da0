"""Accuracy proxies: how good a subnet is expected to be, without training it. Higher scores are better.

- ``depth`` (no data): the fewest pruned blocks; the search breaks ties by the lowest latency. For planning
  from a table alone.
- ``sensitivity:CKPT`` with ``--data``: the loss increase of each block pruned alone (λ = 1), measured once
  on held-out batches; a subnet's score is minus the sum over its pruned blocks. CKPT is a supernet
  (``deploykit train supernet``) or plain weights of the table's model.
- ``supernet:CKPT`` with ``--data``: the supernet's top-1 (or loss) with that subnet's gates on held-out
  batches (docs/method.md), evaluated per subnet and cached.

Additive proxies (depth, sensitivity) score a subnet as Σ of per-block scores, which the search
enumerates vectorized or solves exactly; the supernet proxy gives per-block scores too (each block pruned
alone), but only as the seed of the evolutionary search.

The data-driven proxies are given their evaluation: ``data`` is held-out data that opens a checkpoint as
a :class:`SubnetEvaluator` (``deploykit.training.ProxyData``), so that search never imports training.
"""

from __future__ import annotations

import time
import typing
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from deploykit.errors import ConfigError
from deploykit.latency.table import LatencyTable
from deploykit.progress import Progress, silent

KINDS = ("depth", "sensitivity", "supernet")
METRICS = ("top1", "loss")


class Proxy:
    """The interface the search uses. ``prepare`` runs once the candidate blocks are known."""

    kind = ""
    metric = ""
    additive = False

    def restrict(self, candidates: tuple[int, ...]) -> tuple[int, ...]:
        """The candidates this proxy can judge (a supernet only knows the blocks it was trained to prune)."""
        return candidates

    def prepare(self, candidates: tuple[int, ...], progress: Progress) -> None:
        self.candidates = tuple(candidates)

    def block_scores(self) -> np.ndarray:
        """Per candidate: the score change of pruning it alone (exact for additive proxies)."""
        raise NotImplementedError

    def score(self, pruned: tuple[int, ...]) -> float:
        raise NotImplementedError

    def describe(self, pruned: tuple[int, ...]) -> dict[str, Any]:
        """What goes into ``Subnet.proxy``: kind, metric and value at least."""
        raise NotImplementedError

    @property
    def evaluations(self) -> int:
        """How many subnets were evaluated on data (0 for proxies that need none)."""
        return 0


class AdditiveProxy(Proxy):
    """score(S) = Σ_{j ∈ S} block_score_j, summed in ascending block order."""

    additive = True

    def __init__(self) -> None:
        self._scores: dict[int, float] = {}

    def block_scores(self) -> np.ndarray:
        return np.array([self._scores[c] for c in self.candidates], dtype=float)

    def score(self, pruned: tuple[int, ...]) -> float:
        total = 0.0
        for index in sorted(pruned):
            total += self._scores[index]
        return total


class DepthProxy(AdditiveProxy):
    """Fewest pruned blocks first (every block scores −1); the search breaks ties by lowest latency."""

    kind, metric = "depth", "pruned blocks"

    def prepare(self, candidates: tuple[int, ...], progress: Progress) -> None:
        super().prepare(candidates, progress)
        self._scores = {c: -1.0 for c in self.candidates}

    def describe(self, pruned: tuple[int, ...]) -> dict[str, Any]:
        return {"kind": self.kind, "metric": self.metric, "value": len(pruned)}


class BlockScoreProxy(AdditiveProxy):
    """Given per-block scores (score change when that block alone is pruned; higher is better)."""

    kind, metric = "block-scores", "Σ block score"

    def __init__(self, scores: Mapping[int, float]):
        super().__init__()
        self._given = {int(k): float(v) for k, v in scores.items()}

    def prepare(self, candidates: tuple[int, ...], progress: Progress) -> None:
        super().prepare(candidates, progress)
        missing = [c for c in self.candidates if c not in self._given]
        if missing:
            raise ConfigError(f"no block score for candidate block(s) {missing}")
        self._scores = {c: self._given[c] for c in self.candidates}

    def describe(self, pruned: tuple[int, ...]) -> dict[str, Any]:
        return {"kind": self.kind, "metric": self.metric, "value": self.score(pruned)}


class SubnetEvaluator(typing.Protocol):
    """A network judged per subnet on held-out data, cached (``deploykit.training.HeldOutEvaluator``)."""

    evaluations: int  # distinct subnets evaluated so far
    lam: float | None  # a supernet's λ; None for plain weights

    def __call__(self, pruned: tuple[int, ...]) -> tuple[float, float]:
        """(top-1 %, loss) of the subnet with ``pruned`` in pruned form."""
        ...

    def restrict(self, candidates: tuple[int, ...], what: str) -> tuple[int, ...]: ...

    def describe(self) -> dict[str, Any]: ...


class HeldOutData(typing.Protocol):
    """Held-out data that opens a checkpoint as a :class:`SubnetEvaluator`: the evaluation the
    data-driven proxies are given (``deploykit.training.ProxyData``), so that search never imports
    training."""

    def open(self, checkpoint: str | Path, *, model: str, table_size: tuple[int, int], need_supernet: bool,
             progress: Progress) -> SubnetEvaluator: ...


def _evaluator(checkpoint: str | Path, table: LatencyTable, data: HeldOutData, *, need_supernet: bool,
               progress: Progress) -> SubnetEvaluator:
    return data.open(checkpoint, model=table.meta.model, table_size=table.meta.input_size,
                     need_supernet=need_supernet, progress=progress)


class SensitivityProxy(AdditiveProxy):
    """−Σ over pruned blocks of (loss with that block alone pruned − loss with none pruned)."""

    kind, metric = "sensitivity", "Σ loss increase"

    def __init__(self, checkpoint: str | Path, table: LatencyTable, data: HeldOutData,
                 progress: Progress | None = None):
        super().__init__()
        self._net = _evaluator(checkpoint, table, data, need_supernet=False, progress=progress or silent)
        self.base_loss = float("nan")
        self.increase: dict[int, float] = {}

    def restrict(self, candidates: tuple[int, ...]) -> tuple[int, ...]:
        return self._net.restrict(candidates, "sensitivity")

    def prepare(self, candidates: tuple[int, ...], progress: Progress) -> None:
        super().prepare(candidates, progress)
        started = time.perf_counter()
        self.base_top1, self.base_loss = self._net(())
        progress(f"sensitivity: none pruned: loss {self.base_loss:.4f}, top-1 {self.base_top1:.2f}%")
        for number, block in enumerate(self.candidates, 1):
            top1, loss = self._net((block,))
            self.increase[block] = loss - self.base_loss
            progress(f"sensitivity [{number}/{len(self.candidates)}] block {block} pruned alone: loss "
                     f"{loss:.4f} ({self.increase[block]:+.4f}), top-1 {top1:.2f}%")
        progress(f"sensitivity measured in {time.perf_counter() - started:.1f} s")
        self._scores = {c: -self.increase[c] for c in self.candidates}

    def describe(self, pruned: tuple[int, ...]) -> dict[str, Any]:
        return {"kind": self.kind, "metric": self.metric, "value": -self.score(pruned),
                "base_loss": self.base_loss, "predicted_loss": self.base_loss - self.score(pruned),
                "loss_increase": {str(c): self.increase[c] for c in self.candidates}, **self._net.describe()}

    @property
    def evaluations(self) -> int:
        return self._net.evaluations


class SupernetProxy(Proxy):
    """The supernet's top-1 (or −loss) with the subnet's gates, per subnet, cached."""

    kind = "supernet"

    def __init__(self, checkpoint: str | Path, table: LatencyTable, data: HeldOutData, *,
                 metric: str = "top1", progress: Progress | None = None):
        if metric not in METRICS:
            raise ConfigError(f"--metric must be one of {', '.join(METRICS)}, got {metric!r}")
        self.metric = metric
        self._net = _evaluator(checkpoint, table, data, need_supernet=True, progress=progress or silent)
        self._block_scores: np.ndarray | None = None

    def restrict(self, candidates: tuple[int, ...]) -> tuple[int, ...]:
        return self._net.restrict(candidates, "supernet")

    def score(self, pruned: tuple[int, ...]) -> float:
        top1, loss = self._net(pruned)
        return top1 if self.metric == "top1" else -loss

    def block_scores(self) -> np.ndarray:
        if self._block_scores is None:
            base = self.score(())
            self._block_scores = np.array([self.score((c,)) - base for c in self.candidates], dtype=float)
        return self._block_scores

    def describe(self, pruned: tuple[int, ...]) -> dict[str, Any]:
        top1, loss = self._net(pruned)
        return {"kind": self.kind, "metric": self.metric, "value": top1 if self.metric == "top1" else loss,
                "top1": top1, "loss": loss, "lam": self._net.lam, **self._net.describe()}

    @property
    def evaluations(self) -> int:
        return self._net.evaluations


def make_proxy(spec: str, *, table: LatencyTable, data: HeldOutData | None = None, metric: str | None = None,
               progress: Progress | None = None) -> Proxy:
    """``depth``, ``sensitivity:CKPT`` or ``supernet:CKPT`` (the latter two need ``data``)."""
    kind, colon, checkpoint = str(spec).partition(":")
    kind = kind.strip().lower()
    if kind not in KINDS:
        raise ConfigError(f"unknown proxy {spec!r}; choose depth, sensitivity:CKPT or supernet:CKPT")
    if kind == "depth":
        if colon or data is not None or metric is not None:
            raise ConfigError("the depth proxy takes no checkpoint, --data or --metric "
                              "(it needs only the table)")
        return DepthProxy()
    if not checkpoint:
        raise ConfigError(f"the {kind} proxy needs a checkpoint: --proxy {kind}:CKPT")
    if data is None:
        raise ConfigError(f"the {kind} proxy needs held-out data: --data digits|mnist5k|imagefolder:PATH")
    if not Path(checkpoint).is_file():
        raise ConfigError(f"{kind} checkpoint not found: {checkpoint}")
    if kind == "sensitivity":
        if metric is not None:
            raise ConfigError("--metric applies to the supernet proxy only (sensitivity uses the loss)")
        return SensitivityProxy(checkpoint, table, data, progress=progress)
    return SupernetProxy(checkpoint, table, data, metric=metric or "top1", progress=progress)

