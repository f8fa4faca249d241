"""Parser of Green Button (NAESB ESPI) Atom feeds into ``utility_readings`` and ``utility_bills``.

A feed is a flat list of Atom entries whose ``<content>`` holds one ESPI resource; resources refer
to each other only through their ``link`` hrefs (``.../UsagePoint/{id}/MeterReading/{id}/
IntervalBlock/{n}``). The parser reads every page of a feed together - the UsagePoint and
ReadingType a block depends on may sit on an earlier page - and:

* resolves each ``IntervalBlock`` to its usage point (``ServiceCategory/kind``: 0 electricity,
  1 gas, 2 water) and, through its ``MeterReading``, to its ``ReadingType`` (``uom``,
  ``powerOfTenMultiplier``, ``currency``);
* turns each ``IntervalReading`` into a reading: ``value x 10^powerOfTenMultiplier`` in the
  canonical unit (Wh become kWh), ``cost`` from 1/100000 of the currency unit;
* turns each ``UsageSummary`` (or ESPI 1.1's ``ElectricPowerUsageSummary``) that states a bill
  into a bill: ``billLastPeriod`` for ``billingPeriod``, due on the ``paymentDueDate`` of the
  billing extension (ESPI itself has no due date) and paid on the date of its (last) payment line
  (``costAdditionalDetailLastPeriod`` with ``itemKind`` 9). A summary without the billing
  extension describes consumption only and yields no bill.

Besides the Atom feed, a *containerized* document - an ESPI resource as the root element
(``<espi:UsagePoint>`` holding its ``MeterReading``, ``ReadingType`` and ``IntervalBlock``
elements, or a bare ``<espi:IntervalBlock>``) - is read too: nesting then plays the part of the
links, and each resource is located by its path (``UsagePoint[0]/MeterReading[0]/IntervalBlock[1]``).

Records are located as ``entry[urn:uuid:...]/IntervalReading[i]``. XML is parsed with ``lxml``
without DTDs, entity resolution or network access; a document type declaration is refused.

>>> convert = UNITS[("electricity", 72)]
>>> convert
('kWh', 0.001)
"""

from __future__ import annotations

import io
import logging
import re
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pcsv
from lxml import etree
from lxml.etree import _Element as Element

from connectors.core.parsing import (
    ParseResult,
    SmePages,
    build_result,
    combine_rejects,
    money,
    page_reject,
    rejects_where,
    single,
    to_date,
    to_datetime,
    to_number,
)
from connectors.core.streams import RawPage
from warehouse.canonical import UTILITY_BILLS, UTILITY_READINGS

log = logging.getLogger(__name__)

SOURCE = "utility"
ATOM = "{http://www.w3.org/2005/Atom}"
ESPI = "{http://naesb.org/espi}"
BILLING = "{urn:sme-dossier:sandbox:billing:1}"
ESPI_COST_SCALE = 1e-5
PAYMENT_ITEM_KIND = "9"

SERVICE_KINDS = {"0": "electricity", "1": "gas", "2": "water"}
"""ESPI ``ServiceKind`` -> canonical commodity."""

UNITS: dict[tuple[str, int], tuple[str, float]] = {
    ("electricity", 72): ("kWh", 1e-3),  # Wh
    ("electricity", 31): ("kWh", 1 / 3.6e6),  # J
    ("gas", 169): ("therm", 1.0),  # therm
    ("gas", 132): ("therm", 1e-5),  # BTU
    ("water", 42): ("m3", 1.0),  # m3
    ("water", 119): ("m3", 0.028316846592),  # ft3
    ("water", 128): ("m3", 0.003785411784),  # US gallon
}
"""(commodity, ESPI ``UnitSymbolKind``) -> (canonical unit, factor from the ESPI unit)."""

CURRENCIES = {
    "826": "GBP",
    "840": "USD",
    "978": "EUR",
    "124": "CAD",
    "036": "AUD",
    "36": "AUD",
    "554": "NZD",
    "756": "CHF",
    "752": "SEK",
    "578": "NOK",
    "208": "DKK",
    "372": "IEP",
}
"""ISO 4217 numeric code (as ESPI writes it) -> alphabetic code."""

