"""Subnet search: budgets, the latency space against table.predict (with and without a fitted predictor's
pair terms), the chain DP against brute force, DP vs exhaustive vs evolutionary on fake tables with known
optima, budget edge cases, proxies on real data, the CLI."""

from __future__ import annotations

import itertools
import json
import math
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
import torch
from family_checks import active_model

from deploykit.cli import main
from deploykit.errors import ConfigError, TableError
from deploykit.latency.predictor import Predictor
from deploykit.latency.table import LatencyTable, TableMeta
from deploykit.search import (
    BlockScoreProxy,
    Budget,
    DepthProxy,
    LatencySpace,
    Proxy,
    SensitivityProxy,
    make_proxy,
    pareto,
    parse_budget,
    search,
)
from deploykit.search.chain import Chain
from deploykit.search.engine import pick
from deploykit.search.space import subset_sums
from deploykit.subnet import Subnet
from deploykit.training import ProxyData

# --- fake tables -----------------------------------------------------------------------------------

def this_machine() -> dict:
    from deploykit.measure.fingerprint import for_target
    from deploykit.targets import load_target

    return for_target(load_target("cpu-ort"), threads=None).stored()


def fake_table(original, merged, *, groups=None, fixed=1.0, model="convnext_atto", size=(32, 32),
               calibration=None, mode="measured", path=None) -> LatencyTable:
    """Block i (or group i of block indices) costs original[i] ms, merged[i] ms once pruned."""
    groups = groups or [(i,) for i in range(len(original))]
    meta = TableMeta(model=model, target="cpu-ort", device="the local CPU (any)", device_string="Fake CPU",
                     runtime="onnxruntime", runtime_version="0.0", provider="CPUExecutionProvider",
                     precision="fp32", batch=1, input_size=size, threads=None, protocol={}, mode=mode,
                     date="2026-01-01T00:00:00+00:00", deploykit_version="0.1.0", complete=True,
                     calibration=calibration, fingerprint=this_machine())  # measured here: used silently
    table = LatencyTable(meta=meta)
    base = {"family": "convnext", "block_type": "ConvNeXtBlock", "in_shape": "8x4x4", "out_shape": "8x4x4",
            "macs": 1, "p90_ms": 0.0, "mean_ms": 0.0, "std_ms": 0.0, "cv": 0.0, "n": 1, "repeats": 1,
            "compile_s": 0.0, "first_run_ms": 0.0, "source": mode, "measured_at": "2026-01-01T00:00:00+00:00"}
    table.add({**base, "key": "fixed/stem", "kind": "fixed", "form": "fixed", "name": "stem", "indices": "",
               "count": 1, "median_ms": fixed})
    for number, (members, slow, fast) in enumerate(zip(groups, original, merged)):
        for form, ms in (("original", slow), ("merged", fast)):
            table.add({**base, "key": f"convnext/{number}", "kind": "block", "form": form,
                       "name": f"b{number}",
                       "indices": ";".join(map(str, members)), "count": len(members),
                       "median_ms": ms})
    table.add({**base, "key": "model", "kind": "model", "form": "model", "name": model, "indices": "",
               "count": 1, "median_ms": table.isolated_sum(())})
    if path is not None:
        table.write(path)
    return table


def random_blocks(n: int, seed: int) -> tuple[list[float], list[float]]:
    rng = np.random.default_rng(seed)
    original = rng.uniform(1.0, 5.0, n).round(3)
    merged = (original * rng.uniform(0.02, 1.05, n)).round(3)  # some merges are slower
    return original.tolist(), merged.tolist()


def random_table(n: int, seed: int, **kwargs) -> LatencyTable:
    kwargs.setdefault("fixed", 0.1)
    return fake_table(*random_blocks(n, seed), **kwargs)


def brute_force(n: int, seed: int, score, budget: float) -> tuple[int, ...]:
    """The best subnet of ``random_table(n, seed)`` for a budget fraction, enumerating every subset and
    pricing it from the block latencies themselves (independent of the search and of table.predict)."""
    original, merged = random_blocks(n, seed)
    full = 0.1 + sum(original)
    best_key, best = None, None
    for k in range(n + 1):
        for subset in itertools.combinations(range(n), k):
            ms = full - sum(original[i] - merged[i] for i in subset)
            if ms > budget * full * (1 + 1e-9):
                continue
            key = (round(score(subset), 9), -round(ms, 9))
            if best_key is None or key > best_key:
                best_key, best = key, subset
    return best


