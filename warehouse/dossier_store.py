"""Publishing the credit dossier: Parquet parts, then the catalog, then the manifest.

A publish turns the scored frames of one as-of date (one frame per shard, from evaluation) into the
dataset lenders read::

    dossiers/schema=<v>/as_of=<date>/part-<NNNN>-<attempt>.parquet   one part per scored frame
    manifests/dossiers/schema=<v>/as_of=<date>.json                  files, rows, sha256

The dataset folder holds nothing but Parquet, so pandas, polars, DuckDB and Spark read it as is
(``schema`` and ``as_of`` become hive partition columns). A careful reader trusts the files its
manifest lists, with their sha256 (:func:`read_published`).

**Crash safety.** A publish never overwrites a file the current manifest lists: a part whose bytes
changed is written under a new name (``<attempt>``, one per publish), a part whose bytes did not
keeps its file. The catalog is committed next, then the manifest is replaced in one write, then the
files no manifest lists any more are removed. A publish killed at any point therefore leaves the
previous version of its date readable and complete: before the commit, catalog and manifest both
still describe it; between the commit and the manifest, the catalog names the new files and the
manifest the old ones, all of which exist. The retry (the same scored frames) gives the same
content, so it adds no version, and it removes the orphaned parts of the killed attempt.

Evaluation hands over one row per SME per consent scope (:class:`warehouse.consent.Scope`); each is
a dossier version of its own, ``<sme_id>:<as_of>:v<schema>:<scope>``. Only versions some lender may
receive now (:func:`warehouse.consent.any_recipients`: an active consent covering every
source the version used and its history window) are published; the others are withheld and counted.
The published dataset is **internal**: lenders receive only what :mod:`warehouse.feed` delivers to
them. Each published row gets a catalog row (:class:`~warehouse.models.DossierVersion`)
holding the sha256 of its content: a re-publish with the same content keeps its ``feed_seq`` and
``published_at`` (lenders do not receive it again), changed content takes the next ``feed_seq``.
Re-running a publish keeps its byte-identical files and leaves the catalog as it was.

**An unchanged SME keeps its version across dates.** A version keeps the as-of date it was first
published for (its id, its partition). Publishing a later date compares each staged dossier with
the current version of its SME and scope (:func:`current_catalog`: the newest published one of an
earlier or the same date) by a date-free content key (:func:`content_hashes`: the content without
:data:`DATED_COLUMNS`); when they are equal (and some lender may still receive it) the SME keeps
that version: no catalog row, no ``feed_seq``, nothing in the date's partition. A date's partition
therefore holds the versions first published for it; a kept version is marked current through
the later date (``current_through``), and :func:`read_as_of` reads the dossiers a date stands on.
A version is kept only across consecutive published dates: an SME with no dossier of that scope
on a date in between (not staged, quarantined or withheld) gets a new version when it returns, and
a publish that does not keep a version the catalog counted for its date (a re-run that changed it,
or an earlier date published later on which the SME had none) ends the version at the published
date before (:func:`end_interrupted`), so no date is said to stand on a dossier it did not stage.

>>> dossier_ids(pd.Series(["SME-000042"]), dt.date(2026, 11, 1), pd.Series(["accounting+tax@36m"])).tolist()
['SME-000042:2026-11-01:v3:accounting+tax@36m']
"""

from __future__ import annotations

import datetime as dt
import hashlib
import io
import logging
import posixpath
import re
import uuid
from collections import Counter
from collections.abc import Iterable
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from sqlalchemy import func, insert, select, update
from sqlalchemy.orm import Session

from warehouse.canonical import SOURCES
from warehouse.consent import any_recipients
from warehouse.db import in_chunks, rows_frame, select_frame
from warehouse.dossier_schema import (
    ALL_COLUMNS,
    DOSSIER_SCHEMA,
    FEATURE_COLUMNS,
    SCHEMA_VERSION,
    SCORE_COLUMNS,
    build_schema,
)
from warehouse.errors import DossierError
from warehouse.models import DossierVersion, Publish, Sme, utcnow
from warehouse.storage import Store, sha256_hex

log = logging.getLogger(__name__)

SCORED_COLUMNS: tuple[str, ...] = (
    "sme_id",
    "scope",
    "history_months",
    "sources_used",
    *(c.name for c in FEATURE_COLUMNS + SCORE_COLUMNS),
)
"""What evaluation hands over per SME; everything else in a dossier row is added here."""

CONTENT_COLUMNS: tuple[str, ...] = tuple(c.name for c in ALL_COLUMNS if c.name != "published_at")
"""The columns whose values make a dossier's content (its hash ignores when it was published)."""

DATED_COLUMNS: tuple[str, ...] = ("dossier_id", "as_of_date")
"""Content columns that only restate the as-of date the version was first published for."""

KEY_COLUMNS: tuple[str, ...] = tuple(c for c in CONTENT_COLUMNS if c not in DATED_COLUMNS)
"""The columns of a version's date-free content key (:func:`content_hashes`)."""

UNPUBLISHED = ""
"""``file_path`` of a catalog row whose dossier a later publish of its date no longer contains."""

