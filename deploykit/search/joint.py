"""Joint search: one subnet within a budget on each of several latency tables (docs/method.md).

The same model goes to several targets; each has its table and its budget. The search maximizes the
proxy subject to *every* table's prediction fitting its budget, under the tie rule of the one-table
search with the latencies compared on the first table: the highest score, then the lowest first-table
latency, then the smallest mask. Strategies, as for one table:

- **dp** (depth, sensitivity): :class:`deploykit.search.chain.JointChain`, the exact multi-constraint
  knapsack along the chain (dominance, feasibility and relaxation bounds; exactness argued there and in
  docs/method.md, checked against brute force in tests);
- **exhaustive**: every subnet, vectorized for additive proxies (up to 2^26), evaluated for the supernet
  proxy (up to 2^16);
- **evolutionary**: the exact joint optimum over per-block scores seeds the evolution, whose repair keeps
  every budget.

Each result says which budget binds: the one with the least slack relative to its budget, together with
any within :data:`BINDING_TOLERANCE` of it.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from deploykit.errors import ConfigError
from deploykit.latency.table import LatencyTable
from deploykit.progress import Progress, silent
from deploykit.search.budget import Budget, parse_budget
from deploykit.search.chain import JointChain
from deploykit.search.engine import (
    BUDGET_SLACK,
    OPTIONS,
    Evolution,
    ParetoResult,
    check_options,
    check_points,
    pick,
    reachable_budget_ms,
    resolve_strategy,
    restricted,
    start_masks,
)
from deploykit.search.proxies import Proxy
from deploykit.search.space import LatencySpace, subset_sums
from deploykit.subnet import Subnet, format_block_ranges

BINDING_TOLERANCE = 0.01   # budgets whose relative slack is within 1 % of the least one bind together


# --- the CLI's pairing of tables and budgets ---------------------------------------------------------

def pair_budgets(tables: int, budgets: Sequence[str] | None, pareto: int | None) -> list[Budget | None]:
    """One budget per table from ``--budget`` values given in table order; one value applies to every
    table. With ``--pareto`` the first table's budget is swept, so the values pair with the other tables
    (None for the first)."""
    budgets = list(budgets or [])
    if pareto is None and not budgets:
        raise ConfigError("one of the arguments --budget --pareto is required")
    if pareto is not None and tables == 1:
        if budgets:
            raise ConfigError("argument --pareto: not allowed with argument --budget (with one table; "
                              "with several, --pareto sweeps the first table's budget and --budget holds "
                              "the others')")
        return [None]
    held = tables - 1 if pareto is not None else tables
    if pareto is not None and not budgets:
        raise ConfigError(f"--pareto with {tables} tables sweeps the first table's budget: give the "
                          f"other {held} table(s) a --budget (one applies to all)")
    if len(budgets) not in (1, held):
        what = "the tables after the first (--pareto sweeps the first)" if pareto is not None else "tables"
        raise ConfigError(f"{len(budgets)} --budget values for {held} {what}: give one per table, in the "
                          "order of --table, or one for all")
    parsed = [parse_budget(text) for text in budgets] * (held if len(budgets) == 1 else 1)
    return ([None] if pareto is not None else []) + parsed


def check_same_model(tables: Sequence[LatencyTable]) -> None:
    """Every table must describe the first one's model: name, input size, blocks, prunable blocks."""
    def shape(table: LatencyTable) -> tuple:
        meta = table.meta
        return meta.model, tuple(meta.input_size), table.block_indices, table.prunable_indices

    def show(table: LatencyTable) -> str:
        model, size, blocks, prunable = shape(table)
        return (f"{table.path or 'a table'} is {model} at {size[0]}x{size[1]} with blocks "
                f"{format_block_ranges(blocks)} (prunable {format_block_ranges(prunable)})")

    first = tables[0]
    for other in tables[1:]:
        if shape(other) != shape(first):
            raise ConfigError(f"a joint search needs tables of one model: {show(first)}, but {show(other)}")


# --- the searcher ----------------------------------------------------------------------------------

