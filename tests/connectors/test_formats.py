"""The format parsers on our own fixtures: whole rows, totals, warnings, and the command line."""

from __future__ import annotations

import datetime as dt
import io
import json
import subprocess
import sys
import zipfile
from pathlib import Path

import pandas as pd
import pytest

from connectors.formats import FORMATS_BY_NAME, detect, parse
from connectors.formats.base import FormatError, Limits
from dossier.cli import main

FIXTURES = Path(__file__).parent / "fixtures"
UTC = dt.UTC


def fixture(name: str) -> bytes:
    return (FIXTURES / name).read_bytes()


def records(frame: pd.DataFrame, drop: tuple[str, ...] = ("sme_id", "raw_sha256")) -> list[dict]:
    frame = frame.drop(columns=list(drop)).astype(object)
    return frame.where(frame.notna(), None).to_dict("records")


# --- accounting ------------------------------------------------------------------------------------


def test_saft_v130_monthly_statements_are_whole_rows() -> None:
    parsed = parse(fixture("saft_no_v130.xml"), sme_id="SME-000001")
    assert parsed.summary()["warnings"] == []
    assert (parsed.totals["entries"], parsed.totals["lines"], parsed.totals["total_debit"]) == (
        4,
        10,
        10900.0,
    )
    zero = dict.fromkeys(("operating_expenses", "interest_expense", "tax_expense", "inventory"), 0.0)
    assert records(parsed.tables["monthly_financials"]) == [
        {"period_month": dt.date(2024, 1, 1), "currency": "NOK", "revenue": 5000.0, "cost_of_sales": 2500.0,
         "depreciation": 0.0, "net_profit": 2500.0, "cash": 13700.0, "receivables": 0.0, "current_assets": 13700.0,
         "total_assets": 13700.0, "current_liabilities": 1200.0, "total_liabilities": 1200.0, "equity": 12500.0,
         "source_record": "GeneralLedgerEntries/month=2024-01 (from Journal[GL]/Transaction[1])", **zero},
        {"period_month": dt.date(2024, 2, 1), "currency": "NOK", "revenue": 3000.0, "cost_of_sales": 0.0,
         "depreciation": 400.0, "net_profit": 2600.0, "cash": 14300.0, "receivables": 2000.0, "current_assets": 16300.0,
         "total_assets": 16300.0, "current_liabilities": 1200.0, "total_liabilities": 1200.0, "equity": 15100.0,
         "source_record": "GeneralLedgerEntries/month=2024-02 (from Journal[GL]/Transaction[3])", **zero},
    ]  # fmt: skip
    assert set(parsed.tables["monthly_financials"]["sme_id"]) == {"SME-000001"}


def test_saft_checks_are_warnings() -> None:
    body = fixture("saft_no_v130.xml")
    body = body.replace(b"<TotalDebit>10900.00</TotalDebit>", b"<TotalDebit>10000.00</TotalDebit>")
    body = body.replace(b"<NumberOfEntries>4</NumberOfEntries>", b"<NumberOfEntries>5</NumberOfEntries>")
    body = body.replace(
        b"<ClosingDebitBalance>14300.00</ClosingDebitBalance>",
        b"<ClosingDebitBalance>14000</ClosingDebitBalance>",
    )
    body = body.replace(b"<Amount>400.00</Amount></CreditAmount>", b"<Amount>300.00</Amount></CreditAmount>")
    assert parse(body).warnings == [
        "total debit 10900.00 does not equal total credit 10800.00",
        "header NumberOfEntries 5 but 4 transactions",
        "header TotalDebit 10000.00 but the lines sum to 10900.00",
        "header TotalCredit 10900.00 but the lines sum to 10800.00",
        "1 transactions whose debits do not equal their credits: 4",
        "account 1920: opening 10000.00 plus movements gives 14400.00, but the closing balance is 14000.00",
    ]


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ((b"<Amount>2500.00</Amount>", b"<Amount>25O0.00</Amount>"),
         "record Journal[GL]/Transaction[2]/Line[1], field DebitAmount/Amount: not a number: '25O0.00'"),
        ((b"2024-02-29</TransactionDate>", b"2024-02-30</TransactionDate>"),
         "record Journal[GL]/Transaction[4], field TransactionDate: not a date YYYY-MM-DD: '2024-02-30'"),
        ((b"<Amount>1000.00</Amount>", b"<Amount>1e300</Amount>"),
         "record Journal[GL]/Transaction[3]/Line[2], field DebitAmount/Amount: absurd amount: '1e300'"),
        ((b"<DefaultCurrencyCode>NOK</DefaultCurrencyCode>", b""), "record Header, field DefaultCurrencyCode: missing"),
    ],
)  # fmt: skip
def test_saft_bad_values_name_record_and_field(change: tuple[bytes, bytes], message: str) -> None:
    with pytest.raises(FormatError) as caught:
        parse(fixture("saft_no_v130.xml").replace(*change), format_name="saft-no")
    assert str(caught.value) == message


