"""NVLink-aware GPU choice, all-or-nothing gangs, and rack/spine-aware gang placement."""

from __future__ import annotations

import warnings
from collections import Counter

import numpy as np
import pytest

from builders import gpu, node, scheduler, snapshot
from gpupool.core.cluster import LinkLevel
from gpupool.core.framework import CycleState
from gpupool.core.request import Gang, Request
from gpupool.plugins.gpu_pick import best_connected
from gpupool.plugins.profiles import POLICIES

ISLANDS = [[0, 1, 2, 3], [4, 5, 6, 7]]


def nv_node(free):
    return node("nv", cpu=64, gpus=8, free=free, nvlink_groups=ISLANDS)


def gang(name: str, size: int, **kwargs) -> Gang:
    return Gang(name, tuple(gpu(name=f"{name}-{i}", **kwargs) for i in range(size)))


def where(s, decision) -> list[tuple[str, tuple[int, ...]]]:
    assert decision.placed, decision.reason
    return [(s.state.names[a.node], a.gpus) for a in decision.allocations]


# ---------------------------------------------------------------- NVLink


@pytest.mark.parametrize("policy", POLICIES)
@pytest.mark.parametrize(
    ("free", "n", "expected"),
    [
        # GPUs 0, 1 taken: 4 GPUs go to the whole second island, not 2,3,4,5
        ([0, 0] + [1000] * 6, 4, (4, 5, 6, 7)),
        # 2 GPUs: a pair inside one island, the lowest such pair
        ([0, 0] + [1000] * 6, 2, (2, 3)),
        ([0, 1000, 0, 1000, 0, 1000, 1000, 1000], 2, (1, 3)),
        # 3 GPUs: {5, 6, 7} is all NVLink; {1, 3, 5} would cross islands
        ([0, 1000, 0, 1000, 0, 1000, 1000, 1000], 3, (5, 6, 7)),
        # one whole GPU: the lowest free
        ([0, 0] + [1000] * 6, 1, (2,)),
        # 5 GPUs cannot stay in one island: 4 in one + 1 beats 2 + 3
        ([1000] * 8, 5, (0, 1, 2, 3, 4)),
        ([1000, 0, 1000, 1000, 1000, 1000, 1000, 1000], 5, (0, 4, 5, 6, 7)),
    ],
)
def test_nvlink_islands(policy, free, n, expected):
    s = scheduler(policy, [nv_node(free)])
    assert where(s, s.place(gpu(n))) == [("nv", expected)]


def test_links_matrix_from_builder_and_uniform_links_dropped():
    s = scheduler("bestfit", [nv_node([1000] * 8), node("u", gpus=2, nvlink_groups=[[0, 1]])])
    links = s.state.links[0]
    assert links is not None
    assert links[0, 3] == LinkLevel.NVLINK and links[3, 4] == LinkLevel.PCIE
    assert s.state.links[1] is None  # one island covering the node: uniform


def test_best_connected_prefers_nvlink_then_pcie_then_cross_socket():
    x, p, nv = int(LinkLevel.CROSS_SOCKET), int(LinkLevel.PCIE), int(LinkLevel.NVLINK)
    links = np.array(
        [
            [0, nv, p, x],
            [nv, 0, x, p],
            [p, x, 0, nv],
            [x, p, nv, 0],
        ]
    )
    assert best_connected([0, 1, 2, 3], 2, links) == (0, 1)
    assert best_connected([0, 2, 3], 2, links) == (2, 3)
    assert best_connected([0, 1, 2], 2, links) == (0, 1)
    assert best_connected([1, 2], 2, links) == (1, 2)
    assert best_connected([0, 2, 3], 2, None) == (0, 2)
    assert best_connected([0, 1, 3], 2, links) == (0, 1)
    assert best_connected([0, 3], 1, links) == (0,)


# ---------------------------------------------------------------- gangs


