"""bench/recovery.py: its pure helpers, the probe that measures along the training without changing it,
and the smoke mode's output (what `make bench-quick` runs)."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pandas as pd
import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]


def _load(name: str):
    spec = importlib.util.spec_from_file_location(f"bench_{name}", ROOT / "bench" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while the file executes
    spec.loader.exec_module(module)
    return module


rec = _load("recovery")


def test_probe_steps_double_from_the_first_and_stop_before_the_end():
    assert rec.probe_steps(25, 250) == [0, 25, 50, 100, 200]
    assert rec.probe_steps(25, 200) == [0, 25, 50, 100]  # the end is measured after training
    assert rec.probe_steps(4, 3) == [0]


def test_auc_is_the_mean_top1_over_the_steps():
    assert rec.auc([0, 10], [50.0, 50.0]) == pytest.approx(50.0)
    assert rec.auc([0, 10, 30], [0.0, 100.0, 100.0]) == pytest.approx((500 + 2000) / 30)


def test_block_sets_from_the_shipped_table_keep_shape_and_halve_by_saving():
    from deploykit.latency.table import LatencyTable
    from deploykit.search import LatencySpace

    case = rec.CASES["mobilenetv2_100"]
    table = rec.block_table(case)
    assert table.path.parent == ROOT / "latency_tables" / "cpu-ort"
    sets = rec.block_sets(case, table)
    space = LatencySpace.from_table(LatencyTable.read(table.path))
    saving = dict(zip(space.candidates, space.savings))
    assert sets["all"] and all(saving[i] > 0 for i in sets["all"])
    assert 1 not in sets["all"] and 3 not in sets["all"]  # favored, but they change the shape: not droppable
    assert set(sets["half"]) < set(sets["all"]) and len(sets["half"]) == -(-len(sets["all"]) // 2)
    rest = set(sets["all"]) - set(sets["half"])
    assert min(saving[i] for i in sets["half"]) >= max(saving[i] for i in rest)


def test_the_probe_leaves_gates_and_random_stream_as_they_were():
    from deploykit.models import create_model
    from deploykit.prune import prunable

    torch.manual_seed(0)
    net = prunable(create_model("resnet18", num_classes=3), input_size=32).prune((1, 3))
    net.set_progress(0.25)
    loader = [(torch.randn(4, 3, 32, 32), torch.tensor([0, 1, 2, 0]))]
    probe = rec.Probe([0, 5], loader)
    net.train()
    state = torch.random.get_rng_state()
    probe(3, net)  # not a probe step: nothing measured
    probe(5, net)
    assert [row["step"] for row in probe.rows] == [5]
    assert probe.rows[0]["lam"] == 0.25 and 0.0 <= probe.rows[0]["top1"] <= 100.0
    assert net.progress() == {1: 0.25, 3: 0.25} and net.training
    assert torch.equal(torch.random.get_rng_state(), state)


@pytest.mark.slow
def test_the_smoke_mode_writes_curves_summaries_and_resumes(tmp_path, capsys):
    argv = ["--quick", "--sets", "half", "--methods", "progressive", "abrupt",
            "--runs", str(tmp_path / "runs"), "--results", str(tmp_path / "res")]
    assert rec.main(argv) == 0
    res = tmp_path / "res"
    runs = pd.read_csv(res / "recovery_runs.csv")
    assert set(runs["method"]) == {"progressive", "abrupt"} and set(runs["set"]) == {"half"}
    for _, run in runs.groupby("method"):
        assert run["step"].tolist() == [0, 4, 8] and run["is_end"].tolist() == [False, False, True]
        assert run["top1"].between(0, 100).all() and run["original_top1"].nunique() == 1
    progressive = runs[runs["method"] == "progressive"]
    assert progressive["lam"].iloc[0] < 1.0 and (runs[runs["method"] == "abrupt"]["lam"] == 1.0).all()
    assert {"machine", "torch", "study_command", "settings"} <= set(runs.columns)
    figures = pd.read_csv(res / "recovery_auc.csv")
    assert len(figures) == 2 and (figures["n"] == 1).all()
    for _, row in figures.iterrows():
        curve = runs[runs["method"] == row["method"]]["top1"]
        assert curve.min() - 1e-9 <= row["auc_mean"] <= curve.max() + 1e-9
    assert len(pd.read_csv(res / "recovery_summary.csv")) == 6
    for name in ("recovery.png", "recovery_auc.png"):
        assert (res / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    original = json.loads((tmp_path / "runs" / "originals" / "convnext_atto" / "seed0" / "original.json")
                          .read_text())
    assert original["epochs"] == 1 and (tmp_path / "runs" / "originals" / "convnext_atto" / "seed0" /
                                        "model.pt").is_file()
    before = (res / "recovery_runs.csv").read_text()
    assert rec.main(argv) == 0  # everything done: nothing reruns
    assert (res / "recovery_runs.csv").read_text() == before
    with pytest.raises(SystemExit, match="other settings"):
        rec.main([*argv, "--steps", "12"])
