"""A seeded, openb-like cluster and pod list for when no trace files are given.

This is *not* the Alibaba trace (the repository never contains it): it is a generator whose
proportions follow the statistics written down in the trace folder's FORMAT.md, so that the
simulator, the CLI and the tests have a realistic workload without the files.

What it mimics:

* Cluster (``synthetic_cluster``): the openb GPU-node table, 1213 nodes / 6212 GPUs at scale 1:
  G2 8-GPU (96 vCPU, 384 GiB), T4 2-GPU (104 vCPU, 512 GiB) and some 4-GPU, P100 2-GPU and
  a few 1-GPU, G3 8-GPU (128 vCPU, 768 GiB), V100M16 8/4/1-GPU, V100M32 8/4-GPU and A10 1-GPU,
  in the table's counts. The CPU and memory of shapes the table does not give are typical
  values of the node files (e.g. most 2-GPU P100 nodes have 16 vCPU and 120 GiB).
* Pods (``synthetic_pods``): the default pod list — 13.3% CPU-only, 85.7% one-GPU (44% of
  those share a GPU, with ``gpu_milli`` from 20 values in 50..810, 810/470/320/650 most
  common), 0.2/0.2/0.5% two/four/eight-GPU; CPU requests on a few typical values (a few dozen
  shapes cover 95% of pods); memory 2-6 GiB per vCPU; total GPU demand a chosen fraction of
  the cluster (98% in the trace); Poisson arrivals over ~149 days for 8152 pods; log-normal
  lifetimes with median 540 s and p90 6574 s. Unlike the default file (which has none), about
  5% of GPU pods carry a GPU-model constraint, as in the ``gpuspec05`` variant.

Everything is drawn from ``numpy.random.default_rng(seed)``: the same seed gives the same
output, and no global random state is read or changed.
"""

from __future__ import annotations

import math
from typing import Final

import numpy as np
import numpy.typing as npt

from gpupool.core.cluster import GpuSpec, LinkLevel, NodeSpec
from gpupool.core.request import MILLI_PER_GPU, Request
from gpupool.sim.trace import TracePod, gpu_memory_mib

NODES_PER_RACK: Final = 16
RACKS_PER_SPINE: Final = 4
NVLINK_ISLAND: Final = 4
"""GPUs per NVLink island on 8-GPU nodes (two islands, joined across the CPU sockets)."""

_GIB: Final = 1024

# (model, GPUs per node, cpu_milli, memory_mib, nodes at scale 1); models grouped together.
_NODE_SHAPES: Final[tuple[tuple[str, int, int, int, int], ...]] = (
    ("G2", 8, 96_000, 384 * _GIB, 549),
    ("T4", 2, 104_000, 512 * _GIB, 387),
    ("T4", 4, 96_000, 384 * _GIB, 17),
    ("P100", 2, 16_000, 120 * _GIB, 109),
    ("P100", 2, 64_000, 256 * _GIB, 22),
    ("P100", 1, 8_000, 60 * _GIB, 3),
    ("G3", 8, 128_000, 768 * _GIB, 39),
    ("V100M16", 8, 64_000, 256 * _GIB, 8),
    ("V100M16", 4, 32_000, 128 * _GIB, 28),
    ("V100M16", 1, 8_000, 32 * _GIB, 19),
    ("V100M32", 8, 96_000, 768 * _GIB, 21),
    ("V100M32", 4, 48_000, 368 * _GIB, 9),
    ("A10", 1, 128_000, 1024 * _GIB, 2),
)

# Pod kinds: (GPUs, probability). Kind 1 is a GPU-sharing pod, kind 2 a whole single GPU.
_KIND_GPUS: Final = np.array([0, 1, 1, 2, 4, 8], dtype=np.int64)
_KIND_P: Final = np.array([0.1335, 0.3776, 0.4798, 0.0020, 0.0018, 0.0053])
_SHARE, _WHOLE = 1, 2

