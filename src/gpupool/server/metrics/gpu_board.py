"""The GPU watch's latest sample, for the scrape: per GPU (utilisation, memory used) and per
running attempt (utilisation of its allocation, memory, the idle flag), with the job's team.

:class:`GpuBoard` is written by the GPU watch (server/gpu_watch.py) and read by the
collector: the watch swaps in a whole new :class:`Board` after each sample (one reference
assignment), so a scrape always sees one sample, never half of two. A pool without NVML has
no board: its families are exported empty.
"""

from __future__ import annotations

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


@dataclass
class GpuBoard:
    """The latest :class:`Board` (empty until the first sample)."""

    board: Board = field(default_factory=Board)

    def publish(self, board: Board) -> None:
        self.board = board


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
