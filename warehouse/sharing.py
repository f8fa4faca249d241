"""Each lender's delivered dossiers as one Delta Sharing table, derived from its feed log.

The table's versions are the lender's feed positions (:mod:`warehouse.events`): version 0 is the
empty table, version *v* the table after event ``seq`` = *v*. The table at version *v* holds the
rows delivered at ``seq`` <= *v* less those withdrawn at ``seq`` <= *v*, so its entitlement is
exactly the feed's, and a withdrawn version leaves the table at the version of its tombstone. The
change data feed of version *v* is that event itself: a delivered event an ``insert``, a withdrawn
one a ``delete`` of the row it withdraws.

The law wins over history, as in the feed: a row whose consent has ended (its delivered event lost
its row, :func:`warehouse.events.append`) is never served again, in any version. Where an older
version or an older change still names it, only its key columns (``dossier_id``, ``sme_id``,
``feed_seq``, ``delivered_at``) are served, the rest null.

Files. A snapshot is served as one Parquet file per block of :data:`BLOCK` feed positions (rows
delivered at ``seq`` 1-1000, 1001-2000, ...); a block's file is named by the last event that
changed it at or before the version read and by a digest of what it holds, so the same file has
the same id in every query until something changes it, and building it again gives the same bytes.
A change is one file per version. :func:`file_bytes` rebuilds a file from the log as it is now and
refuses (returns None) when that is no longer what the id names, so a file holding a row withdrawn
since cannot be downloaded again, whatever URL was handed out.

>>> [f.name for f in table_schema()][:4]
['feed_seq', 'delivered_at', 'withdrawal_reason', 'dossier_id']
>>> {k: v for k, v in json.loads(delta_schema_string())["fields"][3].items() if k != "metadata"}
{'name': 'dossier_id', 'type': 'string', 'nullable': False}
"""

from __future__ import annotations

import datetime as dt
import hashlib
import io
import json
import re
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
from sqlalchemy import func, or_, select
from sqlalchemy.orm import Session

from warehouse import events
from warehouse.consent import entitlement
from warehouse.db import in_chunks
from warehouse.dossier_schema import ALL_COLUMNS, SCHEMA_VERSION
from warehouse.errors import InputError
from warehouse.feed import held_deliveries, plan_withdrawals
from warehouse.models import FeedEvent, Lender

SCHEMA_NAME = "credit"
TABLE_NAME = "dossiers"
BLOCK = 1000
"""Feed positions per snapshot file."""
INSERT, DELETE = "insert", "delete"
KEY_COLUMNS = ("feed_seq", "delivered_at", "dossier_id", "sme_id")


class VersionError(InputError):
    """A version, timestamp or range that names no version of the table."""


# --- the schema -----------------------------------------------------------------------------------

ROW_FIELDS = [
    pa.field(
        "feed_seq",
        pa.int64(),
        nullable=False,
        metadata={"description": "The table version (feed position) this row was delivered at."},
    ),
    pa.field(
        "delivered_at",
        pa.timestamp("us", tz="UTC"),
        metadata={"description": "When this dossier version was delivered to you."},
    ),
    pa.field(
        "withdrawal_reason",
        pa.string(),
        metadata={
            "description": "In a delete of the change data feed: consent_revoked, consent_expired, "
            "consent_no_longer_covers or erased; null otherwise."
        },
    ),
]


def table_schema() -> pa.Schema:
    """The shared table: the delivery columns, then every dossier column, described as published."""
    dossier = [
        pa.field(
            c.name,
            c.type,
            nullable=c.name not in ("dossier_id", "sme_id"),
            metadata={"description": c.description},
        )
        for c in ALL_COLUMNS
    ]
    return pa.schema(
        [*ROW_FIELDS, *dossier],
        metadata={
            "grain": "One row per dossier version delivered to you and still held.",
            "dossier_schema_version": str(SCHEMA_VERSION),
        },
    )


def change_schema() -> pa.Schema:
    """A change data file: the table's columns and ``_change_type`` (insert or delete)."""
    return table_schema().append(pa.field("_change_type", pa.string(), nullable=False))


