"""Statistics of predicted against measured latencies: rank correlations, the fidelity figures, and the
affine calibration fit with its leave-one-out estimate. Pure numpy; errors are relative to the
measurement."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from deploykit.errors import TableError


def rankdata(values: Sequence[float]) -> np.ndarray:
    """1-based ranks; tied values share the average of their ranks."""
    v = np.asarray(values, dtype=float)
    order = np.argsort(v, kind="mergesort")
    ordered = v[order]
    ranks = np.empty(len(v))
    start = 0
    while start < len(v):
        stop = start
        while stop + 1 < len(v) and ordered[stop + 1] == ordered[start]:
            stop += 1
        ranks[order[start:stop + 1]] = (start + stop) / 2 + 1
        start = stop + 1
    return ranks


def spearman(x: Sequence[float], y: Sequence[float]) -> float:
    """Spearman's ρ: the Pearson correlation of the average ranks (nan when either side is constant)."""
    return _pearson(rankdata(x), rankdata(y))


def kendall(x: Sequence[float], y: Sequence[float]) -> float:
    """Kendall's τ-b, which accounts for ties on either side (nan when either side is constant)."""
    x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    i, j = np.triu_indices(len(x), 1)
    dx, dy = np.sign(x[i] - x[j]), np.sign(y[i] - y[j])
    pairs = len(i)
    denominator = math.sqrt(float(pairs - np.sum(dx == 0)) * float(pairs - np.sum(dy == 0)))
    return float(np.sum(dx * dy) / denominator) if denominator > 0 else math.nan


def _pearson(x: np.ndarray, y: np.ndarray) -> float:
    x, y = x - x.mean(), y - y.mean()
    denominator = math.sqrt(float(np.dot(x, x)) * float(np.dot(y, y)))
    return float(np.dot(x, y) / denominator) if denominator > 0 else math.nan


@dataclass(frozen=True)
class Figures:
    """How predictions compare with measurements. Shares in [0, 1]; errors in % of the measurement."""

    n: int
    spearman: float
    kendall: float
    within_5: float
    within_10: float
    mape: float
    bias: float
    max_error: float

    @classmethod
    def compare(cls, predicted: Sequence[float], measured: Sequence[float]) -> Figures:
        p, m = np.asarray(predicted, dtype=float), np.asarray(measured, dtype=float)
        if len(p) != len(m) or len(p) == 0:
            raise TableError("fidelity figures need as many predictions as measurements, and at least one")
        if (m <= 0).any():
            raise TableError("a measured latency is not positive; the measurement is broken")
        error = (p - m) / m * 100.0
        # ranked at 1 ns: below that a difference is float rounding (a fitted predictor's), and it would
        # break ties between subnets of equal latency at random
        p_ns, m_ns = p.round(6), m.round(6)
        return cls(n=len(p), spearman=spearman(p_ns, m_ns), kendall=kendall(p_ns, m_ns),
                   within_5=float(np.mean(np.abs(error) <= 5.0)),
                   within_10=float(np.mean(np.abs(error) <= 10.0)),
                   mape=float(np.mean(np.abs(error))), bias=float(np.mean(error)),
                   max_error=float(np.max(np.abs(error))))

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class Repeatability:
    """How far the same model's fresh-process measurements spread on this machine: the floor under any
    prediction's error. ``within_5``: the share of the measurements within ±5 % of their median, the most
    a perfect predictor could score against single measurements; ``robust_cv``: 1.4826 · MAD / median."""

    n: int
    median_ms: float
    robust_cv: float
    within_5: float
    range_pct: float

    @classmethod
    def of(cls, values_ms: Sequence[float]) -> Repeatability | None:
        """None for fewer than three measurements (no spread to speak of)."""
        v = np.asarray([x for x in values_ms if x > 0 and math.isfinite(x)], dtype=float)
        if len(v) < 3:
            return None
        median = float(np.median(v))
        deviation = np.abs(v / median - 1.0)
        return cls(n=len(v), median_ms=median, robust_cv=float(1.4826 * np.median(deviation)),
                   within_5=float(np.mean(deviation <= 0.05)), range_pct=float(np.ptp(v) / median * 100.0))

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    def line(self) -> str:
        return (f"the unpruned model itself, measured {self.n} times in fresh processes during the profile: "
                f"{self.within_5:.0%} within ±5% of their median {self.median_ms:.3f} ms, robust cv "
                f"{self.robust_cv:.1%}, range {self.range_pct:.0f}% (the floor under any prediction here)")


def fit_calibration(predicted: Sequence[float], measured: Sequence[float]) -> tuple[float, float]:
    """Least squares ``measured ≈ a · predicted + b``; needs two different predictions at least."""
    x, y = np.asarray(predicted, dtype=float), np.asarray(measured, dtype=float)
    if len(x) < 2 or np.ptp(x) == 0:
        raise TableError(f"a calibration needs at least two subnets with different predicted latencies "
                         f"(have {len(set(x.tolist()))}); use more --samples")
    design = np.stack([x, np.ones_like(x)], axis=1)
    (a, b), *_ = np.linalg.lstsq(design, y, rcond=None)
    return float(a), float(b)


def leave_one_out(predicted: Sequence[float], measured: Sequence[float]) -> np.ndarray | None:
    """Each point predicted by the calibration fitted on all the others; None with too few points."""
    x, y = np.asarray(predicted, dtype=float), np.asarray(measured, dtype=float)
    if len(x) < 3:
        return None
    out = np.empty(len(x))
    for i in range(len(x)):
        keep = np.arange(len(x)) != i
        if np.ptp(x[keep]) == 0:
            return None
        a, b = fit_calibration(x[keep], y[keep])
        out[i] = a * x[i] + b
    return out
