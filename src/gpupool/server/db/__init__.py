"""Persistence: tables, the Database (SQLite or PostgreSQL), Alembic migrations."""
