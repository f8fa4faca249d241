"""Measure :func:`evaluation.evaluate` on a large synthetic universe (time and peak memory).

``python -m bench.evaluation_scale --smes 100000`` builds canonical tables for that many SMEs (36
months of books, quarterly VAT returns, one or two monthly meters with bills, three visits each;
for 100,000 SMEs: 3.6M monthly rows, 1.2M VAT returns, about 5M readings and bills, 300k visits),
then times feature computation and scoring and prints one JSON line. The numbers are a measurement,
not a test: nothing here asserts a duration.

The tables are random but shaped like the canonical ones (same columns and dtypes), built with
whole-array numpy operations so that generating them takes little of the time being measured.
"""

from __future__ import annotations

import argparse
import datetime
import json
import time

import numpy as np
import pandas as pd

from evaluation import evaluate
from evaluation.features import compute_features

MONTHS = 36
VISITS = 3


def _month_starts(as_of: datetime.date, months: int) -> np.ndarray:
    """First days of the ``months`` months before ``as_of``'s month, oldest first (datetime64[D])."""
    current = np.datetime64(as_of, "M")
    return (current - np.arange(months, 0, -1)).astype("datetime64[D]")


def synthetic_tables(
    size: int, as_of: datetime.date, seed: int = 0
) -> tuple[dict[str, pd.DataFrame], pd.DataFrame]:
    """Canonical tables and an SME frame for ``size`` random SMEs (for measuring, not for truth)."""
    rng = np.random.default_rng(seed)
    ids = np.array([f"SME-{i:07d}" for i in range(size)], dtype=object)
    smes = pd.DataFrame({"sme_id": pd.array(ids, dtype="str"), "history_months": np.full(size, 36)})
    months = _month_starts(as_of, MONTHS)

    sme = np.repeat(np.arange(size), MONTHS)
    level = rng.lognormal(10, 1, size)[sme]
    revenue = np.round(level * rng.normal(1, 0.15, len(sme)).clip(0.1), 2)
    costs = revenue * rng.uniform(0.4, 0.9, len(sme))
    assets = level * rng.uniform(2, 6, len(sme))

    def money(scale: np.ndarray) -> np.ndarray:
        return np.round(scale * rng.uniform(0.5, 1.5, len(sme)), 2)

    books = pd.DataFrame(
        {
            "sme_id": pd.array(ids[sme], dtype="str"),
            "period_month": pd.Series(np.tile(months, size)).dt.date,
            "currency": pd.array(np.full(len(sme), "GBP", dtype=object), dtype="str"),
            "revenue": revenue,
            "cost_of_sales": np.round(costs * 0.6, 2),
            "operating_expenses": np.round(costs * 0.4, 2),
            "depreciation": money(level * 0.02),
            "interest_expense": money(level * 0.01),
            "tax_expense": money(level * 0.02),
            "net_profit": np.round(revenue - costs - level * 0.05, 2),
            "cash": money(level),
            "receivables": money(level * 0.5),
            "inventory": money(level * 0.4),
            "current_assets": np.round(assets * 0.5, 2),
            "total_assets": np.round(assets, 2),
            "current_liabilities": money(assets * 0.3),
            "total_liabilities": money(assets * 0.6),
            "equity": money(assets * 0.4),
        }
    )

    quarters = MONTHS // 3
    vat_sme = np.repeat(np.arange(size), quarters)
    start = np.tile(months[::3], size)
    end = (start.astype("datetime64[M]") + 3).astype("datetime64[D]") - 1
    due = (end.astype("datetime64[M]") + 2).astype("datetime64[D]") + 6
    received = due - rng.integers(-10, 30, len(vat_sme)).astype("timedelta64[D]")
    sales = level[::MONTHS][vat_sme] * 3 * rng.normal(1, 0.1, len(vat_sme))
    vat = pd.DataFrame(
        {
            "sme_id": pd.array(ids[vat_sme], dtype="str"),
            "period_key": pd.array(np.full(len(vat_sme), "24A1", dtype=object), dtype="str"),
            "period_start": pd.Series(start).dt.date,
            "period_end": pd.Series(end).dt.date,
            "due_date": pd.Series(due).dt.date,
            "status": pd.array(np.full(len(vat_sme), "F", dtype=object), dtype="str"),
            "received_date": pd.Series(received).dt.date,
            "total_sales_ex_vat": np.round(sales, 2),
        }
    )

    meters = rng.integers(1, 3, size)
    meter_sme = np.repeat(np.arange(size), meters)
    point = np.arange(len(meter_sme))
    reading_point = np.repeat(point, MONTHS)
    reading_sme = meter_sme[reading_point]
    interval = pd.to_datetime(np.tile(months, len(point))).tz_localize("UTC")
    readings = pd.DataFrame(
        {
            "sme_id": pd.array(ids[reading_sme], dtype="str"),
            "usage_point_id": pd.array(np.char.add("UP-", reading_point.astype(str)), dtype="str"),
            "interval_start": interval,
            "consumption": rng.gamma(4, 300, len(reading_point)),
            "unit": pd.array(np.where(reading_point % 2 == 0, "kWh", "therm").astype(object), dtype="str"),
        }
    )
    bill_due = np.tile(months, len(point)) + 20
    paid = bill_due + rng.integers(-15, 10, len(reading_point)).astype("timedelta64[D]")
    bills = pd.DataFrame(
        {
            "sme_id": readings["sme_id"],
            "usage_point_id": readings["usage_point_id"],
            "due_date": pd.Series(bill_due).dt.date,
            "paid_date": pd.Series(paid).dt.date,
        }
    )

    visit_sme = np.repeat(np.arange(size), VISITS)
    visited = pd.to_datetime(
        np.datetime64(as_of, "s")
        - rng.integers(86_400, 900 * 86_400, len(visit_sme)).astype("timedelta64[s]")
    ).tz_localize("UTC")
    visits = pd.DataFrame(
        {
            "sme_id": pd.array(ids[visit_sme], dtype="str"),
            "visited_at": visited,
            "submitted_at": visited + pd.Timedelta(hours=1),
            "premises_found": rng.random(len(visit_sme)) < 0.95,
            "business_operating": rng.random(len(visit_sme)) < 0.9,
            "reported_monthly_revenue": np.round(
                level[::MONTHS][visit_sme] * rng.normal(1, 0.2, len(visit_sme)), 2
            ),
        }
    )
    tables = {
        "monthly_financials": books,
        "vat_returns": vat,
        "utility_readings": readings,
        "utility_bills": bills,
        "survey_visits": visits,
    }
    return tables, smes