class Interacting(Proxy):
    """A non-additive proxy: per-block costs plus a penalty for pruning neighbours together."""

    kind, metric = "interacting", "score"

    def __init__(self, costs):
        self.costs = costs
        self.calls = 0

    def block_scores(self):
        return np.array([-self.costs[c] for c in self.candidates])

    def score(self, pruned):
        self.calls += 1
        pairs = sum(1 for a, b in itertools.pairwise(pruned) if b == a + 1)
        return -sum(self.costs[i] for i in pruned) - 0.7 * pairs

    def describe(self, pruned):
        return {"kind": self.kind, "metric": self.metric, "value": self.score(pruned)}


# --- budgets ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("text,value,unit", [
    ("0.7", 0.7, "fraction"), ("70%", 0.7, "fraction"), ("1", 1.0, "fraction"), (".5", 0.5, "fraction"),
    ("12ms", 12.0, "ms"), ("12 ms", 12.0, "ms"), ("2.5MS", 2.5, "ms"), ("1.5e1ms", 15.0, "ms"),
])
def test_budgets_parse(text, value, unit):
    budget = parse_budget(text)
    assert (budget.unit, budget.value) == (unit, pytest.approx(value))


@pytest.mark.parametrize("text", ["0", "0ms", "-1", "1.5", "150%", "abc", "12 s", "", "ms", "0.7x"])
def test_bad_budgets_are_config_errors(text):
    with pytest.raises(ConfigError):
        parse_budget(text)


def test_fraction_and_ms_budgets_agree():
    table = random_table(10, seed=3)
    full = table.predict(())
    by_fraction = search(table, parse_budget("0.6"), DepthProxy())
    by_ms = search(table, Budget(0.6 * full, "ms"), DepthProxy())
    assert by_fraction.subnet.pruned == by_ms.subnet.pruned
    assert by_fraction.budget_ms == pytest.approx(0.6 * full)


# --- the latency space -----------------------------------------------------------------------------

@pytest.mark.parametrize("calibration,pairs", [(None, None), ((1.3, -0.4), None),
                                               (None, {(0, 1): 0.3, (2, 3): -0.2, (4, 5): 0.1}),
                                               ((1.3, -0.4), {(1, 2): 0.25, (5, 6): -0.05})])
def test_vectorized_latencies_equal_table_predict_for_every_subset(calibration, pairs):
    table = fake_table([2.0, 1.0, 3.0, 0.5], [0.5, 1.5, 1.0, 0.25], groups=[(0, 1), (2,), (3, 4, 5), (6,)],
                       calibration=calibration)
    if pairs is not None:
        table = with_pairs(table, pairs)
    space = LatencySpace.from_table(table)
    assert space.candidates == tuple(range(7))
    latencies = space.full_ms - space.all_saved()
    for mask in range(1 << space.bits):
        expected = table.predict(space.pruned(mask))
        assert latencies[mask] == pytest.approx(expected, rel=1e-12)
        assert space.latency(mask) == latencies[mask]  # the scalar path sums in the same order
    fastest = int(np.argmin(latencies))
    assert space.min_ms() == pytest.approx(latencies[fastest]) and space.best_mask() == fastest
    if pairs is None and calibration is None:
        assert space.best_mask() == space.mask([0, 1, 3, 4, 5, 6])  # block 2 merged is slower


def test_subset_sums_doubling():
    values = np.array([1.0, 10.0, 100.0])
    assert subset_sums(values).tolist() == [0, 1, 10, 11, 100, 101, 110, 111]


def with_pairs(table: LatencyTable, pairs: dict[tuple[int, int], float], seed: int = 0) -> LatencyTable:
    """The table with a fitted predictor: its isolated terms moved a little, plus these pair terms."""
    rng = np.random.default_rng(seed)
    full = table.isolated_sum(())
    deltas = {i: table.isolated_sum((i,)) - full + float(rng.normal(0, 0.05)) for i in table.prunable_indices}
    predictor = Predictor(base_ms=full * 0.9, merged_delta_ms=deltas, pair_delta_ms=pairs)
    return table.with_meta(predictor=predictor.as_dict())


