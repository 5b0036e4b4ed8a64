"""Team secrets and variables, encrypted at rest (Fernet, AES-128-CBC + HMAC) with a key
kept outside the database: ``$GPUPOOL_SECRET_KEY`` when set, else ``<data dir>/secret.key``
(created 0600 on first use). The API never returns a value; step logs mask them.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterable
from datetime import UTC, datetime
from pathlib import Path

from cryptography.fernet import Fernet, InvalidToken
from sqlalchemy import delete, select

from gpupool.schemas.pipelines import SecretView
from gpupool.server.db.database import Database
from gpupool.server.db.pipeline_tables import PipelineSecret
from gpupool.server.db.tables import Team
from gpupool.server.services.errors import Invalid, NotFound
from gpupool.server.services.identity import Principal

KEY_ENV = "GPUPOOL_SECRET_KEY"
MASK = "***"
MIN_MASKED = 3
"""Values (and lines of multi-line values) shorter than this are not masked: masking every
"a" or "1" in a log would hide the log, not the secret."""


def load_key(home: Path) -> bytes:
    """The Fernet key: from the environment, else the data dir's 0600 key file (created)."""
    env = os.environ.get(KEY_ENV, "").strip()
    if env:
        return env.encode()
    path = home / "secret.key"
    if not path.exists():
        key = Fernet.generate_key()
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as handle:
            handle.write(key + b"\n")
    return path.read_bytes().strip()


class SecretStore:
    """Encrypts on write, decrypts for the engine only."""

    def __init__(self, db: Database, home: Path) -> None:
        self.db = db
        self._fernet = Fernet(load_key(home))

    def put(self, principal: Principal, name: str, value: str) -> SecretView:
        now = time.time()
        token = self._fernet.encrypt(value.encode())
        with self.db.session() as s:
            row = s.scalars(select(PipelineSecret).where(
                PipelineSecret.team_id == principal.team_id, PipelineSecret.name == name)).first()
            if row is None:
                s.add(PipelineSecret(team_id=principal.team_id, name=name, ciphertext=token,
                                     updated_at=now))
            else:
                row.ciphertext = token
                row.updated_at = now
        when = datetime.fromtimestamp(now, UTC)
        return SecretView(name=name, team=principal.team, updated_at=when)

    def names(self, principal: Principal) -> list[SecretView]:
        with self.db.session() as s:
            rows = s.execute(
                select(PipelineSecret.name, Team.name, PipelineSecret.updated_at)
                .join(Team, Team.id == PipelineSecret.team_id)
                .where(PipelineSecret.team_id == principal.team_id)
                .order_by(PipelineSecret.name)
            ).all()
        return [SecretView(name=n, team=t, updated_at=datetime.fromtimestamp(u, UTC))
                for n, t, u in rows]

    def delete(self, principal: Principal, name: str) -> None:
        with self.db.session() as s:
            gone = s.execute(delete(PipelineSecret).where(
                PipelineSecret.team_id == principal.team_id, PipelineSecret.name == name))
            if not getattr(gone, "rowcount", 1):
                raise NotFound(f"no secret named {name!r} in team {principal.team}")

    def missing(self, team_id: int, names: Iterable[str]) -> list[str]:
        """Which of ``names`` the team has no secret for."""
        wanted = set(names)
        if not wanted:
            return []
        with self.db.session() as s:
            have = set(s.scalars(select(PipelineSecret.name).where(
                PipelineSecret.team_id == team_id, PipelineSecret.name.in_(wanted))).all())
        return sorted(wanted - have)

    def values(self, team_id: int, names: Iterable[str]) -> dict[str, str]:
        """Decrypted values of ``names`` (Invalid naming one that is missing or unreadable)."""
        wanted = set(names)
        if not wanted:
            return {}
        with self.db.session() as s:
            rows = s.execute(select(PipelineSecret.name, PipelineSecret.ciphertext).where(
                PipelineSecret.team_id == team_id, PipelineSecret.name.in_(wanted))).all()
        found: dict[str, str] = {}
        for name, token in rows:
            try:
                found[name] = self._fernet.decrypt(bytes(token)).decode()
            except InvalidToken:
                raise Invalid(f"secrets.{name}: cannot be decrypted with this server's key "
                              f"(was {KEY_ENV} or secret.key changed?)") from None
        for name in wanted - set(found):
            raise Invalid(f"secrets.{name}: no such secret in the team")
        return found


def mask_terms(values: Iterable[str]) -> list[str]:
    """What to hide in logs: each value and each line of a multi-line value, longest first."""
    terms: set[str] = set()
    for value in values:
        for piece in (value, *value.splitlines()):
            piece = piece.strip()
            if len(piece) >= MIN_MASKED:
                terms.add(piece)
    return sorted(terms, key=len, reverse=True)


def mask(text: str, terms: Iterable[str]) -> str:
    for term in terms:
        text = text.replace(term, MASK)
    return text

