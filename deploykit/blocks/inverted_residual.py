"""Inverted residuals: timm's ``InvertedResidual`` and ``DepthwiseSeparableConv`` (``_efficientnet_blocks``).

Used by MobileNetV1/V2, EfficientNet-Lite, MNASNet and friends. timm's norms here are
``BatchNormAct2d``: a BatchNorm that also applies ``.drop`` and ``.act``; the pruned form runs the
normalization alone (:func:`~deploykit.blocks.blend.batch_norm`) and blends ``.act`` to an identity.

InvertedResidual
  Original: 1×1 → BN → act → k×k dw (stride s, pad p) → BN → act → 1×1 → BN (+ x).
  Pruned:   pad x by p once → 1×1 → BN (ring of width p) → Blend(act, id) → ring × λ
            → k×k dw unpadded → BN → Blend(act, id) → 1×1 → BN (+ x) → appended act → appended BN.
            (The 1×1 of the padded input is computed as the 1×1 of x padded by the conv's bias: the
            same values, with the grid bit-identical to the original's.)
  Merged:   one dense k×k conv C_in → C_out (stride s, pad p; BNs and shortcut folded) → act → BN.
  The 1×1 before the dw conv maps the padded zeros to its folded bias, which the original's zero
  padding of the dw input never sees: hence the ring (docs/method.md, padding).

DepthwiseSeparableConv
  Original: k×k dw (stride s, pad p) → BN → act → 1×1 → BN [→ act if ``pw_act``] (+ x).
  Pruned:   k×k dw → BN → Blend(act, id) → 1×1 → BN (+ x) → appended act → appended BN; a block that
            ends in its own activation (``pw_act`` without skip) keeps it and only gets the BN.
  Merged:   one dense k×k conv C_in → C_out (BNs and shortcut folded) → act → BN.
  The only padded conv is the first op, so no ring is needed.

The merged dense conv can have many more MACs than the original (C_in·C_out·k² against
C·(C_mid + C_out + k²)·…); whether it pays is the latency table's call.
"""

from __future__ import annotations

import copy

from timm.layers import BatchNormAct2d
from timm.models._efficientnet_blocks import DepthwiseSeparableConv, InvertedResidual
from torch import Tensor, nn

from deploykit import reparam
from deploykit.blocks.base import (
    PrunableBlock,
    conv_from,
    conv_unpadded,
    fold_conv_bn,
    plain_conv_reason,
)
from deploykit.blocks.blend import (
    Blend,
    appended,
    batch_norm,
    pointwise_with_ring,
    ring_batch_norm,
    scale_ring,
)
from deploykit.blocks.registry import register

_NORMS = (nn.BatchNorm2d, BatchNormAct2d)


def _act(bn: nn.Module) -> nn.Module:
    """The activation a (timm) BatchNorm applies after normalizing; Identity for a plain BatchNorm."""
    act = getattr(bn, "act", None)
    return nn.Identity() if act is None else act


def _is_identity(module: nn.Module | None) -> bool:
    return module is None or isinstance(module, nn.Identity)


def _pointwise_reason(conv: nn.Conv2d, name: str, what: str) -> str | None:
    if conv.kernel_size != (1, 1) or conv.stride != (1, 1) or conv.padding != (0, 0):
        return f"{what} conv {name} is not 1×1 (kernel {conv.kernel_size[0]} > 1 is not supported)"
    return None


def _norm_reason(bn: nn.Module, name: str) -> str | None:
    if type(bn) not in _NORMS:
        return f"{name} is {type(bn).__name__}, not BatchNorm"
    if bn.running_mean is None or bn.running_var is None:
        return f"{name} keeps no running statistics, so it cannot be folded"
    if not _is_identity(getattr(bn, "drop", None)):
        return f"{name} applies {type(bn.drop).__name__}, which is not linear"
    return None


def _common_reason(block: nn.Module) -> str | None:
    """What both block classes refuse: squeeze-excite, anti-aliasing, space-to-depth, subclasses."""
    if hasattr(block, "routing_fn"):
        return "CondConv routing depends on the input (not linear)"
    if type(block) not in (InvertedResidual, DepthwiseSeparableConv):
        return f"{type(block).__name__} has its own forward; only timm's own classes are supported"
    if not _is_identity(block.se):
        return "squeeze-excite is not linear"
    if not _is_identity(block.aa):
        return "anti-aliased downsampling is not supported"
    if getattr(block, "conv_s2d", None) is not None:
        return "space-to-depth (conv_s2d) is not supported"
    return None


