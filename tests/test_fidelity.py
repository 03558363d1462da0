"""Table fidelity: rank statistics, the subnet sample, calibration recovered from a planted a·Σ + b with an
injected measurer, resuming, refusals, the prediction helper, and a real `lut check` on cpu-ort."""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest

from deploykit.cli import main
from deploykit.errors import TableError
from deploykit.latency.fidelity import check_table
from deploykit.latency.sampling import plan_subnets
from deploykit.latency.stats import Figures, Repeatability, fit_calibration, kendall, rankdata, spearman
from deploykit.latency.table import LatencyTable, TableMeta, meta_path, predict_subnet
from deploykit.protocol import Measurement, Protocol
from deploykit.subnet import Subnet

TINY_PROTOCOL = Protocol(warmup_s=0.0, warmup_iters=1, min_time_s=0.0, min_iters=3,
                         max_repeats=1)


def fake_table(path=None, *, n=10, mode="measured", complete=True, device="Fake CPU", seed=0,
               model_ms=0.0) -> LatencyTable:
    """n blocks with their own rows, original 1..5 ms, merged 0.1..1.1 × that, stem 0.5 ms; the whole-model
    row is ``model_ms`` (0: no end-to-end figure, so the drift guard stays off; None: the table sum)."""
    rng = np.random.default_rng(seed)
    meta = TableMeta(model="convnext_atto", target="cpu-ort", device="the local CPU (any)",
                     device_string=device, runtime="onnxruntime", runtime_version="0.0",
                     provider="CPUExecutionProvider",
                     precision="fp32", batch=1, input_size=(32, 32), threads=None, protocol={}, mode=mode,
                     date="2026-01-01T00:00:00+00:00", deploykit_version="0.1.0", complete=complete)
    table = LatencyTable(meta=meta)
    base = {"family": "convnext", "block_type": "ConvNeXtBlock", "in_shape": "8x4x4", "out_shape": "8x4x4",
            "macs": 1, "p90_ms": 0.0, "mean_ms": 0.0, "std_ms": 0.0, "cv": 0.0, "n": 1, "repeats": 1,
            "compile_s": 0.0, "first_run_ms": 0.0, "source": mode, "measured_at": "2026-01-01T00:00:00+00:00"}
    table.add({**base, "key": "fixed/stem", "kind": "fixed", "form": "fixed", "name": "stem", "indices": "",
               "count": 1, "median_ms": 0.5})
    for i in range(n):
        slow = float(rng.uniform(1, 5))
        for form, ms in (("original", slow), ("merged", slow * float(rng.uniform(0.1, 1.1)))):
            table.add({**base, "key": f"convnext/{i}", "kind": "block", "form": form, "name": f"b{i}",
                       "indices": str(i), "count": 1, "median_ms": round(ms, 4)})
    table.add({**base, "key": "model", "kind": "model", "form": "model", "name": "convnext_atto",
               "indices": "", "count": 1,
               "median_ms": table.isolated_sum(()) if model_ms is None else model_ms})
    if path is not None:
        table.write(path)
    return table


class Planted:
    """Measures a subnet as a · (the table's plain sum) + b, with an optional deterministic wobble."""

    def __init__(self, table, a=1.25, b=-0.8, wobble=0.0):
        self.raw = table.with_meta(calibration=None)
        self.a, self.b, self.wobble = a, b, wobble
        self.calls: list[tuple[int, ...]] = []

    def __call__(self, pruned):
        self.calls.append(pruned)
        ms = self.a * self.raw.predict(pruned) + self.b
        ms *= 1 + self.wobble * math.sin(len(self.calls))
        return Measurement.from_samples([ms, ms, ms])


# --- statistics ------------------------------------------------------------------------------------

