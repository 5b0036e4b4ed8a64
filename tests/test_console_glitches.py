"""Console glitches of issue 15, item 10, in a real headless Chromium against a real
`gpupool up` with one fake A100 (80 GiB): a GPU shared by fractional jobs shows each job's
share and GPU memory limit (not "memory 0 MiB of 80 GiB"); the header names the admin once,
with a badge; the simulator ticks the project's own `gpupool` policy and shows counts as
integers ("Failed tasks 678", not "678.0"). Also, in-process: the shares GET /nodes reports
for memory-only and multi-node jobs and for another team's job."""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from gpupool.schemas.jobs import JobSpec, Phase
from gpupool.server.db.database import Database
from gpupool.server.db.tables import Job, Node, Team, User
from gpupool.server.services.cluster import list_nodes
from gpupool.server.services.identity import Principal
from server_harness import Server, make_server, wait_for
from test_console import (
    browser,
    expect,
    goto,
    job_api,
    needs_browser,
    page,
    shot,
    sign_in,
    submit_api,
)

__all__ = ["browser", "page"]  # fixtures shared with test_console

A100_MIB = 81920


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    yield from make_server("sqlite", tmp_path_factory.mktemp("console-glitches"), "1xA100-80GB")


# ---- GET /nodes, in-process ---------------------------------------------------------------


def _add_job(s: Any, team: Team, user: User, spec: JobSpec, **placed: Any) -> int:
    job = Job(name="j", team_id=team.id, user_id=user.id, queue=team.name,
              phase=Phase.RUNNING.value, spec=spec.model_dump(mode="json"), attempts=1,
              created_at=time.time(), gpu_milli=spec.gpu_milli,
              gpu_memory_mib=spec.gpu_memory or 0, **placed)
    s.add(job)
    s.flush()
    return job.id


