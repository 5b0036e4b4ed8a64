"""Jobs remember what inside the server submitted them (``jobs.origin``), so that pipeline
steps find their job by it and never by a name a user can pick.

Revision ID: 0006
Revises: 0005
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("jobs") as batch:
        batch.add_column(sa.Column("origin", sa.String(200), nullable=True))
    op.create_index("ix_jobs_origin", "jobs", ["origin"], unique=True)


def downgrade() -> None:
    op.drop_index("ix_jobs_origin", "jobs")
    with op.batch_alter_table("jobs") as batch:
        batch.drop_column("origin")
