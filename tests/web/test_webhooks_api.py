"""The lender's webhooks over HTTP: endpoints, the test message, the delivery log and its paging,
replays, secret rotation, bad input, other lenders' keys; and the worker that ``dossier serve``
starts delivering the HTTP feed's events, signed, to a real receiver on 127.0.0.1.

Dossiers are published by the real publish; both backends.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "warehouse"))
from test_dossier_store import NOW, give_consent, run_publish, scored, seed
from test_webhooks import Receiver

from dossier.pipeline import push_webhooks
from dossier.settings import for_home, override
from dossier.web.app import create_app
from warehouse import keys, webhooks
from warehouse.db import make_engine, session_scope
from warehouse.feed import subscribe
from warehouse.models import WebhookEndpoint, WebhookMessage


@pytest.fixture
def service(warehouse_url: str, tmp_path: Path) -> Any:
    """SME 1 and 3 consent to northwind, SME 2 to harbor; all published; a key each, and a revoked
    key of northwind's. Yields (client, engine, {name: auth headers}, settings, receiver)."""
    settings = for_home(
        tmp_path / "var",
        warehouse_url=warehouse_url,
        secret_key="service-secret",
        webhook_retry_schedule="0,0,0",
        webhook_timeout=2.0,
        webhook_allow_private=True,  # the receiver is on 127.0.0.1
    )
    engine = make_engine(warehouse_url)
    seed(engine)
    headers = {}
    with session_scope(engine) as session:
        give_consent(session, "C-1", "SME-000001")
        give_consent(session, "C-2", "SME-000002", recipients=("harbor",))
        give_consent(session, "C-3", "SME-000003")
        for lender_id in ("northwind", "harbor"):
            subscribe(session, lender_id)
            token, _ = keys.issue_key(session, lender_id, at=NOW)
            headers[lender_id] = {"Authorization": f"Bearer {token}"}
        token, revoked = keys.issue_key(session, "northwind", at=NOW)
        keys.revoke_key(session, revoked.prefix, at=NOW)
        headers["revoked"] = {"Authorization": f"Bearer {token}"}
    headers["unknown"] = {"Authorization": "Bearer sdk_not-a-key-anybody-issued"}
    headers["none"] = {}
    app = create_app(settings)
    run_publish(engine, app.state.store, [scored(["SME-000001", "SME-000002"]), scored(["SME-000003"])])
    with Receiver() as receiver, TestClient(app, raise_server_exceptions=False) as client:
        yield client, engine, headers, settings, receiver
    engine.dispose()


def send(engine: Any, settings: Any, store: Any = None) -> dict[str, Any]:
    """One step of the worker, as ``dossier webhooks send --once`` runs it."""
    return webhooks.run_once(engine, store, settings.webhook_config(), sync_feed=store is not None)


def create(client: TestClient, auth: dict[str, str], receiver: Receiver, **body: Any) -> dict[str, Any]:
    answer = client.post("/v1/webhooks", json={"url": receiver.url, **body}, headers=auth)
    assert answer.status_code == 201, answer.text
    created = answer.json()
    receiver.secrets.append(created["secret"])
    return created


def test_a_lender_registers_an_endpoint_and_receives_a_verified_test_message(service: Any) -> None:
    client, engine, headers, settings, receiver = service
    auth = headers["northwind"]
    created = create(client, auth, receiver, description="credit desk")
    assert created["secret"].startswith("whsec_")
    view = {k: v for k, v in created.items() if k != "secret"}
    assert {k: view[k] for k in ("url", "description", "event_types", "enabled", "disabled_reason")} == {
        "url": receiver.url,
        "description": "credit desk",
        "event_types": [
            "dossier.delivered",
            "dossier.withdrawn",
            "offer.accepted",
            "offer.closed",
            "offer.declined",
            "offer.lapsed",
        ],
        "enabled": True,
        "disabled_reason": None,
    }
    endpoint_id = created["endpoint_id"]
    assert client.get("/v1/webhooks", headers=auth).json() == [view]
    assert client.get(f"/v1/webhooks/{endpoint_id}", headers=auth).json() == view
    assert created["secret"] not in client.get(f"/v1/webhooks/{endpoint_id}", headers=auth).text

    queued = client.post(f"/v1/webhooks/{endpoint_id}/test", headers=auth)
    assert (queued.status_code, queued.json()["status"], queued.json()["event_type"]) == (
        202,
        "pending",
        "webhook.test",
    )
    assert receiver.seen == [], "nothing is sent inside a request"
    assert send(engine, settings)["delivered"] == 1
    webhook_id, payload, verified_by = receiver.seen[0]
    assert (webhook_id, verified_by) == (queued.json()["message_id"], [0])
    assert payload["data"] == {"endpoint_id": endpoint_id, "lender_id": "northwind"}

    detail = client.get(f"/v1/webhooks/{endpoint_id}/deliveries/{webhook_id}", headers=auth).json()
    assert (detail["status"], detail["attempts"], detail["last_status_code"]) == ("delivered", 1, 200)
    assert [(a["status_code"], a["error"], a["next_attempt_at"]) for a in detail["attempt_log"]] == [
        (200, None, None)
    ]


