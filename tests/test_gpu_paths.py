"""The GPU code paths without a GPU (issue 23): scripted fake ``tensorrt`` / ``migraphx`` modules that
record the builder flags, compile options and bindings; onnxruntime's session and provider options
asserted as data; the distributed checks with a faked device count. At the end, the real-device checks
(markers; skipped here with the reason)."""

from __future__ import annotations

import dataclasses
import json
import os
import sys
import types
from pathlib import Path
from typing import ClassVar

import numpy as np
import pytest
import torch
from onnx_fixtures import tiny_onnx

from deploykit.errors import ConfigError, ModelError
from deploykit.runtimes import get_backend, hostinfo
from deploykit.runtimes import tensorrt_backend as trt_backend
from deploykit.targets import load_target
from deploykit.training import distributed

SHAPE = (2, 3, 16, 16)


@pytest.fixture(scope="module")
def model(tmp_path_factory) -> Path:
    return tiny_onnx(tmp_path_factory.mktemp("onnx") / "tiny.onnx")


def variant(name: str, **changes):
    return dataclasses.replace(load_target(name), **changes)


# --- TensorRT: a scripted module ---------------------------------------------------------------------

def fake_tensorrt(version: str, *, weak_typing: bool, record: dict) -> types.ModuleType:
    """A ``tensorrt`` whose builder records its network flags, builder flags and verbosity."""
    flags = ["TF32"] + (["FP16"] if weak_typing else [])  # TensorRT 11 has no BuilderFlag.FP16
    trt = types.SimpleNamespace(__version__=version)
    trt.BuilderFlag = types.SimpleNamespace(**{f: f for f in flags})
    trt.NetworkDefinitionCreationFlag = types.SimpleNamespace(EXPLICIT_BATCH=0, STRONGLY_TYPED=5)
    trt.ProfilingVerbosity = types.SimpleNamespace(DETAILED="detailed", LAYER_NAMES_ONLY="names")

    class Config:
        profiling_verbosity = "names"

        def __init__(self):
            self.flags = {"TF32"}  # TensorRT's default: TF32 on

        def set_flag(self, flag):
            self.flags.add(flag)

        def clear_flag(self, flag):
            self.flags.discard(flag)

    class Builder:
        def __init__(self, logger):
            pass

        def create_network(self, network_flags):
            record["network_flags"] = network_flags
            tensor = types.SimpleNamespace(name="x", shape=SHAPE)
            return types.SimpleNamespace(num_inputs=1, get_input=lambda i: tensor)

        def create_builder_config(self):
            return Config()

        def build_serialized_network(self, network, config):
            record["builder_flags"] = sorted(config.flags)
            record["verbosity"] = config.profiling_verbosity
            return b"plan"

    class OnnxParser:
        def __init__(self, network, logger):
            pass

        def parse_from_file(self, path):
            record["parsed"] = Path(path).name
            return True

    class Runtime:
        def __init__(self, logger):
            pass

        def deserialize_cuda_engine(self, plan):
            return "engine"

    trt.Builder, trt.OnnxParser, trt.Runtime = Builder, OnnxParser, Runtime
    return trt


@pytest.mark.parametrize("precision", ["fp32", "fp16"])
def test_tensorrt_10_builds_fp32_without_tf32_and_fp16_with_its_flag(model, tmp_path, precision):
    record = {}
    trt = fake_tensorrt("10.13.0", weak_typing=True, record=record)
    trt_backend.build_engine(trt, None, model, precision=precision, input_shape=SHAPE, scratch=tmp_path)
    assert record["builder_flags"] == (["FP16", "TF32"] if precision == "fp16" else [])
    assert record["verbosity"] == "detailed" and record["network_flags"] == 0


def test_tensorrt_11_network_is_left_to_strong_typing_and_fp32_clears_tf32(model, tmp_path):
    record = {}
    trt = fake_tensorrt("11.1.0", weak_typing=False, record=record)
    trt_backend.build_engine(trt, None, model, precision="fp32", input_shape=SHAPE, scratch=tmp_path)
    assert record["network_flags"] == 0  # no STRONGLY_TYPED bit: TensorRT 11 ignores it
    assert record["builder_flags"] == [] and record["parsed"] == "tiny.onnx"


def test_tensorrt_8_still_asks_for_explicit_batch(model, tmp_path):
    record = {}
    trt = fake_tensorrt("8.6.1", weak_typing=True, record=record)
    trt_backend.build_engine(trt, None, model, precision="fp32", input_shape=SHAPE, scratch=tmp_path)
    assert record["network_flags"] == 1


