"""Every published sample in ``../shared/data/realdata`` parses to the values its SOURCES.md states.

The files are not in the repository: each test skips with a clear message when the folder is absent.
"""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import pandas as pd
import pytest

from connectors.formats import detect, parse_path
from connectors.formats.base import FormatError

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning:ofxtools")


def sample(shared_data: Path, folder: str, name: str) -> Path:
    path = shared_data / "realdata" / folder / name
    if not path.exists():
        pytest.skip(f"real sample {path} is not present on this machine")
    return path


def test_saft_no_example_file(shared_data: Path) -> None:
    path = sample(shared_data, "accounting", "SAF-T_Financial_888888888_20180228235959.xml")
    assert path.read_bytes().startswith(b"\xef\xbb\xbf")
    parsed = parse_path(path)
    assert parsed.summary() == {
        "format": "saft-no",
        "tables": {"monthly_financials": 4, "trial_balance": 22 * 4},
        "entries": 53,
        "lines": 170,
        "total_debit": 9487049.35,
        "total_credit": 9487049.35,
        "warnings": [
            "account 1920: opening 370000.00 plus movements gives 724407.00, but the closing balance is 670568.75",
            "account 2711: opening 0.00 plus movements gives -0.35, but the closing balance is 0.00",
            "account 2740: opening 0.00 plus movements gives 0.35, but the closing balance is 0.00",
        ],
    }
    books = parsed.tables["monthly_financials"]
    assert books["period_month"].tolist() == [dt.date(2017, m, 1) for m in (1, 2, 3, 4)]
    assert set(books["currency"]) == {"NOK"}
    gap = books["net_profit"] - (
        books["revenue"]
        - books[
            ["cost_of_sales", "operating_expenses", "depreciation", "interest_expense", "tax_expense"]
        ].sum(axis=1)
    )
    assert gap.abs().max() < 0.005
    assert (books["equity"] - (books["total_assets"] - books["total_liabilities"])).abs().max() < 0.005
    first = books.iloc[0]
    assert (first["revenue"], first["cost_of_sales"], first["operating_expenses"], first["net_profit"]) == (
        717838.0,
        40302.0,
        535500.0,
        142036.0,
    )
    trial = parsed.tables["trial_balance"]
    bank = trial[trial["account_id"] == "1920"].iloc[-1]
    assert (bank["group"], bank["closing"]) == ("19", 724407.0)
    movements = trial["debit"] - trial["credit"]
    assert abs(movements.sum()) < 0.005  # every month balances in total


def test_saft_pt_demo_file_windows_1252(shared_data: Path) -> None:
    path = sample(shared_data, "accounting", "SAF-T_PT_saft_idemo599999999.xml")
    assert b'encoding="Windows-1252"' in path.read_bytes()[:100]
    parsed = parse_path(path)
    summary = parsed.summary()
    assert summary["format"] == "saft-pt"
    assert (summary["documents"], summary["annulled"]) == (24, 6)
    assert summary["by_type"] == {"FR": 2, "FT": 16, "NC": 5, "ND": 1}
    assert summary["by_status"] == {"A": 6, "N": 17, "R": 1}
    assert summary["warnings"] == []
    documents = parsed.tables["sales_documents"]
    assert set(documents["currency"]) == {"EUR"}
    live = documents[documents["status"] != "A"]
    signed = live["net_total"].where(live["document_type"] != "NC", -live["net_total"])
    assert summary["net_sales"] == round(float(signed.sum()), 2)
    assert parsed.tables["monthly_sales"]["net_sales"].sum().round(2) == summary["net_sales"]


