"""Step 1 of the cycle: the order in which waiting jobs are tried.

Both orders put first the jobs that must not lose their turn: a job victims were preempted
for (*nominated*) or one that holds a reservation (of nodes, or of its queue's quota); then
jobs that stay inside their queue's guaranteed quota; then the rest.

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
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from operator import itemgetter

from gpupool.core.fairshare import FairShare
from gpupool.core.live import LiveJob
from gpupool.core.quota import QuotaBook

ORDERS = ("fifo", "fairshare")

Key = tuple[object, ...]
_Entry = tuple[LiveJob, bool, int, float, int, bool, bool, int]
"""A waiting job with what orders it: (job, not urgent, -priority, created at, id,
not nominated, no reservation, milli-GPU asked)."""

_lane_key = itemgetter(1, 2, 3, 4)
"""An entry's place in its user's lane: (not urgent, -priority, created at, id)."""


@dataclass(frozen=True, slots=True)
class QueuePolicy:
    """How waiting jobs are ordered and whether reservations with backfill are made.

    ``backfill`` off: any job that fits starts (a large job may starve behind small ones).
    On: a job first in line that does not fit, or one waiting longer than
    ``reserve_after_s``, reserves the nodes that free soonest (at most ``max_reservations``
    jobs at once); others start there only if their time limit ends before the reservation
    does. A running job without a time limit is assumed to end its queue's default run
    limit (``run_s_by_queue``) after it started, else ``default_run_s``, for estimating
    when a reservation starts."""

    order: str = "fifo"
    backfill: bool = False
    reserve_after_s: float = 300.0
    default_run_s: float = 3600.0
    max_reservations: int = 4
    run_s_by_queue: Mapping[str, float] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.order not in ORDERS:
            raise ValueError(f"queue order {self.order!r}: choose one of {', '.join(ORDERS)}")


GREEDY_FIFO = QueuePolicy()
"""Priority then first come, no reservations: the order before fair share existed."""


class JobOrder:
    """Iterates ``pending`` in the policy's order; call ``placed(job)`` after a job was
    placed so the loads that decide the order follow. ``team_held``: milli-GPU (dominant
    share) each team holds now, running and placed so far.

    Contract relied on for speed: the jobs of ``pending`` are distinct objects, and what
    orders each (urgency, priority, arrival, id, amount) is read once, here; between two
    jobs, the keys that decide the order change only through ``placed`` (``quota`` and
    ``shares`` are not otherwise changed while the order is consumed; the cycle's trial
    preemptions give back what they take)."""

    def __init__(self, pending: list[LiveJob], running: list[LiveJob], quota: QuotaBook,
                 policy: QueuePolicy, shares: FairShare | None,
                 weight_of: Callable[[LiveJob], int]) -> None:
        self._quota = quota
        self._fair = policy.order == "fairshare"
        self._shares = shares or FairShare()
        self._weight_of = weight_of
        self._running = running
        self._team_held: defaultdict[str, float] | None = None
        self._user_held: defaultdict[tuple[str, str], float] = defaultdict(float)
        self._placed: list[tuple[LiveJob, int]] = []
        """Placements before ``team_held`` was first needed (FIFO needs it only to preempt)."""
        self._within: defaultdict[str, dict[int, bool]] = defaultdict(dict)
        """``quota.within_quota`` answers by team and amount, while the team's usage is
        unchanged."""
        self._team_load: dict[str, float] = {}
        self._user_load: defaultdict[str, dict[str, float]] = defaultdict(dict)
        """Fair-share loads while the team's (user's) held share is unchanged."""
        self._last: LiveJob | None = None
        self._stale: set[str] = set()
        """Teams whose heap keys may be behind (a job not just yielded was placed): checked
        lazily, as keys only grow."""
        self._static: list[LiveJob] | None = None
        if not self._fair:  # FIFO's keys do not change as jobs are placed: one sort
            keys = []
            for j in pending:
                amount = j.amount
                known = self._within[j.queue]
                inside = known.get(amount)
                if inside is None:
                    inside = known[amount] = quota.within_quota(j.queue, amount)
                keys.append((not j.nominated, j.reservation is None and j.quota_hold is None,
                             not inside, -j.priority, j.created_at, j.id))
            self._static = [pending[i] for i in sorted(range(len(keys)), key=keys.__getitem__)]
            pending = []
        else:
            self._hold(running)
        lanes: dict[str, dict[str, list[_Entry]]] = defaultdict(lambda: defaultdict(list))
        for job in pending:
            lanes[job.queue][job.user].append(
                (job, not (job.nominated or job.reservation is not None
                           or job.quota_hold is not None), -job.priority,
                 job.created_at, job.id, not job.nominated,
                 job.reservation is None and job.quota_hold is None, job.amount))
        self._lanes: dict[str, dict[str, list[_Entry]]] = {}
        self._users: dict[str, list[tuple[Key, str]]] = {}
        """Per team, a heap of (key of the user's next job, user); keys only grow."""
        for team, users in lanes.items():
            self._lanes[team] = {}
            self._users[team] = []
            for user, entries in users.items():
                entries.sort(key=_lane_key, reverse=True)  # popped from the end
                self._lanes[team][user] = entries
                self._users[team].append((self._user_key(team, user, entries[-1]), user))
            heapq.heapify(self._users[team])
        self._heap: list[tuple[Key, str]] = []
        for team in self._lanes:
            self._push(team)

    def _hold(self, running: list[LiveJob]) -> defaultdict[str, float]:
        team_held: defaultdict[str, float] = defaultdict(float)
        user_held = self._user_held
        weight_of = self._weight_of
        for job in running:
            if job.allocations:
                amount = weight_of(job)
                team_held[job.queue] += amount
                user_held[(job.queue, job.user)] += amount
        self._team_held = team_held
        return team_held

    @property
    def team_held(self) -> defaultdict[str, float]:
        held = self._team_held
        if held is None:  # the same sums, in the same order, as if kept all along
            held = self._hold(self._running)
            for job, amount in self._placed:
                held[job.queue] += amount
                self._user_held[(job.queue, job.user)] += amount
            self._placed.clear()
        return held

    def _within_quota(self, team: str, amount: int) -> bool:
        known = self._within[team]
        within = known.get(amount)
        if within is None:
            within = known[amount] = self._quota.within_quota(team, amount)
        return within

    def _user_load_of(self, team: str, user: str) -> float:
        loads = self._user_load[team]
        load = loads.get(user)
        if load is None:
            load = loads[user] = self._shares.user_load(team, user, self._user_held[(team, user)])
        return load

    def _user_key(self, team: str, user: str, entry: _Entry) -> Key:
        return (entry[1], entry[2], self._user_load_of(team, user), entry[3], entry[4])

    def _team_load_of(self, team: str) -> float:
        load = self._team_load.get(team)
        if load is None:
            load = self._team_load[team] = self._shares.team_load(team, self.team_held[team])
        return load

    def _key(self, team: str, entry: _Entry) -> Key:
        return (entry[5], entry[6], not self._within_quota(team, entry[7]),
                self._team_load_of(team), entry[2], entry[3], entry[4])

    def _head(self, team: str) -> _Entry | None:
        """The team's next job: over its users' lanes, the most urgent, highest priority,
        then the least loaded user, then the oldest. The top entry's key is exact unless
        the team is stale (then keys are re-checked lazily: they only grow)."""
        users = self._users[team]
        lanes = self._lanes[team]
        check = team in self._stale
        while users:
            key, user = users[0]
            lane = lanes[user]
            if not lane:
                heapq.heappop(users)
                continue
            if check:
                current = self._user_key(team, user, lane[-1])
                if current != key:
                    heapq.heapreplace(users, (current, user))
                    continue
            return lane[-1]
        return None

    def _push(self, team: str) -> None:
        head = self._head(team)
        if head is not None:
            heapq.heappush(self._heap, (self._key(team, head), team))

    def __iter__(self) -> Iterator[LiveJob]:
        if self._static is not None:
            yield from self._static
            return
        heap = self._heap
        heappush, heapreplace, heappop = heapq.heappush, heapq.heapreplace, heapq.heappop
        stale = self._stale
        while heap:
            key, team = heappop(heap)
            head = self._head(team)
            if head is None:
                continue
            current = self._key(team, head)
            if current > key and heap and current > heap[0][0]:
                heappush(heap, (current, team))  # its load grew: not its turn
                continue
            users = self._users[team]
            lanes = self._lanes[team]
            user_loads = self._user_load[team]
            within = self._within[team]
            team_loads = self._team_load
            while True:  # go on with this team while it stays first
                user = users[0][1]  # the user of ``head``
                lane = lanes[user]
                job = lane.pop()[0]
                self._last = job
                yield job  # the caller may call placed(job) before the next one
                self._last = None
                # The user served is still at the top of its team's heap: its key moves on
                # to its next job (with its load as it is now).
                if lane:
                    entry = lane[-1]
                    load = user_loads.get(user)
                    if load is None:
                        load = self._user_load_of(team, user)
                    top = ((entry[1], entry[2], load, entry[3], entry[4]), user)
                    # Often the same user stays first: then no need to sift (the keys are
                    # distinct, so any valid heap yields the same order).
                    size = len(users)
                    if (size < 2 or top <= users[1]) and (size < 3 or top <= users[2]):
                        users[0] = top
                    else:
                        heapreplace(users, top)
                else:
                    heappop(users)
                if team in stale:
                    head = self._head(team)
                    if head is None:
                        break
                elif users:
                    head = lanes[users[0][1]][-1]
                else:
                    break
                inside = within.get(head[7])
                if inside is None:
                    inside = self._within_quota(team, head[7])
                load = team_loads.get(team)
                if load is None:
                    load = self._team_load_of(team)
                current = (head[5], head[6], not inside, load, head[2], head[3], head[4])
                if heap and current > heap[0][0]:
                    heappush(heap, (current, team))
                    break

    def placed(self, job: LiveJob) -> None:
        amount = self._weight_of(job)
        team, user = job.queue, job.user
        if self._team_held is None:
            self._placed.append((job, amount))
        else:
            self._team_held[team] += amount
            self._user_held[(team, user)] += amount
        self._within[team].clear()
        self._team_load.pop(team, None)
        self._user_load[team].pop(user, None)
        if job is not self._last:  # its user's (and team's) heap keys are behind now
            self._stale.add(team)
