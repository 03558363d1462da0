"""Run settings: targets, backends, the probe's choice, and tables used only with their settings."""

import json

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from deploykit.errors import ConfigError
from deploykit.latency.identity import with_table_settings
from deploykit.latency.probe import (
    ProbeResult,
    ProbeRow,
    candidates,
    choose,
    confirm,
    drift_warning,
    run_probe,
)
from deploykit.latency.table import LatencyTable, TableMeta
from deploykit.protocol import Protocol
from deploykit.runsettings import RunSettings, differing
from deploykit.runtimes import check_target
from deploykit.runtimes.onnxruntime_backend import create_session, session_config
from deploykit.runtimes.openvino_backend import compile_config
from deploykit.targets import load_target, target_from_dict

ON, OFF = True, False


def _target(**changes):
    data = {**load_target("cpu-ort").as_dict(), **changes}
    return target_from_dict(data)


def test_auto_settings_are_read_and_written_back():
    target = load_target("cpu-ort")
    assert set(target.auto_settings) == {"threads", "spinning"}
    assert target.settings == RunSettings()  # auto reads as the runtime's default until settled
    again = target_from_dict(target.as_dict())
    assert again.auto_settings == target.auto_settings and again.as_dict()["threads"] == "auto"
    settled = target.with_settings(RunSettings(threads=1))
    assert settled.auto_settings == () and settled.as_dict()["threads"] == 1


@pytest.mark.parametrize(("key", "value", "says"), [
    ("spinning", "maybe", "must be true, false, auto or null"),
    ("threads", 3000, "at most 1024"),
    ("threads", 0, "positive integer"),
    ("streams", True, "positive integer"),
])
def test_bad_setting_values_name_the_key(key, value, says):
    with pytest.raises(ConfigError, match=rf"{key}: .*{says}"):
        _target(**{key: value})


def test_a_setting_the_runtime_does_not_apply_is_refused():
    openvino = target_from_dict({**load_target("cpu-openvino").as_dict(), "spinning": False})
    with pytest.raises(ConfigError, match="spinning: openvino does not apply spinning"):
        check_target(openvino)
    cuda = _target(provider="CUDAExecutionProvider", spinning="auto", threads=None)
    with pytest.raises(ConfigError, match="spinning: onnxruntime does not apply spinning"):
        check_target(cuda)


def test_spinning_becomes_the_session_config_entry():
    assert session_config(spinning=None) == {}
    assert session_config(spinning=ON) == {"session.intra_op.allow_spinning": "1"}
    assert session_config(spinning=OFF) == {"session.intra_op.allow_spinning": "0"}


