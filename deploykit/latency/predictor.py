"""The table's predictor: a subnet's latency from end-to-end measurements, with the isolated entries as prior.

Blocks measured alone carry the runtime's per-call overhead and miss fusion across block boundaries,
so a plain sum of table entries can be off by tens of percent on small blocks. The predictor is

    latency(S) = base + Σ_{i ∈ S} δ_i + Σ_{i, i+1 ∈ S} δ_{i,i+1}

for the set S of merged (pruned) blocks: ``base`` is the unpruned model, ``δ_i`` what merging block i
changes, ``δ_{i,i+1}`` what merging two adjacent blocks changes beyond the two alone (fusion across
their boundary). Blocks that share a table entry (same structure and input shape) share one δ, and
adjacent pairs of the same two entries share one pair term.

:func:`fit_predictor` fits it by least squares on measured subnets (relative errors, since noise
scales with latency), shrunk toward the prior (ridge): base free, each δ toward the isolated entries'
merged − original, each pair term toward 0. The least squares are robust (Huber weights, iteratively
reweighted): on a shared machine one fresh process in several lands 20–40 % slow, and plain least
squares let two such points tilt every prediction. The ridge weight is chosen by leave-one-out
cross-validation over a fixed grid; pair terms are added one type at a time, and only while each lowers
the leave-one-out error by more than :data:`PAIR_GAIN`. Pure numpy; deterministic.

The structure is additive along the block chain, which keeps the search exact (dynamic programming
over the chain, :mod:`deploykit.search.chain`).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from deploykit.checks import is_number
from deploykit.errors import TableError

KIND = "fitted"
RIDGE_GRID = (0.0, 1e-4, 1e-3, 1e-2, 1e-1, 1.0, 10.0, 100.0, 1e4)
PAIR_GAIN = 0.02          # a pair type must lower the leave-one-out error by 2 % of itself ...
PAIR_GAIN_FLOOR = 1e-6    # ... and by more than this (relative error units), so exact fits stop
HUBER_K = 1.345           # residuals beyond k robust standard deviations are down-weighted (Huber)
NOISE_FLOOR = 0.01        # the robust scale is at least 1 %: below it every point is an inlier
IRLS_ITERATIONS = 30


@dataclass(frozen=True)
class Predictor:
    """``base_ms`` + Σ ``merged_delta_ms[i]`` over merged blocks + Σ ``pair_delta_ms[(i, i+1)]`` over
    adjacent merged pairs. ``fit`` records how it was fitted (free-form, JSON-serializable)."""

    base_ms: float
    merged_delta_ms: Mapping[int, float]
    pair_delta_ms: Mapping[tuple[int, int], float] = field(default_factory=dict)
    fit: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not is_number(self.base_ms, above=0):
            raise TableError(f"predictor base_ms must be a positive number, got {self.base_ms!r}")
        deltas = {int(i): float(v) for i, v in dict(self.merged_delta_ms).items()}
        if not deltas or not all(math.isfinite(v) for v in deltas.values()):
            raise TableError("predictor merged_delta_ms must map every prunable block to a finite number")
        pairs = {(int(i), int(j)): float(v) for (i, j), v in dict(self.pair_delta_ms).items()}
        for (i, j), value in pairs.items():
            if j != i + 1 or i not in deltas or j not in deltas or not math.isfinite(value):
                raise TableError(f"predictor pair term ({i}, {j}) is not between two adjacent "
                                 "prunable blocks")
        object.__setattr__(self, "base_ms", float(self.base_ms))
        object.__setattr__(self, "merged_delta_ms", dict(sorted(deltas.items())))
        object.__setattr__(self, "pair_delta_ms", dict(sorted(pairs.items())))
        object.__setattr__(self, "fit", dict(self.fit))

    @property
    def blocks(self) -> tuple[int, ...]:
        """The prunable blocks the predictor prices."""
        return tuple(self.merged_delta_ms)

    def predict(self, pruned: Iterable[int]) -> float:
        """Latency (ms) with exactly these blocks merged; each must be one the predictor prices."""
        chosen = sorted(set(pruned))
        unknown = [i for i in chosen if i not in self.merged_delta_ms]
        if unknown:
            raise TableError(f"the predictor has no term for block(s) {unknown}")
        total = self.base_ms
        for index in chosen:
            total += self.merged_delta_ms[index]
        members = set(chosen)
        for (i, j), value in self.pair_delta_ms.items():
            if i in members and j in members:
                total += value
        return total

    def as_dict(self) -> dict[str, Any]:
        return {"kind": KIND, "base_ms": self.base_ms,
                "merged_delta_ms": {str(i): v for i, v in self.merged_delta_ms.items()},
                "pair_delta_ms": {f"{i},{j}": v for (i, j), v in self.pair_delta_ms.items()},
                "fit": dict(self.fit)}

    @classmethod
    def from_dict(cls, data: Any) -> Predictor:
        """Inverse of :meth:`as_dict`; anything malformed is a TableError."""
        if not isinstance(data, Mapping):
            raise TableError("table predictor must be a JSON object")
        known = {"kind", "base_ms", "merged_delta_ms", "pair_delta_ms", "fit"}
        unknown = sorted(set(data) - known)
        if unknown:
            raise TableError(f"unknown predictor field(s): {', '.join(unknown)}")
        if data.get("kind") != KIND:
            raise TableError(f"predictor kind must be {KIND!r}, got {data.get('kind')!r}")
        try:
            deltas = {int(i): v for i, v in dict(data["merged_delta_ms"]).items()}
            pairs = {}
            for key, value in dict(data.get("pair_delta_ms") or {}).items():
                i, j = (int(part) for part in str(key).split(","))
                pairs[(i, j)] = value
            return cls(base_ms=data["base_ms"], merged_delta_ms=deltas, pair_delta_ms=pairs,
                       fit=dict(data.get("fit") or {}))
        except (KeyError, TypeError, ValueError) as error:
            raise TableError(f"malformed table predictor: {error!r}") from None


@dataclass(frozen=True)
class Prior:
    """What the isolated entries say: the unpruned sum and, per prunable block, merged − original.

    ``groups`` lists the blocks that share a table entry (and so share one δ), in block order."""

    base_ms: float
    delta_ms: Mapping[int, float]
    groups: tuple[tuple[int, ...], ...]

    def __post_init__(self) -> None:
        groups = tuple(tuple(sorted(int(i) for i in g)) for g in self.groups)
        members = [i for g in groups for i in g]
        if len(set(members)) != len(members) or set(members) != set(self.delta_ms):
            raise TableError("prior groups must partition the prunable blocks")
        object.__setattr__(self, "groups", tuple(sorted(groups)))

    @property
    def blocks(self) -> tuple[int, ...]:
        return tuple(sorted(self.delta_ms))


def fit_predictor(points: Sequence[tuple[Sequence[int], float]], prior: Prior, *,
                  ridge: float | None = None, pairs: bool = True,
                  record: Mapping[str, Any] | None = None) -> Predictor:
    """Fit on ``points`` (pruned blocks, measured ms) toward ``prior``.

    ``ridge`` fixes the ridge weight (None: chosen by leave-one-out over :data:`RIDGE_GRID`); with
    ``pairs`` False no pair term is tried. ``record`` is merged into the predictor's ``fit`` record.
    """
    design = _Design(prior, [tuple(p) for p, _ in points], [float(ms) for _, ms in points])
    if len(design.y) < 2:
        raise TableError(f"a fitted predictor needs at least two measured subnets, got {len(design.y)}")
    grid = RIDGE_GRID if ridge is None else (float(ridge),)
    if any(not math.isfinite(r) or r < 0 for r in grid):
        raise TableError(f"the ridge weight must be a number ≥ 0, got {ridge!r}")
    kept: list[int] = []
    error, weight = design.cross_validate(kept, grid)
    tried = design.pair_types if pairs else []
    while True:
        trials = [(design.cross_validate([*kept, t], grid), t) for t in tried if t not in kept]
        if not trials:
            break
        (best_error, best_weight), best_type = min(trials, key=lambda item: (item[0][0], item[1]))
        if not (best_error < error * (1 - PAIR_GAIN) and error - best_error > PAIR_GAIN_FLOOR):
            break
        kept.append(best_type)
        error, weight = best_error, best_weight
    theta, weights = design.robust(np.arange(len(design.y)), kept, weight)
    in_sample = design.relative_errors(np.arange(len(design.y)), kept, theta)
    fit = {"method": "ridge least squares on relative errors toward the isolated entries, Huber-weighted",
           "downweighted_points": int(np.sum(weights < 1)),
           "points": len(design.y), "ridge": weight, "ridge_chosen_by": "given" if ridge is not None
           else "leave-one-out", "loo_rms_pct": 100 * error,
           "in_sample_rms_pct": 100 * float(np.sqrt(np.mean(in_sample ** 2))),
           "pair_types_tried": len(tried), "pair_types_kept": len(kept), **dict(record or {})}
    return design.predictor(theta, kept, fit)


class _Design:
    """The linear model behind :func:`fit_predictor`: columns base, one δ per group, one per pair type."""

    def __init__(self, prior: Prior, subsets: list[tuple[int, ...]], measured: list[float]):
        self.prior = prior
        self.group_of = {i: g for g, members in enumerate(prior.groups) for i in members}
        blocks = prior.blocks
        unknown = sorted({i for s in subsets for i in s} - set(blocks))
        if unknown:
            raise TableError(f"measured subnets prune block(s) {unknown} the prior does not know")
        if any(not is_number(ms, above=0) for ms in measured):
            raise TableError("every measured latency must be a positive number")
        self.adjacent = [(i, i + 1) for i in blocks if i + 1 in self.group_of]
        types = list(dict.fromkeys((self.group_of[i], self.group_of[j]) for i, j in self.adjacent))
        self.type_of = {pair: types.index((self.group_of[pair[0]], self.group_of[pair[1]]))
                        for pair in self.adjacent}
        self.pair_types = list(range(len(types)))
        self.y = np.array(measured, dtype=float)
        groups = len(prior.groups)
        counts = np.zeros((len(subsets), 1 + groups))
        counts[:, 0] = 1.0
        pair_counts = np.zeros((len(subsets), len(types)))
        for row, subset in enumerate(subsets):
            members = set(subset)
            for i in members:
                counts[row, 1 + self.group_of[i]] += 1
            for pair in self.adjacent:
                if pair[0] in members and pair[1] in members:
                    pair_counts[row, self.type_of[pair]] += 1
        self.x_main, self.x_pairs = counts, pair_counts
        group_delta = [float(np.mean([prior.delta_ms[i] for i in members])) for members in prior.groups]
        self.theta_main = np.array([prior.base_ms, *group_delta])
        self.scale = max(abs(prior.base_ms), 1e-12)

    def _columns(self, kept: list[int]) -> tuple[np.ndarray, np.ndarray]:
        x = np.hstack([self.x_main, self.x_pairs[:, kept]])
        theta0 = np.concatenate([self.theta_main, np.zeros(len(kept))])
        return x, theta0

    def solve(self, rows: np.ndarray, kept: list[int], weight: float) -> np.ndarray:
        """The robust fit over ``rows``: :meth:`solve_weighted` with Huber weights, iterated."""
        return self.robust(rows, kept, weight)[0]

    def robust(self, rows: np.ndarray, kept: list[int], weight: float) -> tuple[np.ndarray, np.ndarray]:
        """θ and the Huber weight each of ``rows`` ends with (1: an inlier)."""
        w = np.ones(len(rows))
        theta = self.solve_weighted(rows, kept, weight, w)
        for _ in range(IRLS_ITERATIONS):
            r = np.abs(self.relative_errors(rows, kept, theta))
            scale = max(1.4826 * float(np.median(r)), NOISE_FLOOR)
            new = np.minimum(1.0, HUBER_K * scale / np.maximum(r, 1e-300))
            if np.allclose(new, w, rtol=0, atol=1e-6):
                break
            w = new
            theta = self.solve_weighted(rows, kept, weight, w)
        return theta, w

    def solve_weighted(self, rows: np.ndarray, kept: list[int], weight: float, w: np.ndarray) -> np.ndarray:
        """θ minimizing Σ w ((y − xθ)/y)² + weight · Σ_{j ≥ 1} ((θ_j − θ0_j)/scale)² over ``rows``."""
        x, theta0 = self._columns(kept)
        y = self.y[rows]
        root = np.sqrt(w)
        a = x[rows] / y[:, None] * root[:, None]
        b = (y - x[rows] @ theta0) / y * root
        if weight > 0:
            penalty = np.sqrt(weight) / self.scale * np.eye(x.shape[1])[1:]
            a = np.vstack([a, penalty])
            b = np.concatenate([b, np.zeros(len(penalty))])
        # minimum-norm least squares: directions the points do not determine stay at the prior
        change, *_ = np.linalg.lstsq(a, b, rcond=None)
        return theta0 + change

    def relative_errors(self, rows: np.ndarray, kept: list[int], theta: np.ndarray) -> np.ndarray:
        x, _ = self._columns(kept)
        return (x[rows] @ theta - self.y[rows]) / self.y[rows]

    def cross_validate(self, kept: list[int], grid: Sequence[float]) -> tuple[float, float]:
        """(leave-one-out RMS relative error, the ridge weight that reaches it).

        Weights the leave-one-out error cannot tell apart go to the points: the one whose fit on all
        of them is closest, then the larger. With as many points as unknowns (the unpruned and the
        all-merged model of a one-group chain), every positive weight leaves each single point fitted
        exactly; taking the largest of those would keep δ at the prior and miss both points."""
        n = len(self.y)
        scored = []
        for weight in grid:
            errors = np.empty(n)
            for left in range(n):
                rows = np.delete(np.arange(n), left)
                theta = self.solve(rows, kept, weight)
                errors[left] = self.relative_errors(np.array([left]), kept, theta)[0]
            scored.append((float(np.sqrt(np.mean(errors ** 2))), weight))
        best = min(rms for rms, _ in scored)
        tied = [weight for rms, weight in scored if rms <= best * (1 + 1e-9) + 1e-15]
        if len(tied) > 1:
            rows = np.arange(n)
            fits = [float(np.sqrt(np.mean(self.relative_errors(rows, kept, self.solve(rows, kept, w)) ** 2)))
                    for w in tied]
            closest = min(fits)
            tied = [w for w, rms in zip(tied, fits) if rms <= closest * (1 + 1e-9) + 1e-12]
        return best, max(tied)

    def predictor(self, theta: np.ndarray, kept: list[int], fit: dict[str, Any]) -> Predictor:
        groups = len(self.prior.groups)
        deltas = {i: float(theta[1 + self.group_of[i]]) for i in self.prior.blocks}
        value_of_type = {t: float(theta[1 + groups + n]) for n, t in enumerate(kept)}
        pairs = {pair: value_of_type[self.type_of[pair]] for pair in self.adjacent
                 if self.type_of[pair] in value_of_type}
        return Predictor(base_ms=float(theta[0]), merged_delta_ms=deltas, pair_delta_ms=pairs, fit=fit)

