"""Inference services as users manage them: deploy (create, or update when the name
exists), list, describe, delete, and their API keys.

These functions only write the service's row (its spec, generation and desired replicas);
the service controller (``server/service_watch.py``) starts, drains and stops replicas to
match, and the gateway routes to the ready ones. Who may do what: a service belongs to the
team whose queue it runs in; its team's members and admins see and change it, nobody else
learns it exists (NotFound). Every change is audited in its transaction.
"""

from __future__ import annotations

import hashlib
import secrets
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from gpupool.schemas.services import (
    DeployResult,
    ServiceKeyView,
    ServiceSpec,
    ServiceView,
)
from gpupool.server.db.database import Database
from gpupool.server.db.tables import Service, ServiceKey, Team, User
from gpupool.server.service_board import ServiceBoard
from gpupool.server.service_replicas import replica_views
from gpupool.server.services import audit
from gpupool.server.services.errors import Conflict, Forbidden, Invalid, NotFound
from gpupool.server.services.identity import Principal
from gpupool.server.services.jobs import resolve_gpu_model

KEY_PREFIX = "gpsk_"
_AUDITED = {"created": "service.create", "updated": "service.update"}
UrlOf = Callable[[str], str]
"""A service's name → its full URL through the gateway."""


def _dt(ts: float) -> datetime:
    return datetime.fromtimestamp(ts, UTC)