def brute_chain(full, steps, pairs, scores, limit):
    """Every mask priced from the chain's terms, chosen by the engine's own tie rule."""
    n = len(steps)
    masks = np.arange(1 << n)
    latency = np.array([full + sum(steps[j] for j in range(n) if m >> j & 1)
                        + sum(pairs[j] for j in range(n - 1) if m >> j & 1 and m >> (j + 1) & 1)
                        for m in masks])
    score = np.array([sum(scores[j] for j in range(n) if m >> j & 1) for m in masks])
    fits = np.flatnonzero(latency <= limit)
    if not len(fits):
        return None
    best = fits[pick(score[fits], latency[fits], fits)]
    return int(best), float(score[best]), float(latency[best])


def test_chain_dp_equals_brute_force_with_pair_terms():
    rng = np.random.default_rng(7)
    infeasible = 0
    for _ in range(150):
        n = int(rng.integers(1, 10))
        steps = rng.normal(-1.0, 1.0, n).round(2)            # some merges slow the subnet down
        pairs = rng.normal(0.0, 0.6, max(n - 1, 0)).round(2) * (rng.random(max(n - 1, 0)) < 0.7)
        scores = -rng.integers(0, 4, n).astype(float)         # integer scores: many ties
        if rng.random() < 0.5:
            scores = -rng.random(n).round(2)
        full = 20.0
        limit = full + float(rng.normal(-2.0, 2.0))
        chain = Chain(full, steps, pairs, scores)
        expected = brute_chain(full, steps, pairs, scores, limit)
        found = chain.best(limit)
        if expected is None:
            assert found is None
            infeasible += 1
            continue
        assert found is not None and found.latency <= limit + 1e-9
        assert found.score == pytest.approx(expected[1], abs=1e-9)      # the optimum value
        assert found.latency == pytest.approx(expected[2], abs=1e-9)
        assert found.mask == expected[0]                               # the same tie rule
    assert 0 < infeasible < 150


def test_search_with_pair_terms_dp_exhaustive_and_evolutionary_agree():
    table = with_pairs(random_table(11, seed=4), {(0, 1): 0.8, (3, 4): -0.6, (4, 5): 1.1, (9, 10): 0.4})
    space = LatencySpace.from_table(table)
    assert space.has_pairs and space.pairs[0] == pytest.approx(0.8) and space.pairs[4] == pytest.approx(1.1)
    scores = {i: -float(c) for i, c in enumerate(np.random.default_rng(3).uniform(0.1, 1.0, 11))}
    for fraction in (0.75, 0.85, 0.95):
        budget = Budget(fraction, "fraction")
        dp = search(table, budget, BlockScoreProxy(scores))
        exhaustive = search(table, budget, BlockScoreProxy(scores), strategy="exhaustive")
        evolutionary = search(table, budget, BlockScoreProxy(scores), strategy="evolutionary", seed=2)
        assert "dynamic programming" in dp.method and "pair terms" in dp.method
        assert dp.subnet.pruned == exhaustive.subnet.pruned == evolutionary.subnet.pruned
        assert dp.predicted_ms == pytest.approx(table.predict(dp.subnet.pruned))
        assert dp.predicted_ms <= fraction * table.predict(()) * (1 + 1e-9)


# --- strategies against known optima ---------------------------------------------------------------

@pytest.mark.parametrize("fraction", [0.6, 0.7, 0.85])
def test_exhaustive_evolutionary_and_brute_force_agree(fraction):
    table = random_table(12, seed=11)
    scores = {i: -float(c) for i, c in enumerate(np.random.default_rng(5).uniform(0.1, 1.0, 12))}
    budget = Budget(fraction, "fraction")
    expected = brute_force(12, 11, lambda s: sum(scores[i] for i in s), fraction)
    exhaustive = search(table, budget, BlockScoreProxy(scores), strategy="exhaustive")
    evolutionary = search(table, budget, BlockScoreProxy(scores), strategy="evolutionary", seed=1)
    assert exhaustive.subnet.pruned == expected == evolutionary.subnet.pruned
    assert "vectorized" in exhaustive.method and "evolutionary" in evolutionary.method


