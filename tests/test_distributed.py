"""The same command on 2 processes (torchrun, DDP over gloo on the CPU) follows a 1-process run with
the same global batch: same data per step, same gates, same losses and weights."""

import os
import subprocess
import sys

import pandas as pd
import pytest
import torch
from family_checks import active_model, drop_effect
from safetensors.torch import load_file

pytest.importorskip("sklearn")
pytestmark = pytest.mark.slow

COMMON = ["--data", "digits", "--input-size", "32", "--train-limit", "64", "--val-limit", "32",
          "--epochs", "1", "--batch-size", "16", "--log-steps", "--threads", "1", "--device", "cpu"]


DROPPED = (1, 4, 7)


@pytest.fixture(scope="module")
def original():
    """A convnext_atto whose blocks matter (random layer scales, not timm's 1e-6)."""
    return active_model("convnext_atto", num_classes=10)


@pytest.fixture(scope="module")
def weights(original, tmp_path_factory):
    path = tmp_path_factory.mktemp("weights") / "convnext_atto.pt"
    torch.save(original.state_dict(), path)
    return path


def launch(args, out, processes):
    command = [sys.executable, "-m", "deploykit.cli", "train", *args, *COMMON, "--out", str(out)]
    if processes > 1:
        command[1:3] = ["-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(processes),
                        "-m", "deploykit.cli"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    result = subprocess.run(command, capture_output=True, text=True, timeout=300, env=env)
    assert result.returncode == 0, result.stderr[-3000:]
    return pd.read_csv(out / "steps.csv", keep_default_na=False), result


def test_two_processes_match_one_exactly_without_batch_statistics(original, weights, tmp_path):
    """convnext_atto with blocks dropped has no BatchNorm: DDP must reproduce the 1-process run.

    The dropped blocks change the output by far more than float noise (checked first), so the
    student differs from its teacher and the distillation term is a real, positive loss that both
    runs must agree on."""
    assert drop_effect(original, DROPPED, (32, 32)) > 0.05
    args = ["subnet", "--prune", ",".join(map(str, DROPPED)), "--model", "convnext_atto",
            "--weights", str(weights), "--method", "drop"]
    one, _ = launch(args, tmp_path / "one", 1)
    two, result = launch(args, tmp_path / "two", 2)
    assert len(one) == len(two) == 4
    for column in ("loss", "ce", "kd"):
        assert two[column].tolist() == pytest.approx(one[column].tolist(), rel=1e-4, abs=1e-6)
    # The first step's KD is ~1.3e-3 here (small logits of a random head, softened at T = 2), the later
    # ones ~0.4: every one far above float noise (~1e-8) and the comparison's tolerance above.
    assert (one["kd"] > 1e-4).all()
    assert result.stdout.count("subnet (drop) top-1") == 1  # rank 0 alone reports and writes
    ours = load_file(str(tmp_path / "two" / "merged.safetensors"))
    theirs = load_file(str(tmp_path / "one" / "merged.safetensors"))
    assert ours.keys() == theirs.keys()
    gaps = torch.cat([(ours[key] - theirs[key]).abs().flatten() for key in theirs])
    # All but a few weights agree to float rounding. The few: AdamW divides a weight's gradient by its
    # own running magnitude, so where that gradient is ~0 the rounding of DDP's all-reduce (another
    # summation order) shows, bounded by a fraction of one step (lr 5e-4).
    assert (gaps <= 1e-6).float().mean() >= 0.999
    assert gaps.max() <= 1e-4


def test_two_processes_sample_the_same_supernet_gates(weights, tmp_path):
    """Every rank draws the same pruned set and λ per step. The pruned forms hold BatchNorms whose
    batch statistics come from each process's half batch (as with any DDP run without SyncBatchNorm),
    so losses agree closely but not exactly."""
    args = ["supernet", "--model", "convnext_atto", "--weights", str(weights), "--max-pruned", "4",
            "--ramp-epochs", "1"]
    one, _ = launch(args, tmp_path / "one", 1)
    two, _ = launch(args, tmp_path / "two", 2)
    for column in ("pruned", "lam", "lr"):
        assert two[column].tolist() == one[column].tolist()
    assert one["lam"].tolist() == [0.25, 0.5, 0.75, 1.0]
    assert two["loss"].tolist() == pytest.approx(one["loss"].tolist(), rel=0.05)
    assert (tmp_path / "two" / "supernet.pt").is_file()
