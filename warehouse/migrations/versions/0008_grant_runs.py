"""grant runs (the pipeline run a grant starts) and field visit requests

Revision ID: 0008_grant_runs
Revises: 0007_webhooks
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0008_grant_runs"
down_revision: str | None = "0007_webhooks"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "grant_runs",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("sme_id", sa.String(length=32), nullable=False),
        sa.Column("consent_id", sa.String(length=64), nullable=False),
        sa.Column("link_id", sa.String(length=32), nullable=True),
        sa.Column("runner", sa.String(length=16), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("requested_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("as_of_date", sa.Date(), nullable=True),
        sa.Column("airflow_run_id", sa.String(length=250), nullable=True),
        sa.Column("detail", sa.Text(), nullable=False),
        sa.ForeignKeyConstraint(["sme_id"], ["smes.sme_id"], name=op.f("fk_grant_runs_sme_id_smes")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_grant_runs")),
        sa.UniqueConstraint("consent_id", name=op.f("uq_grant_runs_consent_id")),
    )
    with op.batch_alter_table("grant_runs", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_grant_runs_sme_id"), ["sme_id"], unique=False)
    op.create_table(
        "field_visit_requests",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("link_id", sa.String(length=32), nullable=False),
        sa.Column("sme_id", sa.String(length=32), nullable=False),
        sa.Column("requested_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("note", sa.Text(), nullable=False),
        sa.ForeignKeyConstraint(
            ["link_id"],
            ["connector_links.link_id"],
            name=op.f("fk_field_visit_requests_link_id_connector_links"),
        ),
        sa.ForeignKeyConstraint(
            ["sme_id"], ["smes.sme_id"], name=op.f("fk_field_visit_requests_sme_id_smes")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_field_visit_requests")),
        sa.UniqueConstraint("link_id", name=op.f("uq_field_visit_requests_link_id")),
    )
    with op.batch_alter_table("field_visit_requests", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_field_visit_requests_sme_id"), ["sme_id"], unique=False)


def downgrade() -> None:
    op.drop_table("field_visit_requests")
    op.drop_table("grant_runs")
