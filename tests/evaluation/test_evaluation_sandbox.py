"""The dossier's model on the sandbox universe: it ranks real risk and is not fooled by inflated books.

The sandbox draws each SME's default from a latent health that also shapes its books, VAT filings,
meters and visits; it knows which SMEs defaulted and which inflated their books. These are
functional checks with thresholds well inside what the model achieves (MODEL_CARD.md, SCORING.md).
"""

from __future__ import annotations

import datetime as dt

import pandas as pd
import pytest
from sklearn.metrics import roc_auc_score

from connectors.sandbox.population import PopulationMix
from connectors.sandbox.universe import Universe
from evaluation import evaluate

AS_OF = dt.date(2026, 11, 1)
SEED = 20261125


def _scored(universe: Universe) -> tuple[pd.DataFrame, pd.DataFrame]:
    profiles = universe.profiles()
    smes = profiles[["sme_id"]].assign(history_months=universe.max_months)
    return profiles, evaluate(universe.truth(), smes, as_of=AS_OF)


@pytest.fixture(scope="module")
def scored_universe() -> tuple[pd.DataFrame, pd.DataFrame]:
    return _scored(Universe(seed=SEED, size=400, as_of=AS_OF))


def test_pd_ranks_the_smes_that_default_well_above_chance(scored_universe) -> None:
    profiles, scored = scored_universe
    defaulted = profiles["defaults_within_12m"].astype(bool)
    assert 20 <= defaulted.sum() <= 380, "the universe needs defaulters and survivors to rank"

    auc = roc_auc_score(defaulted, scored["pd_12m"])

    assert auc >= 0.72, f"AUC {auc:.3f}"
    assert scored.loc[defaulted, "pd_12m"].mean() > 2 * scored.loc[~defaulted, "pd_12m"].mean()


def test_every_sme_of_the_universe_gets_a_complete_dossier_row(scored_universe) -> None:
    _, scored = scored_universe

    assert scored["sources_used"].map(len).min() >= 1
    assert scored["pd_12m"].between(0, 1).all()
    assert scored["score"].between(300, 850).all()
    assert set(scored["grade"]) <= set("ABCDE")
    assert (scored["credit_limit"] >= 0).all()


def test_inflated_books_raise_the_pd_of_the_same_firm() -> None:
    # Two universes of the same seed differ only in whether books are inflated: SME i is the same
    # firm (industry, size, health, trajectory) in both, so each inflated firm has an honest twin.
    honest_profiles, honest = _scored(
        Universe(seed=SEED, size=150, as_of=AS_OF, mix=PopulationMix(inflated_books_rate=0.0))
    )
    inflated_profiles, inflated = _scored(
        Universe(seed=SEED, size=150, as_of=AS_OF, mix=PopulationMix(inflated_books_rate=1.0))
    )
    twins = ["industry", "size_band", "trajectory", "health"]
    pd.testing.assert_frame_equal(honest_profiles[twins], inflated_profiles[twins])
    assert inflated_profiles["fraud"].map(lambda f: "inflated_books" in f).all()

    raised = inflated["pd_12m"] > honest["pd_12m"]
    letters = "ABCDE"

    # Inflated books can only be worth faking where they would buy a better grade: every firm whose
    # honest twin is not already near-certain to default (PD < 0.5) gets a higher PD, and none gets
    # a better grade. (Near-certain defaulters may move within grade E either way: the trained
    # statement model credits the inflated ratios by more than the VAT mismatch adds.)
    assert raised[honest["pd_12m"] < 0.5].all(), f"{(~raised[honest['pd_12m'] < 0.5]).sum()} firms not raised"
    assert (honest["pd_12m"] < 0.5).sum() >= 50
    assert (inflated["grade"].map(letters.index) >= honest["grade"].map(letters.index)).all()
    assert inflated["pd_12m"].median() >= 2 * honest["pd_12m"].median()
    flagged = inflated["reason_codes"].map(lambda codes: "VAT_BOOKS_MISMATCH" in list(codes))
    assert flagged.mean() >= 0.9


def test_triangulation_catches_every_inflated_firm_and_few_honest_ones(scored_universe) -> None:
    profiles, scored = scored_universe
    inflated = profiles["fraud"].map(lambda f: "inflated_books" in f).to_numpy()
    assert 5 <= inflated.sum() <= 100, "the universe needs inflated and honest firms"
    codes = scored["discrepancy_codes"].map(list)

    caught = codes.map(lambda c: "BOOKS_ABOVE_VAT" in c).to_numpy()

    assert caught[inflated].all(), list(scored["sme_id"][inflated & ~caught])
    assert caught[~inflated].mean() < 0.05
    assert scored["consistency_score"][inflated].max() < scored["consistency_score"][~inflated].median()
    assert scored["consistency_score"].between(0, 1).all()


def test_every_dossier_row_carries_the_reasons_hint_interval_coverage_and_lending_terms(
    scored_universe,
) -> None:
    _, scored = scored_universe

    assert scored["improvement_hint"].str.len().min() > 10
    risky = scored["grade"].isin(["D", "E"])
    assert scored.loc[risky, "reason_codes"].map(len).min() >= 1
    assert scored["reason_codes"].map(len).max() <= 4
    assert (scored["pd_low"] <= scored["pd_12m"]).all()
    assert (scored["pd_12m"] <= scored["pd_high"]).all()
    assert scored["coverage"].between(0, 1).all()
    assert scored["indicative_rate"].between(0.085, 0.35).all()
    lendable = scored["pd_12m"] < 0.30
    assert (scored.loc[lendable, "credit_limit"] > 0).mean() > 0.8
    assert (scored["credit_limit"] <= 0.20 * scored["revenue_12m"].fillna(0) + 1e-6).all()


def test_a_short_scope_widens_the_interval_and_lowers_coverage_without_sinking_the_grade() -> None:
    universe = Universe(seed=SEED, size=120, as_of=AS_OF)
    profiles = universe.profiles()
    truth = {"monthly_financials": universe.truth()["monthly_financials"]}
    long = evaluate(truth, profiles[["sme_id"]].assign(history_months=36), as_of=AS_OF)
    short = evaluate(truth, profiles[["sme_id"]].assign(history_months=12), as_of=AS_OF)

    assert (short["coverage"] < long["coverage"]).mean() > 0.9
    width = lambda frame: frame["pd_high"] - frame["pd_low"]  # noqa: E731
    assert (width(short) >= width(long) - 1e-9).mean() > 0.9
    # A year of books is no longer read as an incomplete statement of a failing firm.
    healthy = (profiles["trajectory"] == "healthy").to_numpy()
    assert short.loc[healthy, "pd_12m"].median() < 3 * long.loc[healthy, "pd_12m"].median()
    assert short.loc[healthy, "pd_12m"].median() < 0.07
