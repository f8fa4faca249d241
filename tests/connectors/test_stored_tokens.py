"""The ingest pulls with the SME's own OAuth tokens: stored encrypted, refreshed, refused, reconnected.

End to end over real HTTP, on both backends: the SME connects accounting through its connector link
and the sandbox provider's approval page; the ingest then uses the stored access token, refreshes
it at the provider's token endpoint once it has expired (keeping the new one encrypted), and a
refused refresh holds the SME with "reauthorization needed" until it reconnects.
"""

from __future__ import annotations

import datetime as dt
import re
import threading
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import requests
from connector_fixtures import FakeClock
from fastapi.testclient import TestClient
from requests.adapters import HTTPAdapter
from sqlalchemy import select

from connectors.authorization import fernet_for
from connectors.core.connector import Connection
from connectors.core.http import make_session
from connectors.ingest import SmeOutcome, ingest_shard, record_outcomes
from connectors.sandbox.seed import seed_warehouse
from connectors.sandbox.server import SandboxServer
from connectors.sandbox.universe import Universe
from dossier.settings import for_home, override
from dossier.web.app import create_app
from warehouse import consent
from warehouse.db import make_engine, session_scope
from warehouse.models import IngestionRun, ProviderToken, QuarantineEntry, SourceConnection
from warehouse.storage import Store

TOKEN = "operator-secret-for-tests"


@pytest.fixture(scope="module")
def sandbox() -> Any:
    with SandboxServer(Universe(20261125, 4, dt.date(2026, 11, 25))) as running:
        yield running


class Bearers:
    """``http_session_factory``: real sessions noting the bearer token of every API request, by URL."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, str]] = []
        self.lock = threading.Lock()

    def __call__(self, retry_reads: bool) -> requests.Session:
        session = make_session(2, FakeClock(), retry_reads=retry_reads)
        sent, lock = self.sent, self.lock

        class Noting(HTTPAdapter):
            def send(self, request: requests.PreparedRequest, **kwargs: Any) -> requests.Response:  # type: ignore[override]
                with lock:
                    sent.append((request.url or "", str(request.headers.get("Authorization", ""))))
                return super().send(request, **kwargs)

        session.mount("http://", Noting(max_retries=session.get_adapter("http://").max_retries))
        return session

    def of(self, tenant: str) -> list[str]:
        return [bearer.removeprefix("Bearer ") for url, bearer in self.sent if f"/tenants/{tenant}/" in url]


@pytest.fixture
def world(warehouse_url: str, tmp_path: Path, sandbox: SandboxServer) -> Any:
    engine = make_engine(warehouse_url)
    now = dt.datetime.now(dt.UTC)
    with session_scope(engine) as session:
        seed_warehouse(session, sandbox.universe, now=now)
    with session_scope(engine) as session:
        connection = session.scalars(
            select(SourceConnection)
            .where(SourceConnection.source == "accounting")
            .order_by(SourceConnection.sme_id)
        ).first()
        sme_id, tenant = connection.sme_id, connection.account_ref
        consent.grant(
            session,
            consent_id="C-own-tokens",
            sme_id=sme_id,
            sources=["accounting"],
            recipients=["harbor-credit"],
            purpose="credit_decision",
            history_months=12,
            granted_at=now - dt.timedelta(days=2),
            expires_at=now + dt.timedelta(days=60),
        )
    settings = for_home(
        tmp_path / "var",
        warehouse_url=warehouse_url,
        operator_token=TOKEN,
        sandbox_url=sandbox.url,
        shard_count=1,
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
        yield {
            "client": client,
            "path": "/" + made["url"].split("/", 3)[3],
            "engine": engine,
            "sme_id": sme_id,
            "tenant": tenant,
            "settings": settings,
            "box": fernet_for(settings.kept_secret("secret_key")),
            "store": Store(str(tmp_path / "store")),
            "sandbox": sandbox,
        }
    engine.dispose()


def connect(world: dict[str, Any]) -> None:
    """The SME connects accounting: its link page, the provider's approval page, the callback."""
    client = world["client"]
    page = client.get(world["path"])
    csrf = re.search(r'name="csrf_token" value="([^"]+)"', page.text).group(1)
    target = client.post(f"{world['path']}/provider/accounting", data={"csrf_token": csrf}).headers[
        "location"
    ]
    approval = requests.get(target, timeout=10)
    fields = dict(re.findall(r'<input type="hidden" name="([a-z_]+)" value="([^"]*)">', approval.text))
    answered = requests.post(
        target.split("?")[0], data={**fields, "decision": "approve"}, allow_redirects=False, timeout=10
    )
    callback = urlsplit(answered.headers["location"])
    assert client.get(f"{callback.path}?{callback.query}").status_code == 303


