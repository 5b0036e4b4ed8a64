"""``Database.read()``: a read-only session that runs while a write transaction is open
(SQLite in WAL mode: readers take no write lock), sees one snapshot, and refuses writes.
In-process; no timing asserts (the events' timeouts only guard against a deadlock)."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import func, select
from sqlalchemy.exc import DBAPIError

from db_backends import BACKENDS, database
from gpupool.server.db.database import Database
from gpupool.server.db.tables import Team

GUARD_S = 20  # a deadlock guard, not a timing bound


def _teams(db: Database) -> int:
    with db.read() as s:
        return int(s.scalar(select(func.count()).select_from(Team)) or 0)


def _add_team(db: Database, name: str) -> None:
    with db.session() as s:
        s.add(Team(name=name, quota_milli=0, borrow_limit_milli=0, created_at=time.time()))


@pytest.fixture
def sqlite_db(tmp_path: Path) -> Iterator[Database]:
    db = Database(f"sqlite:///{tmp_path / 'read.db'}")
    db.migrate()
    yield db
    db.dispose()


@pytest.fixture(params=BACKENDS)
def any_db(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Database]:
    yield from database(request.param, tmp_path)


def test_read_completes_while_a_write_transaction_is_open(sqlite_db: Database) -> None:
    """A writer holds the write lock with an uncommitted insert; a read in another thread
    finishes meanwhile and sees only committed rows. Before ``read()`` existed, the read
    waited for the writer's lock (here: forever, until the guard fired)."""
    db = sqlite_db
    _add_team(db, "committed")
    in_write = threading.Event()
    read_done = threading.Event()
    errors: list[BaseException] = []

    def writer() -> None:
        try:
            with db.session() as s:
                s.add(Team(name="uncommitted", quota_milli=0, borrow_limit_milli=0,
                           created_at=time.time()))
                s.flush()  # the row is written to this transaction; SQLite's write lock held
                in_write.set()
                read_done.wait(GUARD_S)  # hold the transaction open until the read is back
        except BaseException as exc:  # reported by the main thread
            errors.append(exc)
            in_write.set()

    seen: list[int] = []

    def reader() -> None:
        try:
            seen.append(_teams(db))
        except BaseException as exc:
            errors.append(exc)
        finally:
            read_done.set()

    w = threading.Thread(target=writer)
    w.start()
    assert in_write.wait(GUARD_S)
    r = threading.Thread(target=reader)
    r.start()
    finished_while_writing = read_done.wait(GUARD_S)
    w.join(GUARD_S)
    r.join(GUARD_S)
    assert not errors, errors
    assert finished_while_writing, "the read waited for the open write transaction"
    assert seen == [1]  # the committed team only, not the writer's uncommitted one
    assert _teams(db) == 2  # the writer committed after the read


def test_a_read_session_is_one_snapshot(sqlite_db: Database) -> None:
    """A write committed while a read session is open is not seen by that session (its
    statements agree with one another), and is seen by the next one."""
    db = sqlite_db
    _add_team(db, "a")
    with db.read() as s:
        before = s.scalar(select(func.count()).select_from(Team))
        writer = threading.Thread(target=_add_team, args=(db, "b"))
        writer.start()
        writer.join(GUARD_S)
        assert not writer.is_alive()
        assert s.scalar(select(func.count()).select_from(Team)) == before == 1
    assert _teams(db) == 2


def test_a_read_session_refuses_writes(any_db: Database) -> None:
    with pytest.raises(DBAPIError), any_db.read() as s:
        s.add(Team(name="nope", quota_milli=0, borrow_limit_milli=0, created_at=time.time()))
        s.flush()
    assert _teams(any_db) == 0
    _add_team(any_db, "yes")  # the write path is unaffected
    assert _teams(any_db) == 1


def test_in_memory_sqlite_reads_through_the_write_session() -> None:
    """One in-memory database per connection: a second pool would read an empty one."""
    db = Database("sqlite://")
    try:
        db.migrate()
        _add_team(db, "t")
        assert _teams(db) == 1
    finally:
        db.dispose()
