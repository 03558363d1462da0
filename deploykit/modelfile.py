"""Models that travel without code: tensors in safetensors, the architecture as a JSON record.

A *model file* is one ``.safetensors`` file: the tensors of a (merged) model, and in the header's
metadata, under the key ``deploykit``, a JSON record of how to rebuild its structure::

    {"format": "deploykit-model/1", "deploykit_version": "0.1.0", "model": "convnext_atto",
     "num_classes": 10, "input_size": [32, 32], "in_chans": 3, "pruned": [1, 4], "dropped": []}

Loading builds ``timm.create_model(model, pretrained=False)``, wraps it with ``prunable``, prunes the
``pruned`` blocks at λ = 1 and merges them in eval mode, replaces the ``dropped`` blocks (plain depth
pruning) by identities, and loads the tensors strictly: every key and shape must match, or a one-line
ModelError names the first that does not. Nothing is unpickled, so a file from anywhere loads without
running code. One file keeps the record and the tensors together (no pair to fall out of step) and is
written atomically; the record is readable with any safetensors reader (``safe_open(...).metadata()``).

:func:`save_model` writes a file only after rebuilding the structure from the record and checking
that it reproduces the module's outputs exactly on a seeded input.

:func:`load_module` is what ``deploykit export`` and ``verify --torch`` take: a model file, a timm
model name (random weights, or ``--weights`` in any format :mod:`deploykit.checkpoints` reads), or a
Hugging Face-style folder. A whole-module ``torch.save`` pickle loads only with ``unsafe_pickle``
(unpickling runs code from the file); without it, it is refused with a way to convert it.
"""

from __future__ import annotations

import json
import os
import warnings
from collections.abc import Callable, Iterable, Mapping
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any, NamedTuple

import torch
from torch import Tensor, nn

from deploykit import __version__
from deploykit.checkpoints import (
    MODEL_RECORD_KEY,
    PickledCodeError,
    is_safetensors,
    model_name,
    read_safetensors,
    read_torch_file,
    safetensors_metadata,
)
from deploykit.checks import is_int, require_int
from deploykit.deployment import DeploymentSettings, write_settings
from deploykit.errors import ConfigError, ModelError, one_line
from deploykit.export import export_onnx, onnx_summary
from deploykit.fileio import atomic_path, parse_json
from deploykit.macs import count_macs, count_params, eval_mode
from deploykit.models import MAX_CLASSES, MAX_IN_CHANS, MAX_SIDE, create_model
from deploykit.prune import PrunableNet, prunable
from deploykit.shapes import DEFAULT_BATCH, DEFAULT_INPUT_SIZE, check_input_size

FORMAT = "deploykit-model/1"
RECORD_KEY = MODEL_RECORD_KEY  # the safetensors metadata key that holds the record (JSON)
CHECKPOINT_SUFFIXES = (".pt", ".pth", ".bin", ".ckpt", ".safetensors")


