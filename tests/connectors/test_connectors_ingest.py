"""The ingest loop against scripted providers: isolation of failures, the consent's window, tokens."""

from __future__ import annotations

import datetime as dt
import functools
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from connector_fixtures import AS_OF, FakeClock, ObservedSessions, Reply, ScriptedServer
from sqlalchemy import Engine, select

from connectors.accounting.connector import AccountingConnector
from connectors.core.connector import Connection, HttpContext, PullWindow
from connectors.core.http import make_session
from connectors.core.parsing import SmePages
from connectors.ingest import ingest_shard
from connectors.registry import connector_for
from connectors.sandbox.auth import SandboxCredentials
from connectors.sandbox.server import SandboxServer
from connectors.sandbox.universe import SOURCES_REFS, Universe
from connectors.survey.connector import SurveyConnector
from connectors.utility.connector import UtilityConnector
from dossier.settings import for_home, override
from warehouse import consent
from warehouse.db import make_engine, session_scope
from warehouse.models import IngestionRun, Lender, Sme, SourceConnection
from warehouse.storage import Store

TENANTS = {"SME-000001": "ten_a", "SME-000002": "ten_b", "SME-000003": "ten_c", "SME-000004": "ten_d"}
REPORT = {
    "report_id": "rep_1",
    "period": "2026-10",
    "profit_and_loss": dict.fromkeys(
        [
            "revenue",
            "cost_of_sales",
            "operating_expenses",
            "depreciation",
            "interest_expense",
            "tax_expense",
            "net_profit",
        ],
        "1.00",
    ),
    "balance_sheet": dict.fromkeys(
        [
            "cash",
            "receivables",
            "inventory",
            "current_assets",
            "total_assets",
            "current_liabilities",
            "total_liabilities",
            "equity",
        ],
        "2.00",
    ),
}


@pytest.fixture
def warehouse(warehouse_url: str, tmp_path: Path) -> Any:
    """Four SMEs with a 12-month accounting consent, on SQLite and on PostgreSQL."""
    engine = make_engine(warehouse_url)
    with session_scope(engine) as session:
        session.add(Lender(lender_id="lender", name="A lender"))
        for sme_id, tenant in TENANTS.items():
            session.add(Sme(sme_id=sme_id, name=sme_id, industry="retail", region="Wales", size_band="micro"))
            session.flush()
            credentials = {} if sme_id == "SME-000004" else {"refresh_token": f"rt-{tenant}"}
            session.add(
                SourceConnection(
                    sme_id=sme_id,
                    source="accounting",
                    provider="books",
                    account_ref=tenant,
                    credentials=credentials,
                )
            )
            consent.grant(
                session,
                consent_id=f"{sme_id}-C1",
                sme_id=sme_id,
                sources=["accounting"],
                recipients=["lender"],
                purpose="credit_decision",
                history_months=12,
                granted_at=dt.datetime(2026, 11, 1, tzinfo=dt.UTC),  # reconfirmation due 90 days later
                expires_at=dt.datetime(2027, 1, 1, tzinfo=dt.UTC),
            )
    with override(for_home(tmp_path / "var", shard_count=1, http_retries=3)):
        yield engine
    engine.dispose()


PULLED_AT = dt.datetime.combine(AS_OF, dt.time(12), tzinfo=dt.UTC)


def ingest(
    engine: Engine, server: ScriptedServer, tmp_path: Path, clock: FakeClock, now: dt.datetime = PULLED_AT
) -> dict[str, Any]:
    return ingest_shard(
        "accounting",
        0,
        AS_OF,
        session_factory=functools.partial(session_scope, engine),
        store=Store(str(tmp_path / "store")),
        base_url=server.url,
        now=now,
        clock=clock,
        http_session_factory=ObservedSessions(clock, attempts=3),
    )


def reports(path: str) -> str:
    return f"/v1/tenants/{path}/reports/monthly"


