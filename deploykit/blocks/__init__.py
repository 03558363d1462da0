"""Block families: one module each, found through :mod:`deploykit.blocks.registry`."""

from deploykit.blocks.base import BlockInfo, PrunableBlock
from deploykit.blocks.registry import families, family_of, register

__all__ = ["BlockInfo", "PrunableBlock", "families", "family_of", "register"]
