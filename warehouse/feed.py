"""The lender feed: which dossier versions a lender receives, when, and which it must forget.

A lender holds subscriptions (:func:`subscribe`), each with optional filters (:data:`FILTERS`) and a
**purpose** (:data:`warehouse.consent.PURPOSES`). Delivery is decided from state, not from a cursor:

* **what the lender may hold**: a published version of the current schema that the consent rule
  allows at the instant of the pull (:meth:`warehouse.consent.Entitlement.allows`: an active consent
  of the SME names the lender, states the subscription's purpose, covers every source the version
  used and its history window);
* **the current version** per SME: of the versions it may hold, the one of the latest as-of date
  (and, within a date, the widest scope); a version keeps the as-of date it was first published
  for and stands for every later date whose publish kept it (``current_through``). It is delivered once it passes the subscription's
  filters, unless the lender already holds that exact content. A new subscription therefore starts
  from the current version per SME, never from history; a consent granted later delivers the
  current version at the next pull; nothing is skipped by a cursor moving past it;
* **withdrawals**: every version the lender holds (delivered and not withdrawn since), across all
  as-of dates, is judged again at every pull, on the sources and window of the content actually
  delivered; one the rule no longer allows, or whose SME was erased, gets exactly one tombstone.

:func:`pull` writes ``<lender>-<pull_id>.parquet`` (the dossier schema) and, when anything was
withdrawn, ``<lender>-<pull_id>-withdrawals.parquet``, under temporary names; records deliveries
and withdrawals and **commits**; only then renames the files. A crash before the commit leaves
temporary files the next pull removes; a crash after it leaves temporary files the next pull
finishes renaming, so the lender never holds a file the warehouse does not know about, and the
warehouse never records a delivery whose file is lost.

Both the file pull and :func:`sync` (the lender API's delivery, no file) record through
:func:`record_pull`, which also appends to the lender's feed log (:mod:`warehouse.events`): one
delivery state, one log, whichever way the lender takes its dossiers.
"""

from __future__ import annotations

import datetime as dt
import logging
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from sqlalchemy import Engine, and_, bindparam, delete, func, insert, select, update
from sqlalchemy.orm import Session

from evaluation.scoring import GRADE_BANDS
from warehouse import events
from warehouse.canonical import SOURCES
from warehouse.consent import DEFAULT_PURPOSE, PURPOSES, Entitlement, entitlement, terms_of, why_not
from warehouse.db import in_chunks, session_scope, upsert
from warehouse.dossier_schema import SCHEMA_VERSION, build_schema
from warehouse.dossier_store import UNPUBLISHED, content_sha256, store_absolute, utc_seconds
from warehouse.errors import DossierError, InputError
from warehouse.models import (
    Consent,
    Delivery,
    DossierVersion,
    FeedChange,
    FeedEvent,
    FeedWatermark,
    Lender,
    Sme,
    Subscription,
    Withdrawal,
    utcnow,
)
from warehouse.storage import Store

log = logging.getLogger(__name__)

FILTERS: dict[str, str] = {
    "grades": "grade",
    "industries": "industry",
    "regions": "region",
    "size_bands": "size_band",
}
"""Subscription filters that list the values a dossier column may take, and that column."""

MIN_GRADE = "min_grade"
"""Filter: the worst grade a dossier may have (``"B"`` lets A and B through; grades run A best to E)."""
REQUIRED_SOURCES = "required_sources"
"""Filter: sources a dossier's ``sources_used`` must all include."""
FILTER_KEYS: tuple[str, ...] = (*FILTERS, MIN_GRADE, REQUIRED_SOURCES)
"""Every subscription filter key, as stored in a subscription's ``filters``."""

WITHDRAWAL_SCHEMA = pa.schema(
    [
        pa.field(
            "sme_id", pa.string(), nullable=False, metadata={"description": "Our identifier of the SME."}
        ),
        pa.field(
            "dossier_id",
            pa.string(),
            nullable=False,
            metadata={"description": "The delivered dossier the lender may no longer use."},
        ),
        pa.field(
            "withdrawn_at",
            pa.timestamp("s", tz="UTC"),
            nullable=False,
            metadata={"description": "When the consent that let this lender receive the dossier ended."},
        ),
        pa.field(
            "reason",
            pa.string(),
            nullable=False,
            metadata={
                "description": "consent_revoked, consent_expired, consent_no_longer_covers (no active "
                "consent names this lender with this purpose, every source the dossier used and its "
                "history window), or erased (the SME had its data erased)."
            },
        ),
    ],
    metadata={"grain": "One row per withdrawn delivery.", "dossier_schema_version": str(SCHEMA_VERSION)},
)


class FeedError(DossierError, LookupError):
    """The lender or its subscription does not exist (or is ambiguous)."""


# --- lenders and subscriptions --------------------------------------------------------------------


def _lender(session: Session, lender_id: str) -> Lender:
    lender = session.get(Lender, lender_id)
    if lender is None:
        raise FeedError(f"unknown lender {lender_id!r}")
    return lender


