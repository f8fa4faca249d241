"""Offers: lenders answer a delivered dossier version with an indicative offer; the SME chooses.

The life of an offer::

    posted (open) --amend--> open --withdraw--> withdrawn            (the lender)
                  --accept--> accepted, every other open offer of the SME closed   (the SME)
                  --decline--> declined                                           (the SME)
                  --lapse--> lapsed: its valid_until passed, or its dossier version was withdrawn
                             from the lender (the consent law: a consent ended), or superseded

**Who may offer on what.** A lender offers only on a dossier version it holds: delivered to it and
not withdrawn since (:func:`warehouse.events.held_row`), and the newest version of that SME it was
delivered (an older one has *expired*: the SME compares offers on the same evidence). One open
offer per lender and version; a second is refused (amend the first). Terms are checked by
:func:`evaluation.credit_cost.check_terms`, and every refusal names the field (:class:`OfferError`).

**Like for like.** Every offer's schedule, total repayable, total cost of credit and APR are
computed here by one method (:func:`evaluation.credit_cost.schedule`, ``evaluation/APR.md``),
whatever the lender says; a revenue-share schedule assumes the dossier's own monthly revenue
(``revenue_12m / 12``).

**The ledger.** Every change appends an :class:`~warehouse.models.OfferEvent`, hash-chained per
offer with the consent ledger's construction (:func:`warehouse.consent.event_hash`), checked by
``dossier verify-ledgers``. **Telling the lender.** An acceptance, a decline, a close or a lapse
appends an ``offer_*`` event to the lender's feed (:func:`warehouse.events.append_notices`), the
offer as it then stood in it; the webhook worker pushes those as ``offer.*`` messages.

>>> STATUSES
('open', 'accepted', 'declined', 'withdrawn', 'lapsed', 'closed')
"""

from __future__ import annotations

import datetime as dt
import json
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from decimal import ROUND_HALF_UP, Decimal
from typing import Any

import pandas as pd
from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from evaluation.credit_cost import OfferTerms, TermsError, check_terms, schedule
from warehouse import consent, events
from warehouse.db import in_chunks
from warehouse.errors import DossierError
from warehouse.models import Delivery, DossierVersion, FeedEvent, Offer, OfferEvent, Sme

STATUSES = ("open", "accepted", "declined", "withdrawn", "lapsed", "closed")
OPEN, ACCEPTED, DECLINED, WITHDRAWN, LAPSED, CLOSED = STATUSES

MAX_VALIDITY_DAYS = 180
"""How far ahead an offer's ``valid_until`` may be."""
MAX_CONDITIONS = 2000
"""The longest ``conditions`` text, in characters."""

TERM_FIELDS = (
    "amount",
    "term_months",
    "nominal_rate",
    "upfront_fee",
    "periodic_fee",
    "profile",
    "revenue_share",
    "repayment_cap",
)
"""What a lender states of its terms (``expected_monthly_revenue`` comes from the dossier)."""

REASON_WORDS = {
    "expired": "its validity date passed",
    "version_withdrawn": "the dossier it was made on was withdrawn (a consent ended)",
    "superseded": "a newer dossier of the SME replaced the one it was made on",
    "another_offer_accepted": "the SME accepted another offer",
}
"""Plain words for each ``status_reason``."""


class OfferError(DossierError):
    """An offer refused or an action on one that cannot be taken; ``field`` names what was wrong and
    ``status`` is the HTTP status the API answers with (404 not yours or unknown, 409 its state
    does not allow it, 422 a value outside what an offer may be)."""

    def __init__(self, field: str, message: str, status: int = 422) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.status = status


@dataclass(frozen=True)
class Posted:
    """What a lender posts (or, with ``None`` for what stays, amends)."""

    dossier_id: str
    currency: str
    amount: Decimal
    term_months: int
    nominal_rate: Decimal
    valid_until: dt.date
    upfront_fee: Decimal = Decimal(0)
    periodic_fee: Decimal = Decimal(0)
    profile: str = "annuity"
    revenue_share: Decimal | None = None
    repayment_cap: Decimal | None = None
    conditions: str = ""


# --- reading ------------------------------------------------------------------------------------


def _text(value: Any) -> str | None:
    return None if value is None else str(value)


DERIVED_FROM_THE_DOSSIER = ("monthly_payment", "total_repayable", "total_cost", "apr")
"""Figures of a revenue-share offer, which follow from the SME's revenue (with its
``expected_monthly_revenue``): a lender is shown them only while it holds the dossier."""


