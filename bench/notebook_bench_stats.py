"""Figures of the notebook benchmark (bench/notebook_bench.py): the percentiles and summaries
of its samples."""

from __future__ import annotations

import math
from collections.abc import Sequence


def percentile(values: Sequence[float], q: float) -> float:
    """The ``q``-th percentile (0-100) of ``values``, interpolated linearly between the two
    nearest ranks (numpy's default)."""
    if not values:
        return math.nan
    ranked = sorted(values)
    pos = (len(ranked) - 1) * q / 100
    low = math.floor(pos)
    high = min(low + 1, len(ranked) - 1)
    return ranked[low] + (ranked[high] - ranked[low]) * (pos - low)


def summary(values: Sequence[float]) -> dict[str, float]:
    """n, min, p50, p95, p99 and max of ``values``."""
    return {"n": len(values), "min": min(values, default=math.nan),
            "p50": percentile(values, 50), "p95": percentile(values, 95),
            "p99": percentile(values, 99), "max": max(values, default=math.nan)}
