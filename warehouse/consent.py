"""Consent is law: the one module that decides what may be pulled and what a lender may receive.

A consent's **scope** is: SME, sources, recipients (lenders), purpose (:data:`PURPOSES`), history
window in months, and the interval ``[granted_at, expires_at)``; it is *active* at an instant inside
that interval while its status is ``active`` (a revoked consent is never active again) and it has
been **reconfirmed** within :data:`RECONFIRM_AFTER` (90 days, the UK open-banking reconfirmation
rule): ``reconfirm_by`` is 90 days after the grant or the SME's last reconfirmation
(:func:`reconfirm`), and from that instant the consent stops exactly as at its expiry - no pull,
no delivery, and every version delivered under it is withdrawn at the lender's next pull (reason
``consent_expired``). A lapsed consent cannot be reconfirmed; the SME grants again.

The rule, stated once and enforced here:

    A lender L may hold a dossier version D at instant t only if some consent C of D's SME is
    active at t, names L, states the purpose L receives it for, covers every source in D's
    ``sources_used``, and allows at least D's history window; D was computed only from those
    sources and months (evaluation runs per :class:`Scope`, and every column whose sources are
    not all in ``sources_used`` is empty: :func:`warehouse.dossier_schema.blank_outside_sources`).

Everything else calls this module:

* **pulls** - :func:`pull_window`: per SME and source, the longest window that one consent active
  both at the as-of instant and now allows; ``None`` means no request at all. Ingest re-reads it
  for every SME just before that SME's requests, so a revocation stops the next request;
* **evaluation** - :func:`evaluation_scopes`: the distinct scopes an SME's dossiers are computed
  under, one per distinct consent scope (lenders with the same scope share a version);
* **publish and delivery** - :class:`Entitlement` (:meth:`Entitlement.allows`), built with
  :func:`entitlement` for the instant of a publish or a pull (:func:`any_recipients` is its
  any-lender test for a whole publish at once); and :func:`why_not` explains a withdrawal.

Every change appends a :class:`~warehouse.models.ConsentEvent` whose hash covers the previous one,
so the history cannot be rewritten unnoticed (:func:`verify_chain`); the ledger keeps the facts of
an erasure, not the data.

>>> Scope(frozenset({"tax", "accounting"}), 36).key
'accounting+tax@36m'
>>> Scope.parse("accounting+tax@36m") == Scope(frozenset({"accounting", "tax"}), 36)
True
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from sqlalchemy import Text, cast, distinct, func, insert, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from warehouse.canonical import SOURCES
from warehouse.db import in_chunks, select_frame
from warehouse.errors import DossierError
from warehouse.models import Consent, ConsentEvent, Lender, Sme, utcnow

if TYPE_CHECKING:
    import numpy as np
    import pandas as pd

    from warehouse.storage import Store

GENESIS_HASH = "0" * 64

PURPOSES: dict[str, str] = {
    "credit_decision": "deciding on a credit application: whether to lend, how much and at what price",
    "facility_monitoring": "monitoring a credit facility the SME already has with the lender",
}
"""The purposes a consent may state, with the plain words an SME is shown for each.

A lender's subscription declares one; a dossier reaches the lender only under a consent that
states the same purpose.
"""

DEFAULT_PURPOSE = "credit_decision"
RECONFIRM_AFTER = dt.timedelta(days=90)
"""Access not reconfirmed for this long stops (UK open banking: reconfirm every 90 days)."""
RECONFIRM_NOTICE = dt.timedelta(days=14)
"""From this long before ``reconfirm_by`` the SME is offered a one-click reconfirmation."""
MAX_HISTORY_MONTHS = 120
"""Longest history window a consent may allow (ten years of books)."""


class ConsentError(DossierError, PermissionError):
    """An action the consents do not allow, or a consent request that is not valid (one line)."""


# --- scopes and terms -----------------------------------------------------------------------------


@dataclass(frozen=True, order=True)
class Scope:
    """What one dossier version is computed from: a set of sources and a history window in months."""

    sources: frozenset[str]
    months: int

    @property
    def key(self) -> str:
        """``<source>+<source>@<months>m``, sources sorted: the scope's part of a ``dossier_id``."""
        return f"{'+'.join(sorted(self.sources))}@{self.months}m"

    @classmethod
    def parse(cls, key: str) -> Scope:
        """The scope a :attr:`key` names."""
        sources, _, months = key.rpartition("@")
        return cls(frozenset(sources.split("+")) if sources else frozenset(), int(months.removesuffix("m")))


