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

import itertools
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


# --- several latency tables: one constraint each ---------------------------------------------------

@dataclass(frozen=True)
class JointChoice:
    mask: int
    score: float
    latencies: tuple[float, ...]


MIX_GRID = 4   # relaxation weights on the simplex, in steps of 1/MIX_GRID


class JointChain:
    """The exact optimum under k chain latencies at once, each within its own limit.

    The problem (rows i = 1..k: one per latency table, all over the same candidates):

        maximize  Σ_{j ∈ S} score_j
        subject to latency_i(S) = full_i + Σ_{j ∈ S} step_ij + Σ_{j, j+1 ∈ S} pair_ij  ≤  limit_i  ∀ i

    with the tie rule of :class:`Chain`, latencies compared on the first row. It is a multi-constraint
    knapsack along a chain. The sweep keeps, per prefix and state of its last bit, the partial subnets
    as vectors (score, latency_1, …, latency_k) and drops three kinds, none of which can be (part of)
    an answer:

    - *dominated*: another partial subnet with the same last bit is no worse on every coordinate; both
      complete the same ways, so whatever completes the dominated one completes the other as well or
      better (exact duplicates keep one);
    - *infeasible*: for some row i no completion of the suffix fits limit_i (the suffix's smallest
      possible latency on row i, from a one-row sweep of the reversed chain, already exceeds the room);
    - *bounded out*: the score plus, for the best row i, the best score a suffix can add within row i's
      room alone (the same reversed one-row sweeps, a relaxation: the other rows dropped) stays below a
      score that a feasible subnet is known to reach (the incumbent, from one-row sweeps whose answers
      are checked on every row), by more than the tie tolerance.

    What is kept holds every optimal subnet's prefix, so the answer and its tie-breaking are those of
    enumeration; ``tests/test_search_joint.py`` checks it against brute force. Each dropped state is
    dropped for good, which keeps the frontiers small: ``states`` reports them. A limit may be ``inf``
    (that row is reported, never binding).
    """

    def __init__(self, full: np.ndarray, steps: np.ndarray, pairs: np.ndarray, scores: np.ndarray,
                 limits: np.ndarray):
        self.full = np.asarray(full, dtype=float).reshape(-1)
        self.steps = np.atleast_2d(np.asarray(steps, dtype=float))
        self.scores = np.asarray(scores, dtype=float)
        self.limits = np.asarray(limits, dtype=float).reshape(-1)
        k, n = self.steps.shape
        self.pairs = (np.zeros((k, max(n - 1, 0))) if pairs is None
                      else np.asarray(pairs, dtype=float).reshape(k, max(n - 1, 0)))
        if len(self.full) != k or len(self.limits) != k or len(self.scores) != n:
            raise ValueError("a joint chain needs k fulls and limits, k × n steps, k × (n − 1) pairs and n "
                             "scores")
        self.k, self.n = k, n
        self._relaxations = self._surrogates()
        self.incumbent = self._incumbent()
        self._floor = self._prune_floor()
        # levels[j][f]: (m, 1 + k) arrays of (score, latency_1..k) over decisions of candidates 0..j−1,
        # last bit f.
        self.levels = [[self._prune(np.concatenate([[0.0], self.full])[None, :], 0, 0),
                        np.zeros((0, 1 + k))]]
        for j in range(n):
            below, above = self.levels[j]
            step = np.concatenate([[self.scores[j]], self.steps[:, j]])
            pair = np.concatenate([[0.0], self.pairs[:, j - 1]]) if j > 0 else np.zeros(1 + k)
            keep = np.concatenate([below, above])
            take = np.concatenate([below + step, above + (step + pair)])
            self.levels.append([self._prune(keep, j + 1, 0), self._prune(take, j + 1, 1)])

    @property
    def states(self) -> int:
        return sum(len(part) for level in self.levels for part in level)

    def latencies(self, mask: int) -> tuple[float, ...]:
        totals = self.full.copy()
        for j in range(self.n):
            if mask >> j & 1:
                totals += self.steps[:, j]
                if j > 0 and mask >> (j - 1) & 1:
                    totals += self.pairs[:, j - 1]
        return tuple(float(t) for t in totals)

    def fits(self, mask: int) -> bool:
        return all(t <= limit for t, limit in zip(self.latencies(mask), self.limits))

    def best(self) -> JointChoice | None:
        """The answer under the tie rule; None when no subnet fits every limit."""
        final = np.concatenate(self.levels[self.n])
        final = final[np.all(final[:, 1:] <= self.limits, axis=1)]
        if not len(final):
            return None
        top = float(final[:, 0].max())
        floor = top - TIE * max(1.0, abs(top))
        low = float(final[final[:, 0] >= floor, 1].min())
        caps = self.limits.copy()
        caps[0] = min(caps[0], low + TIE * max(1.0, abs(low)))
        mask = self._smallest_mask(caps, floor)
        score = float(sum(self.scores[j] for j in range(self.n) if mask >> j & 1))
        return JointChoice(mask=mask, score=score, latencies=self.latencies(mask))

    # --- pruning ---------------------------------------------------------------------------------

    def _surrogates(self) -> list[tuple[np.ndarray, Chain, Chain]]:
        """One-row relaxations: each row with a finite limit alone, and mixes of them — Σ_i w_i ·
        latency_i / limit_i for weights w on a grid of the simplex (steps of 1/4). A subnet within
        every limit is within Σ_i w_i on a mix, so each gives a valid bound, and the bound of a state is
        the smallest over them. Per relaxation: the weights, the forward chain (its answers are
        incumbents) and the reversed one (suffix bounds)."""
        finite = [i for i in range(self.k) if math.isfinite(self.limits[i])]
        mixes = [np.eye(self.k)[i] for i in finite] or [np.zeros(self.k)]  # no limit: one row of zeros
        for parts in itertools.product(range(MIX_GRID + 1), repeat=len(finite)):
            if sum(parts) == MIX_GRID and max(parts) < MIX_GRID:
                weights = np.zeros(self.k)
                weights[finite] = np.array(parts) / MIX_GRID / np.abs(self.limits[finite])
                mixes.append(weights)
        out = []
        for weights in mixes:
            steps, pairs = weights @ self.steps, weights @ self.pairs
            out.append((weights, Chain(float(weights @ self.full), steps, pairs, self.scores),
                        Chain(0.0, steps[::-1], pairs[::-1], self.scores[::-1])))
        return out

    def _suffix_best(self, j: int, last: int, room: np.ndarray, weights: np.ndarray,
                     chain: Chain) -> np.ndarray:
        """Per room: the best score decisions of candidates j..n−1 add within ``room`` on a relaxation
        row (``chain``: its reversed sweep), given bit j − 1 = ``last`` (−inf: nothing fits)."""
        best = np.full(len(room), -math.inf)
        for first in (0, 1):  # the bit of candidate j
            lat, sc = chain.frontiers[self.n - j][first]
            if not len(lat):
                continue
            pair = float(weights @ self.pairs[:, j - 1]) if (j > 0 and last and first) else 0.0
            free = room - pair
            position = np.searchsorted(lat, free + _slack_array(free), side="right") - 1
            found = np.where(position >= 0, sc[np.maximum(position, 0)], -math.inf)
            best = np.maximum(best, found)
        return best

    def _prune(self, states: np.ndarray, j: int, last: int) -> np.ndarray:
        if not len(states):
            return states
        bound = np.full(len(states), math.inf)
        finite = np.isfinite(self.limits)
        for weights, _, reversed_chain in self._relaxations:
            room = (self.limits[finite] - states[:, 1:][:, finite]) @ weights[finite]
            bound = np.minimum(bound, self._suffix_best(j, last, room, weights, reversed_chain))
        bound = states[:, 0] + bound
        return _undominated(states[np.isfinite(bound) & (bound >= self._floor)])

    def _incumbent(self) -> float:
        """A score some subnet within every limit reaches (−inf if none is known): each relaxation's
        optimum, made to fit (greedy repair) and then improved greedily."""
        best = -math.inf
        finite = np.isfinite(self.limits)
        for weights, chain, _ in self._relaxations:
            choice = chain.best(float(weights[finite] @ self.limits[finite]))
            if choice is None:
                continue
            mask = self._improve(self._repair(choice.mask))
            if mask is not None:
                best = max(best, float(self.scores @ self._bits(mask)))
        return best

    def _bits(self, mask: int) -> np.ndarray:
        return np.array([mask >> j & 1 for j in range(self.n)], dtype=float)

    def _flip_changes(self, bits: np.ndarray) -> np.ndarray:
        """(k, n): how each row's latency changes when bit j flips."""
        before = np.concatenate([[0.0], bits[:-1]])
        after = np.concatenate([bits[1:], [0.0]])
        pair_before = np.concatenate([np.zeros((self.k, 1)), self.pairs], axis=1)
        pair_after = np.concatenate([self.pairs, np.zeros((self.k, 1))], axis=1)
        change = self.steps + pair_before * before + pair_after * after
        return np.where(bits > 0, -change, change)

    def _latency_rows(self, bits: np.ndarray) -> np.ndarray:
        return self.full + self.steps @ bits + self.pairs @ (bits[:-1] * bits[1:])

    def _repair(self, mask: int) -> int | None:
        """Flip the bit with the largest drop of the total excess over the limits (relative to the
        limits) per unit of score lost, until every row fits; None if no flip helps."""
        bits = self._bits(mask)
        scale = np.where(np.isfinite(self.limits), 1.0 / np.abs(np.where(np.isfinite(self.limits),
                                                                         self.limits, 1.0)), 0.0)
        while True:
            latency = self._latency_rows(bits)
            excess = np.maximum(latency - self.limits, 0.0) * scale
            if not excess.any():
                return int(sum(1 << j for j in range(self.n) if bits[j]))
            after = np.maximum(latency[:, None] + self._flip_changes(bits) - self.limits[:, None], 0.0)
            drop = excess.sum() - (after * scale[:, None]).sum(axis=0)
            loss = np.where(bits > 0, self.scores, -self.scores)   # score lost by each flip
            ratio = np.where(drop > 0, drop / (np.maximum(loss, 0.0) + 1e-12), -math.inf)
            j = int(np.argmax(ratio))
            if not math.isfinite(ratio[j]):
                return None
            bits[j] = 1.0 - bits[j]

    def _improve(self, mask: int | None) -> int | None:
        """Flip the bit with the largest score gain that keeps every row within its limit, while one
        exists."""
        if mask is None:
            return None
        bits = self._bits(mask)
        while True:
            latency = self._latency_rows(bits)
            fits = np.all(latency[:, None] + self._flip_changes(bits) <= self.limits[:, None], axis=0)
            gain = np.where(bits > 0, -self.scores, self.scores)
            gain = np.where(fits & (gain > 0), gain, -math.inf)
            j = int(np.argmax(gain))
            if not math.isfinite(gain[j]):
                return int(sum(1 << j for j in range(self.n) if bits[j]))
            bits[j] = 1.0 - bits[j]

    def _prune_floor(self) -> float:
        """States whose bound is below this cannot reach the optimum's tie band."""
        if not math.isfinite(self.incumbent):
            return -math.inf
        ceiling = float(np.maximum(self.scores, 0.0).sum())  # no subnet scores more
        size = max(1.0, abs(self.incumbent), abs(ceiling))
        return self.incumbent - 2 * TIE * size - 1e-12 * size * (self.n + 1)

    # --- the answer's mask -----------------------------------------------------------------------

    def _smallest_mask(self, caps: np.ndarray, floor: float) -> int:
        mask, next_bit = 0, 0
        fixed = np.zeros(1 + self.k)
        for j in range(self.n - 1, -1, -1):
            pair_next = self.pairs[:, j] if j + 1 < self.n else np.zeros(self.k)
            for bit in (0, 1):
                added = np.concatenate([[self.scores[j]], self.steps[:, j] + pair_next * next_bit]) \
                    if bit else np.zeros(1 + self.k)
                if self._completes(j, bit, fixed + added, caps, floor):
                    break
            else:  # pragma: no cover - the kept states guarantee a completion; kept as a guard
                raise RuntimeError("internal: the joint chain search lost its optimum")
            if bit:
                mask |= 1 << j
                fixed = fixed + added
            next_bit = bit
        return mask

    def _completes(self, j: int, bit: int, fixed: np.ndarray, caps: np.ndarray, floor: float) -> bool:
        for last in (0, 1):
            states = self.levels[j][last]
            if not len(states):
                continue
            pair = self.pairs[:, j - 1] if (j > 0 and bit and last) else np.zeros(self.k)
            room = caps - fixed[1:] - pair
            fits = np.all(states[:, 1:] <= room + _slack_array(room), axis=1)
            if np.any(fits & (states[:, 0] + fixed[0] >= floor - _slack(floor))):
                return True
        return False


