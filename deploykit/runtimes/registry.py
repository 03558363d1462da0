"""The registry of runtime backends, by name. Backend modules register with :func:`register_backend`."""

from __future__ import annotations

from typing import TypeVar

from deploykit.errors import ConfigError
from deploykit.runtimes.base import RuntimeBackend

B = TypeVar("B", bound=type[RuntimeBackend])

_REGISTRY: dict[str, RuntimeBackend] = {}


def register(backend: RuntimeBackend) -> RuntimeBackend:
    """Add a backend instance under its ``name`` (a second backend of the same name is a bug)."""
    if backend.name in _REGISTRY:
        raise ValueError(f"runtime backend {backend.name!r} is already registered")
    _REGISTRY[backend.name] = backend
    return backend


def register_backend(cls: B) -> B:
    """Class decorator: register one instance of the backend class under its ``name``."""
    register(cls())
    return cls


def unregister(name: str) -> None:
    """Remove the backend called ``name`` (for test backends registered for one test)."""
    _REGISTRY.pop(name, None)


def backends() -> dict[str, RuntimeBackend]:
    """Every registered backend by name."""
    return dict(_REGISTRY)


def get_backend(name: str) -> RuntimeBackend:
    """The backend called ``name``; ConfigError listing the known names otherwise."""
    try:
        return _REGISTRY[name]
    except KeyError:
        raise ConfigError(f"unknown runtime {name!r} (known: {', '.join(sorted(_REGISTRY))})") from None
