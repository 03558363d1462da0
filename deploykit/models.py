"""Creating timm models without network access, with clear errors for bad names and weights."""

from __future__ import annotations

import difflib
import math
from pathlib import Path
from typing import Any

from torch import nn

from deploykit.checkpoints import head_classes, load_model_weights, model_name, read_weights
from deploykit.checks import is_int, require_int
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
    check_model_resources(name, kwargs, input_size)
    model = _timm_create(name, kwargs)
    fixed = getattr(getattr(model, "patch_embed", None), "img_size", None)
    if input_size is not None and fixed is not None and tuple(fixed) != tuple(input_size):
        model = _timm_create(name, {**kwargs, "img_size": tuple(input_size)})
    return model


def _timm_create(name: str, kwargs: dict[str, Any]) -> nn.Module:
    import timm

    try:
        return timm.create_model(name, pretrained=False, **kwargs)
    # a model argument this architecture does not take, or a value it cannot use (config.json)
    except (TypeError, ValueError, KeyError, AssertionError) as failure:
        reason = f"unknown name {failure}" if isinstance(failure, KeyError) else one_line(failure, 200)
        raise ModelError(f"cannot build {name} with {sorted(kwargs)}: {reason}") from None


# --- resource bounds: what a model would cost, before it is built ------------------------------------

MAX_CLASSES = 1_000_000      # timm's largest heads have 21 843 (ImageNet-22k)
MAX_IN_CHANS = 1024
MAX_SIDE = 8192              # pixels on a side of the input
MAX_PARAMS = 2_000_000_000   # 8 GB of fp32; timm's largest models are about 1.8 G
MAX_ACTIVATIONS = 2**31      # elements in the largest activation of one image
_SIZE_ARGS = ("img_size", "input_size")


def check_model_resources(name: str, kwargs: dict[str, Any], input_size: tuple[int, int] | None) -> None:
    """Refuse (one ModelError) model settings that could not be built, or only at a cost no model
    file or config.json should be able to ask for: class counts, channels and input sides past fixed
    bounds, non-finite numbers, then the parameters and the largest activation of the model as built
    on torch's meta device (no memory), against fixed bounds and this machine's free memory."""
    _check_arg_values(name, kwargs)
    for side in _sides(kwargs, input_size):
        if side > MAX_SIDE:
            raise ModelError(f"{name}: an input side of {side} pixels is over the limit of {MAX_SIDE}")
    params, activations = _meta_costs(name, kwargs, input_size)
    if params > MAX_PARAMS:
        raise ModelError(f"{name} with {_shown_args(kwargs)} would have {params:,} parameters, over the "
                         f"limit of {MAX_PARAMS:,}")
    if activations > MAX_ACTIVATIONS:
        raise ModelError(f"{name} at input {input_size} would make an activation of {activations:,} "
                         f"elements, over the limit of {MAX_ACTIVATIONS:,}")
    free = _available_memory()
    need = 4 * (params + 2 * activations)
    if free is not None and need > free:
        raise ModelError(f"{name} with {_shown_args(kwargs)} would need about {need / 2**30:.1f} GiB of "
                         f"memory (fp32), more than the {free / 2**30:.1f} GiB available here")


def _check_arg_values(name: str, kwargs: dict[str, Any]) -> None:
    for key, least, most in (("num_classes", 0, MAX_CLASSES), ("in_chans", 1, MAX_IN_CHANS)):
        value = kwargs.get(key)
        if value is not None:
            require_int(f"{name}: {key}", value, least=least, most=most, error=ModelError)
    for key, value in kwargs.items():
        bad = next((v for v in _numbers(value) if not math.isfinite(v)), None)
        if bad is not None:
            raise ModelError(f"{name}: model argument {key} must be a finite number, got {bad!r}")


def _numbers(value: Any):
    if isinstance(value, float):
        yield value
    elif isinstance(value, (list, tuple)):
        for item in value:
            yield from _numbers(item)


def _sides(kwargs: dict[str, Any], input_size: tuple[int, int] | None) -> list[int]:
    sides = list(input_size or ())
    for key in _SIZE_ARGS:
        value = kwargs.get(key)
        values = value if isinstance(value, (list, tuple)) else [value]
        sides += [v for v in values if is_int(v)]
    return sides


def _meta_costs(name: str, kwargs: dict[str, Any], input_size: tuple[int, int] | None) -> tuple[int, int]:
    """(parameters, elements of the largest activation for one image) of the model, built and run on
    torch's meta device: shapes only, nothing allocated. (0, 0) where the meta device cannot build it
    (the real build then says why, or costs what it costs)."""
    import torch

    try:
        with torch.device("meta"):
            model = _timm_create(name, kwargs)
            fixed = getattr(getattr(model, "patch_embed", None), "img_size", None)
            if input_size is not None and fixed is not None and tuple(fixed) != tuple(input_size):
                model = _timm_create(name, {**kwargs, "img_size": tuple(input_size)})
    except ModelError:
        raise
    except Exception:  # an architecture whose construction needs real tensors
        return 0, 0
    params = sum(p.numel() for p in model.parameters()) + sum(b.numel() for b in model.buffers())
    return params, _largest_activation(model, kwargs, input_size)


def _largest_activation(model: nn.Module, kwargs: dict[str, Any], input_size) -> int:
    import torch

    size = input_size or tuple(getattr(model, "pretrained_cfg", {}).get("input_size", (3, 224, 224))[1:])
    largest = [0]

    def record(_module, _inputs, output) -> None:
        if isinstance(output, torch.Tensor):
            largest[0] = max(largest[0], output.numel())

    hooks = [module.register_forward_hook(record) for module in model.modules()]
    try:
        with torch.no_grad():
            model.eval()(torch.empty(1, kwargs.get("in_chans", 3), *size, device="meta"))
    except Exception:  # an op without a meta kernel: the parameters are still bounded
        return 0
    finally:
        for hook in hooks:
            hook.remove()
    return largest[0]


def _available_memory() -> int | None:
    """MemAvailable (bytes) on Linux; None where unknown."""
    try:
        with open("/proc/meminfo") as stream:
            for line in stream:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        return None
    return None


def _shown_args(kwargs: dict[str, Any]) -> str:
    return ", ".join(f"{key}={value!r}" for key, value in sorted(kwargs.items())) or "its defaults"


def _suggest(name: str, candidates: list[str]) -> str:
    close = difflib.get_close_matches(name, candidates, n=3, cutoff=0.6)
    return f" (did you mean {', '.join(close)}?)" if close else ""