USAGE_POINT_REF = re.compile(r"/UsagePoint/([^/]+)")
METER_READING_REF = re.compile(r"/UsagePoint/([^/]+)/MeterReading/([^/]+)")
READING_TYPE_REF = re.compile(r"/ReadingType/([^/]+)$")


@dataclass(frozen=True)
class Entry:
    """One Atom entry of one SME's feed: its id, link hrefs and the ESPI resource inside ``<content>``."""

    sme_id: str
    entry_id: str
    hrefs: tuple[str, ...]
    self_href: str
    related: tuple[str, ...]
    resource: Element
    raw_sha256: str

    @property
    def kind(self) -> str:
        return self.resource.tag.removeprefix(ESPI)

    @property
    def record(self) -> str:
        return f"entry[{self.entry_id}]"


def _text(element: Element | None, path: str) -> str | None:
    if element is None:
        return None
    found = element.find(path)
    return None if found is None or found.text is None else found.text.strip()


SAFE_PARSER = etree.XMLParser(
    resolve_entities=False,
    no_network=True,
    load_dtd=False,
    huge_tree=False,
    remove_comments=True,
    remove_pis=True,
)
"""lxml without entity resolution, DTD loading or network; ``huge_tree=False`` keeps libxml2's depth limit."""

RESOURCES = (
    "UsagePoint",
    "MeterReading",
    "ReadingType",
    "IntervalBlock",
    "UsageSummary",
    "ElectricPowerUsageSummary",
)


class UnsafeXml(ValueError):
    """A document type declaration (where entity expansion and external entities live)."""


def safe_root(body: bytes) -> Element:
    """The root element of ``body``; raises :class:`UnsafeXml` on a DTD, ``XMLSyntaxError`` if malformed."""
    root = etree.fromstring(body, SAFE_PARSER)
    docinfo = root.getroottree().docinfo
    if docinfo.doctype or docinfo.internalDTD is not None:
        raise UnsafeXml("a document type declaration (DTD) is not accepted")
    return root


def containerized_entries(sme_id: str, page: RawPage, root: Element) -> list[Entry]:
    """Entries for a document whose root is an ESPI resource: links made from the nesting.

    The n-th ``UsagePoint`` is usage point ``n`` (or the document's own, for a bare resource),
    the m-th ``MeterReading`` inside it is ``n/m``; a ``ReadingType`` and ``IntervalBlock`` belong
    to the meter reading they sit in (or the only one there is).
    """
    entries: list[Entry] = []
    counters: dict[tuple[str, str], int] = {}

    def visit(element: Element, path: str, point: str, meter: str) -> None:
        kind = element.tag.removeprefix(ESPI) if isinstance(element.tag, str) else ""
        if kind not in RESOURCES:
            return
        index = counters.get((path, kind), 0)
        counters[(path, kind)] = index + 1
        here = f"{path}/{kind}[{index}]".lstrip("/")
        if kind == "UsagePoint":
            point = str(index)
        elif kind == "MeterReading":
            meter = str(index)
        base = f"/UsagePoint/{point}/MeterReading/{meter}"
        if kind == "UsagePoint":
            self_href, related = f"/UsagePoint/{point}", ()
        elif kind == "ReadingType":
            self_href, related = f"/ReadingType/{point}-{meter}", ()
        elif kind == "MeterReading":
            self_href, related = base, (f"/ReadingType/{point}-{meter}",)
        elif kind == "IntervalBlock":
            self_href, related = f"{base}/IntervalBlock/{index}", ()
        else:
            self_href, related = f"/UsagePoint/{point}/{kind}/{index}", ()
        entries.append(
            Entry(
                sme_id=sme_id,
                entry_id=here,
                hrefs=(self_href, *related),
                self_href=self_href,
                related=related,
                resource=element,
                raw_sha256=page.sha256,
            )
        )
        for child in element:
            visit(child, here, point, meter)

    visit(root, "", "0", "0")
    kinds = {entry.kind for entry in entries}
    if "MeterReading" not in kinds and kinds & {"ReadingType", "IntervalBlock"}:
        # A bare block or reading type: stand in the one meter reading it implies.
        entries.append(
            Entry(
                sme_id,
                "MeterReading[implied]",
                ("/UsagePoint/0/MeterReading/0",),
                "/UsagePoint/0/MeterReading/0",
                ("/ReadingType/0-0",),
                etree.Element(f"{ESPI}MeterReading"),
                page.sha256,
            )
        )
    return entries


