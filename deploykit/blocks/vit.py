"""ViT / DeiT (``timm.models.vision_transformer.Block``): pre-norm transformer blocks on tokens (B, N, C).

Original: x + ls1(attn(LN(x))); then x + ls2(fc2(GELU(fc1(LN(x))))).
Pruned:   x + ls1(attn(Blend(LN, BN)(x))); then x + ls2(fc2(Blend(GELU, BN)(fc1(Blend(LN, BN)(x)))))
          → appended GELU → appended BN. Every BN normalizes the channel (last) dim with statistics
          over batch and tokens.
Merged:   x + attn'(x) with norm1's BN folded into qkv (and ls1 into proj; attention otherwise the
          very same timm module) → one Linear C→C holding BN·fc1·BN·fc2·ls2 + I → GELU → per-channel
          affine (the eval-mode BN). The merged block is a ``torch.fx.GraphModule`` of plain torch and
          timm modules, so it pickles, scripts and exports to ONNX as MatMul/Add/Mul ops.
"""

from __future__ import annotations

import copy
import operator
from typing import Optional

import torch
from timm.layers import Attention, LayerScale, Mlp
from timm.models import vision_transformer as tvit
from torch import Tensor, fx, nn

from deploykit import reparam
from deploykit.blocks.base import PrunableBlock
from deploykit.blocks.blend import Blend, appended
from deploykit.blocks.registry import register

# Block classes of timm's ViT that are listed (so ``deploykit blocks`` says why) but never pruned.
_REFUSED = {
    "ResPostBlock": "post-norm block (LayerNorm after each residual branch) has no linear pruned form",
    "ParallelScalingBlock": "parallel block (attention and MLP side by side with fused projections) "
                            "is not supported",
    "DiffParallelScalingBlock": "parallel block with differential attention is not supported",
    "ParallelThingsBlock": "parallel block (several attention and MLP branches side by side) "
                           "is not supported",
}
_REFUSED_CLASSES = tuple(getattr(tvit, name) for name in _REFUSED if hasattr(tvit, name))


class TokenBatchNorm(nn.BatchNorm1d):
    """BatchNorm over the last (channel) dim of a token tensor (B, N, C): statistics over batch and tokens."""

    def forward(self, x: Tensor) -> Tensor:
        return super().forward(x.reshape(-1, x.shape[-1])).reshape(x.shape)


def _norm_reason(name: str, norm: nn.Module) -> str | None:
    if not isinstance(norm, nn.LayerNorm):
        return f"{name} is {type(norm).__name__}, not LayerNorm"
    if len(norm.normalized_shape) != 1:
        return f"{name} normalizes {tuple(norm.normalized_shape)}, not the channel dim alone"
    return None


def _attention_reason(attn: nn.Module) -> str | None:
    if type(attn) is not Attention:
        return f"attention {type(attn).__name__} is not timm's Attention"
    if not (isinstance(attn.q_norm, nn.Identity) and isinstance(attn.k_norm, nn.Identity)):
        return "q/k normalization inside attention (qk_norm) is not supported"
    if not isinstance(getattr(attn, "norm", nn.Identity()), nn.Identity):
        return "a norm inside attention (scale_norm) is not supported"
    return None


def _mlp_reason(mlp: nn.Module) -> str | None:
    if type(mlp) is not Mlp:
        return f"MLP {type(mlp).__name__} is not fc1 → act → fc2 (GLU / SwiGLU are not linear in the input)"
    if type(mlp.fc1) is not nn.Linear or type(mlp.fc2) is not nn.Linear:
        return "the MLP uses 1×1 convs, not Linear layers"
    if not isinstance(mlp.norm, nn.Identity):
        return "a norm inside the MLP (scale_mlp_norm) is not supported"
    return None


def _layer_scale_reason(block: nn.Module) -> str | None:
    for name in ("ls1", "ls2"):
        if type(getattr(block, name)) not in (nn.Identity, LayerScale):
            return f"{name} is {type(getattr(block, name)).__name__}, not LayerScale"
    return None


def _linear_from(weight: Tensor, bias: Tensor) -> nn.Linear:
    layer = nn.Linear(weight.shape[1], weight.shape[0], dtype=weight.dtype, device=weight.device)
    layer.weight.data.copy_(weight)
    layer.bias.data.copy_(bias)
    return layer


def _bn_affine(bn: nn.modules.batchnorm._BatchNorm) -> tuple[Tensor, Tensor]:
    return reparam.bn_affine(bn.running_mean, bn.running_var, bn.weight, bn.bias, bn.eps)


def _gamma(layer_scale: nn.Module) -> Tensor | None:
    return layer_scale.gamma if isinstance(layer_scale, LayerScale) else None


