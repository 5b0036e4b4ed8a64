"""The Acme-shaped team workloads: the fitted distributions, the situations the generator
promises (flood, skew, late-comer), the offered load, determinism and valid jobs."""

from __future__ import annotations

import math
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from gpupool.core.request import Request
from gpupool.sim.team_synthetic import (
    AcmeShape,
    GpuMix,
    LogNormal,
    acme_shape,
    pods_with_durations,
    queues_for,
    synthetic_team_workload,
    team_names,
)
from gpupool.sim.trace import TracePod, load_pods
from gpupool.sim.workload import WorkloadJob, load_workload, write_workload

TRACES = Path(__file__).resolve().parents[2] / "shared" / "traces"
# The Seren row as cluster_summary.csv has it, so the tests do not depend on the file.
SEREN = AcmeShape("Seren", 1414.335, 122.0, 1209604.0, 5.68, 1.0, 1024.0, 663813)
SUMMARY = (
    "id,job_num,gpu_job_num,avg_run_time_gpu,med_run_time_gpu,max_run_time_gpu,avg_gpu_num,"
    "med_gpu_num,max_gpu\n"
    "Seren,1031550,663813,1414.335,122.0,1209604.0,5.68,1.0,1024.0\n"
    "PAI,1260920,1037085,4787.109,480.667,626371.0,0.683,0.5,8.0\n"
)


def offered_load(jobs: list[WorkloadJob], gpus: int) -> float:
    span = max(j.submit_time for j in jobs)
    return sum(j.gpus * j.duration for j in jobs) / (gpus * span)


def test_acme_shape_reads_the_named_row(tmp_path: Path) -> None:
    path = tmp_path / "cluster_summary.csv"
    path.write_text(SUMMARY)
    assert acme_shape(path) == SEREN
    pai = acme_shape(path, "PAI")
    assert (pai.gpu_mean, pai.gpu_median, pai.gpu_jobs) == (0.683, 0.5, 1037085)
    with pytest.raises(ValueError, match="no cluster 'Kalos'; it has Seren, PAI"):
        acme_shape(path, "Kalos")


@pytest.mark.skipif(not (TRACES / "acme" / "cluster_summary.csv").is_file(),
                    reason=f"Acme summary not found under {TRACES}")
def test_the_real_summary_has_the_seren_row_used_here() -> None:
    assert acme_shape(TRACES / "acme" / "cluster_summary.csv") == SEREN


def test_lognormal_fit_matches_median_and_mean() -> None:
    fit = LogNormal.fit(mean=1414.335, median=122.0, cap_s=1e12)
    assert fit.mu == pytest.approx(math.log(122.0))
    assert fit.sigma == pytest.approx(math.sqrt(2 * math.log(1414.335 / 122.0)))
    assert fit.clipped_mean == pytest.approx(1414.335, rel=1e-6)  # the cap is out of reach
    capped = LogNormal.fit(mean=1414.335, median=122.0, cap_s=86_400.0)
    draws = capped.draw(np.random.default_rng(0), 400_000)
    assert draws.max() <= 86_400.0 and draws.min() >= 1.0
    assert np.median(draws) == pytest.approx(122.0, rel=0.02)
    assert draws.mean() == pytest.approx(capped.clipped_mean, rel=0.03)
    assert capped.clipped_mean < 1414.335


@pytest.mark.parametrize(
    ("mean", "median", "top", "rel"),
    # Seren, Philly, Helios; PAI's 0.683 is just below the least mean with P(<= 0.5) = 0.55
    [(5.68, 1.0, 32, 1e-6), (1.928, 1.0, 8, 1e-6), (3.716, 1.0, 16, 1e-6), (0.683, 0.5, 8, 0.01)],
)
def test_gpu_mix_has_the_median_and_the_mean(mean: float, median: float, top: int,
                                             rel: float) -> None:
    mix = GpuMix.fit(mean, median, top)
    assert sum(mix.probs) == pytest.approx(1.0)
    assert mix.mean == pytest.approx(mean, rel=rel)
    cdf = np.cumsum(mix.probs)
    assert mix.sizes[int(np.searchsorted(cdf, 0.5))] == median
    assert max(mix.sizes) == top


def test_gpu_mix_out_of_reach_takes_the_closest_mean() -> None:
    mix = GpuMix.fit(26.77, 1.0, 16)  # Kalos: 26.8 GPUs per job on average
    assert mix.mean == pytest.approx(0.15 * 0.375 + 0.40 + 0.45 * 16, rel=1e-3)