def test_saft_pt_windows_1252_and_annulled_documents() -> None:
    parsed = parse(fixture("saft_pt_cp1252.xml"), sme_id="SME-000002")
    assert parsed.warnings == []
    assert records(parsed.tables["monthly_sales"], drop=("sme_id",)) == [
        {"period_month": dt.date(2024, 1, 1), "invoices": 1, "credit_notes": 0, "net_sales": 100.0, "tax": 23.0,
         "gross_sales": 123.0, "currency": "EUR"},
        {"period_month": dt.date(2024, 2, 1), "invoices": 1, "credit_notes": 1, "net_sales": 180.0, "tax": 7.4,
         "gross_sales": 187.4, "currency": "EUR"},
    ]  # fmt: skip
    documents = parsed.tables["sales_documents"]
    assert documents["document_no"].tolist() == ["FT A/1", "FT A/2", "FR A/1", "NC A/1"]
    assert (parsed.totals["annulled"], parsed.totals["net_sales"]) == (1, 280.0)


def test_ofx_sgml_cp1252_duplicate_dropped_and_local_dates() -> None:
    parsed = parse(fixture("ofx1_cp1252.ofx"), sme_id="SME-000003")
    assert parsed.warnings == ["account 97100012345: transaction A2 listed twice; the repeat was dropped"]
    common = {"account_id": "97100012345", "account_type": "checking", "currency": "NOK"}
    assert records(parsed.tables["bank_transactions"]) == [
        {**common, "entry_type": "ledger_balance", "entry_id": "2024-02-29", "booked_date": dt.date(2024, 2, 29),
         "amount": 5250.1, "transaction_type": None, "description": None, "source_record": "STMTRS[0]/LEDGERBAL"},
        {**common, "entry_type": "transaction", "entry_id": "A1", "booked_date": dt.date(2024, 2, 2), "amount": 1500.0,
         "transaction_type": "CREDIT", "description": "Kunde Ås / Faktura 17", "source_record": "STMTRS[0]/STMTTRN[0][FITID=A1]"},
        {**common, "entry_type": "transaction", "entry_id": "A2", "booked_date": dt.date(2024, 2, 15), "amount": -249.9,
         "transaction_type": "DEBIT", "description": "Strøm", "source_record": "STMTRS[0]/STMTTRN[1][FITID=A2]"},
    ]  # fmt: skip
    assert (parsed.totals["transactions"], parsed.totals["net_amount"]) == (2, 1250.1)


def test_ofx_credit_card_statement() -> None:
    parsed = parse(fixture("ofx2_creditcard.ofx"))
    frame = parsed.tables["bank_transactions"]
    assert set(frame["account_type"]) == {"credit_card"}
    assert parsed.totals == {"transactions": 2, "net_amount": 257.9, "closing_balance": -120.55}


def test_ofx_conflicting_duplicate_is_an_error() -> None:
    body = fixture("ofx1_cp1252.ofx").replace(
        b"<TRNAMT>-249.90<FITID>A2<NAME>Str\xf8m</STMTTRN>\r\n</BANK",
        b"<TRNAMT>-9.90<FITID>A2<NAME>Str\xf8m</STMTTRN>\r\n</BANK",
    )
    with pytest.raises(
        FormatError, match=r"record STMTRS\[0\]/STMTTRN\[2\], field FITID: two different transactions"
    ):
        parse(body)


def test_ledger_csv_norwegian_headers_decimal_comma() -> None:
    parsed = parse(fixture("ledger_gl_no.csv"), sme_id="SME-000004")
    assert parsed.format == "ledger"
    books = parsed.tables["monthly_financials"]
    assert books[["period_month", "revenue", "cost_of_sales", "net_profit", "cash"]].to_dict("records") == [
        {"period_month": dt.date(2024, 1, 1), "revenue": 5000.0, "cost_of_sales": 1250.5, "net_profit": 3749.5, "cash": 3749.5},
        {"period_month": dt.date(2024, 2, 1), "revenue": 800.0, "cost_of_sales": 0.0, "net_profit": 800.0, "cash": 4549.5},
    ]  # fmt: skip
    assert parsed.totals == {"entries": 6, "lines": 6, "total_debit": 7050.5, "total_credit": 7050.5}


