"""Who is calling: tokens to principals, the forgetting of revoked tokens and disabled users,
and the first-start bootstrap (admin + token).

A token is refused when it is unknown, revoked, expired, or its user is disabled or
deleted. Accepted tokens are remembered for ``_CACHE_SECONDS``; revocation, disabling and
deletion take effect on the very next request all the same, because the services that make
them call :func:`forget_tokens` / :func:`forget_user` after their commit (the server is one
process), and a remembered token's expiry is checked on every request.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from sqlalchemy import select

from gpupool.executors import accounts
from gpupool.server.auth import new_token, token_digest
from gpupool.server.db.database import Database
from gpupool.server.db.tables import Team, Token, User
from gpupool.server.services import audit
from gpupool.server.services.errors import Unauthorized

DEFAULT_TEAM = "default"
ADMIN_USER = "admin"
DELETED_MARK = "~deleted-"
"""Deleted users and teams are renamed ``<name>~deleted-<id>``: the name is free again and
``~`` can never appear in a live name."""


@dataclass(frozen=True)
class Principal:
    user_id: int
    user: str
    team_id: int
    team: str
    admin: bool
    scope: str = "all"
    """The token's: ``all``, or ``metrics`` (``GET /metrics`` only; ``api/deps.py`` refuses
    it everywhere else, the gateway does not know it)."""


@dataclass(frozen=True, slots=True)
class _Entry:
    fresh_until: float  # time.monotonic()
    principal: Principal
    token_id: int
    expires_at: float | None  # time.time(), as stored


_CACHE_SECONDS = 10.0
LAST_USED_EVERY_S = 60.0
"""``tokens.last_used_at`` is written at most this often per token (on a cache miss)."""
_cache: dict[str, _Entry] = {}
_epoch = 0  # bumped by every forget: a lookup that overlapped one is not cached
_forget_lock = threading.Lock()


def live_name(stored: str) -> str:
    """The name a user or team had before it was deleted (``ada~deleted-7`` -> ``ada``)."""
    return stored.split(DELETED_MARK, 1)[0]


def deleted_name(name: str, row_id: int) -> str:
    """The name a deleted row gets: unique, at most 100 characters, starting with ``name``."""
    suffix = f"{DELETED_MARK}{row_id}"
    return name[: 100 - len(suffix)] + suffix


def _when(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def authenticate(db: Database, token: str | None, address: str = "") -> Principal:
    """The principal owning ``token``; Unauthorized, saying why, when it is missing, unknown,
    revoked or expired or its user is disabled or deleted (each refusal is audited, see
    ``audit.refused``). ``address`` is the client's, for the audit log."""
    if not token:
        audit.refused(db, address, "missing token")
        raise Unauthorized("missing API token: send 'Authorization: Bearer <token>'")
    digest = token_digest(token)
    now = time.time()
    hit = _cache.get(digest)
    if hit is not None and hit.fresh_until > time.monotonic():
        if hit.expires_at is None or now < hit.expires_at:
            return hit.principal
        _cache.pop(digest, None)  # expired: the lookup below says so
    epoch = _epoch
    with db.session() as s:
        row = s.execute(
            select(Token, User.name, User.admin, User.disabled, User.deleted_at, Team.id,
                   Team.name)
            .join(User, Token.user_id == User.id)
            .join(Team, Team.id == User.team_id)
            .where(Token.token_hash == digest)
        ).first()
        if row is None:
            refusal: tuple[str, str | None, str, str] | None = (
                "invalid token", None, "", "invalid API token")
        else:
            tok, user, admin, disabled, user_deleted, team_id, team = row
            refusal = _refusal(tok, live_name(user), bool(disabled), user_deleted, now)
            if refusal is None and (
                tok.last_used_at is None or now - tok.last_used_at >= LAST_USED_EVERY_S
            ):
                tok.last_used_at = now
    if refusal is not None:
        reason, actor, target, message = refusal
        audit.refused(db, address, reason, actor, target)
        raise Unauthorized(message)
    principal = Principal(tok.user_id, user, team_id, team, bool(admin), tok.scope)
    if len(_cache) > 10_000:
        _cache.clear()
    if epoch == _epoch:
        _cache[digest] = _Entry(
            time.monotonic() + _CACHE_SECONDS, principal, tok.id, tok.expires_at)
    return principal


