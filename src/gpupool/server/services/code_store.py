"""Code archives for jobs (``gpupool run --code DIR``), content-addressed.

A client packs a directory (``gpupool.sdk.code_pack``), asks whether its team already has
the archive's digest (``HEAD /api/v1/code/{digest}``) and uploads it only when not
(``PUT``). The server checks the body's SHA-256 against the digest, keeps the file once
under ``<data dir>/code/<hex>.tar.gz`` (0600, the data dir is the server's alone) and one
row per team and digest: a team can neither see nor use another team's uploads, even of the
same tree. A job names its archive with ``code: sha256:…``; the executor unpacks it, as the
job's account, into the attempt's directory before the command starts.
"""

from __future__ import annotations

import hashlib
import os
import re
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import anyio.to_thread
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from gpupool.server.db.database import Database
from gpupool.server.db.tables import CodeBundle
from gpupool.server.services.errors import Invalid, NotFound, TooLarge
from gpupool.server.services.identity import Principal

DIGEST = re.compile(r"^sha256:[0-9a-f]{64}$")


def folder(home: Path) -> Path:
    return home / "code"


def archive_path(home: Path, digest: str) -> Path:
    """Where the archive of ``digest`` lives (a valid digest: see :data:`DIGEST`)."""
    return folder(home) / (digest.removeprefix("sha256:") + ".tar.gz")


def _check(digest: str) -> None:
    if not DIGEST.match(digest):
        raise Invalid(f"digest: {digest!r} is not sha256: and 64 lower-case hex digits")


def has(db: Database, team_id: int, digest: str) -> bool:
    """The team uploaded ``digest`` (and the file is still there)."""
    _check(digest)
    with db.read() as s:
        found = s.scalar(select(CodeBundle.id).where(CodeBundle.team_id == team_id,
                                                     CodeBundle.digest == digest))
    return found is not None


def require(db: Database, home: Path, team_id: int, digest: str) -> Path:
    """The archive a job of ``team_id`` may use; Invalid naming the digest when the team
    never uploaded it."""
    if not has(db, team_id, digest) or not archive_path(home, digest).is_file():
        raise Invalid(f"code: {digest} was not uploaded by your team; upload it first "
                      "(gpupool run --code DIR does)")
    return archive_path(home, digest)


async def upload(db: Database, home: Path, caller: Principal, digest: str, limit_mib: int,
                 length: str | None, body: AsyncIterator[bytes]) -> bool:
    """Store the archive streamed in ``body`` as ``digest`` for the caller's team; True when
    the team did not have it. TooLarge (413) past ``limit_mib``, Invalid (422) when the body's
    SHA-256 is not ``digest``; nothing is kept then."""
    _check(digest)
    limit = limit_mib << 20
    declared = int(length) if length and length.strip().isdigit() else 0
    if declared > limit:
        raise _too_large(limit_mib)
    store = folder(home)
    store.mkdir(mode=0o700, exist_ok=True)
    tmp = store / f".{uuid.uuid4().hex}.upload"
    sha = hashlib.sha256()
    size = 0
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
        with os.fdopen(fd, "wb") as out:
            async for chunk in body:
                size += len(chunk)
                if size > limit:
                    raise _too_large(limit_mib)
                sha.update(chunk)
                out.write(chunk)
        if "sha256:" + sha.hexdigest() != digest:
            raise Invalid(f"body: its SHA-256 is not {digest} (the upload was cut short or "
                          "changed); nothing was kept")
        return bool(await anyio.to_thread.run_sync(_keep, db, home, caller, digest, tmp, size))
    finally:
        tmp.unlink(missing_ok=True)


def _keep(db: Database, home: Path, caller: Principal, digest: str, tmp: Path,
          size: int) -> bool:
    target = archive_path(home, digest)
    if not target.is_file():
        os.replace(tmp, target)
    try:
        with db.session() as s:
            if s.scalar(select(CodeBundle.id).where(CodeBundle.team_id == caller.team_id,
                                                    CodeBundle.digest == digest)) is not None:
                return False
            s.add(CodeBundle(team_id=caller.team_id, digest=digest, size=size,
                             user_id=caller.user_id, created_at=time.time()))
    except IntegrityError:  # the same team uploaded it concurrently
        return False
    return True


def keep(db: Database, home: Path, team_id: int, user_id: int, data: bytes) -> str:
    """Store an archive the server made itself (a pipeline step's inputs) for ``team_id``;
    its digest."""
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    store = folder(home)
    store.mkdir(mode=0o700, exist_ok=True)
    tmp = store / f".{uuid.uuid4().hex}.upload"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    with os.fdopen(fd, "wb") as out:
        out.write(data)
    try:
        _keep(db, home, Principal(user_id, "", team_id, "", False), digest, tmp, len(data))
    finally:
        tmp.unlink(missing_ok=True)
    return digest


def not_found(digest: str) -> NotFound:
    return NotFound(f"code {digest}: your team has not uploaded it")


def _too_large(limit_mib: int) -> TooLarge:
    return TooLarge(f"body: the code archive is larger than {limit_mib} MiB (the server's "
                    "limit, GPUPOOL_CODE_LIMIT_MIB); list what the job does not need in "
                    ".gitignore")