def test_ledger_trial_balance_csv_and_xlsx(tmp_path: Path) -> None:
    from openpyxl import Workbook

    parsed = parse(fixture("ledger_tb.csv"))
    assert parsed.tables["trial_balance"]["closing"].tolist() == [12500.0, 3500.0, -4000.0, -12000.0]
    assert parsed.warnings == []
    workbook = Workbook()
    sheet = workbook.active
    for row in (["Account", "Name", "Date", "Amount", "Currency"], ["1920", "Bank", dt.date(2024, 3, 1), 120.5, "GBP"],
                ["3000", "Sales", dt.date(2024, 3, 1), -120.5, "GBP"]):  # fmt: skip
        sheet.append(row)
    buffer = io.BytesIO()
    workbook.save(buffer)
    xlsx = parse(buffer.getvalue())
    assert xlsx.format == "ledger"
    assert xlsx.tables["monthly_financials"][["revenue", "cash", "currency"]].to_dict("records") == [
        {"revenue": 120.5, "cash": 120.5, "currency": "GBP"}
    ]


def test_ledger_given_column_mapping() -> None:
    body = b"acct;when;value\n1920;2024-01-31;10\n3000;2024-01-31;-10\n"
    from connectors.formats import ledger

    parsed = ledger.parse(
        body, columns={"account": "acct", "date": "when", "amount": "value"}, currency="EUR"
    )
    assert parsed.tables["monthly_financials"]["revenue"].tolist() == [10.0]
    with pytest.raises(FormatError, match=r"record row 1, field nope: no column 'nope'"):
        ledger.parse(body, columns={"account": "nope"})
    with pytest.raises(FormatError, match=r"record row 3, field value: not an amount: 'ten'"):
        ledger.parse(
            body.replace(b"-10", b"ten"), columns={"account": "acct", "date": "when", "amount": "value"}
        )


# --- tax ---------------------------------------------------------------------------------------------


def test_hmrc_bundle_joins_returns_and_counts_late_filings() -> None:
    parsed = parse(fixture("hmrc_vat_bundle.json"), sme_id="SME-000005")
    vat = records(parsed.tables["vat_returns"])
    assert [
        (r["period_key"], r["status"], r["received_date"], r["total_vat_due"], r["source_record"])
        for r in vat
    ] == [
        ("24A1", "F", dt.date(2024, 5, 20), 2100.5, "[1]"),
        ("24A2", "O", None, None, "[0]/obligations[1]"),
    ]
    assert parsed.totals == {
        "returns": 1,
        "total_vat_due": 2100.5,
        "declared_turnover": 10502.0,
        "filed_late": 1,
    }
    assert parsed.tables["vat_payments"][["amount", "received"]].to_dict("records") == [
        {"amount": 1500.25, "received": "2024-05-21"}
    ]


def test_mva_melding_monthly_period_and_mismatch_warning() -> None:
    parsed = parse(fixture("mva_melding_monthly.xml"))
    head = records(parsed.tables["vat_return_no"])[0]
    assert (head["period_start"], head["period_end"], head["declared_turnover"], head["vat_assessed"]) == (
        dt.date(2024, 2, 1),
        dt.date(2024, 2, 29),
        12000.0,
        2050.0,
    )
    assert parsed.warnings == []
    wrong = parse(fixture("mva_melding_monthly.xml").replace(b">2050<", b">2000<"))
    assert wrong.warnings == [
        "the lines' merverdiavgift sums to 2050.00, but fastsattMerverdiavgift is 2000.00"
    ]


# --- utility -----------------------------------------------------------------------------------------


def test_espi_containerized_root_power_of_ten_and_cost_scale() -> None:
    parsed = parse(fixture("espi_containerized_root.xml"), sme_id="SME-000006")
    assert parsed.format == "espi"
    rows = records(parsed.tables["utility_readings"], drop=("sme_id", "raw_sha256", "source_record"))
    common = {"usage_point_id": "0", "commodity": "electricity", "unit": "kWh", "currency": "GBP"}
    assert rows == [
        {**common, "interval_start": pd.Timestamp("2024-01-01T00:00Z"), "interval_seconds": 900, "consumption": 2.0, "cost": 0.12},
        {**common, "interval_start": pd.Timestamp("2024-01-01T00:15Z"), "interval_seconds": 900, "consumption": 1.0, "cost": 0.06},
        {**common, "interval_start": pd.Timestamp("2024-01-01T00:30Z"), "interval_seconds": 1800, "consumption": 3.0, "cost": None},
    ]  # fmt: skip
    assert parsed.totals == {"readings": 3, "total_kwh": 6.0, "total_cost": 0.1875}
    assert parsed.warnings == ["1 readings last other than the ReadingType's intervalLength 900 s"]
    summary = records(parsed.tables["usage_summaries"], drop=("sme_id",))[0]
    assert (summary["bill_last_period"], summary["overall_consumption_last_period"]) == (0.1875, 6000.0)


