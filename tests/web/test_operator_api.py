"""The operator API over HTTP (FastAPI's test client): auth, bodies, problem details; both backends."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from dossier.settings import for_home
from dossier.web.app import create_app
from warehouse.db import make_engine, session_scope
from warehouse.models import Lender, Sme

TOKEN = "operator-secret-for-tests"


@pytest.fixture
def client(warehouse_url: str, tmp_path: Path) -> Any:
    engine = make_engine(warehouse_url)
    with session_scope(engine) as session:
        session.add(Sme(sme_id="SME-1", name="Acme", industry="retail", region="North", size_band="micro"))
        session.add(Lender(lender_id="northwind", name="Northwind"))
    engine.dispose()
    settings = for_home(tmp_path / "var", warehouse_url=warehouse_url, operator_token=TOKEN)
    with TestClient(create_app(settings), raise_server_exceptions=False) as test_client:
        yield test_client


def grant_body(**changes: Any) -> dict[str, Any]:
    expires = (dt.datetime.now(dt.UTC) + dt.timedelta(days=90)).isoformat()
    return {
        "sme_id": "SME-1",
        "sources": ["accounting"],
        "recipients": ["northwind"],
        "purpose": "credit_decision",
        "history_months": 24,
        "expires_at": expires,
        "consent_id": "C-1",
    } | changes


AUTH = {"Authorization": f"Bearer {TOKEN}"}


def test_operator_routes_need_the_operator_token(client: TestClient) -> None:
    missing = client.get("/v1/operator/consents")
    wrong = client.get("/v1/operator/consents", headers={"Authorization": "Bearer nope"})
    assert (missing.status_code, missing.headers["content-type"]) == (401, "application/problem+json")
    assert missing.headers["www-authenticate"] == "Bearer"
    assert (wrong.status_code, wrong.json()["detail"]) == (403, "operator token not valid")
    assert client.get("/health").json() == {"status": "ok"}


def test_grant_list_revoke_and_erase(client: TestClient) -> None:
    granted = client.post("/v1/operator/consents", json=grant_body(), headers=AUTH)
    assert granted.status_code == 201
    view = granted.json()
    assert {k: view[k] for k in ("consent_id", "scope", "purpose", "status", "revoked_at")} == {
        "consent_id": "C-1",
        "scope": "accounting@24m",
        "purpose": "credit_decision",
        "status": "active",
        "revoked_at": None,
    }
    listed = client.get("/v1/operator/consents", params={"sme_id": "SME-1"}, headers=AUTH).json()
    assert [c["consent_id"] for c in listed] == ["C-1"]
    revoked = client.post("/v1/operator/consents/C-1/revoke", json={"reason": "asked"}, headers=AUTH)
    assert revoked.json()["status"] == "revoked"
    erased = client.post("/v1/operator/smes/SME-1/erase", headers=AUTH)
    assert (erased.status_code, erased.json()["sme_id"]) == (200, "SME-1")


@pytest.mark.parametrize(
    ("changes", "status", "detail"),
    [
        (
            {"purpose": "marketing"},
            422,
            "unknown purpose 'marketing'; known: credit_decision, facility_monitoring",
        ),
        ({"recipients": ["nobody"]}, 422, "unknown lender nobody; see: dossier lender list"),
        ({"history_months": 0}, 400, "history_months: Input should be greater than or equal to 1"),
        ({"expires_at": "2027-01-01T00:00:00"}, 400, "expires_at: Input should have timezone info"),
        ({"sources": []}, 400, "sources: List should have at least 1 item after validation, not 0"),
    ],
)
def test_bad_grants_are_problem_details_naming_the_field(
    client: TestClient, changes: dict[str, Any], status: int, detail: str
) -> None:
    answer = client.post("/v1/operator/consents", json=grant_body(**changes), headers=AUTH)
    assert (answer.status_code, answer.headers["content-type"]) == (status, "application/problem+json")
    assert answer.json()["detail"] == detail
    assert client.get("/v1/operator/consents", headers=AUTH).json() == []


def test_unknown_consent_is_a_problem_not_a_trace(client: TestClient) -> None:
    answer = client.post("/v1/operator/consents/NOPE/revoke", json={}, headers=AUTH)
    assert (answer.status_code, answer.json()["detail"]) == (
        422,
        "consent 'NOPE' does not exist; see: dossier consent list",
    )
