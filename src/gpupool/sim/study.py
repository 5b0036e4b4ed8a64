"""Run the FGD protocol for several policies and seeds (in parallel) and summarise them."""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from gpupool.core.cluster import NodeSpec
from gpupool.core.frag import TargetWorkload
from gpupool.core.request import Request
from gpupool.sim.metrics import as_bucket_dict, curve_metrics, mean_over_seeds
from gpupool.sim.protocol import FloatArray, replay

METRICS = ("unallocated_gpu_pct", "frag_pct", "frag_ratio_pct")


@dataclass(frozen=True)
class StudySpec:
    """Inputs of a study: the cluster, the arrivals, and what to compare.

    ``workload`` is the target workload of FGD and of the fragmentation metric; by default
    it is built from ``requests`` (the whole file, as the study does).
    """

    nodes: Sequence[NodeSpec]
    requests: Sequence[Request]
    policies: Sequence[str]
    seeds: Sequence[int]
    tune: float = 1.3
    workload: TargetWorkload | None = None

    def target_workload(self) -> TargetWorkload:
        return self.workload or TargetWorkload.from_requests(self.requests)


@dataclass(frozen=True)
class RunSummary:
    policy: str
    seed: int
    metrics: dict[str, FloatArray]
    failed: int
    decisions: int
    seconds: float


@dataclass
class PolicyResult:
    policy: str
    runs: list[RunSummary] = field(default_factory=list)

    def mean(self, metric: str) -> FloatArray:
        return mean_over_seeds([r.metrics[metric] for r in self.runs])

    def per_seed(self, metric: str) -> FloatArray:
        return np.vstack([r.metrics[metric] for r in self.runs])

    @property
    def decisions_per_second(self) -> float:
        seconds = sum(r.seconds for r in self.runs)
        return sum(r.decisions for r in self.runs) / seconds if seconds > 0 else 0.0

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {m: as_bucket_dict(self.mean(m)) for m in METRICS}
        out["decisions_per_second"] = round(self.decisions_per_second, 1)
        out["failed_tasks_mean"] = float(np.mean([r.failed for r in self.runs]))
        out["seeds"] = [r.seed for r in self.runs]
        out["unallocated_gpu_pct_by_seed"] = {
            str(r.seed): as_bucket_dict(r.metrics["unallocated_gpu_pct"]) for r in self.runs
        }
        return out


@dataclass
class StudyResult:
    spec_meta: dict[str, Any]
    policies: dict[str, PolicyResult]

    def to_json(self) -> dict[str, Any]:
        return {
            "meta": self.spec_meta,
            "policies": {name: result.to_json() for name, result in self.policies.items()},
        }


_WORKER: dict[str, Any] = {}


def _init_worker(spec: StudySpec, workload: TargetWorkload) -> None:
    _WORKER["spec"] = spec
    _WORKER["workload"] = workload


def _run_one(job: tuple[str, int]) -> RunSummary:
    spec: StudySpec = _WORKER["spec"]
    policy, seed = job
    curve = replay(spec.nodes, spec.requests, policy, seed, _WORKER["workload"], spec.tune)
    return RunSummary(
        policy, seed, curve_metrics(curve), curve.failed, curve.decisions, curve.seconds
    )


def run_study(
    spec: StudySpec,
    workers: int | None = None,
    on_run_done: Callable[[RunSummary], None] | None = None,
) -> StudyResult:
    """Every (policy, seed) run of ``spec``; results grouped by policy in the given order,
    runs in seed order. ``workers`` processes (default: CPU count; 1 = in this process)."""
    workload = spec.target_workload()
    jobs = [(p, s) for p in spec.policies for s in spec.seeds]
    workers = min(workers or os.cpu_count() or 1, len(jobs))
    summaries: list[RunSummary] = []
    if workers <= 1:
        _init_worker(spec, workload)
        for job in jobs:
            summaries.append(_run_one(job))
            if on_run_done:
                on_run_done(summaries[-1])
    else:
        pool = ProcessPoolExecutor(workers, initializer=_init_worker, initargs=(spec, workload))
        with pool:
            for summary in pool.map(_run_one, jobs):
                summaries.append(summary)
                if on_run_done:
                    on_run_done(summary)
    results = {p: PolicyResult(p) for p in spec.policies}
    for summary in summaries:
        results[summary.policy].runs.append(summary)
    meta = {
        "mode": "fgd",
        "nodes": len(spec.nodes),
        "gpus": sum(len(n.gpus) for n in spec.nodes),
        "tasks": len(spec.requests),
        "tune": spec.tune,
        "seeds": list(spec.seeds),
        "typical_shapes": len(workload.shapes),
    }
    return StudyResult(meta, results)
