"""Loading the PyTorch model that verify compares an ONNX file with."""

from __future__ import annotations

import os
from pathlib import Path

from deploykit.errors import ConfigError, ModelError


def load_module(spec: str | Path, *, weights: str | Path | None = None,
                input_size: tuple[int, int] | None = None):
    """A PyTorch module from a whole-module ``torch.save`` file (unpickled: trusted files only) or a
    timm model name (random weights unless ``weights`` names a state-dict file). Returns
    ``(module, description)``."""
    import torch
    from torch import nn

    text = str(spec)
    path = Path(text).expanduser()
    if path.is_file():
        if weights is not None:
            raise ConfigError("--weights goes with a timm model name, not with a checkpoint file "
                              f"({path} holds the whole module)")
        try:
            module = torch.load(path, map_location="cpu", weights_only=False)
        except Exception as error:  # torch raises several types for unreadable files
            raise ModelError(f"cannot load {path} as a torch.save'd module: "
                             f"{_one_line(error)}") from None
        if not isinstance(module, nn.Module):
            raise ModelError(f"{path} holds a {type(module).__name__}, not a whole nn.Module "
                             "(a state dict goes with a timm model name and --weights)")
        return module.float().eval(), str(path)
    if os.sep in text or text.endswith((".pt", ".pth", ".bin", ".ckpt")):
        raise ModelError(f"checkpoint file not found: {path}")
    from deploykit.models import create_model

    module = create_model(text, weights=weights, input_size=input_size)
    return module.eval(), text + (f" + {weights}" if weights else " (random weights)")


def _one_line(error: BaseException, limit: int = 300) -> str:
    lines = [line.strip() for line in str(error).strip().splitlines() if line.strip()]
    text = " ".join(lines[:2]) if lines else type(error).__name__
    return text[:limit]
