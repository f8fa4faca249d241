"""Connector links over HTTP: making, showing, granting, declining, bad tokens, CSRF, the ledger; both backends."""

from __future__ import annotations

import datetime as dt
import hashlib
import re
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select

from dossier.settings import for_home
from dossier.web.app import create_app
from warehouse import links
from warehouse.db import make_engine, session_scope
from warehouse.models import ConnectorLink, Consent, ConsentEvent, Lender, LinkEvent, ShownText, Sme

TOKEN = "operator-secret-for-tests"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


@pytest.fixture
def engine(warehouse_url: str) -> Any:
    engine = make_engine(warehouse_url)
    with session_scope(engine) as session:
        session.add(
            Sme(sme_id="SME-1", name="Acme Bakery", industry="retail", region="North", size_band="micro")
        )
        session.add(
            Sme(sme_id="SME-2", name="Beta Tools", industry="retail", region="North", size_band="micro")
        )
        session.add(Lender(lender_id="northwind", name="Northwind Capital"))
    yield engine
    engine.dispose()


@pytest.fixture
def client(engine: Any, warehouse_url: str, tmp_path: Path) -> Any:
    settings = for_home(tmp_path / "var", warehouse_url=warehouse_url, operator_token=TOKEN)
    with TestClient(create_app(settings), raise_server_exceptions=False) as test_client:
        yield test_client


def make_link(client: TestClient, **changes: Any) -> dict[str, Any]:
    body = {
        "sme_id": "SME-1",
        "sources": ["utility", "accounting"],
        "recipients": ["northwind"],
        "purpose": "credit_decision",
        "history_months": 24,
        "consent_days": 180,
    } | changes
    response = client.post("/v1/operator/links", json=body, headers=AUTH)
    assert response.status_code == 201, response.text
    return response.json()


def path_of(url: str) -> str:
    return "/" + url.split("/", 3)[3]


def form_of(html: str) -> dict[str, str]:
    return dict(re.findall(r'name="(csrf_token|text_sha256)" value="([^"]+)"', html))


def test_a_link_shows_the_terms_in_plain_words_and_records_what_was_shown(
    client: TestClient, engine: Any
) -> None:
    made = make_link(client)
    assert made["url"].startswith("http://127.0.0.1:8000/connect/SME-1/")
    page = client.get(path_of(made["url"]))
    assert page.status_code == 200
    assert page.headers["cache-control"] == "no-store"
    text = (
        "The sme-dossier operator asks Acme Bakery (SME-1) to share data for a credit dossier.\n\n"
        "Data asked for: your accounting books (sales, costs, balances); your utility bills and meter "
        "readings, covering the last 24 months.\n\n"
        "Why: deciding on a credit application: whether to lend, how much and at what price.\n\n"
        "Who receives the dossier: Northwind Capital (northwind). Nobody else does.\n\n"
        "Until when: 180 days from the moment you agree, unless you take it back earlier. You can take "
        "it back at any time from your own page; it takes effect at once."
    )
    for paragraph in text.split("\n\n"):
        assert f"<p>{paragraph}</p>" in page.text
    assert '<button class="primary" type="submit" name="decision" value="grant">' in page.text
    digest = hashlib.sha256(text.encode()).hexdigest()
    assert form_of(page.text)["text_sha256"] == digest
    with session_scope(engine) as session:
        link = session.get(ConnectorLink, made["link_id"])
        token = path_of(made["url"]).rsplit("/", 1)[1]
        assert link.token_sha256 == hashlib.sha256(token.encode()).hexdigest()
        assert token not in str([vars(e) for e in session.scalars(select(LinkEvent))])
        assert session.get(ShownText, digest).text == text
        events = [
            (e.sequence, e.event_type, e.actor, e.details.get("text_sha256"), e.details.get("client"))
            for e in session.scalars(select(LinkEvent).order_by(LinkEvent.sequence))
        ]
    assert events == [(1, "requested", "operator", None, None), (2, "shown", "sme", digest, "testclient")]


def test_granting_records_a_consent_and_the_text_agreed_to(client: TestClient, engine: Any) -> None:
    made = make_link(client)
    path = path_of(made["url"])
    form = form_of(client.get(path).text)
    granted = client.post(path, data={**form, "decision": "grant"})
    assert granted.status_code == 200
    consent_id = f"C-SME-1-{made['link_id']}"
    assert f"Your consent {consent_id} is recorded" in granted.text
    own = re.search(r'<a href="http://127.0.0.1:8000(/sme/SME-1\?key=[^"]+)">Your page</a>', granted.text)
    own_page = client.get(own.group(1))
    assert (own_page.status_code, f"<td>{consent_id}</td>" in own_page.text) == (200, True)
    again = client.post(path, data={**form, "decision": "grant"})
    assert (again.status_code, f"Your consent {consent_id} is recorded" in again.text) == (200, True)
    with session_scope(engine) as session:
        row = session.get(Consent, consent_id)
        assert (row.sme_id, row.sources, row.recipients, row.purpose, row.history_months, row.status) == (
            "SME-1",
            ["accounting", "utility"],
            ["northwind"],
            "credit_decision",
            24,
            "active",
        )
        assert row.expires_at - row.granted_at == dt.timedelta(days=180)
        link_events = [e.event_type for e in session.scalars(select(LinkEvent).order_by(LinkEvent.sequence))]
        consent_events = [(e.event_type, e.actor) for e in session.scalars(select(ConsentEvent))]
        last = session.scalars(select(LinkEvent).where(LinkEvent.event_type == "granted")).one()
        assert last.details == {
            "text_sha256": form["text_sha256"],
            "client": "testclient",
            "consent_id": consent_id,
        }
    assert link_events == ["requested", "shown", "granted"]
    assert consent_events == [("granted", "sme")]
    reused = client.get(path)
    assert reused.status_code == 409
    assert "This link was already used: you granted on" in reused.text