@dataclass(frozen=True)
class Terms:
    """One consent as the checks read it (plain values, no ORM state)."""

    consent_id: str
    sme_id: str
    sources: frozenset[str]
    recipients: frozenset[str]
    purpose: str
    history_months: int
    granted_at: dt.datetime
    expires_at: dt.datetime
    status: str
    revoked_at: dt.datetime | None = None
    reconfirm_by: dt.datetime | None = None
    """When access stops unless reconfirmed (None: :data:`RECONFIRM_AFTER` after ``granted_at``)."""

    @property
    def scope(self) -> Scope:
        return Scope(self.sources, self.history_months)

    @property
    def lapses_at(self) -> dt.datetime:
        """When access stops unless reconfirmed."""
        return self.reconfirm_by or self.granted_at + RECONFIRM_AFTER

    @property
    def ends_at(self) -> dt.datetime:
        """The end of the consent's active interval: its expiry, or its lapse when that comes first."""
        return min(self.expires_at, self.lapses_at)

    def active_at(self, at: dt.datetime) -> bool:
        return self.status == "active" and self.granted_at <= at < self.ends_at

    def allows(self, lender_id: str, purpose: str, sources_used: Iterable[str], months: int) -> bool:
        """Whether these terms let ``lender_id`` hold, for ``purpose``, values from these sources and months."""
        return (
            lender_id in self.recipients
            and purpose == self.purpose
            and set(sources_used) <= self.sources
            and months <= self.history_months
        )

    @classmethod
    def of_row(cls, row: Any) -> Terms:
        """Terms from a row of :data:`TERMS_COLUMNS`."""
        consent_id, sme_id, sources, recipients, *rest = row
        return cls(consent_id, sme_id, frozenset(sources), frozenset(recipients), *rest)

    @classmethod
    def of(cls, consent: Consent) -> Terms:
        return cls(
            consent.consent_id,
            consent.sme_id,
            frozenset(consent.sources),
            frozenset(consent.recipients),
            consent.purpose,
            consent.history_months,
            consent.granted_at,
            consent.expires_at,
            consent.status,
            consent.revoked_at,
            consent.reconfirm_by,
        )


def terms_of(
    session: Session, sme_ids: Iterable[str], *, active_at: Iterable[dt.datetime] = ()
) -> dict[str, list[Terms]]:
    """The consents of ``sme_ids`` (every SME listed gets a list), optionally only those active at
    **every** instant of ``active_at`` - the same consent at each moment, never one per moment.

    One indexed query per chunk of SME ids (:func:`warehouse.db.in_chunks`).
    """
    instants = list(active_at)
    query = select(*TERMS_COLUMNS)  # plain rows, not ORM objects: read for every SME of a publish
    if instants:
        query = query.where(*_active_throughout(instants))
    by_sme: dict[str, list[Terms]] = defaultdict(list)
    wanted = list(sme_ids)
    for sme_id in wanted:
        by_sme[sme_id] = []
    for chunk in in_chunks(wanted):
        for row in session.execute(query.where(Consent.sme_id.in_(chunk)).order_by(Consent.consent_id)):
            by_sme[row.sme_id].append(Terms.of_row(row))
    return dict(by_sme)


TERMS_COLUMNS = (
    Consent.consent_id,
    Consent.sme_id,
    Consent.sources,
    Consent.recipients,
    Consent.purpose,
    Consent.history_months,
    Consent.granted_at,
    Consent.expires_at,
    Consent.status,
    Consent.revoked_at,
    Consent.reconfirm_by,
)
"""The consent columns :class:`Terms` holds, in its field order."""


def _active_throughout(instants: list[dt.datetime]) -> tuple[Any, ...]:
    """The SQL condition of a consent active at every instant of ``instants`` (:meth:`Terms.active_at`
    at the earliest and the latest: active, granted by then, neither expired nor lapsed)."""
    return (
        Consent.status == "active",
        Consent.granted_at <= min(instants),
        Consent.expires_at > max(instants),
        Consent.reconfirm_by > max(instants),
    )


def as_of_instant(as_of: dt.date) -> dt.datetime:
    """The instant consents are checked at for an as-of date: the start of that day, UTC.

    >>> as_of_instant(dt.date(2026, 11, 1)).isoformat()
    '2026-11-01T00:00:00+00:00'
    """
    return dt.datetime.combine(as_of, dt.time(), tzinfo=dt.UTC)


def consenting_smes(session: Session, *, at: dt.datetime) -> int:
    """How many SMEs hold at least one consent active at ``at`` (what a date's shards are sized by).

    One aggregate query, whatever the number of SMEs.
    """
    query = select(func.count(distinct(Consent.sme_id))).where(*_active_throughout([at]))
    return int(session.scalar(query) or 0)


# --- pulls ----------------------------------------------------------------------------------------


def pull_windows(
    session: Session, source: str, sme_ids: Iterable[str], *, then: dt.datetime, now: dt.datetime
) -> dict[str, int]:
    """Per SME of ``sme_ids``: the longest history window, in months, that **one** consent covering
    ``source`` and active both at ``then`` (the as-of instant) and at ``now`` allows.

    SMEs without such a consent are absent: nothing may be requested for them.
    """
    windows: dict[str, int] = {}
    for sme_id, terms in terms_of(session, sme_ids, active_at=(then, now)).items():
        months = [t.history_months for t in terms if source in t.sources]
        if months:
            windows[sme_id] = max(months)
    return windows