@pytest.mark.parametrize(
    ("name", "transactions", "net", "closing", "accounts"),
    [
        ("ofxparse_bank_medium.ofx", 3, -345.27, 382.34, ["12300 000012345678"]),
        ("ofxparse_suncorp.ofx", 1, -16.85, 1234.12, ["123456789"]),
        ("ofxparse_multiple_accounts.ofx", 0, 0.0, 333.0, ["9100", "9200"]),
    ],
)
def test_ofx_samples(
    shared_data: Path, name: str, transactions: int, net: float, closing: float, accounts: list[str]
) -> None:
    parsed = parse_path(sample(shared_data, "accounting", name))
    summary = parsed.summary()
    assert (
        summary["format"],
        summary["transactions"],
        summary["net_amount"],
        summary["closing_balance"],
    ) == (
        "ofx",
        transactions,
        net,
        closing,
    )
    assert sorted(set(parsed.tables["bank_transactions"]["account_id"])) == accounts


def test_ofx_sgml_rows_keep_the_banks_dates_and_both_balances(shared_data: Path) -> None:
    frame = parse_path(sample(shared_data, "accounting", "ofxparse_bank_medium.ofx")).tables[
        "bank_transactions"
    ]
    frame = frame.drop(columns=["sme_id", "raw_sha256"]).astype(object)
    rows = frame.where(frame.notna(), None).to_dict("records")
    common = {"account_id": "12300 000012345678", "account_type": "checking", "currency": "CAD"}
    balance = {"transaction_type": None, "description": None}
    assert rows[:3] == [
        {**common, "entry_type": "available_balance", "entry_id": "2009-05-23", "booked_date": dt.date(2009, 5, 23),
         "amount": 682.34, **balance, "source_record": "STMTRS[0]/AVAILBAL"},
        {**common, "entry_type": "ledger_balance", "entry_id": "2009-05-23", "booked_date": dt.date(2009, 5, 23),
         "amount": 382.34, **balance, "source_record": "STMTRS[0]/LEDGERBAL"},
        {**common, "entry_type": "transaction", "entry_id": "0000123456782009040100001",
         "booked_date": dt.date(2009, 4, 1), "amount": -6.6, "transaction_type": "POS",
         "description": "MCDONALD'S #112 / POS MERCHANDISE;MCDONALD'S #112",
         "source_record": "STMTRS[0]/STMTTRN[0][FITID=0000123456782009040100001]"},
    ]  # fmt: skip
    assert frame["amount"][frame["entry_type"] == "transaction"].tolist() == [-6.6, -316.67, -22.0]


def test_suncorp_cdata_is_trimmed(shared_data: Path) -> None:
    frame = parse_path(sample(shared_data, "accounting", "ofxparse_suncorp.ofx")).tables["bank_transactions"]
    posted = frame[frame["entry_type"] == "transaction"].iloc[0]
    assert (
        posted["description"]
        == "EFTPOS WDL HANDYWAY ALDI STORE / EFTPOS WDL HANDYWAY ALDI STORE GEELONG WEST VICAU"
    )
    assert (posted["currency"], posted["transaction_type"]) == ("AUD", "DEBIT")


def test_mva_melding_example(shared_data: Path) -> None:
    parsed = parse_path(sample(shared_data, "tax", "NO_mvamelding_eksempelMedAlleTilfeller.xml"))
    assert parsed.summary()["total_vat_due"] == 77511.0
    assert parsed.warnings == []
    lines = parsed.tables["vat_return_lines"]
    assert len(lines) == 34
    assert lines["vat"].sum() == 77511.0
    head = parsed.tables["vat_return_no"].iloc[0]
    assert (head["organisation_number"], head["category"], head["period_start"], head["period_end"]) == (
        "913238254",
        "alminnelig",
        dt.date(2021, 3, 1),
        dt.date(2021, 4, 30),
    )
    assert 11.11 in lines["rate"].tolist()  # written "11,11"


def test_hmrc_obligations_examples(shared_data: Path) -> None:
    parsed = parse_path(sample(shared_data, "tax", "hmrc_vat_obligations_200_examples.json"))
    vat = parsed.tables["vat_returns"]
    assert vat[["period_key", "status", "due_date", "received_date"]].to_dict("records") == [
        {
            "period_key": "18A1",
            "status": "F",
            "due_date": dt.date(2017, 5, 7),
            "received_date": dt.date(2017, 5, 6),
        },
        {"period_key": "18A2", "status": "O", "due_date": dt.date(2017, 8, 7), "received_date": None},
        {
            "period_key": "18AD",
            "status": "F",
            "due_date": dt.date(2017, 3, 7),
            "received_date": dt.date(2017, 3, 6),
        },
        {"period_key": "18AE", "status": "O", "due_date": dt.date(2017, 4, 7), "received_date": None},
    ]
    assert parsed.summary()["filed_late"] == 0


