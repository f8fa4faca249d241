"""What every file-format parser shares: its result, its one error, its limits and safe XML reading.

A format parser is a pure function ``parse(source, *, sme_id, label, limits) -> Parsed``: it reads
bytes or a binary stream, and returns the canonical frames the file yields (each row carrying
``sme_id``, ``source_record`` and ``raw_sha256``), the totals ``dossier parse`` prints, and warnings
(data that is odd but usable, such as balances that do not reconcile). A file it cannot accept
raises :class:`FormatError`, which names the record and the field; nothing is half-returned.

XML is read with ``lxml.etree.iterparse`` - streaming, so memory stays flat as a file grows - with
entities left unresolved, no network, no DTD loading, and any ``<!DOCTYPE`` refused outright: a
legitimate SAF-T, ESPI, OFX 2 or VAT file never needs one, and refusing it closes entity expansion
("billion laughs") and external entities (XXE) at once.

>>> FormatError("invalid amount: 'x'", record="Transaction[3]/Line[1]", field="DebitAmount/Amount").where("gl.xml")
"gl.xml: record Transaction[3]/Line[1], field DebitAmount/Amount: invalid amount: 'x'"
"""

from __future__ import annotations

import codecs
import datetime as dt
import functools
import hashlib
import io
import json
import re
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import IO, Any

import pandas as pd
from lxml import etree

from warehouse.canonical import TABLES, CanonicalTable
from warehouse.errors import DossierError

Source = bytes | IO[bytes]
"""What a parser reads: the whole file as bytes, or a binary stream positioned at its start."""


class FormatError(DossierError):
    """A file a parser cannot accept: what is wrong, in which record, in which field.

    ``record`` locates the record (``Transaction[12]/Line[2]``, ``row 5``, ``file`` for the file
    as a whole); ``field`` names the element, column or key (empty when the record itself is bad).
    """

    def __init__(self, reason: str, *, record: str = "file", field: str = "") -> None:
        # One line, whatever a library put in its message.
        self.reason = " ".join(str(reason).split())
        self.record = " ".join(str(record).split()) or "file"
        self.field = " ".join(str(field).split())
        super().__init__(self.where(""))

    def where(self, file: str) -> str:
        """The one-line message, prefixed with the file's name when given."""
        place = f"record {self.record}" + (f", field {self.field}" if self.field else "")
        return f"{file + ': ' if file else ''}{place}: {self.reason}"


@dataclass(frozen=True)
class Limits:
    """Bounds every parser enforces, so a hostile or broken file costs bounded time and memory.

    * ``max_bytes`` - largest file accepted (default 1 GiB);
    * ``max_depth`` - deepest XML/JSON nesting (default 64; real formats need under 15);
    * ``max_records`` - most records (transactions, readings, submissions, rows) (default 10 million);
    * ``max_seconds`` - wall-clock budget of one parse (default 600).
    """

    max_bytes: int = 1 << 30
    max_depth: int = 64
    max_records: int = 10_000_000
    max_seconds: float = 600.0


DEFAULT_LIMITS = Limits()


@dataclass
class Budget:
    """Counts records and time against :class:`Limits` while a parser runs."""

    limits: Limits
    records: int = 0
    started: float = field(default_factory=time.monotonic)

    def count(self, record: str, n: int = 1) -> None:
        """Count ``n`` more records; raise once the record or time budget is spent."""
        before, self.records = self.records, self.records + n
        if self.records > self.limits.max_records:
            raise FormatError(f"more than {self.limits.max_records} records (limit)", record=record)
        if self.records >> 10 != before >> 10:  # every 1024 records, however many at a time
            self.check_time(record)

    def check_time(self, record: str) -> None:
        if time.monotonic() - self.started > self.limits.max_seconds:
            raise FormatError(
                f"parsing took longer than {self.limits.max_seconds:g} s (limit)", record=record
            )