@dataclass(frozen=True)
class JointSolution:
    mask: int
    score: float
    latencies: tuple[float, ...]
    method: str
    feasible: int | None = None


class JointBudgets:
    """What the evolution keeps subnets within: every table's latency ≤ its limit. The repair gain of a
    flip is how much it lowers the total excess over the limits (each relative to its limit), so each
    repair step strictly lowers that total and the repair ends."""

    def __init__(self, spaces: Sequence[LatencySpace], limits: np.ndarray):
        self.spaces, self.limits, self.bits = list(spaces), np.asarray(limits, dtype=float), spaces[0].bits

    def latencies(self, mask: int) -> np.ndarray:
        return np.array([space.latency(mask) for space in self.spaces])

    def fits(self, mask: int) -> bool:
        return bool(np.all(self.latencies(mask) <= self.limits))

    def latency(self, mask: int) -> float:
        return self.spaces[0].latency(mask)

    def repair_gain(self, mask: int, j: int) -> float:
        now = self.latencies(mask)
        after = now - np.array([space.flip_change(mask, j) for space in self.spaces])
        return float(self._excess(now) - self._excess(after))

    def _excess(self, latencies: np.ndarray) -> float:
        finite = np.isfinite(self.limits)
        return float((np.maximum(latencies[finite] - self.limits[finite], 0.0) / self.limits[finite]).sum())


