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
from gpupool.server.metrics import books
from gpupool.server.metrics.loop_metrics import LoopMetrics

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
"""Prometheus' text exposition format."""


class BooksCollector(Collector):
    """Yields, at each scrape: the GPUs' allocated share (the loop's cluster state), teams'
    allocated and quota GPUs, workloads by phase/queue/kind, idle notebooks by team (the
    database), then the loop's counters and histograms (:class:`LoopMetrics`)."""

    def __init__(self, db: Database, loop: LoopMetrics) -> None:
        self.db = db
        self.loop = loop

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
        yield from self.loop.collect()


def new_registry(db: Database, loop: LoopMetrics) -> CollectorRegistry:
    """A registry of one app's own, holding only its :class:`BooksCollector`."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(BooksCollector(db, loop))
    return registry


def render(registry: CollectorRegistry) -> bytes:
    """One scrape of ``registry`` in the text format (:data:`CONTENT_TYPE`)."""
    return generate_latest(registry)