# GPU-sharing pods: (gpu_milli, weight, usual cpu_milli, other cpu_milli).
_SHARES: Final[tuple[tuple[int, float, int, int], ...]] = (
    (810, 35.0, 4_000, 6_000),
    (470, 24.4, 12_000, 8_000),
    (320, 10.7, 4_000, 8_000),
    (650, 8.2, 12_000, 8_000),
    (230, 4.5, 4_000, 8_000),
    (460, 4.2, 6_000, 4_000),
    (590, 2.4, 4_000, 6_000),
    (160, 2.4, 4_000, 6_000),
    (550, 2.3, 8_000, 4_000),
    (220, 2.0, 4_000, 8_000),
    (370, 1.5, 8_000, 4_000),
    (110, 0.8, 4_000, 6_000),
    (480, 0.6, 6_000, 8_000),
    (50, 0.25, 2_000, 4_000),
    (330, 0.25, 4_000, 8_000),
    (350, 0.2, 6_000, 4_000),
    (270, 0.15, 4_000, 8_000),
    (440, 0.1, 8_000, 4_000),
    (140, 0.05, 2_000, 4_000),
    (290, 0.05, 4_000, 8_000),
)
_SHARE_USUAL_P: Final = 0.7

# cpu_milli choices and weights per pod kind other than GPU-sharing.
_CPU_CHOICES: Final[dict[int, tuple[tuple[int, ...], tuple[float, ...]]]] = {
    0: ((12_000, 32_000, 16_000, 8_000, 4_000), (0.34, 0.27, 0.20, 0.17, 0.02)),
    2: (
        (12_000, 8_000, 4_000, 16_000, 6_000, 24_000, 32_000),
        (0.30, 0.22, 0.16, 0.14, 0.10, 0.05, 0.03),
    ),
    3: ((16_000, 32_000, 8_000), (0.5, 0.3, 0.2)),
    4: ((32_000, 64_000), (0.7, 0.3)),
    5: ((64_000, 88_000), (0.5, 0.5)),
}

# Memory per vCPU in GiB; pods above 16 vCPU use at most 4 GiB per vCPU so that they fit the
# common 8-GPU nodes.
_MEM_GIB_PER_CPU: Final = np.array([2, 4, 6], dtype=np.int64)
_MEM_P: Final = np.array([0.30, 0.55, 0.15])
_BIG_POD_CPU: Final = 16_000

# GPU-model constraints a GPU pod may carry, with weights.
_GPU_SPEC_P: Final = 0.05
_GPU_SPECS: Final[tuple[tuple[tuple[str, ...], float], ...]] = (
    (("T4",), 0.30),
    (("G2",), 0.20),
    (("P100",), 0.15),
    (("V100M16", "V100M32"), 0.15),
    (("P100", "V100M16", "V100M32"), 0.10),
    (("G3",), 0.05),
    (("G2", "T4"), 0.05),
)

_MEAN_INTERARRIVAL_S: Final = 1583.0
"""~149 days over 8152 pods."""
_LIFETIME_MEDIAN_S: Final = 540.0
_LIFETIME_P90_S: Final = 6574.0
_Z90: Final = 1.2815515655446004
"""Standard-normal 90th percentile."""

IntArray = npt.NDArray[np.int64]


