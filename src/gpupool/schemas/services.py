"""Inference services on the wire: what a user deploys (ServiceSpec) and what the server
reports (ServiceView, ReplicaView).

A service is a named set of replicas of one HTTP server command, reached through the
gateway at ``/svc/<name>/``. Each replica is a workload of kind ``service`` with the
service's resources (a GPU share, say), started and stopped by the server's service
controller: between ``replicas.min`` and ``replicas.max``, by the requests in flight per
replica (``scaling``).
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from gpupool.schemas.jobs import (
    MAX_CPU,
    MAX_GPUS_PER_NODE,
    GpuMemoryMiB,
    JobSpec,
    Kind,
    MemoryMiB,
    Number,
    Phase,
)
from gpupool.schemas.units import MAX_MEMORY_MIB

SERVICE_NAME_PATTERN = r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$"
"""A DNS-label-like name: it is a path segment of the service's URL."""
MAX_REPLICAS = 64
DEFAULT_SERVICE_PRIORITY = 100
"""Above batch work's default (0): a service that must scale up may preempt its team's
batch jobs."""


class Replicas(BaseModel):
    """How many replicas: at least ``min`` (0: scale to zero when idle), at most ``max``."""

    model_config = ConfigDict(extra="forbid")

    min: Annotated[int, Number] = Field(default=1, ge=0, le=MAX_REPLICAS)
    max: Annotated[int, Number] = Field(default=1, ge=1, le=MAX_REPLICAS)

    @model_validator(mode="after")
    def _check(self) -> Replicas:
        if self.min > self.max:
            raise ValueError(f"replicas: min ({self.min}) is above max ({self.max})")
        return self


class Scaling(BaseModel):
    """Autoscaling: as many replicas as the requests in flight need at ``target_inflight``
    each; scaling down waits until the load has been lower for ``cooldown_s`` seconds."""

    model_config = ConfigDict(extra="forbid")

    target_inflight: Annotated[float, Number] = Field(default=4, gt=0, le=10_000)
    cooldown_s: Annotated[float, Number] = Field(default=30, ge=0, le=3600)


class Readiness(BaseModel):
    """A replica takes requests once ``GET <path>`` on its port answers 2xx or 3xx."""

    model_config = ConfigDict(extra="forbid")

    path: str = Field(default="/", min_length=1, max_length=500, pattern=r"^/[^\s\x00]*$")


class ServiceSpec(BaseModel):
    """A service as deployed: its name, the replica's command and resources (as a job's),
    and how many replicas, scaled how, ready when, reached by whom."""

    model_config = ConfigDict(extra="forbid")

    kind: Literal["service"] = "service"
    name: str = Field(pattern=SERVICE_NAME_PATTERN, description="Lower-case letters, digits "
                      "and '-', at most 63: the service's URL is <gateway>/svc/<name>/.")
    command: list[str] = Field(min_length=1, description="Program and arguments; it must "
                               "serve HTTP on 127.0.0.1:$PORT (set by gpupool).")
    gpus: Annotated[float, Number] = Field(default=0, ge=0, le=MAX_GPUS_PER_NODE,
                                           description="Per replica, as a job's.")
    gpu_memory: GpuMemoryMiB | None = None
    gpu_model: str | None = Field(default=None, min_length=1, max_length=64)
    cpu: Annotated[float, Number] = Field(default=0, ge=0, le=MAX_CPU)
    memory: MemoryMiB = Field(default=0, ge=0, le=MAX_MEMORY_MIB)
    queue: str | None = Field(default=None, pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")
    priority: Annotated[int, Number] = Field(default=DEFAULT_SERVICE_PRIORITY, ge=-1000, le=1000)
    env: dict[str, str] = Field(default_factory=dict)
    workdir: str | None = None
    grace_period_s: Annotated[float, Number] = Field(default=30, ge=0, le=3600)
    replicas: Replicas = Field(default_factory=lambda: Replicas())
    scaling: Scaling = Field(default_factory=lambda: Scaling())
    readiness: Readiness = Field(default_factory=lambda: Readiness())
    auth: Literal["token", "public"] = Field(
        "token", description="token: a gpupool token of the service's team (or an admin's) "
        "or one of the service's API keys, as `Authorization: Bearer ...`; public: none.")
    wake_timeout_s: Annotated[float, Number] = Field(
        60, ge=1, le=600, description="How long a request waits for a first replica to be "
        "ready (scaled to zero, or starting) before it is answered 503.")

    @model_validator(mode="after")
    def _check(self) -> ServiceSpec:
        if "PORT" in self.env:
            raise ValueError("env: PORT is set by gpupool (the port the replica must serve on)")
        self.replica_spec()  # the resource rules of a job (gpus shares, env names, ...)
        return self

    def replica_spec(self) -> JobSpec:
        """One replica as a workload of kind ``service``. ValueError when the resources or
        the command break a job's rules."""
        return JobSpec(
            kind=Kind.SERVICE, command=self.command, name=self.name, gpus=self.gpus,
            gpu_memory=self.gpu_memory, gpu_model=self.gpu_model, cpu=self.cpu,
            memory=self.memory, queue=self.queue, priority=self.priority, env=self.env,
            workdir=self.workdir, image=None, code=None, artifacts=[],
            grace_period_s=self.grace_period_s, restart="never", max_retries=0)


ReplicaState = Literal["pending", "starting", "ready", "draining", "stopping"]


class ReplicaView(BaseModel):
    """One replica: its workload (a job of kind service), where it runs and in what state
    for traffic (``starting``: launched, not yet answering its readiness path)."""

    id: str
    generation: int = Field(description="The service's spec version it runs.")
    state: ReplicaState
    phase: Phase
    node: str | None = None
    gpus: list[int | str] | None = None
    gpu_share: float = Field(default=0, description="Per GPU: 1 for whole GPUs, else the fraction.")
    inflight: int = Field(default=0, description="Requests in flight through the gateway.")


class ServiceView(BaseModel):
    """A service as the server reports it."""

    name: str
    team: str
    user: str
    spec: ServiceSpec
    generation: int = Field(description="Goes up by one each time the spec changes.")
    url: str = Field(description="The full URL of the service through the gateway.")
    desired_replicas: int
    ready_replicas: int
    inflight: int = Field(default=0, description="Requests in flight and waiting, at the gateway.")
    replicas: list[ReplicaView] = Field(default_factory=list)
    last_cold_start_s: float | None = Field(
        default=None, description="Seconds from the first request that waited for a replica "
        "(none ready) to the first ready one, the last time that happened since the server "
        "started; null: none yet.")
    created_at: datetime
    updated_at: datetime


class DeployResult(BaseModel):
    """What ``gpupool serve`` did: created the service, updated its spec (a rolling update),
    or nothing (the spec was unchanged)."""

    action: Literal["created", "updated", "unchanged"]
    service: ServiceView


class ServiceKeyView(BaseModel):
    """An API key of a service (its secret is shown once, when created)."""

    id: str
    name: str
    created_at: datetime
    revoked_at: datetime | None = None
    key: str | None = Field(default=None, description="The key itself: only in the answer that "
                            "created it.")


class ServiceKeyCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")
