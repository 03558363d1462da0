"""`deploykit table`: the speed-vs-accuracy table built from result.json files and verify reports."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pandas as pd
import pytest

from deploykit.cli import main
from deploykit.errors import ConfigError
from deploykit.results_table import (
    format_markdown,
    load_variants,
    pareto_front,
    render_pareto_png,
    speed_accuracy_frame,
    variants_frame,
)
from deploykit.verify import VerifyReport

SHA = {"orig": "a" * 64, "b08": "b" * 64, "b06": "c" * 64}


def write_result(folder, **data):
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "result.json").write_text(json.dumps(data))
    return folder


DATA = {"name": "digits", "input_size": [32, 32], "val_fraction": 0.2, "split_seed": 0, "train_limit": None,
        "val_limit": None}


def baseline(folder, top1=80.0, model="resnet18", *, epochs=4, weights=None, data=DATA):
    """A baseline's result.json (``epochs=None``: none recorded, as written before it was) and its weights
    file (only its existence matters: the table follows ``weights`` back to the directory holding them)."""
    extra = {} if epochs is None else {"epochs": epochs}
    folder = write_result(folder, kind="baseline", model=model, input_size=[32, 32], num_classes=10,
                          weights=None if weights is None else str(weights), data=data, top1=top1, loss=0.5,
                          params=11_000_000, macs=500_000_000, train_wall_s=1.0,
                          weights_path=str(folder / "model.pt"), **extra)
    (folder / "model.pt").write_bytes(b"")
    return folder


def subnet(folder, pruned, top1_merged, model="resnet18", method="progressive", *, weights=None, epochs=3,
           data=DATA):
    return write_result(folder, kind="subnet", model=model, method=method, pruned=pruned,
                        top1_unmerged=top1_merged + 0.3, top1_merged=top1_merged, loss_unmerged=0.6,
                        loss_merged=0.61, merge_rel_error=1e-6, params=9_000_000, macs=400_000_000,
                        weights=None if weights is None else str(weights), input_size=[32, 32], data=data,
                        merged_path=str(folder / "merged.pt"), epochs=epochs)


def report(folder, target, sha, *, median_ms=None, reference_sha=None, speedup=None, predicted_ms=None,
           passed=None, name=None):
    latency = None if median_ms is None else {
        "model": {"median_ms": median_ms, "p90_ms": median_ms * 1.1, "cv": 0.01},
        "reference": None if reference_sha is None else {"median_ms": 2.0, "p90_ms": 2.2, "cv": 0.01},
        "rounds": 3, "round_speedups": [], "speedup": speedup}
    numerics = None if passed is None else {"passed": passed, "max_rel": 1e-6}
    VerifyReport(target=target, device="cpu", runtime="onnxruntime", runtime_version="1.0", provider=None,
                 precision="fp32", input_shape=(1, 3, 32, 32), model=f"{folder.name}.onnx", model_sha256=sha,
                 reference=None if reference_sha is None else "orig.onnx", reference_sha256=reference_sha,
                 numerics=numerics, latency=latency, predicted_ms=predicted_ms, speedup=speedup,
                 passed=passed).write(folder / (name or f"verify-{target}.json"))


@pytest.fixture
def run(tmp_path):
    """A pipeline-like run: the original, two budgets (verified on cpu-ort, one also on gpu), a folder
    that is no variant."""
    root = tmp_path / "RUN"
    orig = baseline(root / "baseline")
    b08 = subnet(root / "budget-0.8", [1, 4, 7, 10], 79.1, weights=orig / "model.pt")
    b06 = subnet(root / "budget-0.6", [2, 5], 77.5, method="abrupt", weights=orig / "model.pt")
    (root / "logs").mkdir()
    report(orig, "cpu-ort", SHA["orig"], median_ms=2.0, predicted_ms=2.1, passed=True)
    report(b08, "cpu-ort", SHA["b08"], median_ms=1.5, reference_sha=SHA["orig"], speedup=1.4,
           predicted_ms=1.45, passed=True)
    report(b06, "cpu-ort", SHA["b06"], median_ms=1.2, reference_sha=SHA["orig"], speedup=1.7, passed=False)
    report(b08, "gpu", SHA["b08"], median_ms=0.5)
    return root


def one_line_error(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err
    return err


# --- the frame --------------------------------------------------------------------------------------

def test_rows_baseline_first_then_subnets_by_name(run):
    frame = speed_accuracy_frame([run])
    assert list(frame["variant"]) == ["baseline", "budget-0.6", "budget-0.8"]
    assert list(frame["method"]) == ["original", "abrupt", "progressive"]
    assert list(frame["pruned"]) == ["0", "2: 2,5", "4: 1,4,7,10"]


def test_top1_is_the_merged_one_and_without_an_equal_budget_original_delta_says_so(run):
    frame = speed_accuracy_frame([run]).set_index("variant")
    assert frame.loc["budget-0.8", "top-1 %"] == 79.1  # top1_merged, not top1_unmerged
    assert math.isnan(frame.loc["baseline", "Δ top-1"]) and frame.loc["baseline", "Δ vs"] == ""
    assert frame.loc[["budget-0.6", "budget-0.8"], "Δ top-1"].round(6).tolist() == [-2.5, -0.9]
    assert frame["epochs"].tolist() == ["4", "4+3", "4+3"]
    assert set(frame.loc[["budget-0.6", "budget-0.8"], "Δ vs"]) == {"baseline (4 ep); not the same budget"}
    assert frame.loc["baseline", "params M"] == 11.0 and frame.loc["baseline", "MACs M"] == 500.0


def test_delta_is_against_the_original_trained_for_the_same_budget(run, capsys):
    """The fair-Δ row: with the original continued for the pruned variants' extra epochs, their Δ is
    against it, and the continued original's own Δ is what the extra epochs alone gave."""
    baseline(run / "original-continued", top1=81.0, epochs=3, weights=run / "baseline" / "model.pt")
    frame = speed_accuracy_frame([run]).set_index("variant")
    assert list(frame.index) == ["baseline", "original-continued", "budget-0.6", "budget-0.8"]
    assert frame.loc["original-continued", "epochs"] == "4+3"
    assert frame.loc["original-continued", "Δ top-1"] == pytest.approx(1.0)
    assert frame.loc["original-continued", "Δ vs"] == "baseline (4 ep)"
    assert frame.loc["budget-0.8", "Δ top-1"] == pytest.approx(79.1 - 81.0)
    assert frame.loc["budget-0.6", "Δ top-1"] == pytest.approx(77.5 - 81.0)
    assert set(frame.loc[["budget-0.6", "budget-0.8"], "Δ vs"]) == {"original-continued (4+3 ep)"}
    assert main(["table", str(run)]) == 0
    rows = {line.split("|")[1].strip(): line for line in capsys.readouterr().out.splitlines()[2:]}
    assert "-1.90" in rows["budget-0.8"] and "original-continued (4+3 ep)" in rows["budget-0.8"]


