"""ResNet (``timm.models.resnet.BasicBlock`` and ``Bottleneck``; ResNeXt groups included).

Original BasicBlock:  3×3 (stride s) → BN → ReLU → 3×3 → BN → + shortcut → ReLU.
Original Bottleneck:  1×1 → BN → ReLU → 3×3 (stride s) → BN → ReLU → 1×1 → BN → + shortcut → ReLU.
Pruned: the input is padded once by the total padding P of the conv chain, every conv runs
unpadded, each inner map keeps a ring (the part outside the original grid) that a BatchNorm
normalizes without taking statistics from it and that is scaled by λ before the next conv; every
inner activation is ``Blend(act, id)``; the block's own final activation stays and a BatchNorm is
appended after it.
Merged: one conv (kernel ``composed_kernel_size``: 3 + 2·s for BasicBlock, 3 for Bottleneck;
stride s; padding P) with every BN folded and the shortcut (identity, 1×1 projection, or the "-d"
2×2 average pool + 1×1 projection) folded into the kernel → final activation → BN.
"""

from __future__ import annotations

import copy
from typing import ClassVar

import torch.nn.functional as F
from timm.models.resnet import BasicBlock, Bottleneck
from torch import Tensor, nn

from deploykit import reparam
from deploykit.blocks.base import (
    PrunableBlock,
    conv_from,
    conv_unpadded,
    fold_conv_bn,
    plain_conv_reason,
)
from deploykit.blocks.blend import Blend, appended, ring_batch_norm, scale_ring
from deploykit.blocks.registry import register


def _square(value) -> int | None:
    """``value`` as one int when it is an int or a pair of equal ints, else None."""
    if isinstance(value, int):
        return value
    first, second = value
    return first if first == second else None


def _bn_reason(bn: nn.Module, name: str) -> str | None:
    if type(bn) is not nn.BatchNorm2d:
        return f"{name} is a {type(bn).__name__}, not a plain BatchNorm2d"
    if bn.running_mean is None or bn.running_var is None:
        return f"{name} tracks no running statistics, which the merge folds"
    return None


def _shortcut_parts(downsample: nn.Module | None):
    """``(pool, conv, bn)`` of a shortcut (each None when absent), or a reason string."""
    if downsample is None:
        return None, None, None
    if not isinstance(downsample, nn.Sequential):
        return f"shortcut {type(downsample).__name__} is not a Sequential(conv, BN)"
    layers = [layer for layer in downsample if not isinstance(layer, nn.Identity)]
    pool = layers.pop(0) if len(layers) == 3 else None
    if len(layers) != 2:
        return "shortcut is not [avg pool →] conv → BN"
    return pool, layers[0], layers[1]


def _shortcut_reason(downsample: nn.Module | None, stride: int, in_shape, out_channels: int) -> str | None:
    parts = _shortcut_parts(downsample)
    if isinstance(parts, str):
        return parts
    pool, conv, bn = parts
    channels, height, width = in_shape
    if conv is None:
        if stride != 1 or channels != out_channels:
            return "identity shortcut with a stride or a change of channels"
        return None
    reason = plain_conv_reason(conv, "shortcut conv") or _bn_reason(bn, "shortcut norm")
    if reason:
        return reason
    if conv.groups != 1:
        return "grouped shortcut conv"
    pool_stride = 1
    if pool is not None:
        if type(pool) is not nn.AvgPool2d:
            return f"shortcut pool {type(pool).__name__} is not a plain AvgPool2d"
        size, pool_stride = _square(pool.kernel_size), _square(pool.stride)
        if size is None or size != pool_stride or _square(pool.padding) != 0 or pool.divisor_override:
            return "shortcut avg pool is not a k×k stride-k pool without padding"
        if _square(conv.kernel_size) != 1 or _square(conv.stride) != 1:
            return "shortcut avg pool is followed by a conv other than a 1×1 stride-1"
        if height % size or width % size:
            return (f"odd input size {height}×{width}: the {size}×{size} average-pool shortcut has "
                    "partial windows at the border, which no conv kernel reproduces")
    if pool_stride * _square(conv.stride) != stride:
        return "the shortcut's stride differs from the block's"
    return None


