"""onnxruntime with any execution provider: CPU, CUDA, TensorRT, MIGraphX, OpenVINO, DirectML...

No silent fallback: onnxruntime creates a CPU-only session, with a mere warning, when the requested
execution provider cannot load. Every session's real providers are checked against the requested one
and a mismatch is a RuntimeUnavailableError naming both. ``get_providers()`` only lists what is
registered, not where nodes run: the TensorRT and MIGraphX providers are opened with
``session.disable_cpu_ep_fallback`` (a node left for the CPU fails the session), and a CUDA session
profiles one run at open and reports how many of its nodes the CPU provider ran.

fp16 goes through the provider's own switch where it has one (``migraphx_fp16_enable``,
``trt_fp16_enable``, OpenVINO ``precision``); CUDA and DirectML have none, so the model itself
is converted to fp16 (inputs and outputs stay fp32) before the session is created. fp32 on CUDA
passes ``use_tf32=0`` (onnxruntime enables TF32 by default on Ampere and newer).
"""

from __future__ import annotations

import json
import os
import tempfile
import warnings
from collections import Counter
from contextlib import contextmanager
from contextvars import ContextVar
from pathlib import Path
from typing import TYPE_CHECKING, ClassVar

from deploykit.errors import ModelError, RuntimeUnavailableError, one_line
from deploykit.runtimes import hostinfo
from deploykit.runtimes.base import RuntimeBackend, Session, device_index, single_input
from deploykit.runtimes.onnxfile import convert_to_fp16
from deploykit.runtimes.registry import register_backend

if TYPE_CHECKING:
    from collections.abc import Sequence

    import numpy as np

    from deploykit.paired import PairedMeasurement
    from deploykit.protocol import Protocol
    from deploykit.targets import Target

CPU = "CPUExecutionProvider"
_NVIDIA = ("CUDAExecutionProvider", "TensorrtExecutionProvider")
_AMD = ("MIGraphXExecutionProvider",)
# providers onnxruntime still names but no longer ships: refused with the replacement
_REMOVED = {"ROCMExecutionProvider": "the ROCm execution provider was removed from onnxruntime (ROCm 7.1 "
                                     "and later); use MIGraphXExecutionProvider"}

# precision → provider options, for providers with their own precision switch
_PRECISION_OPTIONS: dict[str, dict[str, dict[str, str]]] = {
    "CUDAExecutionProvider": {"fp32": {"use_tf32": "0"}, "fp16": {}},  # TF32 is on by default
    "MIGraphXExecutionProvider": {"fp32": {}, "fp16": {"migraphx_fp16_enable": "1"}},
    "TensorrtExecutionProvider": {"fp32": {}, "fp16": {"trt_fp16_enable": "True"}},
    "OpenVINOExecutionProvider": {"fp32": {"precision": "FP32"}, "fp16": {"precision": "FP16"}},
}
# providers without an fp16 switch whose fp16 runs come from converting the model
_FP16_BY_CONVERSION = ("CUDAExecutionProvider", "DmlExecutionProvider")
# which provider option ``runtime_device`` sets, and whether it is a device index
_DEVICE_OPTION: dict[str, tuple[str, bool]] = {
    "CUDAExecutionProvider": ("device_id", True),
    "TensorrtExecutionProvider": ("device_id", True),
    "MIGraphXExecutionProvider": ("device_id", True),
    "DmlExecutionProvider": ("device_id", True),
    "OpenVINOExecutionProvider": ("device_type", False),
}
# where inputs live for an IOBinding: ORT's Python API calls NVIDIA GPU memory "cuda". MIGraphX-only builds
# have no such allocator in OrtValue.ortvalue_from_numpy, so the MIGraphX provider is bound on the host.
_IO_DEVICE = {**dict.fromkeys(_NVIDIA, "cuda"), "DmlExecutionProvider": "dml"}
# providers whose nodes must all run on them: a node left for the CPU provider fails the session
_NO_CPU_FALLBACK = ("TensorrtExecutionProvider", "MIGraphXExecutionProvider")
# providers whose CPU share is read from one profiled run (the CUDA provider leaves shape arithmetic there)
_PROFILE_PLACEMENT = ("CUDAExecutionProvider",)
# environment variables these providers read at session creation (engine caches, precision switches):
# removed while a session is created so a cached engine of another GPU or model is never timed
_PROVIDER_ENV_PREFIXES = ("ORT_TENSORRT_", "ORT_MIGRAPHX_")
# what a measurement of these providers means beyond the precision
_PROVIDER_NOTES = {
    "TensorrtExecutionProvider": ("the engine may be built at the first run (then in first_run_ms, not "
                                  "compile_s); fp32: this provider has no TF32 switch, so on Ampere or newer "
                                  "TensorRT may run fp32 layers in TF32"),
    "MIGraphXExecutionProvider": ("the program may be compiled at the first run (then in first_run_ms, not "
                                  "compile_s); I/O bound on the host, so host-device copies are timed"),
}
_HINTS = {
    CPU: "pip install onnxruntime",
    "CUDAExecutionProvider": "pip install onnxruntime-gpu; needs an NVIDIA GPU with CUDA",
    "TensorrtExecutionProvider": "pip install onnxruntime-gpu tensorrt; needs an NVIDIA GPU",
    "MIGraphXExecutionProvider": "pip install onnxruntime-migraphx on a ROCm machine; needs an AMD GPU",
    "OpenVINOExecutionProvider": "pip install onnxruntime-openvino (instead of onnxruntime)",
    "DmlExecutionProvider": "pip install onnxruntime-directml on Windows",
}
# Set while a paired measurement opens its two sessions: they share onnxruntime's global thread pool.
_SHARED_POOL: ContextVar[bool] = ContextVar("deploykit_ort_shared_pool", default=False)
_global_pool_threads: list[int] = []  # the size this process gave onnxruntime's global pool, once

