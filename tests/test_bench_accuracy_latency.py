"""The pure helpers of bench/accuracy_latency.py and bench/tp_prune.py: the drop-set rule, the latency
bisection, and Torch-Pruning on the two study models (ConvNeXt's layer scale as unwrapped parameters)."""

from __future__ import annotations

import importlib.util
import math
import sys
from pathlib import Path

import pytest

from deploykit.latency.table import LatencyTable

ROOT = Path(__file__).resolve().parents[1]


def _load(name: str):
    spec = importlib.util.spec_from_file_location(f"bench_{name}", ROOT / "bench" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while the file executes
    spec.loader.exec_module(module)
    return module


al = _load("accuracy_latency")
tp = _load("tp_prune")


# --- the drop set ----------------------------------------------------------------------------------

BLOCKS = {0: 1.0, 1: 1.0, 2: 2.0, 3: 3.0}  # original-form latency of the shape-preserving blocks, ms


def test_drop_set_prefers_fewest_blocks():
    # total 10 ms (3 fixed + 7 in blocks); budget 7 ms: block 3 alone saves enough, 0+2 would too
    choice = al.choose_drop_set(BLOCKS, rest_ms=3.0, budget_ms=7.0)
    assert choice.dropped == (3,) and choice.fits
    assert choice.predicted_ms == pytest.approx(7.0)


def test_drop_set_ties_go_to_the_least_sensitive_then_the_fastest():
    # budget 8 ms: any one of blocks 2, 3 fits; block 3 is more sensitive
    sensitivity = {0: 0.0, 1: 0.0, 2: 0.5, 3: 0.1}
    assert al.choose_drop_set(BLOCKS, rest_ms=3.0, budget_ms=8.0, sensitivity=sensitivity).dropped == (3,)
    sensitivity[3] = 0.9
    assert al.choose_drop_set(BLOCKS, rest_ms=3.0, budget_ms=8.0, sensitivity=sensitivity).dropped == (2,)
    # equal sensitivity: the lower prediction wins (block 3 saves more)
    assert al.choose_drop_set(BLOCKS, rest_ms=3.0, budget_ms=8.0).dropped == (3,)
    # budget 5.5 ms needs 4.5 ms saved: no single block, and of the pairs only {2, 3}, however sensitive
    choice = al.choose_drop_set(BLOCKS, rest_ms=3.0, budget_ms=5.5, sensitivity={0: 0, 1: 0, 2: 1, 3: 1})
    assert choice.dropped == (2, 3) and choice.predicted_ms == pytest.approx(5.0)


def test_drop_set_applies_the_table_calibration():
    # calibrated prediction = 0.5 · Σ + 1: unpruned 6 ms; a budget of 5 ms needs Σ ≤ 8 (2 ms saved),
    # which block 2 or 3 alone gives; uncalibrated, 5 ms would need 5 ms saved (two blocks)
    choice = al.choose_drop_set(BLOCKS, rest_ms=3.0, budget_ms=5.0, calibration=(0.5, 1.0),
                                sensitivity={2: 0.1, 3: 0.2})
    assert choice.dropped == (2,) and choice.predicted_ms == pytest.approx(5.0)
    assert len(al.choose_drop_set(BLOCKS, rest_ms=3.0, budget_ms=5.0).dropped) == 2


def test_drop_set_out_of_reach_drops_every_candidate():
    choice = al.choose_drop_set(BLOCKS, rest_ms=3.0, budget_ms=2.0)
    assert not choice.fits and choice.dropped == (0, 1, 2, 3)
    assert choice.predicted_ms == pytest.approx(3.0)


def test_shape_preserving_blocks_of_a_shipped_table():
    table = LatencyTable.read(ROOT / "latency_tables" / "cpu-ort" / "resnet34_224_b1.csv")
    blocks = al.shape_preserving(table)
    # resnet34: the first block of layer2, layer3 and layer4 (3, 7, 13) changes the shape
    assert sorted(blocks) == [i for i in range(16) if i not in (3, 7, 13)]
    assert blocks[0] == pytest.approx(table.block_latency(0))


# --- the bisection ---------------------------------------------------------------------------------

def _latency(rate: float = 2.0):
    """A fake monotone latency relative to the target: 1.6 at ratio 0, falling as 1.6·exp(−rate·ratio)
    (on target at ratio ln(1.6)/rate ≈ 0.235 for rate 2)."""
    calls = []

    def relative_at(ratio: float) -> float:
        calls.append(ratio)
        return 1.6 * math.exp(-rate * ratio)

    return relative_at, calls


def test_bisection_reaches_the_target_within_tolerance():
    relative_at, calls = _latency()
    found = tp.bisect_ratio(relative_at, high=0.9, tolerance=0.05, max_steps=8)
    assert found.within and found.reachable
    assert abs(found.relative - 1.0) <= 0.05 and found.ratio == pytest.approx(math.log(1.6) / 2, abs=0.03)
    assert calls[0] == 0.9 and len(calls) <= 8 and len(found.points) == len(calls)


def test_bisection_out_of_reach_returns_the_largest_ratio():
    relative_at, calls = _latency(rate=0.1)  # 1.46 at ratio 0.9: never fast enough
    found = tp.bisect_ratio(relative_at, high=0.9, tolerance=0.05, max_steps=8)
    assert not found.reachable and not found.within and found.ratio == 0.9 and calls == [0.9]


def test_bisection_stops_after_max_steps_with_the_closest_point():
    relative_at, calls = _latency()
    found = tp.bisect_ratio(relative_at, high=0.9, tolerance=1e-6, max_steps=3)
    assert len(calls) == 3 and not found.within
    closest = min(calls, key=lambda r: abs(math.log(1.6) - 2.0 * r))
    assert found.ratio == closest


def test_bisection_rejects_bad_bounds():
    with pytest.raises(ValueError):
        tp.bisect_ratio(lambda r: 1.0, low=0.5, high=0.4)


# --- Torch-Pruning on the study's models -------------------------------------------------------------

@pytest.mark.parametrize("name, gammas", [("convnext_atto", 12), ("resnet18", 0)])
def test_channel_pruning_of_the_study_models(name, gammas):
    pytest.importorskip("torch_pruning")
    import torch

    from deploykit.models import create_model

    model = create_model(name, num_classes=10).eval()
    assert len(tp.unwrapped_parameters(model)) == gammas
    params = sum(p.numel() for p in model.parameters())
    pruned = tp.channel_prune(model, ratio=0.5, input_size=(32, 32), round_to=8)
    assert sum(p.numel() for p in pruned.parameters()) < 0.6 * params
    convs = [m for m in pruned.modules() if isinstance(m, torch.nn.Conv2d)]
    assert all(m.out_channels % 8 == 0 for m in convs)  # rounded: onnxruntime's blocked kernels want it
    assert sum(p.numel() for p in model.parameters()) == params  # the original is left alone
    with torch.no_grad():
        assert pruned(torch.zeros(2, 3, 32, 32)).shape == (2, 10)
    assert pruned.get_classifier().out_features == 10


def test_pruned_model_file_rebuilds_the_same_model_without_unpickling(tmp_path):
    pytest.importorskip("torch_pruning")
    import torch

    from deploykit.errors import ModelError
    from deploykit.models import create_model

    torch.manual_seed(0)
    base = create_model("resnet18", num_classes=10).eval()
    pruned = tp.channel_prune(base, ratio=0.3, input_size=(32, 32), round_to=8)
    recipe = {"ratio": 0.3, "input_size": [32, 32], "max_layer_ratio": 0.9, "round_to": 8}
    path = tp.save_pruned(pruned, tmp_path / "pruned.safetensors", recipe)
    rebuilt = tp.load_pruned(path, base).eval()
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(rebuilt(x), pruned(x))
    tp.save_pruned(pruned, tmp_path / "other.safetensors", {**recipe, "ratio": 0.5})
    with pytest.raises(ModelError, match="does not fit the baseline pruned by its recipe"):
        tp.load_pruned(tmp_path / "other.safetensors", base)


def test_quick_defaults_and_explicit_flags():
    args = al.parse_args(["--quick", "--models", "resnet18"])
    assert args.models == ["resnet18"] and args.data == ["digits"] and args.seeds == [0]
    assert args.epochs == 1 and args.train_limit == 256 and args.protocol == al.QUICK_PROTOCOL
    assert args.runs.name == "accuracy_latency_quick" and args.results.name == "quick"
    full = al.parse_args([])
    assert full.models == list(al.MODELS) and full.seeds == [0, 1, 2] and full.epochs == 2
    assert full.baseline_epochs == 4 and full.protocol == al.FULL_PROTOCOL and full.train_limit is None
