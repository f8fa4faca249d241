"""The HMRC VAT parser: HMRC's own examples, overlapping windows, filed and open periods, rejects."""

from __future__ import annotations

import datetime as dt
import json
import math
from pathlib import Path

from connectors.core.parsing import SmePages
from connectors.core.streams import RawPage
from connectors.tax.hmrc_vat import (
    filed_period_keys,
    parse_batch,
    parse_bytes,
    read_pages,
    returns_to_columns,
)

HMRC = "application/vnd.hmrc.1.0+json"


def obligation(
    key: str, start: str, end: str, due: str, status: str, received: str | None = None
) -> dict[str, str]:
    entry = {"start": start, "end": end, "due": due, "status": status, "periodKey": key}
    if received:
        entry["received"] = received
    return entry


def obligations_page(label: str, *entries: dict[str, str]) -> RawPage:
    return RawPage("obligations", label, "", json.dumps({"obligations": list(entries)}).encode(), HMRC)


def return_page(key: str, **boxes: float) -> RawPage:
    body = {
        "periodKey": key,
        "vatDueSales": 200.0,
        "vatDueAcquisitions": 0.0,
        "totalVatDue": 200.0,
        "vatReclaimedCurrPeriod": 50.25,
        "netVatDue": 149.75,
        "totalValueSalesExVAT": 1000,
        "totalValuePurchasesExVAT": 250,
        "totalValueGoodsSuppliedExVAT": 0,
        "totalAcquisitionsExVAT": 0,
    } | boxes
    return RawPage("returns", f"returns/{key}", "", json.dumps(body).encode(), HMRC)


Q4 = obligation("23A4", "2023-10-01", "2023-12-31", "2024-02-07", "F", "2024-02-01")
Q1 = obligation("24A1", "2024-01-01", "2024-03-31", "2024-05-07", "O")


def test_filed_periods_take_their_boxes_and_open_ones_stay_empty() -> None:
    first = obligations_page("obligations[2023-11-01..2024-01-31]", Q4, Q1)
    second = obligations_page("obligations[2024-02-01..2024-11-25]", Q1)
    filed = return_page("23A4")

    result = parse_batch([SmePages("SME-000002", [first, second, filed])])
    rows = result.tables["vat_returns"].to_dict("records")

    assert result.ok
    assert result.duplicates_dropped == {"SME-000002": 1}
    assert rows[0] == {
        "sme_id": "SME-000002",
        "period_key": "23A4",
        "period_start": dt.date(2023, 10, 1),
        "period_end": dt.date(2023, 12, 31),
        "due_date": dt.date(2024, 2, 7),
        "status": "F",
        "received_date": dt.date(2024, 2, 1),
        "vat_due_sales": 200.0,
        "vat_due_acquisitions": 0.0,
        "total_vat_due": 200.0,
        "vat_reclaimed": 50.25,
        "net_vat_due": 149.75,
        "total_sales_ex_vat": 1000.0,
        "total_purchases_ex_vat": 250.0,
        "total_goods_supplied_ex_vat": 0.0,
        "total_acquisitions_ex_vat": 0.0,
        "source_record": "returns/23A4",
        "raw_sha256": filed.sha256,
    }
    open_row = rows[1]
    assert (open_row["period_key"], open_row["status"], open_row["received_date"]) == ("24A1", "O", None)
    assert all(
        math.isnan(open_row[box]) for box in ("vat_due_sales", "net_vat_due", "total_acquisitions_ex_vat")
    )
    assert (open_row["source_record"], open_row["raw_sha256"]) == (
        "obligations[2023-11-01..2024-01-31]/obligations[1]",
        first.sha256,
    )
    assert result.records_raw == {"SME-000002": 4}