class JointSearcher:
    """Several tables of one model, one proxy, one candidate set; :meth:`solve` answers any limits."""

    def __init__(self, tables: Sequence[LatencyTable], proxy: Proxy, *,
                 candidates: Iterable[int] | None = None, strategy: str = OPTIONS.strategy,
                 seed: int = OPTIONS.seed, population: int = OPTIONS.population,
                 generations: int = OPTIONS.generations, progress: Progress | None = None):
        if len(tables) < 1:
            raise ConfigError("a joint search needs at least one latency table")
        check_options(strategy, population, generations)
        check_same_model(tables)
        self.say = progress or silent
        self.tables, self.proxy, self.seed = list(tables), proxy, seed
        self.population, self.generations = population, generations
        asked = None if candidates is None else tuple(sorted(set(candidates)))
        spaces = [LatencySpace.from_table(table, asked) for table in tables]
        kept = restricted(proxy, spaces[0].candidates, asked, self.say)
        if kept != spaces[0].candidates:
            spaces = [LatencySpace.from_table(table, kept) for table in tables]
        self.spaces = spaces
        self.strategy = resolve_strategy(strategy, self.bits, proxy)
        self._prepared = False
        self._arrays: tuple[np.ndarray, np.ndarray] | None = None
        self._scores: dict[int, float] = {}

    @property
    def bits(self) -> int:
        return self.spaces[0].bits

    @property
    def candidates(self) -> tuple[int, ...]:
        return self.spaces[0].candidates

    def score(self, mask: int) -> float:
        if mask not in self._scores:
            self._scores[mask] = float(self.proxy.score(self.spaces[0].pruned(mask)))
        return self._scores[mask]

    def chain(self, scores: np.ndarray, limits: np.ndarray) -> JointChain:
        spaces = self.spaces
        return JointChain(np.array([s.full_ms for s in spaces]), np.array([-s.savings for s in spaces]),
                          np.array([s.pairs for s in spaces]), scores, limits)

    def fastest(self, limits: np.ndarray) -> int | None:
        """The subnet with the lowest first-table latency within every limit (None: none fits)."""
        choice = self.chain(np.zeros(self.bits), limits).best()
        return None if choice is None else choice.mask

    def latencies(self, mask: int) -> tuple[float, ...]:
        return tuple(space.latency(mask) for space in self.spaces)

    def solve(self, budgets_ms: Sequence[float], starts: Iterable[Sequence[int]] = ()) -> JointSolution:
        """The best subnet within ``budgets_ms`` (one per table; inf: not held); ``starts`` as for
        :meth:`deploykit.search.engine.Searcher.solve`."""
        limits = np.asarray(budgets_ms, dtype=float) * (1 + BUDGET_SLACK)
        if self.fastest(limits) is None:
            raise ConfigError(self.infeasible_message(budgets_ms))
        if not self._prepared:  # data work (sensitivity) only once the budgets are known to be feasible
            self.proxy.prepare(self.candidates, self.say)
            self._prepared = True
        if self.strategy == "dp":
            return self._dynamic(limits)
        if self.strategy == "exhaustive":
            return self._exhaustive(limits)
        fits = JointBudgets(self.spaces, limits).fits
        return self._evolutionary(limits, start_masks(self.spaces[0], starts, fits))

    def infeasible_message(self, budgets_ms: Sequence[float]) -> str:
        held = np.asarray(budgets_ms, dtype=float) * (1 + BUDGET_SLACK)
        budgets = ", ".join(f"table {i + 1} ≤ {ms:.3f} ms" for i, ms in enumerate(budgets_ms)
                            if np.isfinite(ms))
        held[0] = np.inf
        fastest = self.fastest(held)
        reach = ("no subnet fits the other tables' budgets together" if fastest is None else
                 f"within the other tables' budgets the fastest subnet on table 1 ({self.tables[0].path}) "
                 f"takes {self.spaces[0].latency(fastest):.3f} ms, pruning blocks "
                 f"{list(self.spaces[0].pruned(fastest))}")
        return (f"no subnet of {self.tables[0].meta.model} fits every budget at once ({budgets}): {reach}")

    def _dynamic(self, limits: np.ndarray) -> JointSolution:
        chain = self.chain(self.proxy.block_scores(), limits)
        choice = chain.best()
        pairs = ", adjacent-pair terms included" if any(s.has_pairs for s in self.spaces) else ""
        return JointSolution(mask=choice.mask, score=self.score(choice.mask), latencies=choice.latencies,
                             method=f"exact joint dynamic programming along the chain of {self.bits} "
                                    f"candidate blocks under {len(self.spaces)} budgets ({chain.states} "
                                    f"kept states{pairs})")

    def _exhaustive(self, limits: np.ndarray) -> JointSolution:
        if self._arrays is None:
            self._arrays = (np.array([s.full_ms - s.all_saved() for s in self.spaces]),
                            subset_sums(self.proxy.block_scores()) if self.proxy.additive else None)
        latency, additive_scores = self._arrays
        feasible = np.flatnonzero(np.all(latency <= limits[:, None], axis=0))
        if additive_scores is not None:
            scores, how = additive_scores[feasible], "vectorized"
        else:
            scores = np.array([self.score(int(mask)) for mask in feasible])
            how = f"{len(feasible):,} within every budget evaluated"
        best = int(feasible[pick(scores, latency[0, feasible], feasible)])
        return JointSolution(mask=best, score=self.score(best), latencies=self.latencies(best),
                             method=f"exhaustive over 2^{self.bits} = {1 << self.bits:,} subnets ({how})",
                             feasible=len(feasible))

    def _evolutionary(self, limits: np.ndarray, starts: list[int]) -> JointSolution:
        seed = self.chain(self.proxy.block_scores(), limits).best().mask
        constraint = JointBudgets(self.spaces, limits)
        evolution = Evolution(constraint, self.score, block_scores=self.proxy.block_scores(),
                              rng=np.random.default_rng(self.seed), population=self.population,
                              generations=self.generations, say=self.say)
        masks = [m for m in dict.fromkeys(evolution.run([seed, *starts])) if constraint.fits(m)] or [seed]
        scores = np.array([self.score(m) for m in masks])
        best = masks[pick(scores, np.array([constraint.latency(m) for m in masks]),
                          np.array(masks, dtype=np.int64))]
        return JointSolution(mask=best, score=self.score(best), latencies=self.latencies(best),
                             method=f"exact joint DP over per-block scores as seed + evolutionary search "
                                    f"({evolution.generations_run} generations, population "
                                    f"{self.population}, seed {self.seed}) under {len(self.spaces)} budgets")


# --- results ---------------------------------------------------------------------------------------

