"""The control plane through its REST API, on SQLite and on the local PostgreSQL (skipped,
saying so, when that server is absent).

Tier: the middle one (inprocess_api: the real app, Controller and database in this process,
scripted job processes, the loop stepped by hand): nothing here needs a real process. Where
the jobs' own processes spoke (exit codes, the GPU variables they printed), the scripted
processes end with those codes and the test reads the environment the server launched them
with; that the local executor hands a job that environment and records its exit code is
test_local_executor's."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import text

from gpupool.server.db.database import Database
from inprocess_api import InProcessServer
from middle_tier import backend_store
from server_harness import backend_params

PY = sys.executable


@pytest.fixture(scope="module", params=backend_params())
def server(request: pytest.FixtureRequest,
           tmp_path_factory: pytest.TempPathFactory) -> Iterator[InProcessServer]:
    # One server per store for the API tests that never step the loop: they leave it as
    # they found it (their users and teams aside).
    home = tmp_path_factory.mktemp(request.param)
    for db in backend_store(request.param, home):
        yield InProcessServer(home / "home", nodes=1, cards=1, db=db)


@pytest.fixture(params=backend_params())
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Database | None]:
    yield from backend_store(request.param, tmp_path)


@pytest.fixture
def pool(store: Database | None, tmp_path: Path) -> InProcessServer:
    """A server of its own (one node, one A100: ``--fake-gpus 1xA100-80GB``) for a test that
    runs jobs."""
    return InProcessServer(tmp_path / "home", nodes=1, cards=1, db=store)


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
    pool: InProcessServer, tmp_path: Path
) -> None:
    go = [tmp_path / f"go{i}" for i in range(3)]
    c = pool.admin
    a = job(c, command=[PY, "-c", wait_file(go[0])], gpus=0.5)
    b = job(c, command=[PY, "-c", wait_file(go[1])], gpus=0.5)
    pool.step()
    assert phase(c, a) == "running" and phase(c, b) == "running"
    third = job(c, command=[PY, "-c", wait_file(go[2])], gpus=0.5, name="third")
    pool.step(1)
    view = c.get(f"/jobs/{third}").json()
    assert view["phase"] == "pending"
    assert view["reason"].startswith(
        "needs 0.5 of one GPU: 1 node has GPUs but no GPU with any share free"
    )
    placements = [c.get(f"/jobs/{j}").json()["placement"] for j in (a, b)]
    assert [p["gpus"] for p in placements] == [[0], [0]]
    node = c.get("/nodes").json()[0]
    assert node["gpus"][0]["allocated_milli"] == 1000
    assert sorted(node["gpus"][0]["jobs"]) == sorted([a, b])
    pool.executor.end(a)  # go[0]: its process prints and exits 0
    pool.step(1)
    assert phase(c, a) == "succeeded"
    assert phase(c, third) == "running"
    env = next(s.env for s in pool.executor.launched if s.job_id == str(a))
    assert env["CUDA_VISIBLE_DEVICES"] == "0"
    assert env["GPUPOOL_GPU_FRACTION"] == "0.5"
    assert env["GPUPOOL_GPU_MEMORY_LIMIT_MIB"] == "40960"
    assert env["CUDA_MPS_ACTIVE_THREAD_PERCENTAGE"] == "50"
    pool.executor.end(b)  # go[1], go[2]
    pool.executor.end(third)
    pool.step(1)
    assert phase(c, third) == "succeeded"
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
    server: InProcessServer, body: dict[str, object], status: int, field: str
) -> None:
    response = server.admin.post("/jobs", json=body)
    assert response.status_code == status
    assert field in response.json()["detail"]


def test_tokens_are_required_and_checked(server: InProcessServer) -> None:
    assert server.client(token="gp_wrong").get("/jobs").status_code == 401
    c = server.client(server.token)
    c.headers.pop("Authorization")
    response = c.get("/jobs")
    assert response.status_code == 401 and "token" in response.json()["detail"]


def test_a_team_sees_only_its_own_jobs(server: InProcessServer) -> None:
    admin = server.admin
    mine = job(admin, command=[PY, "-c", "pass"])
    assert admin.post("/teams", json={"name": "vision", "quota_gpus": 1}).status_code == 201
    assert admin.post("/users", json={"name": "ada", "team": "vision",
                                        "unix_user": "root"}).status_code == 201
    token = admin.post("/tokens", json={"user": "ada"}).json()["token"]
    assert admin.post("/teams", json={"name": "vision"}).status_code == 409
    ada = server.client(token=token)
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


def test_restart_on_failure_retries_then_fails_with_the_exit_code(
        pool: InProcessServer) -> None:
    c = pool.admin
    j = job(c, command=[PY, "-c", "raise SystemExit(3)"], restart="on-failure", max_retries=2)
    pool.step()
    for _ in range(3):  # the first attempt and two retries, each exiting 3
        assert phase(c, j) == "running"
        pool.executor.end(j, 3)
        pool.step(1)
    view = c.get(f"/jobs/{j}").json()
    assert view["phase"] == "failed"
    assert view["exit_code"] == 3
    assert view["attempts"] == 3
    messages = [e["message"] for e in view["events"]]
    assert any("retry 1 of 2" in m for m in messages)
    assert any("retry 2 of 2" in m for m in messages)


def test_cancel_pending_and_running(pool: InProcessServer, tmp_path: Path) -> None:
    c = pool.admin
    running = job(c, command=[PY, "-c", wait_file(tmp_path / "never")], gpus=1)
    pool.step()
    assert phase(c, running) == "running"
    waiting = job(c, command=[PY, "-c", "pass"], gpus=1)
    assert c.post(f"/jobs/{waiting}/cancel").status_code == 200
    pool.step(1)
    assert phase(c, waiting) == "cancelled"
    assert c.post(f"/jobs/{running}/cancel").status_code == 200
    pool.step(1)  # SIGTERM: the (scripted) process exits on it
    pool.step(1)
    assert phase(c, running) == "cancelled"
    again = c.post(f"/jobs/{running}/cancel")
    assert again.status_code == 409


def test_admin_token_file_is_private_and_tokens_are_stored_hashed(
        server: InProcessServer) -> None:
    token_file = server.settings.token_file
    assert token_file.stat().st_mode & 0o777 == 0o600
    admin = server.admin
    admin.post("/users", json={"name": "bob", "team": "default", "unix_user": "root"})
    bob = admin.post("/tokens", json={"user": "bob"}).json()["token"]
    with server.db.session() as s:  # the store itself (SQLite file or PostgreSQL schema)
        rows = s.execute(text("SELECT token_hash FROM tokens")).all()
    stored = {r[0] for r in rows}
    assert len(stored) >= 2  # the admin's, bob's (and those earlier tests of the module made)
    assert server.token not in stored and bob not in stored
    assert all(len(h) == 64 for h in stored)  # SHA-256 hex digests only
