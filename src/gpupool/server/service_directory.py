"""The gateway's view of the services (``server/gateway/service_directory.py``), over the
database and the service board: a service's team, whether it is public, and its ready
replicas' sockets; its API keys; and the two things the gateway tells the control plane
(a request waits for a replica; the traffic it sees)."""

from __future__ import annotations

from collections.abc import Callable

from sqlalchemy import select

from gpupool.schemas.services import ServiceSpec
from gpupool.server.db.database import Database
from gpupool.server.db.tables import Service, Team
from gpupool.server.gateway.service_directory import Load, Replica, ServiceTarget
from gpupool.server.service_board import ServiceBoard
from gpupool.server.service_replicas import replicas_of
from gpupool.server.services.inference import key_valid


class ServiceRoutes:
    """``poke`` asks the service controller for a pass soon."""

    def __init__(self, db: Database, board: ServiceBoard, poke: Callable[[], None]) -> None:
        self.db = db
        self.board = board
        self._poke = poke

    def service(self, name: str) -> ServiceTarget | None:
        with self.db.read() as s:
            row = s.execute(select(Service.id, Service.spec, Team.name)
                            .join(Team, Team.id == Service.team_id)
                            .where(Service.name == name)).first()
            if row is None:
                return None
            service_id, body, team = row
            replicas = replicas_of(s, service_id)
        spec = ServiceSpec.model_validate(body)
        ready = tuple(Replica(r.id, r.uds, self.board.draining_since(r.id) is not None)
                      for r in replicas
                      if r.uds and not r.stopping and self.board.is_ready(r.id))
        return ServiceTarget(name, str(team), spec.auth == "public", ready,
                             spec.wake_timeout_s)

    def key_valid(self, name: str, key: str) -> bool:
        return key_valid(self.db, name, key)

    def wake(self, name: str) -> None:
        self.board.wake(name)
        self._poke()

    def report(self, name: str, load: Load) -> None:
        self.board.report(name, load)
