"""Green Button ESPI files (Atom feed or ``espi:`` root) -> ``utility_readings``, ``utility_bills``, summaries.

The reading itself is :mod:`connectors.utility.espi`, the parser the utility connector uses; this
module adds what a file read on its own needs:

* totals: ``readings``, ``total_kwh`` or ``total_therm`` (or ``total_m3``), and ``total_cost`` in
  currency units summed before rounding (ESPI costs are in hundred-thousandths: 2205567 is
  $22.05567);
* a ``usage_summaries`` table: each ``UsageSummary`` / ``ElectricPowerUsageSummary`` with its
  billing period, ``billLastPeriod``, ``billToDate``, ``costAdditionalLastPeriod`` (currency units)
  and ``overallConsumptionLastPeriod`` (scaled by the reading type's power of ten). Real files carry
  no payment dates, so a summary is a bill only where the billing extension gives its due date;
* a check of the nesting depth against ``limits.max_depth`` is libxml2's own (256) here, as the
  tree is built once for the link resolution; DTDs are refused before anything is read;
* warnings on odd but readable data: reading types without a unit, interval readings starting
  before 1990 or after 2100, zero or negative durations, readings whose length differs from the
  reading type's ``intervalLength``, the same interval twice, and local time parameters that are
  not whole quarter hours.
"""

from __future__ import annotations

import datetime as dt
import re
from typing import Any

import pandas as pd

from connectors.core.parsing import as_numbers, build_result, combine_rejects, single
from connectors.formats._connector_results import raise_first_reject
from connectors.formats.base import (
    DEFAULT_LIMITS,
    FormatError,
    Limits,
    Parsed,
    Source,
    read_all,
)
from connectors.utility import espi
from warehouse.canonical import UTILITY_BILLS, UTILITY_READINGS

NAME = "espi"
ATOM_NS = "http://www.w3.org/2005/Atom"
ESPI_NS = "http://naesb.org/espi"
EARLIEST = int(dt.datetime(1990, 1, 1, tzinfo=dt.UTC).timestamp())
LATEST = int(dt.datetime(2100, 1, 1, tzinfo=dt.UTC).timestamp())


def _number(text: str | None) -> float | None:
    try:
        return float(text) if text not in (None, "") else None
    except ValueError:
        return None


def _reading_types(feed: espi.Feed) -> list[dict[str, Any]]:
    return [
        {
            "record": entry.record,
            "uom": espi._text(entry.resource, f"{espi.ESPI}uom"),
            "power": espi._text(entry.resource, f"{espi.ESPI}powerOfTenMultiplier"),
            "interval": espi._text(entry.resource, f"{espi.ESPI}intervalLength"),
        }
        for entry in feed.reading_types
    ]


def summaries(feed: espi.Feed, power_of_ten: float) -> pd.DataFrame:
    """One row per usage summary: billing period, bill amounts (currency units), consumption."""
    rows = []
    for entry in feed.summaries:
        resource = entry.resource

        def value(name: str, resource: Any = resource) -> float | None:
            return _number(espi._text(resource, f"{espi.ESPI}{name}"))

        start = value("billingPeriod/" + f"{espi.ESPI}start")
        cost = {name: value(name) for name in ("billLastPeriod", "billToDate", "costAdditionalLastPeriod")}
        consumption = espi._text(resource, f"{espi.ESPI}overallConsumptionLastPeriod/{espi.ESPI}value")
        rows.append(
            {
                "usage_point_id": espi._usage_point_of(entry),
                "period_start": pd.Timestamp(int(start), unit="s", tz="UTC") if start is not None else None,
                "period_seconds": value("billingPeriod/" + f"{espi.ESPI}duration"),
                **{
                    key: (None if amount is None else round(amount * espi.ESPI_COST_SCALE, 5))
                    for key, amount in (
                        ("bill_last_period", cost["billLastPeriod"]),
                        ("bill_to_date", cost["billToDate"]),
                        ("cost_additional_last_period", cost["costAdditionalLastPeriod"]),
                    )
                },
                "overall_consumption_last_period": (
                    None if _number(consumption) is None else _number(consumption) * 10.0**power_of_ten
                ),
                "currency": espi.CURRENCIES.get(espi._text(resource, f"{espi.ESPI}currency") or ""),
                "source_record": entry.record,
            }
        )
    return pd.DataFrame(
        rows,
        columns=[
            "usage_point_id",
            "period_start",
            "period_seconds",
            "bill_last_period",
            "bill_to_date",
            "cost_additional_last_period",
            "overall_consumption_last_period",
            "currency",
            "source_record",
        ],
    )


