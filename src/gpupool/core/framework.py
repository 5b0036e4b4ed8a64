"""The plugin framework: named extension points, the per-attempt scratchpad, and profiles.

Borrowed from the Kubernetes scheduling framework, adapted to array state: a filter judges
*all* candidate nodes at once (a boolean mask) instead of one node per call, and a score
plugin scores an index array of nodes, because a Python call per node is too slow for
1,000+ nodes at thousands of decisions per second.

Extension points, in the order one attempt runs them:

1. ``queue_sort``  orders waiting requests (the caller's queue uses it);
2. ``prepare``     once per gang, before any member is placed (e.g. pick racks);
3. ``filter``      narrows the candidate mask; ``explain`` says why nodes were cut (slow path,
                   only when nothing fits);
4. ``score``       integer scores for feasible nodes, combined by profile weights; the highest
                   total wins and ties go to the first node of the scheduler's tie order;
5. ``pick_gpus``   chooses the GPUs on the chosen node;
6. ``reserve`` / ``unreserve``  plugins' own bookkeeping, undone on rollback;
7. ``permit``      a last veto over the whole set of allocations (quota, gang size);
8. bind            is the caller's: the simulator records, the server writes its database.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from enum import Enum
from typing import Any, Protocol, runtime_checkable

from gpupool.core.cluster import Allocation, BoolArray, ClusterState, IntArray
from gpupool.core.request import Gang, Request


class Code(Enum):
    SUCCESS = "success"
    UNSCHEDULABLE = "unschedulable"
    """Does not fit now; may fit after something departs or is preempted."""
    REJECTED = "rejected"
    """Vetoed by a permit plugin (quota, policy)."""


@dataclass(frozen=True, slots=True)
class Status:
    code: Code = Code.SUCCESS
    reason: str = ""

    @property
    def ok(self) -> bool:
        return self.code is Code.SUCCESS


SUCCESS = Status()


@dataclass(slots=True)
class CycleState:
    """Scratchpad for one scheduling attempt (one task, or one whole gang).

    ``placed`` lists the allocations already made in this attempt, so plugins can steer the
    remaining gang members (same rack, same node). ``data`` is free-form per-plugin storage,
    keyed by plugin name.
    """

    gang: Gang | None = None
    explain: bool = True
    """Whether a failure should carry the filters' plain-language explanation."""
    placed: list[Allocation] = field(default_factory=list)
    data: dict[str, Any] = field(default_factory=dict)
    exclude: BoolArray | None = None
    """Nodes this attempt must not use (reserved for another job), or None."""


class Plugin(Protocol):
    name: str


@runtime_checkable
class QueueSortPlugin(Protocol):
    name: str

    def sort_key(self, request: Request, arrival: int) -> tuple[int, ...]:
        """Smaller keys are scheduled first. ``arrival`` is a monotonic sequence number."""
        ...


@runtime_checkable
class PreparePlugin(Protocol):
    name: str

    def prepare(self, state: ClusterState, gang: Gang, cycle: CycleState) -> None:
        """Called once before the members of ``gang`` are placed."""
        ...


@runtime_checkable
class FilterPlugin(Protocol):
    name: str

    def filter(
        self, state: ClusterState, request: Request, cycle: CycleState, candidates: BoolArray
    ) -> BoolArray:
        """Return the subset of ``candidates`` (a mask) on which ``request`` may be placed."""
        ...

    def explain(
        self, state: ClusterState, request: Request, cycle: CycleState, candidates: BoolArray
    ) -> list[str]:
        """Plain-language fragments ("3 nodes lack 8 CPU") for the nodes this filter cuts
        from ``candidates``. Only called when a request fits nowhere."""
        ...


@runtime_checkable
class ScorePlugin(Protocol):
    name: str

    def score(
        self, state: ClusterState, request: Request, cycle: CycleState, nodes: IntArray
    ) -> IntArray | None:
        """Integer scores, one per entry of ``nodes`` (all feasible), higher is better;
        ``None`` when the plugin has no opinion on this request (all nodes equal)."""
        ...


@runtime_checkable
class GpuPickPlugin(Protocol):
    name: str

    def pick_gpus(
        self, state: ClusterState, request: Request, cycle: CycleState, node: int
    ) -> tuple[int, ...]:
        """The GPUs of ``node`` that ``request`` takes (``request.num_gpus`` of them)."""
        ...


@runtime_checkable
class ReservePlugin(Protocol):
    name: str

    def reserve(self, state: ClusterState, allocation: Allocation) -> None: ...

    def unreserve(self, state: ClusterState, allocation: Allocation) -> None: ...


@runtime_checkable
class PermitPlugin(Protocol):
    name: str

    def permit(
        self, state: ClusterState, allocations: Sequence[Allocation], cycle: CycleState
    ) -> Status:
        """Veto (or allow) the complete set of allocations of one attempt."""
        ...


@dataclass(frozen=True)
class Profile:
    """What runs at each extension point. Built by name from the plugins package."""

    name: str
    filters: tuple[FilterPlugin, ...]
    scores: tuple[tuple[ScorePlugin, int], ...]
    gpu_pick: GpuPickPlugin
    queue_sort: QueueSortPlugin | None = None
    prepare: tuple[PreparePlugin, ...] = ()
    reserve: tuple[ReservePlugin, ...] = ()
    permit: tuple[PermitPlugin, ...] = ()

    def describe(self) -> str:
        """A readable one-line summary: which plugin runs where."""
        parts = [f"filter={'+'.join(p.name for p in self.filters)}"]
        if self.scores:
            parts.append("score=" + "+".join(f"{p.name}x{w}" for p, w in self.scores))
        parts.append(f"gpus={self.gpu_pick.name}")
        if self.prepare:
            parts.append("prepare=" + "+".join(p.name for p in self.prepare))
        if self.permit:
            parts.append("permit=" + "+".join(p.name for p in self.permit))
        return f"{self.name}: " + ", ".join(parts)