def view(offer: Offer, *, held: bool = True) -> dict[str, Any]:
    """The offer as the API and the feed show it: its terms, the broker's figures (decimal text),
    status and dates (ISO 8601).

    ``held=False`` is the view of a lender that no longer holds the dossier the offer was made on
    (withdrawn: a consent ended, or the SME was erased): what follows from the SME's data is left
    out (``expected_monthly_revenue`` and, for a revenue-share offer, its figures), since a lender
    receives only what an active consent covers."""
    terms, figures = dict(offer.terms), dict(offer.figures)
    if not held:
        terms["expected_monthly_revenue"] = None
        if terms.get("profile") == "revenue_share":
            figures.update(dict.fromkeys(DERIVED_FROM_THE_DOSSIER))

    def instant(at: dt.datetime | None) -> str | None:
        return None if at is None else at.astimezone(dt.UTC).isoformat().replace("+00:00", "Z")

    return {
        "offer_id": offer.offer_id,
        "lender_id": offer.lender_id,
        "sme_id": offer.sme_id,
        "dossier_id": offer.dossier_id,
        "status": offer.status,
        "status_reason": offer.status_reason,
        "currency": offer.currency,
        **{name: terms.get(name) for name in TERM_FIELDS},
        "expected_monthly_revenue": terms.get("expected_monthly_revenue"),
        "conditions": offer.conditions,
        "valid_until": offer.valid_until.isoformat(),
        "monthly_payment": figures.get("monthly_payment"),
        "total_repayable": figures.get("total_repayable"),
        "total_cost": figures.get("total_cost"),
        "apr": figures.get("apr"),
        "revision": offer.revision,
        "created_at": instant(offer.created_at),
        "updated_at": instant(offer.updated_at),
        "decided_at": instant(offer.decided_at),
    }


def offer_terms(offer: Offer) -> OfferTerms:
    """The stored terms as :class:`~evaluation.credit_cost.OfferTerms` (for the full schedule)."""
    t = offer.terms

    def dec(name: str) -> Decimal | None:
        return None if t.get(name) is None else Decimal(t[name])

    return OfferTerms(
        amount=Decimal(t["amount"]),
        term_months=int(t["term_months"]),
        nominal_rate=Decimal(t["nominal_rate"]),
        upfront_fee=Decimal(t["upfront_fee"]),
        periodic_fee=Decimal(t["periodic_fee"]),
        profile=t["profile"],
        revenue_share=dec("revenue_share"),
        repayment_cap=dec("repayment_cap"),
        expected_monthly_revenue=dec("expected_monthly_revenue"),
    )


def get(session: Session, offer_id: str, *, lender_id: str | None = None, sme_id: str | None = None) -> Offer:
    """The offer ``offer_id`` if it is the lender's (or about the SME); else 404 :class:`OfferError`:
    another lender's offer is not found, not forbidden."""
    offer = session.get(Offer, offer_id)
    if (
        offer is None
        or (lender_id is not None and offer.lender_id != lender_id)
        or (sme_id is not None and offer.sme_id != sme_id)
    ):
        raise OfferError("offer_id", f"no offer {offer_id!r}", 404)
    return offer


def held_dossiers(session: Session, lender_id: str, dossier_ids: Iterable[str]) -> set[str]:
    """Which of ``dossier_ids`` the lender still holds (delivered, not withdrawn, not erased)."""
    held: set[str] = set()
    for chunk in in_chunks(dossier_ids):
        newest = (
            select(FeedEvent.dossier_id, func.max(FeedEvent.seq).label("seq"))
            .where(
                FeedEvent.lender_id == lender_id,
                FeedEvent.dossier_id.in_(chunk),
                FeedEvent.kind.in_(events.DOSSIER_KINDS),
            )
            .group_by(FeedEvent.dossier_id)
            .subquery()
        )
        held |= set(
            session.scalars(
                select(FeedEvent.dossier_id)
                .join(
                    newest,
                    (FeedEvent.dossier_id == newest.c.dossier_id) & (FeedEvent.seq == newest.c.seq),
                )
                .where(
                    FeedEvent.lender_id == lender_id,
                    FeedEvent.kind == events.DELIVERED,
                    FeedEvent.dossier_json.is_not(None),
                )
            )
        )
    return held