def test_the_worker_pushes_exactly_the_http_feed_signed(service: Any) -> None:
    client, engine, headers, settings, receiver = service
    auth = headers["northwind"]
    endpoint_id = create(client, auth, receiver)["endpoint_id"]
    receiver.script = {1: [503], 2: ["hang"]}
    worker = webhooks.Worker(
        engine,
        client.app.state.store,
        dataclasses.replace(settings.webhook_config(), timeout=0.5),
        poll=0.05,
        sync_every=0,
    ).start()
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            page = client.get(f"/v1/webhooks/{endpoint_id}/deliveries", headers=auth).json()
            if len(page["deliveries"]) == 2 and {m["status"] for m in page["deliveries"]} == {"delivered"}:
                break
            time.sleep(0.05)
    finally:
        worker.stop()
    assert not worker.running
    assert [(m["seq"], m["status"], m["attempts"]) for m in page["deliveries"]] == [
        (2, "delivered", 2),
        (1, "delivered", 2),
    ]
    feed = client.get("/v1/feed", headers=auth).json()["events"]
    pushed = {p["data"]["seq"]: p for _i, p, verified in receiver.seen if verified == [0]}
    assert len(receiver.seen) == 4
    assert sorted(pushed) == [1, 2]
    for event in feed:
        data = pushed[event["seq"]]["data"]
        assert data == {**event, "as_of_date": "2026-11-01"}
        assert pushed[event["seq"]]["type"] == "dossier.delivered"
    assert {e["sme_id"] for e in feed} == {"SME-000001", "SME-000003"}


def test_the_delivery_log_pages_newest_first_and_replays(service: Any) -> None:
    client, engine, headers, settings, receiver = service
    auth = headers["northwind"]
    endpoint_id = create(client, auth, receiver)["endpoint_id"]
    ids = [
        client.post(f"/v1/webhooks/{endpoint_id}/test", headers=auth).json()["message_id"] for _ in range(5)
    ]
    seen, cursor = [], None
    while True:
        params = {"limit": 2, **({"cursor": cursor} if cursor else {})}
        page = client.get(f"/v1/webhooks/{endpoint_id}/deliveries", params=params, headers=auth).json()
        seen.append([m["message_id"] for m in page["deliveries"]])
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert seen == [ids[4:2:-1], ids[2:0:-1], ids[:1]]
    send(engine, settings)
    assert len(receiver.seen) == 5
    pending = client.get(f"/v1/webhooks/{endpoint_id}/deliveries", params={"status": "pending"}, headers=auth)
    assert pending.json() == {"deliveries": [], "next_cursor": None}

    replayed = client.post(f"/v1/webhooks/{endpoint_id}/deliveries/{ids[0]}/replay", headers=auth)
    assert (replayed.status_code, replayed.json()["status"], replayed.json()["attempts"]) == (
        202,
        "pending",
        0,
    )
    send(engine, settings)
    assert receiver.seen[-1][0] == ids[0]

    assert send(engine, settings, client.app.state.store)["delivered"] == 2, "the worker syncs the feed"
    first = [i for i, p, _v in receiver.seen if p["type"] == "dossier.delivered"]
    since = (dt.datetime.now(dt.UTC) - dt.timedelta(hours=1)).isoformat()
    until = (dt.datetime.now(dt.UTC) + dt.timedelta(hours=1)).isoformat()
    answer = client.post(
        f"/v1/webhooks/{endpoint_id}/replay", json={"since": since, "until": until}, headers=auth
    )
    assert (answer.status_code, answer.json()) == (202, {"queued": 2})
    assert send(engine, settings)["delivered"] == 2
    assert sorted(i for i, _p, _v in receiver.seen[-2:]) == sorted(first)


def test_rotating_the_secret_signs_with_both_during_the_grace_period(service: Any) -> None:
    client, engine, headers, settings, receiver = service
    auth = headers["northwind"]
    endpoint_id = create(client, auth, receiver)["endpoint_id"]
    rotated = client.post(f"/v1/webhooks/{endpoint_id}/rotate-secret", json={"grace_hours": 1}, headers=auth)
    assert rotated.status_code == 201
    receiver.secrets.append(rotated.json()["secret"])
    client.post(f"/v1/webhooks/{endpoint_id}/test", headers=auth)
    send(engine, settings)
    assert receiver.seen[-1][2] == [0, 1]
    view = client.get(f"/v1/webhooks/{endpoint_id}", headers=auth).json()
    assert view["previous_secret_expires_at"] == rotated.json()["previous_secret_expires_at"]