def test_the_equal_budget_reference_that_started_from_the_same_weights_wins(tmp_path, run):
    other = baseline(tmp_path / "other" / "scratch-7", top1=90.0, epochs=7)  # 7 from scratch: not 4+3
    continued = baseline(tmp_path / "other" / "continued", top1=82.0, epochs=3, weights=run / "baseline" /
                         "model.pt")
    elsewhere = baseline(tmp_path / "elsewhere" / "base", top1=70.0, epochs=4)
    lookalike = baseline(tmp_path / "elsewhere" / "cont", top1=60.0, epochs=3, weights=elsewhere / "model.pt")
    frame = speed_accuracy_frame([lookalike, other, run, continued]).set_index("variant")
    assert frame.loc["budget-0.8", "Δ vs"] == "continued (4+3 ep)"  # not cont: same budget, other start
    assert frame.loc["budget-0.8", "Δ top-1"] == pytest.approx(79.1 - 82.0)


def test_budgets_follow_relative_weights_paths_from_another_folder(tmp_path, monkeypatch):
    """result.json names its weights relative to where training ran; the table may run elsewhere."""
    monkeypatch.chdir(tmp_path)
    base = baseline(Path("proj/runs/baseline"), top1=80.0, epochs=4)
    baseline(Path("proj/runs/continued"), top1=81.0, epochs=2, weights=Path("runs/baseline/model.pt"))
    subnet(Path("proj/runs/budget-0.8"), [1], 79.0, weights=Path("runs/baseline/model.pt"), epochs=2)
    frame = speed_accuracy_frame([tmp_path / "proj" / "runs"]).set_index("variant")
    assert frame["epochs"].tolist() == ["4", "4+2", "4+2"]
    assert frame.loc["budget-0.8", "Δ vs"] == "continued (4+2 ep)"
    assert base.is_dir()


