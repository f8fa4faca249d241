"""The lender feed: which dossiers a lender receives, when, and which it must forget.

A lender holds subscriptions (:func:`subscribe`), each with optional filters and a cursor over the
catalog's ``feed_seq``. :func:`pull` writes into one local Parquet file every dossier published
after the cursor that

* is still in its partition's current publish, with the content the catalog recorded,
* passes the subscription's filters (:data:`FILTERS`; a missing or empty filter lets all through),
* the lender is entitled to **at pull time**: an active consent names the lender and covers every
  source the dossier used (:mod:`warehouse.consent` decides), so a consent withdrawn between
  publish and pull stops the dossier here.

Each dossier handed over is recorded as a :class:`~warehouse.models.Delivery`; the cursor then
moves to the last ``feed_seq`` considered, so a second pull finds nothing new. A re-published
dossier reaches the lender again only when its content changed (publishing gives it a new
``feed_seq``).

When a dossier already delivered to the lender is no longer entitled (consent revoked, expired or
narrowed), the pull also writes ``<lender>-<pull>-withdrawals.parquet`` and records a
:class:`~warehouse.models.Withdrawal`, so each withdrawal is reported exactly once.

Changes are made in the caller's session; the caller commits. Should that commit fail, the next
pull delivers the same dossiers again (at least once, never to a lender not entitled).
"""

from __future__ import annotations

import datetime as dt
import logging
import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from sqlalchemy import and_, func, insert, select, update
from sqlalchemy.orm import Session

from evaluation.scoring import GRADE_BANDS
from warehouse.consent import entitlement_map, is_entitled
from warehouse.dossier_schema import SCHEMA_VERSION, build_schema
from warehouse.dossier_store import (
    LOOKUP_CHUNK,
    UNPUBLISHED,
    Grants,
    content_sha256,
    store_absolute,
    utc_seconds,
)
from warehouse.errors import DossierError, InputError
from warehouse.models import Consent, Delivery, DossierVersion, Lender, Sme, Subscription, Withdrawal, utcnow
from warehouse.storage import Store

log = logging.getLogger(__name__)

FILTERS: dict[str, str] = {
    "grades": "grade",
    "industries": "industry",
    "regions": "region",
    "size_bands": "size_band",
}
"""Subscription filter keys and the dossier column each one restricts."""

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
                "description": "consent_revoked, consent_expired, or consent_no_longer_covers (the SME's "
                "consents no longer name this lender together with every source the dossier used)."
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


def normalize_filters(filters: Mapping[str, Iterable[str]] | None) -> dict[str, list[str]]:
    """Filters as ``{key: sorted distinct values}`` without empty entries; rejects unknown keys.

    >>> normalize_filters({"grades": ["B", "A", "A"], "regions": []})
    {'grades': ['A', 'B']}
    """
    normalized: dict[str, list[str]] = {}
    for key, values in (filters or {}).items():
        if key not in FILTERS:
            raise ValueError(f"unknown subscription filter {key!r}; known: {sorted(FILTERS)}")
        if isinstance(values, str) or not all(isinstance(v, str) for v in values):
            raise ValueError(f"subscription filter {key!r} must be a list of strings, not {values!r}")
        if values:
            normalized[key] = sorted(set(values))
    return normalized


def subscribe(
    session: Session,
    lender_id: str,
    *,
    name: str = "default",
    filters: Mapping[str, Iterable[str]] | None = None,
) -> Subscription:
    """Create or update the lender's subscription ``name`` (active, with ``filters``); keeps its cursor."""
    _lender(session, lender_id)
    normalized = normalize_filters(filters)
    subscription = session.scalars(
        select(Subscription).where(Subscription.lender_id == lender_id, Subscription.name == name)
    ).first()
    if subscription is None:
        subscription = Subscription(lender_id=lender_id, name=name, cursor=0)
        session.add(subscription)
    subscription.filters = normalized
    subscription.active = True
    session.flush()
    return subscription


GRADES: tuple[str, ...] = (*(letter for letter, _ in GRADE_BANDS), "E")
"""The risk grades a dossier can carry (``evaluation.scoring.grade``), best first."""

