"""The counters and histograms the scheduling loop updates (and the API's submit count).

:class:`LoopMetrics` is created by the Controller and owned by it: the loop never depends on
the API, and the API's collector (``metrics/collector.py``) reads these at scrape time. Its
metrics are registered in no registry (never the process-wide default one: several servers
live in one test process); :meth:`LoopMetrics.collect` yields them.

Every update is a few microseconds (prometheus_client's own lock), cheap enough for the
submit path and the cycle."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator

import numpy as np
from prometheus_client import Counter, Histogram
from prometheus_client.metrics_core import Metric

from gpupool.core.cluster import ClusterState
from gpupool.core.request import MILLI_PER_GPU

CYCLE_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)
"""Seconds; the live cycle's target is 0.1 s over 10,000 pending jobs (ARCHITECTURE.md)."""
WAIT_BUCKETS = (1.0, 5.0, 15.0, 30.0, 60.0, 300.0, 900.0, 1800.0, 3600.0, 3 * 3600.0,
                12 * 3600.0, 86400.0)
"""Seconds a workload waited in its queue before it was bound to its resources."""


class LoopMetrics:
    """What the loop counts. ``state`` returns the loop's cluster state now (it may swap in a
    new one when nodes come and go); None: no GPU allocation to report."""

    def __init__(self, state: Callable[[], ClusterState] | None = None) -> None:
        self._state = state
        self.submits = Counter("gpupool_submits", "Workloads submitted through the API "
                               "(201 answers; an idempotent retry counts again)",
                               registry=None)
        self.cycle_seconds = Histogram("gpupool_cycle_seconds", "Wall time of each "
                                       "scheduling cycle that had pending work",
                                       buckets=CYCLE_BUCKETS, registry=None)
        self.job_wait_seconds = Histogram(
            "gpupool_job_wait_seconds", "Seconds from queued (submitted, requeued or resumed) "
            "to bound to resources, per queue", ["queue"], buckets=WAIT_BUCKETS, registry=None)
        self.preemptions = Counter("gpupool_preemptions", "Running workloads told to stop "
                                   "to make room for another, by the victim's queue",
                                   ["queue"], registry=None)
        self._since: dict[int, float] = {}
        """When a requeued or resumed workload was queued again, by job id (until it starts
        or is forgotten); a workload absent here waits since its ``created_at``."""
        self._lock = threading.Lock()

    # -- updates (the loop's, and the API's submit) ---------------------------------------

    def submitted(self) -> None:
        """One workload was submitted (the API answered 201)."""
        self.submits.inc()

    def cycle(self, seconds: float) -> None:
        """A scheduling cycle took ``seconds`` of wall time."""
        self.cycle_seconds.observe(seconds)

    def preempted(self, queue: str) -> None:
        """A running workload of ``queue`` was told to stop for another."""
        self.preemptions.labels(queue=queue).inc()

    def queued(self, job_id: int, now: float) -> None:
        """The workload was queued again at ``now`` (requeued after preemption or a lost
        node, or a notebook resumed): its next wait counts from then."""
        with self._lock:
            self._since[job_id] = now

    def started(self, job_id: int, queue: str, created_at: float, now: float) -> None:
        """The workload was bound to its resources at ``now``: observe how long it waited
        (from ``created_at``, or from when it was last queued again; never negative)."""
        with self._lock:
            since = self._since.pop(job_id, created_at)
        self.job_wait_seconds.labels(queue=queue).observe(max(0.0, now - since))

    def forget(self, job_id: int) -> None:
        """The workload will not start (cancelled): drop what was kept for it."""
        with self._lock:
            self._since.pop(job_id, None)

    # -- reads (the collector's, at scrape time) -------------------------------------------

    def gpu_allocation(self) -> list[tuple[str, int, str, float]]:
        """``(node, gpu index, model, allocated share 0..1)`` of every GPU of the loop's
        cluster state now. Read without the loop's lock (a scrape never waits for a cycle):
        a scrape during a cycle may see its tentative placements."""
        if self._state is None:
            return []
        state = self._state()
        # one vectorised pass, the same values as Python floats (a np.clip per GPU cost
        # 30 ms of a scrape of 8,000 GPUs: bench/metrics_bench.py)
        free = np.clip(state.gpu_left, 0, MILLI_PER_GPU)
        count = state.gpu_count.copy()
        shares: list[list[float]] = ((MILLI_PER_GPU - free) / MILLI_PER_GPU).tolist()
        rows: list[tuple[str, int, str, float]] = []
        for i, spec in enumerate(state.specs):
            name, share = state.names[i], shares[i]
            for g in range(int(count[i])):
                rows.append((name, g, spec.gpus[g].model, share[g]))
        return rows

    def collect(self) -> Iterator[Metric]:
        """The counters' and histograms' samples now."""
        for metric in (self.submits, self.cycle_seconds, self.job_wait_seconds,
                       self.preemptions):
            yield from metric.collect()