def _refusal(
    tok: Token, user: str, disabled: bool, user_deleted: float | None, now: float
) -> tuple[str, str | None, str, str] | None:
    """None when ``tok`` may be used now, else (audit reason, actor, target, message)."""
    target = f"token {tok.id}"
    if tok.revoked_at is not None:
        return ("revoked token", user, target,
                f"this API token (id {tok.id}, user {user!r}) was revoked at "
                f"{_when(tok.revoked_at)}; ask an admin for a new one")
    if user_deleted is not None:
        return ("deleted user", user, target, f"user {user!r} was deleted")
    if disabled:
        return ("disabled user", user, target,
                f"user {user!r} is disabled; an admin can enable it again "
                f"(gpupool admin user enable {user})")
    if tok.expires_at is not None and now >= tok.expires_at:
        return ("expired token", user, target,
                f"this API token (id {tok.id}, user {user!r}) expired at "
                f"{_when(tok.expires_at)}; ask an admin for a new one "
                f"(gpupool admin token create {user})")
    return None


def forget_tokens(token_ids: Iterable[int]) -> None:
    """Drop remembered tokens: the next request with one of them is checked afresh. Call
    after the commit that revoked them."""
    ids = set(token_ids)
    _forget(lambda entry: entry.token_id in ids)


def forget_user(user_id: int) -> None:
    """Drop every remembered token of the user (after disabling or deleting it)."""
    _forget(lambda entry: entry.principal.user_id == user_id)


def _forget(matches: Callable[[_Entry], bool]) -> None:
    global _epoch
    with _forget_lock:
        _epoch += 1
        for digest, entry in list(_cache.items()):
            if matches(entry):
                _cache.pop(digest, None)


def unix_account_for(name: str, taken: set[str]) -> tuple[str | None, bool]:
    """The Unix account a new gpupool user ``name`` gets when none is named: None when the
    server is not root (nothing is isolated), else ``gp-<name>`` (or a numbered variant not
    in ``taken``), created if missing. Returns (account, created); AccountError on failure.
    """
    if not accounts.isolating():
        return None, False
    account, created = accounts.ensure(accounts.derived_name(name, taken), name)
    return account.name, created


ADMIN_UNIX_ENV = "GPUPOOL_ADMIN_UNIX_USER"
"""An existing account the bootstrap admin's work runs as (the operator's explicit choice,
``root`` included); unset: ``gp-admin``, created."""


def _admin_account(taken: set[str]) -> tuple[str | None, bool]:
    named = os.environ.get(ADMIN_UNIX_ENV, "").strip()
    if named and accounts.isolating():
        return accounts.lookup(named).name, False
    return unix_account_for(ADMIN_USER, taken)


def bootstrap(db: Database, token_file: Path, default_quota_milli: int) -> str | None:
    """On first start: the ``default`` team (quota = the whole pool), the ``admin`` user and
    an admin token written to ``token_file`` (mode 0600). Returns the new token, or None when
    an admin already exists. Later starts keep the default team's quota in step with the pool.
    A server running as root maps the admin to its own Unix account (``gp-admin``, created
    if missing; AccountError when that fails) unless it has one already. Once the ``admin``
    user was deleted while other admins exist, nothing is created again.
    """
    now = time.time()
    with db.session() as s:
        team = s.scalar(select(Team).where(Team.name == DEFAULT_TEAM))
        if team is None:
            team = Team(
                name=DEFAULT_TEAM, quota_milli=default_quota_milli, borrow_limit_milli=0,
                created_at=now,
            )
            s.add(team)
            s.flush()
        admin = s.scalar(select(User).where(User.name == ADMIN_USER))
        if admin is None and s.scalar(
            select(User.id).where(User.admin, User.deleted_at.is_(None)).limit(1)
        ) is not None:
            return None  # the first admin was deleted; other admins run the pool
        if admin is not None and admin.unix_user is None and accounts.isolating():
            taken = {u for u in s.scalars(select(User.unix_user).where(
                User.unix_user.is_not(None), User.deleted_at.is_(None))) if u}
            admin.unix_user, admin.unix_created = _admin_account(taken)
        if admin is not None and token_file.exists():
            return None
        if admin is None:
            unix_user, created = _admin_account(set())
            admin = User(name=ADMIN_USER, team_id=team.id, admin=True, created_at=now,
                         unix_user=unix_user, unix_created=created)
            s.add(admin)
            s.flush()
        token = new_token()
        s.add(Token(user_id=admin.id, token_hash=token_digest(token), created_at=now))
    write_secret(token_file, token + "\n")
    return token


def write_secret(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` readable by the owner only (0600), atomically."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(text)
    os.chmod(tmp, 0o600)
    os.replace(tmp, path)
