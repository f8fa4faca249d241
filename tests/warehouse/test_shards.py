"""Shards are ranges of the SME id's shard key; ingest reads only its own shard's connections."""

from __future__ import annotations

import datetime as dt
import itertools
from typing import Any

import pandas as pd
import pytest
from sqlalchemy import Engine, event, insert, select

from connectors.core.connector import Connection
from connectors.ingest import connections_in_shard
from warehouse.db import session_scope, upsert
from warehouse.migrate import downgrade, upgrade
from warehouse.models import Sme, SourceConnection
from warehouse.shards import KEY_SPACE, in_shard, shard_column, shard_key, shard_of, shard_range

IDS = [f"SME-{n:06d}" for n in range(3_000)]
AT = dt.datetime(2026, 11, 1, tzinfo=dt.UTC)


@pytest.mark.parametrize("count", [1, 2, 3, 7, 8, 125])
def test_ranges_cover_the_key_space_and_agree_with_shard_of(count: int) -> None:
    ranges = [shard_range(k, count) for k in range(count)]
    assert ranges[0][0] == 0
    assert ranges[-1][1] == KEY_SPACE
    assert all(high == low for (_, high), (low, _) in itertools.pairwise(ranges))
    for sme_id in IDS:
        low, high = ranges[shard_of(sme_id, count)]
        assert low <= shard_key(sme_id) < high
    # the edges of every range fall on the shard that owns them
    for k, (low, high) in enumerate(ranges):
        if low < high:
            assert (low * count // KEY_SPACE, (high - 1) * count // KEY_SPACE) == (k, k)
    assert shard_column(pd.Series(IDS), count).tolist() == [shard_of(s, count) for s in IDS]


def test_shard_range_refuses_a_shard_outside_the_count() -> None:
    with pytest.raises(ValueError, match=r"shard 8 outside 0..7"):
        shard_range(8, 8)


def test_shards_are_balanced() -> None:
    sizes = [len(in_shard(IDS, k, 8)) for k in range(8)]
    assert sum(sizes) == len(IDS)
    assert min(sizes) > len(IDS) / 8 * 0.8


def seed_connections(engine: Engine) -> None:
    with session_scope(engine) as session:
        session.execute(
            insert(Sme),
            [
                {"sme_id": s, "name": s, "industry": "retail", "region": "North", "size_band": "micro"}
                for s in IDS
            ],
        )
        # the ORM bulk insert and the upsert both fill shard_key from the SME id
        session.execute(
            insert(SourceConnection),
            [
                {
                    "sme_id": s,
                    "source": "tax",
                    "provider": "hmrc",
                    "account_ref": f"VRN-{s}",
                    "credentials": {"n": s},
                    "connected_at": AT,
                }
                for s in IDS
            ],
        )
        upsert(
            session,
            SourceConnection,
            [
                {
                    "sme_id": s,
                    "source": "accounting",
                    "provider": "xero",
                    "account_ref": f"ORG-{s}",
                    "credentials": {},
                    "connected_at": AT,
                }
                for s in IDS[::2]
            ],
            key=["sme_id", "source"],
        )
        session.add(
            SourceConnection(
                sme_id="SME-000001", source="utility", provider="gb", account_ref="MPAN-1", credentials={}
            )
        )


def test_every_insert_path_stores_the_shard_key(warehouse_engine: Engine) -> None:
    seed_connections(warehouse_engine)
    with session_scope(warehouse_engine) as session:
        stored = session.execute(select(SourceConnection.sme_id, SourceConnection.shard_key)).all()
    assert len(stored) == len(IDS) + len(IDS[::2]) + 1
    assert all(key == shard_key(sme_id) for sme_id, key in stored)


def test_ingest_reads_only_its_own_shard_of_connections(warehouse_engine: Engine) -> None:
    seed_connections(warehouse_engine)
    fetched: list[int] = []

    @event.listens_for(warehouse_engine, "after_cursor_execute")
    def count_rows(_conn: Any, cursor: Any, statement: str, *_args: Any) -> None:
        if "FROM source_connections" in statement:
            fetched.append(cursor.rowcount)

    with session_scope(warehouse_engine) as session:
        shards = [connections_in_shard(session, "tax", k, 8) for k in range(8)]
        accounting = connections_in_shard(session, "accounting", 3, 8)
    event.remove(warehouse_engine, "after_cursor_execute", count_rows)

    for k, connections in enumerate(shards):
        assert connections == [
            Connection(sme_id=s, source="tax", provider="hmrc", account_ref=f"VRN-{s}", credentials={"n": s})
            for s in in_shard(IDS, k, 8)
        ]
    assert [c.sme_id for c in accounting] == in_shard(IDS[::2], 3, 8)
    assert {c.account_ref for c in accounting} == {f"ORG-{s}" for s in in_shard(IDS[::2], 3, 8)}
    if warehouse_engine.dialect.name == "postgresql":  # SQLite's rowcount is -1 for a SELECT
        assert fetched[:8] == [len(in_shard(IDS, k, 8)) for k in range(8)]


def test_the_migration_backfills_the_shard_key_of_existing_connections(warehouse_engine: Engine) -> None:
    downgrade(warehouse_engine, "0013_outcomes")
    with warehouse_engine.begin() as connection:
        connection.execute(
            Sme.__table__.insert(),
            [
                {"sme_id": s, "name": s, "industry": "r", "region": "N", "size_band": "m", "created_at": AT}
                for s in IDS[:50]
            ],
        )
        connection.exec_driver_sql(
            "INSERT INTO source_connections (sme_id, source, provider, account_ref, credentials, status, "
            "connected_at, updated_at) VALUES "
            + ", ".join(
                f"('{s}', 'tax', 'hmrc', 'VRN', '{{}}', 'connected', '2026-11-01', '2026-11-01')"
                for s in IDS[:50]
            )
        )
    upgrade(warehouse_engine)
    with session_scope(warehouse_engine) as session:
        stored = dict(session.execute(select(SourceConnection.sme_id, SourceConnection.shard_key)).all())
        assert stored == {s: shard_key(s) for s in IDS[:50]}
        assert [c.sme_id for c in connections_in_shard(session, "tax", 1, 4)] == in_shard(IDS[:50], 1, 4)