_ORT_DTYPES = {"tensor(float)": "float32", "tensor(float16)": "float16", "tensor(double)": "float64"}


@register_backend
class OnnxRuntimeBackend(RuntimeBackend):
    name: ClassVar[str] = "onnxruntime"
    install_hint: ClassVar[str] = "pip install onnxruntime (or the build for your execution provider)"
    precisions: ClassVar[tuple[str, ...]] = ("fp32", "fp16")

    # --- what it can serve ---------------------------------------------------------------------------

    def target_problem(self, target: Target) -> tuple[str, str] | None:
        provider = target.provider
        if not provider:
            return "provider", "runtime onnxruntime needs an execution provider, e.g. CPUExecutionProvider"
        known = _all_providers()
        if known is not None and provider not in known:
            return "provider", (f"unknown execution provider {provider!r} "
                                f"(onnxruntime knows: {', '.join(known)})")
        if provider in _REMOVED:
            return "provider", _REMOVED[provider]
        if target.precision not in provider_precisions(provider):
            return "precision", (f"{provider} supports precision "
                                 f"{', '.join(provider_precisions(provider))}, not {target.precision}")
        if target.runtime_device is not None:
            if provider not in _DEVICE_OPTION:
                return "runtime_device", f"{provider} takes no runtime_device (got {target.runtime_device!r})"
            option, is_index = _DEVICE_OPTION[provider]
            if is_index and not target.runtime_device.isdigit():
                return "runtime_device", (f"{provider} expects a device index such as '0' for {option}, "
                                          f"got {target.runtime_device!r}")
        return None

    def setting_keys(self, target: Target) -> tuple[str, ...]:
        # the wait policy is the CPU provider's thread pool; other providers run their own
        return ("threads", "spinning") if self.runs_on_cpu_threads(target) else ("threads",)

    def runs_on_cpu_threads(self, target: Target) -> bool:
        return (target.provider or CPU) == CPU

    def _unavailable_reason(self, target: Target) -> str | None:
        try:
            import onnxruntime as ort
        except ImportError:
            return f"onnxruntime is not installed ({self.install_hint})"
        provider = target.provider or CPU
        available = ort.get_available_providers()
        if provider not in available:
            prefix = ("no NVIDIA GPU / CUDA: " if provider in _NVIDIA
                      else "no AMD GPU / ROCm: " if provider in _AMD else "")
            return (f"{prefix}{provider} not in onnxruntime.get_available_providers() "
                    f"(onnxruntime {ort.__version__} has {', '.join(available)}; {_HINTS.get(provider, '')})")
        if provider in _NVIDIA and hostinfo.nvidia_gpu_name(device_index(target)) is None:
            return f"{provider} is installed but no NVIDIA GPU was found (nvidia-smi, torch.cuda)"
        if provider in _AMD and not hostinfo.amd_gpu_present():
            return f"no AMD GPU / ROCm: {provider} is installed but /dev/kfd is missing"
        return None

    def version(self) -> str:
        try:
            import onnxruntime as ort
        except ImportError:
            raise self.unavailable(f"not installed ({self.install_hint})") from None
        return ort.__version__

    def device_string(self, target: Target) -> str:
        provider = target.provider or CPU
        if provider in _NVIDIA:
            return hostinfo.nvidia_gpu_name(device_index(target)) or "no NVIDIA GPU"
        if provider in _AMD:
            return hostinfo.amd_gpu_name(device_index(target)) or "no AMD GPU"
        if provider == CPU or (provider == "OpenVINOExecutionProvider"
                               and (target.runtime_device or "CPU").upper().startswith("CPU")):
            return hostinfo.cpu_name()
        return f"{provider} {target.runtime_device or 'default device'}"

    # --- measuring -------------------------------------------------------------------------------------

    def profile_paired(self, onnx_path: str | Path, reference_path: str | Path, *, target: Target,
                       protocol: Protocol, input_shape: Sequence[int]) -> PairedMeasurement:
        """As the base class; where the CPU provider's threads may spin, both sessions run on one shared
        (global) thread pool. Two sessions with spinning pools of their own, alternated in one process,
        spin against each other: measured on a 2-vCPU VM (resnet34, 2 threads), a model timed against an
        identical copy gave ratios 1.03–1.23 (95 % interval ±48 %) and both ran 1.5× slower than alone;
        on one shared pool, 0.995–1.006 (±0.9 %) at the speed of one session alone (docs/latency.md)."""
        settings = protocol.apply_settings(target)
        if not self.runs_on_cpu_threads(settings) or settings.spinning is False:
            return super().profile_paired(onnx_path, reference_path, target=target, protocol=protocol,
                                          input_shape=input_shape)
        share_global_pool(settings.threads)
        token = _SHARED_POOL.set(True)
        try:
            return super().profile_paired(onnx_path, reference_path, target=target, protocol=protocol,
                                          input_shape=input_shape)
        finally:
            _SHARED_POOL.reset(token)

    def _open_session(self, onnx_path: Path, *, target: Target, input_shape: tuple[int, ...],
                      threads: int | None) -> Session:
        provider = target.provider or CPU
        converts = target.precision == "fp16" and provider in _FP16_BY_CONVERSION
        # a folder only where a file is written (the fp16 copy, the placement profile): it lives as long
        # as the session, and a worker killed mid-measurement cannot remove it
        needs_scratch = converts or provider in _PROFILE_PLACEMENT
        scratch = tempfile.TemporaryDirectory(prefix="deploykit-ort-") if needs_scratch else None
        try:
            source = onnx_path
            if converts:
                source = convert_to_fp16(onnx_path, Path(scratch.name) / "model_fp16.onnx")
            profile = str(Path(scratch.name) / "placement") if provider in _PROFILE_PLACEMENT else None
            session = create_session(source, provider=provider,
                                     options=provider_options(target, threads=threads), threads=threads,
                                     spinning=target.spinning, profile_prefix=profile,
                                     shared_pool=_SHARED_POOL.get())
            notes = [_PROVIDER_NOTES.get(provider, "")]
            if profile:
                notes.append(placement_note(session, input_shape))
            return OnnxRuntimeSession(session, path=onnx_path, input_shape=input_shape,
                                      precision=target.precision, device=device_index(target),
                                      scratch=scratch, notes="; ".join(n for n in notes if n))
        except BaseException:
            if scratch is not None:
                scratch.cleanup()
            raise


