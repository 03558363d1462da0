"""deploykit: hardware-aware depth pruning for timm vision models."""

from importlib.metadata import PackageNotFoundError, version

from deploykit.errors import DeployKitError
from deploykit.prune import PrunableNet, prunable

try:
    __version__ = version("deploykit")
except PackageNotFoundError:  # running from a source tree that is not installed
    __version__ = "0.0.0+unknown"

__all__ = ["DeployKitError", "PrunableNet", "__version__", "prunable"]