def test_unknown_and_pretrained_budgets(tmp_path):
    old = baseline(tmp_path / "old", top1=80.0, epochs=None)  # no epochs, no log: unknown
    lost = subnet(tmp_path / "lost", [1], 79.0, weights=tmp_path / "gone" / "model.pt")
    frame = speed_accuracy_frame([old, lost]).set_index("variant")
    assert frame.loc["old", "epochs"] == "" and frame.loc["lost", "epochs"] == ""
    assert frame.loc["lost", "Δ vs"] == "old; budget unknown"
    (old / "log.csv").write_text("epoch,val_top1\n1,70\n2,75\n3,80\n")  # a log gives the epochs
    tuned = baseline(tmp_path / "tuned", top1=85.0, epochs=2, weights="package:efficientnet_lite0")
    frame = speed_accuracy_frame([old, tuned]).set_index("variant")
    assert frame["epochs"].tolist() == ["3", "pretrained+2"]


def test_other_validation_data_is_no_reference(tmp_path):
    digits = baseline(tmp_path / "digits", top1=80.0)
    mnist = subnet(tmp_path / "mnist", [1], 79.0, weights=digits / "model.pt",
                   data={**DATA, "name": "mnist5k"})
    frame = speed_accuracy_frame([digits, mnist]).set_index("variant")
    assert math.isnan(frame.loc["mnist", "Δ top-1"]) and frame.loc["mnist", "Δ vs"] == ""


def test_per_target_columns_and_the_speedup_rule(run):
    frame = speed_accuracy_frame([run]).set_index("variant")
    for target in ("cpu-ort", "gpu"):
        for field in ("predicted ms", "measured ms", "speed-up", "numerics"):
            assert f"{target} {field}" in frame.columns
    assert frame["cpu-ort measured ms"].tolist() == [2.0, 1.2, 1.5]
    assert frame.loc["budget-0.8", "cpu-ort predicted ms"] == 1.45
    assert math.isnan(frame.loc["budget-0.6", "cpu-ort predicted ms"])
    # own speed-up; the reference of other rows' reports → 1.00
    assert frame["cpu-ort speed-up"].tolist() == [1.0, 1.7, 1.4]
    assert frame["cpu-ort numerics"].tolist() == ["pass", "FAIL", "pass"]
    # on gpu: only budget-0.8 has a report, without a reference: blank speed-up, numerics not checked
    assert frame.loc["budget-0.8", "gpu measured ms"] == 0.5
    assert math.isnan(frame.loc["budget-0.8", "gpu speed-up"])
    assert frame.loc["budget-0.8", "gpu numerics"] == "–"
    assert frame.loc[["baseline", "budget-0.6"], "gpu measured ms"].isna().all()
    assert frame.loc[["baseline", "budget-0.6"], "gpu numerics"].isna().all()


def test_variant_dirs_in_the_given_order_and_colliding_names(tmp_path, run):
    other = baseline(tmp_path / "other" / "baseline", top1=70.0, model="mobilenetv3_small_100")
    pruned = subnet(tmp_path / "other" / "budget-0.8", [3], 69.0, model="mobilenetv3_small_100",
                    weights=other / "model.pt")
    frame = speed_accuracy_frame([run / "budget-0.8", other, pruned, run / "budget-0.8"])
    assert list(frame["variant"]) == ["RUN/budget-0.8", "baseline", "other/budget-0.8"]
    assert math.isnan(frame["Δ top-1"][0])  # no original of resnet18 among these rows
    assert frame["Δ top-1"][2] == pytest.approx(-1.0)
    assert len(load_variants([run, run / "baseline"])) == 3  # a directory reached twice is one row


def test_a_variant_without_reports_has_no_target_columns(tmp_path):
    frame = speed_accuracy_frame([baseline(tmp_path / "b")])
    assert list(frame.columns) == ["variant", "model", "method", "pruned", "epochs", "top-1 %", "Δ top-1",
                                   "Δ vs", "params M", "MACs M"]


# --- the writers ------------------------------------------------------------------------------------

def test_markdown_table(run):
    text = format_markdown(speed_accuracy_frame([run]))
    lines = text.splitlines()
    assert len(lines) == 2 + 3
    assert lines[0].startswith("| variant") and "cpu-ort speed-up" in lines[0]
    assert set(lines[1]) <= {"|", "-", ":", " "}
    assert "80.00" in lines[2] and "1.00×" in lines[2]
    assert "-0.90" in lines[4] and "1.40×" in lines[4] and "1.500" in lines[4]
    assert all(line.count("|") == lines[0].count("|") for line in lines)