def test_espi_odd_timestamps_and_empty_reading_type_are_warnings() -> None:
    body = fixture("espi_containerized_root.xml").replace(
        b"<espi:start>1704069000</espi:start>", b"<espi:start>86400</espi:start>"
    )
    assert any("1 readings start before 1990 or after 2100" in w for w in parse(body).warnings)
    empty = fixture("espi_containerized_root.xml").replace(
        b"<espi:uom>72</espi:uom></espi:ReadingType>", b"</espi:ReadingType>"
    )
    with pytest.raises(FormatError) as caught:
        parse(empty)
    assert str(caught.value).endswith(
        "field ReadingType/uom: unsupported unit (none) for electricity (and 2 more)"
    )


# --- survey ------------------------------------------------------------------------------------------


def test_kobo_field_visit_form_maps_onto_survey_visits() -> None:
    parsed = parse(fixture("kobo_field_visit.json"), sme_id="SME-000007")
    assert parsed.warnings == []
    visits = records(parsed.tables["survey_visits"])
    assert visits[0] == {
        "visit_id": "0b7e-visit-1", "form_version": "vFv2", "agent_id": "agent_kenya_3",
        "visited_at": pd.Timestamp("2024-05-02T07:00Z"), "submitted_at": pd.Timestamp("2024-05-02T07:45:10Z"),
        "premises_found": True, "business_operating": True, "employees_observed": 4, "customers_observed": 6,
        "stock_level": "normal", "reported_monthly_revenue": 250000.0, "latitude": -1.2921, "longitude": 36.8219,
        "photo_count": 2, "notes": "Busy market stall", "source_record": "results[0]",
    }  # fmt: skip
    assert (visits[1]["premises_found"], visits[1]["latitude"]) == (False, None)
    generic = parsed.tables["survey_submissions"]
    assert generic["mapping"].tolist() == ["field_visit", "field_visit"]
    assert generic["attachments"].tolist() == [2, 0]


def test_odk_xml_submissions_dedup_and_repeats() -> None:
    parsed = parse(fixture("odk_submissions.xml"), sme_id="SME-000008")
    assert parsed.totals == {"submissions": 3, "unique_submissions": 2}
    rows = records(parsed.tables["survey_submissions"])
    first = rows[0]
    assert (first["submission_id"], first["form_id"], first["form_version"], first["agent_id"]) == (
        "6a1f0c2e-1111-4c3b-9d2a-000000000001",
        "shop_check",
        "2024031501",
        "agent_07",
    )
    assert (first["latitude"], first["longitude"], first["attachments"]) == (59.91, 10.75, 1)
    assert first["started_at"] == pd.Timestamp("2024-03-15T08:12Z")
    assert first["ended_at"] == pd.Timestamp("2024-03-15T08:30Z")
    assert json.loads(first["answers"]) == {  # metadata (start, end, username, meta/) is in its own columns
        "shop/gps": "59.91 10.75 12 5",
        "shop/name": "Kiosk Nord",
        "shop/photo": "1710490000.jpg",
        "staff[0]/role": "owner",
        "staff[1]/role": "cashier",
    }


def test_odk_central_zip_with_repeats_and_orphan_repeat() -> None:
    main = b"SubmissionDate,grp-name,KEY,SubmitterID,SubmitterName,AttachmentsPresent\n2024-03-01T10:00:00.000Z,Shop A,uuid:a1,5,agent_05,1\n"
    repeat = b"item-price,PARENT_KEY,KEY\n12.5,uuid:a1,uuid:a1/grp/items[1]\n3,uuid:a1,uuid:a1/grp/items[2]\n"

    def archive(files: dict[str, bytes]) -> bytes:
        buffer = io.BytesIO()
        with zipfile.ZipFile(buffer, "w") as zipped:
            for name, body in files.items():
                zipped.writestr(name, body)
        return buffer.getvalue()

    parsed = parse(archive({"shops.csv": main, "shops-items.csv": repeat}))
    assert parsed.format == "odk-csv"
    row = records(parsed.tables["survey_submissions"])[0]
    assert (row["submission_id"], row["form_id"], row["agent_id"], row["attachments"]) == (
        "a1",
        "shops",
        "agent_05",
        1,
    )
    assert json.loads(row["answers"]) == {
        "grp/items[0]/item/price": "12.5",
        "grp/items[1]/item/price": "3",
        "grp/name": "Shop A",
    }
    orphan = repeat.replace(b"3,uuid:a1,uuid:a1/", b"3,uuid:zz,uuid:zz/")
    with pytest.raises(FormatError) as caught:
        parse(archive({"shops.csv": main, "shops-items.csv": orphan}))
    assert (
        str(caught.value)
        == "record shops-items.csv row 3, field PARENT_KEY: points to no submission: 'uuid:zz'"
    )


