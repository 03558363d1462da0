"""A latency table's metadata checked as a schema, and against its own rows.

Kept apart from :mod:`deploykit.latency.table` so that new metadata keys can be added there without
touching these checks: :func:`check_meta_fields` judges the keys it knows and lets every other key
pass through; :func:`check_rows_match_model` makes sure the rows are the named model's (a resnet18
table whose metadata says ``convnext_atto`` would otherwise predict convnext_atto figures that are
resnet18's).
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

from deploykit.checks import is_int, is_number
from deploykit.errors import TableError


def check_meta_fields(data: Mapping[str, Any]) -> None:
    """Refuse (one TableError) a metadata field of the wrong type: ``complete`` a bool, ``date`` an ISO
    time, ``threads`` a positive integer or null, ``model`` a name, ``profile_s`` a finite number ≥ 0;
    the strings that name things are strings. Unknown keys are not judged here."""
    for name, check in _FIELD_CHECKS.items():
        if name in data and not check(data[name]):
            raise TableError(f"table metadata: {name} must be {_RULES[name]}, got {_shown(data[name])}")


def _is_bool(value: Any) -> bool:
    return isinstance(value, bool)


def _is_iso_time(value: Any) -> bool:
    if not isinstance(value, str):
        return False
    try:
        datetime.fromisoformat(value)
    except ValueError:
        return False
    return True


def _is_positive_int_or_none(value: Any) -> bool:
    return value is None or is_int(value, least=1)


def _is_name(value: Any) -> bool:
    return isinstance(value, str) and bool(value.strip())


def _is_text_or_none(value: Any) -> bool:
    return value is None or isinstance(value, str)


def _is_seconds(value: Any) -> bool:
    return is_number(value, least=0)


_FIELD_CHECKS = {
    "complete": _is_bool, "date": _is_iso_time, "threads": _is_positive_int_or_none, "model": _is_name,
    "target": _is_name, "device": _is_name, "runtime": _is_name, "precision": _is_name,
    "device_string": lambda v: isinstance(v, str), "runtime_version": lambda v: isinstance(v, str),
    "deploykit_version": lambda v: isinstance(v, str), "provider": _is_text_or_none,
    "profile_s": _is_seconds,
}
_RULES = {
    "complete": "true or false", "date": "an ISO 8601 time such as 2026-01-01T00:00:00+00:00",
    "threads": "a positive integer or null", "profile_s": "a number of seconds ≥ 0",
    "provider": "a string or null",
    **{name: "a non-empty string" for name in ("model", "target", "device", "runtime", "precision")},
    **{name: "a string" for name in ("device_string", "runtime_version", "deploykit_version")},
}


def _shown(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:79] + "…"


def check_rows_match_model(model: str, rows, where: str) -> None:
    """Refuse (one TableError) rows that are not ``model``'s: the whole-model row must name it, and each
    block row's block type must be a module type of ``model`` as timm builds it (on the meta device:
    nothing allocated). Architectures timm cannot build that way are judged by the whole-model row."""
    untagged = model.split(".", 1)[0]
    for row in rows[rows["kind"] == "model"].itertuples(index=False):
        if str(row.name).split(".", 1)[0] != untagged:
            raise TableError(f"{where}: its metadata names model {model}, but its rows were measured on "
                             f"{row.name}")
    types = _module_types(untagged)
    if types is None:
        return
    for row in rows[rows["kind"] == "block"].itertuples(index=False):
        if row.block_type not in types:
            raise TableError(f"{where}: its metadata names model {model}, but its row {row.key!r} is a "
                             f"{row.block_type} block, which {model} does not have")


def _module_types(model: str) -> set[str] | None:
    """The class names of the timm model's modules, built on the meta device; None if it cannot be."""
    try:
        import timm
        import torch

        if not timm.is_model(model):
            return None
        with torch.device("meta"):
            built = timm.create_model(model, pretrained=False)
    except Exception:  # an architecture the meta device cannot build: not judged here
        return None
    return {type(module).__name__ for module in built.modules()}
