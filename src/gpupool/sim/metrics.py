"""From per-arrival curves to the study's figures: values per arrived-percent bucket.

x = arrived GPU demand as a percent of cluster capacity, rounded to an integer; a bucket's
value is the mean of the samples that fall in it; an empty bucket takes its neighbour's
value (x-1 first, then x+1), as the FGD artifact's analysis does (FGD_METHOD.md §7).
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence

import numpy as np

from gpupool.sim.protocol import FloatArray, ReplayCurve

MAX_BUCKET = 130


def bucket_means(x: FloatArray, y: FloatArray, max_bucket: int = MAX_BUCKET) -> FloatArray:
    """Mean of ``y`` per integer bucket of ``x`` (0..max_bucket); NaN where even the
    neighbours are empty."""
    buckets = np.rint(x).astype(np.int64)
    keep = (buckets >= 0) & (buckets <= max_bucket)
    sums = np.bincount(buckets[keep], weights=y[keep], minlength=max_bucket + 1)
    counts = np.bincount(buckets[keep], minlength=max_bucket + 1)
    with np.errstate(invalid="ignore", divide="ignore"):
        means = sums / counts
    filled = means.copy()
    for b in np.flatnonzero(counts == 0):
        for nb in (b - 1, b + 1):
            if 0 <= nb <= max_bucket and counts[nb] > 0:
                filled[b] = means[nb]
                break
    return filled


def curve_metrics(curve: ReplayCurve) -> dict[str, FloatArray]:
    """Bucketed unallocated GPU %, fragmentation % of capacity, fragmentation % of idle."""
    cap = float(curve.capacity_milli)
    x = 100.0 * curve.arrived / cap
    idle = cap - curve.used
    with np.errstate(invalid="ignore", divide="ignore"):
        ratio = np.where(idle > 0, 100.0 * curve.frag / idle, 0.0)
    return {
        "unallocated_gpu_pct": bucket_means(x, 100.0 - 100.0 * curve.used / cap),
        "frag_pct": bucket_means(x, 100.0 * curve.frag / cap),
        "frag_ratio_pct": bucket_means(x, ratio),
    }


def mean_over_seeds(per_seed: Sequence[FloatArray]) -> FloatArray:
    """The mean of each bucket over the seeds that reached it; NaN where none did."""
    stacked = np.vstack(per_seed)
    with warnings.catch_warnings():  # a bucket no seed reached: NaN, as documented
        warnings.simplefilter("ignore", RuntimeWarning)
        return np.asarray(np.nanmean(stacked, axis=0), dtype=np.float64)


def as_bucket_dict(values: FloatArray, digits: int = 4) -> dict[str, float | None]:
    """{"0": v0, ..., "130": v130}; None for buckets no run reached."""
    return {
        str(b): (None if np.isnan(v) else round(float(v), digits)) for b, v in enumerate(values)
    }
