"""Pipelines on the wire: the YAML definition (PipelineSpec) and what the server reports.

A definition is checked in two stages: the field shapes here (unknown fields rejected), and
the whole-graph rules (cycles, references between steps, parameters) by the server's pure
``gpupool.server.pipelines.validate`` before anything runs.
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, model_validator

from gpupool.schemas.image_ref import IMAGE_REFERENCE, IMAGE_RULE
from gpupool.schemas.units import finite_number, parse_mib
from gpupool.schemas.values import Integer, Number

MiB = Annotated[int, BeforeValidator(parse_mib)]
STEP_NAME = r"^[A-Za-z][A-Za-z0-9_-]{0,39}$"
PIPELINE_NAME = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,79}$"
OUTPUT_NAME = r"^[A-Za-z][A-Za-z0-9_.-]{0,63}$"
ENV_NAME = r"^[A-Za-z_][A-Za-z0-9_]{0,127}$"
SECRET_NAME = r"^[A-Za-z_][A-Za-z0-9_.-]{0,99}$"
FailureKind = Literal["failure", "timeout", "error"]
# Bounds of an optional number come before its validator (see schemas.admin.GpuCount).


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ParamSpec(_Strict):
    """A parameter: its type and, optionally, a default (no default: the run must give it)."""

    type: Literal["string", "int", "float", "bool", "json"] = "string"
    default: Any = None
    description: str = ""


class Resources(_Strict):
    """What a job step asks for, as a job would (``gpus``: fraction below 1 or whole)."""

    gpus: Number = Field(0, ge=0, le=64)
    gpu_memory: Annotated[int, Field(ge=1), BeforeValidator(parse_mib)] | None = None
    gpu_model: str | None = Field(None, min_length=1, max_length=64)
    cpu: Number = Field(0, ge=0, le=1024)
    memory: MiB = Field(0, ge=0)
    queue: str | None = Field(None, pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")


class Retry(_Strict):
    """``count`` more tries after the first; the n-th retry waits backoff_s * factor**(n-1)
    (at most max_backoff_s). ``when``: which failures are retried (failure: non-zero exit or
    bad HTTP status; timeout; error: could not start or the process was lost)."""

    count: Integer = Field(0, ge=0, le=100)
    backoff_s: Number = Field(0, ge=0, le=3600)
    factor: Number = Field(2, ge=1, le=10)
    max_backoff_s: Number = Field(600, ge=0, le=86400)
    when: list[FailureKind] = Field(default=["failure", "timeout", "error"])


class SecretRef(_Strict):
    """Inject the team secret ``name``: as the env var ``env`` (default: the name), or as a
    0600 file whose path is in the env var (``as_file``)."""

    name: str = Field(pattern=SECRET_NAME)
    env: str | None = Field(None, pattern=ENV_NAME)
    as_file: bool = False


class HttpCall(_Strict):
    """An HTTP request step. ``body`` is sent as JSON unless a string. The step fails when
    the status is not in ``expect_status`` (default: any 2xx). Outputs: ``status``, ``body``.
    Headers may use ``${{ secrets.NAME }}`` (resolved at call time, never stored)."""

    url: str = Field(min_length=1, max_length=4096)
    method: Literal["GET", "POST", "PUT", "PATCH", "DELETE", "HEAD"] = "GET"
    headers: dict[str, str] = Field(default_factory=dict)
    body: Any = None
    expect_status: list[Integer] = Field(default_factory=list)


class StepSpec(_Strict):
    """One step: exactly one of ``command`` (a list, or a string run by ``sh -c``), ``http``
    or ``pipeline`` (a nested definition, its params given by ``with``). ``kind`` of a
    command step: ``job`` (scheduled like any job, with ``resources``) or ``shell`` (runs at
    once on the server machine, no GPU)."""

    name: str = Field(pattern=STEP_NAME)
    kind: Literal["job", "shell", "http", "pipeline"] | None = None
    command: list[str] | str | None = None
    http: HttpCall | None = None
    pipeline: PipelineSpec | None = None
    with_: dict[str, Any] = Field(default_factory=dict, alias="with")
    resources: Resources = Field(default_factory=lambda: Resources.model_validate({}))
    env: dict[str, str] = Field(default_factory=dict)
    inputs: dict[str, str] = Field(
        default_factory=dict, description="Env vars from templates, e.g. ${{ steps.a.outputs.x }}"
    )
    outputs: list[Annotated[str, Field(pattern=OUTPUT_NAME)]] = Field(default_factory=list)
    files: list[Annotated[str, Field(pattern=OUTPUT_NAME)]] = Field(default_factory=list)
    depends_on: list[str] = Field(default_factory=list)
    secrets: list[SecretRef] = Field(default_factory=list)
    retry: Retry = Field(default_factory=lambda: Retry.model_validate({}))
    timeout_s: Annotated[float, Field(gt=0, le=7 * 86400, allow_inf_nan=False),
                         BeforeValidator(finite_number)] | None = None
    allow_failure: bool = False
    workdir: str | None = None
    image: str | None = Field(None, min_length=1, max_length=255,
                              description="job steps: the container image to run in")

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    @model_validator(mode="after")
    def _one_action(self) -> StepSpec:
        given = [k for k in ("command", "http", "pipeline") if getattr(self, k) is not None]
        if len(given) != 1:
            raise ValueError("give exactly one of command, http, pipeline")
        action = given[0]
        kinds: dict[str, Literal["job", "http", "pipeline"]] = {
            "command": "job", "http": "http", "pipeline": "pipeline"}
        kind = self.kind or kinds[action]
        self.kind = kind
        wanted = {"job": "command", "shell": "command", "http": "http", "pipeline": "pipeline"}
        if wanted[kind] != action:
            raise ValueError(f"kind: a {kind} step needs {wanted[kind]}, not {action}")
        if self.image is not None and kind != "job":
            raise ValueError(f"image: only job steps run in an image, not {kind} steps")
        if self.image is not None and not IMAGE_REFERENCE.match(self.image):
            raise ValueError(f"image: {IMAGE_RULE}")
        if isinstance(self.command, list) and (not self.command or not self.command[0]):
            raise ValueError("command: the program name is empty")
        if isinstance(self.command, str) and not self.command.strip():
            raise ValueError("command: empty")
        for key in (*self.env, *self.inputs):
            if not key or "=" in key or "\0" in key:
                raise ValueError(f"env: invalid variable name {key!r}")
        return self

    @property
    def argv(self) -> list[str]:
        """The command as a list (a string runs under ``sh -c``)."""
        if isinstance(self.command, str):
            return ["sh", "-c", self.command]
        return list(self.command or [])


class PipelineSpec(_Strict):
    """A pipeline definition. ``on_failure``: ``fail_fast`` stops running steps and skips
    the rest at the first failed step; ``continue`` lets independent branches finish.
    ``outputs`` (for nested use) are templates over its steps' outputs."""

    name: str = Field(pattern=PIPELINE_NAME)
    description: str = ""
    params: dict[str, ParamSpec | str | int | Number | bool | None] = Field(default_factory=dict)
    steps: list[StepSpec] = Field(min_length=1, max_length=500)
    on_failure: Literal["fail_fast", "continue"] = "fail_fast"
    outputs: dict[str, str] = Field(default_factory=dict)

    def param_specs(self) -> dict[str, ParamSpec]:
        """Every parameter as a ParamSpec (a bare value is a string-or-typed default)."""
        result: dict[str, ParamSpec] = {}
        for name, raw in self.params.items():
            if isinstance(raw, ParamSpec):
                result[name] = raw
            else:
                kind = {bool: "bool", int: "int", float: "float"}.get(type(raw), "string")
                result[name] = ParamSpec(type=kind, default=raw)  # type: ignore[arg-type]
        return result


