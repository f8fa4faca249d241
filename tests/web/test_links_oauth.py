"""Connecting a provider from a link: authorization code + state + PKCE (S256) against the running
sandbox's real authorization endpoint and approval page; tokens encrypted at rest; both backends."""

from __future__ import annotations

import datetime as dt
import re
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
import requests
from fastapi.testclient import TestClient
from sqlalchemy import select

from connectors.authorization import fernet_for, s256
from connectors.sandbox.seed import seed_warehouse
from connectors.sandbox.server import SandboxServer
from connectors.sandbox.universe import Universe
from dossier.settings import for_home
from dossier.web.app import create_app
from warehouse.db import make_engine, session_scope
from warehouse.models import LinkEvent, OAuthRequest, ProviderToken, SourceConnection

TOKEN = "operator-secret-for-tests"


@pytest.fixture(scope="module")
def sandbox() -> Any:
    with SandboxServer(Universe(20261125, 4, dt.date(2026, 11, 25))) as running:
        yield running


@pytest.fixture
def world(warehouse_url: str, tmp_path: Path, sandbox: SandboxServer) -> Any:
    engine = make_engine(warehouse_url)
    with session_scope(engine) as session:
        seed_warehouse(session, sandbox.universe, now=dt.datetime.now(dt.UTC))
    with session_scope(engine) as session:
        connection = session.scalars(
            select(SourceConnection)
            .where(SourceConnection.source == "accounting")
            .order_by(SourceConnection.sme_id)
        ).first()
        sme_id, account = connection.sme_id, connection.account_ref
    settings = for_home(
        tmp_path / "var", warehouse_url=warehouse_url, operator_token=TOKEN, sandbox_url=sandbox.url
    )
    with TestClient(create_app(settings), raise_server_exceptions=False, follow_redirects=False) as client:
        made = client.post(
            "/v1/operator/links",
            json={
                "sme_id": sme_id,
                "sources": ["accounting"],
                "recipients": ["harbor-credit"],
                "purpose": "credit_decision",
                "history_months": 12,
                "consent_days": 90,
            },
            headers={"Authorization": f"Bearer {TOKEN}"},
        ).json()
        path = "/" + made["url"].split("/", 3)[3]
        yield {
            "client": client,
            "path": path,
            "engine": engine,
            "sme_id": sme_id,
            "account": account,
            "secret": settings.kept_secret("secret_key"),
            "sandbox": sandbox,
        }
    engine.dispose()


def start(world: dict[str, Any]) -> str:
    """Press "Connect your accounting provider"; the provider URL the browser is sent to."""
    page = world["client"].get(world["path"])
    assert "Connect your accounting provider" in page.text
    csrf = re.search(r'name="csrf_token" value="([^"]+)"', page.text).group(1)
    sent = world["client"].post(f"{world['path']}/provider/accounting", data={"csrf_token": csrf})
    assert sent.status_code == 303
    return sent.headers["location"]


def approve(target: str, decision: str = "approve") -> str:
    """Answer the provider's own approval page over HTTP; the callback URL it redirects to."""
    page = requests.get(target, timeout=10)
    assert page.status_code == 200
    assert "Approve access" in page.text
    fields = dict(re.findall(r'<input type="hidden" name="([a-z_]+)" value="([^"]*)">', page.text))
    answer = requests.post(
        target.split("?")[0], data={**fields, "decision": decision}, allow_redirects=False, timeout=10
    )
    assert answer.status_code == 303
    return answer.headers["location"]


def local(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.path}?{parts.query}"


def test_connecting_stores_the_refresh_token_encrypted(world: dict[str, Any]) -> None:
    target = start(world)
    query = {k: v[0] for k, v in parse_qs(urlsplit(target).query).items()}
    assert target.startswith(f"{world['sandbox'].url}/accounting/oauth/authorize?")
    assert (query["response_type"], query["code_challenge_method"], query["login_hint"]) == (
        "code",
        "S256",
        world["account"],
    )
    assert query["redirect_uri"] == "http://127.0.0.1:8000/oauth/callback"
    with session_scope(world["engine"]) as session:
        request = session.get(OAuthRequest, query["state"])
        assert s256(request.code_verifier) == query["code_challenge"]
    callback = approve(target)
    assert callback.startswith("http://127.0.0.1:8000/oauth/callback?code=")
    back = world["client"].get(local(callback))
    assert (back.status_code, back.headers["location"]) == (303, world["path"])
    page = world["client"].get(world["path"])
    assert "Accounting: connected." in page.text
    expected = world["sandbox"].issuer.refresh_token("accounting", world["account"])
    with session_scope(world["engine"]) as session:
        token = session.get(ProviderToken, (world["sme_id"], "accounting"))
        assert token.provider_url == f"{world['sandbox'].url}/accounting"
        assert expected not in token.refresh_token_encrypted
        assert (
            fernet_for(world["secret"]).decrypt(token.refresh_token_encrypted.encode()).decode() == expected
        )
        events = [e.event_type for e in session.scalars(select(LinkEvent).order_by(LinkEvent.sequence))]
    assert events == ["requested", "shown", "connect_started", "connected", "shown"]
    again = world["client"].get(local(callback))
    assert (again.status_code, "This provider answer was already used." in again.text) == (400, True)


def test_a_wrong_state_is_refused(world: dict[str, Any]) -> None:
    approve(start(world))
    forged = world["client"].get("/oauth/callback", params={"state": "made-up", "code": "abc"})
    assert forged.status_code == 400
    assert "The provider answered a request this service did not make (unknown state)." in forged.text


def test_a_denial_at_the_provider_is_refused_and_recorded(world: dict[str, Any]) -> None:
    callback = approve(start(world), decision="deny")
    assert "error=access_denied" in callback
    refused = world["client"].get(local(callback))
    assert refused.status_code == 400
    assert "The provider did not grant access (access_denied)." in refused.text
    with session_scope(world["engine"]) as session:
        event = session.scalars(select(LinkEvent).where(LinkEvent.event_type == "connect_refused")).one()
        assert event.details["reason"] == "The provider did not grant access (access_denied)."
        assert session.scalars(select(ProviderToken)).all() == []


def test_a_wrong_pkce_verifier_is_refused_by_the_provider(world: dict[str, Any]) -> None:
    target = start(world)
    state = parse_qs(urlsplit(target).query)["state"][0]
    with session_scope(world["engine"]) as session:
        session.get(OAuthRequest, state).code_verifier = "x" * 64
    refused = world["client"].get(local(approve(target)))
    assert refused.status_code == 400
    assert (
        "The provider refused the exchange: code_verifier does not match the code_challenge (PKCE)."
        in refused.text
    )
    with session_scope(world["engine"]) as session:
        request = session.get(OAuthRequest, state)
        assert (request.outcome, request.detail) == (
            "refused",
            "The provider refused the exchange: code_verifier does not match the code_challenge (PKCE).",
        )
        assert session.scalars(select(ProviderToken)).all() == []
