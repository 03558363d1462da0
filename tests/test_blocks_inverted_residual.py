import re

import pytest
import torch
from family_checks import check_lambda0, check_merge_exact, check_onnx, make, randomize_, rel_error
from timm.layers import BatchNormAct2d
from timm.models._efficientnet_blocks import (
    CondConvResidual,
    DepthwiseSeparableConv,
    InvertedResidual,
    SqueezeExcite,
)
from torch import nn

from deploykit import prunable
from deploykit.blocks.inverted_residual import DepthwiseSeparablePrunable, InvertedResidualPrunable
from deploykit.errors import ModelError

SIZES = [(64, 64), (96, 128)]


@pytest.mark.parametrize("model_name", ["mobilenetv2_050", "efficientnet_lite0"])
def test_lambda0_reproduces_original(model_name):
    check_lambda0(model_name, (64, 64))


@pytest.mark.parametrize("model_name", ["mobilenetv2_050", "mobilenetv2_100", "efficientnet_lite0",
                                        "efficientnet_lite1"])
@pytest.mark.parametrize("size", SIZES)
def test_merge_is_exact(model_name, size):
    check_merge_exact(model_name, size)


def test_onnx_matches_pytorch(tmp_path):
    check_onnx("mobilenetv2_050", (64, 96), tmp_path)


def test_every_block_of_the_lite_models_is_prunable_and_covers_k5_and_stride2():
    _, net = make("efficientnet_lite0", (64, 64))
    assert all(info.prunable for info in net.blocks), [i.reason for i in net.blocks if not i.prunable]
    blocks = [net.wrapper(i).block for i in net.prunable_indices]
    kinds = {(type(b).__name__, b.conv_dw.kernel_size[0], b.conv_dw.stride[0], b.has_skip) for b in blocks}
    assert {("InvertedResidual", 5, 2, False), ("InvertedResidual", 3, 2, False),
            ("InvertedResidual", 5, 1, True), ("DepthwiseSeparableConv", 3, 1, False)} <= kinds


def test_merged_macs_are_one_dense_conv():
    _, net = make("mobilenetv2_050", (64, 96))
    for index in net.prunable_indices:
        info, block = net.blocks[index], net.wrapper(index).block
        c_out, h_out, w_out = info.out_shape
        k = block.conv_dw.kernel_size[0]
        assert info.merged_macs == c_out * info.in_shape[0] * k * k * h_out * w_out, info
    # A stride-2 block with a channel change: no shortcut, one dense 3×3 stride-2 conv → ReLU6 → BN.
    index = next(i for i in net.prunable_indices if net.wrapper(i).block.conv_dw.stride[0] == 2)
    merged = net.wrapper(index).merged()
    conv, act, bn = merged
    assert type(conv) is nn.Conv2d and conv.stride == (2, 2) and conv.padding == (1, 1) and conv.groups == 1
    assert type(act) is nn.ReLU6 and type(bn) is nn.BatchNorm2d


def test_squeeze_excite_models_are_refused_with_the_reason():
    with pytest.raises(ModelError, match="no prunable block: squeeze-excite is not linear"):
        make("efficientnet_b0", (64, 64))


def _ir(**kwargs):
    args = dict(in_chs=16, out_chs=16, act_layer=nn.ReLU6, norm_layer=nn.BatchNorm2d)
    return InvertedResidual(**{**args, "exp_ratio": 4.0, **kwargs})


def _ds(**kwargs):
    args = dict(in_chs=16, out_chs=16, act_layer=nn.ReLU6, norm_layer=nn.BatchNorm2d)
    return DepthwiseSeparableConv(**{**args, **kwargs})


@pytest.mark.parametrize("block, reason", [
    (_ir(se_layer=SqueezeExcite), "squeeze-excite is not linear"),
    (_ds(se_layer=SqueezeExcite), "squeeze-excite is not linear"),
    (_ir(stride=2, pad_type="same"), "TF 'same' padding"),
    (_ds(stride=2, pad_type="same"), "TF 'same' padding"),
    (_ir(dilation=2), "dilated"),
    (_ir(exp_kernel_size=3), "kernel 3 > 1"),
    (_ir(pw_kernel_size=3), "kernel 3 > 1"),
    (_ir(stride=2, aa_layer="avg"), "anti-aliased"),
    (_ir(s2d=1), "space-to-depth"),
    (_ds(s2d=1), "space-to-depth"),
    (CondConvResidual(16, 16, exp_ratio=4.0, num_experts=4), "CondConv"),
])
def test_unsupported_blocks_are_refused(block, reason):
    ds = isinstance(block, DepthwiseSeparableConv)
    wrapper = DepthwiseSeparablePrunable if ds else InvertedResidualPrunable
    found = wrapper.unsupported_reason(block, (16, 16, 16))
    assert found is not None and reason in found, found


