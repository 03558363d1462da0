"""The λ-blended ops every family shares (docs/method.md).

``Blend(old, new)`` computes ``(1 − λ)·old(x) + λ·new(x)``; an appended op is ``Blend(Identity, op)``.
The padding rule lives here too: a pruned block pads its input once by the total padding, runs its
inner convs unpadded, and multiplies the part of each inner feature map that lies outside the
original grid (the *ring*) by λ before the next conv. A BatchNorm that sees a ring normalizes it with
the grid's affine, but in training takes its batch statistics from the grid alone.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn


class Blend(nn.Module):
    """``y = (1 − λ)·old(x) + λ·new(x)``; λ is set by the owning block through ``lam``."""

    def __init__(self, old: nn.Module, new: nn.Module):
        super().__init__()
        self.old = old
        self.new = new
        self.lam = 0.0

    def forward(self, x: Tensor) -> Tensor:
        # At λ = 1 the old op has no influence; skipping it keeps the pruned net as cheap as it can be.
        if self.lam == 1.0:
            return self.new(x)
        # lerp at weight 0 returns old(x) exactly; new(x) still runs so a new BatchNorm's statistics track.
        return torch.lerp(self.old(x), self.new(x), self.lam)

    def extra_repr(self) -> str:
        return f"lam={self.lam:g}"


def appended(op: nn.Module) -> Blend:
    """An op appended to the pruned form: identity at λ = 0, ``op`` at λ = 1."""
    return Blend(nn.Identity(), op)


def pointwise_with_ring(conv: nn.Conv2d, x: Tensor, width: int) -> Tensor:
    """A 1×1 conv of ``x`` zero-padded by ``width``, computed as ``conv(x)`` with the ring set to the bias.

    Same values as convolving the padded input, but the grid is bit-identical to the original
    model's (a conv over a larger input may round differently), which keeps λ = 0 exact in training.
    """
    out = conv(x)
    if width == 0:
        return out
    ring = conv.bias if conv.bias is not None else out.new_zeros(out.shape[1])
    padded = F.pad(out, (width,) * 4)
    inside = torch.zeros((1, 1, *padded.shape[-2:]), dtype=torch.bool, device=x.device)
    inside[..., width:-width, width:-width] = True
    return torch.where(inside, padded, ring.reshape(1, -1, 1, 1).to(out.dtype))


def scale_ring(x: Tensor, width: int, lam: float) -> Tensor:
    """Multiply the outer ``width`` pixels of a feature map by λ (λ = 0 is the original zero padding)."""
    if width == 0 or lam == 1.0:
        return x
    height, breadth = x.shape[-2:]
    mask = x.new_full((height, breadth), lam)
    mask[width:height - width, width:breadth - width] = 1.0
    return x * mask


def ring_batch_norm(bn: nn.BatchNorm2d, x: Tensor, width: int) -> Tensor:
    """Apply ``bn``'s normalization (not any activation it carries) to a map with a ring of ``width``.

    Eval: plain BatchNorm everywhere. Train: the grid is normalized exactly as the original model
    would (same result, same running-statistics update); the ring is normalized with the grid's
    batch statistics and the same affine, which is what a merged conv sees there.
    """
    if width == 0 or not _uses_batch_stats(bn):
        return batch_norm(bn, x)
    height, breadth = x.shape[-2:]
    # contiguous: normalizing a strided view rounds differently from the original's dense map.
    grid = x[..., width:height - width, width:breadth - width].contiguous()
    grid_out = batch_norm(bn, grid)
    # The ring's statistics are the grid's batch statistics, written out so that autograd flows
    # through them (F.batch_norm treats its mean/var arguments as constants).
    mean = grid.mean(dim=(0, 2, 3), keepdim=True)
    var = grid.var(dim=(0, 2, 3), unbiased=False, keepdim=True)
    full = (x - mean) * torch.rsqrt(var + bn.eps)
    if bn.weight is not None:
        full = full * bn.weight.reshape(1, -1, 1, 1)
    if bn.bias is not None:
        full = full + bn.bias.reshape(1, -1, 1, 1)
    inside = torch.zeros((1, 1, height, breadth), dtype=torch.bool, device=x.device)
    inside[..., width:height - width, width:breadth - width] = True
    return torch.where(inside, F.pad(grid_out, (width,) * 4), full)


def _uses_batch_stats(bn: nn.BatchNorm2d) -> bool:
    return bn.training or bn.running_mean is None


def batch_norm(bn: nn.BatchNorm2d, x: Tensor) -> Tensor:
    """``nn.BatchNorm2d.forward`` without any activation a subclass (timm's BatchNormAct2d) adds."""
    momentum = 0.0 if bn.momentum is None else bn.momentum
    if bn.training and bn.track_running_stats and bn.num_batches_tracked is not None:
        bn.num_batches_tracked.add_(1)
        if bn.momentum is None:
            momentum = 1.0 / float(bn.num_batches_tracked)
    track = not bn.training or bn.track_running_stats
    return F.batch_norm(x, bn.running_mean if track else None, bn.running_var if track else None,
                        bn.weight, bn.bias, _uses_batch_stats(bn), momentum, bn.eps)
