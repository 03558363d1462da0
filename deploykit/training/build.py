"""What every stage builds before training: the process settings and data, the original model with its
weights, the plain validation, a model with blocks dropped outright (the plain depth-pruning baseline),
and how a stage writes its result."""

from __future__ import annotations

import copy
import json
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader

from deploykit.data import DataConfig, Datasets, load_datasets
from deploykit.errors import BlockSelectionError, ConfigError
from deploykit.fileio import write_text_atomic
from deploykit.prune import PrunableNet
from deploykit.shapes import format_shape
from deploykit.training.checkpoint import plain
from deploykit.training.config import RunConfig
from deploykit.training.distributed import DistContext, distributed
from deploykit.training.evaluation import evaluate


def set_threads(run: RunConfig) -> None:
    if run.threads is not None:
        torch.set_num_threads(run.threads)


@contextmanager
def stage_data(data: DataConfig, *, device: str, run: RunConfig | None = None,
               ) -> Iterator[tuple[DistContext, Datasets]]:
    """How every stage begins: the (distributed) context on ``device``, ``run``'s CPU threads, and the
    data, described in the log."""
    with distributed(device) as ctx:
        if run is not None:
            set_threads(run)
        datasets = load_datasets(data)
        ctx.log(f"data: {datasets.describe}")
        yield ctx, datasets


def original_model(name: str, *, num_classes: int, weights: str | Path | None, new_head: bool,
                   input_size: tuple[int, int], ctx: DistContext) -> nn.Module:
    """The timm model ``name`` for ``num_classes`` classes at ``input_size`` (which ViT/DeiT are built
    for), with ``weights`` loaded if given."""
    from deploykit.models import create_model

    return create_model(name, num_classes=num_classes, weights=weights, new_head=new_head,
                        input_size=input_size, say=lambda note: ctx.log(f"weights: {note}"))


def require_weights(weights: str | Path | None, stage: str) -> str | Path:
    if weights is None:
        raise ConfigError(f"{stage} training starts from the trained original: pass --weights FILE "
                          "(train one with `deploykit train baseline`)")
    return weights


def validate_plain(model: nn.Module, loader: DataLoader, ctx: DistContext,
                   dtype: torch.dtype | None) -> dict[str, float]:
    top1, loss = evaluate(model, loader, ctx=ctx, dtype=dtype)
    return {"val_loss": loss, "val_top1": top1}


def dropped(model: nn.Module, net: PrunableNet, indices: tuple[int, ...]) -> nn.Module:
    """A copy of ``model`` with the blocks ``indices`` (of ``net.blocks``) replaced by identities.

    Only a block whose output has the shape of its input can simply be removed.
    """
    for index in indices:
        if not 0 <= index < len(net.blocks):
            raise BlockSelectionError(f"block index {index} is out of range: this model has blocks "
                                      f"0..{len(net.blocks) - 1}")
    reshaping = [net.blocks[i] for i in indices if net.blocks[i].in_shape != net.blocks[i].out_shape]
    if reshaping:
        named = ", ".join(f"{b.index} ({b.name}: {format_shape(b.in_shape)} → {format_shape(b.out_shape)})"
                          for b in reshaping)
        raise BlockSelectionError(f"--method drop cannot remove block(s) {named}: their output shape "
                                  "differs from their input shape; choose blocks that keep their shape")
    result = copy.deepcopy(model)
    for index in indices:
        result.set_submodule(net.blocks[index].name, nn.Identity())
    return result


def data_meta(data) -> dict[str, Any]:
    return plain(asdict(data))


def write_json(data: dict[str, Any], path: Path) -> Path:
    return write_text_atomic(path, json.dumps(plain(data), indent=2) + "\n")


def write_result(result: Any, *, kind: str, model: str, **extra: Any) -> Path:
    """``result.json`` in ``result.out``: the stage's result dataclass without its per-epoch history."""
    summary = {key: value for key, value in vars(result).items() if key != "history"}
    return write_json({"kind": kind, "model": model, **summary, **extra}, result.out / "result.json")
