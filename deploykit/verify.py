"""Verifying an exported model on its target: numerics against PyTorch, latency, prediction, speed-up.

:func:`verify` runs one ONNX file on a target's runtime and writes a :class:`VerifyReport`:

- **numerics** (when a PyTorch module is given): the ONNX file and the module run on the same
  ``n_inputs`` seeded random-normal inputs; the error of each output is ``max |y_onnx − y_torch|``
  (``max_abs``) and that divided by ``max |y_torch|`` (``max_rel``, relative to the output's scale,
  which stays meaningful where single elements are near zero). It passes when ``max_rel`` is within
  the precision's tolerance (:data:`TOLERANCES`). The ONNX file runs **in this process** on the
  target's runtime — onnxruntime with the target's execution provider (its real providers are
  checked: no silent fallback) or OpenVINO with the target's ``INFERENCE_PRECISION_HINT`` (read
  back: OpenVINO's CPU plugin silently runs bf16 otherwise); other runtimes are refused.
- **latency**: end to end under the measurement protocol, each measurement in a fresh worker process
  (:func:`deploykit.latency.measure.measure_onnx`), interleaved with the reference when one is given
  (model, reference, model, reference, …). A file's ``median_ms`` is the median of its rounds'
  medians (p90, mean, cv and n come from all its samples pooled); the speed-up is the median over
  rounds of reference median / model median within the round, so that a burst of load on a shared
  machine, which slows one round, cancels out of the ratio.
- **prediction**: the latency table's prediction for the pruned set (``table.predict``), after the
  table is checked against the target, device, runtime version, batch and input size; prediction
  error = (predicted − measured) / measured × 100 %.
"""

from __future__ import annotations

import hashlib
import json
import os
import statistics
import tempfile
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from deploykit.errors import ConfigError, ModelError, RuntimeUnavailableError
from deploykit.fileio import write_json_atomic

TOLERANCES = {"fp32": 1e-4, "fp16": 1e-2}  # precision → largest max_rel that passes
NUMERICS_RUNTIMES = ("onnxruntime", "openvino")


# --- the report ------------------------------------------------------------------------------------