@dataclass
class Parsed:
    """What a format parser made of one file.

    ``tables`` maps table names to frames (canonical tables have exactly their canonical columns
    and types); ``totals`` are the figures ``dossier parse`` prints beside the row counts.
    """

    format: str
    tables: dict[str, pd.DataFrame]
    totals: dict[str, Any]
    warnings: list[str] = field(default_factory=list)

    def summary(self) -> dict[str, Any]:
        """The JSON object ``dossier parse`` prints: format, tables (row counts), totals, warnings."""
        return {
            "format": self.format,
            "tables": {name: len(frame) for name, frame in self.tables.items()},
            **self.totals,
            "warnings": list(self.warnings),
        }


def canonical_frame(table: CanonicalTable, frame: pd.DataFrame) -> pd.DataFrame:
    """``frame`` cast to ``table``'s schema and sorted by its key (as the Parquet file will hold it)."""
    if frame.empty:
        return table.empty_frame()
    ordered = frame[table.column_names].sort_values([*table.key, "source_record"], kind="stable")
    return table.to_arrow(ordered).to_pandas()


def table_named(name: str) -> CanonicalTable:
    return TABLES[name]


# --- bytes in -----------------------------------------------------------------------------------------


def read_all(source: Source, limits: Limits) -> bytes:
    """The whole file (for formats that are small by nature), refusing one over ``limits.max_bytes``."""
    if isinstance(source, bytes | bytearray | memoryview):
        data = bytes(source)
    else:
        data = source.read(limits.max_bytes + 1)
    if len(data) > limits.max_bytes:
        raise FormatError(f"file larger than {limits.max_bytes} bytes (limit)")
    return data