def test_non_additive_proxy_exhaustive_and_evolutionary_agree():
    table = random_table(10, seed=2)
    costs = dict(enumerate(np.random.default_rng(4).uniform(0.1, 1.0, 10).round(3)))
    budget = Budget(0.75, "fraction")
    exhaustive_proxy, evolution_proxy = Interacting(costs), Interacting(costs)
    exhaustive = search(table, budget, exhaustive_proxy, strategy="auto")
    evolutionary = search(table, budget, evolution_proxy, strategy="evolutionary", seed=0,
                          population=24, generations=15)
    assert exhaustive.subnet.pruned == brute_force(10, 2, Interacting(costs).score, 0.75)
    assert evolutionary.subnet.pruned == exhaustive.subnet.pruned
    assert evolution_proxy.calls < exhaustive_proxy.calls / 2  # it did not just enumerate the space
    again = search(table, budget, Interacting(costs), strategy="evolutionary", seed=0, population=24,
                   generations=15)
    assert again.subnet.pruned == evolutionary.subnet.pruned and again.method == evolutionary.method


def test_a_given_start_that_fits_is_never_beaten_by_a_worse_answer():
    # a short evolution (4 subnets, 1 generation) misses the best subnet of a non-additive proxy; given
    # it as a start (another budget's choice, in `deploykit run`), it answers it
    table = random_table(10, seed=2)
    costs = dict(enumerate(np.random.default_rng(0).uniform(0.1, 1.0, 10).round(3)))
    budget = Budget(0.75, "fraction")
    short = dict(strategy="evolutionary", seed=0, population=4, generations=1)
    best = search(table, budget, Interacting(costs), strategy="auto")
    alone = search(table, budget, Interacting(costs), **short)
    assert alone.score < best.score - 0.1
    started = search(table, budget, Interacting(costs), starts=[best.subnet.pruned, ()], **short)
    assert started.subnet.pruned == best.subnet.pruned and started.score == best.score
    assert "and 1 given subnet(s) as seed" in started.method  # the unpruned model does not fit: left out


def test_large_space_uses_the_exact_dp():
    table = random_table(30, seed=9)
    result = search(table, parse_budget("0.5"), DepthProxy())
    assert "exact dynamic programming along the chain of 30" in result.method
    savings = sorted(((table.predict(()) - table.predict((i,)), i) for i in range(30)), reverse=True)
    need = table.predict(()) - 0.5 * table.predict(())
    k = next(k for k in range(31) if sum(s for s, _ in savings[:k]) >= need)
    assert len(result.subnet.pruned) == k  # fewest blocks: the k largest savings ...
    assert set(result.subnet.pruned) == {i for _, i in savings[:k]}  # ... which is also the lowest latency


# --- budget edge cases -----------------------------------------------------------------------------

def test_budget_exactly_at_the_optimum_admits_it():
    table = random_table(12, seed=11)
    scores = {i: -1.0 - 0.01 * i for i in range(12)}
    loose = search(table, parse_budget("0.6"), BlockScoreProxy(scores))
    at = search(table, Budget(loose.predicted_ms, "ms"), BlockScoreProxy(scores))
    assert at.subnet.pruned == loose.subnet.pruned and at.predicted_ms == loose.predicted_ms
    below = search(table, Budget(loose.predicted_ms * (1 - 1e-6), "ms"), BlockScoreProxy(scores))
    assert below.predicted_ms < loose.predicted_ms


def test_budget_one_prunes_nothing_and_an_infeasible_budget_names_the_minimum():
    table = random_table(12, seed=11)
    whole = search(table, parse_budget("1.0"), DepthProxy())
    assert whole.subnet.pruned == () and whole.speedup == 1.0
    space = LatencySpace.from_table(table)
    with pytest.raises(ConfigError, match=rf"smallest latency the table predicts is {space.min_ms():.3f} ms"):
        search(table, Budget(space.min_ms() * 0.99, "ms"), DepthProxy())
    at_minimum = search(table, Budget(space.min_ms(), "ms"), DepthProxy())
    assert at_minimum.predicted_ms == pytest.approx(space.min_ms())


def test_an_incomplete_table_is_refused():
    partial = random_table(6, seed=1).with_meta(complete=False)
    with pytest.raises(TableError, match="is incomplete"):
        search(partial, parse_budget("0.9"), DepthProxy())


def test_calibrated_tables_search_in_calibrated_milliseconds():
    plain = random_table(8, seed=1)
    calibrated = random_table(8, seed=1, calibration=(2.0, 5.0))
    budget = Budget(2.0 * plain.predict(()) * 0.5 + 5.0, "ms")
    result = search(calibrated, budget, DepthProxy())
    assert result.predicted_ms == pytest.approx(2.0 * plain.predict(result.subnet.pruned) + 5.0)
    assert result.subnet.proxy["calibrated"] is True


