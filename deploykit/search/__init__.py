"""Latency-constrained subnet search (docs/method.md).

``search(table, budget, proxy)`` returns the subnet with the best accuracy proxy whose latency, as the
table predicts it (:meth:`LatencyTable.predict`: its fitted predictor, or the isolated sum), fits the
budget; ``pareto(table, proxy, N)`` the best subnets across N budgets. ``deploykit search`` is the CLI.

- :mod:`~deploykit.search.budget`: budgets in ms or as a fraction of the unpruned prediction;
- :mod:`~deploykit.search.space`: every subnet's predicted latency, from per-block and pair terms;
- :mod:`~deploykit.search.proxies`: depth, sensitivity:CKPT and supernet:CKPT (their held-out data,
  ``deploykit.training.ProxyData``, is passed in: search never imports training);
- :mod:`~deploykit.search.chain`: the exact dynamic program along the block chain (Pareto frontiers);
- :mod:`~deploykit.search.engine`: the strategies (DP, exhaustive, evolutionary), results, Pareto;
- :mod:`~deploykit.search.joint`: one subnet within a budget on each of several tables
  (``joint_search``, ``joint_pareto``; exact for additive proxies), and which budget binds;
- :mod:`~deploykit.search.options`: the strategies and the defaults (:class:`SearchOptions`), light.

The names below are imported on first use, so that ``deploykit --help`` and the option parsers read
the defaults without loading pandas.
"""

from deploykit.search.options import DEFAULT_PROXY, STRATEGIES, SearchOptions

# Each public name and the module of this package that defines it.
_HOMES = {
    "BlockScoreProxy": "proxies",
    "Budget": "budget",
    "DepthProxy": "proxies",
    "HeldOutData": "proxies",
    "JointParetoResult": "joint",
    "JointResult": "joint",
    "JointSearcher": "joint",
    "LatencySpace": "space",
    "ParetoResult": "engine",
    "Proxy": "proxies",
    "SearchResult": "engine",
    "Searcher": "engine",
    "SensitivityProxy": "proxies",
    "SupernetProxy": "proxies",
    "joint_pareto": "joint",
    "joint_search": "joint",
    "make_proxy": "proxies",
    "pareto": "engine",
    "parse_budget": "budget",
    "search": "engine",
}

__all__ = ["DEFAULT_PROXY", "STRATEGIES", "SearchOptions", *sorted(_HOMES)]


def __getattr__(name: str):
    # Imported on first use (PEP 562), as in deploykit.training.
    if name in _HOMES:
        return getattr(_module(_HOMES[name]), name)
    raise AttributeError(f"module 'deploykit.search' has no attribute {name!r}")


def _module(home: str):
    """The module ``home``, imported now: one explicit import each, so that the import rule's test
    (tests/test_imports.py, which reads import statements) sees every edge."""
    if home == "budget":
        from deploykit.search import budget as module
    elif home == "engine":
        from deploykit.search import engine as module
    elif home == "joint":
        from deploykit.search import joint as module
    elif home == "proxies":
        from deploykit.search import proxies as module
    else:
        from deploykit.search import space as module
    return module