def pull_window(
    session: Session, sme_id: str, source: str, *, then: dt.datetime, now: dt.datetime
) -> int | None:
    """:func:`pull_windows` for one SME: the months that may be pulled now, or None (no request)."""
    return pull_windows(session, source, [sme_id], then=then, now=now).get(sme_id)


def require_source(session: Session, sme_id: str, source: str, *, then: dt.datetime, now: dt.datetime) -> int:
    """:func:`pull_window`, raising :class:`ConsentError` when nothing may be pulled."""
    months = pull_window(session, sme_id, source, then=then, now=now)
    if months is None:
        raise ConsentError(
            f"{sme_id}: no consent active at {then:%Y-%m-%d} and now covers the {source} source"
        )
    return months


# --- evaluation -----------------------------------------------------------------------------------


def evaluation_scopes(
    session: Session, sme_ids: Iterable[str], *, then: dt.datetime, now: dt.datetime
) -> dict[str, dict[Scope, set[tuple[str, str]]]]:
    """Per SME: each distinct scope its dossiers are to be computed under, and the (lender, purpose)
    pairs whose consents have it, from the consents active both at ``then`` (the as-of instant)
    and ``now``. SMEs without such a consent are absent (no dossier).

    Every consent's own scope gives a version (lenders with the same scope share it): a dossier is
    computed under one consent's scope, so every value it holds is covered by that one consent
    (sources and months together); scopes of different consents are never merged, and a lender
    named by several consents still holds a covered version when one of them ends.
    """
    scopes: dict[str, dict[Scope, set[tuple[str, str]]]] = {}
    for sme_id, terms in terms_of(session, sme_ids, active_at=(then, now)).items():
        by_scope: dict[Scope, set[tuple[str, str]]] = defaultdict(set)
        for term in terms:
            by_scope[term.scope].update((lender, term.purpose) for lender in term.recipients)
        if by_scope:
            scopes[sme_id] = dict(by_scope)
    return scopes


SCOPE_COLUMNS = ("sme_id", "scope", "history_months", "sources")
"""Columns of :func:`scope_frame`."""


def scope_frame(
    session: Session, sme_ids: Iterable[str], *, then: dt.datetime, now: dt.datetime
) -> pd.DataFrame:
    """:func:`evaluation_scopes` as one frame, loaded in bulk: one row per SME and distinct scope
    (``sme_id``, ``scope`` key, ``history_months``, ``sources`` as a sorted tuple), sorted by SME and
    scope key. The same consents count (active both at ``then`` and ``now``); only the loading
    differs: one query per chunk of SME ids selecting plain columns, the ``sources`` lists read as
    their JSON text and decoded once per distinct text rather than once per consent.
    """
    import pandas as pd

    query = select(
        Consent.sme_id, cast(Consent.sources, Text).label("sources_text"), Consent.history_months
    ).where(*_active_throughout([then, now]))
    found = select_frame(
        session, query, ["sme_id", "sources_text", "history_months"], where_in=(Consent.sme_id, sme_ids)
    )
    found = found.drop_duplicates(ignore_index=True)
    if found.empty:
        return pd.DataFrame(
            {
                "sme_id": pd.Series(dtype=object),
                "scope": pd.Series(dtype=object),
                "history_months": pd.Series(dtype="int64"),
                "sources": pd.Series(dtype=object),
            }
        )
    decoded = {text: tuple(sorted(set(json.loads(text)))) for text in found["sources_text"].unique()}
    joined = {text: "+".join(sources) for text, sources in decoded.items()}
    found = found.assign(
        sources=found["sources_text"].map(decoded),
        scope=found["sources_text"].map(joined) + "@" + found["history_months"].astype(str) + "m",
        history_months=found["history_months"].astype("int64"),
    )
    found = found.drop_duplicates(["sme_id", "scope"]).sort_values(["sme_id", "scope"], ignore_index=True)
    return found[list(SCOPE_COLUMNS)]


# --- delivery -------------------------------------------------------------------------------------


@dataclass
class Entitlement:
    """The consents of some SMEs active at one instant: what may be delivered at that instant."""

    at: dt.datetime
    terms: dict[str, list[Terms]]

    def allows(
        self, sme_id: str, lender_id: str, purpose: str, sources_used: Iterable[str], months: int
    ) -> bool:
        """The rule: some consent of ``sme_id`` active at :attr:`at` names the lender, states the
        purpose, covers every source used and allows ``months`` of history."""
        used = list(sources_used)
        return any(t.allows(lender_id, purpose, used, months) for t in self.terms.get(sme_id, []))

    def any_recipient(self, sme_id: str, sources_used: Iterable[str], months: int) -> bool:
        """Whether at least one lender may receive such a dossier (for whatever purpose its consent states)."""
        used = set(sources_used)
        return any(used <= t.sources and months <= t.history_months for t in self.terms.get(sme_id, []))


