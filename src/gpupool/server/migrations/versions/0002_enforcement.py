"""How a job's GPU share is enforced, and which mechanisms a node offers.

Revision ID: 0002
Revises: 0001
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("jobs") as batch:
        batch.add_column(sa.Column("enforcement", sa.String(200), nullable=True))
    with op.batch_alter_table("nodes") as batch:
        batch.add_column(sa.Column("mechanisms", sa.JSON, nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("nodes") as batch:
        batch.drop_column("mechanisms")
    with op.batch_alter_table("jobs") as batch:
        batch.drop_column("enforcement")
