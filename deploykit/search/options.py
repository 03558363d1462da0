"""The search's settings and their defaults, in one light module: ``deploykit search``'s options and
help texts read them here without loading the search itself (pandas, numpy)."""

from __future__ import annotations

from dataclasses import dataclass

STRATEGIES = ("auto", "exhaustive", "evolutionary")
DEFAULT_PROXY = "depth"  # fewest pruned blocks, then lowest latency: needs no data


@dataclass(frozen=True)
class SearchOptions:
    """How the search explores: its strategy, the evolutionary search's seed, population and generations.

    The defaults of :func:`deploykit.search.search`, ``pareto``, ``joint_search`` and ``joint_pareto``.
    """

    strategy: str = "auto"
    seed: int = 0
    population: int = 24
    generations: int = 12
