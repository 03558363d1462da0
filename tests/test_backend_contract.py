"""The contract every runtime backend keeps, checked the same way for each registered one and the fake.

Each check runs for every backend in the registry plus :class:`fake_backend.FakeBackend`; where a
backend's SDK or device is absent here, the checks that need it skip with the backend's own reason.
A new backend fails :func:`test_every_registered_backend_has_a_contract_target` until it has a row in
:data:`CONTRACT_TARGETS`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from fake_backend import NAME as FAKE
from fake_backend import FakeBackend, fake_target, registered
from onnx_fixtures import tiny_onnx

from deploykit.errors import ConfigError, ModelError, RuntimeUnavailableError
from deploykit.protocol import Measurement, Protocol
from deploykit.runtimes import backends, hostinfo
from deploykit.runtimes.base import RuntimeBackend, Session
from deploykit.targets import Target, load_target

SHAPE = (2, 3, 16, 16)
TOLERANCE = 1e-4  # fp32: max |error| relative to the output's scale, as verify's numerics
# warm-up and sampling by count only, one attempt: a profile makes exactly 1 + 2 + 5 runs
COUNTED = Protocol(warmup_s=0.0, warmup_iters=2, min_time_s=0.0, min_iters=5, max_ci=10.0, max_repeats=1)


def _variant(name: str, **changes) -> Callable[[], Target]:
    return lambda: dataclasses.replace(load_target(name), **changes)


# one fp32 target per backend, for the hardware it needs (device_match off: any such device will do)
CONTRACT_TARGETS: dict[str, Callable[[], Target]] = {
    "onnxruntime": _variant("cpu-ort"),
    "openvino": _variant("cpu-openvino", threads=1),
    "tensorrt": _variant("nvidia-t4", precision="fp32", device_match=None),
    "migraphx": _variant("amd-mi100-migraphx", precision="fp32", device_match=None),
    FAKE: fake_target,
}
MARKS = {"openvino": pytest.mark.openvino, "tensorrt": pytest.mark.tensorrt, "migraphx": pytest.mark.migraphx}
NAMES = [pytest.param(name, marks=MARKS.get(name, ()), id=name) for name in [*sorted(backends()), FAKE]]


@dataclasses.dataclass
class Case:
    backend: RuntimeBackend
    target: Target

    def require_available(self) -> None:
        ok, reason = self.backend.available(self.target)
        if not ok:
            pytest.skip(f"{self.backend.name}: {reason}")

    def session(self, model: Path, **kwargs) -> Session:
        return self.backend.session(model, target=self.target, input_shape=SHAPE, **kwargs)


@pytest.fixture(params=NAMES)
def case(request):
    name = request.param
    if name == FAKE:
        with registered(FakeBackend()) as backend:
            yield Case(backend, fake_target())
    else:
        yield Case(backends()[name], CONTRACT_TARGETS[name]())


@pytest.fixture(scope="module")
def model(tmp_path_factory) -> Path:
    return tiny_onnx(tmp_path_factory.mktemp("onnx") / "tiny.onnx")


def reference_outputs(model: Path, x: np.ndarray) -> list[np.ndarray]:
    from onnx.reference import ReferenceEvaluator

    return list(ReferenceEvaluator(str(model)).run(None, {"x": x}))


def relative_error(got: np.ndarray, expected: np.ndarray) -> float:
    assert got.shape == expected.shape
    return float(np.max(np.abs(got.astype(np.float64) - expected)) / np.max(np.abs(expected)))


# --- the registry ----------------------------------------------------------------------------------

def test_every_registered_backend_has_a_contract_target():
    assert set(backends()) <= set(CONTRACT_TARGETS), "add a target for the new backend to CONTRACT_TARGETS"
    assert FAKE not in backends()  # the fake is registered by the tests that use it, and only there
    with registered(FakeBackend()) as fake:
        assert backends()[FAKE] is fake
    assert FAKE not in backends()


# --- refusals: checked before any SDK is asked, so they hold on every machine -----------------------

def test_available_gives_a_bool_and_a_reason_when_false(case):
    ok, reason = case.backend.available(case.target)
    assert isinstance(ok, bool) and isinstance(reason, str)
    assert (reason == "") if ok else reason.strip()
    elsewhere = "aarch64" if hostinfo.machine_arch() != "aarch64" else "x86_64"
    ok, reason = case.backend.available(dataclasses.replace(case.target, host_arch=elsewhere))
    assert not ok and f"not {elsewhere}" in reason


def test_session_refuses_a_missing_file(case, tmp_path):
    with pytest.raises(ModelError, match="ONNX file not found"):
        case.session(tmp_path / "none.onnx")


@pytest.mark.parametrize("bad", [(), (1, 0, 16, 16), (1.5, 3), "1x3", (True, 3, 16, 16)])
def test_session_refuses_a_bad_shape(case, model, bad):
    with pytest.raises(ConfigError, match="input shape"):
        case.backend.session(model, target=case.target, input_shape=bad)


def test_session_refuses_a_target_of_another_runtime(case, model):
    other = next(name for name in CONTRACT_TARGETS if name != case.backend.name)
    target = dataclasses.replace(case.target, runtime=other)
    with pytest.raises(ConfigError, match=f"uses runtime {other}, not {case.backend.name}"):
        case.backend.session(model, target=target, input_shape=SHAPE)


def test_session_and_profile_refuse_a_target_that_cannot_run_here(case, model):
    elsewhere = "aarch64" if hostinfo.machine_arch() != "aarch64" else "x86_64"
    target = dataclasses.replace(case.target, host_arch=elsewhere)
    refusal = f"cannot run on target {target.name} here: this machine is"
    with pytest.raises(RuntimeUnavailableError, match=refusal):
        case.backend.session(model, target=target, input_shape=SHAPE)
    with pytest.raises(RuntimeUnavailableError, match=f"cannot profile on target {target.name} here"):
        case.backend.profile(model, target=target, protocol=COUNTED, input_shape=SHAPE)
    ok, reason = case.backend.available(case.target)
    if not ok:  # the backend's own reason (SDK or device missing) reaches the caller as it is
        with pytest.raises(RuntimeUnavailableError) as info:
            case.session(model)
        assert reason in str(info.value)


# --- where the backend can run: outputs, what it really got, timing, closing ------------------------

def test_session_outputs_equal_the_reference(case, model):
    case.require_available()
    x = np.random.default_rng(1).standard_normal(SHAPE).astype(np.float32)
    expected = reference_outputs(model, x)
    with case.session(model) as session:
        got = session.run(x)
        assert len(got) == len(expected)
        assert relative_error(got[0], expected[0]) <= TOLERANCE
        # inputs are cast to what the model takes
        assert relative_error(session.run(x.astype(np.float64))[0], expected[0]) <= TOLERANCE
        with pytest.raises(ModelError, match="opened for input"):
            session.run(x[:1])


def test_session_reports_what_it_really_got(case, model):
    case.require_available()
    with case.session(model) as session:
        assert session.providers and all(isinstance(p, str) and p for p in session.providers)
        assert session.precision == case.target.precision
        assert session.device == case.backend.device_string(case.target)
        assert session.label and session.details and session.input_dtype == np.float32
        assert session.compile_s > 0 and session.input_shape == SHAPE


def test_profile_keeps_compile_and_first_run_out_of_the_samples(case, model, monkeypatch):
    case.require_available()
    runs = []
    timed_runner = Session.timed_runner

    def counting(session):
        run_once = timed_runner(session)

        def counted() -> None:
            runs.append(1)
            run_once()

        return counted

    monkeypatch.setattr(Session, "timed_runner", counting)
    m = case.backend.profile(model, target=case.target, protocol=COUNTED, input_shape=SHAPE)
    assert isinstance(m, Measurement)
    assert len(runs) == 1 + COUNTED.warmup_iters + COUNTED.min_iters  # first run, warm-up, samples
    assert m.n == len(m.samples_ms) == COUNTED.min_iters and m.repeats == 1
    assert m.compile_s > 0 and m.first_run_ms > 0 and 0 < m.median_ms <= m.p90_ms


def test_close_is_idempotent(case, model):
    case.require_available()
    session = case.session(model)
    session.close()
    session.close()
    assert session.closed
    with pytest.raises(ValueError, match="closed"):
        session.run(np.zeros(SHAPE, np.float32))
    with pytest.raises(ValueError, match="closed"):
        session.timed_runner()
    with case.session(model) as inside:
        assert not inside.closed
    assert inside.closed


# --- the fake's scripted clock: exact figures --------------------------------------------------------

def test_fake_profile_figures_are_exactly_the_scripted_ones(model):
    # first run 50 ms, two warm-up runs of 9 ms, then the samples
    fake = FakeBackend(latencies_ms=[50.0, 9.0, 9.0, 4.0, 1.0, 3.0, 2.0, 5.0], compile_s=0.75)
    with registered(fake):
        m = fake.profile(model, target=fake_target(), protocol=COUNTED, input_shape=SHAPE)
    assert m.samples_ms == pytest.approx((4.0, 1.0, 3.0, 2.0, 5.0))
    assert m.first_run_ms == pytest.approx(50.0) and m.compile_s == pytest.approx(0.75)
    assert m.median_ms == pytest.approx(3.0) and m.mean_ms == pytest.approx(3.0) and m.n == 5
    assert fake.runs == 8 and [s.released for s in fake.opened] == [1]  # profile closed its session


def test_fake_backend_refuses_its_missing_device(model):
    with registered(FakeBackend()) as fake:
        target = fake_target(runtime_device="missing")
        ok, reason = fake.available(target)
        assert not ok and "'missing' is not here" in reason
        with pytest.raises(RuntimeUnavailableError, match="'missing' is not here"):
            fake.session(model, target=target, input_shape=SHAPE)
