"""Exporting subnets several at once: forked workers write the files the end-to-end phase then times."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from deploykit.errors import ModelError
from deploykit.latency import parallel_export
from deploykit.latency.parallel_export import batch_size, export_in_parallel

PARENT = os.getpid()
parallel = pytest.mark.skipif(batch_size() < 2, reason="one usable core or no fork here: exports run in turn")


def _write_pid(pruned, path: Path) -> Path:
    path.write_text(f"{os.getpid()} {list(pruned)}")
    return path


def _refuse(pruned, path: Path) -> Path:
    raise ModelError(f"cannot export subnet {list(pruned)}")


def _die_in_a_worker(pruned, path: Path) -> Path:
    if os.getpid() != PARENT:
        os._exit(3)
    return _write_pid(pruned, path)


def test_every_job_is_written_in_order(tmp_path):
    jobs = [((i,), tmp_path / f"{i}.onnx") for i in range(5)]
    assert export_in_parallel(_write_pid, jobs) == [path for _, path in jobs]
    assert [path.read_text().split(" ", 1)[1] for _, path in jobs] == [f"[{i}]" for i in range(5)]


@parallel
def test_the_jobs_run_in_other_processes(tmp_path):
    jobs = [((i,), tmp_path / f"{i}.onnx") for i in range(4)]
    export_in_parallel(_write_pid, jobs)
    pids = {int(path.read_text().split()[0]) for _, path in jobs}
    assert PARENT not in pids and 1 <= len(pids) <= batch_size()
    assert parallel_export._EXPORT is None  # nothing left behind for a later fork


def test_an_export_error_reaches_the_caller_as_it_was_raised(tmp_path):
    with pytest.raises(ModelError, match=r"cannot export subnet \[1\]"):
        export_in_parallel(_refuse, [((1,), tmp_path / "a.onnx"), ((2,), tmp_path / "b.onnx")])


@parallel
def test_jobs_of_a_worker_that_died_are_exported_here(tmp_path):
    jobs = [((i,), tmp_path / f"{i}.onnx") for i in range(3)]
    export_in_parallel(_die_in_a_worker, jobs)
    assert all(int(path.read_text().split()[0]) == PARENT for _, path in jobs)


def test_one_job_or_one_core_exports_here(tmp_path, monkeypatch):
    export_in_parallel(_write_pid, [((0,), tmp_path / "one.onnx")])
    assert int((tmp_path / "one.onnx").read_text().split()[0]) == PARENT
    monkeypatch.setattr(parallel_export, "batch_size", lambda: 1)
    jobs = [((i,), tmp_path / f"{i}.onnx") for i in range(3)]
    export_in_parallel(_write_pid, jobs)
    assert all(int(path.read_text().split()[0]) == PARENT for _, path in jobs)


def test_subnets_exported_ahead_are_timed_without_exporting_again(tmp_path):
    import onnx

    from deploykit.latency.subnets import SubnetMeasurer

    timed = []
    measurer = SubnetMeasurer("convnext_atto", input_size=(32, 32), batch=1, work=tmp_path,
                              time_onnx=lambda path, shape: timed.append(path) or 1.0)
    measurer.export_ahead([(0, 1), (5,)])
    first = {subset: path.read_bytes() for subset, path in measurer._ahead.items()}
    measurer.export = lambda *args: pytest.fail("exported again")
    assert measurer((0, 1)) == 1.0 and measurer((5,)) == 1.0
    assert timed == [tmp_path / "subnet-ahead-0.onnx", tmp_path / "subnet-ahead-1.onnx"]
    del measurer.export
    measurer.export((0, 1), tmp_path / "here.onnx")  # in this process: the same graph
    ops = [node.op_type for node in onnx.load(str(tmp_path / "here.onnx")).graph.node]
    assert [node.op_type for node in onnx.load_from_string(first[(0, 1)]).graph.node] == ops
    measurer.export_ahead([(2,)])  # the next batch replaces the last one's files
    assert not (tmp_path / "subnet-ahead-1.onnx").exists() and list(measurer._ahead) == [(2,)]


def test_the_end_to_end_phase_exports_each_batch_before_timing_it(tmp_path, monkeypatch):
    from deploykit.latency import endtoend
    from deploykit.latency.sampling import plan_end_to_end

    monkeypatch.setattr(parallel_export, "batch_size", lambda: 2)
    plan = plan_end_to_end(((0, 1), (2,), (3,)), fit_samples=3, holdout=2, seed=0)
    order = [subset for _, subset in plan.order]
    known = {order[1]: None}  # measured by an interrupted run: neither exported nor timed again
    events = []

    class Recording:
        def export_ahead(self, subsets):
            events.append(("export", list(subsets)))

        def __call__(self, subset):
            events.append(("time", subset))
            return 1.0

    monkeypatch.setattr(endtoend, "_write_points", lambda *args: None)
    endtoend._measure(plan, Recording(), {k: endtoend.SubnetTiming(k, 1.0) for k in known},
                      tmp_path / "points.csv", lambda line: None, lambda: 0.0, holdout_processes=1)
    todo = [s for s in order if s not in known]
    expected = []
    for start in range(0, len(todo), 2):
        expected.append(("export", todo[start:start + 2]))
        expected += [("time", s) for s in todo[start:start + 2]]
    assert events == expected