# --- detection and the command line ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "format_name"),
    [
        ("saft_no_v130.xml", "saft-no"),
        ("saft_pt_cp1252.xml", "saft-pt"),
        ("ofx1_cp1252.ofx", "ofx"),
        ("ofx2_creditcard.ofx", "ofx"),
        ("ledger_gl_no.csv", "ledger"),
        ("ledger_tb.csv", "ledger"),
        ("hmrc_vat_bundle.json", "hmrc-vat"),
        ("mva_melding_monthly.xml", "mva-melding"),
        ("espi_containerized_root.xml", "espi"),
        ("kobo_field_visit.json", "kobo"),
        ("odk_submissions.xml", "odk-xml"),
    ],
)
def test_every_fixture_is_detected_by_content(name: str, format_name: str) -> None:
    assert detect(fixture(name)).name == format_name
    assert set(FORMATS_BY_NAME) >= {format_name}


def test_cli_prints_the_summary_and_writes_parquet(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["parse", str(FIXTURES / "ofx1_cp1252.ofx"), "--out", str(tmp_path / "out")]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed == {
        "format": "ofx",
        "tables": {"bank_transactions": 3},
        "transactions": 2,
        "net_amount": 1250.1,
        "closing_balance": 5250.1,
        "warnings": ["account 97100012345: transaction A2 listed twice; the repeat was dropped"],
    }
    written = pd.read_parquet(tmp_path / "out" / "bank_transactions.parquet")
    assert written["entry_id"].tolist() == ["2024-02-29", "A1", "A2"]


def test_cli_bad_file_is_one_line_and_exit_2(tmp_path: Path) -> None:
    bad = tmp_path / "gl.xml"
    bad.write_bytes(fixture("saft_no_v130.xml").replace(b"<Amount>2500.00</Amount>", b"<Amount>x</Amount>"))
    run = subprocess.run(
        [sys.executable, "-m", "dossier.cli", "parse", str(bad)], capture_output=True, text=True, check=False
    )
    assert run.returncode == 2
    assert run.stdout == ""
    assert run.stderr == (
        f"dossier parse: {bad}: record Journal[GL]/Transaction[2]/Line[1], field DebitAmount/Amount: not a number: 'x'\n"
    )


def test_format_can_be_forced_and_a_wrong_one_is_refused() -> None:
    with pytest.raises(FormatError, match="not a Norwegian SAF-T Financial file"):
        parse(fixture("saft_pt_cp1252.xml"), format_name="saft-no")
    with pytest.raises(FormatError, match="not JSON"):
        parse(fixture("ofx1_cp1252.ofx"), format_name="kobo")


def test_limits_are_parameters() -> None:
    with pytest.raises(FormatError, match=r"more than 3 records \(limit\)"):
        parse(fixture("saft_no_v130.xml"), limits=Limits(max_records=3))
    with pytest.raises(FormatError, match="larger than 100 bytes"):
        parse(fixture("saft_no_v130.xml"), limits=Limits(max_bytes=100))
    with pytest.raises(FormatError, match="nested deeper than 3 levels"):
        parse(fixture("saft_no_v130.xml"), limits=Limits(max_depth=3))


def test_cli_help_names_every_format_and_an_unknown_one_is_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    from dossier.cli import build_parser

    commands = next(a for a in build_parser()._actions if a.dest == "command")
    help_text = next(a for a in commands.choices["parse"]._actions if a.dest == "format").help
    assert {name for name in FORMATS_BY_NAME if name in help_text} == set(FORMATS_BY_NAME)
    assert main(["parse", str(FIXTURES / "ledger_tb.csv"), "--format", "nope"]) == 2
    error = capsys.readouterr().err
    assert error.startswith(
        f"dossier parse: {FIXTURES / 'ledger_tb.csv'}: record argument, field --format: unknown format"
    )
