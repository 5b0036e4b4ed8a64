"""The synthetic openb-like cluster and pods: determinism, proportions, validity."""

from __future__ import annotations

import dataclasses
import random
from collections import Counter

import numpy as np
import pytest

from gpupool.core.cluster import ClusterState, LinkLevel, NodeSpec
from gpupool.core.request import Request
from gpupool.sim.synthetic import synthetic_cluster, synthetic_pods
from gpupool.sim.trace import TracePod

OPENB_MODELS = {"G2": 549, "T4": 404, "P100": 134, "G3": 39, "V100M16": 55, "V100M32": 30, "A10": 2}


@pytest.fixture(scope="module")
def nodes() -> list[NodeSpec]:
    return synthetic_cluster(0)


@pytest.fixture(scope="module")
def pods() -> list[TracePod]:
    return synthetic_pods(0)


def model_counts(nodes: list[NodeSpec]) -> Counter[str]:
    return Counter(n.gpus[0].model for n in nodes if n.gpus)


# ------------------------------------------------------------------- cluster


def test_cluster_matches_openb_table(nodes: list[NodeSpec]):
    assert len(nodes) == 1213
    assert sum(len(n.gpus) for n in nodes) == 6212
    assert model_counts(nodes) == OPENB_MODELS
    assert ClusterState(nodes).num_nodes == 1213


def test_small_scale_keeps_every_model():
    small = synthetic_cluster(0, scale=0.1)
    assert 118 <= len(small) <= 126
    assert set(model_counts(small)) == set(OPENB_MODELS)
    tiny = synthetic_cluster(0, scale=0.001)
    assert set(model_counts(tiny)) == set(OPENB_MODELS)


@pytest.mark.parametrize("scale", [0.0, -1.0, float("nan"), float("inf")])
def test_bad_scale(scale: float):
    with pytest.raises(ValueError, match="scale"):
        synthetic_cluster(0, scale)


def test_cluster_names_and_labels(nodes: list[NodeSpec]):
    assert [n.name for n in nodes[:2]] == ["syn-node-0000", "syn-node-0001"]
    assert len({n.name for n in nodes}) == len(nodes)
    racks = Counter(n.labels["rack"] for n in nodes)
    assert max(racks.values()) == 16 and len(racks) == 76
    spines: dict[str, set[str]] = {}
    for n in nodes:
        spines.setdefault(n.labels["spine"], set()).add(n.labels["rack"])
    assert max(len(r) for r in spines.values()) == 4
    assert nodes[0].labels == {"rack": "r00", "spine": "s00"}


def test_cluster_links(nodes: list[NodeSpec]):
    for n in nodes:
        if len(n.gpus) != 8:
            assert n.links is None
            continue
        assert n.links is not None
        assert n.links[0][3] == LinkLevel.NVLINK and n.links[4][7] == LinkLevel.NVLINK
        assert n.links[0][4] == LinkLevel.CROSS_SOCKET and n.links[7][3] == LinkLevel.CROSS_SOCKET
    state = ClusterState(nodes)
    eight = next(i for i, n in enumerate(nodes) if len(n.gpus) == 8)
    assert state.links[eight] is not None


def test_cluster_seed_only_reorders():
    a, b = synthetic_cluster(1), synthetic_cluster(1)
    assert a == b
    assert model_counts(synthetic_cluster(2)) == model_counts(a)


# ---------------------------------------------------------------------- pods


def test_pods_deterministic(pods: list[TracePod]):
    assert synthetic_pods(0) == pods
    other = synthetic_pods(1)
    assert other != pods
    assert [p.request.shape for p in other[:50]] != [p.request.shape for p in pods[:50]]


def test_no_global_random_state_used():
    np.random.seed(123)
    random.seed(123)
    np_state, py_state = np.random.get_state(), random.getstate()
    synthetic_pods(5, cluster_gpus=50)
    synthetic_cluster(5, 0.1)
    after = np.random.get_state()
    assert all(np.array_equal(x, y) for x, y in zip(np_state, after, strict=True))
    assert random.getstate() == py_state