def lender_views(session: Session, lender_id: str, listed: Iterable[Offer]) -> list[dict[str, Any]]:
    """:func:`view` of each of the lender's offers, as that lender may see it now."""
    listed = list(listed)
    held = held_dossiers(session, lender_id, [o.dossier_id for o in listed])
    return [view(o, held=o.dossier_id in held) for o in listed]


def of_sme(session: Session, sme_id: str, *, status: str | None = None) -> list[Offer]:
    """The SME's offers (``status`` only, when given), lowest APR first, then oldest."""
    query = select(Offer).where(Offer.sme_id == sme_id)
    if status is not None:
        query = query.where(Offer.status == status)
    return list(session.scalars(query.order_by(Offer.apr, Offer.created_at, Offer.offer_id)))


def lenders_with_open(session: Session, sme_id: str) -> list[str]:
    """The lenders that have an open offer on the SME (whose feeds to refresh before it acts)."""
    return list(
        session.scalars(
            select(Offer.lender_id).where(Offer.sme_id == sme_id, Offer.status == OPEN).distinct()
        )
    )


# --- the ledger ---------------------------------------------------------------------------------


def _record(
    session: Session, offer_id: str, event_type: str, at: dt.datetime, actor: str, details: dict[str, Any]
) -> OfferEvent:
    """Append one event to the offer's chain (the offer's row is the lock: callers change it first)."""
    event = consent.append_chained(session, OfferEvent, "offer_id", offer_id, event_type, at, actor, details)
    if event is not None:
        return event
    raise OfferError("offer_id", f"offer {offer_id}: too many simultaneous changes; try again", 409)


def history(session: Session, offer_id: str) -> list[OfferEvent]:
    """The offer's ledger, oldest first."""
    return list(
        session.scalars(
            select(OfferEvent).where(OfferEvent.offer_id == offer_id).order_by(OfferEvent.sequence)
        )
    )


# --- telling the lender ---------------------------------------------------------------------------

NOTICE_KIND = {
    ACCEPTED: events.OFFER_ACCEPTED,
    DECLINED: events.OFFER_DECLINED,
    CLOSED: events.OFFER_CLOSED,
    LAPSED: events.OFFER_LAPSED,
}


def _notice(offer: Offer, at: dt.datetime, *, held: bool = True) -> dict[str, Any]:
    return {
        "lender_id": offer.lender_id,
        "kind": NOTICE_KIND[offer.status],
        "dossier_version_id": offer.dossier_version_id,
        "dossier_id": offer.dossier_id,
        "sme_id": offer.sme_id,
        "pull_id": f"offer:{offer.offer_id}",
        "occurred_at": at,
        "reason": offer.status_reason,
        "offer_json": json.dumps(view(offer, held=held)),
    }


def _decide(
    session: Session,
    offer: Offer,
    status: str,
    at: dt.datetime,
    actor: str,
    *,
    reason: str | None = None,
    details: Mapping[str, Any] | None = None,
    held: bool = True,
) -> dict[str, Any] | None:
    """Move an open offer to ``status`` with its ledger event; the feed notice for its lender back
    (None for a withdrawal: the lender did it)."""
    offer.status = status
    offer.status_reason = reason
    offer.decided_at = at
    offer.updated_at = at
    session.flush()
    _record(session, offer.offer_id, status, at, actor, {"reason": reason, **(details or {})})
    return None if status == WITHDRAWN else _notice(offer, at, held=held)


def _lock_sme(session: Session, sme_id: str) -> None:
    """Hold the SME's row until the transaction ends: one decision on its offers at a time (on
    SQLite, by starting the write transaction)."""
    if session.get_bind().dialect.name == "sqlite":
        session.execute(update(Sme).where(Sme.sme_id == sme_id).values(sme_id=Sme.sme_id))
    else:
        session.scalars(select(Sme).where(Sme.sme_id == sme_id).with_for_update()).first()


# --- lapsing --------------------------------------------------------------------------------------


def lapse_withdrawn(
    session: Session, lender_id: str, dossier_ids: Iterable[str], at: dt.datetime
) -> list[dict[str, Any]]:
    """Lapse the lender's open offers on versions just withdrawn from it; their feed notices back
    (for :func:`warehouse.events.append`, which appends them after the tombstones)."""
    wanted = sorted(set(dossier_ids))
    notices = []
    for offer in session.scalars(
        select(Offer)
        .where(Offer.lender_id == lender_id, Offer.status == OPEN, Offer.dossier_id.in_(wanted))
        .order_by(Offer.created_at, Offer.offer_id)
    ):
        notice = _decide(session, offer, LAPSED, at, "broker", reason="version_withdrawn", held=False)
        if notice is not None:
            notices.append(notice)
    return notices


