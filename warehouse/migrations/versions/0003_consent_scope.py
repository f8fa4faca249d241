"""consent scope: purposes, per-scope dossier versions, delivery purpose, erasure

Revision ID: 0003
Revises: 0002
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

DEFAULT_PURPOSE = "credit_decision"
PURPOSES = ("credit_decision", "facility_monitoring")


def upgrade() -> None:
    with op.batch_alter_table("smes", schema=None) as batch_op:
        batch_op.add_column(sa.Column("erased_at", sa.DateTime(timezone=True), nullable=True))
    with op.batch_alter_table("dossier_versions", schema=None) as batch_op:
        batch_op.alter_column("dossier_id", type_=sa.String(length=160), existing_type=sa.String(length=96))
        batch_op.add_column(sa.Column("scope", sa.String(length=96), nullable=False, server_default=""))
        batch_op.add_column(sa.Column("history_months", sa.Integer(), nullable=False, server_default="0"))
    with op.batch_alter_table("subscriptions", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("purpose", sa.String(length=32), nullable=False, server_default=DEFAULT_PURPOSE)
        )
    with op.batch_alter_table("deliveries", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("purpose", sa.String(length=32), nullable=False, server_default=DEFAULT_PURPOSE)
        )
        batch_op.add_column(sa.Column("sources_used", sa.JSON(), nullable=False, server_default="[]"))
        batch_op.add_column(sa.Column("history_months", sa.Integer(), nullable=False, server_default="0"))
        batch_op.add_column(
            sa.Column("content_sha256", sa.String(length=64), nullable=False, server_default="")
        )
    with op.batch_alter_table("consents", schema=None) as batch_op:
        batch_op.create_index("ix_consents_sme_status", ["sme_id", "status"], unique=False)
    # Purposes were free text before the vocabulary: each becomes a credit decision.
    consents = sa.table("consents", sa.column("purpose", sa.String))
    op.execute(consents.update().where(consents.c.purpose.not_in(PURPOSES)).values(purpose=DEFAULT_PURPOSE))


def downgrade() -> None:
    with op.batch_alter_table("consents", schema=None) as batch_op:
        batch_op.drop_index("ix_consents_sme_status")
    with op.batch_alter_table("deliveries", schema=None) as batch_op:
        batch_op.drop_column("content_sha256")
        batch_op.drop_column("history_months")
        batch_op.drop_column("sources_used")
        batch_op.drop_column("purpose")
    with op.batch_alter_table("subscriptions", schema=None) as batch_op:
        batch_op.drop_column("purpose")
    with op.batch_alter_table("dossier_versions", schema=None) as batch_op:
        batch_op.drop_column("history_months")
        batch_op.drop_column("scope")
        batch_op.alter_column("dossier_id", type_=sa.String(length=96), existing_type=sa.String(length=160))
    with op.batch_alter_table("smes", schema=None) as batch_op:
        batch_op.drop_column("erased_at")
