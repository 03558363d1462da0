"""Runtime backends, one by one: registry, no silent fallback, precision read-back, refusal reasons.

What every backend must do (refusals, outputs against a reference, timing, closing) is checked once
for all of them in test_backend_contract.py; these are the backend-specific checks.
"""

from __future__ import annotations

import ast
import dataclasses
import importlib.util
from pathlib import Path

import numpy as np
import pytest
from onnx_fixtures import tiny_onnx

import deploykit
from deploykit.errors import ConfigError, ModelError, RuntimeUnavailableError
from deploykit.protocol import Protocol
from deploykit.runtimes import backends, get_backend, hostinfo, register_backend, unregister
from deploykit.runtimes.base import RuntimeBackend, random_input
from deploykit.runtimes.onnxruntime_backend import check_providers, create_session, provider_options
from deploykit.targets import load_target

QUICK = Protocol(warmup_s=0.01, warmup_iters=2, min_time_s=0.02, min_iters=5, max_repeats=1)
SHAPE = (2, 3, 16, 16)


@pytest.fixture(scope="module")
def model(tmp_path_factory) -> Path:
    return tiny_onnx(tmp_path_factory.mktemp("onnx") / "tiny.onnx")


def _has(module: str) -> bool:
    return importlib.util.find_spec(module) is not None


def variant(name: str, **changes):
    return dataclasses.replace(load_target(name), **changes)


# --- registry --------------------------------------------------------------------------------------

def test_registry_by_name():
    assert set(backends()) == {"onnxruntime", "openvino", "tensorrt", "migraphx"}
    for name, backend in backends().items():
        assert get_backend(name) is backend and backend.name == name and backend.install_hint
    with pytest.raises(ConfigError, match=r"unknown runtime 'tvm' .*migraphx, onnxruntime, openvino"):
        get_backend("tvm")


def test_backends_register_by_decorator():
    class Probe(RuntimeBackend):
        name, install_hint = "probe", "nothing to install"
        _unavailable_reason = version = device_string = _open_session = None

    try:
        assert register_backend(Probe) is Probe and isinstance(get_backend("probe"), Probe)
        with pytest.raises(ValueError, match="'probe' is already registered"):
            register_backend(Probe)
    finally:
        unregister("probe")
    assert "probe" not in backends()


SDKS = ("onnxruntime", "openvino", "tensorrt", "migraphx", "onnx")


def test_vendor_sdks_are_imported_lazily():
    """No module of runtimes/, latency/ or targets.py imports a runtime SDK at module level."""
    package = Path(deploykit.__file__).parent
    files = [*sorted((package / "runtimes").glob("*.py")), *sorted((package / "latency").glob("*.py")),
             package / "targets.py"]
    for path in files:
        for node in ast.parse(path.read_text()).body:  # module level only; TYPE_CHECKING blocks are fine
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                names = [node.module or ""]
            else:
                continue
            sdks = [n for n in names if n.split(".")[0] in SDKS]
            assert not sdks, f"{path.name} imports {sdks} at import time"


def test_random_input_is_seeded_and_typed():
    a, b = random_input(SHAPE), random_input(SHAPE, "float16")
    assert a.dtype == np.float32 and b.dtype == np.float16 and a.shape == SHAPE
    assert np.array_equal(a, random_input(SHAPE)) and abs(float(a.std()) - 1.0) < 0.1


# --- onnxruntime ----------------------------------------------------------------------------------

def test_onnxruntime_session_reports_its_real_providers(model):
    with get_backend("onnxruntime").session(model, target=load_target("cpu-ort"), input_shape=SHAPE) as s:
        assert s.providers == ("CPUExecutionProvider",) and s.precision == "fp32"
        assert "real providers checked: CPUExecutionProvider" in s.details


def test_onnxruntime_cpu_session_writes_no_scratch_folder(model, tmp_path, monkeypatch):
    # every measuring worker opens sessions; a folder per session outlives a worker that is killed
    monkeypatch.setattr("tempfile.tempdir", str(tmp_path))
    with get_backend("onnxruntime").session(model, target=load_target("cpu-ort"), input_shape=SHAPE) as s:
        s.run(random_input(SHAPE))
        assert list(tmp_path.iterdir()) == []


