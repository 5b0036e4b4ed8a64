"""Plots in the style of the FGD paper (matplotlib, written to a file; no display needed)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np

from gpupool.sim.protocol import FloatArray
from gpupool.sim.timed import TimedResult

POLICY_STYLE = {
    "random": ("tab:gray", ":"),
    "dotprod": ("tab:orange", "-"),
    "clustering": ("tab:green", "-"),
    "packing": ("tab:purple", "-"),
    "bestfit": ("tab:blue", "-"),
    "fgd": ("tab:red", "-"),
    "binpack": ("tab:brown", "--"),
    "spread": ("tab:pink", "--"),
    "gpupool": ("black", "-"),
}


def plot_unallocated(
    curves: Mapping[str, FloatArray], path: str | Path, title: str, x_window: tuple[int, int]
) -> None:
    """Fig. 9(a): unallocated GPU % against arrived %, median over seeds with a 25–75 %
    band per policy, and the ideal line. ``curves`` maps a policy to a (seeds × 131) array."""
    fig, ax = plt.subplots(figsize=(7.5, 4.5), dpi=120)
    x = np.arange(next(iter(curves.values())).shape[1])
    lo, hi = x_window
    window = (x >= lo) & (x <= hi)
    ideal = np.clip(100 - x, 0, None)
    ax.plot(x[window], ideal[window], "k--", linewidth=1, label="ideal")
    for policy, per_seed in curves.items():
        with np.errstate(invalid="ignore"):
            median = np.nanmedian(per_seed, axis=0)
            q1, q3 = np.nanpercentile(per_seed, [25, 75], axis=0)
        color, style = POLICY_STYLE.get(policy, (None, "-"))
        (line,) = ax.plot(
            x[window], median[window], style, color=color, linewidth=1.6, label=policy
        )
        ax.fill_between(x[window], q1[window], q3[window], color=line.get_color(), alpha=0.2)
    ax.set_xlabel("arrived GPU demand (% of cluster GPUs)")
    ax.set_ylabel("unallocated GPUs (%)")
    ax.set_title(title)
    ax.set_xlim(lo, hi)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def plot_allocation(results: Sequence[TimedResult], path: str | Path, title: str) -> None:
    """Allocated GPU % over simulated time (hours), one line per (policy, seed) run."""
    fig, ax = plt.subplots(figsize=(7.5, 4.5), dpi=120)
    for r in results:
        hours = np.asarray(r.times) / 3600.0
        ax.plot(hours, r.allocated_gpu_pct, linewidth=1.2, label=f"{r.policy} (seed {r.seed})")
    ax.set_xlabel("simulated time (hours)")
    ax.set_ylabel("allocated GPUs (%)")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
