"""The ``gpupool`` policy on cases small enough to work out by hand.

Three layers: the gap prices (the packing LP's dual, checked against hand solutions), the
online workload learner (no look-ahead, each task counted once), and placements on tiny
clusters where the right node and GPU follow from docs/design/placement-policy.md. Most
placement cases hand the policy a target workload (``gpupool-file``) so that the prices are
known exactly; the online ``gpupool`` learns the same from the tasks it is asked to place.
"""

from __future__ import annotations

import numpy as np
import pytest

from builders import gpu, node, scheduler, workload
from gpupool.core.frag import TargetWorkload, TaskShape
from gpupool.core.framework import CycleState
from gpupool.core.request import Request
from gpupool.plugins.gap_prices import GapPrices, gap_prices
from gpupool.plugins.gpupool_policy import MAX_SCORE_STEPS, GpupoolScore
from gpupool.plugins.profiles import POLICIES, PolicyContext, UnknownPolicyError, build_profile
from gpupool.plugins.workload_model import WorkloadLearner


def placed(s, request: Request) -> tuple[str, tuple[int, ...]]:
    decision = s.place(request)
    assert decision.placed, decision.reason
    (allocation,) = decision.allocations
    return s.state.names[allocation.node], allocation.gpus


def steps(prices: GapPrices) -> list[tuple[int, float]]:
    """Where the price of a free share steps up: [(share, value), ...]."""
    v = prices.value
    return [(h, round(float(v[h]), 4)) for h in range(1, 1001) if v[h] != v[h - 1]]


def share(milli: int, cpu: int = 0) -> TaskShape:
    return TaskShape(cpu, 1, milli)


# ---------------------------------------------------------------- gap prices (the LP)


def test_no_sizes_seen_means_every_partial_gap_is_waste():
    """Before any share has been seen the policy is plain best fit: waste(h) = h."""
    for prices in (GapPrices.unknown(), gap_prices({})):
        assert prices.waste[0] == 0 and prices.waste[1000] == 0
        assert prices.waste[370] == 370
        assert prices.value[1000] == 1.0


def test_halves_pack_two_to_a_gpu():
    """Only 0.5-GPU tasks: two per GPU, so 4 of them need 2 GPUs; a GPU with 500..999 free
    is worth half a fresh GPU, less than 500 is worth nothing."""
    p = gap_prices({500: 4})
    assert p.optimal and p.fresh_gpus == pytest.approx(2.0)
    assert steps(p) == [(500, 0.5), (1000, 1.0)]
    assert p.waste[500] == 0 and p.waste[499] == 499 and p.waste[600] == pytest.approx(100)


def test_thirds_make_a_gap_worth_more_than_its_size():
    """0.3-GPU tasks: three per GPU (10 % waste each GPU). A 300 gap holds one task, which
    costs a third of a GPU: worth 333 milli, so its waste is negative."""
    p = gap_prices({300: 3})
    assert steps(p) == [(300, 0.3333), (600, 0.6667), (900, 1.0)]
    assert p.waste[300] == pytest.approx(300 - 1000 / 3)


def test_gap_beside_810_is_dead_when_small_tasks_are_scarce():
    """10 tasks of 810 and only 5 of 160: every 810 takes its own GPU and the 190 left
    beside it can never be worth anything (the 160s fit there for free)."""
    p = gap_prices({810: 10, 160: 5})
    assert p.fresh_gpus == pytest.approx(10.0)
    assert steps(p) == [(810, 1.0)]
    assert p.waste[190] == 190


def test_gap_beside_810_has_value_when_small_tasks_are_plentiful():
    """With 10 of 160 for 5 of 810, the spare 160s pack six to a GPU, so each costs 1/6
    and a 190 gap (one 160) is worth 1/6 of a GPU."""
    p = gap_prices({810: 5, 160: 10})
    assert p.fresh_gpus == pytest.approx(5 + 5 / 6)
    assert p.value[190] == pytest.approx(1 / 6)


def test_sizes_are_rounded_up_when_levels_explode():
    """Many coprime sizes would make hundreds of levels: the LP then works on a coarser
    grid, rounding sizes up (never down) and still returns monotone prices."""
    counts = {s: 1.0 for s in (101, 137, 173, 211, 257, 293, 331, 373, 419, 457)}
    p = gap_prices(counts)
    assert p.optimal
    assert np.all(np.diff(p.value) >= -1e-12)
    assert p.value[1000] == 1.0 and p.value[0] == 0.0


# ---------------------------------------------------------------- the online learner


def test_learner_counts_each_task_once_and_rebuilds_on_a_doubling_schedule():
    learner = WorkloadLearner(("A100",))
    due = [learner.observe(gpu(1, 500, name=f"t{i}")) for i in range(9)]
    assert due == [True, True, False, True, False, False, False, True, False]
    assert not learner.observe(gpu(1, 500, name="t0"))  # seen before: ignored
    assert learner.observed == 9


