"""The gateway's view of the control plane (``server/gateway/directory.py``), over the
database: who a token or a session's user is, where a notebook runs and with which secret,
and the requests the gateway may make (resume a suspended notebook, note activity)."""

from __future__ import annotations

from collections.abc import Callable

from sqlalchemy import select

from gpupool.schemas.jobs import Kind, Phase
from gpupool.server.db.database import Database
from gpupool.server.db.tables import Job, Team, User
from gpupool.server.gateway.directory import Target, Visitor
from gpupool.server.services.errors import Unauthorized
from gpupool.server.services.identity import authenticate
from gpupool.server.services.notebooks import request_resume

FINAL = tuple(p.value for p in Phase if p.final)


class NotebookDirectory:
    """``secret(job, attempt)``: a notebook attempt's Jupyter token; ``touch(job, at)``:
    activity seen by the gateway (the notebook watch's); ``wake`` wakes the loop."""

    def __init__(self, db: Database, secret: Callable[[int, int], str],
                 touch: Callable[[int, float], None], wake: Callable[[], None]) -> None:
        self.db = db
        self._secret = secret
        self._touch = touch
        self._wake = wake

    def authenticate(self, token: str) -> Visitor | None:
        try:
            who = authenticate(self.db, token)
        except Unauthorized:
            return None
        if who.scope != "all":  # a scrape-only token opens nothing
            return None
        return Visitor(who.user, who.team, who.admin)

    def visitor(self, user: str) -> Visitor | None:
        with self.db.read() as s:
            row = s.execute(select(User.admin, Team.name).join(Team, Team.id == User.team_id)
                            .where(User.name == user, User.disabled.is_(False),
                                   User.deleted_at.is_(None))).first()
        return None if row is None else Visitor(user, row[1], bool(row[0]))

    def notebook(self, nb_id: int) -> Target | None:
        with self.db.read() as s:
            row = s.execute(
                select(Job.phase, Job.attempts, Job.endpoint, User.name, Team.name)
                .join(User, User.id == Job.user_id).join(Team, Team.id == Job.team_id)
                .where(Job.id == nb_id, Job.kind == Kind.NOTEBOOK.value,
                       Job.phase.not_in(FINAL))).first()
        if row is None:
            return None
        phase, attempt, endpoint, user, team = row
        if phase == Phase.RUNNING.value and endpoint and endpoint.get("url"):
            return Target(nb_id, user, team, "ready", str(endpoint["host"]),
                          int(endpoint["port"]), self._secret(nb_id, attempt))
        state = "starting" if phase == Phase.RUNNING.value else phase
        return Target(nb_id, user, team, state)

    def resume(self, nb_id: int, visitor: Visitor) -> None:
        request_resume(self.db, nb_id, visitor.user, self._wake)

    def touch(self, nb_id: int, at: float) -> None:
        self._touch(nb_id, at)
