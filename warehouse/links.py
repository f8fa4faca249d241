"""Connector links: how an SME is asked for its consent, and the ledger of what it was shown.

A **link** carries the terms an operator (or later a lender) asks an SME to grant: sources,
recipients, purpose (:data:`warehouse.consent.PURPOSES`), history window and consent duration. It is
reached by a token ``<link_id>.<secret>.<signature>``:

* unguessable - ``secret`` is 192 random bits;
* signed - ``signature`` is an HMAC-SHA256 over the SME id, the link id and the secret, keyed by
  the service's secret key, so a forged or truncated token is refused before any lookup;
* stored only as its sha256 (:attr:`~warehouse.models.ConnectorLink.token_sha256`);
* expiring (``expires_at``) and answered at most once (``outcome`` granted or declined).

The SME's answer goes through :func:`warehouse.consent.grant`; this module never decides what a
consent allows. Each step of a link (``requested``, ``shown``, ``granted``, ``declined``) is a
:class:`~warehouse.models.LinkEvent` hash-chained per link exactly as consent events are, and
names the sha256 of the exact text shown (kept once per version in ``shown_texts``).
:func:`verify_ledgers` walks every consent chain and every link chain and names the first broken
event of each.

>>> key = "k" * 32
>>> token = sign_token(key, "SME-1", "L1", "s3cret")
>>> read_token(key, "SME-1", token)
('L1', 's3cret')
>>> read_token(key, "SME-2", token) is None
True
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import hmac
import secrets
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from warehouse import consent
from warehouse.errors import DossierError
from warehouse.models import (
    ConnectorLink,
    ConsentEvent,
    FieldVisitRequest,
    Lender,
    LinkEvent,
    OfferEvent,
    ShownText,
    Sme,
    SmePageKey,
    utcnow,
)

DEFAULT_VALID_DAYS = 14
"""How long a link can be answered, unless its creator says otherwise."""
MAX_VALID_DAYS = 90
MAX_CONSENT_DAYS = 3660
"""The longest consent a link asks for: ten years."""
SIGNATURE_CHARS = 32
SOURCE_WORDS: dict[str, str] = {
    "accounting": "your accounting books (sales, costs, balances)",
    "tax": "your VAT returns",
    "utility": "your utility bills and meter readings",
    "survey": "the field-visit survey of your premises",
}
"""How each source is named to the SME, in plain words."""


class LinkError(DossierError):
    """A link that cannot be used: ``status`` is the HTTP status a page answers with."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status = status


# --- tokens ---------------------------------------------------------------------------------------


def _signature(key: str, purpose: str, sme_id: str, ident: str, secret: str) -> str:
    mac = hmac.new(key.encode(), f"{purpose}:{sme_id}:{ident}.{secret}".encode(), hashlib.sha256).digest()
    return base64.urlsafe_b64encode(mac).decode().rstrip("=")[:SIGNATURE_CHARS]


def sign_token(key: str, sme_id: str, ident: str, secret: str, *, purpose: str = "link") -> str:
    """The token ``<ident>.<secret>.<signature>`` for ``sme_id`` (``purpose`` separates link tokens
    from SME page keys, so one can never be used as the other)."""
    return f"{ident}.{secret}.{_signature(key, purpose, sme_id, ident, secret)}"


def read_token(key: str, sme_id: str, token: str, *, purpose: str = "link") -> tuple[str, str] | None:
    """``(ident, secret)`` of a token signed for ``sme_id``, or None when it is forged, truncated,
    malformed or signed for another SME."""
    parts = token.split(".")
    if len(parts) != 3 or not all(parts):
        return None
    ident, secret, signature = parts
    if not hmac.compare_digest(signature.encode(), _signature(key, purpose, sme_id, ident, secret).encode()):
        return None
    return ident, secret


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


# --- the ledger of links --------------------------------------------------------------------------


def append_event(
    session: Session,
    link_id: str,
    event_type: str,
    occurred_at: dt.datetime,
    actor: str,
    details: dict[str, Any],
) -> LinkEvent:
    """Append an event to a link's chain; its hash covers the previous event's (same construction
    as the consent ledger's).

    Two requests on one link may append at once (a page opened twice): the link row is locked
    where the database can (PostgreSQL), and an insert that lost the race to the same sequence
    number is retried on top of the winner, so the chain never forks.
    """
    session.get(ConnectorLink, link_id, with_for_update=True)
    event = consent.append_chained(
        session, LinkEvent, "link_id", link_id, event_type, occurred_at, actor, details
    )
    if event is not None:
        return event
    raise LinkError(f"link {link_id}: too many simultaneous changes; try again", 409)


