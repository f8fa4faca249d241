"""stage runs: per-step counts and timings of every pipeline run

Revision ID: 0016_stage_runs
Revises: 0015_connection_shard_key

One row per as-of date, step, source and shard (a re-run replaces it and counts its attempts):
status, start, finish, seconds, the step's counts and the error of a failed step.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0016_stage_runs"
down_revision: str | None = "0015_connection_shard_key"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "stage_runs",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("as_of_date", sa.Date(), nullable=False),
        sa.Column("stage", sa.String(length=16), nullable=False),
        sa.Column("source", sa.String(length=32), nullable=False),
        sa.Column("shard", sa.Integer(), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("seconds", sa.Float(), nullable=False),
        sa.Column("counts", sa.JSON(), nullable=False),
        sa.Column("error", sa.Text(), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_stage_runs")),
        sa.UniqueConstraint("as_of_date", "stage", "source", "shard", name=op.f("uq_stage_runs_as_of_date")),
    )
    op.create_index(op.f("ix_stage_runs_as_of_date"), "stage_runs", ["as_of_date"], unique=False)


def downgrade() -> None:
    op.drop_index(op.f("ix_stage_runs_as_of_date"), table_name="stage_runs")
    op.drop_table("stage_runs")
