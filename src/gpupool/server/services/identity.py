"""Who is calling: tokens to principals, and the first-start bootstrap (admin + token)."""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import select

from gpupool.server.auth import new_token, token_digest
from gpupool.server.db.database import Database
from gpupool.server.db.tables import Team, Token, User
from gpupool.server.services.errors import Unauthorized

DEFAULT_TEAM = "default"
ADMIN_USER = "admin"


@dataclass(frozen=True)
class Principal:
    user_id: int
    user: str
    team_id: int
    team: str
    admin: bool


_CACHE_SECONDS = 10.0
_cache: dict[str, tuple[float, Principal]] = {}


def authenticate(db: Database, token: str | None) -> Principal:
    """The principal owning ``token``; Unauthorized when missing or unknown. Known tokens
    are remembered for a few seconds (tokens are never revoked today)."""
    if not token:
        raise Unauthorized("missing API token: send 'Authorization: Bearer <token>'")
    digest = token_digest(token)
    hit = _cache.get(digest)
    if hit is not None and hit[0] > time.monotonic():
        return hit[1]
    with db.session() as s:
        row = s.execute(
            select(User.id, User.name, Team.id, Team.name, User.admin)
            .join(Token, Token.user_id == User.id)
            .join(Team, Team.id == User.team_id)
            .where(Token.token_hash == digest)
        ).first()
    if row is None:
        raise Unauthorized("invalid API token")
    principal = Principal(row[0], row[1], row[2], row[3], bool(row[4]))
    if len(_cache) > 10_000:
        _cache.clear()
    _cache[digest] = (time.monotonic() + _CACHE_SECONDS, principal)
    return principal


def bootstrap(db: Database, token_file: Path, default_quota_milli: int) -> str | None:
    """On first start: the ``default`` team (quota = the whole pool), the ``admin`` user and
    an admin token written to ``token_file`` (mode 0600). Returns the new token, or None when
    an admin already exists. Later starts keep the default team's quota in step with the pool.
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
        if admin is not None and token_file.exists():
            return None
        if admin is None:
            admin = User(name=ADMIN_USER, team_id=team.id, admin=True, created_at=now)
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