def test_pod_proportions(pods: list[TracePod]):
    reqs = [p.request for p in pods]
    by_gpus = Counter(r.num_gpus for r in reqs)
    assert 0.10 <= by_gpus[0] / len(reqs) <= 0.17
    assert 0.80 <= by_gpus[1] / len(reqs) <= 0.90
    assert 0.35 <= sum(r.is_sharing for r in reqs) / by_gpus[1] <= 0.52
    assert 0.004 <= (by_gpus[2] + by_gpus[4] + by_gpus[8]) / len(reqs) <= 0.015
    assert set(by_gpus) <= {0, 1, 2, 4, 8}
    shares = Counter(r.gpu_milli for r in reqs if r.is_sharing)
    assert min(shares) >= 50 and max(shares) <= 810
    assert {m for m, _ in shares.most_common(4)} == {810, 470, 320, 650}
    gpu_reqs = [r for r in reqs if r.is_gpu]
    assert 0.02 <= sum(bool(r.gpu_models) for r in gpu_reqs) / len(gpu_reqs) <= 0.09


def test_few_shapes_cover_most_pods(pods: list[TracePod]):
    shapes = Counter((p.request.cpu_milli, p.request.num_gpus, p.request.gpu_milli) for p in pods)
    counts = sorted(shapes.values(), reverse=True)
    covering = int(np.searchsorted(np.cumsum(counts), 0.95 * len(pods))) + 1
    assert 10 <= covering < 60


def test_memory_follows_cpu(pods: list[TracePod]):
    cpu = np.array([p.request.cpu_milli for p in pods], dtype=float)
    mem = np.array([p.request.memory_mib for p in pods], dtype=float)
    assert np.corrcoef(cpu, mem)[0, 1] > 0.5
    assert np.all(mem > 0)


def test_demand_reaches_ratio(pods: list[TracePod]):
    demand = sum(p.request.total_gpu_milli for p in pods) / 1000
    assert 0.98 * 6212 <= demand < 0.98 * 6212 + 8
    assert 7000 <= len(pods) <= 9500
    small = synthetic_pods(3, cluster_gpus=100, demand_ratio=0.5)
    assert 50 <= sum(p.request.total_gpu_milli for p in small) / 1000 < 58
    assert sum(p.request.total_gpu_milli for p in small[:-1]) < 50_000
    assert synthetic_pods(0, cluster_gpus=0) == []
    assert synthetic_pods(0, cluster_gpus=10, demand_ratio=0.0) == []


@pytest.mark.parametrize(("gpus", "ratio"), [(-1, 0.98), (10, -0.1), (10, float("nan"))])
def test_bad_pod_arguments(gpus: int, ratio: float):
    with pytest.raises(ValueError):
        synthetic_pods(0, cluster_gpus=gpus, demand_ratio=ratio)


def test_times_and_names(pods: list[TracePod]):
    created = np.array([p.creation_time for p in pods])
    assert created[0] == 0 and np.all(np.diff(created) > 0)
    assert 100 <= created[-1] / 86_400 <= 200  # about the trace's 149 days
    life = np.array([p.deletion_time for p in pods]) - created
    assert np.all(life >= 1)
    assert 400 <= np.median(life) <= 700
    assert 4500 <= np.percentile(life, 90) <= 9000
    assert all(p.scheduled_time == p.creation_time and p.phase == "Running" for p in pods)
    assert [p.request.name for p in pods[:2]] == ["syn-pod-00000", "syn-pod-00001"]
    assert len({p.request.name for p in pods}) == len(pods)


def test_every_pod_is_valid_and_fits_an_empty_node(pods: list[TracePod], nodes: list[NodeSpec]):
    node_shapes = {(n.cpu_milli, n.memory_mib, len(n.gpus), n.gpus[0].model) for n in nodes}

    def fits(r: Request) -> bool:
        return any(
            r.cpu_milli <= cpu
            and r.memory_mib <= mem
            and r.num_gpus <= gpus
            and (not r.gpu_models or model in r.gpu_models)
            for cpu, mem, gpus, model in node_shapes
        )

    for req in {p.request.shape: p.request for p in pods}.values():
        # Request() validated the fields when the pod was made; rebuilding must agree.
        assert dataclasses.replace(req) == req
        assert (req.num_gpus == 0) == (req.gpu_milli == 0)
        assert fits(req), req
