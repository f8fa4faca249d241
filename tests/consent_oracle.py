"""An independent oracle of the consent law, and the synthetic world the consent tests publish from.

The oracle knows only what a test itself recorded (the consents it granted, replaced, revoked and
the SMEs it erased) and what lenders received (the Parquet files their pulls wrote). It never
calls the production consent or entitlement logic: it states the rule again, on its own.

The rule, for a lender L and a dossier row D that L received in a pull at instant t:

* some consent C of D's SME was active at t (granted_at <= t < expires_at, not revoked at or
  before t, not replaced, SME not erased, and - the UK open-banking reconfirmation rule - confirmed
  by the SME within the 90 days before t: at the grant, or by a reconfirmation made while the
  consent was still active; a lapsed consent is not revived by a later one), names L, states the purpose of L's subscription,
  covers every source in D.sources_used, and D.history_months <= C.history_months;
* D.months_of_accounts <= D.history_months;
* every column derived from a source outside D.sources_used is null (months_of_accounts is 0).

And across pulls (:class:`LenderBook`): a delivered dossier that lost its cover is withdrawn in
that lender's very next pull, exactly once; and an entitled current version is never left
undelivered (:meth:`Oracle.undelivered`).
"""

from __future__ import annotations

import calendar
import datetime as dt
import json
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
from sqlalchemy import text

SOURCE_KINDS = ("accounting", "tax", "utility", "survey")
RECONFIRM_WITHIN = dt.timedelta(days=90)
"""Access the SME has not (re)confirmed for this long stops."""

DERIVED_FROM: dict[str, frozenset[str]] = {
    **{
        column: frozenset({"accounting"})
        for column in (
            "months_of_accounts",
            "currency",
            "revenue_12m",
            "revenue_growth_yoy",
            "revenue_trend_slope",
            "revenue_volatility",
            "gross_margin",
            "operating_margin",
            "net_margin",
            "current_ratio",
            "quick_ratio",
            "cash_to_monthly_costs",
            "debt_to_assets",
            "interest_coverage",
        )
    },
    "vat_returns_due": frozenset({"tax"}),
    "vat_on_time_rate": frozenset({"tax"}),
    "vat_books_revenue_ratio": frozenset({"tax", "accounting"}),
    "utility_bills_due": frozenset({"utility"}),
    "utility_on_time_rate": frozenset({"utility"}),
    "utility_usage_trend": frozenset({"utility"}),
    "utility_books_revenue_ratio": frozenset({"utility", "accounting"}),
    "survey_visits": frozenset({"survey"}),
    "survey_verified_rate": frozenset({"survey"}),
    "survey_revenue_ratio": frozenset({"survey", "accounting"}),
}
"""The oracle's own statement of which sources each dossier feature derives from."""


def as_of_instant(as_of: dt.date) -> dt.datetime:
    """The start of the as-of day, UTC."""
    return dt.datetime.combine(as_of, dt.time(), tzinfo=dt.UTC)


def is_null(value: Any) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value)) or value is pd.NaT


# --- the test's own records -----------------------------------------------------------------------


@dataclass(frozen=True)
class Terms:
    """One set of terms a consent held over ``[start, end)`` (``end`` None: still holding)."""

    consent_id: str
    sme_id: str
    sources: frozenset[str]
    recipients: frozenset[str]
    purpose: str
    history_months: int
    granted_at: dt.datetime
    expires_at: dt.datetime


