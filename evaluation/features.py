"""Features: what the canonical tables say about an SME's operating capability and potential.

:func:`compute_features` turns the canonical tables (``warehouse.canonical``) of many SMEs into one
row per SME with the dossier's :data:`~warehouse.dossier_schema.FEATURE_COLUMNS`. Every formula is
written down in ``evaluation/SCORING.md``; the conventions that all of them share are these.

Time. ``as_of`` is the dossier date and ``as_of_month`` the calendar month it falls in. Monthly data
(books, meter readings, VAT periods) counts only for *complete* months, i.e. months before
``as_of_month``; dated events (VAT due dates, bill due dates, visits) count when they happened
before ``as_of``. "The last N months" are the N calendar months before ``as_of_month`` (month 1 is
the month just before it), plus, for events, the days of ``as_of_month`` before ``as_of``.

History window. Each SME's consent allows ``history_months`` months back: a month counts only if it
is at most ``history_months`` months before ``as_of_month``. Anything older, or at/after ``as_of``,
is ignored as if it were not there.

Missing data. A source without a single row in the window leaves its features null (never an
error) and is absent from ``sources_used``; every feature declares the sources it derives from
(``warehouse.dossier_schema``), and one whose sources are not all in ``sources_used`` is emptied
before it leaves (the consent rule on values); a ratio whose denominator is zero is null, or a
documented cap where the numerator's sign makes the answer clear (see ``CAPS``).

Shape. Everything is computed on dense per-SME arrays: row -> SME position by a hash lookup, sums
by ``numpy.bincount``, months as columns of an ``(n_smes, months)`` block; there is no per-SME
Python loop, so 100,000 SMEs take seconds.

>>> import datetime
>>> smes = pd.DataFrame({"sme_id": ["SME-1"], "history_months": [24]})
>>> compute_features({}, smes, as_of=datetime.date(2026, 1, 1))[["sme_id", "months_of_accounts"]]
  sme_id  months_of_accounts
0  SME-1                   0
"""

from __future__ import annotations

import datetime
from dataclasses import dataclass

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from warehouse.canonical import SOURCES
from warehouse.dossier_schema import FEATURE_COLUMNS, blank_outside_sources

BOOK_MONTHS = 24
"""Months of books held in the dense block: the last 12 and the 12 before them (year on year)."""

USAGE_MONTHS = 18
"""Months of meter readings held: the last 6 and the same 6 a year earlier (months 13-18)."""

VAT_MONTHS = 24
"""VAT returns count when they fell due in the last 24 months."""

BILL_MONTHS = 12
"""Utility bills count when they fell due in the last 12 months."""

MIN_MONTHS_FOR_SHAPE = 3
"""Trend slope and volatility need at least this many booked months in the last 12."""

MIN_PAIRED_MONTHS = 3
"""Year-on-year growth needs at least this many months booked both this year and a year earlier."""

MAX_VAT_PERIOD_MONTHS = 12
"""Longer VAT periods (malformed data) are left out of the VAT-vs-books comparison."""

CAPS = {
    "current_ratio": 10.0,
    "quick_ratio": 10.0,
    "cash_to_monthly_costs": 24.0,
    "debt_to_assets": 5.0,
    "interest_coverage": 50.0,
}
"""Upper caps of the balance-sheet ratios (interest coverage is also floored at minus its cap)."""

_ANY_AGE = np.iinfo(np.int64).max
"""Limit of :func:`_within_history` when only the history window bounds the age."""

_CELL_BITS = 32
"""Bits of a (SME, month) cell taken by the month; SME positions use the bits above."""

REQUIRED_COLUMNS: dict[str, tuple[str, ...]] = {
    "monthly_financials": (
        "sme_id",
        "period_month",
        "currency",
        "revenue",
        "cost_of_sales",
        "operating_expenses",
        "depreciation",
        "interest_expense",
        "tax_expense",
        "net_profit",
        "cash",
        "inventory",
        "current_assets",
        "total_assets",
        "current_liabilities",
        "total_liabilities",
    ),
    "vat_returns": (
        "sme_id",
        "period_start",
        "period_end",
        "due_date",
        "received_date",
        "total_sales_ex_vat",
    ),
    "utility_readings": ("sme_id", "interval_start", "consumption", "unit"),
    "utility_bills": ("sme_id", "due_date", "paid_date"),
    "survey_visits": (
        "sme_id",
        "visited_at",
        "submitted_at",
        "premises_found",
        "business_operating",
        "reported_monthly_revenue",
    ),
}
"""The canonical columns each feature family reads."""


