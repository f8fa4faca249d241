"""Migrations and the upsert primitive, on SQLite and PostgreSQL."""

from __future__ import annotations

import datetime as dt

from sqlalchemy import Engine, inspect, select

from warehouse.db import session_scope, upsert
from warehouse.migrate import current_revision, downgrade, head_revision, upgrade
from warehouse.models import Base, Sme, SourceConnection


def test_migrations_create_every_model_table_and_round_trip(warehouse_engine: Engine) -> None:
    assert current_revision(warehouse_engine) == head_revision()
    tables = set(inspect(warehouse_engine).get_table_names())
    assert set(Base.metadata.tables) <= tables
    downgrade(warehouse_engine, "base")
    assert not set(Base.metadata.tables) & set(inspect(warehouse_engine).get_table_names())
    upgrade(warehouse_engine)
    upgrade(warehouse_engine)  # already at head: nothing to do
    assert current_revision(warehouse_engine) == head_revision()


def test_upsert_inserts_then_updates_by_natural_key(warehouse_engine: Engine) -> None:
    row = {
        "sme_id": "SME-1",
        "name": "Acme",
        "industry": "retail",
        "region": "North",
        "size_band": "micro",
        "founded_year": 2015,
    }
    with session_scope(warehouse_engine) as session:
        assert upsert(session, Sme, [row], key=["sme_id"]) == 1
        upsert(session, Sme, [row], key=["sme_id"])
        upsert(session, Sme, [{**row, "name": "Acme Ltd"}], key=["sme_id"])
    with session_scope(warehouse_engine) as session:
        rows = session.execute(select(Sme.sme_id, Sme.name, Sme.founded_year)).all()
    assert rows == [("SME-1", "Acme Ltd", 2015)]


def test_upsert_limited_update_keeps_other_columns(warehouse_engine: Engine) -> None:
    now = dt.datetime(2026, 5, 1, tzinfo=dt.UTC)
    with session_scope(warehouse_engine) as session:
        upsert(
            session,
            Sme,
            [
                {
                    "sme_id": "SME-1",
                    "name": "Acme",
                    "industry": "retail",
                    "region": "North",
                    "size_band": "micro",
                    "founded_year": None,
                }
            ],
            key=["sme_id"],
        )
        base = {
            "sme_id": "SME-1",
            "source": "tax",
            "provider": "hmrc",
            "account_ref": "123456789",
            "credentials": {"refresh_token": "r1"},
            "status": "connected",
            "connected_at": now,
        }
        upsert(session, SourceConnection, [base], key=["sme_id", "source"])
        upsert(
            session,
            SourceConnection,
            [{**base, "account_ref": "999", "status": "disconnected"}],
            key=["sme_id", "source"],
            update=["status"],
        )
    with session_scope(warehouse_engine) as session:
        got = session.execute(
            select(
                SourceConnection.account_ref,
                SourceConnection.status,
                SourceConnection.credentials,
                SourceConnection.connected_at,
            )
        ).one()
    assert tuple(got) == ("123456789", "disconnected", {"refresh_token": "r1"}, now)


def test_upsert_many_rows_in_batches(warehouse_engine: Engine) -> None:
    rows = [
        {
            "sme_id": f"SME-{i:05d}",
            "name": f"Firm {i}",
            "industry": "services",
            "region": "South",
            "size_band": "small",
            "founded_year": 2000 + i % 20,
        }
        for i in range(1234)
    ]
    with session_scope(warehouse_engine) as session:
        upsert(session, Sme, rows, key=["sme_id"])
        upsert(session, Sme, rows, key=["sme_id"])
    with session_scope(warehouse_engine) as session:
        assert session.scalar(select(Sme.founded_year).where(Sme.sme_id == "SME-01233")) == 2013
        assert len(session.scalars(select(Sme.sme_id)).all()) == 1234


def test_migrations_match_the_models(warehouse_engine: Engine) -> None:
    from alembic.autogenerate import compare_metadata
    from alembic.runtime.migration import MigrationContext

    with warehouse_engine.connect() as connection:
        differences = compare_metadata(MigrationContext.configure(connection), Base.metadata)
    assert differences == []
