"""The simulator's time-based mode: pods arrive, wait in a queue, run for their lifetime, leave.

A discrete-event engine on simulated time (trace seconds). It reads no clock; only
``run_timed`` measures the wall time of the whole run to report decisions per second.

Rules of the replay (``run_timed``):

* pod i arrives at ``creation_time`` and, once started at time s, runs for
  ``max(1, deletion_time - creation_time)`` seconds and departs at s + lifetime, releasing
  exactly its allocation;
* events are processed in batches of equal time: all departures of the batch first, then its
  arrivals join the queue, then waiting pods are tried in queue order (the profile's
  ``queue_sort``, FIFO by arrival when it has none); whatever fits now starts now, so a pod
  arriving at the same second as a departure sees the freed capacity, and a smaller pod may
  start ahead of a larger one that still does not fit (greedy backfill);
* in one pass a request whose ``shape`` already failed is skipped (it would fail too).

Speed: waiting pods are kept per shape, each shape's pods in queue order. A request that did
not fit keeps not fitting until something departs (placement only takes capacity, and the fit
filter is monotone in free capacity), so a batch without departures only tries shapes that
had nobody waiting; a batch with departures tries the head of every waiting shape. This visits
exactly the requests the plain walk over the whole queue would place or try first.

One cycle: these are the decisions of the server's shared queue cycle (``core.queue_cycle``)
under greedy FIFO (priority, then first come, no reservations) with the pods as one queue
without a quota limit; ``tests/test_timed.py`` replays random traces both ways and compares
every start. The teams mode (``sim/team_timed.py``) calls that cycle itself.
"""

from __future__ import annotations

import heapq
import time
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from gpupool.core.cluster import Allocation, ClusterState, NodeSpec
from gpupool.core.frag import TargetWorkload
from gpupool.core.request import MILLI_PER_GPU, Request
from gpupool.core.scheduler import Scheduler
from gpupool.plugins.profiles import PolicyContext, build_profile
from gpupool.sim.trace import TracePod

MIN_LIFETIME_S = 1
"""Shortest run time of a pod, seconds: a pod deleted at (or before) its creation still runs."""

_DEPART = 0
_ARRIVE = 1
"""Event kinds; the smaller kind goes first among events at the same time."""

Shape = tuple[int, int, int, int, int, tuple[str, ...], tuple[tuple[str, str], ...]]


@dataclass(frozen=True)
class TimedResult:
    """Figures of one time-based run.

    ``placed`` counts pods that ever started, ``never_placed`` those still queued when the
    events ran out (``placed + never_placed == pods``). Queue delays (start − creation, seconds)
    are over started pods; p50/p95 interpolate linearly between ranks (numpy's default); all
    three are 0.0 when no pod started. ``gpu_hours_served`` is Σ num_gpus·gpu_milli/1000 × run
    seconds / 3600 over started pods (each runs its whole lifetime: its departure is an event).
    ``times`` (seconds) are ``samples`` evenly spaced points from the first arrival to the last
    event, and ``allocated_gpu_pct[k]`` the allocated share of the cluster's GPUs (percent) at
    ``times[k]``, after every event at that very second. ``start_times[i]`` is when
    ``pods[i]`` started (None if never). ``decisions`` counts placement attempts, and
    ``decisions_per_second`` divides it by ``seconds``, the wall time of the whole run.
    """

    policy: str
    seed: int
    pods: int
    placed: int
    never_placed: int
    queue_delay_mean_s: float
    queue_delay_p50_s: float
    queue_delay_p95_s: float
    gpu_hours_served: float
    times: tuple[float, ...]
    allocated_gpu_pct: tuple[float, ...]
    decisions: int
    decisions_per_second: float
    seconds: float
    start_times: tuple[int | None, ...] = ()
    peak_allocated_gpu_pct: float = 0.0
    """The highest allocated percent after any event (the samples may miss a short peak)."""

    def to_json(self) -> dict[str, Any]:
        """The figures as plain JSON types (time series as lists; per-pod starts left out)."""
        return {
            "mode": "timed",
            "policy": self.policy,
            "seed": self.seed,
            "pods": self.pods,
            "placed": self.placed,
            "never_placed": self.never_placed,
            "queue_delay_mean_s": self.queue_delay_mean_s,
            "queue_delay_p50_s": self.queue_delay_p50_s,
            "queue_delay_p95_s": self.queue_delay_p95_s,
            "gpu_hours_served": self.gpu_hours_served,
            "times": list(self.times),
            "allocated_gpu_pct": list(self.allocated_gpu_pct),
            "decisions": self.decisions,
            "decisions_per_second": self.decisions_per_second,
            "seconds": self.seconds,
            "peak_allocated_gpu_pct": self.peak_allocated_gpu_pct,
        }