SIZE_BANDS: tuple[str, ...] = ("micro", "small", "medium")
"""The size bands by headcount (the dossier schema's ``size_band``)."""


def filter_vocabulary(session: Session, key: str) -> list[str]:
    """The values filter ``key`` may take: the grades and size bands, or the regions and
    industries of the SMEs registered in the warehouse."""
    if key == "grades":
        return list(GRADES)
    if key == "size_bands":
        return list(SIZE_BANDS)
    column = getattr(Sme, FILTERS[key])
    return list(session.scalars(select(column).distinct().order_by(column)))


def check_filters(session: Session, filters: Mapping[str, Iterable[str]]) -> dict[str, list[str]]:
    """``filters`` with each value checked against its vocabulary (:func:`filter_vocabulary`).

    Values match regardless of case and come back in the vocabulary's spelling; a value outside it
    raises :class:`~warehouse.errors.InputError` listing the valid ones, since a subscription that
    filters on a value no dossier carries would silently receive nothing.
    """
    checked: dict[str, list[str]] = {}
    for key, values in filters.items():
        if key not in FILTERS:
            raise InputError(f"unknown subscription filter {key!r}; known: {', '.join(sorted(FILTERS))}")
        vocabulary = filter_vocabulary(session, key)
        spelling = {v.casefold(): v for v in vocabulary}
        unknown = [v for v in values if v.strip().casefold() not in spelling]
        if unknown:
            known = ", ".join(vocabulary) if vocabulary else "none yet (no SMEs are registered)"
            raise InputError(f"{key} {', '.join(map(repr, unknown))} not known; valid {key}: {known}")
        checked[key] = [spelling[v.strip().casefold()] for v in values]
    return normalize_filters(checked)


def _subscription(session: Session, lender_id: str, name: str | None) -> Subscription:
    """The lender's active subscription ``name`` (locked for this pull), or its only one when unnamed."""
    query = select(Subscription).where(Subscription.lender_id == lender_id, Subscription.active.is_(True))
    if name is not None:
        query = query.where(Subscription.name == name)
    found = session.scalars(query.with_for_update()).all()
    if not found:
        which = f"named {name!r}" if name is not None else "at all"
        raise FeedError(f"lender {lender_id!r} has no active subscription {which}; subscribe it first")
    if len(found) > 1:
        raise FeedError(
            f"lender {lender_id!r} has several subscriptions {sorted(s.name for s in found)}; name one to pull"
        )
    return found[0]


# --- what a pull considers ------------------------------------------------------------------------


def feed_since(session: Session, cursor: int) -> pd.DataFrame:
    """Catalog rows after ``cursor`` in feed order, with the SME attributes filters look at."""
    columns = [
        DossierVersion.id,
        DossierVersion.dossier_id,
        DossierVersion.sme_id,
        DossierVersion.sources_used,
        DossierVersion.schema_version,
        DossierVersion.model_version,
        DossierVersion.grade,
        DossierVersion.file_path,
        DossierVersion.content_sha256,
        DossierVersion.feed_seq,
        Sme.industry,
        Sme.region,
        Sme.size_band,
    ]
    query = (
        select(*columns)
        .join(Sme, Sme.sme_id == DossierVersion.sme_id)
        .where(DossierVersion.feed_seq > cursor)
        .order_by(DossierVersion.feed_seq)
    )
    return pd.DataFrame(session.execute(query).all(), columns=[c.key for c in columns])


def matches_filters(feed: pd.DataFrame, filters: Mapping[str, list[str]]) -> pd.Series:
    """Rows of ``feed`` that pass every filter (an absent or empty filter passes all)."""
    keep = pd.Series(True, index=feed.index)
    for key, values in filters.items():
        if values:
            keep &= feed[FILTERS[key]].isin(values)
    return keep


def entitled(feed: pd.DataFrame, grants: Grants, lender_id: str) -> pd.Series:
    """Rows of ``feed`` (sme_id, sources_used) that ``lender_id`` may receive under ``grants``."""
    return pd.Series(
        [
            is_entitled(grants.get(sme_id, []), lender_id, used)
            for sme_id, used in zip(feed["sme_id"], feed["sources_used"], strict=True)
        ],
        index=feed.index,
        dtype=bool,
    )