def test_learner_knows_only_what_it_has_seen():
    """The model after observing tasks reflects exactly those tasks: no look-ahead."""
    learner = WorkloadLearner(("A100", "T4"))
    assert steps(learner.rebuild().prices) == steps(GapPrices.unknown())
    learner.observe(gpu(1, 500, cpu=4, name="a"))
    learner.observe(gpu(1, 500, cpu=4, name="b"))
    learner.observe(gpu(1, 1000, cpu=8, models=("T4",), name="c"))
    model = learner.rebuild()
    assert steps(model.prices) == [(500, 0.5), (1000, 1.0)]
    assert model.cpu_per_milli == pytest.approx(16000 / 2000)  # 16 cores for 2 GPUs
    assert model.pinned == ((frozenset({"T4"}), 0.5),)


def test_prior_workload_is_used_instead_of_counts():
    prior = workload((share(500), 0.5), (TaskShape(0, 1, 1000), 0.5))
    learner = WorkloadLearner(("A100",), prior)
    learner.observe(gpu(1, 300, name="x"))
    assert steps(learner.rebuild().prices) == [(500, 0.5), (1000, 1.0)]


# ---------------------------------------------------------------- placements


# 650, 320 and 230 shares: the LP pairs each 650 with a 320 and packs 230s four to a GPU
# (Y(350) = 1/3, Y(770) = 3/4, Y(680) = 2/3, Y(120) = Y(30) = 0).
PAIRS = workload((share(650), 1 / 7), (share(320), 2 / 7), (share(230), 4 / 7))


def test_share_leaves_the_gap_to_the_task_that_fits_it():
    """GPU 0 has 350 free (a 650 runs there). A 230 would leave a dead 120 there (cost
    Y(350) - Y(120) = 1/3); on the fresh GPU it costs 1 - Y(770) = 1/4: gpupool opens the
    fresh GPU, where best fit (and every packing baseline) takes the tighter GPU 0."""
    nodes = [node("n0", gpus=2, free=[350, 1000])]
    s = scheduler("gpupool-file", nodes, workload=PAIRS)
    assert placed(s, gpu(1, 230)) == ("n0", (1,))
    assert placed(scheduler("bestfit", nodes), gpu(1, 230)) == ("n0", (0,))


def test_equal_cost_goes_to_the_tightest_gpu():
    """A 320 costs 1/3 either way (Y(350) - Y(30) = 1 - Y(680)): ties take the tightest."""
    s = scheduler("gpupool-file", [node("n0", gpus=2, free=[1000, 350])], workload=PAIRS)
    assert placed(s, gpu(1, 320)) == ("n0", (1,))


def test_share_picks_the_node_whose_gap_it_fills():
    """Same choice across nodes: n0 (first in the tie order) only has a 350 gap, n1 a fresh
    GPU; the 230 goes to n1, the next 320 to n0."""
    nodes = [node("n0", gpus=1, free=[350]), node("n1", gpus=1)]
    s = scheduler("gpupool-file", nodes, workload=PAIRS)
    assert placed(s, gpu(1, 230, name="a")) == ("n1", (0,))
    assert placed(s, gpu(1, 320, name="b")) == ("n0", (0,))


# One GPU per 8 cores on average (the learned CPU per GPU).
EIGHT_CORES = workload((TaskShape(8000, 1, 1000), 1.0))


def test_cpu_heavy_task_avoids_the_node_it_would_strand():
    """n0: 4 GPUs, 34 cores (enough for its GPUs at 8 cores each); n1: 4 GPUs, 64 cores.
    One GPU + 16 cores on n0 leaves 3 GPUs with 18 cores: 750 milli-GPU the CPU can no
    longer serve. On n1 nothing is stranded, so it goes there although n0 comes first."""
    nodes = [node("n0", cpu=34, gpus=4), node("n1", cpu=64, gpus=4)]
    s = scheduler("gpupool-file", nodes, workload=EIGHT_CORES)
    plugin = s.profile.scores[0][0]
    assert isinstance(plugin, GpupoolScore)
    waste = plugin.expected_waste(s.state, gpu(1, cpu=16), np.arange(2))
    assert waste.tolist() == pytest.approx([750.0, 0.0])
    assert placed(s, gpu(1, cpu=16, name="heavy")) == ("n1", (0,))


def test_cpu_light_task_keeps_first_fit_order():
    nodes = [node("n0", cpu=34, gpus=4), node("n1", cpu=64, gpus=4)]
    s = scheduler("gpupool-file", nodes, workload=EIGHT_CORES)
    assert placed(s, gpu(1, cpu=8)) == ("n0", (0,))


def test_cpu_only_task_uses_spare_cpu_not_cpu_the_gpus_need():
    """A CPU-only task of 8 cores: on n0 (4 GPUs, 34 cores) it would strand a GPU; n1 has
    cores to spare."""
    nodes = [node("n0", cpu=34, gpus=4), node("n1", cpu=64, gpus=4)]
    s = scheduler("gpupool-file", nodes, workload=EIGHT_CORES)
    assert placed(s, gpu(0, cpu=8)) == ("n1", ())


