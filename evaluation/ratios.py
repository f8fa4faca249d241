"""Statement ratios: the statement model's ``attrN`` ratios computed from our monthly books.

:func:`statement_ratios` reads canonical ``monthly_financials`` and returns, per SME, every ratio of
:data:`evaluation.statement_model.RATIOS` with the training data's definition
(``polish_bankruptcy_attributes.csv``). ``evaluation/RATIOS.md`` writes the mapping down ratio by
ratio; the conventions are these.

A year of flows. The training statements are annual, so flows are summed over the booked months of
the last 12 complete months (months 1-12, inside the consent's history window) and, when fewer than
12 are booked, scaled by ``12 / booked``; with fewer than :data:`MIN_BOOKED_MONTHS` booked months a
year's flows are unknown and every ratio that needs them is missing. The year before is months
13-24 and the one before that months 25-36, each under the same rule.

Balances are those of the latest booked month among months 1-12.

Our items for theirs, read off the training file itself where it departs from the written
definitions (``evaluation/RATIOS.md`` shows the checks): ``sales`` = revenue; ``cost of products
sold`` = ``operating expenses`` (their total operating costs; the file's gross margin has a median
of 5%, so their cost of products sold is nearly all costs) = cost_of_sales + operating_expenses +
depreciation; ``financial expenses`` = ``interest`` = interest_expense; ``gross profit`` =
``EBIT`` = net_profit + tax_expense + interest_expense (in the file ``attr7`` = ``attr14`` =
``attr18`` in every row); ``profit on operating activities`` = ``profit on sales`` = revenue -
operating costs (our books have no other operating items); ``total costs`` = operating costs +
interest_expense; ``fixed assets`` = total_assets - current_assets; ``long-term liabilities`` =
total_liabilities - current_liabilities; ``short-term liabilities`` = current_liabilities;
``working capital`` = current_assets - current_liabilities; ``constant capital`` = equity +
long-term liabilities. ``attr52`` is short-term liabilities / cost of products sold, without the
``* 365`` its definition shows: in the file it is ``attr32 / 365`` in 95% of the rows.

Division. ``x / y`` is missing when ``y`` is 0 or either side is unknown: a missing ratio is left
missing for the model, which handles it as it learned to in training, never replaced by a constant.

>>> import datetime
>>> smes = pd.DataFrame({"sme_id": ["SME-1"], "history_months": [24]})
>>> statement_ratios(None, smes, as_of=datetime.date(2026, 1, 1))["attr1"].isna().all()
np.True_
"""

from __future__ import annotations

import datetime

import numpy as np
import pandas as pd

from evaluation.features import (
    _as_days,
    _context,
    _duplicates_error,
    _month_cells,
    _months_ago,
    _positions,
    _within_history,
)
from evaluation.statement_model import RATIOS

MIN_BOOKED_MONTHS = 6
"""A year's flows need at least this many booked months of its 12 (then they are scaled to 12)."""

YEARS = 3
"""Years of flows read: the last 12 months and the two years before (for ``attr21`` and ``attr24``)."""

FLOWS = (
    "revenue",
    "cost_of_sales",
    "operating_expenses",
    "depreciation",
    "interest_expense",
    "tax_expense",
    "net_profit",
)
BALANCES = (
    "cash",
    "receivables",
    "inventory",
    "current_assets",
    "total_assets",
    "current_liabilities",
    "total_liabilities",
    "equity",
)
REQUIRED_COLUMNS = ("sme_id", "period_month", *FLOWS, *BALANCES)
"""The ``monthly_financials`` columns the ratios read."""


def _div(numerator: np.ndarray, denominator: np.ndarray) -> np.ndarray:
    """numerator / denominator, missing where the denominator is 0 or either side is missing."""
    usable = (denominator != 0) & ~np.isnan(denominator) & ~np.isnan(numerator)
    return np.divide(numerator, denominator, out=np.full(len(numerator), np.nan), where=usable)


def _annual_flows(sme: np.ndarray, ago: np.ndarray, frame: pd.DataFrame, rows: np.ndarray, n: int) -> list:
    """Per year back (0 = last 12 months): each flow summed and scaled to 12 months, NaN if too few."""
    years = []
    for year in range(YEARS):
        chosen = (ago > 12 * year) & (ago <= 12 * (year + 1))
        booked = np.bincount(sme[chosen], minlength=n)
        scale = np.where(booked >= MIN_BOOKED_MONTHS, 12.0 / np.maximum(booked, 1), np.nan)
        sums = {}
        for name in FLOWS:
            values = frame[name].to_numpy(dtype=np.float64, na_value=np.nan)[rows[chosen]]
            total = np.bincount(sme[chosen], weights=np.nan_to_num(values), minlength=n)
            unknown = np.bincount(sme[chosen], weights=np.isnan(values), minlength=n) > 0
            sums[name] = np.where(unknown, np.nan, total * scale)
        years.append(sums)
    return years


def _latest_balances(
    sme: np.ndarray, ago: np.ndarray, frame: pd.DataFrame, rows: np.ndarray, n: int
) -> dict[str, np.ndarray]:
    """Each balance at the latest booked month among months 1-12 (NaN without one)."""
    in12 = ago <= 12
    latest = np.full(n, np.iinfo(np.int64).max)
    np.minimum.at(latest, sme[in12], ago[in12])
    chosen = in12 & (ago == latest[sme])
    balances = {}
    for name in BALANCES:
        values = np.full(n, np.nan)
        values[sme[chosen]] = frame[name].to_numpy(dtype=np.float64, na_value=np.nan)[rows[chosen]]
        balances[name] = values
    return balances