def test_a_real_session_opens_with_spinning_off(tmp_path):
    node = helper.make_node("Relu", ["x"], ["y"])
    graph = helper.make_graph([node], "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])])
    path = tmp_path / "relu.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)
    session = create_session(path, provider="CPUExecutionProvider", threads=2, spinning=OFF)
    out = session.run(None, {"x": np.array([[-1, 2, -3, 4]], dtype=np.float32)})[0]
    assert out.tolist() == [[0, 2, 0, 4]]


def test_openvino_compile_config_carries_the_settings():
    target = target_from_dict({**load_target("cpu-openvino").as_dict(), "threads": 1, "streams": 1,
                               "pinning": False})
    config = compile_config(target, threads=target.threads)
    assert config["INFERENCE_NUM_THREADS"] == 1 and config["NUM_STREAMS"] == 1
    assert config["ENABLE_CPU_PINNING"] is False and config["PERFORMANCE_HINT"] == "LATENCY"


def test_explicit_protocol_settings_win_over_the_target():
    target = Protocol(threads=1).apply_settings(load_target("cpu-ort"))
    assert target.threads == 1 and target.auto_settings == ("spinning",)
    assert Protocol().apply_settings(target) is target


def test_candidates_cover_what_the_target_leaves_to_auto():
    both = ("threads", "spinning")
    found = candidates(RunSettings(), both, takes=both, physical_cores=2)
    assert found == [RunSettings(threads=1), RunSettings(threads=2, spinning=ON),
                     RunSettings(threads=2, spinning=OFF)]
    one_core = candidates(RunSettings(), ("threads", "spinning"), takes=("threads", "spinning"),
                          physical_cores=1)
    assert one_core == [RunSettings(threads=1)]
    fixed_threads = candidates(RunSettings(threads=4), ("spinning",), takes=("threads", "spinning"),
                               physical_cores=8)
    assert fixed_threads == [RunSettings(threads=4, spinning=ON), RunSettings(threads=4, spinning=OFF)]
    openvino = candidates(RunSettings(), ("threads",), takes=("threads", "streams", "pinning"),
                          physical_cores=4)
    assert openvino == [RunSettings(threads=1), RunSettings(threads=4)]


def test_the_probe_picks_the_fastest_repeatable_setting():
    one = ProbeRow(RunSettings(threads=1), (13.8, 13.7, 13.9))           # steady, slow
    spin = ProbeRow(RunSettings(threads=2, spinning=ON), (8.0, 14.3, 11.5))  # fast once, bimodal
    sleep = ProbeRow(RunSettings(threads=2, spinning=OFF), (8.8, 8.9, 8.7))  # steady, fast
    chosen, reason = choose([one, spin, sleep])
    assert chosen == sleep.settings and "fastest" in reason
    assert spin.share_within == pytest.approx(1 / 3) and not spin.repeatable
    chosen, _ = choose([one, spin])
    assert chosen == one.settings


def test_without_a_repeatable_setting_the_probe_picks_the_steadiest():
    a = ProbeRow(RunSettings(threads=1), (10.0, 10.2, 12.0))   # 2 of 3 within ±5 %, spread 20 %
    b = ProbeRow(RunSettings(threads=2), (5.0, 5.1, 5.6))      # 2 of 3, spread 11.8 %
    c = ProbeRow(RunSettings(threads=2, spinning=OFF), (4.0, 6.0, 5.0))  # 1 of 3
    chosen, reason = choose([a, b, c])
    assert chosen == b.settings and "steadiest" in reason


def test_the_probe_measures_candidates_interleaved():
    order = []
    scripted = {RunSettings(threads=1): iter([13.0, 13.1, 13.2]),
                RunSettings(threads=2, spinning=ON): iter([8.0, 15.0, 11.0])}

    def measure(settings):
        order.append(settings.threads)
        return next(scripted[settings])

    result = run_probe(list(scripted), measure, processes=3)
    assert order == [1, 2, 1, 2, 1, 2]
    assert result.chosen == RunSettings(threads=1)
    assert [row.medians_ms for row in result.rows] == [(13.0, 13.1, 13.2), (8.0, 15.0, 11.0)]
    assert "<- chosen" in result.table().splitlines()[1]


def _scripted(values):
    order, scripted = [], {k: iter(v) for k, v in values.items()}

    def measure(settings):
        order.append(settings.threads)
        return next(scripted[settings])
    return order, measure


ONE, SPIN = RunSettings(threads=1), RunSettings(threads=2, spinning=ON)
SLEEP = RunSettings(threads=2, spinning=OFF)
PROBED = ProbeResult(rows=(ProbeRow(ONE, (0.61, 0.62, 0.60)), ProbeRow(SPIN, (0.42, 0.43, 0.42)),
                           ProbeRow(SLEEP, (0.77, 0.70, 0.81))), chosen=SPIN, reason="the fastest")


def test_a_choice_whose_speed_did_not_hold_right_after_the_probe_falls_back_to_fewer_threads():
    # the demo's case: two spinning threads at 0.42 ms in the probe, 0.61 ms seconds later; one thread held
    order, measure = _scripted({SPIN: [0.61, 0.63, 0.43], ONE: [0.62, 0.61, 0.60]})
    result = confirm(PROBED, measure)
    assert order == [2, 1, 2, 1, 2, 1]              # interleaved, three processes each
    assert result.chosen == ONE
    assert result.reason.startswith("2 threads, spinning on was fastest in the probe but measured +45% right")
    assert [row.medians_ms for row in result.confirmation] == [(0.61, 0.63, 0.43), (0.62, 0.61, 0.60)]
    assert result.table().splitlines()[-2].startswith("again: 2 threads, spinning on")
    assert result.as_dict()["confirmation"][1]["median_ms"] == pytest.approx(0.61)


def test_a_choice_that_held_or_a_machine_that_moved_keeps_the_choice():
    _, held = _scripted({SPIN: [0.43, 0.44, 0.42], ONE: [0.62, 0.61, 0.60]})
    result = confirm(PROBED, held)
    assert result.chosen == SPIN
    assert result.reason == ("the fastest; measured again right after: 2 threads, spinning on +2.4%, "
                             "1 thread +0.0%")
    # everything 30 % slower: the machine changed, not the setting
    _, slow_window = _scripted({SPIN: [0.55, 0.56, 0.54], ONE: [0.79, 0.80, 0.81]})
    assert confirm(PROBED, slow_window).chosen == SPIN
    # nothing with fewer threads was repeatable (or the choice is one thread): nothing is measured
    order, measure = _scripted({})
    assert confirm(ProbeResult(rows=PROBED.rows, chosen=ONE, reason="r"), measure).confirmation == ()
    shaky = ProbeResult(rows=(ProbeRow(ONE, (0.5, 0.6, 0.7)), PROBED.rows[1]), chosen=SPIN, reason="r")
    assert confirm(shaky, measure) == shaky and order == []


def test_a_profile_that_drifted_past_the_probe_names_the_steadier_setting():
    one = ProbeRow(RunSettings(threads=1), (8.9, 8.6, 8.9, 8.8))
    two = ProbeRow(RunSettings(threads=2, spinning=OFF), (5.8, 5.7, 5.6, 5.6))
    probe = ProbeResult(rows=(one, two), chosen=two.settings, reason="fastest").as_dict()
    warning = drift_warning(0.4, 43, probe, two.settings)
    assert warning.startswith("warning: with 2 threads, spinning off the unpruned model was 40% within ±5%")
    assert "43 fresh processes" in warning
    assert warning.endswith("profile with --threads 1 (1 thread: 8.850 ms in the probe, 100% within ±5%)")
    assert drift_warning(0.9, 43, probe, two.settings) is None          # the goal met: nothing to say
    # one thread already, or no probe: the warning without a setting to try
    assert "--threads" not in drift_warning(0.5, 10, probe, one.settings)
    assert "--threads" not in drift_warning(0.5, 10, None, two.settings)
    # a candidate with fewer threads that was not repeatable in the probe is not offered
    shaky = ProbeRow(RunSettings(threads=1), (8.0, 9.0, 10.0, 8.9))
    probe = ProbeResult(rows=(shaky, two), chosen=two.settings, reason="fastest").as_dict()
    assert "--threads" not in drift_warning(0.4, 43, probe, two.settings)


def _table(run_settings):
    meta = TableMeta(model="m", target="cpu-ort", device="d", device_string="d", runtime="onnxruntime",
                     runtime_version="1", provider="CPUExecutionProvider", precision="fp32", batch=1,
                     input_size=(32, 32), threads=run_settings.threads, protocol={}, mode="measured",
                     date="2026-12-06T00:00:00+00:00", deploykit_version="0",
                     run_settings=run_settings.as_dict())
    return LatencyTable(meta=meta)


def test_a_table_is_used_only_with_its_settings():
    table = _table(RunSettings(threads=1))
    target = with_table_settings(load_target("cpu-ort"), table)
    assert target.settings == RunSettings(threads=1) and target.auto_settings == ()
    assert with_table_settings(load_target("cpu-ort"), table, RunSettings(threads=1)).threads == 1
    with pytest.raises(ConfigError, match=r"measured with 1 thread; you asked for threads: 2 instead of 1"):
        with_table_settings(load_target("cpu-ort"), table, RunSettings(threads=2))


def test_settings_differences_read_plainly():
    assert differing(RunSettings(threads=2, spinning=ON), RunSettings(threads=2, spinning=OFF)) == [
        "spinning: on vs off"]
    assert RunSettings(threads=2, spinning=OFF).describe() == "2 threads, spinning off"
    with pytest.raises(ConfigError, match="unknown setting"):
        RunSettings.from_dict({"thread": 1})


def test_the_deployment_settings_file_is_written_and_read_back(tmp_path):
    from deploykit.deployment import read_settings, settings_path, write_settings

    onnx_file = tmp_path / "model.onnx"
    onnx_file.write_bytes(b"")
    assert read_settings(onnx_file) is None
    meta = _table(RunSettings(threads=2, spinning=OFF)).meta
    written = write_settings(onnx_file, meta.deployment(measured_by="t.csv"))
    assert written == settings_path(onnx_file) == tmp_path / "model.settings.json"
    data = json.loads(written.read_text())
    assert data["settings"] == {"threads": 2, "spinning": False}
    assert data["onnxruntime_session_config"]["session.intra_op.allow_spinning"] == "0"
    assert data["onnxruntime_session_config"]["intra_op_num_threads"] == 2
    assert read_settings(onnx_file).settings == RunSettings(threads=2, spinning=OFF)


def test_a_model_for_several_targets_has_one_settings_file_per_target(tmp_path):
    from dataclasses import replace

    from deploykit.deployment import read_settings, write_settings

    onnx_file = tmp_path / "model.onnx"
    onnx_file.write_bytes(b"")
    one = _table(RunSettings(threads=1)).meta.deployment(measured_by="a.csv")
    two = replace(_table(RunSettings(threads=2, spinning=OFF)).meta.deployment(measured_by="b.csv"),
                  target="other-cpu")
    paths = [write_settings(onnx_file, d, per_target=True) for d in (one, two)]
    assert [p.name for p in paths] == [f"model.{one.target}.settings.json", "model.other-cpu.settings.json"]
    assert read_settings(onnx_file, "other-cpu").settings == RunSettings(threads=2, spinning=OFF)
    assert read_settings(onnx_file, one.target).settings == RunSettings(threads=1)
    assert read_settings(onnx_file, "third") is None  # no file of its own and no plain one


def test_verify_runs_with_the_settings_file_and_refuses_other_explicit_ones(tmp_path):
    from deploykit.deployment import write_settings
    from deploykit.verify.check import settled_target

    onnx_file = tmp_path / "model.onnx"
    onnx_file.write_bytes(b"")
    write_settings(onnx_file, _table(RunSettings(threads=1)).meta.deployment(measured_by="t.csv"))
    target, how = settled_target(load_target("cpu-ort"), onnx_file, (1, 3, 32, 32), protocol=Protocol(),
                                 table=None, host=None, progress=None)
    assert target.settings == RunSettings(threads=1) and how == "from model.settings.json"
    with pytest.raises(ConfigError, match=r"model\.settings\.json was measured with 1 thread; you asked "
                                          r"for threads: 2 instead of 1"):
        settled_target(load_target("cpu-ort"), onnx_file, (1, 3, 32, 32), protocol=Protocol(threads=2),
                       table=None, host=None, progress=None)
    table = _table(RunSettings(threads=2, spinning=OFF))
    target, how = settled_target(load_target("cpu-ort"), onnx_file, (1, 3, 32, 32), protocol=Protocol(),
                                 table=table, host=None, progress=None)
    assert target.settings == RunSettings(threads=2, spinning=OFF)  # the table's win over the file's


def test_a_numerics_only_verify_runs_no_settings_probe(tmp_path, monkeypatch):
    """Nothing is timed, so what a target leaves to auto stays the runtime's choice: no probe processes."""
    from deploykit.latency import probe
    from deploykit.verify.check import settled_target

    def no_probe(*args, **kwargs):
        raise AssertionError("the settings probe ran for a verify that times nothing")

    monkeypatch.setattr(probe, "settle", no_probe)
    onnx_file = tmp_path / "model.onnx"
    onnx_file.write_bytes(b"")
    target, how = settled_target(load_target("cpu-ort"), onnx_file, (1, 3, 32, 32), protocol=Protocol(),
                                 table=None, host=None, progress=None, timed=False)
    assert target.auto_settings == () and target.settings == RunSettings()
    assert how == "the runtime's defaults for auto (nothing timed)"
    with pytest.raises(AssertionError, match="the settings probe ran"):  # timed: the probe is asked
        settled_target(load_target("cpu-ort"), onnx_file, (1, 3, 32, 32), protocol=Protocol(), table=None,
                       host=None, progress=None)
