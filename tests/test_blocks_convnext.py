import pytest
from family_checks import check_lambda0, check_merge_exact, check_onnx, make

from deploykit.errors import ModelError

SIZES = [(64, 64), (96, 128)]


@pytest.mark.parametrize("model_name", ["convnext_atto", "convnext_tiny"])
def test_lambda0_reproduces_original(model_name):
    check_lambda0(model_name, (64, 64))


@pytest.mark.parametrize("model_name", ["convnext_atto", "convnext_femto", "convnext_tiny"])
@pytest.mark.parametrize("size", SIZES)
def test_merge_is_exact(model_name, size):
    check_merge_exact(model_name, size)


def test_merge_is_exact_for_both_mlp_layouts():
    # convnext_atto uses 1×1-conv MLPs (conv_mlp=True); convnext_tiny uses Linear MLPs.
    for conv_mlp in (True, False):
        check_merge_exact("convnext_atto", (64, 64), conv_mlp=conv_mlp)
        check_lambda0("convnext_atto", (64, 64), conv_mlp=conv_mlp)


def test_onnx_matches_pytorch(tmp_path):
    check_onnx("convnext_atto", (64, 96), tmp_path)


def test_grn_blocks_are_refused_with_the_reason():
    with pytest.raises(ModelError, match="no prunable block: GlobalResponseNorm"):
        make("convnextv2_atto", (64, 64))
