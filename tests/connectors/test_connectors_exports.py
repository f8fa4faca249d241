"""The accounting connector over the wire: the sandbox's SAF-T export and OFX statement, read by the format parsers."""

from __future__ import annotations

from typing import Any

import pandas as pd
import pytest
import requests

from connectors.accounting.connector import AccountingConnector
from connectors.core.connector import Connection, HttpContext, PullWindow
from connectors.core.http import make_session
from connectors.core.parsing import ParseResult, SmePages
from connectors.formats import detect
from connectors.sandbox.server import SandboxServer
from connectors.sandbox.universe import Universe
from tests.connectors.connector_fixtures import AS_OF

LINEAGE = ["source_record", "raw_sha256"]
WINDOW = PullWindow.for_history(AS_OF, 36)


def pull(
    sandbox: SandboxServer, connector: AccountingConnector, sme_ids: list[str]
) -> tuple[ParseResult, list[Any]]:
    batch, pages = [], []
    with requests.Session() as token_session:
        for sme_id in sme_ids:
            profile = sandbox.universe.sme(sme_id).profile
            connection = Connection(
                sme_id,
                "accounting",
                "sandbox",
                profile.tenant_id,
                sandbox.credentials_for(sme_id)["accounting"],
            )
            http = HttpContext(
                f"{sandbox.url}/accounting",
                make_session(3),
                token_session,
                5.0,
                client_id=sandbox.credentials.client_id,
                client_secret=sandbox.credentials.client_secret,
            )
            landed = list(connector.pull(connector.client(connection, http), connection, WINDOW))
            pages += landed
            batch.append(SmePages(sme_id, landed))
    return connector.parse(batch), pages


def clean_without_gaps(universe: Universe) -> list[str]:
    profiles = universe.profiles()
    plain = profiles[
        profiles["defects"].map(
            lambda d: not set(d) & {"gap", "malformed_accounting", "duplicate_conflicting"}
        )
    ]
    return sorted(plain["sme_id"])[:4]


def without_lineage(frame: pd.DataFrame) -> list[dict[str, Any]]:
    return frame.drop(columns=LINEAGE).sort_values(["sme_id", "period_month"]).to_dict("records")


def test_the_saft_export_over_http_gives_the_books_of_the_monthly_reports(
    sandbox: SandboxServer, universe: Universe
) -> None:
    sme_ids = clean_without_gaps(universe)

    from_saft, pages = pull(sandbox, AccountingConnector(books="saft"), sme_ids)
    from_reports, _ = pull(sandbox, AccountingConnector(), sme_ids)

    assert {page.stream for page in pages} == {"saft_export"}
    assert all(detect(page.body).name == "saft-no" for page in pages)
    assert from_saft.ok
    saft = from_saft.tables["monthly_financials"]
    reports = from_reports.tables["monthly_financials"]
    assert len(saft) > 24 * len(sme_ids) - 1
    assert without_lineage(saft) == without_lineage(reports)
    truth = universe.truth(sme_ids)["monthly_financials"]
    assert without_lineage(saft) == without_lineage(truth[truth["period_month"] >= WINDOW.start])
    assert saft["source_record"].str.startswith("saft/GeneralLedgerEntries/month=").all()
    assert set(saft["raw_sha256"]) == {page.sha256 for page in pages}


def test_the_bank_statement_over_http_ends_at_the_books_month_end_cash(
    sandbox: SandboxServer, universe: Universe
) -> None:
    sme_ids = clean_without_gaps(universe)

    result, pages = pull(sandbox, AccountingConnector(bank_statement=True), sme_ids)

    assert [page.stream for page in pages].count("bank_statement") == len(sme_ids)
    assert result.ok
    bank = result.tables["bank_transactions"]
    books = result.tables["monthly_financials"]
    for sme_id in sme_ids:
        rows = bank[bank["sme_id"] == sme_id]
        months = books[books["sme_id"] == sme_id].sort_values("period_month")
        ledger = rows[rows["entry_type"] == "ledger_balance"]
        assert ledger["amount"].tolist() == [months["cash"].iloc[-1]]
        posted = rows[rows["entry_type"] == "transaction"]
        takings = posted[posted["transaction_type"] == "CREDIT"]
        assert round(takings["amount"].sum(), 2) == round(months["revenue"].sum(), 2)
        assert round(posted["amount"].sum(), 2) == months["cash"].iloc[-1]
        assert (rows["currency"] == "GBP").all()


def test_a_broken_export_is_a_reject_naming_the_record_and_field(
    sandbox: SandboxServer, universe: Universe
) -> None:
    (sme_id,) = clean_without_gaps(universe)[:1]
    connector = AccountingConnector(books="saft")
    _, pages = pull(sandbox, connector, [sme_id])
    broken = pages[0].body.replace(b"<Amount>", b"<Amount>x", 1)
    page = type(pages[0])(pages[0].stream, pages[0].label, pages[0].request, broken, pages[0].media_type)

    result = connector.parse([SmePages(sme_id, [page])])

    assert result.quarantined == {sme_id}
    (reject,) = result.rejects.to_dict("records")
    assert (reject["record"], reject["field"]) == (
        "saft/Journal[GL]/Transaction[1]/Line[1]",
        "DebitAmount/Amount",
    )
    assert reject["reason"].startswith("not a number: 'x")
    assert result.tables["monthly_financials"].empty


def test_an_unknown_books_mode_is_refused() -> None:
    with pytest.raises(ValueError, match="books must be one of"):
        AccountingConnector(books="pdf")