def test_onnxruntime_threads_come_from_protocol_then_target(model, monkeypatch):
    import onnxruntime

    seen = []
    real = onnxruntime.InferenceSession

    def spy(path, sess_options=None, providers=None):
        seen.append(sess_options.intra_op_num_threads)
        return real(path, sess_options=sess_options, providers=providers)

    monkeypatch.setattr(onnxruntime, "InferenceSession", spy)
    backend = get_backend("onnxruntime")
    backend.profile(model, target=variant("cpu-ort", threads=2), protocol=QUICK, input_shape=SHAPE)
    one_thread = dataclasses.replace(QUICK, threads=1)
    backend.profile(model, target=variant("cpu-ort", threads=2), protocol=one_thread, input_shape=SHAPE)
    backend.session(model, target=variant("cpu-ort", threads=3), input_shape=SHAPE).close()
    backend.session(model, target=variant("cpu-ort", threads=3), input_shape=SHAPE, threads=1).close()
    assert seen == [2, 1, 3, 1]


@pytest.mark.parametrize("provider", ["CUDAExecutionProvider", "MIGraphXExecutionProvider",
                                      "TensorrtExecutionProvider"])
def test_no_silent_fallback_on_onnxruntime(model, provider):
    import onnxruntime

    if provider in onnxruntime.get_available_providers():
        pytest.skip(f"{provider} is really available here")
    # onnxruntime itself hands back a CPU-only session, with a mere warning ...
    with pytest.warns(UserWarning):
        plain = onnxruntime.InferenceSession(str(model), providers=[provider])
    assert plain.get_providers() == ["CPUExecutionProvider"]
    # ... deploykit refuses it, naming what was asked and what was got
    with pytest.raises(RuntimeUnavailableError) as info:
        create_session(model, provider=provider)
    assert f"requested {provider}" in str(info.value) and "CPUExecutionProvider" in str(info.value)


def test_provider_check_accepts_cpu_behind_the_requested_provider():
    check_providers(["CUDAExecutionProvider", "CPUExecutionProvider"], "CUDAExecutionProvider")
    check_providers(["CPUExecutionProvider"], "CPUExecutionProvider")
    with pytest.raises(RuntimeUnavailableError, match="requested MIGraphXExecutionProvider"):
        check_providers(["CPUExecutionProvider"], "MIGraphXExecutionProvider")


def test_provider_options_carry_precision_and_device():
    assert provider_options(load_target("amd-mi100")) == {"migraphx_fp16_enable": "1", "device_id": "0"}
    trt = variant("amd-mi100", provider="TensorrtExecutionProvider")
    assert provider_options(trt) == {"trt_fp16_enable": "True", "device_id": "0"}
    ov = variant("cpu-ort", provider="OpenVINOExecutionProvider", runtime_device="CPU", threads=3)
    assert provider_options(ov) == {"precision": "FP32", "device_type": "CPU", "num_of_threads": "3"}
    assert provider_options(ov, threads=1)["num_of_threads"] == "1"
    assert provider_options(load_target("cpu-ort")) == {}


def test_unavailable_provider_refuses_to_profile(model):
    import onnxruntime

    target = load_target("amd-mi100")
    if "MIGraphXExecutionProvider" in onnxruntime.get_available_providers() and hostinfo.amd_gpu_present():
        pytest.skip("MIGraphX EP and an AMD GPU are here")
    backend = get_backend("onnxruntime")
    ok, reason = backend.available(target)
    assert not ok and "MIGraphXExecutionProvider" in reason
    with pytest.raises(RuntimeUnavailableError, match="cannot profile on target amd-mi100 here"):
        backend.profile(model, target=target, protocol=QUICK, input_shape=(1, 3, 16, 16))


def test_corrupt_model_is_a_model_error(tmp_path):
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"definitely not protobuf")
    with pytest.raises(ModelError, match="cannot load"):
        get_backend("onnxruntime").profile(bad, target=load_target("cpu-ort"), protocol=QUICK,
                                           input_shape=SHAPE)