@dataclass(frozen=True)
class _Context:
    """The SMEs being evaluated and the dates that bound what counts."""

    sme_ids: pa.Array
    history_months: np.ndarray
    as_of: np.datetime64
    as_of_month: int

    @property
    def size(self) -> int:
        return len(self.sme_ids)


def _month_number(days: np.ndarray) -> np.ndarray:
    """Months since January 1970 of ``datetime64[D]`` values (0 = 1970-01); garbage where NaT."""
    return days.astype("datetime64[M]").astype(np.int64)


def _as_days(column: pd.Series) -> np.ndarray:
    """Any date-like column (date objects, naive or UTC timestamps, Arrow dates) as ``datetime64[D]``.

    Timestamps are read in UTC, so a reading at 2026-03-31T23:30Z belongs to March. Columns of
    ``datetime.date`` objects (what Arrow ``date32`` becomes in pandas) convert through Arrow,
    which is several times faster than parsing them one by one.
    """
    if column.dtype == object:
        dates = pa.array(column, from_pandas=True)
        if pa.types.is_date32(dates.type) or pa.types.is_null(dates.type):
            return dates.cast(pa.date32()).to_numpy(zero_copy_only=False).astype("datetime64[D]")
    values = pd.to_datetime(column, utc=True, cache=False)
    return values.dt.tz_localize(None).to_numpy(dtype="datetime64[D]")


def _months_ago(ctx: _Context, days: np.ndarray) -> np.ndarray:
    """How many calendar months before ``as_of_month`` each date falls (0 = the as-of month itself).

    NaT gives -1, which no window accepts.
    """
    ago = ctx.as_of_month - _month_number(days)
    return np.where(np.isnat(days), -1, ago)


def _strings(column: pd.Series) -> pa.Array:
    """A string column as one Arrow array (zero-copy for Arrow-backed strings with one chunk)."""
    strings = pa.array(column, type=pa.string())
    return strings.combine_chunks() if isinstance(strings, pa.ChunkedArray) else strings


def _positions(ctx: _Context, frame: pd.DataFrame) -> np.ndarray:
    """Position of each row's SME in ``ctx.sme_ids``; -1 for SMEs not being evaluated."""
    found = pc.index_in(_strings(frame["sme_id"]), value_set=ctx.sme_ids)
    return found.fill_null(-1).to_numpy().astype(np.int64)


def _within_history(ctx: _Context, sme: np.ndarray, months_ago: np.ndarray, limit: int) -> np.ndarray:
    """Rows of known SMEs at most ``limit`` months back and inside each SME's history window."""
    known = sme >= 0
    window = np.where(known, ctx.history_months[np.where(known, sme, 0)], -1)
    return known & (months_ago <= np.minimum(window, limit))


def _table(tables: dict[str, pd.DataFrame], name: str) -> pd.DataFrame | None:
    """The named canonical table, or None when it is absent or empty; raises on missing columns."""
    frame = tables.get(name)
    if frame is None or len(frame) == 0:
        return None
    missing = [c for c in REQUIRED_COLUMNS[name] if c not in frame.columns]
    if missing:
        raise ValueError(f"canonical table {name}: missing columns {missing}")
    return frame


def _float(frame: pd.DataFrame, column: str, rows: np.ndarray) -> np.ndarray:
    return frame[column].to_numpy(dtype=np.float64, na_value=np.nan)[rows]


def _sums(index: np.ndarray, weights: np.ndarray, size: int) -> np.ndarray:
    """``weights`` summed per ``index`` into ``size`` floats (``numpy.bincount`` returns integers when
    there is nothing to sum; this never does).

    >>> _sums(np.array([], dtype=np.int64), np.array([]), 2).dtype
    dtype('float64')
    """
    return np.bincount(index, weights=weights, minlength=size).astype(np.float64, copy=False)