def test_nodes_report_each_jobs_share_and_memory_limit(tmp_path: Path) -> None:
    db = Database(f"sqlite:///{tmp_path / 'nodes.db'}")
    db.migrate()
    a100 = {"model": "A100", "memory_mib": A100_MIB}
    cmd = ["true"]
    with db.session() as s:
        for name in ("n0", "n1"):
            s.add(Node(name=name, cpu_milli=8000, memory_mib=65536, gpus=[a100, a100],
                       labels={}, source="fake", updated_at=time.time()))
        ours, theirs = Team(name="ours", created_at=0), Team(name="theirs", created_at=0)
        s.add_all([ours, theirs])
        s.flush()
        me, other = (User(name="me", team_id=ours.id, created_at=0),
                     User(name="other", team_id=theirs.id, created_at=0))
        s.add_all([me, other])
        s.flush()
        half = _add_job(s, ours, me, JobSpec(command=cmd, gpus=0.5), node="n0", gpus=[0])
        _add_job(s, theirs, other, JobSpec(command=cmd, gpus=0.25), node="n0", gpus=[0])
        mem_only = _add_job(s, ours, me, JobSpec(command=cmd, gpu_memory="10GiB"),
                            node="n0", gpus=[0])
        gang = _add_job(s, ours, me, JobSpec(command=cmd, gpus=1, nodes=2, cpu=2),
                        node="n0", gpus=[1],
                        ranks=[{"node": "n0", "gpus": [1]}, {"node": "n1", "gpus": [1]}])
        mine = Principal(user_id=me.id, user="me", team_id=ours.id, team="ours", admin=False)
    n0, n1 = list_nodes(db, mine)
    shared = n0.gpus[0]
    assert [(x.job, x.milli, x.memory_limit_mib) for x in shared.shares] == [
        (str(half), 500, A100_MIB // 2),       # a fraction: that fraction of the card
        ("(other team)", 250, A100_MIB // 4),  # its real share, not an even split
        (str(mem_only), 0, 10240),             # memory only: what it asked for
    ]
    assert shared.jobs == [str(half), "(other team)", str(mem_only)]
    assert (shared.allocated_milli, shared.allocated_memory_mib) == (750, 10240)
    assert shared.reserved_memory_mib == A100_MIB // 2 + A100_MIB // 4 + 10240
    # A multi-node job holds a whole GPU (and its CPU) on every rank's node, not on rank 0's only.
    for node in (n0, n1):
        assert [(x.job, x.milli, x.memory_limit_mib) for x in node.gpus[1].shares] == [
            (str(gang), 1000, A100_MIB)]
        assert node.cpu_allocated_milli == 2000
    assert n1.gpus[0].shares == [] and n1.gpus[0].reserved_memory_mib == 0


# ---- the console --------------------------------------------------------------------------


@needs_browser
def test_shared_gpu_header_and_simulator(server: Server, page: Any, tmp_path: Path) -> None:
    gate = tmp_path / "gate"
    try:
        half = submit_api(server, 0.5, "half", gate)
        quarter = submit_api(server, 0.25, "quarter", gate)
        wait_for(lambda: all(job_api(server, j)["phase"] == "running" for j in (half, quarter)))
        assert job_api(server, half)["gpu_memory_limit_mib"] == A100_MIB // 2

        # The header: user, team and one "Admin" badge ("admin · team default · admin" before).
        sign_in(page, server, server.token)
        whoami = page.get_by_test_id("whoami")
        expect(whoami).to_have_text("admin · team default Admin")
        expect(whoami.locator(".who-admin")).to_have_count(1)

        # The shared GPU: each job's share and memory limit, and what they add up to.
        goto(page, server, "/cluster")
        gpu = page.locator("[data-testid^='gpu-'][data-testid$='-0']")
        expect(gpu.get_by_test_id("gpu-usage")).to_have_text(
            "0.5 + 0.25 = 0.75 of 1 GPU allocated · "
            "memory limits 40 GiB + 20 GiB = 60 GiB of 80 GiB")
        expect(gpu.locator(f"a.slice[data-job='{half}']")).to_have_attribute(
            "title", re.compile(r"· 0\.5 GPU · memory limit 40 GiB ·"))
        expect(gpu.locator(f"a.slice[data-job='{quarter}']")).to_have_attribute(
            "title", re.compile(r"· 0\.25 GPU · memory limit 20 GiB ·"))
        shot(page, "glitches-cluster-shared-gpu")
    finally:
        gate.touch()

    # The simulator: the policies are the API's, gpupool's own among those ticked.
    goto(page, server, "/sim")
    boxes = page.locator("input[id^='sim-policy-']")
    expect(boxes).to_have_count(9)
    offered = httpx.get(server.url + "/openapi.json", timeout=30).json()["components"][
        "schemas"]["SimRunCreate"]["properties"]["policies"]["items"]["enum"]
    assert boxes.evaluate_all("els => els.map(e => e.value)") == offered
    for policy in ("gpupool", "bestfit", "fgd"):
        expect(page.get_by_label(policy, exact=True)).to_be_checked()
    expect(page.get_by_label("random", exact=True)).not_to_be_checked()

    # A tiny synthetic run: its counts are integers, as the API's numbers are.
    page.get_by_label("Synthetic cluster scale").fill("0.02")
    page.get_by_label("bestfit", exact=True).uncheck()
    page.get_by_role("button", name="Run", exact=True).click()
    page.wait_for_url(re.compile(r"#/sim\?run=\d+$"))
    run_id = page.url.rsplit("=", 1)[1]
    expect(page.get_by_test_id("sim-run-status")).to_have_attribute("data-status", "done")
    with server.client() as c:
        result = c.get(f"/sim/runs/{run_id}").json()["result"]
    assert list(result["policies"]) == ["fgd", "gpupool"]
    meta = result["meta"]
    expect(page.get_by_test_id("sim-result")).to_contain_text(
        f"{meta['nodes']:,} nodes, {meta['gpus']:,} GPUs, {meta['tasks']:,} tasks")
    rows = page.get_by_test_id("sim-table").locator("tbody tr")
    expect(rows).to_have_count(2)
    for i, policy in enumerate(["fgd", "gpupool"]):
        failed = result["policies"][policy]["failed_tasks_mean"]
        assert failed == int(failed) and failed < 1000  # one seed: a count, no separator
        expect(rows.nth(i).locator("td[data-label='Failed tasks']")).to_have_text(str(int(failed)))
        expect(rows.nth(i).locator("td[data-label='Decisions/s']")).to_have_text(
            re.compile(r"^\d{1,3}(,\d{3})*$"))
    shot(page, "glitches-simulator")
