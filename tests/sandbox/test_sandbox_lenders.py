"""Sandbox lenders: each policy's quote worked out by hand, then answer_feed over a live lender API."""

import dataclasses
import datetime as dt
import sys
import threading
import time
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
import requests
import uvicorn

from connectors.sandbox.lenders import (
    POLICIES,
    LenderClientError,
    LenderPolicy,
    answer_feed,
    held_versions,
    quote,
)
from dossier.settings import for_home
from dossier.web.app import create_app
from warehouse import consent, keys
from warehouse.db import make_engine, session_scope
from warehouse.feed import subscribe

TODAY = dt.date(2026, 3, 2)
ROW = {
    "dossier_id": "sme-0001@2026-03-01#m1",
    "sme_id": "sme-0001",
    "grade": "B",
    "pd_12m": 0.02,
    "credit_limit": 41_234.0,
    "currency": "GBP",
    "revenue_12m": 300_000.0,
}


def test_cautious_bank_prices_funding_margin_and_expected_loss() -> None:
    # 0.75 x 41,234 = 30,925.5 -> 30,500 (step 500); 0.035 + 0.030 + 0.02 x 0.45 = 0.074; fee 1% = 305.
    assert quote(POLICIES["sandbox-bank"], ROW, today=TODAY) == {
        "dossier_id": "sme-0001@2026-03-01#m1",
        "amount": "30500",
        "currency": "GBP",
        "term_months": 36,
        "nominal_rate": "0.0740",
        "upfront_fee": "305.00",
        "periodic_fee": "0",
        "profile": "annuity",
        "conditions": "Personal guarantee of a director; annual accounts within 9 months of year end.",
        "valid_until": "2026-04-01",
    }


def test_fintech_lends_the_whole_limit_dearer_and_shorter() -> None:
    # 41,234 -> 41,000; 0.06 + 0.05 + 0.02 x 0.60 = 0.122; fee 2% = 820; 10 a month.
    assert quote(POLICIES["sandbox-fintech"], ROW, today=TODAY) == {
        "dossier_id": "sme-0001@2026-03-01#m1",
        "amount": "41000",
        "currency": "GBP",
        "term_months": 12,
        "nominal_rate": "0.1220",
        "upfront_fee": "820.00",
        "periodic_fee": "10",
        "profile": "annuity",
        "conditions": "Open-banking connection kept live for the term.",
        "valid_until": "2026-04-01",
    }


def test_revenue_share_lender_caps_repayment_instead_of_interest() -> None:
    # 0.5 x 41,234 -> 20,500; cap 1 + 0.05 + 0.07 + 0.02 x 0.5 = 1.13; 8% of monthly revenue.
    assert quote(POLICIES["sandbox-revshare"], ROW, today=TODAY) == {
        "dossier_id": "sme-0001@2026-03-01#m1",
        "amount": "20500",
        "currency": "GBP",
        "term_months": 24,
        "nominal_rate": "0",
        "upfront_fee": "0.00",
        "periodic_fee": "0",
        "profile": "revenue_share",
        "revenue_share": "0.08",
        "repayment_cap": "1.13",
        "conditions": "Card and bank receipts reported monthly.",
        "valid_until": "2026-04-01",
    }


@pytest.mark.parametrize(
    ("lender_id", "change"),
    [
        ("sandbox-bank", {"pd_12m": 0.051}),  # above max_pd
        ("sandbox-bank", {"grade": "D", "pd_12m": 0.04}),  # worse than min_grade
        ("sandbox-fintech", {"grade": "E", "pd_12m": 0.02}),
        ("sandbox-fintech", {"credit_limit": 999.0}),  # under min_amount after rounding
        ("sandbox-fintech", {"credit_limit": None}),
        ("sandbox-fintech", {"pd_12m": float("nan")}),
        ("sandbox-fintech", {"grade": None}),
        ("sandbox-revshare", {"revenue_12m": 0.0}),  # no revenue to share
        ("sandbox-revshare", {"revenue_12m": None}),
    ],
)
def test_lender_passes_outside_its_appetite(lender_id: str, change: dict) -> None:
    assert quote(POLICIES[lender_id], {**ROW, **change}, today=TODAY) is None


def test_rate_above_the_cap_passes() -> None:
    # 0.06 + 0.05 + 0.14 x 0.60 = 0.194 > a 0.19 cap; at 0.20 the same dossier is priced.
    dear = {**ROW, "grade": "D", "pd_12m": 0.14}
    capped = dataclasses.replace(POLICIES["sandbox-fintech"], max_rate=Decimal("0.19"))
    assert quote(capped, dear, today=TODAY) is None
    assert quote(POLICIES["sandbox-fintech"], dear, today=TODAY)["nominal_rate"] == "0.1940"


def test_same_sme_gets_a_spread_of_rates() -> None:
    rates = {k: quote(p, ROW, today=TODAY)["nominal_rate"] for k, p in POLICIES.items()}
    assert rates == {"sandbox-bank": "0.0740", "sandbox-fintech": "0.1220", "sandbox-revshare": "0"}