class OnnxRuntimeSession(Session):
    """An ``InferenceSession`` on exactly the requested provider (checked by :func:`create_session`)."""

    def __init__(self, session, *, path: Path, input_shape: tuple[int, ...], precision: str, device: int,
                 scratch: tempfile.TemporaryDirectory | None, notes: str = ""):
        inputs = session.get_inputs()
        providers = session.get_providers()
        provider = providers[0]
        super().__init__(path=path, input_shape=input_shape,
                         input_dtype=_ORT_DTYPES.get(inputs[0].type, "float32"),
                         label=f"onnxruntime ({provider})", providers=providers, precision=precision,
                         details=f"real providers checked: {', '.join(providers)}; "
                                 f"{_precision_note(provider, precision)}" + (f"; {notes}" if notes else ""))
        self._session = session
        self._name = single_input([i.name for i in inputs], path)
        self._index = device
        self._scratch = scratch

    def _run(self, x: np.ndarray) -> list:
        return self._session.run(None, {self._name: x})

    def _timed_runner(self, x: np.ndarray):
        """Inputs bound once (on the device for GPU providers), outputs kept where they are produced,
        so a timed run is the inference and nothing else."""
        import onnxruntime as ort

        session = self._session
        binding = session.io_binding()
        io_device = _IO_DEVICE.get(self.providers[0])
        if io_device:
            value = ort.OrtValue.ortvalue_from_numpy(x, io_device, self._index)
            binding.bind_ortvalue_input(self._name, value)
        else:
            value = x
            binding.bind_cpu_input(self._name, x)
        for output in session.get_outputs():
            if io_device:
                binding.bind_output(output.name, io_device, self._index)
            else:
                binding.bind_output(output.name)

        def run_once(_keep=value) -> None:  # _keep: the bound input must outlive the binding
            session.run_with_iobinding(binding)
            binding.synchronize_outputs()

        return run_once

    def _release(self) -> None:
        self._session = None
        if self._scratch is not None:
            self._scratch.cleanup()


