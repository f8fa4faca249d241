"""The suites compiled into vectorised checks that find exactly the rows Great Expectations fails.

GX's pandas engine spends most of a shard's validation on fixed cost per expectation (building
each expectation's metric graph), whatever the size of the frame. :func:`table_plan` reads a
table's suite file (``expectations/suites/<table>.json``, still the one contract) and compiles
each expectation into a :class:`Check`: numpy and pandas operations over the *prepared* frame
(:func:`expectations.prepare.prepare`) that return the failing row positions GX returns for that
expectation, with GX's semantics:

* **nulls**: column-map expectations look only at non-null values, except ``not_be_null`` and
  ``to_be_null``; a column-pair expectation with ``ignore_row_if: either_value_is_missing``
  skips rows where either value is null; compound uniqueness (``ignore_row_if: never``) compares
  nulls as equal values, as ``DataFrame.duplicated`` does.
* **bounds**: inclusive unless ``strict_min`` / ``strict_max``; ``{"$PARAMETER": name}`` is
  resolved from :func:`expectations.suites.suite_parameters` at run time.
* **row conditions**: the structured ``comparison`` conditions the suites use (``==`` and ``!=``
  against a literal); the check then sees only the rows meeting the condition (a null never
  equals a literal). Any other condition form, an unknown kwarg such as ``mostly`` or an
  expectation type not listed in :data:`SUPPORTED` is refused when the suite is compiled, naming
  the suite and the expectation: a check that cannot be reproduced is never silently passed.
* **uniqueness**: every member of a duplicated group fails (``duplicated(keep=False)``).
* **regex**: ``str.contains`` on the values as text, as GX's pandas engine does (a search, so
  the suites anchor their patterns).

Checks run aggregate-first: a reduction that needs no row mask (min and max against the bounds,
the categories present against a value set, ``is_unique``) decides most clean columns, and a row
mask is built only when the reduction finds a failure.

This module does not import Great Expectations; :mod:`expectations.runner` uses it to decide the
failing rows and runs GX only over those rows and a sample of passing ones.

>>> plan = table_plan("vat_returns")
>>> plan.checks[2].identifier
'expect_compound_columns_to_be_unique(sme_id, period_key)'
"""

from __future__ import annotations

import functools
import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from expectations.suites import expectation_columns, expectation_id, suite_path

SUPPORTED: dict[str, set[str]] = {
    "expect_column_values_to_not_be_null": {"column"},
    "expect_column_values_to_be_null": {"column"},
    "expect_column_values_to_be_between": {"column", "min_value", "max_value", "strict_min", "strict_max"},
    "expect_column_values_to_be_in_set": {"column", "value_set"},
    "expect_column_values_to_be_unique": {"column"},
    "expect_column_values_to_match_regex": {"column", "regex"},
    "expect_column_pair_values_a_to_be_greater_than_b": {"column_A", "column_B", "or_equal", "ignore_row_if"},
    "expect_compound_columns_to_be_unique": {"column_list", "ignore_row_if"},
}
"""Expectation type -> the kwargs the plan understands (``row_condition`` is allowed on every one)."""

_NULLITY = {"expect_column_values_to_not_be_null", "expect_column_values_to_be_null"}
_CONDITION_OPERATORS = {"==", "!=", "<", "<=", ">", ">="}
_EMPTY = np.zeros(0, dtype=np.int64)


class PlanError(ValueError):
    """A suite holds an expectation the plan cannot reproduce exactly."""


@dataclass(frozen=True)
class Outcome:
    """What one check found in one frame, in the terms GX reports.

    ``rows``: failing positions (sorted); ``element_count``: rows the expectation looked at (after
    its row condition); ``nonnull_count``: rows among them it evaluated (``None`` for the
    not-null and null expectations, whose GX results carry no missing counts).
    """

    identifier: str
    rows: np.ndarray
    element_count: int
    nonnull_count: int | None

    @property
    def success(self) -> bool:
        return len(self.rows) == 0


