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

>>> sniff_media_type(b'<?xml version="1.0"?><feed/>')
'application/xml'
>>> sniff_media_type(b"date,account,amount\\n")
'text/csv'
>>> sniff_media_type(bytes([0x89, 0x50, 0x4E, 0x47]))
'application/octet-stream'
"""

from __future__ import annotations

import datetime as dt

from sqlalchemy.orm import Session

from connectors import formats
from connectors.core.landing import land_page
from connectors.core.streams import RawPage
from connectors.formats.base import FormatError, Limits
from warehouse.errors import DossierError
from warehouse.models import ConnectorLink, Upload
from warehouse.storage import Store

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