def _shape_problem(key: str, value: Any) -> str | None:
    """Why ``value`` cannot be filter ``key`` (one string for min_grade, else a list of strings)."""
    if key not in FILTER_KEYS:
        return f"unknown subscription filter {key!r}; known: {', '.join(FILTER_KEYS)}"
    if key == MIN_GRADE:
        if value is not None and not isinstance(value, str):
            return f"subscription filter {key!r} must be one grade (a string), not {value!r}"
    elif isinstance(value, str) or not all(isinstance(v, str) for v in value or []):
        return f"subscription filter {key!r} must be a list of strings, not {value!r}"
    return None


def normalize_filters(filters: Mapping[str, Any] | None) -> dict[str, Any]:
    """Filters as stored: ``{key: sorted distinct values}``, ``min_grade`` one string, without
    empty entries; rejects unknown keys and values of the wrong shape.

    >>> normalize_filters({"grades": ["B", "A", "A"], "regions": [], "min_grade": "C"})
    {'grades': ['A', 'B'], 'min_grade': 'C'}
    """
    normalized: dict[str, Any] = {}
    for key, values in (filters or {}).items():
        problem = _shape_problem(key, values)
        if problem:
            raise FeedError(problem)
        if key == MIN_GRADE:
            if values:
                normalized[key] = values
        elif values:
            normalized[key] = sorted(set(values))
    return normalized


def subscribe(
    session: Session,
    lender_id: str,
    *,
    name: str = "default",
    filters: Mapping[str, Any] | None = None,
    purpose: str = DEFAULT_PURPOSE,
) -> Subscription:
    """Create or update the lender's subscription ``name`` (active, with ``filters`` and ``purpose``)."""
    _lender(session, lender_id)
    if purpose not in PURPOSES:
        raise FeedError(f"unknown purpose {purpose!r}; known: {', '.join(sorted(PURPOSES))}")
    normalized = normalize_filters(filters)
    subscription = session.scalars(
        select(Subscription).where(Subscription.lender_id == lender_id, Subscription.name == name)
    ).first()
    if subscription is None:
        subscription = Subscription(lender_id=lender_id, name=name, cursor=0)
        session.add(subscription)
    subscription.filters = normalized
    subscription.purpose = purpose
    subscription.active = True
    session.flush()
    return subscription


GRADES: tuple[str, ...] = (*(letter for letter, _ in GRADE_BANDS), "E")
"""The risk grades a dossier can carry (``evaluation.scoring.grade``), best first."""

SIZE_BANDS: tuple[str, ...] = ("micro", "small", "medium")
"""The size bands by headcount (the dossier schema's ``size_band``)."""


GRADE_RANK: dict[str, int] = {grade: rank for rank, grade in enumerate(GRADES)}
"""Each grade's place, best (A, 0) first."""


def filter_vocabulary(session: Session, key: str) -> list[str]:
    """The values filter ``key`` may take: the grades, size bands and sources, or the regions and
    industries of the SMEs registered in the warehouse."""
    if key in ("grades", MIN_GRADE):
        return list(GRADES)
    if key == REQUIRED_SOURCES:
        return list(SOURCES)
    if key == "size_bands":
        return list(SIZE_BANDS)
    column = getattr(Sme, FILTERS[key])
    return list(session.scalars(select(column).distinct().order_by(column)))


def check_filters(session: Session, filters: Mapping[str, Any]) -> dict[str, Any]:
    """``filters`` with each value checked against its vocabulary (:func:`filter_vocabulary`).

    Values match regardless of case and come back in the vocabulary's spelling; a value outside it
    (or of the wrong shape: ``min_grade`` is one grade, the others lists) raises
    :class:`~warehouse.errors.InputError` naming the filter and listing the valid values, since a
    subscription that filters on a value no dossier carries would silently receive nothing.
    """
    checked: dict[str, Any] = {}
    for key, given in filters.items():
        problem = _shape_problem(key, given)
        if problem:
            raise InputError(problem)
        if given is None:
            continue
        values = [given] if key == MIN_GRADE else list(given)
        vocabulary = filter_vocabulary(session, key)
        spelling = {v.casefold(): v for v in vocabulary}
        unknown = [v for v in values if v.strip().casefold() not in spelling]
        if unknown:
            known = ", ".join(vocabulary) if vocabulary else "none yet (no SMEs are registered)"
            raise InputError(f"{key} {', '.join(map(repr, unknown))} not known; valid {key}: {known}")
        spelled = [spelling[v.strip().casefold()] for v in values]
        checked[key] = spelled[0] if key == MIN_GRADE else spelled
    return normalize_filters(checked)


def _subscription(session: Session, lender_id: str, name: str | None, *, lock: bool = True) -> Subscription:
    """The lender's active subscription ``name`` (locked for this pull), or its only one when unnamed."""
    query = select(Subscription).where(Subscription.lender_id == lender_id, Subscription.active.is_(True))
    if name is not None:
        query = query.where(Subscription.name == name)
    found = session.scalars(query.with_for_update() if lock else query).all()
    if not found:
        which = f"named {name!r}" if name is not None else "at all"
        raise FeedError(f"lender {lender_id!r} has no active subscription {which}; subscribe it first")
    if len(found) > 1:
        raise FeedError(
            f"lender {lender_id!r} has several subscriptions {sorted(s.name for s in found)}; name one to pull"
        )
    return found[0]


