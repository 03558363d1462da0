"""The report of ``deploykit verify``: what was checked, what was found, written and read as JSON."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from deploykit.errors import ConfigError
from deploykit.fileio import read_json, write_json_atomic


@dataclass(frozen=True)
class VerifyReport:
    """What ``deploykit verify`` found. Times in milliseconds.

    ``numerics``: ``{max_abs, max_rel, tolerance, passed, n_inputs, seed, how}`` or None (no PyTorch
    module given). ``latency``: ``{"model": stats, "reference": stats or None, "rounds": R}`` with
    stats ``{median_ms, p90_ms, mean_ms, cv, n, round_medians_ms, compile_s}`` and the per-round
    ``round_speedups`` and their median ``speedup``, or None when not measured; measured paired, also
    ``paired: true`` and the per-round ``round_ratios`` (the model's ms are those × the reference's median).
    ``passed``: the numerics verdict, None when numerics were not checked. ``device_url``: the device
    agent the file ran and was timed on (``--device``); None: this machine.
    """

    target: str
    device: str
    runtime: str
    runtime_version: str
    provider: str | None
    precision: str
    input_shape: tuple[int, ...]
    model: str
    model_sha256: str
    reference: str | None = None
    reference_sha256: str | None = None
    torch_model: str | None = None
    numerics: dict[str, Any] | None = None
    latency: dict[str, Any] | None = None
    protocol: dict[str, Any] | None = None
    table: str | None = None
    pruned: tuple[int, ...] | None = None
    predicted_ms: float | None = None
    prediction_error_pct: float | None = None
    table_mismatches: tuple[str, ...] = ()
    speedup: float | None = None
    passed: bool | None = None
    notes: tuple[str, ...] = field(default=())
    device_url: str | None = None

    def as_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["input_shape"] = list(self.input_shape)
        data["pruned"] = None if self.pruned is None else list(self.pruned)
        data["table_mismatches"] = list(self.table_mismatches)
        data["notes"] = list(self.notes)
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], *, source: str = "verify report") -> VerifyReport:
        if not isinstance(data, Mapping):
            raise ConfigError(f"{source}: expected a JSON object, got {type(data).__name__}")
        names = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - names)
        required = ("target", "device", "runtime", "runtime_version", "provider", "precision",
                    "input_shape", "model", "model_sha256")
        missing = [name for name in required if name not in data]
        if unknown or missing:
            raise ConfigError(f"{source}: malformed report: missing {missing or 'nothing'}, "
                              f"unknown {unknown or 'nothing'}")
        values = dict(data)
        values["input_shape"] = tuple(values["input_shape"])
        if values.get("pruned") is not None:
            values["pruned"] = tuple(values["pruned"])
        values["table_mismatches"] = tuple(values.get("table_mismatches", ()))
        values["notes"] = tuple(values.get("notes", ()))
        return cls(**values)

    def write(self, path: str | Path) -> Path:
        """Write as JSON atomically (temporary file in the same folder, then rename)."""
        return write_json_atomic(path, self.as_dict())

    @classmethod
    def read(cls, path: str | Path) -> VerifyReport:
        return cls.from_dict(read_json(path, what="verify report"), source=str(path))

    def summary(self) -> str:
        shape = "x".join(map(str, self.input_shape))
        runtime = self.runtime + (f" / {self.provider}" if self.provider else "")
        where = f" on the device at {self.device_url}" if self.device_url else ""
        lines = [f"verify {Path(self.model).name} on {self.target}{where}: {runtime} {self.runtime_version}, "
                 f"{self.device}, {self.precision}, input {shape}"]
        n = self.numerics
        if n is None:
            lines.append("  numerics: not checked (no --torch model)")
        else:
            lines.append(f"  numerics: {'PASS' if n['passed'] else 'FAIL'}: max abs {n['max_abs']:.3g}, "
                         f"max rel {n['max_rel']:.3g} (tolerance {n['tolerance']:g}) over {n['n_inputs']} "
                         f"input(s) vs {self.torch_model} ({n['how']})")
        lat = self.latency
        if lat is None:
            lines.append("  latency: not measured")
        else:
            for role in ("model", "reference"):
                stats = lat.get(role)
                if stats:
                    name = Path(self.model if role == "model" else self.reference or "").name
                    lines.append(f"  latency {role:<9} {stats['median_ms']:.3f} ms median, p90 "
                                 f"{stats['p90_ms']:.3f} ms, cv {stats['cv']:.3f}, n {stats['n']} "
                                 f"({lat['rounds']} round(s), {name})")
        if self.speedup is not None:
            rounds = ", ".join(f"{r:.2f}" for r in (self.latency or {}).get("round_speedups", ()))
            how = ("paired in one process per round" if (self.latency or {}).get("paired")
                   else "same run, interleaved")
            lines.append(f"  speed-up vs reference: {self.speedup:.2f}× (median of rounds: {rounds}; {how})")
        if self.predicted_ms is not None:
            error = (f", error {self.prediction_error_pct:+.1f}%"
                     if self.prediction_error_pct is not None else "")
            lines.append(f"  table prediction for pruned {list(self.pruned or ())}: "
                         f"{self.predicted_ms:.3f} ms{error}")
        for difference in self.table_mismatches:
            lines.append(f"  table mismatch (allowed): {difference}")
        for note in self.notes:
            lines.append(f"  note: {note}")
        verdict = "not checked" if self.passed is None else ("PASSED" if self.passed else "FAILED")
        lines.append(f"  verdict: {verdict}")
        return "\n".join(lines)