@dataclass
class Episode:
    terms: Terms
    ended_at: dt.datetime | None = None
    """When a revocation, a re-grant or an erasure ended these terms (None: they still hold)."""
    recorded_at: dt.datetime | None = None
    """When the grant was made (its ``granted_at`` may lie before): the warehouse knows it from then."""
    reconfirmations: list[dt.datetime] = field(default_factory=list)
    """When the SME reconfirmed these terms."""

    def known_at(self, t: dt.datetime) -> bool:
        return self.recorded_at is None or self.recorded_at <= t

    def confirmed_until(self, t: dt.datetime) -> dt.datetime:
        """The end of access as the confirmations made up to ``t`` leave it: 90 days after the grant,
        pushed on by each reconfirmation made before that end came."""
        until = self.terms.granted_at + RECONFIRM_WITHIN
        for made in sorted(self.reconfirmations):
            if made <= t and self.terms.granted_at <= made < until:
                until = made + RECONFIRM_WITHIN
        return until

    def active_at(self, t: dt.datetime) -> bool:
        terms = self.terms
        ended = self.ended_at is not None and self.ended_at <= t
        return terms.granted_at <= t < terms.expires_at and t < self.confirmed_until(t) and not ended

    def allows(self, lender: str, purpose: str, sources: Iterable[str], history_months: int) -> bool:
        terms = self.terms
        return (
            lender in terms.recipients
            and terms.purpose == purpose
            and set(sources) <= terms.sources
            and history_months <= terms.history_months
        )


@dataclass
class Ledger:
    """The consents a test granted, replaced and revoked, and the SMEs it erased, as it did them."""

    episodes: dict[str, list[Episode]] = field(default_factory=dict)
    erased: dict[str, dt.datetime] = field(default_factory=dict)

    def grant(self, terms: Terms, *, at: dt.datetime) -> None:
        """Record a grant made at ``at``; a grant of an existing id ends its previous terms at ``at``."""
        history = self.episodes.setdefault(terms.consent_id, [])
        if history and history[-1].ended_at is None:
            history[-1].ended_at = at
        history.append(Episode(terms, recorded_at=at))

    def reconfirm(self, consent_id: str, *, at: dt.datetime) -> None:
        self.episodes[consent_id][-1].reconfirmations.append(at)

    def revoke(self, consent_id: str, *, at: dt.datetime) -> None:
        current = self.episodes[consent_id][-1]
        if current.ended_at is None:
            current.ended_at = at

    def erase(self, sme_id: str, *, at: dt.datetime) -> None:
        self.erased.setdefault(sme_id, at)
        for history in self.episodes.values():
            if history[-1].terms.sme_id == sme_id and history[-1].ended_at is None:
                history[-1].ended_at = at

    def of_sme(self, sme_id: str) -> list[Episode]:
        return [e for history in self.episodes.values() for e in history if e.terms.sme_id == sme_id]

    def covering(
        self,
        sme_id: str,
        t: dt.datetime,
        lender: str,
        purpose: str,
        sources: Iterable[str],
        history_months: int,
    ) -> list[Episode]:
        """The terms active at ``t`` that let ``lender`` hold a dossier with this scope."""
        if sme_id in self.erased and self.erased[sme_id] <= t:
            return []
        sources = list(sources)
        return [
            e
            for e in self.of_sme(sme_id)
            if e.active_at(t) and e.allows(lender, purpose, sources, history_months)
        ]


def utc_instant(value: Any) -> dt.datetime | None:
    """A timestamp read by raw SQL (a string on SQLite, a datetime on PostgreSQL), as an aware UTC instant."""
    if value is None:
        return None
    if isinstance(value, str):
        value = dt.datetime.fromisoformat(value)
    return value.replace(tzinfo=dt.UTC) if value.tzinfo is None else value.astimezone(dt.UTC)


def _names(value: Any) -> frozenset[str]:
    return frozenset(json.loads(value) if isinstance(value, str) else value)