SME_IDENTITY = {"name": "sme_name", "industry": "industry", "region": "region", "size_band": "size_band"}
WITHHELD_EXAMPLES = 20


class DossierStoreError(DossierError, RuntimeError):
    """A partition whose manifest lists its files but whose bytes do not match the manifest."""


# --- small pure helpers ---------------------------------------------------------------------------


def utc_seconds(instant: dt.datetime) -> dt.datetime:
    """``instant`` in UTC, to the second (dossier timestamps are second-precision)."""
    if instant.tzinfo is None:
        raise ValueError(f"naive datetime {instant!r}: publishing needs a UTC instant")
    return instant.astimezone(dt.UTC).replace(microsecond=0)


def dossier_ids(
    sme_ids: pd.Series, as_of: dt.date, scopes: pd.Series, schema_version: int = SCHEMA_VERSION
) -> pd.Series:
    """``<sme_id>:<as_of>:v<schema_version>:<scope>`` for each row: the stable id of a dossier version."""
    return sme_ids + f":{as_of.isoformat()}:v{schema_version}:" + scopes.to_numpy(dtype=object)


def store_relative(store: Store, path: str) -> str:
    """``path`` relative to the store root: what manifests and the catalog record."""
    return posixpath.relpath(path, store.root)


def store_absolute(store: Store, relative: str) -> str:
    return posixpath.join(store.root, relative)


def _netstrings(values: pa.ChunkedArray | pa.Array) -> pa.ChunkedArray | pa.Array:
    """Each value as ``<length>:<text>`` (null as ``-``): self-delimiting, so joins stay unambiguous."""
    text = pc.cast(values, pa.string())
    framed = pc.binary_join_element_wise(pc.cast(pc.utf8_length(text), pa.string()), text, ":")
    return pc.fill_null(framed, "-")


def _list_text(column: pa.ChunkedArray) -> pa.ChunkedArray:
    """Each list as the concatenated netstrings of its elements (null lists stay null)."""
    chunks = []
    for chunk in column.chunks:
        lengths = pc.fill_null(pc.list_value_length(chunk), 0)
        offsets = pa.concat_arrays([pa.array([0], pa.int32()), pc.cumulative_sum(lengths).cast(pa.int32())])
        elements = _netstrings(pc.list_flatten(chunk))
        relisted = pa.ListArray.from_arrays(offsets, elements, mask=chunk.is_null())
        chunks.append(pc.binary_join(relisted, ""))
    return pa.chunked_array(chunks, pa.string())


def _row_digests(table: pa.Table, *selections: Iterable[str]) -> list[list[str]]:
    """For each selection of columns, the sha256 of each row's values in them, in row order.

    Values are rendered by Arrow (floats in their shortest round-trip form) and framed as
    netstrings, once per column whichever selections name it.
    """
    if table.num_rows == 0:
        return [[] for _ in selections]
    framed: dict[str, Any] = {}
    digests = []
    for names in selections:
        parts = []
        for name in names:
            if name not in framed:
                column = table.column(name)
                framed[name] = _netstrings(_list_text(column) if pa.types.is_list(column.type) else column)
            parts.append(framed[name])
        rows = pc.binary_join_element_wise(*parts, "")
        digests.append([hashlib.sha256(text.encode()).hexdigest() for text in rows.to_pylist()])
    return digests


def content_sha256(table: pa.Table) -> list[str]:
    """sha256 of each dossier row's content (every column but ``published_at``), in row order.

    Two rows hash alike only when every content value is equal (:func:`_row_digests`).
    """
    return _row_digests(table, CONTENT_COLUMNS)[0]


def content_hashes(table: pa.Table) -> tuple[list[str], list[str]]:
    """Each dossier row's :func:`content_sha256` and its date-free content key (the same without
    :data:`DATED_COLUMNS`), in row order: two dates' dossiers of an SME and scope have equal keys
    exactly when nothing but the date differs."""
    sha256, key = _row_digests(table, CONTENT_COLUMNS, KEY_COLUMNS)
    return sha256, key


# --- checking and completing the scored frames ----------------------------------------------------


def _examples(values: Iterable[str], limit: int = 5) -> str:
    values = sorted(set(values))
    more = f" and {len(values) - limit} more" if len(values) > limit else ""
    return ", ".join(values[:limit]) + more