def lifetimes(pods: Sequence[TracePod]) -> list[tuple[int, int]]:
    """(creation time, run seconds) per pod, run seconds at least ``MIN_LIFETIME_S``.

    Raises ValueError naming the first pod without a creation or deletion time (the
    five-column ``multigpu*`` files have none and cannot be replayed in time-based mode).
    """
    out: list[tuple[int, int]] = []
    for i, pod in enumerate(pods):
        created, deleted = pod.creation_time, pod.deletion_time
        if created is None or deleted is None:
            missing = "creation_time" if created is None else "deletion_time"
            raise ValueError(
                f"pod {pod.request.name!r} (#{i + 1}) has no {missing}: the time-based mode "
                "needs creation and deletion times (the five-column multigpu files have none); "
                "use the fgd mode for such traces"
            )
        out.append((created, max(MIN_LIFETIME_S, deleted - created)))
    return out


class _Engine:
    """The event loop over one cluster; ``run`` may be called once."""

    def __init__(self, scheduler: Scheduler, pods: Sequence[TracePod]) -> None:
        self.scheduler = scheduler
        self.requests: list[Request] = [p.request for p in pods]
        self.spans = lifetimes(pods)
        self.starts: list[int | None] = [None] * len(pods)
        self.running: dict[int, Allocation] = {}
        self.waiting: dict[Shape, list[tuple[tuple[int, ...], int]]] = {}
        self.dirty: set[Shape] = set()
        self.freed = False
        order = sorted(range(len(pods)), key=lambda i: (self.spans[i][0], i))
        self.arrival_seq = {pod: seq for seq, pod in enumerate(order)}
        self.events: list[tuple[int, int, int]] = [(self.spans[i][0], _ARRIVE, i) for i in order]
        self.allocated = 0
        self.decisions = 0
        self.steps: list[tuple[int, int]] = []
        """(time, allocated milli-GPU after every event at that time), one per batch."""
        sort = scheduler.profile.queue_sort
        self._key = sort.sort_key if sort is not None else _fifo_key

    def run(self) -> None:
        """Process every event; afterwards ``starts`` and ``steps`` are final."""
        events = self.events
        heapq.heapify(events)
        while events:
            now = events[0][0]
            while events and events[0][0] == now and events[0][1] == _DEPART:
                self._depart(heapq.heappop(events)[2])
            while events and events[0][0] == now:
                self._enqueue(heapq.heappop(events)[2])
            self._pass(now)
            self.steps.append((now, self.allocated))

    def _depart(self, pod: int) -> None:
        allocation = self.running.pop(pod)
        self.scheduler.release(allocation)
        self.allocated -= allocation.gpu_milli * len(allocation.gpus)
        self.freed = True

    def _enqueue(self, pod: int) -> None:
        request = self.requests[pod]
        shape = request.shape
        queue = self.waiting.get(shape)
        if queue is None:
            queue = self.waiting[shape] = []
            self.dirty.add(shape)
        seq = self.arrival_seq[pod]
        heapq.heappush(queue, ((*self._key(request, seq), seq), pod))

    def _pass(self, now: int) -> None:
        """Start, in queue order, every waiting pod that fits now, skipping failed shapes."""
        if self.freed:
            self.dirty.update(self.waiting)
            self.freed = False
        if not self.dirty:
            return
        heads = [(self.waiting[s][0][0], s) for s in self.dirty]
        self.dirty.clear()
        heapq.heapify(heads)
        place = self.scheduler.place
        while heads:
            _, shape = heapq.heappop(heads)
            queue = self.waiting[shape]
            pod = queue[0][1]
            request = self.requests[pod]
            self.decisions += 1
            decision = place(request, explain=False)
            if not decision.placed:
                continue
            heapq.heappop(queue)
            (allocation,) = decision.allocations
            self.running[pod] = allocation
            self.allocated += allocation.gpu_milli * len(allocation.gpus)
            self.starts[pod] = now
            heapq.heappush(self.events, (now + self.spans[pod][1], _DEPART, pod))
            if queue:
                heapq.heappush(heads, (queue[0][0], shape))
            else:
                del self.waiting[shape]