def lapse_due(
    session: Session, at: dt.datetime, *, lender_id: str | None = None, sme_id: str | None = None
) -> int:
    """Lapse every open offer (of ``lender_id`` or about ``sme_id``, when given) whose
    ``valid_until`` day has passed at ``at`` (an offer is valid through that whole UTC day), and
    tell each lender. Not committed; returns how many lapsed."""
    query = select(Offer).where(Offer.status == OPEN, Offer.valid_until < at.astimezone(dt.UTC).date())
    if lender_id is not None:
        query = query.where(Offer.lender_id == lender_id)
    if sme_id is not None:
        query = query.where(Offer.sme_id == sme_id)
    notices = [
        n
        for offer in session.scalars(query.order_by(Offer.lender_id, Offer.created_at, Offer.offer_id))
        if (n := _decide(session, offer, LAPSED, at, "broker", reason="expired")) is not None
    ]
    events.append_notices(session, notices)
    return len(notices)


# --- the lender's side ------------------------------------------------------------------------------


def _last_event(session: Session, lender_id: str, dossier_id: str) -> FeedEvent | None:
    return session.scalars(
        select(FeedEvent)
        .where(
            FeedEvent.lender_id == lender_id,
            FeedEvent.dossier_id == dossier_id,
            FeedEvent.kind.in_((events.DELIVERED, events.WITHDRAWN)),
        )
        .order_by(FeedEvent.seq.desc())
        .limit(1)
    ).first()


def _held(session: Session, lender_id: str, dossier_id: str) -> tuple[DossierVersion, dict[str, Any]]:
    """The version and its row as delivered, if the lender may offer on it (else :class:`OfferError`)."""
    last = _last_event(session, lender_id, dossier_id)
    if last is None:
        raise OfferError("dossier_id", f"you were not delivered a dossier {dossier_id!r}", 404)
    if last.kind == events.WITHDRAWN:
        raise OfferError(
            "dossier_id",
            f"dossier {dossier_id!r} was withdrawn from you ({last.reason}); it cannot be priced",
            409,
        )
    row = events.held_row(session, lender_id, dossier_id)
    version = session.get(DossierVersion, last.dossier_version_id)
    if row is None or version is None:  # erased
        raise OfferError("dossier_id", f"dossier {dossier_id!r} is no longer held by you", 409)
    newer = session.scalars(
        select(DossierVersion.dossier_id)
        .join(Delivery, Delivery.dossier_version_id == DossierVersion.id)
        .where(
            Delivery.lender_id == lender_id,
            DossierVersion.sme_id == version.sme_id,
            DossierVersion.feed_seq > version.feed_seq,
        )
        .order_by(DossierVersion.feed_seq.desc())
        .limit(1)
    ).first()
    if newer is not None:
        raise OfferError(
            "dossier_id",
            f"dossier {dossier_id!r} has expired: you were delivered a newer version {newer!r}",
            409,
        )
    return version, row


def _money(value: Any) -> str | None:
    return None if value is None else str(value)


