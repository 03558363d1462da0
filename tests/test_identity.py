"""Machine identity: fingerprints, what differs, tables used on another machine, re-anchoring."""

from __future__ import annotations

import importlib.util
import json
from dataclasses import replace

import pytest
import timm

from deploykit.cli import main
from deploykit.errors import TableError
from deploykit.latency.identity import fit_rescale, judge, table_anchors, table_for_this_machine
from deploykit.latency.profile import find_entries
from deploykit.latency.table import LatencyTable, TableMeta
from deploykit.measure.fingerprint import (
    Fingerprint,
    differences,
    for_target,
    isa_flags,
    memory_gib,
    physical_cores,
)
from deploykit.protocol import Protocol
from deploykit.runtimes import availability
from deploykit.targets import load_target

TINY_PROTOCOL = Protocol(warmup_s=0.0, warmup_iters=1, min_time_s=0.0, min_iters=3, max_repeats=1)

X86_CPUINFO = """processor\t: 0
physical id\t: 0
core id\t\t: 0
flags\t\t: fpu sse2 avx avx2 fma avx512f amx_tile amx_int8 hypervisor

processor\t: 1
physical id\t: 0
core id\t\t: 0
flags\t\t: fpu sse2 avx avx2 fma avx512f amx_tile amx_int8 hypervisor

processor\t: 2
physical id\t: 1
core id\t\t: 0

processor\t: 3
physical id\t: 1
core id\t\t: 1
"""
ARM_CPUINFO = "processor\t: 0\nFeatures\t: fp asimd evtstrm aes asimddp sve i8mm\nCPU part\t: 0xd0c\n"


def fingerprint(**changes) -> Fingerprint:
    values = dict(cpu="AMD EPYC 7B13", arch="x86_64", physical_cores=8, logical_cores=8, usable_cores=8,
                  isa=("avx2", "avx512f"), memory_gib=32, os="Linux", kernel="5.15.0", runtime="onnxruntime",
                  runtime_version="1.17.0", provider="CPUExecutionProvider", device="AMD EPYC 7B13",
                  threads=None)
    values.update(changes)
    return Fingerprint(**values)


# --- fingerprints ------------------------------------------------------------------------------------

def test_facts_are_read_from_proc_text():
    assert physical_cores(X86_CPUINFO) == 3  # (0, 0) twice (a hyper-thread), (1, 0), (1, 1)
    assert isa_flags(X86_CPUINFO) == ("avx", "avx2", "fma", "avx512f", "amx_tile", "amx_int8")
    assert isa_flags(ARM_CPUINFO) == ("asimd", "asimddp", "i8mm", "sve")
    assert memory_gib("MemTotal:       16318480 kB\nMemFree: 1 kB\n") == 16  # 15.56 GiB
    assert memory_gib("MemTotal: 24684084 kB") == 24


def test_the_id_is_stable_and_covers_every_field():
    a = fingerprint()
    assert a.id == fingerprint().id and len(a.id) == 16
    assert fingerprint(isa=("avx512f", "avx2")).id == a.id  # the order of flags does not matter
    for change in (dict(cpu="AMD EPYC 9B14"), dict(usable_cores=2), dict(kernel="6.1.0"),
                   dict(runtime_version="1.18.0"), dict(threads=4), dict(memory_gib=31)):
        assert fingerprint(**change).id != a.id, change
    assert Fingerprint.from_dict(a.stored()) == a
    with pytest.raises(TableError, match="does not match its fields"):
        Fingerprint.from_dict({**a.stored(), "cpu": "edited"})
    with pytest.raises(TableError, match="missing"):
        Fingerprint.from_dict({"cpu": "x"})


def test_differences_say_exactly_what_differs():
    table = fingerprint()
    here = fingerprint(cpu="AMD EPYC 9B14", device="AMD EPYC 9B14", physical_cores=2, logical_cores=2,
                       usable_cores=2, isa=("avx2", "avx512f", "avx512_bf16"), memory_gib=8, kernel="6.1.0",
                       runtime_version="1.18.0", threads=2)
    assert differences(table, here) == [
        "CPU: table 'AMD EPYC 7B13' (8 cores), here 'AMD EPYC 9B14' (2 cores)",
        "ISA: only here has avx512_bf16",
        "memory: table 32 GiB, here 8 GiB",
        "OS: table Linux 5.15.0, here Linux 6.1.0",
        "runtime: table onnxruntime 1.17.0, here onnxruntime 1.18.0",
        "threads: table runtime default, here 2",
    ]
    assert differences(table, fingerprint()) == []
    smt = fingerprint(logical_cores=16, usable_cores=4)
    assert differences(table, smt) == ["CPU: table 'AMD EPYC 7B13' (8 cores), here 'AMD EPYC 7B13' "
                                       "(8 cores, 16 logical, 4 usable)"]
    gpu = differences(fingerprint(device="NVIDIA A100"), fingerprint(device="NVIDIA H100"),
                      names=("A", "B"))
    assert gpu == ["device: A 'NVIDIA A100', B 'NVIDIA H100'"]


