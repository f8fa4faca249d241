"""Signed webhooks: a lender's feed events pushed to its endpoints, the Standard Webhooks way.

A lender registers endpoints (:func:`create_endpoint`): a URL, the event types it wants
(:data:`EVENT_TYPES`) and a secret in the ``whsec_...`` form, shown once and kept encrypted with the
service's secret key. Every message is signed with the ``standardwebhooks`` package (headers
``webhook-id``, ``webhook-timestamp``, ``webhook-signature``); after :func:`rotate_secret` the
previous secret signs too until its grace period ends, so a receiver can switch without a gap.

What is sent is exactly the lender's feed (:mod:`warehouse.events`): the messages of an endpoint are
the lender's feed events after the endpoint's ``last_seq`` (:func:`enqueue`), and the content of each
is read from the feed log when it is sent (:func:`payload_of`), never copied at queue time, so a
delivered row withdrawn or erased since is never sent (the event goes out as the feed shows it now,
``dossier`` null). The events were appended by the feed itself (:func:`warehouse.feed.sync`, which
the worker runs periodically for every lender with an enabled endpoint, and again for the lenders of
each batch it claims, right before reading the bodies, as every feed read does), so the entitlement
is the feed's and is not decided here.

Sending is done by a worker, never in a request (:func:`send_due`, :class:`Worker`): due messages are
claimed (``FOR UPDATE SKIP LOCKED`` on PostgreSQL, and on every backend a compare-and-set of the due
time, so two workers never send one attempt twice), posted concurrently by a bounded thread pool with
a per-request timeout (a receiver that hangs holds one thread until its timeout, not the others), and
every attempt is logged (:class:`~warehouse.models.WebhookAttempt`). A failed attempt (no answer, a
timeout, any status but 2xx) is retried on the retry schedule (:data:`DEFAULT_SCHEDULE`, the
specification's example: immediately, 5 s, 5 min, 30 min, 2 h, 5 h, 10 h, 10 h); when the schedule is
spent the message is ``failed``. ``410 Gone`` disables the endpoint at once. :func:`replay` and
:func:`replay_range` send messages again (a new round of the schedule, the same ``webhook-id``).

Messages go only to public addresses (against server-side request forgery): an endpoint URL whose
host is, or resolves to, a loopback, private, link-local or other non-global address is refused
when it is registered or changed (:func:`check_destination`), and again when each connection is
made (:class:`GuardedTransport`: the address checked is the one connected to, so a DNS answer that
changed since is caught); such an attempt fails like an unreachable receiver and is retried on the
schedule. ``allow_private`` (:class:`SendConfig`, the functions that take a URL) lifts the rule for
tests and local development.

>>> parse_schedule("0, 5, 300")
(0.0, 5.0, 300.0)
>>> next_attempt_delay((0.0, 5.0, 300.0), attempts=1), next_attempt_delay((0.0, 5.0, 300.0), attempts=3)
(5.0, None)
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import ipaddress
import json
import logging
import secrets
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import httpcore
import httpx
from cryptography.fernet import Fernet
from sqlalchemy import Engine, select, update
from sqlalchemy.orm import Session
from standardwebhooks import Webhook

from warehouse import events, offers
from warehouse.db import in_chunks, session_scope
from warehouse.errors import DossierError, InputError
from warehouse.models import (
    DossierVersion,
    FeedEvent,
    Lender,
    Subscription,
    WebhookAttempt,
    WebhookEndpoint,
    WebhookMessage,
    utcnow,
)
from warehouse.storage import Store

log = logging.getLogger(__name__)

DELIVERED, WITHDRAWN, TEST = "dossier.delivered", "dossier.withdrawn", "webhook.test"
EVENT_TYPES: dict[str, str] = {
    events.DELIVERED: DELIVERED,
    events.WITHDRAWN: WITHDRAWN,
    events.OFFER_ACCEPTED: "offer.accepted",
    events.OFFER_DECLINED: "offer.declined",
    events.OFFER_CLOSED: "offer.closed",
    events.OFFER_LAPSED: "offer.lapsed",
}
"""The webhook event type of each feed event kind."""

DEFAULT_SCHEDULE: tuple[float, ...] = (0, 5, 300, 1800, 7200, 18000, 36000, 36000)
"""Seconds before each attempt: the first counted from when the event is queued, each next one from
the failure before it. A replay or a test message is sent at once."""

PENDING, DELIVERED_STATUS, FAILED = "pending", "delivered", "failed"
STATUSES = (PENDING, DELIVERED_STATUS, FAILED)
DEFAULT_GRACE = dt.timedelta(hours=24)
MAX_GRACE = dt.timedelta(days=30)
MAX_URL = 2048
LOG_EVERY = 0.05
"""Seconds between two commits of the attempt log while a batch is being sent."""
LEASE_MARGIN = dt.timedelta(seconds=30)
"""How long past its timeout a claimed attempt stays claimed (a worker that died mid-send frees it)."""


class WebhookError(InputError):
    """A webhook request that cannot be carried out (the message says why)."""


class UnknownEndpoint(DossierError, LookupError):
    """The lender has no such endpoint or message."""


# --- settings the caller passes in ------------------------------------------------------------------


def parse_schedule(text: str) -> tuple[float, ...]:
    """A retry schedule from comma-separated seconds (``"0,5,300"``); at least one, none negative."""
    try:
        delays = tuple(float(part) for part in text.split(",") if part.strip())
    except ValueError:
        raise InputError(f"retry schedule {text!r}: expected comma-separated seconds, e.g. 0,5,300") from None
    if not delays or any(d < 0 for d in delays):
        raise InputError(f"retry schedule {text!r}: expected at least one delay, none negative")
    return delays


def next_attempt_delay(schedule: Sequence[float], *, attempts: int) -> float | None:
    """Seconds to wait after the ``attempts``-th failed attempt, or None when the schedule is spent."""
    return float(schedule[attempts]) if attempts < len(schedule) else None


@dataclass(frozen=True)
class SendConfig:
    """How messages are sent: the retry schedule, the per-request timeout (seconds), the size of the
    sending thread pool, the most messages claimed at once, and the key that encrypts secrets."""

    secret_key: str = field(repr=False)
    schedule: tuple[float, ...] = DEFAULT_SCHEDULE
    timeout: float = 15.0
    workers: int = 8
    batch: int = 200
    allow_private: bool = False
    """Send to loopback, private, link-local and other non-global addresses too (tests, local
    development); by default such a destination is refused when each connection is made."""


# --- secrets ------------------------------------------------------------------------------------------


def _box(secret_key: str) -> Fernet:
    digest = hashlib.sha256(f"webhook-secrets|{secret_key}".encode()).digest()
    return Fernet(base64.urlsafe_b64encode(digest))


def new_secret() -> str:
    """A fresh endpoint secret: ``whsec_`` and 32 random bytes in base64 (the Standard Webhooks form)."""
    return "whsec_" + base64.b64encode(secrets.token_bytes(32)).decode()


def _seal(secret: str, secret_key: str) -> str:
    return _box(secret_key).encrypt(secret.encode()).decode()


def _open(sealed: str, secret_key: str) -> str:
    return _box(secret_key).decrypt(sealed.encode()).decode()


def signing_secrets(endpoint: WebhookEndpoint, secret_key: str, at: dt.datetime) -> list[str]:
    """The secrets that sign a message to ``endpoint`` now: the current one, and the previous one
    while its rotation grace period lasts."""
    found = [_open(endpoint.secret_encrypted, secret_key)]
    expires = endpoint.previous_secret_expires_at
    if endpoint.previous_secret_encrypted and expires is not None and at < expires:
        found.append(_open(endpoint.previous_secret_encrypted, secret_key))
    return found


def sign(secrets_: Iterable[str], message_id: str, timestamp: dt.datetime, body: str) -> dict[str, str]:
    """The Standard Webhooks headers of ``body``: one ``v1`` signature per secret, space-separated."""
    signature = " ".join(Webhook(s).sign(message_id, timestamp, body) for s in secrets_)
    return {
        "webhook-id": message_id,
        "webhook-timestamp": str(int(timestamp.timestamp())),
        "webhook-signature": signature,
        "content-type": "application/json",
    }


# --- endpoints ----------------------------------------------------------------------------------------


def check_url(url: str) -> str:
    """``url`` if it is an absolute http(s) URL with a host, else :class:`WebhookError`."""
    parts = urlsplit(url)
    try:
        port_ok = parts.port is None or parts.port > 0
    except ValueError:  # not a number, or out of range
        port_ok = False
    if parts.scheme not in ("http", "https") or not parts.hostname or not port_ok or len(url) > MAX_URL:
        raise WebhookError(
            f"url: {url!r} is not an absolute http:// or https:// URL (at most {MAX_URL} characters)"
        )
    return url


# --- where messages may go (server-side request forgery) --------------------------------------------


class DestinationRefused(WebhookError):
    """An endpoint URL whose host is, or resolves to, an address that is not a public one."""


def is_public_address(address: str) -> bool:
    """Whether ``address`` is a global unicast address: loopback, private, link-local, shared
    (carrier-grade NAT), reserved, unspecified and multicast addresses are not, nor an IPv6 address
    that embeds one of those (IPv4-mapped, 6to4, NAT64 translated).

    >>> [is_public_address(a) for a in ("93.184.215.14", "127.0.0.1", "10.1.2.3", "169.254.169.254")]
    [True, False, False, False]
    >>> [is_public_address(a) for a in ("2606:4700::1111", "::1", "fe80::1%eth0", "::ffff:127.0.0.1")]
    [True, False, False, False]
    >>> [is_public_address(a) for a in ("100.64.0.1", "0.0.0.0", "224.0.0.251", "64:ff9b::a00:1")]
    [False, False, False, False]
    """
    ip = ipaddress.ip_address(address.split("%", 1)[0])
    if isinstance(ip, ipaddress.IPv6Address):
        embedded = ip.ipv4_mapped or ip.sixtofour
        if embedded is None and ip in ipaddress.IPv6Network("64:ff9b::/96"):
            embedded = ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
        if embedded is not None and not is_public_address(str(embedded)):
            return False
    return ip.is_global and not ip.is_multicast


def public_addresses(host: str, port: int) -> list[str]:
    """The addresses ``host`` resolves to now, if every one is public (:func:`is_public_address`),
    else :class:`DestinationRefused` naming the first that is not (or saying the host does not resolve)."""
    try:
        found = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (OSError, UnicodeError) as error:
        raise DestinationRefused(f"url: host {host!r} does not resolve ({error})") from None
    addresses = list(dict.fromkeys(str(info[4][0]) for info in found))
    refused = [a for a in addresses if not is_public_address(a)]
    if refused or not addresses:
        raise DestinationRefused(
            f"url: host {host!r} resolves to {refused[0] if refused else 'nothing'}, not a public address "
            "(loopback, private, link-local and other non-global addresses are refused)"
        )
    return addresses


def check_destination(url: str, *, allow_private: bool = False) -> str:
    """``url`` if it is a valid endpoint URL (:func:`check_url`) whose host resolves only to public
    addresses; with ``allow_private`` (tests, local development) any host will do. The same rule is
    applied again to every connection the worker makes (DNS can change after the check)."""
    check_url(url)
    if not allow_private:
        parts = urlsplit(url)
        public_addresses(parts.hostname or "", parts.port or (443 if parts.scheme == "https" else 80))
    return url


class _GuardedBackend(httpcore.NetworkBackend):
    """Connects only to public addresses: the host is resolved here, checked, and the connection
    made to the checked address (TLS still verifies the host name), so a name that resolves to a
    public address when checked and a private one when connecting never reaches the private one."""

    def __init__(self) -> None:
        self._inner = httpcore.SyncBackend()

    def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore.NetworkStream:
        try:
            addresses = public_addresses(host, port)
        except DestinationRefused as error:
            raise httpcore.ConnectError(str(error)) from None
        failure: httpcore.ConnectError | httpcore.ConnectTimeout | None = None
        for address in addresses:
            try:
                return self._inner.connect_tcp(address, port, timeout, local_address, socket_options)
            except (httpcore.ConnectError, httpcore.ConnectTimeout) as error:
                failure = error
        assert failure is not None
        raise failure

    def connect_unix_socket(
        self, path: str, timeout: float | None = None, socket_options: Iterable[Any] | None = None
    ) -> httpcore.NetworkStream:
        raise httpcore.ConnectError("a Unix socket is not a webhook destination")

    def sleep(self, seconds: float) -> None:
        self._inner.sleep(seconds)


class GuardedTransport(httpx.HTTPTransport):
    """httpx's transport, connecting through :class:`_GuardedBackend` (no proxy: a message goes
    straight to the endpoint's public address)."""

    def __init__(self) -> None:
        super().__init__(trust_env=False)
        limits = httpx.Limits(max_connections=100, max_keepalive_connections=20)
        self._pool = httpcore.ConnectionPool(
            ssl_context=httpx.create_ssl_context(),
            max_connections=limits.max_connections,
            max_keepalive_connections=limits.max_keepalive_connections,
            keepalive_expiry=limits.keepalive_expiry,
            network_backend=_GuardedBackend(),
        )