def sha256_of(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


BOMS = (
    (codecs.BOM_UTF8, "utf-8"),
    (codecs.BOM_UTF32_LE, "utf-32-le"),
    (codecs.BOM_UTF32_BE, "utf-32-be"),
    (codecs.BOM_UTF16_LE, "utf-16-le"),
    (codecs.BOM_UTF16_BE, "utf-16-be"),
)


def decode_text(data: bytes, *, declared: str | None = None) -> str:
    """Text of a non-XML file: BOM first, then the declared encoding, UTF-8, and Windows-1252 last.

    Windows-1252 decodes almost any byte string, so binary files are told apart by their NUL
    bytes and control characters instead.

    >>> decode_text(b"\\xef\\xbb\\xbfkonto;bel\\xc3\\xb8p")
    'konto;beløp'
    >>> decode_text("Demonstração".encode("cp1252"))
    'Demonstração'
    """
    for bom, encoding in BOMS:
        if data.startswith(bom):
            return _decoded(data[len(bom) :], encoding)
    if declared:
        try:
            return _decoded(data, declared)
        except LookupError:
            raise FormatError(f"unknown encoding {declared!r}") from None
    try:
        return _decoded(data, "utf-8")
    except FormatError:
        return _decoded(data, "cp1252")


BINARY = re.compile(rb"[\x00-\x08\x0e-\x1a\x1c-\x1f]")


def _decoded(data: bytes, encoding: str) -> str:
    if "16" not in encoding and "32" not in encoding and BINARY.search(data[:65536]):
        raise FormatError("binary content (control bytes), not a text file")
    try:
        return data.decode(encoding)
    except UnicodeDecodeError as error:
        raise FormatError(f"not valid {encoding} text at byte {error.start}") from None


# --- JSON --------------------------------------------------------------------------------------------


def _depth(value: Any, limit: int) -> None:
    stack = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if depth > limit:
            raise FormatError(f"JSON nested deeper than {limit} levels (limit)")
        if isinstance(item, dict):
            stack.extend((v, depth + 1) for v in item.values())
        elif isinstance(item, list):
            stack.extend((v, depth + 1) for v in item)


def load_json(data: bytes, limits: Limits) -> Any:
    """Decoded JSON (BOM and legacy encodings handled), nesting bounded by ``limits.max_depth``."""
    text = decode_text(data)
    if not text.strip():
        raise FormatError("empty file")
    try:
        document = json.loads(text)
    except RecursionError:
        raise FormatError(f"JSON nested deeper than {limits.max_depth} levels (limit)") from None
    except ValueError as error:
        raise FormatError(f"not JSON: {error}") from None
    _depth(document, limits.max_depth)
    return document


# --- streaming XML ------------------------------------------------------------------------------------


def local(tag: object) -> str:
    """``{namespace}Name`` -> ``Name`` (comments and processing instructions give '')."""
    if not isinstance(tag, str):
        return ""
    return _local(tag)


@functools.cache
def _local(tag: str) -> str:
    return tag.rpartition("}")[2]


def text_of(element: etree._Element | None, *path: str) -> str | None:
    """Trimmed text of the descendant reached by local names ``path`` (in the element's namespace), or None."""
    if element is None:
        return None
    tag = element.tag
    namespace = tag[: tag.index("}") + 1] if isinstance(tag, str) and tag.startswith("{") else ""
    node = element.find("/".join(namespace + name for name in path))
    if node is None or node.text is None:
        return None
    value = node.text.strip()
    return value or None


DECLARATION = re.compile(rb"""^\s*<\?xml[^>]*encoding\s*=\s*["']([A-Za-z0-9._-]+)["']""")


def undeclared_legacy(head: bytes) -> bool:
    """The first bytes of an XML file have no BOM, declare no encoding, and are not UTF-8.

    >>> undeclared_legacy("<a>Ærlig</a>".encode("cp1252")), undeclared_legacy("<a>Ærlig</a>".encode())
    (True, False)
    """
    if any(head.startswith(bom) for bom, _ in BOMS) or DECLARATION.match(head[:200]):
        return False
    try:
        head.decode("utf-8")
    except UnicodeDecodeError as error:
        return error.start < len(head) - 4  # not just a character cut by the end of the head
    return False


def xml_stream(source: Source, limits: Limits) -> IO[bytes]:
    """A stream of the XML bytes, with a UTF-8 fallback for undeclared legacy (Windows-1252) text.

    libxml2 honours a byte-order mark and a declared encoding itself. A file that declares none
    but is not UTF-8 (a common export fault) is re-encoded from Windows-1252 when it is small
    enough to hold (bytes given); a stream is passed through as is.
    """
    if isinstance(source, bytes | bytearray | memoryview):
        data = read_all(source, limits)
        if not data.strip():
            raise FormatError("empty file")
        if not any(data.startswith(bom) for bom, _ in BOMS) and not DECLARATION.match(data[:200]):
            try:
                data.decode("utf-8")
            except UnicodeDecodeError:
                data = _decoded(data, "cp1252").encode("utf-8")
        return io.BytesIO(data)
    return _Bounded(source, limits.max_bytes)


class _Bounded(io.RawIOBase):
    """A read-only view of a stream that refuses to read past ``limit`` bytes."""

    def __init__(self, stream: IO[bytes], limit: int) -> None:
        self.stream = stream
        self.limit = limit
        self.seen = 0

    def readable(self) -> bool:
        return True

    def read(self, size: int = -1) -> bytes:
        chunk = self.stream.read(size if size is not None and size >= 0 else 1 << 20)
        self.seen += len(chunk)
        if self.seen > self.limit:
            raise FormatError(f"file larger than {self.limit} bytes (limit)")
        return chunk


def iter_xml(
    source: Source, limits: Limits, *, events: tuple[str, ...] = ("start", "end")
) -> Iterator[tuple[str, etree._Element, int]]:
    """``(event, element, depth)`` of a safe, streaming parse; the root is at depth 1.

    Refuses a document type declaration, nesting deeper than ``limits.max_depth``, a file over
    ``limits.max_bytes`` and malformed or truncated XML, each as a :class:`FormatError`. The root's
    start is always yielded (so a caller can check it), other starts only when asked for. Callers
    clear elements they have read (``element.clear()``) to keep memory flat.
    """
    stream = xml_stream(source, limits)
    wanted = set(events)
    etree.clear_error_log()  # the (per-thread) log then holds this parse's errors only
    context = etree.iterparse(
        stream,
        events=("start", "end"),
        resolve_entities=False,
        no_network=True,
        load_dtd=False,
        dtd_validation=False,
        huge_tree=False,
        remove_comments=True,
        remove_pis=True,
    )
    depth = 0
    checked = False
    try:
        for event, element in context:
            if not checked:
                checked = True
                docinfo = element.getroottree().docinfo
                if docinfo.doctype or docinfo.internalDTD is not None:
                    raise FormatError("a document type declaration (DTD) is not accepted in data files")
            if event == "start":
                depth += 1
                if depth > limits.max_depth:
                    raise FormatError(
                        f"XML nested deeper than {limits.max_depth} levels (limit)", field=local(element.tag)
                    )
                if "start" in wanted or depth == 1:
                    yield event, element, depth
            else:
                if "end" in wanted:
                    yield event, element, depth
                depth -= 1
    except etree.XMLSyntaxError as error:
        logged = [entry.message for entry in error.error_log]
        message = (logged[0] if logged else str(error.msg or error) or "syntax error").splitlines()[0]
        if error.lineno:
            message += f" (line {error.lineno})"
        if "Entity" in message or "DOCTYPE" in message or "entity" in message:
            raise FormatError(f"unsafe or undefined XML entity refused: {message}") from None
        raise FormatError(f"not well-formed XML (truncated or damaged?): {message}") from None


class _Prefixed(io.RawIOBase):
    """A stream whose first bytes were already read (``head``): gives them back, then the rest."""

    def __init__(self, head: bytes, stream: IO[bytes]) -> None:
        self.head = head
        self.stream = stream

    def readable(self) -> bool:
        return True

    def read(self, size: int = -1) -> bytes:
        if self.head:
            chunk, self.head = (self.head, b"") if size < 0 else (self.head[:size], self.head[size:])
            return chunk
        return self.stream.read(size)


@functools.cache
def _deeper_than(levels: int) -> etree.XPath:
    """An XPath true when the element has a descendant ``levels`` below it."""
    return etree.XPath("boolean(" + "/".join(["."] + ["*"] * levels) + ")")


class XmlTags:
    """A streaming parse in which only ``tags`` (Clark names) reach Python; libxml2 skips the rest in C.

    For large files whose records are a few known elements (SAF-T's ``Transaction``): the
    per-element cost of :func:`iter_xml` is what a bare ``iterparse`` pays, this pays it per record.
    The same refusals apply: a document type declaration (checked at the root's start), a file over
    ``limits.max_bytes``, malformed XML, and nesting deeper than ``limits.max_depth`` - checked on
    each record before the caller clears it (:meth:`check_depth`) and on what is left of the tree at
    the end. Iterate to get ``(event, element)``: the root's start, then each tag's end.

    ``root`` is the Clark name the document must start with; :attr:`fast` is False when the first
    bytes do not show it (another root, or one hidden behind a comment), and the caller then uses
    :func:`iter_xml`, which names the root it found.
    """

    def __init__(self, source: Source, limits: Limits, *, root: str, tags: Iterable[str]) -> None:
        self.limits = limits
        self.stream = xml_stream(source, limits)
        head = self.stream.read(XML_HEAD_BYTES)
        namespace, name = root_of(head)
        self.fast = f"{{{namespace}}}{name}" == root
        self.root = root
        self.tags = (root, *tags)
        self.stream = _Prefixed(head, self.stream)

    def check_depth(self, element: etree._Element, depth: int) -> None:
        """Refuse ``element`` (at ``depth``, the root being 1) if its subtree goes below the limit."""
        levels = self.limits.max_depth - depth + 1
        if levels <= 0 or _deeper_than(levels)(element):
            raise FormatError(
                f"XML nested deeper than {self.limits.max_depth} levels (limit)", field=local(element.tag)
            )

    def __iter__(self) -> Iterator[tuple[str, etree._Element]]:
        etree.clear_error_log()
        context = etree.iterparse(
            self.stream,
            events=("start", "end"),
            tag=self.tags,
            resolve_entities=False,
            no_network=True,
            load_dtd=False,
            dtd_validation=False,
            huge_tree=False,
            remove_comments=True,
            remove_pis=True,
        )
        root = None
        try:
            for event, element in context:
                if root is None:
                    root = element
                    docinfo = element.getroottree().docinfo
                    if docinfo.doctype or docinfo.internalDTD is not None:
                        raise FormatError("a document type declaration (DTD) is not accepted in data files")
                    yield event, element
                elif event == "end":
                    yield event, element
        except etree.XMLSyntaxError as error:
            logged = [entry.message for entry in error.error_log]
            message = (logged[0] if logged else str(error.msg or error) or "syntax error").splitlines()[0]
            if error.lineno:
                message += f" (line {error.lineno})"
            if "Entity" in message or "DOCTYPE" in message or "entity" in message:
                raise FormatError(f"unsafe or undefined XML entity refused: {message}") from None
            raise FormatError(f"not well-formed XML (truncated or damaged?): {message}") from None
        if root is not None:
            self.check_depth(root, 1)


def root_of(head: bytes) -> tuple[str, str]:
    """``(namespace, local name)`` of the root element found in the first bytes of a file ('' if none).

    >>> root_of(b'<?xml version="1.0"?><n1:AuditFile xmlns:n1="urn:StandardAuditFile-Taxation-Financial:NO">')
    ('urn:StandardAuditFile-Taxation-Financial:NO', 'AuditFile')
    """
    for bom, encoding in BOMS:
        if head.startswith(bom):
            head = head[len(bom) :].decode(encoding, "ignore").encode("utf-8", "ignore")
            break
    match = ROOT.search(head)
    if not match:
        return "", ""
    prefix, name, attributes = match.group(1), match.group(2), match.group(3)
    wanted = b"xmlns:" + prefix if prefix else b"xmlns"
    namespace = re.search(rb"\s" + re.escape(wanted) + rb"""\s*=\s*["']([^"']*)["']""", attributes)
    return (namespace.group(1).decode("utf-8", "replace") if namespace else ""), name.decode()


XML_HEAD_BYTES = 65536
"""How much of a file :class:`XmlTags` peeks at to find the root element."""
ROOT = re.compile(rb"<(?![?!])(?:([A-Za-z_][\w.-]*):)?([A-Za-z_][\w.-]*)((?:\s[^>]*)?)/?>", re.S)


def number(text: str | None, *, record: str, field: str, required: bool = True) -> float | None:
    """A decimal from XML/CSV text (``1 234,50`` not accepted: SAF-T and OFX write ``1234.50``)."""
    if text is None or not text.strip():
        if required:
            raise FormatError("missing", record=record, field=field)
        return None
    try:
        value = float(text)
    except ValueError:
        raise FormatError(f"not a number: {text[:40]!r}", record=record, field=field) from None
    if value != value or abs(value) > 1e15:
        raise FormatError(f"absurd amount: {text[:40]!r}", record=record, field=field)
    return value


def iso_date(text: str | None, *, record: str, field: str, required: bool = True) -> dt.date | None:
    """A calendar date ``YYYY-MM-DD`` (an impossible date such as 2017-02-30 is an error)."""
    if text is None or not text.strip():
        if required:
            raise FormatError("missing", record=record, field=field)
        return None
    try:
        day = dt.date.fromisoformat(text.strip()[:10])
    except ValueError:
        raise FormatError(f"not a date YYYY-MM-DD: {text[:40]!r}", record=record, field=field) from None
    return plausible(day, record=record, field=field)


FIRST_YEAR, LAST_YEAR = 1900, 2100
"""Dates of business records outside these years are typing or export faults, not history (a
year 7813 would also make a monthly calendar thousands of years long)."""


def plausible(day: dt.date, *, record: str, field: str) -> dt.date:
    """``day`` if its year is within :data:`FIRST_YEAR`..:data:`LAST_YEAR`, else a :class:`FormatError`."""
    if not FIRST_YEAR <= day.year <= LAST_YEAR:
        raise FormatError(
            f"implausible date {day.isoformat()} (outside {FIRST_YEAR}-{LAST_YEAR})",
            record=record,
            field=field,
        )
    return day
