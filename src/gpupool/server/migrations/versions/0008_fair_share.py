"""Fair share: a team's weight, its cohort and how much of its unused quota it lends there,
and one usage record per job attempt (what it held, from when to when).

Existing teams get weight 1, no cohort and no lending limit.

Revision ID: 0008
Revises: 0007
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Plain ALTER TABLE ... ADD COLUMN on both stores. (A batch that copied ``teams`` would
    # fail on SQLite once users and jobs point at it; a literal server default keeps
    # Alembic from copying.)
    op.add_column("teams", sa.Column("weight", sa.Float, nullable=False, server_default="1"))
    op.add_column("teams", sa.Column("cohort", sa.String(100), nullable=True))
    op.add_column("teams", sa.Column("lend_limit_milli", sa.Integer, nullable=True))
    op.create_table(
        "usage_records",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("job_id", sa.Integer, sa.ForeignKey("jobs.id"), nullable=False),
        sa.Column("attempt", sa.Integer, nullable=False),
        sa.Column("team_id", sa.Integer, sa.ForeignKey("teams.id"), nullable=False),
        sa.Column("user_id", sa.Integer, sa.ForeignKey("users.id"), nullable=False),
        sa.Column("started_at", sa.Float, nullable=False),
        sa.Column("ended_at", sa.Float, nullable=True),
        sa.Column("gpu_milli", sa.Integer, nullable=False, server_default="0"),
        sa.Column("cpu_milli", sa.Integer, nullable=False, server_default="0"),
        sa.Column("memory_mib", sa.Integer, nullable=False, server_default="0"),
        sa.UniqueConstraint("job_id", "attempt", name="uq_usage_records_job_attempt"),
    )
    op.create_index("ix_usage_records_ended_at", "usage_records", ["ended_at"])


def downgrade() -> None:
    op.drop_index("ix_usage_records_ended_at", "usage_records")
    op.drop_table("usage_records")
    # Plain ALTER TABLE ... DROP COLUMN (SQLite 3.35+): batch mode would copy and drop
    # ``teams``, which SQLite refuses while users and jobs point at it.
    for name in ("lend_limit_milli", "cohort", "weight"):
        op.drop_column("teams", name)
