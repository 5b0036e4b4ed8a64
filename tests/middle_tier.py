"""The middle tier's one setup, shared by its harnesses (inprocess.py, pool_twin.py,
inprocess_api.py): Settings, a migrated database, a fake inventory of ``nodes`` nodes of
``cards`` A100s each, and a real Controller over them with the given executor and clock,
launching inline (no launch threads). A new SQLite database is a copy of one migrated once
per test process (migrating costs most of a middle-tier setup)."""

from __future__ import annotations

import atexit
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from gpupool.core.cluster import NodeSpec
from gpupool.executors.inventory import LocalInventory, parse_fake_gpus
from gpupool.server.controller import Controller
from gpupool.server.db.database import Database
from gpupool.server.settings import Settings


class Clock:
    """A hand-moved clock: ``now`` is the time; calling it reads it."""

    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


_template: Path | None = None


def migrated_sqlite(path: Path) -> Database:
    """A SQLite database at ``path`` migrated to the newest revision: a copy of a template
    migrated once per process (the same schema and rows ``Database.migrate`` makes)."""
    global _template
    if _template is None:
        folder = Path(tempfile.mkdtemp(prefix="gp-schema-"))
        atexit.register(shutil.rmtree, folder, True)
        template = folder / "migrated.db"
        db = Database(f"sqlite:///{template}")
        db.migrate()
        db.dispose()  # the last connection closed: the WAL is checkpointed into the file
        assert not template.with_name(template.name + "-wal").exists()
        _template = template
    path.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(_template, path)
    return Database(f"sqlite:///{path}")


def fake_inventory(nodes: int, cards: int, cpu_milli: int = 16000,
                   memory_mib: int = 65536) -> LocalInventory:
    """``nodes`` nodes ``n0``, ``n1``, ... of ``cards`` fake A100-80GB each."""
    gpus = parse_fake_gpus(f"{cards}xA100-80GB")
    specs = tuple(NodeSpec(f"n{i}", cpu_milli, memory_mib, gpus) for i in range(nodes))
    return LocalInventory(specs, {s.name: tuple(range(cards)) for s in specs}, "fake")


def build_controller(tmp_path: Path, nodes: int, cards: int, executor: Any,
                     clock: Callable[[], float] | None = None, *, db: Database | None = None,
                     cpu_milli: int = 16000, memory_mib: int = 65536,
                     **settings: Any) -> tuple[Settings, Database, Controller]:
    """Settings (home ``tmp_path``, work dir ``tmp_path/work``, policy bestfit unless
    ``settings`` says otherwise), the database (``db``, already migrated, e.g. a PostgreSQL
    schema of ``db_backends.database``; default a new SQLite file under ``tmp_path``) and a
    Controller over :func:`fake_inventory` with ``executor`` and ``clock`` (default
    ``time.time``), launching inline."""
    if db is not None:
        settings["database_url"] = db.url
    made = Settings(**{"home": tmp_path, "work_dir": tmp_path / "work", "policy": "bestfit",
                       **settings})
    if db is None and made.database_url:
        db = Database(made.db_url)
        db.migrate()
    elif db is None:
        db = migrated_sqlite(made.home / "gpupool.db")
    controller = Controller(made, db, executor, fake_inventory(nodes, cards, cpu_milli,
                                                               memory_mib),
                            clock=clock or time.time, launch_threads=0)
    return made, db, controller


def backend_store(backend: str, tmp_path: Path) -> Iterator[Database | None]:
    """For a generator fixture over ``db_backends.BACKENDS``: None for SQLite (the server
    makes its own file, a copy of the migrated template), else a fresh PostgreSQL schema of
    ``db_backends.database`` (dropped afterwards; skipped when PostgreSQL is not there)."""
    if backend == "sqlite":
        yield None
        return
    from db_backends import database

    yield from database(backend, tmp_path)
