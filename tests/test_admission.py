"""The loss-system admission filter of the ``gpupool`` policy, on cases worked out by hand.

The filter may keep a poorly fitting share (an 810, which leaves 190 milli few tasks fill)
off *fresh* GPUs once the whole-GPU demand expected before arrivals reach capacity would
take every fresh GPU left (docs/design/placement-policy.md). Each case states the figures
the rule compares.
"""

from __future__ import annotations

import numpy as np
import pytest

from builders import cluster, gpu, node
from gpupool.core.cluster import ClusterState
from gpupool.core.frag import TargetWorkload, TaskShape
from gpupool.core.framework import CycleState
from gpupool.core.scheduler import Scheduler
from gpupool.plugins.admission import FreshGpuAdmission
from gpupool.plugins.gap_prices import gap_prices
from gpupool.plugins.profiles import PolicyContext, build_profile
from gpupool.server.pool_nodes import build_scheduler

PRICES_810 = gap_prices({810: 3})
"""Only 810s: each takes a GPU of its own (price 1), a waste fraction of 0.19."""


def full_cluster(
    last_free: tuple[int, ...], cpu_free: float | None = None, nodes: int = 4
) -> ClusterState:
    """``nodes`` nodes x 8 GPUs (default 32 GPUs): all full but the last, which has
    ``last_free``."""
    defs = [node(f"n{i}", cpu=64, gpus=8, free=[0] * 8) for i in range(nodes - 1)]
    last = f"n{nodes - 1}"
    defs.append(node(last, cpu=64, gpus=8, free=list(last_free), cpu_free=cpu_free))
    return cluster(defs)


def admission_after(state: ClusterState, whole: int, shares: int = 2) -> FreshGpuAdmission:
    """An admission filter that has seen ``whole`` one-GPU tasks (4 cores each) and
    ``shares`` 810s (1 core each)."""
    admission = FreshGpuAdmission(state, lambda: PRICES_810)
    for i in range(whole):
        admission.observe(gpu(1, cpu=4, name=f"w{i}"))
    for i in range(shares):
        admission.observe(gpu(1, 810, cpu=1, name=f"s{i}"))
    return admission


def allowed(admission: FreshGpuAdmission, state: ClusterState, request) -> list[str]:
    mask = admission.filter(state, request, CycleState(), np.ones(state.num_nodes, dtype=bool))
    return [state.names[i] for i in np.flatnonzero(mask)]


def test_near_saturation_an_810_may_not_open_a_fresh_gpu():
    """Seen: 28 whole GPUs and 3 810s (this one included), 30,430 of 32,000 milli arrived.
    Whole-GPU demand is 28,000 / 30,430 of arrivals, so 0.92 x 1,570 = 1.44 GPUs of it are
    still to come: more than the 1 fresh GPU left. The 810 is held; a whole-GPU task and a
    share that fits the partly used GPU are not."""
    state = full_cluster((1000, 190, 0, 0, 0, 0, 0, 0))
    admission = admission_after(state, whole=28)
    assert allowed(admission, state, gpu(1, 810, cpu=1, name="new-810")) == []
    assert admission.refused == 1
    assert allowed(admission, state, gpu(1, cpu=4, name="new-1000")) == ["n0", "n1", "n2", "n3"]
    assert allowed(admission, state, gpu(1, 160, cpu=1, name="new-160")) == [
        "n0", "n1", "n2", "n3"
    ]


def test_a_share_may_still_fill_a_partly_used_gpu_while_fresh_ones_are_held():
    """Same saturation, but n3 also has a GPU with 900 free: the 810 may go there (it
    opens nothing), so only nodes with such a GPU stay."""
    state = full_cluster((1000, 900, 0, 0, 0, 0, 0, 0))
    admission = admission_after(state, whole=28)
    assert allowed(admission, state, gpu(1, 810, cpu=1, name="new-810")) == ["n3"]
    assert admission.refused == 0


def test_far_from_saturation_the_810_opens_a_fresh_gpu():
    """Seen: 4 whole GPUs and 3 810s; 6,430 of 32,000 arrived. The whole-GPU demand to come
    (0.62 x 25,570 = 15.9 GPUs) is less than the 16 fresh GPUs left (two empty nodes): the
    filter removes no node (the fit filter, after it, keeps the nodes with room)."""
    defs = [node(f"n{i}", cpu=64, gpus=8, free=[0] * 8) for i in range(2)]
    defs += [node(f"n{i}", cpu=64, gpus=8) for i in (2, 3)]
    state = cluster(defs)
    admission = admission_after(state, whole=4)
    assert allowed(admission, state, gpu(1, 810, cpu=1, name="new-810")) == ["n0", "n1", "n2", "n3"]
    assert admission.refused == 0


