"""The GPU watch's latest sample, for the scrape: per GPU (utilisation, memory used) and per
running attempt (utilisation of its allocation, memory, the idle flag), with the job's team.

:class:`GpuBoard` is written by the GPU watch (server/gpu_watch.py) and read by the
collector: the watch swaps in a whole new :class:`Board` after each sample (one reference
assignment), so a scrape always sees one sample, never half of two. A pool without NVML has
no board: its families are exported empty.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass, field

from prometheus_client.core import GaugeMetricFamily
from prometheus_client.metrics_core import Metric


@dataclass(frozen=True)
class JobGpu:
    """One running job in the latest sample (None: not measurable in it)."""

    job: str
    team: str
    utilization: float | None
    memory_bytes: int | None
    idle: bool


@dataclass(frozen=True)
class Board:
    """One sample: ``gpus`` rows ``(node, gpu, utilization 0..1, memory used bytes)``."""

    gpus: tuple[tuple[str, int, float, int], ...] = ()
    jobs: tuple[JobGpu, ...] = ()
    at: float = 0.0


BUCKET_S = 300.0
HISTORY_BUCKETS = 72
"""Per GPU, the mean utilisation of each 5-minute bucket of the last 6 hours (the console's
heat map): 72 numbers per GPU whatever the sample interval."""


@dataclass
class GpuBoard:
    """The latest :class:`Board` (empty until the first sample), and per GPU the mean
    utilisation of the last :data:`HISTORY_BUCKETS` buckets of :data:`BUCKET_S` seconds."""

    board: Board = field(default_factory=Board)
    _history: dict[tuple[str, int], deque[list[float]]] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def publish(self, board: Board) -> None:
        bucket = board.at - board.at % BUCKET_S
        with self._lock:
            for node, gpu, ratio, _used in board.gpus:
                rows = self._history.setdefault((node, gpu), deque(maxlen=HISTORY_BUCKETS))
                if rows and rows[-1][0] == bucket:
                    rows[-1][1] += ratio
                    rows[-1][2] += 1
                else:
                    rows.append([bucket, ratio, 1.0])
        self.board = board

    def history(self, now: float) -> tuple[list[float], list[tuple[str, int, list[float | None]]]]:
        """(bucket starts, oldest first, up to now; per GPU (node, gpu, mean utilisation of
        each bucket or None where it has no sample)) for the last 6 hours."""
        last = now - now % BUCKET_S
        starts = [last - BUCKET_S * i for i in range(HISTORY_BUCKETS - 1, -1, -1)]
        index = {start: i for i, start in enumerate(starts)}
        rows: list[tuple[str, int, list[float | None]]] = []
        with self._lock:
            for (node, gpu), buckets in sorted(self._history.items()):
                means: list[float | None] = [None] * len(starts)
                for start, total, count in buckets:
                    if start in index and count:
                        means[index[start]] = total / count
                rows.append((node, gpu, means))
        return starts, rows


def families(source: GpuBoard | None) -> Iterator[Metric]:
    """The GPU families of the latest sample (empty ones without a board)."""
    board = source.board if source is not None else Board()
    util = GaugeMetricFamily("gpupool_gpu_utilization_ratio",
                             "Share of the last sample period a kernel ran on the GPU (NVML)",
                             labels=["node", "gpu"])
    memory = GaugeMetricFamily("gpupool_gpu_memory_used_bytes",
                               "GPU memory in use on the GPU (NVML)", labels=["node", "gpu"])
    for node, gpu, ratio, used in board.gpus:
        util.add_metric([node, str(gpu)], ratio)
        memory.add_metric([node, str(gpu)], used)
    yield util
    yield memory
    job_util = GaugeMetricFamily(
        "gpupool_job_gpu_utilization_ratio",
        "Share of the job's allocated GPUs its processes kept busy (NVML, 0 to 1)",
        labels=["job", "team"])
    job_memory = GaugeMetricFamily("gpupool_job_gpu_memory_used_bytes",
                                   "GPU memory held by the job's processes (NVML, or the "
                                   "interposer's ledger)", labels=["job", "team"])
    idle = GaugeMetricFamily("gpupool_job_gpu_idle",
                             "1 when the job's GPUs have shown under 5 % utilisation for the "
                             "server's idle window, else 0", labels=["job", "team"])
    for job in board.jobs:
        if job.utilization is not None:
            job_util.add_metric([job.job, job.team], job.utilization)
            idle.add_metric([job.job, job.team], 1.0 if job.idle else 0.0)
        if job.memory_bytes is not None:
            job_memory.add_metric([job.job, job.team], job.memory_bytes)
    yield job_util
    yield job_memory
    yield idle
