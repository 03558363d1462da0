"""A catalogue of bad inputs and faults, each run as its own ``deploykit`` process: unknown names, bad
numbers, sizes and budgets, missing, empty and corrupt files (weights, tables, metadata, ONNX,
subnet.json, images), output paths that cannot be written, for every command.

Every case asserts the exit code, that the error is exactly one line (``deploykit CMD: error: …``,
with the given fragment) and that there is no traceback, and that no file changed: the shared
fixtures, the case's own folder (no half-written file, no temporary left behind), and the paths
that must stay absent. Where a command legitimately reports progress or a result before the fault
(``verify`` prints its report, then fails to write it), ``progress`` allows those earlier lines.

Commands run through :mod:`cli_runner` (one process per case, forked from a warm interpreter).
"""

from __future__ import annotations

import json
import math
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch
from cli_runner import ROOT, CliRunner
from PIL import Image
from safetensors.torch import save_file

pytest.importorskip("sklearn")
pytestmark = pytest.mark.slow



# --- fixtures: written once, through the library ------------------------------------------------------

def write_table(path: Path, *, keep: int | None = None, complete: bool = True,
                mode: str = "estimated") -> Path:
    """A convnext_atto table at 32×32 with every entry profile would find (the library finds them),
    costs growing with the entry's MACs, built in a second. ``estimated`` (a roofline table) by
    default: tables measured elsewhere make commands print a note about the machine first."""
    from deploykit import __version__
    from deploykit.latency.profile import find_entries
    from deploykit.latency.table import LatencyTable, TableMeta
    from deploykit.models import create_model

    entries = find_entries(create_model("convnext_atto"), model_name="convnext_atto", input_size=32)
    meta = TableMeta(model="convnext_atto", target="cpu-ort", device="the local CPU (any)",
                     device_string="test fixture", runtime="onnxruntime", runtime_version="0.0",
                     provider="CPUExecutionProvider", precision="fp32", batch=1, input_size=(32, 32),
                     threads=None, protocol={}, mode=mode, date="2026-01-01T00:00:00+00:00",
                     deploykit_version=__version__, complete=complete)
    table = LatencyTable(meta=meta)
    for entry in entries[:keep]:
        ms = 0.002 + entry.macs / 1e9
        table.add(entry.row({"median_ms": ms, "p90_ms": ms, "mean_ms": ms, "std_ms": 0.0, "cv": 0.0, "n": 1,
                             "repeats": 1, "compile_s": 0.0, "first_run_ms": ms}, source=mode))
    return table.write(path)


def write_images(root: Path, classes=("cat", "dog"), per_class: int = 3) -> Path:
    rng = np.random.default_rng(0)
    for split in ("train", "val"):
        for name in classes:
            (root / split / name).mkdir(parents=True, exist_ok=True)
            for i in range(per_class):
                Image.fromarray(rng.integers(0, 255, (20, 24, 3), dtype=np.uint8)).save(
                    root / split / name / f"{i}.jpg")
    return root


