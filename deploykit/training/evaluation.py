"""Top-1 and loss on held-out data, for any module, and for one subnet of a trained supernet.

``evaluate_subnet`` is the supernet accuracy proxy of the search (docs/method.md): the supernet's
shared weights with one subnet's gates, optionally with its BatchNorm statistics re-estimated
for that subnet on a few training batches first.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader

from deploykit.errors import ConfigError
from deploykit.macs import eval_mode
from deploykit.prune import PrunableNet
from deploykit.training.checkpoint import read_checkpoint
from deploykit.training.distributed import DistContext, all_reduce_sum, autocast
from deploykit.training.padding_taps import skip_padding_taps


@torch.no_grad()
def evaluate(model: nn.Module, loader: DataLoader, *, ctx: DistContext | None = None,
             dtype: torch.dtype | None = None) -> tuple[float, float]:
    """(top-1 in %, mean cross-entropy) over ``loader``; summed over ranks when distributed."""
    device = _device_of(model)
    ctx = ctx or DistContext(device=device)
    sums = torch.zeros(3, dtype=torch.float64, device=device)
    with eval_mode(model), skip_padding_taps(model):
        for images, labels in loader:
            images, labels = images.to(device, non_blocking=True), labels.to(device, non_blocking=True)
            with autocast(ctx, dtype):
                logits = model(images)
            sums[0] += F.cross_entropy(logits.float(), labels, reduction="sum").double()
            sums[1] += (logits.argmax(dim=-1) == labels).sum()
            sums[2] += labels.numel()
    loss, correct, count = all_reduce_sum(sums, ctx).tolist()
    if count == 0:
        raise ConfigError("the evaluation set is empty")
    return 100.0 * correct / count, loss / count


@dataclass
class Supernet:
    """A trained supernet: the prunable network with shared weights and what it was trained for."""

    net: PrunableNet
    model: str
    input_size: tuple[int, int]
    num_classes: int
    lam: float
    candidates: tuple[int, ...]
    path: Path | None = None


def load_supernet(path: str | Path) -> Supernet:
    """The supernet a ``deploykit train supernet`` run wrote (its ``supernet.pt`` or ``checkpoint.pt``)."""
    from deploykit.models import create_model
    from deploykit.prune import prunable

    state = read_checkpoint(path, what="supernet checkpoint")
    if state.get("kind") != "supernet":
        raise ConfigError(f"{path} is a {state.get('kind')} checkpoint, not a supernet")
    meta = state["meta"]
    model = create_model(meta["model"], num_classes=meta["num_classes"])
    net = prunable(model, input_size=tuple(meta["input_size"]))
    net.load_state_dict(state["state_dict"])
    return Supernet(net=net.eval(), model=meta["model"], input_size=tuple(meta["input_size"]),
                    num_classes=meta["num_classes"], lam=float(state["lam"]),
                    candidates=tuple(state["candidates"]), path=Path(path))


def evaluate_subnet(supernet: str | Path | Supernet | PrunableNet, pruned_indices: Iterable[int],
                    data_loader: DataLoader, *, lam: float | None = None,
                    calibration_loader: DataLoader | None = None,
                    calibration_batches: int = 20) -> tuple[float, float]:
    """(top-1 in %, loss) of the supernet running ``pruned_indices`` in pruned form at λ.

    λ defaults to the supernet's final global λ (1 after a full ramp); for a bare PrunableNet, 1.
    With ``calibration_loader``, BatchNorm statistics are first re-estimated for this subnet on
    ``calibration_batches`` of its batches (on a copy: the supernet itself is left unchanged).
    """
    if isinstance(supernet, (str, Path)):
        supernet = load_supernet(supernet)
    if isinstance(supernet, Supernet):
        net, lam = supernet.net, supernet.lam if lam is None else lam
    elif isinstance(supernet, PrunableNet):
        net, lam = supernet, 1.0 if lam is None else lam
    else:
        raise ConfigError("expected a supernet checkpoint path or a PrunableNet, "
                          f"got {type(supernet).__name__}")
    with gates(net, tuple(pruned_indices), lam):
        if calibration_loader is None:
            return evaluate(net, data_loader)
        return evaluate(recalibrated(net, calibration_loader, calibration_batches), data_loader)


@contextmanager
def gates(net: PrunableNet, pruned: tuple[int, ...], lam: float) -> Iterator[PrunableNet]:
    """Temporarily run ``pruned`` at λ; the previous pruned set and λs come back afterwards."""
    saved_pruned, saved_progress = net.pruned, net.progress()
    net.prune(pruned)
    if pruned:
        net.set_progress(lam)
    try:
        yield net
    finally:
        net.prune(saved_pruned)
        if saved_progress:
            net.set_progress(saved_progress)


@torch.no_grad()
def recalibrated(net: nn.Module, loader: DataLoader, batches: int) -> nn.Module:
    """A copy of ``net`` whose BatchNorm statistics are the plain average over ``batches`` batches."""
    copied = copy.deepcopy(net)
    norms = [m for m in copied.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    for norm in norms:
        norm.reset_running_stats()
        norm.momentum = None
    device = _device_of(copied)
    copied.train()
    with skip_padding_taps(copied):
        for count, (images, _) in enumerate(loader):
            if count >= batches:
                break
            copied(images.to(device))
    return copied.eval()


def _device_of(model: nn.Module) -> torch.device:
    param = next(model.parameters(), None)
    return param.device if param is not None else torch.device("cpu")
