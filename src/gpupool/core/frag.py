"""GPU fragmentation against a target workload, as defined by FGD (ATC'23).

For a node with free shares ``left[g]`` (milli-GPU, sum R) and a task shape m, the node's
fragmentation for m is R when m cannot use the node at all (CPU-only shape, excluded GPU
model, not enough CPU or GPUs), and otherwise the sum of the free shares too small for m.
The node's fragmentation is the expectation over the target workload's shapes.
"""

from __future__ import annotations

from bisect import bisect_left
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import TypeVar

from gpupool.core.request import Request

MEMO_LIMIT = 500_000
"""Entries a memo table keeps before it starts over (values are pure: only speed is lost)."""

NodeKey = tuple[int, int, tuple[int, ...]]

K = TypeVar("K")
V = TypeVar("V")


def remember(memo: dict[K, V], key: K, value: V) -> V:
    """Store ``value`` in a memo table that starts over at MEMO_LIMIT entries (memoised values
    are pure, so only speed is lost; a long-running server must not grow without bound)."""
    if len(memo) >= MEMO_LIMIT:
        memo.clear()
    memo[key] = value
    return value
"""(model id, free CPU milli, sorted free milli-GPU per GPU): see ClusterState.node_key."""


@dataclass(frozen=True, slots=True)
class TaskShape:
    """A request shape as the fragmentation measure sees it (memory is ignored)."""

    cpu_milli: int
    num_gpus: int
    gpu_milli: int
    gpu_models: tuple[str, ...] = ()

    @classmethod
    def of(cls, request: Request) -> TaskShape:
        return cls(request.cpu_milli, request.num_gpus, request.gpu_milli, request.gpu_models)


@dataclass(frozen=True)
class TargetWorkload:
    """The "typical tasks" M: shapes with probabilities summing to 1."""

    shapes: tuple[TaskShape, ...]
    weights: tuple[float, ...]

    def __post_init__(self) -> None:
        if len(self.shapes) != len(self.weights) or not self.shapes:
            raise ValueError("a target workload needs one weight per shape, and some shapes")

    @classmethod
    def from_requests(cls, requests: Iterable[Request], coverage: float = 0.95) -> TargetWorkload:
        """Most frequent shapes until they cover ``coverage`` of the requests, renormalised.

        Shapes are ranked by count, then by the shape itself (descending), as in the FGD
        artifact; the result is independent of the requests' order.
        """
        counts = Counter(TaskShape.of(r) for r in requests)
        if not counts:
            raise ValueError("cannot build a target workload from no requests")
        total = sum(counts.values())
        ranked = sorted(
            counts.items(),
            key=lambda kv: (kv[1], _shape_sort_key(kv[0])),
            reverse=True,
        )
        chosen: list[tuple[TaskShape, int]] = []
        covered = 0
        for shape, count in ranked:
            chosen.append((shape, count))
            covered += count
            if covered >= coverage * total:
                break
        kept = sum(c for _, c in chosen)
        return cls(tuple(s for s, _ in chosen), tuple(c / kept for _, c in chosen))


def _shape_sort_key(shape: TaskShape) -> tuple[int, int, int, str]:
    return (shape.cpu_milli, shape.gpu_milli, shape.num_gpus, "|".join(shape.gpu_models))


class FragmentationModel:
    """Memoised node fragmentation for one cluster's GPU models and one target workload.

    ``node_frag(key)`` depends only on the node key, so nodes in the same state share one
    computation. Values are in milli-GPU.
    """

    def __init__(self, models: Sequence[str], workload: TargetWorkload) -> None:
        self.workload = workload
        self._never: dict[int, float] = {}
        self._usable: dict[int, tuple[tuple[int, int, int, float], ...]] = {}
        for model_id in range(-1, len(models)):
            model = models[model_id] if model_id >= 0 else None
            never = 0.0
            usable: list[tuple[int, int, int, float]] = []
            for shape, p in zip(workload.shapes, workload.weights, strict=True):
                excluded = shape.gpu_models and model not in shape.gpu_models
                if shape.num_gpus == 0 or model is None or excluded:
                    never += p
                else:
                    usable.append((shape.cpu_milli, shape.num_gpus, shape.gpu_milli, p))
            self._never[model_id] = never
            self._usable[model_id] = tuple(usable)
        self._memo: dict[NodeKey, float] = {}

    def node_frag(self, key: NodeKey) -> float:
        """Expected fragmented milli-GPUs of a node in state ``key``."""
        value = self._memo.get(key)
        if value is not None:
            return value
        model_id, cpu_left, lefts = key
        free = sum(lefts)
        total = self._never[model_id] * free
        prefix = [0]
        for v in lefts:
            prefix.append(prefix[-1] + v)
        count = len(lefts)
        for cpu, num, milli, p in self._usable[model_id]:
            if cpu_left < cpu:
                total += p * free
                continue
            idx = bisect_left(lefts, milli)
            total += p * (prefix[idx] if count - idx >= num else free)
        return remember(self._memo, key, total)