# --- writing the pull file ------------------------------------------------------------------------


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


def write_dossiers(store: Store, wanted: pd.DataFrame, out_path: Path) -> list[str]:
    """Copy the ``wanted`` catalog rows' dossiers into ``out_path``; returns the dossier ids written.

    Files are read one at a time; the output is written under a temporary name and renamed, so
    ``out_path`` appears complete or not at all (and not at all when nothing is written).
    """
    model_versions = ",".join(sorted(wanted["model_version"].unique()))
    schema = build_schema(model_versions)
    tmp_path = out_path.with_name(f".{out_path.name}.tmp")
    writer: pq.ParquetWriter | None = None
    written: list[str] = []
    try:
        for file_path, rows in wanted.groupby("file_path", sort=False):
            table = _published_rows(store, str(file_path), rows)
            if table.num_rows == 0:
                continue
            if writer is None:
                writer = pq.ParquetWriter(tmp_path, schema)
            writer.write_table(pa.Table.from_arrays(table.select(schema.names).columns, schema=schema))
            written.extend(table.column("dossier_id").to_pylist())
    except BaseException:
        if writer is not None:
            writer.close()
        tmp_path.unlink(missing_ok=True)
        raise
    if writer is not None:
        writer.close()
        os.replace(tmp_path, out_path)
    return written


def record_deliveries(
    session: Session,
    lender_id: str,
    version_ids: list[int],
    *,
    subscription_id: int,
    pull_id: str,
    at: dt.datetime,
) -> None:
    """One :class:`Delivery` per version: new ones inserted, earlier deliveries of it updated to this pull."""
    earlier: dict[int, int] = {}
    for start in range(0, len(version_ids), LOOKUP_CHUNK):
        chunk = version_ids[start : start + LOOKUP_CHUNK]
        query = select(Delivery.dossier_version_id, Delivery.id).where(
            Delivery.lender_id == lender_id, Delivery.dossier_version_id.in_(chunk)
        )
        earlier.update((version_id, delivery_id) for version_id, delivery_id in session.execute(query))
    this_pull = {
        "lender_id": lender_id,
        "subscription_id": subscription_id,
        "pull_id": pull_id,
        "delivered_at": at,
    }
    inserts = [{**this_pull, "dossier_version_id": int(v)} for v in version_ids if v not in earlier]
    updates = [{**this_pull, "id": earlier[v]} for v in version_ids if v in earlier]
    if inserts:
        session.execute(insert(Delivery), inserts)
    if updates:
        session.execute(update(Delivery), updates)


# --- withdrawals ----------------------------------------------------------------------------------


def _unreported_deliveries(session: Session, lender_id: str) -> pd.DataFrame:
    """The lender's deliveries for which no withdrawal has been reported yet."""
    columns = [
        Delivery.dossier_version_id,
        Delivery.pull_id,
        DossierVersion.dossier_id,
        DossierVersion.sme_id,
        DossierVersion.sources_used,
    ]
    reported = and_(
        Withdrawal.lender_id == Delivery.lender_id,
        Withdrawal.dossier_version_id == Delivery.dossier_version_id,
        Withdrawal.delivery_pull_id == Delivery.pull_id,
    )
    query = (
        select(*columns)
        .join(DossierVersion, DossierVersion.id == Delivery.dossier_version_id)
        .outerjoin(Withdrawal, reported)
        .where(Delivery.lender_id == lender_id, Withdrawal.id.is_(None))
        .order_by(DossierVersion.feed_seq)
    )
    return pd.DataFrame(session.execute(query).all(), columns=[c.key for c in columns])


def why_withdrawn(
    consents: Iterable[Consent], lender_id: str, sources_used: Iterable[str], at: dt.datetime
) -> tuple[str, dt.datetime]:
    """Explain (not decide) why ``lender_id`` lost a dossier: the reason and when entitlement ended.

    Among the SME's consents whose terms name the lender and cover the sources, the one that ended
    last gives the answer (revoked: its ``revoked_at``; expired: its ``expires_at``). When none does,
    the SME's consents were narrowed and the pull time ``at`` stands in.
    """
    used = list(sources_used)
    covering = [
        c for c in consents if is_entitled([(frozenset(c.sources), frozenset(c.recipients))], lender_id, used)
    ]
    endings = [("consent_revoked", c.revoked_at) for c in covering if c.status == "revoked" and c.revoked_at]
    endings += [
        ("consent_expired", c.expires_at) for c in covering if c.status != "revoked" and c.expires_at <= at
    ]
    if not endings:
        return "consent_no_longer_covers", at
    return max(endings, key=lambda ending: ending[1])