def check_scored(frame: pd.DataFrame, part: int) -> pd.DataFrame:
    """The columns of :data:`SCORED_COLUMNS` of one scored frame, sorted by SME, sources as sorted lists.

    Raises ``ValueError`` naming the frame (part number), the SMEs and the field when a column is
    missing, an SME appears twice, a required value is null or ``sources_used`` is empty or names an
    unknown source.
    """
    where = f"scored frame {part} (part-{part:04d})"
    if frame.empty:
        return pd.DataFrame({name: pd.Series(dtype=object) for name in SCORED_COLUMNS})
    missing = [name for name in SCORED_COLUMNS if name not in frame.columns]
    if missing:
        raise ValueError(f"{where}: missing columns {missing}")
    checked = frame.loc[:, list(SCORED_COLUMNS)].sort_values(["sme_id", "scope"], kind="stable")
    checked = checked.reset_index(drop=True)
    duplicated = checked["sme_id"][checked.duplicated(["sme_id", "scope"])]
    if not duplicated.empty:
        raise ValueError(f"{where}: SMEs appear more than once in one scope: {_examples(duplicated)}")
    required = [
        "sme_id",
        "scope",
        "history_months",
        "sources_used",
        *(c.name for c in FEATURE_COLUMNS + SCORE_COLUMNS if not c.nullable),
    ]
    for name in required:
        nulls = checked[name].isna()
        if nulls.any():
            raise ValueError(f"{where}: field {name} is null for SMEs {_examples(checked['sme_id'][nulls])}")
    checked["sources_used"] = checked["sources_used"].map(lambda used: sorted(set(used)))
    empty = checked["sources_used"].map(len) == 0
    if empty.any():
        raise ValueError(
            f"{where}: field sources_used is empty for SMEs {_examples(checked['sme_id'][empty])}"
        )
    exploded = checked[["sme_id", "sources_used"]].explode("sources_used")
    unknown = exploded[~exploded["sources_used"].isin(SOURCES)]
    if not unknown.empty:
        raise ValueError(
            f"{where}: field sources_used names unknown sources {_examples(unknown['sources_used'].astype(str))} "
            f"for SMEs {_examples(unknown['sme_id'])}; known: {list(SOURCES)}"
        )
    return checked


def sme_identity(session: Session, sme_ids: Iterable[str]) -> pd.DataFrame:
    """Name, industry, region, size band and founding year of ``sme_ids`` from the ``smes`` table."""
    columns = [Sme.sme_id, Sme.name, Sme.industry, Sme.region, Sme.size_band, Sme.founded_year]
    identity = select_frame(
        session, select(*columns), [c.key for c in columns], where_in=(Sme.sme_id, sme_ids)
    )
    identity["founded_year"] = identity["founded_year"].astype("Int32")
    return identity.rename(columns=SME_IDENTITY)


def with_identity(
    scored: pd.DataFrame, identity: pd.DataFrame, *, as_of: dt.date, model_version: str, part: int
) -> pd.DataFrame:
    """``scored`` with the identity and provenance columns (all but ``published_at``) added."""
    dossiers = scored.merge(identity, on="sme_id", how="left", validate="many_to_one", indicator=True)
    unknown = dossiers["sme_id"][dossiers["_merge"] == "left_only"]
    if not unknown.empty:
        raise ValueError(
            f"scored frame {part} (part-{part:04d}): SMEs not in the smes table: {_examples(unknown)}"
        )
    dossiers = dossiers.drop(columns="_merge")
    dossiers["dossier_id"] = dossier_ids(dossiers["sme_id"], as_of, dossiers["scope"])
    dossiers["as_of_date"] = as_of
    dossiers["schema_version"] = SCHEMA_VERSION
    dossiers["model_version"] = model_version
    return dossiers


def to_content_table(dossiers: pd.DataFrame, schema: pa.Schema, part: int) -> pa.Table:
    """The dossier rows as Arrow, typed by ``schema``, without ``published_at``."""
    content_schema = pa.schema([schema.field(name) for name in CONTENT_COLUMNS])
    try:
        return pa.Table.from_pandas(
            dossiers[list(CONTENT_COLUMNS)], schema=content_schema, preserve_index=False
        )
    except (pa.ArrowInvalid, pa.ArrowTypeError, ValueError) as error:
        raise ValueError(f"scored frame {part} (part-{part:04d}): {error}") from error


# --- the catalog ----------------------------------------------------------------------------------


def catalog_rows(session: Session, wanted_ids: Iterable[str]) -> pd.DataFrame:
    """Existing catalog rows of ``wanted_ids``: id, content hash and key, feed_seq, published_at, file_path."""
    columns = [
        DossierVersion.dossier_id,
        DossierVersion.id,
        DossierVersion.content_sha256,
        DossierVersion.content_key,
        DossierVersion.current_through,
        DossierVersion.feed_seq,
        DossierVersion.published_at,
        DossierVersion.file_path,
    ]
    return select_frame(
        session, select(*columns), [c.key for c in columns], where_in=(DossierVersion.dossier_id, wanted_ids)
    )