def test_disable_enable_and_delete(service: Any) -> None:
    client, engine, headers, settings, receiver = service
    auth = headers["northwind"]
    endpoint_id = create(client, auth, receiver)["endpoint_id"]
    off = client.patch(f"/v1/webhooks/{endpoint_id}", json={"enabled": False}, headers=auth).json()
    assert (off["enabled"], off["disabled_reason"]) == (False, "disabled by the lender")
    client.post(f"/v1/webhooks/{endpoint_id}/test", headers=auth)
    assert send(engine, settings)["claimed"] == 0
    on = client.patch(
        f"/v1/webhooks/{endpoint_id}",
        json={"enabled": True, "event_types": ["dossier.withdrawn"]},
        headers=auth,
    ).json()
    assert (on["enabled"], on["disabled_reason"], on["event_types"]) == (True, None, ["dossier.withdrawn"])
    assert send(engine, settings)["delivered"] == 1
    assert client.delete(f"/v1/webhooks/{endpoint_id}", headers=auth).status_code == 204
    assert client.get(f"/v1/webhooks/{endpoint_id}", headers=auth).status_code == 404
    with session_scope(engine) as session:
        assert session.scalar(select(func.count(WebhookMessage.id))) == 0


@pytest.mark.parametrize(
    ("body", "detail"),
    [
        (
            {"url": "ftp://lender.example/"},
            "url: 'ftp://lender.example/' is not an absolute http:// or https:// URL",
        ),
        (
            {"url": "https://x.example/", "event_types": ["dossier.read"]},
            "event_types: unknown 'dossier.read'",
        ),
        ({"url": "https://x.example/", "secret": "mine"}, "secret: Extra inputs are not permitted"),
        ({}, "url: Field required"),
    ],
)
def test_bad_endpoints_are_refused_with_the_field_named(
    service: Any, body: dict[str, Any], detail: str
) -> None:
    client, engine, headers, _settings, _receiver = service
    answer = client.post("/v1/webhooks", json=body, headers=headers["northwind"])
    assert (answer.status_code, answer.headers["content-type"]) == (400, "application/problem+json")
    assert answer.json()["detail"].startswith(detail)
    with session_scope(engine) as session:
        assert session.scalar(select(func.count(WebhookEndpoint.id))) == 0


def test_bad_log_and_replay_input_gets_400_naming_the_field(service: Any) -> None:
    client, _engine, headers, _settings, receiver = service
    auth = headers["northwind"]
    endpoint_id = create(client, auth, receiver)["endpoint_id"]
    base = f"/v1/webhooks/{endpoint_id}"
    answers = {
        "cursor": client.get(f"{base}/deliveries", params={"cursor": "abc"}, headers=auth),
        "status": client.get(f"{base}/deliveries", params={"status": "lost"}, headers=auth),
        "limit": client.get(f"{base}/deliveries", params={"limit": 0}, headers=auth),
        "since": client.post(
            f"{base}/replay",
            json={"since": "2026-11-02T00:00:00Z", "until": "2026-11-01T00:00:00Z"},
            headers=auth,
        ),
        "until": client.post(
            f"{base}/replay", json={"since": "2026-11-02T00:00:00Z", "until": "2026-11-03"}, headers=auth
        ),
        "grace_hours": client.post(f"{base}/rotate-secret", json={"grace_hours": -1}, headers=auth),
    }
    for field, answer in answers.items():
        assert answer.status_code == 400, (field, answer.text)
        assert answer.json()["detail"].split(":")[0].endswith(field), (field, answer.json()["detail"])


def test_other_lenders_and_bad_keys_get_401_403_404_and_nothing_else(service: Any) -> None:
    client, engine, headers, _settings, receiver = service
    created = create(client, headers["northwind"], receiver)
    endpoint_id = created["endpoint_id"]
    message_id = client.post(f"/v1/webhooks/{endpoint_id}/test", headers=headers["northwind"]).json()[
        "message_id"
    ]
    base = f"/v1/webhooks/{endpoint_id}"
    calls = [
        ("GET", base, None),
        ("PATCH", base, {"enabled": False}),
        ("DELETE", base, None),
        ("POST", f"{base}/rotate-secret", {}),
        ("POST", f"{base}/test", None),
        ("GET", f"{base}/deliveries", None),
        ("GET", f"{base}/deliveries/{message_id}", None),
        ("POST", f"{base}/deliveries/{message_id}/replay", None),
        ("POST", f"{base}/replay", {"since": "2026-11-01T00:00:00Z", "until": "2026-11-03T00:00:00Z"}),
    ]
    expected = {"harbor": 404, "revoked": 403, "unknown": 401, "none": 401}
    for who, status in expected.items():
        for method, path, body in calls:
            answer = client.request(method, path, json=body, headers=headers[who])
            assert answer.status_code == status, (who, method, path, answer.text)
            assert answer.headers["content-type"] == "application/problem+json"
            assert set(answer.json()) <= {"type", "title", "status", "detail", "instance"}
            assert "whsec_" not in answer.text
            assert receiver.url not in answer.text
    assert client.get("/v1/webhooks", headers=headers["harbor"]).json() == []
    assert (
        client.post("/v1/webhooks", json={"url": receiver.url}, headers=headers["revoked"]).status_code == 403
    )
    with session_scope(engine) as session:
        endpoint = session.scalars(select(WebhookEndpoint)).one()
        assert (endpoint.enabled, endpoint.previous_secret_encrypted, endpoint.lender_id) == (
            True,
            None,
            "northwind",
        )
        assert session.scalar(select(func.count(WebhookMessage.id))) == 1


