"""Quotas, borrowing, reclaim and priority preemption, against a real `gpupool up`."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path

import pytest

from server_harness import Server, backend_params, make_server, submit, wait_for

PY = sys.executable

# Runs until SIGTERM, then leaves a marker and exits 143 (a well-behaved trainer).
POLITE = (
    "import signal,sys,time,pathlib\n"
    "def bye(*_):\n"
    "    pathlib.Path(sys.argv[1]).write_text('term')\n"
    "    sys.exit(143)\n"
    "signal.signal(signal.SIGTERM, bye)\n"
    "print('ready', flush=True)\n"
    "while True: time.sleep(0.05)\n"
)
# Ignores SIGTERM: only the SIGKILL after the grace period stops it.
STUBBORN = (
    "import signal,time\n"
    "signal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
    "print('ready', flush=True)\n"
    "while True: time.sleep(0.05)\n"
)


@pytest.fixture(params=backend_params())
def server(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Server]:
    yield from make_server(request.param, tmp_path, "2xA100-80GB")



def view(client, job_id: str) -> dict:  # type: ignore[no-untyped-def,type-arg]
    return dict(client.get(f"/jobs/{job_id}").json())


def running(client, job_id: str) -> bool:  # type: ignore[no-untyped-def]
    return view(client, job_id)["phase"] == "running"


def team_token(admin, name: str, quota: float, borrow: float) -> str:  # type: ignore[no-untyped-def]
    assert (
        admin.post(
            "/teams", json={"name": name, "quota_gpus": quota, "borrow_limit_gpus": borrow}
        ).status_code
        == 201
    )
    assert admin.post("/users", json={"name": f"{name}-user", "team": name,
                                        "unix_user": "root"}).status_code == 201
    return str(admin.post("/tokens", json={"user": f"{name}-user"}).json()["token"])


def test_borrowing_then_reclaim_preempts_the_borrowed_job(server: Server, tmp_path: Path) -> None:
    with server.client() as admin:
        admin.patch("/teams/default", json={"quota_gpus": 0})
        nlp = team_token(admin, "nlp", quota=1, borrow=1)
        cv = team_token(admin, "cv", quota=1, borrow=0)
    with server.client(nlp) as a, server.client(cv) as b:
        first = submit(a, command=[PY, "-c", POLITE, str(tmp_path / "first")], gpus=1)
        wait_for(lambda: running(a, first))
        second = submit(
            a, command=[PY, "-c", POLITE, str(tmp_path / "second")], gpus=1, grace_period_s=20
        )
        wait_for(lambda: "ready" in a.get(f"/jobs/{second}/logs").json()["data"])
        queue = a.get("/queues").json()[0]
        assert (queue["used_gpus"], queue["borrowed_gpus"]) == (2.0, 1.0)
        # cv is within its quota of 1 GPU: the borrowed GPU is taken back.
        theirs = submit(b, command=[PY, "-c", "print('cv ran')"], gpus=1)
        wait_for(lambda: view(b, theirs)["phase"] == "succeeded")
        assert (tmp_path / "second").read_text() == "term"  # got SIGTERM, not SIGKILL
        assert not (tmp_path / "first").exists()  # the guaranteed job was left alone
        back = view(a, second)
        messages = [e["message"] for e in back["events"]]
        assert any(f"preempted to make room for job {theirs}" in m for m in messages)
        assert any("preempted (exit code 143); back in the queue" in m for m in messages)
        # once cv's job is done, the borrowed job runs again
        wait_for(lambda: running(a, second))
        assert view(a, second)["attempts"] == 2


def test_borrow_limit_caps_a_queue(server: Server, tmp_path: Path) -> None:
    with server.client() as admin:
        admin.patch("/teams/default", json={"quota_gpus": 0})
        token = team_token(admin, "small", quota=0.5, borrow=0.5)
    with server.client(token) as c:
        one = submit(c, command=[PY, "-c", POLITE, str(tmp_path / "one")], gpus=1)
        wait_for(lambda: running(c, one))
        two = submit(c, command=[PY, "-c", "pass"], gpus=0.5)
        reason = wait_for(lambda: "quota" in (r := view(c, two)["reason"]) and r)
        assert "queue small would exceed its quota: it uses 1 of 0.5 guaranteed + 0.5" in reason


def test_priority_preemption_respects_the_grace_period(server: Server, tmp_path: Path) -> None:
    with server.client() as c:
        c.patch("/teams/default", json={"quota_gpus": 2})
        low = [
            submit(c, command=[PY, "-c", STUBBORN], gpus=1, priority=0, grace_period_s=1.5)
            for _ in range(2)
        ]
        # wait until both have installed their SIGTERM handler
        wait_for(lambda: all("ready" in c.get(f"/jobs/{j}/logs").json()["data"] for j in low))
        high = submit(c, command=[PY, "-c", "print('urgent')"], gpus=1, priority=10)
        wait_for(lambda: view(c, high)["phase"] == "succeeded", timeout=60)
        victim = next(
            j for j in low if any("preempted" in e["message"] for e in view(c, j)["events"])
        )
        other = next(j for j in low if j != victim)
        events = view(c, victim)["events"]
        messages = [e["message"] for e in events]
        assert any("grace period over: SIGKILL sent" in m for m in messages)
        assert any("preempted (exit code -9); back in the queue" in m for m in messages)

        # the kill came no sooner than the grace period after the preemption
        def at(prefix: str) -> datetime:
            return next(
                datetime.fromisoformat(e["at"]) for e in events if e["message"].startswith(prefix)
            )

        waited = (at("grace period over") - at("preempted to make room")).total_seconds()
        assert waited >= 1.5
        assert all(
            "preempted" not in e["message"] for e in view(c, other)["events"]
        )  # only one victim was needed
        wait_for(lambda: running(c, victim))
