"""The scheduling cycle for one task or one gang, run identically by the simulator and server.

Steps of one attempt:

1. ``prepare`` plugins (gangs only);
2. for each task: ``filter`` to a mask of feasible nodes; if empty, ask filters to ``explain``
   and stop with a plain-language reason;
3. ``score`` the feasible nodes, sum the weighted scores, take the highest; ties go to the
   node that comes first in the tie order (a fixed permutation, seeded by the caller);
4. ``pick_gpus`` on that node and allocate it inside a Statement (``reserve`` plugins run);
5. after the last task, ``permit`` plugins may veto the whole set;
6. on any failure the Statement is discarded: the state is exactly as before.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from gpupool.core.cluster import Allocation, BoolArray, ClusterState, IntArray
from gpupool.core.framework import Code, CycleState, Profile, Status
from gpupool.core.reasons import unplaced_reason
from gpupool.core.request import Gang, Request
from gpupool.core.transaction import Statement


@dataclass(frozen=True, slots=True)
class Decision:
    """The outcome of one attempt: allocations when placed, a reason when not."""

    status: Status
    allocations: tuple[Allocation, ...] = ()

    @property
    def placed(self) -> bool:
        return self.status.ok

    @property
    def reason(self) -> str:
        return self.status.reason


class Scheduler:
    """Places requests on a ClusterState with one Profile.

    ``tie_order`` is a permutation of node indices: ``tie_order[k]`` is the node that wins
    the k-th tie. The default is index order. The scheduler is deterministic given the state,
    the profile (whose plugins hold any seeded random generator) and the tie order.
    """

    def __init__(
        self,
        state: ClusterState,
        profile: Profile,
        tie_order: Sequence[int] | IntArray | None = None,
    ) -> None:
        self.state = state
        self.profile = profile
        n = state.num_nodes
        order = np.arange(n) if tie_order is None else np.asarray(tie_order, dtype=np.int64)
        if sorted(order.tolist()) != list(range(n)):
            raise ValueError("tie_order must be a permutation of the node indices")
        self._rank: IntArray = np.empty(n, dtype=np.int64)
        self._rank[order] = np.arange(n)
        self._all = np.ones(n, dtype=bool)

    def place(self, request: Request, *, explain: bool = True,
              exclude: BoolArray | None = None) -> Decision:
        """Place one task (a gang of one). With ``explain=False`` a failure's reason only
        says what was needed (callers that discard reasons skip the cost of explaining).
        ``exclude``: a mask of nodes not to use (e.g. reserved for another job)."""
        return self._attempt((request,), CycleState(explain=explain, exclude=exclude))

    def place_gang(self, gang: Gang, *, explain: bool = True,
                   exclude: BoolArray | None = None) -> Decision:
        """Place every member of ``gang`` or none of them (never on ``exclude``)."""
        cycle = CycleState(gang=gang, explain=explain, exclude=exclude)
        for plugin in self.profile.prepare:
            plugin.prepare(self.state, gang, cycle)
        return self._attempt(gang.members, cycle)

    def place_on(self, node: int, gpus: tuple[int, ...], request: Request) -> Allocation:
        """Take a placement decided earlier (e.g. restored after a restart) as it is, running
        the reserve plugins; raises ClusterError and changes nothing if it does not fit."""
        statement = Statement(self.state, self.profile.reserve)
        allocation = statement.allocate(node, gpus, request)
        statement.commit()
        return allocation

    def release(self, allocation: Allocation) -> None:
        """Give back a committed allocation (a task that ended): reserve plugins'
        ``unreserve`` first, then the state. Prefer this to ``state.release`` so plugin
        bookkeeping (e.g. clustering's per-node task classes) follows departures."""
        for plugin in reversed(self.profile.reserve):
            plugin.unreserve(self.state, allocation)
        self.state.release(allocation)

    def why_not(self, request: Request) -> str | None:
        """None if ``request`` would fit somewhere now, else its plain-language reason
        (without placing anything)."""
        cycle = CycleState()
        if self._filter(request, cycle).any():
            return None
        return unplaced_reason(request, self._explain(request, cycle))

    def feasible_nodes(self, request: Request, cycle: CycleState | None = None,
                       exclude: BoolArray | None = None) -> IntArray:
        """Indices of nodes that pass every filter right now (never one of ``exclude``)."""
        mask = self._filter(request, cycle or CycleState(exclude=exclude))
        return np.flatnonzero(mask)

    def _filter(self, request: Request, cycle: CycleState) -> np.ndarray:
        mask = self._all if cycle.exclude is None else ~cycle.exclude
        for plugin in self.profile.filters:
            mask = plugin.filter(self.state, request, cycle, mask)
            if not mask.any():
                break
        return mask

    def _explain(self, request: Request, cycle: CycleState) -> list[str]:
        fragments: list[str] = []
        mask = self._all if cycle.exclude is None else ~cycle.exclude
        for plugin in self.profile.filters:
            fragments.extend(plugin.explain(self.state, request, cycle, mask))
            mask = plugin.filter(self.state, request, cycle, mask)
        return fragments

    def _choose(self, request: Request, cycle: CycleState, nodes: IntArray) -> int:
        if len(nodes) == 1 or not self.profile.scores:
            return int(nodes[np.argmin(self._rank[nodes])])
        total: IntArray | None = None
        for plugin, weight in self.profile.scores:
            s = plugin.score(self.state, request, cycle, nodes)
            if s is None:
                continue
            if weight != 1:
                s = s * weight
            total = s if total is None else total + s
        if total is None:
            return int(nodes[np.argmin(self._rank[nodes])])
        best = nodes[total == total.max()]
        if len(best) == 1:
            return int(best[0])
        return int(best[np.argmin(self._rank[best])])

    def _attempt(self, members: Sequence[Request], cycle: CycleState) -> Decision:
        statement = Statement(self.state, self.profile.reserve)
        try:
            return self._run(members, cycle, statement)
        except BaseException:
            # A plugin raised mid-attempt: undo what was taken so far, then re-raise.
            statement.discard()
            raise

    def _run(self, members: Sequence[Request], cycle: CycleState, statement: Statement) -> Decision:
        distinct = cycle.gang is not None and cycle.gang.distinct_nodes
        for request in members:
            mask = self._filter(request, cycle)
            taken_fits = False
            if distinct and cycle.placed:
                used = [a.node for a in cycle.placed]
                taken_fits = bool(mask[used].any())
                mask = mask.copy()
                mask[used] = False
            nodes = np.flatnonzero(mask)
            if len(nodes) == 0:
                fragments = self._explain(request, cycle) if cycle.explain else []
                if taken_fits:
                    fragments = [f"only {len(cycle.placed)} node(s) can each take one task "
                                 "of this one-task-per-node gang"]
                statement.discard()
                reason = unplaced_reason(request, fragments)
                if cycle.gang is not None and len(members) > 1:
                    reason = (
                        f"gang {cycle.gang.name} ({len(members)} tasks) cannot be placed "
                        f"together: task {request.name} {reason}"
                    )
                return Decision(Status(Code.UNSCHEDULABLE, reason))
            node = self._choose(request, cycle, nodes)
            gpus = self.profile.gpu_pick.pick_gpus(self.state, request, cycle, node)
            cycle.placed.append(statement.allocate(node, gpus, request))
        for plugin in self.profile.permit:
            status = plugin.permit(self.state, statement.allocations, cycle)
            if not status.ok:
                statement.discard()
                return Decision(status)
        return Decision(Status(), statement.commit())
