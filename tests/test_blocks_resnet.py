"""ResNet BasicBlock / Bottleneck: λ = 0 reproduces the model, λ = 1 merges exactly (docs/method.md).

Most checks run on narrow variants (``channels=NARROW``): the same blocks, strides and shortcuts as
the real model at a fraction of the cost; resnet18 also merges at full width (fp32 rounding at real
channel counts). resnet50/50d/18d at full width were checked once by hand; they cost minutes.
"""

import pytest
import torch
from family_checks import check_lambda0, check_merge_exact, check_onnx, make

from deploykit.errors import ModelError

NARROW = {"channels": (8, 16, 32, 64), "stem_width": 8}
MODELS = ["resnet18", "resnet26", "resnet34", "resnet50", "resnet18d", "resnet50d"]


@pytest.mark.parametrize("model_name", MODELS)
def test_lambda0_reproduces_original(model_name):
    # resnet18d also runs stochastic depth: the pruned form draws the same random masks.
    extra = {"drop_path_rate": 0.2} if model_name == "resnet18d" else {}
    check_lambda0(model_name, (64, 64), **NARROW, **extra)


# Each model merges at one size; each block type with each shortcut kind (identity, strided 1×1
# projection, "-d" 2×2 avg pool + 1×1; stride 1 and 2) at a square and a non-square size.
@pytest.mark.parametrize(("model_name", "size"), [
    ("resnet18", (64, 64)), ("resnet34", (96, 128)),                          # BasicBlock, plain
    ("resnet18d", (64, 64)), ("resnet18d", (96, 128)),                        # BasicBlock, -d
    ("resnet26", (64, 64)), ("resnet50", (96, 128)),                          # Bottleneck, plain
    ("resnet50d", (64, 64)), ("resnet26d", (96, 128)),                        # Bottleneck, -d
])
def test_merge_is_exact(model_name, size):
    check_merge_exact(model_name, size, **NARROW)


def test_merge_is_exact_at_full_width():
    check_merge_exact("resnet18", (64, 64))


def test_merge_is_exact_at_odd_sizes_with_conv_shortcuts():
    # A strided 1×1 projection (unlike the avg pool) is exact at odd sizes: 65 → 17 → 9 → 5 → 3.
    check_merge_exact("resnet18", (65, 97), **NARROW)


def test_merge_is_exact_for_grouped_and_3x3_shortcut_variants():
    check_merge_exact("resnet26", (64, 64), cardinality=4, **NARROW)    # ResNeXt: grouped 3×3
    check_merge_exact("resnet18", (64, 96), down_kernel_size=3, **NARROW)   # 3×3 stride-2 projection


def test_onnx_matches_pytorch(tmp_path):
    check_onnx("resnet18d", (64, 96), tmp_path, **NARROW)


def test_odd_size_refuses_only_the_avg_pool_shortcut_blocks():
    _, net = make("resnet18d", (65, 65), **NARROW)
    refused = {info.name: info.reason for info in net.blocks if not info.prunable}
    assert sorted(refused) == ["layer2.0", "layer3.0", "layer4.0"]
    for name, reason in refused.items():
        height = dict((info.name, info.in_shape[1]) for info in net.blocks)[name]
        assert f"odd input size {height}×{height}" in reason
    assert len(net.prunable_indices) == len(net.blocks) - 3
    # the remaining blocks still merge exactly at this size
    check_merge_exact("resnet18d", (65, 65), **NARROW)


def test_se_blocks_are_refused_with_the_reason():
    with pytest.raises(ModelError, match="no prunable block: attention layer SEModule"):
        make("seresnet50", (64, 64), **NARROW)


def _refusals(model_name, size=(64, 64), **kwargs) -> list[str]:
    try:
        _, net = make(model_name, size, **NARROW, **kwargs)
    except ModelError as error:
        return [str(error)]
    return [info.reason for info in net.blocks if not info.prunable]


@pytest.mark.parametrize(("model_name", "kwargs", "reason"), [
    ("resnetblur18", {}, "anti-aliasing layer BlurPool2d"),
    ("ecaresnet26t", {}, "attention layer EcaModule"),
    ("resnet18", {"output_stride": 8}, "conv1 is dilated"),
    ("resnet50", {"drop_block_rate": 0.1}, "DropBlock"),
    ("resnet18", {"norm_layer": "groupnorm1"}, "bn1 is a GroupNorm1, not a plain BatchNorm2d"),
])
def test_unsupported_variants_give_a_reason(model_name, kwargs, reason):
    reasons = _refusals(model_name, **kwargs)
    assert any(reason in r for r in reasons), reasons


def test_merged_macs_are_one_conv():
    _, net = make("resnet18", (64, 64), **NARROW)
    basic = next(i for i in net.blocks if i.name == "layer2.0")  # 8 → 16, stride 2, 16×16 → 8×8
    assert basic.in_shape == (8, 16, 16) and basic.out_shape == (16, 8, 8)
    assert basic.merged_macs == 16 * 8 * 7 * 7 * 8 * 8
    _, net = make("resnet50", (64, 96), **NARROW)
    neck = next(i for i in net.blocks if i.name == "layer3.0")  # 64 → 128, stride 2, 8×12 → 4×6
    assert neck.in_shape == (64, 8, 12) and neck.out_shape == (128, 4, 6)
    assert neck.merged_macs == 128 * 64 * 3 * 3 * 4 * 6
    merged = net.wrapper(neck.index).merged()
    assert [type(m) for m in merged] == [torch.nn.Conv2d, torch.nn.ReLU, torch.nn.BatchNorm2d]
    assert merged[0].kernel_size == (3, 3) and merged[0].stride == (2, 2) and merged[0].padding == (1, 1)


def test_training_at_intermediate_lambda_backpropagates():
    _, net = make("resnet18d", (64, 64), **NARROW)
    net.prune(net.prunable_indices).set_progress(0.5).train()
    x = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    net(x).square().mean().backward()
    wrapper = net.wrapper(net.prunable_indices[2])
    grad = wrapper.block.conv1.weight.grad
    assert grad is not None and torch.isfinite(grad).all()
    assert wrapper.post_norm.new.weight.grad is not None