def sending_client(config: SendConfig) -> httpx.Client:
    """The HTTP client the worker sends with: redirects are not followed, and unless
    ``config.allow_private`` every connection goes only to a public address (:class:`GuardedTransport`)."""
    if config.allow_private:
        return httpx.Client(follow_redirects=False)
    return httpx.Client(follow_redirects=False, transport=GuardedTransport())


def check_event_types(types: Iterable[str] | None) -> list[str]:
    """The event types asked for (all when none), each one of :data:`EVENT_TYPES`."""
    chosen = sorted(set(types or EVENT_TYPES.values()))
    unknown = [t for t in chosen if t not in EVENT_TYPES.values()]
    if unknown:
        raise WebhookError(f"event_types: unknown {unknown[0]!r}; known: {', '.join(EVENT_TYPES.values())}")
    return chosen


def create_endpoint(
    session: Session,
    lender_id: str,
    url: str,
    *,
    secret_key: str,
    event_types: Iterable[str] | None = None,
    description: str = "",
    allow_private: bool = False,
    at: dt.datetime | None = None,
) -> tuple[str, WebhookEndpoint]:
    """Register an endpoint; returns its secret (shown this once) and the row. It receives the
    lender's feed events appended from now on (:func:`replay_range` sends earlier ones). The URL
    must resolve to public addresses only, unless ``allow_private`` (:func:`check_destination`)."""
    at = at or utcnow()
    if session.get(Lender, lender_id) is None:
        raise UnknownEndpoint(f"unknown lender {lender_id!r}")
    secret = new_secret()
    endpoint = WebhookEndpoint(
        endpoint_id="ep_" + uuid.uuid4().hex[:24],
        lender_id=lender_id,
        url=check_destination(url, allow_private=allow_private),
        description=description,
        event_types=check_event_types(event_types),
        enabled=True,
        secret_encrypted=_seal(secret, secret_key),
        last_seq=events.last_seq(session, lender_id),
        created_at=at,
        updated_at=at,
    )
    session.add(endpoint)
    session.flush()
    return secret, endpoint


