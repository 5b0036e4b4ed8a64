"""A team's notebook policy: the idle timeout of its notebooks without their own, the
longest idle timeout they may ask for, and how long one runs before it is suspended. Null
(every existing team): the server's ``--notebook-idle-timeout``,
``--notebook-max-idle-timeout`` and ``--notebook-max-lifetime``.

Revision ID: 0011
Revises: 0010
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None

_COLUMNS = ("notebook_idle_timeout_s", "notebook_max_idle_timeout_s", "notebook_max_lifetime_s")


def upgrade() -> None:
    # plain ADD COLUMN on both stores, as in 0009 (no batch copy of ``teams``)
    for name in _COLUMNS:
        op.add_column("teams", sa.Column(name, sa.Float, nullable=True))


def downgrade() -> None:
    for name in reversed(_COLUMNS):
        op.drop_column("teams", name)
