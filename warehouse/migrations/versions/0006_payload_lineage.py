"""raw payload lineage: every attempt of a run keeps its own rows

Revision ID: 0006
Revises: 0005
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("raw_payloads", schema=None) as batch_op:
        batch_op.add_column(sa.Column("attempt", sa.Integer(), nullable=False, server_default="1"))
        batch_op.drop_constraint("uq_raw_payloads_ingestion_run_id", type_="unique")
        batch_op.create_unique_constraint(
            "uq_raw_payloads_ingestion_run_id", ["ingestion_run_id", "attempt", "sequence"]
        )


def downgrade() -> None:
    with op.batch_alter_table("raw_payloads", schema=None) as batch_op:
        batch_op.execute("DELETE FROM raw_payloads WHERE attempt > 1")
        batch_op.drop_constraint("uq_raw_payloads_ingestion_run_id", type_="unique")
        batch_op.create_unique_constraint(
            "uq_raw_payloads_ingestion_run_id", ["ingestion_run_id", "sequence"]
        )
        batch_op.drop_column("attempt")
