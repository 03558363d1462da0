"""Counting a module's multiply-accumulates on a given input shape (batch 1), and its parameters."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode, sdpa_flop_count


def _sdpa_cpu_flops(query, key, value, *args, out_shape=None, **kwargs) -> int:
    return sdpa_flop_count(query, key, value)  # the counter passes shapes, not tensors


# On the CPU, attention dispatches to an op the stock flop counter does not know (it would count 0).
_CUSTOM_FLOPS = {torch.ops.aten._scaled_dot_product_flash_attention_for_cpu: _sdpa_cpu_flops}


@contextmanager
def eval_mode(module: nn.Module) -> Iterator[nn.Module]:
    """Temporarily put ``module`` in eval mode, restoring each submodule's own flag afterwards."""
    flags = [(m, m.training) for m in module.modules()]
    module.eval()
    try:
        yield module
    finally:
        for m, training in flags:
            m.training = training


def count_macs(module: nn.Module, input_shape: tuple[int, ...], dtype: torch.dtype | None = None) -> int:
    """MACs of one forward at batch 1: convolutions, matmuls and attention (aten-level count / 2)."""
    param = next(module.parameters(), None)
    dtype = dtype or (param.dtype if param is not None else torch.float32)
    device = param.device if param is not None else "cpu"
    x = torch.zeros(1, *input_shape, dtype=dtype, device=device)
    counter = FlopCounterMode(display=False, custom_mapping=_CUSTOM_FLOPS)
    with torch.no_grad(), eval_mode(module), counter:
        module(x)
    return int(counter.get_total_flops()) // 2


def count_params(module: nn.Module) -> int:
    """Parameters of ``module`` (every element of every parameter tensor)."""
    return sum(p.numel() for p in module.parameters())