@register(tvit.Block, *_REFUSED_CLASSES)
class ViTPrunable(PrunableBlock):
    family = "vit"

    @classmethod
    def unsupported_reason(cls, block: nn.Module, in_shape) -> str | None:
        for refused in _REFUSED_CLASSES:
            if isinstance(block, refused):
                return _REFUSED[refused.__name__]
        if type(block).forward is not tvit.Block.forward:
            return f"{type(block).__name__} overrides Block.forward"
        if len(in_shape) != 2:
            return f"input {tuple(in_shape)} is not a token tensor (tokens, channels)"
        return (_norm_reason("norm1", block.norm1) or _norm_reason("norm2", block.norm2)
                or _attention_reason(block.attn) or _mlp_reason(block.mlp) or _layer_scale_reason(block))

    def __init__(self, block: tvit.Block, in_shape):
        super().__init__(block, in_shape)
        channels = block.norm1.normalized_shape[0]
        mlp = block.mlp
        self.norm1 = Blend(block.norm1, TokenBatchNorm(channels))
        self.norm2 = Blend(block.norm2, TokenBatchNorm(channels))
        self.act = Blend(mlp.act, TokenBatchNorm(mlp.fc1.out_features))
        self.post_act = appended(copy.deepcopy(mlp.act))
        self.post_norm = appended(TokenBatchNorm(channels))
        self._match_block_dtype(mlp.fc1.weight)

    def _match_block_dtype(self, reference: Tensor) -> None:
        # The new BatchNorms live where the block lives, in its dtype.
        for blend in (self.norm1, self.norm2, self.act, self.post_norm):
            blend.new.to(device=reference.device, dtype=reference.dtype)

    def forward(self, x: Tensor, attn_mask: Tensor | None = None, is_causal: bool = False) -> Tensor:
        if self.pruned:
            return self.forward_pruned(x, attn_mask=attn_mask, is_causal=is_causal)
        return self.block(x, attn_mask=attn_mask, is_causal=is_causal)

    def forward_pruned(self, x: Tensor, attn_mask: Tensor | None = None, is_causal: bool = False) -> Tensor:
        block, mlp = self.block, self.block.mlp
        x = x + block.drop_path1(block.ls1(block.attn(self.norm1(x), attn_mask=attn_mask,
                                                      is_causal=is_causal)))
        h = mlp.drop1(self.act(mlp.fc1(self.norm2(x))))
        x = x + block.drop_path2(block.ls2(mlp.drop2(mlp.fc2(mlp.norm(h)))))
        return self.post_norm(self.post_act(x))

    def merged(self) -> fx.GraphModule:
        with torch.no_grad():
            return _merged_module(self._merged_attention(), self._merged_mlp(),
                                  copy.deepcopy(self.post_act.new), *_bn_affine(self.post_norm.new))

    def _merged_attention(self) -> Attention:
        """A copy of the block's attention with norm1's BN folded into qkv (and gate) and ls1 into proj."""
        block = self.block
        attn = copy.deepcopy(block.attn)
        scale, shift = _bn_affine(self.norm1.new)
        attn.qkv = _linear_from(*reparam.fold_affine_before(attn.qkv.weight, attn.qkv.bias, scale, shift))
        if getattr(attn, "gate", None) is not None:
            attn.gate = _linear_from(*reparam.fold_affine_before(attn.gate.weight, attn.gate.bias,
                                                                 scale, shift))
        gamma = _gamma(block.ls1)
        if gamma is not None:
            attn.proj = _linear_from(*reparam.fold_scale(attn.proj.weight, attn.proj.bias, gamma))
        return attn

    def _merged_mlp(self) -> nn.Linear:
        """norm2's BN → fc1 → BN → fc2 → ls2, plus the shortcut, as one Linear C→C (W + I)."""
        mlp = self.block.mlp
        weight, bias = reparam.fold_affine_before(mlp.fc1.weight, mlp.fc1.bias, *_bn_affine(self.norm2.new))
        weight, bias = reparam.fold_scale(weight, bias, *_bn_affine(self.act.new))
        weight, bias = reparam.compose_linears(weight, bias, mlp.fc2.weight, mlp.fc2.bias)
        gamma = _gamma(self.block.ls2)
        if gamma is not None:
            weight, bias = reparam.fold_scale(weight, bias, gamma)
        weight = weight + torch.eye(weight.shape[0], dtype=weight.dtype, device=weight.device)
        return _linear_from(weight, bias)


def _merged_module(attn: nn.Module, mlp: nn.Linear, act: nn.Module, scale: Tensor,
                   shift: Tensor) -> fx.GraphModule:
    """``y = x + attn(x); act(mlp(y)) · scale + shift`` as a plain-torch GraphModule.

    ``attn_mask`` and ``is_causal`` pass through to the attention, as timm's ``Block`` accepts them.
    """
    root = nn.Module()
    root.attn, root.mlp, root.act = attn, mlp, act
    root.register_buffer("post_scale", scale.detach().clone())
    root.register_buffer("post_shift", shift.detach().clone())
    graph = fx.Graph()
    x = graph.placeholder("x", type_expr=torch.Tensor)
    mask = graph.placeholder("attn_mask", type_expr=Optional[torch.Tensor], default_value=None)  # noqa: UP045
    causal = graph.placeholder("is_causal", type_expr=bool, default_value=False)
    attended = graph.call_module("attn", (x,), {"attn_mask": mask, "is_causal": causal})
    y = graph.call_module("mlp", (graph.call_function(operator.add, (x, attended)),))
    y = graph.call_module("act", (y,))
    y = graph.call_function(operator.mul, (y, graph.get_attr("post_scale")))
    y = graph.call_function(operator.add, (y, graph.get_attr("post_shift")))
    graph.output(y)
    return fx.GraphModule(root, graph, class_name="MergedViTBlock")
