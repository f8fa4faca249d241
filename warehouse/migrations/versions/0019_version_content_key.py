"""version content key: the date-free hash of a dossier version's content

Revision ID: 0019_version_content_key
Revises: 0017_pull_cursors

A publish compares each staged dossier with the current version of its SME and scope by this key
(the content without the columns that only restate the date) and keeps that version when they are
equal. Rows published before have none: their next publish treats them as changed (one new
version, as before), so no partition is read to backfill them.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0019_version_content_key"
down_revision: str | None = "0017_pull_cursors"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("dossier_versions", schema=None) as batch_op:
        batch_op.add_column(sa.Column("content_key", sa.String(length=64), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("dossier_versions", schema=None) as batch_op:
        batch_op.drop_column("content_key")