def test_wrong_input_shape_is_a_model_error(model):
    with pytest.raises(ModelError, match="failed"):
        get_backend("onnxruntime").profile(model, target=load_target("cpu-ort"), protocol=QUICK,
                                           input_shape=(1, 5, 16, 16))


@pytest.mark.cuda
@pytest.mark.skipif(not hostinfo.nvidia_gpu_name(), reason="needs an NVIDIA GPU")
def test_onnxruntime_cuda_fp16_profile(model):
    target = variant("cpu-ort", provider="CUDAExecutionProvider", precision="fp16",
                     peak=load_target("nvidia-t4").peak)
    ok, reason = get_backend("onnxruntime").available(target)
    if not ok:
        pytest.skip(reason)
    assert_fp16_session_matches(get_backend("onnxruntime"), target, model)
    m = get_backend("onnxruntime").profile(model, target=target, protocol=QUICK, input_shape=SHAPE)
    assert m.median_ms > 0


@pytest.mark.migraphx
def test_onnxruntime_migraphx_ep_profile(model):
    target = variant("amd-mi100", batch=2, device_match=None)
    ok, reason = get_backend("onnxruntime").available(target)
    if not ok:
        pytest.skip(reason)
    m = get_backend("onnxruntime").profile(model, target=target, protocol=QUICK, input_shape=SHAPE)
    assert m.median_ms > 0 and m.compile_s > 0


# --- OpenVINO -------------------------------------------------------------------------------------

@pytest.mark.openvino
@pytest.mark.skipif(not _has("openvino"), reason="openvino is not installed")
def test_openvino_refuses_a_precision_it_would_silently_change():
    import openvino as ov

    from deploykit.runtimes.openvino_backend import check_precision

    class Compiled:  # what the CPU plugin reports for an f16 hint on a CPU without native fp16
        def get_property(self, key):
            assert key == "INFERENCE_PRECISION_HINT"
            return ov.Type.bf16

    with pytest.raises(RuntimeUnavailableError, match="silently runs fp16 as bf16"):
        check_precision(Compiled(), "fp16", "CPU")


@pytest.mark.openvino
@pytest.mark.skipif(not _has("openvino"), reason="openvino is not installed")
def test_openvino_session_reads_its_precision_back(model):
    target = variant("cpu-openvino", threads=1)
    ok, reason = get_backend("openvino").available(target)
    if not ok:
        pytest.skip(reason)
    with get_backend("openvino").session(model, target=target, input_shape=SHAPE) as session:
        assert session.precision == "fp32" and session.providers == ("CPU",)
        assert "INFERENCE_PRECISION_HINT f32 (read back)" in session.details


@pytest.mark.openvino
@pytest.mark.skipif(not _has("openvino"), reason="openvino is not installed")
def test_openvino_missing_device_is_refused(model):
    import openvino as ov

    if any(d.startswith("NPU") for d in ov.Core().available_devices):
        pytest.skip("an NPU is here")
    target = variant("cpu-openvino", runtime_device="NPU", host_arch=None)
    ok, reason = get_backend("openvino").available(target)
    assert not ok and "OpenVINO device NPU not found" in reason
    with pytest.raises(RuntimeUnavailableError):
        get_backend("openvino").profile(model, target=target, protocol=QUICK, input_shape=SHAPE)


# --- TensorRT and MIGraphX: refusal here, real runs where the hardware is -------------------------

def test_tensorrt_refuses_without_tensorrt_or_gpu(model):
    backend, target = get_backend("tensorrt"), load_target("nvidia-t4")
    ok, reason = backend.available(target)
    if ok:
        pytest.skip("TensorRT and a T4 are here")
    if not _has("tensorrt"):
        assert reason == "tensorrt is not installed (pip install tensorrt; needs an NVIDIA GPU)"
        with pytest.raises(RuntimeUnavailableError, match="not installed"):
            backend.version()
    with pytest.raises(RuntimeUnavailableError, match="cannot profile on target nvidia-t4 here: ") as info:
        backend.profile(model, target=target, protocol=QUICK, input_shape=(1, 3, 16, 16))
    assert reason in str(info.value)


