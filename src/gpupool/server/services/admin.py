"""Teams (queues with quotas), users and tokens. Admin only, except listing teams."""

from __future__ import annotations

import time

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from gpupool.schemas.admin import (
    TeamCreate,
    TeamUpdate,
    TeamView,
    TokenView,
    UserCreate,
    UserView,
)
from gpupool.server.auth import new_token, token_digest
from gpupool.server.db.database import Database
from gpupool.server.db.tables import Team, Token, User
from gpupool.server.services.errors import Conflict, Forbidden, NotFound
from gpupool.server.services.identity import Principal


def _require_admin(principal: Principal) -> None:
    if not principal.admin:
        raise Forbidden(f"user {principal.user!r} is not an admin")


def _milli(gpus: float) -> int:
    return round(gpus * 1000)


def _team_view(team: Team) -> TeamView:
    return TeamView(
        name=team.name,
        quota_gpus=team.quota_milli / 1000,
        borrow_limit_gpus=team.borrow_limit_milli / 1000,
    )


def create_team(db: Database, principal: Principal, body: TeamCreate) -> TeamView:
    _require_admin(principal)
    team = Team(
        name=body.name,
        quota_milli=_milli(body.quota_gpus),
        borrow_limit_milli=_milli(body.borrow_limit_gpus),
        created_at=time.time(),
    )
    try:
        with db.session() as s:
            s.add(team)
    except IntegrityError:
        raise Conflict(f"name: a team named {body.name!r} already exists") from None
    return _team_view(team)


def update_team(db: Database, principal: Principal, name: str, body: TeamUpdate) -> TeamView:
    _require_admin(principal)
    with db.session() as s:
        team = s.scalar(select(Team).where(Team.name == name))
        if team is None:
            raise NotFound(f"no team named {name!r}")
        if body.quota_gpus is not None:
            team.quota_milli = _milli(body.quota_gpus)
        if body.borrow_limit_gpus is not None:
            team.borrow_limit_milli = _milli(body.borrow_limit_gpus)
        return _team_view(team)


def list_teams(db: Database, principal: Principal) -> list[TeamView]:
    with db.session() as s:
        query = select(Team).order_by(Team.name)
        if not principal.admin:
            query = query.where(Team.id == principal.team_id)
        return [_team_view(t) for t in s.scalars(query)]


def create_user(db: Database, principal: Principal, body: UserCreate) -> UserView:
    _require_admin(principal)
    try:
        with db.session() as s:
            team = s.scalar(select(Team).where(Team.name == body.team))
            if team is None:
                raise NotFound(f"team: no team named {body.team!r}")
            s.add(User(name=body.name, team_id=team.id, admin=body.admin, created_at=time.time()))
    except IntegrityError:
        raise Conflict(f"name: a user named {body.name!r} already exists") from None
    return UserView(name=body.name, team=body.team, admin=body.admin)


def list_users(db: Database, principal: Principal) -> list[UserView]:
    _require_admin(principal)
    with db.session() as s:
        rows = s.execute(
            select(User.name, Team.name, User.admin)
            .join(Team, Team.id == User.team_id)
            .order_by(User.name)
        ).all()
    return [UserView(name=r[0], team=r[1], admin=bool(r[2])) for r in rows]


def create_token(db: Database, principal: Principal, user_name: str) -> TokenView:
    _require_admin(principal)
    token = new_token()
    with db.session() as s:
        user = s.scalar(select(User).where(User.name == user_name))
        if user is None:
            raise NotFound(f"user: no user named {user_name!r}")
        s.add(Token(user_id=user.id, token_hash=token_digest(token), created_at=time.time()))
    return TokenView(user=user_name, token=token)
