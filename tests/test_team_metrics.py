"""Team metrics on tiny hand-computed runs: JCT, waits, allocation, Jain's index over the
contended time (and over the whole run when there is none), per-team figures."""

from __future__ import annotations

import pytest

from gpupool.sim.team_metrics import (
    METRIC_KEYS,
    JobRecord,
    jain_fairness,
    jain_while_waiting,
    team_metrics,
    wait_over_time,
)
from gpupool.sim.workload import TeamQueue

A, B = TeamQueue("A", 2, 4), TeamQueue("B", 2, 4)


def rec(job: str, team: str, submit: float, start: float | None, end: float | None,
        gpus: float, preemptions: int = 0) -> JobRecord:
    return JobRecord(job, team, "u", submit, start, end, gpus, preemptions)


# A holds the whole cluster (4 GPUs) from 0 to 20 in two jobs; B waits from 0 to 20.
ONE_HAS_ALL = [rec("a1", "A", 0, 0, 10, 4), rec("a2", "A", 0, 10, 20, 4),
               rec("b1", "B", 0, 20, 30, 4, preemptions=2)]


def test_every_figure_of_a_hand_computed_run() -> None:
    m = team_metrics(ONE_HAS_ALL, [A, B], capacity_gpus=4)
    assert tuple(m) == METRIC_KEYS
    assert m["jct_mean_s"] == 20.0 and m["jct_p95_s"] == pytest.approx(29.0)  # 10, 20, 30
    assert (m["wait_p50_s"], m["wait_p95_s"], m["wait_max_s"]) == (10.0, pytest.approx(19.0),
                                                                   20.0)  # 0, 10, 20
    assert m["makespan_s"] == 30.0 and m["gpu_alloc_pct"] == pytest.approx(100.0)
    # contended time is [0, 10) only (A's second job waits there): A holds all of it
    assert m["jain_fairness"] == pytest.approx(0.5)
    assert m["preemptions"] == 2 and m["never_started"] == 0
    assert m["teams"] == {
        "A": {"jct_mean_s": 15.0, "wait_p95_s": pytest.approx(9.5), "gpu_seconds": 80.0},
        "B": {"jct_mean_s": 30.0, "wait_p95_s": 20.0, "gpu_seconds": 40.0},
    }


def test_equal_split_under_contention_is_one() -> None:
    records = [rec("a1", "A", 0, 0, 10, 2), rec("a2", "A", 0, 10, 20, 1),
               rec("b1", "B", 0, 0, 10, 2), rec("b2", "B", 0, 10, 12, 1)]
    assert team_metrics(records, [A, B], 4)["jain_fairness"] == pytest.approx(1.0)


def test_weights_divide_the_share() -> None:
    heavy = TeamQueue("A", 2, 4, weight=2.0)
    records = [rec("a1", "A", 0, 0, 10, 2), rec("a2", "A", 0, 10, 11, 1),
               rec("b1", "B", 0, 0, 10, 1), rec("b2", "B", 0, 10, 11, 1)]
    assert team_metrics(records, [heavy, B], 3)["jain_fairness"] == pytest.approx(1.0)
    assert team_metrics(records, [A, B], 3)["jain_fairness"] == pytest.approx(0.9)  # 20 v 10


def test_attempts_of_a_preempted_job_count_exactly() -> None:
    # a1 runs 0-5, is preempted, waits while b1 runs 5-15, runs again 15-20
    a1 = JobRecord("a1", "A", "u", 0, 0, 20, 4, preemptions=1, attempts=((0, 5), (15, 20)))
    records = [a1, rec("b1", "B", 0, 5, 15, 4)]
    m = team_metrics(records, [A, B], 4)
    assert m["gpu_alloc_pct"] == pytest.approx(100.0)
    assert m["teams"]["A"]["gpu_seconds"] == 40.0 and m["preemptions"] == 1
    # never both waiting (B waits 0-5, A 5-15): the whole run, 40 v 40
    assert m["jain_fairness"] == pytest.approx(1.0)
    without = team_metrics([JobRecord("a1", "A", "u", 0, 0, 20, 4, 1), records[1]], [A, B], 4)
    assert without["gpu_alloc_pct"] == pytest.approx(150.0)  # (80 + 40) / 80: the bound
    with pytest.raises(ValueError, match="attempt"):
        team_metrics([JobRecord("a", "A", "u", 0, 0, 9, 1, attempts=((5, 9), (0, 1)))], [A], 1)


