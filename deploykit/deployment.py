"""The deployment settings file: how to run an exported model the way its figures were measured.

``deploykit export --table T`` (and ``deploykit run``'s export stage) writes ``MODEL.settings.json``
beside ``MODEL.onnx``: the target, its runtime and provider, and the run settings
(:mod:`deploykit.runsettings`) the latency table was measured with — e.g. one intra-op thread, or two
threads with onnxruntime's spinning off. A deployment that opens the session with other settings runs
at another speed than the table predicts. ``deploykit verify`` applies the file when it finds it (and
refuses an explicit setting that differs); a verify through a device agent sends the settled target,
so the agent applies the same settings. A model measured for several targets (``deploykit run
--target a,b``) gets one file per target, ``MODEL.TARGET.settings.json``; verify on a target reads its
own file first, then the plain one.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from deploykit.errors import ConfigError
from deploykit.fileio import read_json, write_json_atomic
from deploykit.runsettings import RunSettings

SUFFIX = ".settings.json"


@dataclass(frozen=True)
class DeploymentSettings:
    """What ``MODEL.settings.json`` holds."""

    target: str
    runtime: str
    provider: str | None
    settings: RunSettings
    measured_by: str  # the table (or run) whose figures these settings belong to

    def as_dict(self) -> dict[str, Any]:
        return {"target": self.target, "runtime": self.runtime, "provider": self.provider,
                "settings": self.settings.given(), "measured_by": self.measured_by,
                "onnxruntime_session_config": _ort_config(self), "openvino_config": _openvino_config(self)}

    @classmethod
    def from_dict(cls, data: Any, *, source: str) -> DeploymentSettings:
        if not isinstance(data, dict):
            raise ConfigError(f"{source}: expected a JSON object of deployment settings")
        try:
            return cls(target=_text(data, "target", source), runtime=_text(data, "runtime", source),
                       provider=data.get("provider"),
                       settings=RunSettings.from_dict(data.get("settings") or {}, what=f"{source}: settings"),
                       measured_by=str(data.get("measured_by", "")))
        except KeyError as error:
            raise ConfigError(f"{source}: missing {error}") from None


def settings_path(onnx_path: str | Path, target: str | None = None) -> Path:
    """``model.onnx`` → ``model.settings.json`` (``model.TARGET.settings.json`` for one of several
    targets)."""
    path = Path(onnx_path)
    return path.with_name(path.stem + (f".{target}" if target else "") + SUFFIX)


def write_settings(onnx_path: str | Path, settings: DeploymentSettings, *, per_target: bool = False) -> Path:
    """Write the settings file beside ``onnx_path`` (atomically); ``per_target``: the file named for
    ``settings.target`` (a model deployed to several targets)."""
    path = settings_path(onnx_path, settings.target if per_target else None)
    return write_json_atomic(path, settings.as_dict())


def read_settings(onnx_path: str | Path, target: str | None = None) -> DeploymentSettings | None:
    """The settings file beside ``onnx_path`` for ``target`` (its own file, else the plain one), or None
    where there is none."""
    for path in dict.fromkeys([settings_path(onnx_path, target), settings_path(onnx_path)]):
        if path.is_file():
            return DeploymentSettings.from_dict(read_json(path, what="deployment settings file"),
                                                source=str(path))
    return None


def _text(data: dict, key: str, source: str) -> str:
    value = data[key]
    if not isinstance(value, str) or not value:
        raise ConfigError(f"{source}: {key} must be a non-empty string, got {value!r}")
    return value


def _ort_config(deployment: DeploymentSettings) -> dict[str, Any] | None:
    """What to set on ``onnxruntime.SessionOptions`` to run as measured (onnxruntime targets)."""
    if deployment.runtime != "onnxruntime":
        return None
    s = deployment.settings
    config: dict[str, Any] = {"inter_op_num_threads": 1, "execution_mode": "ORT_SEQUENTIAL"}
    if s.threads is not None:
        config["intra_op_num_threads"] = s.threads
    if s.spinning is not None:
        config["session.intra_op.allow_spinning"] = "1" if s.spinning else "0"
    return config


def _openvino_config(deployment: DeploymentSettings) -> dict[str, Any] | None:
    """The ``compile_model`` properties to run as measured (OpenVINO targets)."""
    if deployment.runtime != "openvino":
        return None
    s = deployment.settings
    config: dict[str, Any] = {"PERFORMANCE_HINT": "LATENCY"}
    for key, name in (("threads", "INFERENCE_NUM_THREADS"), ("streams", "NUM_STREAMS"),
                      ("pinning", "ENABLE_CPU_PINNING")):
        if getattr(s, key) is not None:
            config[name] = getattr(s, key)
    return config
