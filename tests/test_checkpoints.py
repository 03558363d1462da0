"""The one weight loader: every checkpoint format users have, offline, nothing unpickled, one-line errors."""

from __future__ import annotations

import argparse
import json
import os

import pytest
import timm
import torch
from safetensors.torch import save_file
from timm.models._hub import save_config_for_hf

from deploykit.checkpoints import (
    PickledCodeError,
    load_model_weights,
    model_name,
    read_torch_file,
    read_weights,
)
from deploykit.errors import ConfigError, ModelError, one_line
from deploykit.models import create_model


@pytest.fixture(scope="module")
def trained():
    """A 10-class resnet18 standing in for a trained model, and a second set of weights for its EMA."""
    torch.manual_seed(0)
    model = timm.create_model("resnet18", num_classes=10)
    state = model.state_dict()
    ema = {key: value + 1 if value.is_floating_point() else value for key, value in state.items()}
    return state, ema


def _same(model, state) -> bool:
    return all(torch.equal(model.state_dict()[key], value) for key, value in state.items())


def _fresh():
    return timm.create_model("resnet18", num_classes=10)


def test_safetensors_files_load_whatever_their_name(trained, tmp_path):
    state, _ = trained
    for name in ("w.safetensors", "w.bin"):
        save_file(state, str(tmp_path / name))
        model = _fresh()
        assert load_model_weights(model, tmp_path / name) == []
        assert _same(model, state)


@pytest.mark.parametrize("key", [None, "state_dict", "model"])
def test_state_dicts_alone_or_under_state_dict_or_model(trained, tmp_path, key):
    state, _ = trained
    torch.save(state if key is None else {key: state, "epoch": 3}, tmp_path / "w.pt")
    model = _fresh()
    assert load_model_weights(model, tmp_path / "w.pt") == []
    assert _same(model, state)


def test_timm_training_checkpoints_prefer_the_ema_weights_and_say_so(trained, tmp_path):
    state, ema = trained
    checkpoint = {"epoch": 9, "arch": "resnet18", "version": 2, "metric": 71.2,
                  "args": argparse.Namespace(model="resnet18", lr=0.1, model_ema=True),  # pickled by timm
                  "optimizer": {"state": {}, "param_groups": [{"lr": 0.1, "params": [0, 1]}]},
                  "state_dict": state, "state_dict_ema": ema}
    torch.save(checkpoint, tmp_path / "last.pth.tar")
    model = _fresh()
    notes = load_model_weights(model, tmp_path / "last.pth.tar")
    assert _same(model, ema) and not _same(model, state)
    assert len(notes) == 1 and "EMA weights (state_dict_ema)" in notes[0] and "using the EMA" in notes[0]
    del checkpoint["state_dict_ema"]
    wrapped = {f"module.{key}": value for key, value in state.items()}
    torch.save({**checkpoint, "state_dict": wrapped}, tmp_path / "ddp.pth")
    model = _fresh()
    assert load_model_weights(model, tmp_path / "ddp.pth") == []  # DDP's module. prefix removed
    assert _same(model, state)


def _hf_folder(folder, state, *, num_classes=10, name="resnet18", weights_file="model.safetensors"):
    folder.mkdir(parents=True)
    save_config_for_hf(timm.create_model(name, num_classes=num_classes), str(folder / "config.json"))
    if weights_file.endswith(".safetensors"):
        save_file(state, str(folder / weights_file))
    else:
        torch.save(state, folder / weights_file)
    return folder


def test_hugging_face_folders_name_their_model(trained, tmp_path):
    state, _ = trained
    folder = _hf_folder(tmp_path / "hf", state)
    assert json.loads((folder / "config.json").read_text())["architecture"] == "resnet18"  # timm's format
    model = create_model(None, weights=folder)
    assert type(model).__name__ == "ResNet" and model.num_classes == 10 and _same(model, state)
    assert model_name(None, folder) == "resnet18"
    assert model_name("resnet18.a1_in1k", folder) == "resnet18.a1_in1k"  # a pretrained tag is no other model
    with pytest.raises(ModelError, match=r"convnext_atto disagrees with .*, which is for resnet18"):
        create_model("convnext_atto", weights=folder)
    other = _hf_folder(tmp_path / "bin", state, weights_file="pytorch_model.bin")
    assert _same(create_model("resnet18", weights=other), state)
    (tmp_path / "bare").mkdir()
    with pytest.raises(ModelError, match=r"has no config\.json"):
        create_model(None, weights=tmp_path / "bare")
    (tmp_path / "bare" / "config.json").write_text('{"architecture": "resnet18"}')
    with pytest.raises(ModelError, match=r"holds neither model\.safetensors nor pytorch_model\.bin"):
        create_model(None, weights=tmp_path / "bare")
    with pytest.raises(ModelError, match="no model name"):
        model_name(None, None)