def _consents_of(session: Session, sme_ids: list[str]) -> dict[str, list[Consent]]:
    by_sme: dict[str, list[Consent]] = {sme_id: [] for sme_id in sme_ids}
    for start in range(0, len(sme_ids), LOOKUP_CHUNK):
        chunk = sme_ids[start : start + LOOKUP_CHUNK]
        for consent in session.scalars(select(Consent).where(Consent.sme_id.in_(chunk))):
            by_sme[consent.sme_id].append(consent)
    return by_sme


def new_withdrawals(session: Session, lender_id: str, grants: Grants, at: dt.datetime) -> pd.DataFrame:
    """Deliveries to ``lender_id`` no longer entitled under ``grants`` and not reported before.

    Columns: dossier_version_id, delivery_pull_id, sme_id, dossier_id, withdrawn_at, reason.
    """
    delivered = _unreported_deliveries(session, lender_id)
    lost = delivered[~entitled(delivered, grants, lender_id)].reset_index(drop=True)
    consents = _consents_of(session, sorted(set(lost["sme_id"])))
    explained = [
        why_withdrawn(consents[sme_id], lender_id, used, at)
        for sme_id, used in zip(lost["sme_id"], lost["sources_used"], strict=True)
    ]
    return pd.DataFrame(
        {
            "dossier_version_id": lost["dossier_version_id"],
            "delivery_pull_id": lost["pull_id"],
            "sme_id": lost["sme_id"],
            "dossier_id": lost["dossier_id"],
            "withdrawn_at": [utc_seconds(when) for _reason, when in explained],
            "reason": [reason for reason, _when in explained],
        }
    )


def write_withdrawals(withdrawals: pd.DataFrame, out_path: Path) -> None:
    """The withdrawals as a described Parquet file (written under a temporary name, then renamed)."""
    table = pa.Table.from_pandas(
        withdrawals[WITHDRAWAL_SCHEMA.names], schema=WITHDRAWAL_SCHEMA, preserve_index=False
    ).replace_schema_metadata(WITHDRAWAL_SCHEMA.metadata)
    tmp_path = out_path.with_name(f".{out_path.name}.tmp")
    pq.write_table(table, tmp_path)
    os.replace(tmp_path, out_path)


# --- the pull -------------------------------------------------------------------------------------


def pull_id_for(at: dt.datetime) -> str:
    """The id of a pull made at ``at`` (UTC, to the microsecond), also its file name's suffix.

    >>> pull_id_for(dt.datetime(2026, 11, 2, 9, 30, tzinfo=dt.UTC))
    '20261102T093000000000Z'
    """
    return f"{at.astimezone(dt.UTC):%Y%m%dT%H%M%S%fZ}"