def provider_precisions(provider: str) -> tuple[str, ...]:
    """The precisions deploykit can run with ``provider``."""
    if provider in _PRECISION_OPTIONS:
        return tuple(_PRECISION_OPTIONS[provider])
    if provider in _FP16_BY_CONVERSION:
        return ("fp32", "fp16")
    return ("fp32",)


def provider_options(target: Target, *, threads: int | None = None) -> dict[str, str]:
    """The provider options a target implies: its precision switch, its device, and (for the
    OpenVINO provider, which runs its own thread pool) ``threads``, else the target's."""
    provider = target.provider or CPU
    options = dict(_PRECISION_OPTIONS.get(provider, {}).get(target.precision, {}))
    if target.runtime_device is not None and provider in _DEVICE_OPTION:
        options[_DEVICE_OPTION[provider][0]] = target.runtime_device
    threads = threads or target.threads
    if provider == "OpenVINOExecutionProvider" and threads:
        options["num_of_threads"] = str(threads)
    return options


def share_global_pool(threads: int | None) -> None:
    """Size onnxruntime's process-wide intra-op pool (``threads``; None: one per physical core) for the
    sessions created with ``shared_pool``. onnxruntime takes this once, before the process's first
    session; a second, different size is refused."""
    import onnxruntime as ort

    wanted = threads or 0
    if _global_pool_threads:
        if _global_pool_threads[0] != wanted:
            raise RuntimeUnavailableError(f"onnxruntime's global thread pool in this process has "
                                          f"{_global_pool_threads[0] or 'the default'} threads, not {wanted}")
        return
    ort.set_global_thread_pool_sizes(wanted, 1)
    _global_pool_threads.append(wanted)


def create_session(onnx_path: str | Path, *, provider: str, options: dict[str, str] | None = None,
                   threads: int | None = None, spinning: bool | None = None,
                   profile_prefix: str | None = None, shared_pool: bool = False):
    """A fresh ``InferenceSession`` on exactly ``provider``; RuntimeUnavailableError if it is not.
    ``spinning`` sets ``session.intra_op.allow_spinning`` (None: onnxruntime's default, on).

    onnxruntime adds the CPU provider behind any other one (for the few nodes a GPU provider leaves,
    such as shape arithmetic), so CPU after the requested provider is accepted; a session whose
    first provider is not the requested one would time the wrong device and is refused. The TensorRT
    and MIGraphX providers get no CPU fallback at all; ``profile_prefix`` turns on onnxruntime's
    profiler (see :func:`placement_note`). The providers' ``ORT_TENSORRT_*`` / ``ORT_MIGRAPHX_*``
    environment variables are hidden while the session is created. ``shared_pool``: the session runs on
    the process's global thread pool (:func:`share_global_pool`, which sized it) instead of its own.
    """
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    if shared_pool:
        so.use_per_session_threads = False
    else:
        so.intra_op_num_threads = threads or 0  # 0: onnxruntime's default, one per physical core
        so.inter_op_num_threads = 1
    so.log_severity_level = 3  # errors only: a missing provider is reported by the check below
    for key, value in session_config(spinning=spinning).items():
        so.add_session_config_entry(key, value)
    if provider in _NO_CPU_FALLBACK:
        so.add_session_config_entry("session.disable_cpu_ep_fallback", "1")
    if profile_prefix:
        so.enable_profiling = True
        so.profile_file_prefix = profile_prefix
    providers = [provider] if not options else [(provider, dict(options))]
    try:
        with warnings.catch_warnings(), _provider_environment_hidden(provider):  # "Specified provider ...":
            warnings.filterwarnings("ignore", "Specified provider", UserWarning)  # refused just below
            session = ort.InferenceSession(str(onnx_path), sess_options=so, providers=providers)
    except Exception as error:  # onnxruntime raises its own pybind exception types
        if provider in _NO_CPU_FALLBACK and provider not in ort.get_available_providers():
            check_providers([CPU], provider)  # it fell back to the CPU, which the no-fallback entry refused
        raise ModelError(f"onnxruntime ({provider}) cannot load {onnx_path}: {one_line(error)}") from None
    check_providers(session.get_providers(), provider)
    return session


