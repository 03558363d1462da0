"""Joint search over several latency tables: the multi-constraint chain DP against brute force (random
chains with pair terms, 1–3 rows, several seeds, up to 20 blocks), the searcher's strategies agreeing,
the evolution keeping every budget, which budget binds, the CLI (pairing, errors, subnet.json), and old
subnet files without ``budgets``."""

from __future__ import annotations

import json

import numpy as np
import pytest
from test_search import Interacting, fake_table, random_blocks, with_pairs

from deploykit.cli import main
from deploykit.errors import ConfigError
from deploykit.search import BlockScoreProxy, Budget, DepthProxy, joint_pareto, joint_search, parse_budget
from deploykit.search.chain import JointChain
from deploykit.search.engine import pick
from deploykit.search.joint import pair_budgets
from deploykit.subnet import Subnet


def brute_joint(full, steps, pairs, scores, limits):
    """Every mask priced from the terms, the engine's tie rule on the first row's latency."""
    n = steps.shape[1]
    masks = np.arange(1 << n, dtype=np.int64)
    bits = ((masks[:, None] >> np.arange(n)) & 1).astype(float)
    latency = full[None, :] + bits @ steps.T + (bits[:, :-1] * bits[:, 1:]) @ pairs.T
    score = bits @ scores
    fits = np.flatnonzero(np.all(latency <= limits, axis=1))
    if not len(fits):
        return None
    best = fits[pick(score[fits], latency[fits, 0], fits)]
    return int(best), float(score[best])


def random_instance(rng, n, k):
    steps = rng.normal(-1.0, 1.0, (k, n)).round(2)                       # some merges are slower
    pairs = rng.normal(0.0, 0.6, (k, n - 1)).round(2) * (rng.random((k, n - 1)) < 0.7)
    scores = -rng.integers(0, 4, n).astype(float) if rng.random() < 0.5 else -rng.random(n).round(3)
    full = 20.0 + rng.normal(0.0, 2.0, k)
    limits = full + rng.normal(-0.25, 0.15, k) * n
    return full, steps, pairs, scores, limits


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_joint_chain_equals_brute_force_on_small_chains(seed):
    rng = np.random.default_rng(seed)
    infeasible = 0
    for _ in range(60):
        n, k = int(rng.integers(2, 12)), int(rng.integers(1, 4))
        full, steps, pairs, scores, limits = random_instance(rng, n, k)
        expected = brute_joint(full, steps, pairs, scores, limits)
        found = JointChain(full, steps, pairs, scores, limits).best()
        if expected is None:
            assert found is None
            infeasible += 1
            continue
        assert found is not None and found.mask == expected[0]
        assert found.score == pytest.approx(expected[1], abs=1e-9)
        assert all(lat <= limit for lat, limit in zip(found.latencies, limits))
    assert infeasible < 60


@pytest.mark.parametrize("seed,k", [(10, 1), (11, 2), (12, 3), (13, 2), (14, 3)])
def test_joint_chain_equals_brute_force_on_20_blocks(seed, k):
    rng = np.random.default_rng(seed)
    full, steps, pairs, scores, limits = random_instance(rng, 20, k)
    expected = brute_joint(full, steps, pairs, scores, limits)
    found = JointChain(full, steps, pairs, scores, limits).best()
    assert expected is not None and found.mask == expected[0]


def test_one_row_agrees_with_the_one_table_chain():
    from deploykit.search.chain import Chain

    rng = np.random.default_rng(5)
    for _ in range(30):
        full, steps, pairs, scores, limits = random_instance(rng, int(rng.integers(2, 14)), 1)
        single = Chain(full[0], steps[0], pairs[0], scores).best(limits[0])
        joint = JointChain(full, steps, pairs, scores, limits).best()
        assert (single is None) == (joint is None)
        assert single is None or single.mask == joint.mask


def test_an_unlimited_row_is_reported_never_binding():
    rng = np.random.default_rng(8)
    full, steps, pairs, scores, limits = random_instance(rng, 10, 2)
    limits[1] = np.inf
    from deploykit.search.chain import Chain

    alone = Chain(full[0], steps[0], pairs[0], scores).best(limits[0])
    assert JointChain(full, steps, pairs, scores, limits).best().mask == alone.mask


# --- the searcher on tables ------------------------------------------------------------------------