def test_bad_boxes_statuses_and_orphan_returns_are_rejects() -> None:
    listing = obligations_page(
        "obligations[w]", Q4, obligation("24A1", "2024-01-01", "2024-03-31", "2024-05-07", "X")
    )
    result = parse_batch(
        [SmePages("SME-000003", [listing, return_page("23A4", netVatDue="lots"), return_page("99Z9")])]
    )

    assert sorted(
        zip(result.rejects["record"], result.rejects["field"], result.rejects["reason"], strict=True)
    ) == [
        ("obligations[w]/obligations[1]", "status", "not one of F, O: 'X'"),
        ("returns/23A4", "netVatDue", "not a number: 'lots'"),
        ("returns/99Z9", "periodKey", "a VAT return with no obligation to attach it to"),
    ]
    assert result.tables["vat_returns"].empty


def test_two_different_returns_for_one_period_are_a_conflict() -> None:
    listing = obligations_page("obligations[w]", Q4)
    result = parse_batch(
        [SmePages("SME-1", [listing, return_page("23A4"), return_page("23A4", vatDueSales=1.0)])]
    )
    assert set(result.rejects["reason"]) == {"two different returns for one period"}


def test_filed_period_keys_are_what_the_connector_fetches() -> None:
    body = json.dumps({"obligations": [Q4, Q1, {"status": "F"}]}).encode()
    assert filed_period_keys(body) == ["23A4"]
    assert filed_period_keys(b"<html>") == []


def test_hmrcs_published_obligation_examples(shared_data: Path) -> None:
    examples = json.loads(
        (shared_data / "realdata" / "tax" / "hmrc_vat_obligations_200_examples.json").read_text()
    )
    quarterly = json.dumps(examples["example-1"]["value"]).encode()

    frame = parse_bytes(quarterly, sme_id="SME-000001", label="example-1").tables["vat_returns"]

    assert frame[
        ["period_key", "period_start", "period_end", "due_date", "status", "received_date"]
    ].values.tolist() == [
        ["18A1", dt.date(2017, 1, 1), dt.date(2017, 3, 31), dt.date(2017, 5, 7), "F", dt.date(2017, 5, 6)],
        ["18A2", dt.date(2017, 4, 1), dt.date(2017, 6, 30), dt.date(2017, 8, 7), "O", None],
    ]
    monthly = json.dumps(examples["example-2"]["value"]).encode()
    assert parse_bytes(monthly, sme_id="SME-1").tables["vat_returns"]["period_key"].tolist() == [
        "18AD",
        "18AE",
    ]


def test_hmrcs_published_return_examples(shared_data: Path) -> None:
    examples = json.loads(
        (shared_data / "realdata" / "tax" / "hmrc_vat_return_view_200_examples.json").read_text()
    )
    pages = [
        RawPage("returns", f"returns/{name}", "", json.dumps(example["value"]).encode(), HMRC)
        for name, example in examples.items()
    ]
    _, returns, rejects, _ = read_pages([SmePages("SME-1", pages)])
    boxes, box_rejects = returns_to_columns(returns)

    assert rejects.empty
    assert box_rejects.empty
    assert boxes.drop(columns=["sme_id", "return_sha256"]).to_dict("records") == [
        {
            "period_key": "A001",
            "vat_due_sales": 105.5,
            "vat_due_acquisitions": -100.45,
            "total_vat_due": 5.05,
            "vat_reclaimed": 105.15,
            "net_vat_due": 100.1,
            "total_sales_ex_vat": 300.0,
            "total_purchases_ex_vat": 300.0,
            "total_goods_supplied_ex_vat": 3000.0,
            "total_acquisitions_ex_vat": 3000.0,
            "return_record": "returns/example-1",
        },
        {
            "period_key": "#001",
            "vat_due_sales": 100.0,
            "vat_due_acquisitions": 100.0,
            "total_vat_due": 200.0,
            "vat_reclaimed": 100.0,
            "net_vat_due": 100.0,
            "total_sales_ex_vat": 500.0,
            "total_purchases_ex_vat": 500.0,
            "total_goods_supplied_ex_vat": 500.0,
            "total_acquisitions_ex_vat": 500.0,
            "return_record": "returns/example-2",
        },
    ]
    # A return alone has no period dates to attach to: the file is rejected, naming its period key.
    orphan = parse_bytes(pages[0].body, sme_id="SME-1", label="A001.json")
    assert orphan.rejects[["record", "field"]].values.tolist() == [["A001.json", "periodKey"]]
