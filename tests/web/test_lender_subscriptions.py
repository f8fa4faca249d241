"""Subscriptions over the lender API: create, change, pause, resume, delete, validated as the feed
validates them, and seen by the feed's own planning; both backends."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select

from dossier.settings import for_home
from dossier.web.app import create_app
from warehouse import keys
from warehouse.db import make_engine, session_scope
from warehouse.feed import FeedError, plan_pull
from warehouse.models import Delivery, DossierVersion, Publish, Sme, Subscription

NO_FILTERS = {
    "grades": [],
    "industries": [],
    "regions": [],
    "size_bands": [],
    "min_grade": None,
    "required_sources": [],
}


@pytest.fixture
def service(warehouse_url: str, tmp_path: Path) -> Any:
    """The web service with two SMEs and two lenders; yields (client, engine, {lender: auth headers})."""
    engine = make_engine(warehouse_url)
    headers = {}
    with session_scope(engine) as session:
        session.add_all(
            [
                Sme(sme_id="SME-1", name="Acme", industry="Retail", region="London", size_band="micro"),
                Sme(
                    sme_id="SME-2",
                    name="Bolt",
                    industry="Construction",
                    region="North West",
                    size_band="small",
                ),
            ]
        )
        for lender_id in ("northwind", "kestrel"):
            token, _ = keys.add_lender(session, lender_id, at=dt.datetime.now(dt.UTC))
            headers[lender_id] = {"Authorization": f"Bearer {token}"}
    settings = for_home(tmp_path / "var", warehouse_url=warehouse_url, operator_token="operator-secret")
    with TestClient(create_app(settings), raise_server_exceptions=False) as client:
        yield client, engine, headers
    engine.dispose()


def view(response: Any) -> dict[str, Any]:
    body = response.json()
    return {k: v for k, v in body.items() if k not in ("created_at", "updated_at")}


def test_create_change_pause_resume_and_delete(service: Any) -> None:
    client, engine, headers = service
    auth = headers["northwind"]
    created = client.put(
        "/v1/subscriptions/smallbiz",
        json={"filters": {"grades": ["b", "A"], "regions": ["london"]}, "purpose": "facility_monitoring"},
        headers=auth,
    )
    expected = {
        "name": "smallbiz",
        "purpose": "facility_monitoring",
        "filters": {**NO_FILTERS, "grades": ["A", "B"], "regions": ["London"]},
        "active": True,
    }
    assert (created.status_code, view(created)) == (201, expected)
    replaced = client.put(
        "/v1/subscriptions/smallbiz", json={"filters": {"size_bands": ["micro"]}}, headers=auth
    )
    expected = {**expected, "purpose": "credit_decision", "filters": {**NO_FILTERS, "size_bands": ["micro"]}}
    assert (replaced.status_code, view(replaced)) == (200, expected)
    changed = client.patch(
        "/v1/subscriptions/smallbiz", json={"filters": {"industries": ["construction"]}}, headers=auth
    )
    expected["filters"] = {**NO_FILTERS, "size_bands": ["micro"], "industries": ["Construction"]}
    assert (changed.status_code, view(changed)) == (200, expected)

    with session_scope(engine) as session:
        plan = plan_pull(session, "northwind", at=dt.datetime.now(dt.UTC), lock=False)
        assert (plan.subscription.name, plan.subscription.filters, plan.subscription.purpose) == (
            "smallbiz",
            {"industries": ["Construction"], "size_bands": ["micro"]},
            "credit_decision",
        )

    paused = client.post("/v1/subscriptions/smallbiz/pause", headers=auth)
    assert view(paused) == {**expected, "active": False}
    still_paused = client.patch(
        "/v1/subscriptions/smallbiz", json={"purpose": "facility_monitoring"}, headers=auth
    )
    assert view(still_paused) == {**expected, "active": False, "purpose": "facility_monitoring"}
    with session_scope(engine) as session, pytest.raises(FeedError, match="no active subscription"):
        plan_pull(session, "northwind", at=dt.datetime.now(dt.UTC), lock=False)
    resumed = client.post("/v1/subscriptions/smallbiz/resume", headers=auth)
    assert view(resumed)["active"] is True

    assert [s["name"] for s in client.get("/v1/subscriptions", headers=auth).json()] == ["smallbiz"]
    assert client.get("/v1/subscriptions", headers=headers["kestrel"]).json() == []
    assert client.get("/v1/subscriptions/smallbiz", headers=headers["kestrel"]).status_code == 404
    assert client.delete("/v1/subscriptions/smallbiz", headers=headers["kestrel"]).status_code == 404
    deleted = client.delete("/v1/subscriptions/smallbiz", headers=auth)
    assert (deleted.status_code, deleted.content) == (204, b"")
    assert client.get("/v1/subscriptions/smallbiz", headers=auth).status_code == 404


def test_a_subscription_with_deliveries_can_be_paused_not_deleted(service: Any) -> None:
    client, engine, headers = service
    auth = headers["northwind"]
    assert client.put("/v1/subscriptions/default", json={}, headers=auth).status_code == 201
    now = dt.datetime.now(dt.UTC)
    with session_scope(engine) as session:
        publish = Publish(
            as_of_date=now.date(),
            schema_version=2,
            model_version="m",
            manifest_path="m.json",
            files=1,
            rows=1,
        )
        session.add(publish)
        session.flush()
        version = DossierVersion(
            dossier_id="SME-1:x",
            sme_id="SME-1",
            as_of_date=now.date(),
            schema_version=2,
            model_version="m",
            sources_used=["accounting"],
            publish_id=publish.id,
            file_path="f.parquet",
            content_sha256="0" * 64,
            grade="A",
            pd_12m=0.01,
            feed_seq=1,
        )
        session.add(version)
        session.flush()
        subscription = session.scalars(select(Subscription)).one()
        session.add(
            Delivery(
                lender_id="northwind",
                dossier_version_id=version.id,
                subscription_id=subscription.id,
                pull_id="p1",
            )
        )
    refused = client.delete("/v1/subscriptions/default", headers=auth)
    assert (refused.status_code, refused.json()["detail"]) == (
        409,
        "subscription 'default' has delivered dossiers; pause it instead",
    )
    assert client.post("/v1/subscriptions/default/pause", headers=auth).json()["active"] is False


@pytest.mark.parametrize(
    ("method", "body", "detail"),
    [
        ("put", {"filters": {"grades": ["Z"]}}, "grades 'Z' not known; valid grades: A, B, C, D, E"),
        (
            "put",
            {"filters": {"regions": ["Mars"]}},
            "regions 'Mars' not known; valid regions: London, North West",
        ),
        ("put", {"filters": {"colours": ["red"]}}, "filters.colours: Extra inputs are not permitted"),
        (
            "put",
            {"purpose": "marketing"},
            "purpose: Value error, unknown purpose 'marketing'; known: credit_decision, facility_monitoring",
        ),
        ("put", {"filters": {"grades": "A"}}, "filters.grades: Input should be a valid list"),
        (
            "patch",
            {"filters": {"colours": ["red"]}},
            "filters: Value error, unknown filter 'colours'; known: grades, industries, regions, size_bands, "
            "min_grade, required_sources",
        ),
        (
            "patch",
            {"filters": {"size_bands": ["huge"]}},
            "size_bands 'huge' not known; valid size_bands: micro, small, medium",
        ),
        ("put", {"filters": {"min_grade": "F"}}, "min_grade 'F' not known; valid min_grade: A, B, C, D, E"),
        ("put", {"filters": {"min_grade": ["A"]}}, "filters.min_grade: Input should be a valid string"),
        (
            "patch",
            {"filters": {"min_grade": ["A"]}},
            "subscription filter 'min_grade' must be one grade (a string), not ['A']",
        ),
        (
            "put",
            {"filters": {"required_sources": ["bank"]}},
            "required_sources 'bank' not known; valid required_sources: accounting, tax, utility, survey",
        ),
        (
            "patch",
            {"filters": {"required_sources": "tax"}},
            "subscription filter 'required_sources' must be a list of strings, not 'tax'",
        ),
    ],
)
def test_bad_filters_and_purposes_are_400_naming_the_field(
    service: Any, method: str, body: dict[str, Any], detail: str
) -> None:
    client, _engine, headers = service
    auth = headers["northwind"]
    assert client.put("/v1/subscriptions/default", json={}, headers=auth).status_code == 201
    answer = getattr(client, method)("/v1/subscriptions/default", json=body, headers=auth)
    assert (answer.status_code, answer.headers["content-type"], answer.json()["detail"]) == (
        400,
        "application/problem+json",
        detail,
    )
    unchanged = client.get("/v1/subscriptions/default", headers=auth)
    assert view(unchanged) == {
        "name": "default",
        "purpose": "credit_decision",
        "filters": NO_FILTERS,
        "active": True,
    }


def test_subscription_routes_need_a_key_and_a_sane_name(service: Any) -> None:
    client, _engine, headers = service
    assert client.get("/v1/subscriptions").status_code == 401
    assert client.put("/v1/subscriptions/default", json={}).status_code == 401
    bad = client.put("/v1/subscriptions/..%20x", json={}, headers=headers["northwind"])
    assert bad.status_code == 400


def test_minimum_grade_and_required_sources_are_kept_changed_and_cleared(service: Any) -> None:
    client, engine, headers = service
    auth = headers["northwind"]
    created = client.put(
        "/v1/subscriptions/prime",
        json={"filters": {"min_grade": "b", "required_sources": ["Tax", "accounting", "tax"]}},
        headers=auth,
    )
    expected = {
        "name": "prime",
        "purpose": "credit_decision",
        "filters": {**NO_FILTERS, "min_grade": "B", "required_sources": ["accounting", "tax"]},
        "active": True,
    }
    assert (created.status_code, view(created)) == (201, expected)
    with session_scope(engine) as session:
        stored = session.scalars(select(Subscription.filters).where(Subscription.name == "prime")).one()
    assert stored == {"min_grade": "B", "required_sources": ["accounting", "tax"]}
    changed = client.patch("/v1/subscriptions/prime", json={"filters": {"min_grade": "D"}}, headers=auth)
    expected["filters"] = {**expected["filters"], "min_grade": "D"}
    assert (changed.status_code, view(changed)) == (200, expected)
    cleared = client.patch(
        "/v1/subscriptions/prime", json={"filters": {"min_grade": None, "required_sources": []}}, headers=auth
    )
    assert (cleared.status_code, view(cleared)) == (200, {**expected, "filters": NO_FILTERS})
    with session_scope(engine) as session:
        stored = session.scalars(select(Subscription.filters).where(Subscription.name == "prime")).one()
    assert stored == {}


def test_the_command_sets_minimum_grade_and_required_sources_as_the_api_sees_them(
    service: Any, home_on: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    from dossier.cli import main

    client, _engine, headers = service

    def subscribe(*extra: str) -> tuple[int, str, str]:
        code = main(["lender", "subscribe", "--lender", "northwind", *extra])
        captured = capsys.readouterr()
        return code, captured.out, captured.err

    assert subscribe("--min-grade", "c", "--required-sources", "tax,Accounting") == (
        0,
        "subscription default of northwind: created with purpose credit_decision; grades all; "
        "industries all; regions all; size_bands all; min_grade C; required_sources accounting, tax\n",
        "",
    )
    assert subscribe("--min-grade", "B", "--required-sources", "utility", "--add") == (
        0,
        "subscription default of northwind: min_grade C -> B; "
        "required_sources accounting, tax -> accounting, tax, utility\n",
        "",
    )
    seen = client.get("/v1/subscriptions/default", headers=headers["northwind"])
    assert view(seen)["filters"] == {
        **NO_FILTERS,
        "min_grade": "B",
        "required_sources": ["accounting", "tax", "utility"],
    }
    assert subscribe("--min-grade", "F", "--replace") == (
        2,
        "",
        "dossier: error: min_grade 'F' not known; valid min_grade: A, B, C, D, E\n",
    )
    assert subscribe("--required-sources", "bank", "--replace") == (
        2,
        "",
        "dossier: error: required_sources 'bank' not known; valid required_sources: accounting, tax, "
        "utility, survey\n",
    )
    assert subscribe("--grades", "A", "--replace") == (
        0,
        "subscription default of northwind: grades all -> A; min_grade B -> all; "
        "required_sources accounting, tax, utility -> all\n",
        "",
    )
