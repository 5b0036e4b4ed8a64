"""What a workload asks for: one task (``Request``) or a group placed all together (``Gang``)."""

from __future__ import annotations

from dataclasses import dataclass, field

MILLI_PER_GPU = 1000
"""One whole GPU, in milli-GPU."""


class RequestError(ValueError):
    """A request that can never be valid (negative amounts, a share above one GPU, ...)."""


@dataclass(frozen=True, slots=True)
class Request:
    """One task's resource request.

    Contract: ``gpu_milli`` is the share of *each* requested GPU in thousandths; a value below
    1000 is only allowed with ``num_gpus == 1`` (a GPU-sharing task). ``gpu_memory_mib`` is an
    optional per-GPU memory requirement (0 = none). ``gpu_models`` empty means any model.
    ``node_labels``: (key, value) pairs a node's labels must all hold (empty: any node), e.g.
    ``(("gpupool.io/images", "podman"),)`` for a task that runs in a container image.
    Requests are immutable and hashable so that plugins may memoise per request shape.
    """

    name: str
    cpu_milli: int = 0
    memory_mib: int = 0
    num_gpus: int = 0
    gpu_milli: int = 0
    gpu_memory_mib: int = 0
    gpu_models: tuple[str, ...] = ()
    node_labels: tuple[tuple[str, str], ...] = ()
    priority: int = 0
    queue: str = "default"
    gang: str | None = None

    def __post_init__(self) -> None:
        for attr in ("cpu_milli", "memory_mib", "num_gpus", "gpu_milli", "gpu_memory_mib"):
            if getattr(self, attr) < 0:
                raise RequestError(f"request {self.name!r}: {attr} must not be negative")
        if self.num_gpus == 0 and (self.gpu_milli or self.gpu_memory_mib):
            raise RequestError(f"request {self.name!r}: a GPU share needs num_gpus >= 1")
        if self.num_gpus > 0 and self.gpu_milli == 0 and self.gpu_memory_mib == 0:
            object.__setattr__(self, "gpu_milli", MILLI_PER_GPU)
        if self.gpu_milli > MILLI_PER_GPU:
            raise RequestError(
                f"request {self.name!r}: gpu_milli {self.gpu_milli} is above one GPU (1000)"
            )
        if self.num_gpus > 1 and self.gpu_milli != MILLI_PER_GPU:
            raise RequestError(
                f"request {self.name!r}: a share below one GPU is only allowed for a single GPU"
            )

    @property
    def is_gpu(self) -> bool:
        return self.num_gpus > 0

    @property
    def is_sharing(self) -> bool:
        """True for a task that takes part of one GPU."""
        return self.num_gpus == 1 and self.gpu_milli < MILLI_PER_GPU

    @property
    def total_gpu_milli(self) -> int:
        return self.num_gpus * self.gpu_milli

    @property
    def shape(self) -> tuple[int, int, int, int, int, tuple[str, ...],
                             tuple[tuple[str, str], ...]]:
        """Everything that decides placement, without identity: a cache key."""
        return (
            self.cpu_milli,
            self.memory_mib,
            self.num_gpus,
            self.gpu_milli,
            self.gpu_memory_mib,
            self.gpu_models,
            self.node_labels,
        )

    def describe(self) -> str:
        """Plain-language summary of the GPU part, e.g. ``2 whole A100`` or ``0.5 GPU``."""
        models = "/".join(self.gpu_models) if self.gpu_models else ""
        if not self.is_gpu:
            return "no GPU"
        if self.is_sharing:
            share = f"{self.gpu_milli / MILLI_PER_GPU:g} of one {models or 'GPU'}"
            if self.gpu_memory_mib:
                share += f" with {self.gpu_memory_mib} MiB"
            return share
        noun = models or "GPU"
        plural = "" if self.num_gpus == 1 or models else "s"
        return f"{self.num_gpus} whole {noun}{plural}"


@dataclass(frozen=True, slots=True)
class Gang:
    """Tasks that are placed all together or not at all (a distributed job).
    ``distinct_nodes``: every member on a node of its own (one member per machine, as a
    multi-node job's node ranks need)."""

    name: str
    members: tuple[Request, ...] = field(default_factory=tuple)
    distinct_nodes: bool = False

    def __post_init__(self) -> None:
        if not self.members:
            raise RequestError(f"gang {self.name!r} has no members")
