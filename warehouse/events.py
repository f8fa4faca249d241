"""The lender feed log: an append-only, per-lender sequence of what was delivered and withdrawn.

Every pull (:func:`warehouse.feed.pull`, the file pull, and :func:`warehouse.feed.sync`, which the
lender API runs) records its deliveries and withdrawals and, in the same transaction, appends one
event per version delivered and one per delivery withdrawn (:func:`append`), withdrawals first.
Events of a lender are numbered ``seq`` = 1, 2, 3, ... under a lock on the lender's row, so the
numbers follow commit order: a reader that has seen event *n* has seen every event before it, and a
cursor (the last ``seq`` read) never skips one committed later.

A ``delivered`` event keeps the dossier row exactly as handed over (:func:`row_json`), so a page
reads the same every time. The law still wins over the page: when a delivery is withdrawn its
event loses the row (``dossier_json`` emptied in the transaction that appends the tombstone), and
erasing an SME empties every event of it.

>>> import datetime as dt
>>> row = {"dossier_id": "SME-1:2026-11-01:v2:a@12m", "as_of_date": dt.date(2026, 11, 1), "pd_12m": 0.25}
>>> row_json(row)
'{"dossier_id": "SME-1:2026-11-01:v2:a@12m", "as_of_date": "2026-11-01", "pd_12m": 0.25}'
"""

from __future__ import annotations

import datetime as dt
import json
import json.encoder
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
from sqlalchemy import func, insert, select, update
from sqlalchemy.orm import Session

from warehouse.errors import InputError
from warehouse.models import FeedEvent, Lender

DELIVERED, WITHDRAWN = "delivered", "withdrawn"
OFFER_ACCEPTED, OFFER_DECLINED, OFFER_CLOSED, OFFER_LAPSED = (
    "offer_accepted",
    "offer_declined",
    "offer_closed",
    "offer_lapsed",
)
OFFER_KINDS = (OFFER_ACCEPTED, OFFER_DECLINED, OFFER_CLOSED, OFFER_LAPSED)
"""Events that tell a lender what became of an offer it made (:mod:`warehouse.offers`): accepted by
the SME, declined, closed because the SME accepted another, or lapsed (validity passed, or its
dossier version withdrawn). They carry the offer, not a dossier row."""
DOSSIER_KINDS = (DELIVERED, WITHDRAWN)


def _plain(value: Any) -> Any:
    if isinstance(value, dt.datetime | dt.date):
        return value.isoformat()
    raise TypeError(f"{type(value).__name__} is not a dossier value")


def row_json(row: Mapping[str, Any]) -> str:
    """One dossier row as JSON text: dates and instants in ISO 8601, floats in round-trip form
    (NaN kept as ``NaN``, which :func:`json.loads` reads back)."""
    return json.dumps(dict(row), default=_plain)


def rows_table(rows: Iterable[Mapping[str, Any]], schema: pa.Schema) -> pa.Table:
    """Dossier rows read back from :func:`row_json` as an Arrow table of ``schema`` (ISO dates parsed).

    Built column by column: each field's values go to Arrow in one call, and a date or timestamp
    column held as ISO text is parsed by Arrow's own cast (an instant without an offset is UTC, as
    :func:`row_json` wrote it), not value by value in Python.

    >>> import datetime as dt
    >>> schema = pa.schema([("at", pa.timestamp("s", tz="UTC")), ("day", pa.date32()), ("n", pa.int64())])
    >>> table = rows_table([{"at": "2026-11-02T09:30:00+00:00", "day": "2026-11-01", "n": 1}, {"n": 2}], schema)
    >>> table.column("at").to_pylist()[0].isoformat(), table.column("day").to_pylist()
    ('2026-11-02T09:30:00+00:00', [datetime.date(2026, 11, 1), None])
    """
    listed = rows if isinstance(rows, list) else list(rows)
    columns = [_column([row.get(field.name) for row in listed], field.type) for field in schema]
    return pa.Table.from_arrays(columns, schema=schema)


