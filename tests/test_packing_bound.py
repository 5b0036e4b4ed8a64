"""The packing bound of bench/packing_bound.py on cases small enough to solve by hand."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))

from builders import gpu
from packing_bound import patterns, unallocated_bound


def test_patterns_are_every_multiset_that_fits_one_gpu():
    assert sorted(patterns([300, 810])) == [(0, 1), (1, 0), (2, 0), (3, 0)]


def test_halves_and_whole_gpus_fill_the_cluster_exactly():
    """Demand of 2 whole GPUs and four halves on 4 GPUs: everything fits, bound 0."""
    requests = [gpu(1, name="w0"), gpu(1, name="w1")]
    requests += [gpu(1, 500, name=f"h{i}") for i in range(4)]
    assert unallocated_bound(requests, 4) == pytest.approx(0.0)


def test_810s_beside_whole_gpus_leave_their_gap_or_their_own_demand():
    """5 whole GPUs and 5 x 810 make 9,050 milli; scaled to the 10 GPUs' capacity that is
    5.525 of each. The LP places every whole GPU (1000 per GPU beats 810) and fills the
    other 4.475 GPUs with 810s: 5.525 + 4.475 x 0.81 = 9.15 GPUs placed, 8.5 % unallocated."""
    requests = [gpu(1, name=f"w{i}") for i in range(5)] + [
        gpu(1, 810, name=f"s{i}") for i in range(5)
    ]
    scale = 10 / 9.05
    placed = 5 * scale + (10 - 5 * scale) * 0.81
    assert unallocated_bound(requests, 10) == pytest.approx(100 * (10 - placed) / 10)
