"""The fidelity plot: predicted against measured latency, y = x and a ±10 % band (Agg, no pyplot state)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from deploykit.fileio import atomic_path
from deploykit.latency.stats import Figures


def plot_fidelity(path: Path, *, predicted: Sequence[float], measured: Sequence[float], depth: Sequence[int],
                  calibration: tuple[float, float], before: Figures, after: Figures, title: str,
                  label: str = "table sum") -> Path:
    """Each subnet as predicted (dots) and calibrated (crosses) against measured, coloured by depth."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    a, b = calibration
    raw, measured, ks = np.asarray(predicted), np.asarray(measured), np.asarray(depth)
    figure = Figure(figsize=(7.0, 5.6), layout="constrained")
    FigureCanvasAgg(figure)
    axes = figure.add_subplot()
    low = min(raw.min(), measured.min(), (a * raw + b).min()) * 0.95
    high = max(raw.max(), measured.max(), (a * raw + b).max()) * 1.05
    line = np.array([low, high])
    axes.fill_between(line, line * 0.9, line * 1.1, color="0.9", label="±10 %")
    axes.plot(line, line, color="0.3", linewidth=0.8, label="measured = predicted")
    dots = axes.scatter(raw, measured, c=ks, cmap="viridis", s=28, label=label)
    axes.scatter(a * raw + b, measured, c=ks, cmap="viridis", marker="x", s=28, label="calibrated")
    figure.colorbar(dots, ax=axes, label="pruned blocks k")
    axes.set(xlim=(low, high), ylim=(low, high), xlabel="predicted latency (ms)",
             ylabel="measured latency (ms)")
    axes.set_title(title, fontsize=9)
    short = "sum" if label == "table sum" else label
    text = (f"n = {before.n}   ρ = {before.spearman:.3f}   τ = {before.kendall:.3f}\n"
            f"{short}: MAPE {before.mape:.1f}%  ±5% {before.within_5:.0%}  ±10% {before.within_10:.0%}\n"
            f"calibrated ({a:.3f}·Σ {'+' if b >= 0 else '−'} {abs(b):.2f}): MAPE {after.mape:.1f}%  "
            f"±5% {after.within_5:.0%}  ±10% {after.within_10:.0%}")
    axes.text(0.02, 0.98, text, transform=axes.transAxes, va="top", fontsize=8, family="monospace")
    axes.legend(loc="lower right", fontsize=8)
    with atomic_path(path) as tmp:
        figure.savefig(tmp, dpi=120, format="png")
    return path