class _ResNetPrunable(PrunableBlock):
    """The chain ``(conv → BN → act)* → conv → BN → + shortcut → final act``, shared by both blocks."""

    family = "resnet"
    # (conv, norm, act) attribute names of the residual branch; the last stage has no act.
    stages: ClassVar[tuple[tuple[str, str, str | None], ...]] = ()
    final_act: ClassVar[str] = ""

    @classmethod
    def unsupported_reason(cls, block: nn.Module, in_shape) -> str | None:
        se = getattr(block, "se", None)
        if se is not None and not isinstance(se, nn.Identity):
            return f"attention layer {type(se).__name__} (SE/ECA/...) is not linear"
        if not isinstance(getattr(block, "aa", nn.Identity()), nn.Identity):
            return f"anti-aliasing layer {type(block.aa).__name__} is not supported"
        if not isinstance(getattr(block, "drop_block", nn.Identity()), nn.Identity):
            return "DropBlock inside the block is not supported"
        for conv_name, norm_name, _ in cls.stages:
            reason = (plain_conv_reason(getattr(block, conv_name), conv_name)
                      or _bn_reason(getattr(block, norm_name), norm_name))
            if reason:
                return reason
        stride = 1
        for conv_name, _, _ in cls.stages:
            stride *= _square(getattr(block, conv_name).stride)
        out_channels = getattr(block, cls.stages[-1][0]).out_channels
        reason = _shortcut_reason(block.downsample, stride, in_shape, out_channels)
        if reason:
            return reason
        convs = [getattr(block, conv_name) for conv_name, _, _ in cls.stages]
        kernel, _, padding, _ = _chain_geometry(convs)
        if _shortcut_offset(block.downsample, kernel, padding) is None:
            return "the shortcut conv does not fit inside the merged kernel"
        return None

    def __init__(self, block: nn.Module, in_shape):
        super().__init__(block, in_shape)
        convs = [getattr(block, conv_name) for conv_name, _, _ in self.stages]
        self.kernel, self.stride, self.padding, self.rings = _chain_geometry(convs)
        self.acts = nn.ModuleList(Blend(getattr(block, act_name), nn.Identity())
                                  for _, _, act_name in self.stages[:-1])
        self.post_norm = appended(nn.BatchNorm2d(convs[-1].out_channels))

    def forward_pruned(self, x: Tensor) -> Tensor:
        block = self.block
        shortcut = x
        x = F.pad(x, (self.padding,) * 4)
        for index, (conv_name, norm_name, _) in enumerate(self.stages):
            ring = self.rings[index]
            x = conv_unpadded(getattr(block, conv_name), x)
            x = ring_batch_norm(getattr(block, norm_name), x, ring)
            if index < len(self.acts):
                x = scale_ring(self.acts[index](x), ring, self.lam)
        if block.drop_path is not None:
            x = block.drop_path(x)
        if block.downsample is not None:
            shortcut = block.downsample(shortcut)
        x = getattr(block, self.final_act)(x + shortcut)
        return self.post_norm(x)

    def merged(self) -> nn.Module:
        block = self.block
        weight = bias = None
        stride = 1
        for conv_name, norm_name, _ in self.stages:
            conv, bn = getattr(block, conv_name), getattr(block, norm_name)
            conv_weight, conv_bias = fold_conv_bn(conv, bn)
            if weight is None:
                weight, bias = reparam.dense_kernel(conv_weight, conv.groups), conv_bias
            else:
                weight, bias = reparam.compose_convs(weight, bias, conv_weight, conv_bias,
                                                     first_stride=stride, second_groups=conv.groups)
            stride *= conv.stride[0]
        shortcut, shortcut_bias = _shortcut_kernel(block.downsample, weight)
        offset = _shortcut_offset(block.downsample, self.kernel, self.padding)
        weight, bias = reparam.add_shortcut(weight, bias, shortcut, shortcut_bias, offset)
        return nn.Sequential(
            conv_from(weight, bias, stride=self.stride, padding=self.padding),
            copy.deepcopy(getattr(block, self.final_act)),
            copy.deepcopy(self.post_norm.new),
        )


def _chain_geometry(convs: list[nn.Conv2d]):
    """``(kernel, stride, padding, rings)`` of the merged conv; ``rings[i]`` is the ring width of the
    map after conv i (the padding the later convs still need, in that map's pixels)."""
    kernels = [conv.kernel_size[0] for conv in convs]
    strides = [conv.stride[0] for conv in convs]
    paddings = [conv.padding[0] for conv in convs]
    rings = [reparam.total_padding(kernels[i + 1:], strides[i + 1:], paddings[i + 1:])
             for i in range(len(convs))]
    stride = 1
    for value in strides:
        stride *= value
    return (reparam.composed_kernel_size(kernels, strides), stride,
            reparam.total_padding(kernels, strides, paddings), rings)


def _shortcut_offset(downsample, kernel: int, padding: int) -> int | None:
    """Where the shortcut kernel sits in the merged kernel, or None if it does not fit.

    Output pixel o of the merged conv reads padded input rows ``o·s … o·s + K − 1``, i.e. original
    rows from ``o·s − P``; the shortcut reads original rows from ``o·s − p_shortcut``.
    """
    pool, conv, _ = _shortcut_parts(downsample)
    size, shortcut_padding = 1, 0
    if conv is not None:
        size, shortcut_padding = conv.kernel_size[0], conv.padding[0]
    if pool is not None:
        size = _square(pool.kernel_size)
    offset = padding - shortcut_padding
    return offset if offset >= 0 and offset + size <= kernel else None


def _shortcut_kernel(downsample, like: Tensor):
    """The shortcut as one conv kernel (and bias) of the merged conv's stride."""
    pool, conv, bn = _shortcut_parts(downsample)
    if conv is None:
        return reparam.identity_kernel(like.shape[1], dtype=like.dtype, device=like.device), None
    weight, bias = fold_conv_bn(conv, bn)
    if pool is not None:
        weight = reparam.avg_pool_kernel(weight, _square(pool.kernel_size))
    return weight, bias


@register(BasicBlock)
class BasicBlockPrunable(_ResNetPrunable):
    stages = (("conv1", "bn1", "act1"), ("conv2", "bn2", None))
    final_act = "act2"


@register(Bottleneck)
class BottleneckPrunable(_ResNetPrunable):
    stages = (("conv1", "bn1", "act1"), ("conv2", "bn2", "act2"), ("conv3", "bn3", None))
    final_act = "act3"

