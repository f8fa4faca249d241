"""Files an SME uploads through a connector link, instead of connecting its provider.

The order is the project's: the bytes land first, immutable and content-addressed (through the
same :func:`connectors.core.landing.land_page` every API response goes through), then they are
read by the one parser of their format (:mod:`connectors.formats`, chosen by content, never by
the file's name or the browser's word for it). Every upload is recorded (``uploads``) with what
was made of it:

* ``parsed`` - a parser of the source's formats read it: rows per canonical table, warnings;
* ``unreadable`` - received and kept, but no parser recognises it yet ("received, not yet readable");
* ``rejected`` - a format of another source (a utility file offered as accounting), or a file its
  parser refused; the detail names the record and the field.

An empty or oversized file is refused before anything lands (:class:`UploadError`), and an upload
never changes what was granted or uploaded before.

**What an upload contributes** (:func:`uploads_to_use`, :func:`read_uploads`; the ingest step
calls them). For an SME and a source, its ``parsed`` uploads give the canonical rows when the SME
has no provider connection to that source, or uploaded its newest such file after it last
connected the provider (the SME's latest act wins; otherwise the provider is pulled as usual).
Each file is read again from its immutable raw copy (its sha256 checked) by the same parser; only
the source's canonical tables are kept, only rows inside the consented window
(:func:`in_window`), and where two files hold the same row (natural key) the newer file's row
wins. ``unreadable`` uploads contribute nothing and are reported; ``rejected`` ones are ignored.

>>> sniff_media_type(b'<?xml version="1.0"?><feed/>')
'application/xml'
>>> sniff_media_type(b"date,account,amount\\n")
'text/csv'
>>> sniff_media_type(b"\\x89PNG\\r\\n\\x1a\\n\\x00\\x00\\x00\\rIHDR")
'application/octet-stream'
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Collection, Sequence
from dataclasses import dataclass, field

import pandas as pd
from sqlalchemy import select
from sqlalchemy.orm import Session

from connectors import formats
from connectors.core.connector import PullWindow
from connectors.core.landing import LandedPayload, land_page
from connectors.core.streams import RawPage
from connectors.formats.base import FormatError, Limits
from warehouse.canonical import TABLES_BY_SOURCE
from warehouse.db import in_chunks
from warehouse.errors import DossierError
from warehouse.models import ConnectorLink, ProviderToken, SourceConnection, Upload
from warehouse.shards import in_shard
from warehouse.storage import Store, sha256_hex

MAX_FILENAME = 255


class UploadError(DossierError):
    """An upload refused before it landed; ``status`` is the HTTP status a page answers with."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status = status


def sniff_media_type(data: bytes) -> str:
    """The media type the bytes themselves suggest (XML, JSON, a zip, CSV-like text, else binary)."""
    head = data[:4096].lstrip(b"\xef\xbb\xbf \t\r\n")
    if head.startswith(b"<"):
        return "application/xml"
    if head[:1] in (b"{", b"["):
        return "application/json"
    if head.startswith(b"PK\x03\x04"):
        return "application/zip"
    if head.startswith(b"OFXHEADER"):
        return "application/x-ofx"
    try:
        head.decode("utf-8")
    except UnicodeDecodeError:
        try:
            text = head.decode("cp1252")
        except UnicodeDecodeError:
            return "application/octet-stream"
    else:
        text = head.decode("utf-8", errors="replace")
    if any(ord(ch) < 9 for ch in text):
        return "application/octet-stream"
    return "text/csv"


def receive(
    session: Session,
    store: Store,
    link: ConnectorLink,
    *,
    source: str,
    filename: str,
    data: bytes,
    max_bytes: int,
    at: dt.datetime,
) -> Upload:
    """Land ``data`` for ``source`` of ``link``'s SME, then read it; the recorded :class:`Upload`.

    Raises :class:`UploadError` (nothing landed) for a source the link does not ask for, an empty
    file, or one larger than ``max_bytes``.
    """
    if source not in link.sources:
        raise UploadError(f"This link does not ask for {source} data; it asks for {', '.join(link.sources)}.")
    if len(data) > max_bytes:
        raise UploadError(f"The file is larger than the limit of {max_bytes:,} bytes; nothing was kept.", 413)
    if not data.strip():
        raise UploadError("The file is empty; nothing was kept.")
    name = (filename or "upload").replace("/", "_").replace("\\", "_")[:MAX_FILENAME]
    media_type = sniff_media_type(data)
    page = RawPage(
        stream="upload", label=f"upload={name}", request=f"upload {name}", body=data, media_type=media_type
    )
    landed = land_page(store, source, page, sequence=1)
    upload = Upload(
        link_id=link.link_id,
        sme_id=link.sme_id,
        source=source,
        filename=name,
        sha256=landed.sha256,
        raw_path=landed.path,
        size_bytes=len(data),
        uploaded_at=at,
        tables={},
        detail="",
    )
    try:
        found = formats.detect(data)
    except FormatError:
        upload.status = "unreadable"
        upload.detail = "Received and kept, not yet readable: no parser recognises this kind of file yet."
    else:
        upload.format = found.name
        if found.kind != source:
            upload.status = "rejected"
            upload.detail = (
                f"This is a {found.description} file, which holds {found.kind} data, not {source} data."
            )
        else:
            try:
                parsed = formats.parse(
                    data,
                    format_name=found.name,
                    sme_id=link.sme_id,
                    limits=Limits(max_bytes=max_bytes),
                    name=name,
                )
            except FormatError as error:
                upload.status = "rejected"
                upload.detail = f"{found.description}: {error}"
            else:
                upload.status = "parsed"
                upload.tables = {table: len(frame) for table, frame in parsed.tables.items()}
                upload.detail = "; ".join(parsed.warnings)
    session.add(upload)
    session.flush()
    return upload


