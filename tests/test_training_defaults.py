"""Training defaults live in deploykit/training/config.py only: `deploykit train` and the Python API
(train_baseline, train_supernet, train_subnet, and through them `deploykit run`) agree on every one."""

from __future__ import annotations

import argparse
from types import SimpleNamespace

import pytest
import timm

import deploykit.training as training
from deploykit.cli import build_parser, main
from deploykit.data import DataConfig
from deploykit.subnet import Subnet
from deploykit.training import baseline, progressive, supernet
from deploykit.training.config import (
    STAGES,
    DistillConfig,
    RunConfig,
    SubnetConfig,
    SupernetConfig,
    stage_optim,
)

# Option → the config field whose default it must show (per stage for the optimizer).
RUN_OPTIONS = ("epochs", "batch_size", "seed", "workers", "threads", "device", "eval_batch_size",
               "log_steps", "resume")
OPTIM_OPTIONS = ("lr", "weight_decay", "warmup_epochs")
DISTILL_OPTIONS = {"temperature": "temperature", "distill_weight": "weight"}
STAGE_OPTIONS = {"supernet": (SupernetConfig, ("max_pruned", "candidates", "ramp_epochs")),
                 "subnet": (SubnetConfig, ("method", "progressive_epochs"))}
DATA_OPTIONS = ("train_limit", "val_limit", "strict_images")
# Options that name inputs and outputs, not training settings.
NOT_SETTINGS = {"help", "data", "input_size", "model", "weights", "subnet", "prune", "out"}
REQUIRED = {"baseline": ["--model", "resnet10t"],
            "supernet": ["--model", "resnet10t", "--weights", "w.pt"],
            "subnet": ["--model", "resnet10t", "--weights", "w.pt", "--prune", "1"]}


def _stage_parser(stage: str) -> argparse.ArgumentParser:
    def subparsers(parser):
        return next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))

    return subparsers(subparsers(build_parser()).choices["train"]).choices[stage]


@pytest.mark.parametrize("stage", STAGES)
def test_every_train_option_defaults_to_its_config_field(stage):
    options = {a.dest: a.default for a in _stage_parser(stage)._actions}
    expected = {name: getattr(RunConfig, name) for name in RUN_OPTIONS}
    expected["no_amp"] = not RunConfig.amp
    expected.update({name: getattr(stage_optim(stage), name) for name in OPTIM_OPTIONS})
    expected.update({name: getattr(DataConfig, name) for name in DATA_OPTIONS})
    if stage != "baseline":
        expected.update({option: getattr(DistillConfig, field) for option, field in DISTILL_OPTIONS.items()})
        config, names = STAGE_OPTIONS[stage]
        expected.update({name: getattr(config, name) for name in names})
    unmapped = set(options) - set(expected) - NOT_SETTINGS
    assert not unmapped, f"train {stage} options with no config field to take their default from: {unmapped}"
    assert {name: options[name] for name in expected} == expected


class _Captured(Exception):
    def __init__(self, **seen):
        self.seen = seen


def _cli_configs(stage: str, monkeypatch, tmp_path) -> dict:
    """What `deploykit train STAGE` with only the required options passes to the Python API."""
    def capture(*args, **kwargs):
        raise _Captured(**kwargs)

    monkeypatch.setattr(training, f"train_{stage}", capture)
    monkeypatch.chdir(tmp_path)
    with pytest.raises(_Captured) as caught:
        main(["train", stage, "--data", "digits", *REQUIRED[stage]])
    return caught.value.seen


def _api_configs(stage: str, monkeypatch, tmp_path) -> dict:
    """What the Python API trains with when given no optimizer, distillation or stage config."""
    module = {"baseline": baseline, "supernet": supernet, "subnet": progressive}[stage]
    fake_ctx = SimpleNamespace(log=lambda line: None)

    class FakeStart:
        def __enter__(self):
            return fake_ctx, SimpleNamespace(num_classes=10)

        def __exit__(self, *exc):
            return False

    def capture(task, *, run, optim, **kwargs):
        raise _Captured(optim=optim, distill=task.distill, run=run)

    monkeypatch.setattr(module, "stage_data", lambda *args, **kwargs: FakeStart())
    monkeypatch.setattr(module, "original_model",
                        lambda name, **kwargs: timm.create_model(name, num_classes=10))
    monkeypatch.setattr(module, "fit", capture)
    data, run = DataConfig("digits"), RunConfig(out=tmp_path)
    with pytest.raises(_Captured) as caught:
        if stage == "baseline":
            baseline.train_baseline("resnet10t", data=data, run=run)
        elif stage == "supernet":
            supernet.train_supernet("resnet10t", weights="w.pt", data=data, run=run)
        else:
            progressive.train_subnet(Subnet(model="resnet10t", input_size=(32, 32), pruned=(1,)),
                                     weights="w.pt", data=data, run=run)
    return caught.value.seen


@pytest.mark.parametrize("stage", STAGES)
def test_cli_and_python_api_train_with_the_same_defaults(stage, monkeypatch, tmp_path):
    cli = _cli_configs(stage, monkeypatch, tmp_path)
    api = _api_configs(stage, monkeypatch, tmp_path)
    assert cli["optim"] == api["optim"] == stage_optim(stage)
    assert cli["run"] == RunConfig(out=cli["run"].out)
    if stage != "baseline":
        assert cli["distill"] == api["distill"] == DistillConfig()
        assert cli["config"] == STAGE_OPTIONS[stage][0]()


def test_training_from_scratch_warms_up_and_fine_tuning_does_not():
    scratch, tune = stage_optim("baseline"), stage_optim("subnet")
    assert scratch.warmup_epochs > 0 and tune.warmup_epochs == 0 and scratch.lr > tune.lr
    assert stage_optim("supernet") == tune
