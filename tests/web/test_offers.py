"""Offers end to end over the lender API and the SME's page, on SQLite and PostgreSQL.

Three SMEs are published; SME 1 consents to northwind, SME 2 to harbor, SME 3 to both. Lenders post
offers over ``/v1/offers``; the SME compares and answers them on its page (CSRF and page key as a
browser sends them); the lenders read the outcome in their feeds and webhook payloads.
"""

from __future__ import annotations

import datetime as dt
import json
import re
import sys
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select, update

from dossier.settings import for_home
from dossier.web.app import create_app
from warehouse import consent, keys, links, offers, webhooks
from warehouse.db import make_engine, session_scope
from warehouse.feed import subscribe
from warehouse.models import DossierVersion, Offer, OfferEvent

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "warehouse"))
from test_dossier_store import give_consent, run_publish, scored, seed

NOW = dt.datetime.now(dt.UTC).replace(microsecond=0)
TODAY = NOW.date()
IN_A_MONTH = (TODAY + dt.timedelta(days=30)).isoformat()


class World:
    def __init__(self, client: TestClient, engine: Any, tokens: dict[str, str], secret: str) -> None:
        self.client, self.engine, self.tokens, self.secret = client, engine, tokens, secret
        self.store = client.app.state.store

    def as_lender(self, lender: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.tokens[lender]}"}

    def dossier_of(self, sme_id: str) -> str:
        with session_scope(self.engine) as session:
            return session.scalars(
                select(DossierVersion.dossier_id).where(DossierVersion.sme_id == sme_id)
            ).one()

    def offer(self, lender: str, sme_id: str, **terms: Any) -> Any:
        body = {
            "dossier_id": self.dossier_of(sme_id),
            "amount": "1000",
            "currency": "GBP",
            "term_months": 12,
            "nominal_rate": "0.12",
            "valid_until": IN_A_MONTH,
            **terms,
        }
        return self.client.post("/v1/offers", json=body, headers=self.as_lender(lender))

    def feed(self, lender: str) -> list[dict[str, Any]]:
        answer = self.client.get("/v1/feed", params={"limit": 1000}, headers=self.as_lender(lender))
        assert answer.status_code == 200, answer.text
        return answer.json()["events"]

    def page(self, sme_id: str) -> tuple[str, str, str]:
        """The SME's page: (html, page key, csrf token)."""
        with session_scope(self.engine) as session:
            key = links.issue_page_key(session, self.secret, sme_id)
        html = self.client.get(f"/sme/{sme_id}", params={"key": key})
        assert html.status_code == 200, html.text
        token = re.search(r'name="csrf_token" value="([^"]+)"', html.text)
        return html.text, key, token.group(1) if token else ""

    def answer(self, sme_id: str, offer_id: str, action: str) -> str:
        _html, key, csrf = self.page(sme_id)
        answer = self.client.post(
            f"/sme/{sme_id}/offers/{offer_id}/{action}", data={"key": key, "csrf_token": csrf}
        )
        assert answer.status_code == 200, answer.text
        return answer.text


@pytest.fixture
def world(warehouse_url: str, tmp_path: Path) -> Iterator[World]:
    settings = for_home(tmp_path / "var", warehouse_url=warehouse_url, operator_token="operator-secret")
    engine = make_engine(warehouse_url)
    seed(engine)
    tokens = {}
    granted = NOW - dt.timedelta(days=10)
    with session_scope(engine) as session:
        give_consent(session, "C-1", "SME-000001", granted_at=granted)
        give_consent(session, "C-2", "SME-000002", recipients=("harbor",), granted_at=granted)
        give_consent(session, "C-3", "SME-000003", recipients=("northwind", "harbor"), granted_at=granted)
        for lender_id in ("northwind", "harbor"):
            subscribe(session, lender_id)
            tokens[lender_id], _ = keys.issue_key(session, lender_id, at=granted)
    app = create_app(settings)
    run_publish(
        engine,
        app.state.store,
        [scored(["SME-000001", "SME-000002", "SME-000003"])],
        now=NOW - dt.timedelta(days=1),
        as_of=TODAY - dt.timedelta(days=1),
    )
    with TestClient(app) as client:
        yield World(client, engine, tokens, settings.kept_secret("secret_key"))
    engine.dispose()


