"""kill -9 of the server loses nothing: queued jobs stay queued, running ones are re-adopted,
jobs that ended while it was down get their real exit code, and nothing runs twice."""

from __future__ import annotations

import os
import signal
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from server_harness import Server, backend_params, make_server, submit, wait_for

PY = sys.executable
JOBS = 20
FINAL = {"succeeded", "failed", "cancelled"}


def worker(marker: Path, seconds: float, code: int, gate: Path | None = None) -> list[str]:
    """Appends to ``marker`` (so running twice shows), sleeps, optionally waits for ``gate``."""
    script = (
        "import sys,time,pathlib\n"
        f"with open({str(marker)!r}, 'a') as f: f.write('ran\\n')\n"
        f"time.sleep({seconds})\n"
        f"gate = {str(gate) if gate else ''!r}\n"
        "while gate and not pathlib.Path(gate).exists(): time.sleep(0.05)\n"
        f"sys.exit({code})\n"
    )
    return [PY, "-c", script]


@pytest.fixture(params=backend_params())
def server(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Server]:
    yield from make_server(request.param, tmp_path, "4xA100-80GB")


@pytest.fixture
def sqlite_server(tmp_path: Path) -> Iterator[Server]:
    yield from make_server("sqlite", tmp_path, "4xA100-80GB")


def gpus_never_oversubscribed(client) -> bool:  # type: ignore[no-untyped-def]
    for node in client.get("/nodes").json():
        for gpu in node["gpus"]:
            assert gpu["allocated_milli"] <= 1000, node
    return True


def test_kill_9_with_20_jobs_queued_or_running(server: Server, tmp_path: Path) -> None:
    expected: dict[str, tuple[str, int, Path]] = {}
    with server.client() as c:
        for i in range(JOBS):
            code = 1 if i % 3 == 0 else 0
            marker = tmp_path / f"marker-{i}"
            seconds = 0.4 + (i % 5) * 0.5
            response = c.post(
                "/jobs",
                json={"command": worker(marker, seconds, code), "gpus": 0.5, "name": f"crash-{i}"},
            )
            assert response.status_code == 201
            job_id = response.json()["id"]
            expected[job_id] = ("succeeded" if code == 0 else "failed", code, marker)
        wait_for(lambda: sum(j["phase"] == "running" for j in c.get("/jobs").json()) >= 6)
        gpus_never_oversubscribed(c)
        running = [j["id"] for j in c.get("/jobs").json() if j["phase"] == "running"]
    server.kill9()
    # Some jobs finish while nobody watches (at least one before the restart begins, more
    # while it takes), others keep running.
    wait_for(lambda: any((server.home / "runs" / job_id / "1" / "exit").exists()
                         for job_id in running), timeout=30, interval=0.05)
    server.start()
    with server.client() as c:

        def all_final() -> bool:
            gpus_never_oversubscribed(c)
            return all(j["phase"] in FINAL for j in c.get("/jobs").json())

        wait_for(all_final, timeout=90, interval=0.3)
        for job_id, (phase, code, marker) in expected.items():
            view = c.get(f"/jobs/{job_id}").json()
            assert view["phase"] == phase, view
            assert view["exit_code"] == code, view
            assert marker.read_text() == "ran\n", f"job {job_id} ran more or less than once"
            finals = [e for e in view["events"] if e["phase"] in FINAL]
            assert len(finals) == 1, view["events"]
        queues = c.get("/queues").json()
        assert queues[0]["used_gpus"] == 0 and queues[0]["running"] == 0


def test_a_command_that_finished_after_its_shim_was_killed_is_not_run_again(
    sqlite_server: Server, tmp_path: Path
) -> None:
    """kill -9 of the job's supervisor: the command's own exit 0 is kept (restart on-failure
    must not run the finished command again), and its output keeps flowing to the log."""
    marker, gate = tmp_path / "marker", tmp_path / "gate"
    script = ("import pathlib, time\n"
              "print('€' * 10, flush=True)\n"
              f"with open({str(marker)!r}, 'a') as f: f.write('ran\\n')\n"
              f"while not pathlib.Path({str(gate)!r}).exists(): time.sleep(0.05)\n"
              "print('done', flush=True)\n")
    server = sqlite_server
    with server.client() as c:
        job_id = submit(c, command=[PY, "-c", script], restart="on-failure", max_retries=2)
        wait_for(marker.exists)
        shim_pid = int((server.home / "runs" / job_id / "1" / "shim.pid").read_text())
        os.kill(shim_pid, signal.SIGKILL)
        time.sleep(0.5)  # a few polls of the loop while the command runs without its shim
        gate.touch()
        view = wait_for(lambda: (v := c.get(f"/jobs/{job_id}").json())["phase"] in FINAL and v)
        assert (view["phase"], view["exit_code"], view["attempts"]) == ("succeeded", 0, 1), view
        assert marker.read_text() == "ran\n"
        whole = c.get(f"/jobs/{job_id}/logs").json()
        assert whole["data"] == "€" * 10 + "\ndone\n" and whole["complete"]
        inside = c.get(f"/jobs/{job_id}/logs", params={"offset": 1, "limit": 4}).json()
        assert (inside["data"], inside["offset"]) == ("€", 6)  # from the next whole character