def feed_entries(sme_id: str, page: RawPage) -> tuple[list[Entry], pd.DataFrame]:
    """The entries of one feed page, or a reject naming the page when it is not safe, well-formed Atom."""
    try:
        root = safe_root(page.body)
    except UnsafeXml as error:
        return [], page_reject(sme_id, page, "", f"unsafe XML refused: {error}")
    except etree.XMLSyntaxError as error:
        return [], page_reject(sme_id, page, "", f"not well-formed XML: {error}")
    if isinstance(root.tag, str) and root.tag.startswith(ESPI):
        return containerized_entries(sme_id, page, root), combine_rejects([])
    if root.tag != f"{ATOM}feed":
        return [], page_reject(sme_id, page, "", f"not an Atom feed (root element {root.tag})")
    entries = []
    for position, entry in enumerate(root.iter(f"{ATOM}entry")):
        links = entry.findall(f"{ATOM}link")
        content = entry.find(f"{ATOM}content")
        resources = [child for child in content if isinstance(child.tag, str)] if content is not None else []
        if not resources:
            continue
        entries.append(
            Entry(
                sme_id=sme_id,
                entry_id=_text(entry, f"{ATOM}id") or f"{page.label}#{position}",
                hrefs=tuple(link.get("href", "") for link in links),
                self_href=next((link.get("href", "") for link in links if link.get("rel") == "self"), ""),
                related=tuple(link.get("href", "") for link in links if link.get("rel") == "related"),
                resource=resources[0],
                raw_sha256=page.sha256,
            )
        )
    return entries, combine_rejects([])


def _usage_point_of(entry: Entry) -> str | None:
    for href in (entry.self_href, *entry.hrefs):
        match = USAGE_POINT_REF.search(href)
        if match:
            return match.group(1)
    return None


def _meter_reading_of(entry: Entry) -> str | None:
    """``<usage point>/<meter reading>`` named by the entry's links, e.g. ``1/01``."""
    for href in (entry.self_href, *entry.hrefs):
        match = METER_READING_REF.search(href)
        if match:
            return f"{match.group(1)}/{match.group(2)}"
    return None


def _reading_type_ref(href: str) -> str | None:
    match = READING_TYPE_REF.search(href.rstrip("/"))
    return match.group(1) if match else None


@dataclass
class Feed:
    """The entries of many SMEs' feeds (all pages), sorted by resource kind."""

    usage_points: list[Entry]
    meter_readings: list[Entry]
    reading_types: list[Entry]
    interval_blocks: list[Entry]
    summaries: list[Entry]
    records: dict[str, int]


def read_feed(batch: Sequence[SmePages]) -> tuple[Feed, pd.DataFrame]:
    """Every entry of every page, by kind (page-level rejects for pages that do not parse).

    An entry id seen twice within one SME's feed (a page served twice) counts once.
    """
    feed = Feed([], [], [], [], [], {})
    rejects = []
    by_kind = {
        "UsagePoint": feed.usage_points,
        "MeterReading": feed.meter_readings,
        "ReadingType": feed.reading_types,
        "IntervalBlock": feed.interval_blocks,
        "UsageSummary": feed.summaries,
        "ElectricPowerUsageSummary": feed.summaries,
    }
    for item in batch:
        seen: set[str] = set()
        records = 0
        for page in item.pages:
            entries, page_rejects = feed_entries(item.sme_id, page)
            rejects.append(page_rejects)
            for entry in entries:
                if entry.entry_id in seen or entry.kind not in by_kind:
                    continue
                seen.add(entry.entry_id)
                by_kind[entry.kind].append(entry)
                if entry.kind == "IntervalBlock":
                    records += len(entry.resource.findall(f"{ESPI}IntervalReading"))
                elif entry.kind.endswith("UsageSummary"):
                    records += 1
        feed.records[item.sme_id] = records
    return feed, combine_rejects(rejects)