def test_an_offer_gets_the_brokers_figures_and_only_its_lender_sees_it(world: World) -> None:
    posted = world.offer("northwind", "SME-000001", conditions="Director's guarantee.")
    assert posted.status_code == 201, posted.text
    view = posted.json()
    # 1,000 at 12 % nominal over 12 months, annuity: 88.85 a month, the last instalment absorbing the
    # rounding; total cost 66.19 and APR 12.68 % (the worked example of evaluation/APR.md).
    assert {k: v for k, v in view.items() if k not in ("offer_id", "created_at", "updated_at")} == {
        "lender_id": "northwind",
        "sme_id": "SME-000001",
        "dossier_id": world.dossier_of("SME-000001"),
        "status": "open",
        "status_reason": None,
        "currency": "GBP",
        "amount": "1000.00",
        "term_months": 12,
        "nominal_rate": "0.12",
        "upfront_fee": "0.00",
        "periodic_fee": "0.00",
        "profile": "annuity",
        "revenue_share": None,
        "repayment_cap": None,
        "expected_monthly_revenue": None,
        "conditions": "Director's guarantee.",
        "valid_until": IN_A_MONTH,
        "monthly_payment": "88.85",
        "total_repayable": "1066.19",
        "total_cost": "66.19",
        "apr": "0.1268",
        "revision": 1,
        "decided_at": None,
        "schedule": None,
    }
    offer_id = view["offer_id"]
    detail = world.client.get(
        f"/v1/offers/{offer_id}", params={"schedule": "true"}, headers=world.as_lender("northwind")
    ).json()
    payments = [Decimal(i["payment"]) for i in detail["schedule"]]
    assert len(payments) == 12
    assert set(payments[:11]) == {Decimal("88.85")}
    assert sum(payments) == Decimal("1066.19")
    assert detail["schedule"][-1]["balance"] == "0.00"
    # another lender neither finds it nor lists it
    assert world.client.get(f"/v1/offers/{offer_id}", headers=world.as_lender("harbor")).status_code == 404
    assert world.client.get("/v1/offers", headers=world.as_lender("harbor")).json() == []
    listed = world.client.get("/v1/offers", headers=world.as_lender("northwind")).json()
    assert [o["offer_id"] for o in listed] == [offer_id]
    assert world.client.get("/v1/offers", headers={"Authorization": "Bearer nope"}).status_code == 401


def _refusal(answer: Any) -> tuple[int, str]:
    body = answer.json()
    return answer.status_code, body["errors"][0]["field"]


def test_offers_outside_the_rules_are_refused_with_the_field_named(world: World) -> None:
    assert _refusal(world.offer("harbor", "SME-000001")) == (404, "dossier_id")  # not delivered to harbor
    assert _refusal(world.offer("northwind", "SME-000001", amount="-5")) == (422, "amount")
    assert _refusal(world.offer("northwind", "SME-000001", amount="1e12")) == (400, "amount")
    assert _refusal(world.offer("northwind", "SME-000001", term_months=0)) == (422, "term_months")
    assert _refusal(world.offer("northwind", "SME-000001", term_months=999)) == (422, "term_months")
    assert _refusal(world.offer("northwind", "SME-000001", nominal_rate="5")) == (422, "nominal_rate")
    assert _refusal(world.offer("northwind", "SME-000001", upfront_fee="1000")) == (422, "upfront_fee")
    yesterday = (TODAY - dt.timedelta(days=1)).isoformat()
    assert _refusal(world.offer("northwind", "SME-000001", valid_until=yesterday)) == (422, "valid_until")
    assert _refusal(world.offer("northwind", "SME-000001", currency="EUR")) == (422, "currency")
    assert _refusal(world.offer("northwind", "SME-000001", profile="balloon")) == (400, "profile")
    assert _refusal(world.offer("northwind", "SME-000001", profile="revenue_share", nominal_rate="0")) == (
        422,
        "revenue_share",
    )
    assert world.offer("northwind", "SME-000001").status_code == 201
    assert _refusal(world.offer("northwind", "SME-000001")) == (409, "dossier_id")  # one open offer each
    with session_scope(world.engine) as session:
        consent.revoke(session, "C-3", at=NOW)
    answer = world.offer("northwind", "SME-000003")
    assert _refusal(answer) == (409, "dossier_id")
    assert "withdrawn from you (consent_revoked)" in answer.json()["detail"]
    with session_scope(world.engine) as session:
        assert session.scalars(select(Offer.dossier_id)).all() == [world.dossier_of("SME-000001")]


