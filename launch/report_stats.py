"""Statistics over training seeds: the 95 % Student-t interval of a mean and the table cell that shows it."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

# two-sided 95 % Student-t critical values t_{0.975, df}, df = 1 .. 30
_T975 = (12.7062, 4.3027, 3.1824, 2.7764, 2.5706, 2.4469, 2.3646, 2.3060, 2.2622, 2.2281, 2.2010, 2.1788,
         2.1604, 2.1448, 2.1314, 2.1199, 2.1098, 2.1009, 2.0930, 2.0860, 2.0796, 2.0739, 2.0687, 2.0639,
         2.0595, 2.0555, 2.0518, 2.0484, 2.0452, 2.0423)


def t_critical(df: int) -> float:
    """t_{0.975, df}: a table up to 30 degrees of freedom, a Cornish-Fisher expansion above."""
    if df < 1:
        raise ValueError("a t interval needs at least one degree of freedom")
    if df <= len(_T975):
        return _T975[df - 1]
    z = 1.959963984540054
    g1 = (z**3 + z) / 4
    g2 = (5 * z**5 + 16 * z**3 + 3 * z) / 96
    g3 = (3 * z**7 + 19 * z**5 + 17 * z**3 - 15 * z) / 384
    return z + g1 / df + g2 / df**2 + g3 / df**3


def mean_interval(values: Sequence[float]) -> tuple[float, float, int]:
    """(mean, half-width of the 95 % t-interval, n) of the finite values; the half-width is NaN for n < 2."""
    x = np.asarray([v for v in values if v is not None and np.isfinite(v)], dtype=np.float64)
    if x.size == 0:
        return float("nan"), float("nan"), 0
    if x.size == 1:
        return float(x[0]), float("nan"), 1
    return float(x.mean()), t_critical(x.size - 1) * float(x.std(ddof=1)) / math.sqrt(x.size), int(x.size)


def interval_cell(mean: float, half: float, n: int, fmt: str) -> str:
    """A table cell: mean ± half-width, mean† for a single seed, – for none."""
    if n == 0:
        return "–"
    if n == 1:
        return fmt.format(mean) + "†"
    return f"{fmt.format(mean)} ± {fmt.format(half)}"


def difference_interval(a: Sequence[float], b: Sequence[float]) -> tuple[float, float]:
    """(mean(a) − mean(b), half-width of its 95 % Welch interval) over the finite values: training seeds of two
    methods are independent samples with unequal spread, so the interval uses Welch–Satterthwaite's degrees of
    freedom (rounded down, as the t table is per integer). The half-width is NaN when either side has < 2
    values or both have no spread."""
    x = np.asarray([v for v in a if v is not None and np.isfinite(v)], dtype=np.float64)
    y = np.asarray([v for v in b if v is not None and np.isfinite(v)], dtype=np.float64)
    if x.size == 0 or y.size == 0:
        return float("nan"), float("nan")
    diff = float(x.mean() - y.mean())
    if x.size < 2 or y.size < 2:
        return diff, float("nan")
    vx, vy = x.var(ddof=1) / x.size, y.var(ddof=1) / y.size
    if vx + vy == 0.0:
        return diff, float("nan")
    df = (vx + vy) ** 2 / (vx**2 / (x.size - 1) + vy**2 / (y.size - 1))
    return diff, t_critical(max(1, math.floor(df))) * math.sqrt(vx + vy)