class FakeContext:
    """An execution context that records bindings and answers set_* with the given verdicts."""

    def __init__(self, *, shape_ok=True, address_ok=True):
        self.shape_ok, self.address_ok, self.bound = shape_ok, address_ok, {}

    def set_input_shape(self, name, shape):
        self.bound[name] = tuple(shape)
        return self.shape_ok

    def get_tensor_shape(self, name):
        return SHAPE if name == "x" else (2, 4, 16, 16)

    def set_tensor_address(self, name, address):
        self.bound[name + "@"] = address
        return self.address_ok


def fake_engine_api():
    trt = types.SimpleNamespace(TensorIOMode=types.SimpleNamespace(INPUT="in", OUTPUT="out"),
                                nptype=lambda dtype: np.float32)
    engine = types.SimpleNamespace(num_io_tensors=2, get_tensor_name=lambda i: ["x", "y"][i],
                                   get_tensor_mode=lambda n: "in" if n == "x" else "out",
                                   get_tensor_dtype=lambda n: "float")
    return trt, engine


def test_tensorrt_bindings_are_recorded_and_refusals_are_errors():
    trt, engine = fake_engine_api()
    context = FakeContext()
    buffers, name = trt_backend._bind_buffers(trt, torch, engine, context, SHAPE, "cpu")
    assert name == "x" and context.bound["x"] == SHAPE
    assert context.bound["y@"] == buffers["y"].data_ptr() and tuple(buffers["y"].shape) == (2, 4, 16, 16)
    with pytest.raises(ModelError, match="refused input shape"):
        trt_backend._bind_buffers(trt, torch, engine, FakeContext(shape_ok=False), SHAPE, "cpu")
    with pytest.raises(ModelError, match="refused the buffer bound to 'x'"):
        trt_backend._bind_buffers(trt, torch, engine, FakeContext(address_ok=False), SHAPE, "cpu")


def _layer(name, **output):
    return {"Name": name, "LayerType": "CaskConvolution", "Outputs": [{"Name": name + "_out", **output}]}


def test_tensorrt_layer_precisions_are_read_from_either_inspector_schema():
    ten = {"Layers": [_layer("in", **{"Format/Datatype": "Row major linear FP32"}),
                      _layer("c1", **{"Format/Datatype": "Channel major FP16 format where channel % 8 == 0"}),
                      _layer("c2", **{"Format/Datatype": "Row major linear FP16 format"})],
           "Bindings": ["x", "y"]}
    eleven = {"Layers": [_layer("c1", DataType="Half", Format="kHWC8"),
                         _layer("c2", DataType="BFloat16", Format="kLINEAR"),
                         _layer("out", DataType="Float", Format="kLINEAR")]}
    counts = trt_backend.layer_precisions(ten)
    assert counts == {"fp16": 2, "fp32": 1} and trt_backend.read_back_precision(counts) == "fp16"
    assert trt_backend.layer_precisions(eleven) == {"fp16": 1, "bf16": 1, "fp32": 1}
    names_only = {"Layers": ["c1", "c2"], "Bindings": ["x", "y"]}  # verbosity below DETAILED
    assert not trt_backend.layer_precisions(names_only) and trt_backend.read_back_precision(
        trt_backend.layer_precisions(None)) is None
    assert "not read back" in trt_backend._layers_note(trt_backend.layer_precisions(names_only))


def test_tensorrt_engine_information_asks_the_inspector_for_json():
    asked = []
    inspector = types.SimpleNamespace(
        get_engine_information=lambda fmt: asked.append(fmt) or '{"Layers": []}')
    engine = types.SimpleNamespace(create_engine_inspector=lambda: inspector)
    trt = types.SimpleNamespace(LayerInformationFormat=types.SimpleNamespace(JSON="json"))
    assert trt_backend.engine_information(trt, engine) == {"Layers": []} and asked == ["json"]
    assert trt_backend.engine_information(trt, object()) is None


# --- MIGraphX native: a scripted module ------------------------------------------------------------