def test_the_sme_compares_offers_and_accepts_one_and_every_lender_is_told(world: World) -> None:
    cheap = world.offer("harbor", "SME-000003", amount="5000", nominal_rate="0.09", term_months=24).json()
    dear = world.offer(
        "northwind", "SME-000003", amount="5000", nominal_rate="0.08", term_months=24, upfront_fee="250"
    ).json()
    # a lower nominal rate with a fee costs more: the APR, not the rate, orders them
    assert Decimal(cheap["apr"]) < Decimal(dear["apr"])
    html, _key, _csrf = world.page("SME-000003")
    rows = re.findall(r"Accept (\w+)'s offer", html)
    assert rows == ["harbor", "northwind"]
    section = html[html.index("offers-heading") : html.index("consents-heading")]
    assert "recommends borrowing at most 7,500" in section  # the broker's own figures
    assert "indicative rate of 8.50 %" in section

    page = world.answer("SME-000003", cheap["offer_id"], "accept")
    assert "You accepted harbor&#39;s offer of GBP 5000.00" in page
    again = world.answer("SME-000003", cheap["offer_id"], "accept")
    assert "You had already accepted harbor" in again
    refused = world.answer("SME-000003", dear["offer_id"], "accept")
    assert "Nothing was changed: offer " in refused
    assert "it was closed: the SME accepted another offer" in refused

    harbor_events = [e for e in world.feed("harbor") if e["event"].startswith("offer_")]
    northwind_events = [e for e in world.feed("northwind") if e["event"].startswith("offer_")]
    assert [
        (e["event"], e["reason"], e["offer"]["offer_id"], e["offer"]["status"]) for e in harbor_events
    ] == [("offer_accepted", None, cheap["offer_id"], "accepted")]
    assert [(e["event"], e["reason"], e["offer"]["status"]) for e in northwind_events] == [
        ("offer_closed", "another_offer_accepted", "closed")
    ]
    assert northwind_events[0]["dossier"] is None
    assert northwind_events[0]["sme_id"] == "SME-000003"
    status = world.client.get(f"/v1/offers/{dear['offer_id']}", headers=world.as_lender("northwind")).json()
    assert (status["status"], status["status_reason"]) == ("closed", "another_offer_accepted")
    # an accepted SME takes no more offers
    assert _refusal(world.offer("northwind", "SME-000003")) == (409, "dossier_id")
    with session_scope(world.engine) as session:
        ledger = session.execute(
            select(OfferEvent.offer_id, OfferEvent.event_type, OfferEvent.actor).order_by(OfferEvent.id)
        ).all()
        assert [tuple(r) for r in ledger] == [
            (cheap["offer_id"], "posted", "harbor"),
            (dear["offer_id"], "posted", "northwind"),
            (cheap["offer_id"], "accepted", "sme"),
            (dear["offer_id"], "closed", "broker"),
        ]
        assert links.verify_ledgers(session)[1] == []
        session.execute(update(OfferEvent).where(OfferEvent.event_type == "accepted").values(actor="harbor"))
        broken = links.verify_ledgers(session)[1]
        assert [str(b) for b in broken] == [
            f"offer {cheap['offer_id']}: event 2 (accepted) was altered after it was written (its hash differs)"
        ]
        session.rollback()


