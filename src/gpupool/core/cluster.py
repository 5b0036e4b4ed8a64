"""Cluster state as arrays: per-node CPU and memory, per-GPU free share, models, links, labels.

The state is the single source of truth the scheduler reads and the only thing ``allocate``
and ``release`` change. Every change bumps the node's ``version`` so that plugins can keep
per-node caches and re-score only nodes that changed.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from enum import IntEnum

import numpy as np
import numpy.typing as npt

from gpupool.core.request import MILLI_PER_GPU, Request

IntArray = npt.NDArray[np.int64]
BoolArray = npt.NDArray[np.bool_]


class LinkLevel(IntEnum):
    """How two GPUs of one node talk; higher is better."""

    CROSS_SOCKET = 0
    PCIE = 1
    NVLINK = 2


class ClusterError(ValueError):
    """An invalid node description or an impossible allocation."""


@dataclass(frozen=True, slots=True)
class GpuSpec:
    model: str
    memory_mib: int = 0


@dataclass(frozen=True, slots=True)
class NodeSpec:
    """A node as declared by its owner. ``links[i][j]`` is the LinkLevel between GPUs i and j;
    ``None`` means all GPUs are on one PCIe switch (uniform links)."""

    name: str
    cpu_milli: int
    memory_mib: int
    gpus: tuple[GpuSpec, ...] = ()
    labels: Mapping[str, str] = field(default_factory=dict)
    links: tuple[tuple[int, ...], ...] | None = None

    def __post_init__(self) -> None:
        if self.cpu_milli < 0 or self.memory_mib < 0:
            raise ClusterError(f"node {self.name!r}: CPU and memory must not be negative")
        models = {g.model for g in self.gpus}
        if len(models) > 1:
            raise ClusterError(f"node {self.name!r}: mixed GPU models {sorted(models)}")
        if self.links is not None:
            n = len(self.gpus)
            if len(self.links) != n or any(len(row) != n for row in self.links):
                raise ClusterError(f"node {self.name!r}: links must be a {n}x{n} matrix")


@dataclass(frozen=True, slots=True)
class Allocation:
    """What one task holds on one node; ``release`` gives exactly this back."""

    request: Request
    node: int
    gpus: tuple[int, ...]
    gpu_milli: int
    gpu_memory_mib: int


class ClusterState:
    """Mutable free-capacity arrays for a fixed set of nodes (indexed 0..N-1).

    Invariants: ``0 <= cpu_left <= cpu_cap``; ``gpu_left[n, g]`` is in [0, 1000] for real GPUs
    and -1 for padding slots beyond a node's GPU count; ``gpu_total_left[n]`` is the sum of the
    node's real ``gpu_left``; ``version[n]`` grows on every change of node n.
    """

    def __init__(self, nodes: Sequence[NodeSpec]) -> None:
        if not nodes:
            raise ClusterError("a cluster needs at least one node")
        names = [n.name for n in nodes]
        if len(set(names)) != len(names):
            raise ClusterError("node names must be unique")
        self.specs: tuple[NodeSpec, ...] = tuple(nodes)
        self.names: tuple[str, ...] = tuple(names)
        self.index: dict[str, int] = {name: i for i, name in enumerate(names)}
        n = len(nodes)
        width = max(1, max(len(s.gpus) for s in nodes))
        self.max_gpus = width
        self.models: tuple[str, ...] = tuple(sorted({g.model for s in nodes for g in s.gpus}))
        model_ids = {m: i for i, m in enumerate(self.models)}
        self.cpu_cap: IntArray = np.array([s.cpu_milli for s in nodes], dtype=np.int64)
        self.mem_cap: IntArray = np.array([s.memory_mib for s in nodes], dtype=np.int64)
        self.gpu_count: IntArray = np.array([len(s.gpus) for s in nodes], dtype=np.int64)
        self.model_id: IntArray = np.array(
            [model_ids[s.gpus[0].model] if s.gpus else -1 for s in nodes], dtype=np.int64
        )
        self.gpu_mem_cap: IntArray = np.zeros((n, width), dtype=np.int64)
        self.gpu_left: IntArray = np.full((n, width), -1, dtype=np.int64)
        for i, s in enumerate(nodes):
            self.gpu_left[i, : len(s.gpus)] = MILLI_PER_GPU
            self.gpu_mem_cap[i, : len(s.gpus)] = [g.memory_mib for g in s.gpus]
        self.cpu_left: IntArray = self.cpu_cap.copy()
        self.mem_left: IntArray = self.mem_cap.copy()
        self.gpu_mem_left: IntArray = self.gpu_mem_cap.copy()
        self.gpu_total_left: IntArray = self.gpu_count * MILLI_PER_GPU
        self.version: IntArray = np.zeros(n, dtype=np.int64)
        self.labels: tuple[Mapping[str, str], ...] = tuple(s.labels for s in nodes)
        self.links: tuple[npt.NDArray[np.int64] | None, ...] = tuple(
            None if s.links is None or _uniform(s.links) else np.array(s.links, dtype=np.int64)
            for s in nodes
        )

    @property
    def num_nodes(self) -> int:
        return len(self.names)

    @property
    def total_gpu_milli(self) -> int:
        return int(self.gpu_count.sum()) * MILLI_PER_GPU

    def model_mask(self, models: tuple[str, ...]) -> BoolArray:
        """Nodes whose GPU model is one of ``models`` (all GPU nodes when empty)."""
        if not models:
            return self.model_id >= 0
        wanted = [self.models.index(m) for m in models if m in self.models]
        return np.isin(self.model_id, wanted)

    def label_mask(self, required: tuple[tuple[str, str], ...]) -> BoolArray:
        """Nodes whose labels hold every (key, value) of ``required`` (all nodes when empty)."""
        mask = np.ones(self.num_nodes, dtype=bool)
        for key, value in required:
            mask &= np.fromiter((labels.get(key) == value for labels in self.labels),
                                dtype=bool, count=self.num_nodes)
        return mask

    def node_key(self, node: int) -> tuple[int, int, tuple[int, ...]]:
        """A hashable summary of what fragmentation depends on: model, free CPU and the
        sorted free shares of the node's GPUs. Equal keys mean equal fragmentation."""
        count = int(self.gpu_count[node])
        left = sorted(self.gpu_left[node, :count].tolist())
        return (int(self.model_id[node]), int(self.cpu_left[node]), tuple(left))

    def allocate(self, node: int, gpus: tuple[int, ...], request: Request) -> Allocation:
        """Take ``request`` on ``node`` using GPUs ``gpus``; raises ClusterError (and changes
        nothing) if it does not fit."""
        if len(gpus) != request.num_gpus or len(set(gpus)) != len(gpus):
            raise ClusterError(
                f"{request.name}: needs {request.num_gpus} distinct GPUs, got {gpus}"
            )
        if self.cpu_left[node] < request.cpu_milli or self.mem_left[node] < request.memory_mib:
            raise ClusterError(f"{request.name}: not enough CPU or memory on {self.names[node]}")
        count = int(self.gpu_count[node])
        milli = request.gpu_milli
        gmem = request.gpu_memory_mib
        for g in gpus:
            if not 0 <= g < count:
                raise ClusterError(f"{request.name}: GPU {g} does not exist on {self.names[node]}")
            if self.gpu_left[node, g] < milli or self.gpu_mem_left[node, g] < gmem:
                raise ClusterError(f"{request.name}: GPU {g} of {self.names[node]} is too full")
        self.cpu_left[node] -= request.cpu_milli
        self.mem_left[node] -= request.memory_mib
        for g in gpus:
            self.gpu_left[node, g] -= milli
            self.gpu_mem_left[node, g] -= gmem
        self.gpu_total_left[node] -= milli * len(gpus)
        self.version[node] += 1
        return Allocation(request, node, tuple(gpus), milli, gmem)

    def release(self, allocation: Allocation) -> None:
        """Give back exactly what ``allocate`` took."""
        node = allocation.node
        self.cpu_left[node] += allocation.request.cpu_milli
        self.mem_left[node] += allocation.request.memory_mib
        for g in allocation.gpus:
            self.gpu_left[node, g] += allocation.gpu_milli
            self.gpu_mem_left[node, g] += allocation.gpu_memory_mib
        self.gpu_total_left[node] += allocation.gpu_milli * len(allocation.gpus)
        self.version[node] += 1


def _uniform(links: tuple[tuple[int, ...], ...]) -> bool:
    values = {v for i, row in enumerate(links) for j, v in enumerate(row) if i != j}
    return len(values) <= 1