def _memory_mb(field: str) -> float:
    """``VmRSS`` (now) or ``VmHWM`` (peak) of this process from /proc, in MB (Linux)."""
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith(f"{field}:"):
                return int(line.split()[1]) / 1024
    raise RuntimeError(f"{field} not in /proc/self/status")


def _reset_peak() -> None:
    """Start a new peak-RSS measurement (writing 5 to clear_refs resets VmHWM on Linux)."""
    with open("/proc/self/clear_refs", "w") as clear_refs:
        clear_refs.write("5")


def measure(size: int, as_of: datetime.date = datetime.date(2026, 11, 1)) -> dict[str, float | int]:
    """Time ``compute_features`` and ``evaluate`` on ``size`` synthetic SMEs; report rows and memory."""
    tables, smes = synthetic_tables(size, as_of)
    started = time.perf_counter()
    compute_features(tables, smes, as_of=as_of)
    features_seconds = time.perf_counter() - started
    inputs_mb = _memory_mb("VmRSS")
    _reset_peak()
    started = time.perf_counter()
    result = evaluate(tables, smes, as_of=as_of)
    evaluate_seconds = time.perf_counter() - started
    return {
        "smes": size,
        "rows": {name: len(frame) for name, frame in tables.items()},
        "features_seconds": round(features_seconds, 2),
        "evaluate_seconds": round(evaluate_seconds, 2),
        "rss_with_inputs_mb": round(inputs_mb),
        "evaluate_peak_extra_mb": round(_memory_mb("VmHWM") - inputs_mb),
        "output_rows": len(result),
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--smes", type=int, default=100_000)
    args = parser.parse_args(argv)
    print(json.dumps(measure(args.smes)))


if __name__ == "__main__":
    main()
