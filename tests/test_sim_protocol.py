"""The FGD replay protocol on a tiny trace worked out by hand, tuning, and bucketing."""

from __future__ import annotations

import numpy as np
import pytest

from gpupool.core.cluster import GpuSpec, NodeSpec
from gpupool.core.frag import TargetWorkload
from gpupool.core.request import Request
from gpupool.sim.metrics import bucket_means, curve_metrics
from gpupool.sim.protocol import arrival_order, replay

T4 = GpuSpec("T4", 16384)
NODES = [
    NodeSpec("n0", 8000, 32768, (T4, T4)),
    NodeSpec("n1", 16000, 65536, (T4,)),
    NodeSpec("n2", 4000, 8192, ()),
]
REQUESTS = [
    Request("a", 2000, 1024, 1, 500),
    Request("b", 2000, 1024, 1, 1000),
    Request("c", 4000, 1024, 2, 1000),
    Request("d", 1000, 1024, 0, 0),
    Request("e", 2000, 1024, 1, 300),
    Request("f", 8000, 1024, 1, 1000),
]
WORKLOAD = TargetWorkload.from_requests(REQUESTS)


def test_seed_7_arrival_and_tie_order_are_fixed() -> None:
    # With seed 7 the tie order is n0, n2, n1 and the arrivals come as a, b, f, d, c, e.
    rng = np.random.default_rng(7)
    assert rng.permutation(3).tolist() == [0, 2, 1]
    order = arrival_order(REQUESTS, 3000, tune=0, rng=rng)
    assert [r.name for r in order] == ["a", "b", "f", "d", "c", "e"]


def test_bestfit_replay_matches_hand_computation() -> None:
    # a: n0 scores 88, n1 91 -> n1.  b: only n0 has a whole GPU.  f: n0 lacks CPU, n1 has no
    # whole GPU -> fails.  d: n2 scores 98.  c: no node has two free GPUs -> fails.
    # e: n0 and n1 both score 94 -> tie goes to n0 (first in the tie order), GPU 1.
    curve = replay(NODES, REQUESTS, "bestfit", 7, WORKLOAD, tune=0)
    assert curve.placements == (
        ("a", "n1", (0,)),
        ("b", "n0", (0,)),
        ("f", None, ()),
        ("d", "n2", ()),
        ("c", None, ()),
        ("e", "n0", (1,)),
    )
    assert curve.failed == 2
    assert curve.arrived.tolist() == [500, 1500, 2500, 2500, 4500, 4800]
    assert curve.used.tolist() == [500, 1500, 1500, 1500, 1500, 1800]
    # End state: n0 has 4 CPU and shares [0, 700] -> 4 of 6 shapes see 700 as fragment;
    # n1 has [500] -> 4 of 6 shapes see 500.  (700 + 500) * 4 / 6 = 800.
    assert curve.frag[-1] == pytest.approx(800.0)


def test_fgd_replay_matches_hand_computation() -> None:
    # d: every node's fragmentation is unchanged (score 50) -> tie -> n0.
    # e: on n0 fragmentation falls by 33 (score 50), on n1 by 133 (score 53) -> n1.
    curve = replay(NODES, REQUESTS, "fgd", 7, WORKLOAD, tune=0)
    assert [p[1] for p in curve.placements] == ["n1", "n0", None, "n0", None, "n1"]
    assert curve.frag[-1] == pytest.approx(700.0)


def test_tuning_up_stops_on_the_next_draws_per_gpu_share() -> None:
    requests = [Request("x", 1000, 0, 2, 1000), Request("y", 1000, 0, 1, 500)]
    rng = np.random.default_rng(0)
    tuned = arrival_order(requests, capacity_milli=4000, tune=1.3, rng=rng)
    demand = 2500
    for clone in tuned[2:]:
        # each clone was accepted because its *per-GPU* share still fitted under 1.3 x 4000
        assert demand + clone.gpu_milli <= 5200
        demand += clone.total_gpu_milli
    # ...so a 2-GPU clone may carry the total past the target: the artifact's quirk
    assert demand == 5500
    assert all(r.name.split("-tuned-")[0] in {"x", "y"} for r in tuned)
    assert len({r.name for r in tuned}) == len(tuned)


def test_tuning_down_removes_tasks_until_demand_fits() -> None:
    requests = [Request(f"t{i}", 1000, 0, 1, 1000) for i in range(10)]
    tuned = arrival_order(requests, capacity_milli=4000, tune=1.0, rng=np.random.default_rng(1))
    assert sum(r.total_gpu_milli for r in tuned) == 4000


def test_bucket_means_average_samples_and_fill_empty_buckets_from_neighbours() -> None:
    x = np.array([0.2, 0.4, 1.6, 4.0])
    y = np.array([10.0, 20.0, 30.0, 50.0])
    means = bucket_means(x, y, max_bucket=6)
    assert means[0] == 15.0  # two samples
    assert means[1] == 15.0  # empty: takes bucket 0
    assert means[2] == 30.0
    assert means[3] == 30.0  # empty: takes bucket 2 first
    assert means[4] == 50.0
    assert means[5] == 50.0
    assert np.isnan(means[6])


def test_curve_metrics_units() -> None:
    curve = replay(NODES, REQUESTS, "bestfit", 7, WORKLOAD, tune=0)
    metrics = curve_metrics(curve)
    # capacity 3000 milli: arrivals 3 and 4 both land in bucket 83 (2500 / 3000), with 1500
    # allocated and 833.3 fragmented; later arrivals pass 130 % and are not bucketed.
    unallocated = metrics["unallocated_gpu_pct"]
    assert np.flatnonzero(~np.isnan(unallocated))[-1] == 84  # 84 borrows from 83
    assert unallocated[83] == pytest.approx(50.0)
    assert metrics["frag_pct"][83] == pytest.approx(100 * (2500 / 3) / 3000)
    assert metrics["frag_ratio_pct"][83] == pytest.approx(100 * (2500 / 3) / 1500)
    assert unallocated[17] == pytest.approx(100 - 100 * 500 / 3000)