StepSpec.model_rebuild()


class RunState(StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"

    @property
    def final(self) -> bool:
        return self in (RunState.SUCCEEDED, RunState.FAILED, RunState.CANCELLED)


class StepState(StrEnum):
    WAITING = "waiting"
    STARTING = "starting"
    RUNNING = "running"
    RETRYING = "retrying"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    SKIPPED = "skipped"
    CANCELLED = "cancelled"
    REUSED = "reused"

    @property
    def final(self) -> bool:
        return self in (StepState.SUCCEEDED, StepState.FAILED, StepState.SKIPPED,
                        StepState.CANCELLED, StepState.REUSED)

    @property
    def ok(self) -> bool:
        return self in (StepState.SUCCEEDED, StepState.REUSED)


class RunCreate(_Strict):
    """Start a run of ``definition`` (trigger ``api`` unless the CLI says ``manual``)."""

    definition: PipelineSpec
    params: dict[str, Any] = Field(default_factory=dict)
    priority: Integer = Field(0, ge=-1000, le=1000)
    trigger: Literal["manual", "api"] = "api"


class RunUpdate(_Strict):
    priority: Integer = Field(ge=-1000, le=1000)


class StepView(BaseModel):
    name: str
    kind: str
    state: StepState
    depends_on: list[str]
    attempt: int = 0
    message: str = ""
    outputs: dict[str, Any] = Field(default_factory=dict)
    files: dict[str, str] = Field(default_factory=dict, description="Stored file paths.")
    job_id: str | None = None
    child_run: str | None = None
    reused_from: str | None = None
    started_at: datetime | None = None
    ended_at: datetime | None = None


class RunView(BaseModel):
    id: str
    name: str
    team: str
    user: str
    state: RunState
    priority: int
    trigger: str
    params: dict[str, Any]
    message: str = ""
    schedule: str | None = None
    scheduled_for: datetime | None = None
    parent_run: str | None = None
    retry_of: str | None = None
    created_at: datetime
    started_at: datetime | None = None
    ended_at: datetime | None = None
    steps: list[StepView] = Field(default_factory=list)


class PipelineLogs(BaseModel):
    data: str = Field(description="Step logs, secrets masked as ***.")
    complete: bool


class ScheduleSpec(_Strict):
    """A cron trigger. ``concurrency``: ``allow`` overlapping runs, ``forbid`` (a firing
    while a run of this schedule is active is skipped), ``replace`` (the active run is
    cancelled). After downtime at most ``catchup_limit`` missed firings run (newest)."""

    definition: PipelineSpec
    cron: str = Field(min_length=1, max_length=200)
    params: dict[str, Any] = Field(default_factory=dict)
    concurrency: Literal["allow", "forbid", "replace"] = "allow"
    catchup_limit: Integer = Field(1, ge=0, le=1000)
    priority: Integer = Field(0, ge=-1000, le=1000)
    enabled: bool = True


class ScheduleView(BaseModel):
    name: str
    team: str
    cron: str
    concurrency: str
    catchup_limit: int
    enabled: bool
    params: dict[str, Any]
    last_fired_for: datetime | None = None
    next_fire_at: datetime | None = None
    skipped: int = 0


class SecretPut(_Strict):
    """A team secret or variable; ``value`` is never returned by the API."""

    value: str = Field(max_length=1 << 20)


class SecretView(BaseModel):
    name: str
    team: str
    updated_at: datetime


class ValidateRequest(_Strict):
    definition: PipelineSpec
    params: dict[str, Any] = Field(default_factory=dict)


class ValidateView(BaseModel):
    order: list[str] = Field(description="Steps in an order that respects dependencies.")
    depends_on: dict[str, list[str]]
    params: dict[str, Any]