def _delta_type(kind: pa.DataType) -> Any:
    if pa.types.is_string(kind):
        return "string"
    if pa.types.is_int64(kind):
        return "long"
    if pa.types.is_int32(kind):
        return "integer"
    if pa.types.is_floating(kind):
        return "double"
    if pa.types.is_boolean(kind):
        return "boolean"
    if pa.types.is_date(kind):
        return "date"
    if pa.types.is_timestamp(kind):
        return "timestamp"
    if pa.types.is_list(kind):
        return {"type": "array", "elementType": _delta_type(kind.value_type), "containsNull": True}
    raise TypeError(f"no Delta type for {kind}")


def delta_schema_string() -> str:
    """The table's schema in the Delta (Spark JSON) form the protocol's ``schemaString`` carries."""
    fields = [
        {
            "name": f.name,
            "type": _delta_type(f.type),
            "nullable": f.nullable,
            "metadata": {"comment": f.metadata[b"description"].decode()},
        }
        for f in table_schema()
    ]
    return json.dumps({"type": "struct", "fields": fields}, separators=(",", ":"))


def table_id(lender_id: str) -> str:
    """The table's id: stable for the lender, never reused by another."""
    return str(uuid.uuid5(uuid.NAMESPACE_URL, f"sme-dossier:sharing:{lender_id}:{TABLE_NAME}"))


def profile(endpoint: str, token: str, expires_at: dt.datetime | None = None) -> dict[str, Any]:
    """A Delta Sharing profile file (``shareCredentialsVersion`` 1) for ``endpoint`` and ``token``.

    >>> profile("https://broker.example/delta-sharing", "sdk_x", dt.datetime(2026, 12, 1, 9, 0))
    {'shareCredentialsVersion': 1, 'endpoint': 'https://broker.example/delta-sharing', 'bearerToken': 'sdk_x', 'expirationTime': '2026-12-01T09:00:00.000Z'}
    """
    found: dict[str, Any] = {"shareCredentialsVersion": 1, "endpoint": endpoint, "bearerToken": token}
    if expires_at is not None:
        found["expirationTime"] = _utc(expires_at).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"
    return found


# --- versions and their instants ------------------------------------------------------------------


def _utc(instant: dt.datetime) -> dt.datetime:
    return instant.replace(tzinfo=dt.UTC) if instant.tzinfo is None else instant.astimezone(dt.UTC)


def parse_timestamp(text: str, field: str) -> dt.datetime:
    """A protocol timestamp (ISO 8601, UTC, e.g. ``2022-01-01T00:00:00Z``); naive means UTC.

    >>> parse_timestamp("2026-11-01T09:30:00Z", "timestamp").isoformat()
    '2026-11-01T09:30:00+00:00'
    >>> parse_timestamp("yesterday", "timestamp")
    Traceback (most recent call last):
    ...
    warehouse.sharing.VersionError: timestamp: 'yesterday' is not an ISO 8601 timestamp such as 2026-11-01T00:00:00Z
    """
    try:
        return _utc(dt.datetime.fromisoformat(text.strip()))
    except ValueError:
        raise VersionError(
            f"{field}: {text!r} is not an ISO 8601 timestamp such as 2026-11-01T00:00:00Z"
        ) from None


def latest_version(session: Session, lender_id: str) -> int:
    """The table's current version: the lender's newest feed position (0 before any event)."""
    return events.last_seq(session, lender_id)


def _created(session: Session, lender_id: str) -> dt.datetime:
    created = session.scalar(select(Lender.created_at).where(Lender.lender_id == lender_id))
    return _utc(created) if created is not None else dt.datetime(1970, 1, 1, tzinfo=dt.UTC)