def test_one_sme_failing_never_stops_the_others(
    warehouse: Engine, scripted: ScriptedServer, tmp_path: Path, clock: FakeClock
) -> None:
    scripted.script(
        "POST",
        "/oauth/token",
        Reply(200, {"access_token": "at", "expires_in": 300, "refresh_token": "rt-new"}),
    )
    scripted.script(
        "GET", reports("ten_a"), Reply(200, {"currency": "GBP", "total_pages": 1, "reports": [REPORT]})
    )
    scripted.script("GET", reports("ten_b"), Reply(503, {"code": "SERVER_ERROR"}))
    scripted.script(
        "GET", reports("ten_c"), Reply(404, {"code": "tenant_not_found", "message": "no tenant ten_c"})
    )

    summary = ingest(warehouse, scripted, tmp_path, clock)

    with session_scope(warehouse) as session:
        run_rows = {
            r.sme_id: (r.status, r.error_class, r.error_message)
            for r in session.scalars(select(IngestionRun))
        }
        stored = {c.sme_id: c.credentials for c in session.scalars(select(SourceConnection))}
    assert run_rows == {
        "SME-000001": ("pulled", None, None),
        "SME-000002": (
            "failed",
            "retriable",
            "SME-000002/accounting: GET /v1/tenants/ten_b/reports/monthly?from=2025-11&to=2026-10&page=1&page_size=50 "
            "answered 503 (SERVER_ERROR) after every retry",
        ),
        "SME-000003": (
            "failed",
            "fatal",
            "SME-000003/accounting: GET /v1/tenants/ten_c/reports/monthly?from=2025-11&to=2026-10&page=1&page_size=50 "
            "answered 404 (tenant_not_found: no tenant ten_c)",
        ),
        "SME-000004": (
            "failed",
            "config",
            "SME-000004/accounting: source_connections.credentials field refresh_token: "
            "source connection has no 'refresh_token' credential",
        ),
    }
    assert (summary["pulled"], summary["failed"], summary["rows"]) == (
        1,
        3,
        {"monthly_financials": 1, "bank_transactions": 0},
    )
    assert len(scripted.requests_to(reports("ten_b"))) == 3
    # the provider rotated refresh tokens: the new one is kept for every SME that got one
    assert stored == {
        "SME-000001": {"refresh_token": "rt-new"},
        "SME-000002": {"refresh_token": "rt-new"},
        "SME-000003": {"refresh_token": "rt-new"},
        "SME-000004": {},
    }


def test_the_consents_history_window_is_all_that_is_asked_for(
    warehouse: Engine, scripted: ScriptedServer, tmp_path: Path, clock: FakeClock
) -> None:
    scripted.script("POST", "/oauth/token", Reply(200, {"access_token": "at", "expires_in": 300}))
    for tenant in TENANTS.values():
        scripted.script(
            "GET", reports(tenant), Reply(200, {"currency": "GBP", "total_pages": 1, "reports": []})
        )

    ingest(warehouse, scripted, tmp_path, clock)

    asked = {(s.query["from"][0], s.query["to"][0]) for s in scripted.seen if s.method == "GET"}
    assert asked == {("2025-11", "2026-10")}


def test_a_backfill_never_pulls_under_a_consent_that_has_since_expired(
    warehouse: Engine, scripted: ScriptedServer, tmp_path: Path, clock: FakeClock
) -> None:
    after_expiry = dt.datetime(2027, 1, 2, tzinfo=dt.UTC)

    summary = ingest(warehouse, scripted, tmp_path, clock, now=after_expiry)

    with session_scope(warehouse) as session:
        statuses = {r.sme_id: r.status for r in session.scalars(select(IngestionRun))}
    assert statuses == dict.fromkeys(TENANTS, "skipped_no_consent")
    assert (summary["pulled"], summary["skipped_no_consent"]) == (0, 4)
    assert scripted.seen == []


def one_sme(universe: Universe, source: str) -> str:
    return next(s for s in universe.sme_ids if not universe.sme(s).profile.defects)


@pytest.mark.parametrize(
    ("small", "source"),
    [
        (AccountingConnector(page_size=7), "accounting"),
        (UtilityConnector(max_results=9), "utility"),
        (SurveyConnector(limit=1), "survey"),
    ],
)
def test_small_pages_give_the_same_rows(
    small: Any, source: str, sandbox: SandboxServer, universe: Universe
) -> None:
    clock = FakeClock()
    sme_id = one_sme(universe, source)
    ref = universe.profiles().set_index("sme_id")[SOURCES_REFS[source]][sme_id]
    connection = Connection(sme_id, source, "sandbox", ref, sandbox.credentials_for(sme_id)[source])
    window = PullWindow.for_history(AS_OF, 36)

    def pull(connector: Any) -> tuple[int, Any]:
        http = HttpContext(
            f"{sandbox.url}/{source}",
            make_session(3, clock),
            make_session(3, clock, retry_reads=False),
            5.0,
            clock,
            client_id=SandboxCredentials().client_id,
            client_secret=SandboxCredentials().client_secret,
        )
        pages = list(connector.pull(connector.client(connection, http), connection, window))
        result = connector.parse([SmePages(sme_id, pages)])
        return len(pages), {
            name: frame.drop(columns=["source_record", "raw_sha256"]) for name, frame in result.tables.items()
        }

    many, paged = pull(small)
    one, whole = pull(connector_for(source))

    assert many > one
    assert paged.keys() == whole.keys()
    for name, frame in paged.items():
        pd.testing.assert_frame_equal(frame, whole[name])
