"""The two exactness invariants of docs/method.md, written once and used by every family's tests."""

from __future__ import annotations

import copy

import numpy as np
import timm
import torch
from torch import nn

from deploykit import prunable
from deploykit.blocks.base import PrunableBlock


def randomize_(model: nn.Module, seed: int = 0) -> nn.Module:
    """Give every norm random statistics and affine, and every layer scale random values.

    Fresh timm models have trivial BN statistics and γ ≈ 1e-6, which would hide folding errors.
    """
    gen = torch.Generator().manual_seed(seed)

    def rand(t, low, high):
        return torch.rand(t.shape, generator=gen, dtype=t.dtype) * (high - low) + low

    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, nn.modules.batchnorm._BatchNorm):
                module.running_mean.copy_(rand(module.running_mean, -0.5, 0.5))
                module.running_var.copy_(rand(module.running_var, 0.5, 2.0))
            for pname in ("weight", "bias"):
                param = getattr(module, pname, None)
                if isinstance(module, (nn.modules.batchnorm._BatchNorm, nn.LayerNorm, nn.GroupNorm)) \
                        and isinstance(param, torch.Tensor):
                    param.copy_(rand(param, 0.6, 1.4) if pname == "weight" else rand(param, -0.3, 0.3))
            for pname, param in module.named_parameters(recurse=False):
                if pname in ("gamma",) or pname.startswith("gamma"):
                    param.copy_(rand(param, 0.2, 1.0))
    return model


def active_model(model_name: str, seed: int = 0, **kwargs) -> nn.Module:
    """A timm model standing in for a trained original whose blocks matter (:func:`randomize_`):
    a fresh ConvNeXt's blocks are near identities (γ = 1e-6), so pruning or dropping them would
    change nothing and a test of it would prove nothing."""
    torch.manual_seed(seed)
    return randomize_(timm.create_model(model_name, pretrained=False, **kwargs), seed)


def drop_effect(model: nn.Module, indices, size: tuple[int, int], seed: int = 0) -> float:
    """How much replacing the blocks ``indices`` by identities changes ``model``'s output in eval mode
    (max abs change relative to the output scale): a test asserts it is large before trusting a
    comparison that involves those blocks."""
    from deploykit.training.build import dropped

    net = prunable(model, input_size=size)
    x = torch.randn(4, 3, *size, generator=torch.Generator().manual_seed(seed))
    was_training = model.training
    with torch.no_grad():
        error = rel_error(model.eval()(x), dropped(model, net, tuple(indices)).eval()(x))
    model.train(was_training)
    return error


def rel_error(reference: torch.Tensor, other: torch.Tensor) -> float:
    """Max abs error relative to the output scale (max |reference|)."""
    reference, other = reference.detach().double(), other.detach().double()
    return ((reference - other).abs().max() / reference.abs().max().clamp_min(1e-12)).item()


def make(model_name: str, size: tuple[int, int], seed: int = 0, **kwargs):
    torch.manual_seed(seed)
    model = randomize_(timm.create_model(model_name, pretrained=False, **kwargs), seed)
    return model, prunable(model, input_size=size)


def check_lambda0(model_name: str, size: tuple[int, int], tol: float = 1e-6, **kwargs) -> None:
    """λ = 0 with every prunable block pruned reproduces the original, in train and in eval mode."""
    model, net = make(model_name, size, **kwargs)
    net.prune(net.prunable_indices)
    x = torch.randn(2, 3, *size, generator=torch.Generator().manual_seed(1))
    for training in (False, True):
        model.train(training)
        net.train(training)
        torch.manual_seed(2)
        expected = model(x)
        torch.manual_seed(2)
        actual = net(x)
        assert rel_error(expected, actual) <= tol, (model_name, training, rel_error(expected, actual))


def pruned_net(model_name: str, size: tuple[int, int], indices=None, **kwargs):
    """A net with the given (default: all) blocks pruned at λ = 1 and trained-looking new BNs."""
    _, net = make(model_name, size, **kwargs)
    net.prune(net.prunable_indices if indices is None else indices).set_progress(1.0)
    return randomize_(net, seed=3).eval()


def merged_pair(model_name: str, size: tuple[int, int], dtype=torch.float32, indices=None, **kwargs):
    """(unmerged pruned net at λ = 1, merged module), both in eval mode."""
    net = pruned_net(model_name, size, indices, **kwargs).to(dtype)
    return net, net.merge()


def check_merge_exact(model_name: str, size: tuple[int, int], **kwargs) -> None:
    """λ = 1, eval: the merged network equals the unmerged pruned one (fp32 ≤ 1e-4, fp64 ≤ 1e-9)."""
    base = pruned_net(model_name, size, **kwargs)
    for dtype, tol in ((torch.float32, 1e-4), (torch.float64, 1e-9)):
        net = copy.deepcopy(base).to(dtype)
        merged = net.merge()
        x = torch.randn(2, 3, *size, dtype=dtype, generator=torch.Generator().manual_seed(4))
        with torch.no_grad():
            error = rel_error(net(x), merged(x))
        assert error <= tol, (model_name, size, dtype, error)
        assert not any(isinstance(m, PrunableBlock) for m in merged.modules())
        assert all(not type(m).__module__.startswith("deploykit") for m in merged.modules())


def check_onnx(model_name: str, size: tuple[int, int], tmp_path, tol: float = 1e-4, **kwargs) -> None:
    """The merged model exported to ONNX and run in onnxruntime matches PyTorch."""
    import onnxruntime as ort

    _, merged = merged_pair(model_name, size, **kwargs)
    x = torch.randn(1, 3, *size, generator=torch.Generator().manual_seed(5))
    path = tmp_path / f"{model_name}.onnx"
    torch.onnx.export(merged, (x,), str(path), dynamo=True, verbose=False)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    out = session.run(None, {session.get_inputs()[0].name: x.numpy()})[0]
    with torch.no_grad():
        expected = merged(x)
    assert rel_error(expected, torch.from_numpy(np.asarray(out))) <= tol
