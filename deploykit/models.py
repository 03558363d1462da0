"""Creating timm models without network access, with clear errors for bad names and weights."""

from __future__ import annotations

import difflib
from pathlib import Path
from typing import Any

from torch import nn

from deploykit.checkpoints import head_classes, load_model_weights, model_name, read_weights
from deploykit.errors import ModelError, one_line
from deploykit.progress import Progress, silent


def create_model(name: str | None, *, weights: str | Path | None = None,
                 input_size: tuple[int, int] | None = None, num_classes: int | None = None,
                 new_head: bool = False, say: Progress | None = None, **kwargs) -> nn.Module:
    """``timm.create_model(name, pretrained=False)``, then the local ``weights`` if given.

    ``weights`` is anything :mod:`deploykit.checkpoints` reads (a file, a Hugging Face-style folder,
    ``package:NAME``); ``name`` may be None when a folder's ``config.json`` names the model. Without
    ``num_classes``, the classifier is built for the class count of the weights; with it, a different
    count is re-initialized (``new_head``) or an error. ``say`` receives notes for the user (EMA
    weights used, tensors matched by position, …).

    ``input_size`` matters only for models built for one resolution (ViT/DeiT patch embedding):
    they are built for that size (position embeddings resampled by timm), CNNs ignore it.
    """
    name = model_name(name, weights)
    if weights is None:
        return _build(name, input_size=input_size, num_classes=num_classes, kwargs=kwargs)
    loaded = read_weights(weights)
    kwargs = {**loaded.model_args, **kwargs}
    model = _build(name, input_size=input_size, num_classes=num_classes, kwargs=kwargs)
    notes = []
    if num_classes is None:
        found = head_classes(loaded, model)
        if found is not None and found != getattr(model, "num_classes", found):
            model = _build(name, input_size=input_size, num_classes=found, kwargs=kwargs)
            notes.append(f"classifier built for {found} classes, as in {loaded.source.name}")
    notes += load_model_weights(model, loaded, new_head=new_head)
    for note in notes:
        (say or silent)(note)
    return model


def require_known_model(name: str) -> None:
    """A ModelError (with close names) unless timm knows ``name``."""
    import timm

    if not timm.is_model(name):
        raise ModelError(f"unknown model {name!r}{_suggest(name, timm.list_models())}; "
                         "see `timm.list_models()` for every name")


def _build(name: str, *, input_size: tuple[int, int] | None, num_classes: int | None,
           kwargs: dict[str, Any]) -> nn.Module:

    require_known_model(name)
    if num_classes is not None:
        kwargs = {**kwargs, "num_classes": num_classes}
    model = _timm_create(name, kwargs)
    fixed = getattr(getattr(model, "patch_embed", None), "img_size", None)
    if input_size is not None and fixed is not None and tuple(fixed) != tuple(input_size):
        model = _timm_create(name, {**kwargs, "img_size": tuple(input_size)})
    return model


def _timm_create(name: str, kwargs: dict[str, Any]) -> nn.Module:
    import timm

    try:
        return timm.create_model(name, pretrained=False, **kwargs)
    except TypeError as failure:  # a model argument this architecture does not take (config.json)
        raise ModelError(f"cannot build {name} with {sorted(kwargs)}: {one_line(failure, 200)}") from None


def _suggest(name: str, candidates: list[str]) -> str:
    close = difflib.get_close_matches(name, candidates, n=3, cutoff=0.6)
    return f" (did you mean {', '.join(close)}?)" if close else ""

