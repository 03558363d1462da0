"""Targets: YAML files naming a piece of hardware, the runtime that serves it, and how to time it.

A target file (``targets/<name>.yaml``) holds exactly these keys::

    name: amd-mi100                       # optional; defaults to the file name without .yaml
    description: one line for humans
    device: AMD Instinct MI100            # the hardware the target stands for
    runtime: onnxruntime                  # onnxruntime | openvino | tensorrt | migraphx
    provider: MIGraphXExecutionProvider   # onnxruntime only: the execution provider (required there)
    runtime_device: null                  # OpenVINO device ("CPU"), MIGraphX target ("gpu"), GPU index
    precision: fp16                       # fp32 | fp16 | int8
    batch: 128
    input_size: [224, 224]                # height, width (or one int)
    threads: auto                         # intra-op CPU threads: N, null (the runtime's default) or auto
    spinning: auto                        # onnxruntime CPU: idle threads spin (true) or sleep (false)
    streams: null                         # OpenVINO: NUM_STREAMS
    pinning: null                         # OpenVINO: ENABLE_CPU_PINNING
    host_arch: null                       # x86_64 | aarch64: the machine must be of this architecture
    device_match: MI100                   # the device name found here must contain this (case-insensitive)
    peak:                                 # for roofline estimates only
      flops: {fp32: 46.1e+12, fp16: 184.6e+12}   # FLOP/s per precision
      bandwidth: 1.2288e+12                      # bytes/s
      source: where the figures come from

The run settings (``threads``, ``spinning``, ``streams``, ``pinning``; see
:mod:`deploykit.runtimes.settings`) may be ``auto``: ``deploykit profile`` chooses them by a probe and
the table records the choice. Which settings a runtime honours is the backend's business.

Unknown keys and bad values are ConfigErrors naming the file and the key. Parsing is pure: it asks
no runtime. Whether the named runtime exists and can serve the target as written (its provider,
runtime_device, precision) is the runtimes' business (:func:`deploykit.runtimes.check_target`), as is
whether the target can run on this machine (:func:`deploykit.runtimes.availability`).

Named targets are read from ``$DEPLOYKIT_TARGETS_DIR`` when it is set, else from the shipped ones: the
package data ``deploykit/_data/targets`` of an installed wheel or sdist (setup.py maps the repository's
top-level ``targets/`` there at build time), or that top-level folder itself when deploykit runs from a
source checkout or an editable install. :func:`target_source` says which of these a target came from.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from dataclasses import asdict, dataclass, replace
from importlib import resources
from pathlib import Path

import yaml

from deploykit.checks import int_rule, is_int
from deploykit.errors import ConfigError
from deploykit.runsettings import AUTO, SETTING_KEYS, RunSettings, setting_problem
from deploykit.shapes import SIZE_RULE, input_size_or_none

PRECISIONS = ("fp32", "fp16", "int8")
ARCHES = ("x86_64", "aarch64")
TARGETS_ENV = "DEPLOYKIT_TARGETS_DIR"
_CHECKOUT_TARGETS = Path(__file__).resolve().parent.parent / "targets"  # a source checkout's own folder
# Where a target came from (target_source): the shipped ones, $DEPLOYKIT_TARGETS_DIR, or a YAML path.
SOURCE_SHIPPED, SOURCE_ENV, SOURCE_FILE = "shipped", f"${TARGETS_ENV}", "file"


@dataclass(frozen=True)
class Peak:
    """A device's peak figures, for roofline estimates only."""

    flops: dict[str, float]  # precision → FLOP/s
    bandwidth: float  # bytes/s
    source: str  # where the figures come from (datasheet URL/name)


@dataclass(frozen=True)
class Target:
    """One deployment target; see the module docstring for the meaning of each field."""

    name: str
    description: str
    device: str
    runtime: str
    provider: str | None
    runtime_device: str | None
    precision: str
    batch: int
    input_size: tuple[int, int]
    threads: int | None
    peak: Peak
    path: str
    host_arch: str | None = None
    device_match: str | None = None
    spinning: bool | None = None
    streams: int | None = None
    pinning: bool | None = None
    auto_settings: tuple[str, ...] = ()  # the settings the file leaves to the probe ("auto")

    @property
    def settings(self) -> RunSettings:
        """The run settings as given (an ``auto`` one reads as the runtime's default, None)."""
        return RunSettings(threads=self.threads, spinning=self.spinning, streams=self.streams,
                           pinning=self.pinning)

    def with_settings(self, settings: RunSettings) -> Target:
        """This target with ``settings`` (nothing left to ``auto``)."""
        return replace(self, **settings.as_dict(), auto_settings=())

    @property
    def input_shape(self) -> tuple[int, int, int, int]:
        """The default full input: (batch, 3, height, width)."""
        return (self.batch, 3, *self.input_size)

    def as_dict(self) -> dict:
        """The target as its YAML keys (plus ``path``); :func:`target_from_dict` reads it back."""
        data = asdict(self)
        data["input_size"] = list(self.input_size)
        for key in data.pop("auto_settings"):
            data[key] = AUTO
        return data

    def error(self, key: str, message: str) -> ConfigError:
        """A ConfigError naming this target's file and ``key``, as a bad value in the file reads."""
        return ConfigError(f"{_display(Path(self.path))}: {key}: {message}")


