"""The family registry: timm block class → the :class:`PrunableBlock` subclass that wraps it."""

from __future__ import annotations

import importlib
import pkgutil

from torch import nn

from deploykit.blocks.base import PrunableBlock

# Every module of this package except these is a family; families register themselves when
# imported, which happens on the first lookup (not at import of deploykit).
_NOT_FAMILIES = {"base", "blend", "registry"}

_FAMILIES: dict[type, type[PrunableBlock]] = {}
_loaded = False


def register(*block_classes: type):
    """Class decorator: ``@register(timm.models.resnet.BasicBlock)`` on a PrunableBlock subclass."""
    def decorate(wrapper: type[PrunableBlock]) -> type[PrunableBlock]:
        for block_class in block_classes:
            _FAMILIES[block_class] = wrapper
        return wrapper
    return decorate


def _load_families() -> None:
    global _loaded
    if not _loaded:
        package = importlib.import_module("deploykit.blocks")
        for module in pkgutil.iter_modules(package.__path__):
            if module.name not in _NOT_FAMILIES:
                importlib.import_module(f"deploykit.blocks.{module.name}")
        _loaded = True


def family_of(module: nn.Module) -> type[PrunableBlock] | None:
    """The wrapper class for ``module`` (exact class or a subclass of a registered one), or None."""
    _load_families()
    for cls in type(module).__mro__:
        if cls in _FAMILIES:
            return _FAMILIES[cls]
    return None


def families() -> dict[str, list[str]]:
    """Family name → the timm block classes it covers (for help texts and docs)."""
    _load_families()
    table: dict[str, list[str]] = {}
    for block_class, wrapper in _FAMILIES.items():
        table.setdefault(wrapper.family, []).append(block_class.__name__)
    return table