def test_this_machine_for_a_target():
    here = for_target(load_target("cpu-ort"), threads=None)
    assert here.runtime == "onnxruntime" and here.provider == "CPUExecutionProvider"
    assert here.logical_cores and here.usable_cores and here.os
    assert for_target(load_target("cpu-ort"), threads=None).id == here.id
    # a runtime that is not installed here: its version says so (and differs from any measuring machine)
    absent = for_target(load_target("amd-mi100-migraphx"), threads=None)
    assert absent.runtime == "migraphx"
    if importlib.util.find_spec("migraphx") is None:
        assert (absent.runtime_version, absent.device) == ("not installed", "not installed")


# --- a table used on this machine ------------------------------------------------------------------

def atto_table(path, *, fp: Fingerprint | None, target: str = "cpu-ort", anchors=None,
               **meta) -> LatencyTable:
    """convnext_atto at 32×32 with every entry at 1 ms (merged: 0.5 ms), the whole model 10 ms."""
    here, spec = for_target(load_target("cpu-ort"), threads=None), load_target(target)
    values = dict(model="convnext_atto", target=target, device="the local CPU (any)",
                  device_string=here.device, runtime=spec.runtime, runtime_version=here.runtime_version,
                  provider=spec.provider, precision=spec.precision, batch=1, input_size=(32, 32),
                  threads=None, protocol=TINY_PROTOCOL.as_dict(), mode="measured",
                  date="2026-01-01T00:00:00+00:00", deploykit_version="0.1.0", complete=True,
                  fingerprint=fp.stored() if fp else None,
                  anchors=anchors or {"unpruned_ms": 10.0, "merged_ms": 6.0, "rounds": 2})
    values.update(meta)
    table = LatencyTable(meta=TableMeta(**values))
    stats = dict(p90_ms=1.0, mean_ms=1.0, std_ms=0.0, cv=0.0, n=3, repeats=1, compile_s=0.1, first_run_ms=1.0)
    for entry in find_entries(timm.create_model("convnext_atto"), model_name="convnext_atto", input_size=32):
        ms = {"merged": 0.5, "model": 10.0}.get(entry.form, 1.0)
        table.add(entry.row({**stats, "median_ms": ms}, source="measured"))
    table.write(path)
    return table


def here_fp() -> Fingerprint:
    return for_target(load_target("cpu-ort"), threads=None)


def doctored() -> Fingerprint:
    return replace(here_fp(), cpu="AMD EPYC 7B13", device="AMD EPYC 7B13", physical_cores=64,
                   logical_cores=128, usable_cores=128)


def test_the_measuring_machine_uses_its_table_silently(tmp_path):
    table = atto_table(tmp_path / "t.csv", fp=here_fp())
    lines: list[str] = []
    for unit in ("ms", "fraction", None):
        same = table_for_this_machine(table, budget_unit=unit, say=lines.append)
        assert same.rescale is None and same.predict(()) == table.predict(())
    assert lines == []
    assert judge(table, here_fp()).same


def test_a_doctored_fingerprint_refuses_ms_budgets_and_lets_ratio_budgets_go_on_with_a_note(tmp_path):
    table = atto_table(tmp_path / "t.csv", fp=doctored())
    with pytest.raises(TableError) as error:
        table_for_this_machine(table, budget_unit="ms")
    message = str(error.value)
    assert "\n" not in message and "measured on another machine" in message
    assert "CPU: table 'AMD EPYC 7B13' (64 cores, 128 logical)" in message
    assert f"deploykit lut anchor {table.path}" in message and "fraction" in message
    lines: list[str] = []
    used = table_for_this_machine(table, budget_unit="fraction", say=lines.append)
    assert used.rescale is None and len(lines) == 1
    assert lines[0].startswith("note:") and "CPU: table 'AMD EPYC 7B13'" in lines[0]
    assert "ratio budget" in lines[0] and "lut anchor" in lines[0]
    table_for_this_machine(table, budget_unit=None, say=lines.append)
    assert "its milliseconds are that machine's" in lines[1]


