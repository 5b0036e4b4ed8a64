"""Tenant isolation: Unix accounts of users, disabled/deleted users and teams, token expiry,
use and revocation, how a job's process is isolated, and the audit log.

Revision ID: 0005
Revises: 0004
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("users") as batch:
        batch.add_column(sa.Column("unix_user", sa.String(32), nullable=True))
        batch.add_column(sa.Column("unix_created", sa.Boolean, nullable=False,
                                   server_default=sa.false()))
        batch.add_column(sa.Column("disabled", sa.Boolean, nullable=False,
                                   server_default=sa.false()))
        batch.add_column(sa.Column("deleted_at", sa.Float, nullable=True))
    with op.batch_alter_table("teams") as batch:
        batch.add_column(sa.Column("deleted_at", sa.Float, nullable=True))
    with op.batch_alter_table("tokens") as batch:
        batch.add_column(sa.Column("expires_at", sa.Float, nullable=True))
        batch.add_column(sa.Column("last_used_at", sa.Float, nullable=True))
        batch.add_column(sa.Column("revoked_at", sa.Float, nullable=True))
    with op.batch_alter_table("jobs") as batch:
        batch.add_column(sa.Column("isolation", sa.String(200), nullable=True))
    op.create_table(
        "audit_events",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("at", sa.Float, nullable=False),
        sa.Column("actor", sa.String(100), nullable=True),
        sa.Column("action", sa.String(50), nullable=False),
        sa.Column("target", sa.String(200), nullable=False, server_default=""),
        sa.Column("detail", sa.Text, nullable=False, server_default=""),
        sa.Column("address", sa.String(100), nullable=False, server_default=""),
    )
    op.create_index("ix_audit_events_at", "audit_events", ["at"])


def downgrade() -> None:
    op.drop_index("ix_audit_events_at", "audit_events")
    op.drop_table("audit_events")
    with op.batch_alter_table("jobs") as batch:
        batch.drop_column("isolation")
    with op.batch_alter_table("tokens") as batch:
        for name in ("revoked_at", "last_used_at", "expires_at"):
            batch.drop_column(name)
    with op.batch_alter_table("teams") as batch:
        batch.drop_column("deleted_at")
    with op.batch_alter_table("users") as batch:
        for name in ("deleted_at", "disabled", "unix_created", "unix_user"):
            batch.drop_column(name)