def endpoints_of(session: Session, lender_id: str | None = None) -> list[WebhookEndpoint]:
    """The endpoints of ``lender_id`` (every lender's when None), oldest first."""
    query = select(WebhookEndpoint).order_by(WebhookEndpoint.id)
    if lender_id is not None:
        query = query.where(WebhookEndpoint.lender_id == lender_id)
    return list(session.scalars(query))


def get_endpoint(session: Session, endpoint_id: str, *, lender_id: str | None = None) -> WebhookEndpoint:
    """The endpoint ``endpoint_id``, if it is ``lender_id``'s (any lender's when None)."""
    query = select(WebhookEndpoint).where(WebhookEndpoint.endpoint_id == endpoint_id)
    if lender_id is not None:
        query = query.where(WebhookEndpoint.lender_id == lender_id)
    found = session.scalars(query).first()
    if found is None:
        raise UnknownEndpoint(f"no webhook endpoint {endpoint_id!r}")
    return found


def change_endpoint(
    endpoint: WebhookEndpoint,
    *,
    url: str | None = None,
    event_types: Iterable[str] | None = None,
    description: str | None = None,
    enabled: bool | None = None,
    allow_private: bool = False,
    at: dt.datetime | None = None,
) -> WebhookEndpoint:
    """Change what is given; enabling an endpoint (one a 410 disabled, say) clears why it was disabled.
    A new URL is checked as at creation (:func:`check_destination`)."""
    if url is not None:
        endpoint.url = check_destination(url, allow_private=allow_private)
    if event_types is not None:
        endpoint.event_types = check_event_types(event_types)
    if description is not None:
        endpoint.description = description
    if enabled is not None:
        endpoint.enabled = enabled
        endpoint.disabled_reason = None if enabled else "disabled by the lender"
    endpoint.updated_at = at or utcnow()
    return endpoint