# --- what a lender may hold ----------------------------------------------------------------------

CATALOG_COLUMNS = [
    DossierVersion.id,
    DossierVersion.dossier_id,
    DossierVersion.sme_id,
    DossierVersion.as_of_date,
    DossierVersion.scope,
    DossierVersion.history_months,
    DossierVersion.sources_used,
    DossierVersion.schema_version,
    DossierVersion.model_version,
    DossierVersion.grade,
    DossierVersion.file_path,
    DossierVersion.content_sha256,
    DossierVersion.feed_seq,
    DossierVersion.current_through,
    Sme.industry,
    Sme.region,
    Sme.size_band,
]


def published_versions(session: Session) -> pd.DataFrame:
    """Every published catalog row of the current schema, with the SME attributes filters look at."""
    query = (
        select(*CATALOG_COLUMNS)
        .join(Sme, Sme.sme_id == DossierVersion.sme_id)
        .where(
            DossierVersion.file_path != UNPUBLISHED,
            DossierVersion.schema_version == SCHEMA_VERSION,
            Sme.erased_at.is_(None),
        )
        .order_by(DossierVersion.feed_seq)
    )
    return _frame(session, query, [c.key for c in CATALOG_COLUMNS])


def matches_filters(feed: pd.DataFrame, filters: Mapping[str, Any]) -> pd.Series:
    """Rows of ``feed`` that pass every filter (an absent or empty filter passes all): a listed
    value of each list filter, a grade no worse than ``min_grade``, every ``required_sources``
    among the row's ``sources_used``."""
    keep = pd.Series(True, index=feed.index)
    for key, values in filters.items():
        if not values:
            continue
        if key == MIN_GRADE:
            keep &= feed["grade"].map(GRADE_RANK).fillna(len(GRADES)) <= GRADE_RANK[values]
        elif key == REQUIRED_SOURCES:
            required = set(values)
            keep &= feed["sources_used"].map(required.issubset).astype(bool)
        else:
            keep &= feed[FILTERS[key]].isin(values)
    return keep


def _frame(session: Session, query: Any, columns: list[str]) -> pd.DataFrame:
    """A query's rows as a frame: run as a plain statement (no ORM loading) and built column by
    column (much cheaper than from row objects)."""
    rows = session.connection().execute(query).all()
    if not rows:
        return pd.DataFrame({name: pd.Series(dtype=object) for name in columns})
    return pd.DataFrame(dict(zip(columns, (list(values) for values in zip(*rows, strict=True)), strict=True)))


def verdicts(
    rule: Entitlement,
    lender_id: str,
    sme_ids: Iterable[str],
    purposes: Iterable[str],
    sources_used: Iterable[Iterable[str]],
    months: Iterable[Any],
) -> list[bool]:
    """The consent rule's answer for each (SME, purpose, sources, months), asked once per distinct
    question (an SME's versions of every date share their scope): :meth:`Entitlement.allows`."""
    answers: dict[tuple[str, str, tuple[str, ...], int], bool] = {}
    found = []
    columns = [
        list(values) for values in (sme_ids, purposes, sources_used, months)
    ]  # plain lists iterate fast
    for sme_id, purpose, used, window in zip(*columns, strict=True):
        question = (sme_id, purpose, tuple(used), int(window))
        answer = answers.get(question)
        if answer is None:
            answer = answers[question] = rule.allows(sme_id, lender_id, purpose, question[2], question[3])
        found.append(answer)
    return found


def allowed(rows: pd.DataFrame, rule: Entitlement, lender_id: str, purpose: str) -> pd.Series:
    """Rows (sme_id, sources_used, history_months) the consent rule lets ``lender_id`` hold for ``purpose``."""
    return pd.Series(
        verdicts(
            rule,
            lender_id,
            rows["sme_id"],
            [purpose] * len(rows),
            rows["sources_used"],
            rows["history_months"],
        ),
        index=rows.index,
        dtype=bool,
    )


def current_versions(versions: pd.DataFrame, may_hold: pd.Series) -> pd.DataFrame:
    """Per SME, the version of the latest as-of date among those ``may_hold`` (the widest scope
    first): a version counts for every date it is current through (a later publish that found the
    SME unchanged kept it), and of two versions of a scope current through the same date the
    newer one wins."""
    held = versions[may_hold]
    if held.empty:
        return held
    scope_width = held["sources_used"].map(len) * 1000 + held["history_months"]
    through = held["current_through"].where(held["current_through"].notna(), held["as_of_date"])
    ordered = held.assign(_width=scope_width, _through=pd.to_datetime(through)).sort_values(
        ["sme_id", "_through", "_width", "as_of_date", "scope"], ascending=[True, False, False, False, False]
    )
    return ordered.drop_duplicates("sme_id").drop(columns=["_width", "_through"]).sort_values("feed_seq")