@dataclass(frozen=True)
class VerifyReport:
    """What ``deploykit verify`` found. Times in milliseconds.

    ``numerics``: ``{max_abs, max_rel, tolerance, passed, n_inputs, seed, how}`` or None (no PyTorch
    module given). ``latency``: ``{"model": stats, "reference": stats or None, "rounds": R}`` with
    stats ``{median_ms, p90_ms, mean_ms, cv, n, round_medians_ms, compile_s}`` and the per-round
    ``round_speedups`` and their median ``speedup``, or None when not measured.
    ``passed``: the numerics verdict, None when numerics were not checked.
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
        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"verify report not found: {path}")
        try:
            data = json.loads(path.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as error:
            raise ConfigError(f"verify report {path} is not valid JSON: {error}") from None
        return cls.from_dict(data, source=str(path))

    def summary(self) -> str:
        shape = "x".join(map(str, self.input_shape))
        runtime = self.runtime + (f" / {self.provider}" if self.provider else "")
        lines = [f"verify {Path(self.model).name} on {self.target}: {runtime} {self.runtime_version}, "
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
            lines.append(f"  speed-up vs reference: {self.speedup:.2f}× (median of rounds: {rounds}; "
                         "same run, interleaved)")
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


# --- loading models ---------------------------------------------------------------------------------

def load_module(spec: str | Path, *, weights: str | Path | None = None,
                input_size: tuple[int, int] | None = None):
    """A PyTorch module from a whole-module ``torch.save`` file (unpickled: trusted files only) or a
    timm model name (random weights unless ``weights`` names a state-dict file). Returns
    ``(module, description)``."""
    import torch
    from torch import nn

    text = str(spec)
    path = Path(text).expanduser()
    if path.is_file():
        if weights is not None:
            raise ConfigError("--weights goes with a timm model name, not with a checkpoint file "
                              f"({path} holds the whole module)")
        try:
            module = torch.load(path, map_location="cpu", weights_only=False)
        except Exception as error:  # torch raises several types for unreadable files
            raise ModelError(f"cannot load {path} as a torch.save'd module: "
                             f"{_one_line(error)}") from None
        if not isinstance(module, nn.Module):
            raise ModelError(f"{path} holds a {type(module).__name__}, not a whole nn.Module "
                             "(a state dict goes with a timm model name and --weights)")
        return module.float().eval(), str(path)
    if os.sep in text or text.endswith((".pt", ".pth", ".bin", ".ckpt")):
        raise ModelError(f"checkpoint file not found: {path}")
    from deploykit.models import create_model

    module = create_model(text, weights=weights, input_size=input_size)
    return module.eval(), text + (f" + {weights}" if weights else " (random weights)")


def file_sha256(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as stream:
        for chunk in iter(lambda: stream.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def onnx_input_shape(path: str | Path, *, batch: int | None = None,
                     input_size: tuple[int, int] | None = None,
                     default_batch: int = 1, default_size: tuple[int, int] = (224, 224)) -> tuple[int, ...]:
    """The input shape to run ``path`` with: its static dims, dynamic ones from ``batch`` /
    ``input_size`` or the defaults; a given value that contradicts a static dim is a ConfigError."""
    from deploykit.export import onnx_summary
    from deploykit.runtimes.base import single_input

    inputs = onnx_summary(path)["inputs"]
    dims = inputs[single_input(list(inputs), Path(path))]
    if len(dims) != 4:
        raise ModelError(f"{path}: expected an image input (batch, channels, height, width), got {dims}")
    asked = [batch, None, *(input_size or (None, None))]
    defaults = [default_batch, None, *default_size]
    shape = []
    for axis, (dim, want, default) in enumerate(zip(dims, asked, defaults)):
        if isinstance(dim, int) and dim > 0:
            if want is not None and want != dim:
                what = "batch" if axis == 0 else "input size"
                raise ConfigError(f"{path} has a fixed {what} ({dims}); it cannot run with "
                                  f"{what} {batch if axis == 0 else list(input_size)}")
            shape.append(dim)
        elif want is not None or default is not None:
            shape.append(want if want is not None else default)
        else:
            raise ModelError(f"{path}: the channel dimension of the input is not fixed ({dims})")
    return tuple(shape)


# --- numerics ---------------------------------------------------------------------------------------

def seeded_inputs(shape: Sequence[int], n: int, seed: int = 0):
    import numpy as np

    rng = np.random.default_rng(seed)
    return [rng.standard_normal(tuple(shape), dtype=np.float32) for _ in range(n)]


def check_numerics(onnx_path: str | Path, module, *, target, input_shape: Sequence[int],
                   n_inputs: int = 4, seed: int = 0) -> dict[str, Any]:
    """Run ``onnx_path`` on ``target``'s runtime (in this process) and ``module`` in PyTorch (fp32) on
    the same seeded inputs; the errors and the verdict as a dict (see :class:`VerifyReport`)."""
    import numpy as np
    import torch

    if target.precision not in TOLERANCES:
        raise ConfigError(f"no numerics tolerance for precision {target.precision} "
                          f"(known: {', '.join(TOLERANCES)})")
    if n_inputs < 1:
        raise ConfigError(f"--inputs must be ≥ 1, got {n_inputs}")
    run, how = _runtime_runner(Path(onnx_path), target, tuple(input_shape))
    max_abs = max_rel = 0.0
    for x in seeded_inputs(input_shape, n_inputs, seed):
        with torch.no_grad():
            expected = module(torch.from_numpy(x))
        if isinstance(expected, (tuple, list)):
            expected = expected[0]
        expected = expected.float().numpy()
        got = np.asarray(run(x), dtype=np.float32)
        if got.shape != expected.shape:
            raise ModelError(f"{onnx_path} gives an output of shape {list(got.shape)}, the PyTorch model "
                             f"{list(expected.shape)}: they are not the same model")
        diff = float(np.max(np.abs(got - expected))) if got.size else 0.0
        if not np.isfinite(diff):
            diff = float("inf")
        scale = float(np.max(np.abs(expected))) if expected.size else 0.0
        max_abs = max(max_abs, diff)
        max_rel = max(max_rel, diff / scale if scale > 0 else (0.0 if diff == 0 else float("inf")))
    tolerance = TOLERANCES[target.precision]
    return {"max_abs": max_abs, "max_rel": max_rel, "tolerance": tolerance,
            "passed": bool(max_rel <= tolerance), "n_inputs": n_inputs, "seed": seed, "how": how}


def _runtime_runner(path: Path, target, input_shape: tuple[int, ...]) -> tuple[Callable, str]:
    if target.runtime == "onnxruntime":
        return _ort_runner(path, target)
    if target.runtime == "openvino":
        return _openvino_runner(path, target, input_shape)
    raise RuntimeUnavailableError(
        f"verify checks numerics only on {', '.join(NUMERICS_RUNTIMES)}, not {target.runtime}; "
        "run without --torch to verify latency only")


def _ort_runner(path: Path, target) -> tuple[Callable, str]:
    from deploykit.runtimes.onnxfile import convert_to_fp16
    from deploykit.runtimes.onnxruntime_backend import (
        _FP16_BY_CONVERSION,
        _ORT_DTYPES,
        CPU,
        create_session,
        provider_options,
    )

    provider = target.provider or CPU
    scratch = tempfile.TemporaryDirectory(prefix="deploykit-verify-")
    source = path
    if target.precision == "fp16" and provider in _FP16_BY_CONVERSION:
        source = convert_to_fp16(path, Path(scratch.name) / "model_fp16.onnx")
    session = create_session(source, provider=provider, options=provider_options(target),
                             threads=target.threads)
    inputs = session.get_inputs()
    name, dtype = inputs[0].name, _ORT_DTYPES.get(inputs[0].type, "float32")

    def run(x, _keep=scratch):  # _keep: the converted file must outlive the session
        return session.run(None, {name: x.astype(dtype, copy=False)})[0]

    return run, f"onnxruntime {provider}, in-process, real providers checked"


def _openvino_runner(path: Path, target, input_shape: tuple[int, ...]) -> tuple[Callable, str]:
    import openvino as ov

    from deploykit.runtimes.openvino_backend import _PRECISION_HINT, _device, check_precision

    device = _device(target)
    config = {"INFERENCE_PRECISION_HINT": _PRECISION_HINT[target.precision]}
    if target.threads and device.startswith("CPU"):
        config["INFERENCE_NUM_THREADS"] = target.threads
    core = ov.Core()
    try:
        model = core.read_model(str(path))
        model.reshape({model.inputs[0]: ov.PartialShape(list(input_shape))})
        compiled = core.compile_model(model, device, config)
    except RuntimeError as error:
        raise ModelError(f"OpenVINO cannot compile {path} for {device}: {_one_line(error)}") from None
    check_precision(compiled, target.precision, device)
    request = compiled.create_infer_request()
    dtype = compiled.input(0).element_type.to_dtype()

    def run(x):
        return request.infer({0: x.astype(dtype, copy=False)})[compiled.output(0)].copy()

    hint = config["INFERENCE_PRECISION_HINT"]
    return run, f"OpenVINO {device}, INFERENCE_PRECISION_HINT {hint}, in-process"


# --- latency ----------------------------------------------------------------------------------------

def measure_interleaved(model_path: Path, reference_path: Path | None, *, target, protocol,
                        input_shape: Sequence[int], rounds: int = 3,
                        progress: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Time the model (and the reference) ``rounds`` times each, alternating, each in a fresh process."""
    from deploykit.latency.measure import measure_onnx
    from deploykit.protocol import Measurement

    if rounds < 1:
        raise ConfigError(f"--rounds must be ≥ 1, got {rounds}")
    runs: dict[str, list[Measurement]] = {"model": [], "reference": []}
    order = [("model", model_path)] + ([("reference", reference_path)] if reference_path else [])
    for index in range(rounds):
        for role, path in order:
            result = measure_onnx(path, target=target, protocol=protocol, input_shape=input_shape)
            runs[role].append(result)
            if progress:
                progress(f"round {index + 1}/{rounds}: {role} {path.name}: {result.median_ms:.3f} ms "
                         f"(cv {result.cv:.3f}, n {result.n})")

    def pooled(measurements: list[Measurement]) -> dict[str, Any] | None:
        if not measurements:
            return None
        both = Measurement.from_samples([s for m in measurements for s in m.samples_ms])
        return {"median_ms": statistics.median([m.median_ms for m in measurements]),
                "p90_ms": both.p90_ms, "mean_ms": both.mean_ms,
                "cv": both.cv, "n": both.n, "round_medians_ms": [m.median_ms for m in measurements],
                "compile_s": [m.compile_s for m in measurements]}

    ratios = [r.median_ms / m.median_ms for m, r in zip(runs["model"], runs["reference"]) if m.median_ms > 0]
    return {"model": pooled(runs["model"]), "reference": pooled(runs["reference"]), "rounds": rounds,
            "round_speedups": ratios, "speedup": statistics.median(ratios) if ratios else None}


