"""Policies by name: which plugin runs at which extension point.

Every profile filters with ``fit``, steers gangs with ``topology`` (weight high enough to
dominate any packing score) and orders queues by ``priority``; they differ in the node score
and the GPU picker:

==========  ==============  ===========
policy      score           GPUs
==========  ==============  ===========
random      random          random-gpu
dotprod     dotprod         tightest
clustering  clustering      tightest
packing     packing         tightest
bestfit     bestfit         tightest
fgd         fgd             fgd
binpack     binpack         tightest
spread      spread          tightest
gpupool     gpupool         gpupool
==========  ==============  ===========

``gpupool`` (gpupool_policy.py) learns the workload online; ``gpupool-file`` is the same
policy handed the file's target workload, as FGD is (for studies only, not in POLICIES).
In a loss system (``PolicyContext.admission``: the simulator's replay protocol, where an
arrival that fits nowhere is lost) ``gpupool`` also filters with ``admission``
(admission.py): near saturation, poorly fitting shares may not open fresh GPUs.
``gpupool-place-all`` is ``gpupool`` without that filter (for studies: the ablation).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from gpupool.core.cluster import ClusterState
from gpupool.core.frag import FragmentationModel, TargetWorkload
from gpupool.core.framework import (
    FilterPlugin,
    GpuPickPlugin,
    Profile,
    ReservePlugin,
    ScorePlugin,
)
from gpupool.plugins.admission import FreshGpuAdmission
from gpupool.plugins.baseline_scores import (
    BestFitScore,
    BinpackScore,
    DotProductScore,
    GpuClusteringScore,
    GpuPackingScore,
    RandomScore,
    SpreadScore,
)
from gpupool.plugins.fgd import FgdScore
from gpupool.plugins.fit import FitFilter
from gpupool.plugins.gpu_pick import RandomGpu, TightestGpu
from gpupool.plugins.gpupool_policy import GpupoolScore
from gpupool.plugins.topology import PriorityQueueSort, TopologyScore

POLICIES: tuple[str, ...] = (
    "random",
    "dotprod",
    "clustering",
    "packing",
    "bestfit",
    "fgd",
    "binpack",
    "spread",
    "gpupool",
)
"""Every policy name offered to users (``build_profile`` also accepts STUDY_VARIANTS)."""

STUDY_VARIANTS: tuple[str, ...] = ("gpupool-file", "gpupool-place-all")
"""Policies for studies only: ``gpupool`` handed the file's target workload, and ``gpupool``
without the loss-system admission filter."""

FGD_STUDY_POLICIES: tuple[str, ...] = POLICIES[:6]
"""The six policies of the FGD paper's comparison, in its order."""

TOPOLOGY_WEIGHT = 1000


class UnknownPolicyError(ValueError):
    pass


@dataclass
class PolicyContext:
    """What policies may need: a seeded generator, and for FGD the target workload (or a
    shared fragmentation model, so the simulator's metrics reuse its memo)."""

    rng: np.random.Generator = field(default_factory=lambda: np.random.default_rng(0))
    workload: TargetWorkload | None = None
    frag: FragmentationModel | None = None
    topology_keys: tuple[str, ...] = ("rack", "spine")
    admission: bool = False
    """A loss system (arrivals that fit nowhere are lost): ``gpupool`` adds its admission
    filter. The live server queues instead, so it leaves this False."""


def build_profile(policy: str, state: ClusterState, context: PolicyContext) -> Profile:
    """A fresh profile (plugins keep per-cluster caches, so never share one across states)."""
    score: ScorePlugin
    picker: GpuPickPlugin = TightestGpu()
    reserve: tuple[ReservePlugin, ...] = ()
    filters: tuple[FilterPlugin, ...] = (FitFilter(),)
    if policy == "random":
        score, picker = RandomScore(context.rng), RandomGpu(context.rng)
    elif policy == "dotprod":
        score = DotProductScore()
    elif policy == "clustering":
        clustering = GpuClusteringScore(state)
        score, reserve = clustering, (clustering,)
    elif policy == "packing":
        score = GpuPackingScore()
    elif policy == "bestfit":
        score = BestFitScore()
    elif policy == "fgd":
        frag = context.frag
        if frag is None:
            if context.workload is None:
                raise UnknownPolicyError("policy 'fgd' needs a target workload")
            frag = FragmentationModel(state.models, context.workload)
        fgd = FgdScore(state, frag)
        score, picker = fgd, fgd
    elif policy in ("gpupool", "gpupool-file", "gpupool-place-all"):
        prior = None
        if policy == "gpupool-file":
            prior = context.workload or (context.frag.workload if context.frag else None)
            if prior is None:
                raise UnknownPolicyError("policy 'gpupool-file' needs a target workload")
        own = GpupoolScore(state, prior)
        score, picker = own, own
        if context.admission and policy != "gpupool-place-all":
            filters = (FreshGpuAdmission(state, lambda: own.model.prices), *filters)
    elif policy == "binpack":
        score = BinpackScore()
    elif policy == "spread":
        score = SpreadScore()
    else:
        raise UnknownPolicyError(f"unknown policy {policy!r}; choose one of: {', '.join(POLICIES)}")
    topology = TopologyScore(context.topology_keys)
    return Profile(
        name=policy,
        filters=filters,
        scores=((score, 1), (topology, TOPOLOGY_WEIGHT)),
        gpu_pick=picker,
        queue_sort=PriorityQueueSort(),
        prepare=(topology,),
        reserve=reserve,
    )
