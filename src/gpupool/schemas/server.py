"""Stopping the server (``gpupool down``): what to do with running jobs, and where it stands."""

from __future__ import annotations

from enum import StrEnum

from pydantic import BaseModel, ConfigDict, Field


class StopMode(StrEnum):
    """What happens to the jobs that run when the server stops. In every mode pending jobs
    stay queued (they start after the next ``gpupool up``) and no new job starts once a
    ``drain`` or ``cancel`` began."""

    LEAVE = "leave"
    """Stop now; running jobs keep running, unmanaged, and the next ``gpupool up`` on the
    same data dir re-adopts them (records how they end, enforces their limits again)."""
    DRAIN = "drain"
    """Wait for the running jobs to end, then stop."""
    CANCEL = "cancel"
    """Cancel the running jobs (SIGTERM, SIGKILL after each one's grace period), wait for them
    to end, then stop."""


class ServerStop(BaseModel):
    """The body of ``POST /api/v1/server/shutdown``."""

    model_config = ConfigDict(extra="forbid")
    mode: StopMode = Field(StopMode.LEAVE, description="What to do with running jobs.")


class ServerState(BaseModel):
    """The server as it stands: its version, whether it is stopping (and how), and how many
    jobs run (starting or running) and wait (pending)."""

    version: str
    stopping: StopMode | None = None
    running: int = Field(ge=0)
    pending: int = Field(ge=0)
    message: str = Field("", description="What happens next, in one sentence.")
