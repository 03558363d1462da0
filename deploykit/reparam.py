"""Re-parameterization math: pure functions on tensors, no modules, no state.

Conventions: a conv kernel is ``(out, in/groups, kh, kw)``; a linear weight is ``(out, in)``.
Convs are composed *unpadded*: the caller pads the input once by the total padding
(:func:`total_padding`), which is what makes the composition exact at the borders (docs/method.md, padding).
Every function returns new tensors and leaves its inputs untouched.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor


def bn_affine(mean: Tensor, var: Tensor, weight: Tensor | None, bias: Tensor | None, eps: float):
    """Eval-mode BatchNorm as ``y = scale·x + shift`` per channel."""
    scale = torch.rsqrt(var + eps)
    if weight is not None:
        scale = scale * weight
    shift = -mean * scale
    if bias is not None:
        shift = shift + bias
    return scale, shift


def _per_out_channel(vector: Tensor, weight: Tensor) -> Tensor:
    return vector.reshape(-1, *([1] * (weight.dim() - 1)))


def fold_scale(weight: Tensor, bias: Tensor | None, scale: Tensor, shift: Tensor | None = None):
    """Fold a per-output-channel affine (a BatchNorm or a layer scale γ) applied *after* a conv/linear."""
    new_weight = weight * _per_out_channel(scale, weight)
    new_bias = torch.zeros_like(scale) if bias is None else bias * scale
    if shift is not None:
        new_bias = new_bias + shift
    return new_weight, new_bias


def fold_bn(weight: Tensor, bias: Tensor | None, mean: Tensor, var: Tensor,
            bn_weight: Tensor | None, bn_bias: Tensor | None, eps: float):
    """Fold an eval-mode BatchNorm that follows a conv or linear into its weight and bias."""
    scale, shift = bn_affine(mean, var, bn_weight, bn_bias, eps)
    return fold_scale(weight, bias, scale, shift)


def fold_affine_before(weight: Tensor, bias: Tensor | None, scale: Tensor, shift: Tensor):
    """Fold a per-input-channel affine applied *before* a linear or 1×1 conv.

    Only exact for ops without spatial padding (linear, 1×1 conv): a padded k×k conv would see
    zeros at the border where the affine would have produced ``shift``.
    """
    if weight.dim() == 4 and weight.shape[-2:] != (1, 1):
        raise ValueError("an affine can be folded into the following conv only for 1×1 kernels")
    flat = weight.reshape(weight.shape[0], weight.shape[1])
    new_weight = weight * scale.reshape(1, -1, *([1] * (weight.dim() - 2)))
    new_bias = flat @ shift
    if bias is not None:
        new_bias = new_bias + bias
    return new_weight, new_bias


def dense_kernel(weight: Tensor, groups: int) -> Tensor:
    """The equivalent ``groups=1`` kernel of a grouped (e.g. depthwise) conv: block diagonal."""
    if groups == 1:
        return weight
    out_ch, in_per_group = weight.shape[:2]
    out_per_group = out_ch // groups
    dense = weight.new_zeros(out_ch, in_per_group * groups, *weight.shape[2:])
    for g in range(groups):
        rows = slice(g * out_per_group, (g + 1) * out_per_group)
        cols = slice(g * in_per_group, (g + 1) * in_per_group)
        dense[rows, cols] = weight[rows]
    return dense


def grouped_kernel(dense: Tensor, groups: int) -> Tensor:
    """Inverse of :func:`dense_kernel`: keep the diagonal blocks of a block-diagonal kernel."""
    if groups == 1:
        return dense
    out_ch, in_ch = dense.shape[:2]
    out_per_group, in_per_group = out_ch // groups, in_ch // groups
    blocks = [dense[g * out_per_group:(g + 1) * out_per_group, g * in_per_group:(g + 1) * in_per_group]
              for g in range(groups)]
    return torch.cat(blocks, dim=0)


def compose_convs(first: Tensor, first_bias: Tensor | None, second: Tensor, second_bias: Tensor | None, *,
                  first_stride: int = 1, first_groups: int = 1, second_groups: int = 1):
    """One conv equal to ``second(first(x))`` for two *unpadded* convs (dilation 1).

    The result has kernel ``k1 + (k2 − 1)·s1``, stride ``s1·s2`` (the caller multiplies) and groups
    ``g`` when both convs have the same ``g``, else 1.
    """
    weight = _compose_kernels(first, second, first_stride, first_groups, second_groups)
    taps = dense_kernel(second.sum(dim=(2, 3), keepdim=True), second_groups).flatten(1)
    bias = taps @ first_bias if first_bias is not None else weight.new_zeros(weight.shape[0])
    if second_bias is not None:
        bias = bias + second_bias
    groups = first_groups if first_groups == second_groups else 1
    return grouped_kernel(weight, groups), bias


def _is_depthwise(weight: Tensor, groups: int) -> bool:
    return groups > 1 and groups == weight.shape[0] and weight.shape[1] == 1


def _compose_kernels(first: Tensor, second: Tensor, first_stride: int, first_groups: int,
                     second_groups: int) -> Tensor:
    """The composed dense kernel ``W[o, i, r] = Σ_m Σ_{s1·u + t = r} w2[o, m, u]·w1[m, i, t]``.

    With a 1×1 on one side it is a product over channels (cheap even for EfficientNet's wide
    depthwise layers); otherwise a transposed conv of w2 (a batch over o) with w1 at stride s1.
    """
    first_pointwise = first.shape[-2:] == (1, 1) and first_groups == 1 and first_stride == 1
    second_pointwise = second.shape[-2:] == (1, 1) and second_groups == 1
    if first_pointwise and _is_depthwise(second, second_groups):
        return second * first.flatten(1)[:, :, None, None]
    if first_pointwise and second_groups == 1:
        return torch.einsum("omuv,mi->oiuv", second, first.flatten(1))
    if second_pointwise and _is_depthwise(first, first_groups):
        return second.flatten(1)[:, :, None, None] * first.permute(1, 0, 2, 3)
    if second_pointwise and first_groups == 1:
        return torch.einsum("om,miuv->oiuv", second.flatten(1), first)
    return F.conv_transpose2d(dense_kernel(second, second_groups), dense_kernel(first, first_groups),
                              stride=first_stride)


def total_padding(kernel_sizes: Sequence[int], strides: Sequence[int], paddings: Sequence[int]) -> int:
    """Padding of the composed conv: ``Σ p_i · Π_{j<i} s_j``; the merged conv pads the input by this."""
    total, step = 0, 1
    for _, stride, padding in zip(kernel_sizes, strides, paddings):
        total += padding * step
        step *= stride
    return total


def composed_kernel_size(kernel_sizes: Sequence[int], strides: Sequence[int]) -> int:
    """Kernel size of the composed conv: ``k1 + Σ_{i>1} (k_i − 1)·Π_{j<i} s_j``."""
    size, step = 1, 1
    for kernel, stride in zip(kernel_sizes, strides):
        size += (kernel - 1) * step
        step *= stride
    return size


def embed_kernel(kernel: Tensor, size: int, offset: int) -> Tensor:
    """Place a small kernel into a ``size × size`` zero kernel with its top-left at ``(offset, offset)``."""
    k = kernel.shape[-1]
    if offset < 0 or offset + k > size:
        raise ValueError(f"a {k}×{k} kernel at offset {offset} does not fit in {size}×{size}")
    big = kernel.new_zeros(*kernel.shape[:2], size, size)
    big[..., offset:offset + k, offset:offset + k] = kernel
    return big


def identity_kernel(channels: int, *, dtype: torch.dtype = torch.float32,
                    device: torch.device | str | None = None) -> Tensor:
    """The 1×1 kernel of ``x ↦ x`` (an identity shortcut)."""
    eye = torch.eye(channels, dtype=dtype, device=device)
    return eye.reshape(channels, channels, 1, 1)


def avg_pool_kernel(weight_1x1: Tensor, pool: int) -> Tensor:
    """A ``pool × pool`` stride-``pool`` average pool followed by a 1×1 conv, as one ``pool × pool`` kernel.

    Exact only where every pooling window is whole (even spatial size for ``pool = 2``, or no
    ``ceil_mode`` overhang): a partial window divides by fewer elements.
    """
    return weight_1x1.repeat(1, 1, pool, pool) / float(pool * pool)


def add_shortcut(weight: Tensor, bias: Tensor, shortcut: Tensor, shortcut_bias: Tensor | None,
                 offset: int):
    """Fold a shortcut conv (identity, 1×1 or pooled projection, same stride as the merged conv)
    into the merged kernel; ``offset`` is the total padding of the merged conv."""
    weight = weight + embed_kernel(shortcut.to(weight.dtype), weight.shape[-1], offset)
    if shortcut_bias is not None:
        bias = bias + shortcut_bias
    return weight, bias


def compose_linears(first: Tensor, first_bias: Tensor | None, second: Tensor, second_bias: Tensor | None):
    """One linear equal to ``second(first(x))``."""
    weight = second @ first
    bias = second @ first_bias if first_bias is not None else weight.new_zeros(weight.shape[0])
    if second_bias is not None:
        bias = bias + second_bias
    return weight, bias


def linear_as_conv1x1(weight: Tensor) -> Tensor:
    """A ``(out, in)`` linear weight as a ``(out, in, 1, 1)`` conv kernel."""
    return weight.reshape(*weight.shape, 1, 1)
