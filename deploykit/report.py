"""The block list of ``deploykit blocks``: one row per block (as a frame for CSV and JSON, or a fixed-width
table with a totals line). The speed-vs-accuracy table is :mod:`deploykit.results_table`'s."""

from __future__ import annotations

from collections.abc import Sequence

import pandas as pd

from deploykit.blocks.base import BlockInfo


def blocks_frame(blocks: Sequence[BlockInfo]) -> pd.DataFrame:
    """One row per block; shapes as ``CxHxW`` strings so the frame writes cleanly to CSV."""
    rows = []
    for info in blocks:
        row = info.as_dict()
        row["in_shape"] = "x".join(map(str, info.in_shape))
        row["out_shape"] = "x".join(map(str, info.out_shape))
        rows.append(row)
    return pd.DataFrame(rows)


def _mmacs(value: int | None) -> str:
    return "-" if value is None else f"{value / 1e6:,.1f}"


def format_blocks_table(blocks: Sequence[BlockInfo], *, model: str, input_size: tuple[int, int]) -> str:
    """A fixed-width table with a totals line: what merging every prunable block would save."""
    header = f"{'idx':>3}  {'name':<22} {'type':<24} {'in':<14} {'out':<14} " \
             f"{'MMACs':>9} {'merged':>9}  prunable"
    lines = [f"{model} at {input_size[0]}x{input_size[1]}: {len(blocks)} blocks, "
             f"{sum(b.prunable for b in blocks)} prunable", header, "-" * len(header)]
    for b in blocks:
        status = "yes" if b.prunable else f"no: {b.reason}"
        lines.append(f"{b.index:>3}  {b.name:<22} {b.block_type:<24} {'x'.join(map(str, b.in_shape)):<14} "
                     f"{'x'.join(map(str, b.out_shape)):<14} {_mmacs(b.macs):>9} {_mmacs(b.merged_macs):>9}"
                     f"  {status}")
    prunable = [b for b in blocks if b.prunable]
    saved = sum(b.macs - b.merged_macs for b in prunable)
    lines.append(f"merging all {len(prunable)} prunable blocks changes block MACs by "
                 f"{-saved / 1e6:+,.1f} M ({sum(b.macs for b in prunable) / 1e6:,.1f} M → "
                 f"{sum(b.merged_macs for b in prunable) / 1e6:,.1f} M)")
    return "\n".join(lines)
