"""Creating timm models without network access, with clear errors for bad names and weights."""

from __future__ import annotations

import difflib
from pathlib import Path

import torch
from torch import nn

from deploykit.errors import DeployKitError, ModelError


def create_model(name: str, *, weights: str | Path | None = None,
                 input_size: tuple[int, int] | None = None, **kwargs) -> nn.Module:
    """``timm.create_model(name, pretrained=False)``, then load a local ``weights`` file if given.

    ``input_size`` matters only for models built for one resolution (ViT/DeiT patch embedding):
    they are built for that size (position embeddings resampled by timm), CNNs ignore it.
    """
    import timm

    require_known_model(name)
    model = timm.create_model(name, pretrained=False, **kwargs)
    fixed = getattr(getattr(model, "patch_embed", None), "img_size", None)
    if input_size is not None and fixed is not None and tuple(fixed) != tuple(input_size):
        model = timm.create_model(name, pretrained=False, img_size=tuple(input_size), **kwargs)
    if weights is not None:
        load_weights(model, weights)
    return model


def require_known_model(name: str) -> None:
    """A ModelError (with close names) unless timm knows ``name``."""
    import timm

    if not timm.is_model(name):
        raise ModelError(f"unknown model {name!r}{_suggest(name, timm.list_models())}; "
                         "see `timm.list_models()` for every name")


def read_torch_file(path: str | Path, *, what: str = "weights file",
                    error: type[DeployKitError] = ModelError):
    """``torch.load`` of a local file (tensors only); a one-line ``error`` if it is absent or unreadable."""
    path = Path(path)
    if not path.is_file():
        raise error(f"{what} not found: {path}")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as failure:  # torch raises several types for unreadable files
        raise error(f"cannot read {what} {path}: {str(failure).splitlines()[0][:200]}") from None


def load_weights(model: nn.Module, path: str | Path) -> None:
    """Load a local checkpoint (a state dict, or a dict holding one under ``state_dict``/``model``)."""
    path = Path(path)
    state = read_torch_file(path)
    for key in ("state_dict", "model"):
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as error:
        first = str(error).strip().splitlines()
        raise ModelError(f"weights in {path} do not fit the model: {' '.join(first[:3])[:400]}") from None


def _suggest(name: str, candidates: list[str]) -> str:
    close = difflib.get_close_matches(name, candidates, n=3, cutoff=0.6)
    return f" (did you mean {', '.join(close)}?)" if close else ""