def fake_migraphx(record: dict) -> types.ModuleType:
    shape = types.SimpleNamespace(type_string=lambda: "float_type")

    class Program:
        def get_parameter_shapes(self):
            return {"x": shape, "main:#output_0": shape}

        def compile(self, target, **options):
            record["compile"] = options

    module = types.ModuleType("migraphx")
    module.parse_onnx = lambda path, map_input_dims: record.setdefault("dims", map_input_dims) and Program()
    module.quantize_fp16 = lambda program: record.setdefault("quantized", True)
    module.get_target = lambda name: name
    module.allocate_gpu = lambda s: "gpu buffer"
    module.gpu_sync = lambda: None
    return module


@pytest.mark.parametrize(("precision", "fast_math"), [("fp32", False), ("fp16", True)])
def test_migraphx_compiles_fp32_without_fast_math(model, monkeypatch, precision, fast_math):
    record = {}
    monkeypatch.setitem(sys.modules, "migraphx", fake_migraphx(record))
    target = variant("amd-mi100-migraphx", precision=precision)
    session = get_backend("migraphx")._open_session(model, target=target, input_shape=SHAPE, threads=None)
    assert record["compile"] == {"offload_copy": False, "fast_math": fast_math}
    assert record["dims"] == {"x": list(SHAPE)} and record.get("quantized", False) == (precision == "fp16")
    assert ("fast_math off" in session.details) == (precision == "fp32")


# --- onnxruntime GPU providers: options as data ----------------------------------------------------

class FakeORTSession:
    """What onnxruntime.InferenceSession hands back, scripted: records how it was made and bound."""

    made: ClassVar[list[dict]] = []

    def __init__(self, path, sess_options=None, providers=None):
        provider, options = providers[0] if isinstance(providers[0], tuple) else (providers[0], {})
        self.provider, self.profile_dir = provider, sess_options.profile_file_prefix
        self.made.append({"provider": provider, "options": options,
                          "no_cpu_fallback": sess_options.get_session_config_entry(
                              "session.disable_cpu_ep_fallback") if _has_entry(sess_options) else None,
                          "profiling": sess_options.enable_profiling,
                          "env": {k: v for k, v in os.environ.items() if k.startswith("ORT_")}})
        self.runs, self.bound = 0, []

    def get_providers(self):
        return [self.provider, "CPUExecutionProvider"]

    def get_inputs(self):
        return [types.SimpleNamespace(name="x", type="tensor(float)")]

    def get_outputs(self):
        return [types.SimpleNamespace(name="y")]

    def run(self, names, feeds):
        self.runs += 1
        return [np.zeros((2, 4, 16, 16), np.float32)]

    def end_profiling(self):
        path = Path(self.profile_dir + "_0.json")
        events = [{"cat": "Session", "name": "model_run"}]
        for i, (op, provider) in enumerate([("Conv", self.provider), ("Shape", "CPUExecutionProvider"),
                                            ("Conv", self.provider)]):
            for suffix in ("_fence_before", "_kernel_time"):
                events.append({"cat": "Node", "name": f"n{i}{suffix}",
                               "args": {"op_name": op, "provider": provider}})
        path.write_text(json.dumps(events))
        return str(path)

    def io_binding(self):
        session = self

        class Binding:
            def bind_cpu_input(self, name, x):
                session.bound.append(("cpu input", name))

            def bind_ortvalue_input(self, name, value):
                session.bound.append(("device input", name))

            def bind_output(self, name, *device):
                session.bound.append(("output", name, *device))

        return Binding()


def _has_entry(sess_options) -> bool:
    try:
        sess_options.get_session_config_entry("session.disable_cpu_ep_fallback")
    except Exception:  # onnxruntime raises when the key was never set
        return False
    return True


@pytest.fixture
def fake_ort(monkeypatch):
    import onnxruntime

    FakeORTSession.made = []
    monkeypatch.setattr(onnxruntime, "InferenceSession", FakeORTSession)
    monkeypatch.setattr(onnxruntime.OrtValue, "ortvalue_from_numpy",
                        staticmethod(lambda x, device, index: ("ortvalue", device, index)))
    return FakeORTSession


def open_ort(model, target):
    return get_backend("onnxruntime")._open_session(model, target=target, input_shape=SHAPE, threads=None)