def test_pareto_spans_the_range_fastest_first(tmp_path):
    table = random_table(12, seed=11)
    result = pareto(table, DepthProxy(), 8)
    frame = result.frame()
    assert 2 <= len(frame) <= 8 and frame["predicted_ms"].is_monotonic_increasing
    assert frame["k"].is_monotonic_decreasing and frame["k"].iloc[-1] == 0
    assert frame["predicted_ms"].iloc[0] == pytest.approx(LatencySpace.from_table(table).min_ms())
    assert (frame["predicted_ms"] <= frame["budget_ms"] * (1 + 1e-9)).all()
    path = result.write(tmp_path / "p.csv")
    assert pd.read_csv(path).shape == frame.shape


# --- proxies on data -------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def atto(tmp_path_factory):
    """A 10-class convnext_atto with random weights whose blocks matter, and a fake table for it at 32×32."""
    pytest.importorskip("sklearn")
    folder = tmp_path_factory.mktemp("atto")
    weights = folder / "atto.pt"
    torch.save(active_model("convnext_atto", num_classes=10).state_dict(), weights)
    rng = np.random.default_rng(0)
    original = rng.uniform(1, 3, 12).round(3)
    table = fake_table(original.tolist(), (original * 0.3).round(3).tolist(), path=folder / "atto.csv")
    return folder, weights, table


def test_sensitivity_proxy_measures_each_block_once(atto):
    _, weights, table = atto
    lines = []
    proxy = SensitivityProxy(weights, table, ProxyData("digits", val_limit=32, batch_size=32),
                             progress=lines.append)
    result = search(table, parse_budget("0.7"), proxy, progress=lines.append)
    assert proxy.evaluations == 13  # none pruned, then every block alone
    details = result.subnet.proxy
    assert details["kind"] == "sensitivity" and set(details["loss_increase"]) == {str(i) for i in range(12)}
    increase = details["loss_increase"]
    assert max(abs(v) for v in increase.values()) > 1e-3  # the blocks matter: the scores are not noise
    assert details["value"] == pytest.approx(sum(increase[str(i)] for i in result.subnet.pruned))
    assert result.predicted_ms <= 0.7 * table.predict(())
    assert any("pruned alone" in line for line in lines)
    # the same per-block scores as a given proxy give the same answer
    given = BlockScoreProxy({int(k): -v for k, v in details["loss_increase"].items()})
    assert search(table, parse_budget("0.7"), given).subnet.pruned == result.subnet.pruned


def test_supernet_proxy(atto):
    from deploykit.data import DataConfig
    from deploykit.training import RunConfig, SupernetConfig, train_supernet

    folder, weights, table = atto
    trained = train_supernet("convnext_atto", weights=weights,
                             data=DataConfig("digits", input_size=(32, 32), train_limit=32, val_limit=32),
                             run=RunConfig(out=folder / "supernet", epochs=1, batch_size=16, threads=1),
                             config=SupernetConfig(candidates=(0, 2, 4, 6, 8, 10), max_pruned=3))
    data = ProxyData("digits", val_limit=32, batch_size=32)
    proxy = make_proxy(f"supernet:{trained.supernet_path}", table=table, data=data)
    result = search(table, parse_budget("0.8"), proxy)
    assert set(result.subnet.pruned) <= {0, 2, 4, 6, 8, 10}  # only blocks the supernet was trained to prune
    assert "exhaustive over 2^6" in result.method and proxy.evaluations <= 64
    details = result.subnet.proxy
    assert details["kind"] == "supernet" and details["metric"] == "top1" and 0 <= details["top1"] <= 100
    limit = 0.8 * table.predict(()) * (1 + 1e-9)
    assert details["value"] == max(top1 for pruned, (top1, _) in proxy._net.cache.items()
                                   if table.predict(pruned) <= limit)
    with pytest.raises(ConfigError, match="needs a supernet checkpoint from `deploykit train supernet`"):
        make_proxy(f"supernet:{weights}", table=table, data=data)
    with pytest.raises(ConfigError, match="cannot judge block"):
        search(table, parse_budget("0.8"), make_proxy(f"supernet:{trained.supernet_path}", table=table,
                                                       data=data), candidates=[1, 2])


