"""Input sizes have one home (deploykit/shapes.py): every place that reads one refuses the same values."""

from __future__ import annotations

import argparse

import pytest
import timm
import yaml

from deploykit.cli.args import size_argument
from deploykit.data import DataConfig
from deploykit.errors import ConfigError, DeployKitError, ModelError, TableError
from deploykit.latency.table import TableMeta
from deploykit.modelfile import ModelRecord
from deploykit.pipeline import PipelineConfig
from deploykit.prune import prunable
from deploykit.shapes import (
    check_input_shape,
    check_input_size,
    format_shape,
    input_size_or_none,
    parse_size,
)
from deploykit.subnet import Subnet
from deploykit.targets import load_target, targets_dir

BAD_SIZES = [True, False, (True, 32), (32, True), 0, -3, (0, 32), (32, -1), 32.0, (32.0, 32), "32", (32,),
             (32, 32, 3), [], None]


@pytest.mark.parametrize("value", BAD_SIZES, ids=repr)
def test_bad_sizes_are_refused(value):
    assert input_size_or_none(value) is None
    with pytest.raises(ConfigError, match="input size must be"):
        check_input_size(value)


@pytest.mark.parametrize(("value", "size"), [(32, (32, 32)), ((96, 128), (96, 128)), ([7, 9], (7, 9))])
def test_good_sizes(value, size):
    assert check_input_size(value) == size


@pytest.mark.parametrize(("text", "size"), [("224", (224, 224)), ("96x128", (96, 128)), ("96×128", (96, 128)),
                                            ("64X32", (64, 32))])
def test_size_text(text, size):
    assert parse_size(text) == size == size_argument(text)


@pytest.mark.parametrize("text", ["0", "-5", "12x0", "axb", "12x", "1x2x3", "", "True", "1.5"])
def test_bad_size_text(text):
    with pytest.raises(ConfigError, match="expected a size like 224 or 96x128"):
        parse_size(text)
    with pytest.raises(argparse.ArgumentTypeError):
        size_argument(text)


def test_shapes():
    assert check_input_shape([1, 3, 8, 8]) == (1, 3, 8, 8)
    for bad in ((1, True, 8, 8), (1, 0), (), 5, (1.0, 3)):
        with pytest.raises(ConfigError, match="input shape must be"):
            check_input_shape(bad)
    assert format_shape((1, 3, 224, 224)) == "1x3x224x224" and format_shape([96, 128]) == "96x128"


def _target_with(tmp_path, size):
    raw = yaml.safe_load((targets_dir() / "cpu-ort.yaml").read_text())
    path = tmp_path / "box.yaml"
    path.write_text(yaml.safe_dump({**raw, "input_size": size}))
    return load_target(str(path))


def _table_meta(size):
    return TableMeta(model="m", target="t", device="d", device_string="d", runtime="onnxruntime",
                     runtime_version="0", provider=None, precision="fp32", batch=1, input_size=size,
                     threads=None, protocol={}, mode="measured", date="2026-01-01", deploykit_version="0")


# Every reader of an input size, with the error it raises.
READERS = {
    "target file": (ConfigError, _target_with),
    "subnet file": (ConfigError, lambda tmp, size: Subnet(model="m", input_size=size, pruned=())),
    "table": (TableError, lambda tmp, size: _table_meta(size)),
    "data": (ConfigError, lambda tmp, size: DataConfig("digits", input_size=size)),
    "run": (ConfigError, lambda tmp, size: PipelineConfig(input_size=size)),
    "model file": (ModelError,
                   lambda tmp, size: ModelRecord(model="resnet10t", num_classes=10, input_size=size)),
    "prunable": (ModelError, lambda tmp, size: prunable(timm.create_model("resnet10t"), input_size=size)),
}


@pytest.mark.parametrize("reader", READERS)
@pytest.mark.parametrize("value", [True, (True, 32), 0, (32, -1), (32.0, 32), "32"], ids=repr)
def test_every_reader_refuses_the_same_sizes(reader, value, tmp_path):
    error, read = READERS[reader]
    with pytest.raises(error, match=r"input_size|input size") as caught:
        read(tmp_path, value)
    assert isinstance(caught.value, DeployKitError) and "\n" not in str(caught.value)


@pytest.mark.parametrize("reader", ["target file", "subnet file", "table", "data", "run", "model file"])
def test_every_reader_takes_one_int_for_a_square(reader, tmp_path):
    _, read = READERS[reader]
    assert read(tmp_path, 32).input_size == (32, 32)