@dataclass(frozen=True)
class BrokenLink:
    """The first event of a chain that does not hash to what it should."""

    chain: str
    """``consent``, ``link`` or ``offer``."""
    chain_id: str
    sequence: int
    event_type: str
    problem: str

    def __str__(self) -> str:
        return f"{self.chain} {self.chain_id}: event {self.sequence} ({self.event_type}) {self.problem}"


def _first_broken(chain: str, chain_id: str, events: list[Any]) -> BrokenLink | None:
    prev = consent.GENESIS_HASH
    for expected, event in enumerate(events, start=1):
        recomputed = consent.event_hash(
            prev, chain_id, event.sequence, event.event_type, event.occurred_at, event.actor, event.details
        )
        problem = None
        if event.sequence != expected:
            problem = f"has sequence {event.sequence} where {expected} was expected (an event was dropped)"
        elif event.prev_hash != prev:
            problem = "does not follow the previous event (prev_hash differs)"
        elif event.hash != recomputed:
            problem = "was altered after it was written (its hash differs)"
        if problem:
            return BrokenLink(chain, chain_id, event.sequence, event.event_type, problem)
        prev = event.hash
    return None


def verify_ledgers(session: Session) -> tuple[int, list[BrokenLink]]:
    """Check every consent, link and offer chain; ``(chains checked, first break of each broken chain)``."""
    chains: dict[tuple[str, str], list[Any]] = {}
    for event in session.scalars(
        select(ConsentEvent).order_by(ConsentEvent.consent_id, ConsentEvent.sequence)
    ):
        chains.setdefault(("consent", event.consent_id), []).append(event)
    for event in session.scalars(select(LinkEvent).order_by(LinkEvent.link_id, LinkEvent.sequence)):
        chains.setdefault(("link", event.link_id), []).append(event)
    for event in session.scalars(select(OfferEvent).order_by(OfferEvent.offer_id, OfferEvent.sequence)):
        chains.setdefault(("offer", event.offer_id), []).append(event)
    broken = [
        found
        for (chain, chain_id), events in sorted(chains.items())
        if (found := _first_broken(chain, chain_id, events)) is not None
    ]
    return len(chains), broken


def keep_text(session: Session, text: str, at: dt.datetime) -> str:
    """Keep ``text`` once (by its sha256) and return the sha256."""
    digest = hashlib.sha256(text.encode()).hexdigest()
    if session.get(ShownText, digest) is None:
        session.add(ShownText(sha256=digest, text=text, first_shown_at=at))
        session.flush()
    return digest


# --- creating and answering links -----------------------------------------------------------------


@dataclass(frozen=True)
class NewLink:
    """A link just made: its row and the token (known only now; the warehouse keeps its hash)."""

    link: ConnectorLink
    token: str


def create_link(
    session: Session,
    key: str,
    *,
    sme_id: str,
    sources: list[str],
    recipients: list[str],
    purpose: str,
    history_months: int,
    consent_days: int,
    valid_days: int = DEFAULT_VALID_DAYS,
    actor: str = "operator",
    now: dt.datetime | None = None,
) -> NewLink:
    """Make a link asking ``sme_id`` for these terms (checked by :func:`warehouse.consent.check_terms`
    now, and again when the SME grants). Raises :class:`~warehouse.consent.ConsentError` or
    :class:`LinkError` with one line naming the bad argument."""
    now = now or utcnow()
    if not 1 <= valid_days <= MAX_VALID_DAYS:
        raise LinkError(f"valid_days must be between 1 and {MAX_VALID_DAYS}, not {valid_days}")
    if consent_days < 1:
        raise LinkError(f"consent_days must be at least 1, not {consent_days}")
    if consent_days > MAX_CONSENT_DAYS:
        raise LinkError(f"consent_days must be at most {MAX_CONSENT_DAYS} (ten years), not {consent_days}")
    sources, recipients = consent.check_terms(
        session,
        sme_id=sme_id,
        sources=sources,
        recipients=recipients,
        purpose=purpose,
        history_months=history_months,
        granted_at=now,
        expires_at=now + dt.timedelta(days=consent_days),
    )
    link_id = secrets.token_hex(8)
    token = sign_token(key, sme_id, link_id, secrets.token_urlsafe(24))
    link = ConnectorLink(
        link_id=link_id,
        token_sha256=token_hash(token),
        sme_id=sme_id,
        sources=sources,
        recipients=recipients,
        purpose=purpose,
        history_months=history_months,
        consent_days=consent_days,
        created_by=actor,
        created_at=now,
        expires_at=now + dt.timedelta(days=valid_days),
    )
    session.add(link)
    session.flush()
    append_event(
        session,
        link_id,
        "requested",
        now,
        actor,
        {
            "sme_id": sme_id,
            "sources": sources,
            "recipients": recipients,
            "purpose": purpose,
            "history_months": history_months,
            "consent_days": consent_days,
            "expires_at": link.expires_at.isoformat(),
        },
    )
    return NewLink(link, token)