def ledger_from_sql(connection: Any) -> Ledger:
    """The consents as the ``consents`` table holds them now, read by plain SQL (one term set each)."""
    ledger = Ledger()
    rows = connection.execute(
        text(
            "SELECT consent_id, sme_id, sources, recipients, purpose, history_months, granted_at, "
            "expires_at, status, revoked_at FROM consents ORDER BY consent_id"
        )
    )
    for row in rows:
        terms = Terms(
            row.consent_id,
            row.sme_id,
            _names(row.sources),
            _names(row.recipients),
            row.purpose,
            int(row.history_months),
            utc_instant(row.granted_at),
            utc_instant(row.expires_at),
        )
        ended = None
        if row.status != "active":
            ended = utc_instant(row.revoked_at) or terms.granted_at
        ledger.episodes[row.consent_id] = [Episode(terms, ended)]
    reconfirmed = connection.execute(
        text("SELECT consent_id, occurred_at FROM consent_events WHERE event_type = 'reconfirmed'")
    )
    for row in reconfirmed:
        if row.consent_id in ledger.episodes:
            ledger.episodes[row.consent_id][-1].reconfirmations.append(utc_instant(row.occurred_at))
    return ledger


def subscription_purposes(connection: Any) -> dict[str, str]:
    """Each lender's active subscription purpose, read by plain SQL."""
    rows = connection.execute(text("SELECT lender_id, purpose FROM subscriptions WHERE active"))
    return {row.lender_id: row.purpose for row in rows}


def pull_instant(pull_id: str) -> dt.datetime:
    """The instant a pull id names (``20261102T093000000000Z``)."""
    return dt.datetime.strptime(pull_id, "%Y%m%dT%H%M%S%fZ").replace(tzinfo=dt.UTC)


# --- what lenders received ------------------------------------------------------------------------


def read_rows(path: str | None) -> list[dict[str, Any]]:
    """The rows of a Parquet file a pull wrote (none when the pull wrote no file)."""
    if path is None:
        return []
    return pq.read_table(path).to_pylist()


def row_breaches(row: Mapping[str, Any]) -> list[str]:
    """What in one dossier row breaks the sources-and-window part of the rule, on its own."""
    used = set(row["sources_used"] or [])
    problems = []
    unknown = used - set(SOURCE_KINDS)
    if unknown:
        problems.append(f"sources_used names unknown sources {sorted(unknown)}")
    history = row.get("history_months")
    if history is None:
        problems.append("no history_months")
    elif row["months_of_accounts"] is not None and row["months_of_accounts"] > history:
        problems.append(f"months_of_accounts {row['months_of_accounts']} > history_months {history}")
    for column, sources in DERIVED_FROM.items():
        if sources <= used:
            continue
        value = row.get(column)
        if column == "months_of_accounts":
            if value not in (0, None):
                problems.append(f"months_of_accounts is {value} without accounting in sources_used")
        elif not is_null(value):
            problems.append(f"{column}={value!r} derives from {sorted(sources)}, sources_used {sorted(used)}")
    return problems


@dataclass
class Held:
    """A dossier a lender received and was not told to forget."""

    row: dict[str, Any]
    pull_id: str
    received_at: dt.datetime


@dataclass
class LenderBook:
    """What one lender holds, as its pull files tell it."""

    lender: str
    purpose: str
    held: dict[str, Held] = field(default_factory=dict)
    ever: set[str] = field(default_factory=set)
    pulls: int = 0


@dataclass
class Published:
    """A publish the test ran: the SMEs whose data it published for ``as_of``, at ``at``."""

    as_of: dt.date
    at: dt.datetime
    data_sources: dict[str, frozenset[str]]
    """SME -> the sources it had data in for that date."""