def session_config(*, spinning: bool | None) -> dict[str, str]:
    """The session config entries a run setting implies (asserted as data in the tests)."""
    return {} if spinning is None else {"session.intra_op.allow_spinning": "1" if spinning else "0"}


def check_providers(actual: list[str], requested: str) -> None:
    """Refuse a session that would silently run somewhere other than ``requested``."""
    if not actual or actual[0] != requested:
        raise RuntimeUnavailableError(
            f"onnxruntime silently fell back: requested {requested}, the session has "
            f"{', '.join(actual) or 'no provider'}; refusing to time {actual[0] if actual else 'it'} "
            f"as {requested} ({_HINTS.get(requested, 'install a build with this provider')})")


@contextmanager
def _provider_environment_hidden(provider: str):
    """Remove the ``ORT_TENSORRT_*`` / ``ORT_MIGRAPHX_*`` variables (engine caches, precision switches
    that override provider options) from the environment for the block, then put them back."""
    if provider not in _NO_CPU_FALLBACK:
        yield
        return
    hidden = {k: v for k, v in os.environ.items() if k.startswith(_PROVIDER_ENV_PREFIXES)}
    for key in hidden:
        del os.environ[key]
    try:
        yield
    finally:
        os.environ.update(hidden)


def placement_note(session, input_shape: tuple[int, ...]) -> str:
    """Run a profiling session once on zeros, stop the profiler, and say how many of the nodes that ran
    were on the CPU provider (which ones); the run is part of opening the session."""
    import numpy as np

    first = session.get_inputs()[0]
    session.run(None, {first.name: np.zeros(input_shape, _ORT_DTYPES.get(first.type, "float32"))})
    profile = Path(session.end_profiling())  # the profiler stops here: timed runs are not profiled
    try:
        events = json.loads(profile.read_text())
    finally:
        profile.unlink(missing_ok=True)
    return describe_placement(nodes_by_provider(events))


def nodes_by_provider(events: list[dict]) -> dict[str, list[str]]:
    """The nodes (by op type) each execution provider ran, from an onnxruntime profile's events."""
    placed: dict[str, dict[str, str]] = {}
    for event in events:
        args = event.get("args") or {}
        kernel = event.get("cat") == "Node" and event.get("name", "").endswith("_kernel_time")
        if kernel and "provider" in args:
            placed.setdefault(args["provider"], {})[event["name"]] = args.get("op_name", "?")
    return {provider: sorted(nodes.values()) for provider, nodes in placed.items()}


def describe_placement(placed: dict[str, list[str]]) -> str:
    total = sum(len(nodes) for nodes in placed.values())
    on_cpu = placed.get(CPU, [])
    if not total:
        return "node placement: the profile recorded no node"
    ops = ", ".join(f"{op} x{n}" if n > 1 else op for op, n in sorted(Counter(on_cpu).items()))
    return (f"CPU nodes: {len(on_cpu)} of {total} (read from one profiled run at open, in compile_s)"
            + (f": {ops}" if ops else ""))


def _precision_note(provider: str, precision: str) -> str:
    if precision != "fp16":
        return f"{precision} (use_tf32=0)" if provider == "CUDAExecutionProvider" else precision
    if provider in _FP16_BY_CONVERSION:
        return "fp16 by converting the model (inputs and outputs fp32)"
    return f"fp16 through {provider}'s own switch"


def _all_providers() -> list[str] | None:
    try:
        import onnxruntime as ort
    except ImportError:
        return None
    return list(ort.get_all_providers())