def targets_dir() -> Path:
    """Where named targets live: ``$DEPLOYKIT_TARGETS_DIR`` if set, else :func:`shipped_targets_dir`."""
    return Path(os.environ[TARGETS_ENV]) if os.environ.get(TARGETS_ENV) else shipped_targets_dir()


def shipped_targets_dir() -> Path:
    """The targets shipped with deploykit: the installed package's data (a wheel or sdist install), else
    the top-level ``targets/`` of the source checkout this package runs from."""
    packaged = resources.files(__package__).joinpath("_data", "targets")
    return Path(str(packaged)) if packaged.is_dir() else _CHECKOUT_TARGETS


def targets_source_line() -> str:
    """Where :func:`list_targets` reads from, for people: ``shipped with deploykit (DIR)`` or
    ``from $DEPLOYKIT_TARGETS_DIR (DIR)``."""
    label = f"from {SOURCE_ENV}" if os.environ.get(TARGETS_ENV) else "shipped with deploykit"
    return f"{label} ({targets_dir()})"


def target_source(target: Target) -> str:
    """Where ``target`` was read from: :data:`SOURCE_SHIPPED`, :data:`SOURCE_ENV` or :data:`SOURCE_FILE`."""
    folder = Path(target.path).parent.resolve()
    if folder == shipped_targets_dir().resolve():
        return SOURCE_SHIPPED
    return SOURCE_ENV if os.environ.get(TARGETS_ENV) and folder == targets_dir().resolve() else SOURCE_FILE


def load_target(name_or_path: str | Path) -> Target:
    """A target by name (``targets/<name>.yaml``) or by the path of a YAML file."""
    text = str(name_or_path)
    path = Path(text).expanduser()
    if text.endswith((".yaml", ".yml")) or os.sep in text or path.is_file():
        if not path.is_file():
            raise ConfigError(f"target file not found: {path}")
        return _load_file(path)
    candidate = targets_dir() / f"{text}.yaml"
    if not candidate.is_file():
        known = ", ".join(sorted(p.stem for p in targets_dir().glob("*.yaml"))) or "none"
        raise ConfigError(f"unknown target {text!r}; known targets: {known} (or give a YAML file path)")
    return _load_file(candidate)


def list_targets() -> list[Target]:
    """Every target in :func:`targets_dir`, sorted by name."""
    return sorted((_load_file(p) for p in targets_dir().glob("*.yaml")), key=lambda t: t.name)


def target_from_dict(data: Mapping, *, path: str = "<dict>") -> Target:
    """Validate a mapping of target keys (as in a YAML file, optionally with ``path``) into a Target."""
    data = dict(data)
    path = str(data.pop("path", path))
    return _Parser(path).parse(data, default_name=Path(path).stem)


def _load_file(path: Path) -> Target:
    shown = _display(path)
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f" (line {mark.line + 1})" if mark is not None else ""
        raise ConfigError(f"{shown}: not valid YAML{where}: {getattr(error, 'problem', error)}") from None
    except OSError as error:
        raise ConfigError(f"{shown}: cannot read: {error.strerror}") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"{shown}: expected a mapping of target keys, got {type(raw).__name__}")
    return _Parser(shown, path=str(path.resolve())).parse(raw, default_name=path.stem)


def _display(path: Path) -> str:
    try:
        return str(path.resolve().relative_to(Path.cwd()))
    except ValueError:
        return str(path)


_REQUIRED = ("description", "device", "runtime", "precision", "batch", "input_size", "peak")
_OPTIONAL = ("name", "provider", "runtime_device", "host_arch", "device_match", *SETTING_KEYS)
_PEAK_KEYS = ("flops", "bandwidth", "source")