def _priced(posted: Posted, row: Mapping[str, Any], today: dt.date) -> tuple[dict[str, Any], dict[str, Any]]:
    """The checked terms and the figures of ``posted`` on the dossier ``row`` (or :class:`OfferError`)."""
    if posted.valid_until < today:
        raise OfferError("valid_until", f"must be today ({today}) or later, got {posted.valid_until}")
    if posted.valid_until > today + dt.timedelta(days=MAX_VALIDITY_DAYS):
        raise OfferError(
            "valid_until", f"must be at most {MAX_VALIDITY_DAYS} days ahead, got {posted.valid_until}"
        )
    currency = str(row.get("currency") or "")
    if currency and posted.currency != currency:
        raise OfferError("currency", f"must be the dossier's currency {currency}, got {posted.currency}")
    if len(posted.conditions) > MAX_CONDITIONS:
        raise OfferError("conditions", f"must be at most {MAX_CONDITIONS} characters")
    revenue = None
    if posted.profile == "revenue_share":
        revenue_12m = row.get("revenue_12m")
        if not isinstance(revenue_12m, int | float) or not revenue_12m == revenue_12m or revenue_12m <= 0:
            raise OfferError(
                "profile", "revenue_share needs the dossier's revenue_12m, and this dossier has none"
            )
        revenue = (Decimal(str(revenue_12m)) / 12).quantize(Decimal("0.01"), ROUND_HALF_UP)
    terms = OfferTerms(
        amount=posted.amount,
        term_months=posted.term_months,
        nominal_rate=posted.nominal_rate,
        upfront_fee=posted.upfront_fee,
        periodic_fee=posted.periodic_fee,
        profile=posted.profile,
        revenue_share=posted.revenue_share,
        repayment_cap=posted.repayment_cap,
        expected_monthly_revenue=revenue,
    )
    try:
        checked = check_terms(terms)
        computed = schedule(checked)
    except TermsError as error:
        if error.field == "expected_monthly_revenue":  # the dossier's, not a term the lender states
            raise OfferError(
                "revenue_share", f"times the dossier's monthly revenue ({revenue}) rounds to a zero payment"
            ) from None
        raise OfferError(error.field, str(error).split(": ", 1)[1]) from None
    stated = {
        "amount": _money(checked.amount),
        "term_months": checked.term_months,
        "nominal_rate": _money(checked.nominal_rate.normalize()),
        "upfront_fee": _money(checked.upfront_fee),
        "periodic_fee": _money(checked.periodic_fee),
        "profile": checked.profile,
        "revenue_share": _money(checked.revenue_share),
        "repayment_cap": _money(checked.repayment_cap),
        "expected_monthly_revenue": _money(checked.expected_monthly_revenue),
    }
    figures = {
        "monthly_payment": str(computed.monthly_payment),
        "total_repayable": str(computed.total_repayable),
        "total_cost": str(computed.total_cost),
        "apr": str(computed.apr),
        "instalments": len(computed.instalments),
    }
    return stated, figures


def _stated_by_lender(terms: Mapping[str, Any]) -> dict[str, Any]:
    """The terms as the lender stated them, for the ledger (nothing there comes from the SME's data)."""
    return {k: v for k, v in terms.items() if k != "expected_monthly_revenue"}


def _basis(row: Mapping[str, Any]) -> dict[str, Any]:
    def number(name: str) -> float | None:
        value = row.get(name)
        return float(value) if isinstance(value, int | float) and value == value else None

    return {
        "as_of_date": row.get("as_of_date"),
        "grade": row.get("grade"),
        "pd_12m": number("pd_12m"),
        "credit_limit": number("credit_limit"),
        "indicative_rate": number("indicative_rate"),
        "revenue_12m": number("revenue_12m"),
        "model_version": row.get("model_version"),
    }


def post(session: Session, lender_id: str, posted: Posted, *, at: dt.datetime) -> Offer:
    """Record the lender's offer on a dossier version it holds (see the module docstring for what
    is refused). Not committed. The caller refreshes the lender's feed first, so a version whose
    consent ended is seen withdrawn."""
    version, row = _held(session, lender_id, posted.dossier_id)
    _lock_sme(session, version.sme_id)
    accepted = session.scalars(
        select(Offer.offer_id).where(Offer.sme_id == version.sme_id, Offer.status == ACCEPTED).limit(1)
    ).first()
    if accepted is not None:
        raise OfferError("dossier_id", "the SME has already accepted an offer; it takes no more", 409)
    mine = session.scalars(
        select(Offer.offer_id).where(
            Offer.lender_id == lender_id, Offer.dossier_id == posted.dossier_id, Offer.status == OPEN
        )
    ).first()
    if mine is not None:
        raise OfferError(
            "dossier_id",
            f"you have an open offer {mine} on this version: amend it (PATCH /v1/offers/{mine})",
            409,
        )
    stated, figures = _priced(posted, row, at.astimezone(dt.UTC).date())
    offer = Offer(
        offer_id="off_" + uuid.uuid4().hex[:20],
        lender_id=lender_id,
        sme_id=version.sme_id,
        dossier_id=posted.dossier_id,
        dossier_version_id=version.id,
        status=OPEN,
        status_reason=None,
        currency=posted.currency,
        amount=float(posted.amount),
        apr=float(figures["apr"]),
        terms=stated,
        figures=figures,
        basis=_basis(row),
        conditions=posted.conditions,
        valid_until=posted.valid_until,
        revision=1,
        created_at=at,
        updated_at=at,
        decided_at=None,
    )
    session.add(offer)
    session.flush()
    _record(session, offer.offer_id, "posted", at, lender_id, {"terms": _stated_by_lender(stated)})
    return offer