def ingest(world: dict[str, Any]) -> tuple[dict[str, Any], Bearers]:
    bearers = Bearers()
    with override(world["settings"]):
        summary = ingest_shard(
            "accounting",
            0,
            dt.datetime.now(dt.UTC).date(),
            session_factory=lambda: session_scope(world["engine"]),
            store=world["store"],
            clock=FakeClock(),
            http_session_factory=bearers,
        )
    return summary, bearers


def stored(world: dict[str, Any]) -> ProviderToken:
    with session_scope(world["engine"]) as session:
        token = session.get(ProviderToken, (world["sme_id"], "accounting"))
        session.expunge(token)
        return token


def decrypt(world: dict[str, Any], value: str | None) -> str | None:
    return world["box"].decrypt(value.encode()).decode() if value else None


def run_of(world: dict[str, Any]) -> tuple[str, str | None]:
    with session_scope(world["engine"]) as session:
        run = session.scalars(
            select(IngestionRun).where(
                IngestionRun.sme_id == world["sme_id"], IngestionRun.source == "accounting"
            )
        ).one()
        return run.status, run.error_message


def open_entries(world: dict[str, Any]) -> list[tuple[str, str, str]]:
    with session_scope(world["engine"]) as session:
        return [
            (e.record, e.field, e.reason)
            for e in session.scalars(
                select(QuarantineEntry).where(
                    QuarantineEntry.sme_id == world["sme_id"], QuarantineEntry.resolved_at.is_(None)
                )
            )
        ]


def set_token(world: dict[str, Any], **values: Any) -> None:
    with session_scope(world["engine"]) as session:
        token = session.get(ProviderToken, (world["sme_id"], "accounting"))
        for name, value in values.items():
            setattr(token, name, value)


def test_the_ingest_uses_refreshes_and_stores_the_smes_own_tokens(world: dict[str, Any]) -> None:
    connect(world)
    first = stored(world)
    access = decrypt(world, first.access_token_encrypted)
    assert access is not None
    assert access not in first.access_token_encrypted
    assert decrypt(world, first.refresh_token_encrypted) == world["sandbox"].issuer.refresh_token(
        "accounting", world["tenant"]
    )

    # 1. The stored access token is still valid: it is what the provider receives; nothing is refreshed.
    summary, bearers = ingest(world)
    assert summary["failed"] == 0
    assert run_of(world) == ("pulled", None)
    assert set(bearers.of(world["tenant"])) == {access}
    assert stored(world).refreshed_at is None

    # 2. Once it has expired, the refresh token buys a new one, which is stored encrypted.
    set_token(world, access_expires_at=dt.datetime.now(dt.UTC) - dt.timedelta(minutes=1))
    before = dt.datetime.now(dt.UTC)
    summary, bearers = ingest(world)
    assert run_of(world) == ("pulled", None)
    (renewed,) = set(bearers.of(world["tenant"]))
    assert renewed != access
    after = stored(world)
    assert decrypt(world, after.access_token_encrypted) == renewed
    assert after.refreshed_at is not None
    assert after.refreshed_at >= before
    assert before + dt.timedelta(seconds=250) < after.access_expires_at < before + dt.timedelta(seconds=400)
    assert (after.refused_at, after.refused_reason) == (None, "")