class _Parser:
    """Validates one target mapping; every error names the file and the key."""

    def __init__(self, shown: str, *, path: str | None = None):
        self.shown = shown  # how errors name the file
        self.path = path or shown  # what Target.path records

    def error(self, key: str, message: str) -> ConfigError:
        return ConfigError(f"{self.shown}: {key}: {message}")

    def parse(self, raw: dict, *, default_name: str) -> Target:
        self.keys(raw, _REQUIRED, _OPTIONAL, prefix="")
        runtime = self.text(raw, "runtime")  # which runtimes exist is checked by deploykit.runtimes
        target = Target(
            name=self.text(raw, "name", default=default_name),
            description=self.text(raw, "description"),
            device=self.text(raw, "device"),
            runtime=runtime,
            provider=self.text(raw, "provider", default=None),
            runtime_device=self.text(raw, "runtime_device", default=None),
            precision=self.choice(raw, "precision", PRECISIONS),
            batch=self.positive_int(raw, "batch"),
            input_size=self.input_size(raw),
            threads=self.setting(raw, "threads"),
            peak=self.peak(raw["peak"]),
            path=self.path,
            host_arch=self.choice(raw, "host_arch", ARCHES, optional=True),
            device_match=self.text(raw, "device_match", default=None),
            spinning=self.setting(raw, "spinning"),
            streams=self.setting(raw, "streams"),
            pinning=self.setting(raw, "pinning"),
            auto_settings=tuple(key for key in SETTING_KEYS if raw.get(key) == AUTO),
        )
        if target.precision not in target.peak.flops:
            raise self.error("peak.flops", f"no figure for the target's precision {target.precision}")
        return target

    def keys(self, raw: Mapping, required, optional, *, prefix: str) -> None:
        known = (*required, *optional)
        for key in raw:
            if key not in known:
                raise self.error(f"{prefix}{key}", f"unknown key (known: {', '.join(known)})")
        for key in required:
            if key not in raw:
                raise self.error(f"{prefix}{key}", "missing required key")

    def text(self, raw: Mapping, key: str, *, default: object = ...) -> str | None:
        if key not in raw or raw[key] is None:
            if default is ...:
                raise self.error(key, "must be a non-empty string")
            return default
        value = raw[key]
        if not isinstance(value, str) or not value.strip():
            raise self.error(key, f"must be a non-empty string, got {value!r}")
        return value.strip()

    def choice(self, raw: Mapping, key: str, choices, *, optional: bool = False) -> str | None:
        value = raw.get(key)
        if value is None and optional:
            return None
        if value not in choices:
            raise self.error(key, f"must be one of {', '.join(choices)}, got {value!r}")
        return value

    def positive_int(self, raw: Mapping, key: str, *, optional: bool = False) -> int | None:
        value = raw.get(key)
        if value is None and optional:
            return None
        if not is_int(value, least=1):
            null = " or null" if optional else ""
            raise self.error(key, f"must be {int_rule(least=1)}{null}, got {value!r}")
        return value

    def setting(self, raw: Mapping, key: str):
        """A run setting's value; None for null and for ``auto`` (recorded apart, in auto_settings)."""
        value = raw.get(key)
        if value == AUTO:
            return None
        problem = setting_problem(key, value)
        if problem:
            raise self.error(key, problem)
        return value

    def input_size(self, raw: Mapping) -> tuple[int, int]:
        value = raw["input_size"]
        size = input_size_or_none(value)
        if size is None:
            raise self.error("input_size", f"must be {SIZE_RULE}, got {value!r}")
        return size

    def peak(self, raw) -> Peak:
        if not isinstance(raw, dict):
            raise self.error("peak", f"must be a mapping with {', '.join(_PEAK_KEYS)}, got {raw!r}")
        self.keys(raw, _PEAK_KEYS, (), prefix="peak.")
        flops = raw["flops"]
        if not isinstance(flops, dict) or not flops:
            raise self.error("peak.flops", f"must map precisions to FLOP/s, got {flops!r}")
        parsed = {}
        for precision, value in flops.items():
            if precision not in PRECISIONS:
                raise self.error(f"peak.flops.{precision}",
                                 f"unknown precision (known: {', '.join(PRECISIONS)})")
            parsed[precision] = self.positive_number(value, f"peak.flops.{precision}")
        source = raw["source"]
        if not isinstance(source, str) or not source.strip():
            raise self.error("peak.source", "must say where the figures come from (a datasheet)")
        return Peak(flops=parsed, bandwidth=self.positive_number(raw["bandwidth"], "peak.bandwidth"),
                    source=source.strip())

    def positive_number(self, value, key: str) -> float:
        # YAML 1.1 reads 1.2e12 (no sign in the exponent) as a string: accept numeric strings too
        try:
            number = float(value) if not isinstance(value, bool) else math.nan
        except (TypeError, ValueError):
            number = math.nan
        if not math.isfinite(number) or number <= 0:
            raise self.error(key, f"must be a positive number, got {value!r}")
        return number
