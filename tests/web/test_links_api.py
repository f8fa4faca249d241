"""Links a lender makes with its API key, the link lists (lender's own, operator's all) with paging,
and field visits requested from a link page; bad input and double submits. Both backends."""

from __future__ import annotations

import datetime as dt
import json
import re
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select

from dossier.cli import EXIT_OK, main
from dossier.settings import for_home, override
from dossier.web.app import create_app
from warehouse import keys, links
from warehouse.db import make_engine, session_scope
from warehouse.models import ConnectorLink, FieldVisitRequest, Lender, LinkEvent, Sme

TOKEN = "operator-secret-for-link-api"
OPERATOR = {"Authorization": f"Bearer {TOKEN}"}
TERMS = {
    "sme_id": "SME-1",
    "sources": ["accounting", "survey"],
    "recipients": ["northwind"],
    "purpose": "credit_decision",
    "history_months": 12,
    "consent_days": 90,
}


@pytest.fixture
def world(warehouse_url: str, tmp_path: Path) -> Any:
    engine = make_engine(warehouse_url)
    auth = {}
    with session_scope(engine) as session:
        for sme_id, name in (("SME-1", "Acme Bakery"), ("SME-2", "Beta Tools")):
            session.add(Sme(sme_id=sme_id, name=name, industry="retail", region="North", size_band="micro"))
        for lender_id, name in (("northwind", "Northwind Capital"), ("harbor", "Harbor Credit")):
            session.add(Lender(lender_id=lender_id, name=name))
        session.flush()
        for lender_id in ("northwind", "harbor"):
            token, _ = keys.issue_key(session, lender_id, at=dt.datetime.now(dt.UTC))
            auth[lender_id] = {"Authorization": f"Bearer {token}"}
    settings = for_home(tmp_path / "var", warehouse_url=warehouse_url, operator_token=TOKEN)
    with TestClient(create_app(settings), raise_server_exceptions=False) as client:
        yield {"client": client, "engine": engine, "auth": auth, "settings": settings}
    engine.dispose()


def path_of(url: str) -> str:
    return "/" + url.split("/", 3)[3]


def test_a_lender_makes_a_link_that_says_it_asks(world: dict[str, Any]) -> None:
    client = world["client"]
    made = client.post("/v1/links", json=TERMS, headers=world["auth"]["northwind"])
    assert made.status_code == 201, made.text
    body = made.json()
    assert body["url"].startswith("http://127.0.0.1:8000/connect/SME-1/")
    page = client.get(path_of(body["url"]))
    assert page.status_code == 200
    assert (
        "<p>Northwind Capital asks Acme Bakery (SME-1) to share data for a credit dossier.</p>" in page.text
    )
    with session_scope(world["engine"]) as session:
        link = session.get(ConnectorLink, body["link_id"])
        assert (link.created_by, link.sme_id, link.sources, link.recipients) == (
            "northwind",
            "SME-1",
            ["accounting", "survey"],
            ["northwind"],
        )
        requested = session.scalars(select(LinkEvent).where(LinkEvent.event_type == "requested")).one()
        assert requested.actor == "northwind"


@pytest.mark.parametrize(
    ("change", "status", "detail"),
    [
        (
            {"recipients": ["harbor"]},
            422,
            "recipients must include the lender asking (northwind); they are harbor",
        ),
        ({"recipients": ["northwind", "nobody"]}, 422, "unknown lender nobody; see: dossier lender list"),
        (
            {"purpose": "marketing"},
            422,
            "unknown purpose 'marketing'; known: credit_decision, facility_monitoring",
        ),
        ({"sme_id": "SME-404"}, 422, None),
        ({"sources": []}, 400, "sources: List should have at least 1 item after validation, not 0"),
        ({"valid_days": 91}, 400, "valid_days: Input should be less than or equal to 90"),
        ({"history_months": 0}, 400, "history_months: Input should be greater than or equal to 1"),
        ({"colour": "blue"}, 400, "colour: Extra inputs are not permitted"),
    ],
)
def test_bad_lender_links_are_refused_with_a_problem(
    world: dict[str, Any], change: dict[str, Any], status: int, detail: str | None
) -> None:
    answer = world["client"].post("/v1/links", json=TERMS | change, headers=world["auth"]["northwind"])
    assert answer.status_code == status
    assert answer.headers["content-type"] == "application/problem+json"
    if detail is not None:
        assert answer.json()["detail"] == detail
    with session_scope(world["engine"]) as session:
        assert session.scalars(select(ConnectorLink)).all() == []


def test_links_need_a_valid_lender_key(world: dict[str, Any]) -> None:
    client = world["client"]
    assert client.post("/v1/links", json=TERMS).status_code == 401
    assert client.get("/v1/links").status_code == 401
    assert (
        client.post("/v1/links", json=TERMS, headers={"Authorization": "Bearer sdk_nope"}).status_code == 401
    )
    assert client.post("/v1/links", json=TERMS, headers=OPERATOR).status_code == 401