def any_recipients(session: Session, dossiers: pd.DataFrame, *, at: dt.datetime) -> np.ndarray:
    """:meth:`Entitlement.any_recipient` for every row of ``dossiers`` (``sme_id``,
    ``sources_used``, ``history_months``) at once: whether some consent of the row's SME active
    at ``at`` covers every source it used and allows its window. A boolean array in row order.

    The same consents count (the SQL of :func:`entitlement`), loaded in bulk as :func:`scope_frame`
    loads them; the subset test is made once per distinct pair of used sources and consent
    sources, not once per row and consent.
    """
    import numpy as np
    import pandas as pd

    if at.tzinfo is None:
        raise ValueError(f"naive datetime {at!r}: consent is checked at UTC instants")
    allowed = np.zeros(len(dossiers), dtype=bool)
    if dossiers.empty:
        return allowed
    rows = pd.DataFrame(
        {
            "row": np.arange(len(dossiers)),
            "sme_id": dossiers["sme_id"].to_numpy(dtype=object),
            "used": dossiers["sources_used"].map(tuple).to_numpy(dtype=object),
            "months": dossiers["history_months"].to_numpy(dtype="int64"),
        }
    )
    scopes = scope_frame(session, rows["sme_id"].unique(), then=at, now=at)
    paired = rows.merge(scopes[["sme_id", "sources", "history_months"]], on="sme_id")
    if paired.empty:
        return allowed
    used_codes, used_values = pd.factorize(paired["used"])
    source_codes, source_values = pd.factorize(paired["sources"])
    pairs = np.unique(np.stack([used_codes, source_codes], axis=1), axis=0)
    covers = np.zeros((len(used_values), len(source_values)), dtype=bool)
    for used, sources in pairs:
        covers[used, sources] = set(used_values[used]) <= set(source_values[sources])
    ok = covers[used_codes, source_codes] & (
        paired["months"].to_numpy() <= paired["history_months"].to_numpy(dtype="int64")
    )
    allowed[paired["row"].to_numpy()[ok]] = True
    return allowed


def entitlement(session: Session, sme_ids: Iterable[str], *, at: dt.datetime) -> Entitlement:
    """The :class:`Entitlement` of ``sme_ids`` at ``at`` (consents active at that instant)."""
    if at.tzinfo is None:
        raise ValueError(f"naive datetime {at!r}: consent is checked at UTC instants")
    return Entitlement(at, terms_of(session, sme_ids, active_at=(at,)))


def why_not(
    consents: Iterable[Terms],
    lender_id: str,
    purpose: str,
    sources_used: Iterable[str],
    months: int,
    at: dt.datetime,
) -> tuple[str, dt.datetime]:
    """Explain (not decide) why ``lender_id`` lost a dossier: the reason and when its cover ended.

    Among the SME's consents whose terms would allow the dossier, the one that ended last gives the
    answer (revoked: its ``revoked_at``; expired, or lapsed for want of reconfirmation: the end of its
    active interval). When none would, the consents were narrowed (or never allowed this purpose)
    and ``at`` stands in.
    """
    used = list(sources_used)
    covering = [t for t in consents if t.allows(lender_id, purpose, used, months)]
    endings = [("consent_revoked", t.revoked_at) for t in covering if t.status == "revoked" and t.revoked_at]
    endings += [("consent_expired", t.ends_at) for t in covering if t.status != "revoked" and t.ends_at <= at]
    if not endings:
        return "consent_no_longer_covers", at
    return max(endings, key=lambda ending: ending[1])


# --- the ledger -----------------------------------------------------------------------------------


def event_hash(
    prev_hash: str,
    consent_id: str,
    sequence: int,
    event_type: str,
    occurred_at: dt.datetime,
    actor: str,
    details: dict[str, Any],
) -> str:
    """The sha256 of one ledger event and the hash before it: the link of every hash chain (consents, links)."""
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


APPEND_ATTEMPTS = 5
"""How often an append that lost a race to the same sequence number is tried again on top of the winner."""


