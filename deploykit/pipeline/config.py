"""The settings of one ``deploykit run`` (:class:`PipelineConfig`), checked when built, and what
follows from them before anything runs: the targets, the device agent of each, the run directory's name."""

from __future__ import annotations

import re
from dataclasses import MISSING, asdict, dataclass, field, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any

from deploykit.checks import require_int
from deploykit.errors import ConfigError, one_line
from deploykit.latency.options import EndToEndOptions
from deploykit.protocol import Protocol
from deploykit.shapes import check_input_size
from deploykit.targets import load_target
from deploykit.training.config import METHODS, RunConfig, SubnetConfig
from deploykit.verify.timing import DEFAULT_ROUNDS

if TYPE_CHECKING:
    from deploykit.search.budget import Budget


@dataclass(frozen=True)
class PipelineConfig:
    """What ``deploykit run`` does. The defaults are the embedded demo: a small ConvNeXt on the bundled
    MNIST subset at 32×32 on this machine's onnxruntime CPU target (a few minutes on 2 cores). Training
    settings it does not name (learning rates, warm-up, distillation) are the training stages' defaults
    (:mod:`deploykit.training.config`)."""

    model: str = "convnext_atto"
    target: str = "cpu-ort"
    data: str = "mnist5k"
    strict_images: bool = False               # an undecodable image is an error, not skipped
    input_size: tuple[int, int] = (32, 32)
    budgets: tuple[str, ...] = ("0.8", "0.6")
    weights: str | None = None
    baseline_epochs: int = 4
    supernet_epochs: int = 2
    subnet_epochs: int = 2
    method: str = SubnetConfig.method
    batch_size: int = RunConfig.batch_size
    train_limit: int | None = None
    val_limit: int | None = None
    proxy_val_limit: int | None = 256
    seed: int = RunConfig.seed
    device: str = RunConfig.device
    train_threads: int | None = RunConfig.threads
    latency_batch: int | None = None          # None: the target's batch
    rounds: int = DEFAULT_ROUNDS
    protocol: Protocol = field(default_factory=Protocol)
    end_to_end: EndToEndOptions = field(default_factory=EndToEndOptions)   # how the profile ends (its fit)
    table: str | None = None                  # a table measured elsewhere, used instead of profiling

    def __post_init__(self) -> None:
        object.__setattr__(self, "input_size", check_input_size(self.input_size))
        from deploykit.search.budget import parse_budget

        object.__setattr__(self, "target", ",".join(_target_names(self.target)))
        budgets = tuple(str(b).strip() for b in self.budgets)
        if not budgets or not all(budgets):
            raise ConfigError("give at least one budget, e.g. --budgets 0.8,0.6")
        parsed = [parse_budget(b) for b in budgets]
        labels = [budget_label(b) for b in parsed]
        if len(set(labels)) != len(labels):
            raise ConfigError(f"a budget is listed twice: {', '.join(budgets)}")
        object.__setattr__(self, "budgets", budgets)
        if len(self.targets) > 1:
            self._check_several_targets(parsed)
        if self.method not in METHODS:
            raise ConfigError(f"unknown method {self.method!r}; choose one of {', '.join(METHODS)}")
        for name in ("baseline_epochs", "supernet_epochs", "subnet_epochs", "batch_size", "rounds"):
            require_int(name.replace("_", " "), getattr(self, name), least=1)
        for name in ("train_limit", "val_limit", "proxy_val_limit", "train_threads", "latency_batch"):
            if getattr(self, name) is not None:
                require_int(name.replace("_", " "), getattr(self, name), least=1)
        if not isinstance(self.protocol, Protocol):
            object.__setattr__(self, "protocol", Protocol.from_dict(self.protocol))
        if not isinstance(self.end_to_end, EndToEndOptions):
            try:
                object.__setattr__(self, "end_to_end", EndToEndOptions(**dict(self.end_to_end)))
            except TypeError as error:
                raise ConfigError(f"malformed end_to_end settings: {error}") from None

    @property
    def targets(self) -> tuple[str, ...]:
        """The target names, in the order given (``--target a,b``)."""
        return tuple(self.target.split(","))

    def _check_several_targets(self, budgets: list[Budget]) -> None:
        """What a joint run cannot take: milliseconds (each target has its own) and one target's table."""
        for text, budget in zip(self.budgets, budgets):
            if budget.unit == "ms":
                raise ConfigError(f"budget {text} is in milliseconds, but {len(self.targets)} targets "
                                  f"({self.target}) each have their own: give fractions of each target's "
                                  "unpruned latency (0.8) or percentages (80%)")
        if self.table is not None:
            raise ConfigError(f"--table gives one target's latency table; with several targets "
                              f"({self.target}) each is profiled: drop --table, or run one target")

    def as_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["input_size"], data["budgets"] = list(self.input_size), list(self.budgets)
        data["protocol"] = self.protocol.as_dict()
        data["end_to_end"] = self.end_to_end.as_dict()
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any], *, source: str) -> PipelineConfig:
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ConfigError(f"{source}: unknown setting(s) {', '.join(unknown)}")
        budgets = data.get("budgets", [])
        if not isinstance(budgets, list):
            raise ConfigError(f"{source}: budgets must be a list, got {budgets!r}")
        try:
            return cls(**{**data, "budgets": tuple(budgets)})
        except (TypeError, ValueError, AttributeError) as error:  # a setting of the wrong JSON type
            raise ConfigError(f"{source}: malformed settings: {one_line(error, 200)}") from None

    def differences(self, other: PipelineConfig) -> list[str]:
        """Settings that differ, budgets aside (a run may gain budgets)."""
        mine, theirs = self.as_dict(), other.as_dict()
        return [f"{key} {theirs[key]!r} → {mine[key]!r}" for key in mine
                if key != "budgets" and mine[key] != theirs[key]]