def json_rows_table(texts: Iterable[str], schema: pa.Schema) -> pa.Table:
    """Rows kept as JSON text (:func:`row_json`, one object each) as an Arrow table of ``schema``,
    parsed by Arrow's JSON reader in one call rather than into a Python object per value.

    A field a row lacks is null, a field outside ``schema`` is ignored, NaN and infinities are
    null (:func:`safe_row_json`), and dates and instants are read as their ISO text and cast as
    :func:`rows_table` casts them (an instant without an offset is UTC).

    >>> schema = pa.schema([("day", pa.date32()), ("at", pa.timestamp("s", tz="UTC")), ("x", pa.float64())])
    >>> rows = ['{"day": "2026-11-01", "at": "2026-11-02T09:30:00+00:00", "x": NaN}', '{"x": 2, "y": true}']
    >>> table = json_rows_table(rows, schema)
    >>> table.column("day").to_pylist(), table.column("at").to_pylist()[0].isoformat(), table.column("x").to_pylist()
    ([datetime.date(2026, 11, 1), None], '2026-11-02T09:30:00+00:00', [None, 2.0])
    """
    import io

    import pyarrow.json as pa_json

    data = "\n".join(safe_row_json(text) for text in texts).encode()
    if not data:
        return schema.empty_table()
    temporal = {f.name for f in schema if pa.types.is_date(f.type) or pa.types.is_timestamp(f.type)}
    as_read = pa.schema([pa.field(f.name, pa.string() if f.name in temporal else f.type) for f in schema])
    table = pa_json.read_json(
        io.BytesIO(data),
        # one block for the whole text (a page): no thread pool, no split rows
        read_options=pa_json.ReadOptions(use_threads=False, block_size=len(data) + 1),
        parse_options=pa_json.ParseOptions(explicit_schema=as_read, unexpected_field_behavior="ignore"),
    )
    columns = [
        _temporal_text(table.column(f.name), f.type)
        if f.name in temporal
        else table.column(f.name).cast(f.type)
        for f in schema
    ]
    return pa.Table.from_arrays(columns, schema=schema)


def _column(values: list[Any], kind: pa.DataType) -> pa.Array:
    """One field's values as an Arrow array of ``kind``; ISO text of a date or instant parsed."""
    temporal = pa.types.is_timestamp(kind) or pa.types.is_date(kind)
    if not temporal or not any(isinstance(value, str) for value in values):
        return pa.array(values, type=kind)
    if all(value is None or isinstance(value, str) for value in values):
        return _temporal_text(pa.array(values, type=pa.string()), kind)
    return pa.array([_parsed(value, kind) for value in values], type=kind)  # text mixed with objects


def _temporal_text(text: pa.Array | pa.ChunkedArray, kind: pa.DataType) -> pa.Array | pa.ChunkedArray:
    """ISO text of dates or instants (nulls kept) as ``kind``, cast by Arrow: an instant with an
    offset (or "Z") converted to UTC, one without read as UTC; value by value only when some have
    an offset and others not."""
    if pa.types.is_date(kind):
        return pc.cast(text, kind)
    try:  # ISO instants with an offset (or "Z"), converted to UTC
        parsed = pc.cast(text, pa.timestamp("us", tz="UTC"))
    except pa.ArrowInvalid:  # without one: UTC already, as Arrow reads a naive datetime
        try:
            parsed = pc.cast(text, pa.timestamp("us"))
        except pa.ArrowInvalid:  # some with an offset, some without
            return pa.array([_parsed(value, kind) for value in text.to_pylist()], type=kind)
    return pc.cast(parsed, kind, safe=False)  # finer than the field: truncated, as pa.array does


def _parsed(value: Any, kind: pa.DataType) -> Any:
    if not isinstance(value, str):
        return value
    return dt.date.fromisoformat(value) if pa.types.is_date(kind) else dt.datetime.fromisoformat(value)


def json_safe(row: Mapping[str, Any]) -> dict[str, Any]:
    """``row`` for a JSON response: NaN and infinities (which JSON cannot carry) become null."""
    return {k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in row.items()}


def last_seq(session: Session, lender_id: str) -> int:
    """The ``seq`` of the lender's newest event (0 when it has none)."""
    return session.scalar(select(func.max(FeedEvent.seq)).where(FeedEvent.lender_id == lender_id)) or 0


