"""Which subnets to measure end to end: the fidelity check's stratified sample, and a profile's plan of
designed, random and held-out subnets. Deterministic under a seed; pure numpy.

A subnet is the sorted tuple of its pruned block indices.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from deploykit.checks import require_int

Subset = tuple[int, ...]


def plan_subnets(prunable: Sequence[int], samples: int, seed: int,
                 spread_by: Callable[[Subset], float] | None = None) -> list[Subset]:
    """``samples`` distinct subnets (pruned index tuples), stratified over k = 0..n, in measuring order.

    The unpruned model is always in. Where a stratum has no unused subset left (k = 0 or k = n twice),
    the nearest k that has one is taken. Fewer than ``samples`` come back only when the whole space
    (2^n subnets) is smaller. With ``spread_by``, the all-merged model is in too and the others are
    spread evenly over that prediction (:func:`spread_by_prediction`), as a profile's held-out subnets.
    """
    require_int("--samples", samples, least=1)
    blocks = tuple(sorted(prunable))
    n = len(blocks)
    rng = np.random.default_rng(seed)
    space = 2 ** n if n < 63 else math.inf
    count = int(min(samples, space))
    if spread_by is not None and count < space:  # else every subnet is measured: nothing to choose
        ends = [(), blocks][:count]  # the unpruned and the all-merged model: the ends of the range
        plan = [*ends, *spread_by_prediction(blocks, count - len(ends), set(ends), rng, spread_by)]
    else:
        plan = _stratified_from_zero(blocks, count, rng)
    first, rest = plan[:1], plan[1:]
    order = rng.permutation(len(rest))
    return first + [rest[i] for i in order]


def _stratified_from_zero(blocks: tuple[int, ...], count: int, rng: np.random.Generator) -> list[Subset]:
    n = len(blocks)
    taken: set[Subset] = set()
    plan: list[Subset] = []
    for i in range(count):
        subset = _nearest(blocks, 0 if i == 0 else round(i * n / (count - 1)), taken, rng)
        if subset is None:  # cannot happen while len(taken) < 2^n; kept as a guard
            break
        taken.add(subset)
        plan.append(subset)
    return plan


def _nearest(blocks: tuple[int, ...], k: int, taken: set, rng: np.random.Generator) -> Subset | None:
    """A random unused subset of size k, or of the nearest size that still has one."""
    n = len(blocks)
    for shift in sorted(range(-n, n + 1), key=abs):
        subset = _draw(blocks, k + shift, taken, rng) if 0 <= k + shift <= n else None
        if subset is not None:
            return subset
    return None


def _draw(blocks: tuple[int, ...], k: int, taken: set, rng: np.random.Generator) -> Subset | None:
    """A random unused k-subset of ``blocks``, or None when every k-subset is used."""
    if math.comb(len(blocks), k) <= sum(1 for s in taken if len(s) == k):
        return None
    while True:
        subset = tuple(sorted(int(b) for b in rng.choice(blocks, size=k, replace=False))) if k else ()
        if subset not in taken:
            return subset


# --- a profile's end-to-end plan ---------------------------------------------------------------------

@dataclass(frozen=True)
class EndToEndPlan:
    """The subnets a profile measures end to end after its isolated entries.

    ``designed``: the unpruned model, each identical-block group merged alone, everything merged;
    ``random``: random subnets for the fit; ``holdout``: random subnets never used in fitting (disjoint
    from both). ``order`` is the measuring order, (phase, subnet) with phase ``fit`` or ``holdout``,
    shuffled so that a slow drift of the machine does not line up with depth or with the phase.
    """

    designed: tuple[Subset, ...]
    random: tuple[Subset, ...]
    holdout: tuple[Subset, ...]
    order: tuple[tuple[str, Subset], ...]

    @property
    def fit(self) -> tuple[Subset, ...]:
        return self.designed + self.random


def plan_end_to_end(groups: Sequence[Sequence[int]], *, fit_samples: int, holdout: int, seed: int,
                    designed: bool = True, spread_by: Callable[[Subset], float] | None = None,
                    ) -> EndToEndPlan:
    """Plan the end-to-end measurements of a profile over prunable ``groups`` (block indices that share
    a table entry). ``designed=False`` (the isolated predictor) plans only the held-out subnets.
    Random and held-out subnets prune k = 1..n−1 blocks, stratified; where the space is too small
    for all of them, the held-out ones are drawn first. With ``spread_by`` (a prediction known before
    any end-to-end measurement: the isolated sum), the held-out subnets are instead spread evenly over
    the predicted range (:func:`spread_by_prediction`)."""
    for name, value in (("--fit-samples", fit_samples), ("--holdout", holdout)):
        require_int(name, value, least=0)
    blocks = tuple(sorted({int(i) for group in groups for i in group}))
    rng = np.random.default_rng(seed)
    planned: list[Subset] = []
    if designed:
        candidates = [(), *(tuple(sorted(group)) for group in groups), blocks]
        planned = list(dict.fromkeys(candidates))
    taken = set(planned) | {(), blocks}   # held-out and random subnets are neither extreme
    if spread_by is None:
        held = _stratified(blocks, holdout, taken, rng)
    else:
        held = spread_by_prediction(blocks, holdout, taken, rng, spread_by)
    taken |= set(held)
    extra = _stratified(blocks, fit_samples if designed else 0, taken, rng)
    order = [("fit", s) for s in (*planned, *extra)] + [("holdout", s) for s in held]
    shuffled = [order[i] for i in rng.permutation(len(order))]
    return EndToEndPlan(designed=tuple(planned), random=tuple(extra), holdout=tuple(held),
                        order=tuple(shuffled))


def _stratified(blocks: tuple[int, ...], count: int, taken: set, rng: np.random.Generator) -> list[Subset]:
    """Up to ``count`` distinct unused subsets with k spread evenly over 1..n−1 (fewer if none is left)."""
    n = len(blocks)
    free = (2 ** n if n < 63 else math.inf) - len(taken | {(), blocks})
    count = int(min(count, max(free, 0)))
    chosen: list[Subset] = []
    for i in range(count):
        k = 1 + round(i * (n - 2) / (count - 1)) if count > 1 else max(1, n // 2)
        subset = _nearest(blocks, min(max(k, 0), n), taken, rng)
        if subset is None:
            break
        taken.add(subset)
        chosen.append(subset)
    return chosen


# Candidates drawn per held-out subnet when spreading by prediction: enough that every point of an even
# grid over the predicted range has a subnet near it.
POOL_PER_PICK = 50


def spread_by_prediction(blocks: tuple[int, ...], count: int, taken: set, rng: np.random.Generator,
                         predict: Callable[[Subset], float]) -> list[Subset]:
    """Up to ``count`` unused subsets whose ``predict`` values are spread evenly over the range that a
    k-stratified pool of random subsets spans, from the lightest pruning to the heaviest.

    Why: drawn by k alone, held-out subnets of a model whose blocks differ in cost land within 0.1 % of
    each other, a difference no measurement repeatable to ±2 % can order; their rank correlation then
    measures the machine's noise, not the table. Evenly spread, they test the range a search chooses
    across. ``taken`` is not changed."""
    pool = _stratified(blocks, count * POOL_PER_PICK, set(taken), rng)
    if len(pool) <= count:
        return pool
    predicted = np.array([predict(subset) for subset in pool])
    # one subset per predicted value where there are enough values: a tie cannot be ranked
    _, distinct = np.unique(predicted.round(9), return_index=True)
    if len(distinct) >= count:
        keep = np.sort(distinct)
        pool, predicted = [pool[i] for i in keep], predicted[keep]
    free = np.ones(len(pool), dtype=bool)
    chosen: list[Subset] = []
    for target in np.linspace(predicted.min(), predicted.max(), count):
        nearest = int(np.argmin(np.where(free, np.abs(predicted - target), np.inf)))
        free[nearest] = False
        chosen.append(pool[nearest])
    return chosen
