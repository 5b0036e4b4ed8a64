"""What the service controller (``server/service_watch.py``) writes, written as the
services write (the loop's own modules write only through the job store): a service's desired
replica count, a new replica (a job submitted on behalf of the service's owner, in its team's
queue, marked with the replica's origin) and a replica's stop (a cancel request, as ``gpupool
cancel`` writes it, with the controller's reason as its event).
"""

from __future__ import annotations

import time
from collections.abc import Callable

from sqlalchemy import select, update

from gpupool.server.db.database import Database
from gpupool.server.db.tables import Job, JobEvent, Service, Team, User
from gpupool.server.service_replicas import FINAL, ServiceRow, origin
from gpupool.server.services.identity import Principal
from gpupool.server.services.jobs import submit


def set_desired(db: Database, service_id: int, desired: int) -> None:
    with db.session() as s:
        s.execute(update(Service).where(Service.id == service_id).values(desired=desired))


def start_replica(db: Database, service: ServiceRow, known_models: list[str],
                  wake: Callable[[], None]) -> str:
    """Submit one replica of ``service``'s current generation as its owner (the service's
    creator, in its team's queue); the new job's id."""
    with db.session() as s:
        row = s.execute(select(Service.next_replica, Service.user_id, User.name, User.admin,
                               User.team_id, Team.name)
                        .join(User, User.id == Service.user_id)
                        .join(Team, Team.id == User.team_id)
                        .where(Service.id == service.id)).first()
        if row is None:
            return ""
        n, user_id, user, admin, team_id, team = row
        s.execute(update(Service).where(Service.id == service.id)
                  .values(next_replica=Service.next_replica + 1))
    owner = Principal(user_id=user_id, user=user, team_id=team_id, team=team, admin=admin)
    spec = service.spec.replica_spec().model_copy(update={"queue": service.team})
    view = submit(db, owner, spec, known_models, wake,
                  origin=origin(service.id, service.generation, n))
    return view.id


def stop_replica(db: Database, job_id: int, why: str) -> None:
    """Ask the loop to stop the replica (a cancel: SIGTERM, then SIGKILL after its grace),
    with ``why`` as its event."""
    with db.session() as s:
        job = s.execute(update(Job).where(Job.id == job_id, Job.phase.not_in(FINAL),
                                          Job.stop_requested.is_(None))
                        .values(stop_requested="cancel").returning(Job.phase)).first()
        if job is not None:
            s.add(JobEvent(job_id=job_id, at=time.time(), phase=job[0], message=why))