def test_dropout_inside_the_norm_is_refused():
    block = _ir()
    block.bn2 = BatchNormAct2d(block.bn2.num_features, act_layer=nn.ReLU6, drop_layer=nn.Dropout)
    assert "Dropout" in InvertedResidualPrunable.unsupported_reason(block, (16, 16, 16))


def test_tf_same_padding_refuses_only_the_strided_blocks():
    for model_name in ("tf_efficientnet_lite0",):
        _, net = make(model_name, (64, 64))
        for info in net.blocks:
            block = net.model.get_submodule(info.name)
            block = getattr(block, "block", block)
            strided = block.conv_dw.stride[0] == 2
            assert info.prunable != strided, info
            assert not strided or "TF 'same' padding" in info.reason


class _Toy(nn.Module):
    """Every branch of the family: DS with skip and pw act, DS ending in its act, k5, grouped dw, ReLU."""

    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(3, 16, 3, padding=1)
        self.blocks = nn.Sequential(
            _ds(pw_act=True),                                     # skip, inner pw act is blended away
            _ds(dw_kernel_size=5),                                # skip, no pw act
            _ds(out_chs=24, stride=2, pw_act=True, act_layer=nn.ReLU),  # ends in its act: only BN appended
            _ir(in_chs=24, out_chs=24, dw_kernel_size=5),         # k5 skip
            _ir(in_chs=24, out_chs=32, group_size=4, stride=2),   # grouped (not depthwise) k3 stride 2
            _ir(in_chs=32, out_chs=32, exp_ratio=1.0, dw_kernel_size=1),  # 1×1 "dw": no ring at all
        )

    def forward(self, x):
        return self.blocks(self.stem(x))


def _toy(size):
    torch.manual_seed(0)
    model = randomize_(_Toy(), seed=0)
    with torch.no_grad():   # biased convs, so the ring carries more than the BN shift
        model.blocks[3].conv_pw.bias = nn.Parameter(torch.randn(model.blocks[3].conv_pw.out_channels))
    return model, prunable(model, input_size=size)


def _original_buffers(net):
    return {re.sub(r"\.block\.", ".", name): buf for name, buf in net.model.named_buffers()}


@pytest.mark.parametrize("size", [(17, 22), (32, 32)])
def test_toy_lambda0_matches_in_train_and_eval_with_running_stats(size):
    model, net = _toy(size)
    assert net.prunable_indices == tuple(range(6))
    net.prune(net.prunable_indices)
    x = torch.randn(2, 3, *size, generator=torch.Generator().manual_seed(1))
    for training in (True, False, True):
        model.train(training)
        net.train(training)
        expected, actual = model(x), net(x)
        assert rel_error(expected, actual) <= 1e-6, (training, rel_error(expected, actual))
    actual_buffers = _original_buffers(net)
    for name, buf in model.named_buffers():
        assert torch.allclose(buf.float(), actual_buffers[name].float(), rtol=1e-6, atol=1e-7), name
    # gradients flow in train mode through the ring statistics as well
    net.train().set_progress(0.5)
    net(x).square().mean().backward()
    assert net.model.blocks[3].block.conv_pw.weight.grad is not None


@pytest.mark.parametrize("size", [(17, 22), (32, 32)])
def test_toy_merge_is_exact(size):
    for dtype, tol in ((torch.float32, 1e-4), (torch.float64, 1e-9)):
        _, net = _toy(size)
        net.prune(net.prunable_indices).set_progress(1.0)
        randomize_(net, seed=3)
        net = net.to(dtype).eval()
        merged = net.merge()
        x = torch.randn(2, 3, *size, dtype=dtype, generator=torch.Generator().manual_seed(4))
        with torch.no_grad():
            assert rel_error(net(x), merged(x)) <= tol, (dtype, rel_error(net(x), merged(x)))
        # the block that ends in its own activation keeps it and gets only a BN
        assert [type(m) for m in merged.blocks[2]] == [nn.Conv2d, nn.ReLU, nn.BatchNorm2d]
        assert merged.blocks[4][0].kernel_size == (3, 3) and merged.blocks[4][0].stride == (2, 2)