def table_pair(n=12, seed=4, size=(32, 32), model="convnext_atto"):
    original, merged = random_blocks(n, seed)
    other_merged = (np.array(merged) * np.random.default_rng(seed + 1).uniform(0.5, 1.6, n)).round(3)
    first = with_pairs(fake_table(original, merged, fixed=0.1), {(0, 1): 0.4, (5, 6): -0.3})
    second = with_pairs(fake_table([o * 1.7 for o in original], (other_merged * 1.7).tolist(), fixed=0.2,
                                   size=size, model=model), {(2, 3): 0.5, (8, 9): 0.2}, seed=1)
    return first, second


def brute_tables(tables, budgets, scores):
    spaces = [t.predict for t in tables]
    n = len(scores)
    limits = [b.resolve(t.predict(())) * (1 + 1e-9) for t, b in zip(tables, budgets)]
    masks = np.arange(1 << n)
    pruned = [tuple(j for j in range(n) if m >> j & 1) for m in masks]
    latency = np.array([[predict(p) for predict in spaces] for p in pruned])
    score = np.array([sum(scores[j] for j in p) for p in pruned])
    fits = np.flatnonzero(np.all(latency <= limits, axis=1))
    return pruned[fits[pick(score[fits], latency[fits, 0], fits)]]


@pytest.mark.parametrize("fractions", [(0.7, 0.8), (0.9, 0.65), (0.75, 0.75)])
def test_dp_exhaustive_evolutionary_and_brute_force_agree_on_tables(fractions):
    tables = table_pair()
    scores = {i: -float(c) for i, c in enumerate(np.random.default_rng(3).uniform(0.1, 1.0, 12))}
    budgets = [Budget(f, "fraction") for f in fractions]
    expected = brute_tables(tables, budgets, scores)
    dp = joint_search(tables, budgets, BlockScoreProxy(scores))
    exhaustive = joint_search(tables, budgets, BlockScoreProxy(scores), strategy="exhaustive")
    evolutionary = joint_search(tables, budgets, BlockScoreProxy(scores), strategy="evolutionary", seed=1,
                                generations=20)
    assert dp.subnet.pruned == exhaustive.subnet.pruned == expected
    assert "exact joint dynamic programming" in dp.method and "vectorized" in exhaustive.method
    for check, table, budget in zip(evolutionary.checks, tables, budgets):  # every budget kept
        assert check.predicted_ms <= budget.resolve(table.predict(())) * (1 + 1e-9)
    assert evolutionary.score <= dp.score + 1e-9


def test_non_additive_proxy_keeps_every_budget():
    tables = table_pair()
    costs = dict(enumerate(np.random.default_rng(4).uniform(0.1, 1.0, 12).round(3)))
    budgets = [parse_budget("0.75"), parse_budget("0.7")]
    exhaustive = joint_search(tables, budgets, Interacting(costs))
    evolutionary = joint_search(tables, budgets, Interacting(costs), strategy="evolutionary", seed=0)
    assert "2^12" in exhaustive.method and "evolutionary" in evolutionary.method
    best = brute_tables(tables, budgets, {i: 0.0 for i in range(12)})  # feasible set is not empty
    assert best is not None
    for result in (exhaustive, evolutionary):
        assert all(c.slack >= -1e-9 for c in result.checks)
    assert evolutionary.score <= exhaustive.score + 1e-9


def test_binding_budget_is_the_least_slack():
    tables = table_pair()
    result = joint_search(tables, [parse_budget("0.9"), parse_budget("0.7")], DepthProxy())
    slacks = [c.slack for c in result.checks]
    assert result.binding == (int(np.argmin(slacks)) + 1,) or len(result.binding) > 1
    assert all(c.binding == (c.slack <= min(slacks) + 0.01) for c in result.checks)
    assert "binding budget: table" in result.summary()
    assert [b["binding"] for b in result.subnet.budgets] == [c.binding for c in result.checks]


def test_tables_of_different_models_are_refused():
    first, _ = table_pair()
    _, other = table_pair(size=(64, 64))
    with pytest.raises(ConfigError, match="a joint search needs tables of one model"):
        joint_search([first, other], [parse_budget("0.8")] * 2, DepthProxy())


