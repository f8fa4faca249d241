"""validate_shard: a clean shard passes; each defect fails exactly its SME, naming table, record, field."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pandas as pd
import pytest
from expectation_frames import AS_OF, clean_tables, edit, frames, row_sets, sha

from expectations.runner import FAILURE_COLUMNS, ShardValidation, validate_shard
from expectations.suites import loaded_suites

CLEAN = ["SME-000090", "SME-000091"]


def _duplicate_month(rows: dict[str, list[dict[str, Any]]], sme_id: str) -> None:
    """A sync fault repeats August with conflicting figures (still internally consistent)."""
    august = next(
        r for r in rows["monthly_financials"] if r["sme_id"] == sme_id and r["period_month"].month == 8
    )
    rows["monthly_financials"].append(
        {**august, "operating_expenses": 3100.0, "net_profit": 2100.0, "source_record": "reports[7]"}
    )


DEFECTS: dict[str, tuple[str, Any, list[tuple[str, str, str, str, str]]]] = {
    "duplicate conflicting month": (
        "SME-000001",
        _duplicate_month,
        [
            (
                "monthly_financials",
                "period_month=2026-08-01, source_record=reports[1]",
                "sme_id, period_month",
                "expect_compound_columns_to_be_unique(sme_id, period_month)",
                "sme_id=SME-000001, period_month=2026-08-01",
            ),
            (
                "monthly_financials",
                "period_month=2026-08-01, source_record=reports[7]",
                "sme_id, period_month",
                "expect_compound_columns_to_be_unique(sme_id, period_month)",
                "sme_id=SME-000001, period_month=2026-08-01",
            ),
        ],
    ),
    "broken balance sheet": (
        "SME-000002",
        lambda rows, sme: edit(
            rows["monthly_financials"], sme, {"period_month": dt.date(2026, 9, 1)}, equity=10100.0
        ),
        [
            (
                "monthly_financials",
                "period_month=2026-09-01, source_record=reports[2]",
                "total_assets, total_liabilities, equity",
                "expect_column_values_to_be_between(balance_sheet_gap)",
                "total_assets=25000.0, total_liabilities=15000.0, equity=10100.0, balance_sheet_gap=-100.0",
            )
        ],
    ),
    "box 3 is not box 1 + box 2": (
        "SME-000003",
        lambda rows, sme: edit(rows["vat_returns"], sme, {"period_key": "26A2"}, vat_due_sales=2005.0),
        [
            (
                "vat_returns",
                "period_key=26A2, source_record=returns/26A2",
                "total_vat_due, vat_due_sales, vat_due_acquisitions",
                "expect_column_values_to_be_between(box3_gap)",
                "total_vat_due=2000.0, vat_due_sales=2005.0, vat_due_acquisitions=0.0, box3_gap=-5.0",
            )
        ],
    ),
    "box 5 is not |box 3 - box 4|": (
        "SME-000004",
        lambda rows, sme: edit(rows["vat_returns"], sme, {"period_key": "26A2"}, net_vat_due=1300.0),
        [
            (
                "vat_returns",
                "period_key=26A2, source_record=returns/26A2",
                "net_vat_due, total_vat_due, vat_reclaimed",
                "expect_column_values_to_be_between(box5_gap)",
                "net_vat_due=1300.0, total_vat_due=2000.0, vat_reclaimed=800.0, box5_gap=100.0",
            )
        ],
    ),
    "negative revenue": (
        "SME-000005",
        lambda rows, sme: edit(
            rows["monthly_financials"],
            sme,
            {"period_month": dt.date(2026, 7, 1)},
            revenue=-10.0,
            net_profit=-7810.0,
        ),
        [
            (
                "monthly_financials",
                "period_month=2026-07-01, source_record=reports[0]",
                "revenue",
                "expect_column_values_to_be_between(revenue)",
                "revenue=-10.0",
            )
        ],
    ),
    "month after the as-of date": (
        "SME-000006",
        lambda rows, sme: edit(
            rows["monthly_financials"],
            sme,
            {"period_month": dt.date(2026, 9, 1)},
            period_month=dt.date(2027, 1, 1),
        ),
        [
            (
                "monthly_financials",
                "period_month=2027-01-01, source_record=reports[2]",
                "period_month",
                "expect_column_values_to_be_between(period_month)",
                "period_month=2027-01-01",
            )
        ],
    ),
    "unknown VAT status": (
        "SME-000007",
        lambda rows, sme: edit(rows["vat_returns"], sme, {"period_key": "26A3"}, status="X"),
        [
            (
                "vat_returns",
                "period_key=26A3, source_record=obligations[1]",
                "status",
                "expect_column_values_to_be_in_set(status)",
                "status=X",
            )
        ],
    ),
    "unknown commodity": (
        "SME-000008",
        lambda rows, sme: edit(rows["utility_readings"], sme, {"commodity": "gas"}, commodity="steam"),
        [
            (
                "utility_readings",
                "usage_point_id=SME-000008-G1, interval_start=2026-09-01T00:00:00Z, source_record=IntervalBlock/G1/9",
                "commodity",
                "expect_column_values_to_be_in_set(commodity)",
                "commodity=steam",
            )
        ],
    ),
    "latitude out of range": (
        "SME-000009",
        lambda rows, sme: edit(rows["survey_visits"], sme, {}, latitude=123.4),
        [
            (
                "survey_visits",
                "visit_id=visit-SME-000009, source_record=results[9]",
                "latitude",
                "expect_column_values_to_be_between(latitude)",
                "latitude=123.4",
            )
        ],
    ),
    "electricity metered in therm": (
        "SME-000010",
        lambda rows, sme: edit(
            rows["utility_readings"],
            sme,
            {"commodity": "electricity", "interval_start": dt.datetime(2026, 8, 1, tzinfo=dt.UTC)},
            unit="therm",
        ),
        [
            (
                "utility_readings",
                "usage_point_id=SME-000010-E1, interval_start=2026-08-01T00:00:00Z, source_record=IntervalBlock/E1/8",
                "unit",
                "expect_column_values_to_be_in_set(unit) where commodity == electricity",
                "unit=therm",
            )
        ],
    ),
    "filed return without received date": (
        "SME-000011",
        lambda rows, sme: edit(rows["vat_returns"], sme, {"period_key": "26A2"}, received_date=None),
        [
            (
                "vat_returns",
                "period_key=26A2, source_record=returns/26A2",
                "received_date",
                "expect_column_values_to_not_be_null(received_date) where status == F",
                "received_date=null",
            )
        ],
    ),
    "bill paid before its period starts": (
        "SME-000012",
        lambda rows, sme: edit(
            rows["utility_bills"], sme, {"paid_date": dt.date(2026, 9, 10)}, paid_date=dt.date(2026, 7, 20)
        ),
        [
            (
                "utility_bills",
                "usage_point_id=SME-000012-E1, period_start=2026-08-01T00:00:00Z, source_record=UsageSummary/8",
                "paid_date, period_start",
                "expect_column_pair_values_a_to_be_greater_than_b(paid_date, period_start_date)",
                "paid_date=2026-07-20, period_start=2026-08-01T00:00:00Z, period_start_date=2026-08-01",
            )
        ],
    ),
    "unknown stock level": (
        "SME-000013",
        lambda rows, sme: edit(rows["survey_visits"], sme, {}, stock_level="plenty"),
        [
            (
                "survey_visits",
                "visit_id=visit-SME-000013, source_record=results[3]",
                "stock_level",
                "expect_column_values_to_be_in_set(stock_level)",
                "stock_level=plenty",
            )
        ],
    ),
    "trading at premises not found": (
        "SME-000014",
        lambda rows, sme: edit(rows["survey_visits"], sme, {}, premises_found=False),
        [
            (
                "survey_visits",
                "visit_id=visit-SME-000014, source_record=results[4]",
                "business_operating",
                "expect_column_values_to_be_in_set(business_operating) where premises_found == False",
                "business_operating=True",
            )
        ],
    ),
    "open obligation with a received date": (
        "SME-000015",
        lambda rows, sme: edit(
            rows["vat_returns"], sme, {"period_key": "26A3"}, received_date=dt.date(2026, 10, 1)
        ),
        [
            (
                "vat_returns",
                "period_key=26A3, source_record=obligations[1]",
                "received_date",
                "expect_column_values_to_be_null(received_date) where status == O",
                "received_date=2026-10-01",
            )
        ],
    ),
    "submission filed under another SME too": (
        "SME-000016",
        lambda rows, sme: edit(rows["survey_visits"], sme, {}, visit_id="visit-SME-000017"),
        [
            (
                "survey_visits",
                "visit_id=visit-SME-000017, source_record=results[6]",
                "visit_id",
                "expect_column_values_to_be_unique(visit_id)",
                "visit_id=visit-SME-000017",
            )
        ],
    ),
    "submission claimed by another SME": (
        "SME-000017",
        lambda rows, sme: None,
        [
            (
                "survey_visits",
                "visit_id=visit-SME-000017, source_record=results[7]",
                "visit_id",
                "expect_column_values_to_be_unique(visit_id)",
                "visit_id=visit-SME-000017",
            )
        ],
    ),
}


@pytest.fixture(scope="module")
def defective() -> ShardValidation:
    """One shard in which every SME but the clean ones carries exactly one kind of defect."""
    sme_ids = sorted([sme for sme, _, _ in DEFECTS.values()] + CLEAN)
    rows = row_sets(sme_ids)
    for sme_id, mutate, _ in DEFECTS.values():
        mutate(rows, sme_id)
    return validate_shard(frames(rows), as_of=AS_OF, shard=3)


@pytest.fixture(scope="module")
def clean() -> ShardValidation:
    return validate_shard(clean_tables(CLEAN), as_of=AS_OF, shard=0)


def test_clean_shard_passes_every_expectation(clean: ShardValidation) -> None:
    expected = pd.DataFrame({"sme_id": CLEAN, "passed": [True, True], "reasons": [[], []]})
    pd.testing.assert_frame_equal(clean.sme_status, expected, check_dtype=False)
    assert clean.failures.empty
    assert list(clean.failures.columns) == list(FAILURE_COLUMNS)
    suites = loaded_suites()
    assert [(r["table_name"], r["expectation"]) for r in clean.expectation_results] == [
        (name, identifier) for name, loaded in suites.items() for identifier in loaded.ids
    ]
    monthly_rows = 3 * len(CLEAN)
    first = clean.expectation_results[0]
    assert first == {
        "table_name": "monthly_financials",
        "shard": 0,
        "suite": "monthly_financials",
        "expectation": "expect_column_values_to_not_be_null(sme_id)",
        "success": True,
        "element_count": monthly_rows,
        "unexpected_count": 0,
        "failing_smes": [],
    }
    assert all(r["success"] and r["failing_smes"] == [] for r in clean.expectation_results)
    filed = next(
        r
        for r in clean.expectation_results
        if r["expectation"] == "expect_column_values_to_not_be_null(received_date) where status == F"
    )
    assert filed["element_count"] == len(CLEAN), "the row condition selects the filed returns only"


def test_only_defective_smes_fail(defective: ShardValidation) -> None:
    failing = sorted(sme for sme, _, _ in DEFECTS.values())
    assert defective.failing_smes == failing
    status = defective.sme_status.set_index("sme_id")
    assert status.loc[CLEAN, "passed"].tolist() == [True, True]
    assert status.loc[CLEAN, "reasons"].tolist() == [[], []]


@pytest.mark.parametrize("defect", list(DEFECTS))
def test_defect_fails_its_sme_with_readable_reasons(defective: ShardValidation, defect: str) -> None:
    sme_id, _, expected = DEFECTS[defect]
    failures = defective.failures[defective.failures["sme_id"] == sme_id]
    got = list(
        failures[["table_name", "record", "field", "expectation", "observed"]].itertuples(
            index=False, name=None
        )
    )
    assert got == expected
    notes = {
        identifier: note
        for loaded in loaded_suites().values()
        for identifier, note in zip(loaded.ids, loaded.notes, strict=True)
    }
    reasons = [
        f"{table} record {record} field {field}: {notes[expectation]} [{expectation}] observed {observed}"
        for table, record, field, expectation, observed in expected
    ]
    status = defective.sme_status.set_index("sme_id").loc[sme_id]
    assert (bool(status["passed"]), status["reasons"]) == (False, reasons)
    assert failures["reason"].tolist() == reasons
    sources = {
        "monthly_financials": "accounting",
        "vat_returns": "tax",
        "utility_readings": "utility",
        "utility_bills": "utility",
        "survey_visits": "survey",
    }
    assert failures["source"].tolist() == [sources[t] for t, *_ in expected]


@pytest.mark.parametrize("defect", list(DEFECTS))
def test_expectation_results_name_the_failing_sme(defective: ShardValidation, defect: str) -> None:
    sme_id, _, expected = DEFECTS[defect]
    for table, _, _, expectation, _ in expected:
        result = next(
            r
            for r in defective.expectation_results
            if (r["table_name"], r["expectation"]) == (table, expectation)
        )
        assert result["success"] is False
        assert result["shard"] == 3
        assert sme_id in result["failing_smes"]
        assert result["failing_smes"] == sorted(result["failing_smes"])
    failed = {(r["table_name"], r["expectation"]) for r in defective.expectation_results if not r["success"]}
    reported = set(zip(defective.failures["table_name"], defective.failures["expectation"], strict=True))
    assert failed == reported
    counts = defective.failures.groupby(["table_name", "expectation"]).size().to_dict()
    assert {
        (r["table_name"], r["expectation"]): r["unexpected_count"]
        for r in defective.expectation_results
        if not r["success"]
    } == counts


def test_raw_payload_of_each_failing_record_is_kept(defective: ShardValidation) -> None:
    failures = defective.failures
    assert failures["raw_sha256"].tolist() == [
        sha(s, src) for s, src in zip(failures["sme_id"], failures["source"], strict=True)
    ]


def test_gx_results_keep_a_readable_sample_of_failing_records(defective: ShardValidation) -> None:
    document = defective.gx_results["monthly_financials"]
    assert document["suite_name"] == "monthly_financials"
    assert document["meta"]["as_of"] == AS_OF.isoformat()
    assert document["meta"]["shard"] == 3
    revenue = next(
        r
        for r in document["results"]
        if r["expectation_config"]["type"] == "expect_column_values_to_be_between"
        and r["expectation_config"]["kwargs"]["column"] == "revenue"
    )
    assert revenue["success"] is False
    assert revenue["result"]["unexpected_count"] == 1
    assert revenue["result"]["unexpected_index_column_names"] == ["sme_id", "period_month", "source_record"]
    assert revenue["result"]["unexpected_index_list"] == [
        {
            "revenue": "-10.0",
            "sme_id": "SME-000005",
            "period_month": "2026-07-01",
            "source_record": "reports[0]",
        }
    ]
    assert revenue["result"]["partial_unexpected_counts"] == [{"value": "-10.0", "count": 1}]


def test_unreadable_value_is_reported_as_given() -> None:
    tables = clean_tables(["SME-000001"])
    monthly = tables["monthly_financials"].astype({"period_month": "object"})
    monthly.loc[1, "period_month"] = "2026-13-01"
    validation = validate_shard({"monthly_financials": monthly}, as_of=AS_OF, shard=0)
    got = validation.failures[["record", "field", "expectation", "observed"]].to_dict("records")
    assert got == [
        {
            "record": "period_month=2026-13-01, source_record=reports[1]",
            "field": "period_month",
            "expectation": "expect_column_values_to_not_be_null(period_month)",
            "observed": "period_month=2026-13-01",
        }
    ]
    assert validation.sme_status["sme_id"].tolist() == ["SME-000001"]
    assert [r["table_name"] for r in validation.expectation_results] == ["monthly_financials"] * len(
        loaded_suites()["monthly_financials"].ids
    )


def test_missing_and_empty_tables_validate(clean: ShardValidation) -> None:
    tables = clean_tables(CLEAN)
    tables["survey_visits"] = tables["survey_visits"].iloc[0:0]
    del tables["utility_bills"]
    validation = validate_shard(tables, as_of=AS_OF, shard=1)
    assert validation.sme_status["passed"].tolist() == [True, True]
    tables_validated = {r["table_name"] for r in validation.expectation_results}
    assert tables_validated == {
        "monthly_financials",
        "vat_returns",
        "utility_readings",
        "survey_visits",
        "bank_transactions",
        "survey_submissions",
    }
    visits = [r for r in validation.expectation_results if r["table_name"] == "survey_visits"]
    assert all(r["success"] and r["element_count"] == 0 for r in visits)


def test_empty_shard_has_no_smes() -> None:
    validation = validate_shard({}, as_of=AS_OF, shard=7)
    assert validation.sme_status.empty
    assert list(validation.sme_status.columns) == ["sme_id", "passed", "reasons"]
    assert validation.expectation_results == []


def test_failing_row_without_sme_cannot_be_attributed() -> None:
    tables = clean_tables(["SME-000001"])
    visits = tables["survey_visits"]
    visits.loc[0, "sme_id"] = None
    with pytest.raises(
        ValueError, match=r"survey_visits: 1 failing rows have no sme_id .*visit_id=visit-SME-000001"
    ):
        validate_shard({"survey_visits": visits}, as_of=AS_OF, shard=0)


def test_frame_without_a_canonical_column_is_refused() -> None:
    tables = clean_tables(["SME-000001"])
    with pytest.raises(
        ValueError, match=r"vat_returns: the frame to validate lacks canonical columns \['status'\]"
    ):
        validate_shard({"vat_returns": tables["vat_returns"].drop(columns="status")}, as_of=AS_OF, shard=0)
    with pytest.raises(ValueError, match=r"not canonical tables: \['ledger'\]"):
        validate_shard({"ledger": tables["vat_returns"]}, as_of=AS_OF, shard=0)


def test_sandbox_universe_validates_clean() -> None:
    universe = pytest.importorskip("connectors.sandbox.universe")
    truth = universe.Universe(20261125, 150, AS_OF).truth()
    validation = validate_shard(truth, as_of=AS_OF, shard=0)
    assert validation.failures["reason"].tolist() == []
    assert validation.sme_status["passed"].all()
    assert len(validation.sme_status) == 150