def meters_frame(feed: Feed) -> pd.DataFrame:
    """One row per (SME, meter reading): usage point, commodity and the reading type's unit and currency."""
    points = pd.DataFrame(
        {
            "sme_id": [e.sme_id for e in feed.usage_points],
            "usage_point_id": [_usage_point_of(e) for e in feed.usage_points],
            "service_kind": [
                _text(e.resource, f"{ESPI}ServiceCategory/{ESPI}kind") for e in feed.usage_points
            ],
        },
        dtype="object",
    )
    types = pd.DataFrame(
        {
            "sme_id": [e.sme_id for e in feed.reading_types],
            "reading_type": [_reading_type_ref(e.self_href) for e in feed.reading_types],
            "uom": [_text(e.resource, f"{ESPI}uom") for e in feed.reading_types],
            "power_of_ten": [_text(e.resource, f"{ESPI}powerOfTenMultiplier") for e in feed.reading_types],
            "currency_code": [_text(e.resource, f"{ESPI}currency") for e in feed.reading_types],
        },
        dtype="object",
    )
    readings = pd.DataFrame(
        {
            "sme_id": [e.sme_id for e in feed.meter_readings],
            "meter_key": [_meter_reading_of(e) for e in feed.meter_readings],
            "reading_type": [
                next((ref for ref in map(_reading_type_ref, e.related) if ref), None)
                for e in feed.meter_readings
            ],
        },
        dtype="object",
    )
    only_type = types.groupby("sme_id")["reading_type"].agg(
        lambda refs: refs.iloc[0] if len(refs) == 1 else None
    )
    readings["reading_type"] = readings["reading_type"].fillna(readings["sme_id"].map(only_type))
    readings["usage_point_id"] = readings["meter_key"].str.split("/").str[0]
    return readings.merge(points, on=["sme_id", "usage_point_id"], how="left").merge(
        types, on=["sme_id", "reading_type"], how="left"
    )


_READING_FIELDS = ("start", "duration", "value", "cost")
_ALL_BLOCKS = etree.XPath("//e:IntervalBlock", namespaces={"e": ESPI.strip("{}")})
_READINGS_XSLT = etree.XSLT(
    etree.XML(
        b"""<xsl:stylesheet version="1.0" xmlns:xsl="http://www.w3.org/1999/XSL/Transform"
  xmlns:e="http://naesb.org/espi"><xsl:output method="text" encoding="UTF-8"/>
<xsl:template match="/"><xsl:for-each select="//e:IntervalBlock"><xsl:variable name="b" select="position()"/>
<xsl:for-each select="descendant::e:IntervalReading"><xsl:value-of select="$b"/>
<xsl:text>&#9;</xsl:text><xsl:value-of select="normalize-space((e:timePeriod/e:start)[last()]/text()[1])"/>
<xsl:text>&#9;</xsl:text><xsl:value-of select="normalize-space((e:timePeriod/e:duration)[last()]/text()[1])"/>
<xsl:text>&#9;</xsl:text><xsl:value-of select="normalize-space(e:value[last()]/text()[1])"/>
<xsl:text>&#9;</xsl:text><xsl:value-of select="normalize-space(e:cost[last()]/text()[1])"/>
<xsl:text>&#10;</xsl:text></xsl:for-each></xsl:for-each></xsl:template></xsl:stylesheet>"""
    ),
    access_control=etree.XSLTAccessControl.DENY_ALL,
)
"""Every reading of a document as a tab-separated line: block number (document order), start,
duration, value, cost. Each field is the text of the reading's last such element (as the
reading-by-reading loop kept it), whitespace-trimmed; an absent or empty one is an empty field."""

_READING_COLUMNS = pa.schema([("block", pa.int64())] + [(name, pa.string()) for name in _READING_FIELDS])


