"""Step 1 of the cycle: the order in which waiting jobs are tried.

Both orders put first the jobs that must not lose their turn: a job victims were preempted
for (*nominated*) or one that holds a reservation; then jobs that stay inside their queue's
guaranteed quota; then the rest.

* ``fifo``: then higher priority, then first come first served, across all queues (with
  "inside its quota" judged at the start of the cycle, as before fair share existed).
* ``fairshare``: then the team with the lowest fair-share load (core/fairshare.py), and in
  it higher priority, then the user with the lowest load, then first come. The loads
  change as the cycle places jobs: a team that just got a job placed may fall behind
  another, so teams with work waiting take turns instead of one taking every free GPU.

The order is produced lazily (``JobOrder`` is an iterator told of each placement), in
O(log teams) per job.
"""

from __future__ import annotations

import heapq
from collections import defaultdict
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from gpupool.core.fairshare import FairShare
from gpupool.core.live import LiveJob
from gpupool.core.quota import QuotaBook

ORDERS = ("fifo", "fairshare")


@dataclass(frozen=True, slots=True)
class QueuePolicy:
    """How waiting jobs are ordered and whether reservations with backfill are made.

    ``backfill`` off: any job that fits starts (a large job may starve behind small ones).
    On: a job first in line that does not fit, or one waiting longer than
    ``reserve_after_s``, reserves the nodes that free soonest (at most ``max_reservations``
    jobs at once); others start there only if their time limit ends before the reservation
    does. A running job without a time limit is assumed to end ``default_run_s`` after it
    started, for estimating when a reservation starts."""

    order: str = "fifo"
    backfill: bool = False
    reserve_after_s: float = 300.0
    default_run_s: float = 3600.0
    max_reservations: int = 4

    def __post_init__(self) -> None:
        if self.order not in ORDERS:
            raise ValueError(f"queue order {self.order!r}: choose one of {', '.join(ORDERS)}")


GREEDY_FIFO = QueuePolicy()
"""Priority then first come, no reservations: the order before fair share existed."""


def _urgent(job: LiveJob) -> bool:
    return job.nominated or job.reservation is not None


class JobOrder:
    """Iterates ``pending`` in the policy's order; call ``placed(job)`` after a job was
    placed so the loads that decide the order follow."""

    def __init__(self, pending: list[LiveJob], running: list[LiveJob], quota: QuotaBook,
                 policy: QueuePolicy, shares: FairShare | None,
                 weight_of: Callable[[LiveJob], int]) -> None:
        self._quota = quota
        self._fair = policy.order == "fairshare"
        self._shares = shares or FairShare()
        self._weight_of = weight_of
        self.team_held: dict[str, float] = defaultdict(float)
        self.user_held: dict[tuple[str, str], float] = defaultdict(float)
        for job in running:
            if job.allocations:
                amount = weight_of(job)
                self.team_held[job.queue] += amount
                self.user_held[(job.queue, job.user)] += amount
        self._static: list[LiveJob] | None = None
        if not self._fair:  # FIFO's keys do not change as jobs are placed: one sort
            self._static = sorted(pending, key=lambda j: (
                not j.nominated, j.reservation is None, not quota.within_quota(j.queue, j.amount),
                -j.priority, j.created_at, j.id))
            pending = []
        lanes: dict[str, dict[str, list[LiveJob]]] = defaultdict(lambda: defaultdict(list))
        for job in pending:
            lanes[job.queue][job.user if self._fair else ""].append(job)
        self._lanes: dict[str, dict[str, list[LiveJob]]] = {}
        self._users: dict[str, list[tuple[tuple[object, ...], str]]] = {}
        """Per team, a heap of (key of the user's next job, user); keys only grow."""
        for team, users in lanes.items():
            self._lanes[team] = {}
            self._users[team] = []
            for user, jobs in users.items():
                jobs.sort(key=lambda j: (not _urgent(j), -j.priority, j.created_at, j.id),
                          reverse=True)  # popped from the end
                self._lanes[team][user] = jobs
                self._users[team].append((self._user_key(team, user, jobs[-1]), user))
            heapq.heapify(self._users[team])
        self._heap: list[tuple[tuple[object, ...], str]] = []
        for team in self._lanes:
            self._push(team)

    def _user_key(self, team: str, user: str, job: LiveJob) -> tuple[object, ...]:
        load = (self._shares.user_load(team, user, self.user_held[(team, user)])
                if self._fair else 0.0)
        return (not _urgent(job), -job.priority, load, job.created_at, job.id)

    def _head(self, team: str) -> tuple[str, LiveJob] | None:
        """The team's next job: over its users' lanes, the most urgent, highest priority,
        then the least loaded user, then the oldest (keys re-checked lazily: they only
        grow as the cycle places jobs)."""
        users = self._users[team]
        while users:
            key, user = users[0]
            lane = self._lanes[team][user]
            if not lane:
                heapq.heappop(users)
                continue
            current = self._user_key(team, user, lane[-1])
            if current != key:
                heapq.heapreplace(users, (current, user))
                continue
            return user, lane[-1]
        return None

    def _key(self, team: str, job: LiveJob) -> tuple[object, ...]:
        within = self._quota.within_quota(team, job.amount)
        if self._fair:
            load = self._shares.team_load(team, self.team_held[team])
            return (not job.nominated, job.reservation is None, not within, load,
                    -job.priority, job.created_at, job.id)
        return (not job.nominated, job.reservation is None, not within, -job.priority,
                job.created_at, job.id)

    def _push(self, team: str) -> None:
        head = self._head(team)
        if head is not None:
            heapq.heappush(self._heap, (self._key(team, head[1]), team))

    def __iter__(self) -> Iterator[LiveJob]:
        if self._static is not None:
            yield from self._static
            return
        heap = self._heap
        while heap:
            key, team = heapq.heappop(heap)
            head = self._head(team)
            if head is None:
                continue
            current = self._key(team, head[1])
            if current > key and heap and current > heap[0][0]:
                heapq.heappush(heap, (current, team))  # its load grew: not its turn
                continue
            while head is not None:  # go on with this team while it stays first
                user, job = head
                self._lanes[team][user].pop()
                yield job  # the caller may call placed(job) before the next one
                head = self._head(team)
                if head is None:
                    break
                current = self._key(team, head[1])
                if heap and current > heap[0][0]:
                    heapq.heappush(heap, (current, team))
                    break

    def placed(self, job: LiveJob) -> None:
        amount = self._weight_of(job)
        self.team_held[job.queue] += amount
        self.user_held[(job.queue, job.user)] += amount
