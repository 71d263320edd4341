"""Figures both benchmarks print: nearest-rank percentiles and the busiest 60 s window."""

from __future__ import annotations

import math
from collections.abc import Sequence

WINDOW_S = 60.0  # Make's rate-limit window


def percentile(values: Sequence[float], p: float) -> float:
    """Nearest-rank percentile (no interpolation); ``inf`` values sort last."""
    if not values:
        return math.nan
    ordered = sorted(values)
    return ordered[max(0, math.ceil(p / 100 * len(ordered)) - 1)]


def max_in_window(times: Sequence[float], window_s: float = WINDOW_S) -> int:
    """Most events in any half-open window [t, t + window_s)."""
    ordered = sorted(times)
    best, lo = 0, 0
    for hi, t in enumerate(ordered):
        while ordered[lo] <= t - window_s:
            lo += 1
        best = max(best, hi - lo + 1)
    return best