def append_chained(
    session: Session,
    model: type[Any],
    chain_column: str,
    chain_id: str,
    event_type: str,
    occurred_at: dt.datetime,
    actor: str,
    details: dict[str, Any],
) -> Any | None:
    """Append one event to the hash chain ``chain_id`` of ``model`` (a ledger table with
    ``sequence``, ``event_type``, ``occurred_at``, ``actor``, ``details``, ``prev_hash`` and ``hash``;
    ``chain_column`` names its chain id, as ``link_id``). Its hash covers the previous event's
    (:func:`event_hash`). An insert that lost the race to a sequence number (another request
    appended at once) is tried again on top of the winner, so the chain never forks; None when
    :data:`APPEND_ATTEMPTS` tries all lost (the caller says so in its own terms)."""
    column = getattr(model, chain_column)
    for _ in range(APPEND_ATTEMPTS):
        last = session.scalars(
            select(model).where(column == chain_id).order_by(model.sequence.desc()).limit(1)
        ).first()
        sequence = 1 if last is None else last.sequence + 1
        prev_hash = GENESIS_HASH if last is None else last.hash
        event = model(
            **{chain_column: chain_id},
            sequence=sequence,
            event_type=event_type,
            occurred_at=occurred_at,
            actor=actor,
            details=details,
            prev_hash=prev_hash,
            hash=event_hash(prev_hash, chain_id, sequence, event_type, occurred_at, actor, details),
        )
        try:
            with session.begin_nested():
                session.add(event)
        except IntegrityError:
            continue
        return event
    return None


def _append_event(
    session: Session,
    consent_id: str,
    event_type: str,
    occurred_at: dt.datetime,
    actor: str,
    details: dict[str, Any],
) -> ConsentEvent:
    """Append one event to ``consent_id``'s chain in the ledger (:func:`append_chained`)."""
    event = append_chained(
        session, ConsentEvent, "consent_id", consent_id, event_type, occurred_at, actor, details
    )
    if event is None:
        raise ConsentError(f"consent {consent_id}: the ledger is busy (concurrent changes); try again")
    return event


def verify_chain(session: Session, consent_id: str) -> bool:
    """Recompute the event hashes of a consent; False if any event was altered, dropped or reordered."""
    prev = GENESIS_HASH
    events = session.scalars(
        select(ConsentEvent).where(ConsentEvent.consent_id == consent_id).order_by(ConsentEvent.sequence)
    )
    for expected_sequence, event in enumerate(events, start=1):
        recomputed = event_hash(
            prev, consent_id, event.sequence, event.event_type, event.occurred_at, event.actor, event.details
        )
        if event.sequence != expected_sequence or event.prev_hash != prev or event.hash != recomputed:
            return False
        prev = event.hash
    return True


# --- granting, withdrawing, erasing ---------------------------------------------------------------


def _listed(values: Iterable[str]) -> str:
    return ", ".join(sorted(values))


def check_terms(
    session: Session,
    *,
    sme_id: str,
    sources: Iterable[str],
    recipients: Iterable[str],
    purpose: str,
    history_months: int,
    granted_at: dt.datetime,
    expires_at: dt.datetime,
) -> tuple[list[str], list[str]]:
    """Validate a consent's terms against the vocabularies and the warehouse; sorted (sources, recipients).

    Raises :class:`ConsentError` with one line naming the first bad argument and what is allowed.
    """
    _check_sme(sme_id, session.get(Sme, sme_id))
    recipients = sorted(set(recipients))
    known_lenders = set(session.scalars(select(Lender.lender_id).where(Lender.lender_id.in_(recipients))))
    return _checked_values(
        sources=sources,
        recipients=recipients,
        known_lenders=known_lenders,
        purpose=purpose,
        history_months=history_months,
        granted_at=granted_at,
        expires_at=expires_at,
    )


def _check_sme(sme_id: str, sme: Sme | None) -> None:
    if sme is None:
        raise ConsentError(f"unknown SME {sme_id!r}")
    if sme.erased_at is not None:
        raise ConsentError(f"SME {sme_id} was erased on {sme.erased_at:%Y-%m-%d}; it must register again")


def _checked_values(
    *,
    sources: Iterable[str],
    recipients: Iterable[str],
    known_lenders: set[str],
    purpose: str,
    history_months: int,
    granted_at: dt.datetime,
    expires_at: dt.datetime,
) -> tuple[list[str], list[str]]:
    """:func:`check_terms` once the SME is known to exist and ``known_lenders`` are the recipients
    the warehouse knows."""
    sources = sorted(set(sources))
    if not sources:
        raise ConsentError(f"a consent needs at least one source; known: {_listed(SOURCES)}")
    unknown = set(sources) - set(SOURCES)
    if unknown:
        raise ConsentError(f"unknown source {_listed(unknown)}; known: {_listed(SOURCES)}")
    recipients = sorted(set(recipients))
    if not recipients:
        raise ConsentError("a consent needs at least one recipient lender")
    if set(recipients) - known_lenders:
        raise ConsentError(
            f"unknown lender {_listed(set(recipients) - known_lenders)}; see: dossier lender list"
        )
    if purpose not in PURPOSES:
        raise ConsentError(f"unknown purpose {purpose!r}; known: {_listed(PURPOSES)}")
    if isinstance(history_months, bool) or not isinstance(history_months, int):
        raise ConsentError(f"history_months must be a whole number of months, not {history_months!r}")
    if not 1 <= history_months <= MAX_HISTORY_MONTHS:
        raise ConsentError(f"history_months must be between 1 and {MAX_HISTORY_MONTHS}, not {history_months}")
    if granted_at.tzinfo is None or expires_at.tzinfo is None:
        raise ConsentError("consent instants must be UTC (timezone-aware)")
    if expires_at <= granted_at:
        raise ConsentError(
            f"expires_at {expires_at:%Y-%m-%d %H:%M} is not after granted_at {granted_at:%Y-%m-%d %H:%M}"
        )
    return sources, recipients


