"""A service sharing the pool with batch work (middle tier: the real API, loop and service
controller, a scripted executor, a fake clock): when its replicas need room in a full pool,
they take back what other teams borrowed beyond their quota (reclaim) and never another
team's guaranteed quota; when the service scales down, the preempted batch jobs run again.
Baidu's online/offline co-location, with gpupool's quotas deciding who yields."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from gpupool.server.gateway.service_directory import Load
from gpupool.server.service_plan import DRAIN_SETTLE_S
from inprocess_api import InProcessServer


@pytest.fixture
def server(tmp_path: Path) -> InProcessServer:
    return InProcessServer(tmp_path, nodes=1, cards=2)


def team(server: InProcessServer, name: str, quota: float, borrow: float) -> Any:
    made = server.admin.post("/teams", json={"name": name, "quota_gpus": quota,
                                             "borrow_limit_gpus": borrow})
    assert made.status_code == 201, made.text
    return server.user(f"{name}-user", name)


def tick(server: InProcessServer, seconds: float = 0.0) -> None:
    server.clock.now += seconds
    server.services.check()
    for _ in range(3):
        server.controller.step()


def phases(client: Any, ids: list[int]) -> list[str]:
    return [client.get(f"/jobs/{i}").json()["phase"] for i in ids]


def replicas(server: InProcessServer) -> list[dict[str, Any]]:
    return list(server.admin.get("/services/echo").json()["replicas"])


def test_a_service_reclaims_borrowed_capacity_and_gives_it_back(
        server: InProcessServer) -> None:
    server.admin.patch("/teams/default", json={"quota_gpus": 0})
    blue = team(server, "blue", quota=1, borrow=0)
    red = team(server, "red", quota=1, borrow=1)
    batch = []
    for _ in range(8):  # red fills both cards: its quota and one borrowed
        made = red.post("/jobs", json={"command": ["sleep", "1000"], "gpus": 0.25,
                                       "grace_period_s": 10})
        assert made.status_code == 201
        batch.append(int(made.json()["id"]))
    tick(server)
    assert phases(red, batch) == ["running"] * 8

    deployed = blue.post("/services", json={
        "name": "echo", "command": ["python3", "serve.py"], "gpus": 0.25,
        "replicas": {"min": 1, "max": 8}, "scaling": {"target_inflight": 1,
                                                      "cooldown_s": 10}})
    assert deployed.status_code == 201, deployed.text
    tick(server)  # the replica is queued; a borrowed batch job is told to stop
    tick(server, 1)  # it ended (SIGTERM honoured): the replica starts in its place
    assert [r["phase"] for r in replicas(server)] == ["running"]
    preempted = [j for j, p in zip(batch, phases(red, batch), strict=True) if p == "pending"]
    assert len(preempted) == 1
    events = red.get(f"/jobs/{preempted[0]}").json()["events"]
    assert any("preempted to make room" in e["message"] for e in events)

    # heavy load wants 8 replicas: blue's quota (1 GPU) holds 4 of them; red keeps its own
    server.services.ready |= {int(r["id"]) for r in replicas(server)}
    tick(server)
    server.board.report("echo", Load({int(replicas(server)[0]["id"]): 100}, 0))
    for _ in range(4):
        tick(server, 1)
    running = [r for r in replicas(server) if r["phase"] == "running"]
    assert len(running) == 4  # blue's guaranteed GPU, in quarters
    assert phases(red, batch).count("running") == 4  # red's guaranteed GPU is untouched
    assert sum(r["phase"] == "pending" for r in replicas(server)) == 4  # wait for room

    # the load goes, the cooldown passes: back to one replica, red's jobs run again
    server.services.ready |= {int(r["id"]) for r in running}
    server.board.report("echo", Load({}, 0))
    tick(server, 11)
    tick(server, DRAIN_SETTLE_S + 0.1)
    for _ in range(3):
        tick(server, 1)
    live = [r for r in replicas(server) if r["state"] != "stopping"]
    assert len(live) == 1
    assert phases(red, batch).count("running") == 7  # all but the live replica's quarter


def test_a_service_preempts_its_own_teams_batch_work_and_gives_it_back(
        server: InProcessServer) -> None:
    """Within one team (no borrowing involved): the service's priority (100 by default) is
    above batch jobs' (0), so its replicas preempt the team's batch jobs, each told to stop
    with its grace period; the batch jobs run again when the service scales down."""
    server.admin.patch("/teams/default", json={"quota_gpus": 0})
    blue = team(server, "blue", quota=2, borrow=0)
    batch = []
    for _ in range(8):  # blue's own batch work fills both cards
        made = blue.post("/jobs", json={"command": ["sleep", "1000"], "gpus": 0.25,
                                        "grace_period_s": 10})
        assert made.status_code == 201
        batch.append(int(made.json()["id"]))
    tick(server)
    assert phases(blue, batch) == ["running"] * 8

    deployed = blue.post("/services", json={
        "name": "echo", "command": ["python3", "serve.py"], "gpus": 0.25,
        "replicas": {"min": 1, "max": 3}, "scaling": {"target_inflight": 1,
                                                      "cooldown_s": 10}})
    assert deployed.status_code == 201, deployed.text
    tick(server)
    tick(server, 1)
    assert [r["phase"] for r in replicas(server)] == ["running"]
    server.services.ready |= {int(r["id"]) for r in replicas(server)}
    tick(server)
    server.board.report("echo", Load({int(replicas(server)[0]["id"]): 3}, 0))
    for _ in range(4):
        tick(server, 1)
    assert [r["phase"] for r in replicas(server)] == ["running"] * 3
    preempted = [j for j, p in zip(batch, phases(blue, batch), strict=True) if p == "pending"]
    assert len(preempted) == 3
    for job in preempted:
        events = blue.get(f"/jobs/{job}").json()["events"]
        assert any("preempted" in e["message"] for e in events), events

    server.services.ready |= {int(r["id"]) for r in replicas(server)}
    server.board.report("echo", Load({}, 0))
    tick(server, 11)
    tick(server, DRAIN_SETTLE_S + 0.1)
    for _ in range(3):
        tick(server, 1)
    assert len([r for r in replicas(server) if r["state"] != "stopping"]) == 1
    assert phases(blue, batch).count("running") == 7