def delete_endpoint(session: Session, endpoint: WebhookEndpoint) -> None:
    """Remove an endpoint with its messages and their attempts."""
    ids = select(WebhookMessage.id).where(WebhookMessage.endpoint_id == endpoint.id)
    session.execute(WebhookAttempt.__table__.delete().where(WebhookAttempt.message_id.in_(ids)))
    session.execute(WebhookMessage.__table__.delete().where(WebhookMessage.endpoint_id == endpoint.id))
    session.delete(endpoint)
    session.flush()


def rotate_secret(
    endpoint: WebhookEndpoint,
    *,
    secret_key: str,
    grace: dt.timedelta = DEFAULT_GRACE,
    at: dt.datetime | None = None,
) -> str:
    """Give the endpoint a new secret (returned, shown this once); the current one keeps signing
    beside it for ``grace``."""
    at = at or utcnow()
    if not dt.timedelta(0) <= grace <= MAX_GRACE:
        raise WebhookError(f"grace: expected 0 to {MAX_GRACE.days} days")
    secret = new_secret()
    endpoint.previous_secret_encrypted = endpoint.secret_encrypted
    endpoint.previous_secret_expires_at = at + grace
    endpoint.secret_encrypted = _seal(secret, secret_key)
    endpoint.updated_at = at
    return secret


# --- messages -----------------------------------------------------------------------------------------


def _message_id() -> str:
    return "msg_" + uuid.uuid4().hex


def _dialect(session: Session) -> str:
    return session.get_bind().dialect.name


def enqueue(
    session: Session, *, lender_id: str | None = None, at: dt.datetime | None = None, delay: float = 0.0
) -> int:
    """Queue, for every enabled endpoint (of ``lender_id``, or all), the lender's feed events after
    the endpoint's ``last_seq`` whose type it wants, and move ``last_seq`` on (not committed).

    The endpoint's row is locked while it is done, so two workers never queue one event twice.
    Each is due ``delay`` seconds after ``at`` (the retry schedule's first entry). Returns the
    messages queued."""
    at = at or utcnow()
    due = at + dt.timedelta(seconds=delay)
    query = select(WebhookEndpoint).where(WebhookEndpoint.enabled.is_(True)).order_by(WebhookEndpoint.id)
    if lender_id is not None:
        query = query.where(WebhookEndpoint.lender_id == lender_id)
    queued = 0
    for endpoint in session.scalars(query.with_for_update()).all():
        rows = session.execute(
            select(FeedEvent.seq, FeedEvent.kind)
            .where(FeedEvent.lender_id == endpoint.lender_id, FeedEvent.seq > endpoint.last_seq)
            .order_by(FeedEvent.seq)
        ).all()
        if not rows:
            continue
        wanted = set(endpoint.event_types)
        fresh = [
            {
                "message_id": _message_id(),
                "endpoint_id": endpoint.id,
                "lender_id": endpoint.lender_id,
                "seq": seq,
                "event_type": EVENT_TYPES[kind],
                "status": PENDING,
                "attempts": 0,
                "next_attempt_at": due,
                "created_at": at,
                "updated_at": at,
            }
            for seq, kind in rows
            if EVENT_TYPES[kind] in wanted
        ]
        moved = session.execute(
            update(WebhookEndpoint)
            .where(WebhookEndpoint.id == endpoint.id, WebhookEndpoint.last_seq == endpoint.last_seq)
            .values(last_seq=rows[-1][0])
            .execution_options(synchronize_session=False)
        )
        if moved.rowcount != 1:  # another worker queued these meanwhile (SQLite has no row locks)
            continue
        if fresh:
            session.execute(WebhookMessage.__table__.insert(), fresh)
        queued += len(fresh)
    session.flush()
    session.expire_all()
    return queued