def test_without_contention_the_whole_run_counts() -> None:
    records = [rec("a1", "A", 0, 0, 10, 1), rec("b1", "B", 20, 20, 30, 3)]
    # x = (10, 30): (40)^2 / (2 * (100 + 900)) = 0.8
    assert team_metrics(records, [A, B], 4)["jain_fairness"] == pytest.approx(0.8)


def test_a_job_never_started_keeps_its_team_waiting_to_the_end() -> None:
    records = [rec("a1", "A", 0, 0, 10, 4), rec("a2", "A", 0, None, None, 8),
               rec("b1", "B", 0, 5, 10, 1), rec("b2", "B", 0, None, None, 1)]
    m = team_metrics(records, [A, B, TeamQueue("idle", 0, 0)], 4)
    assert m["never_started"] == 2 and m["jct_mean_s"] == 10.0
    assert m["wait_max_s"] == 5.0 and m["makespan_s"] == 10.0
    assert m["gpu_alloc_pct"] == pytest.approx(100 * (40 + 5) / 40)
    # contended all along: x = (40, 5) -> 45^2 / (2 * (1600 + 25))
    assert m["jain_fairness"] == pytest.approx(45**2 / (2 * 1625))
    assert m["teams"]["idle"] == {"jct_mean_s": 0.0, "wait_p95_s": 0.0, "gpu_seconds": 0.0}


def test_empty_and_single_team_runs() -> None:
    m = team_metrics([], [A], 4)
    assert m["jain_fairness"] == 1.0 and m["makespan_s"] == 0.0 and m["gpu_alloc_pct"] == 0.0
    assert jain_fairness([rec("a", "A", 0, 0, 1, 1)], {"A": 1.0}) == 1.0


@pytest.mark.parametrize(
    ("record", "words"),
    [(rec("x", "C", 0, 0, 1, 1), "team 'C', which has no queue"),
     (rec("x", "A", 5, 1, 6, 1), "before its submit"),
     (rec("x", "A", 0, 5, 4, 1), "without a start at or before it"),
     (rec("x", "A", 0, None, 4, 1), "without a start")],
)
def test_inconsistent_records_are_refused(record: JobRecord, words: str) -> None:
    with pytest.raises(ValueError, match=words):
        team_metrics([record], [A, B], 4)


def test_wait_over_time_bins_by_start() -> None:
    records = [rec("a1", "A", 0, 0, 1, 1), rec("b1", "B", 0, 5, 6, 1),
               rec("a2", "A", 0, 10, 11, 1), rec("a3", "A", 0, None, None, 1)]
    assert wait_over_time(records, 2) == {"A": [(2.5, 0.0), (7.5, 10.0)], "B": [(7.5, 5.0)]}
    assert wait_over_time([], 3) == {}
    with pytest.raises(ValueError):
        wait_over_time(records, 0)


def test_jain_while_waiting_compares_only_the_teams_that_wait() -> None:
    # [0, 10): A (a2) and B (b1) wait while A holds all 4 GPUs -> 0.5; after 10 only B waits
    assert team_metrics(ONE_HAS_ALL, [A, B], 4)["jain_while_waiting"] == pytest.approx(0.5)
    # a third team that never waits does not pull the index down (jain_fairness falls back
    # to the whole run there)
    records = [*ONE_HAS_ALL, rec("c1", "C", 0, 0, 30, 0.5)]
    weights = {"A": 1.0, "B": 1.0, "C": 1.0}
    assert jain_while_waiting(records, weights) == pytest.approx(0.5)
    assert jain_while_waiting([rec("a", "A", 0, 0, 1, 1)], {"A": 1.0}) == 1.0
