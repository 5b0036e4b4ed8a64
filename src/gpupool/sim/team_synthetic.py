"""Seeded multi-team workloads shaped after the Acme trace summary (NSDI'24), for the team
simulator (``sim.workload.WorkloadJob``).

**This is a fit to summary statistics, not a replay.** The Acme job tables are too large to
bring here; what is read (at run time, never copied into the repository) is
``acme/cluster_summary.csv`` of the traces folder: per cluster the mean and median run time of
GPU jobs and the mean and median GPUs per job (``acme_shape``). Means and medians do not fix
a distribution, so two shapes are *chosen* and fitted to them:

* run time: log-normal with median e^μ and mean e^(μ+σ²/2), so μ = ln(median) and
  σ = sqrt(2 ln(mean/median)) (``LogNormal.fit``); draws are clipped to
  [1 s, ``max_duration_s``] (one day by default, so a replay ends), which lowers the mean
  below the summary's (the clipped mean is ``LogNormal.clipped_mean``);
* GPUs per job: a discrete mix over 0.25, 0.5 (fractional shares) and 1, 2, 4, ... up to
  ``max_job_gpus`` (``GpuMix.fit``): probability ``below_median_p`` spread evenly over the
  sizes below the median size, so that P(X <= median) = 0.55 (just over a half: the median
  is the summary's); the remaining 0.45 over the larger sizes with weights ∝ r^k (k = 1, 2,
  ... from the median up), r found by bisection so that the mean matches. Sizes are capped at
  the cluster's GPUs. When the summary's
  mean is out of reach with jobs of at most ``max_job_gpus`` (Kalos: 26.8 GPUs per job) the
  closest mean is taken, and ``GpuMix.mean`` says which.

The default cluster is **Seren** (Acme's general-purpose cluster: median run 122 s, mean
1,414 s, median 1 GPU, mean 5.68 GPUs); Kalos is the LLM-pretraining one, whose large jobs a
small simulated cluster cannot hold. Everything random comes from
``numpy.random.default_rng(seed)``: the same arguments give the same jobs.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Final

import numpy as np
import numpy.typing as npt

from gpupool.core.request import MILLI_PER_GPU
from gpupool.sim.trace import TracePod
from gpupool.sim.workload import TeamQueue, WorkloadError, WorkloadJob, open_table

DEFAULT_CLUSTER: Final = "Seren"
MEDIAN_MASS: Final = 0.55
"""P(GPUs <= the median size) of a fitted GPU mix."""
FRACTIONAL_SIZES: Final = (0.25, 0.5)
_SUMMARY_COLUMNS: Final = ("id", "avg_run_time_gpu", "med_run_time_gpu", "max_run_time_gpu",
                           "avg_gpu_num", "med_gpu_num", "max_gpu", "gpu_job_num")

FloatArray = npt.NDArray[np.float64]


@dataclass(frozen=True)
class AcmeShape:
    """One row of the Acme ``cluster_summary.csv``: GPU-job run time (s) and GPUs per job."""

    cluster: str
    run_mean_s: float
    run_median_s: float
    run_max_s: float
    gpu_mean: float
    gpu_median: float
    gpu_max: float
    gpu_jobs: int


def default_acme_summary() -> Path:
    """Where ``acme/cluster_summary.csv`` is looked for: under ``$GPUPOOL_TRACES`` when set,
    else in ``shared/traces`` beside the checkout (the project's layout)."""
    root = os.environ.get("GPUPOOL_TRACES")
    base = Path(root) if root else Path(__file__).resolve().parents[4] / "shared" / "traces"
    return base / "acme" / "cluster_summary.csv"


def acme_shape(path: str | Path | None = None, cluster: str = DEFAULT_CLUSTER) -> AcmeShape:
    """The row ``cluster`` (Seren, Kalos, Philly, Helios or PAI) of the Acme summary at
    ``path`` (default ``default_acme_summary()``). ``WorkloadError`` for a file that cannot
    be read or lacks a column or a number; ``ValueError`` naming the clusters it has when
    ``cluster`` is not one of them."""
    path = default_acme_summary() if path is None else path
    name, found = str(path), []
    with open_table(path, _SUMMARY_COLUMNS, "cluster summary", 100) as (header, rows):
        for line, cells in rows:
            row = {c: cells[header[c]].strip() for c in _SUMMARY_COLUMNS}
            found.append(row["id"])
            if row["id"] != cluster:
                continue
            values = []
            for column in _SUMMARY_COLUMNS[1:]:
                try:
                    values.append(float(row[column]))
                except ValueError:
                    raise WorkloadError(name, line, column,
                                        f"{row[column]!r} is not a number") from None
            return AcmeShape(cluster, values[0], values[1], values[2], values[3], values[4],
                             values[5], int(values[6]))
    raise ValueError(f"{name}: no cluster {cluster!r}; it has {', '.join(found)}")


@dataclass(frozen=True)
class LogNormal:
    """A log-normal run time (``mu``, ``sigma`` of its logarithm) clipped to [1, ``cap_s``]."""

    mu: float
    sigma: float
    cap_s: float

    @classmethod
    def fit(cls, mean: float, median: float, cap_s: float) -> LogNormal:
        """μ = ln(median), σ = sqrt(2 ln(mean/median)) (0 when mean <= median)."""
        if not (median > 0 and mean > 0 and cap_s >= 1):
            raise ValueError(f"need a positive mean and median and a cap >= 1 s, got "
                             f"mean={mean}, median={median}, cap={cap_s}")
        return cls(math.log(median), math.sqrt(2 * math.log(max(mean / median, 1.0))), cap_s)

    def draw(self, rng: np.random.Generator, n: int) -> FloatArray:
        return np.clip(rng.lognormal(self.mu, self.sigma, n), 1.0, self.cap_s)

    @property
    def clipped_mean(self) -> float:
        """E[min(X, cap)] (the 1 s floor is ignored: it adds well under a second)."""
        c, mu, s = math.log(self.cap_s), self.mu, self.sigma
        if s == 0:
            return min(math.exp(mu), self.cap_s)
        head = math.exp(mu + s * s / 2) * _phi((c - mu - s * s) / s)
        return head + self.cap_s * (1 - _phi((c - mu) / s))


def _phi(x: float) -> float:
    return 0.5 * (1 + math.erf(x / math.sqrt(2)))


@dataclass(frozen=True)
class GpuMix:
    """GPUs per job: ``sizes`` (ascending) drawn with ``probs``; ``mean`` is the mix's own
    mean, which is the target's unless it was out of reach (see the module)."""

    sizes: tuple[float, ...]
    probs: tuple[float, ...]
    target_mean: float
    target_median: float

    @property
    def mean(self) -> float:
        return float(np.dot(self.sizes, self.probs))

    @classmethod
    def fit(cls, mean: float, median: float, max_job_gpus: int,
            below_median_p: float = 0.15) -> GpuMix:
        """The mix of the module's recipe over 0.25, 0.5, 1, 2, 4, ... <= ``max_job_gpus``."""
        if max_job_gpus < 1 or not 0 <= below_median_p < MEDIAN_MASS:
            raise ValueError(f"need max_job_gpus >= 1 and 0 <= below_median_p < "
                             f"{MEDIAN_MASS}, got {max_job_gpus} and {below_median_p}")
        sizes = [*FRACTIONAL_SIZES, *(2.0**k for k in range(int(math.log2(max_job_gpus)) + 1))]
        m = min(range(len(sizes)), key=lambda i: abs(math.log2(sizes[i] / max(median, 1e-9))))
        probs = [0.0] * len(sizes)
        below_p = below_median_p if m else 0.0
        for i in range(m):
            probs[i] = below_p / m
        above = sizes[m + 1:]
        probs[m] = MEDIAN_MASS - below_p if above else 1.0 - below_p
        if above:
            base = float(np.dot(sizes[: m + 1], probs[: m + 1]))
            want = (mean - base) / (1 - MEDIAN_MASS)  # the mean the sizes above must have
            tilt = _solve_tilt(np.array(above), want)
            probs[m + 1:] = [float(p) for p in (1 - MEDIAN_MASS) * tilt]
        return cls(tuple(sizes), tuple(probs), mean, median)

    def draw(self, rng: np.random.Generator, n: int) -> FloatArray:
        return rng.choice(np.array(self.sizes), size=n, p=np.array(self.probs))


def _solve_tilt(values: FloatArray, want: float) -> FloatArray:
    """Weights ∝ r^k over ``values`` whose mean is ``want`` (clamped to what r in
    [e^-30, e^30] reaches), by bisection on ln r (the mean grows with r)."""
    k = np.arange(len(values), dtype=np.float64)

    def weights(log_r: float) -> FloatArray:
        w = np.exp(k * log_r - np.max(k * log_r))
        return np.asarray(w / w.sum(), dtype=np.float64)

    lo, hi = -30.0, 30.0
    for _ in range(100):
        mid = (lo + hi) / 2
        if float(np.dot(values, weights(mid))) < want:
            lo = mid
        else:
            hi = mid
    return weights((lo + hi) / 2)


# ---- workloads -----------------------------------------------------------------------------


def team_names(teams: int) -> list[str]:
    """``team-0``, ``team-1``, ... (the names both generators and ``queues_for`` use)."""
    return [f"team-{i}" for i in range(teams)]


def queues_for(teams: int, cluster_gpus: float) -> list[TeamQueue]:
    """One queue per team of ``team_names(teams)``: equal quotas summing to ``cluster_gpus``,
    each allowed to borrow up to the whole cluster, weight 1, no cohort, no lend limit."""
    if teams < 1 or not cluster_gpus > 0:
        raise ValueError(f"need teams >= 1 and cluster_gpus > 0, got {teams}, {cluster_gpus}")
    return [TeamQueue(name, cluster_gpus / teams, float(cluster_gpus))
            for name in team_names(teams)]


def synthetic_team_workload(
    teams: int,
    jobs: int,
    seed: int,
    cluster_gpus: int,
    load: float = 1.2,
    *,
    shape: AcmeShape | None = None,
    max_job_gpus: int = 32,
    gpus_per_node: int = 8,
    burst_fraction: float = 0.15,
    max_duration_s: float = 86_400.0,
    users_per_team: int = 3,
    below_median_p: float = 0.15,
) -> list[WorkloadJob]:
    """``jobs`` jobs of ``teams`` teams (``team_names``), sorted by (submit time, id), that
    offer about ``load`` × ``cluster_gpus`` GPUs of work over the span of their arrivals.

    Sizes and run times follow ``shape`` (default: the Seren row of ``acme_shape()``) as the
    module says, with jobs of at most ``min(max_job_gpus, cluster_gpus)`` GPUs; a job of more
    than ``gpus_per_node`` GPUs spans ``ceil(gpus / gpus_per_node)`` nodes (the simulated
    nodes should have that many GPUs). Per GPU a job asks 4 CPU cores and 16 GiB (scaled for
    a share); its ``time_limit`` is its run time × U(1, 3) rounded up to a minute (users
    overestimate; no job outlives its limit); priority 0, any GPU model.

    The situations fair share is about, on purpose:

    1. *a flood*: ``burst_fraction`` of the jobs are ``team-0``'s, all submitted at t = 0;
    2. *skewed steady demand*: the other jobs arrive as a Poisson process whose rate makes
       Σ gpus × run time = ``load`` × ``cluster_gpus`` × span (span = the expected last
       arrival), each owned by team i with weight 1/(i + 1): with equal quotas the first teams
       ask for more than their share and borrow, the last ones lend;
    3. *a late-comer*: with two teams or more the last team submits nothing before half the
       span, then claims its quota back while the others hold the cluster.

    Users are ``<team>-u0``.. (``users_per_team`` per team, drawn uniformly). Deterministic in
    all arguments (``numpy.random.default_rng(seed)``).
    """
    if teams < 1 or jobs < 1 or cluster_gpus < 1 or gpus_per_node < 1 or users_per_team < 1:
        raise ValueError("teams, jobs, cluster_gpus, gpus_per_node and users_per_team must be "
                         f">= 1, got {teams}, {jobs}, {cluster_gpus}, {gpus_per_node}, "
                         f"{users_per_team}")
    if not (load > 0 and math.isfinite(load)) or not 0 <= burst_fraction <= 1:
        raise ValueError(f"need load > 0 and 0 <= burst_fraction <= 1, got {load}, "
                         f"{burst_fraction}")
    shape = acme_shape() if shape is None else shape
    rng = np.random.default_rng(seed)
    mix = GpuMix.fit(shape.gpu_mean, shape.gpu_median, min(max_job_gpus, cluster_gpus),
                     below_median_p)
    sizes = mix.draw(rng, jobs)
    durations = LogNormal.fit(shape.run_mean_s, shape.run_median_s, max_duration_s).draw(
        rng, jobs)
    span = float(np.dot(sizes, durations)) / (load * cluster_gpus)
    burst = round(burst_fraction * jobs)
    steady = jobs - burst
    submits = np.zeros(jobs)
    if steady:
        submits[burst:] = np.cumsum(rng.exponential(span / steady, steady))
    weights = 1.0 / np.arange(1, teams + 1)
    early = weights.copy()
    if teams >= 2:
        early[-1] = 0.0
    u = rng.random(jobs)
    late = submits >= span / 2
    owners = np.where(late, _pick(weights, u), _pick(early, u))
    owners[:burst] = 0
    users = rng.integers(0, users_per_team, jobs)
    factors = rng.uniform(1.0, 3.0, jobs)
    names = team_names(teams)
    out = [
        _job(f"job-{i:06d}", names[owners[i]], int(users[i]), float(submits[i]),
             float(durations[i]), float(sizes[i]), gpus_per_node, float(factors[i]))
        for i in range(jobs)
    ]
    return sorted(out, key=lambda j: (j.submit_time, j.job_id))


def _pick(weights: FloatArray, u: FloatArray) -> npt.NDArray[np.int64]:
    """Index i with probability weights[i] / sum(weights) for each uniform draw in ``u``."""
    cum = np.cumsum(weights) / weights.sum()
    return np.minimum(np.searchsorted(cum, u, side="right"), len(weights) - 1).astype(np.int64)


def _job(job_id: str, team: str, user: int, submit: float, duration: float, gpus: float,
         gpus_per_node: int, factor: float) -> WorkloadJob:
    nodes = max(1, math.ceil(gpus / gpus_per_node))
    per_node = gpus / nodes
    num_gpu, milli = ((1, round(per_node * MILLI_PER_GPU)) if per_node < 1
                      else (math.ceil(per_node), MILLI_PER_GPU))
    held = num_gpu * milli / MILLI_PER_GPU
    return WorkloadJob(
        job_id=job_id, team=team, user=f"{team}-u{user}", submit_time=submit,
        duration=duration, num_gpu=num_gpu, gpu_milli=milli,
        cpu_milli=max(1000, round(4000 * held)), memory_mib=max(1024, round(16 * 1024 * held)),
        gpu_spec="", priority=0, time_limit=math.ceil(duration * factor / 60) * 60.0,
        nodes=nodes,
    )


def pods_with_durations(
    pods: Sequence[TracePod],
    *,
    seed: int,
    cluster_gpus: int,
    teams: int = 4,
    load: float = 1.2,
    shape: AcmeShape | None = None,
    max_duration_s: float = 86_400.0,
) -> list[WorkloadJob]:
    """The GPU pods of an openb pod list (``trace.load_pods``) as a team workload, sorted by
    (submit time, file order): each keeps its request (CPU, memory, GPUs, ``gpu_milli`` per
    GPU, models joined by ``|``) and gets a run time drawn from ``shape``'s log-normal (as in
    the module; default the Seren row of ``acme_shape()``), a team of ``team_names(teams)``
    drawn uniformly, a user ``<team>-u0`` and a Poisson arrival whose rate offers about
    ``load`` × ``cluster_gpus`` GPUs (as ``synthetic_team_workload``, without its flood or
    late-comer). CPU-only pods are left out; the job id is the pod's name (``name#2``, ... for
    a name seen before). No time limit, priority 0.
    """
    if teams < 1 or cluster_gpus < 1 or not (load > 0 and math.isfinite(load)):
        raise ValueError(f"need teams >= 1, cluster_gpus >= 1 and load > 0, got {teams}, "
                         f"{cluster_gpus}, {load}")
    shape = acme_shape() if shape is None else shape
    gpu_pods = [p for p in pods if p.request.num_gpus > 0]
    if not gpu_pods:
        return []
    rng = np.random.default_rng(seed)
    n = len(gpu_pods)
    durations = LogNormal.fit(shape.run_mean_s, shape.run_median_s, max_duration_s).draw(rng, n)
    gpus = np.array([p.request.total_gpu_milli / MILLI_PER_GPU for p in gpu_pods])
    span = float(np.dot(gpus, durations)) / (load * cluster_gpus)
    submits = np.cumsum(rng.exponential(span / n, n))
    owners = rng.integers(0, teams, n)
    names = team_names(teams)
    seen: dict[str, int] = {}
    out = []
    for i, pod in enumerate(gpu_pods):
        r = pod.request
        seen[r.name] = seen.get(r.name, 0) + 1
        job_id = r.name if seen[r.name] == 1 else f"{r.name}#{seen[r.name]}"
        team = names[owners[i]]
        out.append(WorkloadJob(
            job_id=job_id, team=team, user=f"{team}-u0", submit_time=float(submits[i]),
            duration=float(durations[i]), num_gpu=r.num_gpus, gpu_milli=r.gpu_milli,
            cpu_milli=r.cpu_milli, memory_mib=r.memory_mib, gpu_spec="|".join(r.gpu_models),
            priority=0, time_limit=None,
        ))
    return out
