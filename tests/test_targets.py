"""Target files: every shipped one loads, bad ones fail naming file and key, `deploykit targets` runs.

Parsing asks no runtime; :func:`deploykit.runtimes.check_target` checks what the runtime must say.
"""

from __future__ import annotations

import ast
import json
from pathlib import Path

import pytest
import yaml

import deploykit.targets
from deploykit.cli import main
from deploykit.errors import ConfigError
from deploykit.runtimes import availability, check_target, get_backend, hostinfo
from deploykit.targets import (
    SOURCE_ENV,
    SOURCE_FILE,
    SOURCE_SHIPPED,
    Target,
    list_targets,
    load_target,
    shipped_targets_dir,
    target_from_dict,
    target_source,
    targets_dir,
)

REQUIRED = ("amd-mi100", "nvidia-a100", "nvidia-t4", "intel-xeon", "arm-cortex-a76", "arm-neoverse-v1",
            "cpu-ort", "cpu-openvino")
SHIPPED = sorted(p.stem for p in targets_dir().glob("*.yaml"))
CPU_ORT_YAML = targets_dir() / "cpu-ort.yaml"


def test_the_required_targets_are_shipped():
    assert set(REQUIRED) <= set(SHIPPED)


@pytest.mark.parametrize("name", SHIPPED)
def test_every_shipped_target_loads(name):
    target = load_target(name)
    assert isinstance(target, Target)
    assert target.name == name
    assert target.precision in target.peak.flops and target.peak.bandwidth > 0
    assert target.peak.source and target.description and target.device
    assert Path(target.path).is_file()
    assert target_from_dict(target.as_dict()) == target
    assert load_target(target.path) == target
    assert check_target(target) is get_backend(target.runtime)


def test_target_parsing_imports_no_runtime_module():
    """targets.py sits below the runtimes: no import of deploykit.runtimes, not even in a function."""
    tree = ast.parse(Path(deploykit.targets.__file__).read_text())
    imported = [alias.name for node in ast.walk(tree) if isinstance(node, ast.Import) for alias in node.names]
    imported += [node.module or "" for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)]
    assert imported and not [name for name in imported if name.startswith("deploykit.runtimes")]


def test_parsing_is_pure_and_the_runtimes_check_what_only_they_know(tmp_path):
    target = load_target(str(write(tmp_path, runtime="tvm")))  # parses: no runtime was asked
    assert target.runtime == "tvm"
    with pytest.raises(ConfigError, match=r"mine\.yaml: runtime: unknown runtime 'tvm' \(known: .*openvino"):
        check_target(target)
    with pytest.raises(ConfigError, match=r"mine\.yaml: runtime: unknown runtime 'tvm'"):
        availability(target)


def test_settings_of_the_papers_target_and_the_local_ones():
    mi100 = load_target("amd-mi100")
    assert (mi100.runtime, mi100.provider, mi100.precision, mi100.batch) == \
        ("onnxruntime", "MIGraphXExecutionProvider", "fp16", 128)
    for name in ("nvidia-a100", "nvidia-t4"):
        assert (load_target(name).runtime, load_target(name).precision) == ("tensorrt", "fp16")
    xeon = load_target("intel-xeon")
    assert (xeon.runtime, xeon.runtime_device) == ("openvino", "CPU")
    for name in ("arm-cortex-a76", "arm-neoverse-v1"):
        arm = load_target(name)
        assert (arm.runtime, arm.provider) == ("onnxruntime", "CPUExecutionProvider")
        assert arm.host_arch == "aarch64"
    assert load_target("cpu-ort").provider == "CPUExecutionProvider"
    for name in ("cpu-ort", "cpu-openvino"):
        assert "generic" in load_target(name).peak.source
    assert [t.name for t in list_targets()] == SHIPPED


def test_the_local_targets_are_available_here():
    assert availability(load_target("cpu-ort")) == (True, "")
    if hostinfo.machine_arch() == "x86_64":
        pytest.importorskip("openvino")
        assert availability(load_target("cpu-openvino")) == (True, "")


def test_arm_targets_refuse_a_machine_of_another_architecture():
    if hostinfo.machine_arch() == "aarch64":
        ok, reason = availability(load_target("cpu-openvino"))
        assert not ok and "not x86_64" in reason
    else:
        for name in ("arm-cortex-a76", "arm-neoverse-v1"):
            ok, reason = availability(load_target(name))
            assert not ok
            assert f"this machine is {hostinfo.machine_arch()}, not aarch64" in reason


def test_gpu_targets_say_exactly_why_not():
    pytest.importorskip("onnxruntime")
    import onnxruntime

    if "MIGraphXExecutionProvider" not in onnxruntime.get_available_providers():
        ok, reason = availability(load_target("amd-mi100"))
        assert not ok
        assert "no AMD GPU / ROCm: MIGraphXExecutionProvider not in onnxruntime.get_available_providers()" \
            in reason