def pull(
    session: Session,
    store: Store,
    *,
    lender_id: str,
    out_dir: Path,
    now: dt.datetime | None = None,
    subscription: str | None = None,
) -> dict[str, Any]:
    """Deliver to ``lender_id`` what it is entitled to since its cursor; report withdrawals.

    Writes ``out_dir/<lender>-<pull_id>.parquet`` (the dossier schema, described) when anything is
    delivered, and ``out_dir/<lender>-<pull_id>-withdrawals.parquet`` when a delivered dossier lost
    its consent. ``subscription`` names one of the lender's subscriptions (default: its only active
    one). Raises :class:`FeedError` for an unknown lender or a missing subscription.
    """
    at = now or utcnow()
    if at.tzinfo is None:
        raise ValueError(f"naive datetime {at!r}: a pull needs a UTC instant")
    _lender(session, lender_id)
    if Path(lender_id).name != lender_id or lender_id.startswith("."):
        raise ValueError(f"lender id {lender_id!r} cannot name a file")
    chosen = _subscription(session, lender_id, subscription)
    pull_id = pull_id_for(at)
    out_dir.mkdir(parents=True, exist_ok=True)
    grants = entitlement_map(session, at=at)

    feed = feed_since(session, chosen.cursor)
    published = (feed["file_path"] != UNPUBLISHED) & (feed["schema_version"] == SCHEMA_VERSION)
    wanted_by_filters = matches_filters(feed, chosen.filters)
    may_receive = entitled(feed, grants, lender_id)
    wanted = feed[published & wanted_by_filters & may_receive]

    dossier_path = out_dir / f"{lender_id}-{pull_id}.parquet"
    written = write_dossiers(store, wanted, dossier_path) if not wanted.empty else []
    delivered = wanted[wanted["dossier_id"].isin(written)]
    record_deliveries(
        session, lender_id, delivered["id"].tolist(), subscription_id=chosen.id, pull_id=pull_id, at=at
    )
    cursor_from = chosen.cursor
    if not feed.empty:
        chosen.cursor = int(feed["feed_seq"].max())

    withdrawals = new_withdrawals(session, lender_id, grants, at)
    withdrawals_path = out_dir / f"{lender_id}-{pull_id}-withdrawals.parquet"
    if not withdrawals.empty:
        write_withdrawals(withdrawals, withdrawals_path)
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
            for row in withdrawals.itertuples(index=False)
        )
    session.flush()
    log.info(
        "pull %s of %s: %d delivered, %d withdrawals, cursor %d -> %d",
        pull_id,
        lender_id,
        len(delivered),
        len(withdrawals),
        cursor_from,
        chosen.cursor,
    )
    return {
        "lender_id": lender_id,
        "subscription": chosen.name,
        "pull_id": pull_id,
        "cursor_from": cursor_from,
        "cursor_to": chosen.cursor,
        "considered": len(feed),
        "delivered": len(delivered),
        "not_entitled": int((published & ~may_receive).sum()),
        "filtered_out": int((published & may_receive & ~wanted_by_filters).sum()),
        "unavailable": len(wanted) - len(delivered) + int((~published).sum()),
        "file": str(dossier_path) if len(delivered) else None,
        "withdrawals": len(withdrawals),
        "withdrawals_file": str(withdrawals_path) if not withdrawals.empty else None,
    }


def lender_status(session: Session, lender_id: str, *, now: dt.datetime | None = None) -> dict[str, Any]:
    """A lender's subscriptions (cursor, pending), deliveries, withdrawals and dossiers entitled ``now``.

    ``entitled_now`` counts the currently published dossiers the lender's consents allow, whatever
    its subscription filters; ``pending`` counts catalog rows after a subscription's cursor.
    """
    lender = _lender(session, lender_id)
    latest_seq = session.scalar(select(func.max(DossierVersion.feed_seq))) or 0
    subscriptions = session.scalars(
        select(Subscription).where(Subscription.lender_id == lender_id).order_by(Subscription.name)
    ).all()
    deliveries, last_delivered_at = session.execute(
        select(func.count(Delivery.id), func.max(Delivery.delivered_at)).where(
            Delivery.lender_id == lender_id
        )
    ).one()
    withdrawals = session.scalar(select(func.count(Withdrawal.id)).where(Withdrawal.lender_id == lender_id))
    published = feed_since(session, 0)
    published = published[
        (published["file_path"] != UNPUBLISHED) & (published["schema_version"] == SCHEMA_VERSION)
    ]
    pending = {
        s.id: session.scalar(select(func.count(DossierVersion.id)).where(DossierVersion.feed_seq > s.cursor))
        for s in subscriptions
    }
    return {
        "lender_id": lender.lender_id,
        "name": lender.name,
        "subscriptions": [
            {
                "name": s.name,
                "active": s.active,
                "filters": s.filters,
                "cursor": s.cursor,
                "latest_feed_seq": latest_seq,
                "pending": pending[s.id],
            }
            for s in subscriptions
        ],
        "deliveries": deliveries,
        "last_delivered_at": last_delivered_at.isoformat() if last_delivered_at else None,
        "withdrawals": withdrawals,
        "entitled_now": int(entitled(published, entitlement_map(session, at=now), lender_id).sum()),
    }
