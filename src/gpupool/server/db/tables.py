"""The database schema (SQLAlchemy 2 declarative). Times are UNIX seconds (float, UTC).

Changing a table means adding an Alembic revision under ``server/migrations/versions``.
"""

from __future__ import annotations

from typing import Any, ClassVar

from sqlalchemy import (
    JSON,
    Boolean,
    Float,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column


class Base(DeclarativeBase):
    type_annotation_map: ClassVar[dict[Any, Any]] = {dict[str, Any]: JSON, list[Any]: JSON}


class Team(Base):
    __tablename__ = "teams"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    name: Mapped[str] = mapped_column(String(100), unique=True)
    quota_milli: Mapped[int] = mapped_column(Integer, default=0)
    borrow_limit_milli: Mapped[int] = mapped_column(Integer, default=0)
    created_at: Mapped[float] = mapped_column(Float)
    deleted_at: Mapped[float | None] = mapped_column(Float, nullable=True)
    weight: Mapped[float] = mapped_column(Float, default=1.0)
    """Fair share: the team's share of the pool is in proportion to its weight (> 0)."""
    cohort: Mapped[str | None] = mapped_column(String(100), nullable=True)
    """Teams of one cohort lend each other their unused quota; null: in no cohort."""
    lend_limit_milli: Mapped[int | None] = mapped_column(Integer, nullable=True)
    """The most of its unused quota the team lends to its cohort; null: all of it."""
    default_run_limit_s: Mapped[float | None] = mapped_column(Float, nullable=True)
    """How long a running job of the queue without a time limit is assumed to run (for
    reservations); None: the server's ``--default-run-limit``."""
    notebook_idle_timeout_s: Mapped[float | None] = mapped_column(Float, nullable=True)
    """The idle timeout of the team's notebooks without their own; None: the server's
    ``--notebook-idle-timeout``."""
    notebook_max_idle_timeout_s: Mapped[float | None] = mapped_column(Float, nullable=True)
    """The longest idle timeout the team's notebooks may ask for; None: the server's
    ``--notebook-max-idle-timeout``."""
    notebook_max_lifetime_s: Mapped[float | None] = mapped_column(Float, nullable=True)
    """A notebook of the team running this long is suspended; None: the server's
    ``--notebook-max-lifetime``."""


class User(Base):
    __tablename__ = "users"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    name: Mapped[str] = mapped_column(String(100), unique=True)
    team_id: Mapped[int] = mapped_column(ForeignKey("teams.id"))
    admin: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[float] = mapped_column(Float)
    unix_user: Mapped[str | None] = mapped_column(String(32), nullable=True)
    """The Unix account the user's workloads run as (when the server is root); null: the
    server's own account (a server that is not root isolates nothing)."""
    unix_created: Mapped[bool] = mapped_column(Boolean, default=False)
    """The server created that account (and removes it when the user is deleted)."""
    disabled: Mapped[bool] = mapped_column(Boolean, default=False)
    deleted_at: Mapped[float | None] = mapped_column(Float, nullable=True)


class Token(Base):
    __tablename__ = "tokens"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id"))
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[float] = mapped_column(Float)
    expires_at: Mapped[float | None] = mapped_column(Float, nullable=True)
    last_used_at: Mapped[float | None] = mapped_column(Float, nullable=True)
    revoked_at: Mapped[float | None] = mapped_column(Float, nullable=True)
    scope: Mapped[str] = mapped_column(String(16), default="all", server_default="all")
    """``all``: what its user may do; ``metrics``: ``GET /metrics`` only (a scraper's)."""


class Job(Base):
    """One job. ``phase`` moves pending → starting → running → succeeded/failed/cancelled
    (and back to pending when preempted or retried). ``stop_requested`` is set by cancel
    ("cancel") or by the scheduler ("preempt"); the background loop acts on it."""

    __tablename__ = "jobs"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    name: Mapped[str] = mapped_column(String(100))
    team_id: Mapped[int] = mapped_column(ForeignKey("teams.id"))
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id"))
    queue: Mapped[str] = mapped_column(String(100))
    phase: Mapped[str] = mapped_column(String(16))
    priority: Mapped[int] = mapped_column(Integer, default=0)
    spec: Mapped[dict[str, Any]] = mapped_column(JSON)
    reason: Mapped[str] = mapped_column(Text, default="")
    node: Mapped[str | None] = mapped_column(String(200), nullable=True)
    gpus: Mapped[list[Any] | None] = mapped_column(JSON, nullable=True)
    gpu_milli: Mapped[int] = mapped_column(Integer, default=0)
    gpu_memory_mib: Mapped[int] = mapped_column(Integer, default=0)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    failures: Mapped[int] = mapped_column(Integer, default=0)
    exit_code: Mapped[int | None] = mapped_column(Integer, nullable=True)
    handle: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    stop_requested: Mapped[str | None] = mapped_column(String(16), nullable=True)
    stop_deadline: Mapped[float | None] = mapped_column(Float, nullable=True)
    created_at: Mapped[float] = mapped_column(Float)
    started_at: Mapped[float | None] = mapped_column(Float, nullable=True)
    ended_at: Mapped[float | None] = mapped_column(Float, nullable=True)
    enforcement: Mapped[str | None] = mapped_column(String(200), nullable=True)
    """How the running attempt's GPU share is enforced: "interposer", "whole GPU", or
    "none (...)" saying why not; null for CPU jobs and jobs never started."""
    ranks: Mapped[list[Any] | None] = mapped_column(JSON, nullable=True)
    """Multi-node jobs: one ``{"node", "gpus"}`` per node rank while placed (rank 0 is also
    in ``node``/``gpus``); ``handle`` then holds ``{"ranks": [handle, ...]}``."""
    isolation: Mapped[str | None] = mapped_column(String(200), nullable=True)
    """How the running attempt's processes are isolated, e.g. "bwrap as gp-ada" or
    "none (the server is not root)"; null for jobs never started."""
    origin: Mapped[str | None] = mapped_column(String(200), nullable=True)
    """What inside the server submitted the job, e.g. ``pipeline:<run>:<step>:<attempt>:<nonce>``
    for a pipeline step; null for jobs submitted over the API, which can never set it. Unique:
    the server finds its own jobs by it, never by a name a user can pick."""
    kind: Mapped[str] = mapped_column(String(16), default="job", server_default="job")
    """"job" or "notebook" (``schemas.jobs.Kind``)."""
    endpoint: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    """A running notebook's server: ``{"host", "port"}`` on its node (null otherwise)."""

    __table_args__ = (
        Index("ix_jobs_phase", "phase"),
        Index("ix_jobs_kind", "kind"),
        Index("ix_jobs_team_id", "team_id"),
        Index("ix_jobs_stop_requested", "stop_requested"),
        Index("ix_jobs_origin", "origin", unique=True),
    )


class IdempotencyKey(Base):
    """One ``Idempotency-Key`` of a job submit: the user's key, the SHA-256 of the job spec it
    came with, and the job it created. Unique per (user, key): of two concurrent submits with
    one key only one commits; the other reads the winner. Kept at least
    ``IDEMPOTENCY_TTL_S``; older rows are purged lazily by later keyed submits."""

    __tablename__ = "idempotency_keys"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id"))
    key: Mapped[str] = mapped_column(String(200))
    body_hash: Mapped[str] = mapped_column(String(64))
    job_id: Mapped[int] = mapped_column(ForeignKey("jobs.id"))
    created_at: Mapped[float] = mapped_column(Float)

    __table_args__ = (
        UniqueConstraint("user_id", "key", name="uq_idempotency_keys_user_key"),
        Index("ix_idempotency_keys_created_at", "created_at"),
    )


class UsageRecord(Base):
    """What one attempt of a job held, and when: ``gpu_milli`` is the milli-GPUs of all its
    nodes and ranks together, ``cpu_milli``/``memory_mib`` likewise; ``ended_at`` is null while
    the attempt holds them. One row per (job, attempt); fair share decays these into each
    team's recent usage (``services.usage_records``). The ``gpu_*`` columns are what NVML
    measured of the attempt (``services.gpu_usage``)."""

    __tablename__ = "usage_records"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    job_id: Mapped[int] = mapped_column(ForeignKey("jobs.id"))
    attempt: Mapped[int] = mapped_column(Integer)
    team_id: Mapped[int] = mapped_column(ForeignKey("teams.id"))
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id"))
    started_at: Mapped[float] = mapped_column(Float)
    ended_at: Mapped[float | None] = mapped_column(Float, nullable=True)
    gpu_milli: Mapped[int] = mapped_column(Integer, default=0)
    cpu_milli: Mapped[int] = mapped_column(Integer, default=0)
    memory_mib: Mapped[int] = mapped_column(Integer, default=0)
    # What NVML measured (services.gpu_usage; null until measured, and on pools without it)
    gpu_seconds_used: Mapped[float | None] = mapped_column(Float, nullable=True)
    gpu_measured_s: Mapped[float | None] = mapped_column(Float, nullable=True)
    gpu_util_peak: Mapped[float | None] = mapped_column(Float, nullable=True)
    gpu_memory_peak_mib: Mapped[int | None] = mapped_column(Integer, nullable=True)
    gpu_idle_since: Mapped[float | None] = mapped_column(Float, nullable=True)

    __table_args__ = (
        UniqueConstraint("job_id", "attempt", name="uq_usage_records_job_attempt"),
        Index("ix_usage_records_ended_at", "ended_at"),
    )


class JobEvent(Base):
    __tablename__ = "job_events"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    job_id: Mapped[int] = mapped_column(ForeignKey("jobs.id"), index=True)
    at: Mapped[float] = mapped_column(Float)
    phase: Mapped[str] = mapped_column(String(16))
    message: Mapped[str] = mapped_column(Text, default="")


class Node(Base):
    __tablename__ = "nodes"
    name: Mapped[str] = mapped_column(String(200), primary_key=True)
    cpu_milli: Mapped[int] = mapped_column(Integer)
    memory_mib: Mapped[int] = mapped_column(Integer)
    gpus: Mapped[list[Any]] = mapped_column(JSON)
    labels: Mapped[dict[str, Any]] = mapped_column(JSON)
    source: Mapped[str] = mapped_column(String(16))
    updated_at: Mapped[float] = mapped_column(Float)
    mechanisms: Mapped[list[Any] | None] = mapped_column(JSON, nullable=True)
    """GPU-sharing enforcement mechanisms the node offers, e.g. ["interposer"]."""


class AuditEvent(Base):
    """One admin action or refused sign-in. ``actor`` is the user who acted (null: unknown,
    e.g. a bad token); ``address`` the client's address."""

    __tablename__ = "audit_events"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    at: Mapped[float] = mapped_column(Float, index=True)
    actor: Mapped[str | None] = mapped_column(String(100), nullable=True)
    action: Mapped[str] = mapped_column(String(50))
    target: Mapped[str] = mapped_column(String(200), default="")
    detail: Mapped[str] = mapped_column(Text, default="")
    address: Mapped[str] = mapped_column(String(100), default="")


class Service(Base):
    """One inference service: its spec (``schemas.services.ServiceSpec``), the version of
    that spec (``generation``, +1 per change: replicas of older ones are rolled over) and
    how many replicas the controller wants now (``desired``). Its replicas are jobs of kind
    ``service`` whose origin is ``service:<id>:<generation>:<n>``. Deleting the row is
    deleting the service: the controller then stops replicas whose service is gone."""

    __tablename__ = "services"
    # an id is never given twice (SQLite would reuse a deleted last row's): replicas' origins
    # name it, and the jobs of a deleted service's replicas stay
    __table_args__ = ({"sqlite_autoincrement": True},)
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    name: Mapped[str] = mapped_column(String(63), unique=True)
    team_id: Mapped[int] = mapped_column(ForeignKey("teams.id"))
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id"))
    spec: Mapped[dict[str, Any]] = mapped_column(JSON)
    generation: Mapped[int] = mapped_column(Integer, default=1)
    desired: Mapped[int] = mapped_column(Integer, default=1)
    next_replica: Mapped[int] = mapped_column(Integer, default=1)
    """The number the next replica's origin gets (unique per service)."""
    created_at: Mapped[float] = mapped_column(Float)
    updated_at: Mapped[float] = mapped_column(Float)


class ServiceKey(Base):
    """An API key of one service: only its SHA-256 is kept. A revoked key stays, so that
    its name and dates can be listed."""

    __tablename__ = "service_keys"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    service_id: Mapped[int] = mapped_column(ForeignKey("services.id", ondelete="CASCADE"))
    name: Mapped[str] = mapped_column(String(100))
    key_hash: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[float] = mapped_column(Float)
    revoked_at: Mapped[float | None] = mapped_column(Float, nullable=True)

    __table_args__ = (UniqueConstraint("service_id", "name", name="uq_service_keys_name"),)


class CodeBundle(Base):
    """A code archive a team uploaded (``gpupool run --code``), by its SHA-256: a team sees
    and uses only its own (another team's upload of the same tree is a row of its own; the
    file on disk is shared, named by the digest)."""

    __tablename__ = "code_bundles"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    team_id: Mapped[int] = mapped_column(ForeignKey("teams.id"))
    digest: Mapped[str] = mapped_column(String(71))
    """``sha256:`` and 64 hex digits."""
    size: Mapped[int] = mapped_column(Integer)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id"))
    created_at: Mapped[float] = mapped_column(Float)

    __table_args__ = (UniqueConstraint("team_id", "digest", name="uq_code_bundles_team_digest"),)
