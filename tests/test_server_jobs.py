"""The control plane through its REST API, against a real `gpupool up` process, on SQLite
and on the local PostgreSQL (skipped, saying so, when that server is absent)."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from server_harness import Server, backend_params, make_server, wait_for

PY = sys.executable


@pytest.fixture(scope="module", params=backend_params())
def server(request: pytest.FixtureRequest,
           tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    # One server per store for the module (each start costs seconds): the tests leave it
    # as they found it (their jobs ended, their users deleted).
    yield from make_server(request.param, tmp_path_factory.mktemp(request.param),
                           "1xA100-80GB")


def wait_file(path: Path) -> str:
    """A shell-free command that blocks until ``path`` exists, then prints the GPU env."""
    return (
        "import os,time,pathlib\n"
        f"p=pathlib.Path({str(path)!r})\n"
        "while not p.exists(): time.sleep(0.05)\n"
        "print({k: v for k, v in os.environ.items() if 'GPU' in k or 'CUDA' in k}, flush=True)\n"
    )


def job(client, **spec):  # type: ignore[no-untyped-def]
    response = client.post("/jobs", json=spec)
    assert response.status_code == 201, response.text
    return response.json()["id"]


def phase(client, job_id: str) -> str:  # type: ignore[no-untyped-def]
    return str(client.get(f"/jobs/{job_id}").json()["phase"])


def test_two_halves_share_a_gpu_and_a_third_waits_with_a_reason(
    server: Server, tmp_path: Path
) -> None:
    go = [tmp_path / f"go{i}" for i in range(3)]
    with server.client() as c:
        a = job(c, command=[PY, "-c", wait_file(go[0])], gpus=0.5)
        b = job(c, command=[PY, "-c", wait_file(go[1])], gpus=0.5)
        wait_for(lambda: phase(c, a) == "running" and phase(c, b) == "running")
        third = job(c, command=[PY, "-c", wait_file(go[2])], gpus=0.5, name="third")
        view = wait_for(
            lambda: (v := c.get(f"/jobs/{third}").json())["reason"].startswith("needs") and v
        )
        assert view["phase"] == "pending"
        assert view["reason"].startswith(
            "needs 0.5 of one GPU: 1 node has GPUs but no GPU with any share free"
        )
        placements = [c.get(f"/jobs/{j}").json()["placement"] for j in (a, b)]
        assert [p["gpus"] for p in placements] == [[0], [0]]
        node = c.get("/nodes").json()[0]
        assert node["gpus"][0]["allocated_milli"] == 1000
        assert sorted(node["gpus"][0]["jobs"]) == sorted([a, b])
        go[0].touch()
        wait_for(lambda: phase(c, a) == "succeeded")
        wait_for(lambda: phase(c, third) == "running")
        log = c.get(f"/jobs/{a}/logs").json()
        assert "'CUDA_VISIBLE_DEVICES': '0'" in log["data"]
        assert "'GPUPOOL_GPU_FRACTION': '0.5'" in log["data"]
        assert "'GPUPOOL_GPU_MEMORY_LIMIT_MIB': '40960'" in log["data"]
        assert "'CUDA_MPS_ACTIVE_THREAD_PERCENTAGE': '50'" in log["data"]
        go[1].touch()
        go[2].touch()
        wait_for(lambda: phase(c, third) == "succeeded")
        events = [e["phase"] for e in c.get(f"/jobs/{third}").json()["events"]]
        assert events == ["pending", "starting", "running", "succeeded"]


@pytest.mark.parametrize(
    ("body", "status", "field"),
    [
        ({"command": ["x"], "gpuz": 1}, 422, "gpuz"),
        ({"command": ["x"], "gpus": 1.5}, 422, "gpus"),
        ({"command": ["x"], "memory": "16XB"}, 422, "memory"),
        ({"command": []}, 422, "command"),
        ({"command": ["x"], "queue": "nosuch"}, 422, "queue"),
        ({"command": ["x"], "gpus": 1, "gpu_model": "H100"}, 422, "gpu_model"),
        ({"command": ["x"], "priority": "high"}, 422, "priority"),
    ],
)
def test_bad_submissions_get_a_4xx_naming_the_field(
    server: Server, body: dict[str, object], status: int, field: str
) -> None:
    with server.client() as c:
        response = c.post("/jobs", json=body)
    assert response.status_code == status
    assert field in response.json()["detail"]


def test_tokens_are_required_and_checked(server: Server) -> None:
    with server.client(token="gp_wrong") as c:
        assert c.get("/jobs").status_code == 401
    with server.client() as c:
        c.headers.pop("Authorization")
        response = c.get("/jobs")
    assert response.status_code == 401 and "token" in response.json()["detail"]


def test_a_team_sees_only_its_own_jobs(server: Server) -> None:
    with server.client() as admin:
        mine = job(admin, command=[PY, "-c", "pass"])
        assert admin.post("/teams", json={"name": "vision", "quota_gpus": 1}).status_code == 201
        assert admin.post("/users", json={"name": "ada", "team": "vision",
                                            "unix_user": "root"}).status_code == 201
        token = admin.post("/tokens", json={"user": "ada"}).json()["token"]
        assert admin.post("/teams", json={"name": "vision"}).status_code == 409
    with server.client(token=token) as ada:
        assert ada.get("/whoami").json() == {"user": "ada", "team": "vision", "admin": False}
        assert ada.get("/jobs").json() == []
        assert ada.get(f"/jobs/{mine}").status_code == 404
        assert ada.post(f"/jobs/{mine}/cancel").status_code == 404
        response = ada.post("/jobs", json={"command": ["x"], "queue": "default"})
        assert response.status_code == 403 and "queue" in response.json()["detail"]
        assert ada.post("/teams", json={"name": "evil"}).status_code == 403
        own = job(ada, command=[PY, "-c", "pass"])
        assert [j["id"] for j in ada.get("/jobs").json()] == [own]
        assert [q["name"] for q in ada.get("/queues").json()] == ["vision"]


def test_restart_on_failure_retries_then_fails_with_the_exit_code(server: Server) -> None:
    with server.client() as c:
        j = job(c, command=[PY, "-c", "raise SystemExit(3)"], restart="on-failure", max_retries=2)
        view = wait_for(lambda: (v := c.get(f"/jobs/{j}").json())["phase"] == "failed" and v)
    assert view["exit_code"] == 3
    assert view["attempts"] == 3
    messages = [e["message"] for e in view["events"]]
    assert any("retry 1 of 2" in m for m in messages)
    assert any("retry 2 of 2" in m for m in messages)


def test_cancel_pending_and_running(server: Server, tmp_path: Path) -> None:
    with server.client() as c:
        running = job(c, command=[PY, "-c", wait_file(tmp_path / "never")], gpus=1)
        wait_for(lambda: phase(c, running) == "running")
        waiting = job(c, command=[PY, "-c", "pass"], gpus=1)
        assert c.post(f"/jobs/{waiting}/cancel").status_code == 200
        wait_for(lambda: phase(c, waiting) == "cancelled")
        assert c.post(f"/jobs/{running}/cancel").status_code == 200
        wait_for(lambda: phase(c, running) == "cancelled")
        again = c.post(f"/jobs/{running}/cancel")
        assert again.status_code == 409


def test_admin_token_file_is_private_and_tokens_are_stored_hashed(server: Server) -> None:
    token_file = server.home / "admin.token"
    assert token_file.stat().st_mode & 0o777 == 0o600
    with server.client() as admin:
        admin.post("/users", json={"name": "bob", "team": "default", "unix_user": "root"})
        bob = admin.post("/tokens", json={"user": "bob"}).json()["token"]
    if server.database_url:
        import psycopg

        from server_harness import PG_DSN

        schema = server.database_url.rsplit("%3D", 1)[1]
        with psycopg.connect(PG_DSN) as conn:
            rows = conn.execute(f"SELECT token_hash FROM {schema}.tokens").fetchall()
    else:
        import sqlite3

        with sqlite3.connect(server.home / "gpupool.db") as conn:
            rows = conn.execute("SELECT token_hash FROM tokens").fetchall()
    stored = {r[0] for r in rows}
    assert len(stored) >= 2  # the admin's, bob's (and those earlier tests of the module made)
    assert server.token not in stored and bob not in stored
    assert all(len(h) == 64 for h in stored)  # SHA-256 hex digests only