# --- what uploads contribute to the pipeline ---------------------------------------------------------

USED_STATUSES = ("parsed", "unreadable")
"""Upload statuses the ingest step looks at: ``parsed`` files give rows, ``unreadable`` ones are reported."""


@dataclass(frozen=True)
class UploadedFile:
    """One ``uploads`` row, as the ingest step reads it (detached from any session)."""

    id: int
    sme_id: str
    filename: str
    sha256: str
    raw_path: str
    size_bytes: int
    format: str | None
    status: str
    uploaded_at: dt.datetime


def _aware(instant: dt.datetime) -> dt.datetime:
    """SQLite hands back naive instants; every instant here is UTC."""
    return instant if instant.tzinfo else instant.replace(tzinfo=dt.UTC)


def uploads_to_use(
    session: Session,
    source: str,
    shard: int,
    shard_count: int,
    *,
    sme_ids: Collection[str] | None = None,
) -> dict[str, list[UploadedFile]]:
    """Per SME of ``shard`` (of ``sme_ids`` when given) whose ``source`` comes from its uploads: its
    ``parsed`` and ``unreadable`` uploads of that source, oldest first.

    An SME with ``parsed`` uploads is here unless it (re)connected its provider for the source
    after its newest parsed upload (the later of ``source_connections.connected_at`` and the OAuth
    grant's ``provider_tokens.obtained_at``): then the provider wins and the SME is absent. An SME
    with only ``unreadable`` uploads is here only when it has no provider connection.
    """
    query = (
        select(Upload).where(Upload.source == source, Upload.status.in_(USED_STATUSES)).order_by(Upload.id)
    )
    found: dict[str, list[UploadedFile]] = {}
    chunks = [None] if sme_ids is None else list(in_chunks(sorted(sme_ids)))
    for chunk in chunks:
        scoped = query if chunk is None else query.where(Upload.sme_id.in_(chunk))
        for row in session.scalars(scoped):
            found.setdefault(row.sme_id, []).append(
                UploadedFile(
                    row.id,
                    row.sme_id,
                    row.filename,
                    row.sha256,
                    row.raw_path,
                    row.size_bytes,
                    row.format,
                    row.status,
                    _aware(row.uploaded_at),
                )
            )
    chosen = {sme_id: found[sme_id] for sme_id in in_shard(found, shard, shard_count)}
    connected = _connected_at(session, source, chosen)
    for sme_id in list(chosen):
        if sme_id not in connected:
            continue
        parsed = [f.uploaded_at for f in chosen[sme_id] if f.status == "parsed"]
        if not parsed or max(parsed) <= connected[sme_id]:
            del chosen[sme_id]
    for files in chosen.values():
        files.sort(key=lambda f: (f.uploaded_at, f.id))
    return chosen


def _connected_at(session: Session, source: str, sme_ids: Collection[str]) -> dict[str, dt.datetime]:
    """When each SME last connected its provider for ``source`` (SMEs without a connection absent)."""
    connected: dict[str, dt.datetime] = {}
    for chunk in in_chunks(sorted(sme_ids)):
        for sme_id, at in session.execute(
            select(SourceConnection.sme_id, SourceConnection.connected_at).where(
                SourceConnection.source == source, SourceConnection.sme_id.in_(chunk)
            )
        ):
            connected[sme_id] = _aware(at)
        for sme_id, at in session.execute(
            select(ProviderToken.sme_id, ProviderToken.obtained_at).where(
                ProviderToken.source == source, ProviderToken.sme_id.in_(chunk)
            )
        ):
            if sme_id in connected:
                connected[sme_id] = max(connected[sme_id], _aware(at))
    return connected