def test_depth_proxy_refuses_data_and_data_proxies_need_it(atto):
    _, weights, table = atto
    with pytest.raises(ConfigError, match="takes no checkpoint"):
        make_proxy("depth", table=table, data=ProxyData("digits"))
    with pytest.raises(ConfigError, match="needs held-out data"):
        make_proxy(f"sensitivity:{weights}", table=table)
    with pytest.raises(ConfigError, match="needs a checkpoint"):
        make_proxy("supernet", table=table, data=ProxyData("digits"))
    with pytest.raises(ConfigError, match="checkpoint not found"):
        make_proxy("sensitivity:/no/such.pt", table=table, data=ProxyData("digits"))


# --- the CLI ---------------------------------------------------------------------------------------

def test_cli_writes_a_subnet_and_a_pareto_csv(tmp_path, capsys):
    table = random_table(12, seed=11, path=tmp_path / "t.csv")
    out = tmp_path / "subnet.json"
    assert main(["search", "--table", str(tmp_path / "t.csv"), "--budget", "0.6", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    subnet = Subnet.read(out)
    assert subnet.model == "convnext_atto" and subnet.input_size == (32, 32)
    assert subnet.table == str(table.path)
    assert subnet.predicted_ms == pytest.approx(table.predict(subnet.pruned))
    assert subnet.proxy["speedup"] == pytest.approx(table.predict(()) / subnet.predicted_ms)
    assert f"wrote {out}" in printed and "exact dynamic programming" in printed
    assert "table fidelity: not measured (isolated sum)" in printed
    assert main(["lut", "predict", str(tmp_path / "t.csv"), "--subnet", str(out)]) == 0
    assert f"{subnet.predicted_ms:.3f} ms" in capsys.readouterr().out
    assert main(["search", "--table", str(tmp_path / "t.csv"), "--pareto", "5", "--out",
                 str(tmp_path / "p.csv")]) == 0
    assert len(pd.read_csv(tmp_path / "p.csv")) <= 5


def test_cli_error_in_a_fresh_process_is_one_line_without_traceback(tmp_path):
    random_table(12, seed=11, path=tmp_path / "t.csv")
    command = [sys.executable, "-m", "deploykit.cli", "search", "--table", str(tmp_path / "t.csv"),
               "--budget", "0.01"]
    result = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert result.stderr.strip().startswith("deploykit search: error: no subnet of convnext_atto fits")
    assert len(result.stderr.strip().splitlines()) == 1


@pytest.mark.parametrize("args,message", [
    (["--table", "{dir}/missing.csv", "--budget", "0.5"], "latency table metadata not found"),
    (["--table", "{table}", "--budget", "fast"], "malformed budget 'fast'"),
    (["--table", "{table}", "--budget", "2"], "a budget fraction must be within (0, 1]"),
    (["--table", "{table}", "--budget", "0.5", "--proxy", "accuracy"], "unknown proxy 'accuracy'"),
    (["--table", "{table}", "--budget", "0.5", "--proxy", "sensitivity:x.pt"], "needs held-out data"),
    (["--table", "{table}", "--budget", "0.01"], "the smallest latency the table predicts is"),
    (["--table", "{table}", "--budget", "0.5", "--candidates", "0,40"], "cannot be pruned according to"),
    (["--table", "{table}", "--budget", "0.5", "--pareto", "3"], "not allowed with argument"),
    (["--table", "{table}"], "one of the arguments --budget --pareto is required"),
])
def test_cli_bad_input_is_one_line(tmp_path, capsys, args, message):
    random_table(12, seed=11, path=tmp_path / "t.csv")
    args = [a.format(dir=tmp_path, table=tmp_path / "t.csv") for a in args]
    try:
        code = main(["search", *args])
    except SystemExit as exit_info:  # argparse's own usage errors
        code = exit_info.code
    err = capsys.readouterr().err
    assert code == 2 and message in err
    assert len([line for line in err.splitlines() if "error" in line]) == 1


def test_json_subnet_round_trips_through_training_input(tmp_path):
    table = random_table(12, seed=11, path=tmp_path / "t.csv")
    result = search(table, parse_budget("0.7"), DepthProxy())
    path = result.subnet.write(tmp_path / "s.json")
    data = json.loads(path.read_text())
    assert data["pruned"] == list(result.subnet.pruned) and math.isfinite(data["predicted_ms"])
    assert Subnet.read(path) == result.subnet
