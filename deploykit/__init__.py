"""deploykit: hardware-aware depth pruning for timm vision models.

``prunable`` and ``PrunableNet`` are imported on first use (PEP 562), so that light entry points —
the latency worker subprocess, ``deploykit targets`` — do not pay for importing torch and timm.
"""

from importlib.metadata import PackageNotFoundError, version

from deploykit.errors import DeployKitError

try:
    __version__ = version("deploykit")
except PackageNotFoundError:  # running from a source tree that is not installed
    __version__ = "0.0.0+unknown"

__all__ = ["DeployKitError", "PrunableNet", "__version__", "prunable"]


def __getattr__(name: str):
    if name in ("prunable", "PrunableNet"):
        from deploykit import prune

        return getattr(prune, name)
    raise AttributeError(f"module 'deploykit' has no attribute {name!r}")
