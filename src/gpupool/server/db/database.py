"""The one class that knows SQLite from PostgreSQL: engine, sessions, migrations."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from sqlalchemy import Engine, create_engine, event, text
from sqlalchemy.engine import Connection, make_url
from sqlalchemy.orm import Session, sessionmaker

MIGRATIONS = Path(__file__).resolve().parents[1] / "migrations"
CONNECT_TIMEOUT_S = 5
"""PostgreSQL: seconds to wait for a connection (unless the URL sets ``connect_timeout``)."""


def normalise_url(url: str) -> str:
    """Accept ``postgresql://`` and ``postgres://`` and use the psycopg 3 driver."""
    for prefix in ("postgresql://", "postgres://"):
        if url.startswith(prefix):
            return "postgresql+psycopg://" + url[len(prefix) :]
    return url


class Database:
    """Engine + session factories. SQLite gets WAL, a busy timeout and foreign keys; both
    backends are migrated to the newest Alembic revision by ``migrate``.

    ``session()`` is for anything that writes, or reads to decide what to write: on SQLite
    those are serialised by an in-process lock. ``read()`` is for requests that only read
    (listings, a job's view): on a SQLite file it takes no lock and uses its own pool of
    read-only connections, each session one snapshot (WAL readers don't block the writer,
    nor it them); on PostgreSQL it is a read-only transaction."""

    def __init__(self, url: str) -> None:
        self.url = normalise_url(url)
        self.is_sqlite = self.url.startswith("sqlite")
        kwargs: dict[str, Any] = {"future": True}
        if self.is_sqlite:
            kwargs["connect_args"] = {"check_same_thread": False, "timeout": 30}
        else:
            # pre-ping: a connection the server lost (restarted, network cut) is replaced,
            # not handed to a request. libpq waits forever for an unanswered connect by
            # default: give up after CONNECT_TIMEOUT_S unless the URL says otherwise (the API
            # answers 503, see api/storage_errors.py).
            kwargs.update(pool_size=10, max_overflow=20, pool_pre_ping=True)
            if "connect_timeout" not in make_url(self.url).query:
                kwargs["connect_args"] = {"connect_timeout": CONNECT_TIMEOUT_S}
        self.engine: Engine = create_engine(self.url, **kwargs)
        if self.is_sqlite:
            event.listen(self.engine, "connect", _sqlite_pragmas)
        self._sessions = sessionmaker(self.engine, expire_on_commit=False)
        # SQLite allows one writer; its busy handler *sleeps* between retries, which caps
        # throughput under concurrent requests. An in-process lock hands over at once.
        self._write_lock: threading.Lock | None = threading.Lock() if self.is_sqlite else None
        self._read_engine: Engine | None = None
        self._reads = self._sessions
        if self.is_sqlite and not _in_memory(self.url):
            # As many connections as the API's worker threads (anyio's default, 40), so a
            # burst of listings waits on the CPU, not on the pool.
            self._read_engine = create_engine(
                self.url, future=True, pool_size=8, max_overflow=32,
                connect_args={"check_same_thread": False, "timeout": 30},
            )
            event.listen(self._read_engine, "connect", _sqlite_read_pragmas)
            event.listen(self._read_engine, "begin", _sqlite_begin)
            self._reads = sessionmaker(self._read_engine, expire_on_commit=False)

    @contextmanager
    def session(self) -> Iterator[Session]:
        """A session whose transaction commits on success and rolls back on error."""
        with self._write_lock or nullcontext(), self._sessions() as session, session.begin():
            yield session

    @contextmanager
    def read(self) -> Iterator[Session]:
        """A session that only reads, concurrently with writes and other reads. A write in
        it fails (SQLite ``query_only``, PostgreSQL ``READ ONLY``), so never use it to
        read what decides a write: that belongs in the writing ``session()``. An in-memory
        SQLite database has one connection's worth of data, so there it is ``session()``."""
        if self.is_sqlite and self._read_engine is None:
            with self.session() as session:
                yield session
            return
        with self._reads() as session, session.begin():
            if not self.is_sqlite:
                session.execute(text("SET TRANSACTION READ ONLY"))
            yield session

    def migrate(self) -> None:
        """Bring the schema to the newest revision (idempotent)."""
        config = Config()
        config.set_main_option("script_location", str(MIGRATIONS))
        config.attributes["engine"] = self.engine
        command.upgrade(config, "head")

    def dispose(self) -> None:
        self.engine.dispose()
        if self._read_engine is not None:
            self._read_engine.dispose()


def _in_memory(url: str) -> bool:
    parsed = make_url(url)
    database = parsed.database or ""
    return database in ("", ":memory:") or parsed.query.get("mode") == "memory"


def _sqlite_pragmas(connection: Any, _record: Any) -> None:
    cursor = connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA busy_timeout=30000")
    cursor.close()


def _sqlite_read_pragmas(connection: Any, _record: Any) -> None:
    """A read connection: no journal-mode change (the writer sets WAL), writes refused, and
    the driver's implicit transactions off so that ``_sqlite_begin`` opens each one."""
    connection.isolation_level = None
    cursor = connection.cursor()
    cursor.execute("PRAGMA busy_timeout=30000")
    cursor.execute("PRAGMA query_only=ON")
    cursor.close()


def _sqlite_begin(connection: Connection) -> None:
    """pysqlite begins no transaction before a SELECT, so each statement would read its own
    snapshot; an explicit BEGIN makes the session's reads agree with one another."""
    connection.exec_driver_sql("BEGIN")
