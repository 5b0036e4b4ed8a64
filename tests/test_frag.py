"""core/frag.py: node fragmentation by hand (FGD_METHOD.md §4) and the target workload (§3)."""

from __future__ import annotations

import random

import pytest

from builders import cluster, gpu, node, workload
from gpupool.core.frag import FragmentationModel, TargetWorkload, TaskShape
from gpupool.core.request import Request

MODELS = ("A100", "V100")  # model ids 0 and 1
CPU_ONLY = TaskShape(1000, 0, 0)
HALF = TaskShape(0, 1, 500)
HALF_8CPU = TaskShape(8000, 1, 500)
HALF_V100 = TaskShape(0, 1, 500, ("V100",))
TWO_WHOLE = TaskShape(0, 2, 1000)


@pytest.mark.parametrize(
    ("shape", "key", "expected"),
    [
        # a CPU-only shape can use none of the idle GPUs: all of R is fragment
        (CPU_ONLY, (0, 8000, (500, 1000)), 1500),
        (CPU_ONLY, (0, 0, (0, 0)), 0),
        # the shape fits: only the GPUs with less than 500 left count
        (HALF, (0, 8000, (200, 300, 1000)), 500),
        (HALF, (0, 8000, (500,)), 0),  # exactly 500 left is usable
        (HALF, (0, 8000, (499, 1000)), 499),
        # it does not fit at all: everything counts
        (HALF, (0, 8000, (200, 300)), 500),
        # not enough CPU: everything counts; enough: only the small GPU
        (HALF_8CPU, (0, 7999, (200, 1000)), 1200),
        (HALF_8CPU, (0, 8000, (200, 1000)), 200),
        # model constraint: an A100 node is excluded, a V100 node is not
        (HALF_V100, (0, 8000, (200, 1000)), 1200),
        (HALF_V100, (1, 8000, (200, 1000)), 200),
        # two whole GPUs: needs two fully free ones
        (TWO_WHOLE, (0, 0, (600, 1000, 1000)), 600),
        (TWO_WHOLE, (0, 0, (600, 600, 1000)), 2200),
        (TWO_WHOLE, (1, 0, (0, 999, 1000, 1000)), 999),
        # a node without GPUs has nothing to fragment
        (HALF, (-1, 8000, ()), 0),
        (CPU_ONLY, (-1, 8000, ()), 0),
    ],
)
def test_node_frag_single_shape(shape, key, expected):
    model = FragmentationModel(MODELS, workload((shape, 1.0)))
    assert model.node_frag(key) == pytest.approx(expected)


def test_node_frag_is_the_expectation_over_shapes():
    m = workload((CPU_ONLY, 0.25), (HALF, 0.5), (TWO_WHOLE, 0.25))
    model = FragmentationModel(MODELS, m)
    # [200, 1000]: CPU-only 1200, HALF 200, TWO_WHOLE (only one free) 1200
    assert model.node_frag((0, 4000, (200, 1000))) == pytest.approx(
        0.25 * 1200 + 0.5 * 200 + 0.25 * 1200
    )
    # [0, 1000, 1000]: 2000, 0, 0
    assert model.node_frag((0, 4000, (0, 1000, 1000))) == pytest.approx(500)
    # memoised: same answer again
    assert model.node_frag((0, 4000, (0, 1000, 1000))) == pytest.approx(500)


def test_node_frag_from_state_keys():
    state = cluster(
        [
            node("a", cpu=8, gpus=3, free=[1000, 300, 700]),
            node("v", cpu=8, gpus=2, model="V100", free=[400, 1000]),
            node("c", cpu=8, gpus=0),
        ]
    )
    assert state.models == MODELS
    model = FragmentationModel(state.models, workload((HALF_V100, 0.5), (HALF, 0.5)))
    # a: V100-only shape excluded (2000), HALF fits (300) → 1150
    # v: both fit, 400 too small → 400
    assert [model.node_frag(state.node_key(n)) for n in range(3)] == pytest.approx(
        [1150, 400, 0]
    )


def test_frag_ignores_memory_and_gpu_memory():
    a = cluster([node("a", gpus=2, free=[300, 1000])])
    b = cluster([node("a", gpus=2, free=[300, 1000], mem_free_gib=1)])
    assert a.node_key(0) == b.node_key(0)


