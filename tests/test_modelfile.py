"""Model files: merged models as safetensors + architecture record, rebuilt exactly without unpickling."""

from __future__ import annotations

import json

import pytest
import torch
from family_checks import merged_pair, randomize_, rel_error
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from deploykit.errors import BlockSelectionError, ConfigError, ModelError
from deploykit.modelfile import (
    FORMAT,
    RECORD_KEY,
    ModelRecord,
    build_structure,
    convert_model,
    infer_record,
    load_model,
    load_module,
    read_record,
    save_model,
)

SIZE = (32, 32)


def _outputs(module, seed=5):
    x = torch.randn(3, 3, *SIZE, generator=torch.Generator().manual_seed(seed))
    with torch.no_grad():
        return module.eval()(x)


@pytest.fixture(scope="module")
def convnext(tmp_path_factory):
    """convnext_atto with blocks 1 and 4 merged; layer scale, norms and BN statistics randomized, so
    that the merged blocks change the outputs (a fresh ConvNeXt's blocks are ≈ identities)."""
    net, merged = merged_pair("convnext_atto", SIZE, indices=[1, 4], num_classes=10)
    path = tmp_path_factory.mktemp("modelfile") / "merged.safetensors"
    record = ModelRecord("convnext_atto", num_classes=10, input_size=SIZE, pruned=(1, 4))
    save_model(merged, path, record)
    return net, merged, path, record


def test_merged_convnext_round_trip_reproduces_the_outputs_exactly(convnext):
    net, merged, path, record = convnext
    loaded = load_model(path)
    assert torch.equal(_outputs(loaded), _outputs(merged))
    assert rel_error(_outputs(net), _outputs(loaded)) <= 1e-4  # the merged net is the trained one
    original = net.model  # same weights, blocks 1 and 4 back to their original form
    for index in (1, 4):
        original.set_submodule(net.blocks[index].name, net.wrapper(index).block)
    assert rel_error(_outputs(original), _outputs(loaded)) > 1e-2  # the merged blocks matter here
    assert read_record(path) == record
    assert not any(type(m).__module__.startswith("deploykit") for m in loaded.modules())


def test_the_record_is_plain_json_in_the_safetensors_header(convnext):
    _, merged, path, _ = convnext
    with safe_open(str(path), framework="pt") as handle:
        data = json.loads(handle.metadata()[RECORD_KEY])
    assert data == {"format": FORMAT, "model": "convnext_atto", "num_classes": 10, "input_size": [32, 32],
                    "pruned": [1, 4], "dropped": [], "in_chans": 3,
                    "deploykit_version": data["deploykit_version"]}
    tensors = load_file(str(path))
    assert tensors.keys() == merged.state_dict().keys()
    assert not list(path.parent.glob(".*.tmp"))  # written atomically, nothing left behind


@pytest.mark.slow
def test_resnet_with_merged_and_dropped_blocks_and_a_prunable_net(tmp_path):
    net, merged = merged_pair("resnet18", SIZE, indices=[1, 5], num_classes=7)
    merged.layer2[1] = torch.nn.Identity()  # block 3 dropped outright (plain depth pruning)
    record = ModelRecord("resnet18", num_classes=7, input_size=SIZE, pruned=(1, 5), dropped=(3,))
    assert infer_record(merged, input_size=SIZE) == record
    loaded = load_model(save_model(merged, tmp_path / "r.safetensors", record))
    assert torch.equal(_outputs(loaded), _outputs(merged))
    assert isinstance(loaded.layer2[1], torch.nn.Identity)
    save_model(net, tmp_path / "net.safetensors")  # a PrunableNet is merged; its record read off it
    assert read_record(tmp_path / "net.safetensors").pruned == (1, 5)
    assert torch.equal(_outputs(load_model(tmp_path / "net.safetensors")), _outputs(net.merge()))


def test_unpruned_model_round_trip(tmp_path):
    import timm

    torch.manual_seed(0)
    model = randomize_(timm.create_model("resnet18", num_classes=5)).eval()
    path = save_model(model, tmp_path / "plain.safetensors", input_size=SIZE)
    assert read_record(path) == ModelRecord("resnet18", num_classes=5, input_size=SIZE)
    assert torch.equal(_outputs(load_model(path)), _outputs(model))


def test_a_record_that_does_not_describe_the_module_writes_nothing(convnext, tmp_path):
    _, merged, _, _ = convnext
    wrong = ModelRecord("convnext_atto", num_classes=10, input_size=SIZE, pruned=(1, 5))
    with pytest.raises(ModelError, match=r"does not match its record .*missing stages"):
        save_model(merged, tmp_path / "x.safetensors", wrong)
    with pytest.raises(ModelError, match=r"head\.fc\.weight has shape"):
        save_model(merged, tmp_path / "x.safetensors", ModelRecord("convnext_atto", 9, SIZE, (1, 4)))
    assert not list(tmp_path.iterdir())


