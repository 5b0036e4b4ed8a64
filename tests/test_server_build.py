"""Building the server out of ``gpupool up`` (server/assemble.py): the parts it builds, the
errors it refuses with (shown as they are by the CLI), serving until a stop request; and
the loop held by a drain (``Controller.hold``, no subclass)."""

from __future__ import annotations

import json
import socket
import sys
import threading
from pathlib import Path

import httpx
import pytest
from sqlalchemy import select

sys.path.insert(0, str(Path(__file__).parent))

from gpupool.schemas.jobs import JobSpec, Phase
from gpupool.server import assemble
from gpupool.server.controller import Controller
from gpupool.server.db.tables import Node
from gpupool.server.settings import Settings
from inprocess import phase_of
from pool_twin import TeamDef, Twin


def settings(tmp_path: Path, **overrides: object) -> Settings:
    values: dict[str, object] = dict(home=tmp_path / "home", work_dir=tmp_path / "work",
                                     fake_gpus="2xA100-80GB", sharing="none",
                                     sandbox="none", tick_seconds=0.05)
    values.update(overrides)
    return Settings(**values)  # type: ignore[arg-type]


def test_a_wrong_sharing_mode_is_refused_before_anything_is_made(tmp_path: Path) -> None:
    wrong = settings(tmp_path, sharing="sometimes")
    with pytest.raises(assemble.BuildError, match="GPU sharing mode 'sometimes' is not one"):
        assemble.prepare(wrong)
    assert not wrong.home.exists()


def test_build_makes_every_part_and_recovers_the_loop(tmp_path: Path) -> None:
    config = settings(tmp_path)
    config.home.mkdir()
    parts = assemble.build(config)
    try:
        assert isinstance(parts.controller, Controller)
        assert parts.gpus == 2 and parts.inventory.source == "fake"
        assert parts.token is not None and parts.token in config.token_file.read_text()
        assert json.loads(config.server_file.read_text())["url"] == config.url
        with parts.db.session() as s:  # the loop was recovered: its nodes are registered
            assert s.scalars(select(Node.name)).all() == [parts.inventory.nodes[0].name]
    finally:
        parts.close()
        parts.db.dispose()
    again = assemble.build(config)
    try:
        assert again.token is None  # the admin exists: no new token is shown
    finally:
        again.close()
        again.db.dispose()


def test_a_database_that_cannot_be_opened_says_which(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'missing' / 'dir' / 'gpupool.db'}"
    config = settings(tmp_path, database_url=url)
    config.home.mkdir()
    with pytest.raises(assemble.BuildError, match=r"^cannot open the database sqlite:///"):
        assemble.build(config)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_serve_runs_until_a_stop_request_and_says_who_asked(tmp_path: Path) -> None:
    config = settings(tmp_path, port=free_port())
    config.home.mkdir()
    parts = assemble.build(config)
    assert parts.token is not None
    result: list[assemble.Stopped] = []
    thread = threading.Thread(target=lambda: result.append(assemble.serve(parts, print)))
    thread.start()
    try:
        client = httpx.Client(base_url=f"{config.url}/api/v1",
                              headers={"Authorization": f"Bearer {parts.token}"})
        for _ in range(200):
            try:
                answer = client.post("/server/shutdown", json={"mode": "leave"})
                break
            except httpx.TransportError:
                threading.Event().wait(0.05)
        assert answer.status_code == 202, answer.text
        thread.join(timeout=30)
        assert result == [assemble.Stopped(started=True, signal=None, requested_by="admin")]
    finally:
        parts.close()
        thread.join(timeout=30)
        parts.db.dispose()


def test_a_held_loop_starts_nothing_and_still_records_what_runs(tmp_path: Path) -> None:
    twin = Twin(tmp_path, nodes=1, cards=2, teams=[TeamDef("a", 2, 0)])
    c = twin.controller
    running = twin.submit("a", JobSpec(command=["true"], gpus=1))
    c.step()
    assert phase_of(twin.db, running) == Phase.RUNNING.value
    c.hold()
    waiting = twin.submit("a", JobSpec(command=["true"], gpus=1))
    c.step()
    assert phase_of(twin.db, waiting) == Phase.PENDING.value  # loaded, never placed
    assert waiting in c.pending
    twin.executor.end(running)
    c.step()
    assert phase_of(twin.db, running) == Phase.SUCCEEDED.value
    assert phase_of(twin.db, waiting) == Phase.PENDING.value
    assert not [k for k in Controller.__subclasses__() if k.__module__.startswith("gpupool.")]