def _terms(
    sources: Iterable[str],
    recipients: Iterable[str],
    purpose: str,
    history_months: int,
    expires_at: dt.datetime,
) -> dict[str, Any]:
    """The terms a ``granted`` or ``narrowed`` event records."""
    return {
        "sources": list(sources),
        "recipients": list(recipients),
        "purpose": purpose,
        "history_months": history_months,
        "expires_at": expires_at.astimezone(dt.UTC).isoformat(),
    }


def _terms_record(consent: Consent) -> dict[str, Any]:
    return _terms(
        consent.sources, consent.recipients, consent.purpose, consent.history_months, consent.expires_at
    )


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
    """Record a grant (or new terms for ``consent_id``). Granting the same terms again changes nothing.

    Raises :class:`ConsentError` for an unknown SME, lender, source or purpose, a window outside
    1..:data:`MAX_HISTORY_MONTHS` months, or an expiry not after the grant; nothing is changed then.

    ``granted_at`` and ``expires_at`` are kept to the second, as dossier timestamps are: a dossier
    published within the second of its grant is stamped with that second, and must find the consent
    already active then.
    """
    granted_at, expires_at = granted_at.replace(microsecond=0), expires_at.replace(microsecond=0)
    sources, recipients = check_terms(
        session,
        sme_id=sme_id,
        sources=sources,
        recipients=recipients,
        purpose=purpose,
        history_months=history_months,
        granted_at=granted_at,
        expires_at=expires_at,
    )
    consent = session.get(Consent, consent_id)
    if consent is not None:
        if consent.sme_id != sme_id:
            raise ConsentError(f"consent {consent_id} belongs to {consent.sme_id}, not {sme_id}")
        unchanged = (consent.sources, consent.recipients, consent.purpose, consent.history_months) == (
            sources,
            recipients,
            purpose,
            history_months,
        )
        if unchanged and consent.expires_at == expires_at and consent.status == "active":
            return consent
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
    consent.reconfirmed_at = None
    consent.reconfirm_by = granted_at + RECONFIRM_AFTER
    session.flush()
    _append_event(session, consent_id, "granted", granted_at, actor, _terms_record(consent))
    return consent


@dataclass(frozen=True)
class NewGrant:
    """One consent for :func:`grant_many`: the arguments of :func:`grant`, and, when the SME has
    already withdrawn it, the instant and reason of its revocation."""

    consent_id: str
    sme_id: str
    sources: tuple[str, ...]
    recipients: tuple[str, ...]
    purpose: str
    history_months: int
    granted_at: dt.datetime
    expires_at: dt.datetime
    revoked_at: dt.datetime | None = None
    reason: str = ""