def test_gang_all_or_nothing_restores_state_and_clustering_counts():
    nodes = [node("a", gpus=2), node("b", gpus=2, free=[1000, 0])]
    s = scheduler("clustering", nodes)
    before = snapshot(s.state)
    versions = s.state.version.tolist()
    decision = s.place_gang(gang("big", 4, cpu=1))
    assert not decision.placed
    assert decision.allocations == ()
    assert decision.reason == (
        "gang big (4 tasks) cannot be placed together: task big-3 needs 1 whole GPU, 1 CPU: "
        "2 nodes have GPUs but none free"
    )
    assert snapshot(s.state) == before
    assert s.state.version.tolist() != versions  # changed and changed back: caches re-check
    # Clustering's counts were rolled back: for a share, "a" is idle again (25 + 18) and
    # beats "b" (only 1-GPU tasks: 0 + 21). Had the counts leaked, "a" would score 0 + 18.
    plugin = s.profile.scores[0][0]
    assert plugin.score(s.state, gpu(1, 500), CycleState(), np.array([0, 1])).tolist() == [43, 21]
    assert where(s, s.place(gpu(1, 500, name="share"))) == [("a", (0,))]


def test_gang_that_fits_places_every_member():
    nodes = [node("a", gpus=2), node("b", gpus=2, free=[1000, 0])]
    s = scheduler("clustering", nodes)
    decision = s.place_gang(gang("ok", 3, cpu=1))
    # b (only 1-GPU tasks, 75 + 21) first, then a (idle 25 + 18), then a (75 + 21)
    assert where(s, decision) == [("b", (0,)), ("a", (0,)), ("a", (1,))]
    assert s.state.gpu_total_left.tolist() == [0, 0]
    assert s.state.cpu_left.tolist() == [30000, 31000]


@pytest.mark.parametrize("policy", POLICIES)
def test_gang_rollback_any_policy(policy):
    nodes = [node("a", gpus=2, free=[1000, 500]), node("b", gpus=1), node("c", cpu=1, gpus=4)]
    s = scheduler(policy, nodes)
    before = snapshot(s.state)
    decision = s.place_gang(gang("g", 4, cpu=2))
    assert not decision.placed
    # a and b hold one whole GPU each; c lacks CPU: the third member fails
    assert "task g-2 needs 1 whole GPU, 2 CPU" in decision.reason
    assert snapshot(s.state) == before
    # and the cluster still takes what fits
    assert s.place_gang(gang("h", 2, cpu=2)).placed


# ---------------------------------------------------------------- topology


def racked(name, rack, spine=None, free=(1000,) * 4):
    labels = {"rack": rack} if spine is None else {"rack": rack, "spine": spine}
    return node(name, gpus=len(free), free=list(free), labels=labels)


# r2 holds 2, r0 holds 8 over two nodes, r1 holds exactly 4 on one node (listed last).
TIGHT_RACK = [
    racked("n3", "r2", "s0", free=(1000, 1000, 0, 0)),
    racked("n0", "r0", "s0"),
    racked("n1", "r0", "s0"),
    racked("n2", "r1", "s0"),
]


@pytest.mark.parametrize("policy", POLICIES)
def test_gang_goes_to_the_tightest_rack_that_holds_it(policy):
    s = scheduler(policy, TIGHT_RACK)
    got = where(s, s.place_gang(gang("g", 4)))
    assert got == [("n2", (0,)), ("n2", (1,)), ("n2", (2,)), ("n2", (3,))]


def test_single_tasks_are_not_steered():
    s = scheduler("binpack", TIGHT_RACK)
    assert where(s, s.place_gang(gang("g", 1))) == [("n3", (0,))]  # binpack: fullest node


def _too_big(spine: bool):
    sp = "s0" if spine else None
    return [
        racked("d0", "r3", sp, free=(0, 0, 0, 1000)),  # r3 holds 1
        racked("c0", "r2", sp, free=(0, 1000, 1000, 1000)),  # r2 holds 3
        racked("b0", "r1", sp, free=(1000, 1000, 0, 0)),  # r1 holds 2 + 1 = 3
        racked("b1", "r1", sp, free=(0, 0, 0, 1000)),
        racked("a0", "r0", sp),  # r0 holds 4
    ]


@pytest.mark.parametrize("spine", [True, False], ids=["rack+spine", "rack-only"])
@pytest.mark.parametrize("policy", POLICIES)
def test_gang_too_big_for_any_rack_uses_fewest_racks(policy, spine):
    """6 members, racks hold 4/3/3/1: two racks suffice (r0, then r1 — the larger first,
    names break the tie), never three."""
    s = scheduler(policy, _too_big(spine))
    got = where(s, s.place_gang(gang("g", 6)))
    racks = Counter(s.state.labels[s.state.index[name]]["rack"] for name, _ in got)
    assert set(racks) == {"r0", "r1"}
    assert racks["r0"] >= 3  # r0 and r1 hold 7 together: at most one slot stays free


