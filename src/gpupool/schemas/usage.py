"""Accounting: GPU-seconds held by jobs, summed by team, user, job or queue over a time
window (``GET /api/v1/usage``, ``gpupool usage``)."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum

from pydantic import BaseModel, Field


class UsageBy(StrEnum):
    """What one row of a usage report sums over."""

    TEAM = "team"
    USER = "user"
    JOB = "job"
    QUEUE = "queue"


class UsageRow(BaseModel):
    """One row: the allocated GPU-seconds of the attempts of ``key`` inside the window."""

    key: str = Field(description="The team, user, job id or queue, as ``by`` says.")
    gpu_seconds: float = Field(description="GPUs held × seconds held, every attempt's part "
                               "inside the window (a running attempt counts until now).")
    gpu_seconds_used: float | None = Field(
        default=None, description="GPU-seconds the jobs' processes kept busy (utilisation × "
        "GPUs held × seconds, NVML), over the measured attempts' part inside the window "
        "(in proportion to its share of each attempt); null: none of them was measured "
        "(e.g. fake GPUs).")
    jobs: int = Field(description="Jobs with an attempt inside the window.")


class UsageSeries(BaseModel):
    """Allocated GPU-seconds per ``key`` in consecutive buckets of ``step_s`` seconds from
    ``start`` (UNIX seconds): ``values[key][i]`` is the bucket ``[start + i·step_s,
    start + (i+1)·step_s)``."""

    start: float
    step_s: float
    buckets: int
    values: dict[str, list[float]] = Field(default_factory=dict)


class GpuHeatRow(BaseModel):
    node: str
    gpu: int
    utilization: list[float | None] = Field(
        description="Mean utilisation (0 to 1) of each bucket, oldest first; null: no sample.")


class IdleHolder(BaseModel):
    job: str
    team: str


class GpuHeat(BaseModel):
    """GPU utilisation over the last hours as NVML measured it (the console's heat map), and
    the running jobs whose GPUs are idle now (under 5 % for the server's idle window)."""

    measured: bool = Field(description="False: this pool has no NVML (e.g. fake GPUs).")
    bucket_s: float
    buckets: list[datetime] = Field(description="Each bucket's start, oldest first.")
    gpus: list[GpuHeatRow] = Field(default_factory=list)
    idle: list[IdleHolder] = Field(default_factory=list,
                                   description="Your team's (an admin: every team's).")