@dataclass(frozen=True)
class _Condition:
    column: str
    operator: str
    parameter: Any

    def mask(self, frame: pd.DataFrame) -> np.ndarray:
        values = frame[self.column]
        operator = self.operator
        if operator == "==":
            result = values == self.parameter
        elif operator == "!=":
            result = values != self.parameter
        elif operator == "<":
            result = values < self.parameter
        elif operator == "<=":
            result = values <= self.parameter
        elif operator == ">":
            result = values > self.parameter
        else:
            result = values >= self.parameter
        return np.asarray(result.fillna(False), dtype=bool)


@dataclass(frozen=True)
class Check:
    """One expectation as a vectorised function of the prepared frame."""

    identifier: str
    type: str
    columns: tuple[str, ...]
    kwargs: Mapping[str, Any]
    condition: _Condition | None
    find: Callable[[pd.DataFrame, Mapping[str, Any]], np.ndarray | None]
    """(domain frame, resolved kwargs) -> boolean array of failing rows of the domain, or ``None``
    when an aggregate already shows no row fails."""
    note: str = ""
    """The expectation's notes (the plain-language rule quarantine reasons quote)."""

    def run(self, frame: pd.DataFrame, parameters: Mapping[str, Any], table_name: str) -> Outcome:
        kwargs = {k: _resolve(v, parameters, table_name, self.identifier) for k, v in self.kwargs.items()}
        positions: np.ndarray | None = None
        domain = frame
        if self.condition is not None:
            selected = self.condition.mask(frame)
            positions = np.flatnonzero(selected)
            domain = frame.iloc[positions]
        element_count = len(domain)
        if self.type in _NULLITY:
            nonnull: int | None = None
        elif self.type == "expect_compound_columns_to_be_unique":
            nonnull = element_count
        elif self.type == "expect_column_pair_values_a_to_be_greater_than_b":
            nonnull = int((domain[self.columns[0]].notna() & domain[self.columns[1]].notna()).sum())
        else:
            nonnull = int(domain[self.columns[0]].notna().sum())
        failing = self.find(domain, kwargs) if element_count else None
        if failing is None or not failing.any():
            rows = _EMPTY
        else:
            rows = np.flatnonzero(failing)
            if positions is not None:
                rows = positions[rows]
        return Outcome(self.identifier, rows.astype(np.int64), element_count, nonnull)


@dataclass(frozen=True)
class Plan:
    """A table's suite compiled: one :class:`Check` per expectation, in the suite's order."""

    table_name: str
    checks: tuple[Check, ...]

    @property
    def ids(self) -> tuple[str, ...]:
        return tuple(c.identifier for c in self.checks)

    @property
    def columns(self) -> tuple[str, ...]:
        """The columns the checks read (their own, then their row condition's), first use first:
        the same as :attr:`expectations.suites.LoadedSuite.columns`."""
        columns: list[str] = []
        for check in self.checks:
            for column in (*check.columns, *((check.condition.column,) if check.condition else ())):
                if column not in columns:
                    columns.append(column)
        return tuple(columns)

    def run(self, frame: pd.DataFrame, parameters: Mapping[str, Any]) -> list[Outcome]:
        """Every check over ``frame`` (prepared, indexed by position) with the run's suite parameters."""
        return [check.run(frame, parameters, self.table_name) for check in self.checks]


def resolve_parameter(value: Any, parameters: Mapping[str, Any]) -> Any:
    """A kwarg's value with a ``{"$PARAMETER": name}`` reference replaced by the parameter's value."""
    if isinstance(value, dict) and "$PARAMETER" in value:
        return parameters[value["$PARAMETER"]]
    return value


def _resolve(value: Any, parameters: Mapping[str, Any], table_name: str, identifier: str) -> Any:
    try:
        return resolve_parameter(value, parameters)
    except KeyError as missing:
        raise PlanError(
            f"{table_name}: {identifier} refers to suite parameter {missing}, not given"
        ) from None


