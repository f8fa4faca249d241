"""``POST /v1/outcomes`` and ``GET /v1/outcomes``: a lender reports on its own deliveries only, all or none."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from published_world import NOW, publish_books
from sqlalchemy import select

from dossier.settings import for_home, override
from dossier.web.app import create_app
from warehouse import keys
from warehouse.db import make_engine, session_scope
from warehouse.feed import pull
from warehouse.models import DossierVersion, Outcome


@pytest.fixture
def service(
    warehouse_url: str, tmp_path: Path
) -> Iterator[tuple[TestClient, dict[str, Any], dict[str, str]]]:
    """SME-000001 delivered to northwind, SME-000002 to harbor; yields (client, auth headers, dossier ids)."""
    settings = for_home(tmp_path / "var", warehouse_url=warehouse_url, shard_count=1)
    engine = make_engine(warehouse_url)
    with override(settings):
        app = create_app(settings)
        publish_books(
            engine,
            app.state.store,
            {"SME-000001": 0.1, "SME-000002": -0.1},
            {"SME-000001": "northwind", "SME-000002": "harbor"},
        )
        headers = {}
        for lender in ("northwind", "harbor"):
            with session_scope(engine) as session:
                pull(
                    session,
                    app.state.store,
                    lender_id=lender,
                    out_dir=tmp_path / lender,
                    now=NOW + dt.timedelta(hours=1),
                )
                token, _ = keys.issue_key(session, lender, at=NOW)
                headers[lender] = {"Authorization": f"Bearer {token}"}
        with session_scope(engine) as session:
            ids = {v.sme_id: v.dossier_id for v in session.scalars(select(DossierVersion))}
        with TestClient(app, raise_server_exceptions=False) as client:
            yield client, headers, ids
    engine.dispose()


def test_outcomes_are_stored_once_and_listed(service) -> None:
    client, headers, ids = service
    body = {
        "outcomes": [
            {
                "dossier_id": ids["SME-000001"],
                "outcome": "current",
                "outcome_date": "2026-11-10",
                "amount": 900,
            },
            {"sme_id": "SME-000001", "outcome": "defaulted", "outcome_date": "2026-11-20"},
        ]
    }
    first = client.post("/v1/outcomes", json=body, headers=headers["northwind"])
    assert (first.status_code, first.json()) == (200, {"inserted": 2, "updated": 0, "unchanged": 0})
    again = client.post("/v1/outcomes", json=body, headers=headers["northwind"])
    assert again.json() == {"inserted": 0, "updated": 0, "unchanged": 2}
    listed = client.get("/v1/outcomes", headers=headers["northwind"])
    assert listed.status_code == 200
    assert [{k: v for k, v in row.items() if k != "reported_at"} for row in listed.json()] == [
        {
            "dossier_id": ids["SME-000001"],
            "sme_id": "SME-000001",
            "outcome": "current",
            "outcome_date": "2026-11-10",
            "amount": 900.0,
            "source": "api",
        },
        {
            "dossier_id": ids["SME-000001"],
            "sme_id": "SME-000001",
            "outcome": "defaulted",
            "outcome_date": "2026-11-20",
            "amount": None,
            "source": "api",
        },
    ]
    assert client.get("/v1/outcomes", headers=headers["harbor"]).json() == []


def test_another_lenders_dossier_is_refused_and_nothing_stored(service) -> None:
    client, headers, ids = service
    body = {
        "outcomes": [
            {"sme_id": "SME-000001", "outcome": "repaid", "outcome_date": "2026-11-20"},
            {"dossier_id": ids["SME-000002"], "outcome": "repaid", "outcome_date": "2026-11-20"},
        ]
    }
    refused = client.post("/v1/outcomes", json=body, headers=headers["northwind"])
    assert refused.status_code == 400
    assert refused.headers["content-type"] == "application/problem+json"
    assert refused.json()["detail"] == (
        f"outcomes[1]: field dossier_id: {ids['SME-000002']!r} was not delivered to lender 'northwind'"
    )
    with session_scope() as session:
        assert session.scalars(select(Outcome)).all() == []


@pytest.mark.parametrize(
    "outcome",
    [
        {"sme_id": "SME-000001", "outcome": "late", "outcome_date": "2026-11-20"},
        {"sme_id": "SME-000001", "outcome": "repaid", "outcome_date": "2999-01-01"},
        {"sme_id": "SME-000001", "outcome": "repaid", "outcome_date": "2026-11-20", "amount": -1},
        {"outcome": "repaid", "outcome_date": "2026-11-20"},
        {"sme_id": "SME-000001", "outcome": "repaid", "outcome_date": "2026-11-20", "lender_id": "harbor"},
    ],
)
def test_a_body_that_does_not_fit_is_a_400_problem(service, outcome) -> None:
    client, headers, _ids = service
    refused = client.post("/v1/outcomes", json={"outcomes": [outcome]}, headers=headers["northwind"])
    assert refused.status_code == 400
    assert refused.headers["content-type"] == "application/problem+json"


def test_without_a_key_it_is_401(service) -> None:
    client, _headers, _ids = service
    assert client.get("/v1/outcomes").status_code == 401
    assert client.post("/v1/outcomes", json={"outcomes": []}).status_code == 401