class _InvertedResidualBase(PrunableBlock):
    """What both classes share: the tail (skip, appended act and BN) and the merged module."""

    family = "inverted_residual"

    def _init_tail(self, inner_act: nn.Module, last_bn: nn.Module) -> None:
        """Blend the block's last activation and append act + BN (docs/method.md).

        ``inner_act`` is the block's activation (a copy of it is appended); a block that already ends
        in an activation (one after the last BN and no skip) keeps it, and only the BN is appended.
        """
        last_act = _act(last_bn)
        out_ch = last_bn.num_features
        if _is_identity(last_act):
            self.last_act = None
            self.post_act = appended(copy.deepcopy(inner_act))
        elif self.block.has_skip:
            self.last_act = Blend(last_act, nn.Identity())
            self.post_act = appended(copy.deepcopy(last_act))
        else:
            self.last_act = last_act        # the block's own final activation: kept as is
            self.post_act = None
        self.post_norm = appended(nn.BatchNorm2d(out_ch))

    def _tail(self, x: Tensor, shortcut: Tensor) -> Tensor:
        if self.last_act is not None:
            x = self.last_act(x)
        if self.block.has_skip:
            x = self.block.drop_path(x) + shortcut
        if self.post_act is not None:
            x = self.post_act(x)
        return self.post_norm(x)

    def _merged_module(self, weight, bias, groups: int, stride: int, padding: int) -> nn.Sequential:
        if self.block.has_skip:
            eye = reparam.identity_kernel(weight.shape[0], dtype=weight.dtype, device=weight.device)
            eye = reparam.grouped_kernel(eye, groups)
            weight, bias = reparam.add_shortcut(weight, bias, eye, None, padding)
        act = self.post_act.new if self.post_act is not None else self.last_act
        return nn.Sequential(
            conv_from(weight, bias, stride=stride, padding=padding, groups=groups),
            copy.deepcopy(act),
            copy.deepcopy(self.post_norm.new),
        )


@register(InvertedResidual)
class InvertedResidualPrunable(_InvertedResidualBase):

    @classmethod
    def unsupported_reason(cls, block: InvertedResidual, in_shape) -> str | None:
        reason = _common_reason(block)
        for name in ("conv_pw", "conv_dw", "conv_pwl"):
            reason = reason or plain_conv_reason(getattr(block, name), name)
        reason = reason or _pointwise_reason(block.conv_pw, "conv_pw", "expansion")
        reason = reason or _pointwise_reason(block.conv_pwl, "conv_pwl", "projection")
        for name in ("bn1", "bn2", "bn3"):
            reason = reason or _norm_reason(getattr(block, name), name)
        return reason

    def __init__(self, block: InvertedResidual, in_shape):
        super().__init__(block, in_shape)
        dw = block.conv_dw
        # The 1×1 expansion adds no padding, so the total padding is the dw conv's.
        self.padding = reparam.total_padding([1, dw.kernel_size[0]], [1, dw.stride[0]], [0, dw.padding[0]])
        self.act1 = Blend(_act(block.bn1), nn.Identity())
        self.act2 = Blend(_act(block.bn2), nn.Identity())
        inner = next((a for a in (_act(block.bn1), _act(block.bn2)) if not _is_identity(a)), nn.Identity())
        self._init_tail(inner, block.bn3)

    def forward_pruned(self, x: Tensor) -> Tensor:
        block, ring = self.block, self.padding
        shortcut = x
        # The expansion is a 1×1 stride-1 conv: on the padded input it gives its own output, padded by
        # its bias. Running it on x as the original does keeps the grid bit-identical to the original
        # (a conv on another spatial size may round differently).
        x = pointwise_with_ring(block.conv_pw, x, ring)
        x = scale_ring(self.act1(ring_batch_norm(block.bn1, x, ring)), ring, self.lam)
        x = self.act2(batch_norm(block.bn2, conv_unpadded(block.conv_dw, x)))
        x = batch_norm(block.bn3, block.conv_pwl(x))
        return self._tail(x, shortcut)

    def merged(self) -> nn.Module:
        block = self.block
        pw, dw, pwl = block.conv_pw, block.conv_dw, block.conv_pwl
        weight, bias = reparam.compose_convs(*fold_conv_bn(pw, block.bn1), *fold_conv_bn(dw, block.bn2),
                                             first_groups=pw.groups, second_groups=dw.groups)
        groups = pw.groups if pw.groups == dw.groups else 1
        weight, bias = reparam.compose_convs(weight, bias, *fold_conv_bn(pwl, block.bn3),
                                             first_stride=dw.stride[0], first_groups=groups,
                                             second_groups=pwl.groups)
        groups = groups if groups == pwl.groups else 1
        return self._merged_module(weight, bias, groups, dw.stride[0], self.padding)


@register(DepthwiseSeparableConv)
class DepthwiseSeparablePrunable(_InvertedResidualBase):

    @classmethod
    def unsupported_reason(cls, block: DepthwiseSeparableConv, in_shape) -> str | None:
        reason = _common_reason(block)
        for name in ("conv_dw", "conv_pw"):
            reason = reason or plain_conv_reason(getattr(block, name), name)
        reason = reason or _pointwise_reason(block.conv_pw, "conv_pw", "pointwise")
        for name in ("bn1", "bn2"):
            reason = reason or _norm_reason(getattr(block, name), name)
        return reason

    def __init__(self, block: DepthwiseSeparableConv, in_shape):
        super().__init__(block, in_shape)
        self.act1 = Blend(_act(block.bn1), nn.Identity())
        self._init_tail(_act(block.bn1), block.bn2)

    def forward_pruned(self, x: Tensor) -> Tensor:
        block = self.block
        shortcut = x
        x = self.act1(batch_norm(block.bn1, block.conv_dw(x)))
        x = batch_norm(block.bn2, block.conv_pw(x))
        return self._tail(x, shortcut)

    def merged(self) -> nn.Module:
        block = self.block
        dw, pw = block.conv_dw, block.conv_pw
        weight, bias = reparam.compose_convs(*fold_conv_bn(dw, block.bn1), *fold_conv_bn(pw, block.bn2),
                                             first_stride=dw.stride[0], first_groups=dw.groups,
                                             second_groups=pw.groups)
        groups = dw.groups if dw.groups == pw.groups else 1
        return self._merged_module(weight, bias, groups, dw.stride[0], dw.padding[0])
