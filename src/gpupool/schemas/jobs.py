"""Jobs on the wire: what a user submits (JobSpec) and what the server reports (JobView)."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Annotated, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, model_validator

from gpupool.schemas.image_ref import IMAGE_REFERENCE, IMAGE_RULE
from gpupool.schemas.units import (
    MAX_GPU_MEMORY_MIB,
    MAX_MEMORY_MIB,
    finite_number,
    mib_at_most,
    parse_mib,
)

MiB = Annotated[int, BeforeValidator(parse_mib)]
MemoryMiB = Annotated[int, BeforeValidator(mib_at_most(MAX_MEMORY_MIB, "per node"))]
# The bounds come before the validator: else, inside ``| None``, pydantic writes them into the
# OpenAPI as the unknown keywords ``ge``/``le`` instead of minimum/maximum.
GpuMemoryMiB = Annotated[int, Field(ge=1, le=MAX_GPU_MEMORY_MIB),
                         BeforeValidator(mib_at_most(MAX_GPU_MEMORY_MIB, "per GPU"))]
Number = BeforeValidator(finite_number)
"""Numeric fields refuse JSON booleans and NaN/Infinity (see ``finite_number``)."""
MAX_GPUS_PER_NODE = 64
MAX_CPU = 4096
MAX_NODES = 1024
MAX_TIME_LIMIT_S = 365 * 86400
TimeLimit = Annotated[float, Field(gt=0, le=MAX_TIME_LIMIT_S, allow_inf_nan=False), Number]
MIN_IDLE_TIMEOUT_S = 5
IdleTimeout = Annotated[float, Field(ge=MIN_IDLE_TIMEOUT_S, le=MAX_TIME_LIMIT_S,
                                     allow_inf_nan=False), Number]
NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$"


class Phase(StrEnum):
    PENDING = "pending"
    STARTING = "starting"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"
    SUSPENDED = "suspended"
    """A development environment put aside: its processes stopped, its GPU share given
    back, its files kept; ``resume`` queues it again."""

    @property
    def final(self) -> bool:
        return self in (Phase.SUCCEEDED, Phase.FAILED, Phase.CANCELLED)


class Kind(StrEnum):
    """What a workload is: a batch job, a notebook (JupyterLab, reached through the
    gateway, suspended when idle), or one replica of an inference service (started by the
    service controller, never submitted directly: see ``schemas.services``)."""

    JOB = "job"
    NOTEBOOK = "notebook"
    SERVICE = "service"


class JobOrder(StrEnum):
    """How a job listing is sorted."""

    NEWEST = "newest"
    """Newest first (by id)."""
    QUEUE = "queue"
    """As the scheduler takes a queue's jobs: higher priority first, then first come first
    served (the scheduler also puts jobs within their queue's quota ahead of borrowers)."""


class JobSpec(BaseModel):
    """A job as submitted. ``gpus`` is 0 (none), a fraction below 1 (a share of one GPU), or
    a whole number of GPUs; ``gpu_memory`` alone asks for a share with that much GPU memory.

    A distributed job asks for ``nodes`` > 1: a gang placed all or nothing, one member per
    node, each with ``gpus`` whole GPUs (GPUs per node) and ``procs_per_node`` processes
    (1 for a launcher such as ``torchrun``; the GPU count for one process per rank)."""

    model_config = ConfigDict(extra="forbid")

    kind: Kind = Field(default=Kind.JOB, description="job (the default) or notebook: JupyterLab "
                       "started by the server, reached through its gateway, suspended when "
                       "idle; a notebook has no command. service: one replica of an "
                       "inference service (the server makes those; deploy with "
                       "POST /api/v1/services).")
    command: list[str] = Field(default_factory=list,
                               description="Program and arguments (jobs only; required).")
    name: str | None = Field(None, pattern=NAME_PATTERN)
    gpus: Annotated[float, Number] = Field(0, ge=0, le=MAX_GPUS_PER_NODE)
    gpu_memory: GpuMemoryMiB | None = Field(None, description="Per-GPU memory, e.g. 20GiB.")
    gpu_model: str | None = Field(None, min_length=1, max_length=64)
    cpu: Annotated[float, Number] = Field(0, ge=0, le=MAX_CPU, description="CPU cores.")
    memory: MemoryMiB = Field(
        0, ge=0, le=MAX_MEMORY_MIB, description="Main memory per node, e.g. 16GiB.")
    queue: str | None = Field(None, pattern=NAME_PATTERN)
    priority: Annotated[int, Number] = Field(0, ge=-1000, le=1000)
    env: dict[str, str] = Field(default_factory=dict)
    workdir: str | None = None
    image: str | None = Field(
        None, min_length=1, max_length=255,
        description="Run in this container image (podman, as the job's own account, no "
        "capabilities), e.g. docker.io/library/python:3.12; only on nodes that run images "
        "(`gpupool nodes`). null: on the host, in the sandbox.")
    code: str | None = Field(
        None, pattern=r"^sha256:[0-9a-f]{64}$",
        description="A code archive your team uploaded (`gpupool run --code DIR` packs and "
        "uploads one): unpacked into each attempt's own directory before the command "
        "starts, and the working directory is that copy unless workdir is given.")
    artifacts: list[Annotated[str, Field(min_length=1, max_length=500)]] = Field(
        default_factory=list, max_length=32,
        description="Files and folders (relative to the working directory) kept when each "
        "attempt ends, to list and download later: `gpupool artifacts JOB`.")
    restart: Literal["never", "on-failure"] = "never"
    max_retries: Annotated[int, Number] = Field(0, ge=0, le=100)
    grace_period_s: Annotated[float, Number] = Field(30, ge=0, le=3600)
    nodes: Annotated[int, Number] = Field(
        default=1, ge=1, le=MAX_NODES, description="Nodes of a distributed job (a gang).")
    procs_per_node: Annotated[int, Number] = Field(
        default=1, ge=1, le=64, description="Processes started on each node (ranks per node)."
    )
    time_limit_s: TimeLimit | None = Field(
        default=None,
        description="The most seconds one attempt may run (at most 365 days); the server stops "
        "it once it has run that long, and the scheduler counts on it to tell when GPUs free "
        "up. null: no limit. In a YAML file also `time_limit`, in seconds "
        "or with a unit: 90s, 30m, 2h, 1d.",
    )
    idle_timeout_s: IdleTimeout | None = Field(
        default=None,
        description="Notebooks only: suspend it after this many seconds without activity "
        "(no kernel busy, no request, no terminal); null: its team's default, else the "
        "server's. At most its team's maximum, else the server's. In a YAML file also "
        "`idle_timeout` (20s, 30m, 2h).",
    )

    @model_validator(mode="after")
    def _check_gpus(self) -> JobSpec:
        if self.gpus >= 1 and self.gpus != int(self.gpus):
            raise ValueError("gpus: use a fraction below 1 or a whole number of GPUs")
        if self.gpus > 0 and self.gpus < 1 and round(self.gpus * 1000) < 1:
            raise ValueError("gpus: the smallest share is 0.001 of a GPU")
        if self.gpu_memory is not None and self.gpus > 1:
            raise ValueError("gpu_memory: only for a single GPU or a share of one")
        if self.kind == Kind.NOTEBOOK:
            self._check_notebook()
        elif not self.command:
            raise ValueError(f"command: a {self.kind.value} needs a command (the program and "
                             "its arguments)")
        elif self.idle_timeout_s is not None:
            raise ValueError("idle_timeout_s: only for notebooks (kind: notebook)")
        elif self.kind == Kind.SERVICE and (self.image is not None or self.code is not None):
            raise ValueError("image, code: service replicas run their workdir on the host, "
                             "in the sandbox")
        elif self.kind == Kind.SERVICE and (self.nodes != 1 or self.procs_per_node != 1):
            raise ValueError("nodes: a service's replica runs on one node, as one process")
        if self.command and not self.command[0]:
            raise ValueError("command: the program name is empty")
        for key, value in self.env.items():
            if not key or "=" in key or "\0" in key:
                raise ValueError(f"env: invalid variable name {key!r}")
            if "\0" in value:
                raise ValueError(f"env: the value of {key} contains a NUL byte")
        if self.nodes > 1 and 0 < self.gpus < 1:
            raise ValueError("gpus: a multi-node job takes whole GPUs on each node")
        if self.nodes > 1 and self.gpu_memory is not None:
            raise ValueError("gpu_memory: not for multi-node jobs (they take whole GPUs)")
        if any("\0" in arg for arg in self.command):
            raise ValueError("command: an argument contains a NUL byte")
        if self.workdir is not None and ("\0" in self.workdir or not self.workdir):
            raise ValueError("workdir: not a valid path")
        for path in self.artifacts:
            parts = path.strip("/").split("/")
            if path.startswith("/") or ".." in parts or "\0" in path or not path.strip("/"):
                raise ValueError(f"artifacts: {path!r}: give a path inside the working "
                                 "directory (relative, without ..)")
        if self.artifacts and self.kind != Kind.JOB:
            raise ValueError("artifacts: only jobs keep artifacts")
        if self.image is not None and not IMAGE_REFERENCE.match(self.image):
            raise ValueError(f"image: {IMAGE_RULE}")
        return self

    def _check_notebook(self) -> None:
        if self.code is not None:
            raise ValueError("code: notebooks keep their own directory; upload files "
                             "through JupyterLab")
        if self.image is not None:
            raise ValueError("image: notebooks run JupyterLab on the host, in the sandbox "
                             "(images are for jobs and pipeline job steps)")
        if self.command:
            raise ValueError("command: a notebook runs JupyterLab; leave command out")
        if self.nodes != 1 or self.procs_per_node != 1:
            raise ValueError("nodes: a notebook runs on one node, as one process")
        if self.restart != "never":
            raise ValueError("restart: not for notebooks (they are resumed, not restarted)")

    @property
    def num_gpus(self) -> int:
        if self.gpus >= 1:
            return int(self.gpus)
        return 1 if self.gpus > 0 or self.gpu_memory else 0

    @property
    def gpu_milli(self) -> int:
        """Per-GPU share in milli-GPU (1000 for whole GPUs; 0 for a memory-only share)."""
        if self.gpus >= 1:
            return 1000
        return round(self.gpus * 1000)


class JobEvent(BaseModel):
    at: datetime
    phase: Phase
    message: str = ""


class RankPlacement(BaseModel):
    node: str
    gpus: list[int] = Field(default_factory=list)


class Placement(BaseModel):
    """Where a job runs: its node (rank 0's for multi-node jobs) and, for multi-node jobs,
    every node rank in ``ranks``."""

    node: str
    gpus: list[int] = Field(default_factory=list)
    gpu_milli: int = 0
    gpu_memory_mib: int = 0
    ranks: list[RankPlacement] = Field(default_factory=list)



class GpuUsage(BaseModel):
    """What NVML measured of a job's GPUs, over all its attempts (pools without NVML, e.g.
    fake GPUs, measure nothing: then a job has none). Utilisation is the share of the GPUs
    it was allocated that its processes kept busy (0 to 1)."""

    gpu_seconds: float = Field(description="GPUs held × seconds held, every attempt (a "
                               "running one until now).")
    gpu_seconds_used: float = Field(description="Utilisation × GPUs held × seconds, over the "
                                    "time measured.")
    measured_s: float = Field(description="Seconds of the job's run that were measured.")
    mean_utilization: float | None = Field(
        default=None, description="Mean utilisation over the time measured (null: none).")
    peak_utilization: float | None = Field(default=None, description="Highest sample.")
    peak_memory_mib: int | None = Field(
        default=None, description="Most GPU memory its processes held on one GPU (compare "
        "with ``gpu_memory_limit_mib``); null: not measured.")
    idle_since: datetime | None = Field(
        default=None, description="Running and flagged idle: its GPUs have shown under 5 % "
        "utilisation since then, for the server's idle window (default 30 min) or longer; "
        "null otherwise.")


class JobView(BaseModel):
    """A job as the server reports it."""

    id: str
    name: str
    team: str
    user: str
    queue: str
    phase: Phase
    kind: Kind = Kind.JOB
    priority: int
    spec: JobSpec
    reason: str = ""
    placement: Placement | None = None
    attempts: int = 0
    exit_code: int | None = None
    enforcement: str | None = Field(
        default=None,
        description='How the GPU share is enforced: "interposer", "whole GPU", or "none (...)" '
        "saying why not; null for CPU jobs and jobs not started.",
    )
    isolation: str | None = Field(
        default=None,
        description='How the processes are isolated: e.g. "bwrap as gp-ada" (sandboxed, as '
        'that Unix account) or "none (...) as ..." saying why there is no sandbox; null for '
        "jobs never started.",
    )
    gpu_memory_limit_mib: int | None = Field(
        default=None, description="Per-GPU memory limit of a running share (describe only)."
    )
    url: str | None = Field(
        default=None,
        description="Notebooks: the full URL of JupyterLab through the gateway, once it "
        "answers (null before, and while suspended).")
    idle_since: datetime | None = Field(
        default=None, description="Notebooks: idle since then (null: busy, or not running).")
    gpu_usage: GpuUsage | None = Field(
        default=None, description="What NVML measured of its GPUs (null: nothing measured; "
        "listings give it for running jobs only).")
    created_at: datetime
    started_at: datetime | None = None
    ended_at: datetime | None = None
    events: list[JobEvent] = Field(default_factory=list)


class GatewaySignIn(BaseModel):
    """A one-time address that signs a browser in to one notebook on the gateway's origin
    (valid about a minute, once) and then opens it."""

    url: str


class LogChunk(BaseModel):
    data: str
    offset: int = Field(description="Where the next read should start.")
    complete: bool = Field(description="True once the job ended and the log is read to the end.")
    size: int = Field(0, description="The log's size in bytes at this read: a read from "
                      "`size - N` gives its last N bytes.")
