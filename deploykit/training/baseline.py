"""``deploykit train baseline``: train the original model (from scratch, or fine-tune local weights).

Pretrained weights cannot be downloaded, so the original that pruning starts from is trained here:
from random initialization, or from a local checkpoint whose classifier is re-initialized when its
class count differs from the data's. Writes ``model.pt`` (usable as ``--weights``), ``log.csv``,
``checkpoint.pt`` and ``result.json`` into ``run.out``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from deploykit.data import DataConfig, eval_loader
from deploykit.macs import count_macs, count_params
from deploykit.training.build import (
    data_meta,
    original_model,
    require_weights,
    stage_data,
    validate_plain,
    write_json,
)
from deploykit.training.checkpoint import FORMAT, save_atomic
from deploykit.training.config import DistillConfig, OptimConfig, RunConfig, stage_optim
from deploykit.training.loop import Policy, Task, fit


@dataclass(frozen=True)
class BaselineResult:
    """Final validation figures of a baseline run and where its weights are."""

    out: Path
    weights_path: Path
    top1: float
    loss: float
    params: int
    macs: int
    wall_s: float
    history: tuple[dict[str, Any], ...]

    def summary(self) -> str:
        return f"baseline top-1 {self.top1:.2f}%: {self.weights_path}"


def train_baseline(model: str, *, data: DataConfig, run: RunConfig, optim: OptimConfig | None = None,
                   weights: str | Path | None = None, distill: DistillConfig | None = None,
                   on_epoch_end: Callable[[dict[str, Any]], None] | None = None) -> BaselineResult:
    """Train ``model`` on ``data`` with cross-entropy; the seed fixes initialization and data order.

    With ``distill``, the loss adds distillation from a frozen copy of the starting ``weights``: subnet
    training's recipe without pruning, so that an unpruned model trained on for the same epochs is an
    equal-budget reference for the pruned ones (``deploykit run``'s "original, continued")."""
    optim = optim or stage_optim("baseline")
    if distill is not None:
        require_weights(weights, "distilled baseline")
    with stage_data(data, device=run.device, run=run) as (ctx, datasets):
        torch.manual_seed(run.seed)
        net = original_model(model, num_classes=datasets.num_classes, weights=weights, new_head=True,
                             input_size=data.input_size, ctx=ctx)
        teacher = None if distill is None else original_model(
            model, num_classes=datasets.num_classes, weights=weights, new_head=False,
            input_size=data.input_size, ctx=ctx)
        meta = _meta(model, data, datasets.num_classes, weights)
        task = Task(kind="baseline", student=net, datasets=datasets, meta=meta,
                    make_policy=lambda steps_per_epoch: Policy(), validate=validate_plain,
                    teacher=teacher, distill=distill)
        fitted = fit(task, run=run, optim=optim, ctx=ctx, on_epoch_end=on_epoch_end)
        last = fitted.history[-1]
        result = _result(net, data, run.out, last, wall_s=fitted.wall_s, history=tuple(fitted.history))
        if ctx.is_main:
            _write(result, net, meta, train_wall_s=round(fitted.wall_s, 3), epochs=run.epochs,
                   distill=vars(distill) if distill is not None else None)
            ctx.log(f"baseline {model}: val top-1 {result.top1:.2f}%, loss {result.loss:.4f}; "
                    f"wrote {result.weights_path}, {run.out / 'log.csv'}, {run.out / 'result.json'}")
        return result


def evaluate_original(model: str, *, data: DataConfig, weights: str | Path, out: str | Path,
                      eval_batch_size: int = 256) -> BaselineResult:
    """Use trained local ``weights`` as the original instead of training one: load them (their
    classifier must fit the data's classes), measure top-1 and loss, and write ``model.pt`` and
    ``result.json`` exactly as :func:`train_baseline` would, so that later stages cannot tell."""
    out = Path(out)
    with stage_data(data, device="cpu") as (ctx, datasets):
        net = original_model(model, num_classes=datasets.num_classes, weights=weights, new_head=False,
                             input_size=data.input_size, ctx=ctx)
        scores = validate_plain(net, eval_loader(datasets.val, batch_size=eval_batch_size), ctx, None)
        meta = _meta(model, data, datasets.num_classes, weights)
        result = _result(net, data, out, scores, wall_s=0.0, history=())
        _write(result, net, meta, train_wall_s=0.0, epochs=0, distill=None)
        ctx.log(f"original {model} from {weights}: val top-1 {result.top1:.2f}%, loss {result.loss:.4f} "
                f"(not trained here); wrote {result.weights_path}, {out / 'result.json'}")
        return result


def _meta(model: str, data: DataConfig, num_classes: int, weights: str | Path | None) -> dict[str, Any]:
    return {"model": model, "input_size": data.input_size, "num_classes": num_classes,
            "weights": str(weights) if weights is not None else None, "data": data_meta(data)}


def _result(net: torch.nn.Module, data: DataConfig, out: Path, scores: dict[str, float], *, wall_s: float,
            history: tuple[dict[str, Any], ...]) -> BaselineResult:
    return BaselineResult(out=out, weights_path=out / "model.pt", top1=scores["val_top1"],
                          loss=scores["val_loss"], params=count_params(net),
                          macs=count_macs(net, (3, *data.input_size)), wall_s=wall_s, history=history)


def _write(result: BaselineResult, net: torch.nn.Module, meta: dict[str, Any], **extra: Any) -> None:
    """``model.pt`` (the weights, usable as ``--weights``) and ``result.json``."""
    save_atomic({"format": FORMAT, "kind": "baseline-weights", "meta": meta,
                 "state_dict": net.state_dict()}, result.weights_path)
    write_json({"kind": "baseline", **meta, "top1": result.top1, "loss": result.loss,
                "params": result.params, "macs": result.macs, **extra,
                "weights_path": result.weights_path}, result.out / "result.json")
