"""Pipelines: runs, steps, cron schedules, encrypted team secrets.

Revision ID: 0004
Revises: 0003
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def _id() -> sa.Column[int]:
    return sa.Column("id", sa.Integer, primary_key=True, autoincrement=True)


def upgrade() -> None:
    op.create_table(
        "pipeline_runs",
        _id(),
        sa.Column("name", sa.String(100), nullable=False),
        sa.Column("team_id", sa.Integer, sa.ForeignKey("teams.id"), nullable=False),
        sa.Column("user_id", sa.Integer, sa.ForeignKey("users.id"), nullable=False),
        sa.Column("spec", sa.JSON, nullable=False),
        sa.Column("params", sa.JSON, nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("priority", sa.Integer, nullable=False),
        sa.Column("trigger", sa.String(16), nullable=False),
        sa.Column("message", sa.Text, nullable=False),
        sa.Column("schedule_id", sa.Integer, nullable=True),
        sa.Column("scheduled_for", sa.Float, nullable=True),
        sa.Column("parent_run_id", sa.Integer, nullable=True),
        sa.Column("parent_step", sa.String(100), nullable=True),
        sa.Column("retry_of", sa.Integer, nullable=True),
        sa.Column("cancel_requested", sa.Boolean, nullable=False),
        sa.Column("created_at", sa.Float, nullable=False),
        sa.Column("started_at", sa.Float, nullable=True),
        sa.Column("ended_at", sa.Float, nullable=True),
    )
    op.create_index("ix_pipeline_runs_state", "pipeline_runs", ["state"])
    op.create_index("ix_pipeline_runs_parent", "pipeline_runs", ["parent_run_id", "parent_step"])
    op.create_table(
        "pipeline_steps",
        _id(),
        sa.Column("run_id", sa.Integer, sa.ForeignKey("pipeline_runs.id"), nullable=False),
        sa.Column("name", sa.String(100), nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("depends_on", sa.JSON, nullable=False),
        sa.Column("attempt", sa.Integer, nullable=False),
        sa.Column("handle", sa.JSON, nullable=True),
        sa.Column("outputs", sa.JSON, nullable=False),
        sa.Column("files", sa.JSON, nullable=False),
        sa.Column("message", sa.Text, nullable=False),
        sa.Column("reused_from", sa.Integer, nullable=True),
        sa.Column("next_try_at", sa.Float, nullable=True),
        sa.Column("deadline", sa.Float, nullable=True),
        sa.Column("started_at", sa.Float, nullable=True),
        sa.Column("ended_at", sa.Float, nullable=True),
        sa.UniqueConstraint("run_id", "name", name="uq_pipeline_steps_run_name"),
    )
    op.create_index("ix_pipeline_steps_run_id", "pipeline_steps", ["run_id"])
    op.create_table(
        "pipeline_schedules",
        _id(),
        sa.Column("name", sa.String(100), nullable=False),
        sa.Column("team_id", sa.Integer, sa.ForeignKey("teams.id"), nullable=False),
        sa.Column("user_id", sa.Integer, sa.ForeignKey("users.id"), nullable=False),
        sa.Column("spec", sa.JSON, nullable=False),
        sa.Column("params", sa.JSON, nullable=False),
        sa.Column("cron", sa.String(200), nullable=False),
        sa.Column("concurrency", sa.String(16), nullable=False),
        sa.Column("catchup_limit", sa.Integer, nullable=False),
        sa.Column("priority", sa.Integer, nullable=False),
        sa.Column("enabled", sa.Boolean, nullable=False),
        sa.Column("last_fired_for", sa.Float, nullable=False),
        sa.Column("skipped", sa.Integer, nullable=False),
        sa.Column("created_at", sa.Float, nullable=False),
        sa.UniqueConstraint("team_id", "name", name="uq_pipeline_schedules_name"),
    )
    op.create_table(
        "pipeline_secrets",
        _id(),
        sa.Column("team_id", sa.Integer, sa.ForeignKey("teams.id"), nullable=False),
        sa.Column("name", sa.String(100), nullable=False),
        sa.Column("ciphertext", sa.LargeBinary, nullable=False),
        sa.Column("updated_at", sa.Float, nullable=False),
        sa.UniqueConstraint("team_id", "name", name="uq_pipeline_secrets_name"),
    )


def downgrade() -> None:
    op.drop_table("pipeline_secrets")
    op.drop_table("pipeline_schedules")
    op.drop_index("ix_pipeline_steps_run_id", "pipeline_steps")
    op.drop_table("pipeline_steps")
    op.drop_index("ix_pipeline_runs_parent", "pipeline_runs")
    op.drop_index("ix_pipeline_runs_state", "pipeline_runs")
    op.drop_table("pipeline_runs")
