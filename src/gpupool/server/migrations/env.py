"""Alembic environment: the engine comes from Database.migrate (config.attributes)."""

from __future__ import annotations

from alembic import context

from gpupool.server.db import pipeline_tables  # noqa: F401  (registers the pipeline tables)
from gpupool.server.db.tables import Base

config = context.config
engine = config.attributes["engine"]

with engine.begin() as connection:
    context.configure(connection=connection, target_metadata=Base.metadata)
    with context.begin_transaction():
        context.run_migrations()