def stamp_versions(
    dossiers: pd.DataFrame, existing: pd.DataFrame, *, next_seq: int, published_at: dt.datetime
) -> pd.DataFrame:
    """Decide each row's ``feed_seq`` and ``published_at`` against the catalog rows ``existing``.

    A row whose content (``content_sha256``) equals its published catalog row keeps that row's
    ``feed_seq`` and ``published_at``; a new or changed row, or one that a publish had withdrawn
    from its partition, takes the next sequence number (in row order) and ``published_at``.
    A kept row's ``current_through`` stays (a later date may have kept it), a fresh one's is its
    as-of date. Adds ``feed_seq``, ``published_at``, ``is_new_version``, ``current_through`` and
    the catalog's ``catalog_id``, ``catalog_file_path`` and ``catalog_content_key`` (missing for
    dossiers not in the catalog yet).
    """
    merged = dossiers.merge(
        existing.rename(
            columns={
                "id": "catalog_id",
                "content_sha256": "catalog_sha256",
                "content_key": "catalog_content_key",
                "current_through": "catalog_current_through",
                "feed_seq": "catalog_feed_seq",
                "published_at": "catalog_published_at",
                "file_path": "catalog_file_path",
            }
        ),
        on="dossier_id",
        how="left",
        validate="one_to_one",
    )
    unchanged = (merged["catalog_sha256"] == merged["content_sha256"]) & (
        merged["catalog_file_path"].fillna(UNPUBLISHED) != UNPUBLISHED
    )
    fresh = ~unchanged
    new_seq = pd.Series(range(next_seq, next_seq + int(fresh.sum())), index=merged.index[fresh])
    catalog_published_at = pd.to_datetime(merged["catalog_published_at"], utc=True)
    as_of_dates = pd.to_datetime(merged["as_of_date"])
    through = pd.to_datetime(merged["catalog_current_through"]).where(unchanged).fillna(as_of_dates)
    stamps = pd.DataFrame(
        {
            "is_new_version": fresh,
            "feed_seq": merged["catalog_feed_seq"].where(unchanged, new_seq).astype("int64"),
            "published_at": catalog_published_at.where(unchanged, pd.Timestamp(published_at)).dt.floor("s"),
            "catalog_id": merged["catalog_id"].astype("Int64"),
            "catalog_file_path": merged["catalog_file_path"],
            "catalog_content_key": merged["catalog_content_key"],
            "current_through": through.where(through > as_of_dates, as_of_dates).dt.date,
        }
    )
    return dossiers.assign(**stamps.set_axis(dossiers.index))


CATALOG_COLUMNS = (
    "dossier_id",
    "sme_id",
    "as_of_date",
    "schema_version",
    "model_version",
    "sources_used",
    "scope",
    "history_months",
    "content_sha256",
    "content_key",
    "current_through",
    "grade",
    "pd_12m",
    "feed_seq",
    "published_at",
)


def _catalog_records(
    stamped: pd.DataFrame, *, publish_id: int, file_path: str, with_id: bool = False
) -> list[dict[str, Any]]:
    records = stamped[list(CATALOG_COLUMNS)].to_dict("records")
    published_at = stamped["published_at"].dt.to_pydatetime()
    ids = stamped["catalog_id"].tolist()
    for record, instant, catalog_id in zip(records, published_at, ids, strict=True):
        record["published_at"] = instant
        record["publish_id"] = publish_id
        record["file_path"] = file_path
        if with_id:
            record["id"] = int(catalog_id)
    return records


def write_catalog(session: Session, stamped: pd.DataFrame, *, publish_id: int, file_path: str) -> None:
    """Insert the catalog rows of new dossiers and update those whose version or file changed (or
    that have no content key yet: rows published before keys were kept get theirs).

    Rows already in the catalog with the same version in the same file are left untouched, so a
    re-run of a publish writes nothing here.
    """
    is_new = stamped["catalog_id"].isna()
    outdated = ~is_new & (
        stamped["is_new_version"]
        | (stamped["catalog_file_path"] != file_path)
        | stamped["catalog_content_key"].isna()
    )
    inserts = _catalog_records(stamped[is_new], publish_id=publish_id, file_path=file_path)
    updates = _catalog_records(stamped[outdated], publish_id=publish_id, file_path=file_path, with_id=True)
    if inserts:
        session.execute(insert(DossierVersion), inserts)
    if updates:
        session.execute(update(DossierVersion), updates)


CURRENT_COLUMNS = (
    DossierVersion.id,
    DossierVersion.dossier_id,
    DossierVersion.sme_id,
    DossierVersion.scope,
    DossierVersion.as_of_date,
    DossierVersion.content_key,
    DossierVersion.current_through,
    DossierVersion.grade,
    DossierVersion.feed_seq,
    DossierVersion.file_path,
)


def _current_rows(
    session: Session, as_of: dt.date, sme_ids: Iterable[str] | None, *live: Any
) -> pd.DataFrame:
    """Per SME and scope, the catalog row of the newest as-of date among the published (not
    withdrawn) rows of the current schema with an as-of date on or before ``as_of`` that also meet
    ``live``; of ``sme_ids`` (default every SME), ordered by SME and scope."""
    live = (
        DossierVersion.schema_version == SCHEMA_VERSION,
        DossierVersion.file_path != UNPUBLISHED,
        DossierVersion.as_of_date <= as_of,
        *live,
    )

    def query(*where: Any) -> Any:
        newest = (
            select(
                DossierVersion.sme_id,
                DossierVersion.scope,
                func.max(DossierVersion.as_of_date).label("as_of_date"),
            )
            .where(*live, *where)
            .group_by(DossierVersion.sme_id, DossierVersion.scope)
            .subquery()
        )
        return (
            select(*CURRENT_COLUMNS)
            .join(
                newest,
                (DossierVersion.sme_id == newest.c.sme_id)
                & (DossierVersion.scope == newest.c.scope)
                & (DossierVersion.as_of_date == newest.c.as_of_date),
            )
            .where(*live)
        )

    rows: list[Any] = []
    if sme_ids is None:
        rows.extend(session.execute(query()))
    else:
        for chunk in in_chunks(sme_ids):
            rows.extend(session.execute(query(DossierVersion.sme_id.in_(chunk))))
    frame = rows_frame(rows, [c.key for c in CURRENT_COLUMNS])
    return frame.sort_values(["sme_id", "scope"], kind="stable", ignore_index=True)