def ratios_from_items(year: dict[str, np.ndarray], b: dict[str, np.ndarray], **history: np.ndarray) -> dict:
    """The model's ratios from one year of flows, the balances and (``sales_prev``, ``gross_profit_3y``)
    the years before; every formula is the training data's definition in our items."""
    sales, dep, interest = year["revenue"], year["depreciation"], year["interest_expense"]
    net = year["net_profit"]
    operating_costs = year["cost_of_sales"] + year["operating_expenses"] + dep
    cogs = operating_costs
    operating_profit = sales - operating_costs
    gross = ebit = net + year["tax_expense"] + interest
    total_costs = operating_costs + interest
    ta, tl, ca, stl = b["total_assets"], b["total_liabilities"], b["current_assets"], b["current_liabilities"]
    inventory, receivables, cash, equity = b["inventory"], b["receivables"], b["cash"], b["equity"]
    fixed = ta - ca
    long_term = tl - stl
    working = ca - stl
    constant = equity + long_term
    return {
        "attr1": _div(net, ta),
        "attr2": _div(tl, ta),
        "attr3": _div(working, ta),
        "attr4": _div(ca, stl),
        "attr7": _div(ebit, ta),
        "attr8": _div(equity, tl),
        "attr10": _div(equity, ta),
        "attr12": _div(gross, stl),
        "attr13": _div(gross + dep, sales),
        "attr14": _div(ebit, ta),
        "attr16": _div(gross + dep, tl),
        "attr17": _div(ta, tl),
        "attr18": _div(gross, ta),
        "attr19": _div(gross, sales),
        "attr21": _div(sales, history["sales_prev"]),
        "attr22": _div(operating_profit, ta),
        "attr23": _div(net, sales),
        "attr24": _div(history["gross_profit_3y"], ta),
        "attr26": _div(net + dep, tl),
        "attr27": _div(operating_profit, interest),
        "attr28": _div(working, fixed),
        "attr30": _div(tl - cash, sales),
        "attr31": _div(gross + interest, sales),
        "attr32": _div(stl * 365, cogs),
        "attr33": _div(operating_costs, stl),
        "attr35": _div(operating_profit, ta),
        "attr37": _div(ca - inventory, long_term),
        "attr38": _div(constant, ta),
        "attr39": _div(operating_profit, sales),
        "attr40": _div(ca - inventory - receivables, stl),
        "attr42": _div(operating_profit, sales),
        "attr45": _div(net, inventory),
        "attr46": _div(ca - inventory, stl),
        "attr48": _div(operating_profit - dep, ta),
        "attr49": _div(operating_profit - dep, sales),
        "attr50": _div(ca, tl),
        "attr51": _div(stl, ta),
        "attr52": _div(stl, cogs),
        "attr53": _div(equity, fixed),
        "attr54": _div(constant, fixed),
        "attr56": _div(sales - cogs, sales),
        "attr57": _div(ca - inventory - stl, sales - gross - dep),
        "attr58": _div(total_costs, sales),
        "attr62": _div(stl * 365, sales),
        "attr63": _div(sales, stl),
    }


def statement_ratios(
    monthly_financials: pd.DataFrame | None, smes: pd.DataFrame, *, as_of: datetime.date
) -> pd.DataFrame:
    """One row per SME of ``smes`` (same order): ``sme_id`` and every ratio of ``RATIOS``.

    ``smes`` has ``sme_id`` and ``history_months``; ``monthly_financials`` may be None or empty (all
    ratios missing). Raises ``ValueError`` naming the table when a column is missing or a
    ``(sme_id, period_month)`` key repeats.
    """
    ctx = _context(smes, as_of)
    n = ctx.size
    if monthly_financials is None or len(monthly_financials) == 0:
        frame = pd.DataFrame({c: pd.Series(dtype=np.float64) for c in REQUIRED_COLUMNS})
        frame["sme_id"] = frame["sme_id"].astype("str")
        frame["period_month"] = pd.Series(dtype="datetime64[ns]")
    else:
        frame = monthly_financials
        missing = [c for c in REQUIRED_COLUMNS if c not in frame.columns]
        if missing:
            raise ValueError(f"canonical table monthly_financials: missing columns {missing}")
    sme = _positions(ctx, frame)
    ago = _months_ago(ctx, _as_days(frame["period_month"]))
    rows = np.flatnonzero(_within_history(ctx, sme, ago, 12 * YEARS) & (ago >= 1))
    sme, ago = sme[rows], ago[rows]
    cells = np.sort(_month_cells(sme, ago))
    if (cells[1:] == cells[:-1]).any():
        raise _duplicates_error(ctx, "monthly_financials", cells)
    years = _annual_flows(sme, ago, frame, rows, n)
    balances = _latest_balances(sme, ago, frame, rows, n)
    gross = [y["net_profit"] + y["tax_expense"] + y["interest_expense"] for y in years]
    values = ratios_from_items(
        years[0], balances, sales_prev=years[1]["revenue"], gross_profit_3y=gross[0] + gross[1] + gross[2]
    )
    return pd.DataFrame(
        {"sme_id": pd.array(ctx.sme_ids.to_pylist(), dtype="str"), **{r.attr: values[r.attr] for r in RATIOS}}
    )


__all__ = ["MIN_BOOKED_MONTHS", "REQUIRED_COLUMNS", "ratios_from_items", "statement_ratios"]