def send_test(
    session: Session, endpoint: WebhookEndpoint, *, at: dt.datetime | None = None
) -> WebhookMessage:
    """Queue a ``webhook.test`` message to ``endpoint`` (no dossier in it), due now."""
    at = at or utcnow()
    message = WebhookMessage(
        message_id=_message_id(),
        endpoint_id=endpoint.id,
        lender_id=endpoint.lender_id,
        seq=None,
        event_type=TEST,
        payload=json.dumps(
            {
                "type": TEST,
                "timestamp": instant(at),
                "data": {"endpoint_id": endpoint.endpoint_id, "lender_id": endpoint.lender_id},
            }
        ),
        status=PENDING,
        attempts=0,
        next_attempt_at=at,
        created_at=at,
        updated_at=at,
    )
    session.add(message)
    session.flush()
    return message


def get_message(session: Session, endpoint: WebhookEndpoint, message_id: str) -> WebhookMessage:
    found = session.scalars(
        select(WebhookMessage).where(
            WebhookMessage.endpoint_id == endpoint.id, WebhookMessage.message_id == message_id
        )
    ).first()
    if found is None:
        raise UnknownEndpoint(f"no message {message_id!r} to endpoint {endpoint.endpoint_id!r}")
    return found


def _restart(message: WebhookMessage, at: dt.datetime) -> None:
    message.status = PENDING
    message.attempts = 0
    message.next_attempt_at = at
    message.updated_at = at


def replay(
    session: Session, endpoint: WebhookEndpoint, message_id: str, *, at: dt.datetime | None = None
) -> WebhookMessage:
    """Send one message again, now: a new round of the retry schedule, the same ``webhook-id``."""
    at = at or utcnow()
    message = get_message(session, endpoint, message_id)
    _restart(message, at)
    session.flush()
    return message


def replay_range(
    session: Session,
    endpoint: WebhookEndpoint,
    *,
    since: dt.datetime,
    until: dt.datetime,
    only_failed: bool = False,
    at: dt.datetime | None = None,
) -> int:
    """Send again every feed event of the endpoint's types that occurred in ``[since, until)`` and
    was already queued for it or came before it (an event not yet queued is sent anyway): each gets
    a new round, existing messages keeping their ``webhook-id``. ``only_failed`` restricts it to
    messages whose attempts all failed. Returns the messages queued again."""
    at = at or utcnow()
    if since >= until:
        raise WebhookError("since: must be before until")
    kinds = [kind for kind, name in EVENT_TYPES.items() if name in set(endpoint.event_types)]
    found = session.execute(
        select(FeedEvent.seq, FeedEvent.kind)
        .where(
            FeedEvent.lender_id == endpoint.lender_id,
            FeedEvent.kind.in_(kinds),
            FeedEvent.occurred_at >= since,
            FeedEvent.occurred_at < until,
            FeedEvent.seq <= endpoint.last_seq,
        )
        .order_by(FeedEvent.seq)
    ).all()
    existing: dict[int, WebhookMessage] = {}
    for chunk in in_chunks(seq for seq, _kind in found):
        existing |= {
            m.seq: m
            for m in session.scalars(
                select(WebhookMessage).where(
                    WebhookMessage.endpoint_id == endpoint.id, WebhookMessage.seq.in_(chunk)
                )
            )
            if m.seq is not None
        }
    count = 0
    for seq, kind in found:
        message = existing.get(seq)
        if message is None:
            if only_failed:
                continue
            session.add(
                WebhookMessage(
                    message_id=_message_id(),
                    endpoint_id=endpoint.id,
                    lender_id=endpoint.lender_id,
                    seq=seq,
                    event_type=EVENT_TYPES[kind],
                    status=PENDING,
                    attempts=0,
                    next_attempt_at=at,
                    created_at=at,
                    updated_at=at,
                )
            )
        elif only_failed and message.status != FAILED:
            continue
        else:
            _restart(message, at)
        count += 1
    session.flush()
    return count