def current_catalog(session: Session, as_of: dt.date, sme_ids: Iterable[str]) -> pd.DataFrame:
    """The version of each SME (of ``sme_ids``) and scope that a publish of ``as_of`` compares its
    staged dossiers with: the newest published (not withdrawn) catalog row of the current schema
    with an as-of date on or before ``as_of``. One row per SME and scope; columns id, dossier_id,
    sme_id, scope, as_of_date, content_key, current_through, grade, feed_seq, file_path."""
    return _current_rows(session, as_of, sme_ids)


def versions_as_of(session: Session, as_of: dt.date) -> pd.DataFrame:
    """The catalog rows of the dossiers ``as_of`` stands on: per SME and scope, the version its
    publish of ``as_of`` published or kept (first published for ``as_of`` or earlier, current
    through ``as_of`` or later, not withdrawn; the newest such). Columns as :func:`current_catalog`.

    A version keeps the as-of date it was first published for and a publish adds a version only for
    what changed, so this, not one date's partition, is what a date's dossiers are. An SME the
    publish of ``as_of`` did not stage (quarantined, withheld) has none, as before.
    """
    through = func.coalesce(DossierVersion.current_through, DossierVersion.as_of_date)
    return _current_rows(session, as_of, None, through >= as_of)


def kept_versions(
    dossiers: pd.DataFrame, current: pd.DataFrame, as_of: dt.date, *, previous: dt.date | None = None
) -> pd.Series:
    """For each staged dossier (with its ``content_key``), the catalog id of the current version of
    its SME and scope (:func:`current_catalog`) that it keeps: one first published for an earlier
    date, with the same date-free content key, that the date's dossiers stood on at ``previous``
    (the latest published date before ``as_of``; current through it or later), so a version is
    never kept across a date on which the SME had none. Missing where it keeps none. Rows of old
    catalogs without a key never match (they get a new version). A Series on ``dossiers``' index."""
    none = pd.Series(pd.NA, index=dossiers.index, dtype="Int64")
    if dossiers.empty or current.empty:
        return none
    merged = dossiers[["sme_id", "scope", "content_key"]].merge(
        current[["sme_id", "scope", "id", "as_of_date", "current_through", "content_key"]].rename(
            columns={"as_of_date": "current_as_of", "content_key": "current_key"}
        ),
        on=["sme_id", "scope"],
        how="left",
        validate="one_to_one",
    )
    current_as_of = pd.to_datetime(merged["current_as_of"])
    earlier = current_as_of < pd.Timestamp(as_of)
    if previous is not None:
        through = pd.to_datetime(merged["current_through"]).fillna(current_as_of)
        earlier &= through >= pd.Timestamp(previous)
    same = merged["current_key"].notna() & (merged["current_key"] == merged["content_key"])
    ids = merged["id"].astype("Int64").where((earlier & same).to_numpy(dtype=bool))
    return ids.set_axis(dossiers.index)


def previous_published(session: Session, as_of: dt.date) -> dt.date | None:
    """The latest as-of date before ``as_of`` with a publish of the current schema (None if none)."""
    return session.scalar(
        select(func.max(Publish.as_of_date)).where(
            Publish.as_of_date < as_of, Publish.schema_version == SCHEMA_VERSION
        )
    )


def standing_on(session: Session, as_of: dt.date) -> pd.DataFrame:
    """Versions first published for a date before ``as_of`` that the catalog already counts current
    through ``as_of`` or later (a re-run of ``as_of``, or a later date published first kept them):
    id, sme_id, scope, as_of_date, current_through. Empty on a date's first, in-order publish."""
    columns = [
        DossierVersion.id,
        DossierVersion.sme_id,
        DossierVersion.scope,
        DossierVersion.as_of_date,
        DossierVersion.current_through,
    ]
    query = select(*columns).where(
        DossierVersion.schema_version == SCHEMA_VERSION,
        DossierVersion.file_path != UNPUBLISHED,
        DossierVersion.as_of_date < as_of,
        DossierVersion.current_through >= as_of,
    )
    return select_frame(session, query, [c.key for c in columns])