@pytest.mark.parametrize(
    "name", ["hmrc_vat_return_view_200_examples.json", "hmrc_vat_return_submit_request_examples.json"]
)
def test_hmrc_return_examples(shared_data: Path, name: str) -> None:
    parsed = parse_path(sample(shared_data, "tax", name))
    boxes = parsed.tables["vat_return_boxes"].set_index("period_key")
    first = boxes.loc["A001"]
    assert (
        first["vat_due_sales"],
        first["vat_due_acquisitions"],
        first["total_vat_due"],
        first["vat_reclaimed"],
        first["net_vat_due"],
        first["total_sales_ex_vat"],
    ) == (105.5, -100.45, 5.05, 105.15, 100.1, 300.0)
    assert "#001" in boxes.index
    assert parsed.summary()["returns"] == 2


def test_files_that_are_not_data_are_refused_in_one_line(shared_data: Path) -> None:
    for folder, name in (
        ("tax", "hmrc_vat_api_mtd_v1.0_openapi.json"),
        ("tax", "NO_SAF-T_Standard_Tax_Codes.xml"),
        ("accounting", "Norwegian_SAF-T_Financial_Schema_v_1.30.xsd"),
    ):
        with pytest.raises(FormatError) as caught:
            parse_path(sample(shared_data, folder, name))
        assert "\n" not in caught.value.where(name)


def test_green_button_hourly(shared_data: Path) -> None:
    parsed = parse_path(sample(shared_data, "utility", "greenbutton_TestGBDataHourlyNineDaysBinnedDaily.xml"))
    assert parsed.summary() == {
        "format": "espi",
        "tables": {"utility_readings": 216, "utility_bills": 0, "usage_summaries": 1},
        "readings": 216,
        "total_kwh": 199.563,
        "total_cost": 22.05567,
        "warnings": [],
    }
    readings = parsed.tables["utility_readings"]
    assert readings["interval_start"].min() == pd.Timestamp("2014-01-01T05:00Z")
    assert readings["interval_start"].max() == pd.Timestamp("2014-01-10T04:00Z")
    assert set(readings["interval_seconds"]) == {3600}
    assert set(readings["currency"]) == {"USD"}
    summary = parsed.tables["usage_summaries"].iloc[0]
    assert (summary["bill_last_period"], summary["overall_consumption_last_period"]) == (22.08, 199563.0)


def test_green_button_daily(shared_data: Path) -> None:
    parsed = parse_path(sample(shared_data, "utility", "greenbutton_TestGBDataOneYearDailyBinnedMonthly.xml"))
    assert (parsed.totals["readings"], parsed.totals["total_kwh"], parsed.totals["total_cost"]) == (
        444,
        9917.817,
        1072.12833,
    )
    summary = parsed.tables["usage_summaries"].iloc[0]
    assert (summary["bill_last_period"], summary["bill_to_date"]) == (67.52, 48.07)
    readings = parsed.tables["utility_readings"]
    assert readings["interval_start"].min().date() == dt.date(2013, 1, 1)
    assert readings["interval_start"].max().date() == dt.date(2014, 3, 20)


def test_green_button_containerized_and_gas(shared_data: Path) -> None:
    abridged = parse_path(sample(shared_data, "utility", "greenbutton_electric_containerized.xml"))
    assert (abridged.totals["readings"], abridged.totals["total_kwh"]) == (8, 4.086)
    gas = parse_path(
        sample(
            shared_data,
            "utility",
            "greenbutton_ngma_natural_gas_billing_billing_data_Service_1_1_2021-05-26_to_2024-04-25.xml",
        )
    )
    assert (gas.totals["readings"], gas.totals["total_therm"], gas.totals["total_cost"]) == (
        35,
        3484.0,
        7207.11,
    )
    first = gas.tables["utility_readings"].sort_values("interval_start").iloc[0]
    assert (first["consumption"], first["cost"], first["interval_seconds"], first["commodity"]) == (
        37.0,
        51.0,
        35 * 86400,
        "gas",
    )


