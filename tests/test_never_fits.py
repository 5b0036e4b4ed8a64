"""A request no node of the pool could ever hold (issue 15, item 4) is refused at submit
(422 / exit 2) naming the largest node's capacity; where the pool can grow (Ray) it waits
with a reason that starts "can never fit in the pool as it is now".

Tiers: the judging and a growing pool's Controller in this process; the API's refusals on
the middle tier (inprocess_api: the real app in this process, one node of 4 A100s and 2 CPUs,
as `gpupool up --fake-gpus 4xA100-80GB` makes of this 2-core machine); `gpupool run` as a
subprocess and the quota warning's console page in Chromium against one real `gpupool up`,
since the command and the served console are what those test."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from gpupool.core.capacity import NEVER_FITS, holders, never_fits
from gpupool.core.cluster import ClusterState, GpuSpec, NodeSpec
from gpupool.core.request import Request
from gpupool.executors.inventory import LocalInventory, parse_fake_gpus
from gpupool.schemas.jobs import JobSpec, Phase
from gpupool.server.controller import Controller
from gpupool.server.db.database import Database
from gpupool.server.db.tables import Job, Team, User
from gpupool.server.settings import Settings
from inprocess import EndedExecutor
from inprocess_api import InProcessServer
from server_harness import Server, make_server
from test_console import _browser_missing, browser, expect, goto, page, sign_in

__all__ = ["browser", "page"]  # fixtures shared with test_console

A100 = GpuSpec("A100", 81920)


def cluster() -> ClusterState:
    return ClusterState([
        NodeSpec("big", 32000, 262144, (A100,) * 4),
        NodeSpec("small", 8000, 65536, (GpuSpec("T4", 16384),) * 2),
        NodeSpec("cpu", 64000, 524288),
    ])


@pytest.mark.parametrize(("request_", "members", "fits"), [
    (Request("a", num_gpus=4), 1, True),
    (Request("a", num_gpus=5), 1, False),
    (Request("a", num_gpus=2, gpu_models=("T4",)), 1, True),
    (Request("a", num_gpus=3, gpu_models=("T4",)), 1, False),
    (Request("a", num_gpus=1, gpu_milli=500, gpu_memory_mib=20000), 1, True),  # on an A100
    (Request("a", num_gpus=1, gpu_milli=500, gpu_memory_mib=90000), 1, False),
    (Request("a", cpu_milli=64000), 1, True),  # the CPU node
    (Request("a", cpu_milli=64000, num_gpus=1), 1, False),
    (Request("a", memory_mib=600000), 1, False),
    (Request("a", num_gpus=2), 2, True),  # a gang: one member per node, both GPU nodes
    (Request("a", num_gpus=2), 3, False),
])
def test_never_fits_judges_whole_nodes(request_: Request, members: int, fits: bool) -> None:
    state = cluster()
    state.allocate(0, (0, 1, 2, 3), Request("busy", num_gpus=4))  # what is free plays no part
    assert (never_fits(state, request_, members) is None) is fits
    assert (holders(state, request_) >= members) is fits


def test_the_reason_names_the_largest_node() -> None:
    why = never_fits(cluster(), Request("a", num_gpus=9, cpu_milli=2000))
    assert why == (f"{NEVER_FITS}: needs 9 whole GPUs, 2 CPU; the largest node has "
                   "4 A100 (80 GiB each), 32 CPU, 256 GiB memory")
    gang = never_fits(cluster(), Request("a", num_gpus=1), 3)
    assert gang is not None
    assert "on each of 3 nodes; the pool has 3 nodes, 2 of which could hold one" in gang


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    yield from make_server("sqlite", tmp_path_factory.mktemp("never"), "4xA100-80GB")


@pytest.fixture(scope="module")
def api(tmp_path_factory: pytest.TempPathFactory) -> InProcessServer:
    """The pool of ``server`` in this process: one node of 4 A100s and 2 CPUs."""
    return InProcessServer(tmp_path_factory.mktemp("never-api"), nodes=1, cards=4,
                           cpu_milli=2000)


@pytest.mark.parametrize(("spec", "needs"), [
    ({"gpus": 9}, "needs 9 whole GPUs"),
    ({"gpus": 1, "nodes": 2}, "needs 1 whole GPU on each of 2 nodes"),
    ({"gpus": 0.5, "gpu_memory": "100GiB"}, "needs 0.5 of one GPU with 102400 MiB"),
    ({"cpu": 4000}, "needs 4000 CPU"),
])
def test_submit_refuses_what_the_pool_can_never_hold_and_writes_nothing(
        api: InProcessServer, spec: dict[str, object], needs: str) -> None:
    c = api.admin
    before = len(c.get("/jobs").json())
    r = c.post("/jobs", json={"command": ["true"], **spec})
    assert r.status_code == 422, r.text
    detail = r.json()["detail"]
    assert detail.startswith(f"{NEVER_FITS}: {needs}"), detail
    assert "the largest node has 4 A100 (80 GiB each), 2 CPU, " in detail
    assert len(c.get("/jobs").json()) == before
    # What fits the largest node is accepted, even though it must wait for room.
    ok = c.post("/jobs", json={"command": ["true"], "gpus": 4, "priority": -5})
    assert ok.status_code == 201, ok.text


def test_cli_run_exits_2_naming_the_largest_node(server: Server) -> None:
    done = subprocess.run([sys.executable, "-m", "gpupool.cli.main", "run", "--gpus", "9",
                           "--", "true"], env=server.env, capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 2, done.stderr
    assert NEVER_FITS in done.stderr and "the largest node has 4 A100 (80 GiB each)" in done.stderr


def test_a_pool_that_can_grow_keeps_the_job_waiting_and_says_it_cannot_fit_now(
        tmp_path: Path) -> None:
    """A pool whose nodes come and go (Ray): accepted, pending with the reason."""
    settings = Settings(home=tmp_path, work_dir=tmp_path / "work", tick_seconds=0.1)
    db = Database(settings.db_url)
    db.migrate()
    inventory = LocalInventory((NodeSpec("n0", 16000, 65536, parse_fake_gpus("1xA100-80GB")),),
                               {"n0": (0,)}, "ray")
    controller = Controller(settings, db, EndedExecutor(), inventory,
                            membership=lambda: None)
    spec = JobSpec(command=["true"], gpus=2)
    assert controller.never_fits(spec) is None  # not refused at submit
    now = time.time()
    with db.session() as s:
        team = Team(name="t", quota_milli=8000, created_at=now)
        s.add(team)
        s.flush()
        user = User(name="u", team_id=team.id, created_at=now)
        s.add(user)
        s.flush()
        job = Job(name="j", team_id=team.id, user_id=user.id, queue="t",
                  phase=Phase.PENDING.value, spec=spec.model_dump(mode="json"), attempts=0,
                  failures=0, created_at=now)
        s.add(job)
        s.flush()
        job_id = job.id
    controller.step()
    with db.session() as s:
        row = s.scalars(select(Job).where(Job.id == job_id)).one()
    assert row.phase == Phase.PENDING.value
    assert row.reason.startswith(f"{NEVER_FITS}: needs 2 whole GPUs; the largest node has "
                                 "1 A100 (80 GiB each)"), row.reason


def test_quotas_beyond_the_pool_get_a_warning_in_the_api_and_the_console(
        server: Server, request: pytest.FixtureRequest) -> None:
    with server.client() as admin:
        made = admin.post("/teams", json={"name": "big", "quota_gpus": 2}).json()
        assert made["warning"] == (
            "guaranteed quotas add up to 6 GPUs (big 2, default 4), more than the pool's 4: "
            "they cannot all be honoured at once (lower one: gpupool admin team set NAME "
            "--quota-gpus N)")
    if _browser_missing() is None:  # the console computes the same from /queues and /nodes
        page: Any = request.getfixturevalue("page")
        sign_in(page, server, server.token)
        goto(page, server, "/queues")
        expect(page.get_by_test_id("quota-warning")).to_contain_text(
            "Guaranteed quotas add up to 6 GPUs (big 2, default 4), more than the pool's 4")
    with server.client() as admin:
        fixed = admin.patch("/teams/default", json={"quota_gpus": 2}).json()
        assert fixed["warning"] is None
        assert all(t["warning"] is None for t in admin.get("/teams").json())