def end_interrupted(
    session: Session,
    standing: pd.DataFrame,
    as_of: dt.date,
    *,
    kept_ids: set[int],
    staged: set[tuple[str, str]],
    previous: dt.date | None,
) -> int:
    """End the versions of ``standing`` (:func:`standing_on`, read before the publish of
    ``as_of``) that this publish did not keep, where the catalog would otherwise count them for
    ``as_of``: those whose SME and scope the publish did not stage at all (``staged``: the SME and
    scope pairs it published or kept), and those current through ``as_of`` exactly (a re-run that
    changed them). Such a version is then current through ``previous`` (the latest published date
    before ``as_of``, never before its own date). A version current through a later date whose SME
    has none on ``as_of`` stops standing for those later dates too (one span per version): re-running
    them gives the SME a new version there. Returns how many were ended."""
    if standing.empty:
        return 0
    pairs = pd.Series(list(zip(standing["sme_id"], standing["scope"], strict=True)), index=standing.index)
    not_kept = ~standing["id"].isin(kept_ids)
    absent = ~pairs.isin(staged)
    exactly = pd.to_datetime(standing["current_through"]) == pd.Timestamp(as_of)
    ended = standing[not_kept & (absent | exactly)]
    updates = [
        {"id": int(version_id), "current_through": max(first, previous) if previous is not None else first}
        for version_id, first in zip(ended["id"], ended["as_of_date"], strict=True)
    ]
    if updates:
        session.execute(update(DossierVersion), updates)
    return len(updates)


def mark_kept(session: Session, version_ids: Iterable[int], as_of: dt.date) -> None:
    """Versions a publish of ``as_of`` kept are current through ``as_of`` (never moved back)."""
    for chunk in in_chunks(sorted({int(v) for v in version_ids})):
        session.execute(
            update(DossierVersion)
            .where(
                DossierVersion.id.in_(chunk),
                (DossierVersion.current_through.is_(None)) | (DossierVersion.current_through < as_of),
            )
            .values(current_through=as_of)
        )


def _unpublish_missing(session: Session, as_of: dt.date, published_ids: set[str]) -> int:
    """Mark catalog rows of ``as_of`` that this publish no longer contains; returns how many."""
    current = session.scalars(
        select(DossierVersion.dossier_id).where(
            DossierVersion.as_of_date == as_of,
            DossierVersion.schema_version == SCHEMA_VERSION,
            DossierVersion.file_path != UNPUBLISHED,
        )
    ).all()
    missing = sorted(set(current) - published_ids)
    for chunk in in_chunks(missing):
        session.execute(
            update(DossierVersion).where(DossierVersion.dossier_id.in_(chunk)).values(file_path=UNPUBLISHED)
        )
    return len(missing)


def _publish_row(session: Session, as_of: dt.date, model_version: str, manifest: str) -> Publish:
    row = session.scalars(
        select(Publish).where(Publish.as_of_date == as_of, Publish.schema_version == SCHEMA_VERSION)
    ).first()
    if row is None:
        row = Publish(as_of_date=as_of, schema_version=SCHEMA_VERSION, files=0, rows=0)
        session.add(row)
    row.model_version = model_version
    row.manifest_path = manifest
    session.flush()
    return row


# --- manifests and readers ------------------------------------------------------------------------


def read_manifest(store: Store, as_of: dt.date | str) -> dict[str, Any] | None:
    """The manifest of ``as_of``'s partition, or None when there is none (not published, or publishing)."""
    path = store.layout.manifest(SCHEMA_VERSION, str(as_of))
    return store.read_json(path) if store.exists(path) else None


def _same_files(manifest: dict[str, Any], files: list[dict[str, Any]], model_version: str) -> bool:
    return manifest["files"] == files and manifest["model_version"] == model_version


def published_dates(store: Store) -> list[str]:
    """As-of dates that have a partition folder in the current schema version (complete or not)."""
    schema_dir = posixpath.dirname(store.layout.dossier_partition(SCHEMA_VERSION, "any"))  # holds as_of=*
    names = (posixpath.basename(p) for p in store.list(schema_dir))
    return sorted(name.removeprefix("as_of=") for name in names if name.startswith("as_of="))


def read_partition(store: Store, as_of: dt.date | str) -> pa.Table | None:
    """One as-of partition as its manifest lists it, or None when there is no manifest or a file it
    lists is missing. Parts no manifest lists (left by a publish that was killed) are not read.

    Raises :class:`DossierStoreError` when a listed file's bytes differ from the manifest's sha256.
    """
    as_of = str(as_of)
    manifest = read_manifest(store, as_of)
    partition = store.layout.dossier_partition(SCHEMA_VERSION, as_of)
    present = {store_relative(store, p) for p in store.list(partition, suffix=".parquet")}
    if manifest is None:
        if present:
            log.info("dossier partition %s has no manifest (publish incomplete): skipped", partition)
        return None
    listed = {entry["path"] for entry in manifest["files"]}
    if not listed <= present:
        log.info("dossier partition %s lacks files its manifest lists: skipped", partition)
        return None
    if present - listed:
        log.info(
            "dossier partition %s: %d parts no manifest lists, not read", partition, len(present - listed)
        )
    tables = []
    for entry in manifest["files"]:
        data = store.read_bytes(store_absolute(store, entry["path"]))
        if sha256_hex(data) != entry["sha256"]:
            raise DossierStoreError(
                f"{entry['path']}: sha256 {sha256_hex(data)} differs from its manifest's {entry['sha256']}"
            )
        tables.append(pq.read_table(io.BytesIO(data)))
    return pa.concat_tables(tables) if tables else DOSSIER_SCHEMA.empty_table()


