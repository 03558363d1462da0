"""Latency-constrained subnet search (docs/method.md): the best proxy score with predicted latency ≤ budget.

The objective is lexicographic: the highest proxy score, then (within a relative 1e-9) the lowest
predicted latency, then the smallest bit mask — one rule, :func:`pick`, on every code path, so the
strategies agree whenever they find the same candidates. Strategies:

- **dynamic programming** (additive proxies: depth, sensitivity; ``auto``, any size): the predicted
  latency is additive along the block chain (per-block terms plus adjacent-pair terms), so a sweep over
  Pareto frontiers of (latency, score) gives the exact optimum (:mod:`deploykit.search.chain`);
  convnext_base's 36 blocks take milliseconds.
- **exhaustive, vectorized** (additive proxies, ``strategy="exhaustive"``; up to 2^26 subnets): latency
  and score of all 2^n subsets by doubling sums, then one masked arg-max — the cross-check of the DP.
- **exhaustive, evaluated** (the supernet proxy; up to 2^16 subnets): every subnet within the budget is
  evaluated on data (cached).
- **evolutionary** (the supernet proxy on larger spaces, or ``strategy="evolutionary"``): the DP's exact
  optimum over per-block scores (each block pruned alone) seeds a population that evolves by uniform
  crossover, bit-flip mutation and a greedy repair into the budget, keeping the best half each
  generation. Deterministic under ``seed``.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from deploykit.checks import require_int
from deploykit.errors import ConfigError
from deploykit.fileio import write_text_atomic
from deploykit.latency.table import LatencyTable, predict_subnet
from deploykit.progress import Progress, silent
from deploykit.search.budget import Budget
from deploykit.search.chain import Chain
from deploykit.search.options import STRATEGIES, SearchOptions
from deploykit.search.proxies import Proxy
from deploykit.search.space import MAX_ENUMERATED_BITS, LatencySpace, subset_sums
from deploykit.subnet import Subnet

OPTIONS = SearchOptions()  # the defaults
EXHAUSTIVE_BITS_EVALUATED = 16    # the bound for proxies evaluated on data, subnet by subnet
BUDGET_SLACK = 1e-9               # relative: a budget equal to a prediction admits it despite rounding


def pick(scores: np.ndarray, latencies: np.ndarray, masks: np.ndarray) -> int:
    """Position of the best candidate: highest score, then lowest latency, then smallest mask."""
    best = float(scores.max())
    tie = np.flatnonzero(scores >= best - 1e-9 * max(1.0, abs(best)))
    low = float(latencies[tie].min())
    tie = tie[latencies[tie] <= low + 1e-9 * max(1.0, abs(low))]
    return int(tie[np.argmin(masks[tie])])


@dataclass(frozen=True)
class Solution:
    mask: int
    score: float
    latency_ms: float
    method: str
    feasible: int | None = None       # subnets within the budget (exhaustive strategies only)
    exact: bool = True


def check_options(strategy: str, population: int, generations: int) -> None:
    if strategy not in STRATEGIES:
        raise ConfigError(f"--strategy must be one of {', '.join(STRATEGIES)}, got {strategy!r}")
    for name, value, low in (("population", population, 4), ("generations", generations, 1)):
        require_int(f"--{name}", value, least=low)


def check_points(points: int) -> None:
    """A Pareto front needs at least 2 budgets (its ends)."""
    require_int("--pareto", points, least=2, rule="at least 2 points")


def restricted(proxy: Proxy, candidates: tuple[int, ...], asked: tuple[int, ...] | None,
               say: Progress) -> tuple[int, ...]:
    """The candidates the proxy can judge; an error if the user named others."""
    kept = proxy.restrict(candidates)
    if kept != candidates:
        dropped = sorted(set(candidates) - set(kept))
        if asked is not None:
            raise ConfigError(f"the {proxy.kind} proxy cannot judge block(s) {dropped} "
                              f"(it knows blocks {list(kept)}); leave them out of --candidates")
        say(f"searching over the {len(kept)} blocks the {proxy.kind} proxy knows (not {dropped})")
    return kept


def resolve_strategy(strategy: str, bits: int, proxy: Proxy) -> str:
    """``auto`` → dp (additive proxies), exhaustive or evolutionary; an exhaustive search too large for
    the proxy is an error."""
    additive = proxy.additive
    if strategy == "auto":
        return "dp" if additive else "exhaustive" if bits <= EXHAUSTIVE_BITS_EVALUATED else "evolutionary"
    limit = MAX_ENUMERATED_BITS if additive else EXHAUSTIVE_BITS_EVALUATED
    if strategy == "exhaustive" and bits > limit:
        raise ConfigError(f"{bits} candidate blocks: 2^{bits} subnets are too many for an exhaustive search "
                          f"with the {proxy.kind} proxy; use --strategy evolutionary (or auto)")
    return strategy


def start_masks(space: LatencySpace, starts: Iterable[Sequence[int]],
                fits: Callable[[int], bool]) -> list[int]:
    """The masks of ``starts`` (pruned blocks) that lie within ``space``'s candidates and ``fits``."""
    candidates = set(space.candidates)
    masks = [space.mask(pruned) for pruned in starts if set(pruned) <= candidates]
    return [mask for mask in dict.fromkeys(masks) if fits(mask)]


