"""Users: creation with the Unix account their workloads run as, listing, disabling,
enabling and (soft) deletion. Admin only; every change is audited in its transaction.

Unix accounts (only when the server runs as root, ``accounts.isolating()``): a user gets the
account an admin names (it must exist; ``root`` only this way), else ``gp-<name>``, created
by the server if missing (``users.unix_created``). Two users share an account only when it
was named for them. A server that is not root maps nobody (``unix_user`` stays null).
"""

from __future__ import annotations

import contextlib
import time

from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from gpupool.executors import accounts
from gpupool.schemas.admin import UserCreate, UserDeleted, UserView
from gpupool.server.db.database import Database
from gpupool.server.db.tables import Team, Token, User
from gpupool.server.services import audit
from gpupool.server.services.admin import require_admin, still_in_use
from gpupool.server.services.errors import Conflict, Invalid, NotFound, ServiceError
from gpupool.server.services.identity import (
    Principal,
    deleted_name,
    forget_user,
    unix_account_for,
)


class AccountFailed(ServiceError):
    """The server could not create a Unix account (its own trouble, not the request's)."""

    status = 500


def _view(user: User, team: str) -> UserView:
    return UserView(name=user.name, team=team, admin=user.admin, disabled=user.disabled,
                    unix_user=user.unix_user)


def _live_user(s: Session, name: str) -> tuple[User, str]:
    row = s.execute(
        select(User, Team.name).join(Team, Team.id == User.team_id)
        .where(User.name == name, User.deleted_at.is_(None))
    ).first()
    if row is None:
        raise NotFound(f"no user named {name!r} (see: gpupool admin user list)")
    return row[0], row[1]


def _mapped_accounts(s: Session) -> set[str]:
    """Unix accounts live users are mapped to."""
    names = s.scalars(
        select(User.unix_user).where(User.unix_user.is_not(None), User.deleted_at.is_(None))
    )
    return {n for n in names if n}


def _account(body: UserCreate, taken: set[str]) -> tuple[str | None, bool]:
    """(unix account, created by us) for a new user; raises saying what is wrong."""
    if body.unix_user is not None:
        if not accounts.isolating():
            raise Invalid(
                f"unix_user: the server is not running as root, so every workload runs as "
                f"the server's own account and none can run as {body.unix_user!r}; leave "
                f"unix_user (--unix-user) out")
        try:
            accounts.lookup(body.unix_user)
        except accounts.AccountError as exc:
            raise Invalid(
                f"unix_user: {exc}; create it first (useradd {body.unix_user}) or leave "
                f"unix_user out and the server creates one for {body.name!r}") from None
        return body.unix_user, False
    try:
        return unix_account_for(body.name, taken)
    except accounts.AccountError as exc:
        raise AccountFailed(
            f"cannot give user {body.name!r} a Unix account: {exc}; the user was not "
            f"created") from None


def create_user(db: Database, principal: Principal, body: UserCreate, address: str = ""
                ) -> UserView:
    """A new user in a live team, mapped to a Unix account (see the module doc). No user
    row is left behind when the account cannot be had, and an account created here is
    removed again when the row cannot be written."""
    require_admin(principal)
    with db.session() as s:
        team = s.scalar(select(Team).where(Team.name == body.team, Team.deleted_at.is_(None)))
        if team is None:
            raise NotFound(f"team: no team named {body.team!r} (see: gpupool admin team list)")
        if s.scalar(select(User.id).where(User.name == body.name)) is not None:
            raise Conflict(f"name: a user named {body.name!r} already exists")
        team_id, taken = team.id, _mapped_accounts(s)
    unix_user, created = _account(body, taken)
    user = User(name=body.name, team_id=team_id, admin=body.admin, created_at=time.time(),
                unix_user=unix_user, unix_created=created)
    try:
        with db.session() as s:
            s.add(user)
            audit.record(s, principal.user, "user.create", body.name,
                         _created_detail(body, unix_user, created), address)
    except BaseException as exc:
        if created and unix_user:
            with contextlib.suppress(accounts.AccountError):
                accounts.remove(unix_user, body.name)
        if isinstance(exc, IntegrityError):
            raise Conflict(f"name: a user named {body.name!r} already exists") from None
        raise
    return _view(user, body.team)