def read_published(store: Store, as_of: dt.date | str | None = None) -> pd.DataFrame:
    """Published dossiers of ``as_of`` (default: every date), reading only manifest-complete partitions.

    Every file's sha256 is checked against the manifest; partitions without a manifest, or lacking a
    file it lists, are skipped. Returns the dossier columns.
    """
    dates = [str(as_of)] if as_of is not None else published_dates(store)
    tables = [table for table in (read_partition(store, d) for d in dates) if table is not None]
    if not tables:
        return DOSSIER_SCHEMA.empty_table().to_pandas()
    schema = DOSSIER_SCHEMA.remove_metadata()
    return pa.concat_tables([t.cast(schema) for t in tables]).to_pandas()


def read_as_of(session: Session, store: Store, as_of: dt.date) -> pd.DataFrame:
    """The dossiers ``as_of`` stands on (:func:`versions_as_of`: one per SME and scope), each read
    from the partition of the date it was first published for, as :func:`read_partition` reads it
    (manifest-complete, sha256 checked; a version its partition's manifest does not list yet is
    left out). Returns the dossier columns, ordered by SME and scope."""
    current = versions_as_of(session, as_of)
    schema = DOSSIER_SCHEMA.remove_metadata()
    tables = []
    for day, versions in current.groupby("as_of_date", sort=True):
        table = read_partition(store, day)
        if table is not None:
            wanted = pa.array(versions["dossier_id"].tolist(), pa.string())
            tables.append(table.filter(pc.is_in(table.column("dossier_id"), value_set=wanted)).cast(schema))
    if not tables:
        return DOSSIER_SCHEMA.empty_table().to_pandas()
    frame = pa.concat_tables(tables).to_pandas()
    return frame.sort_values(["sme_id", "scope"], kind="stable", ignore_index=True)


# --- publishing -----------------------------------------------------------------------------------


def prepare_dossiers(
    session: Session,
    frame: pd.DataFrame,
    part: int,
    *,
    as_of: dt.date,
    model_version: str,
    at: dt.datetime,
    seen_smes: set[str],
) -> tuple[pd.DataFrame, list[str]]:
    """One scored frame checked and completed with identity, split into publishable rows and the
    dossier ids withheld because no lender may receive them at ``at``.

    ``seen_smes`` collects the SMEs of earlier frames: an SME in two frames is an error.
    """
    checked = check_scored(frame, part)
    smes = checked["sme_id"].tolist()
    repeated = seen_smes.intersection(smes)
    if repeated:
        raise ValueError(
            f"scored frame {part} (part-{part:04d}): SMEs already in an earlier frame: {_examples(repeated)}"
        )
    seen_smes.update(smes)
    identity = sme_identity(session, checked["sme_id"])
    dossiers = with_identity(checked, identity, as_of=as_of, model_version=model_version, part=part)
    entitled = any_recipients(session, dossiers, at=at)
    return dossiers[entitled].reset_index(drop=True), dossiers["dossier_id"][~entitled].tolist()


def part_table(content: pa.Table, published_at: pd.Series, schema: pa.Schema) -> pa.Table:
    """A part file's table: the content columns plus each row's ``published_at``, exactly ``schema``."""
    stamped = content.append_column(
        schema.field("published_at"), pa.array(published_at, schema.field("published_at").type)
    )
    return pa.Table.from_arrays(stamped.select(schema.names).columns, schema=schema)


def _delete_stale_parts(store: Store, partition: str, listed: set[str]) -> list[str]:
    """Remove the parts of ``partition`` the manifest no longer lists; their paths."""
    stale = [p for p in store.list(partition, suffix=".parquet") if p not in listed]
    for path in stale:
        store.delete(path)
    return stale


def _previous_parts(store: Store, manifest: dict[str, Any] | None) -> dict[int, dict[str, Any]]:
    """The previous manifest's entries by part number (parsed from ``part-NNNN[-attempt].parquet``)."""
    entries: dict[int, dict[str, Any]] = {}
    for entry in (manifest or {}).get("files", []):
        match = re.match(r"part-(\d{4})(?:-[0-9a-f]+)?\.parquet$", posixpath.basename(entry["path"]))
        if match:
            entries[int(match.group(1))] = entry
    return entries