def _non_null(values: pd.Series) -> np.ndarray:
    return np.asarray(values.notna(), dtype=bool)


def _not_null(frame: pd.DataFrame, kwargs: Mapping[str, Any]) -> np.ndarray | None:
    values = frame[kwargs["column"]]
    return np.asarray(values.isna(), dtype=bool) if values.hasnans else None


def _null(frame: pd.DataFrame, kwargs: Mapping[str, Any]) -> np.ndarray:
    return _non_null(frame[kwargs["column"]])


def _between(frame: pd.DataFrame, kwargs: Mapping[str, Any]) -> np.ndarray | None:
    values = frame[kwargs["column"]]
    low, high = kwargs.get("min_value"), kwargs.get("max_value")
    strict_min, strict_max = bool(kwargs.get("strict_min")), bool(kwargs.get("strict_max"))
    if low is None and high is None:
        raise ValueError("min_value and max_value cannot both be None")
    if low is not None and high is not None and low > high:
        raise ValueError("min_value cannot be greater than max_value")
    numeric = values.dtype in (np.int64, np.float64) or pd.api.types.is_datetime64_ns_dtype(values.dtype)
    if not numeric:
        raise TypeError(f"column {values.name} has dtype {values.dtype}, not a number or a timestamp")
    smallest, largest = values.min(), values.max()
    if pd.isna(smallest):
        return None
    low_ok = low is None or (smallest > low if strict_min else smallest >= low)
    high_ok = high is None or (largest < high if strict_max else largest <= high)
    if low_ok and high_ok:
        return None
    inside = np.ones(len(values), dtype=bool)
    if low is not None:
        inside &= np.asarray(values > low if strict_min else values >= low, dtype=bool)
    if high is not None:
        inside &= np.asarray(values < high if strict_max else values <= high, dtype=bool)
    return _non_null(values) & ~inside


def _in_set(frame: pd.DataFrame, kwargs: Mapping[str, Any]) -> np.ndarray | None:
    values = frame[kwargs["column"]]
    value_set = kwargs["value_set"]
    if value_set is None:
        return None
    if isinstance(values.dtype, pd.CategoricalDtype):
        codes = values.cat.codes.to_numpy()
        outside = np.flatnonzero(~values.cat.categories.isin(value_set))
        if not len(outside):
            return None
        return np.isin(codes, outside)
    return _non_null(values) & ~np.asarray(values.isin(value_set), dtype=bool)


def _unique(frame: pd.DataFrame, kwargs: Mapping[str, Any]) -> np.ndarray | None:
    values = frame[kwargs["column"]]
    present = values.dropna()
    if present.is_unique:
        return None
    failing = np.zeros(len(values), dtype=bool)
    failing[np.flatnonzero(_non_null(values))[present.duplicated(keep=False).to_numpy()]] = True
    return failing


def _match_regex(frame: pd.DataFrame, kwargs: Mapping[str, Any]) -> np.ndarray | None:
    values = frame[kwargs["column"]]
    regex = kwargs["regex"]
    if isinstance(values.dtype, pd.CategoricalDtype):
        categories = pd.Series(values.cat.categories)
        outside = np.flatnonzero(~categories.astype(str).str.contains(regex).to_numpy(dtype=bool))
        if not len(outside):
            return None
        return np.isin(values.cat.codes.to_numpy(), outside)
    present = _non_null(values)
    matches = values[present].astype(str).str.contains(regex).to_numpy(dtype=bool)
    failing = np.zeros(len(values), dtype=bool)
    failing[np.flatnonzero(present)[~matches]] = True
    return failing


def _greater(frame: pd.DataFrame, kwargs: Mapping[str, Any]) -> np.ndarray | None:
    a, b = frame[kwargs["column_A"]], frame[kwargs["column_B"]]
    both = _non_null(a) & _non_null(b)
    holds = np.asarray(a >= b if kwargs.get("or_equal") else a > b, dtype=bool)
    return both & ~holds