def test_model_files_serve_as_weights_only_when_unpruned(trained, tmp_path):
    from deploykit.modelfile import ModelRecord, save_model

    state, _ = trained
    model = _fresh().eval()
    model.load_state_dict(state)
    path = save_model(model, tmp_path / "plain.safetensors", ModelRecord("resnet18", 10, (32, 32)))
    assert _same(create_model("resnet18", weights=path), state)
    pruned = ModelRecord("resnet18", 10, (32, 32), pruned=(1,))
    record = {"deploykit": json.dumps(pruned.as_dict())}
    save_file(state, str(tmp_path / "pruned.safetensors"), metadata=record)
    with pytest.raises(ModelError, match=r"is a pruned model \(blocks \[1\] merged or removed\)"):
        create_model("resnet18", weights=tmp_path / "pruned.safetensors")


def test_the_classifier_gets_the_class_count_of_the_weights(trained, tmp_path):
    state, _ = trained
    torch.save({"state_dict": state}, tmp_path / "ten.pt")
    notes = []
    model = create_model("resnet18", weights=tmp_path / "ten.pt", say=notes.append)
    assert model.num_classes == 10 and _same(model, state)
    assert notes == ["classifier built for 10 classes, as in ten.pt"]
    with pytest.raises(ModelError, match="has 10 classes but the data has 7; fine-tune it first"):
        create_model("resnet18", num_classes=7, weights=tmp_path / "ten.pt")
    wide = create_model("resnet18", num_classes=7, weights=tmp_path / "ten.pt", new_head=True)
    assert wide.num_classes == 7 and torch.equal(wide.conv1.weight, state["conv1.weight"])


def test_empty_truncated_and_junk_files_are_one_line_errors_that_never_suggest_unpickling(trained, tmp_path):
    state, _ = trained
    torch.save(state, tmp_path / "full.pt")
    save_file(state, str(tmp_path / "full.safetensors"))
    (tmp_path / "empty.pt").write_bytes(b"")
    (tmp_path / "cut.pt").write_bytes((tmp_path / "full.pt").read_bytes()[:5000])
    (tmp_path / "cut.safetensors").write_bytes((tmp_path / "full.safetensors").read_bytes()[:5000])
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint at all")
    cases = {"empty.pt": "is empty (0 bytes)", "cut.pt": "cannot read weights file",
             "cut.safetensors": "cannot read weights file", "junk.pt": "not a torch.save file of tensors"}
    for name, message in cases.items():
        with pytest.raises(ModelError) as caught:
            load_model_weights(_fresh(), tmp_path / name)
        text = str(caught.value)
        assert message in text and "\n" not in text and "weights_only" not in text, text
    with pytest.raises(ConfigError, match="is empty"):
        read_torch_file(tmp_path / "empty.pt", what="checkpoint", error=ConfigError)


def test_the_message_helper_copes_with_empty_messages():
    assert one_line(EOFError("")) == "EOFError"
    assert one_line(RuntimeError("first\n\nsecond\nthird")) == "first second"
    assert len(one_line(ValueError("x" * 500), 50)) == 50


class _Payload:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_a_crafted_pickle_runs_nothing_and_is_refused(tmp_path):
    marker = tmp_path / "ran"
    torch.save({"state_dict": {"w": torch.zeros(1)}, "x": _Payload(marker)}, tmp_path / "evil.pt")
    with pytest.raises(PickledCodeError, match=r"holds a pickled \w+\.system, not just tensors") as caught:
        read_weights(tmp_path / "evil.pt")
    assert not marker.exists()
    assert "weights_only" not in str(caught.value)