def open_link(
    session: Session, key: str, sme_id: str, token: str, *, now: dt.datetime | None = None
) -> ConnectorLink:
    """The link ``token`` opens for ``sme_id``, still answerable now.

    Raises :class:`LinkError`: 404 for a forged, truncated or other SME's token (nothing is said
    about which), 410 when the link expired, 409 when it was already answered.
    """
    now = now or utcnow()
    read = read_token(key, sme_id, token)
    link = session.get(ConnectorLink, read[0]) if read else None
    if link is None or link.sme_id != sme_id or not hmac.compare_digest(link.token_sha256, token_hash(token)):
        raise LinkError("This link is not valid. Check that you copied all of it, or ask for a new one.", 404)
    if link.outcome is not None:
        raise LinkError(
            f"This link was already used: you {link.outcome} on {link.answered_at:%d %B %Y}. "
            "A link can be answered only once; ask for a new one to change your answer.",
            409,
        )
    if link.expires_at <= now:
        raise LinkError(f"This link expired on {link.expires_at:%d %B %Y}. Ask for a new one.", 410)
    return link


def consent_text(session: Session, link: ConnectorLink) -> list[str]:
    """The paragraphs the SME is shown for ``link``, in plain words (their exact text is hashed)."""
    sme = session.get(Sme, link.sme_id)
    lenders = {
        lender.lender_id: lender.name
        for lender in session.scalars(select(Lender).where(Lender.lender_id.in_(link.recipients)))
    }
    asker = (
        "The sme-dossier operator"
        if link.created_by == "operator"
        else lenders.get(link.created_by, link.created_by)
    )
    data = "; ".join(SOURCE_WORDS.get(source, source) for source in link.sources)
    receivers = ", ".join(f"{lenders.get(r, r)} ({r})" for r in link.recipients)
    return [
        f"{asker} asks {sme.name if sme else link.sme_id} "
        f"({link.sme_id}) to share data for a credit dossier.",
        f"Data asked for: {data}, covering the last {link.history_months} months.",
        f"Why: {consent.PURPOSES[link.purpose]}.",
        f"Who receives the dossier: {receivers}. Nobody else does.",
        f"Until when: {link.consent_days} days from the moment you agree, unless you take it back "
        "earlier. You can take it back at any time from your own page; it takes effect at once.",
    ]


def show(session: Session, link: ConnectorLink, *, at: dt.datetime, client: str) -> tuple[list[str], str]:
    """Record that ``link``'s text was shown to ``client``; the paragraphs and their sha256."""
    paragraphs = consent_text(session, link)
    digest = keep_text(session, "\n\n".join(paragraphs), at)
    append_event(session, link.link_id, "shown", at, "sme", {"text_sha256": digest, "client": client})
    return paragraphs, digest


