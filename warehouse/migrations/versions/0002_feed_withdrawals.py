"""feed withdrawals: tombstones of delivered dossiers whose consent ended

Revision ID: 0002
Revises: 0001
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "withdrawals",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("lender_id", sa.String(length=64), nullable=False),
        sa.Column("dossier_version_id", sa.Integer(), nullable=False),
        sa.Column("delivery_pull_id", sa.String(length=64), nullable=False),
        sa.Column("reason", sa.String(length=32), nullable=False),
        sa.Column("withdrawn_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("pull_id", sa.String(length=64), nullable=False),
        sa.Column("reported_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["dossier_version_id"],
            ["dossier_versions.id"],
            name=op.f("fk_withdrawals_dossier_version_id_dossier_versions"),
        ),
        sa.ForeignKeyConstraint(
            ["lender_id"], ["lenders.lender_id"], name=op.f("fk_withdrawals_lender_id_lenders")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_withdrawals")),
        sa.UniqueConstraint(
            "lender_id", "dossier_version_id", "delivery_pull_id", name=op.f("uq_withdrawals_lender_id")
        ),
    )
    with op.batch_alter_table("withdrawals", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_withdrawals_lender_id"), ["lender_id"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("withdrawals", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_withdrawals_lender_id"))

    op.drop_table("withdrawals")
