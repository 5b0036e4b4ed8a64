"""The core: ClusterState arithmetic, requests, the fit filter, the Statement, permit and the
scheduler's all-or-nothing guarantee."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import numpy as np
import pytest

from builders import cluster, gpu, node, scheduler, snapshot
from gpupool.core.cluster import (
    Allocation,
    ClusterError,
    ClusterState,
    GpuSpec,
    NodeSpec,
)
from gpupool.core.framework import Code, CycleState, Status
from gpupool.core.request import Gang, Request, RequestError
from gpupool.core.scheduler import Scheduler
from gpupool.core.transaction import Statement

# ---------------------------------------------------------------- ClusterState


def test_state_arrays_from_specs():
    state = cluster(
        [
            node("a", cpu=8, mem_gib=16, gpus=2, model="V100", gpu_mem_mib=16384),
            node("b", cpu=4, mem_gib=8, gpus=0),
            node("c", cpu=16, mem_gib=32, gpus=3, model="A100", free=[1000, 250, 0]),
        ]
    )
    assert state.models == ("A100", "V100")
    assert state.model_id.tolist() == [1, -1, 0]
    assert state.max_gpus == 3
    assert state.gpu_left.tolist() == [[1000, 1000, -1], [-1, -1, -1], [1000, 250, 0]]
    assert state.gpu_total_left.tolist() == [2000, 0, 1250]
    assert state.gpu_mem_left.tolist() == [[16384, 16384, 0], [0, 0, 0], [0, 0, 0]]
    assert state.total_gpu_milli == 5000
    assert state.node_key(2) == (0, 16000, (0, 250, 1000))
    assert state.model_mask(()).tolist() == [True, False, True]
    assert state.model_mask(("V100", "H100")).tolist() == [True, False, False]
    assert state.model_mask(("H100",)).tolist() == [False, False, False]


@pytest.mark.parametrize(
    ("spec_kwargs", "match"),
    [
        ({"cpu_milli": -1}, "must not be negative"),
        ({"gpus": (GpuSpec("A100"), GpuSpec("V100"))}, "mixed GPU models"),
        ({"gpus": (GpuSpec("A100"),) * 2, "links": ((0, 2),)}, "2x2 matrix"),
    ],
)
def test_nodespec_rejects(spec_kwargs, match):
    kwargs = {"name": "x", "cpu_milli": 1000, "memory_mib": 1024, **spec_kwargs}
    with pytest.raises(ClusterError, match=match):
        NodeSpec(**kwargs)


def test_state_rejects_duplicate_names_and_empty():
    with pytest.raises(ClusterError, match="unique"):
        ClusterState([node("a").spec, node("a").spec])
    with pytest.raises(ClusterError, match="at least one node"):
        ClusterState([])


def _two_node_state() -> ClusterState:
    return cluster(
        [
            node("a", cpu=8, mem_gib=16, gpus=2, free=[1000, 400], gpu_mem_mib=8192),
            node("b", cpu=4, mem_gib=8, gpus=1),
        ]
    )


@pytest.mark.parametrize(
    ("node_", "gpus", "request_", "match"),
    [
        (0, (0,), gpu(1, cpu=9), "not enough CPU or memory"),
        (0, (0,), gpu(1, mem_gib=17), "not enough CPU or memory"),
        (0, (1,), gpu(1, 500), "GPU 1 of a is too full"),
        (0, (0, 1), gpu(2), "GPU 1 of a is too full"),  # GPU 0 fits, GPU 1 does not
        (0, (0,), gpu(1, gpu_mem_mib=9000), "too full"),
        (0, (2,), gpu(1), "GPU 2 does not exist"),
        (0, (0, 0), gpu(2), "distinct GPUs"),
        (0, (0,), gpu(2), "needs 2 distinct GPUs"),
        (1, (), gpu(1), "needs 1 distinct GPUs"),
        (1, (0,), gpu(0, cpu=1), "needs 0 distinct GPUs"),
    ],
)
def test_allocate_rejects_and_changes_nothing(node_, gpus, request_, match):
    state = _two_node_state()
    before, version = snapshot(state), state.version.tolist()
    with pytest.raises(ClusterError, match=match):
        state.allocate(node_, gpus, request_)
    assert snapshot(state) == before
    assert state.version.tolist() == version


def test_allocate_then_release_restores():
    state = _two_node_state()
    before = snapshot(state)
    v0 = state.version.tolist()
    a1 = state.allocate(0, (1,), gpu(1, 300, cpu=2, mem_gib=4, gpu_mem_mib=1000))
    assert state.cpu_left.tolist() == [6000, 4000]
    assert state.mem_left.tolist() == [12 * 1024, 8 * 1024]
    assert state.gpu_left[0].tolist() == [1000, 100]
    assert state.gpu_mem_left[0].tolist() == [8192, 7192]
    assert state.gpu_total_left.tolist() == [1100, 1000]
    a2 = state.allocate(0, (0,), gpu(1, cpu=6))
    assert state.gpu_total_left.tolist() == [100, 1000]
    assert state.cpu_left.tolist() == [0, 4000]
    assert a2 == Allocation(a2.request, 0, (0,), 1000, 0)
    state.release(a1)
    state.release(a2)
    assert snapshot(state) == before
    assert state.version.tolist() == [v0[0] + 4, v0[1]]  # every change bumps the version


# ---------------------------------------------------------------- Request


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"cpu_milli": -1}, "cpu_milli must not be negative"),
        ({"gpu_milli": 500}, "needs num_gpus >= 1"),
        ({"num_gpus": 1, "gpu_milli": 1500}, "above one GPU"),
        ({"num_gpus": 2, "gpu_milli": 500}, "only allowed for a single GPU"),
    ],
)
def test_request_rejects(kwargs, match):
    with pytest.raises(RequestError, match=match):
        Request("r", **kwargs)


@pytest.mark.parametrize(
    ("request_", "text", "sharing", "total"),
    [
        (Request("r", num_gpus=2), "2 whole GPUs", False, 2000),
        (Request("r", num_gpus=1), "1 whole GPU", False, 1000),
        (Request("r", num_gpus=2, gpu_models=("A100",)), "2 whole A100", False, 2000),
        (Request("r", num_gpus=1, gpu_milli=500), "0.5 of one GPU", True, 500),
        (Request("r", num_gpus=1, gpu_milli=250, gpu_models=("T4",)), "0.25 of one T4", True, 250),
        (Request("r", cpu_milli=1000), "no GPU", False, 0),
    ],
)
def test_request_describe(request_, text, sharing, total):
    assert request_.describe() == text
    assert request_.is_sharing is sharing
    assert request_.total_gpu_milli == total


def test_gang_needs_members():
    with pytest.raises(RequestError, match="no members"):
        Gang("g")


# ---------------------------------------------------------------- fit filter


FILTER_NODES = [
    node("small", cpu=4, mem_gib=8, gpus=2),  # 0
    node("v100", cpu=32, mem_gib=64, gpus=2, model="V100", gpu_mem_mib=16384),  # 1
    node("a100", cpu=32, mem_gib=64, gpus=4, gpu_mem_mib=40960, free=[1000, 600, 300, 0]),  # 2
    node("cpuonly", cpu=64, mem_gib=256, gpus=0),  # 3
    node("busy", cpu=32, mem_gib=64, gpus=2, free=[1000, 1000], cpu_free=1, mem_free_gib=2),  # 4
]


@pytest.mark.parametrize(
    ("request_", "feasible"),
    [
        (gpu(0, cpu=1), [0, 1, 2, 3, 4]),
        (gpu(0, cpu=2), [0, 1, 2, 3]),  # busy has 1 core free
        (gpu(0, cpu=8), [1, 2, 3]),
        (gpu(0, mem_gib=16), [1, 2, 3]),
        (gpu(0, mem_gib=100), [3]),
        (gpu(1), [0, 1, 2, 4]),  # GPU tasks never land on CPU-only nodes
        (gpu(1, cpu=2), [0, 1, 2]),
        (gpu(2), [0, 1, 4]),  # a100 has one fully free GPU
        (gpu(3), []),
        (gpu(1, models=("A100",)), [0, 2, 4]),
        (gpu(1, models=("V100",)), [1]),
        (gpu(1, models=("V100", "A100")), [0, 1, 2, 4]),
        (gpu(1, models=("H100",)), []),
        (gpu(1, 600), [0, 1, 2, 4]),
        (gpu(1, 600, models=("A100",)), [0, 2, 4]),
        (gpu(1, 300), [0, 1, 2, 4]),
        (gpu(1, gpu_mem_mib=20000), [2]),  # only a100's GPUs have 40 GiB
        (gpu(2, gpu_mem_mib=16384), [1]),  # a100 has one free GPU; others declare 0 MiB
        (gpu(1, 500, gpu_mem_mib=16000), [1, 2]),
    ],
)
def test_fit_filter(request_, feasible):
    s = scheduler("bestfit", FILTER_NODES)
    assert s.feasible_nodes(request_).tolist() == feasible


def test_fit_filter_shares_after_placements():
    s = scheduler("bestfit", [node("n", gpus=2, free=[700, 1000])])
    assert s.feasible_nodes(gpu(1, 700)).tolist() == [0]
    assert s.place(gpu(1, 700, name="a")).placed  # tightest: GPU 0 → 0 left
    assert s.state.gpu_left[0].tolist() == [0, 1000]
    assert s.place(gpu(1, 700, name="b")).placed  # GPU 1 → 300 left
    assert s.feasible_nodes(gpu(1, 301)).tolist() == []
    assert s.feasible_nodes(gpu(1, 300)).tolist() == [0]


# ---------------------------------------------------------------- scheduler


def test_tie_order_must_be_a_permutation():
    state = cluster([node("a"), node("b")])
    profile = scheduler("binpack", [node("a"), node("b")]).profile
    for bad in ([0], [0, 0], [1, 2]):
        with pytest.raises(ValueError, match="permutation"):
            Scheduler(state, profile, tie_order=bad)


def test_place_failure_changes_nothing():
    s = scheduler("bestfit", [node("a", gpus=1, free=[500])])
    before = snapshot(s.state)
    decision = s.place(gpu(1, 600))
    assert not decision.placed
    assert decision.status.code is Code.UNSCHEDULABLE
    assert decision.allocations == ()
    assert snapshot(s.state) == before


class _Veto:
    """A permit plugin that vetoes any attempt of more than ``limit`` tasks."""

    name = "veto"

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.seen: list[int] = []

    def permit(
        self, state: ClusterState, allocations: Sequence[Allocation], cycle: CycleState
    ) -> Status:
        self.seen.append(len(allocations))
        if len(allocations) > self.limit:
            return Status(Code.REJECTED, f"more than {self.limit} tasks")
        return Status()


def _with_permit(s: Scheduler, plugin: _Veto) -> Scheduler:
    profile = dataclasses.replace(s.profile, permit=(plugin,))
    return Scheduler(s.state, profile)


def test_permit_veto_rolls_back_everything():
    base = scheduler("clustering", [node("a", gpus=2), node("b", gpus=2)])
    veto = _Veto(limit=2)
    s = _with_permit(base, veto)
    before = snapshot(s.state)
    gang = Gang("g", tuple(gpu(1, name=f"g-{i}") for i in range(3)))
    decision = s.place_gang(gang)
    assert veto.seen == [3]  # called once, with all three allocations
    assert decision.status == Status(Code.REJECTED, "more than 2 tasks")
    assert decision.allocations == ()
    assert snapshot(s.state) == before
    # clustering's counts were rolled back too: a 1-GPU task scores node "a" as idle (25 + 18)
    plugin = s.profile.scores[0][0]
    assert plugin.score(s.state, gpu(1), CycleState(), np.array([0, 1])).tolist() == [43, 43]
    # a smaller gang passes the same permit
    ok = s.place_gang(Gang("h", (gpu(1, name="h-0"), gpu(1, name="h-1"))))
    assert ok.placed
    assert veto.seen == [3, 2]
    assert [(a.node, a.gpus) for a in ok.allocations] == [(0, (0,)), (0, (1,))]


def test_permit_allows_single_tasks():
    veto = _Veto(limit=1)
    s = _with_permit(scheduler("binpack", [node("a", gpus=2)]), veto)
    assert s.place(gpu(1)).placed
    assert veto.seen == [1]


class _BadPicker:
    """Picks a GPU that does not exist for the second task it sees (a plugin bug)."""

    name = "bad"

    def __init__(self) -> None:
        self.calls = 0

    def pick_gpus(
        self, state: ClusterState, request: Request, cycle: CycleState, node: int
    ) -> tuple[int, ...]:
        self.calls += 1
        return (0,) if self.calls == 1 else (99,)


def test_plugin_error_mid_gang_leaves_state_unchanged():
    """Even when a plugin raises, a gang is all-or-nothing: the first member is undone."""
    base = scheduler("clustering", [node("a", gpus=2)])
    s = Scheduler(base.state, dataclasses.replace(base.profile, gpu_pick=_BadPicker()))
    before = snapshot(s.state)
    with pytest.raises(ClusterError, match="GPU 99 does not exist"):
        s.place_gang(Gang("g", (gpu(1, name="g-0"), gpu(1, name="g-1"))))
    assert snapshot(s.state) == before
    plugin = s.profile.scores[0][0]
    assert plugin.score(s.state, gpu(2), CycleState(), np.array([0])).tolist() == [43]


class _Recorder:
    name = "rec"

    def __init__(self) -> None:
        self.log: list[str] = []

    def reserve(self, state: ClusterState, allocation: Allocation) -> None:
        self.log.append(f"+{allocation.request.name}")

    def unreserve(self, state: ClusterState, allocation: Allocation) -> None:
        self.log.append(f"-{allocation.request.name}")


def test_statement_discard_undoes_newest_first():
    state = cluster([node("a", gpus=2)])
    before = snapshot(state)
    rec = _Recorder()
    st = Statement(state, (rec,))
    st.allocate(0, (0,), gpu(1, 300, name="x"))
    st.allocate(0, (0,), gpu(1, 300, name="y"))
    assert state.gpu_left[0].tolist() == [400, 1000]
    assert [a.request.name for a in st.allocations] == ["x", "y"]
    st.discard()
    assert rec.log == ["+x", "+y", "-y", "-x"]
    assert snapshot(state) == before
    with pytest.raises(RuntimeError, match="already committed or discarded"):
        st.allocate(0, (0,), gpu(1, 300, name="z"))


def test_statement_commit_keeps():
    state = cluster([node("a", gpus=2)])
    st = Statement(state, ())
    st.allocate(0, (1,), gpu(1, name="x"))
    (a,) = st.commit()
    assert (a.node, a.gpus) == (0, (1,))
    assert state.gpu_left[0].tolist() == [1000, 0]
    with pytest.raises(RuntimeError):
        st.allocate(0, (0,), gpu(1, name="y"))


def test_statement_rejected_allocation_is_not_recorded():
    state = cluster([node("a", gpus=1)])
    rec = _Recorder()
    st = Statement(state, (rec,))
    with pytest.raises(ClusterError):
        st.allocate(0, (0,), gpu(2))
    assert st.allocations == ()
    assert rec.log == []


def test_profile_describe():
    s = scheduler("fgd", [node("a", gpus=1)])
    assert s.profile.describe() == (
        "fgd: filter=fit, score=fgdx1+topologyx1000, gpus=fgd, prepare=topology"
    )
    assert s.profile.queue_sort is not None
    assert s.profile.queue_sort.sort_key(Request("r", priority=5), 7) == (-5, 7)


def test_scheduler_release_undoes_plugin_bookkeeping():
    """A task that ends is given back through the scheduler, so clustering forgets it."""
    s = scheduler("clustering", [node("a", gpus=2), node("b", gpus=2)])
    before = snapshot(s.state)
    decision = s.place(gpu(1, 500, name="share"))
    assert [(a.node, a.gpus) for a in decision.allocations] == [(0, (0,))]
    plugin = s.profile.scores[0][0]
    # a runs only a share now: a 1-GPU task scores it 0 + 25*6500//8000 = 20; b idle 25 + 18
    assert plugin.score(s.state, gpu(1), CycleState(), np.array([0, 1])).tolist() == [20, 43]
    s.release(decision.allocations[0])
    assert snapshot(s.state) == before
    assert plugin.score(s.state, gpu(1), CycleState(), np.array([0, 1])).tolist() == [43, 43]
