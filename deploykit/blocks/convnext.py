"""ConvNeXt (``timm.models.convnext.ConvNeXtBlock``), both ``conv_mlp`` layouts.

Original: dw k×k → norm → fc (4×) → GELU → fc → γ → + x.
Pruned:   dw k×k → Blend(norm, BN) → fc → Blend(GELU, id) → fc → γ → + x → appended GELU → appended BN.
Merged:   dw k×k (BN folded) → 1×1 conv C→C (fc·fc·γ folded) → + x → GELU → BN.
The only padded conv is the first op, so no ring is needed.
"""

from __future__ import annotations

import copy

from timm.models.convnext import ConvNeXtBlock
from torch import Tensor, nn

from deploykit import reparam
from deploykit.blocks.base import PrunableBlock, conv_from, plain_conv_reason, residual_module
from deploykit.blocks.blend import Blend, appended
from deploykit.blocks.registry import register


class ChannelsLastBatchNorm(nn.BatchNorm2d):
    """BatchNorm over the last dim of an NHWC tensor (the layout of ConvNeXt's Linear MLP)."""

    def forward(self, x: Tensor) -> Tensor:
        return super().forward(x.permute(0, 3, 1, 2)).permute(0, 2, 3, 1)


def _pointwise_weight(layer: nn.Module):
    weight = layer.weight.reshape(layer.weight.shape[0], layer.weight.shape[1])
    return weight, layer.bias


@register(ConvNeXtBlock)
class ConvNeXtPrunable(PrunableBlock):
    family = "convnext"

    @classmethod
    def unsupported_reason(cls, block: ConvNeXtBlock, in_shape) -> str | None:
        mlp = block.mlp
        if not (hasattr(mlp, "fc1") and hasattr(mlp, "fc2") and hasattr(mlp, "act")):
            return f"MLP {type(mlp).__name__} is not fc → act → fc"
        if hasattr(mlp, "grn"):
            return "GlobalResponseNorm (ConvNeXt-V2) in the MLP is not linear"
        if not isinstance(mlp.norm, nn.Identity):
            return "a norm inside the MLP is not supported"
        if not isinstance(block.shortcut, nn.Identity):
            return "a downsampling shortcut inside the block is not supported"
        return plain_conv_reason(block.conv_dw, "conv_dw")

    def __init__(self, block: ConvNeXtBlock, in_shape):
        super().__init__(block, in_shape)
        channels = block.conv_dw.out_channels
        # The pruned body keeps the block's own layout so that λ = 0 runs the very same ops.
        bn_class = nn.BatchNorm2d if block.use_conv_mlp else ChannelsLastBatchNorm
        self.norm = Blend(block.norm, bn_class(channels))
        self.act = Blend(block.mlp.act, nn.Identity())
        self.post_act = appended(copy.deepcopy(block.mlp.act))
        self.post_norm = appended(nn.BatchNorm2d(channels))

    def forward_pruned(self, x: Tensor) -> Tensor:
        block = self.block
        shortcut = x
        x = block.conv_dw(x)
        if not block.use_conv_mlp:
            x = x.permute(0, 2, 3, 1)
        x = block.mlp.fc2(self.act(block.mlp.fc1(self.norm(x))))
        if not block.use_conv_mlp:
            x = x.permute(0, 3, 1, 2)
        if block.gamma is not None:
            x = x * block.gamma.reshape(1, -1, 1, 1)
        x = block.drop_path(x) + shortcut
        return self.post_norm(self.post_act(x))

    def merged(self) -> nn.Module:
        block, bn = self.block, self.norm.new
        dw = block.conv_dw
        dw_weight, dw_bias = reparam.fold_bn(dw.weight, dw.bias, bn.running_mean, bn.running_var,
                                             bn.weight, bn.bias, bn.eps)
        fc_weight, fc_bias = reparam.compose_linears(*_pointwise_weight(block.mlp.fc1),
                                                     *_pointwise_weight(block.mlp.fc2))
        if block.gamma is not None:
            fc_weight, fc_bias = reparam.fold_scale(fc_weight, fc_bias, block.gamma)
        body = nn.Sequential(
            conv_from(dw_weight, dw_bias, stride=dw.stride[0], padding=dw.padding[0], groups=dw.groups),
            conv_from(reparam.linear_as_conv1x1(fc_weight), fc_bias),
        )
        post = nn.Sequential(copy.deepcopy(self.post_act.new), copy.deepcopy(self.post_norm.new))
        return residual_module(body, post, name="MergedConvNeXtBlock")
