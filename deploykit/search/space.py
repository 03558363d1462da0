"""The latency side of the search: every subnet's predicted latency, from the table's own ``predict``.

:meth:`LatencyTable.predict` is affine in which blocks are pruned (Σ fixed + Σ per block, then
``a · Σ + b`` when calibrated), so the prediction of any subset S of the candidate blocks is
``predict(∅) − Σ_{j ∈ S} saving_j`` with ``saving_j = predict(∅) − predict({j})``. The savings are taken
from ``predict`` itself (one call per distinct table entry, since blocks that share an entry share
its latencies), so the search and every report share one prediction; the search
only adds them up, vectorized. A saving may be negative: a merged form that is slower than the original
on the target (a dense 3×3 from a ResNet Bottleneck can be).

Subnets are bit masks over ``candidates`` (bit j ↔ ``candidates[j]``). Sums are always taken in
ascending bit order, so the same subset gets bit-identical latencies on every code path.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np

from deploykit.errors import ConfigError, TableError
from deploykit.latency.table import LatencyTable, parse_indices

MAX_ENUMERATED_BITS = 26  # 2^26 float64 = 512 MiB per array: the most any code path enumerates


@dataclass(frozen=True)
class LatencySpace:
    """Candidate blocks, the unpruned prediction and each candidate's latency saving (ms)."""

    candidates: tuple[int, ...]
    full_ms: float
    savings: np.ndarray

    @classmethod
    def from_table(cls, table: LatencyTable, candidates: Iterable[int] | None = None) -> LatencySpace:
        if not table.meta.complete:
            raise TableError(f"latency table {table.path or ''} is incomplete (its profile was interrupted "
                             "or is still running); rerun the same `deploykit profile` command to finish it")
        prunable = table.prunable_indices
        chosen = tuple(sorted(set(prunable if candidates is None else candidates)))
        outside = [i for i in chosen if i not in prunable]
        if outside:
            raise ConfigError(f"block(s) {outside} cannot be pruned according to the table "
                              f"(its prunable blocks: {list(prunable)})")
        if not chosen:
            raise ConfigError("no candidate blocks to search over")
        full = table.predict(())
        # Blocks that share a table entry share its latencies, hence their saving: one call per entry.
        saving_of: dict[int, float] = {}
        for group in _entries(table):
            members = [i for i in group if i in chosen]
            if members:
                saving = full - table.predict((members[0],))
                saving_of.update({i: saving for i in members})
        savings = np.array([saving_of[i] for i in chosen], dtype=float)
        return cls(candidates=chosen, full_ms=full, savings=savings)

    @property
    def bits(self) -> int:
        return len(self.candidates)

    def pruned(self, mask: int) -> tuple[int, ...]:
        return tuple(c for j, c in enumerate(self.candidates) if mask >> j & 1)

    def mask(self, pruned: Iterable[int]) -> int:
        position = {c: j for j, c in enumerate(self.candidates)}
        return sum(1 << position[i] for i in set(pruned))

    def saved(self, mask: int) -> float:
        total = 0.0
        for j in range(self.bits):
            if mask >> j & 1:
                total += self.savings[j]
        return float(total)

    def latency(self, mask: int) -> float:
        return self.full_ms - self.saved(mask)

    def min_ms(self) -> float:
        """The smallest latency any subnet reaches: prune exactly the blocks that save time."""
        return self.latency(self.best_mask())

    def best_mask(self) -> int:
        return sum(1 << j for j, s in enumerate(self.savings) if s > 0)

    def all_saved(self) -> np.ndarray:
        """Σ savings of every mask 0 .. 2^n − 1 (doubling: O(2^n), no bit matrix)."""
        return subset_sums(self.savings)


def _entries(table: LatencyTable) -> list[tuple[int, ...]]:
    """The block indices of each merged-form table entry (blocks listed together share one row)."""
    rows = table.rows[(table.rows["kind"] == "block") & (table.rows["form"] == "merged")]
    return [parse_indices(text) for text in rows["indices"]]


def subset_sums(values: np.ndarray) -> np.ndarray:
    """``out[mask]`` = Σ of ``values[j]`` over the set bits j of ``mask``, for every mask, in ascending bit
    order: ``out[m | 1 << j] = out[m] + values[j]`` for m < 2^j."""
    n = len(values)
    if n > MAX_ENUMERATED_BITS:
        raise ConfigError(f"2^{n} subsets are too many to enumerate (at most 2^{MAX_ENUMERATED_BITS})")
    out = np.zeros(1 << n, dtype=float)
    for j in range(n):
        np.add(out[:1 << j], values[j], out=out[1 << j:2 << j])
    return out