class Oracle:
    """Checks every pull against the rule, from the ledger and the pull files alone."""

    def __init__(self, ledger: Ledger) -> None:
        self.ledger = ledger
        self.books: dict[str, LenderBook] = {}
        self.publishes: list[Published] = []
        self.expected_reasons: dict[tuple[str, str], str] = {}

    def subscribed(self, lender: str, purpose: str) -> None:
        self.books.setdefault(lender, LenderBook(lender, purpose)).purpose = purpose

    def published(self, as_of: dt.date, at: dt.datetime, data_sources: Mapping[str, frozenset[str]]) -> None:
        self.publishes.append(Published(as_of, at, dict(data_sources)))

    def erased(self, sme_id: str, at: dt.datetime) -> None:
        """Record an erasure; each dossier of the SME still covered until now is owed an ``erased`` tombstone."""
        for book in self.books.values():
            for dossier_id, held in book.held.items():
                if held.row["sme_id"] == sme_id and self._covered(book, held.row, at):
                    self.expected_reasons[(book.lender, dossier_id)] = "erased"
        self.ledger.erase(sme_id, at=at)

    def _covered(self, book: LenderBook, row: Mapping[str, Any], t: dt.datetime) -> bool:
        return bool(
            self.ledger.covering(
                row["sme_id"], t, book.lender, book.purpose, row["sources_used"] or [], row["history_months"]
            )
        )

    def pulled(
        self,
        lender: str,
        at: dt.datetime,
        dossiers: list[dict[str, Any]],
        withdrawals: list[dict[str, Any]],
        pull_id: str = "",
    ) -> list[str]:
        """Check one pull (its dossier rows and withdrawal rows); returns every breach found."""
        book = self.books[lender]
        breaches: list[str] = []
        where = f"pull {book.pulls + 1} of {lender} at {at.isoformat()}"

        withdrawn = [w["dossier_id"] for w in withdrawals]
        if len(set(withdrawn)) != len(withdrawn):
            breaches.append(f"{where}: a dossier is withdrawn twice in one file: {sorted(withdrawn)}")
        for w in withdrawals:
            dossier_id = w["dossier_id"]
            if dossier_id not in book.ever:
                breaches.append(f"{where}: withdrawal of {dossier_id}, never delivered to {lender}")
            elif dossier_id not in book.held and w.get("reason") != "erased":
                breaches.append(f"{where}: second withdrawal of {dossier_id} without a redelivery")
            elif dossier_id in book.held and w["sme_id"] != book.held[dossier_id].row["sme_id"]:
                breaches.append(f"{where}: withdrawal of {dossier_id} names SME {w['sme_id']}")
            expected = self.expected_reasons.pop((lender, dossier_id), None)
            if expected is not None and w.get("reason") != expected:
                breaches.append(
                    f"{where}: {dossier_id} withdrawn with reason {w.get('reason')!r}, not {expected!r}"
                )
        for dossier_id, held in sorted(book.held.items()):
            if not self._covered(book, held.row, at) and dossier_id not in withdrawn:
                breaches.append(
                    f"{where}: {dossier_id} (sources {list(held.row['sources_used'])}, "
                    f"{held.row['history_months']}m, received {held.received_at.isoformat()}) "
                    "is no longer covered but is not in this pull's withdrawals"
                )
        for dossier_id in withdrawn:
            book.held.pop(dossier_id, None)

        seen: set[str] = set()
        for row in dossiers:
            dossier_id = row["dossier_id"]
            if dossier_id in seen:
                breaches.append(f"{where}: {dossier_id} twice in one file")
            seen.add(dossier_id)
            problems = row_breaches(row)
            if row.get("history_months") is not None and not self._covered(book, row, at):
                problems.append(
                    f"no consent active at {at.isoformat()} names {lender} for {book.purpose!r} and covers "
                    f"sources {list(row['sources_used'])} over {row['history_months']} months"
                )
            breaches += [f"{where}: {dossier_id}: {p}" for p in problems]
            book.held[dossier_id] = Held(dict(row), pull_id, at)
            book.ever.add(dossier_id)
        book.pulls += 1
        breaches += [f"{where}: {gap}" for gap in self.undelivered(lender, at)]
        return breaches

    def undelivered(self, lender: str, at: dt.datetime) -> list[str]:
        """Entitled current versions that ``lender`` does not hold after its pull at ``at``.

        For every SME whose data the test published for date d while the same terms, naming the
        lender with its purpose and covering a source the SME had data in, were active both at the
        as-of instant and at the publish (and already granted by then), and still are at the pull:
        the lender holds a dossier of that SME with as_of_date >= d.
        """
        book = self.books[lender]
        holds: dict[str, dt.date] = {}
        for held in book.held.values():
            sme_id, as_of = held.row["sme_id"], held.row["as_of_date"]
            holds[sme_id] = max(holds.get(sme_id, as_of), as_of)
        gaps = []
        for publish in self.publishes:
            start = as_of_instant(publish.as_of)
            for sme_id, data in sorted(publish.data_sources.items()):
                if sme_id in self.ledger.erased:
                    continue
                entitled = [
                    e
                    for e in self.ledger.of_sme(sme_id)
                    if lender in e.terms.recipients
                    and e.terms.purpose == book.purpose
                    and e.terms.sources & data
                    and e.known_at(publish.at)
                    and e.active_at(start)
                    and e.active_at(publish.at)
                    and e.active_at(at)
                ]
                if entitled and holds.get(sme_id, dt.date.min) < publish.as_of:
                    gaps.append(
                        f"{sme_id}'s data was published for {publish.as_of} at {publish.at.isoformat()} "
                        f"under {entitled[0].terms.consent_id} (active then and now), but {lender} holds "
                        f"{'nothing' if sme_id not in holds else 'only as-of ' + str(holds[sme_id])} of it"
                    )
        return gaps


