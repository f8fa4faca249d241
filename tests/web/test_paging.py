"""Paging of every list route: ``limit`` and an opaque ``cursor``, the next page named by ``Link``
(rel="next") and ``Next-Cursor``; following the links reads the whole list once, in order; bad
limits, cursors and filters are 400 problems naming the field; both backends."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from dossier.settings import for_home
from dossier.web.app import create_app
from dossier.web.deps import MAX_LIST_PAGE, encode_cursor
from warehouse import consent, keys
from warehouse.db import make_engine, session_scope
from warehouse.models import Sme

TOKEN = "operator-secret"
OPERATOR = {"Authorization": f"Bearer {TOKEN}"}
SMES = [f"SME-00000{n}" for n in range(1, 4)]


@pytest.fixture
def service(warehouse_url: str, tmp_path: Path) -> Any:
    """Three SMEs with two consents each, lender northwind with five keys, kestrel with one.

    Yields (client, {lender: auth headers})."""
    engine = make_engine(warehouse_url)
    now = dt.datetime.now(dt.UTC)
    headers = {}
    with session_scope(engine) as session:
        for n, sme_id in enumerate(SMES):
            session.add(
                Sme(sme_id=sme_id, name=f"Firm {n}", industry="Retail", region="London", size_band="micro")
            )
        session.flush()
        for lender_id in ("northwind", "kestrel"):
            token, _ = keys.add_lender(session, lender_id, at=now)
            headers[lender_id] = {"Authorization": f"Bearer {token}"}
        for hours in range(1, 5):
            later = now + dt.timedelta(seconds=hours)
            token, _ = keys.rotate_key(session, "northwind", at=later, grace=dt.timedelta(days=1))
        headers["northwind"] = {"Authorization": f"Bearer {token}"}
        for sme_id in reversed(SMES):
            for suffix in ("b", "a"):
                consent.grant(
                    session,
                    consent_id=f"C-{sme_id[-1]}{suffix}",
                    sme_id=sme_id,
                    sources=["accounting"],
                    recipients=["northwind"],
                    purpose="credit_decision",
                    history_months=12,
                    granted_at=now - dt.timedelta(days=1),
                    expires_at=now + dt.timedelta(days=90),
                )
    engine.dispose()
    settings = for_home(tmp_path / "var", warehouse_url=warehouse_url, operator_token=TOKEN)
    with TestClient(create_app(settings), raise_server_exceptions=False) as client:
        yield client, headers


def read_all(
    client: TestClient, url: str, auth: dict[str, str], **params: Any
) -> tuple[list[Any], list[int]]:
    """Follow the Link rel="next" headers from ``url``; returns every item and each page's size."""
    items: list[Any] = []
    sizes: list[int] = []
    answer = client.get(url, params=params, headers=auth)
    while True:
        assert answer.status_code == 200, answer.text
        items += answer.json()
        sizes.append(len(answer.json()))
        if "link" not in answer.headers:
            assert "next-cursor" not in answer.headers
            return items, sizes
        link = answer.links["next"]["url"]
        assert answer.headers["next-cursor"] in link
        answer = client.get(link, headers=auth)


def test_keys_page_in_order_and_the_links_read_the_whole_list_once(service: Any) -> None:
    client, headers = service
    auth = headers["northwind"]
    whole = client.get("/v1/keys", headers=auth)
    assert (whole.status_code, "link" in whole.headers) == (200, False)
    assert [k["status"] for k in whole.json()] == ["expiring"] * 4 + ["active"]
    items, sizes = read_all(client, "/v1/keys", auth, limit=2)
    assert (items, sizes) == (whole.json(), [2, 2, 1])
    first = client.get("/v1/keys", params={"limit": 2}, headers=auth)
    assert first.links["next"]["url"] == f"/v1/keys?limit=2&cursor={encode_cursor([items[1]['prefix']])}"
    assert client.get("/v1/keys", headers=headers["kestrel"]).json()[0]["prefix"] not in {
        k["prefix"] for k in items
    }


def test_subscriptions_page_by_name(service: Any) -> None:
    client, headers = service
    auth = headers["northwind"]
    for name in ("e", "c", "a", "d", "b"):
        assert client.put(f"/v1/subscriptions/{name}", json={}, headers=auth).status_code == 201
    items, sizes = read_all(client, "/v1/subscriptions", auth, limit=2)
    assert ([s["name"] for s in items], sizes) == (["a", "b", "c", "d", "e"], [2, 2, 1])
    assert items == client.get("/v1/subscriptions", headers=auth).json()
    assert client.get("/v1/subscriptions", params={"limit": 2}, headers=headers["kestrel"]).json() == []


def test_operator_consents_page_by_sme_and_id_keeping_the_filter(service: Any) -> None:
    client, _headers = service
    items, sizes = read_all(client, "/v1/operator/consents", OPERATOR, limit=4)
    assert [(c["sme_id"], c["consent_id"]) for c in items] == [
        (sme_id, f"C-{sme_id[-1]}{suffix}") for sme_id in SMES for suffix in ("a", "b")
    ]
    assert sizes == [4, 2]
    assert items == client.get("/v1/operator/consents", headers=OPERATOR).json()
    first = client.get("/v1/operator/consents", params={"sme_id": "SME-000002", "limit": 1}, headers=OPERATOR)
    assert "sme_id=SME-000002" in first.links["next"]["url"]
    filtered, sizes = read_all(client, "/v1/operator/consents", OPERATOR, sme_id="SME-000002", limit=1)
    assert ([c["consent_id"] for c in filtered], sizes) == (["C-2a", "C-2b"], [1, 1])


