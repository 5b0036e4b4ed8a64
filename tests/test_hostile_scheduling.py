"""Hostile input: refused at the edge with a 422 naming the field and the bound, and a job
whose judging raises never stops the cycle for the others nor leaks capacity.

All in this process: the API tests on the middle tier (inprocess_api: the real app and loop,
a scripted executor, the loop stepped by hand), the cycle tests on the scheduler alone. No
test needs a real server process."""

from __future__ import annotations

import json
import math
import sys
from dataclasses import dataclass

import pytest

from builders import node, scheduler, snapshot
from gpupool.core.cluster import BoolArray, ClusterState
from gpupool.core.framework import CycleState, Profile
from gpupool.core.quota import QueueQuota, QuotaBook
from gpupool.core.request import Request
from gpupool.core.scheduler import Scheduler
from gpupool.server.cycle import LiveJob, run_cycle
from inprocess_api import InProcessServer

HOSTILE = {"command": ["/bin/true"], "nodes": 2, "gpus": 1, "memory": 1e20}


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> InProcessServer:
    """One node of 4 A100s (``gpupool up --fake-gpus 4xA100-80GB``), for the module."""
    return InProcessServer(tmp_path_factory.mktemp("hostile"), nodes=1, cards=4)


@pytest.mark.parametrize(
    ("extra", "field", "says"),
    [
        ({}, "memory", "at most 64 TiB"),  # the exact request of the issue
        ({"memory": "65TiB"}, "memory", "at most 64 TiB"),
        ({"memory": "9" * 400 + "TiB"}, "memory", "too large"),
        ({"memory": math.inf}, "memory", "finite"),
        ({"memory": 1, "gpu_memory": "2TiB", "nodes": 1}, "gpu_memory", "at most 1 TiB"),
        ({"memory": 1, "gpus": math.nan}, "gpus", "finite"),
        ({"memory": 1, "gpus": True}, "gpus", "not true or false"),
        ({"memory": 1, "cpu": math.inf}, "cpu", "finite"),
        ({"memory": 1, "cpu": 4097}, "cpu", "4096"),
        ({"memory": 1, "nodes": 1025}, "nodes", "1024"),
        ({"memory": 1, "gpus": 65}, "gpus", "64"),
        ({"memory": 1, "priority": False}, "priority", "not true or false"),
        ({"memory": 1, "grace_period_s": math.nan}, "grace_period_s", "finite"),
    ],
)
def test_hostile_numbers_get_a_422_naming_the_field_and_the_bound(
    server: InProcessServer, extra: dict[str, object], field: str, says: str
) -> None:
    c = server.admin
    # json.dumps writes NaN / Infinity (as a hostile client may); httpx's json= refuses
    response = c.post("/jobs", content=json.dumps({**HOSTILE, **extra}),
                      headers={"Content-Type": "application/json"})
    assert response.status_code == 422, response.text
    detail = response.json()["detail"]
    assert detail.startswith(f"{field}:"), detail
    assert says in detail


def test_after_hostile_submissions_the_pool_is_whole_and_schedules(
        server: InProcessServer) -> None:
    c = server.admin  # the module's server, after the refusals above
    assert c.post("/jobs", json=HOSTILE).status_code == 422
    ok = c.post("/jobs", json={"command": [sys.executable, "-c", "pass"], "gpus": 4})
    assert ok.status_code == 201, ok.text
    job_id = ok.json()["id"]
    server.step()  # placed on all 4 GPUs
    assert c.get(f"/jobs/{job_id}").json()["phase"] == "running"
    server.executor.end(job_id)  # `pass` exits 0
    server.step(1)
    assert c.get(f"/jobs/{job_id}").json()["phase"] == "succeeded"
    gpus = c.get("/nodes").json()[0]["gpus"]
    assert all(x["allocated_milli"] == 0 for x in gpus)
    assert len(gpus) == 4


# ------------------------------------------------- in-process: a job whose judging raises


