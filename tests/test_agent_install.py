"""The board-sized agent: `deploykit serve` and its measuring worker with only the `agent` extra installed.

A board has its runtime, not a training stack. Every installed distribution outside the `agent` extra
(pyproject.toml) and what it requires is made absent (tests/board_site/sitecustomize.py on PYTHONPATH:
importing it fails as an uninstalled package does), then the agent's modules are imported and a real
agent measures a tiny ONNX model built with onnx.helper.
"""

from __future__ import annotations

import os
import subprocess
import sys
from importlib.metadata import PackageNotFoundError, distribution, packages_distributions
from pathlib import Path

import pytest
from onnx_fixtures import tiny_onnx

from deploykit.protocol import Protocol
from deploykit.remote.local import LocalAgent
from deploykit.targets import load_target

tomllib = pytest.importorskip("tomllib", reason="reading pyproject.toml needs Python >= 3.11")
requirements = pytest.importorskip("packaging.requirements")
utils = pytest.importorskip("packaging.utils")
pytest.importorskip("starlette")
pytest.importorskip("uvicorn")

ROOT = Path(__file__).resolve().parents[1]
BOARD_SITE = Path(__file__).resolve().parent / "board_site"
TRAINING_STACK = ("torch", "torchvision", "timm", "onnxsim", "onnxscript", "pandas", "matplotlib",
                  "safetensors")
# What the agent's command line and the measuring worker load (deploykit.cli is what `deploykit` runs).
AGENT_MODULES = ("deploykit.cli", "deploykit.remote.server", "deploykit.remote.device",
                 "deploykit.measure.host", "deploykit.measure.client", "deploykit.measure.worker",
                 "deploykit.measure.fingerprint")
TINY = Protocol(warmup_s=0.0, warmup_iters=1, min_time_s=0.01, min_iters=5, max_repeats=1)


def agent_extra() -> list[requirements.Requirement]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    return [requirements.Requirement(line) for line in project["optional-dependencies"]["agent"]]


def board_distributions() -> set[str]:
    """The `agent` extra's distributions and, as installed here, everything they require."""
    todo, seen = agent_extra(), {"deploykit"}
    while todo:
        wanted = todo.pop()
        name = utils.canonicalize_name(wanted.name)
        if name in seen:
            continue
        seen.add(name)
        try:
            lines = distribution(name).requires or []
        except PackageNotFoundError:
            continue
        for line in lines:
            needed = requirements.Requirement(line)
            extras = ("", *wanted.extras)
            if needed.marker is None or any(needed.marker.evaluate({"extra": e}) for e in extras):
                todo.append(needed)
    return seen


def absent_modules() -> set[str]:
    """Top-level modules of every installed distribution a board with the `agent` extra would not have."""
    board = board_distributions()
    return {module for module, dists in packages_distributions().items()
            if not any(utils.canonicalize_name(d) in board for d in dists) and module.isidentifier()}


@pytest.fixture(scope="module")
def board_env(tmp_path_factory) -> dict[str, str]:
    log = tmp_path_factory.mktemp("board") / "processes.log"
    return {"PYTHONPATH": os.pathsep.join((str(ROOT), str(BOARD_SITE))),
            "DEPLOYKIT_TEST_ABSENT": ",".join(sorted(absent_modules())),
            "DEPLOYKIT_TEST_ABSENT_LOG": str(log)}


def test_the_agent_extra_leaves_the_training_stack_out():
    absent = absent_modules()
    installed = [name for name in TRAINING_STACK if name in packages_distributions()]
    assert installed and set(installed) <= absent  # not pulled in by the agent extra, even indirectly
    assert {"onnxruntime", "numpy", "yaml", "onnx", "starlette", "uvicorn"}.isdisjoint(absent)


def test_the_agent_modules_import_on_a_board(board_env):
    code = ("import importlib, sys\n"
            "for name in sys.argv[1:]: importlib.import_module(name)\n"
            "try:\n    import torch\nexcept ModuleNotFoundError:\n    print('no torch')\n")
    done = subprocess.run([sys.executable, "-c", code, *AGENT_MODULES], env={**os.environ, **board_env},
                          capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.strip() == "no torch"  # the board really has no torch


def test_an_agent_on_a_board_measures(tmp_path, board_env):
    model = tiny_onnx(tmp_path / "tiny.onnx")
    target = load_target("cpu-ort")
    with LocalAgent(tmp_path / "agent", "--targets", "cpu-ort", env=board_env) as agent:
        client = agent.client()
        measurement = client.measure(model, target=target, protocol=TINY, input_shape=(1, 3, 16, 16))
        served = client.runtime_info(target)
    assert measurement.n >= TINY.min_iters and measurement.median_ms > 0
    assert served["runtime"] == "onnxruntime"
    processes = Path(board_env["DEPLOYKIT_TEST_ABSENT_LOG"]).read_text().splitlines()
    assert any("deploykit.cli serve" in line for line in processes)  # the agent ran on the board
    assert any("deploykit.measure.worker" in line for line in processes)  # and so did its worker


@pytest.mark.parametrize("doc", ["README.md", "docs/remote.md"])
def test_the_documented_board_install_is_the_agent_extra(doc):
    lines = (ROOT / doc).read_text().splitlines()
    line = next(line for line in lines if "install --no-deps deploykit" in line)
    packages = line.split("&&", 1)[1].split("#", 1)[0].split("install", 1)[1].split()
    assert sorted(packages) == sorted(requirement.name for requirement in agent_extra())