def test_a_table_without_fingerprint_counts_as_foreign_and_estimated_tables_pass(tmp_path):
    table = atto_table(tmp_path / "t.csv", fp=None)
    with pytest.raises(TableError, match="carries no machine fingerprint"):
        table_for_this_machine(table, budget_unit="ms")
    estimated = LatencyTable(meta=replace(table.meta, mode="estimated"),
                             rows=table.rows.assign(source="estimated"))
    lines: list[str] = []
    assert table_for_this_machine(estimated, budget_unit="ms", say=lines.append) is estimated and lines == []


def test_a_stored_rescaling_for_this_machine_makes_ms_budgets_usable(tmp_path):
    here = here_fp()
    record = {"a": 2.0, "b": 0.5, "kind": "affine", "date": "2026-02-03T04:05:06+00:00",
              "fingerprint": here.stored(), "here": {"unpruned_ms": 20.5, "merged_ms": 12.5},
              "table": {"unpruned_ms": 10.0, "merged_ms": 6.0}}
    table = atto_table(tmp_path / "t.csv", fp=doctored(), rescalings={here.id: record})
    lines: list[str] = []
    used = table_for_this_machine(table, budget_unit="ms", say=lines.append)
    assert used.rescale == (2.0, 0.5)
    assert used.predict((0, 1)) == pytest.approx(2.0 * table.predict((0, 1)) + 0.5)
    assert len(lines) == 1 and "re-anchored for this one on 2026-02-03T04:05:06+00:00" in lines[0]
    assert "2.0000 × the table's + 0.500 ms" in lines[0]
    # profiled again since (other anchors): the rescaling is stale, the ms budget refused again
    stale = atto_table(tmp_path / "s.csv", fp=doctored(), rescalings={here.id: record},
                       anchors={"unpruned_ms": 11.0, "merged_ms": 6.0})
    with pytest.raises(TableError, match="millisecond budget is refused"):
        table_for_this_machine(stale, budget_unit="ms")


def test_fit_rescale_goes_through_both_anchors_or_falls_back_to_the_ratio():
    (a, b), kind = fit_rescale({"unpruned_ms": 10.0, "merged_ms": 6.0},
                               {"unpruned_ms": 20.0, "merged_ms": 14.0})
    assert kind == "affine" and (a, b) == pytest.approx((1.5, 5.0))
    assert a * 10.0 + b == pytest.approx(20.0) and a * 6.0 + b == pytest.approx(14.0)
    # anchors 2 % apart do not pin a slope down
    assert fit_rescale({"unpruned_ms": 10.0, "merged_ms": 9.8},
                       {"unpruned_ms": 25.0, "merged_ms": 20.0}) == ((2.5, 0.0), "ratio")
    # an older table has no all-merged anchor
    assert fit_rescale({"unpruned_ms": 10.0, "merged_ms": None},
                       {"unpruned_ms": 15.0, "merged_ms": 9.0}) == ((1.5, 0.0), "ratio")
    # merged slower here than unpruned: no positive slope through both
    assert fit_rescale({"unpruned_ms": 10.0, "merged_ms": 6.0},
                       {"unpruned_ms": 12.0, "merged_ms": 13.0}) == ((1.2, 0.0), "ratio")