@pytest.mark.parametrize("suffix", [".md", ".csv", ".html"])
def test_out_files_parse_back(run, tmp_path, capsys, suffix):
    out = tmp_path / f"table{suffix}"
    assert main(["table", str(run), "--out", str(out)]) == 0
    assert capsys.readouterr().out.strip() == f"wrote {out}"
    text = out.read_text()
    if suffix == ".csv":
        back = pd.read_csv(out)
        assert list(back["variant"]) == ["baseline", "budget-0.6", "budget-0.8"]
        assert back["cpu-ort speed-up"].tolist() == [1.0, 1.7, 1.4]  # raw floats
        assert back["gpu speed-up"].isna().all()
    elif suffix == ".md":
        assert text.startswith("| variant") and len(text.splitlines()) == 5
    else:
        assert text.count("<tr") == 1 + 3 and "<th>cpu-ort speed-up</th>" in text
        assert "<td>1.40×</td>" in text and "<td>budget-0.6</td>" in text
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


def test_without_out_the_markdown_goes_to_stdout(run, capsys):
    assert main(["table", str(run)]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith("| variant") and len(out) == 5


# --- the Pareto plot --------------------------------------------------------------------------------

def test_pareto_front_leaves_out_a_dominated_point():
    points = [(2.0, 80.0), (1.5, 79.0), (1.6, 78.0), (1.0, 75.0), (2.5, 80.0)]
    assert pareto_front(points) == [3, 1, 0]  # (1.6, 78) and (2.5, 80) are dominated
    assert pareto_front([(1.0, 70.0), (1.0, 70.0)]) == [0, 1]  # ties dominate neither


def test_plot_is_a_png(run, tmp_path, capsys):
    plot = tmp_path / "figs" / "pareto.png"
    assert main(["table", str(run), "--plot", str(plot)]) == 0
    assert capsys.readouterr().out.splitlines()[-1] == f"wrote {plot}"
    assert plot.read_bytes().startswith(b"\x89PNG\r\n\x1a\n")


# --- errors -----------------------------------------------------------------------------------------

def test_plot_without_measured_latency_is_refused_and_nothing_is_written(tmp_path, capsys):
    b = baseline(tmp_path / "b")
    out, plot = tmp_path / "t.md", tmp_path / "p.png"
    assert main(["table", str(b), "--out", str(out), "--plot", str(plot)]) == 2
    assert "run deploykit verify --out DIR/verify-TARGET.json first" in one_line_error(capsys)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["b"]


def _not_a_run(tmp_path):
    (tmp_path / "empty" / "sub").mkdir(parents=True)
    return [str(tmp_path / "empty")], "neither a variant directory"


def _missing(tmp_path):
    return [str(tmp_path / "nope")], "not found"


def _malformed(tmp_path):
    write_result(tmp_path / "bad", kind="subnet", model="resnet18", method="progressive", pruned=[1])
    return [str(tmp_path / "bad")], "'top1_merged' must be a number"


def _not_json(tmp_path):
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "result.json").write_text("{not json")
    return [str(tmp_path / "bad")], "cannot read it as JSON"


def _unknown_kind(tmp_path):
    write_result(tmp_path / "bad", kind="supernet", model="resnet18")
    return [str(tmp_path / "bad")], "kind 'baseline' or 'subnet'"


def _two_reports(tmp_path):
    folder = baseline(tmp_path / "b")
    report(folder, "cpu-ort", SHA["orig"], median_ms=1.0, name="verify.json")
    report(folder, "cpu-ort", SHA["orig"], median_ms=1.1, name="verify-cpu-ort.json")
    return [str(folder)], "verify-cpu-ort.json and verify.json"


def _bad_suffix(tmp_path):
    baseline(tmp_path / "b")
    return [str(tmp_path / "b"), "--out", str(tmp_path / "t.xlsx")], "use .md, .csv, .html"


@pytest.mark.parametrize("case", [_not_a_run, _missing, _malformed, _not_json, _unknown_kind, _two_reports,
                                  _bad_suffix])
def test_bad_input_is_one_line_exit_2(tmp_path, capsys, case):
    args, message = case(tmp_path)
    before = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*"))
    assert main(["table", *args, "--plot", str(tmp_path / "p.png")]) == 2
    assert message in one_line_error(capsys)
    assert sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*")) == before


def test_no_variant_is_an_empty_frame_and_no_plot():
    assert variants_frame([]).empty and speed_accuracy_frame([]).empty
    with pytest.raises(ConfigError, match="no variant has a measured latency"):
        render_pareto_png(variants_frame([]))


