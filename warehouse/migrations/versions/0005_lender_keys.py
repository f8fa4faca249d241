"""lender API: keys stored hashed, the per-lender feed event log

Revision ID: 0005
Revises: 0004
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "lender_keys",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("lender_id", sa.String(length=64), nullable=False),
        sa.Column("prefix", sa.String(length=16), nullable=False),
        sa.Column("key_sha256", sa.String(length=64), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("revoked_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(
            ["lender_id"], ["lenders.lender_id"], name=op.f("fk_lender_keys_lender_id_lenders")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_lender_keys")),
        sa.UniqueConstraint("key_sha256", name=op.f("uq_lender_keys_key_sha256")),
        sa.UniqueConstraint("prefix", name=op.f("uq_lender_keys_prefix")),
    )
    with op.batch_alter_table("lender_keys", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_lender_keys_lender_id"), ["lender_id"], unique=False)
    op.create_table(
        "feed_events",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("lender_id", sa.String(length=64), nullable=False),
        sa.Column("seq", sa.Integer(), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("dossier_version_id", sa.Integer(), nullable=False),
        sa.Column("dossier_id", sa.String(length=160), nullable=False),
        sa.Column("sme_id", sa.String(length=32), nullable=False),
        sa.Column("pull_id", sa.String(length=64), nullable=False),
        sa.Column("occurred_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("reason", sa.String(length=32), nullable=True),
        sa.Column("content_sha256", sa.String(length=64), nullable=False),
        sa.Column("dossier_json", sa.Text(), nullable=True),
        sa.ForeignKeyConstraint(
            ["dossier_version_id"],
            ["dossier_versions.id"],
            name=op.f("fk_feed_events_dossier_version_id_dossier_versions"),
        ),
        sa.ForeignKeyConstraint(
            ["lender_id"], ["lenders.lender_id"], name=op.f("fk_feed_events_lender_id_lenders")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_feed_events")),
        sa.UniqueConstraint("lender_id", "seq", name=op.f("uq_feed_events_lender_id")),
    )
    with op.batch_alter_table("feed_events", schema=None) as batch_op:
        batch_op.create_index("ix_feed_events_lender_dossier", ["lender_id", "dossier_id"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("feed_events", schema=None) as batch_op:
        batch_op.drop_index("ix_feed_events_lender_dossier")
    op.drop_table("feed_events")
    with op.batch_alter_table("lender_keys", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_lender_keys_lender_id"))
    op.drop_table("lender_keys")