@dataclass(frozen=True)
class ModelRecord:
    """How to rebuild a model file's structure: timm name, classes, input size, which blocks are
    merged (``pruned``) and which are removed (``dropped``), by index into ``prunable(...).blocks``."""

    model: str
    num_classes: int
    input_size: tuple[int, int]
    pruned: tuple[int, ...] = ()
    dropped: tuple[int, ...] = ()
    in_chans: int = 3
    deploykit_version: str = __version__

    def __post_init__(self):
        if not isinstance(self.model, str) or not self.model:
            raise ModelError(f"model record: model must be a timm model name, got {self.model!r}")
        for name, least, most in (("num_classes", 0, MAX_CLASSES), ("in_chans", 1, MAX_IN_CHANS)):
            require_int(f"model record: {name}", getattr(self, name), least=least, most=most,
                        error=ModelError)
        object.__setattr__(self, "input_size", check_input_size(self.input_size, error=ModelError))
        if max(self.input_size) > MAX_SIDE:
            raise ModelError(f"model record: input size {list(self.input_size)} is over the limit of "
                             f"{MAX_SIDE} pixels a side")
        object.__setattr__(self, "pruned", _indices(self.pruned, "pruned"))
        object.__setattr__(self, "dropped", _indices(self.dropped, "dropped"))
        both = sorted(set(self.pruned) & set(self.dropped))
        if both:
            raise ModelError(f"model record: block(s) {both} are both pruned and dropped")

    def as_dict(self) -> dict[str, Any]:
        data = asdict(self)
        return {"format": FORMAT, **data, "input_size": list(self.input_size), "pruned": list(self.pruned),
                "dropped": list(self.dropped)}

    @classmethod
    def from_dict(cls, data: Any, *, source: str = "model record") -> ModelRecord:
        if not isinstance(data, Mapping):
            raise ModelError(f"{source}: the model record is not a JSON object")
        if data.get("format") != FORMAT:
            raise ModelError(f"{source}: model record format {data.get('format')!r} is not {FORMAT!r} "
                             f"(written by deploykit {data.get('deploykit_version', '?')}, this is "
                             f"{__version__})")
        values = {key: value for key, value in data.items() if key != "format"}
        names = set(cls.__dataclass_fields__)
        unknown = sorted(set(values) - names)
        missing = sorted({"model", "num_classes", "input_size"} - set(values))
        if unknown or missing:
            raise ModelError(f"{source}: malformed model record: missing {missing or 'nothing'}, "
                             f"unknown {unknown or 'nothing'}")
        return cls(**values)

    def describe(self) -> str:
        parts = [self.model, f"{self.num_classes} classes", "x".join(map(str, self.input_size))]
        parts.append(f"merged blocks {list(self.pruned)}" if self.pruned else "no block merged")
        if self.dropped:
            parts.append(f"dropped blocks {list(self.dropped)}")
        return ", ".join(parts)


class LoadedModule(NamedTuple):
    """A module ready to export or compare, what to call it, notes for the user, and its record (model
    files only; its input size is the natural default for export)."""

    module: nn.Module
    description: str
    notes: tuple[str, ...] = ()
    record: ModelRecord | None = None

    @property
    def input_size(self) -> tuple[int, int] | None:
        """The input size a model file was made for; None for anything else."""
        return self.record.input_size if self.record is not None else None


# --- writing and reading model files ----------------------------------------------------------------

def save_model(module: nn.Module | PrunableNet, path: str | Path, record: ModelRecord | None = None, *,
               input_size: tuple[int, int] | None = None) -> Path:
    """Write ``module`` as a model file at ``path`` (atomically).

    A :class:`PrunableNet` is merged first (eval mode, λ = 1 on every pruned block). Without
    ``record``, it is read off the module (:func:`infer_record`). The structure rebuilt from the
    record must hold the module's tensors (every key and shape) and reproduce its outputs exactly on a
    seeded input; otherwise nothing is written and a ModelError says what differs."""
    if isinstance(module, PrunableNet):
        input_size = input_size or module.input_size
        module = module.merge()
    record = replace(record or infer_record(module, input_size=input_size), deploykit_version=__version__)
    tensors = {key: value.detach().cpu().clone().contiguous() for key, value in module.state_dict().items()}
    rebuilt = build_structure(record)
    _check_fits(tensors, rebuilt, what=f"the module does not match its record ({record.describe()})")
    rebuilt.load_state_dict(tensors, strict=True)
    _check_same_outputs(module, rebuilt, record)
    from safetensors.torch import save_file

    metadata = {RECORD_KEY: json.dumps(record.as_dict()), "format": "pt"}
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp), metadata=metadata)
    return Path(path)


def read_record(path: str | Path) -> ModelRecord:
    """The architecture record of a model file (no tensor is read)."""
    path = Path(path)
    if not path.is_file():
        raise ModelError(f"model file not found: {path}")
    text = safetensors_metadata(path).get(RECORD_KEY)
    if text is None:
        raise ModelError(f"{path} holds tensors but no deploykit architecture record, so it is weights, "
                         f"not a model file: pass the timm model name with --weights {path}")
    data = parse_json(text, what=f"{path}: the model record", error=ModelError)
    return ModelRecord.from_dict(data, source=str(path))