def _fifo_key(request: Request, arrival: int) -> tuple[int, ...]:
    return (arrival,)


def run_timed(
    nodes: Sequence[NodeSpec],
    pods: Sequence[TracePod],
    policy: str,
    seed: int,
    workload: TargetWorkload | None = None,
    samples: int = 200,
) -> TimedResult:
    """Replay ``pods`` on a fresh cluster of ``nodes`` with ``policy``, on simulated time.

    The cluster's tie order is ``np.random.default_rng(seed).permutation(len(nodes))`` and the
    same generator goes to the profile. ``workload`` is FGD's target workload; for ``fgd`` it
    defaults to ``TargetWorkload.from_requests`` over all pods. Deterministic for given
    inputs (except ``seconds`` and ``decisions_per_second``). Raises ValueError for no pods,
    ``samples < 1``, or a pod without times; UnknownPolicyError for an unknown policy.
    """
    if not pods:
        raise ValueError("the time-based mode needs at least one pod")
    if samples < 1:
        raise ValueError(f"samples must be at least 1, got {samples}")
    started = time.perf_counter()
    state = ClusterState(nodes)
    rng = np.random.default_rng(seed)
    tie_order: list[int] = rng.permutation(state.num_nodes).tolist()
    if policy == "fgd" and workload is None:
        workload = TargetWorkload.from_requests(p.request for p in pods)
    profile = build_profile(policy, state, PolicyContext(rng=rng, workload=workload))
    engine = _Engine(Scheduler(state, profile, tie_order), pods)
    engine.run()
    seconds = time.perf_counter() - started

    spans = engine.spans
    ran = [(i, s - spans[i][0]) for i, s in enumerate(engine.starts) if s is not None]
    delays = np.array([d for _, d in ran], dtype=np.float64)
    mean, p50, p95 = (
        (float(delays.mean()), *(float(v) for v in np.percentile(delays, [50, 95])))
        if len(delays)
        else (0.0, 0.0, 0.0)
    )
    gpu_seconds = sum(engine.requests[i].total_gpu_milli * spans[i][1] for i, _ in ran)
    times, pct = _sample(engine.steps, state.total_gpu_milli, samples)
    return TimedResult(
        policy=policy,
        seed=seed,
        pods=len(pods),
        placed=len(ran),
        never_placed=len(pods) - len(ran),
        queue_delay_mean_s=mean,
        queue_delay_p50_s=p50,
        queue_delay_p95_s=p95,
        gpu_hours_served=gpu_seconds / MILLI_PER_GPU / 3600.0,
        times=times,
        allocated_gpu_pct=pct,
        decisions=engine.decisions,
        decisions_per_second=engine.decisions / seconds if seconds > 0 else float("inf"),
        seconds=seconds,
        start_times=tuple(engine.starts),
        peak_allocated_gpu_pct=100.0
        * max(a for _, a in engine.steps)
        / max(1, state.total_gpu_milli),
    )


def _sample(
    steps: Sequence[tuple[int, int]], capacity_milli: int, samples: int
) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """``samples`` evenly spaced times from the first to the last step, and the allocated
    percent of ``capacity_milli`` in force at each (the last step at or before it)."""
    at = np.array([t for t, _ in steps], dtype=np.float64)
    level = np.array([a for _, a in steps], dtype=np.float64)
    times = np.linspace(at[0], at[-1], samples)
    index = np.searchsorted(at, times, side="right") - 1
    pct = 100.0 * level[index] / capacity_milli if capacity_milli else np.zeros(samples)
    return tuple(float(t) for t in times), tuple(float(p) for p in pct)


def speed_up_arrivals(pods: Sequence[TracePod], factor: float) -> list[TracePod]:
    """The same pods arriving ``factor`` times faster (creation times divided by ``factor``),
    each keeping its lifetime: a way to load a cluster that a trace leaves mostly idle.
    Pods without times are returned unchanged (``lifetimes`` reports them)."""
    if factor <= 0:
        raise ValueError(f"the arrival speed-up must be positive, got {factor}")
    out: list[TracePod] = []
    for pod in pods:
        created, deleted = pod.creation_time, pod.deletion_time
        if created is None or deleted is None:
            out.append(pod)
            continue
        start = int(created / factor)
        out.append(replace(pod, creation_time=start, deletion_time=start + deleted - created))
    return out
