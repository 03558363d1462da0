import copy

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from deploykit.blocks.blend import Blend, appended, pointwise_with_ring, ring_batch_norm, scale_ring


def test_blend_endpoints_and_midpoint():
    blend = Blend(nn.ReLU(), nn.Identity())
    x = torch.randn(4, 5)
    assert torch.equal(blend(x), F.relu(x))
    blend.lam = 1.0
    assert torch.equal(blend(x), x)
    blend.lam = 0.25
    assert torch.allclose(blend(x), 0.75 * F.relu(x) + 0.25 * x)


def test_appended_op_starts_as_identity():
    op = appended(nn.GELU())
    x = torch.randn(3, 3)
    assert torch.equal(op(x), x)


def test_scale_ring_keeps_the_grid():
    x = torch.ones(1, 2, 6, 7)
    y = scale_ring(x, 1, 0.0)
    assert torch.equal(y[..., 1:-1, 1:-1], x[..., 1:-1, 1:-1])
    assert y[..., 0, :].abs().sum() == 0 and y[..., :, -1].abs().sum() == 0
    assert torch.equal(scale_ring(x, 1, 1.0), x)


@pytest.mark.parametrize("momentum", [0.1, None])
def test_ring_batch_norm_train_matches_bn_on_grid(momentum):
    torch.manual_seed(0)
    bn = nn.BatchNorm2d(3, momentum=momentum).train()
    reference = copy.deepcopy(bn)
    x = torch.randn(4, 3, 10, 12) * 3 + 1
    grid = x[..., 2:-2, 2:-2].contiguous()  # what the original model's BN sees: a dense map
    for _ in range(2):
        out = ring_batch_norm(bn, x, 2)
        expected = reference(grid)
    assert torch.equal(out[..., 2:-2, 2:-2], expected)
    assert torch.equal(bn.running_mean, reference.running_mean)
    assert torch.equal(bn.running_var, reference.running_var)
    assert bn.num_batches_tracked == reference.num_batches_tracked == 2
    # The ring uses the grid's statistics and the same affine.
    mean, var = grid.mean((0, 2, 3)), grid.var((0, 2, 3), unbiased=False)
    ring = (x[..., 0, :] - mean[:, None]) / torch.sqrt(var[:, None] + bn.eps) * bn.weight[:, None] \
        + bn.bias[:, None]
    assert torch.allclose(out[..., 0, :], ring, atol=1e-5)


def test_ring_batch_norm_eval_is_plain_bn():
    bn = nn.BatchNorm2d(3).eval()
    bn.running_mean.normal_()
    x = torch.randn(2, 3, 6, 6)
    assert torch.allclose(ring_batch_norm(bn, x, 1), bn(x))


def test_ring_batch_norm_trains_with_gradients():
    bn = nn.BatchNorm2d(3).train()
    x = torch.randn(2, 3, 8, 8, requires_grad=True)
    ring_batch_norm(bn, x, 1).square().sum().backward()
    assert x.grad is not None and bn.weight.grad is not None and torch.isfinite(x.grad).all()


def test_pointwise_with_ring_equals_conv_of_padded_input():
    conv = nn.Conv2d(3, 5, 1)
    x = torch.randn(2, 3, 6, 7)
    expected = conv(F.pad(x, (2, 2, 2, 2)))
    actual = pointwise_with_ring(conv, x, 2)
    assert torch.allclose(actual, expected, atol=1e-6)
    assert torch.equal(actual[..., 2:-2, 2:-2], conv(x))