def test_workload_is_deterministic_valid_and_offers_the_load(tmp_path: Path) -> None:
    jobs = synthetic_team_workload(4, 3000, seed=7, cluster_gpus=64, shape=SEREN)
    assert jobs == synthetic_team_workload(4, 3000, seed=7, cluster_gpus=64, shape=SEREN)
    assert jobs != synthetic_team_workload(4, 3000, seed=8, cluster_gpus=64, shape=SEREN)
    assert len({j.job_id for j in jobs}) == 3000
    assert [j.submit_time for j in jobs] == sorted(j.submit_time for j in jobs)
    assert offered_load(jobs, 64) == pytest.approx(1.2, rel=0.1)
    assert max(j.gpus for j in jobs) == 32 and {j.nodes for j in jobs} == {1, 2, 4}
    assert all(j.duration <= 86_400 and j.time_limit is not None
               and j.duration <= j.time_limit <= 3 * j.duration + 60 for j in jobs)
    path = tmp_path / "w.csv"
    write_workload(path, jobs)
    assert load_workload(path) == jobs


def test_the_situations_fair_share_is_about() -> None:
    jobs = synthetic_team_workload(4, 2000, seed=1, cluster_gpus=128, shape=SEREN)
    span = max(j.submit_time for j in jobs)
    flood = [j for j in jobs if j.submit_time == 0.0]
    assert len(flood) >= 300 and {j.team for j in flood} == {"team-0"}
    late = [j.submit_time for j in jobs if j.team == "team-3"]
    assert late and min(late) >= span / 2 * 0.95  # the expected span, not the realised one
    steady = Counter(j.team for j in jobs if j.submit_time > 0)
    assert steady["team-0"] > steady["team-1"] > steady["team-2"]
    assert {j.user for j in jobs if j.team == "team-1"} <= {"team-1-u0", "team-1-u1",
                                                               "team-1-u2"}


def test_small_cluster_caps_the_job_size() -> None:
    jobs = synthetic_team_workload(2, 300, seed=0, cluster_gpus=4, shape=SEREN)
    assert max(j.gpus for j in jobs) == 4 and all(j.nodes == 1 for j in jobs)


def test_queues_for_splits_the_cluster_evenly() -> None:
    queues = queues_for(3, 96)
    assert [q.name for q in queues] == team_names(3) == ["team-0", "team-1", "team-2"]
    assert sum(q.quota_gpus for q in queues) == pytest.approx(96)
    assert all(q.borrow_limit_gpus == 96 and q.weight == 1.0 for q in queues)


def test_pods_get_durations_teams_and_arrivals() -> None:
    pods = [TracePod(Request("p", 4000, 1024, num_gpus=1, gpu_milli=300)),
            TracePod(Request("p", 8000, 2048, num_gpus=2, gpu_milli=1000,
                             gpu_models=("T4", "P100"))),
            TracePod(Request("cpu", 1000, 1024))] * 50
    jobs = pods_with_durations(pods, seed=3, cluster_gpus=8, shape=SEREN)
    assert len(jobs) == 100 and len({j.job_id for j in jobs}) == 100
    assert {j.team for j in jobs} <= set(team_names(4))
    share = next(j for j in jobs if j.gpu_milli == 300)
    pair = next(j for j in jobs if j.num_gpu == 2)
    assert (share.cpu_milli, share.memory_mib) == (4000, 1024)
    assert pair.gpu_spec == "T4|P100" and pair.time_limit is None
    assert jobs == pods_with_durations(pods, seed=3, cluster_gpus=8, shape=SEREN)


@pytest.mark.skipif(
    not (TRACES / "alibaba-gpu-v2023" / "openb_pod_list_default.csv").is_file(),
    reason=f"openb pod list not found under {TRACES}")
def test_openb_default_pods_as_a_team_workload() -> None:
    pods = load_pods(TRACES / "alibaba-gpu-v2023" / "openb_pod_list_default.csv")
    jobs = pods_with_durations(pods, seed=0, cluster_gpus=6212, shape=SEREN)
    assert len(jobs) == sum(1 for p in pods if p.request.num_gpus > 0)
    assert offered_load(jobs, 6212) == pytest.approx(1.2, rel=0.1)