# --- the whole check -------------------------------------------------------------------------------

def verify(onnx_path: str | Path, *, target, protocol=None, reference: str | Path | None = None,
           torch_module=None, torch_name: str | None = None, table=None,
           pruned: Sequence[int] | None = None, allow_mismatch: bool = False, n_inputs: int = 4,
           seed: int = 0, rounds: int = 3, measure_latency: bool = True,
           batch: int | None = None, input_size: tuple[int, int] | None = None,
           progress: Callable[[str], None] | None = None) -> VerifyReport:
    """Verify ``onnx_path`` on ``target``; see the module docstring. ``table`` is a LatencyTable."""
    from deploykit.latency.identity import table_for_this_machine
    from deploykit.latency.measure import runtime_info
    from deploykit.protocol import Protocol
    from deploykit.runtimes import get_backend

    path = Path(onnx_path)
    if not path.is_file():
        raise ModelError(f"ONNX file not found: {path}")
    ref_path = Path(reference) if reference is not None else None
    if ref_path is not None and not ref_path.is_file():
        raise ModelError(f"reference ONNX file not found: {ref_path}")
    if table is not None and pruned is None:
        raise ConfigError("--table needs the pruned blocks: --pruned 0,3,5 or --subnet subnet.json "
                          "(--pruned '' for the unpruned model)")
    ok, reason = get_backend(target.runtime).available(target)
    if not ok:
        raise RuntimeUnavailableError(f"cannot verify on target {target.name} here: {reason}")
    info = runtime_info(target)
    shape = onnx_input_shape(path, batch=batch, input_size=input_size, default_batch=target.batch,
                             default_size=target.input_size)
    if ref_path is not None:
        ref_shape = onnx_input_shape(ref_path, batch=shape[0], input_size=shape[2:])
        if ref_shape != shape:
            raise ConfigError(f"{ref_path} takes input {list(ref_shape)}, {path} {list(shape)}")
    notes: list[str] = []

    predicted = mismatches = None
    if table is not None:
        mismatches = table.check_matches(target=target, batch=shape[0], input_size=tuple(shape[2:]),
                                         allow_mismatch=allow_mismatch)
        # Another machine (fingerprint) is never refused here: the measurement below shows the error.
        table = table_for_this_machine(table, budget_unit=None,
                                       say=lambda line: notes.append(line.removeprefix("note: ")))
        predicted = table.predict(tuple(pruned))
        if table.meta.mode != "measured":
            notes.append(f"the table is {table.meta.mode} (roofline), not measured")

    numerics = None
    if torch_module is not None:
        if progress:
            progress(f"numerics: {n_inputs} seeded input(s) of shape {list(shape)}")
        numerics = check_numerics(path, torch_module, target=target, input_shape=shape,
                                  n_inputs=n_inputs, seed=seed)

    latency = speedup = error_pct = None
    protocol = protocol or Protocol()
    if measure_latency:
        latency = measure_interleaved(path, ref_path, target=target, protocol=protocol,
                                      input_shape=shape, rounds=rounds, progress=progress)
        model_ms = latency["model"]["median_ms"]
        speedup = latency["speedup"]
        if predicted is not None and model_ms > 0:
            error_pct = (predicted - model_ms) / model_ms * 100.0
    else:
        notes.append("latency not measured (--numerics-only)")

    return VerifyReport(
        target=target.name, device=info["device"], runtime=info["runtime"],
        runtime_version=info["runtime_version"], provider=target.provider, precision=target.precision,
        input_shape=tuple(shape), model=str(path), model_sha256=file_sha256(path),
        reference=None if ref_path is None else str(ref_path),
        reference_sha256=None if ref_path is None else file_sha256(ref_path),
        torch_model=torch_name, numerics=numerics, latency=latency,
        protocol=protocol.as_dict() if measure_latency else None,
        table=None if table is None else str(table.path), pruned=None if pruned is None else tuple(pruned),
        predicted_ms=predicted, prediction_error_pct=error_pct, table_mismatches=tuple(mismatches or ()),
        speedup=speedup, passed=None if numerics is None else numerics["passed"], notes=tuple(notes))


def _one_line(error: BaseException, limit: int = 300) -> str:
    lines = [line.strip() for line in str(error).strip().splitlines() if line.strip()]
    text = " ".join(lines[:2]) if lines else type(error).__name__
    return text[:limit]
