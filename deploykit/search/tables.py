"""A search from latency table files, as ``deploykit search`` runs it: the tables opened for use here
(before any proxy work), the proxy built on the first, and the search that fits the request: one table
or several (joint), one budget each or a Pareto sweep."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path

from deploykit.latency.identity import open_table
from deploykit.progress import Progress
from deploykit.search.engine import pareto as pareto_search
from deploykit.search.engine import search
from deploykit.search.joint import check_same_model, joint_pareto, joint_search, pair_budgets
from deploykit.search.options import DEFAULT_PROXY, SearchOptions
from deploykit.search.proxies import HeldOutData, make_proxy


def search_tables(table_files: Sequence[str | Path], budgets: Sequence[str] | None, *,
                  proxy: str = DEFAULT_PROXY, pareto: int | None = None, data: HeldOutData | None = None,
                  metric: str | None = None, candidates: Iterable[int] | None = None,
                  options: SearchOptions | None = None, progress: Progress | None = None):
    """The best subnet within ``budgets`` (texts such as ``0.7``, ``70%``, ``12ms``; one per table, or one
    for all) on every table of ``table_files``, or with ``pareto`` N the best subnets for N budgets of the
    first table; ``proxy`` names the accuracy proxy (``depth``, ``sensitivity:CKPT``,
    ``supernet:CKPT``), judged on ``data``. A SearchResult, ParetoResult, JointResult or
    JointParetoResult. ``options``: strategy, seed, population, generations (default: SearchOptions())."""
    options = options or SearchOptions()
    paired = pair_budgets(len(table_files), budgets, pareto)
    tables = [open_table(path, say=progress, budget_unit=budget.unit if budget is not None else "fraction")
              for path, budget in zip(table_files, paired)]  # before any proxy work
    check_same_model(tables)
    judge = make_proxy(proxy, table=tables[0], data=data, metric=metric, progress=progress)
    settings = dict(candidates=candidates, strategy=options.strategy, seed=options.seed,
                    population=options.population, generations=options.generations, progress=progress)
    if len(tables) > 1 and pareto is not None:
        return joint_pareto(tables, paired[1:], judge, pareto, **settings)
    if len(tables) > 1:
        return joint_search(tables, paired, judge, **settings)
    if pareto is not None:
        return pareto_search(tables[0], judge, pareto, **settings)
    return search(tables[0], paired[0], judge, **settings)
