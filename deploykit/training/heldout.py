"""Held-out data that judges subnets: what the search's data-driven accuracy proxies evaluate.

:class:`ProxyData` names the data and opens a checkpoint (a trained supernet, or plain weights of the
table's model) as a :class:`HeldOutEvaluator`: (top-1 %, loss) per subnet on held-out batches, cached.
The search receives a ProxyData and calls :meth:`ProxyData.open`; it never imports training
(``deploykit._layers``).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from deploykit.checks import require_int
from deploykit.errors import ConfigError
from deploykit.progress import Progress, silent


@dataclass(frozen=True)
class ProxyData:
    """Held-out data for the data-driven proxies (see ``deploykit.data``)."""

    name: str
    val_limit: int | None = None
    batch_size: int = 256
    input_size: tuple[int, int] | None = None   # default: the supernet's training size, else the table's
    recalibrate_batches: int = 0                # re-estimate BatchNorm statistics per subnet (supernet)

    def __post_init__(self) -> None:
        require_int("--batch-size", self.batch_size, least=1)
        if self.val_limit is not None and self.val_limit <= 0:
            raise ConfigError(f"--val-limit must be positive, got {self.val_limit}")
        if self.recalibrate_batches < 0:
            raise ConfigError(f"--recalibrate-batches must be ≥ 0, got {self.recalibrate_batches}")

    def open(self, checkpoint: str | Path, *, model: str, table_size: tuple[int, int], need_supernet: bool,
             progress: Progress = silent) -> HeldOutEvaluator:
        """``checkpoint`` judged per subnet on this data; ``model`` and ``table_size`` are the latency
        table's (a supernet of another model is refused; the size is the default resolution)."""
        return HeldOutEvaluator(checkpoint, self, model=model, table_size=table_size,
                               need_supernet=need_supernet, progress=progress)


class HeldOutEvaluator:
    """A network (supernet or prunable plain model) evaluated per subnet on held-out batches, cached."""

    def __init__(self, checkpoint: str | Path, data: ProxyData, *, model: str, table_size: tuple[int, int],
                 need_supernet: bool, progress: Progress):
        from deploykit.data import DataConfig, eval_loader, load_datasets
        from deploykit.training.evaluation import load_supernet

        say = progress
        self.checkpoint, self.data = str(checkpoint), data
        supernet = _is_supernet(checkpoint)
        if need_supernet and not supernet:
            raise ConfigError(f"supernet:{checkpoint} needs a supernet checkpoint from `deploykit train "
                              "supernet` (its supernet.pt); for plain weights use sensitivity:CKPT")
        self.supernet = load_supernet(checkpoint) if supernet else None
        if self.supernet is not None and self.supernet.model != model:
            raise ConfigError(f"{checkpoint} is a supernet of {self.supernet.model} but the table is "
                              f"for {model}")
        size = data.input_size or (self.supernet.input_size if self.supernet else table_size)
        datasets = load_datasets(DataConfig(data.name, input_size=tuple(size), val_limit=data.val_limit))
        say(f"proxy data: {datasets.describe}")
        if tuple(size) != tuple(table_size):
            say(f"note: the proxy is evaluated at {size[0]}x{size[1]}, the latency table is for "
                f"{table_size[0]}x{table_size[1]}")
        self.input_size = tuple(size)
        self.loader = eval_loader(datasets.val, batch_size=data.batch_size)
        self.calibration = eval_loader(datasets.train, batch_size=data.batch_size) \
            if data.recalibrate_batches else None
        if self.supernet is not None:
            if self.supernet.num_classes != datasets.num_classes:
                raise ConfigError(f"{checkpoint} was trained for {self.supernet.num_classes} classes but "
                                  f"--data {data.name} has {datasets.num_classes}")
            self.net, self.prunable = self.supernet, set(self.supernet.candidates)
        else:
            self.net = _plain_net(checkpoint, model, datasets.num_classes, self.input_size, say)
            self.prunable = set(self.net.prunable_indices)
        self.cache: dict[tuple[int, ...], tuple[float, float]] = {}

    def __call__(self, pruned: tuple[int, ...]) -> tuple[float, float]:
        """(top-1 %, loss) of the subnet with ``pruned`` in pruned form."""
        from deploykit.training.evaluation import evaluate_subnet

        key = tuple(sorted(pruned))
        if key not in self.cache:
            self.cache[key] = evaluate_subnet(self.net, key, self.loader, calibration_loader=self.calibration,
                                              calibration_batches=self.data.recalibrate_batches)
        return self.cache[key]

    @property
    def evaluations(self) -> int:
        """How many distinct subnets were evaluated on data."""
        return len(self.cache)

    @property
    def lam(self) -> float | None:
        """The supernet's λ (None for plain weights)."""
        return self.supernet.lam if self.supernet is not None else None

    def restrict(self, candidates: tuple[int, ...], what: str) -> tuple[int, ...]:
        """The candidates this network can run pruned: a supernet knows only the blocks it was trained to
        prune; plain weights must prune every candidate of the table."""
        kept = tuple(c for c in candidates if c in self.prunable)
        if self.supernet is None and len(kept) < len(candidates):
            outside = [c for c in candidates if c not in self.prunable]
            raise ConfigError(f"{what}: block(s) {outside} of the table cannot be pruned in "
                              f"{self.checkpoint}'s model: the table is from another model definition")
        if not kept:
            raise ConfigError(f"{self.checkpoint} was trained to prune none of the candidate blocks "
                              f"{list(candidates)}")
        return kept

    def describe(self) -> dict[str, Any]:
        return {"checkpoint": self.checkpoint, "data": self.data.name,
                "val_limit": self.data.val_limit, "input_size": list(self.input_size)}


def _is_supernet(path: str | Path) -> bool:
    from deploykit.checkpoints import read_torch_file

    state = read_torch_file(path, what="checkpoint", error=ConfigError)
    return isinstance(state, dict) and state.get("kind") == "supernet"


def _plain_net(checkpoint: str | Path, model: str, num_classes: int, size: tuple[int, int], say: Progress):
    from deploykit.models import create_model
    from deploykit.prune import prunable

    module = create_model(model, num_classes=num_classes, input_size=size, weights=checkpoint,
                          say=lambda note: say(f"weights: {note}"))
    return prunable(module, input_size=size).eval()
