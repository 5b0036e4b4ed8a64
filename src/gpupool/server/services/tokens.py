"""API tokens: creation with an optional expiry, listing (never the token itself) and
revocation. Admin only; every change is audited in its transaction. Revocation takes effect
on the very next request (``identity.forget_tokens`` runs after the commit).
"""

from __future__ import annotations

import time
from datetime import UTC, datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

from gpupool.schemas.admin import TokenCreate, TokenInfo, TokensRevoked, TokenState, TokenView
from gpupool.server.auth import new_token, token_digest
from gpupool.server.db.database import Database
from gpupool.server.db.tables import Token, User
from gpupool.server.services import audit
from gpupool.server.services.admin import require_admin
from gpupool.server.services.errors import Conflict, NotFound
from gpupool.server.services.identity import Principal, forget_tokens, live_name


def _dt(ts: float | None) -> datetime | None:
    return None if ts is None else datetime.fromtimestamp(ts, UTC)


def _live_user(s: Session, name: str) -> User:
    user = s.scalar(select(User).where(User.name == name, User.deleted_at.is_(None)))
    if user is None:
        raise NotFound(f"user: no user named {name!r} (see: gpupool admin user list)")
    return user


def create_token(db: Database, principal: Principal, body: TokenCreate, address: str = ""
                 ) -> TokenView:
    """A new token for a live, enabled user, valid for ``body.expires_in_s`` seconds (or
    until revoked). Conflict for a disabled user; NotFound for an unknown or deleted one."""
    require_admin(principal)
    token = new_token()
    now = time.time()
    expires_at = None if body.expires_in_s is None else now + body.expires_in_s
    with db.session() as s:
        user = _live_user(s, body.user)
        if user.disabled:
            raise Conflict(f"user {body.user!r} is disabled: enable it first "
                           f"(gpupool admin user enable {body.user}), then create a token")
        row = Token(user_id=user.id, token_hash=token_digest(token), created_at=now,
                    expires_at=expires_at, scope=body.scope)
        s.add(row)
        s.flush()
        expiry = "never expires" if expires_at is None else (
            f"expires {datetime.fromtimestamp(expires_at, UTC):%Y-%m-%d %H:%M:%S} UTC")
        scoped = "" if body.scope == "all" else f", scope {body.scope}"
        audit.record(s, principal.user, "token.create", f"token {row.id} of {body.user}",
                     expiry + scoped, address)
    return TokenView(id=row.id, user=body.user, token=token, expires_at=_dt(expires_at),
                     scope=body.scope)


def _state(token: Token, now: float) -> TokenState:
    if token.revoked_at is not None:
        return TokenState.REVOKED
    if token.expires_at is not None and now >= token.expires_at:
        return TokenState.EXPIRED
    return TokenState.LIVE


def list_tokens(db: Database, principal: Principal, user: str | None = None,
                include_all: bool = False) -> list[TokenInfo]:
    """Tokens by id: live ones of live users, or with ``include_all`` also revoked and
    expired ones and those of deleted users; only ``user``'s when given (NotFound if there
    is no such live user)."""
    require_admin(principal)
    now = time.time()
    with db.read() as s:
        query = select(Token, User.name).join(User, User.id == Token.user_id).order_by(Token.id)
        if user is not None:
            query = query.where(Token.user_id == _live_user(s, user).id)
        if not include_all:
            query = query.where(
                Token.revoked_at.is_(None), User.deleted_at.is_(None),
                (Token.expires_at.is_(None)) | (Token.expires_at > now))
        rows = s.execute(query).all()
    return [
        TokenInfo(
            id=t.id, user=live_name(name) if include_all else name, state=_state(t, now),
            created_at=datetime.fromtimestamp(t.created_at, UTC),
            expires_at=_dt(t.expires_at), last_used_at=_dt(t.last_used_at),
            revoked_at=_dt(t.revoked_at), scope="metrics" if t.scope == "metrics" else "all",
        )
        for t, name in rows
    ]


def revoke_token(db: Database, principal: Principal, token_id: int, address: str = ""
                 ) -> TokensRevoked:
    """Revoke one token; refused from the next request on. NotFound for an unknown id,
    Conflict when it was already revoked."""
    require_admin(principal)
    with db.session() as s:
        row = s.execute(
            select(Token, User.name).join(User, User.id == Token.user_id)
            .where(Token.id == token_id)
        ).first()
        if row is None:
            raise NotFound(f"no token with id {token_id} (see: gpupool admin token list)")
        token, owner = row
        if token.revoked_at is not None:
            raise Conflict(f"token {token_id} was already revoked at "
                           f"{datetime.fromtimestamp(token.revoked_at, UTC):%Y-%m-%d %H:%M:%S}"
                           " UTC")
        token.revoked_at = time.time()
        audit.record(s, principal.user, "token.revoke", f"token {token_id} of "
                     f"{live_name(owner)}", "", address)
    forget_tokens([token_id])
    return TokensRevoked(revoked=[token_id])


def revoke_user_tokens(db: Database, principal: Principal, user: str, address: str = ""
                       ) -> TokensRevoked:
    """Revoke every not yet revoked token of a live user (none is fine: an empty list)."""
    require_admin(principal)
    now = time.time()
    with db.session() as s:
        owner = _live_user(s, user)
        tokens = list(s.scalars(
            select(Token).where(Token.user_id == owner.id, Token.revoked_at.is_(None))
            .order_by(Token.id)))
        for token in tokens:
            token.revoked_at = now
        ids = [t.id for t in tokens]
        audit.record(s, principal.user, "token.revoke", f"all tokens of {user}",
                     f"{len(ids)} revoked" + (f": {', '.join(map(str, ids))}" if ids else ""),
                     address)
    forget_tokens(ids)
    return TokensRevoked(revoked=ids)
