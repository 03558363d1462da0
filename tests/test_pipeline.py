"""`deploykit run`: the whole pipeline on tiny settings, killed between stages and resumed; refusals."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
import torch

from deploykit.cli import main
from deploykit.pipeline import Pipeline, PipelineConfig
from deploykit.verify import VerifyReport
from deploykit.verify.rounds import RoundRobin

PROTOCOL = ["--min-time", "0.05", "--warmup-time", "0.01", "--min-iters", "5", "--warmup-iters", "2",
            "--max-repeats", "1"]
# The run settings given: no settings probe in the profile stage (24 timed processes, which
# test_profile's killed-and-resumed profile runs for real); none of this file's claims is about it.
QUIET_PROFILE = ["--threads", "1"]
# Budgets near 1, so that the table of a tiny, noisy protocol reaches them on any machine (0.6 once did
# not: the smallest reachable was 0.61 × the unpruned prediction).
TINY = ["--data", "digits", "--train-limit", "192", "--val-limit", "96", "--baseline-epochs", "1",
        "--supernet-epochs", "1", "--subnet-epochs", "1", "--proxy-val-limit", "48", "--rounds", "1",
        "--train-threads", "1", "--device", "cpu", "--budgets", "0.95,0.9", "--predictor", "isolated",
        "--holdout", "0", *PROTOCOL, *QUIET_PROFILE]
ROOT = Path(__file__).resolve().parents[1]


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def finished_stages(run: Path) -> set[str]:
    try:
        return set(json.loads((run / "run.json").read_text())["stages"])
    except (OSError, ValueError, KeyError):
        return set()


def one_line_error(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert err and "Traceback" not in "\n".join(err)
    return err[-1]


@pytest.fixture(scope="module")
def resumed_run(tmp_path_factory):
    """A run killed (SIGKILL) right after its profile stage finished, then rerun to the end in-process."""
    run = tmp_path_factory.mktemp("pipeline") / "run"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    child = subprocess.Popen([sys.executable, "-m", "deploykit.cli", "run", "--out", str(run), *TINY],
                             cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                             start_new_session=True)
    deadline = time.monotonic() + 300
    while "profile" not in finished_stages(run):
        if child.poll() is not None:
            tail = child.stderr.read().decode()[-2000:]
            pytest.fail(f"deploykit run ended early ({child.returncode}): {tail}")
        if time.monotonic() > deadline:
            os.killpg(child.pid, signal.SIGKILL)
            pytest.fail("the profile stage did not finish within 300 s")
        time.sleep(0.05)
    os.killpg(child.pid, signal.SIGKILL)  # the whole group: the worker processes too
    child.wait()
    before = {"weights": sha256(run / "baseline" / "model.pt"), "weights_mtime": (run / "baseline" /
              "model.pt").stat().st_mtime_ns, "table": sha256(next((run / "profile").glob("*.csv")))}
    killed_after = finished_stages(run)
    return run, before, killed_after


@pytest.fixture(scope="module")
def completed(resumed_run):
    run, before, killed_after = resumed_run
    import contextlib
    import io

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(["run", "--out", str(run), *TINY])
    return run, before, killed_after, code, out.getvalue(), err.getvalue()


def test_a_killed_run_resumes_without_redoing_finished_stages(completed):
    run, before, killed_after, code, _, err = completed
    assert code == 0, err[-3000:]
    assert {"baseline", "profile"} <= killed_after and "verify 0.9" not in killed_after
    assert "continue original" not in killed_after
    assert "baseline: done already" in err and "profile: done already" in err
    assert sha256(run / "baseline" / "model.pt") == before["weights"]
    assert (run / "baseline" / "model.pt").stat().st_mtime_ns == before["weights_mtime"]
    assert sha256(next((run / "profile").glob("*.csv"))) == before["table"]
    state = json.loads((run / "run.json").read_text())
    assert set(state["stages"]) >= {"baseline", "profile", "supernet", "search 0.95", "train 0.9",
                                    "continue original", "export continued", "verify continued", "table"}
    assert all(entry["seconds"] >= 0 for entry in state["stages"].values())


def test_every_stage_leaves_its_artifact(completed):
    run = completed[0]
    for name in ("baseline/model.pt", "baseline/model.onnx", "baseline/verify-cpu-ort.json",
                 "supernet/supernet.pt", "original-continued/model.pt", "original-continued/model.onnx",
                 "original-continued/verify-cpu-ort.json", "table.md", "table.csv", "pareto.png"):
        assert (run / name).is_file(), name
    for budget in ("0.95", "0.9"):
        folder = run / f"budget-{budget}"
        subnet = json.loads((folder / "subnet.json").read_text())
        assert subnet["pruned"] and subnet["model"] == "convnext_atto"
        assert subnet["proxy"]["kind"] == "supernet"
        result = json.loads((folder / "result.json").read_text())
        assert result["kind"] == "subnet" and result["method"] == "progressive"
        assert result["pruned"] == subnet["pruned"]
        report = VerifyReport.read(folder / "verify-cpu-ort.json")
        assert report.passed is True and report.numerics["max_rel"] <= 1e-4
        assert report.reference == str(run / "baseline" / "model.onnx") and report.speedup > 0
        assert report.pruned == tuple(subnet["pruned"]) and report.predicted_ms > 0
    assert (run / "pareto.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_the_original_continued_is_trained_like_the_pruned_variants(completed):
    """The equal-budget reference: from the original's weights, subnet-epochs more, same lr and
    distillation as subnet training, nothing pruned; exported and verified like the original."""
    run = completed[0]
    continued = json.loads((run / "original-continued" / "result.json").read_text())
    pruned = json.loads((run / "budget-0.9" / "result.json").read_text())
    assert continued["kind"] == "baseline" and continued["epochs"] == pruned["epochs"] == 1
    assert continued["weights"] == pruned["weights"] == str(run / "baseline" / "model.pt")
    assert continued["distill"] == {"temperature": 2.0, "weight": 1.0}
    checkpoint = torch.load(run / "original-continued" / "checkpoint.pt", weights_only=True)
    trained_in = Path(pruned.get("trained_in", run / "budget-0.9"))  # 0.9 may reuse 0.95's blocks
    subnet_checkpoint = torch.load(trained_in / "checkpoint.pt", weights_only=True)
    for key in ("optim", "distill", "batch_size", "seed", "epochs"):
        assert checkpoint["meta"][key] == subnet_checkpoint["meta"][key], key
    assert sha256(run / "original-continued" / "model.pt") != sha256(run / "baseline" / "model.pt")
    report = VerifyReport.read(run / "original-continued" / "verify-cpu-ort.json")
    assert report.passed is True and report.pruned == () and report.latency["model"]["median_ms"] > 0


def test_the_table_has_the_originals_and_one_row_per_budget(completed):
    run, *_, out, _ = completed
    frame = pd.read_csv(run / "table.csv")
    assert list(frame["variant"]) == ["baseline", "original-continued", "budget-0.95", "budget-0.9"]
    rows = frame.set_index("variant")
    baseline = json.loads((run / "baseline" / "result.json").read_text())
    continued = json.loads((run / "original-continued" / "result.json").read_text())
    assert rows.loc["baseline", "top-1 %"] == pytest.approx(baseline["top1"])
    assert rows.loc["original-continued", "epochs"] == "1+1"
    assert rows.loc["original-continued", "Δ vs"] == "baseline (1 ep)"
    assert rows.loc["original-continued", "cpu-ort measured ms"] > 0
    robin = RoundRobin.read(run / "latency-cpu-ort.json")
    assert list(robin.models) == list(frame["variant"]) and robin.reference == "baseline"
    assert all(len(m.round_medians_ms) == robin.rounds for m in robin.models.values())
    assert robin.models["baseline"].speedup == pytest.approx(1.0)
    # on this machine's CPU every variant is timed as a ratio to the baseline in one process per round
    assert robin.paired and all(len(robin.models[v].round_ratios) == robin.rounds for v in robin.models
                                if v != "baseline")
    for budget in ("0.95", "0.9"):
        result = json.loads((run / f"budget-{budget}" / "result.json").read_text())
        report = VerifyReport.read(run / f"budget-{budget}" / "verify-cpu-ort.json")
        row = rows.loc[f"budget-{budget}"]
        assert row["top-1 %"] == pytest.approx(result["top1_merged"])
        assert row["epochs"] == "1+1" and row["Δ vs"] == "original-continued (1+1 ep)"
        assert row["Δ top-1"] == pytest.approx(result["top1_merged"] - continued["top1"], abs=1e-6)
        assert report.speedup > 0  # verify's own interleaved figure stays in its report
        measured = robin.models[f"budget-{budget}"]  # the table's figures: one round-robin measurement
        assert row["cpu-ort speed-up"] == pytest.approx(measured.speedup)
        assert row["cpu-ort measured ms"] == pytest.approx(measured.median_ms)
        low, high = measured.range_ms
        assert row["cpu-ort measured ±"] == pytest.approx((high - low) / 2)
        assert row["params M"] < rows.loc["baseline", "params M"]
    assert "| baseline" in out and "wrote" in out and str(run / "table.md") in out


def test_deploykit_table_reads_a_run_directory_and_skips_its_supernet(completed, capsys):
    run = completed[0]
    assert main(["table", str(run)]) == 0
    rows = [line for line in capsys.readouterr().out.splitlines() if line.startswith("| ")][2:]
    assert [row.split("|")[1].strip() for row in rows] == ["baseline", "original-continued", "budget-0.9",
                                                           "budget-0.95"]


def test_a_finished_run_reruns_nothing_but_the_cheap_checks(completed, capsys):
    run = completed[0]
    table = sha256(run / "table.csv")
    assert main(["run", "--out", str(run), *TINY]) == 0
    err = capsys.readouterr().err
    assert "verify 0.9: done already" in err and "train 0.95: done already" in err
    assert "continue original: done already" in err and "verify continued: done already" in err
    assert sha256(run / "table.csv") == table


def test_other_settings_for_an_existing_run_are_refused(completed, capsys):
    run = completed[0]
    changed = [*TINY[:TINY.index("--baseline-epochs")], "--baseline-epochs", "2",
               *TINY[TINY.index("--baseline-epochs") + 2:]]
    assert main(["run", "--out", str(run), *changed]) == 2
    line = one_line_error(capsys)
    assert "other settings" in line and "baseline_epochs 1 → 2" in line and "--fresh" in line


def test_an_unreachable_added_budget_stops_before_any_training(completed, capsys):
    run = completed[0]
    budgets = TINY.index("--budgets") + 1
    argv = [*TINY[:budgets], "0.95,0.9,0.01", *TINY[budgets + 1:]]
    assert main(["run", "--out", str(run), *argv]) == 2
    line = one_line_error(capsys)
    assert "budget 0.01" in line and "smallest latency" in line
    assert not (run / "budget-0.01").exists()


def test_weights_replace_baseline_training(completed, tmp_path, capsys):
    from deploykit.data import DataConfig
    from deploykit.training import evaluate_original

    run = completed[0]
    trained = json.loads((run / "baseline" / "result.json").read_text())
    data = DataConfig("digits", input_size=(32, 32), train_limit=192, val_limit=96)
    result = evaluate_original("convnext_atto", data=data,
                               weights=run / "baseline" / "model.pt", out=tmp_path / "baseline")
    assert result.top1 == pytest.approx(trained["top1"])
    written = json.loads((tmp_path / "baseline" / "result.json").read_text())
    assert written["kind"] == "baseline" and written["epochs"] == 0 and written["params"] == trained["params"]


def test_a_target_that_cannot_run_here_is_refused_before_anything_is_written(tmp_path, capsys):
    assert main(["run", "--out", str(tmp_path / "r"), "--target", "nvidia-a100", *TINY]) == 2
    line = one_line_error(capsys)
    assert "nvidia-a100 cannot run here" in line
    assert not (tmp_path / "r").exists()


@pytest.mark.parametrize("argv, message", [
    (["--budgets", "0.8,80%"], "listed twice"),
    (["--budgets", "1.5"], "within (0, 1]"),
    (["--budgets", "fast"], "malformed budget"),
    (["--baseline-epochs", "0"], "baseline epochs must be a positive integer"),
    (["--model", "no_such_net"], "unknown model"),
])
def test_bad_settings_are_one_line_errors(tmp_path, capsys, argv, message):
    code = main(["run", "--out", str(tmp_path / "r"), *argv, "--data", "digits"])
    assert code == 2
    assert message in one_line_error(capsys)


def test_fresh_refuses_to_delete_a_folder_that_is_not_a_run(tmp_path, capsys):
    precious = tmp_path / "precious"
    precious.mkdir()
    (precious / "thesis.tex").write_text("keep me")
    assert main(["run", "--out", str(precious), "--fresh", *TINY]) == 2
    assert "not a deploykit run directory" in one_line_error(capsys)
    assert (precious / "thesis.tex").read_text() == "keep me"


def test_training_resumes_from_a_checkpoint_inside_a_stage(tmp_path):
    pipeline = Pipeline(PipelineConfig(data="digits"), tmp_path / "run")
    folder = tmp_path / "run" / "supernet"
    assert pipeline.run_config(folder, 1).resume is False
    folder.mkdir(parents=True)
    (folder / "checkpoint.pt").write_bytes(b"")
    assert pipeline.run_config(folder, 1).resume is True


@pytest.mark.parametrize("budgets,order", [(("0.8", "0.6", "0.7"), ["0.6", "0.7", "0.8"]),
                                           (("3ms", "2.5ms"), ["2.5ms", "3ms"]),
                                           (("0.8", "2ms"), ["0.8", "2ms"])])  # mixed units: as given
def test_budgets_are_searched_tightest_first_each_starting_from_the_others(tmp_path, budgets, order):
    from deploykit.subnet import Subnet

    pipeline = Pipeline(PipelineConfig(data="digits", budgets=budgets), tmp_path / "run")
    searches = [stage.name.removeprefix("search ") for stage in pipeline.stages()
                if stage.name.startswith("search ")]
    assert searches == order
    first, second = (pipeline.layout.budget(text) for text in order[:2])
    first.mkdir(parents=True)
    Subnet(model="convnext_atto", input_size=(32, 32), pruned=(1, 4)).write(first / "subnet.json")
    assert pipeline._other_choices(second) == {first: (1, 4)} and pipeline._other_choices(first) == {}


def test_a_budget_whose_search_chose_trained_blocks_reuses_that_training(tmp_path, monkeypatch):
    from deploykit import training
    from deploykit.subnet import Subnet

    pipeline = Pipeline(PipelineConfig(data="digits", budgets=("0.8", "0.6", "0.5")), tmp_path / "run")
    first, same, other = (pipeline.layout.budget(b) for b in ("0.8", "0.6", "0.5"))
    for folder, pruned in ((first, (0, 2, 3)), (same, (3, 0, 2)), (other, (0, 2))):
        folder.mkdir(parents=True)
        Subnet(model="convnext_atto", input_size=(32, 32), pruned=pruned).write(folder / "subnet.json")
    (first / "merged.safetensors").write_bytes(b"trained weights")
    (first / "log.csv").write_text("epoch\n1\n")
    (first / "result.json").write_text(json.dumps({"kind": "subnet", "out": str(first), "top1_merged": 91.5,
                                                   "merged_path": str(first / "merged.safetensors")}))
    trained = []
    monkeypatch.setattr(training, "train_subnet", lambda subnet, **_: trained.append(subnet.pruned) or
                        pytest.fail("trained the same blocks again"))
    summary = pipeline._train_subnet(same)
    assert summary == "the same blocks as budget-0.8: its trained subnet reused, top-1 91.50% merged"
    assert (same / "merged.safetensors").read_bytes() == b"trained weights"
    assert (same / "log.csv").read_text() == "epoch\n1\n"
    result = json.loads((same / "result.json").read_text())
    assert result == {"kind": "subnet", "out": str(same), "top1_merged": 91.5, "trained_in": str(first),
                      "merged_path": str(same / "merged.safetensors")}
    with pytest.raises(pytest.fail.Exception):
        pipeline._train_subnet(other)  # other blocks: trained
    assert trained == [(0, 2)]


def test_the_default_run_directory_names_model_data_and_target():
    pipeline = Pipeline(PipelineConfig(data="imagefolder:/data/pets"))
    assert pipeline.layout.root == Path("runs") / "convnext_atto-imagefolder_data_pets-cpu-ort"
    assert pipeline.layout.budget("12ms").name == "budget-12ms"
    assert pipeline.layout.budget("80%").name == "budget-0.8"


def test_training_functions_are_not_shadowed_by_their_submodules():
    import deploykit.training as training
    import deploykit.training.evaluation  # noqa: F401 - a loaded submodule must not replace the function
    from deploykit.training import evaluate

    assert callable(evaluate) and not isinstance(evaluate, type(training))
    assert sorted(training.__all__) == sorted(training._HOMES)


def _earlier_run(folder: Path, *, manifest: list[str] | None) -> Path:
    """A run directory holding an earlier run's outputs and a user's own files beside them."""
    (folder / "baseline").mkdir(parents=True)
    (folder / "baseline" / "model.pt").write_bytes(b"weights of an earlier run")
    (folder / "budget-0.8").mkdir()
    (folder / "table.md").write_text("| old |\n")
    (folder / "notes.txt").write_text("my notes")
    (folder / "mydata").mkdir()
    (folder / "mydata" / "x").write_text("my data")
    state = {"deploykit_run": 1, "started": "2026-01-01T00:00:00+00:00",
             "config": PipelineConfig(data="digits").as_dict(), "stages": {}}
    if manifest is not None:
        state["outputs"] = manifest
    (folder / "run.json").write_text(json.dumps(state))
    return folder


@pytest.mark.parametrize("manifest", [["baseline", "budget-0.8", "table.md"], None,
                                      ["baseline", "budget-0.8", "table.md", "notes.txt", "../x", "mydata"]],
                         ids=["manifest", "before-manifests", "doctored-manifest"])
def test_fresh_deletes_only_what_the_earlier_run_wrote(tmp_path, manifest):
    run = _earlier_run(tmp_path / "run", manifest=manifest)
    (tmp_path / "x").write_text("outside the run")
    state = Pipeline(PipelineConfig(data="digits"), run, fresh=True)._open_run_dir()
    assert (run / "notes.txt").read_text() == "my notes"
    assert (run / "mydata" / "x").read_text() == "my data"
    assert (tmp_path / "x").read_text() == "outside the run"
    assert not any((run / name).exists() for name in ("baseline", "budget-0.8", "table.md"))
    assert state["outputs"] == [] and state["stages"] == {}


def test_a_run_claims_each_entry_before_writing_it_and_never_a_users(tmp_path):
    pipeline = Pipeline(PipelineConfig(data="digits"), tmp_path / "run")
    state = pipeline._open_run_dir()
    (tmp_path / "run" / "supernet").mkdir()  # the user's own folder of that name
    pipeline._claim(state, ["baseline", "supernet", "baseline"])
    assert json.loads((tmp_path / "run" / "run.json").read_text())["outputs"] == ["baseline"]


def test_a_resumed_run_from_before_manifests_adopts_its_own_entries(tmp_path):
    run = _earlier_run(tmp_path / "run", manifest=None)
    state = Pipeline(PipelineConfig(data="digits"), run)._open_run_dir()
    assert state["outputs"] == ["baseline", "table.md", "budget-0.8"]


def test_a_budget_with_another_budgets_model_shares_its_verify_report_and_measurement(completed):
    run = completed[0]
    robin = RoundRobin.read(run / "latency-cpu-ort.json")
    reports = {b: VerifyReport.read(run / f"budget-{b}" / "verify-cpu-ort.json") for b in ("0.95", "0.9")}
    assert all(reports[b].model == str(run / f"budget-{b}" / "model.onnx") for b in reports)
    if reports["0.95"].model_sha256 != reports["0.9"].model_sha256:  # two subnets: each on its own
        assert robin.same_file_as == {}
        return
    # the tighter budget is searched and trained first; the looser one reuses it
    result = json.loads((run / "budget-0.95" / "result.json").read_text())
    assert result["trained_in"] == str(run / "budget-0.9")
    first, second = reports["0.9"], reports["0.95"]
    assert second.notes[-1].startswith("the same file and weights as budget-0.9,")
    assert second.numerics == first.numerics and second.latency == first.latency
    assert robin.same_file_as == {"budget-0.9": "budget-0.95"}  # the table's order: 0.95 first
    assert robin.models["budget-0.9"] == robin.models["budget-0.95"]