def test_a_share_that_packs_well_is_never_held():
    """500s pair up exactly (waste fraction 0, not above the plan's average of 0.6 %):
    never held, at a saturation where an 810 (waste fraction 0.19) is."""
    prices = gap_prices({500: 4, 810: 1})
    state = full_cluster((1000, 190, 0, 0, 0, 0, 0, 0))
    admission = FreshGpuAdmission(state, lambda: prices)
    for i in range(28):
        admission.observe(gpu(1, cpu=4, name=f"w{i}"))
    admission.observe(gpu(1, 500, cpu=1, name="h0"))
    admission.observe(gpu(1, 810, cpu=1, name="s0"))
    assert 0 < admission.plan_waste_fraction(prices) < 0.01
    assert allowed(admission, state, gpu(1, 500, cpu=1, name="new-500")) == [
        "n0", "n1", "n2", "n3"
    ]
    assert allowed(admission, state, gpu(1, 810, cpu=1, name="new-810")) == []


@pytest.mark.parametrize(("cores_free", "held"), [(2, False), (8, False), (12, True)])
def test_fresh_gpus_are_held_only_with_cpu_to_spare(cores_free: float, held: bool):
    """The first case with only ``cores_free`` cores free (all on n3). The 1,570 milli still
    to come ask for 5.9 cores at the 3.8 cores per arrived GPU seen, and a whole-GPU task on
    the kept GPU for 4 more: 9.9 cores. With 2 or 8 free, a kept GPU would end stranded, so
    nothing is held; with 12 the 810 is held."""
    defs = [node(f"n{i}", cpu=64, gpus=8, free=[0] * 8, cpu_free=0) for i in range(3)]
    defs.append(node("n3", cpu=64, gpus=8, free=[1000, 190] + [0] * 6, cpu_free=cores_free))
    state = cluster(defs)
    admission = admission_after(state, whole=28)
    kept = allowed(admission, state, gpu(1, 810, cpu=1, name="new-810"))
    assert kept == ([] if held else ["n0", "n1", "n2", "n3"])


HALVES_AND_810S = gap_prices({500: 8, 810: 3})
"""500s pair up (price 0.5, waste 0); 810s take a GPU each (price 1, waste fraction 0.19)."""


def admission_with_halves(state: ClusterState, whole: int, halves: int) -> FreshGpuAdmission:
    admission = FreshGpuAdmission(state, lambda: HALVES_AND_810S)
    for i in range(whole):
        admission.observe(gpu(1, cpu=4, name=f"w{i}"))
    for i in range(halves):
        admission.observe(gpu(1, 500, cpu=1, name=f"h{i}"))
    for i in range(2):
        admission.observe(gpu(1, 810, cpu=1, name=f"s{i}"))
    return admission


def test_the_fresh_gpus_well_fitting_shares_open_count_toward_saturation():
    """40 GPUs, 8 of them fresh. Seen: 24 whole GPUs, 8 halves (4 fresh GPUs' worth) and
    3 810s, 30,430 milli. Of the 9,570 still to come, whole-GPU tasks alone would open
    24 / 30.43 x 9.57 = 7.5 GPUs, fewer than the 8 fresh; with the halves' 4 / 30.43 x
    9.57 = 1.3 more, 8.8: every fresh GPU will be taken, so the 810 is held."""
    state = full_cluster((1000,) * 8, nodes=5)
    admission = admission_with_halves(state, whole=24, halves=8)
    request = gpu(1, 810, cpu=1, name="new-810")
    assert allowed(admission, state, request) == []
    assert admission.share_fresh_gpus(HALVES_AND_810S) == 4


def test_no_hold_when_shares_would_open_more_fresh_gpus_than_whole_gpu_tasks():
    """1 fresh GPU. Seen: 12 whole GPUs, 30 halves (15 fresh GPUs' worth) and 3 810s,
    29,430 milli. The whole-GPU tasks alone would take the fresh GPU (12 / 29.43 x 2.57 =
    1.05 GPUs to come), but the halves open more fresh GPUs than they do: a kept GPU would
    more likely go to a share, which gains little over the 810, so it is not held. With
    28 whole GPUs seen instead (and no halves) it is held."""
    state = full_cluster((1000, 190, 0, 0, 0, 0, 0, 0))
    admission = admission_with_halves(state, whole=12, halves=30)
    assert allowed(admission, state, gpu(1, 810, cpu=1, name="new-810")) == [
        "n0", "n1", "n2", "n3"
    ]
    held = admission_with_halves(state, whole=28, halves=0)
    assert allowed(held, state, gpu(1, 810, cpu=1, name="new-810")) == []