def _compound_unique(frame: pd.DataFrame, kwargs: Mapping[str, Any]) -> np.ndarray | None:
    return np.asarray(frame[list(kwargs["column_list"])].duplicated(keep=False), dtype=bool)


_FINDERS: dict[str, Callable[[pd.DataFrame, Mapping[str, Any]], np.ndarray | None]] = {
    "expect_column_values_to_not_be_null": _not_null,
    "expect_column_values_to_be_null": _null,
    "expect_column_values_to_be_between": _between,
    "expect_column_values_to_be_in_set": _in_set,
    "expect_column_values_to_be_unique": _unique,
    "expect_column_values_to_match_regex": _match_regex,
    "expect_column_pair_values_a_to_be_greater_than_b": _greater,
    "expect_compound_columns_to_be_unique": _compound_unique,
}


@dataclass(frozen=True)
class _Configuration:
    """The two fields of an expectation's configuration its id is built from."""

    type: str
    kwargs: dict[str, Any]


def _condition(suite: str, identifier: str, condition: Any) -> _Condition | None:
    if not condition:
        return None
    if (
        not isinstance(condition, dict)
        or condition.get("type") != "comparison"
        or condition.get("operator") not in _CONDITION_OPERATORS
        or not isinstance(condition.get("column"), dict)
        or set(condition) != {"type", "column", "operator", "parameter"}
    ):
        raise PlanError(f"{suite}: {identifier}: row condition {condition!r} is not supported by the plan")
    parameter = condition["parameter"]
    if isinstance(parameter, dict | list):
        raise PlanError(f"{suite}: {identifier}: row condition parameter {parameter!r} is not a literal")
    return _Condition(condition["column"]["name"], condition["operator"], parameter)


def _check(suite: str, expectation: dict[str, Any]) -> Check:
    kind = expectation["type"]
    kwargs = dict(expectation["kwargs"])
    try:
        identifier = expectation_id(_Configuration(kind, kwargs))
    except (KeyError, TypeError):
        identifier = f"{kind}({', '.join(expectation_columns(kwargs))})"
    if kind not in SUPPORTED:
        raise PlanError(f"{suite}: {identifier}: expectation type {kind} is not supported by the plan")
    condition = _condition(suite, identifier, kwargs.pop("row_condition", None))
    kwargs.pop("condition_parser", None)
    unknown = sorted(set(kwargs) - SUPPORTED[kind])
    if unknown:
        raise PlanError(f"{suite}: {identifier}: kwargs {unknown} are not supported by the plan")
    ignore = kwargs.pop("ignore_row_if", None)
    expected_ignore = {
        "expect_column_pair_values_a_to_be_greater_than_b": "either_value_is_missing",
        "expect_compound_columns_to_be_unique": "never",
    }.get(kind)
    if expected_ignore is not None and ignore != expected_ignore:
        raise PlanError(
            f"{suite}: {identifier}: ignore_row_if {ignore!r} is not supported by the plan "
            f"(only {expected_ignore!r})"
        )
    if kind == "expect_column_values_to_match_regex" and not isinstance(kwargs.get("regex"), str):
        raise PlanError(f"{suite}: {identifier}: regex must be a string")
    columns = tuple(expectation_columns(expectation["kwargs"]))
    notes = expectation.get("notes")
    note = notes if isinstance(notes, str) else " ".join(notes or [])
    return Check(identifier, kind, columns, kwargs, condition, _FINDERS[kind], note)


def compile_suite(document: dict[str, Any]) -> Plan:
    """The plan of one suite document (the JSON of ``suites/<table>.json``); raises :class:`PlanError`."""
    suite = document["name"]
    return Plan(suite, tuple(_check(suite, e) for e in document["expectations"]))


@functools.cache
def table_plan(table_name: str) -> Plan:
    """The compiled plan of one canonical table's suite file, compiled once per process."""
    return compile_suite(json.loads(suite_path(table_name).read_text()))


__all__ = ["Check", "Outcome", "Plan", "PlanError", "compile_suite", "resolve_parameter", "table_plan"]
