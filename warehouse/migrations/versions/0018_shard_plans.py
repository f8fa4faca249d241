"""shard plans: how many shards each as-of date is split into

Revision ID: 0018_shard_plans
Revises: 0017_pull_cursors

One row per as-of date, written by the date's first step and read by every later one: the shard
count, why (shard size, cap, the previous date's count kept, an explicit DOSSIER_SHARD_COUNT, or
the count of runs made before plans were recorded), the SMEs it was planned from, the settings it
was planned with and the previous date it was compared with.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0018_shard_plans"
down_revision: str | None = "0017_pull_cursors"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "shard_plans",
        sa.Column("as_of_date", sa.Date(), nullable=False),
        sa.Column("shard_count", sa.Integer(), nullable=False),
        sa.Column("basis", sa.String(length=16), nullable=False),
        sa.Column("smes", sa.Integer(), nullable=False),
        sa.Column("shard_size", sa.Integer(), nullable=False),
        sa.Column("max_shards", sa.Integer(), nullable=False),
        sa.Column("previous_as_of", sa.Date(), nullable=True),
        sa.Column("previous_count", sa.Integer(), nullable=True),
        sa.Column("planned_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("as_of_date", name=op.f("pk_shard_plans")),
    )


def downgrade() -> None:
    op.drop_table("shard_plans")