def break_images(root: Path) -> None:
    """A text file named .jpg, a JPEG cut in half, an empty PNG."""
    (root / "train" / "cat" / "notes.jpg").write_text("not an image")
    whole = (root / "train" / "dog" / "0.jpg").read_bytes()
    (root / "train" / "dog" / "cut.jpg").write_bytes(whole[: len(whole) // 2])
    (root / "val" / "dog" / "empty.png").write_bytes(b"")


class Payload:
    """Unpickling this creates the file ``marker``: stands for any code a pickle can run."""

    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


@pytest.fixture(scope="module")
def fx(tmp_path_factory) -> Path:
    from deploykit.data import DataConfig
    from deploykit.export import export_onnx
    from deploykit.models import create_model
    from deploykit.pipeline import PipelineConfig
    from deploykit.subnet import Subnet
    from deploykit.training import evaluate_original

    fx = tmp_path_factory.mktemp("fixtures")
    (fx / "afile").write_text("a regular file where a folder is expected\n")
    atto = write_table(fx / "atto.csv")
    write_table(fx / "measured.csv", mode="measured")  # lut check checks measured tables only
    write_table(fx / "incomplete.csv", keep=6, complete=False)
    lines = atto.read_text().splitlines(keepends=True)
    shutil.copy(atto.with_suffix(".meta.json"), fx / "cut.meta.json")  # says complete
    (fx / "cut.csv").write_text("".join(lines[: len(lines) // 2]))
    shutil.copy(atto.with_suffix(".meta.json"), fx / "empty.meta.json")
    (fx / "empty.csv").write_text("")
    shutil.copy(atto, fx / "badmeta.csv")
    (fx / "badmeta.meta.json").write_text('{"model": "convnext_atto", ')

    torch.manual_seed(0)
    wide = create_model("convnext_atto")
    torch.save(wide.state_dict(), fx / "w1000.pt")
    torch.save(create_model("convnext_atto", num_classes=10).state_dict(), fx / "w10.pt")
    (fx / "junk.pt").write_bytes(b"not a checkpoint")
    (fx / "empty.pt").write_bytes(b"")
    torch.save(Payload(fx / "pwned"), fx / "payload.pt")
    export_onnx(wide.eval(), (1, 3, 32, 32), fx / "m.onnx")
    (fx / "junk.onnx").write_bytes(b"not an onnx file")
    (fx / "empty.onnx").write_bytes(b"")

    Subnet("convnext_atto", (32, 32), (1, 4)).write(fx / "subnet.json")
    Subnet("resnet18", (32, 32), (1,)).write(fx / "r18_subnet.json")
    (fx / "corrupt_subnet.json").write_text('{"model": "convnext_atto", "pruned": [1,')
    (fx / "empty.json").write_text("")

    evaluate_original("convnext_atto", data=DataConfig("digits", input_size=(32, 32), val_limit=32),
                      weights=fx / "w10.pt", out=fx / "variant")
    (fx / "variant_bad").mkdir()
    (fx / "variant_bad" / "result.json").write_text("{oops")

    break_images(write_images(fx / "images"))
    dead = write_images(fx / "images_dead")
    for split in ("train", "val"):
        (dead / split / "bird").mkdir()
        (dead / split / "bird" / "0.jpg").write_text("not an image either")
    write_images(fx / "no_val")
    shutil.rmtree(fx / "no_val" / "val")

    (fx / "token").write_text("0123456789abcdef0123\n")
    (fx / "short_token").write_text("short\n")
    for name in ("token", "short_token"):
        (fx / name).chmod(0o600)
    (fx / "open_token").write_text("0123456789abcdef0123\n")
    (fx / "open_token").chmod(0o666)
    if hasattr(os, "mkfifo"):
        os.mkfifo(fx / "fifo_token")
    (fx / "bad_target.yaml").write_text("name: [oops\n")
    (fx / "odd_target.yaml").write_text((ROOT / "targets" / "cpu-ort.yaml").read_text() + "colour: blue\n")
    cpu_ort = (ROOT / "targets" / "cpu-ort.yaml").read_text()
    (fx / "typo_setting.yaml").write_text(cpu_ort + "spinnig: false\n")
    (fx / "spin_openvino.yaml").write_text((ROOT / "targets" / "cpu-openvino.yaml").read_text()
                                           + "spinning: true\n")

    nested = "[" * 20000 + "]" * 20000  # 40 KB of nesting: the bounded JSON reader refuses it in one line
    save_file({"w": torch.zeros(1)}, str(fx / "nested_record.safetensors"),
              metadata={"deploykit": nested, "format": "pt"})
    (fx / "hf_nested").mkdir()
    (fx / "hf_nested" / "config.json").write_text(nested)
    shutil.copy(atto, fx / "nestedmeta.csv")
    (fx / "nestedmeta.meta.json").write_text(nested)
    (fx / "nested.json").write_text(nested)
    (fx / "variant_nested").mkdir()
    (fx / "variant_nested" / "result.json").write_text(nested)
    (fx / "nested_run").mkdir()
    (fx / "nested_run" / "run.json").write_text(nested)

    _write_bounds_fixtures(fx, atto, torch.load(fx / "w10.pt", weights_only=True))

    run = fx / "old_run"  # an existing run directory that a refused --fresh run must not delete
    (run / "baseline").mkdir(parents=True)
    (run / "baseline" / "model.pt").write_bytes(b"weights of an earlier run")
    (run / "run.json").write_text(json.dumps({"deploykit_run": 1, "started": "2026-01-01T00:00:00+00:00",
                                              "config": PipelineConfig(data="digits").as_dict(),
                                              "stages": {}}))
    return fx


def _write_bounds_fixtures(fx: Path, atto: Path, w10: dict) -> None:
    """Issue 20 cases 9-12: model records and configs that ask for too much, NaN and unknown model
    arguments, complex weights, table metadata that lies about its rows or has ill-typed fields."""
    from deploykit.modelfile import FORMAT

    for name, record in (("huge_classes", {"model": "convnext_atto", "num_classes": 10**9}),
                         ("huge_chans", {"model": "convnext_atto", "num_classes": 10, "in_chans": 10**9}),
                         ("huge_vit", {"model": "vit_tiny_patch16_224", "num_classes": 10,
                                       "input_size": [100000, 100000]})):
        record = {"format": FORMAT, "input_size": [32, 32], **record}
        save_file({"w": torch.zeros(1)}, str(fx / f"{name}.safetensors"),
                  metadata={"deploykit": json.dumps(record), "format": "pt"})
    save_file(w10, str(fx / "w10.safetensors"))
    for name, config in (("hf_huge", {"num_classes": 10**9}),
                         ("hf_nan", {"model_args": {"drop_rate": math.nan}}),
                         ("hf_act", {"model_args": {"act_layer": "no_such_activation"}})):
        (fx / name).mkdir()
        (fx / name / "config.json").write_text(json.dumps({"architecture": "convnext_atto", "num_classes": 10,
                                                            **config}))
        os.symlink(fx / "w10.safetensors", fx / name / "model.safetensors")
    save_file({key: value.to(torch.complex64) if value.is_floating_point() else value
               for key, value in w10.items()}, str(fx / "complex.safetensors"))
    meta = json.loads(atto.with_suffix(".meta.json").read_text())
    for name, change in (("wrongmodel", {"model": "resnet18"}), ("complete_no", {"complete": "no"}),
                         ("date_word", {"date": "yesterday"}), ("threads_neg", {"threads": -4})):
        shutil.copy(atto, fx / f"{name}.csv")
        (fx / f"{name}.meta.json").write_text(json.dumps({**meta, **change}))


def _can_create_in(folder: Path) -> bool:
    try:
        handle, probe = tempfile.mkstemp(dir=folder)
    except OSError:
        return False
    os.close(handle)
    os.unlink(probe)
    return True


@pytest.fixture(scope="module")
def ro(tmp_path_factory):
    """A folder nobody may write in. chmod does not stop root, so as root: a kernel file system
    that refuses new files even to root (/sys, /proc); skipped where none does."""
    folder = tmp_path_factory.mktemp("read-only")
    folder.chmod(0o555)
    candidates = [folder, Path("/sys"), Path("/proc")]
    found = next((c for c in candidates if c.is_dir() and not _can_create_in(c)), None)
    yield found
    folder.chmod(0o755)


@pytest.fixture(scope="module")
def runner(tmp_path_factory):
    runner = CliRunner(tmp_path_factory.mktemp("cli-logs"))
    yield runner
    runner.close()


# --- the catalogue ------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Case:
    """``deploykit ARGV`` exits ``code`` with one error line holding ``message``; nothing is written.

    In ARGV, ``{fx}`` is the shared fixture folder, ``{here}`` the case's own folder (holding the
    empty folders ``adir``, ``adir.csv``, ``adir.md``), ``{ro}`` a folder nobody may write in.
    ``absent``: paths that must not exist afterwards. ``created``: what a case that succeeds writes
    into ``{here}``. ``stdout``: a fragment printed before the fault. ``forbid``: a fragment the
    message must not hold."""

    argv: str
    code: int = 2
    message: str | None = None
    absent: tuple[str, ...] = ()
    created: tuple[str, ...] = ()
    progress: bool = False
    stdout: str | None = None
    forbid: str | None = None


UNDER_FILE = "afile exists and is not a folder"
NESTED = "nested 20000 levels deep"
DIGITS = "--data digits --input-size 32 --train-limit 64 --val-limit 32 --epochs 1 --batch-size 16 " \
         "--threads 1"
RUN = "--data digits --train-limit 64 --val-limit 32 --device cpu --train-threads 1"
# --threads 1: no settings probe (24 timed processes) before a numerics-only verify
VERIFY = ("verify {fx}/m.onnx --target cpu-ort --torch convnext_atto --weights {fx}/w1000.pt --numerics-only "
          "--threads 1")
EXPORT = "export convnext_atto --input-size 32"
SEARCH = "search --table {fx}/atto.csv --budget 0.9"
TABLE = "table {fx}/variant"
ESTIMATE = "profile --target cpu-ort --model convnext_atto --input-size 32 --estimate"


def case(name: str, argv: str, **expected) -> pytest.param:
    return pytest.param(Case(argv=argv, **expected), id=name)


CASES = [
    # blocks, targets
    case("blocks-unknown-model", "blocks no_such_model", message="unknown model 'no_such_model'"),
    case("blocks-size-zero", "blocks convnext_atto --input-size 0", message="expected a size like 224"),
    case("blocks-size-text", "blocks convnext_atto --input-size 7xx", message="expected a size like 224"),
    case("blocks-no-prunable", "blocks convnextv2_atto --input-size 32", message="no prunable block"),
    case("blocks-format", "blocks convnext_atto --format xml", message="invalid choice: 'xml'"),
    case("command-unknown", "fly", message="invalid choice: 'fly'"),
    case("targets-unknown", "targets no-such-target", message="unknown target 'no-such-target'"),
    case("targets-bad-yaml", "targets {fx}/bad_target.yaml", message="not valid YAML"),
    case("targets-unknown-key", "targets {fx}/odd_target.yaml", message="colour"),
    case("targets-missing-file", "targets {here}/nothing.yaml", message="nothing.yaml"),
    case("targets-unknown-setting", "targets {fx}/typo_setting.yaml", message="spinnig: unknown key"),
    case("profile-setting-the-runtime-lacks", "profile --target {fx}/spin_openvino.yaml "
         "--model convnext_atto --input-size 32 --out {here}/t.csv",
         message="spinning: openvino does not apply spinning", absent=("t.csv",)),
    case("verify-table-other-settings", "verify {fx}/m.onnx --target cpu-ort --table {fx}/measured.csv "
         "--pruned 1 --threads 2", message="is used only with the settings it was measured with"),
    # profile
    case("profile-unknown-target", "profile --target no-such-target --estimate",
         message="unknown target 'no-such-target'"),
    case("profile-unknown-model", "profile --target cpu-ort --model no_such_model --estimate "
         "--out {here}/t.csv",
         message="unknown model 'no_such_model'", absent=("{here}/t.csv", "{here}/t.meta.json")),
    case("profile-batch-zero", "profile --target cpu-ort --model convnext_atto --batch 0 --estimate "
         "--out {here}/t.csv", message="batch must be a positive integer", absent=("{here}/t.csv",)),
    case("profile-target-absent", "profile --target nvidia-a100 --model convnext_atto --out {here}/t.csv",
         message="cannot profile on target nvidia-a100 here", absent=("{here}/t.csv",)),
    case("profile-out-under-file", f"{ESTIMATE} "
         "--out {fx}/afile/t.csv", message=UNDER_FILE),
    case("profile-out-is-folder", f"{ESTIMATE} "
         "--out {here}/adir.csv", message="it is a folder", absent=("{here}/adir.meta.json",)),
    case("profile-out-read-only", f"{ESTIMATE} "
         "--out {ro}/t.csv", message="cannot write"),
    case("profile-into-other-mode", "profile --target cpu-ort --model convnext_atto --input-size 32 "
         "--batch 1 --out {fx}/atto.csv", message="never mix"),
    # train
    case("train-unknown-model", f"train baseline --model no_such_model {DIGITS} --out {{here}}/r",
         message="unknown model 'no_such_model'", progress=True, absent=("{here}/r",)),
    case("train-unknown-data", "train baseline --model convnext_atto --data cifar10 --out {here}/r",
         message="unknown data set 'cifar10'", absent=("{here}/r",)),
    case("train-epochs-zero", f"train baseline --model convnext_atto {DIGITS} --epochs 0 --out {{here}}/r",
         message="epochs", absent=("{here}/r",)),
    case("train-batch-too-big", f"train baseline --model convnext_atto {DIGITS} --batch-size 100000 "
         "--out {here}/r", message="larger than the 64 training samples", progress=True,
         absent=("{here}/r",)),
    case("train-out-under-file", f"train baseline --model convnext_atto {DIGITS} --out {{fx}}/afile/r",
         message=UNDER_FILE, progress=True),
    case("train-out-read-only", f"train baseline --model convnext_atto {DIGITS} --out {{ro}}/r",
         message="cannot create folder", progress=True),
    case("train-weights-missing", f"train baseline --model convnext_atto {DIGITS} --weights {{here}}/no.pt "
         "--out {here}/r", message="weights file not found", progress=True, absent=("{here}/r",)),
    case("train-weights-junk", f"train baseline --model convnext_atto {DIGITS} --weights {{fx}}/junk.pt "
         "--out {here}/r", message="cannot read weights file", progress=True, absent=("{here}/r",)),
    case("train-weights-empty", f"train baseline --model convnext_atto {DIGITS} --weights {{fx}}/empty.pt "
         "--out {here}/r", message="empty", progress=True, absent=("{here}/r",)),
    case("train-images-strict", "train baseline --model convnext_atto --data imagefolder:{fx}/images "
         "--input-size 32 --epochs 1 --batch-size 4 --strict-images --out {here}/r",
         message="3 image file(s) cannot be decoded: train/cat/notes.jpg", absent=("{here}/r",)),
    case("train-images-class-undecodable", "train baseline --model convnext_atto "
         "--data imagefolder:{fx}/images_dead --input-size 32 --epochs 1 --batch-size 4 --out {here}/r",
         message="no decodable image in class folder(s) bird", absent=("{here}/r",)),
    case("train-images-no-val", "train baseline --model convnext_atto --data imagefolder:{fx}/no_val "
         "--input-size 32 --out {here}/r", message="val/ is missing", absent=("{here}/r",)),
    case("supernet-candidates-out-of-range", f"train supernet --model convnext_atto --weights {{fx}}/w10.pt "
         f"{DIGITS} --candidates 99 --out {{here}}/r", message="out of range", progress=True,
         absent=("{here}/r/checkpoint.pt",)),
    case("supernet-classes-differ", "train supernet --model convnext_atto --weights {fx}/w1000.pt "
         f"{DIGITS} --out {{here}}/r", message="1000 classes but the data has 10", progress=True,
         absent=("{here}/r/checkpoint.pt",)),
    case("subnet-reversed-range", f"train subnet --model convnext_atto --prune 3-1 --weights {{fx}}/w10.pt "
         f"{DIGITS} --out {{here}}/r", message="reversed block range", absent=("{here}/r",)),
    case("subnet-out-of-range", f"train subnet --model convnext_atto --prune 40 --weights {{fx}}/w10.pt "
         f"{DIGITS} --out {{here}}/r", message="out of range", progress=True, absent=("{here}/r",)),
    case("subnet-file-missing", f"train subnet --subnet {{here}}/none.json --weights {{fx}}/w10.pt {DIGITS} "
         "--out {here}/r", message="none.json", absent=("{here}/r",)),
    case("subnet-file-corrupt", f"train subnet --subnet {{fx}}/corrupt_subnet.json --weights {{fx}}/w10.pt "
         f"{DIGITS} --out {{here}}/r", message="corrupt_subnet.json", absent=("{here}/r",)),
    case("subnet-file-empty", f"train subnet --subnet {{fx}}/empty.json --weights {{fx}}/w10.pt {DIGITS} "
         "--out {here}/r", message="empty.json", absent=("{here}/r",)),
    # lut
    case("lut-predict-missing-table", "lut predict {here}/none.csv --prune 1", message="not found"),
    case("lut-predict-empty-csv", "lut predict {fx}/empty.csv --prune 1",
         message="cannot read latency table"),
    case("lut-predict-corrupt-meta", "lut predict {fx}/badmeta.csv --prune 1", message="badmeta.meta.json"),
    case("lut-predict-out-of-range", "lut predict {fx}/atto.csv --prune 99", message="99"),
    case("lut-predict-other-model", "lut predict {fx}/atto.csv --subnet {fx}/r18_subnet.json",
         message="resnet18"),
    case("lut-predict-reversed-range", "lut predict {fx}/atto.csv --prune 3-1",
         message="reversed block range"),
    case("lut-predict-incomplete", "lut predict {fx}/incomplete.csv --prune 1"),
    case("lut-predict-cut-csv", "lut predict {fx}/cut.csv --prune 1"),
    case("lut-check-samples", "lut check {fx}/measured.csv --samples 1 --out {here}/c", message="--samples",
         absent=("{here}/c",)),
    case("lut-check-out-under-file", "lut check {fx}/measured.csv --samples 2 --out {fx}/afile",
         message=UNDER_FILE),
    case("lut-check-out-read-only", "lut check {fx}/measured.csv --samples 2 --out {ro}/c", message="cannot"),
    # search
    case("search-malformed-budget", "search --table {fx}/atto.csv --budget fast --out {here}/s.json",
         message="malformed budget", absent=("{here}/s.json",)),
    case("search-budget-zero", "search --table {fx}/atto.csv --budget 0 --out {here}/s.json",
         message="positive number", absent=("{here}/s.json",)),
    case("search-unreachable-budget", "search --table {fx}/atto.csv --budget 0.01 --out {here}/s.json",
         message="smallest latency the table predicts", absent=("{here}/s.json",)),
    case("search-pareto-zero", "search --table {fx}/atto.csv --pareto 0 --out {here}/p.csv",
         message="at least 2 points", absent=("{here}/p.csv",)),
    case("search-unknown-proxy", f"{SEARCH} --proxy magic --out {{here}}/s.json",
         message="unknown proxy 'magic'", absent=("{here}/s.json",)),
    case("search-missing-table", "search --table {here}/none.csv --budget 0.7", message="not found"),
    case("search-out-under-file", f"{SEARCH} --out {{fx}}/afile/s.json", message=UNDER_FILE),
    case("search-out-is-folder", f"{SEARCH} --out {{here}}/adir", message="it is a folder"),
    case("search-out-read-only", f"{SEARCH} --out {{ro}}/s.json", message="cannot write"),
    case("search-cut-table", "search --table {fx}/cut.csv --budget 0.9 --out {here}/s.json",
         forbid="no subnet", absent=("{here}/s.json",)),
    # export
    case("export-unknown-model", "export no_such_model --out {here}/m.onnx", message="unknown model",
         absent=("{here}/m.onnx",)),
    case("export-weights-junk", f"{EXPORT} --weights {{fx}}/junk.pt --out {{here}}/m.onnx",
         message="cannot read weights file", absent=("{here}/m.onnx",)),
    case("export-batch-zero", f"{EXPORT} --batch 0 --out {{here}}/m.onnx", message="--batch must be",
         absent=("{here}/m.onnx",)),
    case("export-checkpoint-missing", "export {here}/none.pt --out {here}/m.onnx", message="not found",
         absent=("{here}/m.onnx",)),
    case("export-out-under-file", f"{EXPORT} --out {{fx}}/afile/m.onnx", message=UNDER_FILE),
    case("export-out-is-folder", f"{EXPORT} --out {{here}}/adir", message="it is a folder"),
    case("export-out-read-only", f"{EXPORT} --out {{ro}}/m.onnx", message="cannot write"),
    case("export-pickle-runs-nothing", "export {fx}/payload.pt --out {here}/m.onnx",
         absent=("{fx}/pwned", "{here}/m.onnx")),
    case("export-classes-from-weights", f"{EXPORT} --weights {{fx}}/w10.pt --out {{here}}/m.onnx", code=0,
         created=("m.onnx",)),
    # verify
    case("verify-missing-onnx", "verify {here}/none.onnx --target cpu-ort", message="none.onnx"),
    case("verify-junk-onnx", "verify {fx}/junk.onnx --target cpu-ort --numerics-only --torch convnext_atto",
         message="junk.onnx"),
    case("verify-empty-onnx", "verify {fx}/empty.onnx --target cpu-ort", message="empty.onnx"),
    case("verify-unknown-target", "verify {fx}/m.onnx --target no-such-target", message="unknown target"),
    case("verify-numerics-needs-torch", "verify {fx}/m.onnx --target cpu-ort --numerics-only",
         message="--numerics-only needs --torch"),
    case("verify-table-corrupt-meta", "verify {fx}/m.onnx --target cpu-ort --table {fx}/badmeta.csv "
         "--pruned 1", message="badmeta.meta.json"),
    case("verify-out-under-file", f"{VERIFY} --out {{fx}}/afile/r.json", message=UNDER_FILE,
         progress=True, stdout="verdict: PASSED"),
    case("verify-out-is-folder", f"{VERIFY} --out {{here}}/adir", message="it is a folder", progress=True,
         stdout="verdict: PASSED"),
    case("verify-out-read-only", f"{VERIFY} --out {{ro}}/r.json", message="cannot write", progress=True,
         stdout="verdict: PASSED"),
    case("verify-pickle-runs-nothing", "verify {fx}/m.onnx --target cpu-ort --numerics-only "
         "--torch {fx}/payload.pt", absent=("{fx}/pwned",), progress=True),
    # table
    case("table-missing", "table {here}/none", message="not found"),
    case("table-corrupt-result", "table {fx}/variant_bad", message="cannot read it as JSON"),
    case("table-plot-not-png", f"{TABLE} --plot {{here}}/p.jpg", message="PNG", absent=("{here}/p.jpg",)),
    case("table-out-under-file", f"{TABLE} --out {{fx}}/afile/t.md", message=UNDER_FILE),
    case("table-out-is-folder", f"{TABLE} --out {{here}}/adir.md", message="it is a folder"),
    case("table-out-no-suffix", f"{TABLE} --out {{here}}/t", message="use .md, .csv, .html",
         absent=("{here}/t",)),
    case("table-out-read-only", f"{TABLE} --out {{ro}}/t.md", message="cannot write"),
    # convert, serve, device
    case("convert-pickle-runs-nothing", "convert {fx}/payload.pt --out {here}/m.safetensors",
         message="refuses", absent=("{fx}/pwned", "{here}/m.safetensors")),
    case("convert-out-under-file", "convert convnext_atto --input-size 32 --out {fx}/afile/m.safetensors",
         message=UNDER_FILE),
    case("convert-out-is-folder", "convert convnext_atto --input-size 32 --out {here}/adir",
         message="it is a folder"),
    case("convert-out-read-only", "convert convnext_atto --input-size 32 --out {ro}/m.safetensors",
         message="cannot write"),
    case("serve-no-token-file", "serve --token-file {here}/none", message="no token file"),
    case("serve-short-token", "serve --token-file {fx}/short_token", message="at least 16"),
    case("serve-token-dev-zero", "serve --token-file /dev/zero", message="not a regular file"),
    case("serve-token-fifo", "serve --token-file {fx}/fifo_token", message="not a regular file"),
    case("serve-token-world-readable", "serve --token-file {fx}/open_token",
         message="readable by other users: chmod 600"),
    case("device-bad-url", "device notaurl --token-file {fx}/token", message="device URL must look like"),
    case("device-unreachable", "device http://127.0.0.1:9 --token-file {fx}/token --retries 1",
         message="cannot reach the device"),
    # run: refused before anything is written
    case("run-weights-missing", f"run {RUN} --weights {{here}}/none.pt --out {{here}}/r",
         message="weights file not found", absent=("{here}/r",)),
    case("run-weights-junk", f"run {RUN} --weights {{fx}}/junk.pt --out {{here}}/r",
         message="cannot read weights file", absent=("{here}/r",)),
    case("run-weights-other-classes", f"run {RUN} --weights {{fx}}/w1000.pt --out {{here}}/r",
         message="1000 classes but the data has 10", absent=("{here}/r",)),
    case("run-fresh-keeps-old-run-when-refused", f"run {RUN} --fresh --weights {{fx}}/junk.pt "
         "--out {fx}/old_run", message="cannot read weights file"),
    case("run-data-missing", "run --data imagefolder:{here}/none --out {here}/r",
         message="image folder not found", absent=("{here}/r",)),
    case("run-images-strict", "run --data imagefolder:{fx}/images --strict-images --out {here}/r",
         message="cannot be decoded", absent=("{here}/r",)),
    case("run-batch-too-big", f"run {RUN} --batch-size 100000 --out {{here}}/r",
         message="larger than the 64 training samples", absent=("{here}/r",)),
    case("run-malformed-budget", f"run {RUN} --budgets fast --out {{here}}/r", message="malformed budget",
         absent=("{here}/r",)),
    case("run-unknown-model", f"run {RUN} --model no_such_model --out {{here}}/r", message="unknown model",
         absent=("{here}/r",)),
    case("run-target-absent", f"run {RUN} --target nvidia-a100 --out {{here}}/r",
         message="nvidia-a100 cannot run here", absent=("{here}/r",)),
    case("run-out-under-file", f"run {RUN} --out {{fx}}/afile/r", message=UNDER_FILE),
    case("run-out-read-only", f"run {RUN} --out {{ro}}/r", message="cannot"),
    # case 8: deeply nested JSON in every reader is one line, never a RecursionError
    case("export-nested-record", "export {fx}/nested_record.safetensors --out {here}/m.onnx",
         message=NESTED, absent=("{here}/m.onnx",)),
    case("convert-nested-record", "convert {fx}/nested_record.safetensors --out {here}/m.safetensors",
         message=NESTED, absent=("{here}/m.safetensors",)),
    case("verify-nested-record", "verify {fx}/m.onnx --target cpu-ort --numerics-only "
         "--torch {fx}/nested_record.safetensors", message=NESTED, progress=True),
    case("export-nested-hf-config", "export convnext_atto --weights {fx}/hf_nested --out {here}/m.onnx",
         message=NESTED, absent=("{here}/m.onnx",)),
    case("lut-predict-nested-meta", "lut predict {fx}/nestedmeta.csv --prune 1", message=NESTED),
    case("lut-predict-nested-subnet", "lut predict {fx}/atto.csv --subnet {fx}/nested.json", message=NESTED),
    case("table-nested-result", "table {fx}/variant_nested", message=NESTED),
    case("run-nested-run-json", f"run {RUN} --out {{fx}}/nested_run", message=NESTED),
    # case 9: a record or config that asks for too much is refused before anything is built
    case("export-record-huge-classes", "export {fx}/huge_classes.safetensors --out {here}/m.onnx",
         message="num_classes must be an integer 0–1000000", absent=("{here}/m.onnx",)),
    case("export-record-huge-chans", "export {fx}/huge_chans.safetensors --out {here}/m.onnx",
         message="in_chans must be an integer 1–1024", absent=("{here}/m.onnx",)),
    case("export-record-huge-vit", "export {fx}/huge_vit.safetensors --out {here}/m.onnx",
         message="over the limit of 8192", absent=("{here}/m.onnx",)),
    case("export-hf-huge-classes", "export convnext_atto --weights {fx}/hf_huge --out {here}/m.onnx",
         message="num_classes must be an integer 0–1000000", absent=("{here}/m.onnx",)),
    # case 10: NaN or unknown model arguments: one line, nothing written
    case("export-hf-nan-arg", "export convnext_atto --weights {fx}/hf_nan --out {here}/m.onnx",
         message="drop_rate must be a finite number", absent=("{here}/m.onnx",)),
    case("export-hf-unknown-act", "export convnext_atto --weights {fx}/hf_act --out {here}/m.onnx",
         message="unknown name 'no_such_activation'", absent=("{here}/m.onnx",)),
    # case 11: metadata that does not fit its rows, or has ill-typed fields
    case("lut-predict-meta-other-model", "lut predict {fx}/wrongmodel.csv --prune 1",
         message="its metadata names model resnet18, but its rows were measured on convnext_atto"),
    case("lut-predict-meta-complete-text", "lut predict {fx}/complete_no.csv --prune 1",
         message="complete must be true or false"),
    case("lut-predict-meta-date-word", "lut predict {fx}/date_word.csv --prune 1", message="date must be"),
    case("lut-predict-meta-threads-negative", "lut predict {fx}/threads_neg.csv --prune 1",
         message="threads must be a positive integer or null"),
    # case 12: complex weights, --rounds 0 before any model is built, non-ASCII digits in a budget
    case("export-complex-weights", "export convnext_atto --input-size 32 --weights {fx}/complex.safetensors "
         "--out {here}/m.onnx", message="is complex64", absent=("{here}/m.onnx",)),
    case("lut-anchor-rounds-zero", "lut anchor {fx}/measured.csv --rounds 0", message="--rounds must be"),
    case("search-budget-arabic-digit", "search --table {fx}/atto.csv --budget \u0661 --out {here}/s.json",
         message="malformed budget", absent=("{here}/s.json",)),
]


def snapshot(root: Path) -> dict[str, tuple]:
    """Every file and folder under ``root``, hidden ones included: (is folder, size, mtime, inode).
    A rewrite, even atomic (a new inode), or a left-over temporary shows."""
    entries = {}
    for path in sorted(root.rglob("*")):
        info = path.lstat()
        entries[str(path.relative_to(root))] = (path.is_dir(),) if path.is_dir() else \
            (False, info.st_size, info.st_mtime_ns, info.st_ino)
    return entries


def error_line(stderr: str, *, progress: bool) -> str:
    """The one error line: all of stderr, or (``progress``) its last line, the only error line."""
    lines = stderr.strip().splitlines()
    assert "Traceback" not in stderr, stderr[-3000:]
    assert lines, "no error message"
    if not progress:
        assert len(lines) == 1, f"stderr is not one line: {stderr[-3000:]}"
    assert sum(": error: " in line for line in lines) == 1, stderr[-3000:]
    assert re.match(r"deploykit( [a-z]+)*: error: \S", lines[-1]), lines[-1]
    return lines[-1]


@pytest.mark.parametrize("item", CASES)
def test_fault_is_one_line_and_changes_nothing(item: Case, fx, ro, runner, tmp_path):
    if "{ro}" in item.argv and ro is None:
        pytest.skip("no folder here refuses new files (running as root, and /sys and /proc accept them)")
    here = tmp_path / "case"
    for name in ("adir", "adir.csv", "adir.md"):
        (here / name).mkdir(parents=True)
    places = {"fx": fx, "here": here, "ro": ro}
    argv = [part.format(**places) for part in item.argv.split()]
    absent = [Path(path.format(**places)) for path in item.absent]
    before_fx, before_here = snapshot(fx), snapshot(here)

    done = runner.run(argv, cwd=here)

    assert not done.timed_out, f"deploykit {item.argv} did not finish: {done.stderr[-2000:]}"
    assert done.code == item.code, f"exit {done.code}, expected {item.code}: {done.stderr[-3000:]}"
    if item.code == 0:
        assert "Traceback" not in done.stderr
    else:
        line = error_line(done.stderr, progress=item.progress)
        if item.message is not None:
            assert item.message in line
        if item.forbid is not None:
            assert item.forbid not in line
    if item.stdout is not None:
        assert item.stdout in done.stdout
    for path in absent:
        assert not path.exists(), f"{path} was written"
    assert snapshot(fx) == before_fx, "a shared fixture changed"
    after_here = snapshot(here)
    for name in item.created:
        assert after_here.pop(name, None) is not None, f"{name} was not written"
    assert after_here == before_here, "files were left behind"


def test_the_catalogue_covers_every_command():
    from deploykit.cli import build_parser

    commands = set(build_parser()._subparsers._group_actions[0].choices)
    covered = {c.values[0].argv.split()[0] for c in CASES}
    assert commands <= covered
    assert len(CASES) >= 40


# --- faults that need more than one command line ------------------------------------------------------

def test_training_skips_undecodable_images_counts_and_names_them(fx, runner, tmp_path):
    done = runner.run(["train", "baseline", "--model", "convnext_atto",
                       "--data", f"imagefolder:{fx / 'images'}", "--input-size", "32", "--epochs", "1",
                       "--batch-size", "4", "--threads", "1",
                       "--out", str(tmp_path / "r")], cwd=tmp_path)
    assert done.code == 0, done.stderr[-3000:]
    assert "6 train / 6 val images" in done.stderr  # the 3 broken files are not counted
    assert "skipped 3 undecodable file(s): train/cat/notes.jpg, train/dog/cut.jpg, val/dog/empty.png" \
        in done.stderr
    assert (tmp_path / "r" / "model.pt").is_file()


def test_profile_force_keeps_the_old_table_until_the_new_one_is_complete(fx, tmp_path):
    """``profile --force`` over a complete table, killed after its first new entry: the old table is
    still there, whole."""
    table = tmp_path / "atto.csv"
    shutil.copy(fx / "measured.csv", table)
    shutil.copy(fx / "measured.meta.json", tmp_path / "atto.meta.json")
    before = {name: (tmp_path / name).read_bytes() for name in ("atto.csv", "atto.meta.json")}
    child = subprocess.Popen(
        [sys.executable, "-m", "deploykit.cli", "profile", "--target", "cpu-ort", "--model", "convnext_atto",
         "--input-size", "32", "--batch", "1", "--force", "--out", str(table), "--min-time", "0.01",
         "--warmup-time", "0", "--min-iters", "3", "--warmup-iters", "1", "--threads", "1"],
        cwd=tmp_path, env={**os.environ, "PYTHONPATH": str(ROOT)}, stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        deadline = time.monotonic() + 240
        for line in child.stderr:  # the first entry is measured (and, on main, written) when this shows
            if re.match(r"\[\s*1/\d+\] ", line) or time.monotonic() > deadline:
                break
    finally:
        os.killpg(child.pid, signal.SIGKILL)
        child.wait()
    assert {name: (tmp_path / name).read_bytes() for name in before} == before


def test_run_fresh_deletes_only_what_the_earlier_run_wrote(fx, runner, tmp_path):
    """Case 7 (data loss): ``run --fresh`` on a folder that holds a run and a user's files deletes the
    run's entries (its run.json manifest) and nothing else, even when the new run then stops."""
    from deploykit.pipeline import PipelineConfig

    run = tmp_path / "run"
    (run / "baseline").mkdir(parents=True)
    (run / "baseline" / "model.pt").write_bytes(b"weights of an earlier run")
    (run / "budget-0.5").mkdir()
    (run / "notes.txt").write_text("my notes")
    (run / "mydata").mkdir()
    (run / "mydata" / "x").write_text("my data")
    (run / "run.json").write_text(json.dumps({"deploykit_run": 1, "started": "2026-01-01T00:00:00+00:00",
                                              "config": PipelineConfig(data="digits").as_dict(),
                                              "stages": {}, "outputs": ["baseline", "budget-0.5"]}))
    done = runner.run(["run", *RUN.split(), "--weights", str(fx / "w10.pt"), "--table", str(fx / "atto.csv"),
                       "--budgets", "0.01", "--fresh", "--out", str(run)], cwd=tmp_path)
    assert done.code == 2, done.stderr[-3000:]
    assert "budget 0.01" in error_line(done.stderr, progress=True)
    assert (run / "notes.txt").read_text() == "my notes" and (run / "mydata" / "x").read_text() == "my data"
    assert not (run / "budget-0.5").exists()
    assert (run / "baseline" / "model.pt").read_bytes() != b"weights of an earlier run"
    assert json.loads((run / "run.json").read_text())["outputs"] == ["baseline", "profile"]


class _FakeAgent:
    """An HTTP server that answers like a broken or hostile device agent: ``replies`` maps a path to
    (status, JSON body)."""

    def __init__(self, replies: dict[str, tuple[int, object]]):
        import http.server
        import threading

        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                status, body = outer.replies.get(self.path, (404, {"error": "no", "type": "ConfigError"}))
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args):
                pass

        self.replies = replies
        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


def _health() -> dict:
    from deploykit import __version__
    from deploykit.remote.wire import API_VERSION

    return {"ok": True, "deploykit_version": __version__, "api_version": API_VERSION, "tls": False,
            "max_upload_bytes": 1, "timeout_s": 1, "queued": 0, "measuring": None}


@pytest.mark.parametrize(("replies", "message"), [
    ({"/fingerprint": (200, {})}, "no usable machine fingerprint"),
    ({"/health": (500, {"error": "\x1b[31mred\x1b[0m " + "x" * 100_000, "type": "DeviceError"})}, "?[31mred"),
], ids=["empty-fingerprint", "huge-ansi-error"])
def test_device_shows_a_devices_text_sanitized_and_cut(fx, runner, tmp_path, replies, message):
    """Case 6: an empty fingerprint is one error line and exit 2; a device's error text reaches the
    terminal without escape sequences, cut short."""
    fake = _FakeAgent({"/health": (200, _health()), "/targets": (200, {"targets": []}), **replies})
    try:
        done = runner.run(["device", fake.url, "--token-file", str(fx / "token"), "--retries", "1"],
                          cwd=tmp_path)
    finally:
        fake.close()
    assert done.code == 2, done.stderr[-2000:]
    line = error_line(done.stderr, progress=False)
    assert message in line and "\x1b" not in done.stderr and len(line) < 1000