def append(
    session: Session,
    lender_id: str,
    *,
    delivered: pd.DataFrame,
    rows: Mapping[str, Mapping[str, Any]],
    withdrawals: pd.DataFrame,
    pull_id: str,
    at: dt.datetime,
) -> int:
    """Append the events of one pull (not committed: the caller commits with its deliveries).

    ``delivered`` holds the catalog rows handed over (``id``, ``dossier_id``, ``sme_id``,
    ``content_sha256``, in feed order), ``rows`` the dossier row of each by ``dossier_id``,
    ``withdrawals`` the tombstones (:func:`warehouse.feed.plan_withdrawals`). Withdrawn deliveries'
    earlier events lose their row. Returns the lender's last ``seq`` after appending.
    """
    if delivered.empty and withdrawals.empty:
        return last_seq(session, lender_id)
    session.scalars(select(Lender).where(Lender.lender_id == lender_id).with_for_update()).one()
    seq = last_seq(session, lender_id)
    events: list[dict[str, Any]] = []
    for row in withdrawals.itertuples(index=False):
        seq += 1
        events.append(
            {
                "lender_id": lender_id,
                "seq": seq,
                "kind": WITHDRAWN,
                "dossier_version_id": int(row.dossier_version_id),
                "dossier_id": row.dossier_id,
                "sme_id": row.sme_id,
                "pull_id": pull_id,
                "occurred_at": pd.Timestamp(row.withdrawn_at).to_pydatetime(),
                "reason": row.reason,
                "content_sha256": "",
                "dossier_json": None,
            }
        )
        session.execute(
            update(FeedEvent)
            .where(
                FeedEvent.lender_id == lender_id,
                FeedEvent.dossier_id == row.dossier_id,  # the (lender_id, dossier_id) index
                FeedEvent.kind == DELIVERED,
                FeedEvent.dossier_version_id == int(row.dossier_version_id),
                FeedEvent.pull_id == row.delivery_pull_id,
            )
            .values(dossier_json=None)
        )
    for version_id, dossier_id, sme_id, sha in zip(
        delivered["id"],
        delivered["dossier_id"],
        delivered["sme_id"],
        delivered["content_sha256"],
        strict=True,
    ):
        seq += 1
        events.append(
            {
                "lender_id": lender_id,
                "seq": seq,
                "kind": DELIVERED,
                "dossier_version_id": int(version_id),
                "dossier_id": dossier_id,
                "sme_id": sme_id,
                "pull_id": pull_id,
                "occurred_at": at,
                "reason": None,
                "content_sha256": sha,
                "dossier_json": row_json(rows[dossier_id]),
            }
        )
    if not withdrawals.empty:
        from warehouse import offers  # offers tells lenders through this module

        for notice in offers.lapse_withdrawn(session, lender_id, withdrawals["dossier_id"], at):
            seq += 1
            events.append({"seq": seq, "content_sha256": "", "dossier_json": None, **notice})
    if events:
        session.execute(insert(FeedEvent), events)
    return seq


def append_notices(session: Session, notices: Iterable[Mapping[str, Any]]) -> int:
    """Append offer events (:data:`OFFER_KINDS`, built by :mod:`warehouse.offers`) to their lenders'
    feeds, numbered after each lender's newest event under a lock on its row. Not committed;
    returns how many were appended."""
    by_lender: dict[str, list[Mapping[str, Any]]] = {}
    for notice in notices:
        by_lender.setdefault(notice["lender_id"], []).append(notice)
    count = 0
    for lender_id, group in sorted(by_lender.items()):
        if session.get_bind().dialect.name == "sqlite":  # start the write transaction: the lock
            session.execute(update(Lender).where(Lender.lender_id == lender_id).values(name=Lender.name))
        else:
            session.scalars(select(Lender).where(Lender.lender_id == lender_id).with_for_update()).one()
        seq = last_seq(session, lender_id)
        rows = []
        for notice in group:
            seq += 1
            rows.append({"seq": seq, "content_sha256": "", "dossier_json": None, **notice})
        session.execute(insert(FeedEvent), rows)
        count += len(rows)
    return count


@dataclass(frozen=True)
class Event:
    """One feed event as a reader sees it; ``dossier`` is the delivered row while it is still held,
    ``offer`` the offer an ``offer_*`` event is about."""

    seq: int
    kind: str
    dossier_id: str
    sme_id: str
    occurred_at: dt.datetime
    reason: str | None
    dossier: dict[str, Any] | None
    offer: dict[str, Any] | None = None


def parse_cursor(cursor: str | None, newest: int) -> int:
    """The position a ``cursor`` names: empty for the start, else a ``seq`` already written.

    >>> parse_cursor(None, 5), parse_cursor("3", 5)
    (0, 3)
    >>> parse_cursor("9", 5)
    Traceback (most recent call last):
    ...
    warehouse.errors.InputError: cursor: 9 is beyond the end of this feed (its newest event is 5)
    """
    if cursor is None or cursor == "":
        return 0
    if not cursor.isdigit() or len(cursor) > 18:
        raise InputError(f"cursor: {cursor!r} is not a cursor this feed returned (expected a whole number)")
    position = int(cursor)
    if position > newest:
        raise InputError(f"cursor: {position} is beyond the end of this feed (its newest event is {newest})")
    return position