def held_deliveries(session: Session, lender_id: str) -> pd.DataFrame:
    """The lender's deliveries not withdrawn since: what it holds now, as delivered."""
    columns = [
        Delivery.id.label("delivery_id"),
        Delivery.dossier_version_id,
        Delivery.pull_id,
        Delivery.purpose,
        Delivery.sources_used,
        Delivery.history_months,
        Delivery.content_sha256,
        DossierVersion.dossier_id,
        DossierVersion.sme_id,
        DossierVersion.feed_seq,
        Sme.erased_at,
    ]
    reported = and_(
        Withdrawal.lender_id == Delivery.lender_id,
        Withdrawal.dossier_version_id == Delivery.dossier_version_id,
        Withdrawal.delivery_pull_id == Delivery.pull_id,
    )
    query = (
        select(*columns)
        .join(DossierVersion, DossierVersion.id == Delivery.dossier_version_id)
        .join(Sme, Sme.sme_id == DossierVersion.sme_id)
        .outerjoin(Withdrawal, reported)
        .where(Delivery.lender_id == lender_id, Withdrawal.id.is_(None))
        .order_by(DossierVersion.feed_seq)
    )
    return _frame(session, query, [c.key for c in columns])


@dataclass
class PullPlan:
    """What a pull at one instant hands over and takes back (decided, nothing written yet)."""

    subscription: Subscription
    versions: pd.DataFrame
    """Every published version, with the rule's verdict for this lender (``may_hold``)."""
    current: pd.DataFrame
    """The current version per SME that the lender may hold."""
    wanted: pd.DataFrame
    """Current versions that pass the filters and that the lender does not hold with this content."""
    withdrawals: pd.DataFrame
    """Held deliveries the rule no longer allows (see :func:`plan_withdrawals`)."""


def plan_withdrawals(
    session: Session, lender_id: str, held: pd.DataFrame, rule: Entitlement, at: dt.datetime
) -> pd.DataFrame:
    """Held deliveries that the rule no longer allows, judged on what was delivered, with the reason.

    Columns: dossier_version_id, delivery_pull_id, sme_id, dossier_id, withdrawn_at, reason.
    """
    erased = held["erased_at"].notna()
    still = pd.Series(
        verdicts(
            rule, lender_id, held["sme_id"], held["purpose"], held["sources_used"], held["history_months"]
        ),
        index=held.index,
        dtype=bool,
    )
    lost = held[erased | ~still].reset_index(drop=True)
    every = terms_of(session, sorted(set(lost["sme_id"])))
    reasons: list[tuple[str, dt.datetime]] = []
    for row in lost.itertuples(index=False):
        if pd.notna(row.erased_at):
            reasons.append(("erased", pd.Timestamp(row.erased_at).to_pydatetime()))
        else:
            reasons.append(
                why_not(
                    every[row.sme_id], lender_id, row.purpose, row.sources_used, int(row.history_months), at
                )
            )
    return pd.DataFrame(
        {
            "dossier_version_id": lost["dossier_version_id"].astype("int64"),
            "delivery_pull_id": lost["pull_id"].astype(str),
            "sme_id": lost["sme_id"].astype(str),
            "dossier_id": lost["dossier_id"].astype(str),
            "withdrawn_at": [utc_seconds(when) for _reason, when in reasons],
            "reason": [reason for reason, _when in reasons],
        }
    )


def plan_pull(
    session: Session, lender_id: str, *, at: dt.datetime, subscription: str | None = None, lock: bool = True
) -> PullPlan:
    """Decide what a pull by ``lender_id`` at ``at`` delivers and withdraws (the rule, applied)."""
    _lender(session, lender_id)
    chosen = _subscription(session, lender_id, subscription, lock=lock)
    versions = published_versions(session)
    held = held_deliveries(session, lender_id)
    rule = entitlement(session, sorted(set(versions["sme_id"]) | set(held["sme_id"])), at=at)
    versions["may_hold"] = allowed(versions, rule, lender_id, chosen.purpose)
    current = current_versions(versions, versions["may_hold"])
    holding = dict(zip(held["dossier_version_id"], held["content_sha256"], strict=True))
    already = pd.Series(
        [holding.get(int(v)) == sha for v, sha in zip(current["id"], current["content_sha256"], strict=True)],
        index=current.index,
        dtype=bool,
    )
    wanted = current[matches_filters(current, chosen.filters) & ~already]
    return PullPlan(chosen, versions, current, wanted, plan_withdrawals(session, lender_id, held, rule, at))


# --- writing the pull files -----------------------------------------------------------------------


def _published_rows(store: Store, file_path: str, wanted: pd.DataFrame) -> pa.Table:
    """The rows of ``wanted`` that ``file_path`` holds with exactly the catalog's content."""
    try:
        table = store.read_table(store_absolute(store, file_path))
    except FileNotFoundError:
        log.warning(
            "%s is gone (republished since): its %d dossiers wait for their new version",
            file_path,
            len(wanted),
        )
        return pa.table({})
    table = table.filter(pc.is_in(table.column("dossier_id"), pa.array(wanted["dossier_id"], pa.string())))
    expected = dict(zip(wanted["dossier_id"], wanted["content_sha256"], strict=True))
    same = [
        expected[d] == h
        for d, h in zip(table.column("dossier_id").to_pylist(), content_sha256(table), strict=True)
    ]
    if not all(same):
        log.warning(
            "%s: %d dossiers differ from the catalog (a publish is in progress): they wait for their new version",
            file_path,
            same.count(False),
        )
    return table.filter(pa.array(same, pa.bool_()))