def odd_data(feed: espi.Feed, raw: pd.DataFrame) -> list[str]:
    """Warnings on readable but odd content (see the module docstring)."""
    warnings = []
    types = _reading_types(feed)
    for reading_type in types:
        if reading_type["uom"] is None:
            warnings.append(f"{reading_type['record']}: ReadingType states no unit (uom)")
    starts = as_numbers(raw["start"])
    durations = as_numbers(raw["duration"])
    odd_start = (starts < EARLIEST) | (starts >= LATEST)
    if odd_start.any():
        first = raw.loc[odd_start, "source_record"].iloc[0]
        warnings.append(f"{int(odd_start.sum())} readings start before 1990 or after 2100 (first: {first})")
    if (durations <= 0).any():
        first = raw.loc[durations <= 0, "source_record"].iloc[0]
        warnings.append(f"{int((durations <= 0).sum())} readings have no positive duration (first: {first})")
    lengths = {_number(t["interval"]) for t in types if _number(t["interval"])}
    if len(lengths) == 1:
        length = lengths.pop()
        off = durations.notna() & (durations != length)
        if off.any() and off.sum() < len(durations):
            warnings.append(
                f"{int(off.sum())} readings last other than the ReadingType's intervalLength {length:g} s"
            )
    repeated = raw.duplicated(["meter_key", "start"], keep="first") & starts.notna()
    if repeated.any():
        warnings.append(f"{int(repeated.sum())} readings repeat an interval already read")
    return warnings


TZ_OFFSET = re.compile(rb"<(?:[\w.-]+:)?tzOffset>\s*(-?\d+)\s*<")


def _local_time_warnings(data: bytes) -> list[str]:
    """``LocalTimeParameters/tzOffset`` values that are no real zone offset (whole quarter hours, |x| <= 14 h)."""
    warnings = []
    for match in TZ_OFFSET.finditer(data):
        offset = int(match.group(1))
        if offset % 900 or abs(offset) > 14 * 3600:
            warnings.append(f"LocalTimeParameters: tzOffset {offset} s is not a real time zone offset")
    return warnings


def parse(
    source: Source, *, sme_id: str = "", raw_sha256: str = "", limits: Limits = DEFAULT_LIMITS
) -> Parsed:
    """A Green Button file -> readings, bills and usage summaries, totals and warnings."""
    data = read_all(source, limits)
    if not data.strip():
        raise FormatError("empty file")
    warnings = _local_time_warnings(data)
    batch = single(sme_id, data, source=espi.SOURCE, label="", media_type="application/atom+xml")
    feed, page_rejects = espi.read_feed(batch)  # safe lxml: DTDs refused, libxml2's depth limit
    if len(page_rejects):
        first = page_rejects.iloc[0]
        raise FormatError(str(first["reason"]), field=str(first["field"]))
    raw = espi.readings_frame(feed)
    if len(raw) > limits.max_records:
        raise FormatError(f"more than {limits.max_records} records (limit)")
    if raw.empty and not feed.summaries:
        raise FormatError("no IntervalBlock readings and no usage summary in the file", field="IntervalBlock")
    warnings += odd_data(feed, raw)
    readings, reading_rejects = espi.readings_to_canonical(feed, espi.meters_frame(feed), raw)
    bills, bill_rejects = espi.bills_to_canonical(feed)
    result = build_result(
        espi.SOURCE,
        {UTILITY_READINGS.name: readings, UTILITY_BILLS.name: bills},
        combine_rejects([reading_rejects, bill_rejects]),
        feed.records,
    )
    raise_first_reject(result)
    readings = result.tables[UTILITY_READINGS.name]
    bills = result.tables[UTILITY_BILLS.name]
    powers = [_number(t["power"]) for t in _reading_types(feed) if _number(t["power"]) is not None]
    summary = summaries(feed, powers[0] if len(set(powers)) == 1 else 0.0)
    summary.insert(0, "sme_id", sme_id)
    totals: dict[str, Any] = {"readings": len(readings)}
    for unit, total in readings.groupby("unit")["consumption"].sum().items():
        totals[f"total_{unit.lower()}"] = round(float(total), 6)
    costs = as_numbers(raw["cost"])
    totals["total_cost"] = round(float(costs.sum()) * espi.ESPI_COST_SCALE, 5)
    return Parsed(
        format=NAME,
        tables={UTILITY_READINGS.name: readings, UTILITY_BILLS.name: bills, "usage_summaries": summary},
        totals=totals,
        warnings=warnings,
    )


def detect(head: bytes, root: tuple[str, str]) -> bool:
    namespace, name = root
    if namespace == ESPI_NS:
        return True
    return namespace == ATOM_NS and name == "feed" and b"http://naesb.org/espi" in head
