"""The one step between a canonical frame and the frame Great Expectations validates.

:func:`prepare` does three things, all vectorised, and nothing else:

* **types**: each canonical column is brought to the dtype GX compares fastest and exactly, whatever
  the producer handed over (``datetime.date`` objects, strings, nullable integers): dates and UTC
  instants to ``datetime64[ns]`` (instants as UTC wall time, so both compare with plain timestamps),
  numbers to ``float64``/``int64``, text to ``category`` (GX copies the frame while filtering; codes
  copy far faster than strings). A value that cannot be read becomes null, so the suite's not-null
  expectation reports it.
* **derived columns**: a rule that spans columns with arithmetic (GX's pair and multi-column
  expectations compare, they do not add) gets one documented derived column, listed in
  :data:`DERIVED`; the suite then bounds that column.
* **row index**: the frame is indexed by the row's position in the canonical frame, named
  :data:`ROW_INDEX`. GX reports failing rows by this index (``unexpected_index_column_names``), so
  every failure maps back to its canonical row, its SME and its source record, whatever kind of
  expectation found it.

>>> derived_inputs("monthly_financials")["balance_sheet_gap"]
('total_assets', 'total_liabilities', 'equity')
"""

from __future__ import annotations

from collections.abc import Callable, Collection
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import pyarrow as pa

from warehouse.canonical import TABLES

ROW_INDEX = "row"
"""Name of the index of a prepared frame: the row's position in the canonical frame."""


@dataclass(frozen=True)
class DerivedColumn:
    """A column computed from canonical columns so that GX can check an arithmetic rule on it."""

    name: str
    inputs: tuple[str, ...]
    description: str
    compute: Callable[[pd.DataFrame], pd.Series]
    type: pa.DataType = field(default_factory=pa.float64)


def _cents(values: pd.Series) -> pd.Series:
    """Round to cents, so that float noise never decides whether a one-cent tolerance holds."""
    return values.round(2)


DERIVED: dict[str, tuple[DerivedColumn, ...]] = {
    "monthly_financials": (
        DerivedColumn(
            "balance_sheet_gap",
            ("total_assets", "total_liabilities", "equity"),
            "total_assets - total_liabilities - equity, in cents (0 when the balance sheet balances).",
            lambda f: _cents(f["total_assets"] - f["total_liabilities"] - f["equity"]),
        ),
        DerivedColumn(
            "net_profit_gap",
            (
                "net_profit",
                "revenue",
                "cost_of_sales",
                "operating_expenses",
                "depreciation",
                "interest_expense",
                "tax_expense",
            ),
            "net_profit minus (revenue - every expense of the month), in cents.",
            lambda f: _cents(
                f["net_profit"]
                - (
                    f["revenue"]
                    - f["cost_of_sales"]
                    - f["operating_expenses"]
                    - f["depreciation"]
                    - f["interest_expense"]
                    - f["tax_expense"]
                )
            ),
        ),
    ),
    "vat_returns": (
        DerivedColumn(
            "box3_gap",
            ("total_vat_due", "vat_due_sales", "vat_due_acquisitions"),
            "box 3 - (box 1 + box 2), in cents; null while the return is open.",
            lambda f: _cents(f["total_vat_due"] - (f["vat_due_sales"] + f["vat_due_acquisitions"])),
        ),
        DerivedColumn(
            "box5_gap",
            ("net_vat_due", "total_vat_due", "vat_reclaimed"),
            "box 5 - |box 3 - box 4|, in cents; null while the return is open.",
            lambda f: _cents(f["net_vat_due"] - (f["total_vat_due"] - f["vat_reclaimed"]).abs()),
        ),
    ),
    "utility_bills": (
        DerivedColumn(
            "period_start_date",
            ("period_start",),
            "The UTC calendar date the billing period starts, comparable with due_date and paid_date.",
            lambda f: f["period_start"].dt.normalize(),
            pa.date32(),
        ),
    ),
    "utility_readings": (),
    "survey_visits": (),
    "bank_transactions": (),
    "survey_submissions": (),
}
"""Derived columns per canonical table; each one's inputs are canonical columns of that table."""


def derived_inputs(table_name: str) -> dict[str, tuple[str, ...]]:
    """Derived column name -> the canonical columns it is computed from, for one table."""
    return {d.name: d.inputs for d in DERIVED[table_name]}


def column_types(table_name: str) -> dict[str, pa.DataType]:
    """Arrow type of every canonical and derived column of one table."""
    types = {c.name: c.type for c in TABLES[table_name].columns}
    return types | {d.name: d.type for d in DERIVED[table_name]}


def _typed(values: pd.Series, arrow_type: pa.DataType) -> pd.Series:
    """``values`` as the dtype GX compares vectorised; unreadable values become null."""
    if pa.types.is_date(arrow_type):
        if values.dtype == "datetime64[ns]":
            return values
        return pd.to_datetime(values, errors="coerce", format="ISO8601").astype("datetime64[ns]")
    if pa.types.is_timestamp(arrow_type):
        if values.dtype == "datetime64[ns]":
            return values
        instants = pd.to_datetime(values, errors="coerce", utc=True, format="ISO8601")
        return instants.dt.tz_localize(None).astype("datetime64[ns]")
    if pa.types.is_floating(arrow_type):
        if values.dtype == np.float64:
            return values
        return pd.to_numeric(values, errors="coerce").astype(np.float64)
    if pa.types.is_integer(arrow_type):
        if values.dtype == np.int64:
            return values
        numbers = pd.to_numeric(values, errors="coerce")
        return numbers.astype(np.float64) if numbers.isna().any() else numbers.astype(np.int64)
    if pa.types.is_string(arrow_type):
        return values.astype("category")
    return values


def prepare(table_name: str, frame: pd.DataFrame, columns: Collection[str]) -> pd.DataFrame:
    """The frame GX validates for ``table_name``: only ``columns`` (canonical or derived), typed.

    Raises ``ValueError`` naming the table when ``frame`` lacks a canonical column, since a frame
    without it is a fault of its producer, not of the SME's data.
    """
    table = TABLES[table_name]
    missing = [c for c in table.column_names if c not in frame.columns]
    if missing:
        raise ValueError(f"{table_name}: the frame to validate lacks canonical columns {missing}")
    derived = {d.name: d for d in DERIVED[table_name]}
    unknown = [c for c in columns if c not in derived and c not in table.column_names]
    if unknown:
        raise ValueError(f"{table_name}: no canonical or derived column named {unknown}")
    types = {c.name: c.type for c in table.columns}
    needed = [
        c
        for c in table.column_names
        if c in columns or any(c in derived[d].inputs for d in columns if d in derived)
    ]
    typed = pd.DataFrame({c: _typed(frame[c], types[c]) for c in needed})
    for name in (c for c in columns if c in derived):
        typed[name] = derived[name].compute(typed)
    typed.index = pd.RangeIndex(len(frame), name=ROW_INDEX)
    return typed[[c for c in table.column_names if c in columns] + [c for c in columns if c in derived]]