def messages_of(
    session: Session,
    endpoint: WebhookEndpoint,
    *,
    status: str | None = None,
    before: int | None = None,
    limit: int = 100,
) -> list[WebhookMessage]:
    """The endpoint's messages, newest first; ``before`` (a message's ``id``) pages on."""
    query = select(WebhookMessage).where(WebhookMessage.endpoint_id == endpoint.id)
    if status is not None:
        if status not in STATUSES:
            raise WebhookError(f"status: unknown {status!r}; known: {', '.join(STATUSES)}")
        query = query.where(WebhookMessage.status == status)
    if before is not None:
        query = query.where(WebhookMessage.id < before)
    return list(session.scalars(query.order_by(WebhookMessage.id.desc()).limit(limit)))


def attempts_of(session: Session, message: WebhookMessage) -> list[WebhookAttempt]:
    """Every attempt to send ``message``, oldest first."""
    return list(
        session.scalars(
            select(WebhookAttempt).where(WebhookAttempt.message_id == message.id).order_by(WebhookAttempt.id)
        )
    )


def instant(at: dt.datetime) -> str:
    """An instant as the lender API writes it (ISO 8601, UTC as ``Z``).

    >>> instant(dt.datetime(2026, 11, 2, 9, 30, tzinfo=dt.UTC))
    '2026-11-02T09:30:00Z'
    """
    return at.astimezone(dt.UTC).isoformat().replace("+00:00", "Z")


# --- content --------------------------------------------------------------------------------------------


def payload_of(session: Session, message: WebhookMessage) -> str:
    """The JSON body of ``message`` as the feed holds its event now (Standard Webhooks' ``type``,
    ``timestamp``, ``data``). ``data`` is the feed event: ``seq``, ``event``, ``dossier_id``,
    ``sme_id``, ``as_of_date``, ``occurred_at``, ``reason`` and, for a delivered event while the
    lender holds it, ``dossier`` (the row as delivered, values JSON cannot carry as null)."""
    return payloads_of(session, [message])[message.id]


def payloads_of(session: Session, messages: Sequence[WebhookMessage]) -> dict[int, str]:
    """:func:`payload_of` of each message, by its ``id``, reading the feed log in a few queries."""
    bodies = {m.id: m.payload or "{}" for m in messages if m.seq is None}
    wanted: dict[str, list[WebhookMessage]] = {}
    for message in messages:
        if message.seq is not None:
            wanted.setdefault(message.lender_id, []).append(message)
    for lender_id, group in wanted.items():
        found: dict[int, Any] = {}
        for chunk in in_chunks(m.seq for m in group if m.seq is not None):
            query = (
                select(FeedEvent, DossierVersion.as_of_date)
                .outerjoin(DossierVersion, DossierVersion.id == FeedEvent.dossier_version_id)
                .where(FeedEvent.lender_id == lender_id, FeedEvent.seq.in_(chunk))
            )
            found |= {event.seq: (event, as_of) for event, as_of in session.execute(query)}
        for message in group:
            event, as_of = found[message.seq]
            row = json.loads(event.dossier_json) if event.dossier_json is not None else None
            data = {
                "seq": event.seq,
                "event": event.kind,
                "dossier_id": event.dossier_id,
                "sme_id": event.sme_id,
                "as_of_date": as_of.isoformat() if as_of is not None else None,
                "occurred_at": instant(event.occurred_at),
                "reason": event.reason,
                "dossier": events.json_safe(row) if row is not None else None,
            }
            data["offer"] = json.loads(event.offer_json) if event.offer_json is not None else None
            body = {"type": EVENT_TYPES[event.kind], "timestamp": instant(event.occurred_at), "data": data}
            bodies[message.id] = json.dumps(body, allow_nan=False)
    return bodies


# --- sending --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Job:
    """One claimed attempt: what to post, where, signed with which secrets."""

    id: int
    message_id: str
    endpoint_pk: int
    url: str
    body: str
    secrets: tuple[str, ...]
    attempt: int


@dataclass(frozen=True)
class Outcome:
    status_code: int | None
    error: str | None
    duration_ms: int

    @property
    def ok(self) -> bool:
        return self.status_code is not None and 200 <= self.status_code < 300


@dataclass
class SendReport:
    """What one :func:`send_due` did."""

    claimed: int = 0
    delivered: int = 0
    retrying: int = 0
    failed: int = 0
    disabled: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {
            "claimed": self.claimed,
            "delivered": self.delivered,
            "retrying": self.retrying,
            "failed": self.failed,
            "disabled": self.disabled,
        }