def key_digest(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def _view(s: Session, row: Service, team: str, user: str, board: ServiceBoard,
          url_of: UrlOf) -> ServiceView:
    replicas = replica_views(s, row.id, row.name, board)
    traffic = board.traffic(row.name)
    return ServiceView(
        name=row.name, team=team, user=user, spec=ServiceSpec.model_validate(row.spec),
        generation=row.generation, url=url_of(row.name), desired_replicas=row.desired,
        ready_replicas=sum(1 for r in replicas if r.state in ("ready", "draining")),
        inflight=0 if traffic is None else traffic.inflight, replicas=replicas,
        last_cold_start_s=board.last_cold_start(row.name), created_at=_dt(row.created_at),
        updated_at=_dt(row.updated_at))


def _visible(s: Session, principal: Principal, name: str) -> tuple[Service, str, str]:
    found = s.execute(select(Service, Team.name, User.name)
                      .join(Team, Team.id == Service.team_id)
                      .join(User, User.id == Service.user_id)
                      .where(Service.name == name)).first()
    if found is None or (found[0].team_id != principal.team_id and not principal.admin):
        raise NotFound(f"service: no service named {name!r} (see: gpupool service ls)")
    return found[0], str(found[1]), str(found[2])


def deploy(db: Database, principal: Principal, spec: ServiceSpec, known_models: Sequence[str],
           board: ServiceBoard, url_of: UrlOf, poke: Callable[[], None],
           never_fits: Callable[[ServiceSpec], str | None] | None = None,
           address: str = "") -> DeployResult:
    """Create service ``spec.name`` in the queue's team (the caller's, unless an admin names
    another queue), or update it: a changed spec becomes the next generation (the controller
    rolls replicas over to it), the same spec changes nothing. Conflict when the name is
    another team's service; Invalid when the pool could never hold one replica."""
    resolve_gpu_model(spec.gpu_model, known_models)
    impossible = never_fits(spec) if never_fits is not None else None
    if impossible is not None:
        raise Invalid(impossible)
    queue = spec.queue or principal.team
    body = spec.model_dump(mode="json")
    now = time.time()
    try:
        with db.session() as s:
            team = s.execute(select(Team.id, Team.name).where(Team.name == queue)).first()
            if team is None:
                raise Invalid(f"queue: no queue named {queue!r}")
            if team[0] != principal.team_id and not principal.admin:
                raise Forbidden(f"queue: you may only deploy to your team's queue "
                                f"{principal.team!r}")
            row = s.scalar(select(Service).where(Service.name == spec.name))
            if row is None:
                row = Service(name=spec.name, team_id=team[0], user_id=principal.user_id,
                              spec=body, generation=1, desired=spec.replicas.min,
                              next_replica=1, created_at=now, updated_at=now)
                s.add(row)
                s.flush()
                action = "created"
            elif row.team_id != principal.team_id and not principal.admin:
                raise Conflict(f"name: service {spec.name!r} belongs to another team; "
                               "pick another name")
            elif row.team_id != team[0]:
                raise Conflict(f"queue: service {spec.name!r} runs in another team's queue; "
                               "delete it first to move it")
            elif row.spec == body:
                action = "unchanged"
            else:
                row.spec = body
                row.generation += 1
                row.desired = max(spec.replicas.min, min(spec.replicas.max, row.desired))
                row.updated_at = now
                action = "updated"
            if action != "unchanged":
                audit.record(s, principal.user, _AUDITED[action], spec.name,
                             f"generation {row.generation}", address)
            s.flush()
            user = s.scalar(select(User.name).where(User.id == row.user_id)) or ""
            view = _view(s, row, str(team[1]), user, board, url_of)
    except IntegrityError:
        raise Conflict(f"name: a service named {spec.name!r} was just created; "
                       "deploy again to update it") from None
    if action != "unchanged":
        poke()
    return DeployResult(action=action, service=view)  # type: ignore[arg-type]


def list_services(db: Database, principal: Principal, board: ServiceBoard,
                  url_of: UrlOf) -> list[ServiceView]:
    """The services the caller may see (their team's; admins: all), by name."""
    query = (select(Service, Team.name, User.name).join(Team, Team.id == Service.team_id)
             .join(User, User.id == Service.user_id).order_by(Service.name))
    if not principal.admin:
        query = query.where(Service.team_id == principal.team_id)
    with db.read() as s:
        return [_view(s, row, team, user, board, url_of)
                for row, team, user in s.execute(query).all()]


def get_service(db: Database, principal: Principal, name: str, board: ServiceBoard,
                url_of: UrlOf) -> ServiceView:
    with db.read() as s:
        row, team, user = _visible(s, principal, name)
        return _view(s, row, team, user, board, url_of)


def delete_service(db: Database, principal: Principal, name: str, board: ServiceBoard,
                   url_of: UrlOf, poke: Callable[[], None], address: str = "") -> ServiceView:
    """Delete the service: its name is free at once and its URL answers 404; the controller
    stops its replicas (requests in flight on them get their grace period)."""
    with db.session() as s:
        row, team, user = _visible(s, principal, name)
        view = _view(s, row, team, user, board, url_of)
        s.delete(row)
        audit.record(s, principal.user, "service.delete", name, "", address)
    board.drop_service(name)
    poke()
    return view


# -- API keys -----------------------------------------------------------------------------

def _key_view(row: ServiceKey, key: str | None = None) -> ServiceKeyView:
    return ServiceKeyView(id=str(row.id), name=row.name, created_at=_dt(row.created_at),
                          revoked_at=None if row.revoked_at is None else _dt(row.revoked_at),
                          key=key)


def create_key(db: Database, principal: Principal, name: str, key_name: str,
               address: str = "") -> ServiceKeyView:
    """A new API key for service ``name`` (shown once: only its hash is kept). Conflict when
    the service already has a key of that name."""
    key = KEY_PREFIX + secrets.token_urlsafe(32)
    try:
        with db.session() as s:
            row, _, _ = _visible(s, principal, name)
            entry = ServiceKey(service_id=row.id, name=key_name, key_hash=key_digest(key),
                               created_at=time.time())
            s.add(entry)
            s.flush()
            audit.record(s, principal.user, "service.key.create", name, key_name, address)
            return _key_view(entry, key)
    except IntegrityError:
        raise Conflict(f"name: service {name!r} already has a key named {key_name!r}") from None


def list_keys(db: Database, principal: Principal, name: str) -> list[ServiceKeyView]:
    with db.read() as s:
        row, _, _ = _visible(s, principal, name)
        keys = s.scalars(select(ServiceKey).where(ServiceKey.service_id == row.id)
                         .order_by(ServiceKey.id)).all()
        return [_key_view(k) for k in keys]


def revoke_key(db: Database, principal: Principal, name: str, key_name: str,
               address: str = "") -> ServiceKeyView:
    """Revoke the key: the gateway refuses it within a second."""
    with db.session() as s:
        row, _, _ = _visible(s, principal, name)
        entry = s.scalar(select(ServiceKey).where(ServiceKey.service_id == row.id,
                                                  ServiceKey.name == key_name))
        if entry is None:
            raise NotFound(f"key: service {name!r} has no key named {key_name!r}")
        if entry.revoked_at is None:
            entry.revoked_at = time.time()
            audit.record(s, principal.user, "service.key.revoke", name, key_name, address)
        return _key_view(entry)


def key_valid(db: Database, name: str, key: str) -> bool:
    """Whether ``key`` is a live API key of service ``name`` (the gateway asks)."""
    if not key.startswith(KEY_PREFIX):
        return False
    with db.read() as s:
        found = s.execute(select(ServiceKey.id).join(Service, Service.id == ServiceKey.service_id)
                          .where(Service.name == name, ServiceKey.key_hash == key_digest(key),
                                 ServiceKey.revoked_at.is_(None))).first()
    return found is not None