def amend(
    session: Session, lender_id: str, offer_id: str, changes: Mapping[str, Any], *, at: dt.datetime
) -> Offer:
    """Change an open offer's terms, validity or conditions (``changes`` holds only what changes);
    the figures are computed again and ``revision`` goes up. Not committed."""
    offer = get(session, offer_id, lender_id=lender_id)
    _lock_sme(session, offer.sme_id)
    session.refresh(offer)
    if offer.status != OPEN:
        raise OfferError(
            "offer_id", f"offer {offer_id} is {offer.status}; only an open offer can be amended", 409
        )
    row = events.held_row(session, lender_id, offer.dossier_id) or {}
    current = offer_terms(offer)
    unknown = sorted(set(changes) - {*TERM_FIELDS, "valid_until", "conditions"})
    if unknown:
        raise OfferError(unknown[0], "cannot be changed")
    merged = Posted(
        dossier_id=offer.dossier_id,
        currency=offer.currency,
        amount=changes.get("amount", current.amount),
        term_months=changes.get("term_months", current.term_months),
        nominal_rate=changes.get("nominal_rate", current.nominal_rate),
        valid_until=changes.get("valid_until", offer.valid_until),
        upfront_fee=changes.get("upfront_fee", current.upfront_fee),
        periodic_fee=changes.get("periodic_fee", current.periodic_fee),
        profile=changes.get("profile", current.profile),
        revenue_share=changes.get("revenue_share", current.revenue_share),
        repayment_cap=changes.get("repayment_cap", current.repayment_cap),
        conditions=changes.get("conditions", offer.conditions),
    )
    stated, figures = _priced(merged, {**offer.basis, "currency": offer.currency, **row}, at.date())
    before = {
        "terms": offer.terms,
        "valid_until": offer.valid_until.isoformat(),
        "conditions": offer.conditions,
    }
    offer.terms, offer.figures = stated, figures
    offer.amount, offer.apr = float(merged.amount), float(figures["apr"])
    offer.valid_until, offer.conditions = merged.valid_until, merged.conditions
    offer.revision += 1
    offer.updated_at = at
    session.flush()
    _record(
        session,
        offer.offer_id,
        "amended",
        at,
        lender_id,
        {
            "before": before,
            "terms": stated,
            "figures": figures,
            "valid_until": merged.valid_until.isoformat(),
        },
    )
    return offer


def withdraw(session: Session, lender_id: str, offer_id: str, *, at: dt.datetime) -> Offer:
    """The lender takes its open offer back (again: nothing changes). Not committed."""
    offer = get(session, offer_id, lender_id=lender_id)
    _lock_sme(session, offer.sme_id)
    session.refresh(offer)
    if offer.status == WITHDRAWN:
        return offer
    if offer.status != OPEN:
        raise OfferError(
            "offer_id", f"offer {offer_id} is {offer.status}; only an open offer can be withdrawn", 409
        )
    _decide(session, offer, WITHDRAWN, at, lender_id)
    return offer


# --- the SME's side -------------------------------------------------------------------------------


def _why_not(offer: Offer) -> str:
    words = REASON_WORDS.get(offer.status_reason or "", "")
    if offer.status == LAPSED:
        return f"it lapsed: {words or offer.status_reason}"
    if offer.status == WITHDRAWN:
        return "the lender withdrew it"
    if offer.status == CLOSED:
        return f"it was closed: {words or offer.status_reason}"
    return f"it was {offer.status}"


