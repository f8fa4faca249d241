"""outcomes: what lenders report became of the SMEs whose dossiers they were delivered

Revision ID: 0013_outcomes
Revises: 0010_feed_watermark

One row per lender, dossier, outcome (repaid, defaulted, current) and date, with an optional
amount; ``make train`` refits the behavioural adjustments on them once there are enough.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0013_outcomes"
down_revision: str | None = "0012_agents"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "outcomes",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("lender_id", sa.String(length=64), nullable=False),
        sa.Column("sme_id", sa.String(length=32), nullable=False),
        sa.Column("dossier_id", sa.String(length=160), nullable=False),
        sa.Column("outcome", sa.String(length=16), nullable=False),
        sa.Column("outcome_date", sa.Date(), nullable=False),
        sa.Column("amount", sa.Float(), nullable=True),
        sa.Column("source", sa.String(length=512), nullable=False),
        sa.Column("reported_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["lender_id"], ["lenders.lender_id"], name=op.f("fk_outcomes_lender_id_lenders")
        ),
        sa.ForeignKeyConstraint(["sme_id"], ["smes.sme_id"], name=op.f("fk_outcomes_sme_id_smes")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_outcomes")),
        sa.UniqueConstraint(
            "lender_id", "dossier_id", "outcome", "outcome_date", name=op.f("uq_outcomes_lender_id")
        ),
    )
    op.create_index(op.f("ix_outcomes_lender_id"), "outcomes", ["lender_id"], unique=False)
    op.create_index(op.f("ix_outcomes_sme_id"), "outcomes", ["sme_id"], unique=False)


def downgrade() -> None:
    op.drop_index(op.f("ix_outcomes_sme_id"), table_name="outcomes")
    op.drop_index(op.f("ix_outcomes_lender_id"), table_name="outcomes")
    op.drop_table("outcomes")