def test_policy_refuses_an_unknown_grade_or_a_share_without_its_fraction() -> None:
    with pytest.raises(ValueError, match="x: min_grade 'F' is not one of A, B, C, D, E"):
        LenderPolicy("x", "X", 0.1, "F", Decimal(0), Decimal(0), Decimal(0), 12)
    with pytest.raises(ValueError, match="x: a revenue_share policy needs revenue_share"):
        LenderPolicy("x", "X", 0.1, "C", Decimal(0), Decimal(0), Decimal(0), 12, profile="revenue_share")


# --- over a live lender API -------------------------------------------------------------------

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "warehouse"))
from test_dossier_store import NOW, give_consent, run_publish, scored, seed  # noqa: E402


@pytest.fixture
def served(warehouse_url: str, tmp_path: Path) -> Iterator[tuple[str, Any, dict[str, str]]]:
    """The real app on a free loopback port: SME 1 and 3 consent to northwind, SME 2 to harbor; all
    three published. Yields (base url, engine, {lender: API key})."""
    settings = for_home(tmp_path / "var", warehouse_url=warehouse_url, operator_token="operator-secret")
    engine = make_engine(warehouse_url)
    seed(engine)
    tokens = {}
    with session_scope(engine) as session:
        give_consent(session, "C-1", "SME-000001")
        give_consent(session, "C-2", "SME-000002", recipients=("harbor",))
        give_consent(session, "C-3", "SME-000003", recipients=("northwind", "harbor"))
        for lender_id in ("northwind", "harbor"):
            subscribe(session, lender_id)
            tokens[lender_id], _ = keys.issue_key(session, lender_id, at=NOW)
    app = create_app(settings)
    run_publish(engine, app.state.store, [scored(["SME-000001", "SME-000002"]), scored(["SME-000003"])])
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    for _ in range(200):
        if server.started:
            break
        time.sleep(0.05)
    port = server.servers[0].sockets[0].getsockname()[1]
    yield f"http://127.0.0.1:{port}", engine, tokens
    server.should_exit = True
    thread.join(timeout=10)
    engine.dispose()


def _session(token: str) -> requests.Session:
    session = requests.Session()
    session.headers["Authorization"] = f"Bearer {token}"
    return session


def test_held_versions_reads_the_feed_and_drops_withdrawn_versions(served: Any) -> None:
    url, engine, tokens = served
    held = list(held_versions(_session(tokens["northwind"]), url))
    assert [(r["sme_id"], r["grade"], r["credit_limit"]) for r in held] == [
        ("SME-000001", "A", 2500.0),
        ("SME-000003", "C", 7500.0),
    ]
    with session_scope(engine) as session:
        consent.revoke(session, "C-1", at=dt.datetime.now(dt.UTC).replace(microsecond=0))
    assert [r["sme_id"] for r in held_versions(_session(tokens["northwind"]), url)] == ["SME-000003"]
    assert [r["sme_id"] for r in held_versions(_session(tokens["harbor"]), url)] == [
        "SME-000002",
        "SME-000003",
    ]


def test_a_bad_key_or_url_is_one_line(served: Any) -> None:
    url, _engine, _tokens = served
    with pytest.raises(LenderClientError, match=rf"^the lender API at {url}/v1/lender answered 401: "):
        answer_feed(url, "not-a-key", POLICIES["sandbox-bank"])
    with pytest.raises(
        LenderClientError, match=r"^cannot reach the lender API at http://127.0.0.1:9/v1/lender"
    ):
        answer_feed("http://127.0.0.1:9", "k", POLICIES["sandbox-bank"])


def test_answer_feed_posts_one_offer_per_version_and_nothing_twice(served: Any) -> None:
    url, _engine, tokens = served
    first = answer_feed(url, tokens["northwind"], POLICIES["sandbox-fintech"])
    assert {k: v for k, v in first.items() if k != "posted"} == {
        "lender_id": "northwind",
        "held": 2,
        "already": 0,
        "passed": 0,
        "refused": [],
    }
    # SME 1: pd 0.011 -> 0.06 + 0.05 + 0.011 x 0.6 = 0.1166 on its whole 2,500 limit; SME 3: 0.1298 on 7,500.
    assert [
        (o["sme_id"], o["lender_id"], o["status"], Decimal(str(o["amount"])), Decimal(str(o["nominal_rate"])))
        for o in first["posted"]
    ] == [
        ("SME-000001", "northwind", "open", Decimal("2500"), Decimal("0.1166")),
        ("SME-000003", "northwind", "open", Decimal("7500"), Decimal("0.1298")),
    ]
    again = answer_feed(url, tokens["northwind"], POLICIES["sandbox-fintech"])
    assert again == {
        "lender_id": "northwind",
        "held": 2,
        "already": 2,
        "passed": 0,
        "posted": [],
        "refused": [],
    }
    harbor = answer_feed(url, tokens["harbor"], POLICIES["sandbox-bank"])
    # the bank passes on nothing here: SME 2 (pd 0.022, B) and SME 3 (pd 0.033, C) are within its appetite.
    assert [(o["sme_id"], Decimal(str(o["amount"]))) for o in harbor["posted"]] == [
        ("SME-000002", Decimal("3500")),
        ("SME-000003", Decimal("5500")),
    ]
