"""One parser per real-world source format, and a registry that tells formats apart by content.

Every parser is a pure function of a file's bytes (or a binary stream) that returns a
:class:`~connectors.formats.base.Parsed` - canonical frames, totals and warnings - or raises a
:class:`~connectors.formats.base.FormatError` naming the record and the field. The API connectors,
the connector-link uploads and ``dossier parse`` all call these same functions; where a connector
already parsed a format (Green Button ESPI, KoboToolbox, HMRC VAT) the format module wraps that
one parser rather than keeping a second.

:func:`detect` looks at the first bytes only (the XML root element and its namespace, the OFX
header, JSON keys, CSV header names), so a mislabelled file is still read by the right parser and
an unknown one is refused with the formats it could have been.

>>> [f.name for f in FORMATS][:3]
['saft-no', 'saft-pt', 'mva-melding']
"""

from __future__ import annotations

import hashlib
import io
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from connectors.formats import (
    espi,
    hmrc_vat,
    kobo,
    ledger,
    mva_melding,
    mva_validering,
    odk,
    ofx,
    saft_no,
    saft_pt,
)
from connectors.formats.base import (
    DEFAULT_LIMITS,
    FormatError,
    Limits,
    Parsed,
    Source,
    read_all,
    root_of,
    sha256_of,
    undeclared_legacy,
)

HEAD_BYTES = 65536


@dataclass(frozen=True)
class Format:
    """A format: its name (``--format``), the source kind it feeds, how to spot it, how to read it."""

    name: str
    kind: str
    description: str
    detect: Callable[[bytes, tuple[str, str]], bool]
    parse: Callable[..., Parsed]


FORMATS: tuple[Format, ...] = (
    Format("saft-no", "accounting", "SAF-T Financial, Norway (v1.10, v1.30)", saft_no.detect, saft_no.parse),
    Format("saft-pt", "accounting", "SAF-T (PT) billing, Portugal (1.04_01)", saft_pt.detect, saft_pt.parse),
    Format(
        "mva-melding", "tax", "Norwegian VAT return (mva-melding XML)", mva_melding.detect, mva_melding.parse
    ),
    Format(
        "mva-validering",
        "tax",
        "Norwegian VAT return validation result (valideringsresultat XML)",
        mva_validering.detect,
        mva_validering.parse,
    ),
    Format("espi", "utility", "Green Button ESPI (Atom feed or espi: root)", espi.detect, espi.parse),
    Format("odk-xml", "survey", "ODK XML submission instance(s)", odk.detect_xml, odk.parse_xml),
    Format("ofx", "accounting", "OFX bank statement (1.x SGML, 2.x XML)", ofx.detect, ofx.parse),
    Format("kobo", "survey", "KoboToolbox JSON export", kobo.detect, kobo.parse),
    Format(
        "hmrc-vat",
        "tax",
        "HMRC MTD VAT obligations, return, liabilities, payments (JSON)",
        hmrc_vat.detect,
        hmrc_vat.parse,
    ),
    Format(
        "odk-csv",
        "survey",
        "ODK Central CSV export (with repeats, or its zip); XLSForm as CSV",
        odk.detect_csv,
        odk.parse_any_csv,
    ),
    Format(
        "ledger",
        "accounting",
        "general-ledger or trial-balance export (CSV, XLSX)",
        ledger.detect,
        ledger.parse,
    ),
)
FORMATS_BY_NAME = {f.name: f for f in FORMATS}


def format_named(name: str) -> Format:
    """The format called ``name``; a :class:`FormatError` naming the argument when there is none."""
    try:
        return FORMATS_BY_NAME[name]
    except KeyError:
        raise FormatError(
            f"unknown format {name!r}; known formats: {', '.join(FORMATS_BY_NAME)}",
            record="argument",
            field="--format",
        ) from None