def grant_many(session: Session, grants: Iterable[NewGrant], *, actor: str = "sme") -> int:
    """Record many consents at once: for each, exactly the rows :func:`grant` (and :func:`revoke`,
    when ``revoked_at`` is set) would write, with the same checks, in a few set-based statements.

    For registering a whole population (the sandbox seed). A consent id that exists already goes
    through :func:`grant` (and :func:`revoke`) one at a time, so its chain is appended to as usual.
    Raises :class:`ConsentError` naming the first grant that :func:`grant` would refuse; nothing is
    written for that batch then. Returns how many grants were recorded.
    """
    grants = list(grants)
    known_lenders = set(session.scalars(select(Lender.lender_id)))
    existing: set[str] = set()
    smes: dict[str, Sme] = {}
    for chunk in in_chunks(sorted({g.consent_id for g in grants})):
        existing |= set(session.scalars(select(Consent.consent_id).where(Consent.consent_id.in_(chunk))))
    for chunk in in_chunks(sorted({g.sme_id for g in grants})):
        smes |= {s.sme_id: s for s in session.scalars(select(Sme).where(Sme.sme_id.in_(chunk)))}
    consents: list[dict[str, Any]] = []
    events: list[dict[str, Any]] = []
    one_by_one: list[NewGrant] = []
    for item in grants:
        _check_sme(item.sme_id, smes.get(item.sme_id))
        granted_at, expires_at = (
            item.granted_at.replace(microsecond=0),
            item.expires_at.replace(microsecond=0),
        )
        sources, recipients = _checked_values(
            sources=item.sources,
            recipients=item.recipients,
            known_lenders=known_lenders,
            purpose=item.purpose,
            history_months=item.history_months,
            granted_at=granted_at,
            expires_at=expires_at,
        )
        if item.consent_id in existing:  # new terms for a recorded consent, or a repeat in ``grants``
            one_by_one.append(item)
            continue
        existing.add(item.consent_id)
        consents.append(
            {
                "consent_id": item.consent_id,
                "sme_id": item.sme_id,
                "purpose": item.purpose,
                "sources": sources,
                "recipients": recipients,
                "history_months": item.history_months,
                "granted_at": granted_at,
                "expires_at": expires_at,
                "status": "active" if item.revoked_at is None else "revoked",
                "revoked_at": item.revoked_at,
                "reconfirmed_at": None,
                "reconfirm_by": granted_at + RECONFIRM_AFTER,
            }
        )
        terms = _terms(sources, recipients, item.purpose, item.history_months, expires_at)
        chain = [("granted", granted_at, terms)]
        if item.revoked_at is not None:
            chain.append(("revoked", item.revoked_at, {"reason": item.reason}))
        prev_hash = GENESIS_HASH
        for sequence, (event_type, occurred_at, details) in enumerate(chain, start=1):
            digest = event_hash(prev_hash, item.consent_id, sequence, event_type, occurred_at, actor, details)
            events.append(
                {
                    "consent_id": item.consent_id,
                    "sequence": sequence,
                    "event_type": event_type,
                    "occurred_at": occurred_at,
                    "actor": actor,
                    "details": details,
                    "prev_hash": prev_hash,
                    "hash": digest,
                }
            )
            prev_hash = digest
    if consents:
        session.execute(insert(Consent), consents)
        session.execute(insert(ConsentEvent), events)
    for item in one_by_one:
        grant(
            session,
            consent_id=item.consent_id,
            sme_id=item.sme_id,
            sources=item.sources,
            recipients=item.recipients,
            purpose=item.purpose,
            history_months=item.history_months,
            granted_at=item.granted_at,
            expires_at=item.expires_at,
            actor=actor,
        )
        if item.revoked_at is not None:
            revoke(session, item.consent_id, at=item.revoked_at, actor=actor, reason=item.reason)
    return len(grants)


def reconfirm(session: Session, consent_id: str, *, at: dt.datetime, actor: str = "sme") -> Consent:
    """The SME confirms at ``at`` that access may go on: ``reconfirm_by`` becomes ``at`` + 90 days.

    Only an active consent can be reconfirmed; a revoked, expired, not yet started or already
    lapsed one raises :class:`ConsentError` (after a lapse the SME grants again). A ``reconfirmed``
    event records the new ``reconfirm_by``.
    """
    consent = session.get(Consent, consent_id)
    if consent is None:
        raise ConsentError(f"consent {consent_id!r} does not exist; see: dossier consent list")
    if at.tzinfo is None:
        raise ConsentError("consent instants must be UTC (timezone-aware)")
    state = status_at(consent, at)
    if state != "active":
        raise ConsentError(
            f"consent {consent_id} is {state} at {at:%Y-%m-%d %H:%M} UTC; it cannot be reconfirmed"
        )
    consent.reconfirmed_at = at
    consent.reconfirm_by = at + RECONFIRM_AFTER
    session.flush()
    _append_event(
        session,
        consent_id,
        "reconfirmed",
        at,
        actor,
        {"reconfirm_by": consent.reconfirm_by.astimezone(dt.UTC).isoformat()},
    )
    return consent


def reconfirmable(consent: Consent | Terms, at: dt.datetime) -> bool:
    """Whether the SME is offered reconfirmation at ``at``: active, within :data:`RECONFIRM_NOTICE`
    of ``reconfirm_by``, and not expiring before it anyway."""
    lapses_at = consent.reconfirm_by or consent.granted_at + RECONFIRM_AFTER
    return (
        status_at(consent, at) == "active"
        and lapses_at - at <= RECONFIRM_NOTICE
        and lapses_at < consent.expires_at
    )


def reconfirm_wording(terms: Terms) -> str:
    """The plain words an SME is shown, and agrees to, when reconfirming ``terms``."""
    return (
        f"Keep sharing your {', '.join(sorted(terms.sources))} data ({terms.history_months} months of "
        f"history) with {', '.join(sorted(terms.recipients))} for {PURPOSES.get(terms.purpose, terms.purpose)}. "
        f"Without this, sharing stops on {terms.lapses_at:%d %B %Y}; with it, it continues for 90 days from "
        f"today (but not past {terms.expires_at:%d %B %Y}), when you will be asked again."
    )


