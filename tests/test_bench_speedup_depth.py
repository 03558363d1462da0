"""The pure helpers of bench/speedup_depth.py: k-points, subnets, benchmark_app output, resume, plot."""

from __future__ import annotations

import argparse
import importlib.util
import sys
from pathlib import Path
from types import SimpleNamespace

import pandas as pd
import pytest

from deploykit.latency.table import LatencyTable
from deploykit.search import Budget, DepthProxy, search

ROOT = Path(__file__).resolve().parents[1]


def _load():
    spec = importlib.util.spec_from_file_location("bench_speedup_depth", ROOT / "bench" / "speedup_depth.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while the file executes
    spec.loader.exec_module(module)
    return module


sd = _load()

BAPP_OUTPUT = """\
[Step 2/11] Loading OpenVINO Runtime
[ INFO ] OpenVINO:
[ INFO ] Build ................................. 2026.4.1-22982-e213a147257-releases/2026/4
[Step 8/11] Querying optimal runtime parameters
[ INFO ] Model:
[ INFO ]   NETWORK_NAME: onnx_Frontend_IR
[ INFO ]   NUM_STREAMS: 1
[ INFO ]   INFERENCE_NUM_THREADS: 2
[ INFO ]   INFERENCE_PRECISION_HINT: <Type: 'float32'>
[ INFO ]   PERFORMANCE_HINT: LATENCY
[ INFO ]   ENABLE_CPU_PINNING: True
[Step 11/11] Dumping statistics report
[ INFO ] Execution Devices:['CPU']
[ INFO ] Count:            58 iterations
[ INFO ] Duration:         2023.94 ms
[ INFO ] Latency:
[ INFO ]    Median:        33.29 ms
[ INFO ]    Average:       34.72 ms
[ INFO ]    Min:           29.98 ms
[ INFO ]    Max:           53.23 ms
[ INFO ] Throughput:   28.66 FPS
"""


def test_k_points():
    assert sd.default_ks(18, 18) == [0, 3, 6, 9, 12, 15, 18]
    assert sd.default_ks(16, 0) == [0, 3, 6, 9, 12, 15, 16]
    assert sd.default_ks(17, 16) == [0, 3, 6, 9, 12, 15, 16, 17]
    assert sd.default_ks(12) == [0, 3, 6, 9, 12]
    assert sd.quick_ks(18) == [9, 18]
    assert sd.quick_ks(1) == [0, 1]


def test_parse_ks():
    assert sd.parse_ks("auto") is None
    assert sd.parse_ks("9, 0,3,3") == [0, 3, 9]
    for bad in ("x", "-1", ""):
        with pytest.raises(argparse.ArgumentTypeError):
            sd.parse_ks(bad)


def test_choose_subnets_are_the_search_picks():
    table = LatencyTable.read(ROOT / "latency_tables" / "cpu-ort" / "convnext_tiny_224_b1.csv")
    n = len(table.prunable_indices)
    choices = sd.choose_subnets(table, [0, 3, 9, n, n + 5])
    assert [c.k for c in choices] == [0, 3, 9, n]          # k beyond the blocks is dropped
    assert choices[0].pruned == () and all(c.picked_by_search for c in choices)
    assert all(len(c.pruned) == c.k for c in choices)
    predicted = [table.predict(c.pruned) for c in choices]
    assert predicted == sorted(predicted, reverse=True)
    for c in choices[1:]:  # the public search, given that subnet's latency as the budget, returns it
        found = search(table, Budget(table.predict(c.pruned), "ms"), DepthProxy())
        assert found.subnet.pruned == c.pruned
    assert sd.search_reach(table) == n  # by this table every merged ConvNeXt block is faster


def test_choose_subnets_beyond_the_search():
    # By this table no merged ResNet block is faster than the original: the search never prunes one.
    table = LatencyTable.read(ROOT / "latency_tables" / "cpu-ort" / "resnet34_224_b1.csv")
    reach = sd.search_reach(table)
    choices = sd.choose_subnets(table, sd.default_ks(len(table.prunable_indices), reach))
    for c in choices:
        assert len(c.pruned) == c.k
        assert c.picked_by_search == (c.k <= reach)
    beyond = [table.predict(c.pruned) for c in choices if c.k >= reach]
    assert beyond == sorted(beyond)  # past the reach, each k is the fastest k-subset: slower and slower


def test_parse_benchmark_app():
    found = sd.parse_benchmark_app(BAPP_OUTPUT)
    assert found["median_ms"] == 33.29 and found["average_ms"] == 34.72
    assert found["min_ms"] == 29.98 and found["max_ms"] == 53.23
    assert found["count"] == 58 and found["fps"] == 28.66
    assert found["build"].startswith("2026.4.1")
    assert found["properties"]["NUM_STREAMS"] == "1"
    assert found["properties"]["ENABLE_CPU_PINNING"] == "True"
    with pytest.raises(ValueError, match="Median"):
        sd.parse_benchmark_app(BAPP_OUTPUT.replace("Median", "P50"))


def test_benchmark_app_command_matches_the_target():
    target = SimpleNamespace(runtime_device=None, precision="fp32")
    command = sd.benchmark_app_command("benchmark_app", Path("m.onnx"), target=target, shape=(8, 3, 224, 224),
                                       seconds=10.0, threads=None)
    flags = dict(zip(command[1::2], command[2::2]))
    assert flags == {"-m": "m.onnx", "-d": "CPU", "-hint": "latency", "-api": "sync",
                     "-infer_precision": "f32", "-ip": "f32", "-shape": "[8,3,224,224]", "-t": "10"}
    threaded = sd.benchmark_app_command("b", Path("m.onnx"), target=target, shape=(1, 3, 224, 224),
                                        seconds=2, threads=4)
    assert threaded[-2:] == ["-nthreads", "4"]


def test_results_resume(tmp_path):
    path = tmp_path / "r.csv"
    results = sd.Results(path, fresh=False)
    key = sd._key("m", "cpu-ort", 1, 3)
    results.put({**key, "pruned": "0;1;2", "seconds": 10.0, "speedup": 1.5})
    again = sd.Results(path, fresh=False)
    assert again.done(key, pruned="0;1;2", seconds=10.0)      # 10.0 came back as "10"
    assert not again.done(key, pruned="0;1;3")
    assert not again.done(sd._key("m", "cpu-ort", 8, 3))
    again.put({**key, "pruned": "0;1;3", "seconds": 10.0, "speedup": 1.4})
    assert len(pd.read_csv(path)) == 1
    assert sd.Results(path, fresh=True).rows == []


def test_plot_writes_a_png(tmp_path):
    rows = [{"model": model, "target": target, "batch": batch, "k": k, "picked_by_search": k < 6,
             "speedup": 1 + k / 10, "speedup_min": 1 + k / 11, "speedup_max": 1 + k / 9,
             "mac_ratio": 1 + k / 8, "predicted_speedup": float("nan") if batch == 8 else 1 + k / 12,
             "machine": "x86_64 test"}
            for model in ("a", "b") for target in ("cpu-ort", "cpu-openvino") for batch in (1, 8)
            for k in (0, 3, 6)]
    path = tmp_path / "p.png"
    sd.plot(pd.DataFrame(rows), path)
    assert path.read_bytes()[:4] == b"\x89PNG"