def test_kobo_restaurant_profile(shared_data: Path) -> None:
    parsed = parse_path(sample(shared_data, "field_survey", "kobo_formpack_restaurant_profile_v4.json"))
    assert (parsed.totals["submissions"], parsed.totals["unique_submissions"]) == (4, 4)
    rows = parsed.tables["survey_submissions"].sort_values("source_record")
    assert set(rows["form_id"]) == {"restaurant_profile"}
    assert set(rows["form_version"]) == {"rpV4"}
    assert rows["mapping"].isna().all()
    answers = [json.loads(a) for a in rows["answers"]]
    assert answers[0]["eatery_type"] == "takeaway sit_down"
    assert rows["latitude"].tolist() == [13.42, 12.43, 12.43, 12.43]  # 2, 2, 4 and 3 numbers
    assert rows["longitude"].tolist() == [-25.43, -24.53, -24.54, -24.54]
    assert [a.get("eatery_type") for a in answers] == [
        "takeaway sit_down",
        "sit_down",
        "",
        None,
    ]  # empty, missing
    assert parsed.tables["survey_visits"].empty


def test_kobo_nested_repeats_keep_every_instance(shared_data: Path) -> None:
    parsed = parse_path(
        sample(shared_data, "field_survey", "kobo_formpack_nested_grouped_repeatable_v1.json")
    )
    rows = parsed.tables["survey_submissions"].sort_values("source_record")
    counts = []
    for text in rows["answers"]:
        paths = json.loads(text)
        trees = {p.split("/")[0] for p in paths if p.startswith("group_tree[")}
        nests = {"/".join(p.split("/")[:2]) for p in paths if "/group_nest[" in p}
        eggs = {"/".join(p.split("/")[:3]) for p in paths if "/group_egg[" in p}
        counts.append((len(trees), len(nests), len(eggs)))
    assert counts == [(2, 3, 6), (1, 1, 1)]


def test_kobo_site_inspection_without_ids(shared_data: Path) -> None:
    parsed = parse_path(sample(shared_data, "field_survey", "kobo_formpack_site_inspection_v1.json"))
    assert parsed.totals == {"submissions": 2, "unique_submissions": 2}
    second = json.loads(parsed.tables["survey_submissions"].sort_values("source_record")["answers"].iloc[1])
    assert "is_the_gate_secure" not in second


def test_odk_central_export_joins_its_repeats(shared_data: Path) -> None:
    parsed = parse_path(sample(shared_data, "field_survey", "rhomis_odkcentral_export_dec-demo.csv"))
    assert parsed.totals == {"submissions": 10, "unique_submissions": 10, "repeat_rows": 37 + 22 + 36 + 28}
    rows = parsed.tables["survey_submissions"]
    assert set(rows["form_id"]) == {"rhomis_odkcentral_export_dec-demo"}
    assert set(rows["agent_id"]) == {"submitter@example.org"}
    crops = sum(
        len({p.split("/crop_repeat[")[1].split("]")[0] for p in json.loads(a) if "/crop_repeat[" in p})
        for a in rows["answers"]
    )
    assert crops == 37


def test_odk_repeat_table_alone_is_refused(shared_data: Path) -> None:
    with pytest.raises(FormatError, match="repeat table"):
        parse_path(sample(shared_data, "field_survey", "rhomis_odkcentral_export_dec-demo-crop_repeat.csv"))


def test_xform_and_xlsform_definitions(shared_data: Path) -> None:
    xform = parse_path(sample(shared_data, "field_survey", "ruODK_Locations_xform.xml"))
    assert (xform.totals["form_id"], xform.totals["fields"]) == ("Locations", 15)
    types = xform.totals["field_types"]
    assert (types["geopoint"], types["geotrace"], types["geoshape"]) == (3, 3, 3)
    widgets = parse_path(sample(shared_data, "field_survey", "pyxform_xlsform_widgets.csv"))
    assert widgets.format == "xlsform"
    assert widgets.totals["fields"] == 21


