"""Property-based fuzzing of every reader of user or network input (issue 20): the bounded JSON reader,
the model record, a Hugging Face ``config.json``, a table's ``meta.json``, ``subnet.json``,
``result.json``, ``run.json``, the device agent's request header and its upload check.

The property, for each: **a valid result or one DeployKitError of one line — never another exception
(a traceback), and nothing written**. Inputs are both arbitrary (JSON of any shape, raw bytes, deep
nesting) and valid documents with fields replaced, dropped or added, which reach the checks behind
the parser.

``DEPLOYKIT_FUZZ=ci`` (the default) runs a bounded, derandomized search that fits the test suite (a few
seconds); ``DEPLOYKIT_FUZZ=long`` (``make fuzz``) a much longer random one.
"""

from __future__ import annotations

import json
import math
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from deploykit.errors import DeployKitError  # noqa: E402

_PROFILES = {
    "ci": settings(max_examples=40, deadline=None, derandomize=True, database=None,
                   suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large]),
    "long": settings(max_examples=3000, deadline=None,
                     suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large]),
}
FUZZ = _PROFILES[os.environ.get("DEPLOYKIT_FUZZ", "ci")]
# Building models (even on the meta device) is the slow part: fewer examples where a reader builds.
FUZZ_BUILDS = settings(FUZZ, max_examples=max(FUZZ.max_examples // 3, 10))


# --- strategies ------------------------------------------------------------------------------------

SCALARS = (st.none() | st.booleans() | st.integers(min_value=-(10**30), max_value=10**30)
           | st.floats(allow_nan=True, allow_infinity=True) | st.text(max_size=20))
JSON_VALUES = st.recursive(SCALARS, lambda inner: st.lists(inner, max_size=4)
                           | st.dictionaries(st.text(max_size=10), inner, max_size=4), max_leaves=12)
NESTED_TEXT = st.builds(lambda depth, open_, close: open_ * depth + close * depth,
                        st.integers(min_value=30, max_value=5000), st.sampled_from(["[", '{"a":']),
                        st.sampled_from(["]", "}"]))
RAW_TEXT = st.text(max_size=200) | NESTED_TEXT | JSON_VALUES.map(lambda v: json.dumps(v))


def mutated(valid: dict[str, Any]) -> st.SearchStrategy[dict[str, Any]]:
    """``valid`` with some of its fields replaced by any JSON value, some dropped, and some added."""
    keys = sorted(valid)
    return st.builds(_mutate, st.just(valid), st.dictionaries(st.sampled_from(keys), JSON_VALUES, max_size=3),
                     st.sets(st.sampled_from(keys), max_size=2),
                     st.dictionaries(st.text(max_size=8), JSON_VALUES, max_size=1))


def _mutate(valid, replaced, dropped, added) -> dict[str, Any]:
    data = {**valid, **replaced, **added}
    for key in dropped:
        data.pop(key, None)
    return data


# --- the property ----------------------------------------------------------------------------------

def one_line_or_valid(read: Callable[[], Any]) -> Any:
    """Run a reader: its result, or None after a one-line DeployKitError; any other exception fails."""
    try:
        return read()
    except DeployKitError as error:
        assert len(str(error).splitlines()) <= 1, str(error)
        return None


def snapshot(folder: Path) -> list[tuple[str, int]]:
    return sorted((str(p.relative_to(folder)), p.stat().st_size) for p in folder.rglob("*"))


def reading_file(name: str, content: str | bytes, read: Callable[[Path], Any]) -> Any:
    """Write ``content`` as ``name`` in a fresh folder, read it, and check nothing else was written."""
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(content if isinstance(content, bytes) else content.encode("utf-8", "surrogatepass"))
        before = snapshot(Path(folder))
        result = one_line_or_valid(lambda: read(path))
        assert snapshot(Path(folder)) == before, "a reader wrote something"
        return result


def as_json(value: Any) -> str:
    return json.dumps(value, allow_nan=True)


# --- the readers -----------------------------------------------------------------------------------

@FUZZ
@given(st.one_of(RAW_TEXT, st.binary(max_size=200)))
def test_the_bounded_json_reader(text):
    from deploykit.fileio import parse_json

    one_line_or_valid(lambda: parse_json(text, what="fuzz", kind=None))


def _valid_record() -> dict[str, Any]:
    from deploykit.modelfile import ModelRecord

    return ModelRecord("resnet18", 10, (32, 32), pruned=(1,)).as_dict()


@FUZZ_BUILDS
@given(st.one_of(mutated(_valid_record()), JSON_VALUES, RAW_TEXT))
def test_the_model_record_and_its_resource_bounds(data):
    """A model file's record: parsed, validated and its cost estimated (meta device), never built."""
    from deploykit.fileio import parse_json
    from deploykit.modelfile import ModelRecord
    from deploykit.models import check_model_resources, require_known_model

    def read():
        value = parse_json(data, what="record") if isinstance(data, str) else data
        record = ModelRecord.from_dict(value)
        require_known_model(record.model)
        check_model_resources(record.model, {"num_classes": record.num_classes, "in_chans": record.in_chans},
                              record.input_size)
        return record

    one_line_or_valid(read)


@FUZZ
@given(st.one_of(mutated({"architecture": "resnet18", "num_classes": 10,
                          "model_args": {"drop_rate": 0.1, "act_layer": "relu"}}), JSON_VALUES))
def test_a_hugging_face_config(data):
    from deploykit.checkpoints import folder_config

    reading_file("hf/config.json", as_json(data), lambda path: folder_config(path.parent))


@FUZZ_BUILDS
@given(st.dictionaries(st.sampled_from(["drop_rate", "drop_path_rate", "act_layer", "num_classes", "in_chans",
                                        "img_size", "global_pool"]), JSON_VALUES, max_size=3))
def test_model_arguments_from_a_config(model_args):
    """What a config.json's model_args can make the model builder do: refused in one line, or costed."""
    from deploykit.models import check_model_resources

    one_line_or_valid(lambda: check_model_resources("resnet18", dict(model_args), (32, 32)))


def _valid_meta() -> dict[str, Any]:
    return {"model": "convnext_atto", "target": "cpu-ort", "device": "the local CPU (any)",
            "device_string": "x", "runtime": "onnxruntime", "runtime_version": "1", "provider": None,
            "precision": "fp32", "batch": 1, "input_size": [32, 32], "threads": None, "protocol": {},
            "mode": "estimated", "date": "2026-01-01T00:00:00+00:00", "deploykit_version": "0.1.0",
            "complete": True, "calibration": None, "notes": []}


@FUZZ
@given(st.one_of(mutated(_valid_meta()), JSON_VALUES, RAW_TEXT))
def test_a_tables_metadata(data):
    from deploykit.latency.table import read_meta

    content = data if isinstance(data, str) else as_json(data)
    reading_file("t.meta.json", content, read_meta)


@FUZZ
@given(st.one_of(mutated({"model": "convnext_atto", "input_size": [32, 32], "pruned": [1, 4],
                          "predicted_ms": 1.5}), JSON_VALUES, RAW_TEXT))
def test_a_subnet_file(data):
    from deploykit.subnet import Subnet

    content = data if isinstance(data, str) else as_json(data)
    reading_file("subnet.json", content, Subnet.read)


@FUZZ
@given(st.one_of(mutated({"kind": "baseline", "model": "convnext_atto", "num_classes": 10, "top1": 50.0,
                          "epochs": 1, "input_size": [32, 32]}), JSON_VALUES, RAW_TEXT))
def test_a_result_file(data):
    from deploykit.results_table import load_variant

    content = data if isinstance(data, str) else as_json(data)
    reading_file("v/result.json", content, lambda path: load_variant(path.parent))


def _valid_run_state() -> dict[str, Any]:
    from deploykit.pipeline import PipelineConfig

    return {"deploykit_run": 1, "started": "2026-01-01T00:00:00+00:00",
            "config": PipelineConfig(data="digits").as_dict(), "stages": {}, "outputs": ["baseline"]}


@FUZZ
@given(st.one_of(mutated(_valid_run_state()), st.builds(
    lambda config: {**_valid_run_state(), "config": config}, mutated(_valid_run_state()["config"])),
    JSON_VALUES, RAW_TEXT))
def test_a_run_file(data):
    """run.json as a resumed run reads it: the state, its settings, and what --fresh would delete."""
    from deploykit.pipeline.rundir import PipelineConfig, RunLayout, earlier_outputs, read_state

    def read(path: Path):
        layout = RunLayout(root=path.parent, config=PipelineConfig(data="digits"), target_name="cpu-ort",
                           table_name="t.csv")
        names = earlier_outputs(path, layout)
        assert all("/" not in name and name not in ("", ".", "..") for name in names)
        state = read_state(path)
        return PipelineConfig.from_dict(state["config"], source=str(path))

    content = data if isinstance(data, str) else as_json(data)
    reading_file("run/run.json", content, read)


def _valid_header() -> dict[str, Any]:
    from deploykit.protocol import Protocol

    return {"target": "cpu-ort", "input_shape": [1, 3, 16, 16], "protocol": Protocol().as_dict(),
            "timeout_s": 5, "name": "m.onnx", "seed": 0, "n_inputs": 2}


@FUZZ
@given(st.one_of(mutated(_valid_header()), st.builds(
    lambda protocol: {**_valid_header(), "protocol": protocol}, mutated(_valid_header()["protocol"])),
    JSON_VALUES, RAW_TEXT))
def test_the_agents_request_header(data):
    """Both request kinds, then the agent's per-request bounds."""
    from deploykit.remote.server import ServeConfig
    from deploykit.remote.wire import MeasureRequest, RunRequest

    text = data if isinstance(data, str) else as_json(data)
    config = ServeConfig(token_file=Path("unused"), max_threads=4, max_input_elements=10**6)
    for kind in (MeasureRequest, RunRequest):
        order = one_line_or_valid(lambda kind=kind: kind.from_header(text))
        if order is not None:
            one_line_or_valid(lambda order=order: config.check_order(order))


@pytest.fixture(scope="module")
def tiny_bytes(tmp_path_factory) -> bytes:
    from onnx_fixtures import tiny_onnx

    return tiny_onnx(tmp_path_factory.mktemp("fuzz") / "tiny.onnx").read_bytes()


@FUZZ
@given(data=st.data())
def test_the_agents_upload_check(tiny_bytes, data):
    """A valid ONNX file cut short, with bytes flipped, or with bytes inserted: refused in one line
    (ModelError) or accepted, and the upload's folder holds nothing new."""
    from deploykit.remote.device import check_onnx_upload

    cut = data.draw(st.integers(min_value=0, max_value=len(tiny_bytes)))
    flips = data.draw(st.lists(st.tuples(st.integers(0, len(tiny_bytes) - 1), st.integers(0, 255)),
                               max_size=4))
    body = bytearray(tiny_bytes)
    for position, value in flips:
        body[position] = value
    body = bytes(body[:cut]) + data.draw(st.binary(max_size=16))
    reading_file("upload/model.onnx", body, check_onnx_upload)


def test_the_profiles_are_known():
    assert os.environ.get("DEPLOYKIT_FUZZ", "ci") in _PROFILES
    assert not math.isnan(FUZZ.max_examples)