WINDOW_SPANS: dict[str, tuple[str, str]] = {
    "monthly_financials": ("period_month", "month"),
    "bank_transactions": ("booked_date", "day"),
    "vat_returns": ("period_start", "period_end"),
    "utility_readings": ("interval_start", "interval_seconds"),
    "utility_bills": ("period_start", "period_seconds"),
    "survey_visits": ("visited_at", "day"),
}
"""Per canonical table: the column where a row's span starts, and how it ends (a column holding its
last day, its length in seconds, or the whole ``month`` / ``day`` of the start)."""


def in_window(table: str, frame: pd.DataFrame, window: PullWindow) -> pd.Series:
    """Whether each row's whole span lies inside ``window``: from its first day to the end of the
    as-of day, the span a provider pull asks for (evaluation then counts complete months only).

    >>> window = PullWindow.for_history(dt.date(2026, 11, 15), 3)
    >>> months = pd.DataFrame({"period_month": [dt.date(2026, 7, 1), dt.date(2026, 8, 1), dt.date(2026, 11, 1)]})
    >>> in_window("monthly_financials", months, window).tolist()
    [False, True, False]
    """
    start_column, end = WINDOW_SPANS[table]
    first = pd.to_datetime(frame[start_column], utc=True)
    if end == "month":
        last = first + pd.offsets.MonthEnd(0)
    elif end == "day":
        last = first
    elif end.endswith("_seconds"):
        last = first + pd.to_timedelta(frame[end].astype("int64") - 1, unit="s")
    else:
        last = pd.to_datetime(frame[end], utc=True)
    lower = pd.Timestamp(window.start, tz="UTC")
    upper = pd.Timestamp(window.as_of, tz="UTC") + pd.Timedelta(days=1)
    return ((first >= lower) & (last < upper)).fillna(False).astype(bool)


@dataclass
class UploadRead:
    """What one SME's uploads of a source gave: rows per canonical table, lineage and notes."""

    tables: dict[str, pd.DataFrame]
    landed: list[LandedPayload] = field(default_factory=list)
    records_raw: int = 0
    outside_window: int = 0
    unreadable: list[str] = field(default_factory=list)
    errors: list[tuple[UploadedFile, FormatError]] = field(default_factory=list)

    @property
    def records_canonical(self) -> int:
        return sum(len(frame) for frame in self.tables.values())

    def notes(self) -> str:
        """One line for the run's record: what was not used, and why."""
        parts = []
        if self.outside_window:
            parts.append(f"{self.outside_window} rows outside the consented window not used")
        if self.unreadable:
            parts.append(f"received, not yet readable: {', '.join(self.unreadable)}")
        return "; ".join(parts)


def read_uploads(
    store: Store, source: str, sme_id: str, files: Sequence[UploadedFile], window: PullWindow
) -> UploadRead:
    """Read ``files`` (one SME's, oldest first) again from their raw copies; their rows inside
    ``window``, the newer file's row winning on a natural key both hold.

    A raw copy that no longer hashes to its recorded sha256, or that its parser now refuses, is an
    error (``errors``) and gives no rows; the caller decides what that means for the run.
    """
    read = UploadRead({t.name: t.empty_frame() for t in TABLES_BY_SOURCE[source]})
    parts: dict[str, list[pd.DataFrame]] = {name: [] for name in read.tables}
    for file in files:
        if file.status != "parsed" or file.format is None:
            read.unreadable.append(file.filename)
            continue
        try:
            data = store.read_bytes(file.raw_path)
            if sha256_hex(data) != file.sha256:
                raise FormatError("the raw copy no longer matches its sha256 (changed since it was uploaded)")
            parsed = formats.parse(data, format_name=file.format, sme_id=sme_id, name=file.filename)
        except FormatError as error:
            read.errors.append((file, error))
            continue
        except OSError as error:
            read.errors.append((file, FormatError(f"the raw copy cannot be read: {error}")))
            continue
        read.landed.append(
            LandedPayload(
                sequence=len(read.landed),
                sha256=file.sha256,
                path=file.raw_path,
                request=f"upload {file.filename}"[:1024],
                media_type=sniff_media_type(data)[:64],
                size_bytes=len(data),
                landed_at=file.uploaded_at,
            )
        )
        for name in parts:
            frame = parsed.tables.get(name)
            if frame is None or not len(frame):
                continue
            read.records_raw += len(frame)
            inside = in_window(name, frame, window)
            read.outside_window += int((~inside).sum())
            parts[name].append(frame.loc[inside.to_numpy()])
    if read.errors:
        read.tables = {name: frame.iloc[0:0] for name, frame in read.tables.items()}
        return read
    for table in TABLES_BY_SOURCE[source]:
        frames = [f[table.column_names] for f in parts[table.name] if len(f)]
        if frames:
            merged = pd.concat(frames, ignore_index=True)
            read.tables[table.name] = merged.drop_duplicates(list(table.key), keep="last").reset_index(
                drop=True
            )
    return read