def test_declining_tells_the_lender_and_a_withdrawn_version_lapses_its_offers(world: World) -> None:
    first = world.offer("northwind", "SME-000003").json()
    second = world.offer("harbor", "SME-000003").json()
    page = world.answer("SME-000003", second["offer_id"], "decline")
    assert "You declined harbor&#39;s offer" in page
    assert "You had already declined" in world.answer("SME-000003", second["offer_id"], "decline")
    assert [
        (e["event"], e["offer"]["status"]) for e in world.feed("harbor") if e["event"].startswith("offer_")
    ] == [("offer_declined", "declined")]
    with session_scope(world.engine) as session:
        consent.revoke(session, "C-3", at=NOW)
    events = world.feed("northwind")
    tail = [(e["event"], e["dossier_id"], e["reason"]) for e in events[-2:]]
    assert tail == [
        ("withdrawn", first["dossier_id"], "consent_revoked"),
        ("offer_lapsed", first["dossier_id"], "version_withdrawn"),
    ]
    assert events[-1]["offer"]["status"] == "lapsed"
    refused = world.answer("SME-000003", first["offer_id"], "accept")
    assert "cannot be accepted: it lapsed: the dossier it was made on was withdrawn" in refused


def test_offers_lapse_after_their_validity_and_the_lender_is_told(world: World) -> None:
    offer = world.offer("northwind", "SME-000001", valid_until=TODAY.isoformat()).json()
    with session_scope(world.engine) as session:
        assert offers.lapse_due(session, NOW) == 0  # valid through the whole of its last day
        assert offers.lapse_due(session, NOW + dt.timedelta(days=1)) == 1
        assert offers.lapse_due(session, NOW + dt.timedelta(days=2)) == 0
    lapsed = [e for e in world.feed("northwind") if e["event"] == "offer_lapsed"]
    assert [(e["reason"], e["offer"]["offer_id"]) for e in lapsed] == [("expired", offer["offer_id"])]


def test_amending_and_withdrawing_an_open_offer(world: World) -> None:
    offer = world.offer("northwind", "SME-000001").json()
    path = f"/v1/offers/{offer['offer_id']}"
    headers = world.as_lender("northwind")
    amended = world.client.patch(path, json={"nominal_rate": "0", "term_months": 10}, headers=headers).json()
    assert (amended["revision"], amended["monthly_payment"], amended["apr"], amended["total_cost"]) == (
        2,
        "100.00",
        "0.0000",
        "0.00",
    )
    assert _refusal(world.client.patch(path, json={"amount": "0"}, headers=headers)) == (422, "amount")
    assert _refusal(world.client.patch(path, json={"amount": None}, headers=headers)) == (422, "amount")
    assert world.client.patch(path, json={"currency": "EUR"}, headers=headers).status_code == 400
    other = world.client.patch(path, json={"term_months": 6}, headers=world.as_lender("harbor"))
    assert other.status_code == 404
    gone = world.client.post(f"{path}/withdraw", headers=headers).json()
    assert gone["status"] == "withdrawn"
    assert world.client.post(f"{path}/withdraw", headers=headers).json()["revision"] == 2
    assert _refusal(world.client.patch(path, json={"term_months": 6}, headers=headers)) == (409, "offer_id")
    # withdrawn by the lender: nothing in its feed, gone from the SME's open offers
    assert [e for e in world.feed("northwind") if e["event"].startswith("offer_")] == []
    html, _key, _csrf = world.page("SME-000001")
    assert "Accept northwind" not in html
    assert "withdrawn" in html


