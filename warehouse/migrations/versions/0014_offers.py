"""offers: lenders' indicative offers on delivered dossier versions, their ledger, offer feed events

Revision ID: 0014_offers
Revises: 0013_outcomes

``offers`` holds each offer with its terms and the broker's computed figures (schedule totals and
APR); ``offer_events`` its hash-chained history; ``feed_events.offer_json`` the offer as it stood
when an ``offer_*`` feed event told its lender of an acceptance, a decline, a close or a lapse.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0014_offers"
down_revision: str | None = "0013_outcomes"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "offers",
        sa.Column("offer_id", sa.String(length=32), nullable=False),
        sa.Column("lender_id", sa.String(length=64), nullable=False),
        sa.Column("sme_id", sa.String(length=32), nullable=False),
        sa.Column("dossier_id", sa.String(length=160), nullable=False),
        sa.Column("dossier_version_id", sa.Integer(), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("status_reason", sa.String(length=32), nullable=True),
        sa.Column("currency", sa.String(length=3), nullable=False),
        sa.Column("amount", sa.Float(), nullable=False),
        sa.Column("apr", sa.Float(), nullable=False),
        sa.Column("terms", sa.JSON(), nullable=False),
        sa.Column("figures", sa.JSON(), nullable=False),
        sa.Column("basis", sa.JSON(), nullable=False),
        sa.Column("conditions", sa.Text(), nullable=False),
        sa.Column("valid_until", sa.Date(), nullable=False),
        sa.Column("revision", sa.Integer(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("decided_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(
            ["dossier_version_id"],
            ["dossier_versions.id"],
            name=op.f("fk_offers_dossier_version_id_dossier_versions"),
        ),
        sa.ForeignKeyConstraint(
            ["lender_id"], ["lenders.lender_id"], name=op.f("fk_offers_lender_id_lenders")
        ),
        sa.PrimaryKeyConstraint("offer_id", name=op.f("pk_offers")),
    )
    op.create_index("ix_offers_lender_dossier", "offers", ["lender_id", "dossier_id"], unique=False)
    op.create_index("ix_offers_sme_status", "offers", ["sme_id", "status"], unique=False)
    op.create_table(
        "offer_events",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("offer_id", sa.String(length=32), nullable=False),
        sa.Column("sequence", sa.Integer(), nullable=False),
        sa.Column("event_type", sa.String(length=32), nullable=False),
        sa.Column("occurred_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("actor", sa.String(length=64), nullable=False),
        sa.Column("details", sa.JSON(), nullable=False),
        sa.Column("prev_hash", sa.String(length=64), nullable=False),
        sa.Column("hash", sa.String(length=64), nullable=False),
        sa.ForeignKeyConstraint(
            ["offer_id"], ["offers.offer_id"], name=op.f("fk_offer_events_offer_id_offers")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_offer_events")),
        sa.UniqueConstraint("offer_id", "sequence", name=op.f("uq_offer_events_offer_id")),
    )
    op.create_index(op.f("ix_offer_events_offer_id"), "offer_events", ["offer_id"], unique=False)
    with op.batch_alter_table("feed_events") as batch:
        batch.add_column(sa.Column("offer_json", sa.Text(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("feed_events") as batch:
        batch.drop_column("offer_json")
    op.drop_index(op.f("ix_offer_events_offer_id"), table_name="offer_events")
    op.drop_table("offer_events")
    op.drop_index("ix_offers_sme_status", table_name="offers")
    op.drop_index("ix_offers_lender_dossier", table_name="offers")
    op.drop_table("offers")