def publish(
    session: Session,
    store: Store,
    *,
    as_of: dt.date,
    scored: Iterable[pd.DataFrame],
    model_version: str,
    now: dt.datetime | None = None,
) -> dict[str, Any]:
    """Publish ``as_of``'s dossiers: one part per scored frame, the catalog, then the manifest.

    ``scored`` yields one frame per shard (see :data:`SCORED_COLUMNS`) and is consumed one frame at a
    time. Versions no lender may receive at ``now`` are withheld. A dossier whose date-free content
    equals the current version of its SME and scope from an earlier date keeps that version: it
    gets no catalog row, no ``feed_seq`` and no row in this date's partition (counted ``kept``; the
    version is marked current through ``as_of``). The catalog changes are made and **committed**
    in ``session`` before the manifest is written (see the module's crash safety), and parts no
    manifest lists any more are removed last. Returns a JSON-serialisable summary.
    """
    published_at = utc_seconds(now or utcnow())
    as_of_text = as_of.isoformat()
    schema = build_schema(model_version)
    partition = store.layout.dossier_partition(SCHEMA_VERSION, as_of_text)
    manifest_path = store.layout.manifest(SCHEMA_VERSION, as_of_text)

    previous_manifest = read_manifest(store, as_of)
    previous_parts = _previous_parts(store, previous_manifest)
    attempt = uuid.uuid4().hex[:12]
    publish_row = _publish_row(session, as_of, model_version, store_relative(store, manifest_path))
    next_seq = (session.scalar(select(func.max(DossierVersion.feed_seq))) or 0) + 1

    files: list[dict[str, Any]] = []
    published_ids: set[str] = set()
    seen_smes: set[str] = set()
    withheld: list[str] = []
    grades: Counter[str] = Counter()
    new_versions = kept = 0  # kept: staged dossiers equal to their current version of an earlier date
    previous_date = previous_published(session, as_of)
    standing = standing_on(session, as_of)  # before this publish marks any version kept
    kept_ids: set[int] = set()
    staged: set[tuple[str, str]] = set()
    for part, frame in enumerate(scored):
        dossiers, held_back = prepare_dossiers(
            session,
            frame,
            part,
            as_of=as_of,
            model_version=model_version,
            at=published_at,
            seen_smes=seen_smes,
        )
        withheld.extend(held_back)
        content = to_content_table(dossiers, schema, part)
        sha256s, keys = content_hashes(content)
        dossiers = dossiers.assign(content_sha256=sha256s, content_key=keys)
        current = current_catalog(session, as_of, dossiers["sme_id"].unique())
        keeps = kept_versions(dossiers, current, as_of, previous=previous_date)
        keep = keeps.notna().to_numpy(dtype=bool)
        staged.update(zip(dossiers["sme_id"].tolist(), dossiers["scope"].tolist(), strict=True))
        if keep.any():
            mark_kept(session, keeps[keep], as_of)
            kept_ids.update(int(v) for v in keeps[keep])
            grades.update(dossiers.loc[keep, "grade"].tolist())
            kept += int(keep.sum())
            content = content.filter(pa.array(~keep, pa.bool_()))
            dossiers = dossiers[~keep].reset_index(drop=True)
        stamped = stamp_versions(
            dossiers,
            catalog_rows(session, dossiers["dossier_id"]),
            next_seq=next_seq,
            published_at=published_at,
        )
        buffer = io.BytesIO()
        pq.write_table(part_table(content, stamped["published_at"], schema), buffer)
        data = buffer.getvalue()
        sha256 = sha256_hex(data)
        previous = previous_parts.get(part)
        if (
            previous is not None
            and previous["sha256"] == sha256
            and store.exists(store_absolute(store, previous["path"]))
        ):
            relative = previous["path"]  # the same bytes: keep the file the manifest lists
        else:
            path = store.layout.dossier_part(SCHEMA_VERSION, as_of_text, part, attempt)
            store.write_bytes(path, data)
            relative = store_relative(store, path)
        write_catalog(session, stamped, publish_id=publish_row.id, file_path=relative)

        files.append({"path": relative, "rows": len(stamped), "sha256": sha256})
        published_ids.update(stamped["dossier_id"].tolist())
        grades.update(stamped["grade"].tolist())
        next_seq += int(stamped["is_new_version"].sum())
        new_versions += int(stamped["is_new_version"].sum())

    if previous_manifest is not None and _same_files(previous_manifest, files, model_version):
        published_at = dt.datetime.fromisoformat(previous_manifest["published_at"])
    rows = sum(entry["rows"] for entry in files)
    unpublished = _unpublish_missing(session, as_of, published_ids)
    end_interrupted(session, standing, as_of, kept_ids=kept_ids, staged=staged, previous=previous_date)
    publish_row.files = len(files)
    publish_row.rows = rows
    publish_row.published_at = published_at
    session.commit()
    store.write_json(
        manifest_path,
        {
            "dataset": "dossiers",
            "schema_version": SCHEMA_VERSION,
            "model_version": model_version,
            "as_of": as_of_text,
            "published_at": published_at.isoformat(),
            "rows": rows,
            "files": files,
        },
    )
    stale = _delete_stale_parts(store, partition, {store_absolute(store, entry["path"]) for entry in files})
    log.info(
        "published %d dossiers for %s in %d files (%d new or changed, %d versions of earlier dates kept, "
        "%d withheld, %d stale parts removed)",
        rows,
        as_of_text,
        len(files),
        new_versions,
        kept,
        len(withheld),
        len(stale),
    )
    return {
        "as_of": as_of_text,
        "schema_version": SCHEMA_VERSION,
        "model_version": model_version,
        "published_at": published_at.isoformat(),
        "rows": rows,
        "new_or_changed": new_versions,
        "unchanged": rows - new_versions,
        "kept": kept,
        "current": rows + kept,
        "unpublished": unpublished,
        "withheld_no_consent": {"count": len(withheld), "examples": sorted(withheld)[:WITHHELD_EXAMPLES]},
        "files": [entry["path"] for entry in files],
        "manifest": store_relative(store, manifest_path),
        "grades": dict(sorted(grades.items())),
    }
