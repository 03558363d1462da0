"""What every block family provides: the wrapper that runs a timm block as is or in its pruned form.

A family subclasses :class:`PrunableBlock` once per timm block class (registered in
:mod:`deploykit.blocks.registry`) and implements three things: why a given block cannot be pruned
(``unsupported_reason``), the pruned forward with its λ blends (``forward_pruned``), and the merged
plain-torch module (``merged``). Weights are shared with the wrapped block; the only new parameters
are the BatchNorms of the pruned form.
"""

from __future__ import annotations

import operator
from abc import ABC, abstractmethod
from dataclasses import asdict, dataclass
from typing import ClassVar

import torch.nn.functional as F
from torch import Tensor, fx, nn

from deploykit import reparam
from deploykit.blocks.blend import Blend


@dataclass(frozen=True)
class BlockInfo:
    """One block as ``deploykit blocks`` lists it. Shapes exclude the batch dimension."""

    index: int
    name: str
    family: str
    block_type: str
    in_shape: tuple[int, ...]
    out_shape: tuple[int, ...]
    macs: int
    merged_macs: int | None
    prunable: bool
    reason: str = ""

    def as_dict(self) -> dict:
        return asdict(self)


class PrunableBlock(nn.Module, ABC):
    """A timm block that runs original (``pruned = False``) or in its pruned form with progress λ."""

    family: ClassVar[str] = ""

    def __init__(self, block: nn.Module, in_shape: tuple[int, ...]):
        super().__init__()
        _disable_inplace(block)
        self.block = block
        self.in_shape = tuple(in_shape)
        self.pruned = False
        self.lam = 0.0

    @classmethod
    def unsupported_reason(cls, block: nn.Module, in_shape: tuple[int, ...]) -> str | None:
        """Why this block (at this input shape) has no exact pruned form, or None if it has one."""
        return None

    def set_progress(self, lam: float) -> None:
        """Set λ for every blend in this block (0 = original, 1 = fully pruned)."""
        self.lam = float(lam)
        for module in self.modules():
            if isinstance(module, Blend):
                module.lam = self.lam

    def forward(self, x: Tensor) -> Tensor:
        return self.forward_pruned(x) if self.pruned else self.block(x)

    @abstractmethod
    def forward_pruned(self, x: Tensor) -> Tensor:
        """The pruned form at the current λ."""

    @abstractmethod
    def merged(self) -> nn.Module:
        """The merged form: a module of plain torch classes equal to the pruned form at λ = 1 in eval mode."""


def _disable_inplace(block: nn.Module) -> None:
    # The pruned form feeds one tensor to both sides of a blend; an in-place activation would
    # overwrite it. Turning in-place off changes memory use only, never values.
    for module in block.modules():
        if getattr(module, "inplace", False) is True:
            module.inplace = False


def conv_unpadded(conv: nn.Conv2d, x: Tensor) -> Tensor:
    """Run ``conv`` without its padding (the pruned form pads the block input once instead)."""
    return F.conv2d(x, conv.weight, conv.bias, conv.stride, 0, conv.dilation, conv.groups)


def symmetric_padding(conv: nn.Conv2d) -> int | None:
    """The conv's padding if it is one int on every side and the conv is a plain ``nn.Conv2d``."""
    if type(conv) is not nn.Conv2d or conv.padding_mode != "zeros" or isinstance(conv.padding, str):
        return None
    pad_h, pad_w = conv.padding
    return pad_h if pad_h == pad_w else None


def plain_conv_reason(conv: nn.Module, name: str) -> str | None:
    """Why ``conv`` cannot be composed exactly (None if it can): the merge math assumes a plain
    ``nn.Conv2d`` with square kernel and stride, symmetric zero padding and no dilation."""
    if isinstance(getattr(conv, "padding", None), str) or "Same" in type(conv).__name__:
        return (f"{name} uses TF 'same' padding ({type(conv).__name__}), which is asymmetric; "
                "a merged conv needs symmetric zero padding")
    if type(conv) is not nn.Conv2d:
        return f"{name} is a {type(conv).__name__}, not a plain Conv2d"
    if symmetric_padding(conv) is None:
        return f"{name} has asymmetric or non-zero padding"
    if conv.dilation != (1, 1):
        return f"{name} is dilated (dilation {conv.dilation[0]})"
    if conv.kernel_size[0] != conv.kernel_size[1] or conv.stride[0] != conv.stride[1]:
        return f"{name} has a non-square kernel or stride"
    return None


def fold_conv_bn(conv: nn.Conv2d, bn: nn.BatchNorm2d):
    """Kernel and bias of ``bn(conv(x))`` in eval mode (timm's BatchNormAct2d: its norm part only)."""
    return reparam.fold_bn(conv.weight, conv.bias, bn.running_mean, bn.running_var, bn.weight, bn.bias,
                           bn.eps)


def conv_from(weight: Tensor, bias: Tensor | None, *, stride: int = 1, padding: int = 0,
              groups: int = 1) -> nn.Conv2d:
    """A plain ``nn.Conv2d`` holding the given (merged) kernel."""
    out_ch, in_per_group, kernel_h, kernel_w = weight.shape
    conv = nn.Conv2d(in_per_group * groups, out_ch, (kernel_h, kernel_w), stride=stride, padding=padding,
                     groups=groups, bias=bias is not None, dtype=weight.dtype, device=weight.device)
    conv.weight.data.copy_(weight)
    if bias is not None:
        conv.bias.data.copy_(bias)
    return conv


def residual_module(body: nn.Module, post: nn.Module | None = None,
                    name: str = "MergedResidual") -> fx.GraphModule:
    """A plain-torch module computing ``post(body(x) + x)``.

    Built as a ``torch.fx.GraphModule`` so that it pickles, scripts and exports without deploykit.
    """
    root = nn.Module()
    root.body = body
    graph = fx.Graph()
    x = graph.placeholder("x")
    y = graph.call_function(operator.add, (graph.call_module("body", (x,)), x))
    if post is not None:
        root.post = post
        y = graph.call_module("post", (y,))
    graph.output(y)
    return fx.GraphModule(root, graph, class_name=name)