@dataclass
class Exploding:
    """A filter that raises ``error`` for the request named ``victim`` (and passes all
    nodes through for every other request)."""

    victim: str
    error: BaseException
    name: str = "exploding"

    def filter(self, state: ClusterState, request: Request, cycle: CycleState,
               candidates: BoolArray) -> BoolArray:
        if request.name.split("/")[0] == self.victim:
            raise self.error
        return candidates

    def explain(self, state: ClusterState, request: Request, cycle: CycleState,
                candidates: BoolArray) -> list[str]:
        return []


def rigged(victim: str, error: BaseException) -> Scheduler:
    """A bestfit scheduler on two 4-GPU nodes whose filters raise for ``victim``."""
    base = scheduler("bestfit", [node("a", gpus=4), node("b", gpus=4)])
    profile = base.profile
    rigged_profile = Profile(profile.name, (Exploding(victim, error), *profile.filters),
                             profile.scores, profile.gpu_pick, profile.queue_sort,
                             profile.prepare, profile.reserve, profile.permit)
    return Scheduler(base.state, rigged_profile)


def live(i: int, gpus: int, nodes: int = 1, memory_mib: int = 0) -> LiveJob:
    return LiveJob(i, "q", 0, float(i), Request(str(i), memory_mib=memory_mib, num_gpus=gpus),
                   nodes=nodes)


def quota() -> QuotaBook:
    return QuotaBook([QueueQuota("q", 10**9)])


def test_a_job_whose_judging_raises_stays_pending_and_the_others_are_placed() -> None:
    s = rigged("2", OverflowError("Python int too large to convert to C long"))
    jobs = [live(1, 2), live(2, 1, nodes=2), live(3, 2, nodes=2), live(4, 1)]
    out = run_cycle(s, quota(), jobs, [])
    assert {j.id for j in out.placed} == {1, 3, 4}
    assert out.reasons == {2: "cannot be scheduled: OverflowError: Python int too large "
                              "to convert to C long"}
    assert jobs[1].allocations == ()
    assert set(out.errors) == {2}
    # capacity whole: what is left plus what the placed jobs hold is the pool
    held = sum(len(a.gpus) for j in out.placed for a in j.allocations)
    assert held == 2 + 2 * 2 + 1
    assert int((s.state.gpu_left == 0).sum()) == held
    assert int(s.state.gpu_total_left.sum()) == (8 - held) * 1000


def test_a_cycle_that_fails_part_way_gives_back_all_it_took() -> None:
    s = rigged("3", KeyboardInterrupt())  # not a judging error: the cycle itself stops
    before = snapshot(s.state)
    book = quota()
    jobs = [live(1, 2), live(2, 1, nodes=2), live(3, 1)]
    with pytest.raises(KeyboardInterrupt):
        run_cycle(s, book, jobs, [])
    assert snapshot(s.state) == before
    assert all(j.allocations == () for j in jobs)
    assert book.usage["q"] == 0
    p = s.profile  # the same state without the rigged filter: all three fit
    plain = Scheduler(s.state, Profile(p.name, p.filters[1:], p.scores, p.gpu_pick))
    assert len(run_cycle(plain, book, jobs, []).placed) == 3


def test_the_issue_request_no_longer_overflows_the_topology_plugin() -> None:
    """The request of the issue, past the edge (e.g. a row stored before the bounds):
    judged as not fitting, with the usual reason, and the others are placed."""
    s = scheduler("gpupool", [node("a", gpus=4), node("b", gpus=4)])
    before = snapshot(s.state)
    huge = live(1, 1, nodes=2, memory_mib=10**20)
    small = live(2, 1)
    out = run_cycle(s, quota(), [huge, small], [])
    assert out.placed == [small]
    assert out.errors == {}
    assert out.reasons[1].startswith("can never fit in the pool as it is now: needs 1 whole "
                                     "GPU, 97656250000000000 GiB memory on each of 2 nodes")
    for allocation in small.allocations:
        s.release(allocation)
    assert snapshot(s.state) == before