def load_model(path: str | Path) -> nn.Module:
    """The model a model file holds, rebuilt from its record with its tensors loaded strictly (eval)."""
    record = read_record(path)
    module = build_structure(record)
    tensors, _ = read_safetensors(path, what="model file")
    _check_fits(tensors, module, what=f"{path} does not fit its record ({record.describe()})")
    module.load_state_dict(tensors, strict=True)
    return module.eval()


def build_structure(record: ModelRecord) -> nn.Module:
    """The record's architecture with untrained weights: timm model, pruned blocks merged at λ = 1,
    dropped blocks replaced by identities (eval mode)."""
    model = create_model(record.model, num_classes=record.num_classes, input_size=record.input_size,
                         in_chans=record.in_chans)
    if not record.pruned and not record.dropped:
        return model.eval()
    net = prunable(model, input_size=record.input_size, in_chans=record.in_chans).prune(record.pruned)
    if record.pruned:
        net.set_progress(1.0)
    merged = net.eval().merge()
    for index in record.dropped:
        if index >= len(net.blocks):
            raise ModelError(f"model record: dropped block {index} is out of range: {record.model} has "
                             f"blocks 0..{len(net.blocks) - 1}")
        merged.set_submodule(net.blocks[index].name, nn.Identity())
    return merged.eval()


def infer_record(module: nn.Module, *, input_size: tuple[int, int] | None = None) -> ModelRecord:
    """The record of a timm model (merged by deploykit or not), read off the module itself: the name
    timm keeps in ``pretrained_cfg``, its class count, and per block whether it is the original,
    a merged form, or an identity (dropped)."""
    config = getattr(module, "pretrained_cfg", None)
    name = config.get("architecture") if isinstance(config, Mapping) else None
    num_classes = getattr(module, "num_classes", None)
    if not isinstance(name, str) or not isinstance(num_classes, int):
        raise ModelError(f"cannot tell which timm model this {type(module).__name__} is (timm models carry "
                         "their name in pretrained_cfg); only timm models can be saved as model files")
    size = check_input_size(input_size or _fixed_input_size(module) or DEFAULT_INPUT_SIZE, error=ModelError)
    original = create_model(name, num_classes=num_classes, input_size=size)
    pruned, dropped = [], []
    for info in _blocks(original, size):
        try:
            block = module.get_submodule(info.name)
        except AttributeError:
            raise ModelError(f"this {type(module).__name__} has no {info.name}: it is not a {name} "
                             "deploykit knows how to rebuild") from None
        if isinstance(block, nn.Identity):
            dropped.append(info.index)
        elif type(block).__name__ != info.block_type:
            pruned.append(info.index)
    return ModelRecord(model=name, num_classes=num_classes, input_size=size, pruned=tuple(pruned),
                       dropped=tuple(dropped))


# --- what export and verify take ---------------------------------------------------------------------

def load_module(spec: str | Path, *, weights: str | Path | None = None,
                input_size: tuple[int, int] | None = None, unsafe_pickle: bool = False) -> LoadedModule:
    """A model file, a Hugging Face-style folder, or a timm model name (random weights unless
    ``weights``, whose class count the classifier gets); a whole-module pickle only with
    ``unsafe_pickle`` (it runs code from the file)."""
    text = str(spec)
    path = Path(text).expanduser()
    if path.is_file() or path.is_dir():
        if weights is not None:
            raise ConfigError(f"--weights goes with a timm model name, not with {path} (it holds its own "
                              "weights)")
        if path.is_dir():
            return _from_timm(None, weights=path, input_size=input_size)
        if is_safetensors(path):
            record = read_record(path)
            return LoadedModule(load_model(path), f"{path} ({record.describe()})", record=record)
        return _from_pickle(path, unsafe=unsafe_pickle)
    if os.sep in text or text.endswith(CHECKPOINT_SUFFIXES):
        raise ModelError(f"checkpoint file not found: {path}")
    return _from_timm(text, weights=weights, input_size=input_size)