# --- one round-robin measurement of every variant -----------------------------------------------------

def test_a_round_robin_measurement_gives_the_figures_and_their_spread(run, tmp_path):
    from deploykit.verify.rounds import ModelRounds, RoundRobin

    robin = RoundRobin(target="cpu-ort", settings={"threads": 1}, rounds=3, reference="baseline", models={
        "baseline": ModelRounds((2.0, 2.2, 2.1), (1.0, 1.0, 1.0)),
        "budget-0.8": ModelRounds((1.6, 1.5, 1.7), (1.25, 1.4667, 1.2353))})
    path = robin.write(tmp_path / "latency-cpu-ort.json")
    frame = speed_accuracy_frame([run], measurements=[path]).set_index("variant")
    assert frame.loc["baseline", "cpu-ort measured ms"] == pytest.approx(2.1)
    assert frame.loc["baseline", "cpu-ort measured ±"] == pytest.approx(0.1)
    assert frame.loc["budget-0.8", "cpu-ort measured ms"] == pytest.approx(1.6)  # not the report's 1.5
    assert frame.loc["budget-0.8", "cpu-ort speed-up"] == pytest.approx(1.25)    # not the report's 1.4
    assert frame.loc["budget-0.8", "cpu-ort speed-up ±"] == pytest.approx((1.4667 - 1.2353) / 2)
    assert math.isnan(frame.loc["budget-0.6", "cpu-ort measured ms"])  # not in the measurement: blank
    assert "gpu measured ±" not in frame.columns  # measured only by verify runs: no spread columns
    assert frame.loc["budget-0.8", "gpu measured ms"] == pytest.approx(0.5)
    assert render_pareto_png(frame.reset_index()).startswith(b"\x89PNG")
    assert "±0.100" in format_markdown(frame.reset_index())


def test_round_robin_arithmetic_with_a_scripted_clock():
    from deploykit.protocol import Measurement
    from deploykit.verify.rounds import RoundRobin, measure_round_robin

    scripted = {"orig.onnx": iter([2.0, 3.0, 2.2]), "pruned.onnx": iter([1.0, 2.0, 1.1])}
    order = []

    def time_file(path):
        order.append(path.name)
        return Measurement.from_samples([next(scripted[path.name])])

    robin = measure_round_robin({"orig": Path("orig.onnx"), "pruned": Path("pruned.onnx")},
                                reference="orig", rounds=3, time_file=time_file, target="t", settings={})
    assert order == ["orig.onnx", "pruned.onnx"] * 3
    pruned = robin.models["pruned"]
    # the slow second round (3.0 vs 2.0 ms) cancels out of the within-round ratios: 2.0, 1.5, 2.0
    assert pruned.round_speedups == pytest.approx((2.0, 1.5, 2.2 / 1.1))
    assert pruned.speedup == pytest.approx(2.0) and pruned.median_ms == pytest.approx(1.1)
    assert RoundRobin.from_dict(robin.as_dict(), source="x") == robin
    with pytest.raises(ConfigError, match="not a deploykit round-robin"):
        RoundRobin.from_dict({"target": "t"}, source="x.json")
    with pytest.raises(ConfigError, match="reference 'other'"):
        measure_round_robin({"a": Path("a")}, reference="other", rounds=1, time_file=time_file, target="t",
                            settings={})


