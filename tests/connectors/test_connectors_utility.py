"""The Green Button (ESPI) parser: Green Button's published files, a paged feed of our own, rejects."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pandas as pd
import pytest

from connectors.core.parsing import SmePages
from connectors.core.streams import RawPage
from connectors.utility.espi import parse_batch, parse_bytes, read_feed, readings_frame, summaries_frame
from warehouse.canonical import UTILITY_BILLS, UTILITY_READINGS

GREEN_BUTTON = Path("realdata") / "utility"
ESPI_NS = "http://naesb.org/espi"
ROOT = "https://utility.example/espi/1_1/resource"
POINT = f"{ROOT}/Subscription/77/UsagePoint/1900012345678"


def entry(entry_id: str, self_href: str, content: str, *related: str) -> str:
    links = f'<link rel="self" href="{self_href}"/>' + "".join(
        f'<link rel="related" href="{r}"/>' for r in related
    )
    return f"<entry><id>urn:uuid:{entry_id}</id>{links}<content>{content}</content></entry>"


def feed(*entries: str, next_href: str | None = None) -> bytes:
    next_link = f'<link rel="next" href="{next_href}"/>' if next_href else ""
    return (
        '<?xml version="1.0" encoding="UTF-8"?><feed xmlns="http://www.w3.org/2005/Atom">'
        f"<id>urn:uuid:f</id>{next_link}{''.join(entries)}</feed>"
    ).encode()


def block(month_start: int, seconds: int, value: str, cost: int | None) -> str:
    cost_xml = f"<cost>{cost}</cost>" if cost is not None else ""
    return (
        f"<IntervalReading>{cost_xml}<timePeriod><duration>{seconds}</duration><start>{month_start}</start>"
        f"</timePeriod><value>{value}</value></IntervalReading>"
    )


JAN, FEB = 1704067200, 1706745600  # 2024-01-01, 2024-02-01 UTC
HEAD = (
    entry(
        "up",
        POINT,
        f'<UsagePoint xmlns="{ESPI_NS}"><ServiceCategory><kind>0</kind></ServiceCategory></UsagePoint>',
    ),
    entry("mr", f"{POINT}/MeterReading/1", f'<MeterReading xmlns="{ESPI_NS}"/>', f"{ROOT}/ReadingType/rt-1"),
    entry(
        "rt",
        f"{ROOT}/ReadingType/rt-1",
        f'<ReadingType xmlns="{ESPI_NS}"><currency>826</currency><powerOfTenMultiplier>0</powerOfTenMultiplier>'
        "<uom>72</uom></ReadingType>",
    ),
)


def interval_block(entry_id: str, n: int, *readings: str) -> str:
    return entry(
        entry_id,
        f"{POINT}/MeterReading/1/IntervalBlock/{n}",
        f'<IntervalBlock xmlns="{ESPI_NS}">{"".join(readings)}</IntervalBlock>',
    )


def summary(entry_id: str, n: int, *, due: str | None, paid_epoch: int | None) -> str:
    extension = (
        f'<extension><billing xmlns="urn:sme-dossier:sandbox:billing:1"><paymentDueDate>{due}</paymentDueDate>'
        "</billing></extension>"
        if due is not None
        else ""
    )
    payment = (
        f"<costAdditionalDetailLastPeriod><amount>-12345000</amount><dateTime>{paid_epoch}</dateTime>"
        "<itemKind>9</itemKind></costAdditionalDetailLastPeriod>"
        if paid_epoch is not None
        else ""
    )
    return entry(
        entry_id,
        f"{POINT}/UsageSummary/{n}",
        f'<UsageSummary xmlns="{ESPI_NS}">{extension}<billingPeriod><duration>2678400</duration><start>{JAN}</start>'
        f"</billingPeriod><billLastPeriod>12345000</billLastPeriod>{payment}<currency>826</currency></UsageSummary>",
    )


def test_a_paged_feed_resolves_links_across_pages_into_readings_and_bills() -> None:
    first = RawPage("subscription", "page=1", "", feed(*HEAD, next_href="page2"), "application/atom+xml")
    second = RawPage(
        "subscription",
        "page=2",
        "",
        feed(
            interval_block("b1", 1, block(JAN, 2678400, "1234000", 37_020_000)),
            interval_block("b2", 2, block(FEB, 2505600, "1100500", None)),
            summary("s1", 1, due="2024-02-17", paid_epoch=1708171200),
            summary("s2", 2, due=None, paid_epoch=None),
        ),
        "application/atom+xml",
    )

    result = parse_batch([SmePages("SME-000004", [first, second])])

    assert result.ok
    readings = UTILITY_READINGS.to_arrow(result.tables["utility_readings"]).to_pylist()
    assert readings == [
        {
            "sme_id": "SME-000004",
            "usage_point_id": "1900012345678",
            "commodity": "electricity",
            "interval_start": dt.datetime(2024, 1, 1, tzinfo=dt.UTC),
            "interval_seconds": 2678400,
            "consumption": 1234.0,
            "unit": "kWh",
            "cost": 370.2,
            "currency": "GBP",
            "source_record": "entry[urn:uuid:b1]/IntervalReading[0]",
            "raw_sha256": second.sha256,
        },
        {
            "sme_id": "SME-000004",
            "usage_point_id": "1900012345678",
            "commodity": "electricity",
            "interval_start": dt.datetime(2024, 2, 1, tzinfo=dt.UTC),
            "interval_seconds": 2505600,
            "consumption": 1100.5,
            "unit": "kWh",
            "cost": None,
            "currency": "GBP",
            "source_record": "entry[urn:uuid:b2]/IntervalReading[0]",
            "raw_sha256": second.sha256,
        },
    ]
    # the summary without the billing extension describes consumption only: no bill
    assert UTILITY_BILLS.to_arrow(result.tables["utility_bills"]).to_pylist() == [
        {
            "sme_id": "SME-000004",
            "usage_point_id": "1900012345678",
            "period_start": dt.datetime(2024, 1, 1, tzinfo=dt.UTC),
            "period_seconds": 2678400,
            "amount_due": 123.45,
            "currency": "GBP",
            "due_date": dt.date(2024, 2, 17),
            "paid_date": dt.date(2024, 2, 17),
            "source_record": "entry[urn:uuid:s1]",
            "raw_sha256": second.sha256,
        }
    ]
    assert result.records_raw == {"SME-000004": 4}


def test_a_malformed_value_or_due_date_is_a_reject_naming_entry_and_field() -> None:
    body = feed(
        *HEAD,
        interval_block("b1", 1, block(JAN, 2678400, "12O4O", 100)),
        summary("s1", 1, due="17/02/2024", paid_epoch=None),
    )
    result = parse_bytes(body, sme_id="SME-000008")
    assert sorted(
        zip(result.rejects["record"], result.rejects["field"], result.rejects["reason"], strict=True)
    ) == [
        ("entry[urn:uuid:b1]/IntervalReading[0]", "value", "not a number: '12O4O'"),
        ("entry[urn:uuid:s1]", "extension/billing/paymentDueDate", "not a %Y-%m-%d date: '17/02/2024'"),
    ]
    assert result.tables["utility_readings"].empty


def test_unresolvable_meters_and_unknown_units_are_rejects() -> None:
    odd_type = HEAD[2].replace("<uom>72</uom>", "<uom>5</uom>")
    result = parse_bytes(
        feed(HEAD[0], HEAD[1], odd_type, interval_block("b1", 1, block(JAN, 60, "1", None))), sme_id="S"
    )
    assert result.rejects[["field", "reason"]].values.tolist() == [
        ["ReadingType/uom", "unsupported unit 5 for electricity"]
    ]


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (
            b'<!DOCTYPE feed [<!ENTITY x "boom">]><feed xmlns="http://www.w3.org/2005/Atom">&x;</feed>',
            "unsafe XML refused",
        ),
        (b"<feed xmlns='http://www.w3.org/2005/Atom'><entry>", "not well-formed XML"),
        (b"<rss/>", "not an Atom feed"),
    ],
)
def test_unsafe_or_broken_xml_is_refused_with_the_page_named(body: bytes, reason: str) -> None:
    result = parse_bytes(body, sme_id="SME-1", label="page=3")
    assert result.rejects["record"].tolist() == ["page=3"]
    assert result.rejects["reason"].iloc[0].startswith(reason)


def read(shared_data: Path, name: str) -> bytes:
    return (shared_data / GREEN_BUTTON / name).read_bytes()


def test_green_button_hourly_sample_matches_its_documented_sums(shared_data: Path) -> None:
    body = read(shared_data, "greenbutton_TestGBDataHourlyNineDaysBinnedDaily.xml")
    result = parse_bytes(body, sme_id="SME-1")
    readings = result.tables["utility_readings"]

    assert len(readings) == 216
    assert readings["consumption"].sum() == pytest.approx(199.563)  # 199563 Wh
    assert set(readings["unit"]) == {"kWh"}
    assert set(readings["currency"]) == {"USD"}
    assert set(readings["interval_seconds"]) == {3600}
    assert readings["interval_start"].min() == pd.Timestamp("2014-01-01T05:00Z")
    assert readings["interval_start"].max() == pd.Timestamp("2014-01-10T04:00Z")
    # canonical money is in cents; the unrounded ESPI costs add up to the documented 2205567e-5 USD
    feed_, _ = read_feed([SmePages("SME-1", [RawPage("f", "", "", body, "")])])
    assert pd.to_numeric(readings_frame(feed_)["cost"]).sum() == 2205567
    assert readings["cost"].sum() == pytest.approx(22.05567, abs=216 * 0.005)
    summaries = summaries_frame(feed_)
    assert summaries[["bill_last_period", "start", "duration", "has_billing_extension"]].values.tolist() == [
        ["2208000", "1388552400", "2419200", False]
    ]
    assert result.tables["utility_bills"].empty


def test_green_button_daily_and_abridged_samples(shared_data: Path) -> None:
    daily = parse_bytes(read(shared_data, "greenbutton_TestGBDataOneYearDailyBinnedMonthly.xml"), sme_id="S")
    frame = daily.tables["utility_readings"]
    assert (len(frame), frame["consumption"].sum()) == (444, pytest.approx(9917.817))
    assert frame["cost"].sum() == pytest.approx(1072.12833, abs=444 * 0.005)

    abridged = parse_bytes(read(shared_data, "greenbutton_electric_containerized.xml"), sme_id="S")
    frame = abridged.tables["utility_readings"]
    assert frame["consumption"].tolist() == [0.45, 0.43, 0.418, 0.41, 0.595, 0.591, 0.611, 0.581]
    assert frame["cost"].isna().all()
    assert frame["source_record"].str.extract(r"entry\[(.*)\]/")[0].nunique() == 2


def test_green_button_gas_bill_history(shared_data: Path) -> None:
    name = "greenbutton_ngma_natural_gas_billing_billing_data_Service_1_1_2021-05-26_to_2024-04-25.xml"
    frame = parse_bytes(read(shared_data, name), sme_id="S").tables["utility_readings"]

    assert len(frame) == 35
    assert frame["consumption"].sum() == pytest.approx(3484)
    assert frame["cost"].sum() == pytest.approx(7207.11)
    first = frame.iloc[0]
    assert (
        first["usage_point_id"],
        first["commodity"],
        first["unit"],
        first["consumption"],
        first["cost"],
    ) == (
        "NET_USAGE",
        "gas",
        "therm",
        37.0,
        51.0,
    )
    assert (first["interval_start"], first["interval_seconds"]) == (
        pd.Timestamp("2021-05-26", tz="UTC"),
        35 * 86400,
    )