def test_cuda_fp32_turns_tf32_off_and_reports_cpu_nodes(model, fake_ort):
    target = variant("cpu-ort", provider="CUDAExecutionProvider", runtime_device="0")
    with open_ort(model, target) as session:
        made = fake_ort.made[-1]
        assert made["options"] == {"use_tf32": "0", "device_id": "0"} and made["profiling"]
        assert made["no_cpu_fallback"] is None  # the CUDA provider keeps shape arithmetic on the CPU
        assert "CPU nodes: 1 of 3" in session.details and "Shape" in session.details
        assert "fp32 (use_tf32=0)" in session.details
        session.timed_runner()
        assert session._session.bound[0] == ("device input", "x")
    assert fake_ort.made[-1]["options"] == {"use_tf32": "0", "device_id": "0"}


def test_cuda_fp16_is_by_conversion_and_keeps_provider_defaults(model, fake_ort):
    target = variant("cpu-ort", provider="CUDAExecutionProvider", precision="fp16")
    open_ort(model, target).close()
    assert fake_ort.made[-1]["options"] == {}


@pytest.mark.parametrize("provider", ["TensorrtExecutionProvider", "MIGraphXExecutionProvider"])
def test_tensorrt_and_migraphx_providers_allow_no_cpu_fallback_and_see_no_cache_env(
        model, fake_ort, monkeypatch, provider):
    monkeypatch.setenv("ORT_TENSORRT_ENGINE_CACHE_ENABLE", "1")
    monkeypatch.setenv("ORT_MIGRAPHX_MODEL_CACHE_PATH", "/tmp/elsewhere")
    target = variant("amd-mi100", provider=provider, batch=2, device_match=None)
    with open_ort(model, target) as session:
        made = fake_ort.made[-1]
        assert made["no_cpu_fallback"] == "1" and not made["profiling"] and made["env"] == {}
        assert "first run" in session.details
    assert os.environ["ORT_TENSORRT_ENGINE_CACHE_ENABLE"] == "1"  # put back afterwards
    assert os.environ["ORT_MIGRAPHX_MODEL_CACHE_PATH"] == "/tmp/elsewhere"


def test_migraphx_provider_binds_on_the_host_and_says_copies_are_timed(model, fake_ort):
    with open_ort(model, variant("amd-mi100", batch=2)) as session:
        session.timed_runner()
        assert session._session.bound == [("cpu input", "x"), ("output", "y")]
        assert "host-device copies are timed" in session.details


def test_removed_rocm_provider_is_refused_with_its_replacement():
    target = variant("amd-mi100", provider="ROCMExecutionProvider")
    key, message = get_backend("onnxruntime").target_problem(target)
    assert key == "provider" and "MIGraphXExecutionProvider" in message


def test_placement_counts_each_node_once():
    from deploykit.runtimes.onnxruntime_backend import describe_placement, nodes_by_provider

    events = [{"cat": "Node", "name": "a_kernel_time", "args": {"op_name": "Conv", "provider": "X"}},
              {"cat": "Node", "name": "a_kernel_time", "args": {"op_name": "Conv", "provider": "X"}},
              {"cat": "Node", "name": "b_kernel_time",
               "args": {"op_name": "Gather", "provider": "CPUExecutionProvider"}},
              {"cat": "Node", "name": "b_fence_after", "args": {}}]
    placed = nodes_by_provider(events)
    assert placed == {"X": ["Conv"], "CPUExecutionProvider": ["Gather"]}
    assert describe_placement(placed).startswith("CPU nodes: 1 of 2")
    assert describe_placement({}) == "node placement: the profile recorded no node"


# --- multi-GPU training with a faked device count ---------------------------------------------------

@pytest.fixture
def two_gpus(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)


def test_more_ranks_than_gpus_is_a_one_line_error(two_gpus):
    assert distributed.pick_device("auto", 1) == torch.device("cuda", 1)
    with pytest.raises(ConfigError, match=r"local rank 2 has no GPU of its own: this machine has 2 CUDA"):
        distributed.pick_device("cuda", 2)


def fake_group(monkeypatch, calls: dict, backend: str) -> None:
    """torch.distributed as rank 1 of 2 sees it, recording what the context asks of it, in order."""
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("LOCAL_RANK", "1")
    fake = {"is_initialized": lambda: False, "init_process_group": lambda **kw: calls.setdefault("init", kw),
            "get_rank": lambda: 1, "get_world_size": lambda: 2, "get_backend": lambda: backend,
            "barrier": lambda: calls.setdefault("order", []).append("barrier"),
            "destroy_process_group": lambda: calls.setdefault("order", []).append("destroy")}
    for name, value in fake.items():
        monkeypatch.setattr(distributed.dist, name, value)


