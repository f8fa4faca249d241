"""version content key: an unchanged SME keeps its dossier version across dates

Revision ID: 0019_version_content_key
Revises: 0018_shard_plans

``content_key``: the date-free hash of a version's content. A publish compares each staged dossier
with the current version of its SME and scope by it and keeps that version when they are equal.
Rows published before have none: their next publish treats them as changed (one new version, as
before), so no partition is read to backfill them.

``current_through``: the latest as-of date whose publish staged the version's content (its own,
or a later one that kept it). Null on earlier rows, which read as their own as-of date.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0019_version_content_key"
down_revision: str | None = "0018_shard_plans"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


COLUMNS = ("content_key", "current_through")


def upgrade() -> None:
    # Plain ALTER TABLE (no batch copy of the table): the catalog's feed-change triggers stay.
    op.add_column("dossier_versions", sa.Column("content_key", sa.String(length=64), nullable=True))
    op.add_column("dossier_versions", sa.Column("current_through", sa.Date(), nullable=True))


def downgrade() -> None:
    for column in reversed(COLUMNS):
        if op.get_bind().dialect.name == "sqlite":  # SQLite 3.35+ drops a column in place
            op.execute(f"ALTER TABLE dossier_versions DROP COLUMN {column}")
        else:
            op.drop_column("dossier_versions", column)