def commit_instants(session: Session, lender_id: str, start: int, end: int) -> dict[int, dt.datetime]:
    """When each version from ``start`` to ``end`` was made: version 0 when the lender was
    registered, version *v* the latest instant of its events up to *v* (so instants never go back,
    though a withdrawal's event carries the earlier instant its consent ended)."""
    base = _created(session, lender_id)
    before = session.scalar(
        select(func.max(FeedEvent.occurred_at)).where(FeedEvent.lender_id == lender_id, FeedEvent.seq < start)
    )
    running = max(base, _utc(before)) if before is not None else base
    instants = {0: base} if start <= 0 else {}
    rows = session.execute(
        select(FeedEvent.seq, FeedEvent.occurred_at)
        .where(FeedEvent.lender_id == lender_id, FeedEvent.seq >= start, FeedEvent.seq <= end)
        .order_by(FeedEvent.seq)
    )
    for seq, occurred_at in rows:
        running = max(running, _utc(occurred_at))
        instants[seq] = running
    return instants


def check_version(session: Session, lender_id: str, version: int, field: str = "version") -> int:
    latest = latest_version(session, lender_id)
    if version < 0 or version > latest:
        raise VersionError(
            f"{field}: {version} is not a version of this table (its versions are 0 to {latest})"
        )
    return version


def version_as_of(session: Session, lender_id: str, instant: dt.datetime, field: str = "timestamp") -> int:
    """The latest version made at or before ``instant`` (the table as it stood then)."""
    if instant < _created(session, lender_id):
        raise VersionError(
            f"{field}: {instant.isoformat()} is before the table's first version "
            f"({_created(session, lender_id).isoformat()})"
        )
    first_later = session.scalar(
        select(func.min(FeedEvent.seq)).where(
            FeedEvent.lender_id == lender_id, FeedEvent.occurred_at > instant
        )
    )
    return (first_later - 1) if first_later is not None else latest_version(session, lender_id)


def version_from(
    session: Session, lender_id: str, instant: dt.datetime, field: str = "startingTimestamp"
) -> int:
    """The earliest version made at or after ``instant`` (0 for an instant before the table)."""
    if instant <= _created(session, lender_id):
        return 0
    first = session.scalar(
        select(func.min(FeedEvent.seq)).where(
            FeedEvent.lender_id == lender_id, FeedEvent.occurred_at >= instant
        )
    )
    if first is None:
        raise VersionError(f"{field}: {instant.isoformat()} is after the table's latest version")
    return first


# --- the log as table rows ------------------------------------------------------------------------


@dataclass(frozen=True)
class Entry:
    """One feed event without its row: ``held`` tells whether the delivered row is still kept."""

    seq: int
    kind: str
    version_id: int
    dossier_id: str
    sme_id: str
    occurred_at: dt.datetime
    reason: str | None
    sha: str
    held: bool


def _entries(session: Session, lender_id: str, *conditions: Any) -> list[Entry]:
    query = (
        select(
            FeedEvent.seq,
            FeedEvent.kind,
            FeedEvent.dossier_version_id,
            FeedEvent.dossier_id,
            FeedEvent.sme_id,
            FeedEvent.occurred_at,
            FeedEvent.reason,
            FeedEvent.content_sha256,
            FeedEvent.dossier_json.is_not(None),
        )
        .where(FeedEvent.lender_id == lender_id, FeedEvent.kind.in_(events.DOSSIER_KINDS), *conditions)
        .order_by(FeedEvent.seq)
    )
    return [Entry(*row[:5], _utc(row[5]), row[6], row[7], bool(row[8])) for row in session.execute(query)]


def _replay(entries: Iterable[Entry]) -> tuple[dict[int, Entry], dict[int, list[Entry]]]:
    """The delivered entries live after ``entries`` (by seq) and, per withdrawal seq, what it removed."""
    live: dict[int, Entry] = {}
    by_version: dict[int, list[int]] = {}
    removed: dict[int, list[Entry]] = {}
    for entry in entries:
        if entry.kind == events.DELIVERED:
            live[entry.seq] = entry
            by_version.setdefault(entry.version_id, []).append(entry.seq)
        else:
            removed[entry.seq] = [live.pop(s) for s in by_version.pop(entry.version_id, []) if s in live]
    return live, removed