def demo_defaults() -> dict[str, Any]:
    """The default settings, without validating them (cheap: for ``--help`` texts)."""
    return {f.name: f.default_factory() if f.default_factory is not MISSING else f.default
            for f in fields(PipelineConfig)}


def budget_label(budget: Budget) -> str:
    """A folder-safe name: 0.8 → ``0.8``, 12 ms → ``12ms``."""
    return f"{budget.value:g}ms" if budget.unit == "ms" else f"{budget.value:g}"


def device_urls(config: PipelineConfig, device: str | None) -> dict[str, str | None]:
    """Which device agent measures which target, from ``--device``: one ``URL`` (a run of one target),
    or ``TARGET=URL[,TARGET=URL…]``, each naming one of the run's targets; every target of the run →
    its agent's URL, None where it is measured here (``{}`` without ``--device``). Checked before
    connecting: a one-line ConfigError names what is wrong."""
    if device is None:
        return {}
    names = {name: load_target(name).name for name in config.targets}
    urls: dict[str, str | None] = dict.fromkeys(names.values())
    items = [item.strip() for item in device.split(",")]
    if len(items) == 1 and not _names_a_target(items[0]):
        if len(config.targets) > 1:
            raise unnamed_agent_error(config, items[0])
        return dict.fromkeys(names.values(), items[0])
    for item in items:
        key, _, url = (part.strip() for part in item.partition("="))
        target = names.get(key) or (key if key in urls else None)
        if not _names_a_target(item) or target is None or not url:
            raise ConfigError(f"--device {device}: {item!r} is not TARGET=URL for a target of this run "
                              f"({', '.join(config.targets)})")
        if urls[target] is not None:
            raise ConfigError(f"--device {device} names target {target} twice")
        urls[target] = url
    return urls


def unnamed_agent_error(config: PipelineConfig, url: str) -> ConfigError:
    return ConfigError(f"a device agent serves one target: with several targets ({config.target}) name "
                       f"the one it measures, --device TARGET={url} (the others are measured here)")


def _names_a_target(item: str) -> bool:
    """``TARGET=URL`` rather than a bare URL (whose query may hold ``=`` after its ``://``)."""
    head, sep, _ = item.partition("=")
    return bool(sep) and "://" not in head


def default_run_dir(config: PipelineConfig) -> Path:
    data = re.sub(r"[^A-Za-z0-9.-]+", "_", config.data).strip("_")
    return Path("runs") / f"{config.model}-{data}-{config.target.replace(',', '+')}"


def _target_names(text: Any) -> list[str]:
    """``a,b`` → [a, b]: no empty name, none twice (a one-line ConfigError otherwise)."""
    if not isinstance(text, str):
        raise ConfigError(f"target must be a name or a comma-separated list of names, got {text!r}")
    names = [name.strip() for name in text.split(",")]
    if not all(names):
        raise ConfigError(f"--target {text!r} has an empty name: give targets as a,b")
    twice = sorted({name for name in names if names.count(name) > 1})
    if twice:
        raise ConfigError(f"--target {text} lists {', '.join(twice)} twice: give each target once")
    return names
