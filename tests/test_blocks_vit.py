import inspect
import pickle
from functools import partial

import numpy as np
import pytest
import torch
from family_checks import (
    check_lambda0,
    check_merge_exact,
    check_onnx,
    make,
    merged_pair,
    randomize_,
    rel_error,
)
from timm.layers import Attention, DiffAttention, GluMlp, LayerScale, Mlp, RmsNorm, SwiGLU
from timm.models import vision_transformer as tvit

from deploykit.blocks.registry import family_of
from deploykit.blocks.vit import ViTPrunable
from deploykit.errors import ModelError
from deploykit.macs import count_macs

# deit_tiny and vit_tiny are tested in full below; the others get a structural check and one merge.
VARIANTS = ["deit_small_patch16_224", "deit_base_patch16_224", "vit_small_patch16_224",
            "vit_base_patch16_224", "vit_small_patch32_224", "deit_tiny_distilled_patch16_224"]


@pytest.mark.parametrize(("model_name", "size", "kwargs"), [
    ("deit_tiny_patch16_224", 224, {}),
    ("vit_tiny_patch16_224", 160, {"dynamic_img_size": True, "init_values": 1e-5, "drop_path_rate": 0.2,
                                   "depth": 2}),
    ("deit_tiny_distilled_patch16_224", 224, {"depth": 2}),
])
def test_lambda0_reproduces_original(model_name, size, kwargs):
    check_lambda0(model_name, (size, size), **kwargs)


@pytest.mark.parametrize(("model_name", "size", "kwargs"), [
    ("deit_tiny_patch16_224", 224, {}),
    ("deit_tiny_patch16_224", 160, {"dynamic_img_size": True, "depth": 2}),
    ("vit_tiny_patch16_224", 224, {"init_values": 1e-5, "depth": 2}),
    ("vit_tiny_patch16_224", 160, {"img_size": 160, "init_values": 1e-5, "depth": 2}),
])
def test_merge_is_exact(model_name, size, kwargs):
    check_merge_exact(model_name, (size, size), **kwargs)


@pytest.mark.parametrize("model_name", VARIANTS)
def test_every_variant_is_prunable_and_merges_exactly(model_name):
    # One block of each variant: the same block (width, heads, tokens) as in the full model at a
    # fraction of the build time.
    _, net = make(model_name, (224, 224), depth=1)
    assert [(info.family, info.prunable) for info in net.blocks] == [("vit", True)]
    assert net.blocks[0].merged_macs < net.blocks[0].macs
    net.prune([0]).set_progress(1.0)
    randomize_(net, seed=3)
    net.eval()
    x = torch.randn(1, 3, 224, 224, generator=torch.Generator().manual_seed(4))
    with torch.no_grad():
        assert rel_error(net(x), net.merge()(x)) <= 1e-4


def test_layer_scale_is_randomized_by_the_shared_checks():
    model, _ = make("vit_tiny_patch16_224", (224, 224), init_values=1e-5, depth=1)
    gammas = [m.gamma for m in model.modules() if isinstance(m, LayerScale)]
    assert len(gammas) == 2 and all(g.min() > 0.1 for g in gammas)


def test_onnx_matches_pytorch(tmp_path):
    check_onnx("vit_tiny_patch16_224", (160, 160), tmp_path, dynamic_img_size=True, init_values=1e-5,
               depth=2)


