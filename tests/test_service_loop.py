"""Inference services in the loop (middle tier: the real API, controller and service
controller over a real database, a scripted executor, a fake clock, scripted readiness):
deploy, update, replicas started as told, readiness, autoscaling up and down with cooldown,
scale to zero and wake, rolling updates, crash replacement, deletion, keys, and who may see
what. Real replicas through a real gateway and ``gpupool up``: tests/test_services_e2e.py."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from gpupool.server.gateway.service_directory import Load
from gpupool.server.service_directory import ServiceRoutes
from gpupool.server.service_plan import DRAIN_SETTLE_S
from inprocess_api import InProcessServer


@pytest.fixture
def server(tmp_path: Path) -> InProcessServer:
    return InProcessServer(tmp_path, nodes=1, cards=4)


def spec(**over: Any) -> dict[str, Any]:
    return {"name": "echo", "command": ["python3", "serve.py"], "gpus": 0.25,
            "replicas": {"min": 1, "max": 4},
            "scaling": {"target_inflight": 4, "cooldown_s": 30},
            "readiness": {"path": "/healthz"}, **over}


def deploy(server: InProcessServer, client: Any = None, **over: Any) -> dict[str, Any]:
    done = (client or server.admin).post("/services", json=spec(**over))
    assert done.status_code in (200, 201), done.text
    return dict(done.json())


def view(server: InProcessServer, name: str = "echo") -> dict[str, Any]:
    got = server.admin.get(f"/services/{name}")
    assert got.status_code == 200, got.text
    return dict(got.json())


def tick(server: InProcessServer, seconds: float = 0.0) -> None:
    """Time passes, the service controller makes a pass, the loop places and launches."""
    server.clock.now += seconds
    server.services.check()
    server.controller.step()
    server.controller.step()


def ready_all(server: InProcessServer) -> None:
    server.services.ready |= {int(r["id"]) for r in view(server)["replicas"]}
    tick(server)


def states(server: InProcessServer) -> dict[str, str]:
    return {r["id"]: r["state"] for r in view(server)["replicas"]}


def load(server: InProcessServer, inflight: int, waiting: int = 0) -> None:
    ready = [int(r["id"]) for r in view(server)["replicas"] if r["state"] == "ready"]
    spread = {r: inflight // len(ready) for r in ready} if ready else {}
    if waiting:
        spread[0] = waiting
    server.board.report("echo", Load(spread, 0))


def test_deploy_creates_then_updates_only_when_the_spec_changes(
        server: InProcessServer) -> None:
    first = deploy(server)
    assert first["action"] == "created"
    svc = first["service"]
    assert svc["url"] == "http://127.0.0.1:8471/svc/echo/"
    assert svc["generation"] == 1 and svc["desired_replicas"] == 1
    assert svc["spec"]["priority"] == 100  # above batch work by default
    assert deploy(server)["action"] == "unchanged"
    again = deploy(server, env={"MODEL": "v2"})
    assert again["action"] == "updated" and again["service"]["generation"] == 2


def test_a_replica_runs_the_front_before_the_command_in_a_private_network(
        server: InProcessServer) -> None:
    deploy(server)
    tick(server)
    launched = server.executor.launched[-1]
    argv = list(launched.command)
    assert argv[1:4] == ["-I", "-m", "gpupool.executors.replica_front"]
    assert argv[argv.index("--") + 1:] == ["python3", "serve.py"]
    socket = argv[argv.index("--socket") + 1]
    assert argv[argv.index("--port") + 1] == launched.env["PORT"]
    assert launched.private_network
    assert str(Path(socket).parent) in launched.readable  # bound into the sandbox
    assert Path(socket).parent.is_dir() and len(socket) < 100  # AF_UNIX paths are short
    assert launched.env["GPUPOOL_GPU_FRACTION"] == "0.25"
    svc = view(server)
    assert [r["state"] for r in svc["replicas"]] == ["starting"]
    assert svc["replicas"][0]["gpu_share"] == 0.25 and svc["ready_replicas"] == 0


def test_the_gateway_sees_only_ready_replicas(server: InProcessServer) -> None:
    deploy(server)
    tick(server)
    routes = ServiceRoutes(server.db, server.board, server.services.poke)
    target = routes.service("echo")
    assert target is not None and target.replicas == () and not target.public
    assert target.team == "default"
    ready_all(server)
    target = routes.service("echo")
    assert target is not None and len(target.replicas) == 1
    assert target.replicas[0].uds.endswith("front.sock")
    assert view(server)["ready_replicas"] == 1
    assert routes.service("nope") is None


def test_load_scales_up_at_once_and_down_only_after_the_cooldown(
        server: InProcessServer) -> None:
    deploy(server)
    tick(server)
    ready_all(server)
    load(server, 13)  # 13 in flight at 4 per replica: 4 replicas
    tick(server)
    assert view(server)["desired_replicas"] == 4
    assert len(view(server)["replicas"]) == 4
    ready_all(server)
    load(server, 0)
    tick(server, 10)
    assert view(server)["desired_replicas"] == 4  # within the cooldown: held
    tick(server, 25)
    assert view(server)["desired_replicas"] == 1
    draining = [i for i, s in states(server).items() if s == "draining"]
    assert len(draining) == 3
    tick(server, DRAIN_SETTLE_S + 0.1)
    left = states(server)  # the drained ones stopped (and ended: gone from the view)
    assert list(left.values()) == ["ready"]
    assert set(left) == {min(draining + list(left), key=int)}  # the oldest one stays


def test_scaling_never_goes_past_max(server: InProcessServer) -> None:
    deploy(server)
    tick(server)
    ready_all(server)
    load(server, 1000)
    tick(server)
    assert view(server)["desired_replicas"] == 4


def test_scale_to_zero_and_a_waiting_request_wakes_it(server: InProcessServer) -> None:
    deploy(server, replicas={"min": 0, "max": 2}, scaling={"target_inflight": 1,
                                                           "cooldown_s": 5})
    tick(server)
    assert view(server)["replicas"] == []
    routes = ServiceRoutes(server.db, server.board, server.services.poke)
    routes.wake("echo")
    tick(server)
    assert view(server)["desired_replicas"] == 1
    assert [r["state"] for r in view(server)["replicas"]] == ["starting"]
    assert view(server)["last_cold_start_s"] is None
    server.clock.now += 2.0  # the replica takes 2 s to answer its readiness path
    ready_all(server)
    assert view(server)["last_cold_start_s"] == pytest.approx(2.0)  # reported, once ready
    load(server, 0)
    tick(server, 6)
    assert view(server)["desired_replicas"] == 0
    tick(server, DRAIN_SETTLE_S + 0.1)
    assert set(states(server).values()) <= {"stopping"}


def test_a_rolling_update_keeps_the_old_replicas_until_new_ones_are_ready(
        server: InProcessServer) -> None:
    deploy(server, replicas={"min": 2, "max": 2})
    tick(server)
    ready_all(server)
    old = set(states(server))
    deploy(server, replicas={"min": 2, "max": 2}, env={"MODEL": "v2"})
    tick(server)
    now = {r["id"]: r for r in view(server)["replicas"]}
    new = set(now) - old
    assert len(new) == 2 and all(now[i]["generation"] == 2 for i in new)
    assert all(now[i]["state"] == "ready" for i in old)  # still serving
    server.services.ready.add(int(min(new, key=int)))
    tick(server)
    st = states(server)
    assert sum(st[i] == "draining" for i in old) == 1  # one new ready: one old drained
    server.services.ready |= {int(i) for i in new}
    tick(server)
    st = states(server)
    assert all(st[i] == "draining" for i in old)  # both new ready: both old drained
    tick(server, DRAIN_SETTLE_S + 0.1)
    st = states(server)
    assert set(st) == new and set(st.values()) == {"ready"}  # the old ones stopped


def test_a_new_spec_that_never_gets_ready_leaves_the_old_replica_serving(
        server: InProcessServer) -> None:
    deploy(server)
    tick(server)
    ready_all(server)
    (old,) = states(server)
    deploy(server, command=["python3", "broken.py"])
    for _ in range(5):
        tick(server, 5)
    assert states(server)[old] == "ready"


def test_a_replica_that_dies_is_replaced(server: InProcessServer) -> None:
    deploy(server)
    tick(server)
    ready_all(server)
    (first,) = states(server)
    server.executor.end(int(first), 1)
    tick(server)
    tick(server)
    st = states(server)
    assert first not in st and len(st) == 1


def test_a_crashing_command_is_restarted_with_back_off(server: InProcessServer) -> None:
    deploy(server)
    starts = []
    for _ in range(12):
        tick(server, 0.5)
        for rid in states(server):
            if rid not in starts:
                starts.append(rid)
                server.executor.end(int(rid), 1)
        tick(server)
    # without a back-off every pass would start one; with it, far fewer in these 6 s
    assert 3 <= len(starts) <= 7


def test_delete_stops_the_replicas_and_frees_the_name(server: InProcessServer) -> None:
    deploy(server)
    tick(server)
    ready_all(server)
    gone = server.admin.delete("/services/echo")
    assert gone.status_code == 200
    assert server.admin.get("/services/echo").status_code == 404
    tick(server)
    replica = server.admin.get(f"/jobs/{gone.json()['replicas'][0]['id']}").json()
    assert replica["phase"] in ("cancelled", "running")
    assert any("deleted" in e["message"] for e in replica["events"])
    assert deploy(server)["action"] == "created"
    # the new service is a new one: its replicas are its own, never the old one's (a
    # reused row id once made the new replica's origin collide with the old replica's)
    tick(server)
    fresh = view(server)["replicas"]
    assert len(fresh) == 1 and fresh[0]["id"] != replica["id"]
    assert fresh[0]["phase"] == "running"


def test_other_teams_neither_see_nor_take_a_service(server: InProcessServer) -> None:
    server.admin.post("/teams", json={"name": "red", "quota_gpus": 1})
    red = server.user("rita", "red")
    deploy(server)
    assert red.get("/services/echo").status_code == 404
    assert red.get("/services").json() == []
    taken = red.post("/services", json=spec())
    assert taken.status_code == 409 and "another team" in taken.json()["detail"]
    assert red.delete("/services/echo").status_code == 404
    assert red.post("/services/echo/keys", json={"name": "k"}).status_code == 404


def test_replicas_are_not_submitted_as_jobs(server: InProcessServer) -> None:
    made = server.admin.post("/jobs", json={"kind": "service", "command": ["x"]})
    assert made.status_code == 422 and "deploy the service" in made.json()["detail"]


def test_bad_specs_are_refused_with_the_field_named(server: InProcessServer) -> None:
    for bad, word in [({"name": "Echo!"}, "name"), ({"replicas": {"min": 3, "max": 2}},
                                                    "min (3) is above max (2)"),
                      ({"env": {"PORT": "1"}}, "PORT"), ({"gpus": 1.5}, "gpus"),
                      ({"readiness": {"path": "healthz"}}, "path"),
                      ({"command": []}, "command"), ({"auth": "none"}, "auth")]:
        answer = server.admin.post("/services", json=spec(**bad))
        assert answer.status_code == 422, bad
        assert word in answer.json()["detail"], (bad, answer.json())
    assert server.admin.get("/services").json() == []  # nothing half-made


def test_keys_are_shown_once_checked_and_revoked(server: InProcessServer) -> None:
    deploy(server)
    made = server.admin.post("/services/echo/keys", json={"name": "web"})
    assert made.status_code == 201
    key = made.json()["key"]
    assert key.startswith("gpsk_")
    routes = ServiceRoutes(server.db, server.board, server.services.poke)
    assert routes.key_valid("echo", key) and not routes.key_valid("echo", key + "x")
    listed = server.admin.get("/services/echo/keys").json()
    assert [k["name"] for k in listed] == ["web"] and listed[0]["key"] is None
    twice = server.admin.post("/services/echo/keys", json={"name": "web"})
    assert twice.status_code == 409
    assert server.admin.delete("/services/echo/keys/web").status_code == 200
    assert not routes.key_valid("echo", key)