# --- synthetic canonical data ---------------------------------------------------------------------


def months_before(as_of: dt.date, count: int) -> list[dt.date]:
    """The first days of the ``count`` calendar months before ``as_of``'s month, oldest first."""
    year, month = as_of.year, as_of.month
    firsts = []
    for _ in range(count):
        month -= 1
        if month == 0:
            year, month = year - 1, 12
        firsts.append(dt.date(year, month, 1))
    return firsts[::-1]


def month_end(first: dt.date) -> dt.date:
    return first.replace(day=calendar.monthrange(first.year, first.month)[1])


def _utc(day: dt.date, hour: int = 0) -> dt.datetime:
    return dt.datetime.combine(day, dt.time(hour), tzinfo=dt.UTC)


def synthetic_rows(
    sme_id: str, sources: Iterable[str], months: int, as_of: dt.date, *, level: float = 1000.0
) -> dict[str, list[dict[str, Any]]]:
    """Canonical rows of one SME: every month of the last ``months`` before ``as_of``, per source.

    Every source has a record in each month (monthly VAT periods due on the 7th of the next
    month, bills due on the 20th, a reading and a field visit every month), so that any history
    window of at least one month sees data from every source the SME has.
    """
    rows: dict[str, list[dict[str, Any]]] = {}
    firsts = months_before(as_of, months)
    sources = set(sources)
    n = int("".join(ch for ch in sme_id if ch.isdigit()) or 0)
    if "accounting" in sources:
        rows["monthly_financials"] = [
            {
                "sme_id": sme_id,
                "period_month": first,
                "currency": "GBP",
                "revenue": level * (1 + 0.02 * i) + 10 * n,
                "cost_of_sales": 0.45 * level,
                "operating_expenses": 0.25 * level,
                "depreciation": 12.0,
                "interest_expense": 6.0,
                "tax_expense": 4.0,
                "net_profit": level * (0.28 + 0.02 * i) + 10 * n - 22.0,
                "cash": 900.0 + 5 * i,
                "receivables": 150.0,
                "inventory": 80.0 + n,
                "current_assets": 1500.0,
                "total_assets": 5000.0,
                "current_liabilities": 700.0,
                "total_liabilities": 2100.0,
                "equity": 2900.0,
                "source_record": f"books:{sme_id}:{first:%Y-%m}",
                "raw_sha256": "0" * 64,
            }
            for i, first in enumerate(firsts)
        ]
    if "tax" in sources:
        rows["vat_returns"] = [
            {
                "sme_id": sme_id,
                "period_key": f"{first:%y}M{first.month:02d}",
                "period_start": first,
                "period_end": month_end(first),
                "due_date": month_end(first) + dt.timedelta(days=7),
                "status": "F",
                "received_date": month_end(first) + dt.timedelta(days=3 + (i + n) % 7),
                "vat_due_sales": 0.2 * level,
                "vat_due_acquisitions": 0.0,
                "total_vat_due": 0.2 * level,
                "vat_reclaimed": 0.05 * level,
                "net_vat_due": 0.15 * level,
                "total_sales_ex_vat": 0.95 * level * (1 + 0.02 * i),
                "total_purchases_ex_vat": 0.4 * level,
                "total_goods_supplied_ex_vat": 0.0,
                "total_acquisitions_ex_vat": 0.0,
                "source_record": f"vat:{sme_id}:{first:%Y-%m}",
                "raw_sha256": "1" * 64,
            }
            for i, first in enumerate(firsts)
        ]
    if "utility" in sources:
        rows["utility_readings"] = [
            {
                "sme_id": sme_id,
                "usage_point_id": f"E-{sme_id}",
                "commodity": "electricity",
                "interval_start": _utc(first),
                "interval_seconds": 86400 * calendar.monthrange(first.year, first.month)[1],
                "consumption": 400.0 + 3 * i + n,
                "unit": "kWh",
                "cost": 80.0,
                "currency": "GBP",
                "source_record": f"espi:{sme_id}:{first:%Y-%m}",
                "raw_sha256": "2" * 64,
            }
            for i, first in enumerate(firsts)
        ]
        rows["utility_bills"] = [
            {
                "sme_id": sme_id,
                "usage_point_id": f"E-{sme_id}",
                "period_start": _utc(first),
                "period_seconds": 86400 * calendar.monthrange(first.year, first.month)[1],
                "amount_due": 80.0,
                "currency": "GBP",
                "due_date": first.replace(day=20),
                "paid_date": first.replace(day=12 + (i + n) % 12),
                "source_record": f"bill:{sme_id}:{first:%Y-%m}",
                "raw_sha256": "3" * 64,
            }
            for i, first in enumerate(firsts)
        ]
    if "survey" in sources:
        rows["survey_visits"] = [
            {
                "sme_id": sme_id,
                "visit_id": f"{sme_id}-{first:%Y%m}",
                "form_version": "1",
                "agent_id": "agent-1",
                "visited_at": _utc(first.replace(day=10), 10),
                "submitted_at": _utc(first.replace(day=10), 11),
                "premises_found": True,
                "business_operating": (i + n) % 5 != 0,
                "employees_observed": 3,
                "customers_observed": 2,
                "stock_level": "normal",
                "reported_monthly_revenue": 1.1 * level,
                "latitude": 51.5,
                "longitude": -0.1,
                "photo_count": 2,
                "notes": None,
                "source_record": f"kobo:{sme_id}:{first:%Y-%m}",
                "raw_sha256": "4" * 64,
            }
            for i, first in enumerate(firsts)
        ]
    return rows