def test_rank_statistics_with_ties_match_hand_and_scipy_values():
    assert rankdata([10, 20, 20, 5]).tolist() == [2.0, 3.5, 3.5, 1.0]
    assert spearman([1, 2, 3, 4], [10, 20, 30, 40]) == pytest.approx(1.0)
    assert spearman([1, 2, 3, 4], [4, 3, 2, 1]) == pytest.approx(-1.0)
    # τ-b by hand: x = 1,2,3,4 and y = 1,3,2,3: concordant 4, discordant 1, one tie in y of 6 pairs
    assert kendall([1, 2, 3, 4], [1, 3, 2, 3]) == pytest.approx(3 / math.sqrt(6 * 5))
    assert math.isnan(spearman([1, 1, 1], [1, 2, 3])) and math.isnan(kendall([1, 1, 1], [1, 2, 3]))
    stats = pytest.importorskip("scipy.stats")
    rng = np.random.default_rng(0)
    x, y = rng.integers(0, 6, 30), rng.integers(0, 6, 30)  # many ties on both sides
    assert spearman(x, y) == pytest.approx(stats.spearmanr(x, y).statistic)
    assert kendall(x, y) == pytest.approx(stats.kendalltau(x, y).statistic)


def test_figures_and_calibration_fit():
    figures = Figures.compare([105, 90, 200], [100, 100, 200])
    assert figures.within_5 == pytest.approx(2 / 3) and figures.within_10 == pytest.approx(1.0)
    assert figures.mape == pytest.approx(5.0) and figures.bias == pytest.approx(-5 / 3)
    assert figures.max_error == pytest.approx(10.0)
    assert fit_calibration([1, 2, 3], [3, 5, 7]) == pytest.approx((2.0, 1.0))
    with pytest.raises(TableError, match="two subnets with different predicted latencies"):
        fit_calibration([2, 2], [3, 4])


def test_rounding_below_a_nanosecond_does_not_rank_equal_subnets():
    # a fitted predictor recovers 7.5 ms twice, once a rounding below and once above
    figures = Figures.compare([7.5 - 1e-12, 7.5 + 1e-12, 9.0], [7.5, 7.5, 9.0])
    assert figures.spearman == pytest.approx(1.0) and figures.kendall == pytest.approx(1.0)
    assert Figures.compare([7.5, 7.5005, 9.0], [7.5, 7.5, 9.0]).spearman < 1.0  # a µs apart still ranks


def test_repeatability_is_the_spread_of_one_model_measured_again():
    repeat = Repeatability.of([1.0, 1.02, 0.97, 1.3, 0.5])
    assert repeat.n == 5 and repeat.median_ms == pytest.approx(1.0)
    assert repeat.within_5 == pytest.approx(3 / 5)  # 1.0, 1.02 and 0.97: a perfect predictor's best share
    assert repeat.robust_cv == pytest.approx(1.4826 * 0.03)  # deviations 0, .02, .03, .3, .5: median .03
    assert repeat.range_pct == pytest.approx(80.0)
    assert "60% within ±5% of their median 1.000 ms" in repeat.line()
    assert Repeatability.of([1.0, 1.1]) is None and Repeatability.of([1.0, math.nan, -1.0, 2.0]) is None


def test_the_sample_covers_every_depth_and_is_deterministic():
    blocks = tuple(range(12))
    plan = plan_subnets(blocks, 14, seed=3)
    assert plan == plan_subnets(blocks, 14, seed=3) and plan != plan_subnets(blocks, 14, seed=4)
    assert plan[0] == () and len(set(plan)) == 14
    assert {len(s) for s in plan} == set(range(13))  # 14 samples over k = 0..12: every depth
    assert len(plan_subnets((0, 1, 2), 40, seed=0)) == 8  # the whole space when it is smaller
    assert len(plan_subnets((0, 1, 2), 40, seed=0, spread_by=len)) == 8


def test_the_check_spreads_its_subnets_over_the_prediction():
    costs = {i: 1.5 ** i for i in range(12)}  # blocks of very different cost

    def predict(subset):
        return 100.0 - sum(costs[i] for i in subset)

    plan = plan_subnets(tuple(costs), 12, seed=3, spread_by=predict)
    assert plan[0] == () and len(set(plan)) == 12 and plan == plan_subnets(tuple(costs), 12, 3, predict)
    assert tuple(costs) in plan  # both ends of the range: unpruned and all merged
    predicted = np.sort([predict(s) for s in plan if 0 < len(s) < len(costs)])
    width = predicted[-1] - predicted[0]
    assert np.diff(predicted).min() >= 0.5 * width / 9 and width >= 0.8 * sum(costs.values())