def _document_readings(root: Element) -> tuple[dict[Element, tuple[int, int]], pa.Table]:
    """Every reading of one parsed document in one C pass (XSLT, then Arrow's CSV reader), and
    each block's row range in it: no Python work per reading.

    Rows come grouped by ``IntervalBlock`` in document order, each block's readings being all
    ``IntervalReading`` elements inside it (as :func:`_block_rows` iterates them).
    """
    blocks = _ALL_BLOCKS(root)
    text = bytes(_READINGS_XSLT(root))
    if text:
        table = pcsv.read_csv(
            io.BytesIO(text),
            read_options=pcsv.ReadOptions(column_names=_READING_COLUMNS.names),
            parse_options=pcsv.ParseOptions(delimiter="\t", quote_char=False, double_quote=False),
            convert_options=pcsv.ConvertOptions(
                column_types=_READING_COLUMNS, strings_can_be_null=True, null_values=[""]
            ),
        )
    else:
        table = _READING_COLUMNS.empty_table()
    counts = np.bincount(table["block"].to_numpy(), minlength=len(blocks) + 1)[1:]
    ends = np.cumsum(counts)
    ranges = {
        block: (int(end - count), int(end)) for block, count, end in zip(blocks, counts, ends, strict=True)
    }
    return ranges, table


def _block_rows(block: Entry) -> dict[str, list[str | None]]:
    """The text columns of one block, reading by reading (any shape)."""
    wanted = {f"{ESPI}value": "value", f"{ESPI}cost": "cost"}
    period = {f"{ESPI}start": "start", f"{ESPI}duration": "duration"}
    time_period = f"{ESPI}timePeriod"
    columns: dict[str, list[str | None]] = {name: [] for name in _READING_FIELDS}
    for reading in block.resource.iter(f"{ESPI}IntervalReading"):
        found: dict[str, str | None] = {}
        for child in reading:
            if child.tag == time_period:
                for part in child:
                    if part.tag in period:
                        found[period[part.tag]] = part.text
            elif child.tag in wanted:
                found[wanted[child.tag]] = child.text
        for name in _READING_FIELDS:
            columns[name].append(found.get(name))
    return columns


def _trimmed(texts: list[str | None]) -> pa.Array:
    """Texts trimmed of surrounding whitespace, an empty one as None (one vectorised pass)."""
    trimmed = pc.utf8_trim_whitespace(pa.array(texts, type=pa.string()))
    return pc.if_else(pc.equal(trimmed, ""), pa.scalar(None, pa.string()), trimmed)


def readings_frame(feed: Feed) -> pd.DataFrame:
    """Every IntervalReading as text columns, located by entry and position, with its meter key."""
    located: dict[str, list[object]] = {"sme_id": [], "source_record": [], "raw_sha256": [], "meter_key": []}
    pieces: list[pa.Table] = []
    documents: dict[Element, tuple[dict[Element, tuple[int, int]], pa.Table]] = {}
    for block in feed.interval_blocks:
        root = block.resource.getroottree().getroot()
        if root not in documents:
            documents[root] = _document_readings(root)
        ranges, table = documents[root]
        if block.resource in ranges:
            first, end = ranges[block.resource]
            piece = table.slice(first, end - first).drop_columns(["block"])
        else:  # a resource outside the document's tree order (not expected): read it element by element
            rows = _block_rows(block)
            piece = pa.table({name: _trimmed(rows[name]) for name in _READING_FIELDS})
        pieces.append(piece)
        count = piece.num_rows
        located["sme_id"].extend([block.sme_id] * count)
        located["source_record"].extend([f"{block.record}/IntervalReading[{i}]" for i in range(count)])
        located["raw_sha256"].extend([block.raw_sha256] * count)
        located["meter_key"].extend([_meter_reading_of(block)] * count)
    frame = pd.DataFrame(located, dtype="object")
    fields = (
        pa.concat_tables(pieces)
        if pieces
        else pa.schema([(name, pa.string()) for name in _READING_FIELDS]).empty_table()
    )
    for name in _READING_FIELDS:
        frame[name] = pd.Series(fields[name].to_numpy(zero_copy_only=False), dtype="object").to_numpy()
    return frame


def _shown(values: pd.Series) -> pd.Series:
    """Values as reject reasons quote them; an absent one reads ``(none)``."""
    return values.astype("object").where(values.notna(), "(none)").astype("str")