@dataclass(frozen=True)
class BudgetCheck:
    """One table's budget against the chosen subnet."""

    table: str
    target: str
    budget: str                 # as given ("0.8 × the unpruned model", "12 ms"), or "swept"
    budget_ms: float
    predicted_ms: float
    unpruned_ms: float
    slack: float                # (budget − predicted) / budget
    binding: bool = False

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def budget_checks(searcher: JointSearcher, mask: int, budgets: Sequence[Budget | None],
                  budgets_ms: Sequence[float]) -> list[BudgetCheck]:
    """Each table's budget, prediction and slack; the least slack (and any within the tolerance) binds."""
    checks = []
    for table, space, budget, budget_ms in zip(searcher.tables, searcher.spaces, budgets, budgets_ms):
        predicted = table.predict(space.pruned(mask))
        checks.append(BudgetCheck(table=str(table.path) if table.path else "", target=table.meta.target,
                                  budget=str(budget) if budget is not None else "swept", budget_ms=budget_ms,
                                  predicted_ms=predicted, unpruned_ms=space.full_ms,
                                  slack=(budget_ms - predicted) / budget_ms))
    least = min(check.slack for check in checks)
    return [BudgetCheck(**{**check.__dict__, "binding": check.slack <= least + BINDING_TOLERANCE})
            for check in checks]


def binding_line(checks: Sequence[BudgetCheck]) -> str:
    bound = [f"table {i + 1} ({c.target})" for i, c in enumerate(checks) if c.binding]
    least = min(c.slack for c in checks)
    together = " (within 1 % of each other)" if len(bound) > 1 else ""
    return f"binding budget: {' and '.join(bound)}{together}: {100 * least:.1f} % slack"


@dataclass(frozen=True)
class JointResult:
    """The chosen subnet, each table's budget against it, and how it was found."""

    subnet: Subnet
    checks: tuple[BudgetCheck, ...]
    minimums: tuple[float, ...]   # each table's smallest achievable latency on its own
    score: float
    method: str
    candidates: tuple[int, ...]
    evaluations: int
    elapsed_s: float
    feasible: int | None = None
    notes: tuple[str, ...] = field(default=())
    fidelity: tuple[str, ...] = field(default=())

    @property
    def predicted_ms(self) -> float:
        return self.checks[0].predicted_ms

    @property
    def binding(self) -> tuple[int, ...]:
        """Numbers (from 1) of the tables whose budget binds."""
        return tuple(i + 1 for i, check in enumerate(self.checks) if check.binding)

    def summary(self) -> str:
        height, width = self.subnet.input_size
        proxy = self.subnet.proxy or {}
        value = proxy.get("value")
        shown = f"{value:.4g}" if isinstance(value, float) else str(value)
        pruned = list(self.subnet.pruned)
        lines = [f"joint search {self.subnet.model} at {height}x{width} on {len(self.checks)} tables"]
        for number, (check, minimum) in enumerate(zip(self.checks, self.minimums), 1):
            budget = f"{check.budget_ms:.3f} ms" if check.budget.endswith(" ms") \
                else f"{check.budget} = {check.budget_ms:.3f} ms"
            lines.append(f"table {number} {check.table} ({check.target}): budget {budget}; predicted "
                         f"{check.predicted_ms:.3f} ms, {check.unpruned_ms / check.predicted_ms:.2f}× the "
                         f"unpruned {check.unpruned_ms:.3f} ms (smallest achievable {minimum:.3f} ms); slack "
                         f"{100 * check.slack:.1f} %{'  <- binds' if check.binding else ''}")
        lines += [f"strategy: {self.method}; {self.evaluations} data evaluations; {self.elapsed_s:.3f} s",
                  f"best: prune {len(pruned)} of {len(self.candidates)} candidate blocks {pruned}; proxy "
                  f"{proxy.get('kind')} {proxy.get('metric')} = {shown}",
                  binding_line(self.checks)]
        lines += [f"table {i + 1}: {line}" for i, line in enumerate(self.fidelity) if line]
        lines += [f"note: {note}" for note in self.notes]
        return "\n".join(lines)