def write_dossiers(
    store: Store, wanted: pd.DataFrame, tmp_path: Path | None, keep: dict[str, dict[str, Any]] | None = None
) -> list[str]:
    """Copy the ``wanted`` catalog rows' dossiers into ``tmp_path``; returns the dossier ids written.

    Files are read one at a time; nothing is created when nothing is written. The caller renames
    ``tmp_path`` once the deliveries are committed. ``keep`` receives each row written, by
    dossier id (for the feed log); with ``tmp_path`` None, rows are only kept, no file is written.
    """
    model_versions = ",".join(sorted(wanted["model_version"].unique()))
    schema = build_schema(model_versions)
    writer: pq.ParquetWriter | None = None
    written: list[str] = []
    try:
        for file_path, rows in wanted.groupby("file_path", sort=False):
            table = _published_rows(store, str(file_path), rows)
            if table.num_rows == 0:
                continue
            described = pa.Table.from_arrays(table.select(schema.names).columns, schema=schema)
            if tmp_path is not None:
                if writer is None:
                    writer = pq.ParquetWriter(tmp_path, schema)
                writer.write_table(described)
            if keep is not None:
                keep.update((row["dossier_id"], row) for row in described.to_pylist())
            written.extend(table.column("dossier_id").to_pylist())
    except BaseException:
        if writer is not None:
            writer.close()
        if tmp_path is not None:
            tmp_path.unlink(missing_ok=True)
        raise
    if writer is not None:
        writer.close()
    return written


def write_withdrawals(withdrawals: pd.DataFrame, tmp_path: Path) -> None:
    """The withdrawals as a described Parquet file at ``tmp_path`` (renamed by the caller)."""
    table = pa.Table.from_pandas(
        withdrawals[WITHDRAWAL_SCHEMA.names], schema=WITHDRAWAL_SCHEMA, preserve_index=False
    ).replace_schema_metadata(WITHDRAWAL_SCHEMA.metadata)
    pq.write_table(table, tmp_path)


def record_deliveries(
    session: Session,
    lender_id: str,
    delivered: pd.DataFrame,
    *,
    subscription: Subscription,
    pull_id: str,
    at: dt.datetime,
) -> None:
    """One :class:`Delivery` per version, holding what was handed over (sources, window, content hash);
    a version delivered before (then withdrawn, or re-published with other content) is updated."""
    ids = [int(v) for v in delivered["id"]]
    earlier: dict[int, int] = {}
    for chunk in in_chunks(ids):
        query = select(Delivery.dossier_version_id, Delivery.id).where(
            Delivery.lender_id == lender_id, Delivery.dossier_version_id.in_(chunk)
        )
        earlier.update((version_id, delivery_id) for version_id, delivery_id in session.execute(query))
    this_pull = {
        "lender_id": lender_id,
        "subscription_id": subscription.id,
        "purpose": subscription.purpose,
        "pull_id": pull_id,
        "delivered_at": at,
    }
    inserts, updates = [], []
    for version_id, used, months, sha in zip(
        ids, delivered["sources_used"], delivered["history_months"], delivered["content_sha256"], strict=True
    ):
        row = {**this_pull, "sources_used": list(used), "history_months": int(months), "content_sha256": sha}
        if version_id in earlier:
            updates.append({**row, "id": earlier[version_id]})
        else:
            inserts.append({**row, "dossier_version_id": version_id})
    if inserts:
        session.execute(insert(Delivery), inserts)
    if updates:
        session.execute(update(Delivery), updates)


def record_pull(
    session: Session,
    lender_id: str,
    plan: PullPlan,
    delivered: pd.DataFrame,
    rows: Mapping[str, Mapping[str, Any]],
    *,
    pull_id: str,
    at: dt.datetime,
) -> int:
    """Record what one pull handed over and took back (not committed): its deliveries, its
    withdrawals (``plan.withdrawals``), the feed log's events (:func:`warehouse.events.append`) and
    the subscription's cursor. ``delivered`` is the part of ``plan.wanted`` actually handed over,
    ``rows`` its dossier rows by id. Returns the lender's last feed ``seq``."""
    chosen = plan.subscription
    record_deliveries(session, lender_id, delivered, subscription=chosen, pull_id=pull_id, at=at)
    session.add_all(
        Withdrawal(
            lender_id=lender_id,
            dossier_version_id=int(row.dossier_version_id),
            delivery_pull_id=row.delivery_pull_id,
            reason=row.reason,
            withdrawn_at=pd.Timestamp(row.withdrawn_at).to_pydatetime(),
            pull_id=pull_id,
            reported_at=at,
        )
        for row in plan.withdrawals.itertuples(index=False)
    )
    if not delivered.empty:
        chosen.cursor = max(chosen.cursor, int(delivered["feed_seq"].max()))
    session.flush()
    return events.append(
        session,
        lender_id,
        delivered=delivered,
        rows=rows,
        withdrawals=plan.withdrawals,
        pull_id=pull_id,
        at=at,
    )


