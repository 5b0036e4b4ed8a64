"""Quotas, borrowing, reclaim and priority preemption, through the API on SQLite and
PostgreSQL.

Tier: the middle one (inprocess_api: the real app, Controller and database in this process,
the loop stepped by hand on an injected clock). The jobs are scripted processes that answer
signals as the original scripts did: POLITE exits 143 on SIGTERM, STUBBORN ignores it until
the SIGKILL after its grace period (-9). That real processes do so through the local
executor (SIGTERM's 143 recovered, SIGKILL for one that ignores SIGTERM) is
test_local_executor's; here the grace period is counted on the clock, not waited out."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from fake_executor import ScriptedExecutor
from gpupool.executors.base import Handle, Outcome
from gpupool.server.db.database import Database
from inprocess_api import InProcessServer
from middle_tier import backend_store
from server_harness import backend_params

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


@dataclass
class SignalledExecutor(ScriptedExecutor):
    """Processes answer signals as their command says: POLITE exits 143 on SIGTERM,
    STUBBORN ignores it, any other command exits -15; SIGKILL ends any with -9. ``signals``:
    what each job's processes were sent, in order."""

    signals: dict[str, list[str]] = field(default_factory=dict)
    _commands: dict[str, str] = field(default_factory=dict)

    def launch(self, spec: Any) -> Handle:
        command = list(spec.command)
        self._commands[spec.job_id] = command[2] if command[:2] == [PY, "-c"] else ""
        return super().launch(spec)

    def terminate(self, handle: Handle) -> None:
        self.signals.setdefault(handle.job_id, []).append("SIGTERM")
        script = self._commands.get(handle.job_id)
        if script == STUBBORN:
            return
        self.ended.setdefault((handle.job_id, handle.attempt),
                              Outcome(143 if script == POLITE else -15, self.clock()))

    def kill(self, handle: Handle) -> None:
        self.signals.setdefault(handle.job_id, []).append("SIGKILL")
        self.ended.setdefault((handle.job_id, handle.attempt), Outcome(-9, self.clock()))


@pytest.fixture(params=backend_params())
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Database | None]:
    yield from backend_store(request.param, tmp_path)


@pytest.fixture
def server(store: Database | None, tmp_path: Path) -> InProcessServer:
    """One node of 2 A100s (``gpupool up --fake-gpus 2xA100-80GB``)."""
    return InProcessServer(tmp_path / "home", nodes=1, cards=2, db=store,
                           executor=SignalledExecutor)


def view(client, job_id: str) -> dict:  # type: ignore[no-untyped-def,type-arg]
    return dict(client.get(f"/jobs/{job_id}").json())


def running(client, job_id: str) -> bool:  # type: ignore[no-untyped-def]
    return view(client, job_id)["phase"] == "running"


def submit(client, **spec) -> str:  # type: ignore[no-untyped-def]
    response = client.post("/jobs", json=spec)
    assert response.status_code == 201, response.text
    return str(response.json()["id"])


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


def test_borrowing_then_reclaim_preempts_the_borrowed_job(server: InProcessServer,
                                                          tmp_path: Path) -> None:
    signals = server.executor.signals
    admin = server.admin
    admin.patch("/teams/default", json={"quota_gpus": 0})
    nlp = team_token(admin, "nlp", quota=1, borrow=1)
    cv = team_token(admin, "cv", quota=1, borrow=0)
    a, b = server.client(nlp), server.client(cv)
    first = submit(a, command=[PY, "-c", POLITE, str(tmp_path / "first")], gpus=1)
    server.step()
    assert running(a, first)
    second = submit(
        a, command=[PY, "-c", POLITE, str(tmp_path / "second")], gpus=1, grace_period_s=20
    )
    server.step(1)
    assert running(a, second)
    queue = a.get("/queues").json()[0]
    assert (queue["used_gpus"], queue["borrowed_gpus"]) == (2.0, 1.0)
    # cv is within its quota of 1 GPU: the borrowed GPU is taken back.
    theirs = submit(b, command=[PY, "-c", "print('cv ran')"], gpus=1)
    server.step(1)  # second is told to stop (SIGTERM): it exits 143 at once
    server.step(1)  # its end is recorded; cv's job starts on the freed GPU
    assert running(b, theirs)
    server.executor.end(int(theirs))
    server.step(1)
    assert view(b, theirs)["phase"] == "succeeded"
    assert signals[second] == ["SIGTERM"]  # got SIGTERM, not SIGKILL
    assert first not in signals  # the guaranteed job was left alone
    back = view(a, second)
    messages = [e["message"] for e in back["events"]]
    assert any(f"preempted to make room for job {theirs}" in m for m in messages)
    assert any("preempted (exit code 143); back in the queue" in m for m in messages)
    # once cv's job is done, the borrowed job runs again
    server.step(1)
    assert running(a, second)
    assert view(a, second)["attempts"] == 2


def test_borrow_limit_caps_a_queue(server: InProcessServer, tmp_path: Path) -> None:
    server.admin.patch("/teams/default", json={"quota_gpus": 0})
    c = server.client(team_token(server.admin, "small", quota=0.5, borrow=0.5))
    one = submit(c, command=[PY, "-c", POLITE, str(tmp_path / "one")], gpus=1)
    server.step()
    assert running(c, one)
    two = submit(c, command=[PY, "-c", "pass"], gpus=0.5)
    server.step(1)
    reason = view(c, two)["reason"]
    assert "queue small would exceed its quota: it uses 1 of 0.5 guaranteed + 0.5" in reason


def test_priority_preemption_respects_the_grace_period(server: InProcessServer) -> None:
    c = server.admin
    c.patch("/teams/default", json={"quota_gpus": 2})
    low = [
        submit(c, command=[PY, "-c", STUBBORN], gpus=1, priority=0, grace_period_s=1.5)
        for _ in range(2)
    ]
    server.step()
    assert all(running(c, j) for j in low)
    high = submit(c, command=[PY, "-c", "print('urgent')"], gpus=1, priority=10)
    server.step(1)  # a victim gets SIGTERM and ignores it
    server.step(1)  # within its grace period: left alone
    server.step(0.5)  # the grace period is over: SIGKILL
    server.step(0.1)  # it died of it: requeued; the urgent job starts
    assert running(c, high)
    server.executor.end(int(high))
    server.step(0.1)
    assert view(c, high)["phase"] == "succeeded"
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
    server.step(0.1)
    assert running(c, victim)