def joint_search(tables: Sequence[LatencyTable], budgets: Sequence[Budget], proxy: Proxy, *,
                 candidates: Iterable[int] | None = None, strategy: str = OPTIONS.strategy,
                 seed: int = OPTIONS.seed, population: int = OPTIONS.population,
                 generations: int = OPTIONS.generations, progress: Progress | None = None,
                 starts: Iterable[Sequence[int]] = ()) -> JointResult:
    """The subnet maximizing ``proxy`` with every ``tables[i].predict(subnet) ≤ budgets[i]``; ``starts``
    as for :func:`deploykit.search.engine.search`.

    Budgets pair with tables in order (a fraction is of that table's unpruned prediction). A budget no
    subnet reaches on its own table, or budgets no subnet meets together, is a ConfigError.
    """
    started = time.perf_counter()
    if len(budgets) != len(tables) or not all(isinstance(b, Budget) for b in budgets):
        raise ConfigError(f"a joint search needs one Budget per table: {len(tables)} table(s), "
                          f"got {budgets!r}")
    searcher = JointSearcher(tables, proxy, candidates=candidates, strategy=strategy, seed=seed,
                             population=population, generations=generations, progress=progress)
    budgets_ms = [_reachable(number, t, s, b) for number, (t, s, b)
                  in enumerate(zip(tables, searcher.spaces, budgets), 1)]
    solution = searcher.solve(budgets_ms, starts)
    return _result(searcher, solution, budgets, budgets_ms, started)


def _reachable(number: int, table: LatencyTable, space: LatencySpace, budget: Budget) -> float:
    """The budget in ms; an unreachable one names its table."""
    try:
        return reachable_budget_ms(table, space, budget)
    except ConfigError as error:
        where = f" ({table.path})" if table.path else ""
        raise ConfigError(f"table {number}{where}: {error}") from None


def _result(searcher: JointSearcher, solution: JointSolution, budgets: Sequence[Budget | None],
            budgets_ms: Sequence[float], started: float) -> JointResult:
    first, proxy = searcher.tables[0], searcher.proxy
    pruned = searcher.spaces[0].pruned(solution.mask)
    checks = budget_checks(searcher, solution.mask, budgets, budgets_ms)
    for check, summed in zip(checks, solution.latencies):
        if abs(check.predicted_ms - summed) > 1e-6 * max(1.0, check.predicted_ms):
            raise RuntimeError(f"internal: the search summed {summed} ms but {check.table} predicts "
                               f"{check.predicted_ms} ms")
    meta = first.meta
    details = proxy.describe(pruned)
    first_check = checks[0]
    details.update({"speedup": first_check.unpruned_ms / first_check.predicted_ms,
                    "unpruned_ms": first_check.unpruned_ms, "budget_ms": budgets_ms[0],
                    "calibrated": meta.calibration is not None, "target": meta.target,
                    "predictor": "fitted" if meta.predictor is not None else "isolated sum",
                    "strategy": solution.method, "seed": searcher.seed})
    subnet = Subnet(model=meta.model, input_size=meta.input_size, pruned=pruned,
                    predicted_ms=first_check.predicted_ms, table=str(first.path) if first.path else None,
                    proxy=details, budgets=[check.as_dict() for check in checks])
    notes = [f"table {i + 1} is a roofline estimate, not a measurement; check the choice on its target"
             for i, table in enumerate(searcher.tables) if table.meta.mode == "estimated"]
    return JointResult(subnet=subnet, checks=tuple(checks),
                       minimums=tuple(s.min_ms() for s in searcher.spaces), score=solution.score,
                       method=solution.method, candidates=searcher.candidates,
                       evaluations=proxy.evaluations, elapsed_s=time.perf_counter() - started,
                       feasible=solution.feasible, notes=tuple(notes),
                       fidelity=tuple(table.fidelity_line() for table in searcher.tables))


# --- Pareto sweep over the first table's budget ----------------------------------------------------