def test_a_lender_pages_through_its_own_links_only(world: dict[str, Any]) -> None:
    client, auth = world["client"], world["auth"]
    made = [
        client.post("/v1/links", json=TERMS, headers=auth["northwind"]).json()["link_id"] for _ in range(3)
    ]
    theirs = client.post(
        "/v1/links", json=TERMS | {"recipients": ["harbor", "northwind"]}, headers=auth["harbor"]
    ).json()["link_id"]
    first = client.get("/v1/links", params={"limit": 2}, headers=auth["northwind"]).json()
    assert [v["link_id"] for v in first["links"]] == made[:2]
    assert first["next_cursor"] == made[1]
    rest = client.get(
        "/v1/links", params={"limit": 2, "cursor": first["next_cursor"]}, headers=auth["northwind"]
    ).json()
    assert ([v["link_id"] for v in rest["links"]], rest["next_cursor"]) == ([made[2]], None)
    view = rest["links"][0]
    assert {k: v for k, v in view.items() if k not in ("created_at", "expires_at")} == {
        "link_id": made[2],
        "sme_id": "SME-1",
        "sources": ["accounting", "survey"],
        "recipients": ["northwind"],
        "purpose": "credit_decision",
        "history_months": 12,
        "consent_days": 90,
        "created_by": "northwind",
        "status": "open",
        "answered_at": None,
        "consent_id": None,
        "field_visit_requested_at": None,
    }
    harbor = client.get("/v1/links", headers=auth["harbor"]).json()
    assert [v["link_id"] for v in harbor["links"]] == [theirs]
    foreign = client.get("/v1/links", params={"cursor": theirs}, headers=auth["northwind"])
    assert (foreign.status_code, foreign.json()["detail"]) == (
        400,
        f"cursor '{theirs}' is not a link of this list; start again without one",
    )
    assert client.get("/v1/links", params={"limit": 0}, headers=auth["northwind"]).status_code == 400
    everything = client.get("/v1/operator/links", params={"limit": 10}, headers=OPERATOR).json()
    assert sorted(v["link_id"] for v in everything["links"]) == sorted([*made, theirs])
    assert client.get("/v1/operator/links", headers=auth["northwind"]).status_code == 403


def _open(client: TestClient, terms: dict[str, Any]) -> tuple[str, str]:
    made = client.post("/v1/operator/links", json=terms, headers=OPERATOR).json()
    path = path_of(made["url"])
    csrf = re.search(r'name="csrf_token" value="([^"]+)"', client.get(path).text).group(1)
    return path, csrf


def test_an_sme_requests_a_field_visit_once(
    world: dict[str, Any], capsys: pytest.CaptureFixture[str]
) -> None:
    client, engine = world["client"], world["engine"]
    path, csrf = _open(client, TERMS)
    asked = client.post(f"{path}/visit", data={"csrf_token": csrf, "note": "  mornings,   please "})
    assert asked.status_code == 200
    assert "Your field visit is requested; the operator will contact you to arrange it." in asked.text
    assert "Field visit: requested on" in asked.text
    again = client.post(f"{path}/visit", data={"csrf_token": csrf, "note": "afternoons"})
    assert again.status_code == 200
    assert "You already asked for a field visit on" in again.text
    shown = client.get(path).text
    assert "Field visit: requested on" in shown
    assert "(mornings, please)" in shown
    assert "Request a field visit</button>" not in shown
    with session_scope(engine) as session:
        visit = session.scalars(select(FieldVisitRequest)).one()
        assert (visit.sme_id, visit.status, visit.note) == ("SME-1", "requested", "mornings, please")
        events = [
            (e.event_type, e.details)
            for e in session.scalars(select(LinkEvent).order_by(LinkEvent.sequence))
            if e.event_type == "field_visit_requested"
        ]
        link_id = visit.link_id
    assert events == [("field_visit_requested", {"client": "testclient", "note": "mornings, please"})]
    with session_scope(engine) as session:
        key = links.issue_page_key(session, world["settings"].kept_secret("secret_key"), "SME-1")
    own = client.get("/sme/SME-1", params={"key": key}).text
    assert "Field visit: requested on" in own
    assert "(mornings, please)" in own
    listed = client.get("/v1/operator/links", headers=OPERATOR).json()["links"]
    assert [(v["link_id"], v["field_visit_requested_at"] is not None) for v in listed] == [(link_id, True)]

    with override(world["settings"]):
        capsys.readouterr()
        assert main(["link", "list", "--visits", "--json"]) == EXIT_OK
    rows = json.loads(capsys.readouterr().out)
    assert [(r["link_id"], r["sme_id"], r["field_visit"], r["field_visit_note"]) for r in rows] == [
        (link_id, "SME-1", "requested", "mornings, please")
    ]


def test_bad_field_visit_requests_are_refused(world: dict[str, Any]) -> None:
    client, engine = world["client"], world["engine"]
    path, csrf = _open(client, TERMS | {"sources": ["accounting"]})
    page = client.get(path).text
    assert "Request a field visit" not in page
    no_survey = client.post(f"{path}/visit", data={"csrf_token": csrf})
    assert no_survey.status_code == 400
    assert "This link does not ask for the field-visit survey" in no_survey.text
    path, csrf = _open(client, TERMS)
    forged = client.post(f"{path}/visit", data={"csrf_token": "0" * 64})
    assert forged.status_code == 403
    too_long = client.post(f"{path}/visit", data={"csrf_token": csrf, "note": "x" * 501})
    assert too_long.status_code == 400
    assert "The note is longer than 500 characters" in too_long.text
    bad_token = client.post(f"{path[:-4]}AAAA/visit", data={"csrf_token": csrf})
    assert bad_token.status_code == 404
    with session_scope(engine) as session:
        assert session.scalars(select(FieldVisitRequest)).all() == []