def _with_units(meters: pd.DataFrame) -> pd.DataFrame:
    """:func:`meters_frame` with, per meter, its commodity, canonical unit and factor, and power of ten.

    Worked out once per meter (a handful of rows), then carried to every reading by the merge.
    """
    meters = meters.copy()
    meters["commodity"] = meters["service_kind"].map(SERVICE_KINDS).astype("object")
    uom = pd.to_numeric(meters["uom"], errors="coerce")
    found = [UNITS.get((c, u)) for c, u in zip(meters["commodity"], uom, strict=True)]
    meters["unit"] = pd.Series([f[0] if f else None for f in found], index=meters.index, dtype="object")
    meters["unit_factor"] = pd.Series(
        [f[1] if f else np.nan for f in found], index=meters.index, dtype="float64"
    )
    meters["known_unit"] = pd.Series([f is not None for f in found], index=meters.index, dtype=bool)
    meters["power_number"] = pd.to_numeric(meters["power_of_ten"], errors="coerce").astype("float64")
    return meters


def _meter_rejects(readings: pd.DataFrame) -> pd.DataFrame:
    """Readings whose meter cannot be resolved to a supported commodity, unit and currency."""
    commodity = readings["commodity"]
    known_unit = readings["known_unit"].astype("boolean").fillna(False).astype(bool)
    return combine_rejects(
        [
            rejects_where(readings, readings["reading_type"].isna(), "MeterReading", "no ReadingType linked"),
            rejects_where(readings, readings["service_kind"].isna(), "UsagePoint", "no UsagePoint linked"),
            rejects_where(
                readings,
                readings["service_kind"].notna() & commodity.isna(),
                "UsagePoint/ServiceCategory/kind",
                "unsupported service kind: " + readings["service_kind"].astype("str"),
            ),
            rejects_where(
                readings,
                commodity.notna() & readings["reading_type"].notna() & ~known_unit,
                "ReadingType/uom",
                "unsupported unit " + _shown(readings["uom"]) + " for " + commodity.astype("str"),
            ),
            rejects_where(
                readings,
                readings["reading_type"].notna() & readings["currency_code"].map(CURRENCIES).isna(),
                "ReadingType/currency",
                "unknown ISO 4217 code: " + _shown(readings["currency_code"]),
            ),
        ]
    )