class Searcher:
    """One table, one proxy, one candidate set; :meth:`solve` answers any budget, reusing work."""

    def __init__(self, table: LatencyTable, proxy: Proxy, *, candidates: Iterable[int] | None = None,
                 strategy: str = OPTIONS.strategy, seed: int = OPTIONS.seed,
                 population: int = OPTIONS.population, generations: int = OPTIONS.generations,
                 progress: Progress | None = None):
        check_options(strategy, population, generations)
        self.say = progress or silent
        self.table, self.proxy, self.seed = table, proxy, seed
        self.population, self.generations = population, generations
        asked = None if candidates is None else tuple(sorted(set(candidates)))
        space = LatencySpace.from_table(table, asked)
        kept = restricted(proxy, space.candidates, asked, self.say)
        if kept != space.candidates:
            space = LatencySpace.from_table(table, kept)
        self.space = space
        self.requested, self.strategy = strategy, self._resolve(strategy)
        self._prepared = False
        self._arrays: tuple[np.ndarray, np.ndarray] | None = None
        self._chain: Chain | None = None
        self._scores: dict[int, float] = {}

    def _resolve(self, strategy: str) -> str:
        return resolve_strategy(strategy, self.space.bits, self.proxy)

    # --- scores ----------------------------------------------------------------------------------

    def score(self, mask: int) -> float:
        if mask not in self._scores:
            self._scores[mask] = float(self.proxy.score(self.space.pruned(mask)))
        return self._scores[mask]

    # --- solving ---------------------------------------------------------------------------------

    def solve(self, budget_ms: float, starts: Iterable[Sequence[int]] = ()) -> Solution:
        """The best subnet within ``budget_ms``. ``starts`` (pruned blocks of subnets known to be good,
        e.g. other budgets' choices) join the evolutionary search's first population where they fit, so
        its answer scores at least as well as any of them; the exact strategies need none."""
        limit = budget_ms * (1 + BUDGET_SLACK)
        if self.space.min_ms() > limit:
            raise ConfigError(infeasible_message(self.table, self.space, budget_ms))
        if not self._prepared:  # data work (sensitivity) only once a budget is known to be feasible
            self.proxy.prepare(self.space.candidates, self.say)
            self._prepared = True
        if self.strategy == "dp":
            return self._dynamic(limit)
        if self.strategy == "exhaustive":
            return self._vectorized(limit) if self.proxy.additive else self._enumerated(limit)
        return self._evolutionary(limit, start_masks(self.space, starts,
                                                     lambda mask: self.space.latency(mask) <= limit))

    def chain(self) -> Chain:
        """The DP over per-block scores (exact for an additive proxy), built once for every budget."""
        if self._chain is None:
            self._chain = self.space.chain(self.proxy.block_scores())
        return self._chain

    def _dynamic(self, limit: float) -> Solution:
        chain = self.chain()
        mask = chain.best(limit).mask
        pairs = ", adjacent-pair terms included" if self.space.has_pairs else ""
        return Solution(mask=mask, score=self.score(mask), latency_ms=self.space.latency(mask),
                        method=f"exact dynamic programming along the chain of {self.space.bits} candidate "
                               f"blocks ({chain.states} Pareto states{pairs})")

    def _vectorized(self, limit: float) -> Solution:
        if self._arrays is None:
            self._arrays = (self.space.full_ms - self.space.all_saved(),
                            subset_sums(self.proxy.block_scores()))
        latency, score = self._arrays
        feasible = np.flatnonzero(latency <= limit)
        best = feasible[pick(score[feasible], latency[feasible], feasible)]
        return Solution(mask=int(best), score=float(score[best]), latency_ms=float(latency[best]),
                        method=f"exhaustive over 2^{self.space.bits} = {1 << self.space.bits:,} subnets "
                               "(vectorized)", feasible=len(feasible))

    def _enumerated(self, limit: float) -> Solution:
        latency = self.space.full_ms - self.space.all_saved()
        feasible = np.flatnonzero(latency <= limit)
        started, shown = time.perf_counter(), time.perf_counter()
        scores = np.empty(len(feasible))
        for number, mask in enumerate(feasible):
            scores[number] = self.score(int(mask))
            if time.perf_counter() - shown > 5 or number + 1 == len(feasible):
                shown = time.perf_counter()
                self.say(f"evaluated {number + 1}/{len(feasible)} subnets within the budget "
                         f"[{shown - started:.0f} s]")
        best = pick(scores, latency[feasible], feasible)
        return Solution(mask=int(feasible[best]), score=float(scores[best]),
                        latency_ms=float(latency[feasible[best]]),
                        method=f"exhaustive over 2^{self.space.bits} = {1 << self.space.bits:,} subnets "
                               f"({len(feasible):,} within the budget evaluated)", feasible=len(feasible))

    def _evolutionary(self, limit: float, starts: list[int]) -> Solution:
        seed = self.chain().best(limit).mask
        evolution = Evolution(WithinBudget(self.space, limit), self.score,
                              block_scores=self.proxy.block_scores(), rng=np.random.default_rng(self.seed),
                              population=self.population, generations=self.generations, say=self.say)
        masks = evolution.run([seed, *starts])
        given = f" and {len(starts)} given subnet(s)" if starts else ""
        method = (f"exact DP over per-block scores{given} as seed + evolutionary search "
                  f"({evolution.generations_run} generations, population {self.population}, "
                  f"seed {self.seed})")
        return self._solution_of(masks, limit, method)

    def _solution_of(self, masks: list[int], limit: float, method: str) -> Solution:
        masks = [m for m in dict.fromkeys(masks) if self.space.latency(m) <= limit]
        masks = masks or [self.space.best_mask()]  # the fastest subnet always fits a feasible budget
        scores = np.array([self.score(m) for m in masks])
        latencies = np.array([self.space.latency(m) for m in masks])
        best = pick(scores, latencies, np.array(masks, dtype=np.int64))
        return Solution(mask=masks[best], score=float(scores[best]), latency_ms=float(latencies[best]),
                        method=method)


