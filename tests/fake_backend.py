"""A runtime backend for the tests: scripted latencies on a scripted clock, real outputs.

``FakeBackend`` runs the ONNX file with ``onnx.reference.ReferenceEvaluator`` (so its outputs are
the graph's true outputs unless ``tamper`` changes them), and its clock moves only when the backend
says: opening a session takes ``compile_s``, the first run and every later run take the next value
of ``latencies_ms`` (the last one repeats). So a profile's statistics are known exactly in advance.
It is registered only inside :func:`registered` (a test's fixture), never at import.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import numpy as np

from deploykit.runtimes import register, unregister
from deploykit.runtimes.base import RuntimeBackend, Session, single_input
from deploykit.runtimes.onnxfile import input_names
from deploykit.targets import target_from_dict

NAME = "fake"
MISSING_DEVICE = "missing"  # a runtime_device the fake reports as absent here


@contextmanager
def registered(backend: RuntimeBackend) -> Iterator[RuntimeBackend]:
    """``backend`` in the runtime registry for the duration of the block."""
    register(backend)
    try:
        yield backend
    finally:
        unregister(backend.name)


class ScriptedClock:
    """Seconds that advance only when told."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


class FakeBackend(RuntimeBackend):
    name = NAME
    install_hint = "registered by the test suite only"
    precisions = ("fp32", "fp16")

    def __init__(self, *, latencies_ms: Sequence[float] = (1.0,), compile_s: float = 0.25,
                 tamper: Callable[[list[np.ndarray]], list[np.ndarray]] | None = None,
                 file_ms: dict[str, float] | None = None):
        self.scripted_clock = ScriptedClock()
        self.latencies_ms = list(latencies_ms)
        self.file_ms = dict(file_ms or {})  # file name → its fixed run time (overrides latencies_ms)
        self.compile_s = compile_s
        self.tamper = tamper
        self.runs = 0  # timed or not, every run of every session
        self.opened: list[FakeSession] = []

    def clock(self) -> float:
        return self.scripted_clock()

    def _unavailable_reason(self, target) -> str | None:
        if target.runtime_device == MISSING_DEVICE:
            return f"fake device {MISSING_DEVICE!r} is not here (the fake serves any other)"
        return None

    def version(self) -> str:
        return "1.0-fake"

    def device_string(self, target) -> str:
        return f"fake {target.runtime_device or 'cpu'}"

    def _open_session(self, onnx_path: Path, *, target, input_shape, threads) -> Session:
        from onnx.reference import ReferenceEvaluator

        name = single_input(input_names(onnx_path), onnx_path)
        evaluator = ReferenceEvaluator(str(onnx_path))
        self.scripted_clock.advance(self.compile_s)
        session = FakeSession(self, evaluator, name, path=onnx_path, input_shape=input_shape,
                              precision=target.precision)
        self.opened.append(session)
        return session

    def tick(self, path: Path | None = None) -> None:
        """One run's worth of scripted time (of ``path``'s file where ``file_ms`` names it)."""
        index = min(self.runs, len(self.latencies_ms) - 1)
        self.runs += 1
        ms = self.latencies_ms[index]
        ms = self.file_ms.get(path.name, ms) if path is not None else ms
        self.scripted_clock.advance(ms / 1000.0)


class FakeSession(Session):
    def __init__(self, backend: FakeBackend, evaluator, input_name: str, *, path: Path, input_shape,
                 precision: str):
        super().__init__(path=path, input_shape=input_shape, input_dtype="float32", label="fake",
                         providers=("FakeProvider",), precision=precision,
                         details="onnx.reference.ReferenceEvaluator on a scripted clock")
        self._backend = backend
        self._evaluator = evaluator
        self._input = input_name
        self.released = 0

    def _outputs(self, x: np.ndarray) -> list[np.ndarray]:
        self._backend.tick(self.path)
        outputs = list(self._evaluator.run(None, {self._input: x}))
        return self._backend.tamper(outputs) if self._backend.tamper else outputs

    def _run(self, x: np.ndarray) -> list[np.ndarray]:
        return self._outputs(x)

    def _timed_runner(self, x: np.ndarray):
        def run_once() -> None:
            self._outputs(x)

        return run_once

    def _release(self) -> None:
        self.released += 1
        self._evaluator = None


def fake_target(*, runtime_device: str | None = None, precision: str = "fp32", **changes):
    """A target served by the fake backend (parsing asks no runtime, so it loads without it)."""
    data = {"name": "fake-target", "description": "the test suite's scripted backend", "device": "a fake",
            "runtime": NAME, "runtime_device": runtime_device, "precision": precision, "batch": 1,
            "input_size": [16, 16],
            "peak": {"flops": {"fp32": 1e12, "fp16": 2e12}, "bandwidth": 1e11, "source": "test"}, **changes}
    return target_from_dict(data, path="fake-target.yaml")


def fake_target_yaml(path: Path, **changes) -> Path:
    """``fake_target`` written as a YAML file (for the CLI)."""
    import yaml

    data = fake_target(**changes).as_dict()
    data.pop("path")
    path.write_text(yaml.safe_dump(data))
    return path
