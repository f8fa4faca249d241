"""Every lookup keyed by a shard's SME ids answers in full for 70,000 SMEs, on SQLite and PostgreSQL.

PostgreSQL refuses a statement with more than 65,535 bound parameters (SQLite more than 32,766), so
a shard of 70,000 SMEs fails any query that binds its ids in one ``IN`` list. These tests fill the
warehouse with 70,000 SMEs and their consents, pulls, quarantine entries and catalog rows, and
check each function's whole answer, not only that it ran.
"""

from __future__ import annotations

import contextlib
import datetime as dt
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pytest
from postgres_schema import fresh_postgres_schema
from sqlalchemy import Engine, insert, select

from dossier.pipeline import HOLD_STAGE, failed_pulls, record_holds
from expectations.runner import FAILURE_COLUMNS, ShardValidation, record_validation
from warehouse import consent
from warehouse.consent import Scope, Terms
from warehouse.db import make_engine, session_scope
from warehouse.dossier_store import catalog_rows, sme_identity
from warehouse.migrate import upgrade
from warehouse.models import Consent, DossierVersion, IngestionRun, Publish, QuarantineEntry, Sme
from warehouse.storage import Store

SMES = 70_000
AS_OF = dt.date(2026, 11, 1)
THEN = dt.datetime(2026, 11, 1, tzinfo=dt.UTC)
NOW = dt.datetime(2026, 11, 2, 9, 30, tzinfo=dt.UTC)
GRANTED = dt.datetime(2026, 10, 1, tzinfo=dt.UTC)
EXPIRES = dt.datetime(2027, 10, 1, tzinfo=dt.UTC)
RECONFIRM_BY = dt.datetime(2026, 12, 30, tzinfo=dt.UTC)
IDS = [f"SME-{n:07d}" for n in range(SMES)]
REGIONS = ("North", "South", "East")


def sources_of(n: int) -> frozenset[str]:
    """Even SMEs share accounting and tax, odd ones accounting alone."""
    return frozenset({"accounting", "tax"} if n % 2 == 0 else {"accounting"})


def months_of(n: int) -> int:
    return 12 + 12 * (n % 3)


def recipients_of(n: int) -> frozenset[str]:
    return frozenset({"northwind", "harbor"} if n % 5 == 0 else {"northwind"})


def terms_for(n: int) -> Terms:
    return Terms(
        f"C-{n:07d}",
        IDS[n],
        sources_of(n),
        recipients_of(n),
        "credit_decision",
        months_of(n),
        GRANTED,
        EXPIRES,
        "active",
        None,
        RECONFIRM_BY,
    )


