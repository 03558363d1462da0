"""The latency side of the search: every subnet's predicted latency, from the table's own ``predict``.

:meth:`LatencyTable.predict` is additive along the block chain — the fitted predictor is
``base + Σ δ_i + Σ δ_{i,i+1}`` over merged blocks and adjacent merged pairs, the isolated sum has no pair
terms, and a calibration or rescale is affine — so the prediction of any subset S of the candidates is

    predict(S) = full − Σ_{j ∈ S} saving_j + Σ_{j, j+1 ∈ S} pair_j

with ``full = predict(∅)``, ``saving_j = full − predict({j})`` and, for consecutive candidates,
``pair_j = predict({j, j+1}) − predict({j}) − predict({j+1}) + full``. These terms are taken from
``predict`` itself (and checked against it on a few subsets), so the search and every report share one
prediction; the search only adds them up. A saving may be negative: a merged form that is slower than
the original on the target (a dense 3×3 from a ResNet Bottleneck can be).

Subnets are bit masks over ``candidates`` (bit j ↔ ``candidates[j]``). Sums are always taken in
ascending bit order (saving j, then the pair term with j − 1), so the same subset gets bit-identical
latencies on every code path.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable
from dataclasses import dataclass, field

import numpy as np

from deploykit.errors import ConfigError, TableError
from deploykit.latency.table import LatencyTable
from deploykit.search.chain import Chain

MAX_ENUMERATED_BITS = 26  # 2^26 float64 = 512 MiB per array: the most any code path enumerates
CHECK_TOLERANCE = 1e-9    # relative: the decomposition must reproduce predict this closely


@dataclass(frozen=True)
class LatencySpace:
    """Candidate blocks, the unpruned prediction, each candidate's saving and each consecutive pair's
    extra latency (ms)."""

    candidates: tuple[int, ...]
    full_ms: float
    savings: np.ndarray
    pairs: np.ndarray = field(default=None)   # len(candidates) − 1; zeros: no pair terms

    def __post_init__(self) -> None:
        if self.pairs is None:
            object.__setattr__(self, "pairs", np.zeros(max(len(self.candidates) - 1, 0)))

    @classmethod
    def from_table(cls, table: LatencyTable, candidates: Iterable[int] | None = None) -> LatencySpace:
        table.check_coverage()
        prunable = table.prunable_indices
        chosen = tuple(sorted(set(prunable if candidates is None else candidates)))
        outside = [i for i in chosen if i not in prunable]
        if outside:
            raise ConfigError(f"block(s) {outside} cannot be pruned according to the table "
                              f"(its prunable blocks: {list(prunable)})")
        if not chosen:
            raise ConfigError("no candidate blocks to search over")
        full = table.predict(())
        alone = np.array([table.predict((c,)) for c in chosen])
        pairs = np.array([table.predict((a, b)) - alone[j] - alone[j + 1] + full
                          for j, (a, b) in enumerate(itertools.pairwise(chosen))], dtype=float)
        pairs[np.abs(pairs) <= 1e-12 * max(1.0, abs(full))] = 0.0  # rounding of terms that are not there
        space = cls(candidates=chosen, full_ms=full, savings=full - alone, pairs=pairs)
        space._check_against(table)
        return space

    def _check_against(self, table: LatencyTable) -> None:
        """The decomposition must reproduce ``predict`` (else the prediction is not chain-additive)."""
        n = self.bits
        rng = np.random.default_rng(0)
        masks = {(1 << n) - 1, sum(1 << j for j in range(0, n, 2))}
        masks |= {int(sum(1 << int(j) for j in np.flatnonzero(rng.random(n) < 0.5))) for _ in range(3)}
        for mask in sorted(masks):
            expected = table.predict(self.pruned(mask))
            if abs(self.latency(mask) - expected) > CHECK_TOLERANCE * max(1.0, abs(expected)):
                raise TableError(f"the table's prediction for blocks {list(self.pruned(mask))} "
                                 f"({expected:.6g} ms) is not its unpruned latency plus per-block and "
                                 f"adjacent-pair terms ({self.latency(mask):.6g} ms)")

    @property
    def bits(self) -> int:
        return len(self.candidates)

    @property
    def has_pairs(self) -> bool:
        return bool(np.any(self.pairs != 0))

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
                if j > 0 and mask >> (j - 1) & 1 and self.pairs[j - 1] != 0:
                    total -= self.pairs[j - 1]
        return float(total)

    def latency(self, mask: int) -> float:
        return self.full_ms - self.saved(mask)

    def flip_change(self, mask: int, j: int) -> float:
        """How much the latency drops when bit j of ``mask`` flips (negative: it rises)."""
        gain = self.savings[j]
        for neighbour, pair in ((j - 1, self.pairs[j - 1] if j > 0 else 0.0),
                                (j + 1, self.pairs[j] if j + 1 < self.bits else 0.0)):
            if 0 <= neighbour < self.bits and mask >> neighbour & 1:
                gain -= pair
        return float(-gain if mask >> j & 1 else gain)

    def chain(self, scores: np.ndarray | None = None) -> Chain:
        """The dynamic program over this space with per-candidate ``scores`` (None: all zero)."""
        scores = np.zeros(self.bits) if scores is None else np.asarray(scores, dtype=float)
        return Chain(self.full_ms, -self.savings, self.pairs, scores)

    def min_ms(self) -> float:
        """The smallest latency any subnet reaches."""
        return self.latency(self.best_mask())

    def best_mask(self) -> int:
        """The fastest subnet (the smallest mask among equally fast ones)."""
        cached = getattr(self, "_fastest", None)
        if cached is None:
            cached = self.chain().best(np.inf).mask
            object.__setattr__(self, "_fastest", cached)
        return cached

    def all_saved(self) -> np.ndarray:
        """Latency saved by every mask 0 .. 2^n − 1 (doubling: O(2^n), no bit matrix)."""
        n = self.bits
        if n > MAX_ENUMERATED_BITS:
            raise ConfigError(f"2^{n} subsets are too many to enumerate (at most 2^{MAX_ENUMERATED_BITS})")
        out = np.zeros(1 << n, dtype=float)
        for j in range(n):
            np.add(out[:1 << j], self.savings[j], out=out[1 << j:2 << j])
            if j > 0 and self.pairs[j - 1] != 0:  # masks with bit j − 1 set: the upper half of 0 .. 2^j
                out[(1 << j) + (1 << (j - 1)):2 << j] -= self.pairs[j - 1]
        return out


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
