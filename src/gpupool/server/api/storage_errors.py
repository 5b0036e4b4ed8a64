"""Storage failures as clear answers instead of a bare 500.

Contract (``install`` puts the handlers on the app; ``storage_fault`` is the classifier):

- **507 Insufficient Storage**: a write found the disk full. SQLite's "database or disk is
  full" (``SQLITE_FULL``; also an I/O or open error while that directory has no space left),
  ``ENOSPC``/``EDQUOT`` from any file write, PostgreSQL's ``disk_full`` (53100). The detail
  names the directory that is full (the server's data dir for its SQLite database) and what
  to do. No Retry-After: retrying helps only once someone frees space.
- **503 Service Unavailable**, with ``Retry-After: 5``: the database cannot be reached or
  used for now. PostgreSQL connection refused, lost or timed out (driver errors without a
  SQLSTATE, classes 08, 53 other than 53100, 57), a pool with no free connection, SQLite
  busy/locked beyond its busy timeout, unable to open, or a disk I/O error (not "read-only":
  that is also a write on a read session, a bug). The detail names the database as
  ``scheme://user@host:port/name`` (never its password) or ``SQLite file /path``.
- Anything else is re-raised: the app answers 500 as before, with its traceback logged.

A database write that failed was rolled back (``Database.session``): it left nothing behind
(unless PostgreSQL was lost during the COMMIT itself: then, as for any lost answer, only an
``Idempotency-Key`` makes a resent submit safe), and the request can be sent again.
The server needs no restart: the next request opens connections afresh (PostgreSQL's pool
pings before use). Each kind of fault is logged as one warning per ``LOG_EVERY_S``.
"""

from __future__ import annotations

import errno
import logging
import os
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from sqlalchemy import text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeout

from gpupool.server.db.database import Database

log = logging.getLogger("gpupool.server")

RETRY_AFTER_S = 5
LOG_EVERY_S = 60.0
_NEARLY_FULL_BYTES = 64 * 1024
"""Less than this free in the database's directory: an I/O error there is a full disk."""

# SQLite primary result codes (sqlite3 exposes the extended code; the low byte is primary)
_SQLITE_BUSY, _SQLITE_LOCKED, _SQLITE_IOERR = 5, 6, 10
_SQLITE_FULL, _SQLITE_CANTOPEN = 13, 14
_SQLITE_UNAVAILABLE = {
    _SQLITE_BUSY: "the database file is locked by another writer for too long",
    _SQLITE_LOCKED: "the database file is locked by another writer for too long",
    _SQLITE_IOERR: "a disk I/O error on the database file",
    _SQLITE_CANTOPEN: "the database file cannot be opened",
}
_PG_DISK_FULL = "53100"
_PG_UNAVAILABLE_CLASSES = ("08", "53", "57")  # connection, resources, operator intervention


@dataclass(frozen=True)
class StorageFault:
    """How to answer a storage failure: ``status`` 503 or 507, ``detail`` for the body,
    ``retry_after`` seconds (None: no header), ``kind`` a short key for the log."""

    status: int
    detail: str
    retry_after: int | None
    kind: str


def describe_database(url: str) -> str:
    """``url`` as people may see it: ``scheme://user@host:port/name`` for a server (no
    password, no query), ``SQLite file /path`` for SQLite."""
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        return f"SQLite file {parsed.database or ':memory:'}"
    user = f"{parsed.username}@" if parsed.username else ""
    port = f":{parsed.port}" if parsed.port else ""
    return f"{parsed.get_backend_name()}://{user}{parsed.host or 'localhost'}{port}/" \
           f"{parsed.database or ''}"


def _free_bytes(directory: Path) -> int | None:
    try:
        stat = os.statvfs(directory)
    except OSError:
        return None
    return stat.f_bavail * stat.f_frsize


def _first_line(exc: BaseException, secret: str | None) -> str:
    line = (str(exc).strip().splitlines() or [type(exc).__name__])[0].strip()
    if secret:
        line = line.replace(secret, "***")
    return line[:200]


_ROLLED_BACK = "the write was rolled back and nothing of it was saved"


def _full(where: str, what: str, outcome: str = _ROLLED_BACK) -> StorageFault:
    return StorageFault(507, f"{where} is full ({what}): free space there; {outcome}; send "
                             "the request again once there is room", None, "disk full")


def _unavailable(database: str, why: str, kind: str) -> StorageFault:
    return StorageFault(503, f"the database {database} is unavailable ({why}); the request "
                             "did not complete, retry in a few seconds", RETRY_AFTER_S, kind)


