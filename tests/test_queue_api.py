"""Fair share, reservations and queue counts through the API, on the in-process tier (the
real app and loop, a scripted executor, a hand-stepped clock)."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

from inprocess_api import InProcessServer, submit


def test_teams_take_turns_by_weight_through_the_api(tmp_path: Path) -> None:
    server = InProcessServer(tmp_path, nodes=1, cards=4)
    for name, weight in (("a", 3), ("b", 1)):
        made = server.admin.post("/teams", json={"name": name, "quota_gpus": 0,
                                                 "borrow_limit_gpus": 4, "weight": weight})
        assert made.status_code == 201, made.text
        assert made.json()["weight"] == weight
    a, b = server.user("ann", "a"), server.user("bob", "b")
    jobs = {"a": [submit(a, gpus=1) for _ in range(6)],
            "b": [submit(b, gpus=1) for _ in range(6)]}
    server.step()
    running = {t: [i for i in ids if server.admin.get(f"/jobs/{i}").json()["phase"]
                   == "running"] for t, ids in jobs.items()}
    assert (len(running["a"]), len(running["b"])) == (3, 1)  # 3:1, both waiting
    queues = {q["name"]: q for q in server.admin.get("/queues").json()}
    assert queues["a"]["used_gpus"] == 3 and queues["b"]["used_gpus"] == 1


def test_a_reserved_job_and_a_blocked_job_say_why_they_wait(tmp_path: Path) -> None:
    server = InProcessServer(tmp_path, nodes=2, cards=2)
    made = server.admin.post("/teams", json={"name": "t", "quota_gpus": 4,
                                             "borrow_limit_gpus": 4})
    assert made.status_code == 201, made.text
    admin = server.user("tess", "t")  # a team whose quota never binds here: capacity does
    small = [submit(admin, gpus=1) for _ in range(4)]  # the pool is full
    server.step()
    big = submit(admin, gpus=2)
    server.executor.end(small[0])
    server.step(10)  # a GPU frees: the big job, first in line, reserves a node
    view = admin.get(f"/jobs/{big}").json()
    assert view["phase"] == "pending"
    assert "node(s) reserved for it, expected to start in" in view["reason"]
    late = submit(admin, gpus=1)
    server.step(1)
    reason = admin.get(f"/jobs/{late}").json()["reason"]
    assert reason.startswith(f"the free capacity that fits it is reserved for job {big}")
    short = submit(admin, gpus=1, time_limit_s=60)  # ends before the reservation: backfills
    server.step(1)
    assert admin.get(f"/jobs/{short}").json()["phase"] == "running"
    events = [e["message"] for e in admin.get(f"/jobs/{short}").json()["events"]]
    assert any(m.startswith("backfilled until ") and f"reserved for job {big}" in m
               for m in events), events


def test_a_multi_node_job_counts_all_its_gpus_in_its_queue(tmp_path: Path) -> None:
    server = InProcessServer(tmp_path, nodes=2, cards=4)
    job = submit(server.admin, gpus=2, nodes=2)
    server.step()
    assert server.admin.get(f"/jobs/{job}").json()["phase"] == "running"
    queues = {q["name"]: q for q in server.admin.get("/queues").json()}
    assert queues["default"]["used_gpus"] == 4  # 2 nodes × 2 GPUs, not rank 0's 2
