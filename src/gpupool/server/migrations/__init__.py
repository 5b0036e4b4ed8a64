"""Alembic migrations of the gpupool database (run by Database.migrate)."""
