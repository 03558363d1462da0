"""The prunable network: which blocks run pruned, their progress λ, and merging the whole."""

from __future__ import annotations

import copy
from collections.abc import Iterable, Mapping

import torch
from torch import Tensor, nn

from deploykit.blocks.base import BlockInfo, PrunableBlock
from deploykit.blocks.registry import family_of
from deploykit.checks import is_int
from deploykit.errors import BlockSelectionError, MergeError, ModelError
from deploykit.macs import count_macs, eval_mode
from deploykit.shapes import DEFAULT_INPUT_SIZE, check_input_size
from deploykit.subnet import format_block_ranges


def prunable(model: nn.Module, *, input_size: int | tuple[int, int] = DEFAULT_INPUT_SIZE,
             in_chans: int = 3) -> PrunableNet:
    """Wrap a timm model so any subset of its blocks can run in pruned form and be merged."""
    return PrunableNet(model, input_size=input_size, in_chans=in_chans)


class PrunableNet(nn.Module):
    """A copy of ``model`` whose registered blocks are wrapped; ``forward`` runs the current subnet.

    ``blocks`` lists every block of a registered family in execution order, prunable or not.
    """

    def __init__(self, model: nn.Module, *, input_size: int | tuple[int, int] = DEFAULT_INPUT_SIZE,
                 in_chans: int = 3):
        super().__init__()
        self.input_size = check_input_size(input_size, error=ModelError)
        self.input_shape = (in_chans, *self.input_size)
        self.model = copy.deepcopy(model)
        found = _find_blocks(self.model, self.input_shape)
        if not found:
            raise ModelError(f"{type(model).__name__} has no block of a supported family "
                             "(ConvNeXt, ResNet, inverted residual, ViT); nothing to prune")
        self.blocks: list[BlockInfo] = []
        self._wrappers: dict[int, PrunableBlock] = {}
        for index, (name, module, in_shape, out_shape) in enumerate(found):
            self._add_block(index, name, module, in_shape, out_shape)
        if not self._wrappers:
            reasons = sorted({info.reason for info in self.blocks})
            raise ModelError(f"{type(model).__name__} has no prunable block: {'; '.join(reasons)}")

    def _add_block(self, index: int, name: str, module: nn.Module, in_shape, out_shape) -> None:
        family = family_of(module)
        reason = family.unsupported_reason(module, in_shape)
        macs = count_macs(module, in_shape)
        merged_macs = None
        if reason is None:
            wrapper = family(module, in_shape)
            with torch.no_grad():
                merged_macs = count_macs(wrapper.merged(), in_shape)
            self.model.set_submodule(name, wrapper)
            self._wrappers[index] = wrapper
        self.blocks.append(BlockInfo(index=index, name=name, family=family.family,
                                     block_type=type(module).__name__, in_shape=in_shape,
                                     out_shape=out_shape, macs=macs, merged_macs=merged_macs,
                                     prunable=reason is None, reason=reason or ""))

    @property
    def prunable_indices(self) -> tuple[int, ...]:
        return tuple(self._wrappers)

    @property
    def pruned(self) -> tuple[int, ...]:
        """Indices of the blocks that currently run in pruned form."""
        return tuple(i for i, w in self._wrappers.items() if w.pruned)

    def prune(self, indices: Iterable[int]) -> PrunableNet:
        """Run exactly these blocks in pruned form (λ keeps its value; new ones start at λ = 0)."""
        chosen = set(self._check_indices(indices))
        for index, wrapper in self._wrappers.items():
            if index in chosen and not wrapper.pruned:
                wrapper.set_progress(0.0)
            wrapper.pruned = index in chosen
        return self

    def set_progress(self, lam: float | Mapping[int, float]) -> PrunableNet:
        """λ for all pruned blocks (one float) or per block (index → float); 0 = original, 1 = pruned."""
        values = lam if isinstance(lam, Mapping) else {i: lam for i in self.pruned}
        for index, value in values.items():
            self._check_indices([index])
            if not 0.0 <= float(value) <= 1.0:
                raise BlockSelectionError(f"progress λ must be within [0, 1], got {value} for block {index}")
            if not self._wrappers[index].pruned:
                raise BlockSelectionError(f"block {index} is not pruned; prune it before setting its λ "
                                          f"(pruned: {list(self.pruned)})")
            self._wrappers[index].set_progress(float(value))
        return self

    def progress(self) -> dict[int, float]:
        """λ of every pruned block."""
        return {i: self._wrappers[i].lam for i in self.pruned}

    def wrapper(self, index: int) -> PrunableBlock:
        """The wrapper of one prunable block (for per-block profiling and tests)."""
        self._check_indices([index])
        return self._wrappers[index]

    def forward(self, x: Tensor) -> Tensor:
        return self.model(x)

    def merge(self) -> nn.Module:
        """The subnet as a plain timm/torch module: pruned blocks merged, the rest unchanged.

        Exact only in eval mode at λ = 1, so anything else is refused.
        """
        if self.training:
            raise MergeError("merge needs eval mode (BatchNorm statistics are folded); call net.eval() first")
        unfinished = {i: lam for i, lam in self.progress().items() if lam != 1.0}
        if unfinished:
            shown = ", ".join(f"{i}: λ={lam:g}" for i, lam in sorted(unfinished.items())[:8])
            raise MergeError(f"merge needs λ = 1 on every pruned block; not yet at 1: {shown} "
                             "(finish progressive training or call net.set_progress(1.0))")
        merged = copy.deepcopy(self.model)
        with torch.no_grad(), eval_mode(merged):
            for name, module in list(merged.named_modules()):
                if isinstance(module, PrunableBlock):
                    merged.set_submodule(name, module.merged() if module.pruned else module.block)
        return merged.eval()

    def _check_indices(self, indices: Iterable[int]) -> list[int]:
        indices = list(indices)
        for index in indices:
            if not is_int(index, least=0, most=len(self.blocks) - 1):
                raise BlockSelectionError(f"block index {index!r} is out of range: this model has blocks "
                                          f"0..{len(self.blocks) - 1}")
            if index not in self._wrappers:
                info = self.blocks[index]
                raise BlockSelectionError(f"block {index} ({info.name}) cannot be pruned: {info.reason}; "
                                          f"prunable blocks: {format_block_ranges(self.prunable_indices)}")
        return indices


def _find_blocks(model: nn.Module, input_shape: tuple[int, ...]):
    """Registered blocks in execution order with their input and output shapes (no batch dim)."""
    candidates = _registered_blocks(model)
    shapes: dict[str, tuple] = {}
    order: list[str] = []

    def record(name):
        def hook(module, args, output):
            order.append(name)
            shapes[name] = (tuple(args[0].shape[1:]), tuple(output.shape[1:]))
        return hook

    handles = [module.register_forward_hook(record(name)) for name, module in candidates]
    try:
        param = next(model.parameters())
        with torch.no_grad(), eval_mode(model):
            model(torch.zeros(1, *input_shape, dtype=param.dtype, device=param.device))
    except (RuntimeError, ValueError, AssertionError) as error:
        raise ModelError(f"the model does not run at input shape {input_shape}: {error}") from None
    finally:
        for handle in handles:
            handle.remove()
    modules = dict(candidates)
    return [(name, modules[name], *shapes[name]) for name in dict.fromkeys(order)]


def _registered_blocks(model: nn.Module) -> list[tuple[str, nn.Module]]:
    found, skip = [], ()
    for name, module in model.named_modules():
        if skip and name.startswith(skip):
            continue
        if family_of(module) is not None:
            found.append((name, module))
            skip = (name + ".",)
    return found