def detect(data: bytes) -> Format:
    """The format of a file, from its first bytes; :class:`FormatError` when none matches."""
    head = data[:HEAD_BYTES]
    if not head.strip():
        raise FormatError("empty file")
    if zipfile.is_zipfile(io.BytesIO(data)):
        names = _zip_names(data)
        if any(name.endswith(".xlsx") or name == "[Content_Types].xml" for name in names):
            return FORMATS_BY_NAME["ledger"]
        return FORMATS_BY_NAME["odk-csv"]
    root = root_of(head)
    for candidate in FORMATS:
        if candidate.detect(head, root):
            return candidate
    shown = f"XML root {root[1]} in {root[0] or 'no namespace'}" if root[1] else "content"
    raise FormatError(
        f"unrecognised format ({shown}); known formats: {', '.join(FORMATS_BY_NAME)} (or give --format)"
    )


def _zip_names(data: bytes) -> list[str]:
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            return archive.namelist()
    except (zipfile.BadZipFile, OSError):
        return []


def parse(
    source: Source,
    *,
    format_name: str | None = None,
    sme_id: str = "",
    limits: Limits = DEFAULT_LIMITS,
    companions: dict[str, bytes] | None = None,
    name: str | None = None,
) -> Parsed:
    """Detect (or take) the format of one file and parse it.

    ``companions`` are files that belong with it (ODK Central repeat tables by file name) and
    ``name`` the file's name (an ODK Central export is named after its form).
    """
    data = read_all(source, limits)
    chosen = format_named(format_name) if format_name else detect(data)
    if not data.strip():
        raise FormatError("empty file")
    options = {"sme_id": sme_id, "raw_sha256": sha256_of(data), "limits": limits}
    if chosen.name == "odk-csv":
        options["companions"] = companions
        options["name"] = name or "main"
    return chosen.parse(data, **options)


VALIDATION_COMPANIONS = ("{stem}.valideringsresultat.xml", "{stem}-valideringsresultat.xml")
"""Where ``parse_path`` finds the validation result of an mva-melding: beside it, named after it."""

STREAMED = frozenset({"saft-no", "saft-pt", "mva-melding"})
"""Formats whose parser streams: ``parse_path`` hands them the open file, never the whole bytes."""


def _file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as stream:
        for chunk in iter(lambda: stream.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def parse_path(
    path: Path, *, format_name: str | None = None, sme_id: str = "", limits: Limits = DEFAULT_LIMITS
) -> Parsed:
    """Parse the file at ``path``; an ODK Central main table picks up its ``<stem>-*.csv`` repeats.

    A streamed format (:data:`STREAMED`) is read from the open file, so memory stays flat however
    large the file; the others are read whole (they are small by nature, or need the whole tree).
    """
    if not path.is_file():
        raise FormatError("no such file")
    if path.stat().st_size > limits.max_bytes:
        raise FormatError(f"file larger than {limits.max_bytes} bytes (limit)")
    with path.open("rb") as stream:
        head = stream.read(HEAD_BYTES)
    if not head.strip():
        raise FormatError("empty file")
    if format_name is None and not head.startswith(b"PK\x03\x04"):
        format_name = detect(head).name
    if format_name is not None:
        format_named(format_name)
    if format_name in STREAMED and not undeclared_legacy(head):
        with path.open("rb") as stream:
            parsed = FORMATS_BY_NAME[format_name].parse(
                stream, sme_id=sme_id, raw_sha256=_file_sha256(path), limits=limits
            )
        if format_name == "mva-melding":
            for companion in VALIDATION_COMPANIONS:
                beside = path.with_name(companion.format(stem=path.stem))
                if beside.is_file():
                    validation = parse(beside.read_bytes(), format_name="mva-validering", sme_id=sme_id)
                    return mva_validering.with_validation(parsed, validation)
        return parsed
    data = path.read_bytes()
    companions = None
    if path.suffix.lower() == ".csv":
        companions = {p.name: p.read_bytes() for p in sorted(path.parent.glob(f"{path.stem}-*.csv"))}
    return parse(
        data, format_name=format_name, sme_id=sme_id, limits=limits, companions=companions, name=path.name
    )


__all__ = [
    "FORMATS",
    "FORMATS_BY_NAME",
    "Format",
    "FormatError",
    "Limits",
    "Parsed",
    "detect",
    "parse",
    "parse_path",
]