PAGE_COLUMNS = (
    FeedEvent.seq,
    FeedEvent.kind,
    FeedEvent.dossier_id,
    FeedEvent.sme_id,
    FeedEvent.occurred_at,
    FeedEvent.reason,
    FeedEvent.dossier_json,
    FeedEvent.offer_json,
)


def page_rows(
    session: Session, lender_id: str, *, after: int, limit: int, upto: int | None = None
) -> list[tuple[Any, ...]]:
    """Up to ``limit`` of the lender's events after position ``after`` (and not past ``upto`` when
    given), in order, as plain tuples of :data:`PAGE_COLUMNS` (the dossier row still as its JSON
    text): one indexed range query."""
    table = FeedEvent.__table__
    where = [table.c.lender_id == lender_id, table.c.seq > after]
    if upto is not None:
        where.append(table.c.seq <= upto)
    query = (
        select(*(table.c[column.key] for column in PAGE_COLUMNS))
        .where(*where)
        .order_by(table.c.seq)
        .limit(limit)
    )
    return [tuple(row) for row in session.connection().execute(query)]


def page(session: Session, lender_id: str, *, after: int, limit: int, upto: int | None = None) -> list[Event]:
    """Up to ``limit`` of the lender's events after position ``after`` (not past ``upto``), in order."""
    return [
        Event(
            seq,
            kind,
            dossier_id,
            sme_id,
            occurred_at,
            reason,
            json.loads(text) if text is not None else None,
            json.loads(offer) if offer is not None else None,
        )
        for seq, kind, dossier_id, sme_id, occurred_at, reason, text, offer in page_rows(
            session, lender_id, after=after, limit=limit, upto=upto
        )
    ]


_quoted = json.encoder.encode_basestring_ascii
"""A string as a JSON string literal (the json module's own, C-accelerated)."""


def _instant_json(instant: dt.datetime) -> str:
    return '"' + instant.astimezone(dt.UTC).isoformat().replace("+00:00", "Z") + '"'


def safe_row_json(text: str) -> str:
    """A stored row's JSON text (:func:`row_json`) as strict JSON: NaN and infinities as null.

    The text is used as it is unless it spells one of them somewhere.

    >>> safe_row_json('{"a": NaN, "b": "NaN", "c": 1.5}')
    '{"a": null, "b": "NaN", "c": 1.5}'
    """
    if "NaN" not in text and "Infinity" not in text:
        return text
    return json.dumps(json_safe(json.loads(text)))


def page_json(rows: Iterable[tuple[Any, ...]], *, next_cursor: str, has_more: bool) -> bytes:
    """A feed page (rows of :func:`page_rows`) as the JSON body of ``GET /v1/feed``: the events
    (seq, event, dossier_id, sme_id, occurred_at, reason, dossier, offer) and the next cursor.

    Each stored dossier row goes into the body as the text it was kept as (:func:`safe_row_json`),
    so a page costs its query and a concatenation, not a parse and a dump of every row.
    """
    instants: dict[dt.datetime, str] = {}  # a pull's events share one instant
    parts = []
    for seq, kind, dossier_id, sme_id, occurred_at, reason, text, offer in rows:
        when = instants.get(occurred_at)
        if when is None:
            when = instants[occurred_at] = _instant_json(occurred_at)
        quoted_reason = "null" if reason is None else _quoted(reason)
        dossier = "null" if text is None else safe_row_json(text)
        about = "null" if offer is None else offer
        parts.append(
            f'{{"seq":{seq},"event":{_quoted(kind)},"dossier_id":{_quoted(dossier_id)},'
            f'"sme_id":{_quoted(sme_id)},"occurred_at":{when},"reason":{quoted_reason},"dossier":{dossier},'
            f'"offer":{about}}}'
        )
    more = "true" if has_more else "false"
    tail = f'],"next_cursor":{_quoted(next_cursor)},"has_more":{more}}}'
    return ('{"events":[' + ",".join(parts) + tail).encode()


def held_row(session: Session, lender_id: str, dossier_id: str) -> dict[str, Any] | None:
    """The row of ``dossier_id`` as last delivered to the lender, if the lender still holds it."""
    latest = session.scalars(
        select(FeedEvent)
        .where(
            FeedEvent.lender_id == lender_id,
            FeedEvent.dossier_id == dossier_id,
            FeedEvent.kind.in_(DOSSIER_KINDS),
        )
        .order_by(FeedEvent.seq.desc())
        .limit(1)
    ).first()
    if latest is None or latest.kind != DELIVERED or latest.dossier_json is None:
        return None
    return json.loads(latest.dossier_json)
