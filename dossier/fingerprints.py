"""Input fingerprints: what a step's outcome for one SME depends on, hashed, so an unchanged SME is
carried forward from the previous date instead of being validated and scored again.

A fingerprint is 32 hex digits (two independent 64-bit lanes) over:

* the SME's **canonical rows** of every table, as read by the step (order does not matter: each row
  is hashed, the row hashes are summed per SME and table, and the row count is kept beside them);
* the **as-of date as the step sees it**. Validation and evaluation read the date only through
  comparisons of a row's dates with instants derived from it, and through its calendar month
  (monthly windows). So each row carries the outcome of every such comparison the step makes
  with each of its dates - for validation, the ``$PARAMETER`` bounds the suites check a column
  against (:func:`validation_bounds`, read from the suite files); for scores, ``value < as_of``
  for the dates :data:`SCORING_DATES` lists - and the as-of month is part of every fingerprint.
  Two dates with the same comparisons give the same outcome; a bill falling due between them
  changes the fingerprint of its SME;
* for scores, also the **consent scope** (sources and window), the SME's profile, the model
  version, the lending terms and the visits' ``agent_suspended`` marks (they are columns of the
  rows hashed).

:data:`VERSION` is part of every fingerprint: change it when what a step reads changes in a way
the inputs above do not show (new code that reads something new).
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Iterable

import numpy as np
import pandas as pd

VERSION = "1"
"""Bumped when the fingerprint's definition (or what the steps depend on) changes."""

_KEYS = ("sme-dossier-fpA0", "sme-dossier-fpB1")
"""The two 16-byte hash keys of the lanes (``pandas.util.hash_pandas_object``)."""

FINGERPRINT = "input_fingerprint"
"""The staged column holding a row's fingerprint."""


Test = tuple[np.datetime64, str]
"""A comparison a step makes with one of a row's dates: (instant, ``<``, ``<=``, ``>``, ``>=`` or
``cmp`` for before/at/after), the instant naive UTC."""

Bounds = dict[str, dict[str, list[Test]]]
"""Per table and column, the comparisons a step makes with its values."""


def _instant(value: object) -> np.datetime64:
    stamp = pd.Timestamp(value)
    return (stamp.tz_convert("UTC").tz_localize(None) if stamp.tzinfo else stamp).to_datetime64()


def _tests(kwargs: dict[str, object], values: dict[str, object]) -> list[Test]:
    """The comparisons an expectation's ``$PARAMETER`` bounds make (a parameter used any other way
    counts as a before/at/after comparison)."""
    tests: list[Test] = []
    for key, value in kwargs.items():
        if isinstance(value, dict) and "$PARAMETER" in value:
            instant = _instant(values[value["$PARAMETER"]])
            if key == "min_value":
                tests.append((instant, ">" if kwargs.get("strict_min") else ">="))
            elif key == "max_value":
                tests.append((instant, "<" if kwargs.get("strict_max") else "<="))
            else:
                tests.append((instant, "cmp"))
        elif isinstance(value, dict | list) and "$PARAMETER" in json.dumps(value, default=str):
            tests += [(_instant(v), "cmp") for v in values.values()]
    return tests


def validation_bounds(as_of: dt.date) -> Bounds:
    """Per table and column, the comparisons the suites make with its values on ``as_of`` (the
    ``$PARAMETER`` bounds of every expectation reading the column; the suite files are the contract)."""
    from pathlib import Path

    import expectations
    from expectations.suites import expectation_columns, suite_parameters
    from warehouse.canonical import TABLES

    values = suite_parameters(as_of)
    folder = Path(expectations.__file__).parent / "suites"
    bounds: Bounds = {}
    for table in TABLES:
        path = folder / f"{table}.json"
        found: dict[str, list[Test]] = {}
        for expectation in json.loads(path.read_text())["expectations"] if path.exists() else []:
            kwargs = expectation.get("kwargs", {})
            tests = _tests(kwargs, values)
            for column in expectation_columns(kwargs) if tests else []:
                found.setdefault(column, []).extend(tests)
        bounds[table] = found
    return bounds


SCORING_DATES: dict[str, tuple[str, ...]] = {
    "vat_returns": ("due_date", "received_date"),
    "utility_bills": ("due_date",),
    "survey_visits": ("visited_at", "submitted_at"),
}
"""The dates :mod:`evaluation.features` compares with the as-of day (``value < as_of``); every
other use of time there goes by calendar months against the as-of month. Keep in step with the
features (and bump :data:`VERSION`)."""


def scoring_bounds(as_of: dt.date) -> Bounds:
    """The comparisons evaluation makes with a row's dates on ``as_of`` (:data:`SCORING_DATES`)."""
    instant = _instant(as_of)
    return {
        table: {column: [(instant, "<")] for column in columns} for table, columns in SCORING_DATES.items()
    }


def as_of_month(as_of: dt.date) -> int:
    """Months since January 1970 of ``as_of``'s calendar month."""
    return (as_of.year - 1970) * 12 + as_of.month - 1


