"""A builder for tiny hand-made clusters, shared by the core and policy tests.

``node(...)`` describes one node *and* how much of it is already in use; ``cluster(...)``
turns a list of them into a ClusterState with those pre-allocations made; ``scheduler(...)``
adds a policy profile (and tells the profile's reserve plugins about the pre-allocations, so
that e.g. clustering knows what already runs where).

Pre-allocations, per node: every GPU whose ``free`` share is below 1000 gets one task that
takes the rest of it (a sharing task if something is left, a one-GPU task if nothing is);
CPU and memory above ``cpu_free`` / ``mem_free_gib`` are taken by one CPU-only task.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from gpupool.core.cluster import Allocation, ClusterState, GpuSpec, LinkLevel, NodeSpec
from gpupool.core.frag import TargetWorkload, TaskShape
from gpupool.core.request import MILLI_PER_GPU, Request
from gpupool.core.scheduler import Scheduler
from gpupool.plugins.profiles import PolicyContext, build_profile

GIB = 1024


@dataclass(frozen=True)
class NodeDef:
    """A NodeSpec plus what is already in use on it."""

    spec: NodeSpec
    free: tuple[int, ...]
    cpu_free_milli: int
    mem_free_mib: int
    extra: tuple[tuple[tuple[int, ...], Request], ...] = field(default_factory=tuple)


def node(
    name: str,
    cpu: float = 32,
    mem_gib: int = 64,
    gpus: int = 0,
    model: str = "A100",
    free: Sequence[int] | None = None,
    cpu_free: float | None = None,
    mem_free_gib: int | None = None,
    gpu_mem_mib: int = 0,
    labels: Mapping[str, str] | None = None,
    nvlink_groups: Sequence[Sequence[int]] | None = None,
) -> NodeDef:
    """One node: ``cpu`` cores, ``mem_gib`` GiB, ``gpus`` GPUs of ``model``; ``free`` gives
    each GPU's free milli-GPU (default all 1000). ``nvlink_groups`` lists NVLink islands:
    GPUs in one island are linked by NVLINK, all other pairs by PCIE."""
    free_t = tuple(free) if free is not None else (MILLI_PER_GPU,) * gpus
    if len(free_t) != gpus:
        raise ValueError(f"{name}: free has {len(free_t)} entries for {gpus} GPUs")
    links = None
    if nvlink_groups is not None:
        island = {g: i for i, group in enumerate(nvlink_groups) for g in group}
        links = tuple(
            tuple(
                int(LinkLevel.NVLINK)
                if a != b and a in island and island.get(b) == island[a]
                else int(LinkLevel.PCIE)
                for b in range(gpus)
            )
            for a in range(gpus)
        )
    spec = NodeSpec(
        name=name,
        cpu_milli=round(cpu * 1000),
        memory_mib=mem_gib * GIB,
        gpus=tuple(GpuSpec(model, gpu_mem_mib) for _ in range(gpus)),
        labels=dict(labels or {}),
        links=links,
    )
    cpu_free_milli = spec.cpu_milli if cpu_free is None else round(cpu_free * 1000)
    mem_free_mib = spec.memory_mib if mem_free_gib is None else mem_free_gib * GIB
    return NodeDef(spec, free_t, cpu_free_milli, mem_free_mib)


def _pre_allocate(state: ClusterState, defs: Sequence[NodeDef]) -> list[Allocation]:
    allocations: list[Allocation] = []
    for i, d in enumerate(defs):
        name = d.spec.name
        for g, f in enumerate(d.free):
            if f < MILLI_PER_GPU:
                used = Request(f"pre-{name}-gpu{g}", num_gpus=1, gpu_milli=MILLI_PER_GPU - f)
                allocations.append(state.allocate(i, (g,), used))
        cpu_used = d.spec.cpu_milli - d.cpu_free_milli
        mem_used = d.spec.memory_mib - d.mem_free_mib
        if cpu_used or mem_used:
            used = Request(f"pre-{name}-cpu", cpu_milli=cpu_used, memory_mib=mem_used)
            allocations.append(state.allocate(i, (), used))
    return allocations


def cluster(defs: Sequence[NodeDef]) -> ClusterState:
    """The ClusterState of ``defs`` with their pre-allocations made."""
    state = ClusterState([d.spec for d in defs])
    _pre_allocate(state, defs)
    return state


def workload(*shapes: tuple[TaskShape, float]) -> TargetWorkload:
    """A target workload from (shape, weight) pairs (weights should sum to 1)."""
    return TargetWorkload(tuple(s for s, _ in shapes), tuple(w for _, w in shapes))


def scheduler(
    policy: str,
    nodes: Sequence[NodeDef],
    tie_order: Sequence[int] | None = None,
    workload: TargetWorkload | None = None,
    seed: int = 0,
) -> Scheduler:
    """A Scheduler for ``policy`` on the cluster of ``nodes`` (pre-allocations made and
    reported to the profile's reserve plugins). FGD gets ``workload``, or a default one of
    a whole GPU and half a GPU, equally likely."""
    state = ClusterState([d.spec for d in nodes])
    if workload is None and policy == "fgd":
        workload = TargetWorkload(
            (TaskShape(0, 1, MILLI_PER_GPU), TaskShape(0, 1, 500)), (0.5, 0.5)
        )
    context = PolicyContext(rng=np.random.default_rng(seed), workload=workload)
    profile = build_profile(policy, state, context)
    for allocation in _pre_allocate(state, nodes):
        for plugin in profile.reserve:
            plugin.reserve(state, allocation)
    return Scheduler(state, profile, tie_order=tie_order)


def gpu(n: int = 1, milli: int = MILLI_PER_GPU, cpu: float = 0, mem_gib: int = 0,
        models: tuple[str, ...] = (), gpu_mem_mib: int = 0, name: str = "t") -> Request:
    """A request: ``n`` GPUs of ``milli`` each (a share when below 1000), ``cpu`` cores."""
    return Request(
        name,
        cpu_milli=round(cpu * 1000),
        memory_mib=mem_gib * GIB,
        num_gpus=n,
        gpu_milli=milli if n else 0,
        gpu_memory_mib=gpu_mem_mib,
        gpu_models=models,
    )


def snapshot(state: ClusterState) -> dict[str, list[int] | list[list[int]]]:
    """Every mutable array of the state, as plain lists (compare two snapshots with ==)."""
    return {
        "cpu_left": state.cpu_left.tolist(),
        "mem_left": state.mem_left.tolist(),
        "gpu_left": state.gpu_left.tolist(),
        "gpu_mem_left": state.gpu_mem_left.tolist(),
        "gpu_total_left": state.gpu_total_left.tolist(),
    }
