"""Properties of the live scheduling cycle under random (and extreme) requests on random tiny
clusters, for every policy, with no quota in the way:

* it never raises, and no job is marked "cannot be scheduled" (nothing in ``errors``);
* it never leaks or overcommits: after every cycle, free + held = total per node (CPU,
  memory) and per GPU (share, GPU memory);
* alone on an empty cluster, a job is placed exactly when a brute-force check says some
  node (for a gang: enough distinct nodes) could hold it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from builders import NodeDef, node, scheduler
from gpupool.core.cluster import ClusterState
from gpupool.core.fairshare import FairShare
from gpupool.core.queue_order import QueuePolicy
from gpupool.core.quota import QueueQuota, QuotaBook
from gpupool.core.request import MILLI_PER_GPU, Request
from gpupool.core.scheduler import Scheduler
from gpupool.plugins.profiles import POLICIES
from gpupool.server.cycle import LiveJob, run_cycle

BIG = (2**63 - 1, 2**63, 10**20)
"""Beyond what int64 arrays hold: must fit nowhere, never overflow."""
MODELS = ("A100", "H100")

PROPERTY = settings(max_examples=200, deadline=None, derandomize=True, database=None,
                    suppress_health_check=[HealthCheck.too_slow])


@st.composite
def node_defs(draw: st.DrawFn) -> list[NodeDef]:
    count = draw(st.integers(1, 4))
    defs = []
    for i in range(count):
        defs.append(node(
            f"n{i}",
            cpu=draw(st.sampled_from([0, 1, 8, 64, 64])),
            mem_gib=draw(st.sampled_from([0, 1, 64, 1024, 1024])),
            gpus=draw(st.sampled_from([0, 1, 2, 4, 8])),
            model=draw(st.sampled_from(MODELS)),
            gpu_mem_mib=draw(st.sampled_from([0, 16384, 81920])),
            labels={"rack": draw(st.sampled_from(["r0", "r1"]))},
        ))
    return defs


@st.composite
def requests(draw: st.DrawFn, name: str) -> tuple[Request, int]:
    """A request and its node count (a gang of that many identical members when > 1)."""
    huge = draw(st.integers(0, 3)) == 0  # a quarter of the requests try extreme values
    if huge:
        cpu = draw(st.sampled_from([0, 64000, 10**9, *BIG]))
        memory = draw(st.sampled_from([0, 65536, 2**40, *BIG]))
    else:
        cpu = draw(st.sampled_from([0, 0, 1, 1000, 8000]))
        memory = draw(st.sampled_from([0, 0, 1, 1024, 65536]))
    models = draw(st.sampled_from([(), (), (), ("A100",), ("H100",), ("V100",), MODELS]))
    kind = draw(st.sampled_from(["cpu", "share", "whole"]))
    if kind == "cpu":
        gpus, milli, gmem, models = 0, 0, 0, ()
    elif kind == "share":
        gpus = 1
        gmem = draw(st.sampled_from([0, 81921, *BIG] if huge else [0, 0, 1, 16384, 81920]))
        milli = draw(st.sampled_from([1, 250, 500, 999, 1000] + ([0] if gmem else [])))
    else:
        gpus = draw(st.sampled_from([9, 64, 10**6, *BIG] if huge else [1, 1, 2, 3, 4, 8]))
        milli, gmem = MILLI_PER_GPU, draw(st.sampled_from([0, 0, 81920, *BIG] if huge
                                                          else [0, 0, 16384]))
    nodes = draw(st.sampled_from([1, 1, 1, 2, 3, 5, 1024] if huge else [1, 1, 1, 2, 3]))
    request = Request(name, cpu_milli=cpu, memory_mib=memory, num_gpus=gpus, gpu_milli=milli,
                      gpu_memory_mib=gmem, gpu_models=models)
    return request, nodes


@st.composite
def workloads(draw: st.DrawFn) -> list[LiveJob]:
    count = draw(st.integers(1, 8))
    jobs = []
    for i in range(count):
        request, nodes = draw(requests(str(i)))
        jobs.append(LiveJob(i, "q", draw(st.integers(-1, 1)), float(i), request, nodes=nodes))
    return jobs


def no_quota() -> QuotaBook:
    return QuotaBook([QueueQuota("q", 10**40)])


@dataclass
class Held:
    cpu: np.ndarray
    mem: np.ndarray
    milli: np.ndarray
    gmem: np.ndarray


def held(state: ClusterState, running: list[LiveJob]) -> Held:
    h = Held(np.zeros(state.num_nodes, dtype=object), np.zeros(state.num_nodes, dtype=object),
             np.zeros(state.gpu_left.shape, dtype=object),
             np.zeros(state.gpu_left.shape, dtype=object))
    for job in running:
        assert len(job.allocations) == job.nodes
        if job.nodes > 1:
            assert len({a.node for a in job.allocations}) == job.nodes  # one per node
        for a in job.allocations:
            h.cpu[a.node] += a.request.cpu_milli
            h.mem[a.node] += a.request.memory_mib
            for g in a.gpus:
                h.milli[a.node, g] += a.gpu_milli
                h.gmem[a.node, g] += a.gpu_memory_mib
    return h


def assert_whole(state: ClusterState, running: list[LiveJob]) -> None:
    """free + held = total, everywhere, and nothing negative."""
    h = held(state, running)
    assert (state.cpu_left + h.cpu == state.cpu_cap).all()
    assert (state.mem_left + h.mem == state.mem_cap).all()
    assert (state.cpu_left >= 0).all() and (state.mem_left >= 0).all()
    for n in range(state.num_nodes):
        count = int(state.gpu_count[n])
        left = state.gpu_left[n, :count]
        assert (left + h.milli[n, :count] == MILLI_PER_GPU).all()
        assert (left >= 0).all()
        assert (state.gpu_mem_left[n, :count] + h.gmem[n, :count]
                == state.gpu_mem_cap[n, :count]).all()
        assert (state.gpu_mem_left[n, :count] >= 0).all()
        assert int(state.gpu_total_left[n]) == int(left.sum())
        assert (state.gpu_left[n, count:] == -1).all()


def fits_alone(defs: list[NodeDef], request: Request) -> int:
    """Brute force: how many nodes of the empty cluster could each hold ``request``."""
    fitting = 0
    for d in defs:
        spec = d.spec
        if spec.cpu_milli < request.cpu_milli or spec.memory_mib < request.memory_mib:
            continue
        if request.num_gpus:
            if not spec.gpus:
                continue
            if request.gpu_models and spec.gpus[0].model not in request.gpu_models:
                continue
            good = sum(1 for g in spec.gpus if g.memory_mib >= request.gpu_memory_mib
                       and request.gpu_milli <= MILLI_PER_GPU)
            if good < request.num_gpus:
                continue
        fitting += 1
    return fitting


QUEUE_POLICIES = [QueuePolicy(), QueuePolicy(order="fairshare"),
                  QueuePolicy(order="fairshare", backfill=True, reserve_after_s=0.0,
                              default_run_s=10.0)]


@PROPERTY
@given(policy=st.sampled_from(POLICIES), defs=node_defs(), jobs=workloads(),
       ends=st.lists(st.booleans(), min_size=8, max_size=8),
       queue=st.sampled_from(QUEUE_POLICIES))
def test_cycles_never_raise_nor_leak(
    policy: str, defs: list[NodeDef], jobs: list[LiveJob], ends: list[bool],
    queue: QueuePolicy,
) -> None:
    """Whatever the placement and queue policy (reservations included: they are computed
    by releasing running jobs on the state and putting them back)."""
    s: Scheduler = scheduler(policy, defs)
    quota = no_quota()
    pending, running = list(jobs), []
    for round_ in range(3):
        for job in running:
            job.started_at = float(round_)
        out = run_cycle(s, quota, pending, running, now=float(round_ + 1), policy=queue,
                        shares=FairShare())
        assert out.errors == {}, {i: repr(e) for i, e in out.errors.items()}
        assert all(not r.startswith("cannot be scheduled") for r in out.reasons.values())
        running += out.placed
        pending = [j for j in pending if j not in out.placed]
        assert all(j.allocations == () for j in pending)
        assert_whole(s.state, running)
        # some running jobs end (as the controller releases them), then the next cycle
        for job in [j for j in running if ends[(j.id + round_) % len(ends)]]:
            for allocation in job.allocations:
                s.release(allocation)
            quota.remove(job.queue, job.amount)
            job.allocations = ()
            running.remove(job)
        assert_whole(s.state, running)


@PROPERTY
@given(policy=st.sampled_from(POLICIES), defs=node_defs(), jobs=workloads())
def test_a_job_alone_on_an_empty_cluster_is_placed_exactly_when_it_fits(
    policy: str, defs: list[NodeDef], jobs: list[LiveJob]
) -> None:
    for job in jobs[:3]:
        s = scheduler(policy, defs)
        out = run_cycle(s, no_quota(), [job], [])
        assert out.errors == {}
        expected = fits_alone(defs, job.request) >= job.nodes
        assert (out.placed == [job]) == expected, (job.request, job.nodes, out.reasons)
        if not expected:
            assert out.reasons[job.id]
        assert_whole(s.state, out.placed)
