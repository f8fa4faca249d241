"""connection shard key: ingest reads only its own shard's connections

Revision ID: 0015_connection_shard_key
Revises: 0014_offers

``source_connections.shard_key`` holds :func:`warehouse.shards.shard_key` of the SME id (backfilled
here), indexed with the source, so an ingest task selects its shard as one key range.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from warehouse.shards import shard_key

revision: str = "0015_connection_shard_key"
down_revision: str | None = "0014_offers"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("source_connections", schema=None) as batch_op:
        batch_op.add_column(sa.Column("shard_key", sa.BigInteger(), nullable=True))
    connections = sa.table(
        "source_connections", sa.column("sme_id", sa.String()), sa.column("shard_key", sa.BigInteger())
    )
    bind = op.get_bind()
    sme_ids = sorted(set(bind.execute(sa.select(connections.c.sme_id)).scalars()))
    if sme_ids:
        bind.execute(
            connections.update()
            .where(connections.c.sme_id == sa.bindparam("match"))
            .values(shard_key=sa.bindparam("key")),
            [{"match": sme_id, "key": shard_key(sme_id)} for sme_id in sme_ids],
        )
    with op.batch_alter_table("source_connections", schema=None) as batch_op:
        batch_op.alter_column("shard_key", existing_type=sa.BigInteger(), nullable=False)
        batch_op.create_index("ix_source_connections_shard", ["source", "shard_key"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("source_connections", schema=None) as batch_op:
        batch_op.drop_index("ix_source_connections_shard")
        batch_op.drop_column("shard_key")