def synthetic_cluster(seed: int = 0, scale: float = 1.0) -> list[NodeSpec]:
    """An openb-like GPU cluster of about ``round(1213 * scale)`` nodes.

    Node counts per shape are the openb counts times ``scale`` (largest-remainder rounding),
    with at least one node of every GPU model; they do not depend on ``seed``, which only
    shuffles the order of the model blocks over the racks. Nodes are named
    ``syn-node-0000``.., labelled ``rack`` (``r00``.., 16 consecutive nodes per rack) and
    ``spine`` (``s00``.., 4 racks per spine). 8-GPU nodes have two NVLink islands of 4 GPUs
    (``LinkLevel.NVLINK`` inside, ``LinkLevel.CROSS_SOCKET`` between); other nodes have
    ``links=None``. GPU memory comes from ``trace.GPU_MEMORY_MIB``. Raises ``ValueError`` for
    a scale that is not a positive finite number.
    """
    if not (math.isfinite(scale) and scale > 0):
        raise ValueError(f"scale must be a positive number, got {scale}")
    counts = _apportion([shape[4] * scale for shape in _NODE_SHAPES])
    for model in dict.fromkeys(shape[0] for shape in _NODE_SHAPES):
        rows = [i for i, shape in enumerate(_NODE_SHAPES) if shape[0] == model]
        if not any(counts[i] for i in rows):
            counts[max(rows, key=lambda i: _NODE_SHAPES[i][4])] = 1
    models = list(dict.fromkeys(shape[0] for shape in _NODE_SHAPES))
    order = np.random.default_rng(seed).permutation(len(models))
    nodes: list[NodeSpec] = []
    for m in order:
        for i, (model, gpus, cpu, mem, _) in enumerate(_NODE_SHAPES):
            if model != models[int(m)]:
                continue
            links = _nvlink_pairs(gpus) if gpus == 2 * NVLINK_ISLAND else None
            gpu_specs = (GpuSpec(model, gpu_memory_mib(model)),) * gpus
            for _ in range(counts[i]):
                index = len(nodes)
                rack = index // NODES_PER_RACK
                labels = {"rack": f"r{rack:02d}", "spine": f"s{rack // RACKS_PER_SPINE:02d}"}
                name = f"syn-node-{index:04d}"
                nodes.append(NodeSpec(name, cpu, mem, gpu_specs, labels=labels, links=links))
    return nodes


def synthetic_pods(
    seed: int = 0, cluster_gpus: int | None = None, demand_ratio: float = 0.98
) -> list[TracePod]:
    """Openb-like pods whose total GPU demand just reaches ``demand_ratio * cluster_gpus``.

    Pods are drawn one after another until Σ num_gpus·gpu_milli/1000 >= demand_ratio ×
    ``cluster_gpus`` (the last pod is the one that reaches it; nothing when the target is 0).
    ``cluster_gpus`` defaults to the GPU count of ``synthetic_cluster(seed)`` (6212). Pods are
    named ``syn-pod-00000``.., have strictly increasing ``creation_time`` starting at 0,
    ``scheduled_time == creation_time``, ``deletion_time`` after it, and phase ``"Running"``.
    Every pod fits some node of ``synthetic_cluster`` when that is empty. The same arguments
    give the same pods. Raises ``ValueError`` for a negative ``cluster_gpus`` or a negative or
    non-finite ``demand_ratio``.
    """
    if cluster_gpus is None:
        cluster_gpus = sum(len(node.gpus) for node in synthetic_cluster(seed))
    if cluster_gpus < 0:
        raise ValueError(f"cluster_gpus must not be negative, got {cluster_gpus}")
    if not (math.isfinite(demand_ratio) and demand_ratio >= 0):
        raise ValueError(f"demand_ratio must be a non-negative number, got {demand_ratio}")
    target = demand_ratio * cluster_gpus * MILLI_PER_GPU
    if target <= 0:
        return []
    rng = np.random.default_rng(seed)
    batch = int(target / _mean_demand_milli() * 1.05) + 64
    parts: list[dict[str, IntArray]] = []
    done = 0
    while True:
        part = _draw(rng, batch)
        parts.append(part)
        cumulative = done + np.cumsum(part["num"] * part["milli"])
        if cumulative[-1] >= target:
            stop = int(np.searchsorted(cumulative, target)) + 1
            parts[-1] = {k: v[:stop] for k, v in part.items()}
            break
        done = int(cumulative[-1])
    cols = {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}
    created = np.cumsum(cols["gap"])
    created -= created[0]
    return [
        TracePod(
            Request(
                f"syn-pod-{i:05d}",
                cpu_milli=int(cols["cpu"][i]),
                memory_mib=int(cols["mem"][i]),
                num_gpus=int(cols["num"][i]),
                gpu_milli=int(cols["milli"][i]),
                gpu_models=_GPU_SPECS[int(cols["spec"][i])][0] if cols["spec"][i] >= 0 else (),
            ),
            creation_time=int(created[i]),
            deletion_time=int(created[i] + cols["life"][i]),
            scheduled_time=int(created[i]),
            phase="Running",
        )
        for i in range(len(created))
    ]