def test_paired_round_robin_arithmetic_with_scripted_processes():
    """Each process lands fast or slow (the reference 2.0 or 3.0 ms); within a process the ratio holds,
    so the same architecture measures the same and every ms agrees with its speed-up."""
    from deploykit.paired import PairedMeasurement
    from deploykit.protocol import Measurement
    from deploykit.verify.rounds import RoundRobin, measure_paired_round_robin

    # (model ms, reference ms) per process, in the order the rounds time them
    scripted = iter([(2.0, 2.0), (1.0, 2.0),      # round 1: fast processes
                     (3.0, 3.0), (1.5, 3.0),      # round 2: slow processes
                     (2.2, 2.0), (1.1, 2.0)])     # round 3: fast; the copy is 10 % slower in its process
    order = []

    def time_pair(model, reference):
        order.append((model.name, reference.name))
        model_ms, reference_ms = next(scripted)
        return PairedMeasurement(model=Measurement.from_samples([model_ms]),
                                 reference=Measurement.from_samples([reference_ms]),
                                 ratios=(model_ms / reference_ms,))

    files = {"orig": Path("orig.onnx"), "copy": Path("copy.onnx"), "pruned": Path("pruned.onnx")}
    robin = measure_paired_round_robin(files, reference="orig", rounds=3, time_pair=time_pair, target="t",
                                       settings={"threads": 2})
    assert order == [("copy.onnx", "orig.onnx"), ("pruned.onnx", "orig.onnx")] * 3
    assert robin.paired and list(robin.models) == ["orig", "copy", "pruned"]
    orig, copy, pruned = (robin.models[name] for name in ("orig", "copy", "pruned"))
    assert orig.round_medians_ms == pytest.approx((2.0, 3.0, 2.0)) and orig.median_ms == pytest.approx(2.0)
    assert orig.speedup == pytest.approx(1.0)
    # the anchor (2.0 ms) × each round's ratio: the slow round does not move the copy
    assert copy.round_ratios == pytest.approx((1.0, 1.0, 1.1))
    assert copy.round_medians_ms == pytest.approx((2.0, 2.0, 2.2)) and copy.median_ms == pytest.approx(2.0)
    assert pruned.round_medians_ms == pytest.approx((1.0, 1.0, 1.1)) and pruned.speedup == pytest.approx(2.0)
    assert pruned.median_ms * pruned.speedup == pytest.approx(orig.median_ms)
    assert RoundRobin.from_dict(robin.as_dict(), source="x") == robin
    with pytest.raises(ConfigError, match="besides the reference"):
        measure_paired_round_robin({"orig": Path("o")}, reference="orig", rounds=1, time_pair=time_pair,
                                   target="t", settings={})
    with pytest.raises(ConfigError, match="reference 'other'"):
        measure_paired_round_robin(files, reference="other", rounds=1, time_pair=time_pair, target="t",
                                   settings={})


def test_files_with_the_same_bytes_are_measured_once_and_share_their_figures(tmp_path):
    """Two budgets that chose the same subnet share one exported file: the table measures it once."""
    import shutil

    from onnx_fixtures import tiny_onnx

    from deploykit.measure.host import MeasureHost
    from deploykit.paired import PairedMeasurement
    from deploykit.protocol import Measurement, Protocol
    from deploykit.targets import load_target
    from deploykit.verify.rounds import RoundRobin, measure_models, same_files

    original = tiny_onnx(tmp_path / "original.onnx")
    pruned = tmp_path / "pruned.onnx"
    pruned.write_bytes(original.read_bytes() + b"\0")  # other bytes (a trailing byte onnx ignores)
    twin = shutil.copy(pruned, tmp_path / "twin.onnx")
    files = {"baseline": original, "budget-0.8": Path(twin), "budget-0.6": pruned}
    assert same_files(files, reference="baseline") == {"baseline": "baseline", "budget-0.8": "budget-0.8",
                                                         "budget-0.6": "budget-0.8"}
    assert same_files({"a": pruned, "ref": Path(twin)}, reference="ref") == {"a": "ref", "ref": "ref"}

    timed = []

    class Scripted(MeasureHost):
        describe = availability = outputs = runtime_info = fingerprint = None

        def measure(self, *args, **kwargs):
            raise AssertionError("paired by default here")

        def measure_paired(self, onnx_path, reference_path, **kwargs):
            timed.append(Path(onnx_path).name)
            return PairedMeasurement(model=Measurement.from_samples([1.0]),
                                     reference=Measurement.from_samples([2.0]), ratios=(0.5,))

    lines = []
    robin = measure_models(files, reference="baseline", target=load_target("cpu-ort"),
                           protocol=Protocol(threads=1, spinning=False), rounds=2, host=Scripted(),
                           paired=True, progress=lines.append)
    assert timed == ["twin.onnx", "twin.onnx"]          # one pair per round, not two
    assert list(robin.models) == list(files)
    assert robin.models["budget-0.6"] == robin.models["budget-0.8"]
    assert robin.models["budget-0.6"].speedup == pytest.approx(2.0)
    assert robin.same_file_as == {"budget-0.6": "budget-0.8"}
    assert any("budget-0.6 as budget-0.8" in line for line in lines)
    assert RoundRobin.from_dict(robin.as_dict(), source="x") == robin


def test_variants_on_the_same_point_get_one_label_naming_both():
    from deploykit.results_table import _labels_by_point

    labels = _labels_by_point([0.3, 0.3, 0.6], [95.2, 95.2, 93.7], ["budget-0.8", "budget-0.6", "baseline"])
    assert labels == {(0.3, 95.2): ["budget-0.8", "budget-0.6"], (0.6, 93.7): ["baseline"]}