def test_a_refused_refresh_holds_the_sme_until_it_reconnects(world: dict[str, Any]) -> None:
    connect(world)
    # The provider no longer honours the stored refresh token (here: another provider's token).
    foreign = world["sandbox"].issuer.refresh_token("tax", "123456789")
    set_token(
        world,
        refresh_token_encrypted=world["box"].encrypt(foreign.encode()).decode(),
        access_expires_at=dt.datetime.now(dt.UTC) - dt.timedelta(minutes=1),
    )
    summary, bearers = ingest(world)
    assert summary["failed"] == 1
    status, message = run_of(world)
    assert status == "failed"
    assert message.startswith(f"{world['sme_id']}/accounting: reauthorization needed: the provider refused")
    assert "invalid_grant" in message
    assert "reconnect" in message
    assert bearers.of(world["tenant"]) == []
    refused = stored(world)
    assert refused.refused_at is not None
    assert refused.refused_reason == message.split(": ", 1)[1]
    assert open_entries(world) == [("provider_tokens", "refresh_token", refused.refused_reason)]

    # Held: the next run asks the provider nothing for this SME and keeps the same reason.
    summary, bearers = ingest(world)
    assert run_of(world) == ("failed", message)
    assert not [u for u, _ in bearers.sent if world["tenant"] in u]
    assert stored(world).refused_at == refused.refused_at
    assert open_entries(world) == [("provider_tokens", "refresh_token", refused.refused_reason)]

    # The SME reconnects through its link: the hold ends and the entry is resolved by a clean pull.
    connect(world)
    assert stored(world).refused_at is None
    summary, bearers = ingest(world)
    assert run_of(world) == ("pulled", None)
    assert bearers.of(world["tenant"]) == [decrypt(world, stored(world).access_token_encrypted)]
    assert open_entries(world) == []


def test_a_token_this_installation_cannot_decrypt_asks_for_reauthorization(world: dict[str, Any]) -> None:
    connect(world)
    other = fernet_for("another installation's key")
    set_token(world, refresh_token_encrypted=other.encrypt(b"rt").decode(), access_token_encrypted=None)
    _summary, bearers = ingest(world)
    assert run_of(world) == (
        "failed",
        f"{world['sme_id']}/accounting: reauthorization needed: the stored accounting token cannot be "
        "decrypted with this installation's secret key",
    )
    assert not [u for u, _ in bearers.sent if world["tenant"] in u]


def test_a_reconnection_during_a_run_keeps_the_new_tokens(world: dict[str, Any]) -> None:
    connect(world)
    read_by_the_run = stored(world)
    connect(world)  # the SME connects again while the run is pulling with the tokens it read
    current = stored(world)
    assert current.obtained_at != read_by_the_run.obtained_at
    now = dt.datetime.now(dt.UTC)
    refused = SmeOutcome(
        Connection(world["sme_id"], "accounting", "books", world["tenant"], stored_token=True),
        "failed",
        now,
        now,
        token_refused="reauthorization needed: refused",
    )
    with session_scope(world["engine"]) as session:
        record_outcomes(
            session,
            "accounting",
            now.date(),
            [refused],
            resolved_at=now,
            obtained={world["sme_id"]: read_by_the_run.obtained_at},
        )
    kept = stored(world)
    assert (kept.refused_at, kept.access_token_encrypted) == (None, current.access_token_encrypted)
    with session_scope(world["engine"]) as session:
        record_outcomes(
            session,
            "accounting",
            now.date(),
            [refused],
            resolved_at=now,
            obtained={world["sme_id"]: current.obtained_at},
        )
    assert (stored(world).refused_at, stored(world).refused_reason) == (
        now,
        "reauthorization needed: refused",
    )