def test_endpoints_on_non_public_addresses_get_400_naming_url(service: Any) -> None:
    """DOSSIER_WEBHOOK_ALLOW_PRIVATE unset: registering, or changing to, a loopback, private or
    link-local URL is a 400 problem naming ``url``; a public one is accepted."""
    _client, engine, headers, settings, _receiver = service
    guarded = dataclasses.replace(settings, webhook_allow_private=False)
    auth = headers["northwind"]
    with TestClient(create_app(guarded), raise_server_exceptions=False) as client:
        for url in (
            "http://127.0.0.1:8000/hooks",
            "http://localhost/hooks",
            "http://169.254.169.254/",
            "http://[fd00::1]/",
        ):
            answer = client.post("/v1/webhooks", json={"url": url}, headers=auth)
            assert (answer.status_code, answer.headers["content-type"]) == (400, "application/problem+json")
            problem = answer.json()
            assert (problem["status"], problem["title"], problem["instance"]) == (
                400,
                "DestinationRefused",
                "/v1/webhooks",
            )
            assert problem["detail"].startswith("url: host "), problem
            assert "not a public address" in problem["detail"], problem
        created = client.post("/v1/webhooks", json={"url": "https://93.184.215.14/hooks"}, headers=auth)
        assert created.status_code == 201, created.text
        endpoint_id = created.json()["endpoint_id"]
        changed = client.patch(f"/v1/webhooks/{endpoint_id}", json={"url": "http://10.0.0.7/"}, headers=auth)
        assert (changed.status_code, changed.json()["detail"]) == (
            400,
            "url: host '10.0.0.7' resolves to 10.0.0.7, not a public address "
            "(loopback, private, link-local and other non-global addresses are refused)",
        )
        assert (
            client.get(f"/v1/webhooks/{endpoint_id}", headers=auth).json()["url"]
            == "https://93.184.215.14/hooks"
        )
    with session_scope(engine) as session:
        assert session.scalars(select(WebhookEndpoint.url)).all() == ["https://93.184.215.14/hooks"]


def test_the_publish_dags_webhook_step_pushes_without_the_service(service: Any) -> None:
    """``send_webhooks`` of the publish DAG (``dossier.pipeline.push_webhooks``), no worker running:
    the feed's delivery, the queue and one send pass push exactly the HTTP feed, signed; what failed
    goes out at the next pass."""
    client, _engine, headers, settings, receiver = service
    auth = headers["northwind"]
    endpoint_id = create(client, auth, receiver)["endpoint_id"]
    receiver.script = {2: [503]}
    with override(settings):
        first = push_webhooks()
        assert first == {
            "appended": 2,
            "lapsed": 0,
            "queued": 2,
            "claimed": 2,
            "delivered": 1,
            "retrying": 1,
            "failed": 0,
            "disabled": [],
        }
        second = push_webhooks()
    assert (second["appended"], second["queued"], second["claimed"], second["delivered"]) == (0, 0, 1, 1)
    feed = client.get("/v1/feed", headers=auth).json()["events"]
    assert [seen[2] for seen in receiver.seen] == [[0], [0], [0]]
    assert [p["data"]["seq"] for _i, p, _v in receiver.seen] in ([1, 2, 2], [2, 1, 2])
    pushed = {p["data"]["seq"]: p["data"] for _i, p, _v in receiver.seen}
    assert [pushed[e["seq"]] for e in feed] == [{**e, "as_of_date": "2026-11-01"} for e in feed]
    page = client.get(f"/v1/webhooks/{endpoint_id}/deliveries", headers=auth).json()["deliveries"]
    assert [(m["seq"], m["status"], m["attempts"]) for m in page] == [
        (2, "delivered", 2),
        (1, "delivered", 1),
    ]
