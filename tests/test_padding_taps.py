"""Training convs that skip padding-only kernel taps compute the same outputs and gradients."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from deploykit.models import create_model
from deploykit.training.padding_taps import is_eligible, skip_padding_taps, useful_reach


def test_useful_reach_counts_the_taps_that_touch_the_input():
    assert [useful_reach(3, size) for size in (1, 2, 3, 4, 8)] == [0, 1, 2, 3, 3]
    assert useful_reach(0, 1) == 0


@pytest.mark.parametrize("conv, eligible", [
    (nn.Conv2d(4, 4, 7, padding=3, groups=4), True),
    (nn.Conv2d(4, 8, 3, padding=1), True),
    (nn.Conv2d(4, 8, 1), True),
    (nn.Conv2d(4, 8, (3, 5), padding=(1, 2)), True),
    (nn.Conv2d(4, 4, 7, padding=3, stride=2), False),
    (nn.Conv2d(4, 4, 3, padding=2, dilation=2), False),
    (nn.Conv2d(4, 4, 3, padding=0), False),
    (nn.Conv2d(4, 4, 4, padding=2), False),
    (nn.Conv2d(4, 4, 3, padding=1, padding_mode="reflect"), False),
    (nn.Conv2d(4, 4, 3, padding="same"), False),
    (nn.Conv1d(4, 4, 3, padding=1), False),
])
def test_only_stride_one_same_padded_plain_convs_are_eligible(conv, eligible):
    assert is_eligible(conv) is eligible


def test_a_conv_subclass_keeps_its_own_forward():
    class Custom(nn.Conv2d):
        pass

    assert not is_eligible(Custom(4, 4, 3, padding=1))


def _outputs_and_grads(conv: nn.Conv2d, x: torch.Tensor) -> list[torch.Tensor]:
    x = x.clone().requires_grad_(True)
    conv.zero_grad()
    out = conv(x)
    (out * torch.linspace(-1, 1, out.numel()).reshape(out.shape)).sum().backward()
    grads = [x.grad, conv.weight.grad] + ([conv.bias.grad] if conv.bias is not None else [])
    return [out.detach(), *[g.clone() for g in grads]]


@pytest.mark.parametrize("size", [(1, 1), (2, 2), (3, 3), (1, 5), (4, 2), (8, 8)])
@pytest.mark.parametrize("in_ch, out_ch, groups, kernel",
                         [(6, 6, 6, 7), (6, 10, 1, 7), (6, 4, 2, 5), (6, 10, 1, 1)])
def test_outputs_and_gradients_are_those_of_the_whole_kernel(size, in_ch, out_ch, groups, kernel):
    torch.manual_seed(0)
    conv = nn.Conv2d(in_ch, out_ch, kernel, padding=kernel // 2, groups=groups)
    x = torch.randn(3, in_ch, *size)
    expected = _outputs_and_grads(conv, x)
    with skip_padding_taps(conv) as patched:
        got = _outputs_and_grads(conv, x)
    assert patched == 1
    for a, b in zip(got, expected):
        assert a.shape == b.shape
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)


def test_the_taps_outside_the_reach_get_zero_gradient_and_are_not_computed():
    conv = nn.Conv2d(2, 2, 7, padding=3, groups=2)
    calls = []
    original = torch.nn.functional.conv2d

    def spy(x, weight, *args, **kwargs):
        calls.append(tuple(weight.shape[-2:]))
        return original(x, weight, *args, **kwargs)

    torch.nn.functional.conv2d = spy
    try:
        with skip_padding_taps(conv):
            _, _, weight_grad, _ = _outputs_and_grads(conv, torch.randn(1, 2, 2, 2))
    finally:
        torch.nn.functional.conv2d = original
    assert calls == [(3, 3)]
    assert weight_grad[:, :, 2:5, 2:5].abs().sum() > 0
    weight_grad[:, :, 2:5, 2:5] = 0
    assert weight_grad.abs().sum() == 0


def test_forward_is_restored_after_the_block_and_after_an_error():
    model = nn.Sequential(nn.Conv2d(3, 3, 3, padding=1), nn.ReLU(), nn.Conv2d(3, 3, 3, stride=2, padding=1))
    with skip_padding_taps(model, None) as patched:
        assert patched == 1
        assert "forward" in model[0].__dict__
        assert "forward" not in model[2].__dict__
    assert "forward" not in model[0].__dict__
    with pytest.raises(RuntimeError, match="boom"), skip_padding_taps(model):
        raise RuntimeError("boom")
    assert "forward" not in model[0].__dict__


def test_nested_blocks_patch_once_and_the_outer_one_restores():
    conv = nn.Conv2d(3, 3, 3, padding=1)
    with skip_padding_taps(conv) as outer:
        with skip_padding_taps(conv) as inner:
            assert (outer, inner) == (1, 0)
        assert "forward" in conv.__dict__
    assert "forward" not in conv.__dict__


def test_a_convnext_training_step_at_32_pixels_is_unchanged():
    # layer scale 1 so every block matters (timm's default 1e-6 makes the blocks near-identity)
    torch.manual_seed(0)
    model = create_model("convnext_atto", input_size=(32, 32), num_classes=10)
    for name, param in model.named_parameters():
        if name.endswith("gamma"):
            param.data.fill_(1.0)
    x, labels = torch.randn(4, 3, 32, 32), torch.tensor([0, 3, 7, 9])

    def step():
        model.zero_grad()
        loss = nn.functional.cross_entropy(model(x), labels)
        loss.backward()
        return loss.detach(), [p.grad.clone() for p in model.parameters()]

    expected_loss, expected_grads = step()
    with skip_padding_taps(model) as patched:
        loss, grads = step()
    assert patched == 12 + 24  # every depthwise 7×7 and every 1×1 of the MLPs (conv_mlp)
    torch.testing.assert_close(loss, expected_loss, rtol=1e-5, atol=1e-6)
    for got, want in zip(grads, expected_grads):
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-5)
