"""Stopping the server (issue 15, item 2), against real `gpupool up` processes: `gpupool down`
is refused to a non-admin (the server stays up); by default it leaves running jobs running
and the next `up` re-adopts them; `--drain` waits for running jobs and starts no pending one;
`--cancel-jobs` cancels running jobs first; Ctrl-C on `up` says what happens to the jobs.

Jobs wait on gate files, so each test decides when they end."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from server_harness import Server, make_server, submit, wait_for


@pytest.fixture
def server(tmp_path: Path) -> Iterator[Server]:
    yield from make_server("sqlite", tmp_path, "1xA100-80GB")


def gpupool(server: Server, *args: str, token: str | None = None) -> subprocess.Popen[str]:
    env = server.env
    if token is not None:
        env["GPUPOOL_TOKEN"] = token
    return subprocess.Popen([sys.executable, "-m", "gpupool.cli.main", *args], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def finished(proc: subprocess.Popen[str], timeout: float = 60) -> tuple[int, str, str]:
    out, err = proc.communicate(timeout=timeout)
    return proc.returncode, out, err


def gated(gate: Path, gpus: float | None = None) -> dict[str, object]:
    """A job spec whose process runs until ``gate`` exists, then exits 0."""
    script = (f"import pathlib,time\nwhile not pathlib.Path({str(gate)!r}).exists(): "
              "time.sleep(0.05)\n")
    spec: dict[str, object] = {"command": [sys.executable, "-c", script]}
    if gpus is not None:
        spec["gpus"] = gpus
    return spec


def phase(server: Server, job: str) -> str:
    with server.client() as c:
        return str(c.get(f"/jobs/{job}").json()["phase"])


def phases_in_db(server: Server) -> dict[str, str]:
    with contextlib.closing(sqlite3.connect(server.home / "gpupool.db")) as db:
        return {str(i): p for i, p in db.execute("SELECT id, phase FROM jobs")}


def job_pid(server: Server, job: str) -> int:
    handle = next((server.home / "runs" / job).glob("*/handle.json"))
    return int(json.loads(handle.read_text())["pid"])


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def exited(server: Server) -> int:
    assert server.proc is not None
    return server.proc.wait(timeout=30)


def log(server: Server) -> str:
    return (server.home / "server.out").read_text()


def test_down_needs_an_admin_then_leaves_running_jobs_to_the_next_up(
    server: Server, tmp_path: Path
) -> None:
    with server.client() as admin:
        assert admin.post("/teams", json={"name": "t1"}).status_code == 201
        assert admin.post("/users", json={"name": "bob", "team": "t1",
                                          "unix_user": "root"}).status_code == 201
        bob = admin.post("/tokens", json={"user": "bob"}).json()["token"]
    code, _, err = finished(gpupool(server, "down", token=bob))
    assert code == 2, err
    assert "only an admin may stop" in err and "'bob'" in err
    assert httpx.get(server.url + "/healthz", timeout=5).status_code == 200

    gate = tmp_path / "gate"
    with server.client() as admin:
        job = submit(admin, **gated(gate))
    wait_for(lambda: phase(server, job) == "running")
    code, out, err = finished(gpupool(server, "down"))
    assert code == 0, err
    assert "1 running job keeps running and the next `gpupool up` re-adopts it" in err
    assert "gpupool server stopped" in out
    assert exited(server) == 0
    assert "gpupool stopped (gpupool down by admin)" in log(server)
    pid = job_pid(server, job)
    assert alive(pid)  # the job outlived its server

    server.start()  # the next `up` on the same data dir
    with server.client() as admin:
        events = [e["message"] for e in admin.get(f"/jobs/{job}").json()["events"]]
    assert any("re-adopted" in e for e in events), events
    gate.touch()
    wait_for(lambda: phase(server, job) == "succeeded")


def test_drain_waits_for_running_jobs_and_starts_no_pending_one(
    server: Server, tmp_path: Path
) -> None:
    gate = tmp_path / "gate"
    with server.client() as admin:
        first = submit(admin, **gated(gate, gpus=1))
        wait_for(lambda: phase(server, first) == "running")
        second = submit(admin, **gated(gate, gpus=1))  # waits: the only GPU is taken
    down = gpupool(server, "down", "--drain")
    with server.client() as admin:
        wait_for(lambda: admin.get("/server").json()["stopping"] == "drain")
        time.sleep(0.5)
        assert down.poll() is None  # still waiting for the running job
        assert admin.get("/server").json()["running"] == 1  # the API still answers
        gate.touch()  # the running job ends, freeing the GPU; the pending one must not start
    code, out, err = finished(down)
    assert code == 0, err
    assert "stopping once 1 running job has ended; 1 pending job stays queued" in err
    assert "gpupool server stopped" in out
    assert exited(server) == 0
    assert phases_in_db(server) == {first: "succeeded", second: "pending"}


def test_cancel_jobs_then_ctrl_c_says_what_happens_to_running_jobs(
    server: Server, tmp_path: Path
) -> None:
    gate = tmp_path / "gate"
    with server.client() as admin:
        first = submit(admin, **gated(tmp_path / "never", gpus=1))
        wait_for(lambda: phase(server, first) == "running")
        second = submit(admin, **gated(gate, gpus=1))
    code, _, err = finished(gpupool(server, "down", "--cancel-jobs"))
    assert code == 0, err
    assert "cancelling 1 running job" in err and "1 pending job stays queued" in err
    assert exited(server) == 0
    assert phases_in_db(server) == {first: "cancelled", second: "pending"}
    assert not alive(job_pid(server, first))

    server.start()  # the queued job starts now
    wait_for(lambda: phase(server, second) == "running")
    assert server.proc is not None
    server.proc.send_signal(signal.SIGINT)
    assert exited(server) == 130
    said = log(server)
    assert "gpupool stopped (Ctrl-C)." in said
    assert "1 running job keeps running without a server" in said
    assert "`gpupool down --drain`" in said
    assert alive(job_pid(server, second))
    gate.touch()