# ---------------------------------------------------------------- TargetWorkload


def _requests(counts: dict[tuple[int, int, int], int]) -> list[Request]:
    out = []
    for (cpu, num, milli), count in counts.items():
        out += [
            Request(f"r{len(out) + i}", cpu_milli=cpu, num_gpus=num, gpu_milli=milli)
            for i in range(count)
        ]
    return out


def test_from_requests_coverage_and_renormalisation():
    reqs = _requests({(1000, 1, 500): 10, (2000, 1, 1000): 6, (0, 0, 0): 3, (4000, 2, 1000): 1})
    w = TargetWorkload.from_requests(reqs)
    # 10, 16, 19 of 20: 19/20 = 95% reached after three shapes
    assert w.shapes == (
        TaskShape(1000, 1, 500),
        TaskShape(2000, 1, 1000),
        TaskShape(0, 0, 0),
    )
    assert w.weights == pytest.approx((10 / 19, 6 / 19, 3 / 19))
    assert sum(w.weights) == pytest.approx(1.0)
    # 80% coverage: 10 + 6 = 16 of 20
    w80 = TargetWorkload.from_requests(reqs, coverage=0.8)
    assert w80.shapes == (TaskShape(1000, 1, 500), TaskShape(2000, 1, 1000))
    assert w80.weights == pytest.approx((10 / 16, 6 / 16))
    # full coverage keeps every shape
    assert len(TargetWorkload.from_requests(reqs, coverage=1.0).shapes) == 4


def test_from_requests_ties_by_shape_descending_and_order_free():
    reqs = _requests(
        {(1000, 1, 500): 2, (1000, 1, 1000): 2, (2000, 0, 0): 2, (1000, 2, 1000): 2}
    )
    # equal counts: by (cpu, gpu_milli, num_gpus, models), descending
    expected = (
        TaskShape(2000, 0, 0),
        TaskShape(1000, 2, 1000),
        TaskShape(1000, 1, 1000),
        TaskShape(1000, 1, 500),
    )
    w = TargetWorkload.from_requests(reqs, coverage=1.0)
    assert w.shapes == expected
    shuffled = list(reqs)
    random.Random(5).shuffle(shuffled)
    assert TargetWorkload.from_requests(shuffled, coverage=1.0) == w


def test_from_requests_shape_ignores_memory_and_keeps_models():
    reqs = [
        Request("a", cpu_milli=1000, memory_mib=100, num_gpus=1, gpu_milli=500),
        Request("b", cpu_milli=1000, memory_mib=900, num_gpus=1, gpu_milli=500),
        Request("c", cpu_milli=1000, num_gpus=1, gpu_milli=500, gpu_models=("T4",)),
    ]
    w = TargetWorkload.from_requests(reqs, coverage=1.0)
    assert w.shapes == (TaskShape(1000, 1, 500), TaskShape(1000, 1, 500, ("T4",)))
    assert w.weights == pytest.approx((2 / 3, 1 / 3))
    assert TaskShape.of(gpu(2, cpu=3, models=("A100",))) == TaskShape(3000, 2, 1000, ("A100",))


def test_target_workload_rejects_bad_input():
    with pytest.raises(ValueError, match="no requests"):
        TargetWorkload.from_requests([])
    with pytest.raises(ValueError, match="one weight per shape"):
        TargetWorkload((HALF,), (0.5, 0.5))
    with pytest.raises(ValueError):
        TargetWorkload((), ())


def test_memo_is_bounded_and_values_stay_correct(monkeypatch):
    import gpupool.core.frag as frag_module

    monkeypatch.setattr(frag_module, "MEMO_LIMIT", 3)
    model = FragmentationModel(("A100",), TargetWorkload((TaskShape(0, 1, 500),), (1.0,)))
    keys = [(0, 1000, (v,)) for v in (100, 200, 300, 400, 600)]
    values = [model.node_frag(k) for k in keys]
    assert values == [100.0, 200.0, 300.0, 400.0, 0.0]
    assert len(model._memo) <= 3
    assert model.node_frag(keys[0]) == 100.0