def _block(seq: int) -> int:
    return (seq - 1) // BLOCK


def _digest(parts: Iterable[str]) -> str:
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()[:20]


def _entry_part(entry: Entry) -> str:
    return f"{entry.seq}:{entry.sha}:{int(entry.held)}"


@dataclass(frozen=True)
class DataFile:
    """A Parquet file of the table: a snapshot block or one version's changes."""

    id: str
    version: int
    """For a change: its version; for a snapshot block: the last version that changed the block."""
    num_records: int


FILE_ID = re.compile(
    r"^(?:s(?P<block>\d{1,9})-(?P<state>\d{1,18})|c(?P<seq>\d{1,18}))-(?P<digest>[0-9a-f]{20})$"
)


def _snapshot_blocks(entries: list[Entry], version: int) -> dict[int, tuple[int, list[Entry]]]:
    """Per block: the last version at or before ``version`` that changed it, and its live rows."""
    live, removed = _replay(e for e in entries if e.seq <= version)
    state: dict[int, int] = {}
    rows: dict[int, list[Entry]] = {}
    for seq, entry in live.items():
        block = _block(seq)
        rows.setdefault(block, []).append(entry)
        state[block] = max(state.get(block, 0), seq)
    for withdrawal, gone in removed.items():
        for entry in gone:
            block = _block(entry.seq)
            state[block] = max(state.get(block, 0), withdrawal)
    return {block: (state[block], rows.get(block, [])) for block in state}


def snapshot_files(session: Session, lender_id: str, version: int) -> list[DataFile]:
    """The files of the table at ``version``, in feed order (blocks left empty have none)."""
    entries = _entries(session, lender_id, FeedEvent.seq <= version)
    files = []
    for block, (state, rows) in sorted(_snapshot_blocks(entries, version).items()):
        if rows:
            digest = _digest(_entry_part(e) for e in rows)
            files.append(DataFile(f"s{block}-{state}-{digest}", state, len(rows)))
    return files


def _changes(entries: list[Entry], start: int, end: int) -> dict[int, list[tuple[str, Entry, str | None]]]:
    changes: dict[int, list[tuple[str, Entry, str | None]]] = {}
    _live, removed = _replay(entries)
    for entry in entries:
        if not start <= entry.seq <= end:
            continue
        if entry.kind == events.DELIVERED:
            changes[entry.seq] = [(INSERT, entry, None)]
        elif removed.get(entry.seq):
            changes[entry.seq] = [(DELETE, gone, entry.reason) for gone in removed[entry.seq]]
    return changes


def _change_part(change: tuple[str, Entry, str | None]) -> str:
    return f"{change[0]}:{_entry_part(change[1])}:{change[2] or ''}"


def _change_entries(session: Session, lender_id: str, start: int, end: int) -> list[Entry]:
    """The events from ``start`` to ``end`` and every earlier event of the versions withdrawn in
    that range: enough to replay what each of those withdrawals removed."""
    in_range = _entries(session, lender_id, FeedEvent.seq.between(start, end))
    withdrawn = {e.version_id for e in in_range if e.kind == events.WITHDRAWN}
    earlier: list[Entry] = []
    for chunk in in_chunks(withdrawn):
        earlier += _entries(
            session, lender_id, FeedEvent.seq < start, FeedEvent.dossier_version_id.in_(chunk)
        )
    return sorted(earlier, key=lambda e: e.seq) + in_range


def change_files(session: Session, lender_id: str, start: int, end: int) -> list[DataFile]:
    """One file per version from ``start`` to ``end`` that changed the table."""
    entries = _change_entries(session, lender_id, start, end)
    return [
        DataFile(f"c{seq}-{_digest(_change_part(c) for c in found)}", seq, len(found))
        for seq, found in sorted(_changes(entries, start, end).items())
    ]


# --- file content ---------------------------------------------------------------------------------