def test_process_group_is_bound_to_the_rank_gpu(two_gpus, monkeypatch):
    calls = {}
    fake_group(monkeypatch, calls, "nccl")
    monkeypatch.setattr(torch.cuda, "set_device", lambda device: calls.setdefault("set_device", device))
    with distributed.distributed("auto") as ctx:
        assert ctx.device == torch.device("cuda", 1) and ctx.world == 2
    assert calls["init"] == {"backend": "nccl", "device_id": torch.device("cuda", 1)}
    assert calls["set_device"] == torch.device("cuda", 1) and "destroy" in calls["order"]


def test_ranks_leave_the_group_together_only_after_success(monkeypatch):
    """A rank that tore gloo down while rank 0 still wrote its result aborted at exit (CI, 2026-12-06);
    after an error, a barrier could wait for a rank that never comes."""
    calls = {}
    fake_group(monkeypatch, calls, "gloo")
    with distributed.distributed("cpu"):
        pass
    assert calls["order"] == ["barrier", "destroy"]
    calls.clear()
    with pytest.raises(ValueError, match="stage failed"), distributed.distributed("cpu"):
        raise ValueError("stage failed")
    assert calls["order"] == ["destroy"]


def test_bf16_only_where_the_gpu_has_it(monkeypatch):
    # torch's default counts emulated bf16 (True on T4 / V100); a GPU without it gets fp16 + a scaler
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda including_emulation=True: including_emulation)
    ctx = distributed.DistContext(device=torch.device("cuda", 0))
    assert distributed.amp_dtype(ctx, True) == torch.float16
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda including_emulation=True: True)
    assert distributed.amp_dtype(ctx, True) == torch.bfloat16


# --- on the device (skipped here, with the reason) ------------------------------------------------

def _reference(model, x):
    from onnx.reference import ReferenceEvaluator

    return ReferenceEvaluator(str(model)).run(None, {"x": x})[0]


GPU_FP32_TARGETS = [
    pytest.param("tensorrt", variant("nvidia-a100", precision="fp32", batch=2, device_match=None),
                 marks=pytest.mark.tensorrt, id="tensorrt"),
    pytest.param("onnxruntime", variant("cpu-ort", provider="CUDAExecutionProvider", host_arch=None),
                 marks=pytest.mark.cuda, id="ort-cuda"),
    pytest.param("migraphx", variant("amd-mi100-migraphx", precision="fp32", batch=2, device_match=None),
                 marks=pytest.mark.migraphx, id="migraphx"),
    pytest.param("onnxruntime", variant("amd-mi100", precision="fp32", batch=2, device_match=None),
                 marks=pytest.mark.migraphx, id="ort-migraphx"),
]


def _available_or_skip(runtime, target):
    ok, reason = get_backend(runtime).available(target)
    if not ok:
        pytest.skip(reason)


@pytest.mark.parametrize(("runtime", "target"), GPU_FP32_TARGETS)
def test_fp32_on_the_device_is_fp32(model, runtime, target):
    """No TF32 and no fast math: within 1e-4 (relative to the largest output) of the reference."""
    _available_or_skip(runtime, target)
    x = np.random.default_rng(1).standard_normal(SHAPE).astype(np.float32)
    expected = _reference(model, x)
    with get_backend(runtime).session(model, target=target, input_shape=SHAPE) as session:
        got = session.run(x)[0].astype(np.float32)
    assert np.max(np.abs(got - expected)) / np.max(np.abs(expected)) <= 1e-4


@pytest.mark.cuda
@pytest.mark.skipif(not hostinfo.nvidia_gpu_name(), reason="needs an NVIDIA GPU")
def test_cuda_provider_leaves_no_conv_on_the_cpu(model):
    target = variant("cpu-ort", provider="CUDAExecutionProvider", host_arch=None)
    _available_or_skip("onnxruntime", target)
    with get_backend("onnxruntime").session(model, target=target, input_shape=SHAPE) as session:
        assert "CPU nodes: 0 of" in session.details


@pytest.mark.tensorrt
@pytest.mark.parametrize("precision", ["fp32", "fp16"])
def test_tensorrt_read_back_precision_is_the_target_s(model, precision):
    target = variant("nvidia-a100", precision=precision, batch=2, device_match=None)
    _available_or_skip("tensorrt", target)
    with get_backend("tensorrt").session(model, target=target, input_shape=SHAPE) as session:
        assert session.precision == precision and "read back with the engine inspector" in session.details