def sync(session: Session, store: Store, lender_id: str, *, now: dt.datetime | None = None) -> dict[str, int]:
    """Deliver to the lender's feed log what a pull of each of its active subscriptions would
    deliver and withdraw now, without writing files (the lender API reads the log). Not committed.

    Returns the counts delivered and withdrawn. A lender without an active subscription gets nothing.
    """
    at = now or utcnow()
    _lender(session, lender_id)
    names = session.scalars(
        select(Subscription.name)
        .where(Subscription.lender_id == lender_id, Subscription.active.is_(True))
        .order_by(Subscription.name)
    ).all()
    pull_id = pull_id_for(at)
    counts = {"delivered": 0, "withdrawn": 0, "unavailable": 0}
    for name in names:
        plan = plan_pull(session, lender_id, at=at, subscription=name)
        rows: dict[str, dict[str, Any]] = {}
        written = write_dossiers(store, plan.wanted, None, rows) if not plan.wanted.empty else []
        delivered = plan.wanted[plan.wanted["dossier_id"].isin(written)]
        record_pull(session, lender_id, plan, delivered, rows, pull_id=pull_id, at=at)
        counts["delivered"] += len(delivered)
        counts["withdrawn"] += len(plan.withdrawals)
        counts["unavailable"] += len(plan.wanted) - len(delivered)
    return counts


# --- syncing only when something changed ----------------------------------------------------------

RETRY_UNAVAILABLE = dt.timedelta(seconds=30)
"""How soon a lender's feed is planned again when versions it should receive had no readable file
(a publish in progress or interrupted); the publish that completes them plans it anyway."""


def changes(session: Session) -> int | None:
    """The sum of the feed's change counters (:class:`~warehouse.models.FeedChange`): it moves in
    every transaction that changes the catalog, a consent, the SME register or a subscription.
    None when the warehouse keeps no counters (then every read plans)."""
    return session.scalar(select(func.sum(FeedChange.version)))


def next_boundary(session: Session, at: dt.datetime) -> dt.datetime | None:
    """The first instant after ``at`` at which an active consent starts or ends: until then, with
    no change counted, the consent rule answers every question as it does at ``at``."""
    starts = session.scalar(
        select(func.min(Consent.granted_at)).where(Consent.status == "active", Consent.granted_at > at)
    )
    ends = session.scalar(
        select(func.min(Consent.expires_at)).where(Consent.status == "active", Consent.expires_at > at)
    )
    found = [when for when in (starts, ends) if when is not None]
    return min(found) if found else None


def is_fresh(session: Session, lender_id: str, at: dt.datetime) -> bool:
    """Whether the lender's last sync still holds at ``at``: no change counted since, ``at`` not
    before it and not past its ``valid_until``. One small query."""
    total = select(func.sum(FeedChange.version)).scalar_subquery()
    mark = session.execute(
        select(FeedWatermark.changes, FeedWatermark.synced_at, FeedWatermark.valid_until, total).where(
            FeedWatermark.lender_id == lender_id
        )
    ).first()
    if mark is None or mark[3] is None:
        return False
    counted, synced_at, valid_until, now_counted = mark
    return bool(counted == now_counted and synced_at <= at and (valid_until is None or at < valid_until))


@dataclass(frozen=True)
class FeedState:
    """What a fresh feed's pages depend on: the change counters' sum its last sync saw and the
    ``seq`` of its newest event.

    Two reads that find the same state read the same pages: events are appended under new ``seq``
    numbers, and an event's row is emptied only by a withdrawal (which appends its tombstone in the
    same transaction) or by an erasure (which changes the SME register, so the counters, in the
    same transaction). A cache of encoded pages keyed on it is therefore exact.
    """

    changes: int
    newest: int


_FRESH_STATE = select(
    FeedWatermark.changes,
    FeedWatermark.synced_at,
    FeedWatermark.valid_until,
    select(func.sum(FeedChange.version)).scalar_subquery(),
    select(func.max(FeedEvent.seq)).where(FeedEvent.lender_id == bindparam("lender_id")).scalar_subquery(),
).where(FeedWatermark.lender_id == bindparam("lender_id"))


def fresh_state(session: Session, lender_id: str, at: dt.datetime) -> FeedState | None:
    """The lender's :class:`FeedState` when its last sync still holds at ``at`` (:func:`is_fresh`),
    else None (the feed must be refreshed first). One query: the watermark, the counters' sum and
    the newest event together (one statement built once: every feed read runs it)."""
    mark = session.execute(_FRESH_STATE, {"lender_id": lender_id}).first()
    if mark is None or mark[3] is None:
        return None
    counted, synced_at, valid_until, now_counted, last = mark
    if counted != now_counted or synced_at > at or (valid_until is not None and at >= valid_until):
        return None
    return FeedState(changes=int(now_counted), newest=int(last or 0))


def lock_lender(session: Session, lender_id: str) -> None:
    """Hold the lender's row until the transaction ends: one sync of a lender at a time (on SQLite,
    which locks the whole database for a write, by starting the write transaction)."""
    if session.get_bind().dialect.name == "sqlite":
        session.execute(update(Lender).where(Lender.lender_id == lender_id).values(name=Lender.name))
    else:
        session.scalars(select(Lender).where(Lender.lender_id == lender_id).with_for_update()).one()