def test_offer_events_are_webhook_messages_with_the_offer(world: World) -> None:
    with session_scope(world.engine) as session:
        _secret, endpoint = webhooks.create_endpoint(
            session,
            "northwind",
            "https://receiver.example/hooks",
            secret_key=world.secret,
            allow_private=True,
        )
        endpoint_id = endpoint.endpoint_id
    offer = world.offer("northwind", "SME-000003").json()
    world.offer("harbor", "SME-000003")
    world.answer("SME-000003", offer["offer_id"], "accept")
    with session_scope(world.engine) as session:
        webhooks.enqueue(session, lender_id="northwind")
        endpoint = webhooks.get_endpoint(session, endpoint_id)
        bodies = [
            json.loads(webhooks.payload_of(session, m)) for m in webhooks.messages_of(session, endpoint)
        ]
    assert sorted(b["type"] for b in bodies) == ["dossier.delivered", "dossier.delivered", "offer.accepted"]
    accepted = next(b for b in bodies if b["type"] == "offer.accepted")
    assert (accepted["data"]["offer"]["offer_id"], accepted["data"]["offer"]["status"]) == (
        offer["offer_id"],
        "accepted",
    )
    assert accepted["data"]["dossier"] is None
    assert accepted["data"]["sme_id"] == "SME-000003"