def insert_in_batches(session: object, model: type, rows: list[dict[str, object]]) -> None:
    for start in range(0, len(rows), 10_000):
        session.execute(insert(model), rows[start : start + 10_000])  # type: ignore[attr-defined]


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def warehouse_url(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A migrated, empty warehouse per backend, shared by this module's tests (filling one is slow)."""
    with contextlib.ExitStack() as stack:
        if request.param == "sqlite":
            url = f"sqlite:///{tmp_path_factory.mktemp('scale') / 'warehouse.db'}"
        else:
            url = stack.enter_context(fresh_postgres_schema())
        engine = make_engine(url)
        upgrade(engine)
        engine.dispose()
        yield url


@pytest.fixture(scope="module")
def warehouse(warehouse_url: str) -> Iterator[Engine]:
    """A warehouse of 70,000 SMEs, each with one active consent; every 7th SME's tax pull failed.

    The tests below write disjoint rows (evaluate-stage holds, validate-stage entries, the catalog),
    so they share one filled warehouse per backend.
    """
    engine = make_engine(warehouse_url)
    with session_scope(engine) as session:
        insert_in_batches(
            session,
            Sme,
            [
                {
                    "sme_id": sme_id,
                    "name": f"Firm {n}",
                    "industry": "retail" if n % 2 else "construction",
                    "region": REGIONS[n % 3],
                    "size_band": "micro",
                    "founded_year": 1990 + n % 30,
                    "created_at": GRANTED,
                }
                for n, sme_id in enumerate(IDS)
            ],
        )
        insert_in_batches(
            session,
            Consent,
            [
                {
                    "consent_id": f"C-{n:07d}",
                    "sme_id": sme_id,
                    "purpose": "credit_decision",
                    "sources": sorted(sources_of(n)),
                    "recipients": sorted(recipients_of(n)),
                    "history_months": months_of(n),
                    "granted_at": GRANTED,
                    "expires_at": EXPIRES,
                    "status": "active",
                    "revoked_at": None,
                    "reconfirmed_at": None,
                    "reconfirm_by": RECONFIRM_BY,
                    "updated_at": GRANTED,
                }
                for n, sme_id in enumerate(IDS)
            ],
        )
        insert_in_batches(
            session,
            IngestionRun,
            [
                {
                    "sme_id": sme_id,
                    "source": "tax",
                    "as_of_date": AS_OF,
                    "status": "failed" if n % 7 == 0 else "pulled",
                    "error_message": "HTTP 503" if n % 7 == 0 else None,
                }
                for n, sme_id in enumerate(IDS)
            ],
        )
    yield engine
    engine.dispose()


def test_consent_lookups_answer_for_every_sme(warehouse: Engine) -> None:
    with session_scope(warehouse) as session:
        assert consent.terms_of(session, IDS, active_at=(THEN, NOW)) == {
            sme_id: [terms_for(n)] for n, sme_id in enumerate(IDS)
        }
        assert consent.pull_windows(session, "tax", IDS, then=THEN, now=NOW) == {
            sme_id: months_of(n) for n, sme_id in enumerate(IDS) if n % 2 == 0
        }
        assert consent.evaluation_scopes(session, IDS, then=THEN, now=NOW) == {
            sme_id: {
                Scope(sources_of(n), months_of(n)): {
                    (lender, "credit_decision") for lender in recipients_of(n)
                }
            }
            for n, sme_id in enumerate(IDS)
        }
        rule = consent.entitlement(session, IDS, at=NOW)
        assert [rule.any_recipient(sme_id, ["accounting", "tax"], 12) for sme_id in IDS] == [
            n % 2 == 0 for n in range(SMES)
        ]
        assert [rule.allows(sme_id, "harbor", "credit_decision", ["accounting"], 12) for sme_id in IDS] == [
            n % 5 == 0 for n in range(SMES)
        ]


def test_pipeline_lookups_answer_for_every_sme(warehouse: Engine) -> None:
    with session_scope(warehouse) as session:
        assert failed_pulls(session, AS_OF, IDS) == {
            sme_id: {"tax": "failed: HTTP 503"} for n, sme_id in enumerate(IDS) if n % 7 == 0
        }
        identity = sme_identity(session, IDS).sort_values("sme_id", ignore_index=True)
    expected = pd.DataFrame(
        {
            "sme_id": IDS,
            "sme_name": [f"Firm {n}" for n in range(SMES)],
            "industry": ["retail" if n % 2 else "construction" for n in range(SMES)],
            "region": [REGIONS[n % 3] for n in range(SMES)],
            "size_band": "micro",
            "founded_year": pd.array([1990 + n % 30 for n in range(SMES)], dtype="Int32"),
        }
    )
    pd.testing.assert_frame_equal(identity, expected)


def open_holds(engine: Engine) -> list[tuple[str, str, str]]:
    with session_scope(engine) as session:
        return sorted(
            session.execute(
                select(QuarantineEntry.sme_id, QuarantineEntry.record, QuarantineEntry.source).where(
                    QuarantineEntry.stage == HOLD_STAGE, QuarantineEntry.resolved_at.is_(None)
                )
            ).all()
        )


def test_holds_of_every_sme_are_opened_and_lifted(warehouse: Engine) -> None:
    def hold(n: int) -> dict[str, str]:
        return {
            "sme_id": IDS[n],
            "scope": "accounting+tax@12m",
            "source": "tax",
            "reason": "failed: HTTP 503",
        }

    with session_scope(warehouse) as session:
        record_holds(session, AS_OF, IDS, [hold(n) for n in range(0, SMES, 7)], at=NOW)
    assert open_holds(warehouse) == [(IDS[n], "accounting+tax@12m", "tax") for n in range(0, SMES, 7)]

    # the next run finds only every 14th SME still failing: the others' holds are lifted
    with session_scope(warehouse) as session:
        record_holds(session, AS_OF, IDS, [hold(n) for n in range(0, SMES, 14)], at=NOW)
    assert open_holds(warehouse) == [(IDS[n], "accounting+tax@12m", "tax") for n in range(0, SMES, 14)]
    with session_scope(warehouse) as session:
        lifted = session.scalar(select(QuarantineEntry.resolved_at).where(QuarantineEntry.sme_id == IDS[7]))
    assert lifted == NOW


def test_validation_quarantine_of_every_sme_is_opened_and_resolved(warehouse: Engine, tmp_path: Path) -> None:
    store = Store(str(tmp_path / "store"))

    def validation(step: int) -> ShardValidation:
        failing = set(range(0, SMES, step))
        status = pd.DataFrame(
            {
                "sme_id": IDS,
                "passed": [n not in failing for n in range(SMES)],
                "reasons": [["revenue < 0"] if n in failing else [] for n in range(SMES)],
            }
        )
        failures = pd.DataFrame(
            [
                {
                    "sme_id": IDS[n],
                    "table_name": "monthly_financials",
                    "source": "accounting",
                    "record": "2026-10",
                    "field": "revenue",
                    "expectation": "revenue_not_negative",
                    "observed": "-1",
                    "reason": "revenue < 0",
                    "raw_sha256": "",
                }
                for n in sorted(failing)
            ],
            columns=list(FAILURE_COLUMNS),
        )
        return ShardValidation(AS_OF, 0, status, [], failures)

    def open_entries() -> list[str]:
        with session_scope(warehouse) as session:
            return sorted(
                session.scalars(
                    select(QuarantineEntry.sme_id).where(
                        QuarantineEntry.stage == "validate", QuarantineEntry.resolved_at.is_(None)
                    )
                )
            )

    with session_scope(warehouse) as session:
        first = record_validation(session, validation(10), store=store, now=NOW)
    assert (first["quarantined"], first["failing_smes"], first["resolved"]) == (7_000, 7_000, 0)
    assert open_entries() == [IDS[n] for n in range(0, SMES, 10)]
    with session_scope(warehouse) as session:
        second = record_validation(session, validation(20), store=store, now=NOW)
    assert (second["quarantined"], second["failing_smes"], second["resolved"]) == (3_500, 3_500, 3_500)
    assert open_entries() == [IDS[n] for n in range(0, SMES, 20)]


def test_catalog_rows_of_every_sme(warehouse: Engine) -> None:
    with session_scope(warehouse) as session:
        publish = Publish(
            as_of_date=AS_OF, schema_version=3, model_version="m", manifest_path="m.json", files=1, rows=SMES
        )
        session.add(publish)
        session.flush()
        insert_in_batches(
            session,
            DossierVersion,
            [
                {
                    "dossier_id": f"{sme_id}:2026-11-01:v3:accounting@12m",
                    "sme_id": sme_id,
                    "as_of_date": AS_OF,
                    "schema_version": 3,
                    "model_version": "m",
                    "sources_used": ["accounting"],
                    "scope": "accounting@12m",
                    "history_months": 12,
                    "publish_id": publish.id,
                    "file_path": "part-0000.parquet",
                    "content_sha256": f"{n:064d}",
                    "grade": "B",
                    "pd_12m": 0.02,
                    "feed_seq": n + 1,
                    "published_at": NOW,
                }
                for n, sme_id in enumerate(IDS)
            ],
        )
    wanted = [f"{sme_id}:2026-11-01:v3:accounting@12m" for sme_id in IDS]
    with session_scope(warehouse) as session:
        rows = catalog_rows(session, [*wanted, "SME-9999999:2026-11-01:v3:accounting@12m"])
    rows = rows.sort_values("feed_seq", ignore_index=True)
    assert rows["dossier_id"].tolist() == wanted
    assert rows["content_sha256"].tolist() == [f"{n:064d}" for n in range(SMES)]
    assert rows["feed_seq"].tolist() == list(range(1, SMES + 1))
    assert set(rows["file_path"]) == {"part-0000.parquet"}
    assert rows["published_at"].map(pd.Timestamp).eq(pd.Timestamp(NOW)).all()