def _created_detail(body: UserCreate, unix_user: str | None, created: bool) -> str:
    parts = [f"team {body.team}"] + (["admin"] if body.admin else [])
    if unix_user:
        parts.append(f"Unix account {unix_user}" + (" (created)" if created else ""))
    return ", ".join(parts)


def list_users(db: Database, principal: Principal) -> list[UserView]:
    """Live (not deleted) users by name, disabled ones included."""
    require_admin(principal)
    with db.read() as s:
        rows = s.execute(
            select(User, Team.name).join(Team, Team.id == User.team_id)
            .where(User.deleted_at.is_(None)).order_by(User.name)
        ).all()
        return [_view(user, team) for user, team in rows]


def _keep_an_admin(s: Session, user: User, doing: str) -> None:
    """Conflict when ``user`` is the last live, enabled admin (the pool would be locked)."""
    others = s.scalar(
        select(func.count()).select_from(User).where(
            User.admin, User.id != user.id, User.disabled.is_(False),
            User.deleted_at.is_(None)))
    if not others:
        raise Conflict(f"cannot {doing} {user.name!r}: it is the last enabled admin; make "
                       f"another one first (gpupool admin user create NAME --team TEAM --admin)")


def set_disabled(db: Database, principal: Principal, name: str, disabled: bool,
                 address: str = "") -> UserView:
    """Disable (or enable) a user. A disabled user's tokens are refused from the very next
    request on; their jobs already queued or running are left alone (an admin cancels them).
    Conflict when disabling oneself or the last enabled admin."""
    require_admin(principal)
    with db.session() as s:
        user, team = _live_user(s, name)
        if disabled and user.id == principal.user_id:
            raise Conflict("you cannot disable yourself; ask another admin")
        if disabled and user.admin and not user.disabled:
            _keep_an_admin(s, user, "disable")
        user.disabled = disabled
        audit.record(s, principal.user, "user.disable" if disabled else "user.enable", name,
                     "", address)
        view = _view(user, team)
    forget_user(user.id)
    return view


def delete_user(db: Database, principal: Principal, name: str, address: str = ""
                ) -> UserDeleted:
    """Soft-delete a user: tokens revoked, row kept (job history keeps its foreign keys) but
    renamed so the name is free again, and the Unix account removed when the server created
    it and no other live user is mapped to it. All or nothing: Conflict, changing nothing,
    while the user has active jobs, pipeline runs or schedules (the message names them), for
    oneself, the last enabled admin, or when the account cannot be removed (e.g. one of its
    processes still runs)."""
    require_admin(principal)
    now = time.time()
    with db.session() as s:
        user, _team = _live_user(s, name)
        if user.id == principal.user_id:
            raise Conflict("you cannot delete yourself; ask another admin")
        if user.admin and not user.disabled:
            _keep_an_admin(s, user, "delete")
        problem = still_in_use(s, f"user {name!r}", "user_id", user.id)
        if problem:
            raise Conflict(problem)
        tokens = list(s.scalars(
            select(Token).where(Token.user_id == user.id, Token.revoked_at.is_(None))))
        for token in tokens:
            token.revoked_at = now
        unix_user, removable = user.unix_user, user.unix_created
        shared = unix_user is not None and bool(s.scalar(
            select(func.count()).select_from(User).where(
                User.unix_user == unix_user, User.id != user.id, User.deleted_at.is_(None))))
        user.deleted_at, user.disabled = now, True
        user.name = deleted_name(name, user.id)
        removed, note = False, ""
        if unix_user and removable and shared:
            note = f"the Unix account {unix_user} was kept: other users are mapped to it"
        elif unix_user and removable:
            try:  # last, so that a failure rolls everything back
                removed = accounts.remove(unix_user, name)
            except accounts.AccountError as exc:
                raise Conflict(f"user {name!r} was not deleted: {exc}") from None
            if not removed:
                note = (f"the Unix account {unix_user} was not removed: it no longer exists "
                        f"or is not gpupool's account for {name!r}")
        detail = f"{len(tokens)} token(s) revoked"
        if unix_user:
            detail += f"; Unix account {unix_user} " + ("removed" if removed else "kept")
        audit.record(s, principal.user, "user.delete", name, detail, address)
    forget_user(user.id)
    return UserDeleted(name=name, tokens_revoked=len(tokens), unix_user=unix_user,
                       unix_removed=removed, note=note)
