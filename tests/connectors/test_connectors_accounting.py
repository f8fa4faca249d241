"""The monthly-reports parser on small payloads of our own: rows, duplicates, rejects, batches."""

from __future__ import annotations

import datetime as dt
import json

import pandas as pd

from connectors.accounting.monthly_reports import AMOUNT_FIELDS, parse_batch, parse_bytes
from connectors.core.parsing import SmePages
from connectors.core.streams import RawPage
from warehouse.canonical import MONTHLY_FINANCIALS


def report(period: str, report_id: str, revenue: str = "1000.50", **overrides: str) -> dict[str, object]:
    amounts = dict.fromkeys(AMOUNT_FIELDS, "10.00") | {"revenue": revenue} | overrides
    return {
        "report_id": report_id,
        "period": period,
        "profit_and_loss": {k: amounts[k] for k in list(AMOUNT_FIELDS)[:7]},
        "balance_sheet": {k: amounts[k] for k in list(AMOUNT_FIELDS)[7:]},
    }


def page(label: str, *reports: dict[str, object], currency: str = "GBP") -> RawPage:
    body = json.dumps({"currency": currency, "page": 1, "total_pages": 2, "reports": list(reports)}).encode()
    return RawPage("monthly_reports", label, f"GET /reports?{label}", body, "application/json")


def expected_row(sme_id: str, month: dt.date, revenue: float, record: str, sha: str) -> dict[str, object]:
    return {
        "sme_id": sme_id,
        "period_month": month,
        "currency": "GBP",
        **dict.fromkeys(AMOUNT_FIELDS, 10.0),
        "revenue": revenue,
        "source_record": record,
        "raw_sha256": sha,
    }


def test_reports_become_rows_and_an_exact_repeat_is_dropped() -> None:
    first = page("page=1", report("2024-01", "rep_a"), report("2024-02", "rep_b", "2000"))
    second = page("page=2", report("2024-02", "rep_c", "2000.00"), report("2024-03", "rep_d", "-5.5"))

    result = parse_batch([SmePages("SME-000001", [first, second])])

    expected = pd.DataFrame(
        [
            expected_row("SME-000001", dt.date(2024, 1, 1), 1000.5, "page=1/reports[0]", first.sha256),
            expected_row("SME-000001", dt.date(2024, 2, 1), 2000.0, "page=1/reports[1]", first.sha256),
            expected_row("SME-000001", dt.date(2024, 3, 1), -5.5, "page=2/reports[1]", second.sha256),
        ]
    )
    pd.testing.assert_frame_equal(
        result.tables["monthly_financials"], MONTHLY_FINANCIALS.to_arrow(expected).to_pandas()
    )
    assert result.ok
    assert (result.records_raw, result.duplicates_dropped) == ({"SME-000001": 4}, {"SME-000001": 1})
    assert result.records_canonical("SME-000001") == 3


def test_a_conflicting_repeat_is_kept_for_validation_to_catch() -> None:
    body = page("page=1", report("2024-01", "rep_a", "100"), report("2024-01", "rep_b", "130"))
    frame = parse_batch([SmePages("SME-000001", [body])]).tables["monthly_financials"]
    assert frame[["period_month", "revenue", "source_record"]].values.tolist() == [
        [dt.date(2024, 1, 1), 100.0, "page=1/reports[0]"],
        [dt.date(2024, 1, 1), 130.0, "page=1/reports[1]"],
    ]


def test_a_bad_amount_holds_back_that_sme_only_and_names_record_and_field() -> None:
    bad = page("page=1", report("2024-01", "rep_a"), report("2024-02", "rep_b", cash="12O4.50"))
    good = page("page=1", report("2024-01", "rep_x"))

    result = parse_batch([SmePages("SME-000001", [bad]), SmePages("SME-000002", [good])])

    assert result.rejects.to_dict("records") == [
        {
            "sme_id": "SME-000001",
            "record": "page=1/reports[1]",
            "field": "balance_sheet.cash",
            "reason": "not a number: '12O4.50'",
            "raw_sha256": bad.sha256,
        }
    ]
    assert result.quarantined == {"SME-000001"}
    assert result.tables["monthly_financials"]["sme_id"].tolist() == ["SME-000002"]
    assert [str(e) for e in result.errors("SME-000001")] == [
        "SME-000001/accounting: page=1/reports[1] field balance_sheet.cash: not a number: '12O4.50'"
    ]


def test_missing_fields_bad_periods_and_broken_pages_are_rejects() -> None:
    broken = RawPage("monthly_reports", "page=2", "", b'{"currency": "GBP", "reports": [', "application/json")
    incomplete = report("2024-13", "rep_a")
    del incomplete["balance_sheet"]["equity"]  # type: ignore[attr-defined]
    result = parse_batch([SmePages("SME-000005", [page("page=1", incomplete, currency=""), broken])])

    assert sorted(
        zip(result.rejects["record"], result.rejects["field"], result.rejects["reason"], strict=True)
    ) == [
        ("page=1/reports[0]", "balance_sheet.equity", "missing"),
        ("page=1/reports[0]", "currency", "missing"),
        ("page=1/reports[0]", "period", "not a %Y-%m date: '2024-13'"),
        ("page=2", "", "not JSON: Expecting value: line 1 column 33 (char 32)"),
    ]
    assert result.tables["monthly_financials"].empty


def test_a_single_file_parses_alone() -> None:
    body = json.dumps({"currency": "gbp", "reports": [report("2023-12", "r", "1")]}).encode()
    frame = parse_bytes(body, sme_id="SME-000009", label="upload.json").tables["monthly_financials"]
    assert frame[["sme_id", "period_month", "currency", "revenue", "source_record"]].values.tolist() == [
        ["SME-000009", dt.date(2023, 12, 1), "GBP", 1.0, "upload.json/reports[0]"]
    ]