# --- the check with an injected measurer ------------------------------------------------------------

def test_calibration_recovers_a_planted_affine_map(tmp_path):
    table = fake_table(tmp_path / "t.csv")
    measure = Planted(table, a=1.25, b=-0.8)
    lines: list[str] = []
    result = check_table(tmp_path / "t.csv", samples=12, seed=1, measure=measure, progress=lines.append)
    assert result.calibration == pytest.approx((1.25, -0.8), rel=1e-9)
    assert result.after.mape == pytest.approx(0.0, abs=1e-9) and result.after.within_5 == 1.0
    assert result.cross_validated.mape == pytest.approx(0.0, abs=1e-9)
    assert result.before.spearman == pytest.approx(1.0) and result.before.kendall == pytest.approx(1.0)
    assert result.before.mape > 1 and result.stored
    # stored: the table on disk now predicts in measured milliseconds, through the same predict
    stored = LatencyTable.read(tmp_path / "t.csv")
    assert stored.meta.calibration == pytest.approx((1.25, -0.8))
    assert stored.predict([1, 4]) == pytest.approx(1.25 * table.predict([1, 4]) - 0.8)
    assert stored.rows.equals(table.rows) and any(n.startswith("lut check:") for n in stored.meta.notes)
    points = pd.read_csv(result.csv_path, keep_default_na=False)
    assert result.csv_path == tmp_path / "fidelity_cpu-ort_t.csv" and len(points) == 12
    assert points["calibrated_ms"].to_numpy() == pytest.approx(points["measured_ms"].to_numpy())
    assert result.png_path.stat().st_size > 10_000
    assert len(lines) == 12 and lines[0].startswith("[ 1/12] k=0 ")
    summary = result.summary()
    assert "table sum" in summary and "leave-one-out" in summary
    assert "1.2500 · predicted − 0.800 ms" in summary


def test_a_recheck_reports_the_previous_calibration_and_noise_is_fitted_in_least_squares(tmp_path):
    table = fake_table(tmp_path / "t.csv")
    check_table(tmp_path / "t.csv", samples=6, seed=0, measure=Planted(table, a=2.0, b=1.0),
                out_dir=tmp_path / "a")
    noisy = check_table(tmp_path / "t.csv", samples=20, seed=5, out_dir=tmp_path / "b",
                        measure=Planted(table, a=0.9, b=0.3, wobble=0.02))
    assert noisy.previous is not None and noisy.previous.bias > 50  # 2Σ + 1 overshoots 0.9Σ + 0.3
    assert noisy.calibration[0] == pytest.approx(0.9, rel=0.05)
    assert 0 < noisy.after.mape < noisy.before.mape and noisy.after.within_5 == 1.0
    assert LatencyTable.read(tmp_path / "t.csv").meta.calibration == pytest.approx(noisy.calibration)
    assert sum(n.startswith("lut check:") for n in LatencyTable.read(tmp_path / "t.csv").meta.notes) == 1


def test_an_interrupted_check_resumes_without_measuring_twice(tmp_path):
    table = fake_table(tmp_path / "t.csv")
    first = Planted(table)

    def dies_after_four(pruned):
        if len(first.calls) == 4:
            raise KeyboardInterrupt
        return first(pruned)

    with pytest.raises(KeyboardInterrupt):
        check_table(tmp_path / "t.csv", samples=10, seed=2, measure=dies_after_four)
    assert len(pd.read_csv(tmp_path / "fidelity_cpu-ort_t.csv")) == 4
    assert LatencyTable.read(tmp_path / "t.csv").meta.calibration is None
    second = Planted(table)
    result = check_table(tmp_path / "t.csv", samples=10, seed=2, measure=second)
    assert (result.reused, result.measured_now) == (4, 6)
    assert second.calls == plan_subnets(table.prunable_indices, 10, seed=2, spread_by=table.isolated_sum)[4:]
    assert check_table(tmp_path / "t.csv", samples=10, seed=2, measure=Planted(table), fresh=True).reused == 0


