"""pull cursors: how far each SME's source was last pulled, for incremental pulls

Revision ID: 0017_pull_cursors
Revises: 0016_stage_runs

One row per SME and source: the as-of date of the last successful pull, the first day its
canonical rows cover, the end of the last month pulled, and the connection it pulled (provider,
account, when the SME connected it) and the shard count its partition was written under.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0017_pull_cursors"
down_revision: str | None = "0016_stage_runs"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "pull_cursors",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("sme_id", sa.String(length=32), nullable=False),
        sa.Column("source", sa.String(length=32), nullable=False),
        sa.Column("as_of_date", sa.Date(), nullable=False),
        sa.Column("covered_from", sa.Date(), nullable=False),
        sa.Column("pulled_through", sa.Date(), nullable=False),
        sa.Column("provider", sa.String(length=64), nullable=False),
        sa.Column("account_ref", sa.String(length=128), nullable=False),
        sa.Column("connected_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("shard_count", sa.Integer(), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["sme_id"], ["smes.sme_id"], name=op.f("fk_pull_cursors_sme_id_smes")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_pull_cursors")),
        sa.UniqueConstraint("sme_id", "source", name=op.f("uq_pull_cursors_sme_id")),
    )
    op.create_index(op.f("ix_pull_cursors_sme_id"), "pull_cursors", ["sme_id"], unique=False)


def downgrade() -> None:
    op.drop_index(op.f("ix_pull_cursors_sme_id"), table_name="pull_cursors")
    op.drop_table("pull_cursors")