@dataclass(frozen=True)
class JointParetoResult(ParetoResult):
    tables: int = 2

    def summary(self) -> str:
        others = "".join(f"{f'table {i} ms':>12}" for i in range(2, self.tables + 1))
        lines = [f"{len(self.rows)} distinct best subnets across table 1's budgets, the other tables' "
                 f"budgets held ({self.method}; {self.elapsed_s:.2f} s)",
                 f"{'budget ms':>10}{'predicted':>11}{'speed-up':>10}{others}{'k':>4}  {'proxy':>10}  "
                 f"{'binds':>6}  pruned"]
        for row in self.rows:
            value = row["proxy_value"]
            shown = f"{value:.4g}" if isinstance(value, float) else str(value)
            held = "".join(f"{row[f'predicted_ms_{i}']:>12.3f}" for i in range(2, self.tables + 1))
            lines.append(f"{row['budget_ms']:>10.3f}{row['predicted_ms']:>11.3f}{row['speedup']:>9.2f}×{held}"
                         f"{row['k']:>4}  {shown:>10}  {row['binding']:>6}  {row['pruned'] or '-'}")
        lines += [self.fidelity] if self.fidelity else []
        return "\n".join(lines)


def joint_pareto(tables: Sequence[LatencyTable], held: Sequence[Budget], proxy: Proxy, points: int, *,
                 candidates: Iterable[int] | None = None, strategy: str = OPTIONS.strategy,
                 seed: int = OPTIONS.seed, population: int = OPTIONS.population,
                 generations: int = OPTIONS.generations,
                 progress: Progress | None = None) -> JointParetoResult:
    """The best subnet for ``points`` budgets on the first table, evenly spaced from the smallest first-table
    latency any subnet within the other tables' ``held`` budgets reaches to the latency of the best subnet
    within those budgets alone; duplicates dropped, fastest first."""
    started = time.perf_counter()
    check_points(points)
    if len(held) != len(tables) - 1 or not all(isinstance(b, Budget) for b in held):
        raise ConfigError(f"--pareto over {len(tables)} tables holds one budget per table after the first, "
                          f"got {held!r}")
    searcher = JointSearcher(tables, proxy, candidates=candidates, strategy=strategy, seed=seed,
                             population=population, generations=generations, progress=progress)
    spaces = searcher.spaces
    held_ms = [_reachable(number, t, s, b) for number, (t, s, b)
               in enumerate(zip(tables[1:], spaces[1:], held), 2)]
    open_ms = [np.inf, *held_ms]
    loosest = searcher.solve(open_ms)
    fastest = searcher.fastest(np.asarray(open_ms) * (1 + BUDGET_SLACK))
    low, high = spaces[0].latency(fastest), loosest.latencies[0]
    rows: list[dict[str, Any]] = []
    seen: set[int] = set()
    method = loosest.method
    for budget_ms in np.linspace(low, high, points):
        solution = searcher.solve([float(budget_ms), *held_ms])
        method = solution.method
        if solution.mask in seen:
            continue
        seen.add(solution.mask)
        checks = budget_checks(searcher, solution.mask, [None, *held], [float(budget_ms), *held_ms])
        pruned = spaces[0].pruned(solution.mask)
        description = proxy.describe(pruned)
        row = {"budget_ms": float(budget_ms), "budget_fraction": float(budget_ms) / spaces[0].full_ms,
               "predicted_ms": checks[0].predicted_ms, "speedup": spaces[0].full_ms / checks[0].predicted_ms,
               "k": len(pruned), "pruned": ";".join(map(str, pruned)), "proxy": proxy.kind,
               "metric": proxy.metric, "proxy_value": description["value"], "score": solution.score}
        for number, check in enumerate(checks[1:], 2):
            row[f"budget_ms_{number}"] = check.budget_ms
            row[f"predicted_ms_{number}"] = check.predicted_ms
        row["binding"] = ";".join(str(i + 1) for i, check in enumerate(checks) if check.binding)
        rows.append(row)
    return JointParetoResult(rows=rows, elapsed_s=time.perf_counter() - started, method=method,
                             fidelity=tables[0].fidelity_line(), tables=len(tables))