def _rows(session: Session, lender_id: str, entries: list[Entry]) -> dict[int, dict[str, Any]]:
    found: dict[int, dict[str, Any]] = {}
    for chunk in in_chunks(e.seq for e in entries if e.held):
        query = select(FeedEvent.seq, FeedEvent.dossier_json).where(
            FeedEvent.lender_id == lender_id, FeedEvent.seq.in_(chunk), FeedEvent.dossier_json.is_not(None)
        )
        found.update({seq: json.loads(text) for seq, text in session.execute(query)})
    return found


def _table_row(entry: Entry, row: dict[str, Any] | None, reason: str | None = None) -> dict[str, Any]:
    base = (
        row
        if row is not None and reason is None
        else {"dossier_id": entry.dossier_id, "sme_id": entry.sme_id}
    )
    return {**base, "feed_seq": entry.seq, "delivered_at": entry.occurred_at, "withdrawal_reason": reason}


def _parquet(rows: list[dict[str, Any]], schema: pa.Schema) -> bytes:
    buffer = io.BytesIO()
    pq.write_table(events.rows_table(rows, schema), buffer)
    return buffer.getvalue()


def _current(session: Session, lender_id: str, file_id: str) -> tuple[str, list[Any]] | None:
    """What file ``file_id`` holds in the log as it is now: ("change", changes) or ("snapshot",
    entries), or None when the log no longer holds that file."""
    match = FILE_ID.match(file_id)
    if match is None:
        return None
    if match["seq"] is not None:
        seq = int(match["seq"])
        found = _changes(_change_entries(session, lender_id, seq, seq), seq, seq).get(seq, [])
        if not found or _digest(_change_part(c) for c in found) != match["digest"]:
            return None
        return "change", found
    block, state = int(match["block"]), int(match["state"])
    first, last = block * BLOCK + 1, (block + 1) * BLOCK
    entries = _entries(
        session,
        lender_id,
        FeedEvent.seq <= state,
        or_(FeedEvent.seq.between(first, last), FeedEvent.kind == events.WITHDRAWN),
    )
    block_state, live = _snapshot_blocks(entries, state).get(block, (None, []))
    if block_state != state or not live or _digest(_entry_part(e) for e in live) != match["digest"]:
        return None
    return "snapshot", live


def is_current(session: Session, lender_id: str, file_id: str, *, at: dt.datetime) -> bool:
    """Whether file ``file_id`` may still be handed out at ``at``: the log holds it exactly (no row
    of it withdrawn or erased since) and the consent law still allows every row it holds, judged by
    the feed's own rule (:func:`warehouse.feed.plan_withdrawals`), so a consent that ended after
    the last feed read already stops the download."""
    current = _current(session, lender_id, file_id)
    if current is None:
        return False
    kind, found = current
    held_entries = [c[1] for c in found if c[0] == INSERT] if kind == "change" else found
    version_ids = {e.version_id for e in held_entries if e.held}
    if not version_ids:
        return True
    held = held_deliveries(session, lender_id)
    held = held[held["dossier_version_id"].isin(version_ids)].reset_index(drop=True)
    if len(set(held["dossier_version_id"])) < len(version_ids):
        return False
    rule = entitlement(session, sorted(set(held["sme_id"])), at=at)
    return plan_withdrawals(session, lender_id, held, rule, at).empty


def file_bytes(session: Session, lender_id: str, file_id: str) -> bytes | None:
    """The Parquet content of file ``file_id`` built from the log as it is now, or None when the log
    no longer holds that file (a row in it was withdrawn or erased since, or the id names none).
    The same id always builds the same content."""
    current = _current(session, lender_id, file_id)
    if current is None:
        return None
    kind, found = current
    if kind == "change":
        rows = _rows(session, lender_id, [c[1] for c in found if c[0] == INSERT])
        table = [
            {**_table_row(entry, rows.get(entry.seq), reason), "_change_type": change}
            for change, entry, reason in found
        ]
        return _parquet(table, change_schema())
    rows = _rows(session, lender_id, found)
    return _parquet([_table_row(e, rows.get(e.seq)) for e in found], table_schema())