def claim(session: Session, config: SendConfig, *, now: dt.datetime, store: Store | None = None) -> list[Job]:
    """Claim up to ``config.batch`` due messages of enabled endpoints and commit the claim: each
    one's due time moves past the attempt's timeout, so no other worker takes it meanwhile.

    With ``store``, the feed's own delivery (:func:`warehouse.feed.sync`) runs first, in the same
    transaction, for every lender with a feed event among them, as a feed read does: what a consent
    no longer allows is withdrawn, and its row gone from the event, before the bodies are read."""
    query = (
        select(WebhookMessage.id)
        .join(WebhookEndpoint, WebhookEndpoint.id == WebhookMessage.endpoint_id)
        .where(
            WebhookMessage.status == PENDING,
            WebhookMessage.next_attempt_at <= now,
            WebhookEndpoint.enabled.is_(True),
        )
        .order_by(WebhookMessage.next_attempt_at, WebhookMessage.id)
        .limit(config.batch)
    )
    if _dialect(session) == "postgresql":
        query = query.with_for_update(skip_locked=True, of=WebhookMessage)
    candidates = session.scalars(query).all()
    lease = now + dt.timedelta(seconds=config.timeout) + LEASE_MARGIN
    claimed: list[int] = []
    for chunk in in_chunks(candidates):
        # the condition is checked again by the write: a message another worker claimed meanwhile
        # has moved past ``now`` and is not returned
        claimed += session.scalars(
            update(WebhookMessage)
            .where(
                WebhookMessage.id.in_(chunk),
                WebhookMessage.status == PENDING,
                WebhookMessage.next_attempt_at <= now,
            )
            .values(next_attempt_at=lease)
            .returning(WebhookMessage.id)
            .execution_options(synchronize_session=False)
        ).all()
    messages = [session.get(WebhookMessage, pk) for pk in sorted(claimed)]
    if store is not None:
        from warehouse.feed import sync

        for lender_id in sorted({m.lender_id for m in messages if m.seq is not None}):
            sync(session, store, lender_id)
    bodies = payloads_of(session, messages)
    signers: dict[int, tuple[str, ...]] = {}
    jobs: list[Job] = []
    for message in messages:
        endpoint = session.get(WebhookEndpoint, message.endpoint_id)
        if endpoint.id not in signers:
            signers[endpoint.id] = tuple(signing_secrets(endpoint, config.secret_key, now))
        jobs.append(
            Job(
                id=message.id,
                message_id=message.message_id,
                endpoint_pk=endpoint.id,
                url=endpoint.url,
                body=bodies[message.id],
                secrets=signers[endpoint.id],
                attempt=message.attempts + 1,
            )
        )
    session.commit()
    return jobs


def post(client: httpx.Client, job: Job, *, timeout: float) -> Outcome:
    """Post one signed message; the outcome is the status code or why there is none."""
    started = time.perf_counter()
    headers = sign(job.secrets, job.message_id, dt.datetime.now(dt.UTC), job.body)
    try:
        # the status is all that counts: the answer's body is never read (nor its size trusted)
        with client.stream(
            "POST", job.url, content=job.body.encode(), headers=headers, timeout=timeout
        ) as answer:
            code, error = answer.status_code, None if answer.is_success else f"HTTP {answer.status_code}"
    except httpx.TimeoutException as problem:
        code, error = None, f"timed out after {timeout:g} s ({type(problem).__name__})"
    except httpx.HTTPError as problem:
        code, error = None, f"{type(problem).__name__}: {problem}"[:500]
    return Outcome(code, error, int((time.perf_counter() - started) * 1000))


def record(session: Session, job: Job, outcome: Outcome, config: SendConfig, *, at: dt.datetime) -> str:
    """Log one attempt and decide what follows (not flushed nor committed): ``delivered``, ``retrying``,
    ``failed`` (schedule spent) or ``disabled`` (410 Gone: the endpoint is disabled)."""
    message = session.get(WebhookMessage, job.id)
    if message is None:  # the endpoint was deleted meanwhile
        return FAILED
    message.attempts += 1
    message.last_status_code = outcome.status_code
    message.last_error = outcome.error
    message.updated_at = at
    verdict: str
    if outcome.ok:
        message.status, message.next_attempt_at, verdict = DELIVERED_STATUS, None, DELIVERED_STATUS
    elif outcome.status_code == 410:
        endpoint = session.get(WebhookEndpoint, job.endpoint_pk)
        if endpoint is not None:
            endpoint.enabled = False
            endpoint.disabled_reason = f"the endpoint answered 410 Gone at {instant(at)}"
            endpoint.updated_at = at
        message.status, message.next_attempt_at, verdict = FAILED, None, "disabled"
    else:
        delay = next_attempt_delay(config.schedule, attempts=message.attempts)
        if delay is None:
            message.status, message.next_attempt_at, verdict = FAILED, None, FAILED
        else:
            message.next_attempt_at, verdict = at + dt.timedelta(seconds=delay), "retrying"
    session.add(
        WebhookAttempt(
            message_id=message.id,
            attempted_at=at,
            status_code=outcome.status_code,
            error=outcome.error,
            duration_ms=outcome.duration_ms,
            next_attempt_at=message.next_attempt_at,
        )
    )
    return verdict


