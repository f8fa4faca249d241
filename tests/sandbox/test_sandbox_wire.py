"""Truth is what the wire says: a minimal reference client, crawling the running server over HTTP
and parsing every provider's payload by the documented rules, reproduces ``Universe.truth`` exactly
for SMEs without duplicated or malformed records.
"""

from __future__ import annotations

import datetime as dt
import json
import re
from typing import Any
from urllib.parse import urljoin

import pandas as pd
import pyarrow as pa
import pytest
from lxml import etree

from connectors.sandbox.universe import Universe
from warehouse.canonical import TABLES

ATOM = "{http://www.w3.org/2005/Atom}"
ESPI = "{http://naesb.org/espi}"
BILLING = "{urn:sme-dossier:sandbox:billing:1}"
HMRC_BOXES = (
    "vatDueSales", "vatDueAcquisitions", "totalVatDue", "vatReclaimedCurrPeriod", "netVatDue",
    "totalValueSalesExVAT", "totalValuePurchasesExVAT", "totalValueGoodsSuppliedExVAT", "totalAcquisitionsExVAT",
)  # fmt: skip
"""The nine boxes of an HMRC VAT return, in the order of the canonical ``vat_returns`` columns."""
VAT_BOX_COLUMNS = tuple(c.name for c in TABLES["vat_returns"].columns[7:16])
BROKEN = (
    "duplicate_identical",
    "duplicate_conflicting",
    "malformed_accounting",
    "malformed_utility",
    "malformed_survey",
)


def _utc(epoch: str | int) -> pd.Timestamp:
    return pd.Timestamp(int(epoch), unit="s", tz="UTC")