TWO_SPINES = [
    racked("p0", "r0", "s0", free=(1000, 1000, 1000, 0)),  # s0/r0 holds 3
    racked("p1", "r1", "s0", free=(1000, 1000, 1000, 0)),  # s0/r1 holds 3
    racked("q0", "r2", "s1"),  # s1/r2 holds 4
    racked("q1", "r3", "s1", free=(1000, 1000, 1000, 0)),  # s1/r3 holds 3
]


@pytest.mark.parametrize(
    ("size", "racks"),
    [
        (4, {"r2"}),  # one rack holds it
        (6, {"r0", "r1"}),  # no rack does; the tightest spine (s0: 6 < s1: 7) does
        (7, {"r2", "r3"}),  # only s1 holds 7
        (10, {"r2", "r0", "r1"}),  # no spine holds 10: fewest racks, largest first
    ],
)
@pytest.mark.parametrize("policy", ["bestfit", "spread", "fgd", "random"])
def test_rack_then_spine(policy, size, racks):
    s = scheduler(policy, TWO_SPINES)
    got = where(s, s.place_gang(gang("g", size)))
    used = {s.state.labels[s.state.index[name]]["rack"] for name, _ in got}
    assert used == racks


def test_gang_of_gpu_memory_only_members_is_steered():
    """Members asking for GPU memory only (no share): capacity counts GPU memory, no
    division by zero. r0 holds 2 x 4 GiB on its one 8 GiB GPU, r1 holds 4 (tightest: r0 for
    two members, r1 for three)."""
    nodes = [
        node("big", gpus=2, gpu_mem_mib=8192, labels={"rack": "r1"}),
        node("small", gpus=1, gpu_mem_mib=8192, labels={"rack": "r0"}),
    ]
    members = tuple(Request(f"m{i}", num_gpus=1, gpu_memory_mib=4096) for i in range(2))
    s = scheduler("spread", nodes)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        got = where(s, s.place_gang(Gang("g", members)))
    assert got == [("small", (0,)), ("small", (0,))]
    members3 = tuple(Request(f"n{i}", num_gpus=1, gpu_memory_mib=4096) for i in range(3))
    s = scheduler("binpack", nodes)
    assert [name for name, _ in where(s, s.place_gang(Gang("h", members3)))] == ["big"] * 3


def _distinct_cluster():
    return [
        racked("a0", "r0", "s0", free=(1000, 1000, 0, 0)),
        racked("a1", "r0", "s0", free=(1000, 1000, 0, 0)),
        racked("b0", "r1", "s0"),  # 4 free GPUs: holds a 2 x 2 gang on one node
        racked("c0", "r2", "s0", free=(1000, 1000, 0, 0)),
    ]


@pytest.mark.parametrize("policy", ["bestfit", "gpupool", "fgd", "spread"])
def test_distinct_node_gang_puts_each_member_on_its_own_node_in_one_rack(policy):
    """A 2-node x 2-GPU job: never both members on b0 (it would fit), and the two nodes of
    rack r0 (the tightest rack holding two distinct nodes) rather than spreading racks."""
    s = scheduler(policy, _distinct_cluster())
    members = tuple(gpu(2, name=f"g-{i}") for i in range(2))
    got = where(s, s.place_gang(Gang("g", members, distinct_nodes=True)))
    assert sorted(name for name, _ in got) == ["a0", "a1"]
    assert all(gpus == (0, 1) for _, gpus in got)


def test_distinct_node_gang_fails_whole_when_too_few_nodes_and_says_why():
    s = scheduler("bestfit", _distinct_cluster())
    before = s.state.gpu_left.copy()
    # Five 2-GPU members, four nodes: b0 could hold a second one, but not in this gang.
    members = tuple(gpu(2, name=f"g-{i}") for i in range(5))
    decision = s.place_gang(Gang("g", members, distinct_nodes=True))
    assert not decision.placed
    assert "one-task-per-node gang" in decision.reason
    assert (s.state.gpu_left == before).all()