def test_a_machine_in_another_state_than_at_profiling_time_gets_no_calibration(tmp_path):
    table = fake_table(tmp_path / "t.csv", model_ms=None)  # the end-to-end row agrees with the sum
    slow = check_table(tmp_path / "t.csv", samples=6, measure=Planted(table, a=1.5, b=0.0), plot=False)
    assert not slow.stored and slow.as_dict()["drift"] == pytest.approx(0.5)
    assert any("+50% against the table's own end-to-end row" in note for note in slow.notes)
    assert LatencyTable.read(tmp_path / "t.csv").meta.calibration is None
    forced = check_table(tmp_path / "t.csv", samples=6, measure=Planted(table, a=1.5, b=0.0), plot=False,
                         force_store=True)
    assert forced.stored and LatencyTable.read(tmp_path / "t.csv").meta.calibration == pytest.approx((1.5, 0))
    steady = check_table(tmp_path / "t.csv", samples=6, measure=Planted(table, a=0.9, b=0.5), plot=False,
                         fresh=True)
    assert steady.stored and abs(steady.as_dict()["drift"]) < 0.25


def test_no_store_leaves_the_table_alone(tmp_path):
    table = fake_table(tmp_path / "t.csv")
    result = check_table(tmp_path / "t.csv", samples=5, seed=0, measure=Planted(table), store=False,
                         plot=False)
    assert not result.stored and result.png_path is None
    assert LatencyTable.read(tmp_path / "t.csv").meta == table.meta


@pytest.mark.parametrize("changes,message", [
    ({"mode": "estimated"}, "is an estimated (roofline) table"),
    ({"complete": False}, "is incomplete"),
])
def test_tables_that_cannot_be_checked_are_refused(tmp_path, changes, message):
    fake_table(tmp_path / "t.csv", **changes)
    with pytest.raises(TableError, match=message.replace("(", r"\(").replace(")", r"\)")):
        check_table(tmp_path / "t.csv", samples=3, measure=lambda pruned: 1.0)


def test_a_table_from_another_machine_is_refused_unless_allowed(tmp_path):
    fake_table(tmp_path / "t.csv", device="Some Other CPU 9000")
    with pytest.raises(TableError, match=r"measured on another machine \(the table carries no machine "
                                         r"fingerprint.*lut anchor .*--allow-mismatch"):
        check_table(tmp_path / "t.csv", samples=3)
    assert not (tmp_path / "fidelity_cpu-ort_t.csv").exists()


def test_predict_subnet_accepts_a_subnet_or_indices():
    table = fake_table(n=6)
    assert predict_subnet(table, [1, 3]) == table.predict([1, 3])
    assert predict_subnet(table, Subnet("convnext_atto", (32, 32), (1, 3))) == table.predict([1, 3])
    with pytest.raises(TableError, match="the subnet is resnet18 at 32x32 but the table is for convnext"):
        predict_subnet(table, Subnet("resnet18", (32, 32), (1,)))


# --- a real check on this machine's CPU through onnxruntime -----------------------------------------