def _draw(rng: np.random.Generator, n: int) -> dict[str, IntArray]:
    """``n`` pods as columns: num, milli, cpu, mem, spec (-1 = none), gap and life (s)."""
    kind = rng.choice(len(_KIND_P), size=n, p=_KIND_P / _KIND_P.sum())
    num = _KIND_GPUS[kind]
    share_w = np.array([s[1] for s in _SHARES])
    share = rng.choice(len(_SHARES), size=n, p=share_w / share_w.sum())
    usual = rng.random(n) < _SHARE_USUAL_P
    milli = np.where(num > 0, MILLI_PER_GPU, 0).astype(np.int64)
    milli[kind == _SHARE] = np.array([s[0] for s in _SHARES], dtype=np.int64)[share][kind == _SHARE]
    share_cpu = np.where(
        usual,
        np.array([s[2] for s in _SHARES], dtype=np.int64)[share],
        np.array([s[3] for s in _SHARES], dtype=np.int64)[share],
    )
    cpu = share_cpu.copy()
    for k, (values, weights) in _CPU_CHOICES.items():
        w = np.array(weights)
        drawn = rng.choice(np.array(values, dtype=np.int64), size=n, p=w / w.sum())
        cpu[kind == k] = drawn[kind == k]
    gib = rng.choice(_MEM_GIB_PER_CPU, size=n, p=_MEM_P / _MEM_P.sum())
    gib = np.where(cpu > _BIG_POD_CPU, np.minimum(gib, 4), gib)
    mem = cpu * gib * _GIB // 1000
    spec_w = np.array([s[1] for s in _GPU_SPECS])
    spec = rng.choice(len(_GPU_SPECS), size=n, p=spec_w / spec_w.sum()).astype(np.int64)
    constrained = (rng.random(n) < _GPU_SPEC_P) & (num > 0)
    fits = np.array([[_spec_fits(s[0], int(g)) for s in _GPU_SPECS] for g in _KIND_GPUS])
    constrained &= fits[kind, spec]
    spec = np.where(constrained, spec, -1)
    gap = np.maximum(1, np.rint(rng.exponential(_MEAN_INTERARRIVAL_S, size=n))).astype(np.int64)
    sigma = math.log(_LIFETIME_P90_S / _LIFETIME_MEDIAN_S) / _Z90
    life = rng.lognormal(math.log(_LIFETIME_MEDIAN_S), sigma, size=n)
    life_s = np.maximum(1, np.rint(life)).astype(np.int64)
    return {
        "num": num,
        "milli": milli,
        "cpu": cpu,
        "mem": mem,
        "spec": spec,
        "gap": gap,
        "life": life_s,
    }


def _spec_fits(models: tuple[str, ...], gpus: int) -> bool:
    """Whether some node shape of one of ``models`` has at least ``gpus`` GPUs."""
    return any(s[0] in models and s[1] >= gpus for s in _NODE_SHAPES)


def _mean_demand_milli() -> float:
    """Expected GPU demand of one pod, milli-GPU (sizes the first batch)."""
    p = _KIND_P / _KIND_P.sum()
    w = np.array([s[1] for s in _SHARES])
    share_mean = float(np.dot(w / w.sum(), [s[0] for s in _SHARES]))
    whole = float(np.dot(p, _KIND_GPUS)) - float(p[_SHARE])
    return whole * MILLI_PER_GPU + float(p[_SHARE]) * share_mean


def _apportion(quotas: list[float]) -> list[int]:
    """Integers summing to ``round(sum(quotas))``, each the floor or ceiling of its quota
    (largest remainders first; ties by position)."""
    floors = [math.floor(q) for q in quotas]
    left = round(sum(quotas)) - sum(floors)
    by_remainder = sorted(range(len(quotas)), key=lambda i: (floors[i] - quotas[i], i))
    for i in by_remainder[: max(0, left)]:
        floors[i] += 1
    return floors


def _nvlink_pairs(gpus: int) -> tuple[tuple[int, ...], ...]:
    """Link matrix of ``gpus`` GPUs in NVLink islands of ``NVLINK_ISLAND``."""
    return tuple(
        tuple(
            int(
                LinkLevel.NVLINK
                if i // NVLINK_ISLAND == j // NVLINK_ISLAND
                else LinkLevel.CROSS_SOCKET
            )
            for j in range(gpus)
        )
        for i in range(gpus)
    )
