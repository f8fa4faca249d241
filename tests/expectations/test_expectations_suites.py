"""The suite files: one per canonical table, loadable by GX, naming only canonical (or derived) columns."""

from __future__ import annotations

import datetime as dt
import json

import great_expectations as gx
import numpy as np
import pandas as pd
import pytest
from expectation_frames import AS_OF, clean_tables

from expectations.prepare import DERIVED, ROW_INDEX, derived_inputs, prepare
from expectations.suites import (
    SUITES_DIR,
    expectation_columns,
    expectation_id,
    loaded_suites,
    suite_parameters,
)
from warehouse.canonical import TABLES


def _documents() -> dict[str, dict]:
    return {path.stem: json.loads(path.read_text()) for path in sorted(SUITES_DIR.glob("*.json"))}


def test_every_canonical_table_has_exactly_one_suite_file() -> None:
    assert sorted(_documents()) == sorted(TABLES)


@pytest.mark.parametrize("table_name", sorted(TABLES))
def test_suite_loads_with_gx_and_names_only_known_columns(table_name: str) -> None:
    document = _documents()[table_name]
    suite = gx.ExpectationSuite(**document)
    assert suite.name == table_name
    assert len(suite.expectations) == len(document["expectations"])
    canonical = set(TABLES[table_name].column_names)
    derived = derived_inputs(table_name)
    for expectation in suite.expectations:
        kwargs = expectation.configuration.kwargs
        for column in expectation_columns(kwargs):
            assert column in canonical or column in derived, f"{table_name}: unknown column {column}"
        condition = kwargs.get("row_condition")
        if condition:
            assert condition["column"]["name"] in canonical
        assert expectation.configuration.notes, f"{expectation_id(expectation.configuration)} has no note"
    for column, inputs in derived.items():
        assert set(inputs) <= canonical, f"{table_name}.{column} is derived from unknown columns"


@pytest.mark.parametrize("table_name", sorted(TABLES))
def test_every_required_column_and_key_is_checked(table_name: str) -> None:
    table = TABLES[table_name]
    ids = loaded_suites()[table_name].ids
    for column in table.columns:
        if not column.nullable:
            assert f"expect_column_values_to_not_be_null({column.name})" in ids
    assert f"expect_compound_columns_to_be_unique({', '.join(table.key)})" in ids


def test_suite_parameters_cover_every_reference() -> None:
    references = {
        value["$PARAMETER"]
        for document in _documents().values()
        for expectation in document["expectations"]
        for value in expectation["kwargs"].values()
        if isinstance(value, dict) and "$PARAMETER" in value
    }
    parameters = suite_parameters(AS_OF)
    assert references == set(parameters)
    assert parameters == {
        "as_of_date": pd.Timestamp("2026-11-01"),
        "history_start_date": pd.Timestamp("2016-11-01"),
        "due_horizon_date": pd.Timestamp("2027-11-02"),
        "as_of_end_utc": pd.Timestamp("2026-11-02"),
        "history_start_utc": pd.Timestamp("2016-11-01"),
    }


def test_expectation_ids_are_readable_and_unique() -> None:
    ids = loaded_suites()["vat_returns"].ids
    assert len(ids) == len(set(ids))
    assert "expect_column_values_to_be_between(box3_gap)" in ids
    assert "expect_column_values_to_be_null(received_date) where status == O" in ids
    assert "expect_column_pair_values_a_to_be_greater_than_b(period_end, period_start)" in ids


def test_prepare_types_derives_and_indexes_by_row() -> None:
    bills = clean_tables(["SME-000001"])["utility_bills"]
    bills.index = [10, 11]
    prepared = prepare("utility_bills", bills, ["sme_id", "period_start", "paid_date", "period_start_date"])
    expected = pd.DataFrame(
        {
            "sme_id": pd.Categorical(["SME-000001", "SME-000001"]),
            "period_start": pd.to_datetime(["2026-08-01", "2026-09-01"]).astype("datetime64[ns]"),
            "paid_date": pd.to_datetime(["2026-09-10", None]).astype("datetime64[ns]"),
            "period_start_date": pd.to_datetime(["2026-08-01", "2026-09-01"]).astype("datetime64[ns]"),
        },
        index=pd.RangeIndex(2, name=ROW_INDEX),
    )
    pd.testing.assert_frame_equal(prepared, expected, check_categorical=False)


def test_prepare_makes_unreadable_values_null_and_computes_gaps_in_cents() -> None:
    vat = clean_tables(["SME-000001"])["vat_returns"].astype({"period_start": "object"})
    vat.loc[0, "period_start"] = "31/04/2026"
    vat.loc[0, "total_vat_due"] = 2000.004
    prepared = prepare("vat_returns", vat, ["period_start", "box3_gap", "box5_gap"])
    assert prepared["period_start"].isna().tolist() == [True, False]
    assert prepared["period_start"].iloc[1] == pd.Timestamp(dt.date(2026, 7, 1))
    np.testing.assert_array_equal(prepared["box3_gap"].to_numpy(), [0.0, np.nan])
    np.testing.assert_array_equal(prepared["box5_gap"].to_numpy(), [0.0, np.nan])


def test_every_derived_column_is_documented_and_used() -> None:
    used = {c for loaded in loaded_suites().values() for c in loaded.columns}
    for table_name, columns in DERIVED.items():
        for column in columns:
            assert column.description
            assert column.name in used, f"{table_name}.{column.name} is derived but no suite reads it"
