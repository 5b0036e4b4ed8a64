"""Fragmentation Gradient Descent (Weng et al., ATC'23), as in FGD_METHOD.md §5.

Score of a node = floor(100 / (1 + exp(Δ / 1000))), where Δ is the growth of the node's
fragmentation (milli-GPU, against the target workload) if the task were placed there; a
share tries every GPU it fits on and keeps the best. Scores are integers on purpose: the
coarse score creates ties that the scheduler's fixed node order turns into packing.

Speed: a node's score for a request shape depends only on the node key (model, free CPU,
sorted free shares), so results are memoised by (shape, key); per shape, an array of the
last score of every node is kept and only nodes whose version changed are re-scored.
"""

from __future__ import annotations

import math

import numpy as np

from gpupool.core.cluster import ClusterState, IntArray
from gpupool.core.frag import FragmentationModel, NodeKey, TaskShape, remember
from gpupool.core.framework import CycleState
from gpupool.core.request import MILLI_PER_GPU, Request
from gpupool.plugins.gpu_pick import TightestGpu, best_connected
from gpupool.plugins.node_values import NodeValuesByShape


def sigmoid_score(delta_milli: float) -> int:
    """floor(100 · σ(−Δ)) with Δ in GPUs; 50 for no change, towards 100 for less fragmentation."""
    x = delta_milli / MILLI_PER_GPU
    if x > 700:
        return 0
    return int(100.0 / (1.0 + math.exp(x)))


class FgdScore:
    """FGD as a score plugin and as the GPU picker for the node it chose."""

    name = "fgd"

    def __init__(self, state: ClusterState, frag: FragmentationModel) -> None:
        self._frag = frag
        self._caches = NodeValuesByShape(state.num_nodes, np.int64)
        self._memo: dict[tuple[TaskShape, NodeKey], tuple[int, frozenset[int]]] = {}
        self._fallback = TightestGpu()

    def score(
        self, state: ClusterState, request: Request, cycle: CycleState, nodes: IntArray
    ) -> IntArray:
        shape = TaskShape.of(request)
        return np.asarray(
            self._caches.values(state, shape, nodes, lambda key: self._evaluate(shape, key)[0]),
            dtype=np.int64,
        )

    def _evaluate(self, shape: TaskShape, key: NodeKey) -> tuple[int, frozenset[int]]:
        """(best score, the free-share values of the GPUs that reach it) for one node state."""
        memo_key = (shape, key)
        hit = self._memo.get(memo_key)
        if hit is not None:
            return hit
        model, cpu_left, lefts = key
        before = self._frag.node_frag(key)
        cpu_after = cpu_left - shape.cpu_milli
        node_frag = self._frag.node_frag
        result: tuple[int, frozenset[int]]
        if shape.num_gpus == 0:
            after = node_frag((model, cpu_after, lefts))
            result = (sigmoid_score(after - before), frozenset())
        elif shape.num_gpus == 1 and shape.gpu_milli < MILLI_PER_GPU:
            best = -1
            values: set[int] = set()
            for v in sorted(set(lefts)):
                if v < shape.gpu_milli:
                    continue
                rest = list(lefts)
                rest.remove(v)
                rest.append(v - shape.gpu_milli)
                rest.sort()
                s = sigmoid_score(node_frag((model, cpu_after, tuple(rest))) - before)
                if s > best:
                    best, values = s, {v}
                elif s == best:
                    values.add(v)
            result = (best, frozenset(values))
        else:
            rest = list(lefts)
            for _ in range(shape.num_gpus):
                rest.remove(MILLI_PER_GPU)
            rest.extend([0] * shape.num_gpus)
            rest.sort()
            after = node_frag((model, cpu_after, tuple(rest)))
            result = (sigmoid_score(after - before), frozenset({MILLI_PER_GPU}))
        return remember(self._memo, memo_key, result)

    def pick_gpus(
        self, state: ClusterState, request: Request, cycle: CycleState, node: int
    ) -> tuple[int, ...]:
        """For a share, the lowest-indexed GPU among those with the best score."""
        if not request.is_sharing:
            if not request.num_gpus:
                return ()
            count = int(state.gpu_count[node])
            free = [g for g in range(count) if state.gpu_left[node, g] == MILLI_PER_GPU]
            if request.gpu_memory_mib:
                free = [g for g in free if state.gpu_mem_left[node, g] >= request.gpu_memory_mib]
            return best_connected(free, request.num_gpus, state.links[node])
        _, values = self._evaluate(TaskShape.of(request), state.node_key(node))
        count = int(state.gpu_count[node])
        for g in range(count):
            left = int(state.gpu_left[node, g])
            if left in values and state.gpu_mem_left[node, g] >= request.gpu_memory_mib:
                return (g,)
        return self._fallback.pick_gpus(state, request, cycle, node)