# Half the GPU demand may only run on T4s; the other half anywhere.
PINNED = workload((TaskShape(0, 1, 1000, ("T4",)), 0.5), (TaskShape(0, 1, 1000), 0.5))


def test_unpinned_task_leaves_a_scarce_model_to_the_tasks_pinned_to_it():
    """2 T4 GPUs face half of all future demand (of 10 free GPUs): a task that can run
    anywhere goes to the A100 node, although the T4 node comes first in the tie order."""
    nodes = [node("t4", gpus=2, model="T4"), node("a100", gpus=8)]
    s = scheduler("gpupool-file", nodes, workload=PINNED)
    assert placed(s, gpu(1, name="any")) == ("a100", (0,))
    assert placed(s, gpu(1, models=("T4",), name="pinned")) == ("t4", (0,))


def test_without_pinned_demand_models_do_not_matter():
    nodes = [node("t4", cpu=16, gpus=2, model="T4"), node("a100", cpu=64, gpus=8)]
    s = scheduler("gpupool-file", nodes, workload=EIGHT_CORES)
    assert placed(s, gpu(1)) == ("t4", (0,))


def test_first_fit_keeps_later_nodes_whole_for_multi_gpu_tasks():
    """Equal costs go to the first node of the tie order, so 1-GPU tasks fill one node
    before touching the next, and an 8-GPU task still finds a whole node."""
    nodes = [node("n0", gpus=8), node("n1", gpus=8)]
    s = scheduler("gpupool", nodes, tie_order=[1, 0])
    for i in range(6):
        assert placed(s, gpu(1, name=f"one{i}")) == ("n1", (i,))
    assert placed(s, gpu(8, name="eight")) == ("n0", tuple(range(8)))


def test_gap_without_the_cpu_to_fill_it_is_dead():
    """Shares of 500 need 8 cores (16 cores per GPU). Both nodes have one GPU with 500 free;
    n0 has only 4 cores left, so no typical share can fill its gap: priced waste 500, and
    the 500 milli stranded for lack of CPU count 500 - 4000/16 = 250. A CPU-light share
    that fits there removes both (-750); on n1 it changes nothing. It goes to n0 although
    n1 comes first in the tie order."""
    m = workload((TaskShape(8000, 1, 500), 1.0))
    nodes = [
        node("n0", cpu=12, gpus=1, free=[500], cpu_free=4),
        node("n1", cpu=12, gpus=1, free=[500], cpu_free=12),
    ]
    s = scheduler("gpupool-file", nodes, workload=m, tie_order=[1, 0])
    plugin = s.profile.scores[0][0]
    assert isinstance(plugin, GpupoolScore)
    light = gpu(1, 500, cpu=4, name="light")
    assert plugin.expected_waste(s.state, light, np.arange(2)).tolist() == [-750.0, 0.0]
    assert placed(s, light) == ("n0", (0,))


# ---------------------------------------------------------------- the plugin contract


def test_online_policy_learns_from_what_it_places():
    """Online gpupool knows nothing at first; after placing tasks it prices their sizes."""
    s = scheduler("gpupool", [node("n0", gpus=4), node("n1", gpus=4)])
    plugin = s.profile.scores[0][0]
    assert isinstance(plugin, GpupoolScore)
    for i in range(4):
        placed(s, gpu(1, 500, name=f"h{i}"))
    assert steps(plugin.model.prices) == [(500, 0.5), (1000, 1.0)]
    # The halves were paired on the same GPUs, first node first.
    assert s.state.gpu_left[0].tolist() == [0, 0, 1000, 1000]


def test_scores_are_bounded_integers_and_deterministic():
    nodes = [node(f"n{i}", gpus=4, free=[1000, 700 - 100 * i, 1000, 300]) for i in range(5)]

    def run() -> list[tuple[str, tuple[int, ...]]]:
        s = scheduler("gpupool", nodes, tie_order=[3, 1, 4, 0, 2])
        out = []
        for i, milli in enumerate([300, 250, 600, 1000, 150, 450, 300]):
            out.append(placed(s, gpu(1, milli, cpu=2, name=f"t{i}")))
        got = s.profile.scores[0][0].score(s.state, gpu(1, 100), CycleState(), np.arange(5))
        assert got.dtype == np.int64
        assert got.max() == 0 and got.min() >= -MAX_SCORE_STEPS
        return out

    assert run() == run()


def test_profile_names():
    assert "gpupool" in POLICIES
    assert "gpupool-file" not in POLICIES  # a study variant, not offered to users
    state = scheduler("gpupool", [node("n0", gpus=1)]).state
    with pytest.raises(UnknownPolicyError, match="needs a target workload"):
        build_profile("gpupool-file", state, PolicyContext())
    prior = TargetWorkload((share(500),), (1.0,))
    assert build_profile("gpupool-file", state, PolicyContext(workload=prior)).name == (
        "gpupool-file"
    )
