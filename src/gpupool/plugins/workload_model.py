"""What the ``gpupool`` policy knows about the workload, learned online from arrivals.

The policy never sees the future: a ``WorkloadLearner`` counts the requests it has been
asked to place so far and, on a doubling schedule (after 1, 2, 4, ... observations, then
every ``REBUILD_EVERY``), turns the counts into a ``WorkloadModel``:

- the prices of free GPU shares (``gap_prices``) from the sizes of the GPU-sharing tasks,
  and the median CPU of the tasks of each size (a gap only its CPU can fill);
- CPU and memory per milli-GPU of GPU tasks, to see GPUs that would be stranded;
- the share of GPU demand pinned to each set of GPU models, to see scarce models.

Given a ``TargetWorkload`` (the "file's distribution" FGD is handed), the shape statistics
come from it instead; memory, which it lacks, is still learned online.
"""

from __future__ import annotations

from collections.abc import Hashable
from dataclasses import dataclass, field, replace
from typing import TypeVar

from gpupool.core.frag import TargetWorkload
from gpupool.core.request import Request
from gpupool.plugins.gap_prices import GapPrices, gap_prices

REBUILD_EVERY = 4096
"""After the doubling phase, the model is rebuilt every this many observations."""
DECAY_AT = 50_000.0
"""When the counted weight passes this, every count is halved (a long-lived server follows
drift instead of averaging over all of history)."""

K = TypeVar("K", bound=Hashable)


@dataclass(frozen=True)
class WorkloadModel:
    """One snapshot of the learned workload (immutable; the policy memoises against it)."""

    prices: GapPrices
    cpu_per_milli: float = 0.0
    """Mean CPU milli per milli-GPU of GPU tasks (0 = unknown)."""
    mem_per_milli: float = 0.0
    """Mean memory MiB per milli-GPU of GPU tasks (0 = unknown)."""
    pinned: tuple[tuple[frozenset[str], float], ...] = ()
    """(allowed models, share of all GPU demand) for demand pinned to some models only."""
    share_cpu: tuple[tuple[int, int], ...] = ()
    """(share size, median CPU milli of the tasks of that size), for every size seen."""

    @classmethod
    def empty(cls) -> WorkloadModel:
        return cls(GapPrices.unknown())


def _bump(counts: dict[K, float], key: K, weight: float) -> None:
    counts[key] = counts.get(key, 0.0) + weight


def _halve(counts: dict[K, float]) -> None:
    for key in counts:
        counts[key] /= 2


@dataclass
class _Counts:
    """Weighted counts of what arrived (weight 1 per task, or a prior's probabilities)."""

    shares: dict[int, float] = field(default_factory=dict)
    share_cpu: dict[tuple[int, int], float] = field(default_factory=dict)
    pinned: dict[tuple[str, ...], float] = field(default_factory=dict)
    gpu_milli: float = 0.0
    gpu_cpu: float = 0.0
    gpu_mem: float = 0.0
    mem_milli: float = 0.0
    total: float = 0.0

    def add(self, request: Request, weight: float = 1.0) -> None:
        self.total += weight
        if not request.num_gpus:
            return
        milli = request.total_gpu_milli * weight
        if request.is_sharing and request.gpu_milli > 0:
            _bump(self.shares, request.gpu_milli, weight)
            _bump(self.share_cpu, (request.gpu_milli, request.cpu_milli), weight)
        self.gpu_milli += milli
        self.gpu_cpu += request.cpu_milli * weight
        self.gpu_mem += request.memory_mib * weight
        self.mem_milli += milli
        _bump(self.pinned, request.gpu_models, milli)

    def halve(self) -> None:
        _halve(self.shares)
        _halve(self.share_cpu)
        _halve(self.pinned)
        self.gpu_milli /= 2
        self.gpu_cpu /= 2
        self.gpu_mem /= 2
        self.mem_milli /= 2
        self.total /= 2


class WorkloadLearner:
    """Counts arrivals and builds ``WorkloadModel`` snapshots on a doubling schedule.

    ``observe`` ignores a request name it has seen before (a pending task is offered to
    the scheduler again and again) and returns True when a new snapshot is due.
    """

    def __init__(self, models: tuple[str, ...], prior: TargetWorkload | None = None) -> None:
        self._models = frozenset(models)
        self._counts = _Counts()
        self._seen: set[str] = set()
        self._observed = 0
        self._next_build = 1
        self._prior: WorkloadModel | None = None
        if prior is not None:
            counts = _Counts()
            for shape, p in zip(prior.shapes, prior.weights, strict=True):
                request = Request(
                    "prior",
                    cpu_milli=shape.cpu_milli,
                    num_gpus=shape.num_gpus,
                    gpu_milli=shape.gpu_milli,
                    gpu_models=shape.gpu_models,
                )
                counts.add(request, p)
            self._prior = self._build(counts)
        self.model = self._prior or WorkloadModel.empty()

    @property
    def observed(self) -> int:
        return self._observed

    def observe(self, request: Request) -> bool:
        """Count ``request`` (once per name); True when the model should be rebuilt."""
        if request.name in self._seen:
            return False
        self._seen.add(request.name)
        self._observed += 1
        self._counts.add(request)
        if self._counts.total > DECAY_AT:
            self._counts.halve()
        if self._observed >= self._next_build:
            self._next_build = (
                self._next_build * 2
                if self._next_build < REBUILD_EVERY
                else self._next_build + REBUILD_EVERY
            )
            return True
        return False

    def rebuild(self) -> WorkloadModel:
        """A fresh snapshot: of the counts, or of the prior with the memory seen so far."""
        if self._prior is not None:
            observed = self._counts
            mem = observed.gpu_mem / observed.mem_milli if observed.mem_milli else 0.0
            self.model = replace(self._prior, mem_per_milli=mem)
        else:
            self.model = self._build(self._counts)
        return self.model

    def _build(self, counts: _Counts) -> WorkloadModel:
        if counts.total <= 0:
            return WorkloadModel.empty()
        cpu = counts.gpu_cpu / counts.gpu_milli if counts.gpu_milli else 0.0
        mem = counts.gpu_mem / counts.mem_milli if counts.mem_milli else 0.0
        pinned: list[tuple[frozenset[str], float]] = []
        for models, milli in sorted(counts.pinned.items()):
            allowed = frozenset(models) & self._models
            if models and allowed != self._models and milli > 0:
                pinned.append((allowed, milli / counts.gpu_milli))
        return WorkloadModel(
            gap_prices(counts.shares), cpu, mem, tuple(pinned), _median_cpu(counts.share_cpu)
        )


def _median_cpu(share_cpu: dict[tuple[int, int], float]) -> tuple[tuple[int, int], ...]:
    """(size, weighted median CPU of the tasks of that size), by size."""
    by_size: dict[int, list[tuple[int, float]]] = {}
    for (size, cpu), weight in share_cpu.items():
        by_size.setdefault(size, []).append((cpu, weight))
    out: list[tuple[int, int]] = []
    for size in sorted(by_size):
        pairs = sorted(by_size[size])
        half = sum(w for _, w in pairs) / 2
        run = 0.0
        for cpu, weight in pairs:
            run += weight
            if run >= half:
                out.append((size, cpu))
                break
    return tuple(out)
