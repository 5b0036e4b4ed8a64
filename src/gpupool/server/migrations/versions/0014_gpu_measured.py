"""What NVML measured of each attempt, on its usage record: used GPU-seconds, the seconds
measured, peak utilisation, peak GPU memory on one card (MiB), and since when its GPUs have
been flagged idle (null: not idle, or not measured). Every column is null until measured.

Revision ID: 0014
Revises: 0013
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0014"
down_revision = "0013"
branch_labels = None
depends_on = None

COLUMNS = (("gpu_seconds_used", sa.Float()), ("gpu_measured_s", sa.Float()),
           ("gpu_util_peak", sa.Float()), ("gpu_memory_peak_mib", sa.Integer()),
           ("gpu_idle_since", sa.Float()))


def upgrade() -> None:
    for name, kind in COLUMNS:
        op.add_column("usage_records", sa.Column(name, kind, nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("usage_records") as batch:
        for name, _ in reversed(COLUMNS):
            batch.drop_column(name)
