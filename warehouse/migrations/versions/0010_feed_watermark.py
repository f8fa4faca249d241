"""lender feed: change counters bumped by triggers, and each lender's last sync

Revision ID: 0010_feed_watermark
Revises: 0009_reconfirmation

``feed_changes`` holds one counter per table whose rows decide what a lender's feed delivers
(the catalog, consents, the SME register, subscriptions). A trigger on each table bumps its
counter in the transaction that changes it, so every writer (the ORM, bulk statements, upserts,
another process) is counted. ``feed_watermarks`` records, per lender, the counters and the instant
its feed was last synced (``warehouse.feed.refresh``).
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0010_feed_watermark"
down_revision: str | None = "0009_reconfirmation"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

WATCHED: dict[str, str] = {
    "dossier_versions": "",
    "consents": "",
    "smes": "",
    # the feed itself moves a subscription's cursor (and its updated_at): not a change of what it asks for
    "subscriptions": "lender_id, name, filters, purpose, active",
}
"""Tables counted, and for updates the columns that count (all when empty)."""


def upgrade() -> None:
    op.create_table(
        "feed_changes",
        sa.Column("source", sa.String(length=32), nullable=False),
        sa.Column("version", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("source", name=op.f("pk_feed_changes")),
    )
    op.create_table(
        "feed_watermarks",
        sa.Column("lender_id", sa.String(length=64), nullable=False),
        sa.Column("changes", sa.BigInteger(), nullable=False),
        sa.Column("synced_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("valid_until", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(
            ["lender_id"], ["lenders.lender_id"], name=op.f("fk_feed_watermarks_lender_id_lenders")
        ),
        sa.PrimaryKeyConstraint("lender_id", name=op.f("pk_feed_watermarks")),
    )
    op.bulk_insert(
        sa.table("feed_changes", sa.column("source", sa.String), sa.column("version", sa.BigInteger)),
        [{"source": table, "version": 0} for table in WATCHED],
    )
    postgres = op.get_bind().dialect.name == "postgresql"
    if postgres:
        op.execute(
            """
            CREATE FUNCTION feed_change() RETURNS trigger LANGUAGE plpgsql AS $$
            BEGIN
                UPDATE feed_changes SET version = version + 1 WHERE source = TG_TABLE_NAME;
                RETURN NULL;
            END $$
            """
        )
    for table, columns in WATCHED.items():
        for event in ("INSERT", "UPDATE", "DELETE"):
            what = f"UPDATE OF {columns}" if event == "UPDATE" and columns else event
            name = f"feed_change_{table}_{event.lower()}"
            if postgres:
                op.execute(
                    f"CREATE TRIGGER {name} AFTER {what} ON {table} "
                    "FOR EACH STATEMENT EXECUTE FUNCTION feed_change()"
                )
            else:
                op.execute(
                    f"CREATE TRIGGER {name} AFTER {what} ON {table} FOR EACH ROW BEGIN "
                    f"UPDATE feed_changes SET version = version + 1 WHERE source = '{table}'; END"
                )


def downgrade() -> None:
    postgres = op.get_bind().dialect.name == "postgresql"
    for table in WATCHED:
        for event in ("insert", "update", "delete"):
            name = f"feed_change_{table}_{event}"
            op.execute(f"DROP TRIGGER {name} ON {table}" if postgres else f"DROP TRIGGER {name}")
    if postgres:
        op.execute("DROP FUNCTION feed_change()")
    op.drop_table("feed_watermarks")
    op.drop_table("feed_changes")
