"""Services' replicas in the database: jobs of kind ``service`` whose origin says whose
replica they are (``service:<service id>:<generation>:<n>``; an origin is the server's own
mark, which no user can set). What the controller and the API read of them; what the
controller writes is in ``services/replica_orders.py``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from gpupool.schemas.jobs import Kind, Phase
from gpupool.schemas.services import ReplicaState, ReplicaView, ServiceSpec
from gpupool.server.db.database import Database
from gpupool.server.db.tables import Job, Service, Team
from gpupool.server.service_board import ServiceBoard

PREFIX = "service:"
FINAL = tuple(p.value for p in Phase if p.final)


def origin(service_id: int, generation: int, n: int) -> str:
    return f"{PREFIX}{service_id}:{generation}:{n}"


def parse_origin(text: str | None) -> tuple[int, int] | None:
    """(service id, generation) of a replica's origin; None for anything else."""
    if not text or not text.startswith(PREFIX):
        return None
    parts = text[len(PREFIX):].split(":")
    if len(parts) != 3 or not all(p.isdigit() for p in parts):
        return None
    return int(parts[0]), int(parts[1])


@dataclass(frozen=True)
class ReplicaJob:
    """A replica's job that has not ended."""

    id: int
    service_id: int
    generation: int
    phase: str
    stopping: bool
    endpoint: dict[str, Any] | None
    node: str | None
    gpus: list[Any] | None
    gpu_milli: int

    @property
    def uds(self) -> str:
        """The Unix socket of its front, once launched ("" before)."""
        if self.phase != Phase.RUNNING.value or not self.endpoint:
            return ""
        return str(self.endpoint.get("uds") or "")


def _replica_query() -> Any:
    return (select(Job.id, Job.origin, Job.phase, Job.stop_requested, Job.endpoint, Job.node,
                   Job.gpus, Job.gpu_milli)
            .where(Job.kind == Kind.SERVICE.value, Job.phase.not_in(FINAL))
            .order_by(Job.id))


def _rows(s: Session, query: Any) -> list[ReplicaJob]:
    out = []
    for job_id, mark, phase, stop, endpoint, node, gpus, milli in s.execute(query).all():
        parsed = parse_origin(mark)
        if parsed is not None:
            out.append(ReplicaJob(job_id, parsed[0], parsed[1], phase, stop is not None,
                                  endpoint, node, gpus, milli or 0))
    return out


def live_replicas(db: Database) -> list[ReplicaJob]:
    """Every replica job that has not ended, of every service (deleted ones' included)."""
    with db.read() as s:
        return _rows(s, _replica_query())


def replicas_of(s: Session, service_id: int) -> list[ReplicaJob]:
    return _rows(s, _replica_query().where(Job.origin.like(f"{PREFIX}{service_id}:%")))


def state_of(replica: ReplicaJob, board: ServiceBoard) -> ReplicaState:
    if replica.stopping:
        return "stopping"
    if board.draining_since(replica.id) is not None:
        return "draining"
    if board.is_ready(replica.id):
        return "ready"
    return "pending" if replica.phase == Phase.PENDING.value else "starting"


def replica_views(s: Session, service_id: int, name: str,
                  board: ServiceBoard) -> list[ReplicaView]:
    return [ReplicaView(id=str(r.id), generation=r.generation, state=state_of(r, board),
                        phase=Phase(r.phase), node=r.node, gpus=r.gpus,
                        gpu_share=(r.gpu_milli / 1000 if r.gpu_milli else
                                   (1.0 if r.gpus else 0.0)),
                        inflight=board.inflight_on(name, r.id))
            for r in replicas_of(s, service_id)]


@dataclass(frozen=True)
class ServiceRow:
    """A live service as the controller needs it."""

    id: int
    name: str
    team: str
    spec: ServiceSpec
    generation: int
    desired: int


def live_services(db: Database) -> list[ServiceRow]:
    with db.read() as s:
        rows = s.execute(select(Service.id, Service.name, Team.name, Service.spec,
                                Service.generation, Service.desired)
                         .join(Team, Team.id == Service.team_id)).all()
    return [ServiceRow(i, n, t, ServiceSpec.model_validate(spec), g, d)
            for i, n, t, spec, g, d in rows]


def recent_failures(db: Database, service_id: int, generation: int,
                    since: float) -> tuple[int, float]:
    """How many replicas of this generation failed since ``since`` (UNIX time), and when the
    last one ended (0.0: none)."""
    with db.read() as s:
        count, last = s.execute(
            select(func.count(Job.id), func.max(Job.ended_at))
            .where(Job.kind == Kind.SERVICE.value, Job.phase == Phase.FAILED.value,
                   Job.origin.like(f"{PREFIX}{service_id}:{generation}:%"),
                   Job.ended_at >= since)).one()
    return int(count or 0), float(last or 0.0)