# --- bad files ------------------------------------------------------------------------------------

def write(tmp_path: Path, name: str = "mine", **changes) -> Path:
    """A copy of cpu-ort.yaml with ``changes`` (value None deletes the key)."""
    raw = yaml.safe_load(CPU_ORT_YAML.read_text())
    for key, value in changes.items():
        if value is None:
            raw.pop(key, None)
        else:
            raw[key] = value
    path = tmp_path / f"{name}.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(raw))
    return path


def test_a_valid_copy_loads_by_path_and_takes_its_name_from_the_file(tmp_path):
    target = load_target(str(write(tmp_path, "my-box", batch=8, input_size=96)))
    assert (target.name, target.batch, target.input_size) == ("my-box", 8, (96, 96))


@pytest.mark.parametrize(("changes", "key"), [
    ({"bogus": 1}, "bogus"),
    ({"peak": {"flops": {"fp32": 1e12}, "bandwidth": 1e10, "source": "x", "extra": 2}}, "peak.extra"),
])
def test_unknown_keys_name_file_and_key(tmp_path, changes, key):
    path = write(tmp_path, **changes)
    with pytest.raises(ConfigError, match=rf"mine\.yaml: {key}: unknown key"):
        load_target(str(path))


@pytest.mark.parametrize(("changes", "key", "says"), [
    ({"batch": -1}, "batch", "positive integer"),
    ({"batch": 0}, "batch", "positive integer"),
    ({"batch": True}, "batch", "positive integer"),
    ({"batch": "8"}, "batch", "positive integer"),
    ({"precision": "fp8"}, "precision", "one of fp32, fp16, int8"),
    ({"runtime": "tvm"}, "runtime", "unknown runtime 'tvm'"),
    ({"input_size": [224]}, "input_size", "height, width"),
    ({"input_size": [224, -3]}, "input_size", "height, width"),
    ({"threads": 0}, "threads", "positive integer or null"),
    ({"host_arch": "sparc"}, "host_arch", "x86_64, aarch64"),
    ({"device": ""}, "device", "non-empty string"),
    ({"description": None}, "description", "missing required key"),
    ({"provider": None}, "provider", "needs an execution provider"),
    ({"provider": "CUDAExecutionProvder"}, "provider", "unknown execution provider"),
    ({"precision": "int8"}, "precision", "CPUExecutionProvider supports precision fp32"),
    ({"runtime_device": "0"}, "runtime_device", "takes no runtime_device"),
    ({"peak": {"flops": {"fp32": -1.0}, "bandwidth": 1e10, "source": "x"}}, "peak.flops.fp32", "positive"),
    ({"peak": {"flops": {"fp16": 1e12}, "bandwidth": 1e10, "source": "x"}}, "peak.flops", "precision fp32"),
    ({"peak": {"flops": {"fp32": 1e12}, "bandwidth": "fast", "source": "x"}}, "peak.bandwidth", "positive"),
    ({"peak": {"flops": {"fp32": 1e12}, "bandwidth": 1e10, "source": ""}}, "peak.source", "datasheet"),
    ({"peak": {"flops": {"fp32": 1e12}, "bandwidth": 1e10}}, "peak.source", "missing required key"),
])
def test_bad_values_name_file_and_key(tmp_path, changes, key, says):
    path = write(tmp_path, **changes)
    with pytest.raises(ConfigError) as info:
        check_target(load_target(str(path)))
    message = str(info.value)
    assert message.startswith(f"{path}: {key}:") or f"mine.yaml: {key}:" in message
    assert says in message
    assert "\n" not in message


@pytest.mark.parametrize(("changes", "key"), [
    ({"runtime": "tensorrt", "provider": None, "runtime_device": "gpu"}, "runtime_device"),
    ({"runtime": "tensorrt", "provider": "CPUExecutionProvider"}, "provider"),
    ({"runtime": "openvino", "provider": None, "runtime_device": "AUTO"}, "runtime_device"),
    ({"runtime": "migraphx", "provider": None, "runtime_device": "ref"}, "runtime_device"),
    ({"runtime": "openvino", "provider": None, "precision": "int8",
      "peak": {"flops": {"int8": 1e12}, "bandwidth": 1e10, "source": "x"}}, "precision"),
])
def test_runtime_specific_values_are_checked_by_the_backend(tmp_path, changes, key):
    target = load_target(str(write(tmp_path, **changes)))
    with pytest.raises(ConfigError, match=rf"mine\.yaml: {key}:"):
        check_target(target)
    with pytest.raises(ConfigError, match=rf"mine\.yaml: {key}:"):  # before any session is opened
        get_backend(target.runtime).session(write(tmp_path), target=target, input_shape=(1, 3, 8, 8))


