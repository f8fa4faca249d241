"""Signed webhooks end to end in the warehouse: a real receiver on 127.0.0.1 that verifies every
signature with the ``standardwebhooks`` package and answers as told (5xx, a hang past the timeout,
410, 200); the retries, the attempt log, 410, replays, secret rotation and claims by two workers.

Dossiers are published by the real publish and delivered by the feed's own sync; both backends.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, select
from standardwebhooks import Webhook, WebhookVerificationError

sys.path.insert(0, str(Path(__file__).resolve().parent))
from test_dossier_store import give_consent, run_publish, scored, seed

from warehouse import consent, events, webhooks
from warehouse.db import session_scope
from warehouse.feed import subscribe, sync
from warehouse.models import WebhookAttempt, WebhookEndpoint, WebhookMessage
from warehouse.storage import Store

SECRET_KEY = "test-secret-key"
FAST = webhooks.SendConfig(
    secret_key=SECRET_KEY, schedule=(0, 0, 0, 0), timeout=1.0, workers=4, allow_private=True
)
"""Every retry due at once, so a test steps through the schedule by calling send_due again; the
receivers are on 127.0.0.1, so private destinations are allowed (as DOSSIER_WEBHOOK_ALLOW_PRIVATE)."""
PUBLIC_URL = "https://93.184.215.14/hooks"
"""A public address (a literal: checking it needs no DNS lookup, and nothing is ever sent to it)."""


class Receiver:
    """A webhook receiver on a free loopback port. ``script`` maps a message's ``data.seq`` (or the
    event type for a test message) to what each attempt gets: a status code, or ``"hang"`` (no
    answer for longer than the sender's timeout). Every request is verified with every secret in
    ``secrets``; ``seen`` lists (webhook-id, verified body or None, secrets that verified it)."""

    def __init__(self) -> None:
        self.script: dict[Any, list[Any]] = {}
        self.secrets: list[str] = []
        self.seen: list[tuple[str, dict[str, Any] | None, list[int]]] = []
        self.raw: list[str] = []
        self.release = threading.Event()
        self.lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["content-length"])).decode()
                headers = {k: v for k, v in self.headers.items()}
                verified_by, payload = [], None
                for index, secret in enumerate(receiver.secrets):
                    try:
                        payload = Webhook(secret).verify(body, headers)
                        verified_by.append(index)
                    except WebhookVerificationError:
                        pass
                with receiver.lock:
                    receiver.seen.append((headers["webhook-id"], payload, verified_by))
                    receiver.raw.append(body)
                    key = json.loads(body)["data"].get("seq", "test")
                    plan = receiver.script.get(key, [])
                    answer = plan.pop(0) if plan else 200
                if answer == "hang":
                    receiver.release.wait(10)
                    return
                self.send_response(answer)
                self.send_header("content-length", "0")
                self.end_headers()

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_port}/hooks"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> Receiver:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release.set()
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    with Receiver() as running:
        yield running


@pytest.fixture
def world(warehouse_engine: Engine, tmp_path: Path) -> tuple[Engine, Store]:
    """SME 1 consents to northwind, 2 to harbor, 3 to both; northwind and harbor subscribe; all
    three published (nothing delivered yet)."""
    seed(warehouse_engine)
    with session_scope(warehouse_engine) as session:
        give_consent(session, "C-1", "SME-000001")
        give_consent(session, "C-2", "SME-000002", recipients=("harbor",))
        give_consent(session, "C-3", "SME-000003", recipients=("northwind", "harbor"))
        subscribe(session, "northwind")
        subscribe(session, "harbor")
    store = Store(str(tmp_path / "store"))
    run_publish(warehouse_engine, store, [scored(["SME-000001", "SME-000002"]), scored(["SME-000003"])])
    return warehouse_engine, store


def add_endpoint(engine: Engine, receiver: Receiver, lender_id: str = "northwind", **options: Any) -> str:
    with session_scope(engine) as session:
        secret, endpoint = webhooks.create_endpoint(
            session, lender_id, receiver.url, secret_key=SECRET_KEY, **{"allow_private": True, **options}
        )
    receiver.secrets.append(secret)
    return endpoint.endpoint_id


def step(engine: Engine, store: Store, config: webhooks.SendConfig = FAST) -> dict[str, Any]:
    return webhooks.run_once(engine, store, config)


def feed_events(engine: Engine, lender_id: str = "northwind") -> list[events.Event]:
    with session_scope(engine) as session:
        return events.page(session, lender_id, after=0, limit=1000)


def expected_body(event: events.Event, as_of: str = "2026-11-01") -> dict[str, Any]:
    """The webhook body of a feed event: exactly the feed's content."""
    return {
        "type": webhooks.EVENT_TYPES[event.kind],
        "timestamp": webhooks.instant(event.occurred_at),
        "data": {
            "seq": event.seq,
            "event": event.kind,
            "dossier_id": event.dossier_id,
            "sme_id": event.sme_id,
            "as_of_date": as_of,
            "occurred_at": webhooks.instant(event.occurred_at),
            "reason": event.reason,
            "dossier": events.json_safe(event.dossier) if event.dossier is not None else None,
            "offer": event.offer,
        },
    }


def message_log(engine: Engine, endpoint_id: str) -> list[dict[str, Any]]:
    """Each message of the endpoint (oldest first) with its status and attempts' codes and errors."""
    with session_scope(engine) as session:
        endpoint = webhooks.get_endpoint(session, endpoint_id)
        return [
            {
                "seq": m.seq,
                "type": m.event_type,
                "status": m.status,
                "attempts": [(a.status_code, a.error) for a in webhooks.attempts_of(session, m)],
            }
            for m in reversed(webhooks.messages_of(session, endpoint))
        ]


def test_failed_attempts_are_retried_on_the_schedule_without_blocking_others(
    world: tuple[Engine, Store], receiver: Receiver
) -> None:
    engine, store = world
    endpoint_id = add_endpoint(engine, receiver)
    receiver.script = {1: ["hang", 503, 200], 2: [200]}
    first = step(engine, store)
    assert {k: first[k] for k in ("appended", "queued", "claimed", "delivered", "retrying", "failed")} == {
        "appended": 2,
        "queued": 2,
        "claimed": 2,
        "delivered": 1,
        "retrying": 1,
        "failed": 0,
    }
    with session_scope(engine) as session:
        order = (
            session.execute(select(WebhookMessage.seq).join(WebhookAttempt).order_by(WebhookAttempt.id))
            .scalars()
            .all()
        )
    assert order == [2, 1], "the answered message is logged before the hanging one's timeout"
    assert step(engine, store)["retrying"] == 1
    assert step(engine, store)["delivered"] == 1
    assert step(engine, store)["claimed"] == 0

    timed_out = f"timed out after {FAST.timeout:g} s (ReadTimeout)"
    assert message_log(engine, endpoint_id) == [
        {
            "seq": 1,
            "type": "dossier.delivered",
            "status": "delivered",
            "attempts": [(None, timed_out), (503, "HTTP 503"), (200, None)],
        },
        {"seq": 2, "type": "dossier.delivered", "status": "delivered", "attempts": [(200, None)]},
    ]
    feed = feed_events(engine)
    ids = {}
    for webhook_id, payload, verified_by in receiver.seen:
        assert verified_by == [0]
        ids.setdefault(payload["data"]["seq"], set()).add(webhook_id)
    assert {seq: len(found) for seq, found in ids.items()} == {1: 1, 2: 1}, "one webhook-id per message"
    assert len(receiver.seen) == 4
    delivered = {p["data"]["seq"]: p for _i, p, _v in receiver.seen}
    assert delivered == {e.seq: expected_body(e) for e in feed}
    assert {p["data"]["sme_id"] for p in delivered.values()} == {"SME-000001", "SME-000003"}


def test_a_message_fails_when_the_schedule_runs_out(world: tuple[Engine, Store], receiver: Receiver) -> None:
    engine, store = world
    short = dataclasses.replace(FAST, schedule=(0, 0))
    endpoint_id = add_endpoint(engine, receiver, "harbor")
    receiver.script = {1: [500, 502, 200], 2: [200]}
    assert step(engine, store, short)["retrying"] == 1
    assert step(engine, store, short)["failed"] == 1
    assert step(engine, store, short)["claimed"] == 0
    assert message_log(engine, endpoint_id) == [
        {
            "seq": 1,
            "type": "dossier.delivered",
            "status": "failed",
            "attempts": [(500, "HTTP 500"), (502, "HTTP 502")],
        },
        {"seq": 2, "type": "dossier.delivered", "status": "delivered", "attempts": [(200, None)]},
    ]
    assert {p["data"]["sme_id"] for _i, p, _v in receiver.seen} == {"SME-000002", "SME-000003"}


def test_410_disables_only_that_endpoint_and_nothing_more_is_sent(
    world: tuple[Engine, Store], receiver: Receiver
) -> None:
    engine, store = world
    endpoint_id = add_endpoint(engine, receiver)
    receiver.script = {1: [410], 2: [410]}
    report = step(engine, store)
    assert (report["claimed"], report["failed"], len(report["disabled"])) == (2, 2, 2)
    with session_scope(engine) as session:
        consent.revoke(session, "C-1", at=dt.datetime.now(dt.UTC))
    again = step(engine, store)
    assert (again["appended"], again["queued"], again["claimed"]) == (0, 0, 0), (
        "a disabled endpoint gets nothing"
    )
    with session_scope(engine) as session:
        endpoint = webhooks.get_endpoint(session, endpoint_id)
        assert (endpoint.enabled, endpoint.disabled_reason.startswith("the endpoint answered 410 Gone")) == (
            False,
            True,
        )
        webhooks.change_endpoint(endpoint, enabled=True)
    assert len(receiver.seen) == 2
    resumed = step(engine, store)
    assert (resumed["appended"], resumed["queued"], resumed["delivered"]) == (1, 1, 1)
    assert receiver.seen[-1][1]["data"]["reason"] == "consent_revoked"


def test_a_row_withdrawn_before_sending_is_never_sent(
    world: tuple[Engine, Store], receiver: Receiver
) -> None:
    engine, store = world
    add_endpoint(engine, receiver)
    webhooks.sync_feeds(engine, store)
    with session_scope(engine) as session:
        assert webhooks.enqueue(session) == 2
        consent.revoke(session, "C-1", at=dt.datetime.now(dt.UTC).replace(microsecond=0))
    # no periodic sync: the claim itself runs the feed's delivery before reading the bodies
    first = webhooks.run_once(engine, store, FAST, sync_feed=False)
    assert (first["appended"], first["queued"], first["delivered"]) == (0, 0, 2)
    assert webhooks.run_once(engine, store, FAST, sync_feed=False)["delivered"] == 1, "the tombstone"
    feed = feed_events(engine)
    assert [(e.seq, e.kind, e.sme_id, e.dossier is None) for e in feed] == [
        (1, "delivered", "SME-000001", True),
        (2, "delivered", "SME-000003", False),
        (3, "withdrawn", "SME-000001", True),
    ]
    bodies = {p["data"]["seq"]: p for _i, p, _v in receiver.seen}
    assert bodies == {e.seq: expected_body(e) for e in feed}
    assert bodies[1]["data"]["dossier"] is None
    assert bodies[3]["type"] == "dossier.withdrawn"
    assert not any("Acme Bakery" in raw for raw in receiver.raw), "the withdrawn row's content never left"


def test_replay_one_message_and_a_time_range(world: tuple[Engine, Store], receiver: Receiver) -> None:
    now = dt.datetime.now(dt.UTC)
    engine, store = world
    with session_scope(engine) as session:
        assert sync(session, store, "northwind")["delivered"] == 2  # before the endpoint exists
    endpoint_id = add_endpoint(engine, receiver)
    assert step(engine, store)["claimed"] == 0, "a new endpoint starts at the end of the feed"
    with session_scope(engine) as session:
        endpoint = webhooks.get_endpoint(session, endpoint_id)
        queued = webhooks.replay_range(
            session,
            endpoint,
            since=dt.datetime.now(dt.UTC) - dt.timedelta(days=1),
            until=dt.datetime.now(dt.UTC) + dt.timedelta(minutes=1),
        )
    assert queued == 2
    assert step(engine, store)["delivered"] == 2
    first_ids = [i for i, _p, _v in receiver.seen]
    with session_scope(engine) as session:
        endpoint = webhooks.get_endpoint(session, endpoint_id)
        one = webhooks.messages_of(session, endpoint)[-1]
        webhooks.replay(session, endpoint, one.message_id)
        replayed_id, replayed_seq = one.message_id, one.seq
    assert step(engine, store)["delivered"] == 1
    assert receiver.seen[-1][0] == replayed_id
    assert replayed_id in first_ids
    assert receiver.seen[-1][1]["data"]["seq"] == replayed_seq
    log = {m["seq"]: m for m in message_log(engine, endpoint_id)}
    assert log[replayed_seq]["attempts"] == [(200, None), (200, None)]
    with session_scope(engine) as session:
        endpoint = webhooks.get_endpoint(session, endpoint_id)
        assert (
            webhooks.replay_range(
                session,
                endpoint,
                since=dt.datetime.now(dt.UTC) - dt.timedelta(days=1),
                until=dt.datetime.now(dt.UTC),
                only_failed=True,
            )
            == 0
        )
        with pytest.raises(webhooks.WebhookError, match="since: must be before until"):
            webhooks.replay_range(session, endpoint, since=now, until=now - dt.timedelta(seconds=1))


def test_the_test_message_and_secret_rotation(world: tuple[Engine, Store], receiver: Receiver) -> None:
    engine, _store = world
    endpoint_id = add_endpoint(engine, receiver)
    with session_scope(engine) as session:
        endpoint = webhooks.get_endpoint(session, endpoint_id)
        webhooks.send_test(session, endpoint)
        receiver.secrets.append(webhooks.rotate_secret(endpoint, secret_key=SECRET_KEY))
    with session_scope(engine) as session:
        report = webhooks.send_due(session, FAST)
    assert (report.claimed, report.delivered) == (1, 1)
    _webhook_id, payload, verified_by = receiver.seen[-1]
    assert verified_by == [0, 1], "old and new secrets both sign during the grace period"
    assert payload == {
        "type": "webhook.test",
        "timestamp": payload["timestamp"],
        "data": {"endpoint_id": endpoint_id, "lender_id": "northwind"},
    }
    with session_scope(engine) as session:
        endpoint = webhooks.get_endpoint(session, endpoint_id)
        receiver.secrets.append(
            webhooks.rotate_secret(endpoint, secret_key=SECRET_KEY, grace=dt.timedelta(0))
        )
        webhooks.send_test(session, endpoint)
    with session_scope(engine) as session:
        webhooks.send_due(session, FAST)
    assert receiver.seen[-1][2] == [2], "with no grace only the newest secret signs"


def test_two_workers_never_claim_one_attempt_twice(world: tuple[Engine, Store], receiver: Receiver) -> None:
    engine, _store = world
    endpoint_id = add_endpoint(engine, receiver)
    with session_scope(engine) as session:
        endpoint = webhooks.get_endpoint(session, endpoint_id)
        for _ in range(40):
            webhooks.send_test(session, endpoint)
    claimed: list[list[int]] = [[], []]
    start = threading.Barrier(2)

    def work(index: int) -> None:
        start.wait()
        for _ in range(10):
            with session_scope(engine) as session:
                jobs = webhooks.claim(
                    session, dataclasses.replace(FAST, batch=5), now=dt.datetime.now(dt.UTC)
                )
            claimed[index] += [job.id for job in jobs]

    threads = [threading.Thread(target=work, args=(i,)) for i in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    both = claimed[0] + claimed[1]
    assert len(both) == len(set(both)) == 40


def test_two_workers_queue_each_event_once(world: tuple[Engine, Store], receiver: Receiver) -> None:
    engine, store = world
    add_endpoint(engine, receiver)
    webhooks.sync_feeds(engine, store)
    results: list[int] = []

    def work() -> None:
        with session_scope(engine) as session:
            results.append(webhooks.enqueue(session))

    threads = [threading.Thread(target=work) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    with session_scope(engine) as session:
        seqs = session.scalars(select(WebhookMessage.seq).order_by(WebhookMessage.seq)).all()
    assert (sorted(results), seqs) == ([0, 2], [1, 2])


def test_bad_endpoint_input_is_refused_naming_the_field(world: tuple[Engine, Store]) -> None:
    engine, _store = world
    with session_scope(engine) as session:
        with pytest.raises(webhooks.WebhookError, match=r"^url: 'ftp://x' is not an absolute"):
            webhooks.create_endpoint(session, "northwind", "ftp://x", secret_key=SECRET_KEY)
        with pytest.raises(webhooks.WebhookError, match=r"^event_types: unknown 'dossier\.read'"):
            webhooks.create_endpoint(
                session, "northwind", PUBLIC_URL, secret_key=SECRET_KEY, event_types=["dossier.read"]
            )
        with pytest.raises(webhooks.UnknownEndpoint, match="unknown lender 'nobody'"):
            webhooks.create_endpoint(session, "nobody", PUBLIC_URL, secret_key=SECRET_KEY)
        assert session.scalars(select(WebhookEndpoint)).all() == []


def test_the_first_attempt_waits_the_schedules_first_entry(
    world: tuple[Engine, Store], receiver: Receiver
) -> None:
    engine, store = world
    add_endpoint(engine, receiver)
    later = dataclasses.replace(FAST, schedule=(3600, 0))
    report = step(engine, store, later)
    assert (report["queued"], report["claimed"]) == (2, 0)
    with session_scope(engine) as session:
        waits = {
            (m.next_attempt_at - m.created_at).total_seconds()
            for m in session.scalars(select(WebhookMessage))
        }
    assert waits == {3600.0}
    assert receiver.seen == []


@pytest.mark.parametrize(
    ("url", "refused"),
    [
        ("http://127.0.0.1:9/hooks", "127.0.0.1"),
        ("http://localhost/hooks", None),  # the hosts file: 127.0.0.1 or ::1
        ("http://[::1]/hooks", "::1"),
        ("http://10.0.0.7/hooks", "10.0.0.7"),
        ("http://192.168.1.20/hooks", "192.168.1.20"),
        ("http://169.254.169.254/latest/meta-data/", "169.254.169.254"),
        ("http://100.64.0.1/", "100.64.0.1"),
        ("http://0.0.0.0/", "0.0.0.0"),
        ("http://[::ffff:127.0.0.1]/", "::ffff:127.0.0.1"),
        ("http://[fd00::1]/", "fd00::1"),
        ("http://2130706433/", "127.0.0.1"),  # 127.0.0.1 written as one number
    ],
)
def test_endpoints_on_non_public_addresses_are_refused(
    world: tuple[Engine, Store], url: str, refused: str | None
) -> None:
    engine, _store = world
    with session_scope(engine) as session:
        with pytest.raises(webhooks.DestinationRefused) as raised:
            webhooks.create_endpoint(session, "northwind", url, secret_key=SECRET_KEY)
        detail = str(raised.value)
        assert detail.startswith("url: host "), detail
        assert "not a public address" in detail, detail
        if refused is not None:
            assert f" resolves to {refused}, " in detail, detail
        _secret, endpoint = webhooks.create_endpoint(session, "northwind", PUBLIC_URL, secret_key=SECRET_KEY)
        with pytest.raises(webhooks.DestinationRefused, match=r"^url: host "):
            webhooks.change_endpoint(endpoint, url=url)
        assert endpoint.url == PUBLIC_URL
        assert [e.url for e in session.scalars(select(WebhookEndpoint))] == [PUBLIC_URL]
        allowed = webhooks.change_endpoint(endpoint, url=url, allow_private=True)
        assert allowed.url == url


def test_a_non_public_destination_is_refused_again_when_sending(
    world: tuple[Engine, Store], receiver: Receiver
) -> None:
    """The URL passed at registration (allowed then, or its name resolved elsewhere since): the
    worker refuses to connect, logs why, retries on the schedule, and the receiver sees nothing."""
    engine, store = world
    endpoint_id = add_endpoint(engine, receiver)
    guarded = dataclasses.replace(FAST, allow_private=False, schedule=(0, 3600))
    with session_scope(engine) as session:
        endpoint = webhooks.get_endpoint(session, endpoint_id)
        message_id = webhooks.send_test(session, endpoint).message_id
    report = step(engine, store, guarded)
    assert (report["claimed"], report["delivered"], report["retrying"]) == (3, 0, 3)
    assert receiver.seen == []
    with session_scope(engine) as session:
        endpoint = webhooks.get_endpoint(session, endpoint_id)
        message = webhooks.get_message(session, endpoint, message_id)
        attempts = webhooks.attempts_of(session, message)
        assert (message.status, message.attempts, message.last_status_code) == ("pending", 1, None)
        assert [(a.status_code, a.error) for a in attempts] == [
            (
                None,
                "ConnectError: url: host '127.0.0.1' resolves to 127.0.0.1, not a public address "
                "(loopback, private, link-local and other non-global addresses are refused)",
            )
        ]
        assert endpoint.enabled
        webhooks.replay(session, endpoint, message_id)
    assert step(engine, store, FAST)["delivered"] == 1, "allowed, the same message goes out"
    assert [seen[0] for seen in receiver.seen] == [message_id]