def refresh(
    session: Session, store: Store, lender_id: str, *, now: dt.datetime | None = None
) -> dict[str, int] | None:
    """:func:`sync` the lender's feed if anything that can change its deliveries changed since its
    last sync; else nothing (:func:`is_fresh`, one query). Not committed. Returns the counts of
    the sync, None when none was needed.

    What can change a lender's deliveries is counted by :func:`changes` (every publish, consent
    grant, revocation, narrowing and erasure, SME register change and subscription change) or is
    time: a consent starting or expiring (:func:`next_boundary`). A sync holds until one of these.
    Concurrent readers of a stale feed queue on the lender's row (:func:`lock_lender`): the first
    plans, the others find its sync committed and only read.
    """
    at = now or utcnow()
    if at.tzinfo is None:
        raise ValueError(f"naive datetime {at!r}: a sync needs a UTC instant")
    if is_fresh(session, lender_id, at):
        return None
    _lender(session, lender_id)
    lock_lender(session, lender_id)
    if is_fresh(session, lender_id, at):
        return None
    counted = changes(session)
    counts = sync(session, store, lender_id, now=at)
    valid_until = next_boundary(session, at)
    if counts["unavailable"]:
        retry = at + RETRY_UNAVAILABLE
        valid_until = min(valid_until, retry) if valid_until is not None else retry
    if counted is not None:
        upsert(
            session,
            FeedWatermark,
            [{"lender_id": lender_id, "changes": counted, "synced_at": at, "valid_until": valid_until}],
            key=["lender_id"],
        )
    return counts


def refresh_lenders(
    engine: Engine, store: Store, *, lender_ids: Iterable[str] | None = None, now: dt.datetime | None = None
) -> dict[str, dict[str, int] | None]:
    """:func:`refresh` each lender that reads its feed over the API (it has a watermark: it was
    synced by a read, and has not taken a file pull since), of ``lender_ids`` when given, each in
    its own committed transaction, so that feed reads after a publish or a consent change rarely
    plan. Lenders that take file pulls are left alone: a sync would record as delivered what their
    next pull file is to hold. A lender whose refresh fails is logged and left to its next read,
    which plans on its own. Returns each lender's sync counts (None: nothing had changed)."""
    with session_scope(engine) as session:
        query = select(FeedWatermark.lender_id)
        if lender_ids is not None:
            query = query.where(FeedWatermark.lender_id.in_(sorted(set(lender_ids))))
        wanted = sorted(session.scalars(query))
    done: dict[str, dict[str, int] | None] = {}
    for lender_id in wanted:
        try:
            with session_scope(engine) as session:
                done[lender_id] = refresh(session, store, lender_id, now=now)
        except Exception:
            log.exception("feed of %s not refreshed; its next read plans it", lender_id)
    return done


# --- the pull -------------------------------------------------------------------------------------


def pull_id_for(at: dt.datetime) -> str:
    """The id of a pull made at ``at`` (UTC, to the microsecond), also its file name's suffix.

    >>> pull_id_for(dt.datetime(2026, 11, 2, 9, 30, tzinfo=dt.UTC))
    '20261102T093000000000Z'
    """
    return f"{at.astimezone(dt.UTC):%Y%m%dT%H%M%S%fZ}"


def _tmp(path: Path) -> Path:
    return path.with_name(f".{path.name}.tmp")


def recover_pull_files(session: Session, lender_id: str, out_dir: Path) -> dict[str, int]:
    """Finish or discard the temporary files an interrupted pull left in ``out_dir``.

    A temporary file whose pull committed (its deliveries or withdrawals are in the warehouse) is
    renamed to its final name; one whose pull did not commit is removed.
    """
    finished = removed = 0
    for tmp_path in sorted(out_dir.glob(f".{lender_id}-*.parquet.tmp")):
        final = tmp_path.with_name(tmp_path.name[1:].removesuffix(".tmp"))
        pull_id = (
            final.name.removeprefix(f"{lender_id}-").removesuffix(".parquet").removesuffix("-withdrawals")
        )
        committed = session.scalar(
            select(func.count(Delivery.id)).where(
                Delivery.lender_id == lender_id, Delivery.pull_id == pull_id
            )
        ) or session.scalar(
            select(func.count(Withdrawal.id)).where(
                Withdrawal.lender_id == lender_id, Withdrawal.pull_id == pull_id
            )
        )
        if committed:
            os.replace(tmp_path, final)
            finished += 1
        else:
            tmp_path.unlink()
            removed += 1
    if finished or removed:
        log.warning(
            "pull files of %s: %d interrupted pulls finished, %d discarded", lender_id, finished, removed
        )
    return {"finished": finished, "discarded": removed}


