"""The expectation suites: one GX 1.x ``ExpectationSuite`` JSON file per canonical table.

The files in ``expectations/suites/<table>.json`` are the source of truth; they are read with GX's
own ``ExpectationSuite(**json)`` and checked on load (GX logs and drops an expectation whose
configuration it cannot build; here that is an error). Dates that depend on the run are suite
parameters (``{"$PARAMETER": "as_of_date"}``) filled by :func:`suite_parameters`.

Every expectation has a stable, readable id such as
``expect_column_values_to_be_between(revenue)`` or
``expect_column_values_to_not_be_null(received_date) where status == F``: it keys the warehouse's
``validation_results`` rows and appears in every quarantine reason.

>>> suite_parameters(datetime.date(2026, 11, 1))["as_of_date"]
Timestamp('2026-11-01 00:00:00')
"""

from __future__ import annotations

import datetime
import functools
import json
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd

from warehouse.canonical import TABLES

if TYPE_CHECKING:
    from great_expectations import ExpectationSuite
    from great_expectations.expectations.expectation_configuration import ExpectationConfiguration

SUITES_DIR = Path(__file__).resolve().parent / "suites"

HISTORY_YEARS = 10
"""Dates older than this many years before the as-of date are parsing faults (epoch zero, two-digit
years), not history: no consent reaches that far back."""

DUE_HORIZON_DAYS = 366
"""A due date may lie ahead of the as-of date (an open VAT obligation, an unpaid bill), but not by more
than a year."""


def suite_path(table_name: str) -> Path:
    return SUITES_DIR / f"{table_name}.json"


def suite_parameters(as_of: datetime.date) -> dict[str, pd.Timestamp]:
    """Values of the suites' ``$PARAMETER`` references for a run as of ``as_of``.

    Prepared frames hold dates and UTC instants as plain timestamps; ``*_date`` bound date
    columns, ``*_utc`` instant columns, and ``as_of_end_utc`` is the first instant (UTC) after the
    as-of day.
    """
    as_of_day = pd.Timestamp(as_of)
    history_start = as_of_day - pd.DateOffset(years=HISTORY_YEARS)
    return {
        "as_of_date": as_of_day,
        "history_start_date": history_start,
        "due_horizon_date": as_of_day + pd.Timedelta(days=DUE_HORIZON_DAYS),
        "as_of_end_utc": as_of_day + pd.Timedelta(days=1),
        "history_start_utc": history_start,
    }


def expectation_columns(kwargs: dict[str, Any]) -> list[str]:
    """The columns an expectation reads, in the order its kwargs name them."""
    if "column" in kwargs:
        return [kwargs["column"]]
    if "column_A" in kwargs:
        return [kwargs["column_A"], kwargs["column_B"]]
    return list(kwargs.get("column_list", []))


def _condition_text(row_condition: Any) -> str:
    """A row condition as readable text: ``status == F``."""
    if isinstance(row_condition, dict):
        return f"{row_condition['column']['name']} {row_condition['operator']} {row_condition['parameter']}"
    return repr(row_condition)


def expectation_id(configuration: ExpectationConfiguration) -> str:
    """The stable readable id of one expectation: type, columns and any row condition."""
    text = f"{configuration.type}({', '.join(expectation_columns(configuration.kwargs))})"
    condition = configuration.kwargs.get("row_condition")
    return f"{text} where {_condition_text(condition)}" if condition else text


@dataclass(frozen=True)
class LoadedSuite:
    """A suite as GX built it, with each expectation's id and the columns the suite reads."""

    table_name: str
    suite: ExpectationSuite
    ids: tuple[str, ...]
    notes: tuple[str, ...]
    columns: tuple[str, ...]


def load_suite(table_name: str) -> LoadedSuite:
    """Read ``suites/<table>.json`` with GX's API and check it is complete and its ids unique."""
    from great_expectations import ExpectationSuite

    path = suite_path(table_name)
    document = json.loads(path.read_text())
    suite = ExpectationSuite(**document)
    if len(suite.expectations) != len(document["expectations"]):
        raise ValueError(
            f"{path}: GX built {len(suite.expectations)} of {len(document['expectations'])} expectations; "
            "see the GX log for the rejected configuration"
        )
    if suite.name != table_name:
        raise ValueError(f"{path}: suite is named {suite.name!r}, expected {table_name!r}")
    configurations = [e.configuration for e in suite.expectations]
    ids = tuple(expectation_id(c) for c in configurations)
    duplicates = sorted({i for i in ids if ids.count(i) > 1})
    if duplicates:
        raise ValueError(f"{path}: expectation ids must be unique, repeated: {duplicates}")
    columns: list[str] = []
    for configuration in configurations:
        for column in expectation_columns(configuration.kwargs):
            if column not in columns:
                columns.append(column)
        condition = configuration.kwargs.get("row_condition")
        if isinstance(condition, dict) and condition["column"]["name"] not in columns:
            columns.append(condition["column"]["name"])
    notes = tuple(_notes_text(c.notes) for c in configurations)
    return LoadedSuite(table_name, suite, ids, notes, tuple(columns))


def _notes_text(notes: str | list[str] | None) -> str:
    if notes is None:
        return ""
    return notes if isinstance(notes, str) else " ".join(notes)


@functools.cache
def loaded_suites() -> dict[str, LoadedSuite]:
    """Every canonical table's suite, read once per process."""
    return {name: load_suite(name) for name in TABLES}