def test_every_data_sample_is_detected(shared_data: Path) -> None:
    folder = shared_data / "realdata"
    if not folder.exists():
        pytest.skip(f"real samples folder {folder} is not present on this machine")
    expected = {
        "SAF-T_Financial_888888888_20180228235959.xml": "saft-no",
        "SAF-T_PT_saft_idemo599999999.xml": "saft-pt",
        "ofxparse_bank_medium.ofx": "ofx",
        "NO_mvamelding_eksempelMedAlleTilfeller.xml": "mva-melding",
        "hmrc_vat_obligations_200_examples.json": "hmrc-vat",
        "greenbutton_electric_containerized.xml": "espi",
        "kobo_formpack_restaurant_profile_v4.json": "kobo",
        "rhomis_odkcentral_export_dec-demo.csv": "odk-csv",
        "ruODK_Locations_xform.xml": "odk-xml",
    }
    for name, format_name in expected.items():
        path = next(folder.glob(f"*/{name}"))
        assert detect(path.read_bytes()).name == format_name, name


REFUSED = {
    # Not an SME's data: a schema, a code list, an API specification, a repeat table without its main table.
    "Norwegian_SAF-T_Financial_Schema_v_1.10.xsd": "unrecognised format",
    "Norwegian_SAF-T_Financial_Schema_v_1.30.xsd": "unrecognised format",
    "SAFTPT_1_04_01.xsd": "unrecognised format",
    "ESPI_v3.3_usage.xsd": "unrecognised format",
    "ESPI_v3.3_atom.xsd": "unrecognised format",
    "NO_SAF-T_Standard_Tax_Codes.xsd": "unrecognised format",
    "no.skatteetaten.fastsetting.avgift.mva.skattemeldingformerverdiavgift.v1.0.xsd": "unrecognised format",
    "NO_SAF-T_Standard_Tax_Codes.xml": "unrecognised format",
    "hmrc_vat_api_mtd_v1.0_openapi.json": "neither VAT obligations, a VAT return, liabilities nor payments",
    "rhomis_odkcentral_export_dec-demo-crop_repeat.csv": "a repeat table of an ODK Central export",
    "rhomis_odkcentral_export_dec-demo-livestock_repeat.csv": "a repeat table of an ODK Central export",
    "rhomis_odkcentral_export_dec-demo-offfarm_income_repeat.csv": "a repeat table of an ODK Central export",
    "rhomis_odkcentral_export_dec-demo-hh_pop_repeat.csv": "a repeat table of an ODK Central export",
}


def test_dossier_parse_accepts_every_data_sample_and_refuses_the_rest_in_one_line(
    shared_data: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from dossier.cli import main

    folder = shared_data / "realdata"
    if not folder.exists():
        pytest.skip(f"real samples folder {folder} is not present on this machine")
    accepted, refused = {}, {}
    for path in sorted(p for p in folder.glob("*/*") if p.name != "SOURCES.md"):
        status = main(["parse", str(path), "--out", str(tmp_path / path.stem)])
        out, err = capsys.readouterr()
        if status == 0:
            accepted[path.name] = json.loads(out)["format"]
        else:
            assert status == 2, path.name
            lines = err.splitlines()
            assert len(lines) == 1, err
            assert lines[0].startswith(f"dossier parse: {path}: "), err
            refused[path.name] = lines[0]
    assert {name: reason in refused.get(name, "") for name, reason in REFUSED.items()} == dict.fromkeys(
        REFUSED, True
    )
    assert set(refused) == set(REFUSED)
    assert sorted(set(accepted.values())) == [
        "espi",
        "hmrc-vat",
        "kobo",
        "mva-melding",
        "odk-csv",
        "odk-xml",
        "ofx",
        "saft-no",
        "saft-pt",
        "xlsform",
    ]
    assert len(accepted) == 19