def storage_fault(exc: BaseException, url: str, home: Path) -> StorageFault | None:
    """The answer for ``exc`` when it is a storage failure of the database at ``url`` (or
    of a file the server writes; ``home`` is its data dir), else None."""
    if isinstance(exc, OSError):
        return _os_fault(exc, home)
    database = describe_database(url)
    if isinstance(exc, PoolTimeout):
        return _unavailable(database, "every connection to it is busy", "pool exhausted")
    if not isinstance(exc, DBAPIError):
        return None
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        return _sqlite_fault(exc, parsed.database or "", home)
    orig = exc.orig
    sqlstate = getattr(orig, "sqlstate", None)
    reason = _first_line(orig or exc, parsed.password)
    if sqlstate == _PG_DISK_FULL:
        return _full(f"the disk of the database server of {database}", reason)
    if isinstance(sqlstate, str) and sqlstate[:2] in _PG_UNAVAILABLE_CLASSES:
        return _unavailable(database, reason, f"sqlstate {sqlstate}")
    if exc.connection_invalidated or (
        sqlstate is None and isinstance(exc, (OperationalError, InterfaceError))
    ):
        return _unavailable(database, reason, "unreachable")
    return None


def _sqlite_fault(exc: DBAPIError, path: str, home: Path) -> StorageFault | None:
    orig = exc.orig
    code = getattr(orig, "sqlite_errorcode", None)
    primary = code & 0xFF if isinstance(code, int) else None
    message = str(orig).lower()
    directory = Path(path).parent if path and path != ":memory:" else home
    where = (f"the server's data dir {directory}" if directory == home
             else f"the directory {directory} of the database file")
    if primary == _SQLITE_FULL or "database or disk is full" in message:
        return _full(where, f"SQLite could not write {Path(path).name or 'the database'}")
    if primary in (_SQLITE_IOERR, _SQLITE_CANTOPEN):
        free = _free_bytes(directory)
        if free is not None and free < _NEARLY_FULL_BYTES:
            return _full(where, f"SQLite: {message}")
    if primary in _SQLITE_UNAVAILABLE:
        return _unavailable(f"SQLite file {path}", _SQLITE_UNAVAILABLE[primary], "sqlite")
    if "unable to open" in message or "database is locked" in message:  # no error code
        return _unavailable(f"SQLite file {path}", message, "sqlite")
    return None


def _os_fault(exc: OSError, home: Path) -> StorageFault | None:
    if exc.errno not in (errno.ENOSPC, errno.EDQUOT):
        return None
    quota = " (disk quota exceeded)" if exc.errno == errno.EDQUOT else ""
    outcome = "the request did not complete"
    if exc.filename:
        target = Path(os.fsdecode(exc.filename))
        if target.is_relative_to(home):
            return _full(f"the server's data dir {home}{quota}", f"could not write {target}",
                         outcome)
        return _full(f"the directory {target.parent}{quota}", f"could not write {target.name}",
                     outcome)
    return _full(f"the server's data dir {home} (or another disk it writes){quota}",
                 exc.strerror or "no space left on device", outcome)


_last_logged: dict[str, float] = {}
_log_lock = threading.Lock()


def _log_once_in_a_while(fault: StorageFault, exc: BaseException) -> None:
    now = time.monotonic()
    with _log_lock:
        last = _last_logged.get(fault.kind)
        if last is not None and now - last < LOG_EVERY_S:
            return
        _last_logged[fault.kind] = now
    log.warning("answering %d: %s [%s: %s] (logged at most once per %.0f s)", fault.status,
                fault.detail, type(exc).__name__, _first_line(exc, None), LOG_EVERY_S)


def ping(db: Database) -> None:
    """One trivial read: raises what the database raises while it cannot be used."""
    with db.read() as session:
        session.execute(text("SELECT 1"))


def install(app: FastAPI, db: Database, home: Path) -> None:
    """Answer storage failures of requests to ``app`` as 503/507 (see the module doc);
    ``db`` is the server's database, ``home`` its data dir."""

    async def storage_error(_request: Request, exc: Exception) -> JSONResponse:
        fault = storage_fault(exc, db.url, home)
        if fault is None:
            raise exc  # not a storage failure: the app's 500, traceback logged
        _log_once_in_a_while(fault, exc)
        headers = {"Retry-After": str(fault.retry_after)} if fault.retry_after else None
        return JSONResponse({"detail": fault.detail}, status_code=fault.status, headers=headers)

    for kind in (DBAPIError, PoolTimeout, OSError):
        app.add_exception_handler(kind, storage_error)