def _ratio(numerator: np.ndarray, denominator: np.ndarray) -> np.ndarray:
    """numerator / denominator where the denominator is positive, else NaN."""
    positive = denominator > 0
    return np.divide(numerator, denominator, out=np.full(len(numerator), np.nan), where=positive)


def _capped_ratio(numerator: np.ndarray, denominator: np.ndarray, cap: float) -> np.ndarray:
    """numerator / denominator capped at ``cap``; a non-positive denominator gives ``cap`` when the
    numerator is positive (nothing to cover, something to cover it with) and NaN otherwise."""
    ratio = np.minimum(_ratio(numerator, denominator), cap)
    return np.where((denominator <= 0) & (numerator > 0), cap, ratio)


def _month_cells(sme: np.ndarray, months_ago: np.ndarray) -> np.ndarray:
    """One integer per (SME, month): equal exactly when both are equal."""
    return (sme << _CELL_BITS) | months_ago


def _duplicates_error(ctx: _Context, table: str, cells: np.ndarray) -> ValueError:
    """A clear error naming the SMEs and months that appear twice in a table keyed by month."""
    values, counts = np.unique(cells, return_counts=True)
    repeated = values[counts > 1][:5]
    examples = [
        f"{ctx.sme_ids[int(v >> _CELL_BITS)].as_py()} "
        f"{np.datetime64(ctx.as_of_month - int(v & ((1 << _CELL_BITS) - 1)), 'M')}"
        for v in repeated
    ]
    return ValueError(
        f"canonical table {table}: {int((counts > 1).sum())} (sme_id, period_month) keys appear more "
        f"than once, e.g. {', '.join(examples)}; the table's key must be unique"
    )


@dataclass(frozen=True)
class _Books:
    """The last 24 months of books of every SME as dense ``(n_smes, 24)`` blocks.

    Column ``j`` is the month ``j + 1`` months before the as-of month; ``booked`` says whether the
    month is in the books (and inside the history window), ``revenue`` is 0 where it is not.
    """

    booked: np.ndarray
    revenue: np.ndarray
    months_in_window: np.ndarray
    last12: dict[str, np.ndarray]
    latest: dict[str, np.ndarray]
    currency: np.ndarray


def _books(ctx: _Context, frame: pd.DataFrame | None) -> _Books:
    """Lay the booked months in the history window out per SME; raises on a repeated month."""
    n = ctx.size
    booked = np.zeros((n, BOOK_MONTHS), dtype=bool)
    revenue = np.zeros((n, BOOK_MONTHS))
    months_in_window = np.zeros(n, dtype=np.int64)
    flows = ("revenue", "cost_of_sales", "operating_expenses", "depreciation", "interest_expense")
    last12 = {name: np.zeros(n) for name in (*flows, "tax_expense", "net_profit")}
    stocks = ("cash", "inventory", "current_assets", "total_assets", "current_liabilities")
    latest = {name: np.full(n, np.nan) for name in (*stocks, "total_liabilities")}
    currency = np.full(n, None, dtype=object)
    if frame is None:
        return _Books(booked, revenue, months_in_window, last12, latest, currency)

    sme = _positions(ctx, frame)
    ago = _months_ago(ctx, _as_days(frame["period_month"]))
    rows = np.flatnonzero(_within_history(ctx, sme, ago, _ANY_AGE) & (ago >= 1))
    sme, ago = sme[rows], ago[rows]
    cells = np.sort(_month_cells(sme, ago))
    if (cells[1:] == cells[:-1]).any():
        raise _duplicates_error(ctx, "monthly_financials", cells)
    months_in_window = np.bincount(sme, minlength=n)

    recent = ago <= BOOK_MONTHS
    cell = sme[recent] * BOOK_MONTHS + ago[recent] - 1
    booked.reshape(-1)[cell] = True
    revenue.reshape(-1)[cell] = _float(frame, "revenue", rows[recent])

    in12 = ago <= 12
    for name in last12:
        last12[name] = _sums(sme[in12], _float(frame, name, rows[in12]), n)

    latest_ago = np.full(n, _ANY_AGE)
    np.minimum.at(latest_ago, sme, ago)
    is_latest = ago == latest_ago[sme]
    currency[sme[is_latest]] = frame["currency"].to_numpy(dtype=object)[rows[is_latest]]
    balance_rows = is_latest & in12
    for name in latest:
        latest[name][sme[balance_rows]] = _float(frame, name, rows[balance_rows])
    return _Books(booked, revenue, months_in_window, last12, latest, currency)