def _instants(values: pd.Series) -> np.ndarray | None:
    """``values`` as naive UTC ``datetime64[ns]`` when the column holds dates or instants, else None."""
    if pd.api.types.is_datetime64_any_dtype(values.dtype):
        series = values.dt.tz_convert("UTC").dt.tz_localize(None) if values.dt.tz is not None else values
        return series.to_numpy(dtype="datetime64[ns]")
    if values.dtype == object:
        first = values.dropna()
        if len(first) and isinstance(first.iloc[0], dt.date):
            return pd.to_datetime(values, utc=True).dt.tz_localize(None).to_numpy(dtype="datetime64[ns]")
    return None


_OPERATORS = {"<": np.less, "<=": np.less_equal, ">": np.greater, ">=": np.greater_equal}


def _hashable(frame: pd.DataFrame, bounds: dict[str, list[Test]]) -> pd.DataFrame:
    """``frame`` with its dates and instants as integers (nanoseconds, missing as the minimum) and,
    per date column the step compares, the outcome of each comparison (two bits each: false, true,
    or for ``cmp`` before/at/after; 3 for a missing value) packed into one more integer column."""
    columns: dict[str, object] = {}
    for name in frame.columns:
        instants = _instants(frame[name])
        if instants is None:
            columns[name] = frame[name].to_numpy()
            continue
        columns[name] = instants.view(np.int64)
        tests = bounds.get(name, [])
        if not tests:
            continue
        missing = np.isnat(instants)
        packed = np.zeros(len(frame), dtype=np.int64)
        for position, (bound, operator) in enumerate(tests):
            if operator == "cmp":
                code = np.where(instants < bound, 0, np.where(instants == bound, 1, 2))
            else:
                code = _OPERATORS[operator](instants, bound).astype(np.int64)
            packed |= np.where(missing, 3, code).astype(np.int64) << (2 * position)
        columns[f"__tests_{name}"] = packed
    return pd.DataFrame(columns)


def _row_hashes(frame: pd.DataFrame, key: str) -> np.ndarray:
    return pd.util.hash_pandas_object(frame, index=False, hash_key=key).to_numpy(dtype=np.uint64)


def table_digests(tables: dict[str, pd.DataFrame], sme_ids: Iterable[str], bounds: Bounds) -> pd.DataFrame:
    """Per SME of ``sme_ids`` (the index): per table, the sums of its rows' hashes (two lanes) and
    the row count, every row seen with its dates' places against the as-of bounds."""
    index = pd.Index(sorted(set(sme_ids)), name="sme_id", dtype=object)
    columns: dict[str, np.ndarray] = {}
    for name in sorted(tables):
        frame = tables[name]
        counts = np.zeros(len(index), dtype=np.int64)
        sums = [np.zeros(len(index), dtype=np.uint64) for _ in _KEYS]
        if len(frame):
            position = index.get_indexer(frame["sme_id"].astype(object))
            inside = position >= 0
            rows = frame.loc[inside].reset_index(drop=True)
            position = position[inside]
            if len(rows):
                rows = _hashable(rows, bounds.get(name, {}))
                counts = np.bincount(position, minlength=len(index)).astype(np.int64)
                for lane, key in enumerate(_KEYS):
                    hashes = _row_hashes(rows, key)
                    with np.errstate(over="ignore"):
                        np.add.at(sums[lane], position, hashes)
        columns[f"{name}.rows"] = counts
        for lane, total in enumerate(sums):
            columns[f"{name}.h{lane}"] = total
    return pd.DataFrame(columns, index=index)


def fingerprints(digests: pd.DataFrame, rows: pd.DataFrame, *, context: Iterable[object] = ()) -> pd.Series:
    """One fingerprint per row of ``rows`` (a frame with ``sme_id`` and any further inputs of the
    row, e.g. its scope): the SME's ``digests`` (:func:`table_digests`), the row's own values and
    ``context`` (values common to every row: the as-of month, model version, ...)."""
    if rows.empty:
        return pd.Series([], dtype=object, index=rows.index)
    inputs = rows.reset_index(drop=True).astype(str)
    joined = digests.reindex(inputs["sme_id"]).reset_index(drop=True)
    missing = joined.isna().any(axis=1).to_numpy()
    if missing.any():
        raise ValueError(f"fingerprints: no digest for {list(inputs['sme_id'][missing][:5])}")
    for column in joined.columns:
        inputs[f"__{column}"] = joined[column].to_numpy()
    inputs["__context"] = "\x1f".join(str(value) for value in (VERSION, *context))
    lanes = [
        pd.util.hash_pandas_object(inputs, index=False, hash_key=key).to_numpy(np.uint64) for key in _KEYS
    ]
    text = np.char.add(
        np.char.zfill(np.char.mod("%x", lanes[0]), 16), np.char.zfill(np.char.mod("%x", lanes[1]), 16)
    )
    return pd.Series(text.astype(object), index=rows.index, name=FINGERPRINT)
