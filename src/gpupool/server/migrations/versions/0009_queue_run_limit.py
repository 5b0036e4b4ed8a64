"""A queue's default run limit: how long its running jobs without a time limit are assumed
to run when the server estimates when a reservation starts. Null (every existing team):
the server's ``--default-run-limit``.

Revision ID: 0009
Revises: 0008
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # plain ADD COLUMN on both stores, as in 0008 (no batch copy of ``teams``)
    op.add_column("teams", sa.Column("default_run_limit_s", sa.Float, nullable=True))


def downgrade() -> None:
    op.drop_column("teams", "default_run_limit_s")