def _rewrite(path, out, *, tensors=None, record=None):
    with safe_open(str(path), framework="pt") as handle:
        metadata = handle.metadata()
    if record is not None:
        metadata = {**metadata, RECORD_KEY: record} if record else {"format": "pt"}
    save_file(tensors if tensors is not None else load_file(str(path)), str(out), metadata=metadata)
    return out


def test_tensors_are_loaded_strictly_with_one_line_errors(convnext, tmp_path):
    _, _, path, _ = convnext
    tensors = load_file(str(path))
    fewer = {k: v for k, v in tensors.items() if k != "head.fc.bias"}
    with pytest.raises(ModelError, match=r"does not fit its record .*missing head\.fc\.bias; unexpected no"):
        load_model(_rewrite(path, tmp_path / "a.safetensors", tensors=fewer))
    more = {**tensors, "extra.weight": torch.zeros(2)}
    with pytest.raises(ModelError, match=r"unexpected extra\.weight"):
        load_model(_rewrite(path, tmp_path / "b.safetensors", tensors=more))
    reshaped = {**tensors, "head.fc.bias": torch.zeros(11)}
    with pytest.raises(ModelError, match=r"head.fc.bias has shape \(11,\), the architecture \(10,\)"):
        load_model(_rewrite(path, tmp_path / "c.safetensors", tensors=reshaped))


@pytest.mark.parametrize("record, message", [
    ("", "holds tensors but no deploykit architecture record"),
    ("{", "the model record is not valid JSON"),
    ('{"format": "deploykit-model/9", "model": "x"}', "format 'deploykit-model/9' is not"),
    (json.dumps({"format": FORMAT, "model": "convnext_atto", "num_classes": 10, "input_size": [32, 32],
                 "colour": "red"}), r"unknown \['colour'\]"),
    (json.dumps({"format": FORMAT, "model": "convnext_atto", "num_classes": 10, "input_size": [32, 32],
                 "pruned": [1, 1]}), "lists a block twice"),
    (json.dumps({"format": FORMAT, "model": "convnext_atto", "num_classes": True, "input_size": [32, 32]}),
     "num_classes must be an integer"),
    (json.dumps({"format": FORMAT, "model": "convnext_atto", "num_classes": 10, "input_size": [32, 32],
                 "pruned": [1], "dropped": [1]}), "both pruned and dropped"),
])
def test_bad_records_are_one_line_model_errors(convnext, tmp_path, record, message):
    _, _, path, _ = convnext
    with pytest.raises(ModelError, match=message):
        load_model(_rewrite(path, tmp_path / "bad.safetensors", record=record))


def test_records_naming_blocks_that_do_not_exist_are_errors():
    with pytest.raises(BlockSelectionError, match="block index 40 is out of range"):
        build_structure(ModelRecord("convnext_atto", 10, SIZE, pruned=(40,)))
    with pytest.raises(ModelError, match="dropped block 40 is out of range"):
        build_structure(ModelRecord("convnext_atto", 10, SIZE, dropped=(40,)))
    with pytest.raises(ModelError, match="unknown model 'convnext_attoo'"):
        build_structure(ModelRecord("convnext_attoo", 10, SIZE))


def test_load_module_takes_model_files_names_and_refuses_pickles(convnext, tmp_path):
    _, merged, path, record = convnext
    loaded = load_module(path)
    assert loaded.record == record and "merged blocks [1, 4]" in loaded.description
    assert torch.equal(_outputs(loaded.module), _outputs(merged))
    with pytest.raises(ConfigError, match="--weights goes with a timm model name"):
        load_module(path, weights=path)
    torch.save(merged, tmp_path / "whole.pt")
    with pytest.raises(ModelError, match=r"is a pickled torch.fx.graph_module|is a pickled timm"):
        load_module(tmp_path / "whole.pt")
    unpickled = load_module(tmp_path / "whole.pt", unsafe_pickle=True).module
    assert torch.equal(_outputs(unpickled), _outputs(merged))
    out, converted = convert_model(tmp_path / "whole.pt", tmp_path / "converted.safetensors", input_size=SIZE,
                                   unsafe_pickle=True)
    assert converted == record and torch.equal(_outputs(load_model(out)), _outputs(merged))
    torch.save(merged.state_dict(), tmp_path / "sd.pt")
    with pytest.raises(ModelError, match="holds weights, not a model: pass the timm model name"):
        load_module(tmp_path / "sd.pt")
    save_file(merged.state_dict(), str(tmp_path / "sd.safetensors"))
    with pytest.raises(ModelError, match="no deploykit architecture record"):
        load_module(tmp_path / "sd.safetensors")
