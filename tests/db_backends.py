"""Real databases for db-level tests: a SQLite file, or a fresh schema of the PostgreSQL
test server (127.0.0.1:5432, db ``test``), dropped afterwards. Skips when PostgreSQL is not
there. Also: migrate to a given Alembic revision (for upgrade tests)."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from alembic import command
from alembic.config import Config

from gpupool.server.db.database import MIGRATIONS, Database
from server_harness import PG_DSN, PG_URL, postgres_available

BACKENDS = ["sqlite", "postgres"]


def database(backend: str, tmp_path: Path, migrate: bool = True) -> Iterator[Database]:
    """A Database of ``backend`` (migrated to head unless ``migrate`` is False); for a
    generator fixture: ``yield from database(request.param, tmp_path)``."""
    schema = None
    if backend == "sqlite":
        db = Database(f"sqlite:///{tmp_path / 'test.db'}")
    else:
        if why := postgres_available():
            pytest.skip(why)
        import psycopg

        schema = "gp_" + uuid.uuid4().hex[:12]
        with psycopg.connect(PG_DSN, autocommit=True) as conn:
            conn.execute(f"CREATE SCHEMA {schema}")
        db = Database(f"{PG_URL}?options=-csearch_path%3D{schema}")
    try:
        if migrate:
            db.migrate()
        yield db
    finally:
        db.dispose()
        if schema is not None:
            import psycopg

            with psycopg.connect(PG_DSN, autocommit=True) as conn:
                conn.execute(f"DROP SCHEMA {schema} CASCADE")


def migrate_to(db: Database, revision: str) -> None:
    """Upgrade (or downgrade) ``db``'s schema to ``revision`` ("head" for the newest)."""
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.attributes["engine"] = db.engine
    current = _current(db)
    if revision == "head" or current is None or revision > current:
        command.upgrade(config, revision)
    else:
        command.downgrade(config, revision)


def _current(db: Database) -> str | None:
    from sqlalchemy import inspect, text

    with db.engine.connect() as conn:
        if not inspect(conn).has_table("alembic_version"):
            return None
        return conn.execute(text("SELECT version_num FROM alembic_version")).scalar()
