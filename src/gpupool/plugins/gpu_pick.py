"""Choosing GPUs inside the chosen node.

Whole-GPU requests take the best-connected set of fully free GPUs (most NVLink pairs, then
same-socket PCIe), lowest indices on ties; on a node with uniform links that is simply the
lowest-indexed free GPUs. A share goes to the tightest GPU that fits (best fit inside the
node), or to a random fitting GPU for the ``random`` policy.
"""

from __future__ import annotations

from itertools import combinations

import numpy as np

from gpupool.core.cluster import ClusterState
from gpupool.core.framework import CycleState
from gpupool.core.request import Request
from gpupool.plugins.fit import fitting_gpus


def best_connected(free: list[int], k: int, links: np.ndarray | None) -> tuple[int, ...]:
    """The k GPUs of ``free`` (ascending indices) with the highest sum of pairwise link
    levels; the lexicographically smallest set among equals."""
    if links is None or k <= 1:
        return tuple(free[:k])
    best: tuple[int, ...] = ()
    best_value = -1
    for combo in combinations(free, k):
        value = sum(int(links[a, b]) for a, b in combinations(combo, 2))
        if value > best_value:
            best, best_value = combo, value
    return best


def _fitting(state: ClusterState, request: Request, node: int) -> list[int]:
    count = int(state.gpu_count[node])
    fit = fitting_gpus(state, request)[node, :count]
    return [int(g) for g in np.flatnonzero(fit)]


class TightestGpu:
    """Shares: the fitting GPU with the least free share (lowest index on ties).
    Whole GPUs: the best-connected set of fully free GPUs."""

    name = "tightest"

    def pick_gpus(
        self, state: ClusterState, request: Request, cycle: CycleState, node: int
    ) -> tuple[int, ...]:
        if not request.num_gpus:
            return ()
        fitting = _fitting(state, request, node)
        if request.is_sharing:
            left = state.gpu_left[node]
            return (min(fitting, key=lambda g: (int(left[g]), g)),)
        return best_connected(fitting, request.num_gpus, state.links[node])


class RandomGpu:
    """Shares: a uniformly random fitting GPU. Whole GPUs: as TightestGpu."""

    name = "random-gpu"

    def __init__(self, rng: np.random.Generator) -> None:
        self._rng = rng

    def pick_gpus(
        self, state: ClusterState, request: Request, cycle: CycleState, node: int
    ) -> tuple[int, ...]:
        if not request.num_gpus:
            return ()
        fitting = _fitting(state, request, node)
        if request.is_sharing:
            return (fitting[int(self._rng.integers(len(fitting)))],)
        return best_connected(fitting, request.num_gpus, state.links[node])