def test_operator_links_page_by_sme_and_id(service: Any) -> None:
    client, _headers = service
    made = []
    for sme_id in (SMES[2], SMES[0], SMES[2]):
        body = {
            "sme_id": sme_id,
            "sources": ["accounting"],
            "recipients": ["northwind"],
            "purpose": "credit_decision",
            "history_months": 12,
            "consent_days": 90,
        }
        answer = client.post("/v1/operator/links", json=body, headers=OPERATOR)
        assert answer.status_code == 201, answer.text
        made.append(answer.json())
    # The link list pages by its own next_cursor (as the lender's GET /v1/links), oldest first.
    items, sizes, cursor = [], [], None
    while True:
        params = {"limit": 2} | ({"cursor": cursor} if cursor else {})
        page = client.get("/v1/operator/links", params=params, headers=OPERATOR)
        assert page.status_code == 200, page.text
        items += page.json()["links"]
        sizes.append(len(page.json()["links"]))
        cursor = page.json()["next_cursor"]
        if cursor is None:
            break
    assert sizes == [2, 1]
    assert [v["link_id"] for v in items] == [m["link_id"] for m in made]
    first = items[0]
    assert {k: first[k] for k in ("sources", "recipients", "purpose", "history_months", "consent_days")} == {
        "sources": ["accounting"],
        "recipients": ["northwind"],
        "purpose": "credit_decision",
        "history_months": 12,
        "consent_days": 90,
    }
    assert (first["created_by"], first["status"], first["answered_at"], first["consent_id"]) == (
        "operator",
        "open",
        None,
        None,
    )
    assert all("token" not in key for key in first)


@pytest.mark.parametrize(
    ("url", "params", "field"),
    [
        ("/v1/keys", {"limit": 0}, "query.limit"),
        ("/v1/keys", {"limit": MAX_LIST_PAGE + 1}, "query.limit"),
        ("/v1/subscriptions", {"limit": "ten"}, "query.limit"),
        ("/v1/subscriptions", {"cursor": "!!not-base64!!"}, "query.cursor"),
        ("/v1/subscriptions", {"cursor": encode_cursor(["a", "b"])}, "query.cursor"),
        ("/v1/keys", {"cursor": encode_cursor(["ffffffffffff"])}, "query.cursor"),
        ("/v1/keys", {"cursor": "x" * 513}, "query.cursor"),
        ("/v1/operator/consents", {"cursor": encode_cursor(["SME-000001"])}, "query.cursor"),
        ("/v1/operator/consents", {"cursor": "WzEsMl0"}, "query.cursor"),
        ("/v1/operator/links", {"limit": -1}, "query.limit"),
        ("/v1/feed", {"limit": 0}, "query.limit"),
        ("/v1/feed", {"limit": 1001}, "query.limit"),
    ],
)
def test_bad_limits_and_cursors_are_400_problems_naming_the_field(
    service: Any, url: str, params: dict[str, Any], field: str
) -> None:
    client, headers = service
    auth = OPERATOR if url.startswith("/v1/operator") else headers["northwind"]
    answer = client.get(url, params=params, headers=auth)
    assert (answer.status_code, answer.headers["content-type"]) == (400, "application/problem+json")
    body = answer.json()
    assert body["detail"].startswith(f"{field}: ")
    assert [e["field"] for e in body["errors"]] == [field]


@pytest.mark.parametrize(
    ("cursor", "detail"),
    [
        ("abc", "cursor: 'abc' is not a cursor this feed returned (expected a whole number)"),
        ("-1", "cursor: '-1' is not a cursor this feed returned (expected a whole number)"),
        ("7", "cursor: 7 is beyond the end of this feed (its newest event is 0)"),
    ],
)
def test_malformed_feed_cursors_are_400_problems_naming_the_cursor(
    service: Any, cursor: str, detail: str
) -> None:
    client, headers = service
    for url in ("/v1/feed", "/v1/feed.parquet"):
        answer = client.get(url, params={"cursor": cursor}, headers=headers["northwind"])
        assert (answer.status_code, answer.headers["content-type"]) == (400, "application/problem+json")
        assert answer.json()["detail"] == detail


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"filters": {"grades": ["Z"]}}, "grades"),
        ({"filters": {"regions": ["Atlantis"]}}, "regions"),
        ({"filters": {"colour": ["red"]}}, "filters.colour"),
        ({"filters": {"grades": "A"}}, "filters.grades"),
        ({"purpose": "marketing"}, "purpose"),
    ],
)
def test_malformed_filters_are_400_problems_naming_the_field(
    service: Any, body: dict[str, Any], field: str
) -> None:
    client, headers = service
    answer = client.put("/v1/subscriptions/smallbiz", json=body, headers=headers["northwind"])
    assert (answer.status_code, answer.headers["content-type"]) == (400, "application/problem+json")
    assert field in answer.json()["detail"].split(":")[0]
    assert client.get("/v1/subscriptions", headers=headers["northwind"]).json() == []
