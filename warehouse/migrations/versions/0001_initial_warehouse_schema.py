"""initial warehouse schema

Revision ID: 0001
Revises:
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "lenders",
        sa.Column("lender_id", sa.String(length=64), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("lender_id", name=op.f("pk_lenders")),
    )
    op.create_table(
        "publishes",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("as_of_date", sa.Date(), nullable=False),
        sa.Column("schema_version", sa.Integer(), nullable=False),
        sa.Column("model_version", sa.String(length=64), nullable=False),
        sa.Column("manifest_path", sa.String(length=512), nullable=False),
        sa.Column("files", sa.Integer(), nullable=False),
        sa.Column("rows", sa.Integer(), nullable=False),
        sa.Column("published_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_publishes")),
        sa.UniqueConstraint("as_of_date", "schema_version", name=op.f("uq_publishes_as_of_date")),
    )
    op.create_table(
        "smes",
        sa.Column("sme_id", sa.String(length=32), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("industry", sa.String(length=64), nullable=False),
        sa.Column("region", sa.String(length=64), nullable=False),
        sa.Column("size_band", sa.String(length=16), nullable=False),
        sa.Column("founded_year", sa.Integer(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("sme_id", name=op.f("pk_smes")),
    )
    op.create_table(
        "validation_results",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("as_of_date", sa.Date(), nullable=False),
        sa.Column("table_name", sa.String(length=64), nullable=False),
        sa.Column("shard", sa.Integer(), nullable=False),
        sa.Column("suite", sa.String(length=128), nullable=False),
        sa.Column("expectation", sa.String(length=256), nullable=False),
        sa.Column("success", sa.Boolean(), nullable=False),
        sa.Column("element_count", sa.Integer(), nullable=False),
        sa.Column("unexpected_count", sa.Integer(), nullable=False),
        sa.Column("failing_smes", sa.JSON(), nullable=False),
        sa.Column("run_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_validation_results")),
        sa.UniqueConstraint(
            "as_of_date", "table_name", "shard", "expectation", name=op.f("uq_validation_results_as_of_date")
        ),
    )
    op.create_table(
        "consents",
        sa.Column("consent_id", sa.String(length=64), nullable=False),
        sa.Column("sme_id", sa.String(length=32), nullable=False),
        sa.Column("purpose", sa.String(length=200), nullable=False),
        sa.Column("sources", sa.JSON(), nullable=False),
        sa.Column("recipients", sa.JSON(), nullable=False),
        sa.Column("history_months", sa.Integer(), nullable=False),
        sa.Column("granted_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("revoked_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["sme_id"], ["smes.sme_id"], name=op.f("fk_consents_sme_id_smes")),
        sa.PrimaryKeyConstraint("consent_id", name=op.f("pk_consents")),
    )
    with op.batch_alter_table("consents", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_consents_sme_id"), ["sme_id"], unique=False)

    op.create_table(
        "dossier_versions",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("dossier_id", sa.String(length=96), nullable=False),
        sa.Column("sme_id", sa.String(length=32), nullable=False),
        sa.Column("as_of_date", sa.Date(), nullable=False),
        sa.Column("schema_version", sa.Integer(), nullable=False),
        sa.Column("model_version", sa.String(length=64), nullable=False),
        sa.Column("sources_used", sa.JSON(), nullable=False),
        sa.Column("publish_id", sa.Integer(), nullable=False),
        sa.Column("file_path", sa.String(length=512), nullable=False),
        sa.Column("content_sha256", sa.String(length=64), nullable=False),
        sa.Column("grade", sa.String(length=2), nullable=False),
        sa.Column("pd_12m", sa.Float(), nullable=False),
        sa.Column("feed_seq", sa.Integer(), nullable=False),
        sa.Column("published_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["publish_id"], ["publishes.id"], name=op.f("fk_dossier_versions_publish_id_publishes")
        ),
        sa.ForeignKeyConstraint(["sme_id"], ["smes.sme_id"], name=op.f("fk_dossier_versions_sme_id_smes")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_dossier_versions")),
        sa.UniqueConstraint("dossier_id", name=op.f("uq_dossier_versions_dossier_id")),
        sa.UniqueConstraint("feed_seq", name=op.f("uq_dossier_versions_feed_seq")),
    )
    with op.batch_alter_table("dossier_versions", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_dossier_versions_sme_id"), ["sme_id"], unique=False)

    op.create_table(
        "ingestion_runs",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("sme_id", sa.String(length=32), nullable=False),
        sa.Column("source", sa.String(length=32), nullable=False),
        sa.Column("as_of_date", sa.Date(), nullable=False),
        sa.Column("status", sa.String(length=24), nullable=False),
        sa.Column("error_class", sa.String(length=16), nullable=True),
        sa.Column("error_message", sa.Text(), nullable=True),
        sa.Column("records_raw", sa.Integer(), nullable=False),
        sa.Column("records_canonical", sa.Integer(), nullable=False),
        sa.Column("records_rejected", sa.Integer(), nullable=False),
        sa.Column("raw_sha256", sa.String(length=64), nullable=True),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(["sme_id"], ["smes.sme_id"], name=op.f("fk_ingestion_runs_sme_id_smes")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_ingestion_runs")),
        sa.UniqueConstraint("sme_id", "source", "as_of_date", name=op.f("uq_ingestion_runs_sme_id")),
    )
    with op.batch_alter_table("ingestion_runs", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_ingestion_runs_sme_id"), ["sme_id"], unique=False)

    op.create_table(
        "quarantine",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("sme_id", sa.String(length=32), nullable=False),
        sa.Column("as_of_date", sa.Date(), nullable=False),
        sa.Column("stage", sa.String(length=16), nullable=False),
        sa.Column("source", sa.String(length=32), nullable=False),
        sa.Column("table_name", sa.String(length=64), nullable=False),
        sa.Column("record", sa.String(length=256), nullable=False),
        sa.Column("field", sa.String(length=128), nullable=False),
        sa.Column("reason", sa.String(length=512), nullable=False),
        sa.Column("raw_sha256", sa.String(length=64), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("resolved_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(["sme_id"], ["smes.sme_id"], name=op.f("fk_quarantine_sme_id_smes")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_quarantine")),
        sa.UniqueConstraint(
            "sme_id",
            "as_of_date",
            "stage",
            "source",
            "record",
            "field",
            "reason",
            name=op.f("uq_quarantine_sme_id"),
        ),
    )
    with op.batch_alter_table("quarantine", schema=None) as batch_op:
        batch_op.create_index("ix_quarantine_open", ["as_of_date", "resolved_at"], unique=False)
        batch_op.create_index(batch_op.f("ix_quarantine_sme_id"), ["sme_id"], unique=False)

    op.create_table(
        "source_connections",
        sa.Column("sme_id", sa.String(length=32), nullable=False),
        sa.Column("source", sa.String(length=32), nullable=False),
        sa.Column("provider", sa.String(length=64), nullable=False),
        sa.Column("account_ref", sa.String(length=128), nullable=False),
        sa.Column("credentials", sa.JSON(), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("connected_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["sme_id"], ["smes.sme_id"], name=op.f("fk_source_connections_sme_id_smes")),
        sa.PrimaryKeyConstraint("sme_id", "source", name=op.f("pk_source_connections")),
    )
    op.create_table(
        "subscriptions",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("lender_id", sa.String(length=64), nullable=False),
        sa.Column("name", sa.String(length=64), nullable=False),
        sa.Column("filters", sa.JSON(), nullable=False),
        sa.Column("active", sa.Boolean(), nullable=False),
        sa.Column("cursor", sa.Integer(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["lender_id"], ["lenders.lender_id"], name=op.f("fk_subscriptions_lender_id_lenders")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_subscriptions")),
        sa.UniqueConstraint("lender_id", "name", name=op.f("uq_subscriptions_lender_id")),
    )
    with op.batch_alter_table("subscriptions", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_subscriptions_lender_id"), ["lender_id"], unique=False)

    op.create_table(
        "consent_events",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("consent_id", sa.String(length=64), nullable=False),
        sa.Column("sequence", sa.Integer(), nullable=False),
        sa.Column("event_type", sa.String(length=32), nullable=False),
        sa.Column("occurred_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("actor", sa.String(length=64), nullable=False),
        sa.Column("details", sa.JSON(), nullable=False),
        sa.Column("prev_hash", sa.String(length=64), nullable=False),
        sa.Column("hash", sa.String(length=64), nullable=False),
        sa.ForeignKeyConstraint(
            ["consent_id"], ["consents.consent_id"], name=op.f("fk_consent_events_consent_id_consents")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_consent_events")),
        sa.UniqueConstraint("consent_id", "sequence", name=op.f("uq_consent_events_consent_id")),
    )
    with op.batch_alter_table("consent_events", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_consent_events_consent_id"), ["consent_id"], unique=False)

    op.create_table(
        "deliveries",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("lender_id", sa.String(length=64), nullable=False),
        sa.Column("dossier_version_id", sa.Integer(), nullable=False),
        sa.Column("subscription_id", sa.Integer(), nullable=False),
        sa.Column("pull_id", sa.String(length=64), nullable=False),
        sa.Column("delivered_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["dossier_version_id"],
            ["dossier_versions.id"],
            name=op.f("fk_deliveries_dossier_version_id_dossier_versions"),
        ),
        sa.ForeignKeyConstraint(
            ["lender_id"], ["lenders.lender_id"], name=op.f("fk_deliveries_lender_id_lenders")
        ),
        sa.ForeignKeyConstraint(
            ["subscription_id"],
            ["subscriptions.id"],
            name=op.f("fk_deliveries_subscription_id_subscriptions"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_deliveries")),
        sa.UniqueConstraint("lender_id", "dossier_version_id", name=op.f("uq_deliveries_lender_id")),
    )
    with op.batch_alter_table("deliveries", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_deliveries_lender_id"), ["lender_id"], unique=False)

    op.create_table(
        "raw_payloads",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("ingestion_run_id", sa.Integer(), nullable=False),
        sa.Column("sequence", sa.Integer(), nullable=False),
        sa.Column("sha256", sa.String(length=64), nullable=False),
        sa.Column("path", sa.String(length=512), nullable=False),
        sa.Column("request", sa.String(length=1024), nullable=False),
        sa.Column("media_type", sa.String(length=64), nullable=False),
        sa.Column("size_bytes", sa.Integer(), nullable=False),
        sa.Column("landed_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["ingestion_run_id"],
            ["ingestion_runs.id"],
            name=op.f("fk_raw_payloads_ingestion_run_id_ingestion_runs"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_raw_payloads")),
        sa.UniqueConstraint("ingestion_run_id", "sequence", name=op.f("uq_raw_payloads_ingestion_run_id")),
    )
    with op.batch_alter_table("raw_payloads", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_raw_payloads_ingestion_run_id"), ["ingestion_run_id"], unique=False
        )
        batch_op.create_index(batch_op.f("ix_raw_payloads_sha256"), ["sha256"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("raw_payloads", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_raw_payloads_sha256"))
        batch_op.drop_index(batch_op.f("ix_raw_payloads_ingestion_run_id"))

    op.drop_table("raw_payloads")
    with op.batch_alter_table("deliveries", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_deliveries_lender_id"))

    op.drop_table("deliveries")
    with op.batch_alter_table("consent_events", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_consent_events_consent_id"))

    op.drop_table("consent_events")
    with op.batch_alter_table("subscriptions", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_subscriptions_lender_id"))

    op.drop_table("subscriptions")
    op.drop_table("source_connections")
    with op.batch_alter_table("quarantine", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_quarantine_sme_id"))
        batch_op.drop_index("ix_quarantine_open")

    op.drop_table("quarantine")
    with op.batch_alter_table("ingestion_runs", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_ingestion_runs_sme_id"))

    op.drop_table("ingestion_runs")
    with op.batch_alter_table("dossier_versions", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_dossier_versions_sme_id"))

    op.drop_table("dossier_versions")
    with op.batch_alter_table("consents", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_consents_sme_id"))

    op.drop_table("consents")
    op.drop_table("validation_results")
    op.drop_table("smes")
    op.drop_table("publishes")
    op.drop_table("lenders")