def send_due(
    session: Session,
    config: SendConfig,
    *,
    now: dt.datetime | None = None,
    store: Store | None = None,
    client: httpx.Client | None = None,
    clock: Callable[[], dt.datetime] = utcnow,
) -> SendReport:
    """Claim the messages due at ``now`` (:func:`claim`: with ``store``, after the feed's delivery),
    post them concurrently (``config.workers`` threads, each request bounded by ``config.timeout``)
    and log each attempt as it ends. Commits: the claim first, then the attempts as they end."""
    report = SendReport()
    jobs = claim(session, config, now=now or clock(), store=store)
    report.claimed = len(jobs)
    if not jobs:
        return report
    own = client is None
    client = client or sending_client(config)
    try:
        with ThreadPoolExecutor(max_workers=max(1, min(config.workers, len(jobs)))) as pool:
            futures = {pool.submit(post, client, job, timeout=config.timeout): job for job in jobs}
            pending = set(futures)
            while pending:
                # log what ended within the last moment in one commit, not waiting for what still runs
                done, pending = wait(pending, timeout=LOG_EVERY)
                if not done:
                    continue
                for future in done:
                    job = futures[future]
                    verdict = record(session, job, future.result(), config, at=clock())
                    if verdict == DELIVERED_STATUS:
                        report.delivered += 1
                    elif verdict == "retrying":
                        report.retrying += 1
                    else:
                        report.failed += 1
                        if verdict == "disabled":
                            report.disabled.append(job.url)
                session.commit()
    finally:
        if own:
            client.close()
    return report


def lenders_with_endpoints(session: Session) -> list[str]:
    """Lenders with an enabled endpoint and an active subscription (those the worker syncs)."""
    return list(
        session.scalars(
            select(WebhookEndpoint.lender_id)
            .join(Subscription, Subscription.lender_id == WebhookEndpoint.lender_id)
            .where(WebhookEndpoint.enabled.is_(True), Subscription.active.is_(True))
            .distinct()
            .order_by(WebhookEndpoint.lender_id)
        )
    )


def sync_feeds(engine: Engine, store: Store, *, at: dt.datetime | None = None) -> int:
    """Run the feed's own delivery (:func:`warehouse.feed.sync`) for every lender with an enabled
    endpoint, each in its own transaction, so new versions and withdrawals reach the feed log (and
    so the webhooks) without the lender reading its feed. Returns the events appended."""
    from warehouse.feed import sync

    with session_scope(engine) as session:
        lenders = lenders_with_endpoints(session)
    appended = 0
    for lender_id in lenders:
        with session_scope(engine) as session:
            counts = sync(session, store, lender_id, now=at)
        appended += counts["delivered"] + counts["withdrawn"]
    return appended


def run_once(
    engine: Engine, store: Store | None, config: SendConfig, *, sync_feed: bool = True
) -> dict[str, Any]:
    """One worker step: sync the feeds of lenders with an endpoint (when ``sync_feed`` and a store
    is given) and lapse the offers past their validity (:func:`warehouse.offers.lapse_due`, which
    tells their lenders), queue new events, send what is due (syncing first the feeds of the lenders
    it is sent to, when a store is given). Returns the counts."""
    appended = sync_feeds(engine, store) if sync_feed and store is not None else 0
    lapsed = 0
    if sync_feed:
        with session_scope(engine) as session:
            lapsed = offers.lapse_due(session, utcnow())
    with session_scope(engine) as session:
        queued = enqueue(session, delay=config.schedule[0])
    with session_scope(engine) as session:
        report = send_due(session, config, store=store)
    return {"appended": appended, "lapsed": lapsed, "queued": queued, **report.as_dict()}


class Worker:
    """The sending loop in a background thread: every ``poll`` seconds it queues and sends, every
    ``sync_every`` seconds it first syncs the feeds. :meth:`stop` ends it cleanly (the attempt in
    flight finishes and is logged)."""

    def __init__(
        self,
        engine: Engine,
        store: Store | None,
        config: SendConfig,
        *,
        poll: float = 2.0,
        sync_every: float = 30.0,
    ) -> None:
        self.engine, self.store, self.config = engine, store, config
        self.poll, self.sync_every = poll, sync_every
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="webhook-worker", daemon=True)

    def start(self) -> Worker:
        self._thread.start()
        return self

    def stop(self, timeout: float | None = None) -> None:
        self._stop.set()
        self._thread.join(timeout if timeout is not None else self.config.timeout + 5)

    @property
    def running(self) -> bool:
        return self._thread.is_alive()

    def _run(self) -> None:
        last_sync = -float("inf")
        while not self._stop.is_set():
            due_sync = time.monotonic() - last_sync >= self.sync_every
            try:
                counts = run_once(self.engine, self.store, self.config, sync_feed=due_sync)
                if due_sync:
                    last_sync = time.monotonic()
                if counts["claimed"] or counts["queued"]:
                    log.info("webhooks: %s", counts)
            except Exception:
                log.exception("webhook worker step failed; retrying in %s s", self.poll)
            self._stop.wait(self.poll)
