"""The simulator over the API: trace files in the data dir, and simulation runs."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field

from gpupool.schemas.units import finite_number
from gpupool.schemas.values import Number

TRACE_NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}\.csv$"
SYNTHETIC = "synthetic"
POLICY_NAMES = ("random", "dotprod", "clustering", "packing", "bestfit", "fgd", "binpack",
                "spread", "gpupool")
"""The policies a run may compare, as documented in the OpenAPI (``plugins.profiles.POLICIES``
is the source; the server checks against it, naming an unknown policy)."""


class TraceFile(BaseModel):
    name: str
    kind: Literal["nodes", "pods"]
    rows: int
    size_bytes: int


Seed = Annotated[int, Field(ge=0, le=2**63 - 1), BeforeValidator(finite_number)]
"""A run's random seed (numpy's generators take no negative number). The bounds come before
the validator, else pydantic writes them into the OpenAPI as unknown ``ge``/``le`` keys."""


class SimRunCreate(BaseModel):
    """A policy comparison in the FGD protocol. ``nodes`` and ``pods`` name trace files of
    the data dir, or are both ``synthetic`` for the built-in openb-like trace."""

    model_config = ConfigDict(extra="forbid")
    nodes: str = Field(SYNTHETIC, max_length=104)
    pods: str = Field(SYNTHETIC, max_length=104)
    policies: list[Annotated[str, Field(json_schema_extra={"enum": list(POLICY_NAMES)})]] = Field(
        default_factory=lambda: ["bestfit", "fgd"], min_length=1, max_length=10)
    seeds: list[Seed] = Field(default_factory=lambda: [42], min_length=1, max_length=10)
    tune: Number = Field(1.3, ge=0, le=3)
    scale: Number = Field(0.25, gt=0, le=1, description="Size of the synthetic cluster.")


class SimRunView(BaseModel):
    id: str
    status: Literal["queued", "running", "done", "failed"]
    request: SimRunCreate
    created_at: datetime
    runs_done: int = 0
    runs_total: int = 0
    error: str = ""
    result: dict[str, Any] | None = Field(
        None, description="As `gpupool sim --json`: meta, and per policy the bucketed curves."
    )
