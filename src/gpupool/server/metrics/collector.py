"""The scrape: a Collector that reads the books and the loop's metrics when Prometheus asks,
in an app's own registry (never prometheus_client's process-wide default one: several apps
live in one test process, and that one would also expose the process's own metrics)."""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector

from gpupool.server.db.database import Database
from gpupool.server.metrics import books, gpu_board
from gpupool.server.metrics.gpu_board import GpuBoard
from gpupool.server.metrics.loop_metrics import LoopMetrics

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
"""Prometheus' text exposition format."""


class BooksCollector(Collector):
    """Yields, at each scrape: the GPUs' allocated share (the loop's cluster state), teams'
    allocated and quota GPUs, workloads by phase/queue/kind, idle notebooks by team (the
    database), what NVML measured of GPUs and jobs (``gpu``: the GPU watch's board; empty
    families without one), then the loop's counters and histograms (:class:`LoopMetrics`)."""

    def __init__(self, db: Database, loop: LoopMetrics, gpu: GpuBoard | None = None) -> None:
        self.db = db
        self.loop = loop
        self.gpu = gpu

    def collect(self) -> Iterator[Metric]:
        ratio = GaugeMetricFamily("gpupool_gpu_allocated_ratio",
                                  "Share of each GPU allocated to workloads (0 to 1)",
                                  labels=["node", "gpu", "model"])
        for node, gpu, model, share in self.loop.gpu_allocation():
            ratio.add_metric([node, str(gpu), model], share)
        yield ratio
        allocated = GaugeMetricFamily("gpupool_team_allocated_gpus",
                                      "GPUs held by the team's starting and running workloads",
                                      labels=["team"])
        quota = GaugeMetricFamily("gpupool_team_quota_gpus", "The team's GPU quota",
                                  labels=["team"])
        for team, used, guaranteed in books.team_gpus(self.db):
            allocated.add_metric([team], used)
            quota.add_metric([team], guaranteed)
        yield allocated
        yield quota
        jobs = GaugeMetricFamily("gpupool_jobs", "Workloads in a non-final phase",
                                 labels=["phase", "queue", "kind"])
        for phase, queue, kind, count in books.workload_counts(self.db):
            jobs.add_metric([phase, queue, kind], count)
        yield jobs
        idle = GaugeMetricFamily("gpupool_notebooks_idle",
                                 "Running notebooks idle for a minute or more",
                                 labels=["team"])
        for team, count in sorted(books.idle_notebooks(self.db).items()):
            idle.add_metric([team], count)
        yield idle
        yield from gpu_board.families(self.gpu)
        yield from self.loop.collect()


PRIVATE_LABELS = frozenset({"team", "queue", "job", "user"})
"""Labels that name who holds what: the aggregate view leaves out every series with one."""
SUMMED = frozenset({"gpupool_jobs", "gpupool_team_allocated_gpus", "gpupool_team_quota_gpus",
                    "gpupool_notebooks_idle", "gpupool_job_gpu_idle"})
"""Gauges the aggregate view keeps, summed over their private labels (e.g. workloads by
phase and kind, GPUs allocated in all; ``gpupool_job_gpu_idle``: how many jobs are idle)."""


class AggregateCollector(Collector):
    """The aggregate view (``metrics_public_aggregate``): what ``inner`` yields, less every
    series labelled with a team, queue, job or user; the gauges of :data:`SUMMED` are kept,
    summed over those labels."""

    def __init__(self, inner: Collector) -> None:
        self.inner = inner

    def collect(self) -> Iterator[Metric]:
        for family in self.inner.collect():
            private = {k for s in family.samples for k in s.labels if k in PRIVATE_LABELS}
            if not private:
                yield family
            elif family.name in SUMMED and family.type == "gauge":
                yield _summed(family, private)


def _summed(family: Metric, private: set[str]) -> Metric:
    totals: dict[tuple[tuple[str, str], ...], float] = {}
    for sample in family.samples:
        key = tuple(sorted((k, v) for k, v in sample.labels.items() if k not in private))
        totals[key] = totals.get(key, 0.0) + sample.value
    names = sorted({k for key in totals for k, _ in key})
    out = GaugeMetricFamily(family.name, family.documentation, labels=names)
    for key, value in sorted(totals.items()):
        labels = dict(key)
        out.add_metric([labels.get(n, "") for n in names], value)
    return out


def new_registry(db: Database, loop: LoopMetrics, gpu: GpuBoard | None = None,
                 aggregate: bool = False) -> CollectorRegistry:
    """A registry of one app's own, holding only its :class:`BooksCollector` (wrapped in
    an :class:`AggregateCollector` when ``aggregate``)."""
    registry = CollectorRegistry(auto_describe=False)
    books = BooksCollector(db, loop, gpu)
    registry.register(AggregateCollector(books) if aggregate else books)
    return registry


def render(registry: CollectorRegistry) -> bytes:
    """One scrape of ``registry`` in the text format (:data:`CONTENT_TYPE`)."""
    return generate_latest(registry)
