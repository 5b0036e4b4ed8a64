"""``gpupool``: gpupool's own placement policy for fractional-GPU workloads.

It judges a placement by how much *expected waste* it adds, in milli-GPU, and takes the
node with the least; among nodes within ``tolerance`` milli of the best, the scheduler's
fixed tie order decides (first fit, which keeps the set of touched nodes small and whole
nodes free for multi-GPU tasks). The waste has three parts, all learned online from the
tasks placed so far (``workload_model``; design: docs/design/placement-policy.md):

1. **Priced gaps.** Every GPU's free share h counts ``h - 1000 * Y(h)``, where Y is the
   dual of a packing LP over the share sizes seen (``gap_prices``): a gap the expected
   tasks fill exactly costs nothing, a gap nothing will fill costs all of it. This decides
   which share goes beside which (a 320 next to a 650, not a 230). A gap only counts as
   fillable by the sizes whose median CPU still fits the node's free CPU.
2. **Stranded GPUs.** Free GPU capacity that the node's free CPU or memory cannot serve at
   the workload's mean CPU and memory per GPU: ``max(0, R - cpu / c, R - mem / m)``.
3. **Scarce models.** A placement on GPU model k pays ``pressure(k) * milli``, the share
   of k's free capacity that demand pinned to k (or to a set of models with k) will want:
   tasks that can run anywhere leave scarce models to the tasks that need them.

Speed: part 1 depends on (task shape, node key) only and is memoised like FGD, with a
per-shape array re-scored only for nodes whose version changed; parts 2 and 3 are computed
for all candidate nodes at once with numpy.
"""

from __future__ import annotations

from bisect import bisect_right

import numpy as np
import numpy.typing as npt

from gpupool.core.cluster import ClusterState, IntArray
from gpupool.core.frag import TargetWorkload, TaskShape, remember
from gpupool.core.framework import CycleState
from gpupool.core.request import MILLI_PER_GPU, Request
from gpupool.plugins.gpu_pick import best_connected
from gpupool.plugins.node_values import NodeValuesByShape
from gpupool.plugins.workload_model import WorkloadLearner, WorkloadModel

FloatArray = npt.NDArray[np.float64]
NodeKey = tuple[int, int, tuple[int, ...]]
"""(model id, free CPU milli, sorted free milli-GPU per GPU): ClusterState.node_key."""

TOLERANCE_MILLI = 10.0
"""Placements within this much expected waste of the best are equal (tie order decides)."""
STRAND_WEIGHT = 1.0
SCARCITY_WEIGHT = 1.0
MAX_SCORE_STEPS = 1000
"""Scores lie in [-MAX_SCORE_STEPS, 0], so a weighted topology bonus still dominates."""


