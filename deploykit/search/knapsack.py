"""An exact 0/1 knapsack over per-block scores, by branch and bound (no discretization).

The search's seed problem: choose blocks S maximizing Σ score_j subject to Σ saving_j ≥ need (the
latency the budget requires to be saved). Scores and savings may have either sign. Items that help
both ways are always taken, items that hurt both ways never; the rest become a min-cost covering
problem with positive costs and gains (an item with positive score and negative saving is taken by
default and "un-taking" it is the decision), solved by depth-first branch and bound with the
fractional (LP) relaxation as bound, items in order of cost per unit gain. The optimum is exact; the
node limit only guards against pathological inputs, and ``exact`` says whether it was reached.

:func:`lexicographic` adds the search's tie rule: among subsets with the best score (within a
tolerance), the one saving the most latency — a second exact solve of the same kind.
"""

from __future__ import annotations

import math
import sys
from dataclasses import dataclass

import numpy as np

NODE_LIMIT = 2_000_000


@dataclass(frozen=True)
class Choice:
    chosen: np.ndarray        # bool per item
    value: float              # Σ values over the chosen items
    exact: bool               # False only if the node limit cut the search short


def best_subset(values: np.ndarray, weights: np.ndarray, need: float, *,
                node_limit: int = NODE_LIMIT) -> Choice | None:
    """Maximize Σ values[S] subject to Σ weights[S] ≥ need; None when no subset meets ``need``."""
    values, weights = np.asarray(values, dtype=float), np.asarray(weights, dtype=float)
    take = (values >= 0) & (weights >= 0)
    flip = (values > 0) & (weights < 0)      # taken by default; leaving it out costs value, gains weight
    normal = (values < 0) & (weights > 0)    # left out by default; taking it costs value, gains weight
    items = np.flatnonzero(flip | normal)
    cost, gain = np.abs(values[items]), np.abs(weights[items])
    remaining = need - float(weights[take].sum() + weights[flip].sum())
    picked, exact = _cover(cost, gain, remaining, node_limit)
    if picked is None:
        return None
    chosen = take | flip
    for item in items[picked]:
        chosen[item] = not chosen[item]
    return Choice(chosen=chosen, value=float(values[chosen].sum()), exact=exact)


def lexicographic(scores: np.ndarray, savings: np.ndarray, need: float, *,
                  node_limit: int = NODE_LIMIT) -> Choice | None:
    """Best Σ score with Σ saving ≥ need; among (near-)ties on score, the largest Σ saving."""
    first = best_subset(scores, savings, need, node_limit=node_limit)
    if first is None:
        return None
    tolerance = 1e-9 * max(1.0, float(np.abs(scores).sum()))
    second = best_subset(savings, scores, first.value - tolerance, node_limit=node_limit)
    if second is None or float(np.asarray(savings)[second.chosen].sum()) < need:
        return first
    return Choice(chosen=second.chosen, value=float(np.asarray(scores)[second.chosen].sum()),
                  exact=first.exact and second.exact)


def _cover(cost: np.ndarray, gain: np.ndarray, need: float,
           node_limit: int) -> tuple[np.ndarray | None, bool]:
    """Minimum Σ cost with Σ gain ≥ need over items with positive cost and gain (indices into them)."""
    if need <= 0:
        return np.zeros(0, dtype=int), True
    if gain.sum() < need:
        return None, True
    order = np.argsort(cost / gain, kind="stable")
    c, g = cost[order].tolist(), gain[order].tolist()
    n = len(c)
    suffix = [0.0] * (n + 1)
    for i in range(n - 1, -1, -1):
        suffix[i] = suffix[i + 1] + g[i]
    eps = 1e-12 * (sum(c) + 1.0)
    best: dict = {"cost": math.inf, "set": None}
    state = {"nodes": 0, "cut": False}
    path: list[int] = []

    def bound(i: int, r: float) -> float:
        extra = 0.0
        for j in range(i, n):
            if g[j] >= r:
                return extra + c[j] * r / g[j]
            extra += c[j]
            r -= g[j]
        return math.inf

    def visit(i: int, spent: float, r: float) -> None:
        state["nodes"] += 1
        if r <= 0:
            if spent < best["cost"]:
                best["cost"], best["set"] = spent, list(path)
            return
        if i == n or suffix[i] < r or spent + bound(i, r) >= best["cost"] - eps:
            return
        if state["nodes"] > node_limit:
            state["cut"] = True
            return
        path.append(i)
        visit(i + 1, spent + c[i], r - g[i])
        path.pop()
        visit(i + 1, spent, r)

    limit = sys.getrecursionlimit()
    sys.setrecursionlimit(max(limit, 4 * n + 100))
    try:
        visit(0, 0.0, need)
    finally:
        sys.setrecursionlimit(limit)
    if best["set"] is None:
        return None, not state["cut"]
    return order[np.array(best["set"], dtype=int)], not state["cut"]
