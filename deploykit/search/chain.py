"""The exact search for additive scores under a chain latency: dynamic programming over Pareto frontiers.

The problem: choose a bit mask over n candidates (bit j ↔ the j-th candidate block, in block order) to

    maximize  Σ_{j ∈ S} score_j
    subject to latency(S) = full + Σ_{j ∈ S} step_j + Σ_{j, j+1 ∈ S} pair_j  ≤  limit

with the search's tie rule (:func:`deploykit.search.engine.pick`): among the best scores (within a
relative 1e-9), the lowest latency (within a relative 1e-9), then the smallest mask.

The latency couples only neighbours, so the decisions form a chain. :class:`Chain` sweeps it once from
the first candidate to the last and keeps, for each prefix and the state of its last bit, the Pareto
frontier of (latency, score): a partial subnet that another one beats on both counts (no slower, no
worse) can never complete into a better answer, because both complete the same way. Nothing is
discretized, so the optimum is exact (up to float summation order). The mask is then rebuilt from the
highest bit down, taking 0 wherever a completion of the frontier still reaches the optimum — which
yields the smallest optimal mask. The frontiers do not depend on the budget: one sweep answers every
budget. Frontier sizes are small in practice (at most n + 1 points per state for the depth proxy);
``states`` reports them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

TIE = 1e-9   # relative: the engine's tie rule


@dataclass(frozen=True)
class ChainChoice:
    mask: int
    score: float
    latency: float


class Chain:
    """Prefix Pareto frontiers for one (steps, pairs, scores) instance; :meth:`best` answers a budget."""

    def __init__(self, full: float, steps: np.ndarray, pairs: np.ndarray, scores: np.ndarray):
        self.full = float(full)
        self.steps = np.asarray(steps, dtype=float)
        self.scores = np.asarray(scores, dtype=float)
        n = len(self.steps)
        self.pairs = np.zeros(max(n - 1, 0)) if pairs is None else np.asarray(pairs, dtype=float)
        if len(self.scores) != n or len(self.pairs) != max(n - 1, 0):
            raise ValueError("a chain needs n steps, n scores and n − 1 pair terms")
        self.n = n
        # frontiers[j][f]: (latency, score) arrays over decisions of candidates 0..j−1, last bit f;
        # latency ascending, score strictly ascending.
        empty = (np.zeros(0), np.zeros(0))
        self.frontiers = [[(np.array([self.full]), np.array([0.0])), empty]]
        for j in range(n):
            (l0, s0), (l1, s1) = self.frontiers[j]
            keep = _pareto(np.concatenate([l0, l1]), np.concatenate([s0, s1]))
            pair = self.pairs[j - 1] if j > 0 else 0.0
            take = _pareto(np.concatenate([l0 + self.steps[j], l1 + (self.steps[j] + pair)]),
                           np.concatenate([s0, s1]) + self.scores[j])
            self.frontiers.append([keep, take])

    @property
    def states(self) -> int:
        """Frontier points kept over the whole sweep (the work the search did)."""
        return sum(len(part[0]) for level in self.frontiers for part in level)

    def best(self, limit: float) -> ChainChoice | None:
        """The answer for ``latency ≤ limit`` under the tie rule; None when no subnet fits."""
        points = [self.frontiers[self.n][f] for f in (0, 1)]
        latency = np.concatenate([p[0] for p in points])
        score = np.concatenate([p[1] for p in points])
        fits = latency <= limit
        if not fits.any():
            return None
        top = float(score[fits].max())
        floor = top - TIE * max(1.0, abs(top))
        low = float(latency[fits & (score >= floor)].min())
        cap = min(limit, low + TIE * max(1.0, abs(low)))
        mask = self._smallest_mask(cap, floor)
        return ChainChoice(mask=mask, score=self._score(mask), latency=self.latency(mask))

    def latency(self, mask: int) -> float:
        total = self.full
        for j in range(self.n):
            if mask >> j & 1:
                total += self.steps[j]
                if j > 0 and mask >> (j - 1) & 1:
                    total += self.pairs[j - 1]
        return total

    def _score(self, mask: int) -> float:
        return float(sum(self.scores[j] for j in range(self.n) if mask >> j & 1))

    def _smallest_mask(self, cap: float, floor: float) -> int:
        """The smallest mask with latency ≤ cap and score ≥ floor (one exists: the frontier has it)."""
        mask, fixed_latency, fixed_score, next_bit = 0, 0.0, 0.0, 0
        for j in range(self.n - 1, -1, -1):
            pair_next = self.pairs[j] if j + 1 < self.n else 0.0
            for bit in (0, 1):
                added = (self.steps[j] + pair_next * next_bit) if bit else 0.0
                if self._completes(j, bit, fixed_latency + added, fixed_score + bit * self.scores[j],
                                   cap, floor):
                    break
            else:  # pragma: no cover - the frontier guarantees a completion; kept as a guard
                raise RuntimeError("internal: the chain search lost its optimum")
            if bit:
                mask |= 1 << j
                fixed_latency += added
                fixed_score += self.scores[j]
            next_bit = bit
        return mask

    def _completes(self, j: int, bit: int, latency: float, score: float, cap: float, floor: float) -> bool:
        """Whether some decision of candidates 0..j−1 completes these fixed bits within cap and floor."""
        for last in (0, 1):
            lat, sc = self.frontiers[j][last]
            if not len(lat):
                continue
            pair = self.pairs[j - 1] if (j > 0 and bit and last) else 0.0
            room = cap - latency - pair
            position = int(np.searchsorted(lat, room + _slack(room), side="right")) - 1
            if position >= 0 and sc[position] + score >= floor - _slack(floor):
                return True
        return False


def _slack(value: float) -> float:
    """Float summation order differs between the sweep and the rebuild: admit that much."""
    return 1e-12 * max(1.0, abs(value))


def _pareto(latency: np.ndarray, score: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The points no other point beats (lower or equal latency and higher or equal score)."""
    if not len(latency):
        return latency, score
    order = np.lexsort((-score, latency))
    latency, score = latency[order], score[order]
    best_before = np.maximum.accumulate(np.concatenate([[-math.inf], score[:-1]]))
    keep = score > best_before
    return latency[keep], score[keep]
