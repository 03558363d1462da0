"""`deploykit run --target a,b`: one subnet per budget for several targets (stages, joint search, errors)
and the table and plot of a run of several targets. Fast: nothing here trains or measures."""

from __future__ import annotations

import json
import shutil
import struct
from pathlib import Path

import pytest

from deploykit.cli import main
from deploykit.errors import ConfigError
from deploykit.measure.host import LocalHost
from deploykit.pipeline import Pipeline, PipelineConfig, device_urls
from deploykit.results_table import render_pareto_png, run_measurements, speed_accuracy_frame
from deploykit.search import DepthProxy
from deploykit.verify.rounds import ModelRounds, RoundRobin

ROOT = Path(__file__).resolve().parents[1]
TWO = "cpu-ort,cpu-openvino"


def one_line_error(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "Traceback" not in err[0]
    return err[0]


@pytest.mark.parametrize("argv, message", [
    (["--target", "cpu-ort,cpu-ort"], "lists cpu-ort twice"),
    (["--target", "cpu-ort,,cpu-openvino"], "has an empty name"),
    (["--target", "cpu-ort,no-such-target"], "unknown target 'no-such-target'"),
    (["--target", TWO, "--budgets", "0.8,12ms"], "budget 12ms is in milliseconds"),
    (["--target", TWO, "--table", "x.csv"], "--table gives one target's latency table"),
    (["--target", TWO, "--device", "http://127.0.0.1:9"], "name the one it measures, --device "
                                                         "TARGET=http://127.0.0.1:9"),
    (["--target", TWO, "--device", "cpu-ort=http://a:9,cpu-ort=http://b:9"], "names target cpu-ort twice"),
    (["--target", TWO, "--device", "arm-cortex-a76=http://a:9"], "'arm-cortex-a76=http://a:9' is not "
                                                                  "TARGET=URL for a target of this run"),
    (["--target", TWO, "--device", "cpu-ort="], "is not TARGET=URL"),
])
def test_bad_target_lists_are_one_line_errors_before_anything_is_written(tmp_path, capsys, argv, message):
    assert main(["run", "--out", str(tmp_path / "r"), "--data", "digits", *argv]) == 2
    assert message in one_line_error(capsys)
    assert not (tmp_path / "r").exists()


def test_device_urls_name_each_targets_agent():
    one, two = PipelineConfig(data="digits"), PipelineConfig(data="digits", target=TWO)
    assert device_urls(one, None) == {} and device_urls(two, None) == {}
    assert device_urls(one, "https://board:8765/?a=b") == {"cpu-ort": "https://board:8765/?a=b"}
    assert device_urls(one, "cpu-ort=https://board:8765") == {"cpu-ort": "https://board:8765"}
    assert device_urls(two, " cpu-openvino = https://server:8765 ") == {
        "cpu-ort": None, "cpu-openvino": "https://server:8765"}
    assert device_urls(two, "cpu-ort=http://a:1,cpu-openvino=http://b:2") == {
        "cpu-ort": "http://a:1", "cpu-openvino": "http://b:2"}


class AgentStandIn(LocalHost):
    """A device agent as the pipeline sees it: a URL, and a runtime it does not serve."""

    url = "http://server:8765"

    def availability(self, target):
        return False, "the agent serves cpu-ort only"

    def describe(self) -> str:
        return f"the device agent at {self.url}"


def test_each_target_is_measured_where_its_device_says(tmp_path):
    agent = AgentStandIn()
    pipeline = Pipeline(PipelineConfig(data="digits", target=TWO), tmp_path / "run",
                        host={"cpu-openvino": agent})
    assert pipeline.host_for("cpu-openvino") is agent
    here = pipeline.host_for(pipeline.targets[0])
    assert here.url is None and isinstance(here, LocalHost)
    with pytest.raises(ConfigError, match="measure on the device agent at http://server:8765, which cannot "
                                          "run target cpu-openvino"):
        pipeline._require_target(pipeline.targets[1])
    pipeline._require_target(pipeline.targets[0])  # onnxruntime runs here
    with pytest.raises(ConfigError, match="hosts for arm-cortex-a76, not a target of this run"):
        Pipeline(PipelineConfig(data="digits", target=TWO), tmp_path / "r2", host={"arm-cortex-a76": agent})
    with pytest.raises(ConfigError, match="name the one it measures"):
        Pipeline(PipelineConfig(data="digits", target=TWO), tmp_path / "r3", host=agent)


def test_one_target_keeps_its_stage_names_and_paths(tmp_path):
    pipeline = Pipeline(PipelineConfig(data="digits"), tmp_path / "run")
    names = [stage.name for stage in pipeline.stages()]
    assert names[:6] == ["baseline", "profile", "budgets", "supernet", "export original", "verify original"]
    assert "verify 0.8" in names and "verify continued" in names and names[-1] == "table"
    assert pipeline.layout.table == tmp_path / "run" / "profile" / "convnext_atto_32_b1.csv"


def test_several_targets_profile_and_verify_on_each(tmp_path):
    pipeline = Pipeline(PipelineConfig(data="digits", target=f" {TWO} "), tmp_path / "run")
    stages = {stage.name: stage for stage in pipeline.stages()}
    for target in ("cpu-ort", "cpu-openvino"):
        assert stages[f"profile on {target}"].artifact == (tmp_path / "run" / "profile" / target /
                                                           "convnext_atto_32_b1.csv")
        for name, folder in (("original", "baseline"), ("0.8", "budget-0.8"), ("0.6", "budget-0.6"),
                             ("continued", "original-continued")):
            assert stages[f"verify {name} on {target}"].artifact == (tmp_path / "run" / folder /
                                                                     f"verify-{target}.json")
    once = ("baseline", "budgets", "supernet", "export original", "search 0.8", "train 0.8", "export 0.8",
            "table")
    assert all(name in stages for name in once) and "profile" not in stages
    assert {stage.writes(tmp_path / "run")[0] for stage in stages.values() if stage.artifact} <= {
        "baseline", "profile", "supernet", "budget-0.8", "budget-0.6", "original-continued", "table.md"}
    assert pipeline.config.target == TWO  # normalized, so a resumed run compares equal


@pytest.fixture
def shipped_two_targets(tmp_path):
    """A run of convnext_tiny on both CPU targets whose profiles are the shipped tables."""
    config = PipelineConfig(model="convnext_tiny", data="digits", input_size=(224, 224), target=TWO,
                            budgets=("0.8", "0.7"))
    pipeline = Pipeline(config, tmp_path / "run")
    for target in config.targets:
        folder = pipeline.layout.table_of(target).parent
        folder.mkdir(parents=True)
        for file in (ROOT / "latency_tables" / target).glob("convnext_tiny_224_b1.*"):  # csv, meta, fit
            shutil.copy(file, folder / file.name)
    pipeline._cache["proxy"] = DepthProxy()  # the run's supernet proxy needs a trained supernet
    return pipeline


def test_each_budget_is_one_joint_search_that_says_which_target_binds(shipped_two_targets):
    pipeline = shipped_two_targets
    assert "every budget is met on every target together" in pipeline._check_budgets()
    folder = pipeline.layout.budget("0.7")
    folder.mkdir(parents=True)
    line = pipeline._search("0.7", folder)
    subnet = json.loads((folder / "subnet.json").read_text())
    checks = subnet["budgets"]
    assert [c["target"] for c in checks] == ["cpu-ort", "cpu-openvino"]
    assert all(c["predicted_ms"] <= c["budget_ms"] * 1.000001 for c in checks)
    assert all(c["budget_ms"] == pytest.approx(0.7 * c["unpruned_ms"]) for c in checks)
    bound = [f"table {i + 1} ({c['target']})" for i, c in enumerate(checks) if c["binding"]]
    assert bound and "binding budget: " + bound[0] in line
    notes = pipeline.binding_lines()
    assert len(notes) == 1 and notes[0].startswith("budget 0.7: binding budget: ")


def test_budgets_no_subnet_meets_on_every_target_together_stop_the_run(shipped_two_targets):
    with pytest.raises(ConfigError, match=r"budget 0\.01"):
        Pipeline(PipelineConfig(model="convnext_tiny", data="digits", input_size=(224, 224), target=TWO,
                                budgets=("0.01",)), shipped_two_targets.layout.root)._check_budgets()


# --- the table and plot of a run of several targets ---------------------------------------------------

def _variant(folder: Path, kind: str, top1: float) -> None:
    folder.mkdir(parents=True)
    data = {"kind": kind, "model": "convnext_atto", "top1": top1, "top1_merged": top1, "epochs": 1,
            "pruned": [1, 2] if kind == "subnet" else [], "method": "progressive"}
    (folder / "result.json").write_text(json.dumps(data))


@pytest.fixture
def two_target_run(tmp_path):
    run = tmp_path / "run"
    _variant(run / "baseline", "baseline", 80.0)
    _variant(run / "budget-0.8", "subnet", 79.0)
    for target, ms in (("cpu-ort", 2.0), ("cpu-openvino", 1.0)):
        RoundRobin(target=target, settings={}, rounds=2, reference="baseline", models={
            "baseline": ModelRounds((ms, ms), (1.0, 1.0)),
            "budget-0.8": ModelRounds((ms / 2, ms / 2), (2.0, 2.0))}).write(run / f"latency-{target}.json")
    return run


def test_deploykit_table_of_a_run_shows_a_column_group_per_target(two_target_run, capsys):
    assert [RoundRobin.read(p).target for p in run_measurements([two_target_run])] == ["cpu-openvino",
                                                                                      "cpu-ort"]
    assert main(["table", str(two_target_run)]) == 0
    header = capsys.readouterr().out.splitlines()[0]
    columns = [cell.strip() for cell in header.strip("|").split("|")]
    for target in ("cpu-ort", "cpu-openvino"):
        group = [c for c in columns if c.startswith(f"{target} ")]
        assert group == [f"{target} {f}" for f in ("predicted ms", "measured ms", "measured ±", "speed-up",
                                                   "speed-up ±", "numerics")]
        assert columns.index(group[-1]) - columns.index(group[0]) == len(group) - 1  # side by side


def test_the_pareto_plot_has_panels_for_every_target(two_target_run):
    frame = speed_accuracy_frame([two_target_run], measurements=run_measurements([two_target_run]))
    one = speed_accuracy_frame([two_target_run], measurements=[two_target_run / "latency-cpu-ort.json"])
    width = struct.unpack(">I", render_pareto_png(frame)[16:20])[0]   # the PNG header's width
    assert width == 2 * struct.unpack(">I", render_pareto_png(one)[16:20])[0]
