"""Consent: what an SME allows, and the only two checks the rest of the code relies on.

A consent names the sources that may be pulled, the recipients (lenders) that may receive the
dossier, a purpose, a history window in months and an expiry. It is *active* at an instant when its
status is ``active``, it was granted at or before that instant and expires after it.

The two checks:

* before a pull, :func:`require_source` (connectors) - some active consent covers the source;
* at entitlement, :func:`entitled_lenders` (publish and lender feed) - an active consent names the
  lender and covers every source the dossier used.

Every change appends a :class:`~warehouse.models.ConsentEvent` whose hash covers the previous one,
so the history cannot be rewritten unnoticed (:func:`verify_chain`).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
from collections import defaultdict
from collections.abc import Iterable
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from warehouse.canonical import SOURCES
from warehouse.errors import DossierError
from warehouse.models import Consent, ConsentEvent, utcnow

GENESIS_HASH = "0" * 64


class ConsentError(DossierError, PermissionError):
    """Raised when an action needs a consent that is not active."""


def _event_hash(
    prev_hash: str,
    consent_id: str,
    sequence: int,
    event_type: str,
    occurred_at: dt.datetime,
    actor: str,
    details: dict[str, Any],
) -> str:
    body = json.dumps(
        [
            prev_hash,
            consent_id,
            sequence,
            event_type,
            occurred_at.astimezone(dt.UTC).isoformat(),
            actor,
            details,
        ],
        sort_keys=True,
        separators=(",", ":"),
    )
    return hashlib.sha256(body.encode()).hexdigest()


def _append_event(
    session: Session,
    consent_id: str,
    event_type: str,
    occurred_at: dt.datetime,
    actor: str,
    details: dict[str, Any],
) -> ConsentEvent:
    last = session.scalars(
        select(ConsentEvent)
        .where(ConsentEvent.consent_id == consent_id)
        .order_by(ConsentEvent.sequence.desc())
        .limit(1)
    ).first()
    sequence = 1 if last is None else last.sequence + 1
    prev_hash = GENESIS_HASH if last is None else last.hash
    event = ConsentEvent(
        consent_id=consent_id,
        sequence=sequence,
        event_type=event_type,
        occurred_at=occurred_at,
        actor=actor,
        details=details,
        prev_hash=prev_hash,
        hash=_event_hash(prev_hash, consent_id, sequence, event_type, occurred_at, actor, details),
    )
    session.add(event)
    session.flush()
    return event


def grant(
    session: Session,
    *,
    consent_id: str,
    sme_id: str,
    sources: Iterable[str],
    recipients: Iterable[str],
    purpose: str,
    history_months: int,
    granted_at: dt.datetime,
    expires_at: dt.datetime,
    actor: str = "sme",
) -> Consent:
    """Record a grant. Granting the same terms again changes nothing (no new event)."""
    sources = sorted(set(sources))
    unknown = set(sources) - set(SOURCES)
    if unknown:
        raise ValueError(f"consent {consent_id}: unknown sources {sorted(unknown)}; known: {list(SOURCES)}")
    if expires_at <= granted_at:
        raise ValueError(
            f"consent {consent_id}: expires_at {expires_at} is not after granted_at {granted_at}"
        )
    recipients = sorted(set(recipients))
    terms = {
        "sources": sources,
        "recipients": recipients,
        "purpose": purpose,
        "history_months": history_months,
        "expires_at": expires_at.astimezone(dt.UTC).isoformat(),
    }
    consent = session.get(Consent, consent_id)
    if consent is not None:
        current = {
            "sources": consent.sources,
            "recipients": consent.recipients,
            "purpose": consent.purpose,
            "history_months": consent.history_months,
            "expires_at": consent.expires_at.isoformat(),
        }
        if current == terms and consent.status == "active" and consent.sme_id == sme_id:
            return consent
        if consent.sme_id != sme_id:
            raise ValueError(f"consent {consent_id} belongs to {consent.sme_id}, not {sme_id}")
    else:
        consent = Consent(consent_id=consent_id, sme_id=sme_id)
        session.add(consent)
    consent.sources = sources
    consent.recipients = recipients
    consent.purpose = purpose
    consent.history_months = history_months
    consent.granted_at = granted_at
    consent.expires_at = expires_at
    consent.status = "active"
    consent.revoked_at = None
    session.flush()
    _append_event(session, consent_id, "granted", granted_at, actor, terms)
    return consent


def revoke(
    session: Session, consent_id: str, *, at: dt.datetime, actor: str = "sme", reason: str = ""
) -> Consent:
    """Withdraw a consent from ``at`` on. Revoking twice changes nothing."""
    consent = session.get(Consent, consent_id)
    if consent is None:
        raise ConsentError(f"consent {consent_id} does not exist")
    if consent.status == "revoked":
        return consent
    consent.status = "revoked"
    consent.revoked_at = at
    session.flush()
    _append_event(session, consent_id, "revoked", at, actor, {"reason": reason})
    return consent


def is_active(consent: Consent, at: dt.datetime) -> bool:
    return consent.status == "active" and consent.granted_at <= at < consent.expires_at


def active_consents(session: Session, sme_id: str, at: dt.datetime | None = None) -> list[Consent]:
    at = at or utcnow()
    rows = session.scalars(select(Consent).where(Consent.sme_id == sme_id, Consent.status == "active"))
    return [c for c in rows if is_active(c, at)]


def require_source(session: Session, sme_id: str, source: str, at: dt.datetime | None = None) -> int:
    """Raise :class:`ConsentError` unless an active consent covers ``source``; return its history window.

    When several consents cover the source the widest history window applies.
    """
    windows = [c.history_months for c in active_consents(session, sme_id, at) if source in c.sources]
    if not windows:
        raise ConsentError(f"{sme_id}: no active consent covers the {source} source")
    return max(windows)


LOOKUP_CHUNK = 5000
"""SME ids per ``IN (...)`` list, well under every backend's bound-parameter limit."""


