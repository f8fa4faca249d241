"""The consent rule through the real pipeline steps: scopes, holds, erasure, pull files, big IN lists.

Canonical tables are written straight into a temporary store (no HTTP, no Great Expectations),
then the pipeline's own ``evaluate`` and ``publish`` run, and lenders pull. Both backends.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from sqlalchemy import select

from dossier import pipeline
from dossier.settings import for_home, override
from warehouse import consent
from warehouse.canonical import TABLES
from warehouse.db import make_engine, session_scope
from warehouse.dossier_store import read_published
from warehouse.feed import pull, subscribe
from warehouse.models import (
    ConnectorLink,
    ConsentEvent,
    IngestionRun,
    Lender,
    ProviderToken,
    QuarantineEntry,
    RawPayload,
    Sme,
    Upload,
)
from warehouse.storage import Store

AS_OF = dt.date(2026, 11, 1)
THEN = consent.as_of_instant(AS_OF)
NOW = THEN + dt.timedelta(hours=6)
SMES = ("SME-000001", "SME-000002", "SME-000003")


def _value(field: pa.Field, given: dict[str, Any]) -> Any:
    if field.name in given:
        return given[field.name]
    if pa.types.is_floating(field.type):
        return 0.0
    if pa.types.is_string(field.type):
        return "x"
    return None


def canonical(name: str, rows: list[dict[str, Any]]) -> pa.Table:
    """A canonical table ``name`` of ``rows`` (unnamed columns: 0.0 for amounts, 'x' for text)."""
    schema = TABLES[name].schema
    return pa.Table.from_pylist([{f.name: _value(f, row) for f in schema} for row in rows], schema=schema)


def books(sme_id: str, months: int = 30) -> list[dict[str, Any]]:
    """``months`` months of books before the as-of month, revenue growing month by month."""
    rows = []
    for ago in range(1, months + 1):
        year, month = divmod(AS_OF.year * 12 + AS_OF.month - 1 - ago, 12)
        revenue = 10_000.0 + 100 * (months - ago)
        rows.append(
            {
                "sme_id": sme_id,
                "period_month": dt.date(year, month + 1, 1),
                "currency": "GBP",
                "revenue": revenue,
                "cost_of_sales": revenue * 0.5,
                "operating_expenses": revenue * 0.3,
                "net_profit": revenue * 0.15,
                "cash": 20_000.0,
                "current_assets": 40_000.0,
                "total_assets": 80_000.0,
                "current_liabilities": 20_000.0,
                "total_liabilities": 30_000.0,
                "equity": 50_000.0,
                "source_record": f"{sme_id}/{ago}",
                "raw_sha256": "0" * 64,
            }
        )
    return rows


def vat(sme_id: str) -> list[dict[str, Any]]:
    """Four quarterly returns, all filed on time."""
    rows = []
    for quarter in range(4):
        end = dt.date(2026, 9 - 3 * quarter, 30) if quarter < 3 else dt.date(2025, 12, 31)
        start = dt.date(end.year, end.month - 2, 1)
        rows.append(
            {
                "sme_id": sme_id,
                "period_key": f"Q{quarter}",
                "period_start": start,
                "period_end": end,
                "due_date": end + dt.timedelta(days=37),
                "status": "F",
                "received_date": end + dt.timedelta(days=30),
                "total_sales_ex_vat": 30_000.0,
                "source_record": f"{sme_id}/vat/{quarter}",
                "raw_sha256": "0" * 64,
            }
        )
    return [r for r in rows if r["due_date"] < AS_OF]


@pytest.fixture
def world(warehouse_url: str, tmp_path: Path) -> Iterator[dict[str, Any]]:
    """Three SMEs with books and VAT for ``AS_OF`` in shard 0, two lenders subscribed; no consent yet."""
    settings = for_home(tmp_path / "var", warehouse_url=warehouse_url, shard_count=1)
    engine = make_engine(warehouse_url)
    with override(settings):
        store = Store.from_settings()
        with session_scope(engine) as session:
            session.add_all(
                Sme(sme_id=s, name=f"Firm {s[-1]}", industry="retail", region="North", size_band="micro")
                for s in SMES
            )
            session.add_all([Lender(lender_id="northwind", name="N"), Lender(lender_id="harbor", name="H")])
            session.flush()
            subscribe(session, "northwind")
            subscribe(session, "harbor")
        day = AS_OF.isoformat()
        store.write_table(
            store.layout.canonical("monthly_financials", day, 0),
            canonical("monthly_financials", [r for s in SMES for r in books(s)]),
        )
        store.write_table(
            store.layout.canonical("vat_returns", day, 0), canonical("vat_returns", vat(SMES[0]))
        )
        status = pa.table({"sme_id": list(SMES), "passed": [True] * 3, "reasons": [[]] * 3})
        store.write_table(store.layout.staging("validation", day, 0), status)
        yield {"engine": engine, "store": store, "out": tmp_path / "inbox"}
    engine.dispose()


def grant(
    engine: Any, consent_id: str, sme_id: str, lenders: list[str], sources: list[str], months: int
) -> None:
    with session_scope(engine) as session:
        consent.grant(
            session,
            consent_id=consent_id,
            sme_id=sme_id,
            sources=sources,
            recipients=lenders,
            purpose="credit_decision",
            history_months=months,
            granted_at=THEN - dt.timedelta(days=30),
            expires_at=THEN + dt.timedelta(days=300),
        )


def run_day(now: dt.datetime = NOW) -> dict[str, Any]:
    evaluated = pipeline.evaluate(0, AS_OF, now=now)
    return {"evaluate": evaluated, "publish": pipeline.publish(AS_OF, now=now)}


def pull_as(world: dict[str, Any], lender: str, at: dt.datetime) -> dict[str, Any]:
    with session_scope(world["engine"]) as session:
        return pull(session, world["store"], lender_id=lender, out_dir=world["out"] / lender, now=at)


def rows_of(path: str | None) -> list[dict[str, Any]]:
    return pq.read_table(path).to_pylist() if path else []


def test_each_lender_gets_the_version_of_its_own_scope(world: dict[str, Any]) -> None:
    """Case 1: a lender granted 12 months of books never receives a 30-month, VAT-fed dossier."""
    engine = world["engine"]
    grant(engine, "C-n", SMES[0], ["northwind"], ["accounting"], 12)
    grant(engine, "C-h", SMES[0], ["harbor"], ["accounting", "tax"], 36)

    day = run_day()
    assert (day["evaluate"]["evaluated"], day["evaluate"]["scopes"], day["publish"]["rows"]) == (2, 2, 2)

    northwind = rows_of(pull_as(world, "northwind", NOW + dt.timedelta(hours=1))["file"])
    harbor = rows_of(pull_as(world, "harbor", NOW + dt.timedelta(hours=1))["file"])
    assert [(r["dossier_id"], r["sources_used"], r["history_months"]) for r in northwind] == [
        ("SME-000001:2026-11-01:v3:accounting@12m", ["accounting"], 12)
    ]
    assert northwind[0]["months_of_accounts"] == 12
    assert northwind[0]["revenue_growth_yoy"] is None  # needs 24 months: outside this scope
    assert northwind[0]["vat_on_time_rate"] is None
    assert northwind[0]["vat_books_revenue_ratio"] is None
    assert [(r["dossier_id"], r["sources_used"]) for r in harbor] == [
        ("SME-000001:2026-11-01:v3:accounting+tax@36m", ["accounting", "tax"])
    ]
    assert harbor[0]["months_of_accounts"] == 30
    assert harbor[0]["vat_on_time_rate"] == 1.0


def test_a_failed_pull_holds_the_scopes_that_cover_it(world: dict[str, Any]) -> None:
    """Case 10: a provider failure is not absence; the scope that covers it is held, the other is not."""
    engine = world["engine"]
    grant(engine, "C-1", SMES[0], ["northwind"], ["accounting", "tax"], 24)
    grant(engine, "C-2", SMES[1], ["northwind"], ["accounting"], 24)
    grant(engine, "C-3", SMES[2], ["harbor"], ["accounting"], 24)
    with session_scope(engine) as session:
        for sme_id, source, status in [
            (SMES[0], "tax", "failed"),  # in C-1's scope: held
            (SMES[1], "tax", "failed"),  # not consented for tax: no effect on its accounting scope
            (SMES[2], "accounting", "pulled"),
        ]:
            session.add(
                IngestionRun(
                    sme_id=sme_id,
                    source=source,
                    as_of_date=AS_OF,
                    status=status,
                    error_class="retriable" if status == "failed" else None,
                    error_message="503 from the provider" if status == "failed" else None,
                )
            )

    day = run_day()

    assert (day["evaluate"]["evaluated"], day["evaluate"]["held"]) == (2, 1)
    assert sorted(read_published(world["store"], AS_OF)["sme_id"]) == [SMES[1], SMES[2]]
    with session_scope(engine) as session:
        holds = session.execute(
            select(
                QuarantineEntry.sme_id, QuarantineEntry.stage, QuarantineEntry.source, QuarantineEntry.record
            ).where(QuarantineEntry.resolved_at.is_(None))
        ).all()
    assert [tuple(h) for h in holds] == [(SMES[0], "evaluate", "tax", "accounting+tax@24m")]

    # The provider recovers: the re-run publishes the held dossier and resolves the hold.
    with session_scope(engine) as session:
        run = session.scalars(select(IngestionRun).where(IngestionRun.sme_id == SMES[0])).one()
        run.status, run.error_class, run.error_message = "pulled", None, None
    again = run_day(NOW + dt.timedelta(hours=1))
    assert (again["evaluate"]["evaluated"], again["evaluate"]["held"]) == (3, 0)
    with session_scope(engine) as session:
        assert (
            session.scalars(select(QuarantineEntry).where(QuarantineEntry.resolved_at.is_(None))).all() == []
        )


def test_erasure_removes_the_data_and_withdraws_from_every_lender(world: dict[str, Any]) -> None:
    engine, store = world["engine"], world["store"]
    grant(engine, "C-1", SMES[0], ["northwind", "harbor"], ["accounting", "tax"], 24)
    grant(engine, "C-2", SMES[1], ["northwind"], ["accounting"], 24)
    raw = store.layout.raw("accounting", "ab" * 32, "json")
    store.put_immutable(raw, b'{"pages": 1}')
    uploaded = store.layout.raw("utility", "ef" * 32, "xml")
    store.put_immutable(uploaded, b"<feed/>\n")
    with session_scope(engine) as session:
        run = IngestionRun(sme_id=SMES[0], source="accounting", as_of_date=AS_OF, status="pulled")
        session.add(run)
        session.flush()
        session.add(
            RawPayload(
                ingestion_run_id=run.id,
                sequence=0,
                sha256="ab" * 32,
                path=raw,
                request="GET /books",
                media_type="application/json",
                size_bytes=12,
            )
        )
        # What came in through a connector link: an uploaded file and a provider token.
        session.add(
            ConnectorLink(
                link_id="L-1",
                token_sha256="cd" * 32,
                sme_id=SMES[0],
                sources=["utility"],
                recipients=["northwind"],
                purpose="credit_decision",
                history_months=12,
                consent_days=90,
                created_by="operator",
                expires_at=NOW + dt.timedelta(days=14),
            )
        )
        session.flush()
        session.add(
            Upload(
                link_id="L-1",
                sme_id=SMES[0],
                source="utility",
                filename="bill.xml",
                sha256="ef" * 32,
                raw_path=uploaded,
                size_bytes=9,
                status="unreadable",
                tables={},
            )
        )
        session.add(
            ProviderToken(
                sme_id=SMES[0], source="accounting", provider_url="http://x", refresh_token_encrypted="e"
            )
        )
    run_day()
    first = NOW + dt.timedelta(hours=1)
    assert len(rows_of(pull_as(world, "northwind", first)["file"])) == 2
    assert len(rows_of(pull_as(world, "harbor", first)["file"])) == 1

    with session_scope(engine) as session:
        result = consent.erase(session, store, SMES[0], at=first + dt.timedelta(minutes=5))
    assert result["consents_revoked"] == 1
    assert result["removed"]["raw_files"] == 1
    assert not store.exists(raw)
    assert (result["removed"]["uploaded_files"], result["removed"]["provider_tokens"]) == (1, 1)
    assert not store.exists(uploaded)

    later = first + dt.timedelta(hours=1)
    for lender in ("northwind", "harbor"):
        withdrawn = rows_of(pull_as(world, lender, later)["withdrawals_file"])
        assert [(w["sme_id"], w["reason"]) for w in withdrawn] == [(SMES[0], "erased")], lender
    day = AS_OF.isoformat()
    for name in ("monthly_financials", "vat_returns"):
        kept = store.read_table(store.layout.canonical(name, day, 0)).column("sme_id").to_pylist()
        assert SMES[0] not in kept, name
    assert (
        SMES[0] not in store.read_table(store.layout.staging("scores", day, 0)).column("sme_id").to_pylist()
    )
    assert sorted(read_published(store, AS_OF)["sme_id"]) == [SMES[1]]  # manifest still matches the parts
    with session_scope(engine) as session:
        sme = session.get(Sme, SMES[0])
        assert (sme.name, sme.erased_at is not None) == ("(erased)", True)
        assert session.scalars(select(RawPayload)).all() == []
        assert session.scalars(select(Upload)).all() == []
        assert session.scalars(select(ProviderToken)).all() == []
        assert session.get(ConnectorLink, "L-1") is not None  # the ledger keeps what was asked
        events = session.scalars(
            select(ConsentEvent.event_type).where(ConsentEvent.consent_id == "C-1")
        ).all()
        assert sorted(events) == ["erased", "granted", "revoked"]
        assert consent.verify_chain(session, "C-1")
        with pytest.raises(consent.ConsentError, match="was erased"):
            consent.grant(
                session,
                consent_id="C-9",
                sme_id=SMES[0],
                sources=["accounting"],
                recipients=["northwind"],
                purpose="credit_decision",
                history_months=12,
                granted_at=later,
                expires_at=later + dt.timedelta(days=1),
            )
    # Re-running the day brings nothing back, and no lender is told twice.
    run_day(later)
    assert SMES[0] not in set(read_published(store, AS_OF)["sme_id"])
    again = pull_as(world, "northwind", later + dt.timedelta(hours=1))
    assert (again["delivered"], again["withdrawals"]) == (0, 0)


def test_an_interrupted_pull_is_finished_or_discarded_at_the_next_one(world: dict[str, Any]) -> None:
    engine = world["engine"]
    grant(engine, "C-1", SMES[0], ["northwind"], ["accounting"], 24)
    run_day()
    inbox = world["out"] / "northwind"
    inbox.mkdir(parents=True)
    stray = inbox / ".northwind-20261101T000000000000Z.parquet.tmp"
    stray.write_bytes(b"half a file")

    first = pull_as(world, "northwind", NOW + dt.timedelta(hours=1))
    assert first["recovered"] == {"finished": 0, "discarded": 1}
    assert not stray.exists()

    # A crash after the commit and before the rename: the next pull finishes the rename.
    final = Path(first["file"])
    final.rename(final.with_name(f".{final.name}.tmp"))
    second = pull_as(world, "northwind", NOW + dt.timedelta(hours=2))
    assert second["recovered"] == {"finished": 1, "discarded": 0}
    assert final.exists()
    assert second["delivered"] == 0


def test_every_lookup_takes_a_shard_of_seventy_thousand_ids(warehouse_url: str, tmp_path: Path) -> None:
    """PostgreSQL refuses more than 65,535 bound parameters: every id list goes through in_chunks."""
    from dossier.pipeline import failed_pulls, record_holds
    from warehouse.dossier_store import catalog_rows, sme_identity
    from warehouse.feed import plan_withdrawals

    ids = [f"SME-{n:07d}" for n in range(70_000)]
    engine = make_engine(warehouse_url)
    with session_scope(engine) as session:
        assert consent.terms_of(session, ids, active_at=(NOW,))[ids[-1]] == []
        assert consent.pull_windows(session, "tax", ids, then=THEN, now=NOW) == {}
        assert consent.evaluation_scopes(session, ids, then=THEN, now=NOW) == {}
        assert not consent.entitlement(session, ids, at=NOW).allows(ids[0], "x", "credit_decision", [], 1)
        assert failed_pulls(session, AS_OF, ids) == {}
        record_holds(session, AS_OF, ids, [], at=NOW)
        assert sme_identity(session, ids).empty
        assert catalog_rows(session, [f"{i}:2026-11-01:v3:accounting@12m" for i in ids]).empty
        nobody = pd.DataFrame(
            {
                "sme_id": ids[:1],
                "purpose": ["credit_decision"],
                "sources_used": [["accounting"]],
                "history_months": [12],
                "erased_at": [None],
                "dossier_version_id": [1],
                "pull_id": ["p"],
                "dossier_id": ["d"],
            }
        )
        rule = consent.entitlement(session, ids, at=NOW)
        assert plan_withdrawals(session, "x", nobody, rule, NOW)["reason"].tolist() == [
            "consent_no_longer_covers"
        ]
    engine.dispose()