def _slack_array(values: np.ndarray) -> np.ndarray:
    return 1e-12 * np.maximum(1.0, np.abs(values))


DOMINANCE_CHUNK = 512


def _undominated(states: np.ndarray) -> np.ndarray:
    """The rows no other row beats: higher or equal score (column 0) and lower or equal latencies
    (columns 1..); of exact duplicates the first is kept."""
    if len(states) <= 1:
        return states
    cost = np.column_stack([-states[:, 0], states[:, 1:]])
    order = np.lexsort(cost.T[::-1])            # by −score, then latency 1, 2, …
    cost, states = cost[order], states[order]
    if cost.shape[1] == 2:  # one latency: the running minimum decides
        best_before = np.minimum.accumulate(np.concatenate([[math.inf], cost[:-1, 1]]))
        return states[cost[:, 1] < best_before]
    # A row can only be beaten by one before it in this order; domination is transitive, so a row is
    # dropped when any row before it (dropped or not) is no worse on every coordinate.
    dominated = np.zeros(len(cost), dtype=bool)
    for start in range(0, len(cost), DOMINANCE_CHUNK):
        block = cost[start:start + DOMINANCE_CHUNK]
        before = cost[:start + len(block)]
        beats = np.all(before[None, :, :] <= block[:, None, :], axis=2)
        positions = np.arange(len(before))[None, :] < (start + np.arange(len(block)))[:, None]
        dominated[start:start + len(block)] = np.any(beats & positions, axis=1)
    return states[~dominated]
