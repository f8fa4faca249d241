"""connector links: signed SME links, shown texts, link ledger, SME page keys

Revision ID: 0004
Revises: 0003
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:

    op.create_table(
        "shown_texts",
        sa.Column("sha256", sa.String(length=64), nullable=False),
        sa.Column("text", sa.Text(), nullable=False),
        sa.Column("first_shown_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("sha256", name=op.f("pk_shown_texts")),
    )
    op.create_table(
        "connector_links",
        sa.Column("link_id", sa.String(length=32), nullable=False),
        sa.Column("token_sha256", sa.String(length=64), nullable=False),
        sa.Column("sme_id", sa.String(length=32), nullable=False),
        sa.Column("sources", sa.JSON(), nullable=False),
        sa.Column("recipients", sa.JSON(), nullable=False),
        sa.Column("purpose", sa.String(length=32), nullable=False),
        sa.Column("history_months", sa.Integer(), nullable=False),
        sa.Column("consent_days", sa.Integer(), nullable=False),
        sa.Column("created_by", sa.String(length=64), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("answered_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("outcome", sa.String(length=16), nullable=True),
        sa.Column("consent_id", sa.String(length=64), nullable=True),
        sa.ForeignKeyConstraint(["sme_id"], ["smes.sme_id"], name=op.f("fk_connector_links_sme_id_smes")),
        sa.PrimaryKeyConstraint("link_id", name=op.f("pk_connector_links")),
        sa.UniqueConstraint("token_sha256", name=op.f("uq_connector_links_token_sha256")),
    )
    with op.batch_alter_table("connector_links", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_connector_links_sme_id"), ["sme_id"], unique=False)

    op.create_table(
        "sme_page_keys",
        sa.Column("sme_id", sa.String(length=32), nullable=False),
        sa.Column("key_sha256", sa.String(length=64), nullable=False),
        sa.Column("issued_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["sme_id"], ["smes.sme_id"], name=op.f("fk_sme_page_keys_sme_id_smes")),
        sa.PrimaryKeyConstraint("sme_id", name=op.f("pk_sme_page_keys")),
        sa.UniqueConstraint("key_sha256", name=op.f("uq_sme_page_keys_key_sha256")),
    )
    op.create_table(
        "link_events",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("link_id", sa.String(length=32), nullable=False),
        sa.Column("sequence", sa.Integer(), nullable=False),
        sa.Column("event_type", sa.String(length=32), nullable=False),
        sa.Column("occurred_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("actor", sa.String(length=64), nullable=False),
        sa.Column("details", sa.JSON(), nullable=False),
        sa.Column("prev_hash", sa.String(length=64), nullable=False),
        sa.Column("hash", sa.String(length=64), nullable=False),
        sa.ForeignKeyConstraint(
            ["link_id"], ["connector_links.link_id"], name=op.f("fk_link_events_link_id_connector_links")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_link_events")),
        sa.UniqueConstraint("link_id", "sequence", name=op.f("uq_link_events_link_id")),
    )
    with op.batch_alter_table("link_events", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_link_events_link_id"), ["link_id"], unique=False)

    op.create_table(
        "uploads",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("link_id", sa.String(length=32), nullable=False),
        sa.Column("sme_id", sa.String(length=32), nullable=False),
        sa.Column("source", sa.String(length=32), nullable=False),
        sa.Column("filename", sa.String(length=255), nullable=False),
        sa.Column("sha256", sa.String(length=64), nullable=False),
        sa.Column("raw_path", sa.String(length=512), nullable=False),
        sa.Column("size_bytes", sa.Integer(), nullable=False),
        sa.Column("format", sa.String(length=32), nullable=True),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("detail", sa.Text(), nullable=False),
        sa.Column("tables", sa.JSON(), nullable=False),
        sa.Column("uploaded_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["link_id"], ["connector_links.link_id"], name=op.f("fk_uploads_link_id_connector_links")
        ),
        sa.ForeignKeyConstraint(["sme_id"], ["smes.sme_id"], name=op.f("fk_uploads_sme_id_smes")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_uploads")),
    )
    with op.batch_alter_table("uploads", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_uploads_link_id"), ["link_id"], unique=False)
        batch_op.create_index(batch_op.f("ix_uploads_sme_id"), ["sme_id"], unique=False)

    op.create_table(
        "oauth_requests",
        sa.Column("state", sa.String(length=64), nullable=False),
        sa.Column("link_id", sa.String(length=32), nullable=False),
        sa.Column("sme_id", sa.String(length=32), nullable=False),
        sa.Column("source", sa.String(length=32), nullable=False),
        sa.Column("code_verifier", sa.String(length=128), nullable=False),
        sa.Column("redirect_uri", sa.String(length=512), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("answered_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("outcome", sa.String(length=16), nullable=True),
        sa.Column("detail", sa.Text(), nullable=False),
        sa.ForeignKeyConstraint(
            ["link_id"], ["connector_links.link_id"], name=op.f("fk_oauth_requests_link_id_connector_links")
        ),
        sa.ForeignKeyConstraint(["sme_id"], ["smes.sme_id"], name=op.f("fk_oauth_requests_sme_id_smes")),
        sa.PrimaryKeyConstraint("state", name=op.f("pk_oauth_requests")),
    )
    with op.batch_alter_table("oauth_requests", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_oauth_requests_link_id"), ["link_id"], unique=False)
    op.create_table(
        "provider_tokens",
        sa.Column("sme_id", sa.String(length=32), nullable=False),
        sa.Column("source", sa.String(length=32), nullable=False),
        sa.Column("provider_url", sa.String(length=512), nullable=False),
        sa.Column("refresh_token_encrypted", sa.Text(), nullable=False),
        sa.Column("obtained_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["sme_id"], ["smes.sme_id"], name=op.f("fk_provider_tokens_sme_id_smes")),
        sa.PrimaryKeyConstraint("sme_id", "source", name=op.f("pk_provider_tokens")),
    )


def downgrade() -> None:
    op.drop_table("provider_tokens")
    with op.batch_alter_table("oauth_requests", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_oauth_requests_link_id"))

    op.drop_table("oauth_requests")
    with op.batch_alter_table("uploads", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_uploads_sme_id"))
        batch_op.drop_index(batch_op.f("ix_uploads_link_id"))

    op.drop_table("uploads")

    with op.batch_alter_table("link_events", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_link_events_link_id"))

    op.drop_table("link_events")
    op.drop_table("sme_page_keys")
    with op.batch_alter_table("connector_links", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_connector_links_sme_id"))

    op.drop_table("connector_links")
    op.drop_table("shown_texts")