def test_declining_is_recorded_and_grants_nothing(client: TestClient, engine: Any) -> None:
    path = path_of(make_link(client)["url"])
    form = form_of(client.get(path).text)
    declined = client.post(path, data={**form, "decision": "decline"})
    assert (declined.status_code, "You declined. Nothing will be shared" in declined.text) == (200, True)
    assert client.post(path, data={**form, "decision": "grant"}).status_code == 409
    with session_scope(engine) as session:
        assert session.scalars(select(Consent)).all() == []
        assert [e.event_type for e in session.scalars(select(LinkEvent).order_by(LinkEvent.sequence))] == [
            "requested",
            "shown",
            "declined",
        ]


@pytest.mark.parametrize(
    "spoil",
    [
        pytest.param(lambda path: path[:-5], id="truncated"),
        pytest.param(lambda path: path[:-3] + ("AAA" if not path.endswith("AAA") else "BBB"), id="forged"),
        pytest.param(lambda path: path.replace("SME-1", "SME-2"), id="other-sme"),
        pytest.param(lambda path: path.rsplit(".", 2)[0] + ".x.y", id="malformed"),
    ],
)
def test_bad_tokens_get_a_clear_page_and_a_404(client: TestClient, spoil: Any) -> None:
    path = path_of(make_link(client)["url"])
    page = client.get(spoil(path))
    assert page.status_code == 404
    assert page.headers["content-type"].startswith("text/html")
    assert "This link is not valid. Check that you copied all of it, or ask for a new one." in page.text
    assert "Traceback" not in page.text


def test_an_expired_link_gets_a_410(client: TestClient, engine: Any) -> None:
    made = make_link(client)
    with session_scope(engine) as session:
        session.get(ConnectorLink, made["link_id"]).expires_at = dt.datetime.now(dt.UTC) - dt.timedelta(
            seconds=1
        )
    page = client.get(path_of(made["url"]))
    assert (page.status_code, "This link expired on" in page.text) == (410, True)


def test_answers_without_the_csrf_token_or_with_changed_terms_are_refused(
    client: TestClient, engine: Any
) -> None:
    path = path_of(make_link(client)["url"])
    form = form_of(client.get(path).text)
    forged = client.post(path, data={**form, "csrf_token": "0" * 64, "decision": "grant"})
    assert (forged.status_code, "This form has expired or did not come from this site" in forged.text) == (
        403,
        True,
    )
    client.cookies.clear()
    cookieless = client.post(path, data={**form, "decision": "grant"})
    assert cookieless.status_code == 403
    form = form_of(client.get(path).text)
    stale = client.post(path, data={**form, "text_sha256": "f" * 64, "decision": "grant"})
    assert (stale.status_code, "The terms on this page changed" in stale.text) == (409, True)
    with session_scope(engine) as session:
        assert session.scalars(select(Consent)).all() == []


def test_making_a_link_needs_the_operator_and_valid_terms(client: TestClient) -> None:
    body = {
        "sme_id": "SME-1",
        "sources": ["accounting"],
        "recipients": ["northwind"],
        "purpose": "credit_decision",
    }
    body |= {"history_months": 12, "consent_days": 30}
    assert client.post("/v1/operator/links", json=body).status_code == 401
    unknown = client.post("/v1/operator/links", json=body | {"recipients": ["nobody"]}, headers=AUTH)
    assert (unknown.status_code, unknown.json()["detail"]) == (
        422,
        "unknown lender nobody; see: dossier lender list",
    )
    purpose = client.post("/v1/operator/links", json=body | {"purpose": "marketing"}, headers=AUTH)
    assert (
        purpose.json()["detail"] == "unknown purpose 'marketing'; known: credit_decision, facility_monitoring"
    )
    too_long = client.post("/v1/operator/links", json=body | {"valid_days": 400}, headers=AUTH)
    assert (too_long.status_code, too_long.json()["detail"]) == (
        400,
        "valid_days: Input should be less than or equal to 90",
    )
    made = client.post("/v1/operator/links", json=body, headers=AUTH).json()
    expires = dt.datetime.fromisoformat(made["expires_at"])
    assert dt.timedelta(days=13, hours=23) < expires - dt.datetime.now(dt.UTC) <= dt.timedelta(days=14)


def test_verify_names_the_first_altered_event(client: TestClient, engine: Any) -> None:
    made = make_link(client)
    path = path_of(made["url"])
    client.post(path, data={**form_of(client.get(path).text), "decision": "grant"})
    with session_scope(engine) as session:
        assert links.verify_ledgers(session) == (2, [])
        shown = session.scalars(select(LinkEvent).where(LinkEvent.event_type == "shown")).one()
        shown.details = {**shown.details, "client": "10.0.0.9"}
    with session_scope(engine) as session:
        checked, broken = links.verify_ledgers(session)
    assert (checked, [str(b) for b in broken]) == (
        2,
        [f"link {made['link_id']}: event 2 (shown) was altered after it was written (its hash differs)"],
    )
