"""reconfirmation: consents lapse 90 days after the grant or the last reconfirmation; stored access tokens

Revision ID: 0009_reconfirmation
Revises: 0008_grant_runs

``consents.reconfirm_by`` is backfilled as ``granted_at`` + 90 days (no consent was reconfirmed
before this revision). ``provider_tokens`` gains the latest access token (encrypted), its expiry,
when it was refreshed, and when and why the provider refused the refresh token.
"""

import datetime as dt
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from warehouse.models import UTCDateTime

revision: str = "0009_reconfirmation"
down_revision: str | None = "0008_grant_runs"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

RECONFIRM_DAYS = 90


def upgrade() -> None:
    with op.batch_alter_table("consents", schema=None) as batch_op:
        batch_op.add_column(sa.Column("reconfirmed_at", sa.DateTime(timezone=True), nullable=True))
        batch_op.add_column(sa.Column("reconfirm_by", sa.DateTime(timezone=True), nullable=True))
    consents = sa.table(
        "consents",
        sa.column("consent_id", sa.String()),
        sa.column("granted_at", UTCDateTime()),
        sa.column("reconfirm_by", UTCDateTime()),
    )
    bind = op.get_bind()
    rows = bind.execute(sa.select(consents.c.consent_id, consents.c.granted_at)).all()
    for consent_id, granted_at in rows:
        bind.execute(
            consents.update()
            .where(consents.c.consent_id == consent_id)
            .values(reconfirm_by=granted_at + dt.timedelta(days=RECONFIRM_DAYS))
        )
    with op.batch_alter_table("consents", schema=None) as batch_op:
        batch_op.alter_column("reconfirm_by", existing_type=sa.DateTime(timezone=True), nullable=False)
        batch_op.create_index(batch_op.f("ix_consents_reconfirm_by"), ["reconfirm_by"], unique=False)
    with op.batch_alter_table("provider_tokens", schema=None) as batch_op:
        batch_op.add_column(sa.Column("access_token_encrypted", sa.Text(), nullable=True))
        batch_op.add_column(sa.Column("access_expires_at", sa.DateTime(timezone=True), nullable=True))
        batch_op.add_column(sa.Column("refreshed_at", sa.DateTime(timezone=True), nullable=True))
        batch_op.add_column(sa.Column("refused_at", sa.DateTime(timezone=True), nullable=True))
        batch_op.add_column(sa.Column("refused_reason", sa.Text(), nullable=False, server_default=""))


def downgrade() -> None:
    with op.batch_alter_table("provider_tokens", schema=None) as batch_op:
        for column in (
            "refused_reason",
            "refused_at",
            "refreshed_at",
            "access_expires_at",
            "access_token_encrypted",
        ):
            batch_op.drop_column(column)
    with op.batch_alter_table("consents", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_consents_reconfirm_by"))
        batch_op.drop_column("reconfirm_by")
        batch_op.drop_column("reconfirmed_at")