def lapsing(session: Session, *, at: dt.datetime, within: dt.timedelta) -> list[Terms]:
    """Consents active at ``at`` whose access stops for want of reconfirmation within ``within``
    (and before they expire), soonest first: what an operator follows up."""
    query = (
        select(Consent)
        .where(
            Consent.status == "active",
            Consent.granted_at <= at,
            Consent.reconfirm_by > at,
            Consent.reconfirm_by <= at + within,
            Consent.reconfirm_by < Consent.expires_at,
        )
        .order_by(Consent.reconfirm_by, Consent.consent_id)
    )
    return [Terms.of(consent) for consent in session.scalars(query)]


def revoke(
    session: Session, consent_id: str, *, at: dt.datetime, actor: str = "sme", reason: str = ""
) -> Consent:
    """Withdraw a consent from ``at`` on. Revoking twice changes nothing."""
    consent = session.get(Consent, consent_id)
    if consent is None:
        raise ConsentError(f"consent {consent_id!r} does not exist; see: dossier consent list")
    if consent.status == "revoked":
        return consent
    consent.status = "revoked"
    consent.revoked_at = at
    session.flush()
    _append_event(session, consent_id, "revoked", at, actor, {"reason": reason})
    return consent


def withdraw(
    session: Session,
    *,
    sme_id: str,
    at: dt.datetime,
    lender: str | None = None,
    source: str | None = None,
    actor: str = "sme",
    reason: str = "",
) -> list[Consent]:
    """Stop the SME's active consents from naming ``lender`` and/or covering ``source``.

    A consent left with no recipient or no source is revoked; otherwise its terms are narrowed (a
    ``narrowed`` event records the new terms). With neither ``lender`` nor ``source`` every active
    consent of the SME is revoked. Returns the consents changed.
    """
    if session.get(Sme, sme_id) is None:
        raise ConsentError(f"unknown SME {sme_id!r}")
    if lender is not None and source is not None:
        raise ConsentError("withdraw either a lender or a source, not both at once")
    if source is not None and source not in SOURCES:
        raise ConsentError(f"unknown source {source!r}; known: {_listed(SOURCES)}")
    if lender is not None and session.get(Lender, lender) is None:
        raise ConsentError(f"unknown lender {lender!r}; see: dossier lender list")
    changed: list[Consent] = []
    consents = session.scalars(
        select(Consent)
        .where(Consent.sme_id == sme_id, Consent.status == "active")
        .order_by(Consent.consent_id)
    ).all()
    for consent in consents:
        recipients = [r for r in consent.recipients if r != lender]
        sources = [s for s in consent.sources if s != source]
        if recipients == list(consent.recipients) and sources == list(consent.sources) and (lender or source):
            continue  # this consent neither names the lender nor covers the source
        if not (lender or source) or not recipients or not sources:
            changed.append(revoke(session, consent.consent_id, at=at, actor=actor, reason=reason))
            continue
        consent.recipients = recipients
        consent.sources = sources
        session.flush()
        _append_event(
            session, consent.consent_id, "narrowed", at, actor, {**_terms_record(consent), "reason": reason}
        )
        changed.append(consent)
    return changed


def erase(
    session: Session, store: Store, sme_id: str, *, at: dt.datetime, actor: str = "operator"
) -> dict[str, Any]:
    """Revoke every consent of ``sme_id``, then remove its data everywhere (:mod:`warehouse.erasure`).

    Every lender that received one of its dossiers gets a withdrawal (reason ``erased``) at its next
    pull; the ledger records an ``erased`` event on each consent (the fact, not the data).
    """
    from warehouse.erasure import erase_sme_data

    sme = session.get(Sme, sme_id)
    if sme is None:
        raise ConsentError(f"unknown SME {sme_id!r}")
    consents = session.scalars(
        select(Consent).where(Consent.sme_id == sme_id).order_by(Consent.consent_id)
    ).all()
    for consent in consents:
        revoke(session, consent.consent_id, at=at, actor=actor, reason="erasure requested")
    removed = erase_sme_data(session, store, sme_id, at=at)
    for consent in consents:
        _append_event(session, consent.consent_id, "erased", at, actor, {"removed": removed})
    return {"sme_id": sme_id, "consents_revoked": len(consents), "removed": removed}


def status_at(consent: Consent | Terms, at: dt.datetime) -> str:
    """``active``, ``revoked``, ``expired``, ``lapsed`` (not reconfirmed in time) or ``pending``
    (granted for later) at ``at``."""
    if consent.status == "revoked":
        return "revoked"
    if consent.expires_at <= at:
        return "expired"
    if consent.reconfirm_by is not None and consent.reconfirm_by <= at:
        return "lapsed"
    if consent.granted_at > at:
        return "pending"
    return "active"


def active_consents(session: Session, sme_id: str, at: dt.datetime | None = None) -> list[Terms]:
    """The SME's consents active at ``at`` (default now)."""
    return terms_of(session, [sme_id], active_at=(at or utcnow(),))[sme_id]
