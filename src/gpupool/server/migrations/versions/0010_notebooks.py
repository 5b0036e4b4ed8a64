"""Workloads of more than one kind (batch jobs and notebooks), and where a running
notebook's server listens (its node's address and port, written when it is launched).

Revision ID: 0010
Revises: 0009
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # plain ADD COLUMN on both stores, as in 0008; every existing row is a batch job
    op.add_column("jobs", sa.Column("kind", sa.String(16), nullable=False,
                                    server_default="job"))
    op.add_column("jobs", sa.Column("endpoint", sa.JSON, nullable=True))
    op.create_index("ix_jobs_kind", "jobs", ["kind"])


def downgrade() -> None:
    op.drop_index("ix_jobs_kind", "jobs")
    op.drop_column("jobs", "endpoint")
    op.drop_column("jobs", "kind")