def test_two_acceptances_at_once_accept_exactly_one_offer(world: World) -> None:
    import threading

    first = world.offer("northwind", "SME-000003").json()["offer_id"]
    second = world.offer("harbor", "SME-000003").json()["offer_id"]
    start = threading.Barrier(2)
    results: dict[str, str] = {}

    def accept(offer_id: str) -> None:
        start.wait()
        try:
            with session_scope(world.engine) as session:
                offers.accept(session, "SME-000003", offer_id, at=dt.datetime.now(dt.UTC))
            results[offer_id] = "accepted"
        except offers.OfferError as error:
            results[offer_id] = str(error)

    threads = [threading.Thread(target=accept, args=(o,)) for o in (first, second)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert sorted(results.values()).count("accepted") == 1, results
    loser = next(o for o, r in results.items() if r != "accepted")
    assert "cannot be accepted: it was closed: the SME accepted another offer" in results[loser]
    with session_scope(world.engine) as session:
        statuses = sorted(session.scalars(select(Offer.status).where(Offer.sme_id == "SME-000003")))
    assert statuses == ["accepted", "closed"]


def test_offer_events_leave_the_delta_sharing_table_as_it_was(world: World) -> None:
    table = "/delta-sharing/shares/northwind/schemas/credit/tables/dossiers"
    auth = world.as_lender("northwind")

    def rows() -> list[str]:
        lines = [
            json.loads(line) for line in world.client.post(f"{table}/query", headers=auth).text.splitlines()
        ]
        return sorted(line["file"]["id"] for line in lines if "file" in line)

    offer = world.offer("northwind", "SME-000003").json()
    before = rows()
    version = int(world.client.get(f"{table}/version", headers=auth).headers["delta-table-version"])
    world.offer("harbor", "SME-000003")
    world.answer("SME-000003", offer["offer_id"], "accept")
    assert world.feed("northwind")[-1]["event"] == "offer_accepted"
    after = int(world.client.get(f"{table}/version", headers=auth).headers["delta-table-version"])
    assert after == version + 1  # the offer event is a feed position, and so a table version
    assert rows() == before  # with nothing added or removed
    changes = world.client.get(f"{table}/changes", params={"startingVersion": after}, headers=auth)
    assert changes.status_code == 200, changes.text
    assert [
        json.loads(line) for line in changes.text.splitlines() if '"cdf"' in line or '"add"' in line
    ] == []


def test_a_lender_that_no_longer_holds_the_dossier_is_not_shown_what_came_from_it(world: World) -> None:
    """A revenue-share schedule follows from the SME's revenue: once the consent ends (and after an
    erasure) the lender's views of its offer leave that out; its own terms stay."""
    shared = world.offer(
        "northwind",
        "SME-000003",
        profile="revenue_share",
        nominal_rate="0",
        revenue_share="1",
        repayment_cap="1.2",
    )
    assert shared.status_code == 201, shared.text
    shared = shared.json()
    revenue = world.client.get(
        f"/v1/offers/{shared['offer_id']}", headers=world.as_lender("northwind")
    ).json()
    assert revenue["expected_monthly_revenue"] is not None
    assert revenue["apr"] is not None
    with session_scope(world.engine) as session:
        consent.revoke(session, "C-3", at=NOW)
    lapsed = world.feed("northwind")[-1]
    assert (lapsed["event"], lapsed["offer"]["status"]) == ("offer_lapsed", "lapsed")
    gone = ("expected_monthly_revenue", "monthly_payment", "total_repayable", "total_cost", "apr")
    shown = world.client.get(f"/v1/offers/{shared['offer_id']}", headers=world.as_lender("northwind")).json()
    for view in (lapsed["offer"], shown):
        assert {k: view[k] for k in gone} == dict.fromkeys(gone)
        assert (view["amount"], view["revenue_share"], view["repayment_cap"]) == ("1000.00", "1", "1.2")
    listed = world.client.get("/v1/offers", headers=world.as_lender("northwind")).json()
    assert [o["apr"] for o in listed] == [None]
    with session_scope(world.engine) as session:
        removed = consent.erase(session, world.store, "SME-000003", at=NOW)
    assert removed["removed"]["offers"] == 1
    with session_scope(world.engine) as session:
        offer = session.get(Offer, shared["offer_id"])
        assert (offer.basis, offer.terms["expected_monthly_revenue"], offer.figures["apr"]) == (
            {},
            None,
            None,
        )
        details = [e.details for e in offers.history(session, shared["offer_id"])]
        assert "expected_monthly_revenue" not in json.dumps(details)


def test_offers_on_a_version_kept_by_the_next_publish_stay_open_and_amendable(world: World) -> None:
    """The next date finds SMEs 1 and 3 unchanged (they keep their versions) and SME 2 changed."""
    on_one = world.offer("northwind", "SME-000001").json()
    on_three = world.offer("harbor", "SME-000003").json()
    old_two = world.dossier_of("SME-000002")
    on_two = world.offer("harbor", "SME-000002").json()
    delivered_before = {
        lender: [e["dossier_id"] for e in world.feed(lender) if e["event"] == "delivered"]
        for lender in ("northwind", "harbor")
    }

    summary = run_publish(
        world.engine,
        world.store,
        [pd.concat([scored(["SME-000001"]), scored(["SME-000002"], bump=0.01), scored(["SME-000003"])])],
        now=NOW - dt.timedelta(hours=1),
        as_of=TODAY,
    )

    assert (summary["kept"], summary["new_or_changed"]) == (2, 1)
    new_two = f"SME-000002:{TODAY.isoformat()}:v3:accounting+tax@24m"
    delivered_after = {
        lender: [e["dossier_id"] for e in world.feed(lender) if e["event"] == "delivered"]
        for lender in ("northwind", "harbor")
    }
    assert delivered_after == {
        "northwind": delivered_before["northwind"],
        "harbor": [*delivered_before["harbor"], new_two],
    }
    # The kept versions are still each SME's current one: their offers stay open and can be amended.
    for lender, offer in (("northwind", on_one), ("harbor", on_three)):
        shown = world.client.get(f"/v1/offers/{offer['offer_id']}", headers=world.as_lender(lender)).json()
        assert (shown["status"], shown["dossier_id"]) == ("open", offer["dossier_id"])
        amended = world.client.patch(
            f"/v1/offers/{offer['offer_id']}", json={"term_months": 6}, headers=world.as_lender(lender)
        )
        assert (amended.status_code, amended.json()["revision"]) == (200, 2), amended.text
    assert world.offer("harbor", "SME-000001").status_code == 404  # never delivered to harbor
    # SME 2's old version was superseded by its new one: a new offer on the old one is refused.
    body = {
        "dossier_id": old_two,
        "amount": "1000",
        "currency": "GBP",
        "term_months": 12,
        "nominal_rate": "0.12",
        "valid_until": IN_A_MONTH,
    }
    withdrawn = world.client.post(
        f"/v1/offers/{on_two['offer_id']}/withdraw", headers=world.as_lender("harbor")
    )
    assert withdrawn.json()["status"] == "withdrawn"
    refused = world.client.post("/v1/offers", json=body, headers=world.as_lender("harbor"))
    assert (refused.status_code, refused.json()["errors"][0]["field"]) == (409, "dossier_id")
    assert "has expired" in refused.json()["errors"][0]["message"]