class WithinBudget:
    """What the evolution keeps subnets within: one table's latency ≤ limit. ``repair_gain`` is how
    much flipping bit j moves the subnet towards fitting (≤ 0: not at all)."""

    def __init__(self, space: LatencySpace, limit: float):
        self.space, self.limit, self.bits = space, limit, space.bits

    def fits(self, mask: int) -> bool:
        return self.space.latency(mask) <= self.limit

    def latency(self, mask: int) -> float:
        return self.space.latency(mask)

    def repair_gain(self, mask: int, j: int) -> float:
        return self.space.flip_change(mask, j)


class Evolution:
    """Uniform crossover, bit-flip mutation (rate 1/n), greedy repair into the budget(s), best half
    survives. ``constraint`` says which subnets fit (:class:`WithinBudget`, or several tables' budgets)."""

    def __init__(self, constraint: WithinBudget, score: Callable[[int], float], *,
                 block_scores: np.ndarray, rng: np.random.Generator, population: int, generations: int,
                 say: Progress):
        self.constraint, self.score, self.rng = constraint, score, rng
        self.population, self.generations, self.say = population, generations, say
        costs = np.maximum(-np.asarray(block_scores, dtype=float), 0.0)
        self.costs = costs
        self.delta = 1e-6 * (float(costs.mean()) if costs.size and costs.mean() > 0 else 1.0)
        self.generations_run = 0
        self.seen: dict[int, float] = {}

    def run(self, seeds: list[int]) -> list[int]:
        pool: list[int] = []
        for mask in seeds:
            self._add(pool, self.repair(mask))
        tries = 0
        while len(pool) < self.population and tries < 50 * self.population:
            tries += 1
            if pool and self.rng.random() < 0.5:
                candidate = self.mutate(pool[int(self.rng.integers(len(pool)))])
            else:
                candidate = self.random_mask()
            self._add(pool, self.repair(candidate))
        for generation in range(self.generations):
            ranked = self._ranked(pool)
            parents = ranked[:max(2, self.population // 2)]
            children: list[int] = []
            tries = 0
            while len(parents) + len(children) < self.population and tries < 50 * self.population:
                tries += 1
                pair = self.rng.choice(len(parents), size=2, replace=len(parents) < 2)
                a, b = parents[int(pair[0])], parents[int(pair[1])]
                child = self.repair(self.mutate(self.crossover(a, b)))
                if child is not None and child not in self.seen and child not in children:
                    children.append(child)
            self.generations_run = generation + 1
            best = ranked[0]
            self.say(f"generation {generation + 1}/{self.generations}: best score {self.seen[best]:.4g} at "
                     f"{self.constraint.latency(best):.3f} ms; {len(self.seen)} subnets evaluated")
            if not children:
                break
            pool = parents + children
        self._ranked(pool)
        return list(self.seen)

    def _ranked(self, pool: list[int]) -> list[int]:
        for mask in pool:
            if mask not in self.seen:
                self.seen[mask] = self.score(mask)
        return sorted(pool, key=lambda m: (-self.seen[m], self.constraint.latency(m), m))

    def _add(self, pool: list[int], mask: int | None) -> None:
        if mask is not None and mask not in pool:
            pool.append(mask)

    def random_mask(self) -> int:
        n = self.constraint.bits
        k = int(self.rng.integers(0, n + 1))
        return sum(1 << int(j) for j in self.rng.choice(n, size=k, replace=False))

    def crossover(self, a: int, b: int) -> int:
        take = sum(1 << j for j in range(self.constraint.bits) if self.rng.random() < 0.5)
        return (a & take) | (b & ~take)

    def mutate(self, mask: int) -> int:
        n = self.constraint.bits
        flips = [j for j in range(n) if self.rng.random() < 1.0 / n] or [int(self.rng.integers(n))]
        for j in flips:
            mask ^= 1 << j
        return mask

    def repair(self, mask: int) -> int | None:
        """Flip the bit with the best gain towards fitting per unit of score cost until the subnet fits."""
        while not self.constraint.fits(mask):
            best, best_ratio = None, -1.0
            for j in range(self.constraint.bits):
                pruned = bool(mask >> j & 1)
                gain = self.constraint.repair_gain(mask, j)
                if gain <= 0:
                    continue
                cost = -self.costs[j] if pruned else self.costs[j]
                ratio = gain / (max(cost, 0.0) + self.delta)
                if ratio > best_ratio:
                    best, best_ratio = j, ratio
            if best is None:
                return None
            mask ^= 1 << best
        return mask


# --- results ---------------------------------------------------------------------------------------

@dataclass(frozen=True)
class SearchResult:
    """The chosen subnet and how it was found."""

    subnet: Subnet
    budget: Budget | None
    budget_ms: float
    reference_ms: float          # the unpruned model, predicted by the same table
    min_ms: float                # the smallest latency any subnet of the candidates reaches
    predicted_ms: float
    speedup: float
    score: float
    method: str
    candidates: tuple[int, ...]
    evaluations: int
    elapsed_s: float
    feasible: int | None = None
    notes: tuple[str, ...] = field(default=())
    fidelity: str = ""           # the table's stored held-out figures, one line

    def summary(self) -> str:
        table = self.subnet.table
        height, width = self.subnet.input_size
        meta_line = f"{self.subnet.model} at {height}x{width}, table {table}"
        budget = f"{self.budget_ms:.3f} ms" if self.budget is None or self.budget.unit == "ms" \
            else f"{self.budget} = {self.budget_ms:.3f} ms"
        proxy = self.subnet.proxy or {}
        value = proxy.get("value")
        shown = f"{value:.4g}" if isinstance(value, float) else str(value)
        pruned = list(self.subnet.pruned)
        lines = [f"search {meta_line}",
                 f"budget {budget} (unpruned {self.reference_ms:.3f} ms; smallest achievable "
                 f"{self.min_ms:.3f} ms)",
                 f"strategy: {self.method}; {self.evaluations} data evaluations; {self.elapsed_s:.3f} s",
                 f"best: prune {len(pruned)} of {len(self.candidates)} candidate blocks {pruned}: predicted "
                 f"{self.predicted_ms:.3f} ms, {self.speedup:.2f}× the unpruned model's speed; "
                 f"proxy {proxy.get('kind')} {proxy.get('metric')} = {shown}"]
        lines += [self.fidelity] if self.fidelity else []
        lines += [f"note: {note}" for note in self.notes]
        return "\n".join(lines)


def search(table: LatencyTable, budget: Budget, proxy: Proxy, *, candidates: Iterable[int] | None = None,
           strategy: str = OPTIONS.strategy, seed: int = OPTIONS.seed,
           population: int = OPTIONS.population, generations: int = OPTIONS.generations,
           progress: Progress | None = None, starts: Iterable[Sequence[int]] = ()) -> SearchResult:
    """The subnet maximizing ``proxy`` with ``table.predict(subnet) ≤ budget`` (see the module docstring).

    ``starts``: subnets (pruned blocks) the evolutionary search starts from as well (:meth:`Searcher.solve`).
    An infeasible budget is a ConfigError naming the smallest achievable latency.
    """
    started = time.perf_counter()
    if not isinstance(budget, Budget):
        raise ConfigError(f"budget must be a Budget (see parse_budget), got {type(budget).__name__}")
    searcher = Searcher(table, proxy, candidates=candidates, strategy=strategy, seed=seed,
                        population=population, generations=generations, progress=progress)
    budget_ms = reachable_budget_ms(table, searcher.space, budget)
    return _result(searcher, searcher.solve(budget_ms, starts), budget, budget_ms, started)


def _result(searcher: Searcher, solution: Solution, budget: Budget | None, budget_ms: float,
            started: float) -> SearchResult:
    table, space, proxy = searcher.table, searcher.space, searcher.proxy
    pruned = space.pruned(solution.mask)
    meta = table.meta
    draft = Subnet(model=meta.model, input_size=meta.input_size, pruned=pruned)
    predicted = predict_subnet(table, draft)
    if abs(predicted - solution.latency_ms) > 1e-6 * max(1.0, predicted):
        raise RuntimeError(f"internal: the search summed {solution.latency_ms} ms but the table predicts "
                           f"{predicted} ms")
    reference = table.predict(())
    details = proxy.describe(pruned)
    details.update({"speedup": reference / predicted, "unpruned_ms": reference, "budget_ms": budget_ms,
                    "calibrated": meta.calibration is not None, "target": meta.target,
                    "predictor": "fitted" if meta.predictor is not None else "isolated sum",
                    "strategy": solution.method, "seed": searcher.seed})
    subnet = Subnet(model=meta.model, input_size=meta.input_size, pruned=pruned, predicted_ms=predicted,
                    table=str(table.path) if table.path else None, proxy=details)
    notes = []
    if meta.mode == "estimated":
        notes.append("the table is a roofline estimate, not a measurement; check the choice on the target")
    return SearchResult(subnet=subnet, budget=budget, budget_ms=budget_ms, reference_ms=reference,
                        min_ms=space.min_ms(), predicted_ms=predicted, speedup=reference / predicted,
                        score=solution.score, method=solution.method, candidates=space.candidates,
                        evaluations=proxy.evaluations, elapsed_s=time.perf_counter() - started,
                        feasible=solution.feasible, notes=tuple(notes), fidelity=table.fidelity_line())


def reachable_budget_ms(table: LatencyTable, space: LatencySpace, budget: Budget) -> float:
    """``budget`` in ms; a ConfigError naming the smallest achievable latency if no subnet reaches it."""
    budget_ms = budget.resolve(space.full_ms)
    if space.min_ms() > budget_ms * (1 + BUDGET_SLACK):
        raise ConfigError(infeasible_message(table, space, budget_ms, budget))
    return budget_ms


def infeasible_message(table: LatencyTable, space: LatencySpace, budget_ms: float,
                       budget: Budget | None = None) -> str:
    best = space.best_mask()
    shown = f"{budget} = {budget_ms:.3f} ms" if budget is not None and budget.unit == "fraction" \
        else f"{budget_ms:.3f} ms"
    return (f"no subnet of {table.meta.model} fits a budget of {shown}: the smallest latency the table "
            f"predicts is {space.min_ms():.3f} ms ({space.min_ms() / space.full_ms:.3f} × the unpruned "
            f"{space.full_ms:.3f} ms), pruning blocks {list(space.pruned(best))}")


# --- Pareto sweep ----------------------------------------------------------------------------------

@dataclass(frozen=True)
class ParetoResult:
    rows: list[dict[str, Any]]
    elapsed_s: float
    method: str
    fidelity: str = ""

    def frame(self) -> pd.DataFrame:
        return pd.DataFrame(self.rows)

    def write(self, path: str | Path) -> Path:

        path = Path(path)
        write_text_atomic(path, self.frame().to_csv(index=False, float_format="%.6g"))
        return path

    def summary(self) -> str:
        lines = [f"{len(self.rows)} distinct best subnets across budgets ({self.method}; "
                 f"{self.elapsed_s:.2f} s)",
                 f"{'budget ms':>10}{'predicted':>11}{'speed-up':>10}{'k':>4}  {'proxy':>10}  pruned"]
        for row in self.rows:
            value = row["proxy_value"]
            shown = f"{value:.4g}" if isinstance(value, float) else str(value)
            lines.append(f"{row['budget_ms']:>10.3f}{row['predicted_ms']:>11.3f}{row['speedup']:>9.2f}×"
                         f"{row['k']:>4}  {shown:>10}  {row['pruned'] or '-'}")
        lines += [self.fidelity] if self.fidelity else []
        return "\n".join(lines)


def pareto(table: LatencyTable, proxy: Proxy, points: int, *, candidates: Iterable[int] | None = None,
           strategy: str = OPTIONS.strategy, seed: int = OPTIONS.seed,
           population: int = OPTIONS.population, generations: int = OPTIONS.generations,
           progress: Progress | None = None) -> ParetoResult:
    """The best subnet for ``points`` budgets evenly spaced from the smallest achievable latency to the
    unpruned one, duplicates dropped, fastest first."""
    started = time.perf_counter()
    check_points(points)
    searcher = Searcher(table, proxy, candidates=candidates, strategy=strategy, seed=seed,
                        population=population, generations=generations, progress=progress)
    space = searcher.space
    rows: list[dict[str, Any]] = []
    seen: set[int] = set()
    method = ""
    for budget_ms in np.linspace(space.min_ms(), space.full_ms, points):
        solution = searcher.solve(float(budget_ms))
        method = solution.method
        if solution.mask in seen:
            continue
        seen.add(solution.mask)
        pruned = space.pruned(solution.mask)
        predicted = predict_subnet(table, pruned)
        description = proxy.describe(pruned)
        rows.append({"budget_ms": float(budget_ms), "budget_fraction": float(budget_ms) / space.full_ms,
                     "predicted_ms": predicted, "speedup": space.full_ms / predicted, "k": len(pruned),
                     "pruned": ";".join(map(str, pruned)), "proxy": proxy.kind, "metric": proxy.metric,
                     "proxy_value": description["value"], "score": solution.score})
    return ParetoResult(rows=rows, elapsed_s=time.perf_counter() - started, method=method,
                        fidelity=table.fidelity_line())
