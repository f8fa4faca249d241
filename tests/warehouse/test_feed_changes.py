"""The feed's change counters (``feed_changes``): they move in every committed transaction that
changes a watched table, and on PostgreSQL by one per transaction and table, however many rows or
statements it holds (migration ``0020_feed_change_once``: a bump per statement made a bulk insert
cost time in the square of its rows)."""

from __future__ import annotations

import datetime as dt

from sqlalchemy import Engine, insert, select, update

from warehouse import feed
from warehouse.db import session_scope
from warehouse.models import FeedChange, Sme

CREATED = dt.datetime(2026, 11, 1, tzinfo=dt.UTC)


def smes(*numbers: int) -> list[dict[str, object]]:
    return [
        {
            "sme_id": f"SME-{n:04d}",
            "name": f"Firm {n}",
            "industry": "retail",
            "region": "North",
            "size_band": "micro",
            "founded_year": 2000,
            "created_at": CREATED,
        }
        for n in numbers
    ]


def counters(engine: Engine) -> dict[str, int]:
    with session_scope(engine) as session:
        return {
            source: version
            for source, version in session.execute(select(FeedChange.source, FeedChange.version))
        }


def test_each_committed_transaction_moves_its_tables_counters(warehouse_engine: Engine) -> None:
    postgres = warehouse_engine.dialect.name == "postgresql"
    start = counters(warehouse_engine)
    with session_scope(warehouse_engine) as session:
        session.execute(insert(Sme), smes(*range(1, 201)))  # one statement per row through psycopg
        session.execute(update(Sme).where(Sme.sme_id == "SME-0001").values(name="Renamed"))
    first = counters(warehouse_engine)
    assert first["smes"] > start["smes"]
    assert {k: v for k, v in first.items() if k != "smes"} == {k: v for k, v in start.items() if k != "smes"}
    if postgres:
        assert first["smes"] == start["smes"] + 1  # once for the transaction, not per row or statement

    with session_scope(warehouse_engine) as session:
        session.execute(insert(Sme), smes(201))
    second = counters(warehouse_engine)
    assert second["smes"] > first["smes"]
    if postgres:
        assert second["smes"] == first["smes"] + 1
    with session_scope(warehouse_engine) as session:
        assert feed.changes(session) == sum(second.values())


def test_a_rolled_back_change_moves_nothing_and_a_savepoint_rolled_back_is_counted_again(
    warehouse_engine: Engine,
) -> None:
    start = counters(warehouse_engine)
    with warehouse_engine.connect() as connection:
        connection.execute(insert(Sme), smes(1))
        connection.rollback()
    assert counters(warehouse_engine) == start

    # the savepoint's insert bumps the counter, its rollback undoes the bump (and, on PostgreSQL,
    # the transaction's note that it bumped): the insert after it must bump it again
    with warehouse_engine.connect() as connection:
        savepoint = connection.begin_nested()
        connection.execute(insert(Sme), smes(2))
        savepoint.rollback()
        connection.execute(insert(Sme), smes(3))
        connection.commit()
    after = counters(warehouse_engine)
    assert after["smes"] > start["smes"]
    if warehouse_engine.dialect.name == "postgresql":
        assert after["smes"] == start["smes"] + 1
    with session_scope(warehouse_engine) as session:
        assert session.scalars(select(Sme.sme_id)).all() == ["SME-0003"]
