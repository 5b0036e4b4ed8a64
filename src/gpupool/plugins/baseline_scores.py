"""The baseline scorers of the FGD study (FGD_METHOD.md §6), plus binpack and spread.

All scores are integers, computed for every feasible node at once. MAX_CPU and MAX_GPU are
the study's normalisers (a 128-core, 8-GPU node).
"""

from __future__ import annotations

import numpy as np

from gpupool.core.cluster import Allocation, ClusterState, IntArray
from gpupool.core.framework import CycleState
from gpupool.core.request import MILLI_PER_GPU, Request

MAX_CPU = 128_000
MAX_GPU = 8 * MILLI_PER_GPU


class RandomScore:
    """Uniformly random among feasible nodes (from the injected generator).

    Scores are a random permutation of 0..len(nodes)-1: distinct (no ties), and small
    enough that a weighted topology bonus still dominates them."""

    name = "random"

    def __init__(self, rng: np.random.Generator) -> None:
        self._rng = rng

    def score(
        self, state: ClusterState, request: Request, cycle: CycleState, nodes: IntArray
    ) -> IntArray:
        return self._rng.permutation(len(nodes)).astype(np.int64)


class DotProductScore:
    """Prefers the smallest dot product of the node's free and the request's vectors."""

    name = "dotprod"

    def score(
        self, state: ClusterState, request: Request, cycle: CycleState, nodes: IntArray
    ) -> IntArray:
        cpu = state.cpu_left[nodes] / MAX_CPU * (request.cpu_milli / MAX_CPU)
        gpu = state.gpu_total_left[nodes] / MAX_GPU * (request.total_gpu_milli / MAX_GPU)
        return np.floor(100 * (1 - 0.5 * (cpu + gpu))).astype(np.int64)


class BestFitScore:
    """Prefers the node left with the least free CPU and GPU after placement."""

    name = "bestfit"

    def score(
        self, state: ClusterState, request: Request, cycle: CycleState, nodes: IntArray
    ) -> IntArray:
        cpu = (state.cpu_left[nodes] - request.cpu_milli) / MAX_CPU
        gpu = (state.gpu_total_left[nodes] - request.total_gpu_milli) / MAX_GPU
        return np.floor(100 * (1 - (0.5 * cpu + 0.5 * gpu))).astype(np.int64)


class GpuPackingScore:
    """Shared GPUs first, then free GPUs on used nodes, then idle nodes (FGD_METHOD.md §6)."""

    name = "packing"

    def score(
        self, state: ClusterState, request: Request, cycle: CycleState, nodes: IntArray
    ) -> IntArray:
        if not request.num_gpus:
            return np.zeros(len(nodes), dtype=np.int64)
        count = state.gpu_count[nodes]
        idle = state.gpu_total_left[nodes] == count * MILLI_PER_GPU
        idle_score = np.maximum(33 - count, count)
        if request.is_sharing:
            left = state.gpu_left[nodes]
            tight = np.where(left >= request.gpu_milli, left, MILLI_PER_GPU + 1).min(axis=1)
            shared = np.maximum(100 - (tight * 100 // MILLI_PER_GPU) // 10, 50)
            used = np.where(tight == MILLI_PER_GPU, 49, shared)
        else:
            used = np.full(len(nodes), max(50 - request.num_gpus, 33), dtype=np.int64)
        return np.where(idle, idle_score, used).astype(np.int64)


class GpuClusteringScore:
    """Keeps tasks of one class ("share", or "k GPUs") together (FGD_METHOD.md §6).

    Also a reserve plugin: it counts each node's tasks per class.
    """

    name = "clustering"

    def __init__(self, state: ClusterState) -> None:
        self._classes = state.max_gpus + 1
        self._counts = np.zeros((state.num_nodes, self._classes + 1), dtype=np.int64)

    def _class(self, request: Request) -> int:
        return 0 if request.is_sharing else min(request.num_gpus, self._classes)

    def score(
        self, state: ClusterState, request: Request, cycle: CycleState, nodes: IntArray
    ) -> IntArray:
        if not request.num_gpus:
            return np.zeros(len(nodes), dtype=np.int64)
        counts = self._counts[nodes]
        present = counts > 0
        kinds = present.sum(axis=1)
        mine = present[:, self._class(request)]
        base = np.where(mine, np.where(kinds == 1, 75, 50), np.where(kinds == 0, 25, 0))
        return (25 * (MAX_GPU - state.gpu_total_left[nodes]) // MAX_GPU + base).astype(np.int64)

    def reserve(self, state: ClusterState, allocation: Allocation) -> None:
        if allocation.request.num_gpus:
            self._counts[allocation.node, self._class(allocation.request)] += 1

    def unreserve(self, state: ClusterState, allocation: Allocation) -> None:
        if allocation.request.num_gpus:
            self._counts[allocation.node, self._class(allocation.request)] -= 1


class BinpackScore:
    """Whole GPUs: prefer the node that is fullest after placement (keeps whole nodes free)."""

    name = "binpack"

    def score(
        self, state: ClusterState, request: Request, cycle: CycleState, nodes: IntArray
    ) -> IntArray:
        cap = np.maximum(state.gpu_count[nodes] * MILLI_PER_GPU, 1)
        after = state.gpu_total_left[nodes] - request.total_gpu_milli
        return (100 * (cap - after) // cap).astype(np.int64)


class SpreadScore:
    """Whole GPUs: prefer the node with the most free GPUs after placement."""

    name = "spread"

    def score(
        self, state: ClusterState, request: Request, cycle: CycleState, nodes: IntArray
    ) -> IntArray:
        cap = np.maximum(state.gpu_count[nodes] * MILLI_PER_GPU, 1)
        after = state.gpu_total_left[nodes] - request.total_gpu_milli
        return (100 * after // cap).astype(np.int64)