def canonical_tables(rows_by_sme: Iterable[dict[str, list[dict[str, Any]]]]) -> dict[str, pa.Table]:
    """Every canonical table (typed by its schema; empty where no SME had rows) from per-SME rows."""
    from warehouse.canonical import TABLES

    merged: dict[str, list[dict[str, Any]]] = {name: [] for name in TABLES}
    for rows in rows_by_sme:
        for name, table_rows in rows.items():
            merged[name] += table_rows
    return {
        name: TABLES[name].to_arrow(pd.DataFrame(merged[name], columns=TABLES[name].column_names))
        for name in TABLES
    }


def stage_shard(store: Any, as_of: dt.date, tables: Mapping[str, pa.Table], passed: Iterable[str]) -> None:
    """Write one shard's canonical tables and a validation outcome in which ``passed`` all passed."""
    for name, table in tables.items():
        store.write_table(store.layout.canonical(name, as_of.isoformat(), 0), table)
    ids = sorted(set(passed))
    store.write_table(
        store.layout.staging("validation", as_of.isoformat(), 0),
        pa.table(
            {
                "sme_id": pa.array(ids, pa.string()),
                "passed": pa.array([True] * len(ids), pa.bool_()),
                "reasons": pa.array([[] for _ in ids], pa.list_(pa.string())),
            }
        ),
    )