def test_search_and_lut_predict_check_the_machine(tmp_path, capsys):
    path = str(atto_table(tmp_path / "t.csv", fp=doctored()).path)
    assert main(["search", "--table", path, "--budget", "8ms", "--out", str(tmp_path / "s.json")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("deploykit search: error:")
    assert "CPU: table 'AMD EPYC 7B13'" in err and "millisecond budget is refused" in err
    assert not (tmp_path / "s.json").exists()
    assert main(["search", "--table", path, "--budget", "0.8", "--out", str(tmp_path / "s.json")]) == 0
    err = capsys.readouterr().err
    assert "note:" in err and "a ratio budget is relative to the unpruned model and goes on" in err
    assert main(["lut", "predict", path, "--prune", "0-3"]) == 0
    captured = capsys.readouterr()
    assert "note:" in captured.err and "pruned [0, 1, 2, 3]" in captured.out


def test_lut_anchor_without_the_tables_runtime_is_one_line(tmp_path, capsys):
    if availability(load_target("amd-mi100-migraphx"))[0]:
        pytest.skip("this machine can run amd-mi100-migraphx")
    path = atto_table(tmp_path / "t.csv", fp=doctored(), target="amd-mi100-migraphx").path
    before = (tmp_path / "t.meta.json").read_bytes()
    assert main(["lut", "anchor", str(path)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err
    assert err.startswith(f"deploykit lut: error: cannot anchor {path} here: its target amd-mi100-migraphx "
                          "cannot run on this machine (")
    assert (tmp_path / "t.meta.json").read_bytes() == before


def test_lut_anchor_refuses_estimated_and_incomplete_tables(tmp_path, capsys):
    atto_table(tmp_path / "i.csv", fp=doctored(), complete=False)
    assert main(["lut", "anchor", str(tmp_path / "i.csv")]) == 2
    assert "is incomplete" in capsys.readouterr().err


@pytest.mark.slow
def test_lut_anchor_measures_here_and_then_ms_budgets_are_accepted(tmp_path, capsys):
    """convnext_atto at 32×32 on cpu-ort with a tiny protocol: a table from 'another machine'."""
    if not availability(load_target("cpu-ort"))[0]:
        pytest.skip("onnxruntime CPU is not available")
    path = str(atto_table(tmp_path / "t.csv", fp=doctored()).path)
    assert main(["search", "--table", path, "--budget", "8ms", "--out", str(tmp_path / "s.json")]) == 2
    capsys.readouterr()
    assert main(["lut", "anchor", path, "--rounds", "2"]) == 0
    captured = capsys.readouterr()
    assert "round 2/2: merged" in captured.err
    assert ("the table's fidelity on this machine is not checked yet: deploykit lut check "
            f"{path}") in captured.out
    assert "this machine differs from the table's: CPU: table 'AMD EPYC 7B13'" in captured.out
    table = LatencyTable.read(path)
    here = here_fp()
    record = table.meta.rescalings[here.id]
    assert record["fingerprint"]["id"] == here.id and record["table"]["unpruned_ms"] == 10.0
    measured = record["here"]
    assert len(measured["unpruned_rounds_ms"]) == 2
    assert measured["unpruned_ms"] > 0 and measured["merged_ms"] > 0
    a, b = record["a"], record["b"]
    if record["kind"] == "affine":  # the map goes through both anchors exactly
        assert a * 10.0 + b == pytest.approx(measured["unpruned_ms"])
        assert a * 6.0 + b == pytest.approx(measured["merged_ms"])
    else:
        assert (a, b) == pytest.approx((measured["unpruned_ms"] / 10.0, 0.0))
    used = table_for_this_machine(table, budget_unit="ms")
    assert used.rescale == pytest.approx((a, b))
    budget = 0.9 * used.predict(())
    assert main(["search", "--table", path, "--budget", f"{budget:.6f}ms",
                 "--out", str(tmp_path / "s.json")]) == 0
    captured = capsys.readouterr()
    assert "re-anchored for this one" in captured.err
    subnet = json.loads((tmp_path / "s.json").read_text())
    assert subnet["predicted_ms"] <= budget * (1 + 1e-9)


# --- anchors on the paired scale -------------------------------------------------------------------

def test_a_paired_tables_anchors_are_its_own_predictions(tmp_path):
    alone = atto_table(tmp_path / "a.csv", fp=here_fp())
    assert table_anchors(alone) == {"unpruned_ms": 10.0, "merged_ms": 6.0, "scale": "alone"}
    paired = atto_table(tmp_path / "p.csv", fp=here_fp(), fidelity={"paired": True})
    prunable = paired.prunable_indices
    anchors = table_anchors(paired)
    assert anchors["scale"] == "paired" and anchors["unpruned_ms"] == paired.isolated_sum(())
    # every prunable block is 1 ms original, 0.5 ms merged
    assert anchors["unpruned_ms"] - anchors["merged_ms"] == pytest.approx(0.5 * len(prunable))
    # the table's calibration is part of its predictions; a rescaling (what is being fitted) is not
    calibrated = paired.with_meta(calibration=(2.0, 1.0))
    assert table_anchors(calibrated)["unpruned_ms"] == pytest.approx(2.0 * anchors["unpruned_ms"] + 1.0)
    assert table_anchors(paired.with_rescale((3.0, 0.0))) == anchors


def _stand_in_anchor_models(tmp_path, monkeypatch, pruned):
    import deploykit.latency.anchor as anchor_module

    def export(model_name, *, input_size, batch, work, model=None, unpruned=None):
        files = {"unpruned": work / "anchor_unpruned.onnx", "merged": work / "anchor_merged.onnx"}
        for path in files.values():
            path.write_bytes(b"stand-in")
        return files, tuple(pruned)

    monkeypatch.setattr(anchor_module, "export_anchor_models", export)


def test_lut_anchor_pairs_a_paired_table_and_then_predicts_the_paired_figures(tmp_path, monkeypatch):
    from deploykit.latency.anchor import anchor_table
    from deploykit.measure.host import LocalHost
    from deploykit.paired import PairedMeasurement
    from deploykit.protocol import Measurement

    if not availability(load_target("cpu-ort"))[0]:
        pytest.skip("onnxruntime CPU is not available")
    table = atto_table(tmp_path / "t.csv", fp=doctored(), fidelity={"paired": True})
    prunable = table.prunable_indices
    _stand_in_anchor_models(tmp_path, monkeypatch, prunable)
    # each process lands in its own state (the unpruned model 20, 26 or 18 ms); the ratio barely moves
    processes = iter([(20.0, 0.60), (26.0, 0.62), (18.0, 0.61)])

    def measure_paired(host, model, reference, **request):
        assert (model.name, reference.name) == ("anchor_merged.onnx", "anchor_unpruned.onnx")
        unpruned, ratio = next(processes)
        return PairedMeasurement(model=Measurement.from_samples([unpruned * ratio]),
                                 reference=Measurement.from_samples([unpruned]), ratios=(ratio,))

    def time_alone(path):
        raise AssertionError(f"{path.name} timed alone: a paired table's anchors are timed paired")

    monkeypatch.setattr(LocalHost, "measure_paired", measure_paired)
    lines: list[str] = []
    result = anchor_table(table.path, rounds=3, time_onnx=time_alone, progress=lines.append)
    here = result.record["here"]
    assert (here["scale"], here["unpruned_ms"], here["merged_ratio"]) == ("paired", 20.0, 0.61)
    assert here["unpruned_rounds_ms"] == [20.0, 26.0, 18.0] and here["merged_ms"] == pytest.approx(12.2)
    assert result.record["kind"] == "affine" and result.record["table"] == table_anchors(table)
    assert any("timed as a ratio to the unpruned one" in line for line in lines)
    used = table_for_this_machine(LatencyTable.read(table.path), budget_unit="ms")
    assert used.predict(()) == pytest.approx(20.0) and used.predict(prunable) == pytest.approx(12.2)


def test_lut_anchor_times_an_unpaired_tables_anchors_alone(tmp_path, monkeypatch):
    from deploykit.latency.anchor import anchor_table
    from deploykit.measure.host import LocalHost
    from deploykit.protocol import Measurement

    if not availability(load_target("cpu-ort"))[0]:
        pytest.skip("onnxruntime CPU is not available")
    table = atto_table(tmp_path / "t.csv", fp=doctored())
    _stand_in_anchor_models(tmp_path, monkeypatch, table.prunable_indices)
    figures = {"anchor_unpruned": iter([12.0, 14.0]), "anchor_merged": iter([9.0, 7.0])}

    def time_alone(path):
        return Measurement.from_samples([next(figures[path.stem])])

    def measure_paired(host, model, reference, **request):
        raise AssertionError("an unpaired table's anchors are timed alone")

    monkeypatch.setattr(LocalHost, "measure_paired", measure_paired)
    record = anchor_table(table.path, rounds=2, time_onnx=time_alone).record
    assert record["here"]["scale"] == "alone"
    assert (record["here"]["unpruned_ms"], record["here"]["merged_ms"]) == (13.0, 8.0)
    assert (record["a"], record["b"]) == pytest.approx((5.0 / 4.0, 13.0 - 12.5))  # (10, 6) → (13, 8)


def test_a_device_agent_times_a_paired_tables_anchors_alone_and_says_so(tmp_path):
    from deploykit.latency.anchor import _pairs
    from deploykit.measure.host import LocalHost

    class Device:
        url = "http://board:8765"

        def describe(self):
            return f"the device at {self.url}"

    paired = atto_table(tmp_path / "p.csv", fp=doctored(), fidelity={"paired": True})
    lines: list[str] = []
    assert _pairs(paired, Device(), lines.append) is False
    assert lines == [f"note: {paired.path} predicts on the paired scale, but the device at "
                     "http://board:8765 times one model per process: the anchors are timed alone there, a "
                     "scale that can differ by a few per cent"]
    assert _pairs(paired, LocalHost(), lines.append) is True
    alone = atto_table(tmp_path / "a.csv", fp=doctored())
    assert _pairs(alone, LocalHost(), lines.append) is False and len(lines) == 2