def test_migraphx_refuses_without_migraphx_or_gpu(model):
    backend, target = get_backend("migraphx"), load_target("amd-mi100-migraphx")
    ok, reason = backend.available(target)
    if ok:
        pytest.skip("MIGraphX and an MI100 are here")
    if not _has("migraphx"):
        assert reason.startswith("migraphx is not installed (MIGraphX ships with ROCm")
    elif not hostinfo.amd_gpu_present():
        assert "no AMD GPU / ROCm" in reason
    with pytest.raises(RuntimeUnavailableError, match="cannot profile on target amd-mi100-migraphx here"):
        backend.profile(model, target=target, protocol=QUICK, input_shape=(1, 3, 16, 16))


def assert_fp16_session_matches(backend, target, model) -> None:
    """An fp16 session's outputs within verify's fp16 tolerance of the fp32 reference."""
    from onnx.reference import ReferenceEvaluator

    x = np.random.default_rng(1).standard_normal(SHAPE).astype(np.float32)
    expected = ReferenceEvaluator(str(model)).run(None, {"x": x})[0]
    with backend.session(model, target=target, input_shape=SHAPE) as session:
        got = session.run(x)[0].astype(np.float32)
        assert session.precision == "fp16"
    assert np.max(np.abs(got - expected)) / np.max(np.abs(expected)) <= 1e-2


@pytest.mark.tensorrt
def test_tensorrt_fp16_session(model):
    target = variant("nvidia-t4", device_match=None)
    ok, reason = get_backend("tensorrt").available(target)
    if not ok:
        pytest.skip(reason)
    assert_fp16_session_matches(get_backend("tensorrt"), target, model)


@pytest.mark.migraphx
def test_migraphx_fp16_session(model):
    target = variant("amd-mi100-migraphx", precision="fp16", device_match=None)
    ok, reason = get_backend("migraphx").available(target)
    if not ok:
        pytest.skip(reason)
    assert_fp16_session_matches(get_backend("migraphx"), target, model)


# --- host information -----------------------------------------------------------------------------

def test_cpu_names_from_cpuinfo():
    from deploykit.runtimes.hostinfo import _name_from_cpuinfo

    x86 = "processor\t: 0\nvendor_id\t: GenuineIntel\nmodel name\t: Intel(R) Xeon(R) Platinum 8480+\n"
    assert _name_from_cpuinfo(x86) == "Intel(R) Xeon(R) Platinum 8480+"
    pi5 = "processor\t: 0\nBogoMIPS\t: 108.00\nCPU implementer\t: 0x41\nCPU part\t: 0xd0b\n"
    assert _name_from_cpuinfo(pi5) == "Arm Cortex-A76"
    graviton3 = pi5.replace("0xd0b", "0xd40")
    assert _name_from_cpuinfo(graviton3) == "Arm Neoverse-V1"
    assert hostinfo.cpu_name()
    assert hostinfo.normalize_arch("AMD64") == "x86_64" and hostinfo.normalize_arch("arm64") == "aarch64"


def test_gpu_names_from_rocminfo():
    from deploykit.runtimes.hostinfo import _gpu_agents_from_rocminfo

    text = ("Agent 1\n  Name: AMD EPYC 7763\n  Marketing Name: AMD EPYC 7763\n  Device Type: CPU\n"
            "Agent 2\n  Name: gfx908\n  Marketing Name: AMD Instinct MI100\n  Device Type: GPU\n")
    assert _gpu_agents_from_rocminfo(text) == ["AMD Instinct MI100"]


def test_device_match_refuses_other_hardware(model):
    target = variant("cpu-ort", device_match="Definitely-Not-This-CPU", device="Some CPU")
    ok, reason = get_backend("onnxruntime").available(target)
    assert not ok and "not a Definitely-Not-This-CPU" in reason and hostinfo.cpu_name() in reason