@pytest.mark.slow
def test_real_profile_with_its_fit_then_lut_check_on_cpu_onnxruntime(tmp_path, capsys):
    """One real small profile end to end (convnext_atto at 32×32, tiny protocol, few subnets): its
    metadata holds a fitted predictor and held-out figures; `lut check` then judges that predictor."""
    from deploykit.latency.options import EndToEndOptions
    from deploykit.latency.predictor import Predictor
    from deploykit.latency.profile import profile
    from deploykit.latency.sentinel import SentinelPolicy
    from deploykit.runsettings import RunSettings
    from deploykit.runtimes import availability
    from deploykit.targets import load_target

    # The run settings given (no settings probe: 24 timed processes; test_profile's real profile runs it)
    # and the sentinel at the start and the end only, never redoing entries (a loaded CI machine drifts):
    # neither is what this test checks.
    target = load_target("cpu-ort").with_settings(RunSettings(threads=1))
    ok, reason = availability(target)
    if not ok:
        pytest.skip(reason)
    # Unpaired (pairing has tests of its own in test_paired.py): each subnet alone in its processes.
    profiled = profile("convnext_atto", target, input_size=32, batch=1, out=tmp_path / "atto.csv",
                       protocol=TINY_PROTOCOL,
                       end_to_end=EndToEndOptions(fit_samples=0, holdout=2, paired=False),
                       sentinel=SentinelPolicy(every=0, interval_s=1e9, max_drift=100.0))
    meta = profiled.table.meta
    assert meta.complete and meta.layout["blocks"] == 12 and len(meta.layout["fixed"]) == 5
    fit = meta.predictor["fit"]
    assert (fit["designed"], fit["random"], fit["points"]) == (6, 0, 6)  # unpruned, 4 groups alone, all
    predictor = Predictor.from_dict(meta.predictor)
    assert profiled.table.predict([0, 5]) == predictor.predict([0, 5]) and predictor.base_ms > 0
    assert meta.fidelity["n"] == 2 and meta.fidelity["predictor"] == "fitted"
    assert 0 <= meta.fidelity["within_5"] <= meta.fidelity["within_10"] <= 1 and meta.fidelity["mape"] >= 0
    points = pd.read_csv(tmp_path / "atto.fit.csv", keep_default_na=False, dtype={"pruned": str})
    assert len(points) == 8 and (points["measured_ms"] > 0).all() and (points["n"] >= 3).all()
    assert sorted(points["phase"]) == ["fit"] * 6 + ["holdout"] * 2
    assert "held-out subnets): ρ" in profiled.summary()
    # three timed runs per entry make the table's end-to-end row too rough for the drift guard: force
    code = main(["lut", "check", str(profiled.path), "--samples", "2", "--seed", "1", "--format", "json",
                 "--force-store", "--no-paired"])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    report = json.loads(captured.out)
    assert report["samples"] == 2 and report["k_range"] == [0, 12] and report["stored"]
    assert report["prediction"] == "predictor" and report["before"]["n"] == 2
    assert report["unpruned_predicted_ms"] == pytest.approx(predictor.predict(()), rel=1e-6)
    assert report["drift"] == pytest.approx(report["unpruned_measured_ms"] / report["model_row_ms"] - 1)
    assert "[1/2] k=0 " in captured.err and "building convnext_atto" in captured.err
    table = LatencyTable.read(profiled.path)
    assert table.meta.calibration == pytest.approx(tuple(report["calibration"]))
    a, b = table.meta.calibration
    assert table.predict([3]) == pytest.approx(a * predictor.predict([3]) + b)  # applied after the predictor
    checked = pd.read_csv(report["csv"])
    assert len(checked) == 2 and (checked["measured_ms"] > 0).all() and (checked["n"] >= 3).all()
    assert checked["measured_on"].iloc[0].endswith(f"onnxruntime {table.meta.runtime_version}")
    assert report["png"] and meta_path(profiled.path).is_file()


def test_cli_lut_bad_input_is_one_line(tmp_path, capsys):
    fake_table(tmp_path / "est.csv", mode="estimated")
    fake_table(tmp_path / "ok.csv")
    est = str(tmp_path / "est.csv")
    missing = str(tmp_path / "missing.csv")
    for args, message in ((["lut", "check", missing], "latency table metadata not found"),
                          (["lut", "check", est], "estimated (roofline) table"),
                          (["lut", "check", est, "--samples", "0"], "estimated"),
                          (["lut", "check", str(tmp_path / "ok.csv"), "--samples", "1"], "--samples must be"),
                          (["lut", "predict", est, "--prune", "1,x"], "malformed block list"),
                          (["lut", "predict", est, "--prune", "99"], "not in the table")):
        assert main(args) == 2, args
        err = capsys.readouterr().err
        assert message in err and len(err.strip().splitlines()) == 1, err
