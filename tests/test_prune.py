"""PrunableNet API: selection, progress, merge refusals, MACs accounting."""

import pytest
import timm
import torch
from family_checks import active_model

from deploykit import prunable
from deploykit.errors import BlockSelectionError, MergeError, ModelError
from deploykit.macs import count_macs
from deploykit.models import create_model


@pytest.fixture(scope="module")
def net():
    return prunable(timm.create_model("convnext_atto", pretrained=False), input_size=(64, 64))


def test_block_list(net):
    assert [b.index for b in net.blocks] == list(range(len(net.blocks)))
    first = net.blocks[0]
    assert first.name == "stages.0.blocks.0" and first.family == "convnext"
    assert first.in_shape == (40, 16, 16) == first.out_shape
    assert first.prunable and first.reason == ""
    assert 0 < first.merged_macs < first.macs


def test_prune_and_progress(net):
    net.prune([0, 3])
    assert net.pruned == (0, 3)
    net.set_progress(0.5)
    assert net.progress() == {0: 0.5, 3: 0.5}
    net.set_progress({3: 1.0})
    assert net.progress() == {0: 0.5, 3: 1.0}
    net.prune([3])
    assert net.pruned == (3,) and net.progress() == {3: 1.0}


@pytest.mark.parametrize("indices,match", [
    ([99], "out of range: this model has blocks 0..11"),
    ([-1], "out of range"),
    (["2"], "out of range"),
])
def test_bad_indices(net, indices, match):
    with pytest.raises(BlockSelectionError, match=match):
        net.prune(indices)


def test_bad_progress(net):
    net.prune([1])
    with pytest.raises(BlockSelectionError, match=r"within \[0, 1\]"):
        net.set_progress(1.5)
    with pytest.raises(BlockSelectionError, match="block 2 is not pruned"):
        net.set_progress({2: 1.0})


def test_merge_refusals(net):
    net.prune([1]).set_progress(0.5)
    net.train()
    with pytest.raises(MergeError, match="eval mode"):
        net.merge()
    net.eval()
    with pytest.raises(MergeError, match=r"λ = 1 on every pruned block; not yet at 1: 1: λ=0\.5"):
        net.merge()


def test_not_prunable_block_is_refused_with_reason():
    # At an odd input size the avg-pool shortcuts of resnet18d's stride-2 blocks have partial windows.
    net = prunable(timm.create_model("resnet18d", pretrained=False), input_size=(65, 65))
    refused = [b for b in net.blocks if not b.prunable]
    assert [b.index for b in refused] == [2, 4, 6]
    assert all("odd input size" in b.reason for b in refused)
    with pytest.raises(BlockSelectionError, match=r"block 2 \(layer2.0\) cannot be pruned: odd input size"):
        net.prune([0, 2])
    assert net.pruned == ()


def test_unknown_model_and_model_without_blocks():
    with pytest.raises(ModelError, match=r"unknown model 'convnext_tinny'.*did you mean convnext_tiny"):
        create_model("convnext_tinny")
    with pytest.raises(ModelError, match="no block of a supported family"):
        prunable(torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3)), input_size=32)


def test_merging_all_blocks_of_convnext_tiny_cuts_macs_as_reported():
    model = timm.create_model("convnext_tiny", pretrained=False)
    net = prunable(model, input_size=(64, 64))
    net.prune(net.prunable_indices).set_progress(1.0)
    merged = net.eval().merge()
    reported = sum(b.macs - b.merged_macs for b in net.blocks if b.prunable)
    measured = count_macs(model, (3, 64, 64)) - count_macs(merged, (3, 64, 64))
    assert reported == measured > 0


def test_merged_model_has_no_deploykit_class_and_original_untouched():
    model = active_model("convnext_atto").eval()  # blocks that matter: a change to them would show
    x = torch.randn(1, 3, 64, 64)
    before = model(x)
    net = prunable(model, input_size=64)
    net.prune([0, 5]).set_progress(1.0)
    merged = net.eval().merge()
    assert all(not type(m).__module__.startswith("deploykit") for m in merged.modules())
    assert torch.equal(model(x), before)
    restored = torch.jit.script(merged)
    assert torch.allclose(restored(x), merged(x))