def readings_to_canonical(
    feed: Feed, meters: pd.DataFrame, raw: pd.DataFrame | None = None
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """``utility_readings`` columns and rejects (``raw``: :func:`readings_frame`, if already read)."""
    raw = readings_frame(feed) if raw is None else raw.copy()
    only_meter = meters.groupby("sme_id")["meter_key"].agg(
        lambda keys: keys.iloc[0] if len(keys) == 1 else None
    )
    raw["meter_key"] = raw["meter_key"].fillna(raw["sme_id"].map(only_meter))
    readings = raw.merge(_with_units(meters), on=["sme_id", "meter_key"], how="left")
    start, start_rejects = to_datetime(readings, "start", "timePeriod/start", unit="s")
    seconds, seconds_rejects = to_number(readings, "duration", "timePeriod/duration")
    value, value_rejects = to_number(readings, "value", "value")
    cost, cost_rejects = to_number(readings, "cost", "cost", required=False)
    commodity = readings["commodity"]
    factor = readings["unit_factor"].astype("float64")
    power = readings["power_number"].astype("float64").fillna(0)
    frame = pd.DataFrame(
        {
            "sme_id": readings["sme_id"],
            "usage_point_id": readings["usage_point_id"],
            "commodity": commodity,
            "interval_start": start,
            "interval_seconds": seconds,
            "consumption": (value * np.power(10.0, power) * factor).round(6),
            "unit": readings["unit"].astype("object"),
            "cost": money(cost * ESPI_COST_SCALE),
            "currency": readings["currency_code"].map(CURRENCIES),
            "source_record": readings["source_record"],
            "raw_sha256": readings["raw_sha256"],
        }
    )
    rejects = [_meter_rejects(readings), start_rejects, seconds_rejects, value_rejects, cost_rejects]
    return frame, combine_rejects(rejects)


SUMMARY_COLUMNS = [
    "sme_id",
    "source_record",
    "raw_sha256",
    "usage_point_id",
    "start",
    "duration",
    "bill_last_period",
    "currency_code",
    "has_billing_extension",
    "due",
    "paid",
]


def summaries_frame(feed: Feed) -> pd.DataFrame:
    """Every usage summary as text columns: billing period, amount, currency, due and payment dates."""
    rows = []
    for summary in feed.summaries:
        resource = summary.resource
        payment_dates = [
            _text(line, f"{ESPI}dateTime")
            for line in resource.findall(f"{ESPI}costAdditionalDetailLastPeriod")
            if _text(line, f"{ESPI}itemKind") == PAYMENT_ITEM_KIND
        ]
        billing = resource.find(f"{ESPI}extension/{BILLING}billing")
        rows.append(
            (
                summary.sme_id,
                summary.record,
                summary.raw_sha256,
                _usage_point_of(summary),
                _text(resource, f"{ESPI}billingPeriod/{ESPI}start"),
                _text(resource, f"{ESPI}billingPeriod/{ESPI}duration"),
                _text(resource, f"{ESPI}billLastPeriod"),
                _text(resource, f"{ESPI}currency"),
                billing is not None,
                _text(billing, f"{BILLING}paymentDueDate"),
                payment_dates[-1] if payment_dates else None,
            )
        )
    return pd.DataFrame(rows, columns=SUMMARY_COLUMNS, dtype="object")


def bills_to_canonical(feed: Feed) -> tuple[pd.DataFrame, pd.DataFrame]:
    """``utility_bills`` columns (summaries that state a bill) and rejects."""
    summaries = summaries_frame(feed)
    is_bill = summaries["has_billing_extension"].astype(bool)
    for sme_id, count in summaries.loc[~is_bill, "sme_id"].value_counts().items():
        log.info(
            "%s/%s: %d usage summaries carry no billing extension (no due date): consumption only, no bill",
            sme_id,
            SOURCE,
            count,
        )
    bills = summaries[is_bill].reset_index(drop=True)
    start, start_rejects = to_datetime(bills, "start", "billingPeriod/start", unit="s")
    seconds, seconds_rejects = to_number(bills, "duration", "billingPeriod/duration")
    amount, amount_rejects = to_number(bills, "bill_last_period", "billLastPeriod")
    due, due_rejects = to_date(bills, "due", "extension/billing/paymentDueDate", fmt="%Y-%m-%d")
    paid, paid_rejects = to_date(
        bills, "paid", "costAdditionalDetailLastPeriod/dateTime", unit="s", required=False
    )
    currency = bills["currency_code"].map(CURRENCIES)
    frame = pd.DataFrame(
        {
            "sme_id": bills["sme_id"],
            "usage_point_id": bills["usage_point_id"],
            "period_start": start,
            "period_seconds": seconds,
            "amount_due": money(amount * ESPI_COST_SCALE),
            "currency": currency,
            "due_date": due,
            "paid_date": paid,
            "source_record": bills["source_record"],
            "raw_sha256": bills["raw_sha256"],
        }
    )
    rejects = [
        rejects_where(bills, bills["usage_point_id"].isna(), "link[rel=self]", "names no UsagePoint"),
        rejects_where(
            bills,
            currency.isna(),
            "currency",
            "unknown ISO 4217 code: " + _shown(bills["currency_code"]),
        ),
        start_rejects,
        seconds_rejects,
        amount_rejects,
        due_rejects,
        paid_rejects,
    ]
    return frame, combine_rejects(rejects)


def parse_batch(batch: Sequence[SmePages]) -> ParseResult:
    """The feed pages of many SMEs -> ``utility_readings`` and ``utility_bills`` (or rejects)."""
    feed, page_rejects = read_feed(batch)
    readings, reading_rejects = readings_to_canonical(feed, meters_frame(feed))
    bills, bill_rejects = bills_to_canonical(feed)
    return build_result(
        SOURCE,
        {UTILITY_READINGS.name: readings, UTILITY_BILLS.name: bills},
        combine_rejects([page_rejects, reading_rejects, bill_rejects]),
        feed.records,
    )


def parse_bytes(body: bytes, *, sme_id: str, label: str = "") -> ParseResult:
    """One Green Button file (a whole feed) of one SME -> ``utility_readings`` and ``utility_bills``."""
    return parse_batch(single(sme_id, body, source=SOURCE, label=label, media_type="application/atom+xml"))