def test_budgets_infeasible_together_name_the_reach():
    from deploykit.search import LatencySpace

    tables = table_pair()
    spaces = [LatencySpace.from_table(t) for t in tables]
    assert spaces[0].best_mask() != spaces[1].best_mask()  # each table's fastest subnet is another's
    at_minimum = [Budget(s.min_ms() * (1 + 1e-6), "ms") for s in spaces]  # each reachable alone
    with pytest.raises(ConfigError, match=r"fits every budget at once.*the fastest subnet on table 1"):
        joint_search(tables, at_minimum, DepthProxy())


def test_pareto_holds_the_other_budget():
    tables = table_pair()
    result = joint_pareto(tables, [parse_budget("0.8")], DepthProxy(), 6)
    frame = result.frame()
    held = 0.8 * tables[1].predict(())
    assert (frame["predicted_ms_2"] <= held * (1 + 1e-9)).all()
    assert (frame["predicted_ms"] <= frame["budget_ms"] * (1 + 1e-9)).all()
    assert frame["predicted_ms"].is_monotonic_increasing and "binding" in frame


@pytest.mark.parametrize("tables,budgets,pareto,expected", [
    (2, ["0.8", "12ms"], None, [Budget(0.8, "fraction"), Budget(12.0, "ms")]),
    (3, ["0.7"], None, [Budget(0.7, "fraction")] * 3),
    (2, ["0.7"], 5, [None, Budget(0.7, "fraction")]),
    (1, None, 5, [None]),
])
def test_budgets_pair_with_tables(tables, budgets, pareto, expected):
    assert pair_budgets(tables, budgets, pareto) == expected


@pytest.mark.parametrize("tables,budgets,pareto,message", [
    (2, ["0.8", "0.7", "0.6"], None, "3 --budget values for 2 tables"),
    (2, None, 5, "give the other 1 table(s) a --budget"),
    (1, ["0.8"], 5, "not allowed with argument --budget"),
    (2, None, None, "one of the arguments --budget --pareto is required"),
])
def test_bad_pairings_are_config_errors(tables, budgets, pareto, message):
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
        pair_budgets(tables, budgets, pareto)


# --- the CLI and subnet.json ------------------------------------------------------------------------

def test_cli_joint_search_writes_budgets_and_reads_back(tmp_path, capsys):
    first, second = table_pair()
    first.write(tmp_path / "a.csv")
    second.write(tmp_path / "b.csv")
    out = tmp_path / "subnet.json"
    assert main(["search", "--table", str(tmp_path / "a.csv"), "--budget", "0.8", "--table",
                 str(tmp_path / "b.csv"), "--budget", "0.7", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    subnet = Subnet.read(out)
    assert [b["table"] for b in subnet.budgets] == [str(tmp_path / "a.csv"), str(tmp_path / "b.csv")]
    assert any(b["binding"] for b in subnet.budgets) and "binding budget: table" in printed
    assert subnet.budgets[1]["predicted_ms"] == pytest.approx(second.predict(subnet.pruned))
    assert subnet.predicted_ms == pytest.approx(first.predict(subnet.pruned))
    assert main(["search", "--table", str(tmp_path / "a.csv"), "--table", str(tmp_path / "b.csv"),
                 "--budget", "0.7", "--pareto", "4", "--out", str(tmp_path / "p.csv")]) == 0
    assert "the other tables' budgets held" in capsys.readouterr().out


def test_cli_joint_errors_are_one_line(tmp_path, capsys):
    first, _ = table_pair()
    _, other = table_pair(model="convnext_femto")
    first.write(tmp_path / "a.csv")
    other.write(tmp_path / "b.csv")
    code = main(["search", "--table", str(tmp_path / "a.csv"), "--table", str(tmp_path / "b.csv"),
                 "--budget", "0.8"])
    err = capsys.readouterr().err
    assert code == 2 and "tables of one model" in err and len(err.strip().splitlines()) == 1


def test_old_subnet_files_without_budgets_still_read(tmp_path):
    path = tmp_path / "old.json"
    path.write_text(json.dumps({"model": "convnext_atto", "input_size": [32, 32], "pruned": [1, 4],
                                "predicted_ms": 1.5, "table": "t.csv", "proxy": {"kind": "depth"}}))
    subnet = Subnet.read(path)
    assert subnet.budgets is None and "budgets" not in subnet.as_dict()
    with pytest.raises(ConfigError, match="'budgets' must be a list of objects"):
        Subnet.from_dict({"model": "m", "input_size": [32, 32], "pruned": [], "budgets": {"a": 1}})