def pull_accounting(client: Any) -> pd.DataFrame:
    headers = client.bearer("accounting")
    path = f"/accounting/v1/tenants/{client.profile.tenant_id}/reports/monthly?page_size=7"
    reports, pages = [], 0
    while path:
        page = client.http.get(client.base + path, headers=headers).json()
        reports += page["reports"]
        pages += 1
        path = page["next"]
    assert pages == page["total_pages"] == -(-page["total_items"] // 7)
    rows = []
    for report in reports:
        amounts = {**report["profit_and_loss"], **report["balance_sheet"]}
        rows.append(
            {
                "sme_id": client.profile.sme_id,
                "period_month": dt.date.fromisoformat(report["period"] + "-01"),
                "currency": page["currency"],
                **{name: float(text) for name, text in amounts.items()},
            }
        )
    return pd.DataFrame(rows)


def pull_tax(client: Any, as_of: dt.date) -> pd.DataFrame:
    headers = client.bearer("tax")
    base = f"{client.base}/tax/organisations/vat/{client.profile.vrn}"
    obligations: dict[str, dict[str, str]] = {}
    for year in range(as_of.year - 3, as_of.year + 1):
        answer = client.http.get(
            f"{base}/obligations", params={"from": f"{year}-01-01", "to": f"{year}-12-31"}, headers=headers
        )
        assert answer.status_code == 200, answer.text
        obligations |= {o["periodKey"]: o for o in answer.json()["obligations"]}
    rows = []
    for key, obligation in obligations.items():
        row: dict[str, object] = {
            "sme_id": client.profile.sme_id,
            "period_key": key,
            "period_start": dt.date.fromisoformat(obligation["start"]),
            "period_end": dt.date.fromisoformat(obligation["end"]),
            "due_date": dt.date.fromisoformat(obligation["due"]),
            "status": obligation["status"],
            "received_date": dt.date.fromisoformat(obligation["received"])
            if "received" in obligation
            else None,
        }
        boxes: dict[str, object] = dict.fromkeys(HMRC_BOXES)
        if obligation["status"] == "F":
            boxes = client.http.get(f"{base}/returns/{key}", headers=headers).json()
            assert boxes["periodKey"] == key
        rows.append(row | {name: boxes[wire] for name, wire in zip(VAT_BOX_COLUMNS, HMRC_BOXES, strict=True)})
    return pd.DataFrame(rows)


def pull_utility(client: Any) -> tuple[pd.DataFrame, pd.DataFrame]:
    headers = client.bearer("utility")
    url = f"{client.base}/utility/espi/1_1/resource/Batch/Subscription/{client.profile.subscription_id}?max-results=20"
    entries = []
    while url:
        feed = etree.fromstring(client.http.get(url, headers=headers).content)
        entries += feed.findall(f"{ATOM}entry")
        nxt = feed.find(f"{ATOM}link[@rel='next']")
        url = None if nxt is None else urljoin(url, nxt.get("href"))

    def point_of(entry: Any) -> str:
        href = entry.find(f"{ATOM}link[@rel='self']").get("href")
        return re.search(r"/UsagePoint/([^/]+)", href).group(1)

    kinds: dict[str, int] = {}
    reading_types: dict[str, Any] = {}
    for entry in entries:
        content = entry.find(f"{ATOM}content")[0]
        if content.tag == f"{ESPI}UsagePoint":
            kinds[point_of(entry)] = int(content.findtext(f"{ESPI}ServiceCategory/{ESPI}kind"))
        if content.tag == f"{ESPI}ReadingType":
            point = entry.find(f"{ATOM}link[@rel='self']").get("href").rsplit("/", 1)[1].rsplit("-", 1)[0]
            reading_types[point] = content
    readings, bills = [], []
    for entry in entries:
        content = entry.find(f"{ATOM}content")[0]
        if content.tag == f"{ESPI}IntervalBlock":
            point = point_of(entry)
            kind = reading_types[point]
            power = int(kind.findtext(f"{ESPI}powerOfTenMultiplier"))
            electricity = kinds[point] == 0
            for reading in content.findall(f"{ESPI}IntervalReading"):
                value = int(reading.findtext(f"{ESPI}value"))
                scaled = value * 10**power if power >= 0 else value / 10**-power
                readings.append(
                    {
                        "sme_id": client.profile.sme_id,
                        "usage_point_id": point,
                        "commodity": "electricity" if electricity else "gas",
                        "interval_start": _utc(reading.findtext(f"{ESPI}timePeriod/{ESPI}start")),
                        "interval_seconds": int(reading.findtext(f"{ESPI}timePeriod/{ESPI}duration")),
                        "consumption": scaled / 1000 if electricity else scaled,
                        "unit": "kWh" if electricity else "therm",
                        "cost": int(reading.findtext(f"{ESPI}cost")) / 100_000,
                        "currency": "GBP" if kind.findtext(f"{ESPI}currency") == "826" else "?",
                    }
                )
        if content.tag == f"{ESPI}UsageSummary":
            payments = [
                item
                for item in content.findall(f"{ESPI}costAdditionalDetailLastPeriod")
                if item.findtext(f"{ESPI}itemKind") == "9"
            ]
            paid = _utc(payments[0].findtext(f"{ESPI}dateTime")).date() if payments else None
            bills.append(
                {
                    "sme_id": client.profile.sme_id,
                    "usage_point_id": point_of(entry),
                    "period_start": _utc(content.findtext(f"{ESPI}billingPeriod/{ESPI}start")),
                    "period_seconds": int(content.findtext(f"{ESPI}billingPeriod/{ESPI}duration")),
                    "amount_due": int(content.findtext(f"{ESPI}billLastPeriod")) / 100_000,
                    "currency": "GBP" if content.findtext(f"{ESPI}currency") == "826" else "?",
                    "due_date": dt.date.fromisoformat(
                        content.findtext(f"{ESPI}extension/{BILLING}billing/{BILLING}paymentDueDate")
                    ),
                    "paid_date": paid,
                }
            )
    return pd.DataFrame(readings), pd.DataFrame(bills)


def pull_survey(client: Any) -> pd.DataFrame:
    url = client.survey_url()
    params: dict[str, str] | None = {
        "format": "json",
        "limit": "1",
        "query": json.dumps({"sme_code": client.profile.sme_code}),
    }
    submissions = []
    while url:
        page = client.http.get(url, params=params, headers=client.kobo()).json()
        submissions += page["results"]
        url, params = (urljoin(url, page["next"]) if page["next"] else None), None
    rows = []
    for s in submissions:
        lat, lon, *_ = s["group_premises/location"].split()

        def optional(key: str, cast: Any, s: dict[str, Any] = s) -> Any:
            return cast(s[key]) if key in s else None

        rows.append(
            {
                "sme_id": client.profile.sme_id,
                "visit_id": s["_uuid"],
                "form_version": s["__version__"],
                "agent_id": s["_submitted_by"],
                "visited_at": pd.Timestamp(s["start"]).tz_convert("UTC"),
                "submitted_at": pd.Timestamp(s["_submission_time"], tz="UTC"),
                "premises_found": s["group_premises/premises_found"] == "yes",
                "business_operating": s["group_premises/business_operating"] == "yes",
                "employees_observed": optional("group_observation/employees_observed", int),
                "customers_observed": optional("group_observation/customers_observed", int),
                "stock_level": optional("group_observation/stock_level", str),
                "reported_monthly_revenue": optional("group_owner/reported_monthly_revenue", float),
                "latitude": float(lat),
                "longitude": float(lon),
                "photo_count": len(s["_attachments"]),
                "notes": s.get("notes"),
            }
        )
    return pd.DataFrame(rows)


def _canonical(name: str, frame: pd.DataFrame) -> pa.Table:
    frame = frame.assign(source_record="", raw_sha256="")
    return TABLES[name].to_arrow(frame).sort_by([(k, "ascending") for k in TABLES[name].key])


@pytest.fixture(scope="module")
def clean_smes(universe: Universe) -> list[str]:
    """A handful of SMEs without broken records, covering gas meters, gaps and failing firms."""
    profiles = universe.profiles()
    clean = profiles[~profiles.defects.map(lambda d: any(b in d for b in BROKEN))]
    has_gas = clean.sme_id.map(lambda s: len(universe.sme(s).meters) == 2)
    picks = [
        clean[has_gas].sme_id.iloc[0],
        clean[clean.defects.map(lambda d: "gap" in d)].sme_id.iloc[0],
        clean[clean.trajectory == "failing"].sme_id.iloc[0],
        clean[clean.fraud.map(lambda f: "copied_survey" in f)].sme_id.iloc[0],
        clean[clean.fraud.map(lambda f: "inflated_books" in f)].sme_id.iloc[0],
        clean.sme_id.iloc[0],
    ]
    return sorted(set(picks))


def test_a_reference_client_reproduces_the_truth_over_http(
    universe: Universe, client: Any, clean_smes: list[str]
) -> None:
    # The sandbox serves no bank statements (yet): its truth has no bank_transactions rows. Its
    # truth is visits; the generic survey_submissions rows of them are checked by the contract tests.
    derived = ("bank_transactions", "survey_submissions")
    pulled: dict[str, list[pd.DataFrame]] = {name: [] for name in TABLES if name not in derived}
    for sme_id in clean_smes:
        session = client(sme_id)
        pulled["monthly_financials"].append(pull_accounting(session))
        pulled["vat_returns"].append(pull_tax(session, universe.as_of))
        readings, bills = pull_utility(session)
        pulled["utility_readings"].append(readings)
        pulled["utility_bills"].append(bills)
        pulled["survey_visits"].append(pull_survey(session))
    truth = universe.truth_arrow(clean_smes)
    assert truth["bank_transactions"].num_rows == 0
    for name, frames in pulled.items():
        parsed = _canonical(name, pd.concat(frames, ignore_index=True))
        expected = truth[name].sort_by([(k, "ascending") for k in TABLES[name].key])
        assert parsed.num_rows == expected.num_rows > 0, name
        for column in expected.column_names:
            assert parsed[column].equals(expected[column]), f"{name}.{column}"
