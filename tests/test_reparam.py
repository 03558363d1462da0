"""Exactness of every re-parameterization function on randomized BatchNorm statistics (docs/method.md)."""

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from deploykit import reparam

TOLERANCE = {torch.float64: 1e-9, torch.float32: 1e-5}
DTYPES = list(TOLERANCE)


def rel(expected, actual):
    return ((expected - actual).abs().max() / expected.abs().max()).item()


def random_bn(channels, dtype, seed=0):
    gen = torch.Generator().manual_seed(seed)
    bn = nn.BatchNorm2d(channels, eps=1e-5).to(dtype).eval()
    with torch.no_grad():
        bn.running_mean.copy_(torch.randn(channels, generator=gen, dtype=dtype))
        bn.running_var.copy_(torch.rand(channels, generator=gen, dtype=dtype) * 2 + 0.1)
        bn.weight.copy_(torch.randn(channels, generator=gen, dtype=dtype))
        bn.bias.copy_(torch.randn(channels, generator=gen, dtype=dtype))
    return bn


def randn(*shape, dtype, seed=1):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("kernel,groups", [(1, 1), (3, 1), (7, 8), (3, 4)])
def test_fold_bn_into_conv(dtype, kernel, groups):
    conv = nn.Conv2d(8, 16, kernel, padding=kernel // 2, groups=groups).to(dtype)
    bn = random_bn(16, dtype)
    weight, bias = reparam.fold_bn(conv.weight, conv.bias, bn.running_mean, bn.running_var, bn.weight,
                                   bn.bias, bn.eps)
    x = randn(2, 8, 9, 11, dtype=dtype)
    expected = bn(conv(x))
    actual = F.conv2d(x, weight, bias, padding=kernel // 2, groups=groups)
    assert rel(expected, actual) <= TOLERANCE[dtype]


@pytest.mark.parametrize("dtype", DTYPES)
def test_fold_bn_into_linear_without_bias(dtype):
    linear = nn.Linear(12, 6, bias=False).to(dtype)
    bn = random_bn(6, dtype)
    weight, bias = reparam.fold_bn(linear.weight, None, bn.running_mean, bn.running_var, bn.weight,
                                   bn.bias, bn.eps)
    x = randn(5, 12, dtype=dtype)
    expected = F.batch_norm(linear(x), bn.running_mean, bn.running_var, bn.weight, bn.bias, False, 0, bn.eps)
    assert rel(expected, F.linear(x, weight, bias)) <= TOLERANCE[dtype]


@pytest.mark.parametrize("dtype", DTYPES)
def test_fold_affine_before_linear_and_1x1(dtype):
    bn = random_bn(6, dtype)
    scale, shift = reparam.bn_affine(bn.running_mean, bn.running_var, bn.weight, bn.bias, bn.eps)
    linear = nn.Linear(6, 4).to(dtype)
    weight, bias = reparam.fold_affine_before(linear.weight, linear.bias, scale, shift)
    x = randn(3, 6, dtype=dtype)
    assert rel(linear(x * scale + shift), F.linear(x, weight, bias)) <= TOLERANCE[dtype]
    conv = nn.Conv2d(6, 4, 1).to(dtype)
    weight, bias = reparam.fold_affine_before(conv.weight, conv.bias, scale, shift)
    x = randn(2, 6, 5, 5, dtype=dtype)
    assert rel(conv(bn(x)), F.conv2d(x, weight, bias)) <= TOLERANCE[dtype]
    with pytest.raises(ValueError, match="1×1"):
        reparam.fold_affine_before(torch.zeros(4, 6, 3, 3), None, scale, shift)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("k1,s1,g1,k2,s2,g2", [
    (3, 1, 1, 3, 1, 1),    # BasicBlock stride 1 → 5×5
    (3, 2, 1, 3, 1, 1),    # BasicBlock stride 2 → 7×7
    (1, 1, 1, 3, 2, 1),    # Bottleneck: 1×1 then strided 3×3
    (1, 1, 1, 5, 1, 12),   # inverted residual: 1×1 expansion then depthwise 5×5
    (3, 1, 12, 1, 1, 1),   # depthwise then pointwise
    (7, 1, 12, 1, 1, 1),   # ConvNeXt dw 7×7 then 1×1
    (3, 1, 12, 3, 2, 12),  # depthwise ∘ depthwise keeps its groups
    (3, 1, 3, 3, 1, 3),    # grouped ∘ grouped
    (1, 1, 1, 3, 2, 12),   # 1×1 then strided depthwise
    (1, 1, 1, 1, 1, 1),    # 1×1 ∘ 1×1
    (5, 2, 12, 1, 1, 1),   # strided depthwise then 1×1
    (1, 2, 1, 3, 1, 1),    # strided 1×1 then 3×3: kernel with holes, the general path
])
def test_compose_convs(dtype, k1, s1, g1, k2, s2, g2):
    in_ch = 12
    mid = 12
    first = nn.Conv2d(in_ch, mid, k1, stride=s1, groups=g1).to(dtype)
    second = nn.Conv2d(mid, 12, k2, stride=s2, groups=g2).to(dtype)
    weight, bias = reparam.compose_convs(first.weight, first.bias, second.weight, second.bias,
                                         first_stride=s1, first_groups=g1, second_groups=g2)
    groups = g1 if g1 == g2 else 1
    assert weight.shape[-1] == reparam.composed_kernel_size([k1, k2], [s1, s2])
    x = randn(2, in_ch, 17, 14, dtype=dtype)
    expected = second(first(x))
    actual = F.conv2d(x, weight, bias, stride=s1 * s2, groups=groups)
    assert actual.shape == expected.shape
    assert rel(expected, actual) <= TOLERANCE[dtype]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("stride", [1, 2])
def test_padded_chain_equals_composed_conv_with_total_padding(dtype, stride):
    """Zero-padding the input once by the total padding makes the composition exact at the borders
    when the inner map is computed unpadded (what the pruned form's ring reproduces at λ = 1)."""
    first = nn.Conv2d(4, 6, 3, stride=stride).to(dtype)
    second = nn.Conv2d(6, 5, 3).to(dtype)
    padding = reparam.total_padding([3, 3], [stride, 1], [1, 1])
    assert padding == 1 + stride
    weight, bias = reparam.compose_convs(first.weight, first.bias, second.weight, second.bias,
                                         first_stride=stride)
    x = randn(2, 4, 12, 10, dtype=dtype)
    expected = second(first(F.pad(x, (padding,) * 4)))
    actual = F.conv2d(x, weight, bias, stride=stride, padding=padding)
    assert rel(expected, actual) <= TOLERANCE[dtype]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("stride", [1, 2])
def test_add_identity_and_projection_shortcut(dtype, stride):
    conv = nn.Conv2d(6, 6, 5, stride=stride, padding=2).to(dtype)
    x = randn(2, 6, 10, 12, dtype=dtype)
    if stride == 1:
        weight, bias = reparam.add_shortcut(conv.weight, conv.bias, reparam.identity_kernel(6, dtype=dtype),
                                            None, offset=2)
        expected = conv(x) + x
    else:
        proj = nn.Conv2d(6, 6, 1, stride=2, bias=False).to(dtype)
        bn = random_bn(6, dtype)
        pw, pb = reparam.fold_bn(proj.weight, None, bn.running_mean, bn.running_var, bn.weight, bn.bias,
                                 bn.eps)
        weight, bias = reparam.add_shortcut(conv.weight, conv.bias, pw, pb, offset=2)
        expected = conv(x) + bn(proj(x))
    actual = F.conv2d(x, weight, bias, stride=stride, padding=2)
    assert rel(expected, actual) <= TOLERANCE[dtype]


@pytest.mark.parametrize("dtype", DTYPES)
def test_avg_pool_shortcut_on_even_input(dtype):
    proj = nn.Conv2d(4, 8, 1, bias=False).to(dtype)
    pool = nn.AvgPool2d(2, 2, ceil_mode=True, count_include_pad=False)
    kernel = reparam.avg_pool_kernel(proj.weight, 2)
    x = randn(2, 4, 8, 6, dtype=dtype)
    assert rel(proj(pool(x)), F.conv2d(x, kernel, stride=2)) <= TOLERANCE[dtype]


@pytest.mark.parametrize("dtype", DTYPES)
def test_compose_linears_and_fold_scale(dtype):
    fc1, fc2 = nn.Linear(8, 32).to(dtype), nn.Linear(32, 8).to(dtype)
    gamma = randn(8, dtype=dtype, seed=3)
    weight, bias = reparam.compose_linears(fc1.weight, fc1.bias, fc2.weight, fc2.bias)
    weight, bias = reparam.fold_scale(weight, bias, gamma)
    x = randn(4, 8, dtype=dtype)
    assert rel(fc2(fc1(x)) * gamma, F.linear(x, weight, bias)) <= TOLERANCE[dtype]


def test_dense_and_grouped_kernel_round_trip():
    weight = torch.randn(12, 3, 3, 3)
    dense = reparam.dense_kernel(weight, 4)
    assert dense.shape == (12, 12, 3, 3)
    assert torch.equal(reparam.grouped_kernel(dense, 4), weight)
    x = torch.randn(1, 12, 7, 7)
    assert torch.allclose(F.conv2d(x, weight, groups=4), F.conv2d(x, dense), atol=1e-6)


def test_embed_kernel_refuses_what_does_not_fit():
    with pytest.raises(ValueError, match="does not fit"):
        reparam.embed_kernel(torch.zeros(2, 2, 3, 3), 3, 1)


def test_functions_leave_inputs_untouched():
    weight, bias = torch.randn(4, 4, 3, 3), torch.randn(4)
    before = weight.clone(), bias.clone()
    reparam.fold_scale(weight, bias, torch.rand(4))
    reparam.add_shortcut(weight, bias, reparam.identity_kernel(4), None, offset=1)
    assert torch.equal(weight, before[0]) and torch.equal(bias, before[1])