def answer(
    session: Session,
    link: ConnectorLink,
    *,
    grant: bool,
    text_sha256: str,
    at: dt.datetime,
    client: str,
) -> ConnectorLink:
    """Grant (through :func:`warehouse.consent.grant`) or decline ``link``, recording the text the
    SME agreed to. The text must be the current version of the link's text (what was shown)."""
    current = keep_text(session, "\n\n".join(consent_text(session, link)), at)
    if not hmac.compare_digest(current, text_sha256):
        raise LinkError(
            "The terms on this page changed since it was shown. Reload the page and read them again.", 409
        )
    details: dict[str, Any] = {"text_sha256": current, "client": client}
    if grant:
        consent_id = f"C-{link.sme_id}-{link.link_id}"
        consent.grant(
            session,
            consent_id=consent_id,
            sme_id=link.sme_id,
            sources=link.sources,
            recipients=link.recipients,
            purpose=link.purpose,
            history_months=link.history_months,
            granted_at=at,
            expires_at=at + dt.timedelta(days=link.consent_days),
            actor="sme",
        )
        link.consent_id = consent_id
        details["consent_id"] = consent_id
    link.outcome = "granted" if grant else "declined"
    link.answered_at = at
    session.flush()
    append_event(session, link.link_id, link.outcome, at, "sme", details)
    return link


def status_at(link: ConnectorLink, at: dt.datetime) -> str:
    """``granted`` or ``declined`` once answered, else ``expired`` or ``open`` at ``at``."""
    if link.outcome is not None:
        return link.outcome
    return "expired" if link.expires_at <= at else "open"


# --- field visits ---------------------------------------------------------------------------------

VISIT_SOURCE = "survey"
MAX_VISIT_NOTE = 500


def request_field_visit(
    session: Session, link: ConnectorLink, *, at: dt.datetime, client: str, note: str = ""
) -> tuple[FieldVisitRequest, bool]:
    """Record that the SME asks for a field visit (the survey source) through ``link``:
    a ``field_visit_requests`` row the operator lists and a ``field_visit_requested`` event in the
    link's ledger. One request per link: asking again returns the first, ``(row, False)``.
    """
    if VISIT_SOURCE not in link.sources:
        raise LinkError(
            "This link does not ask for the field-visit survey, so no visit can be requested.", 400
        )
    note = " ".join(note.split())
    if len(note) > MAX_VISIT_NOTE:
        raise LinkError(f"The note is longer than {MAX_VISIT_NOTE} characters; shorten it.", 400)
    session.get(ConnectorLink, link.link_id, with_for_update=True)
    existing = session.scalars(
        select(FieldVisitRequest).where(FieldVisitRequest.link_id == link.link_id)
    ).first()
    if existing is not None:
        return existing, False
    row = FieldVisitRequest(
        link_id=link.link_id, sme_id=link.sme_id, requested_at=at, status="requested", note=note
    )
    try:
        with session.begin_nested():
            session.add(row)
    except IntegrityError:
        found = session.scalars(
            select(FieldVisitRequest).where(FieldVisitRequest.link_id == link.link_id)
        ).one()
        return found, False
    append_event(session, link.link_id, "field_visit_requested", at, "sme", {"client": client, "note": note})
    return row, True


def field_visits(session: Session, *, status: str | None = None) -> list[FieldVisitRequest]:
    """Every field-visit request (optionally of one ``status``), oldest first."""
    query = select(FieldVisitRequest).order_by(FieldVisitRequest.requested_at, FieldVisitRequest.id)
    if status:
        query = query.where(FieldVisitRequest.status == status)
    return list(session.scalars(query))


# --- the SME's own page ---------------------------------------------------------------------------


def issue_page_key(session: Session, key: str, sme_id: str, *, at: dt.datetime | None = None) -> str:
    """A new long-lived key to the SME's own page; any earlier key stops working."""
    if session.get(Sme, sme_id) is None:
        raise consent.ConsentError(f"unknown SME {sme_id!r}")
    token = sign_token(key, sme_id, "page", secrets.token_urlsafe(24), purpose="page")
    row = session.get(SmePageKey, sme_id) or SmePageKey(sme_id=sme_id)
    row.key_sha256 = token_hash(token)
    row.issued_at = at or utcnow()
    session.add(row)
    session.flush()
    return token


def check_page_key(session: Session, key: str, sme_id: str, token: str) -> None:
    """Raise :class:`LinkError` (404) unless ``token`` is the SME's current page key."""
    row = session.get(SmePageKey, sme_id)
    if (
        read_token(key, sme_id, token, purpose="page") is None
        or row is None
        or not hmac.compare_digest(row.key_sha256, token_hash(token))
    ):
        raise LinkError("This page link is not valid (it may have been replaced by a newer one).", 404)