def accept(
    session: Session, sme_id: str, offer_id: str, *, at: dt.datetime, details: Mapping[str, Any] | None = None
) -> tuple[Offer, bool]:
    """The SME accepts one open offer: the chosen lender and every other lender with an open offer
    on it are told (``offer_accepted``, ``offer_closed``), those offers closed. ``(offer, changed)``
    back: accepting the accepted offer again changes nothing. Not committed; the caller refreshes
    the lenders' feeds first (a withdrawn version's offers lapse then)."""
    _lock_sme(session, sme_id)
    lapse_due(session, at, sme_id=sme_id)
    offer = get(session, offer_id, sme_id=sme_id)
    session.refresh(offer)
    if offer.status == ACCEPTED:
        return offer, False
    if offer.status != OPEN:
        raise OfferError("offer_id", f"offer {offer_id} cannot be accepted: {_why_not(offer)}", 409)
    other = session.scalars(
        select(Offer).where(Offer.sme_id == sme_id, Offer.status == ACCEPTED).limit(1)
    ).first()
    if other is not None:
        raise OfferError(
            "offer_id", f"you already accepted offer {other.offer_id} from {other.lender_id}", 409
        )
    notices = [_decide(session, offer, ACCEPTED, at, "sme", details=details)]
    for rest in session.scalars(
        select(Offer)
        .where(Offer.sme_id == sme_id, Offer.status == OPEN, Offer.offer_id != offer_id)
        .order_by(Offer.created_at, Offer.offer_id)
    ):
        notices.append(
            _decide(
                session,
                rest,
                CLOSED,
                at,
                "broker",
                reason="another_offer_accepted",
                details={"accepted": offer_id},
            )
        )
    events.append_notices(session, [n for n in notices if n is not None])
    return offer, True


def decline(
    session: Session, sme_id: str, offer_id: str, *, at: dt.datetime, details: Mapping[str, Any] | None = None
) -> tuple[Offer, bool]:
    """The SME declines one open offer; its lender is told (``offer_declined``). Declining it again
    changes nothing. Not committed."""
    _lock_sme(session, sme_id)
    lapse_due(session, at, sme_id=sme_id)
    offer = get(session, offer_id, sme_id=sme_id)
    session.refresh(offer)
    if offer.status == DECLINED:
        return offer, False
    if offer.status != OPEN:
        raise OfferError("offer_id", f"offer {offer_id} cannot be declined: {_why_not(offer)}", 409)
    notice = _decide(session, offer, DECLINED, at, "sme", details=details)
    events.append_notices(session, [notice] if notice else [])
    return offer, True


# --- erasure ------------------------------------------------------------------------------------------


def erase(session: Session, sme_id: str) -> int:
    """Remove what the SME's offers hold of its data (the dossier values they were priced against,
    the revenue a revenue-share schedule assumed); the offers, their status and their ledger stay
    (the facts). Open offers lapse when their lenders' feeds withdraw the erased versions. Returns
    the offers changed."""
    changed = 0
    for offer in session.scalars(select(Offer).where(Offer.sme_id == sme_id)):
        offer.basis = {}
        offer.terms = {**offer.terms, "expected_monthly_revenue": None}
        if offer.terms.get("profile") == "revenue_share":
            offer.figures = {**offer.figures, **dict.fromkeys(DERIVED_FROM_THE_DOSSIER)}
        changed += 1
    session.flush()
    return changed


# --- what the market shows --------------------------------------------------------------------------


def market_frames(session: Session) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The two frames :func:`evaluation.market.market_stats` reads: every offer posted (not those
    the lender withdrew) and every dossier version delivered to at least one lender, with its first
    delivery and the broker's indicative rate (as the offers on it recorded it)."""
    offers = pd.DataFrame(
        session.execute(
            select(
                Offer.dossier_id, Offer.sme_id, Offer.lender_id, Offer.apr, Offer.created_at, Offer.basis
            ).where(Offer.status != WITHDRAWN)
        ).all(),
        columns=["dossier_id", "sme_id", "lender_id", "apr", "created_at", "basis"],
    )
    delivered = pd.DataFrame(
        session.execute(
            select(
                DossierVersion.dossier_id,
                DossierVersion.sme_id,
                DossierVersion.grade,
                func.min(Delivery.delivered_at),
            )
            .join(Delivery, Delivery.dossier_version_id == DossierVersion.id)
            .group_by(DossierVersion.dossier_id, DossierVersion.sme_id, DossierVersion.grade)
        ).all(),
        columns=["dossier_id", "sme_id", "grade", "delivered_at"],
    )
    rates = {
        d: b.get("indicative_rate") for d, b in zip(offers["dossier_id"], offers["basis"], strict=True) if b
    }
    delivered["indicative_rate"] = pd.to_numeric(delivered["dossier_id"].map(rates), errors="coerce")
    delivered["delivered_at"] = pd.to_datetime(delivered["delivered_at"], utc=True)
    offers["created_at"] = pd.to_datetime(offers["created_at"], utc=True)
    offers["apr"] = offers["apr"].astype(float)
    return offers.drop(columns="basis"), delivered
