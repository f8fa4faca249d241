"""Input fingerprints: what a step's outcome for one SME depends on, hashed, so an unchanged SME is
carried forward from the previous date instead of being validated and scored again.

A fingerprint is 32 hex digits (two independent 64-bit lanes) over:

* the SME's **canonical rows** of every table: per table the row count and the sums of its rows'
  hashes, dates hashed as values (:func:`warehouse.canonical_files.sme_digests`; the same digests
  every canonical write stores beside its file, so a step reads them without reading the rows);
* the as-of **calendar month** (monthly windows) and the step's context: for validation the suite
  files, for scores the model version and the lending terms;
* for scores, also the **consent scope** (sources and window), the SME's profile and which of its
  visits were made by a suspended field agent.

The as-of date is also read through comparisons of a row's dates with instants derived from it:
the ``$PARAMETER`` bounds the suites check a column against (:func:`validation_bounds`, read from
the suite files) and ``value < as_of`` for the dates :data:`SCORING_DATES` lists. Those are not in
the fingerprint; instead each staged row carries :data:`CARRY_UNTIL`, the first as-of date on which
one of those comparisons, for one of the SME's rows, gives another outcome (or the first day of the
next month): every bound grows with the as-of date, so that day is found by one sorted search over
the month's remaining bounds (:func:`carry_until`). A row is carried only on a date before it, so a
bill falling due between two dates has its SME done again.

:data:`VERSION` is part of every fingerprint: change it when what a step reads changes in a way
the inputs above do not show (new code that reads something new).
"""

from __future__ import annotations

import datetime as dt
import functools
import hashlib
import json
from collections.abc import Callable, Iterable
from pathlib import Path

import numpy as np
import pandas as pd

from warehouse.canonical_files import HASH_KEYS, instants

VERSION = "2"
"""Bumped when the fingerprint's definition (or what the steps depend on) changes."""

FINGERPRINT = "input_fingerprint"
"""The staged column holding a row's fingerprint."""

CARRY_UNTIL = "carry_until"
"""The staged column holding the first as-of date the row may not be carried to (:func:`carry_until`)."""


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


@functools.cache
def _suite_expectations(table: str) -> list[dict[str, object]]:
    import expectations

    path = Path(expectations.__file__).parent / "suites" / f"{table}.json"
    return json.loads(path.read_text())["expectations"] if path.exists() else []


@functools.lru_cache(maxsize=64)
def validation_bounds(as_of: dt.date) -> Bounds:
    """Per table and column, the comparisons the suites make with its values on ``as_of`` (the
    ``$PARAMETER`` bounds of every expectation reading the column; the suite files are the contract).
    Kept per date (callers only read it)."""
    from expectations.suites import expectation_columns, suite_parameters
    from warehouse.canonical import TABLES

    values = suite_parameters(as_of)
    bounds: Bounds = {}
    for table in TABLES:
        found: dict[str, list[Test]] = {}
        for expectation in _suite_expectations(table):
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


def next_month(as_of: dt.date) -> dt.date:
    """The first day of the month after ``as_of``'s."""
    return dt.date(as_of.year + as_of.month // 12, as_of.month % 12 + 1, 1)


def carry_until(
    tables: dict[str, pd.DataFrame],
    sme_ids: Iterable[str],
    as_of: dt.date,
    bounds_of: Callable[[dt.date], Bounds],
) -> pd.Series:
    """Per SME of ``sme_ids`` (the index, sorted): the first date after ``as_of`` on which a
    comparison ``bounds_of`` makes with one of its rows' dates gives another outcome than on
    ``as_of``, or the first day of the next month when none does before it.

    Every bound is non-decreasing in the as-of date (checked: a bound that is not makes every row
    with a value in that column due the next day), so a comparison of a value changes at most once a
    month and the day it does is a sorted search of the value among the month's remaining bounds.
    """
    index = pd.Index(sorted(set(sme_ids)), name="sme_id", dtype=object)
    days = (next_month(as_of) - as_of).days
    offset = np.full(len(index), days, dtype=np.int64)
    today = bounds_of(as_of)
    future = [bounds_of(as_of + dt.timedelta(days=k)) for k in range(1, days)]
    for table, columns in today.items():
        frame = tables.get(table)
        if frame is None or frame.empty:
            continue
        position = index.get_indexer(frame["sme_id"].astype(object))
        inside = position >= 0
        for column, tests in columns.items():
            if column not in frame.columns or not tests:
                continue
            values = instants(frame[column])
            if values is None:
                continue
            values, where = values[inside], position[inside]
            present = ~np.isnat(values)
            for number, (bound, operator) in enumerate(tests):
                later = np.array([day[table][column][number][0] for day in future], dtype="datetime64[ns]")
                start = np.datetime64(bound, "ns")
                if len(later) and (later[0] < start or (np.diff(later) < np.timedelta64(0)).any()):
                    flips = present
                    due = np.ones(len(values), dtype=np.int64)
                else:
                    # "<" and ">=" read value < bound; "<=" and ">" read value <= bound; cmp reads both
                    after = np.searchsorted(later, values, side="right") + 1  # first bound > value
                    reach = np.searchsorted(later, values, side="left") + 1  # first bound >= value
                    if operator in ("<", ">="):
                        flips, due = present & (values >= start), after
                    elif operator in ("<=", ">"):
                        flips, due = present & (values > start), reach
                    else:
                        flips = present & (values >= start)
                        due = np.where(values == start, after, reach)
                np.minimum.at(offset, where[flips], due[flips])
    return pd.Series(
        [as_of + dt.timedelta(days=int(d)) for d in offset], index=index, name=CARRY_UNTIL, dtype=object
    )


@functools.cache
def suites_digest() -> str:
    """sha256 of the suite files (the contract validation checks): part of the validation context."""
    import expectations

    folder = Path(expectations.__file__).parent / "suites"
    digest = hashlib.sha256()
    for path in sorted(folder.glob("*.json")):
        digest.update(path.name.encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()


def validation_context(as_of: dt.date) -> tuple[object, ...]:
    """What every validation fingerprint of ``as_of`` shares: the as-of month and the suites."""
    return ("validation", as_of_month(as_of), suites_digest())


def scoring_context(as_of: dt.date, model_version: str, terms: object) -> tuple[object, ...]:
    """What every score fingerprint of ``as_of`` shares: the model, the lending terms, the as-of month."""
    return ("scores", model_version, repr(terms), as_of_month(as_of))


def fingerprints(digests: pd.DataFrame, rows: pd.DataFrame, *, context: Iterable[object] = ()) -> pd.Series:
    """One fingerprint per row of ``rows`` (a frame with ``sme_id`` and any further inputs of the
    row, e.g. its scope): the SME's ``digests``
    (:meth:`warehouse.canonical_files.CanonicalShard.digests`), the row's own values and
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
        pd.util.hash_pandas_object(inputs, index=False, hash_key=key).to_numpy(np.uint64) for key in HASH_KEYS
    ]
    text = np.char.add(
        np.char.zfill(np.char.mod("%x", lanes[0]), 16), np.char.zfill(np.char.mod("%x", lanes[1]), 16)
    )
    return pd.Series(text.astype(object), index=rows.index, name=FINGERPRINT)
