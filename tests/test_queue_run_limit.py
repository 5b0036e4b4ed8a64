"""A queue's default run limit (issue 16, item 3): how long its running jobs without a time
limit are assumed to run when the server estimates when a reservation starts. Set per team
(`gpupool admin team create|set --default-run-limit`, API ``default_run_limit_s``; null: the
server's ``--default-run-limit``), on the in-process tier."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import typer

sys.path.insert(0, str(Path(__file__).parent))

from gpupool.cli.admin_cmd import _share_fields
from inprocess_api import InProcessServer, submit


def test_the_limit_is_stored_shown_and_cleared(tmp_path: Path) -> None:
    server = InProcessServer(tmp_path)
    made = server.admin.post("/teams", json={"name": "t", "default_run_limit_s": 1800})
    assert made.status_code == 201, made.text
    assert made.json()["default_run_limit_s"] == 1800
    kept = server.admin.patch("/teams/t", json={"weight": 2})
    assert kept.json()["default_run_limit_s"] == 1800  # not given: kept
    cleared = server.admin.patch("/teams/t", json={"default_run_limit_s": None})
    assert cleared.json()["default_run_limit_s"] is None
    listed = {t["name"]: t for t in server.admin.get("/teams").json()}
    assert listed["t"]["default_run_limit_s"] is None
    audit = [e["detail"] for e in server.admin.get("/audit").json()]
    assert any("default run limit 1800 s" in d for d in audit), audit
    assert any("the server's default run limit" in d for d in audit), audit


@pytest.mark.parametrize("value", [0, -5, 400 * 86400, "soon"])
def test_a_bad_limit_is_a_422_naming_the_field(tmp_path: Path, value: object) -> None:
    server = InProcessServer(tmp_path)
    refused = server.admin.post("/teams", json={"name": "t", "default_run_limit_s": value})
    assert refused.status_code == 422
    assert "default_run_limit_s" in refused.text
    assert server.admin.get("/teams").json() == [t for t in server.admin.get("/teams").json()
                                                 if t["name"] != "t"]  # nothing written


def test_the_cli_option_reads_durations_and_default() -> None:
    assert _share_fields(None, None, None, "30m") == {"default_run_limit_s": 1800.0}
    assert _share_fields(None, None, None, "90") == {"default_run_limit_s": 90.0}
    assert _share_fields(None, None, None, "Default") == {"default_run_limit_s": None}
    assert _share_fields(None, None, None, None) == {}
    with pytest.raises(typer.Exit):
        _share_fields(None, None, None, "soonish")


def test_the_running_jobs_queue_limit_decides_what_may_backfill(tmp_path: Path) -> None:
    """Two nodes of 2 GPUs, full of 1-GPU jobs without a time limit; one ends, and a 2-GPU
    job reserves a node. The queue's limit (10 min) says when the reserved node frees: a job
    of 15 min may not start in the gap. Cleared (the server's 1 h), it may."""
    server = InProcessServer(tmp_path, nodes=2, cards=2)
    made = server.admin.post("/teams", json={"name": "t", "quota_gpus": 4,
                                             "borrow_limit_gpus": 4, "default_run_limit_s": 600})
    assert made.status_code == 201, made.text
    tess = server.user("tess", "t")
    small = [submit(tess, gpus=1) for _ in range(4)]
    server.step()
    big = submit(tess, gpus=2)
    server.executor.end(small[0])
    server.step(10)
    reason = tess.get(f"/jobs/{big}").json()["reason"]
    assert reason.endswith("node(s) reserved for it, expected to start in about 10 min"), reason
    medium = submit(tess, gpus=1, time_limit_s=900)
    server.step(1)
    view = tess.get(f"/jobs/{medium}").json()
    assert view["phase"] == "pending"
    assert view["reason"].startswith(f"the free capacity that fits it is reserved for job {big}")
    cleared = server.admin.patch("/teams/t", json={"default_run_limit_s": None})
    assert cleared.status_code == 200, cleared.text
    server.step(1)
    assert tess.get(f"/jobs/{medium}").json()["phase"] == "running"
    assert "expected to start in about 60 min" in tess.get(f"/jobs/{big}").json()["reason"]


# ---- the simulator: the same limit, from the queues YAML ---------------------------------

def sim_start_of_the_15_min_job(tmp_path: Path, limit: str) -> float | None:
    """The scenario above in the simulator: four 1-GPU jobs (one ends at 10 s, three run
    1,000 s), a 2-GPU job at 5 s, a 15-min job at 20 s; when the 15-min job starts."""
    from gpupool.core.cluster import NodeSpec
    from gpupool.executors.inventory import parse_fake_gpus
    from gpupool.sim.team_queues import load_queues
    from gpupool.sim.team_timed import run_team_timed
    from gpupool.sim.workload import WorkloadJob

    queues = tmp_path / f"queues{len(limit)}.yaml"
    queues.write_text("teams:\n  - {name: t, quota_gpus: 4, borrow_limit_gpus: 4"
                      f"{limit}}}\n")
    teams = load_queues(queues)

    def job(i: int, at: float, run: float, gpus: int, time_limit: float | None = None
            ) -> WorkloadJob:
        return WorkloadJob(f"j{i}", "t", "u", at, run, gpus, 1000, 1000, 1024, "", 0,
                           time_limit)

    jobs = [job(0, 0, 10, 1), *(job(i, 0, 1000, 1) for i in (1, 2, 3)), job(4, 5, 100, 2),
            job(5, 20, 900, 1, 900)]
    nodes = [NodeSpec(f"n{i}", 16000, 65536, parse_fake_gpus("2xA100-80GB")) for i in range(2)]
    run = run_team_timed(nodes, jobs, teams, "bestfit", order="fifo", backfill=True)
    return next(r.start for r in run.records if r.job_id == "j5")


def test_the_simulator_reads_the_queues_limit_and_backfills_as_the_server(
        tmp_path: Path) -> None:
    assert sim_start_of_the_15_min_job(tmp_path, "") == 20  # the default 1 h: it backfills
    late = sim_start_of_the_15_min_job(tmp_path, ", default_run_limit: 600")
    assert late is not None and late >= 1000  # 10 min: it waits for the big job


def test_a_bad_limit_in_the_queues_file_names_the_team(tmp_path: Path) -> None:
    from gpupool.sim.team_queues import QueueError, load_queues

    bad = tmp_path / "q.yaml"
    bad.write_text("teams:\n  - {name: t, quota_gpus: 1, borrow_limit_gpus: 0, "
                   "default_run_limit: 0}\n")
    with pytest.raises(QueueError, match="team 't': 'default_run_limit' must be a number > 0"):
        load_queues(bad)