@pytest.mark.openvino
def test_openvino_matches_pytorch(tmp_path):
    ov = pytest.importorskip("openvino", reason="the openvino package is not installed")
    _, merged = merged_pair("deit_tiny_distilled_patch16_224", (224, 224), depth=2)
    x = torch.randn(1, 3, 224, 224, generator=torch.Generator().manual_seed(5))
    path = tmp_path / "vit.onnx"
    torch.onnx.export(merged, (x,), str(path), dynamo=True, verbose=False)
    # OpenVINO CPU runs fp32 models in bf16 where the CPU has it, unless told otherwise.
    compiled = ov.Core().compile_model(str(path), "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
    out = np.asarray(compiled(x.numpy())[0])
    with torch.no_grad():
        expected = merged(x)
    assert rel_error(expected, torch.from_numpy(out)) <= 1e-4


def test_merged_macs_are_what_the_blocks_report():
    model, net = make("deit_tiny_patch16_224", (224, 224))
    chosen = [0, 3, 5, 11]
    merged = net.prune(chosen).set_progress(1.0).eval().merge()
    saved = sum(net.blocks[i].macs - net.blocks[i].merged_macs for i in chosen)
    assert saved > 0
    assert count_macs(model, (3, 224, 224)) - count_macs(merged, (3, 224, 224)) == saved


def test_merged_model_pickles_and_scripts():
    _, merged = merged_pair("vit_tiny_patch16_224", (224, 224), init_values=1e-5, depth=2)
    x = torch.randn(2, 3, 224, 224)
    tokens = torch.randn(2, 197, 192)
    with torch.no_grad():
        expected = merged(x)
        assert rel_error(expected, pickle.loads(pickle.dumps(merged))(x)) == 0.0
        block = merged.blocks[0]
        assert rel_error(block(tokens), torch.jit.script(block)(tokens)) <= 1e-6
    assert type(block).__name__ == "MergedViTBlock"
    assert {type(m).__module__.split(".")[0] for m in merged.modules()} <= {"torch", "timm"}


def _single_block(block: tvit.Block, tokens: int = 10):
    """A randomized block wrapped alone, with a token batch for it."""
    torch.manual_seed(0)
    randomize_(block)
    wrapper = ViTPrunable(block, (tokens, block.norm1.normalized_shape[0]))
    x = torch.randn(3, tokens, block.norm1.normalized_shape[0])
    return wrapper, x


def _pruned_at_one(wrapper: ViTPrunable) -> ViTPrunable:
    wrapper.pruned = True
    wrapper.set_progress(1.0)
    randomize_(wrapper, seed=3)
    return wrapper.eval()


def test_attention_mask_passes_through_every_form():
    wrapper, x = _single_block(tvit.Block(32, num_heads=4, qkv_bias=True, init_values=0.5))
    mask = torch.randn(3, 1, 10, 10)
    wrapper.pruned = True
    expected = wrapper.block(x, attn_mask=mask)
    assert rel_error(expected, wrapper(x, attn_mask=mask)) <= 1e-6
    with torch.no_grad():
        _pruned_at_one(wrapper)
        assert rel_error(wrapper(x, attn_mask=mask), wrapper.merged()(x, attn_mask=mask)) <= 1e-5
        assert rel_error(wrapper(x, is_causal=True), wrapper.merged()(x, is_causal=True)) <= 1e-5


def test_gated_attention_without_bias_merges_exactly():
    if "gated" not in inspect.signature(Attention).parameters:
        pytest.skip("this timm's Attention has no gate")
    block = tvit.Block(32, num_heads=4, qkv_bias=False, proj_bias=False)
    block.attn = Attention(32, num_heads=4, gated=True)
    wrapper, x = _single_block(block.double())
    x = x.double()
    with torch.no_grad():
        _pruned_at_one(wrapper)
        assert rel_error(wrapper(x), wrapper.merged()(x)) <= 1e-12


@pytest.mark.parametrize(("make_block", "reason"), [
    (partial(tvit.Block, qk_norm=True), "qk_norm"),
    (partial(tvit.Block, scale_attn_norm=True), "norm inside attention"),
    (partial(tvit.Block, scale_mlp_norm=True), "norm inside the MLP"),
    (partial(tvit.Block, mlp_layer=SwiGLU), "SwiGLU is not fc1"),
    (partial(tvit.Block, mlp_layer=GluMlp), "GluMlp is not fc1"),
    (partial(tvit.Block, mlp_layer=partial(Mlp, use_conv=True)), "1×1 convs"),
    (partial(tvit.Block, norm_layer=RmsNorm), "norm1 is RmsNorm, not LayerNorm"),
    (partial(tvit.Block, attn_layer=DiffAttention), "DiffAttention is not timm's Attention"),
    (tvit.ParallelScalingBlock, "parallel block"),
    (tvit.ParallelThingsBlock, "parallel block"),
    (tvit.ResPostBlock, "post-norm"),
])
def test_unsupported_blocks_are_listed_with_the_reason(make_block, reason):
    block = make_block(32, num_heads=4)
    assert family_of(block) is ViTPrunable
    assert reason in ViTPrunable.unsupported_reason(block, (10, 32))


def test_supported_block_has_no_reason():
    assert ViTPrunable.unsupported_reason(tvit.Block(32, num_heads=4, init_values=1e-5), (10, 32)) is None


def test_models_with_only_unsupported_blocks_are_refused_with_the_reason():
    with pytest.raises(ModelError, match="no prunable block: q/k normalization"):
        make("vit_tiny_patch16_224", (224, 224), qk_norm=True, depth=1)
