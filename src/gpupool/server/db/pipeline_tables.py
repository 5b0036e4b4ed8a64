"""Pipeline tables (revision 0004): runs, their steps, cron schedules and team secrets.
Times are UNIX seconds (float, UTC). The engine thread is the only writer of run and step
states; API handlers insert runs and set ``cancel_requested`` / ``priority``.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import (
    JSON,
    Boolean,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import Mapped, mapped_column

from gpupool.server.db.tables import Base


class PipelineRun(Base):
    """One run of a definition (``spec``, with its resolved ``params``). ``state``: queued →
    running → succeeded/failed/cancelled. Nested runs have ``parent_run_id``/``parent_step``;
    a re-run of a failed run has ``retry_of``."""

    __tablename__ = "pipeline_runs"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    name: Mapped[str] = mapped_column(String(100))
    team_id: Mapped[int] = mapped_column(ForeignKey("teams.id"))
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id"))
    spec: Mapped[dict[str, Any]] = mapped_column(JSON)
    params: Mapped[dict[str, Any]] = mapped_column(JSON)
    state: Mapped[str] = mapped_column(String(16))
    priority: Mapped[int] = mapped_column(Integer, default=0)
    trigger: Mapped[str] = mapped_column(String(16))
    message: Mapped[str] = mapped_column(Text, default="")
    schedule_id: Mapped[int | None] = mapped_column(Integer, nullable=True)
    scheduled_for: Mapped[float | None] = mapped_column(Float, nullable=True)
    parent_run_id: Mapped[int | None] = mapped_column(Integer, nullable=True)
    parent_step: Mapped[str | None] = mapped_column(String(100), nullable=True)
    retry_of: Mapped[int | None] = mapped_column(Integer, nullable=True)
    cancel_requested: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[float] = mapped_column(Float)
    started_at: Mapped[float | None] = mapped_column(Float, nullable=True)
    ended_at: Mapped[float | None] = mapped_column(Float, nullable=True)

    __table_args__ = (
        Index("ix_pipeline_runs_state", "state"),
        Index("ix_pipeline_runs_parent", "parent_run_id", "parent_step"),
    )


class PipelineStep(Base):
    """One step of a run. ``handle`` is its executor's plain-data state (job id, process
    handle, child run...), enough to carry on after a restart. ``outputs``: values;
    ``files``: name → stored path under the data dir."""

    __tablename__ = "pipeline_steps"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    run_id: Mapped[int] = mapped_column(ForeignKey("pipeline_runs.id"), index=True)
    name: Mapped[str] = mapped_column(String(100))
    kind: Mapped[str] = mapped_column(String(16))
    state: Mapped[str] = mapped_column(String(16))
    depends_on: Mapped[list[Any]] = mapped_column(JSON)
    attempt: Mapped[int] = mapped_column(Integer, default=0)
    handle: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    outputs: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    files: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    message: Mapped[str] = mapped_column(Text, default="")
    reused_from: Mapped[int | None] = mapped_column(Integer, nullable=True)
    next_try_at: Mapped[float | None] = mapped_column(Float, nullable=True)
    deadline: Mapped[float | None] = mapped_column(Float, nullable=True)
    started_at: Mapped[float | None] = mapped_column(Float, nullable=True)
    ended_at: Mapped[float | None] = mapped_column(Float, nullable=True)

    __table_args__ = (UniqueConstraint("run_id", "name", name="uq_pipeline_steps_run_name"),)


class PipelineSchedule(Base):
    """A cron trigger of a definition. ``last_fired_for``: the newest firing handled (run
    or skipped); firings after it and not later than now are due."""

    __tablename__ = "pipeline_schedules"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    name: Mapped[str] = mapped_column(String(100))
    team_id: Mapped[int] = mapped_column(ForeignKey("teams.id"))
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id"))
    spec: Mapped[dict[str, Any]] = mapped_column(JSON)
    params: Mapped[dict[str, Any]] = mapped_column(JSON)
    cron: Mapped[str] = mapped_column(String(200))
    concurrency: Mapped[str] = mapped_column(String(16))
    catchup_limit: Mapped[int] = mapped_column(Integer)
    priority: Mapped[int] = mapped_column(Integer, default=0)
    enabled: Mapped[bool] = mapped_column(Boolean, default=True)
    last_fired_for: Mapped[float] = mapped_column(Float)
    skipped: Mapped[int] = mapped_column(Integer, default=0)
    created_at: Mapped[float] = mapped_column(Float)

    __table_args__ = (UniqueConstraint("team_id", "name", name="uq_pipeline_schedules_name"),)


class PipelineSecret(Base):
    """A team secret or variable, encrypted (Fernet) with a key kept outside the database."""

    __tablename__ = "pipeline_secrets"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    team_id: Mapped[int] = mapped_column(ForeignKey("teams.id"))
    name: Mapped[str] = mapped_column(String(100))
    ciphertext: Mapped[bytes] = mapped_column(LargeBinary)
    updated_at: Mapped[float] = mapped_column(Float)

    __table_args__ = (UniqueConstraint("team_id", "name", name="uq_pipeline_secrets_name"),)