class GpupoolScore:
    """Score plugin and GPU picker of the ``gpupool`` policy (see the module docstring).

    ``prior`` hands it a target workload (the "file's distribution" FGD gets); without it,
    everything is learned from the requests it is asked to score. Deterministic: no random
    numbers, and scores are integers with ties left to the scheduler's tie order.
    """

    name = "gpupool"

    def __init__(
        self,
        state: ClusterState,
        prior: TargetWorkload | None = None,
        *,
        tolerance: float = TOLERANCE_MILLI,
        strand_weight: float = STRAND_WEIGHT,
        scarcity_weight: float = SCARCITY_WEIGHT,
    ) -> None:
        self._n = state.num_nodes
        self._models = state.models
        self._learner = WorkloadLearner(state.models, prior)
        self._tolerance = tolerance
        self._strand_weight = strand_weight
        self._scarcity_weight = scarcity_weight
        self._model = WorkloadModel.empty()
        self._use(self._learner.model, first=True)

    @property
    def model(self) -> WorkloadModel:
        """The workload snapshot the scores currently use."""
        return self._model

    def _use(self, model: WorkloadModel, first: bool = False) -> None:
        same_gaps = (
            not first
            and model.prices is self._model.prices
            and model.share_cpu == self._model.share_cpu
        )
        self._model = model
        index = {m: i for i, m in enumerate(self._models)}
        self._pinned = [
            (np.array(sorted(index[m] for m in allowed), dtype=np.int64), share)
            for allowed, share in model.pinned
            if allowed
        ]
        if same_gaps:
            return
        # Waste tables by the node's free CPU: a gap counts as fillable only by the share
        # sizes whose median CPU fits the node. Above the largest need: every size seen.
        needs = sorted({cpu for _, cpu in model.share_cpu})
        self._cpu_steps = needs
        self._tables = [
            [float(w) for w in model.prices.waste_if_only(s for s, c in model.share_cpu if c <= t)]
            for t in needs[:-1]
        ]
        self._tables.append([float(w) for w in model.prices.waste])
        self._none_fit = [float(h) for h in range(MILLI_PER_GPU)] + [0.0]
        self._caches = NodeValuesByShape(self._n, np.float64)
        self._memo: dict[tuple[TaskShape, NodeKey], tuple[float, tuple[int, ...]]] = {}
        self._node_memo: dict[NodeKey, float] = {}

    # ------------------------------------------------------------------ scoring

    def score(
        self, state: ClusterState, request: Request, cycle: CycleState, nodes: IntArray
    ) -> IntArray:
        """0 for the nodes within ``tolerance`` of the least expected waste, -1 for the next
        band, and so on (at most -MAX_SCORE_STEPS)."""
        if self._learner.observe(request):
            self._use(self._learner.rebuild())
        waste = self.expected_waste(state, request, nodes)
        steps = np.floor((waste - waste.min()) / self._tolerance + 1e-9)
        return np.asarray(-np.minimum(steps, MAX_SCORE_STEPS), dtype=np.int64)

    def expected_waste(self, state: ClusterState, request: Request, nodes: IntArray) -> FloatArray:
        """Expected milli-GPU of waste that placing ``request`` on each of ``nodes`` adds
        (lower is better; for a share, on the node's best GPU)."""
        shape = TaskShape.of(request)
        delta = self._caches.values(
            state, shape, nodes, lambda key: self._evaluate(shape, key)[0]
        )
        total = delta + self._strand_delta(state, request, nodes)
        if request.num_gpus and self._pinned:
            pressure = self._pressure(state)[state.model_id[nodes] + 1]
            total = total + pressure * (self._scarcity_weight * request.total_gpu_milli)
        return np.asarray(total, dtype=np.float64)

    def _strand_delta(self, state: ClusterState, request: Request, nodes: IntArray) -> FloatArray:
        """Growth of the free GPU capacity that the node's CPU / memory cannot serve."""
        cpu_rate = self._model.cpu_per_milli
        mem_rate = self._model.mem_per_milli
        if not self._strand_weight or (cpu_rate <= 0 and mem_rate <= 0):
            return np.zeros(len(nodes))
        free = state.gpu_total_left[nodes].astype(np.float64)
        after = free - request.total_gpu_milli
        before_s = np.zeros(len(nodes))
        after_s = np.zeros(len(nodes))
        if cpu_rate > 0:
            cpu = state.cpu_left[nodes].astype(np.float64)
            before_s = np.maximum(before_s, free - cpu / cpu_rate)
            after_s = np.maximum(after_s, after - (cpu - request.cpu_milli) / cpu_rate)
        if mem_rate > 0:
            mem = state.mem_left[nodes].astype(np.float64)
            before_s = np.maximum(before_s, free - mem / mem_rate)
            after_s = np.maximum(after_s, after - (mem - request.memory_mib) / mem_rate)
        return np.asarray(self._strand_weight * (after_s - before_s), dtype=np.float64)

    def _pressure(self, state: ClusterState) -> FloatArray:
        """Per model id + 1 (index 0: nodes without GPUs): min(1, pinned demand pressure).

        Demand pinned to a model set A is a share f_A of all demand, and future demand is
        expected to fill the cluster's free capacity F; spread over A's free capacity F_A,
        each free milli of a model in A faces f_A * F / F_A of it."""
        free = np.bincount(
            state.model_id + 1, weights=state.gpu_total_left, minlength=len(self._models) + 1
        )[1:]
        total = float(free.sum())
        pressure = np.zeros(len(self._models))
        for members, share in self._pinned:
            pressure[members] += share * total / max(float(free[members].sum()), 1.0)
        return np.concatenate(([0.0], np.minimum(pressure, 1.0)))

    def _node_waste(self, key: NodeKey) -> float:
        """Priced waste of the node's free shares (memoised by node key)."""
        value = self._node_memo.get(key)
        if value is not None:
            return value
        _, cpu_left, lefts = key
        fits = bisect_right(self._cpu_steps, cpu_left) if self._cpu_steps else 1
        waste = self._tables[fits - 1] if fits else self._none_fit
        total = 0.0
        for left in lefts:
            total += waste[left]
        remember(self._node_memo, key, total)
        return total

    def _evaluate(self, shape: TaskShape, key: NodeKey) -> tuple[float, tuple[int, ...]]:
        """(least waste added, the free-share values of GPUs in order of preference: least
        waste, then tightest)."""
        memo_key = (shape, key)
        hit = self._memo.get(memo_key)
        if hit is not None:
            return hit
        model_id, cpu_left, lefts = key
        before = self._node_waste(key)
        cpu_after = cpu_left - shape.cpu_milli
        result: tuple[float, tuple[int, ...]]
        if shape.num_gpus == 0:
            result = (self._node_waste((model_id, cpu_after, lefts)) - before, ())
        elif shape.num_gpus == 1 and shape.gpu_milli < MILLI_PER_GPU:
            options: list[tuple[float, int]] = []
            for v in sorted(set(lefts)):
                if v < shape.gpu_milli:
                    continue
                rest = list(lefts)
                rest.remove(v)
                rest.append(v - shape.gpu_milli)
                rest.sort()
                after = self._node_waste((model_id, cpu_after, tuple(rest)))
                # rounded, so that costs equal on paper (1/3 + 1/3 ...) tie exactly
                options.append((round(after - before, 6), v))
            options.sort()
            result = (options[0][0], tuple(v for _, v in options)) if options else (0.0, ())
        else:
            rest = list(lefts)
            for _ in range(min(shape.num_gpus, rest.count(MILLI_PER_GPU))):
                rest.remove(MILLI_PER_GPU)
                rest.append(0)
            rest.sort()
            after = self._node_waste((model_id, cpu_after, tuple(rest)))
            result = (after - before, (MILLI_PER_GPU,))
        return remember(self._memo, memo_key, result)

    # ------------------------------------------------------------------ GPUs

    def pick_gpus(
        self, state: ClusterState, request: Request, cycle: CycleState, node: int
    ) -> tuple[int, ...]:
        """A share: the GPU whose free share adds the least waste (the tightest such share,
        then the lowest index). Whole GPUs: the best-connected fully free GPUs."""
        if not request.num_gpus:
            return ()
        count = int(state.gpu_count[node])
        lefts = state.gpu_left[node, :count].tolist()
        gpu_mem = state.gpu_mem_left[node, :count].tolist()
        need_mem = request.gpu_memory_mib
        if not request.is_sharing:
            free = [g for g in range(count) if lefts[g] == MILLI_PER_GPU and gpu_mem[g] >= need_mem]
            return best_connected(free, request.num_gpus, state.links[node])
        _, order = self._evaluate(TaskShape.of(request), state.node_key(node))
        for value in order:
            for g in range(count):
                if lefts[g] == value and gpu_mem[g] >= need_mem:
                    return (g,)
        fitting = [
            g for g in range(count) if lefts[g] >= request.gpu_milli and gpu_mem[g] >= need_mem
        ]
        return (min(fitting, key=lambda g: (lefts[g], g)),)