def pull(
    session: Session,
    store: Store,
    *,
    lender_id: str,
    out_dir: Path,
    now: dt.datetime | None = None,
    subscription: str | None = None,
) -> dict[str, Any]:
    """Deliver to ``lender_id`` what it may hold and does not have yet; report withdrawals.

    Writes ``out_dir/<lender>-<pull_id>.parquet`` (the dossier schema, described) when anything is
    delivered, and ``out_dir/<lender>-<pull_id>-withdrawals.parquet`` when a held dossier lost its
    cover. **Commits** ``session`` (deliveries and withdrawals) before the files get their final
    names. ``subscription`` names one of the lender's subscriptions (default: its only active one).
    Raises :class:`FeedError` for an unknown lender or a missing subscription.
    """
    at = now or utcnow()
    if at.tzinfo is None:
        raise ValueError(f"naive datetime {at!r}: a pull needs a UTC instant")
    _lender(session, lender_id)
    if Path(lender_id).name != lender_id or lender_id.startswith("."):
        raise FeedError(f"lender id {lender_id!r} cannot name a file")
    out_dir.mkdir(parents=True, exist_ok=True)
    recovered = recover_pull_files(session, lender_id, out_dir)
    plan = plan_pull(session, lender_id, at=at, subscription=subscription)
    chosen = plan.subscription
    pull_id = pull_id_for(at)
    dossier_path = out_dir / f"{lender_id}-{pull_id}.parquet"
    withdrawals_path = out_dir / f"{lender_id}-{pull_id}-withdrawals.parquet"
    written_files: list[Path] = []
    try:
        rows: dict[str, dict[str, Any]] = {}
        written = (
            write_dossiers(store, plan.wanted, _tmp(dossier_path), rows) if not plan.wanted.empty else []
        )
        if written:
            written_files.append(dossier_path)
        delivered = plan.wanted[plan.wanted["dossier_id"].isin(written)]
        withdrawals = plan.withdrawals
        if not withdrawals.empty:
            write_withdrawals(withdrawals, _tmp(withdrawals_path))
            written_files.append(withdrawals_path)
        cursor_from = chosen.cursor
        record_pull(session, lender_id, plan, delivered, rows, pull_id=pull_id, at=at)
        session.execute(delete(FeedWatermark).where(FeedWatermark.lender_id == lender_id))
        session.commit()
    except BaseException:
        session.rollback()
        for path in written_files:
            _tmp(path).unlink(missing_ok=True)
        raise
    for path in written_files:
        os.replace(_tmp(path), path)
    may_hold = plan.versions["may_hold"]
    log.info(
        "pull %s of %s: %d delivered, %d withdrawals", pull_id, lender_id, len(delivered), len(withdrawals)
    )
    return {
        "lender_id": lender_id,
        "subscription": chosen.name,
        "purpose": chosen.purpose,
        "pull_id": pull_id,
        "cursor_from": cursor_from,
        "cursor_to": chosen.cursor,
        "considered": len(plan.versions),
        "current": len(plan.current),
        "delivered": len(delivered),
        "not_entitled": int((~may_hold).sum()),
        "not_entitled_smes": int(plan.versions.loc[~may_hold, "sme_id"].nunique()),
        "filtered_out": int((~matches_filters(plan.current, chosen.filters)).sum()),
        "unavailable": len(plan.wanted) - len(delivered),
        "file": str(dossier_path) if len(delivered) else None,
        "withdrawals": len(withdrawals),
        "withdrawals_file": str(withdrawals_path) if not withdrawals.empty else None,
        "recovered": recovered,
    }


def lender_status(session: Session, lender_id: str, *, now: dt.datetime | None = None) -> dict[str, Any]:
    """A lender's subscriptions, deliveries, withdrawals and what its consents and filters allow ``now``.

    Per subscription: ``entitled_now`` counts the current versions (one per SME) the consent rule
    lets it hold for its purpose and that pass its filters; ``pending`` those it does not hold yet.
    """
    lender = _lender(session, lender_id)
    at = now or utcnow()
    subscriptions = session.scalars(
        select(Subscription).where(Subscription.lender_id == lender_id).order_by(Subscription.name)
    ).all()
    deliveries, last_delivered_at = session.execute(
        select(func.count(Delivery.id), func.max(Delivery.delivered_at)).where(
            Delivery.lender_id == lender_id
        )
    ).one()
    withdrawals = session.scalar(select(func.count(Withdrawal.id)).where(Withdrawal.lender_id == lender_id))
    described = []
    for s in subscriptions:
        plan = plan_pull(session, lender_id, at=at, subscription=s.name, lock=False) if s.active else None
        described.append(
            {
                "name": s.name,
                "active": s.active,
                "purpose": s.purpose,
                "filters": s.filters,
                "cursor": s.cursor,
                "entitled_now": int(matches_filters(plan.current, s.filters).sum()) if plan else 0,
                "pending": len(plan.wanted) if plan else 0,
                "withdrawals_pending": len(plan.withdrawals) if plan else 0,
            }
        )
    held = held_deliveries(session, lender_id)
    return {
        "lender_id": lender.lender_id,
        "name": lender.name,
        "subscriptions": described,
        "deliveries": deliveries,
        "holding": len(held),
        "last_delivered_at": last_delivered_at.isoformat() if last_delivered_at else None,
        "withdrawals": withdrawals,
        "entitled_now": sum(d["entitled_now"] for d in described),
    }
