"""Fair share in the shared cycle, replayed on simulated time: a team that floods the queue
first does not keep the borrowed GPUs; weights set the split."""

from __future__ import annotations

from gpupool.core.cluster import GpuSpec, NodeSpec
from gpupool.sim.team_metrics import JobRecord
from gpupool.sim.team_queues import TeamQueue
from gpupool.sim.team_timed import run_team_timed
from gpupool.sim.workload import WorkloadJob

A100 = GpuSpec("A100", 81920)
NODES = [NodeSpec(f"n{i}", 64000, 262144, (A100,) * 4) for i in range(2)]  # 8 GPUs


def job(i: int, team: str, submit: float, duration: float = 100.0, gpus: int = 1,
        milli: int = 1000) -> WorkloadJob:
    return WorkloadJob(f"{team}{i}", team, f"{team}-user", submit, duration, gpus, milli,
                       0, 0, "", 0, None)


def held_at(records: list[JobRecord], t: float) -> dict[str, float]:
    """GPUs each team holds at time t (from the records' first start to their end; the
    flood tests have no preemption)."""
    held: dict[str, float] = {}
    for r in records:
        if r.start is not None and r.start <= t and (r.end is None or r.end > t):
            held[r.team] = held.get(r.team, 0.0) + r.gpus
    return held


def flood(weights: tuple[float, float], order: str) -> list[JobRecord]:
    """Team a submits 40 one-GPU jobs at t=0 and takes all 8 GPUs (it may borrow them all);
    team b submits 40 at t=10. Every job runs 100 s. No quota: both only borrow."""
    teams = [TeamQueue("a", 0, 8, weight=weights[0]), TeamQueue("b", 0, 8, weight=weights[1])]
    jobs = [job(i, "a", 0.0) for i in range(40)] + [job(i, "b", 10.0) for i in range(40)]
    return run_team_timed(NODES, jobs, teams, "bestfit", order=order, backfill=True).records


def test_equal_weights_split_the_pool_in_halves_within_one_run_time() -> None:
    records = flood((1, 1), "fairshare")
    assert held_at(records, 50.0) == {"a": 8.0}  # a flooded first and borrowed everything
    # Bound: once the jobs running when b arrived end (one run time, 100 s), each GPU that
    # frees goes to the team with the lower load: both hold half from then on.
    for t in (100.0, 150.0, 250.0, 350.0):
        assert held_at(records, t) == {"a": 4.0, "b": 4.0}, t


def test_weights_three_to_one_give_three_quarters() -> None:
    records = flood((3, 1), "fairshare")
    for t in (100.0, 150.0, 250.0):
        assert held_at(records, t) == {"a": 6.0, "b": 2.0}, t


def test_fifo_lets_the_team_that_flooded_first_keep_everything() -> None:
    records = flood((1, 1), "fifo")
    assert held_at(records, 150.0) == {"a": 8.0}
    assert held_at(records, 450.0) == {"a": 8.0}  # a's 40 jobs: five rounds of eight
    assert held_at(records, 550.0) == {"b": 8.0}


def test_past_usage_breaks_ties_for_the_team_that_used_less() -> None:
    """Both teams hold nothing when a GPU frees; a used it before: b goes first."""
    teams = [TeamQueue("a", 0, 4), TeamQueue("b", 0, 4)]
    jobs = [job(0, "a", 0.0, duration=1000.0, gpus=4), job(2, "a", 10.0, gpus=4),
            job(3, "b", 20.0, gpus=4)]
    for order, first in (("fairshare", "b3"), ("fifo", "a2")):
        records = {r.job_id: r for r in run_team_timed(NODES[:1], jobs, teams, "bestfit",
                                                       order=order, backfill=False).records}
        assert records[first].start == 1000.0, order
        assert {records["a2"].start, records["b3"].start} == {1000.0, 1100.0}