def _active_terms(session: Session, at: dt.datetime, sme_ids: Iterable[str] | None = None) -> list[Any]:
    """(sme_id, sources, recipients, history_months) of every consent active at ``at``, columns only.

    ``sme_ids`` restricts the lookup to those SMEs (a shard), in chunks.
    """
    query = select(Consent.sme_id, Consent.sources, Consent.recipients, Consent.history_months).where(
        Consent.status == "active", Consent.granted_at <= at, Consent.expires_at > at
    )
    if sme_ids is None:
        return list(session.execute(query))
    wanted = sorted(set(sme_ids))
    rows: list[Any] = []
    for start in range(0, len(wanted), LOOKUP_CHUNK):
        rows += session.execute(query.where(Consent.sme_id.in_(wanted[start : start + LOOKUP_CHUNK])))
    return rows


def source_coverage(
    session: Session, at: dt.datetime | None = None, sme_ids: Iterable[str] | None = None
) -> dict[str, dict[str, int]]:
    """For every SME (of ``sme_ids``, default all) with an active consent: source -> widest history window."""
    coverage: dict[str, dict[str, int]] = defaultdict(dict)
    for sme_id, sources, _recipients, history_months in _active_terms(session, at or utcnow(), sme_ids):
        for source in sources:
            coverage[sme_id][source] = max(coverage[sme_id].get(source, 0), history_months)
    return dict(coverage)


def entitled_lenders(
    session: Session, sme_id: str, sources_used: Iterable[str], at: dt.datetime | None = None
) -> set[str]:
    """Lenders that an active consent lets receive a dossier built from ``sources_used``."""
    needed = set(sources_used)
    lenders: set[str] = set()
    for consent in active_consents(session, sme_id, at):
        if needed <= set(consent.sources):
            lenders.update(consent.recipients)
    return lenders


def entitlement_map(
    session: Session, at: dt.datetime | None = None, sme_ids: Iterable[str] | None = None
) -> dict[str, list[tuple[frozenset[str], frozenset[str]]]]:
    """Every SME's (of ``sme_ids``, default all) active (sources, recipients) pairs, in one pass."""
    grants: dict[str, list[tuple[frozenset[str], frozenset[str]]]] = defaultdict(list)
    for sme_id, sources, recipients, _history in _active_terms(session, at or utcnow(), sme_ids):
        grants[sme_id].append((frozenset(sources), frozenset(recipients)))
    return dict(grants)


def is_entitled(
    grants: list[tuple[frozenset[str], frozenset[str]]], lender_id: str, sources_used: Iterable[str]
) -> bool:
    """Whether one of an SME's active grants (from :func:`entitlement_map`) covers lender and sources."""
    needed = frozenset(sources_used)
    return any(lender_id in recipients and needed <= sources for sources, recipients in grants)


def verify_chain(session: Session, consent_id: str) -> bool:
    """Recompute the event hashes of a consent; False if any event was altered, dropped or reordered."""
    prev = GENESIS_HASH
    events = session.scalars(
        select(ConsentEvent).where(ConsentEvent.consent_id == consent_id).order_by(ConsentEvent.sequence)
    )
    for expected_sequence, event in enumerate(events, start=1):
        recomputed = _event_hash(
            prev, consent_id, event.sequence, event.event_type, event.occurred_at, event.actor, event.details
        )
        if event.sequence != expected_sequence or event.prev_hash != prev or event.hash != recomputed:
            return False
        prev = event.hash
    return True