def _paired_growth(
    revenue: np.ndarray, booked: np.ndarray, months: int, extra: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Growth of the last ``months`` months over the same months a year earlier, minus 1.

    Only months booked in both years count (and, if ``extra`` is given, where it is True); returns
    the growth and the number of such month pairs.
    """
    paired = booked[:, :months] & booked[:, 12 : 12 + months]
    if extra is not None:
        paired &= extra
    this_year = (revenue[:, :months] * paired).sum(axis=1)
    year_before = (revenue[:, 12 : 12 + months] * paired).sum(axis=1)
    return _ratio(this_year, year_before) - 1.0, paired.sum(axis=1)


def _book_features(books: _Books) -> dict[str, np.ndarray]:
    """Revenue level, trend, volatility, margins, liquidity and leverage (formulas in SCORING.md)."""
    booked12 = books.booked[:, :12]
    months12 = booked12.sum(axis=1)
    revenue = books.revenue[:, :12]
    flow = books.last12
    revenue_12m = np.where(months12 > 0, flow["revenue"], np.nan)
    mean_revenue = _ratio(flow["revenue"], months12.astype(np.float64))

    growth, pairs = _paired_growth(books.revenue, books.booked, 12)
    growth = np.where(pairs >= MIN_PAIRED_MONTHS, growth, np.nan)

    shaped = months12 >= MIN_MONTHS_FOR_SHAPE
    deviation = np.where(booked12, revenue - mean_revenue[:, None], 0.0)
    volatility = _ratio(np.sqrt(_ratio((deviation**2).sum(axis=1), months12 * 1.0)), mean_revenue)
    time = -np.arange(1, 13, dtype=np.float64)[None, :]
    mean_time = _ratio((time * booked12).sum(axis=1), months12.astype(np.float64))
    time_deviation = np.where(booked12, time - mean_time[:, None], 0.0)
    slope = _ratio((time_deviation * deviation).sum(axis=1), (time_deviation**2).sum(axis=1))

    operating_profit = (
        flow["revenue"] - flow["cost_of_sales"] - flow["operating_expenses"] - flow["depreciation"]
    )
    cash_costs = (
        flow["cost_of_sales"] + flow["operating_expenses"] + flow["interest_expense"] + flow["tax_expense"]
    )
    monthly_cash_costs = _ratio(cash_costs, months12 * 1.0)
    stock = books.latest
    coverage = np.clip(
        _capped_ratio(operating_profit, flow["interest_expense"], CAPS["interest_coverage"]),
        -CAPS["interest_coverage"],
        None,
    )
    return {
        "months_of_accounts": books.months_in_window,
        "revenue_12m": revenue_12m,
        "revenue_growth_yoy": growth,
        "revenue_trend_slope": np.where(shaped, _ratio(slope, mean_revenue), np.nan),
        "revenue_volatility": np.where(shaped, volatility, np.nan),
        "gross_margin": _ratio(flow["revenue"] - flow["cost_of_sales"], flow["revenue"]),
        "operating_margin": _ratio(operating_profit, flow["revenue"]),
        "net_margin": _ratio(flow["net_profit"], flow["revenue"]),
        "current_ratio": _capped_ratio(
            stock["current_assets"], stock["current_liabilities"], CAPS["current_ratio"]
        ),
        "quick_ratio": _capped_ratio(
            stock["current_assets"] - stock["inventory"], stock["current_liabilities"], CAPS["quick_ratio"]
        ),
        "cash_to_monthly_costs": _capped_ratio(
            stock["cash"], monthly_cash_costs, CAPS["cash_to_monthly_costs"]
        ),
        "debt_to_assets": _capped_ratio(
            stock["total_liabilities"], stock["total_assets"], CAPS["debt_to_assets"]
        ),
        "interest_coverage": np.where(months12 > 0, coverage, np.nan),
        "ebitda_12m": np.where(
            months12 > 0, flow["revenue"] - flow["cost_of_sales"] - flow["operating_expenses"], np.nan
        ),
    }


def _vat_features(ctx: _Context, frame: pd.DataFrame | None, books: _Books) -> dict[str, np.ndarray]:
    """VAT filing timeliness and sales declared to the tax authority against revenue in the books."""
    n = ctx.size
    if frame is None:
        nothing = np.full(n, np.nan)
        return {"tax": np.zeros(n, dtype=bool), "due": nothing, "on_time": nothing, "books": nothing}
    sme = _positions(ctx, frame)
    due = _as_days(frame["due_date"])
    received = _as_days(frame["received_date"])
    due_ago = _months_ago(ctx, due)
    known = _within_history(ctx, sme, due_ago, _ANY_AGE) & (due < ctx.as_of)
    present = np.bincount(sme[known], minlength=n) > 0

    counted = known & (due_ago <= VAT_MONTHS)
    on_time = counted & (received <= due)
    returns_due = np.bincount(sme[counted], minlength=n)
    on_time_rate = _ratio(np.bincount(sme[on_time], minlength=n).astype(np.float64), returns_due * 1.0)

    start_ago = _months_ago(ctx, _as_days(frame["period_start"]))
    end_ago = _months_ago(ctx, _as_days(frame["period_end"]))
    sales = frame["total_sales_ex_vat"].to_numpy(dtype=np.float64, na_value=np.nan)
    filed = (
        _within_history(ctx, sme, start_ago, VAT_MONTHS)
        & (end_ago >= 1)
        & (start_ago >= end_ago)
        & (start_ago - end_ago < MAX_VAT_PERIOD_MONTHS)
        & (received < ctx.as_of)
        & ~np.isnan(sales)
    )
    rows = np.flatnonzero(filed)
    # A return counted below is tax data this dossier uses, even one filed before it fell due.
    present |= np.bincount(sme[rows], minlength=n) > 0
    booked_so_far = np.concatenate([np.zeros((n, 1), dtype=np.int64), books.booked.cumsum(axis=1)], axis=1)
    revenue_so_far = np.concatenate([np.zeros((n, 1)), books.revenue.cumsum(axis=1)], axis=1)
    who, first, last = sme[rows], end_ago[rows], start_ago[rows]
    months_booked = booked_so_far[who, last] - booked_so_far[who, first - 1]
    period_revenue = revenue_so_far[who, last] - revenue_so_far[who, first - 1]
    fully_booked = months_booked == last - first + 1
    vat_sales = _sums(who[fully_booked], sales[rows][fully_booked], n)
    book_revenue = _sums(who[fully_booked], period_revenue[fully_booked], n)
    return {
        "tax": present,
        "due": np.where(present, returns_due, np.nan),
        "on_time": on_time_rate,
        "books": _ratio(vat_sales, book_revenue),
    }


def _utility_features(
    ctx: _Context, readings: pd.DataFrame | None, bills: pd.DataFrame | None, books: _Books
) -> dict[str, np.ndarray]:
    """Bill punctuality, metered usage trend and usage growth against revenue growth."""
    n = ctx.size
    present = np.zeros(n, dtype=bool)
    bills_due = np.zeros(n, dtype=np.int64)
    paid_on_time = np.zeros(n, dtype=np.int64)
    usage_trend = np.full(n, np.nan)
    books_ratio = np.full(n, np.nan)

    if bills is not None:
        sme = _positions(ctx, bills)
        due = _as_days(bills["due_date"])
        due_ago = _months_ago(ctx, due)
        known = _within_history(ctx, sme, due_ago, _ANY_AGE) & (due < ctx.as_of)
        present |= np.bincount(sme[known], minlength=n) > 0
        counted = known & (due_ago <= BILL_MONTHS)
        bills_due = np.bincount(sme[counted], minlength=n)
        paid_on_time = np.bincount(sme[counted & (_as_days(bills["paid_date"]) <= due)], minlength=n)

    if readings is not None:
        sme = _positions(ctx, readings)
        ago = _months_ago(ctx, _as_days(readings["interval_start"]))
        known = _within_history(ctx, sme, ago, _ANY_AGE) & (ago >= 1)
        present |= np.bincount(sme[known], minlength=n) > 0
        rows = np.flatnonzero(known & (ago <= USAGE_MONTHS))
        units = pc.dictionary_encode(_strings(readings["unit"]).take(pa.array(rows)))
        unit = units.indices.fill_null(0).to_numpy().astype(np.int64)
        unit_count = max(len(units.dictionary), 1)
        cell = (sme[rows] * unit_count + unit) * USAGE_MONTHS + ago[rows] - 1
        size = n * unit_count * USAGE_MONTHS
        shape = (n, unit_count, USAGE_MONTHS)
        consumption = readings["consumption"].to_numpy(dtype=np.float64, na_value=0.0)[rows]
        usage = _sums(cell, consumption, size).reshape(shape)
        metered = (np.bincount(cell, minlength=size) > 0).reshape(shape)
        paired = metered[:, :, :6] & metered[:, :, 12:18]
        this_year = (usage[:, :, :6] * paired).sum(axis=2)
        year_before = (usage[:, :, 12:18] * paired).sum(axis=2)
        has_ratio = year_before > 0
        ratio_by_unit = np.divide(this_year, year_before, out=np.zeros_like(this_year), where=has_ratio)
        usage_trend = _ratio(ratio_by_unit.sum(axis=1), has_ratio.sum(axis=1) * 1.0) - 1.0
        revenue_growth, pairs = _paired_growth(books.revenue, books.booked, 6, paired.any(axis=1))
        books_ratio = np.where(pairs > 0, _ratio(1.0 + usage_trend, 1.0 + revenue_growth), np.nan)

    return {
        "utility": present,
        "due": np.where(present, bills_due, np.nan),
        "on_time": _ratio(paid_on_time * 1.0, bills_due * 1.0),
        "usage_trend": usage_trend,
        "books": books_ratio,
    }


def _suspended(frame: pd.DataFrame) -> np.ndarray:
    """Per visit: its agent is suspended (``agent_suspended`` column; all False without it)."""
    if "agent_suspended" not in frame.columns:
        return np.zeros(len(frame), dtype=bool)
    return frame["agent_suspended"].to_numpy(dtype=bool, na_value=False)


def _survey_features(ctx: _Context, frame: pd.DataFrame | None, books: _Books) -> dict[str, np.ndarray]:
    """Field-visit verification and the revenue the owner stated against the books.

    Only ``survey_visits`` is read: the submissions of forms with a mapping onto the visit fields.
    An *unmapped* survey (a form without a mapping, kept in ``survey_submissions`` only) has no
    visit to verify, so it contributes no visit verification: its SME's survey features stay null.
    A visit marked ``agent_suspended`` (an optional column: its agent was suspended for collusion,
    see ``warehouse.agents``) still counts as a visit but verifies nothing: it is never verified
    and its stated revenue is left out of the comparison with the books.
    """
    n = ctx.size
    if frame is None:
        nothing = np.full(n, np.nan)
        return {"survey": np.zeros(n, dtype=bool), "visits": nothing, "verified": nothing, "books": nothing}
    sme = _positions(ctx, frame)
    visited = _as_days(frame["visited_at"])
    submitted = pd.to_datetime(frame["submitted_at"], utc=True, cache=False).dt.tz_localize(None).to_numpy()
    as_of_instant = ctx.as_of.astype("datetime64[ns]")
    seen = _within_history(ctx, sme, _months_ago(ctx, visited), _ANY_AGE)
    seen &= (visited < ctx.as_of) & (submitted < as_of_instant)
    found = frame["premises_found"].to_numpy(dtype=bool, na_value=False)
    trusted = ~_suspended(frame)
    verified = seen & trusted & found & frame["business_operating"].to_numpy(dtype=bool, na_value=False)
    stated = frame["reported_monthly_revenue"].to_numpy(dtype=np.float64, na_value=np.nan)
    with_revenue = seen & trusted & ~np.isnan(stated)
    visits = np.bincount(sme[seen], minlength=n)
    stated_mean = _ratio(
        _sums(sme[with_revenue], stated[with_revenue], n),
        np.bincount(sme[with_revenue], minlength=n) * 1.0,
    )
    booked12 = books.booked[:, :12].sum(axis=1)
    book_mean = _ratio(books.revenue[:, :12].sum(axis=1), booked12 * 1.0)
    return {
        "survey": visits > 0,
        "visits": np.where(visits > 0, visits, np.nan),
        "verified": _ratio(np.bincount(sme[verified], minlength=n) * 1.0, visits * 1.0),
        "books": _ratio(stated_mean, book_mean),
    }


def _context(smes: pd.DataFrame, as_of: datetime.date) -> _Context:
    """Validate the SME frame and fix the dates; raises naming the SMEs at fault."""
    missing = [c for c in ("sme_id", "history_months") if c not in smes.columns]
    if missing:
        raise ValueError(f"smes: missing columns {missing}")
    duplicated = smes["sme_id"][smes["sme_id"].duplicated()]
    if len(duplicated):
        raise ValueError(f"smes: sme_id repeated: {sorted(set(duplicated))[:5]}")
    history = pd.to_numeric(smes["history_months"], errors="coerce")
    invalid = smes["sme_id"][history.isna() | (history < 0)]
    if len(invalid):
        raise ValueError(f"smes: history_months missing or negative for {list(invalid[:5])}")
    as_of_day = np.datetime64(as_of, "D")
    return _Context(
        sme_ids=_strings(smes["sme_id"]),
        history_months=history.to_numpy(dtype=np.int64),
        as_of=as_of_day,
        as_of_month=int(_month_number(np.array([as_of_day]))[0]),
    )


def _list_column(flags: np.ndarray, labels: tuple[str, ...]) -> pd.Series:
    """Row i lists the labels whose flag is set in ``flags[i]``, in label order (Arrow list column)."""
    offsets = np.concatenate([[0], flags.sum(axis=1).cumsum()]).astype(np.int32)
    values = np.broadcast_to(np.array(labels, dtype=object), flags.shape)[flags]
    lists = pa.ListArray.from_arrays(pa.array(offsets), pa.array(values, type=pa.string()))
    return pd.Series(pd.arrays.ArrowExtensionArray(lists))


def compute_features(
    tables: dict[str, pd.DataFrame], smes: pd.DataFrame, *, as_of: datetime.date
) -> pd.DataFrame:
    """One row per SME of ``smes`` (same order): sme_id, sources_used and every FEATURE_COLUMN.

    ``tables`` maps canonical table names to frames (absent or empty tables mean that source gave
    nothing); ``smes`` has ``sme_id`` and ``history_months``. Rows of other SMEs are ignored. Raises
    ``ValueError`` naming the table or SMEs when a required column is missing, a monthly key repeats
    or a history window is missing.
    """
    ctx = _context(smes, as_of)
    books = _books(ctx, _table(tables, "monthly_financials"))
    book = _book_features(books)
    vat = _vat_features(ctx, _table(tables, "vat_returns"), books)
    utility = _utility_features(
        ctx, _table(tables, "utility_readings"), _table(tables, "utility_bills"), books
    )
    survey = _survey_features(ctx, _table(tables, "survey_visits"), books)

    used = np.column_stack([book["months_of_accounts"] > 0, vat["tax"], utility["utility"], survey["survey"]])
    values = {
        **book,
        "currency": books.currency,
        "vat_returns_due": vat["due"],
        "vat_on_time_rate": vat["on_time"],
        "vat_books_revenue_ratio": vat["books"],
        "utility_bills_due": utility["due"],
        "utility_on_time_rate": utility["on_time"],
        "utility_usage_trend": utility["usage_trend"],
        "utility_books_revenue_ratio": utility["books"],
        "survey_visits": survey["visits"],
        "survey_verified_rate": survey["verified"],
        "survey_revenue_ratio": survey["books"],
    }
    result = pd.DataFrame(
        {
            "sme_id": pd.array(ctx.sme_ids.to_pylist(), dtype="str"),
            "sources_used": _list_column(used, SOURCES),
            **{c.name: _typed(values[c.name], c.type, c.nullable) for c in FEATURE_COLUMNS},
        }
    )
    return blank_outside_sources(result)


def _typed(
    values: np.ndarray, arrow_type: pa.DataType, nullable: bool
) -> np.ndarray | pd.api.extensions.ExtensionArray:
    """A feature array in the pandas dtype matching its dossier column (nullable ints as ``Int32``)."""
    if pa.types.is_string(arrow_type):
        return pd.array(values, dtype="str")
    if pa.types.is_integer(arrow_type):
        return pd.array(values, dtype="Int32") if nullable else values.astype(np.int32)
    return values.astype(np.float64)
