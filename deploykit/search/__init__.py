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
  (``joint_search``, ``joint_pareto``; exact for additive proxies), and which budget binds.
"""

from deploykit.search.budget import Budget, parse_budget
from deploykit.search.engine import ParetoResult, Searcher, SearchResult, pareto, search
from deploykit.search.joint import JointParetoResult, JointResult, JointSearcher, joint_pareto, joint_search
from deploykit.search.proxies import (
    BlockScoreProxy,
    DepthProxy,
    HeldOutData,
    Proxy,
    SensitivityProxy,
    SupernetProxy,
    make_proxy,
)
from deploykit.search.space import LatencySpace

__all__ = [
    "BlockScoreProxy",
    "Budget",
    "DepthProxy",
    "HeldOutData",
    "JointParetoResult",
    "JointResult",
    "JointSearcher",
    "LatencySpace",
    "ParetoResult",
    "Proxy",
    "SearchResult",
    "Searcher",
    "SensitivityProxy",
    "SupernetProxy",
    "joint_pareto",
    "joint_search",
    "make_proxy",
    "pareto",
    "parse_budget",
    "search",
]