def test_fresh_gpus_count_only_as_far_as_their_node_cpu_serves_whole_gpu_tasks():
    """8 fresh GPUs on a node with 8 free cores serve only 2 tasks at 4 cores each."""
    state = cluster([node("n0", cpu=64, gpus=8, cpu_free=8)])
    admission = admission_after(state, whole=3)
    assert admission.usable_fresh_gpus(state) == 2


def test_the_reason_names_the_kept_gpus_and_the_gap():
    """A pending job's reason says why it is held (the server's why_not path)."""
    workload = TargetWorkload((TaskShape(4000, 1, 1000), TaskShape(1000, 1, 810)), (0.9, 0.1))
    defs = [node(f"n{i}", cpu=64, gpus=8, free=[0] * 8) for i in range(3)]
    defs.append(node("n3", cpu=64, gpus=8, free=[1000, 190] + [0] * 6))
    state = ClusterState([d.spec for d in defs])
    profile = build_profile("gpupool-file", state, PolicyContext(workload=workload, admission=True))
    scheduler = Scheduler(state, profile)
    for i, d in enumerate(defs):
        for g, free in enumerate(d.free):
            if free < 1000:
                state.allocate(i, (g,), gpu(1, 1000 - free, name=f"pre-{i}-{g}"))
    admission = profile.filters[0]
    assert isinstance(admission, FreshGpuAdmission)
    for i in range(28):
        admission.observe(gpu(1, cpu=4, name=f"w{i}"))
    reason = scheduler.why_not(gpu(1, 810, cpu=1, name="new-810"))
    assert reason is not None
    assert "the last 1 fresh GPUs are kept for whole-GPU tasks" in reason
    assert "leave 190 milli" in reason


def test_only_the_loss_system_profile_has_the_filter():
    """The live server (its scheduler builder: admission=False) never holds a job that
    fits; ``gpupool-place-all`` is the ablation without the filter."""
    state = full_cluster((1000,) * 8)
    names = lambda policy, on: [  # noqa: E731
        f.name for f in build_profile(policy, state, PolicyContext(admission=on)).filters
    ]
    assert names("gpupool", False) == ["fit"]
    server = build_scheduler("gpupool", full_cluster((1000,) * 8))
    assert [f.name for f in server.profile.filters] == ["fit"]
    assert names("gpupool", True) == ["admission", "fit"]
    assert names("gpupool-place-all", True) == ["fit"]
    assert names("bestfit", True) == ["fit"]


def test_holding_an_810_lets_the_last_fresh_gpu_go_to_a_whole_gpu_task():
    """Two 8-GPU nodes (16,000 milli), arrivals in this order: three 650s (each on its own
    GPU, 350 left beside it), ten whole GPUs, then 810 (S13), 1000, 810 (S15), 1000, 1000.

    - S13: 12,760 arrived, whole-GPU demand 10,000 / 12,760 of it, so 0.78 x 3,240 = 2.5
      GPUs of it to come, fewer than the 3 fresh GPUs: admitted.
    - S15: 14,570 arrived, 11,000 / 14,570 whole, 0.75 x 1,430 = 1.08 GPUs to come, at least
      the 1 fresh GPU left: held (no partly used GPU has 810 free), so it fails.
    - W16 then takes that GPU; W17 fails either way.

    Place-all gives the GPU to S15 and loses W16: 14,570 milli allocated against 14,760."""
    workload = TargetWorkload(
        (TaskShape(0, 1, 1000), TaskShape(0, 1, 810), TaskShape(0, 1, 650)), (0.7, 0.15, 0.15)
    )
    order = [gpu(1, 650, name=f"P{i}") for i in range(3)]
    order += [gpu(1, name=f"W{i}") for i in range(3, 13)]
    order += [gpu(1, 810, name="S13"), gpu(1, name="W14"), gpu(1, 810, name="S15")]
    order += [gpu(1, name="W16"), gpu(1, name="W17")]

    def run(admission: bool) -> tuple[int, list[str]]:
        state = cluster([node(f"n{i}", cpu=64, gpus=8) for i in range(2)])
        context = PolicyContext(workload=workload, admission=admission)
        scheduler = Scheduler(state, build_profile("gpupool-file", state, context))
        failed = [r.name for r in order if not scheduler.place(r, explain=False).placed]
        return state.total_gpu_milli - int(state.gpu_total_left.sum()), failed

    assert run(admission=False) == (14570, ["W16", "W17"])
    assert run(admission=True) == (14760, ["S15", "W17"])
