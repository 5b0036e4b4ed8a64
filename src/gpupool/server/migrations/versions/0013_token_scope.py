"""A token's scope: ``all`` (every existing token: what its user may do) or ``metrics`` (a
scrape-only token: ``GET /metrics`` and nothing else).

Revision ID: 0013
Revises: 0012
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0013"
down_revision = "0012"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("tokens", sa.Column("scope", sa.String(16), nullable=False,
                                      server_default="all"))


def downgrade() -> None:
    with op.batch_alter_table("tokens") as batch:
        batch.drop_column("scope")
