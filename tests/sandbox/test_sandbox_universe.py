"""The generated universe: deterministic, coherent across sources, with the population it promises."""

from __future__ import annotations

import dataclasses
import datetime as dt
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pytest

from connectors.sandbox import providers
from connectors.sandbox.population import PopulationMix
from connectors.sandbox.universe import SmeRecord, Universe, account_refs, default_probability, generate_sme
from warehouse.canonical import TABLES

SEED = 20261125
AS_OF = dt.date(2026, 11, 25)

ROOT = Path(__file__).resolve().parents[2]


def _state(record: SmeRecord) -> object:
    """Everything in a record as plain Python values, for equality checks."""

    def plain(value: object) -> object:
        if isinstance(value, np.ndarray):
            return value.tolist()
        if dataclasses.is_dataclass(value) and not isinstance(value, type):
            return {f.name: plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
        if isinstance(value, dict):
            return {k: plain(v) for k, v in value.items()}
        if isinstance(value, tuple | list):
            return [plain(v) for v in value]
        return value

    return plain(record)


DIGEST_CODE = """
import hashlib
import pyarrow as pa


def digest(universe):
    h = hashlib.sha256()
    for name, table in universe.truth_arrow().items():
        sink = pa.BufferOutputStream()
        with pa.ipc.new_stream(sink, table.schema) as writer:
            writer.write_table(table)
        h.update(name.encode() + sink.getvalue().to_pybytes())
    h.update(universe.profiles().to_json().encode())
    return h.hexdigest()
"""
"""Hash of a universe's truth and profiles; run here and in a fresh interpreter."""


def _digest(universe: Universe) -> str:
    namespace: dict[str, object] = {}
    exec(DIGEST_CODE, namespace)
    return namespace["digest"](universe)  # type: ignore[operator]


# --- determinism ---------------------------------------------------------------------------------------


def test_same_seed_gives_identical_frames() -> None:
    first, second = Universe(SEED, 30, AS_OF), Universe(SEED, 30, AS_OF)
    pd.testing.assert_frame_equal(first.profiles(), second.profiles())
    for name, frame in first.truth().items():
        pd.testing.assert_frame_equal(frame, second.truth()[name], obj=name)
    assert not Universe(SEED + 1, 30, AS_OF).profiles().equals(first.profiles())


def test_sme_alone_equals_sme_in_universe(universe: Universe) -> None:
    for index in (1, 77, universe.size):
        alone = generate_sme(SEED, index, AS_OF)
        assert _state(alone) == _state(universe.sme(index))
        assert _state(alone) == _state(universe.generate(index))
    subset = ["SME-000005", "SME-000123"]
    full = universe.truth_arrow()
    for name, table in universe.truth_arrow(subset).items():
        expected = full[name].filter(pc.is_in(full[name]["sme_id"], pa.array(subset)))
        assert table.equals(expected), name


def test_universe_is_identical_in_another_process() -> None:
    code = DIGEST_CODE + (
        "import datetime as dt\nfrom connectors.sandbox.universe import Universe\n"
        f"print(digest(Universe({SEED}, 25, dt.date({AS_OF.year}, {AS_OF.month}, {AS_OF.day}))))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True, timeout=120
    )
    assert result.stdout.strip() == _digest(Universe(SEED, 25, AS_OF))


def test_account_refs_are_unique_and_look_like_the_providers() -> None:
    refs = pd.DataFrame([account_refs(SEED, i) for i in range(1, 5001)])
    assert all(refs[column].is_unique for column in refs.columns)
    assert refs.vrn.str.fullmatch(r"[1-9]\d{8}").all()
    assert refs.tenant_id.str.fullmatch(r"ten_[0-9a-f]{12}").all()
    assert refs.subscription_id.str.fullmatch(r"\d{10}").all()


# --- the canonical truth -----------------------------------------------------------------------------------


def test_truth_has_exactly_the_canonical_columns(universe: Universe) -> None:
    truth = universe.truth()
    assert sorted(truth) == sorted(TABLES)
    for name, frame in truth.items():
        table = TABLES[name]
        assert list(frame.columns) == table.column_names, name
        assert table.to_arrow(frame).schema.equals(table.schema, check_metadata=False), name
        assert not frame.duplicated(list(table.key)).any(), name
        assert (frame.source_record == "").all()
        assert (frame.raw_sha256 == "").all()
        assert frame.sme_id.is_monotonic_increasing, name


def test_first_rows_of_one_sme_are_whole_and_consistent(universe: Universe) -> None:
    record = universe.sme("SME-000001")
    truth = universe.truth(["SME-000001"])
    books = truth["monthly_financials"]
    first = books.iloc[0]
    month = record.books.months[np.flatnonzero(record.books.present)[0]]
    assert first.period_month == pd.Timestamp(month.astype("datetime64[D]")).date()
    assert first.currency == "GBP"
    assert first.revenue == record.books.money["revenue"][np.flatnonzero(record.books.present)[0]] / 100
    vat = truth["vat_returns"]
    filed = vat[vat.status == "F"].iloc[0]
    assert filed.total_vat_due == filed.vat_due_sales + filed.vat_due_acquisitions
    assert filed.net_vat_due == pytest.approx(abs(filed.total_vat_due - filed.vat_reclaimed), abs=0.005)
    assert filed.due_date > filed.period_end
    opened = vat[vat.status == "O"]
    assert opened[[c for c in vat.columns if c.startswith(("vat_", "total_", "net_"))]].isna().all().all()
    assert opened.received_date.isna().all()


def test_balance_sheet_identity_and_profit_arithmetic(universe: Universe) -> None:
    books = universe.truth()["monthly_financials"]
    cents = books[[c for c in books.columns if books[c].dtype == float]].mul(100).round().astype("int64")
    assert (cents.total_assets == cents.total_liabilities + cents.equity).all()
    assert (cents.current_assets == cents.cash + cents.receivables + cents.inventory).all()
    costs = cents.cost_of_sales + cents.operating_expenses + cents.depreciation + cents.interest_expense
    assert (cents.net_profit == cents.revenue - costs - cents.tax_expense).all()
    assert (cents.cash >= 0).all()
    assert (cents.current_liabilities <= cents.total_liabilities).all()


def _quarterly_books_vs_vat(universe: Universe) -> pd.DataFrame:
    """Per filed quarter whose months are all booked: books revenue and VAT box 6."""
    truth = universe.truth()
    books = truth["monthly_financials"][["sme_id", "period_month", "revenue"]].copy()
    vat = truth["vat_returns"]
    vat = vat[vat.status == "F"][["sme_id", "period_key", "period_start", "total_sales_ex_vat"]]
    rows = []
    for offset in range(3):
        shifted = vat.copy()
        shifted["period_month"] = shifted.period_start.map(
            lambda d, k=offset: (pd.Timestamp(d) + pd.DateOffset(months=k)).date()
        )
        rows.append(shifted.merge(books, on=["sme_id", "period_month"]))
    joined = pd.concat(rows)
    sums = joined.groupby(["sme_id", "period_key"]).agg(
        months=("revenue", "size"), books=("revenue", "sum"), box6=("total_sales_ex_vat", "first")
    )
    return sums[sums.months == 3].reset_index()


def test_vat_box6_tracks_honest_books_and_not_inflated_ones(universe: Universe) -> None:
    quarters = _quarterly_books_vs_vat(universe)
    fraud = universe.profiles().set_index("sme_id").fraud.map(lambda f: "inflated_books" in f)
    quarters["ratio"] = quarters.books / quarters.box6
    honest = quarters[~quarters.sme_id.map(fraud)]
    inflated = quarters[quarters.sme_id.map(fraud)]
    assert len(honest) > 1000
    assert len(inflated) > 10
    assert honest.ratio.between(0.99, 1.01).all()
    assert (inflated.ratio > 1.2).all()


def test_vat_box1_is_twenty_percent_of_standard_rated_sales(universe: Universe) -> None:
    vat = universe.truth()["vat_returns"]
    filed = vat[vat.status == "F"].merge(universe.profiles()[["sme_id", "industry"]], on="sme_id")
    share = filed.vat_due_sales / (0.20 * filed.total_sales_ex_vat)
    # Each industry has one standard-rated share; box 6 is rounded to whole pounds.
    spread = share.groupby(filed.industry).agg(lambda s: s.max() - s.min())
    assert (spread < 0.01).all()
    assert share.between(0.2, 1.001).all()


def test_electricity_tracks_real_activity(universe: Universe) -> None:
    truth = universe.truth()
    readings = truth["utility_readings"]
    electricity = readings[readings.commodity == "electricity"]
    correlations = [
        np.corrcoef(meter.consumption.to_numpy(), universe.sme(sme_id).books.true_revenue)[0, 1]
        for sme_id, meter in electricity.groupby("sme_id")
    ]
    assert np.median(correlations) > 0.8
    assert (electricity.unit == "kWh").all()
    assert (electricity.consumption % 1 == 0).all()
    assert (readings[readings.commodity == "gas"].unit == "therm").all()


# --- the population -----------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def population() -> pd.DataFrame:
    return Universe(SEED, 1500, AS_OF).profiles()


def test_profiles_columns_and_refs(population: pd.DataFrame) -> None:
    expected = [
        "sme_id", "name", "industry", "region", "size_band", "founded_year", "currency", "trajectory",
        "health", "defaults_within_12m", "defects", "fraud", "agent_id", "tenant_id", "vrn",
        "subscription_id", "sme_code", "months_of_history",
    ]  # fmt: skip
    assert set(expected) <= set(population.columns)
    assert population.sme_id.tolist()[:2] == ["SME-000001", "SME-000002"]
    assert population.months_of_history.between(24, 36).all()
    assert (population.founded_year <= AS_OF.year - population.months_of_history // 12).all()
    assert (population.currency == "GBP").all()


def test_population_mix_is_present(population: pd.DataFrame) -> None:
    mix = PopulationMix()
    assert set(population.trajectory) == set(mix.trajectories)
    assert set(population.size_band) == set(mix.size_bands)
    assert set(population.industry) == set(mix.industries)
    assert len(set(population.region)) == len(mix.regions)
    shares = population.trajectory.value_counts(normalize=True)
    for trajectory, weight in mix.trajectories.items():
        assert abs(shares[trajectory] - weight) < 0.05
    defects = set(population.defects.explode().dropna())
    assert defects == {
        "gap", "duplicate_identical", "duplicate_conflicting", "malformed_accounting",
        "malformed_utility", "malformed_survey", "late_filing",
    }  # fmt: skip
    assert set(population.fraud.explode().dropna()) == {"inflated_books", "copied_survey"}


def test_defaults_follow_latent_health(population: pd.DataFrame) -> None:
    rates = population.groupby("trajectory").defaults_within_12m.mean()
    assert rates["failing"] > rates["declining"] > rates["stable"] > rates["healthy"]
    expected = default_probability(population.health.to_numpy()).mean()
    assert population.defaults_within_12m.mean() == pytest.approx(expected, abs=0.03)
    health = population.groupby("trajectory").health.mean()
    assert health["failing"] < health["declining"] < health["stable"] < health["healthy"]


def test_failing_firms_shrink_run_down_cash_and_pay_late(universe: Universe) -> None:
    truth = universe.truth()
    trajectory = universe.profiles().set_index("sme_id").trajectory
    books = truth["monthly_financials"].assign(trajectory=lambda f: f.sme_id.map(trajectory))
    ends = books.groupby("sme_id").agg(
        trajectory=("trajectory", "first"),
        first_revenue=("revenue", lambda s: s.head(3).mean()),
        last_revenue=("revenue", lambda s: s.tail(3).mean()),
        first_equity=("equity", "first"),
        last_equity=("equity", "last"),
    )
    growth = (ends.last_revenue / ends.first_revenue).groupby(ends.trajectory).median()
    assert growth["failing"] < 0.6 < growth["declining"] < growth["stable"] < growth["healthy"]
    equity_change = (ends.last_equity - ends.first_equity).groupby(ends.trajectory).median()
    assert equity_change["failing"] < 0 < equity_change["healthy"]

    bills = truth["utility_bills"].assign(trajectory=lambda f: f.sme_id.map(trajectory))
    paid_late = (pd.to_datetime(bills.paid_date) > pd.to_datetime(bills.due_date)) | bills.paid_date.isna()
    late_share = paid_late.groupby(bills.trajectory).mean()
    assert late_share["failing"] > 2 * late_share["healthy"]
    vat = truth["vat_returns"].assign(trajectory=lambda f: f.sme_id.map(trajectory))
    filed = vat[vat.status == "F"]
    late_vat = (
        (pd.to_datetime(filed.received_date) > pd.to_datetime(filed.due_date))
        .groupby(filed.trajectory)
        .mean()
    )
    assert late_vat["failing"] > 2 * late_vat["healthy"]


# --- defects and fraud in what is served ------------------------------------------------------------------


def _with(universe: Universe, column: str, label: str) -> list[str]:
    profiles = universe.profiles()
    return profiles[profiles[column].map(lambda labels: label in labels)].sme_id.tolist()


def test_gaps_are_missing_months(universe: Universe) -> None:
    truth = universe.truth()["monthly_financials"]
    months = universe.profiles().set_index("sme_id").months_of_history
    booked = truth.groupby("sme_id").size()
    gapped = set(_with(universe, "defects", "gap"))
    assert gapped
    assert all(booked[s] < months[s] for s in gapped)
    assert all(booked[s] == months[s] for s in months.index if s not in gapped)


def test_duplicated_months_are_served_twice(universe: Universe) -> None:
    for label, same_values in (("duplicate_identical", True), ("duplicate_conflicting", False)):
        sme_ids = _with(universe, "defects", label)
        assert sme_ids, label
        for sme_id in sme_ids:
            reports = providers.accounting_reports(universe.sme(sme_id), SEED)
            periods = pd.Series([r["period"] for r in reports])
            repeated = periods[periods.duplicated(keep=False)]
            first, second = (reports[i] for i in repeated.index)
            assert first["report_id"] != second["report_id"]
            assert (first["profit_and_loss"] == second["profit_and_loss"]) is same_values


def test_malformed_records_are_served_broken(universe: Universe) -> None:
    for sme_id in _with(universe, "defects", "malformed_accounting"):
        reports = providers.accounting_reports(universe.sme(sme_id), SEED)
        texts = [
            v for r in reports for part in ("profit_and_loss", "balance_sheet") for v in r[part].values()
        ]
        assert sum(not _is_decimal(t) for t in texts) == 1
    for sme_id in _with(universe, "defects", "malformed_utility"):
        record = universe.sme(sme_id)
        entries = providers.espi_entries(record, resource_url="http://x/r", subscription_id="1", seed=SEED)
        values = [
            e.xml.split("<value>")[-1].split("</value>")[0] for e in entries if "IntervalReading" in e.xml
        ]
        assert sum(not v.isdigit() for v in values) == 1
    for sme_id in _with(universe, "defects", "malformed_survey"):
        record = universe.sme(sme_id)
        submissions = providers.kobo_submissions(
            record, asset_uid="a1", attachment_url="http://x", seed=SEED, as_of=AS_OF
        )
        broken = [
            s
            for s in submissions
            if not s.get("group_observation/employees_observed", "0").isdigit()
            or s["_geolocation"] == [None, None]
        ]
        assert len(broken) == 1


def _is_decimal(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return text.replace("-", "").replace(".", "").isdigit()


def test_copying_agent_pastes_the_same_survey_into_different_smes(universe: Universe) -> None:
    visits = universe.truth()["survey_visits"]
    copied = set(_with(universe, "fraud", "copied_survey"))
    assert len(copied) >= 2
    answers = [
        "notes",
        "latitude",
        "longitude",
        "employees_observed",
        "customers_observed",
        "reported_monthly_revenue",
    ]
    pasted = visits[visits.sme_id.isin(copied)]
    assert len(pasted[answers].drop_duplicates()) == 1
    assert pasted.agent_id.nunique() == 1
    honest = visits[~visits.sme_id.isin(copied)]
    assert honest.groupby("sme_id")[["latitude", "longitude"]].first().duplicated().sum() == 0