def convert_model(spec: str | Path, out: str | Path, *, weights: str | Path | None = None,
                  input_size: tuple[int, int] | None = None,
                  unsafe_pickle: bool = False) -> tuple[Path, ModelRecord]:
    """Anything :func:`load_module` takes, written as a model file at ``out`` (record inferred)."""
    loaded = load_module(spec, weights=weights, input_size=input_size, unsafe_pickle=unsafe_pickle)
    record = loaded.record or infer_record(loaded.module, input_size=input_size or loaded.input_size)
    return save_model(loaded.module, out, record), record


@dataclass(frozen=True)
class ExportResult:
    """What :func:`export_model` wrote and counted; :meth:`lines` is ``deploykit export``'s report."""

    path: Path
    description: str
    input_size: tuple[int, int]
    params: int
    macs: int
    summary: dict[str, Any]  # export.onnx_summary of the written file
    warnings: tuple[str, ...] = ()  # the exporter's RuntimeWarnings (a dynamic batch onnxsim would fix)
    deployment: DeploymentSettings | None = None
    settings_path: Path | None = None

    def lines(self) -> list[str]:
        info = self.summary
        inputs = ", ".join(f"{name} {list(dims)}" for name, dims in info["inputs"].items())
        lines = [f"exported {self.description} → {self.path}",
                 f"  input {inputs}; opset {info['opset'].get('ai.onnx', '?')}",
                 f"  nodes {info['nodes']}; params {self.params / 1e6:.3f} M ({self.params} in PyTorch, "
                 f"{info['initializer_values']} ONNX initializer values)",
                 f"  MACs {self.macs / 1e6:.2f} M per image at {self.input_size[0]}x{self.input_size[1]}",
                 f"  file size {info['size_bytes'] / 1e6:.2f} MB ({info['size_bytes']} bytes)"]
        if self.deployment is not None:
            lines.append(f"  run settings {self.deployment.settings.describe()} (as "
                         f"{self.deployment.measured_by} was measured) → {self.settings_path}")
        return lines


def export_model(spec: str | Path, out: str | Path, *, weights: str | Path | None = None,
                 input_size: tuple[int, int] | None = None, batch: int = DEFAULT_BATCH,
                 opset: int | None = None, dynamic_batch: bool = False, unsafe_pickle: bool = False,
                 deployment: DeploymentSettings | None = None,
                 note: Callable[[str], None] | None = None) -> ExportResult:
    """Anything :func:`load_module` takes, exported to one checked ONNX file at ``out``
    (:func:`deploykit.export.export_onnx`) at ``input_size`` (default: a model file's own, else
    224x224); ``deployment``: the run settings to write beside it (``OUT.settings.json``). ``note``
    hears the loader's notes as they come."""
    require_int("--batch", batch, least=1, rule="≥ 1")
    loaded = load_module(spec, weights=weights, input_size=input_size, unsafe_pickle=unsafe_pickle)
    for text in loaded.notes if note is not None else ():
        note(text)
    size = input_size or loaded.input_size or DEFAULT_INPUT_SIZE
    shape = (batch, 3, *size)
    params = count_params(loaded.module)  # before the file is written: a failure here leaves nothing behind
    macs = count_macs(loaded.module, shape[1:])
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", RuntimeWarning)
        path = export_onnx(loaded.module, shape, out, opset=opset, dynamic_batch=dynamic_batch)
    said = tuple(str(w.message) for w in caught if issubclass(w.category, RuntimeWarning))
    written = write_settings(path, deployment) if deployment is not None else None
    return ExportResult(path=path, description=loaded.description, input_size=tuple(size), params=params,
                        macs=macs, summary=onnx_summary(path), warnings=said, deployment=deployment,
                        settings_path=written)


def _from_timm(name: str | None, *, weights: str | Path | None, input_size) -> LoadedModule:
    notes: list[str] = []
    module = create_model(name, weights=weights, input_size=input_size, say=notes.append)
    name = model_name(name, weights)
    what = f"{name} + {weights}" if weights is not None else f"{name} (random weights)"
    return LoadedModule(module.eval(), what, tuple(notes))