def test_numbers_written_the_yaml_1_1_way_are_accepted(tmp_path):
    path = tmp_path / "sci.yaml"
    path.write_text((targets_dir() / "cpu-ort.yaml").read_text().replace("768.0e+9", "7.68e11"))
    assert load_target(str(path)).peak.flops["fp32"] == 7.68e11


def test_unreadable_and_unknown_targets(tmp_path):
    with pytest.raises(ConfigError, match=r"unknown target 'no-such-target'.*cpu-ort"):
        load_target("no-such-target")
    with pytest.raises(ConfigError, match="target file not found"):
        load_target(str(tmp_path / "missing.yaml"))
    broken = tmp_path / "broken.yaml"
    broken.write_text("name: [unclosed\n")
    with pytest.raises(ConfigError, match=r"broken\.yaml: not valid YAML"):
        load_target(str(broken))
    listed = tmp_path / "list.yaml"
    listed.write_text("- a\n- b\n")
    with pytest.raises(ConfigError, match="expected a mapping"):
        load_target(str(listed))


def test_targets_dir_can_be_overridden(tmp_path, monkeypatch):
    write(tmp_path, "only-one")
    monkeypatch.setenv("DEPLOYKIT_TARGETS_DIR", str(tmp_path))
    assert [t.name for t in list_targets()] == ["only-one"]
    assert target_source(load_target("only-one")) == SOURCE_ENV


def test_each_target_says_where_it_came_from(tmp_path):
    assert {target_source(target) for target in list_targets()} == {SOURCE_SHIPPED}
    assert target_source(load_target(str(write(tmp_path)))) == SOURCE_FILE


def test_an_installed_package_reads_its_own_targets(tmp_path, monkeypatch):
    """A wheel carries the targets as deploykit/_data/targets (setup.py); a checkout has none there."""
    packaged = tmp_path / "deploykit" / "_data" / "targets"
    assert shipped_targets_dir() == Path(deploykit.targets.__file__).resolve().parents[1] / "targets"
    write(packaged.parent.parent, "elsewhere")  # not in _data/targets: not a shipped target
    packaged.mkdir(parents=True)
    monkeypatch.setattr(deploykit.targets.resources, "files", lambda package: tmp_path / package)
    assert shipped_targets_dir() == packaged and list_targets() == []
    write(packaged, "packaged")
    assert [(t.name, target_source(t)) for t in list_targets()] == [("packaged", SOURCE_SHIPPED)]


# --- the command ----------------------------------------------------------------------------------

def test_cli_lists_every_target_with_why_not(capsys):
    assert main(["targets"]) == 0
    out = capsys.readouterr().out
    for name in SHIPPED:
        assert name in out
    assert "why not:" in out  # some target always lacks its hardware here (no machine has them all)
    assert out.startswith(f"{len(SHIPPED)} target(s) shipped with deploykit ({shipped_targets_dir()})\n")
    cpu_line = next(line for line in out.splitlines() if line.startswith("cpu-ort "))
    assert "yes:" in cpu_line and cpu_line.split()[1] == SOURCE_SHIPPED


def test_cli_names_the_source_of_each_target(capsys, tmp_path, monkeypatch):
    mine = write(tmp_path / "file", "mine")
    write(tmp_path / "env", "theirs")
    monkeypatch.setenv("DEPLOYKIT_TARGETS_DIR", str(tmp_path / "env"))
    assert main(["targets"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0] == f"1 target(s) from $DEPLOYKIT_TARGETS_DIR ({tmp_path / 'env'})"
    assert main(["targets", "theirs", str(mine), str(shipped_targets_dir() / "cpu-ort.yaml")]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0] == "3 target(s) named on the command line"
    sources = {line.split()[0]: line.split()[1] for line in out[2:] if not line.startswith(" ")}
    assert sources == {"theirs": SOURCE_ENV, "mine": str(mine), "cpu-ort": SOURCE_SHIPPED}


def test_cli_json_and_errors(capsys, tmp_path):
    assert main(["targets", "cpu-ort", "nvidia-t4", "--format", "json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [r["name"] for r in rows] == ["cpu-ort", "nvidia-t4"]
    assert rows[0]["available"] is True and rows[0]["runtime_version"]
    assert rows[1]["available"] is False or rows[1]["device_here"]
    assert main(["targets", "nope"]) == 2
    assert "unknown target 'nope'" in capsys.readouterr().err
    assert main(["targets", str(write(tmp_path, bogus=1))]) == 2
    err = capsys.readouterr().err
    assert "bogus: unknown key" in err and len(err.strip().splitlines()) == 1
    assert main(["targets", str(write(tmp_path, provider="CUDAExecutionProvder"))]) == 2
    err = capsys.readouterr().err
    assert "mine.yaml: provider: unknown execution provider" in err and len(err.strip().splitlines()) == 1