def _from_pickle(path: Path, *, unsafe: bool) -> LoadedModule:
    if unsafe:
        return LoadedModule(_unpickle_module(path), f"{path} (unpickled)")
    try:
        read_torch_file(path, what="checkpoint")  # weights-only: safe on any file
    except PickledCodeError as refused:
        raise ModelError(f"{path} is a pickled {refused.name}; loading it would run code from the file, so "
                         "deploykit refuses it. If you made it or trust it, convert it once to a model file: "
                         f"deploykit convert {path} --unsafe-pickle --out model.safetensors") from None
    raise ModelError(f"{path} holds weights, not a model: pass the timm model name with --weights {path}")


def _unpickle_module(path: Path) -> nn.Module:
    """The one place deploykit unpickles a file (``--unsafe-pickle``: the user vouches for it)."""
    try:
        module = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as failure:  # torch raises several types for unreadable files
        raise ModelError(f"cannot load {path} as a torch.save'd module: {one_line(failure)}") from None
    if not isinstance(module, nn.Module):
        raise ModelError(f"{path} holds a {type(module).__name__}, not a whole nn.Module "
                         "(a state dict goes with a timm model name and --weights)")
    return module.float().eval()


# --- helpers -----------------------------------------------------------------------------------------

def _indices(values: Iterable[int], name: str) -> tuple[int, ...]:
    if not isinstance(values, (list, tuple)):
        raise ModelError(f"model record: {name} must list block indices (integers ≥ 0), got {values!r}")
    values = tuple(values)
    if not all(is_int(v, least=0) for v in values):
        raise ModelError(f"model record: {name} must list block indices (integers ≥ 0), got {list(values)}")
    if len(set(values)) != len(values):
        raise ModelError(f"model record: {name} lists a block twice: {list(values)}")
    return tuple(sorted(values))


def _blocks(model: nn.Module, size: tuple[int, int]):
    """The blocks deploykit knows in ``model``; none for a model it cannot prune (saved unpruned)."""
    try:
        return prunable(model, input_size=size).blocks
    except ModelError:
        return []


def _fixed_input_size(module: nn.Module) -> tuple[int, int] | None:
    size = getattr(getattr(module, "patch_embed", None), "img_size", None)
    return tuple(size) if size is not None else None


def _check_fits(tensors: Mapping[str, Tensor], module: nn.Module, *, what: str) -> None:
    """Every key and shape of ``module``'s state dict in ``tensors`` and nothing else; else one line."""
    expected = module.state_dict()
    missing = [key for key in expected if key not in tensors]
    unexpected = [key for key in tensors if key not in expected]
    if missing or unexpected:
        raise ModelError(f"{what}: missing {_some(missing)}; unexpected {_some(unexpected)}")
    for key, tensor in tensors.items():
        if tuple(tensor.shape) != tuple(expected[key].shape):
            raise ModelError(f"{what}: {key} has shape {tuple(tensor.shape)}, the architecture "
                             f"{tuple(expected[key].shape)}")


def _check_same_outputs(module: nn.Module, rebuilt: nn.Module, record: ModelRecord) -> None:
    """Exactly the same outputs for an fp32 module on the CPU (same ops on the same tensors); within
    1e-2 of the output scale elsewhere (another device or precision rounds differently, while a
    structure that differs is off by the order of the outputs themselves)."""
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(2, record.in_chans, *record.input_size, generator=generator)
    param = next(module.parameters(), None)
    device, dtype = (param.device, param.dtype) if param is not None else (torch.device("cpu"), torch.float32)
    with torch.no_grad(), eval_mode(module):
        expected = module(x.to(device=device, dtype=dtype)).float().cpu()
        got = rebuilt(x)
    exact = device.type == "cpu" and dtype == torch.float32
    if expected.shape != got.shape:
        same = False
    elif exact:
        same = torch.equal(expected, got)
    else:
        same = bool((expected - got).abs().max() <= 1e-2 * expected.abs().max().clamp_min(1e-12))
    if not same:
        raise ModelError(f"the structure rebuilt from the record ({record.describe()}) does not reproduce "
                         "the module's outputs; nothing written")


def _some(keys: list[str]) -> str:
    return ", ".join(keys[:3]) + (f" (+{len(keys) - 3} more)" if len(keys) > 3 else "") if keys else "nothing"
