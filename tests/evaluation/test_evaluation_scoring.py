"""The scorecard and the functions of the PD, against the formulas in evaluation/SCORING.md."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import evaluation
from evaluation.scoring import (
    REASON_TEXTS,
    SCORECARD,
    Factor,
    LendingTerms,
    ScoringModel,
    credit_limit,
    grade,
    improvement_hints,
    indicative_rate,
    reason_codes,
    score_points,
)
from warehouse.dossier_schema import FEATURE_COLUMNS


def _sigmoid(logit: float) -> float:
    return 1 / (1 + math.exp(-logit))


def _sound_firm(**changes: float | None) -> pd.DataFrame:
    """Features of a firm at or beyond every factor's "good" anchor, with every source shared."""
    features = {
        "months_of_accounts": 24,
        "currency": "GBP",
        "revenue_12m": 1_200_000.0,
        "revenue_growth_yoy": 0.10,
        "revenue_trend_slope": 0.01,
        "revenue_volatility": 0.10,
        "gross_margin": 0.40,
        "operating_margin": 0.15,
        "net_margin": 0.08,
        "current_ratio": 2.0,
        "quick_ratio": 1.5,
        "cash_to_monthly_costs": 4.0,
        "debt_to_assets": 0.3,
        "interest_coverage": 8.0,
        "ebitda_12m": 200_000.0,
        "vat_returns_due": 8,
        "vat_on_time_rate": 1.0,
        "vat_books_revenue_ratio": 1.0,
        "utility_bills_due": 12,
        "utility_on_time_rate": 1.0,
        "utility_usage_trend": 0.05,
        "utility_books_revenue_ratio": 1.0,
        "survey_visits": 2,
        "survey_verified_rate": 1.0,
        "survey_revenue_ratio": 1.0,
    } | changes
    frame = pd.DataFrame([features])
    for column in ("vat_returns_due", "utility_bills_due", "survey_visits"):
        frame[column] = frame[column].astype("Int32")
    return frame[[c.name for c in FEATURE_COLUMNS]]


def test_scorecard_is_a_scoring_model_and_every_code_has_a_text() -> None:
    assert isinstance(SCORECARD, ScoringModel)
    assert SCORECARD.version == "scorecard-1.0.0"
    assert set(SCORECARD.codes) == set(REASON_TEXTS)
    assert all(f.weight >= 0 for f in SCORECARD.factors)
    assert all(p.weight >= 0 for p in SCORECARD.absence_penalties)


def test_badness_is_zero_at_good_one_at_bad_and_linear_between() -> None:
    factor = Factor("X", "x", good=1.5, bad=0.5, weight=1.0, missing_as=1.0, sources=())

    assert factor.badness(np.array([3.0, 1.5, 1.25, 1.0, 0.5, -2.0])).tolist() == [0, 0, 0.25, 0.5, 1, 1]


def test_abs_log_treats_a_ratio_and_its_inverse_alike() -> None:
    factor = Factor("X", "x", math.log(1.25), math.log(2.5), 1.0, 1.0, (), transform="abs_log")

    badness = factor.badness(np.array([1.0, 1.25, 0.8, 2.5, 0.4, 0.0, -1.0]))

    assert badness == pytest.approx([0, 0, 0, 1, 1, 1, 1])
    assert factor.badness(np.array([1 / 1.6]))[0] == pytest.approx(factor.badness(np.array([1.6]))[0])


def test_log10_reads_revenue_level_and_zero_revenue_as_worst() -> None:
    factor = Factor("X", "x", math.log10(5e5), math.log10(2e4), 1.0, 0.0, (), transform="log10")

    badness = factor.badness(np.array([1e6, 5e5, 1e5, 2e4, 0.0, -5.0]))

    assert badness == pytest.approx([0, 0, (5.69897 - 5) / (5.69897 - 4.30103), 1, 1, 1], abs=1e-5)


def test_a_sound_firm_gets_the_intercept_and_no_reasons() -> None:
    prediction = SCORECARD.predict(_sound_firm())

    assert prediction.pd_12m.iloc[0] == pytest.approx(_sigmoid(-4.6))
    assert (prediction.contributions.to_numpy() == 0).all()
    assert list(prediction.contributions.columns) == SCORECARD.codes
    reasons = reason_codes(prediction.contributions)
    assert reasons["reason_codes"].tolist() == [[]]


def test_contributions_follow_the_anchors_and_weights() -> None:
    # VAT on time 75%: half way from 1.0 to 0.5, weight 0.6; runway 1.5 months: half way from 3 to 0,
    # weight 0.5; books 25% above VAT sales: |ln 0.8| between ln(1/0.92) and ln(1/0.75), weight 2.5.
    features = _sound_firm(vat_on_time_rate=0.75, cash_to_monthly_costs=1.5, vat_books_revenue_ratio=0.8)
    vat_books = 2.5 * (math.log(1 / 0.8) - math.log(1 / 0.92)) / (math.log(1 / 0.75) - math.log(1 / 0.92))

    prediction = SCORECARD.predict(features)

    contributions = prediction.contributions.iloc[0]
    assert contributions[contributions > 0].to_dict() == pytest.approx(
        {"LOW_CASH_RUNWAY": 0.25, "VAT_FILED_LATE": 0.3, "VAT_BOOKS_MISMATCH": vat_books}
    )
    assert prediction.pd_12m.iloc[0] == pytest.approx(_sigmoid(-4.6 + 0.25 + 0.3 + vat_books))


def test_a_missing_value_takes_its_missing_as_while_its_source_is_present() -> None:
    # Revenue of zero leaves the margins null: they count as the worst margins.
    features = _sound_firm(gross_margin=None, operating_margin=None, net_margin=None)

    contributions = SCORECARD.predict(features).contributions.iloc[0]

    assert contributions[contributions > 0].to_dict() == pytest.approx(
        {"LOW_GROSS_MARGIN": 0.2 * (0.15 - 0.05) / 0.15, "LOW_OPERATING_MARGIN": 0.4, "LOSS_MAKING": 0.3}
    )


def test_an_absent_source_costs_its_penalty_and_silences_its_factors() -> None:
    no_books = {c.name: None for c in FEATURE_COLUMNS[:14]} | {"months_of_accounts": 0}
    no_tax = {"vat_returns_due": None, "vat_on_time_rate": None, "vat_books_revenue_ratio": None}
    features = pd.concat(
        [
            _sound_firm(**no_books, utility_books_revenue_ratio=None, survey_revenue_ratio=None),
            _sound_firm(**no_tax),
        ],
        ignore_index=True,
    )

    prediction = SCORECARD.predict(features)

    contributions = prediction.contributions
    assert contributions.iloc[0][contributions.iloc[0] > 0].to_dict() == {"NO_BOOKS": 2.5}
    assert contributions.iloc[1][contributions.iloc[1] > 0].to_dict() == {"NO_TAX_DATA": 0.4}
    assert prediction.pd_12m.tolist() == pytest.approx([_sigmoid(-2.1), _sigmoid(-4.2)])


WORSENING = {
    "months_of_accounts": np.arange(24, 0, -1),
    "revenue_12m": np.geomspace(2e6, 1e3, 30),
    "revenue_growth_yoy": np.linspace(0.5, -0.9, 30),
    "revenue_trend_slope": np.linspace(0.05, -0.2, 30),
    "revenue_volatility": np.linspace(0.0, 2.0, 30),
    "gross_margin": np.linspace(0.9, -0.5, 30),
    "operating_margin": np.linspace(0.5, -0.9, 30),
    "net_margin": np.linspace(0.5, -0.9, 30),
    "current_ratio": np.linspace(10, 0, 30),
    "quick_ratio": np.linspace(10, 0, 30),
    "cash_to_monthly_costs": np.linspace(24, -2, 30),
    "debt_to_assets": np.linspace(0, 5, 30),
    "interest_coverage": np.linspace(50, -50, 30),
    "vat_on_time_rate": np.linspace(1, 0, 30),
    "vat_books_revenue_ratio": np.linspace(1, 0.2, 30),
    "utility_on_time_rate": np.linspace(1, 0, 30),
    "utility_usage_trend": np.linspace(0.5, -0.9, 30),
    "utility_books_revenue_ratio": np.linspace(1.5, 0.1, 30),
    "survey_verified_rate": np.linspace(1, 0, 30),
    "survey_revenue_ratio": np.linspace(1, 8, 30),
}


@pytest.mark.parametrize("feature", sorted(WORSENING))
def test_a_worse_feature_never_lowers_the_pd(feature: str) -> None:
    base = _sound_firm(vat_on_time_rate=0.8, current_ratio=1.0, utility_on_time_rate=0.9)
    features = pd.concat([base] * len(WORSENING[feature]), ignore_index=True)
    features[feature] = WORSENING[feature]

    pd_12m = SCORECARD.predict(features).pd_12m.to_numpy()

    assert (np.diff(pd_12m) >= 0).all(), pd_12m
    assert pd_12m[-1] > pd_12m[0]


def test_worsening_any_features_of_random_firms_never_lowers_their_pd() -> None:
    rng = np.random.default_rng(5)
    size = 2000
    features = _sound_firm().loc[[0] * size].reset_index(drop=True)
    worse = features.copy()
    for feature, path in WORSENING.items():
        position = rng.integers(0, len(path), size)
        steps = rng.integers(1, 5, size) * (rng.random(size) < 0.3)
        features[feature] = path[position]
        worse[feature] = path[np.minimum(position + steps, len(path) - 1)]

    before = SCORECARD.predict(features).pd_12m
    after = SCORECARD.predict(worse).pd_12m

    assert (after >= before).all()
    assert (after > before).mean() > 0.5


def _contributions(rows: list[dict[str, float]]) -> pd.DataFrame:
    return pd.DataFrame(rows, columns=SCORECARD.codes).fillna(0.0)


def test_reason_codes_rank_the_strongest_factors_with_their_texts() -> None:
    contributions = _contributions(
        [
            {"VAT_BOOKS_MISMATCH": 2.5, "LOW_CASH_RUNWAY": 0.2, "SURVEY_NOT_VERIFIED": 0.6,
             "HIGH_LEVERAGE": 0.3, "UTILITY_PAID_LATE": 0.3, "LOW_REVENUE": 0.04},
            {"NO_BOOKS": 2.5, "NO_SURVEY": 0.2},
            {"REVENUE_VOLATILE": 0.05},
        ]
    )  # fmt: skip

    reasons = reason_codes(contributions, top=4)

    assert reasons["reason_codes"].tolist() == [
        ["VAT_BOOKS_MISMATCH", "SURVEY_NOT_VERIFIED", "HIGH_LEVERAGE", "UTILITY_PAID_LATE"],
        ["NO_BOOKS", "NO_SURVEY"],
        [],
    ]
    assert reasons["reason_texts"].tolist() == [
        [
            "Sales declared to the tax authority do not match revenue in the books.",
            "Field visits did not find the business trading at its address.",
            "Liabilities are high relative to assets.",
            "Utility bills were paid late or are unpaid.",
        ],
        ["No bookkeeping data was shared.", "No field visit has confirmed the business."],
        [],
    ]
    assert reason_codes(contributions, top=1)["reason_codes"].tolist() == [
        ["VAT_BOOKS_MISMATCH"],
        ["NO_BOOKS"],
        [],
    ]


def test_reason_codes_refuse_a_code_without_text() -> None:
    with pytest.raises(ValueError, match=r"without a text: \['MYSTERY'\]"):
        reason_codes(pd.DataFrame({"MYSTERY": [1.0]}))


def test_score_points_anchor_slope_clipping_and_monotonicity() -> None:
    pd_12m = pd.Series([0.02, 0.01, 0.5, 1e-6, 0.999, 0.0, 1.0])

    def odds(p: float) -> float:
        return p / (1 - p)

    doubling = 40 / math.log(2)

    points = score_points(pd_12m)

    assert points.tolist() == [
        650,
        round(650 - doubling * math.log(odds(0.01) / odds(0.02))),
        round(650 - doubling * math.log(odds(0.5) / odds(0.02))),
        850,
        300,
        850,
        300,
    ]
    assert points.dtype == np.int32
    grid = pd.Series(np.linspace(0, 1, 2001))
    assert (np.diff(score_points(grid).to_numpy()) <= 0).all()


def test_grade_bands() -> None:
    pd_12m = pd.Series([0.0, 0.0099, 0.01, 0.0299, 0.03, 0.0699, 0.07, 0.1499, 0.15, 1.0])

    assert grade(pd_12m).tolist() == ["A", "A", "B", "B", "C", "C", "D", "D", "E", "E"]


def test_credit_limit_is_the_annuity_the_ebitda_can_service_capped_by_revenue() -> None:
    features = pd.DataFrame(
        {
            "months_of_accounts": [24, 24, 24, 24, 0, 24, 24],
            "revenue_12m": [1_000_000.0, 100_000.0, 1_000_000.0, 1_000_000.0, None, -50.0, 500_000.0],
            "ebitda_12m": [125_000.0, 125_000.0, 125_000.0, -10.0, 50_000.0, 10_000.0, 125_000.0],
        }
    )
    pd_12m = pd.Series([0.02, 0.02, 0.30, 0.02, 0.01, 0.01, 0.02])
    rate = pd.Series([0.12, 0.12, 0.12, 0.12, 0.12, 0.12, 0.0])

    limits = credit_limit(features, pd_12m, rate)

    # 125,000 / 1.25 = 100,000 a year = 8,333.33 a month for 36 months at 1% a month.
    annuity = 100_000 / 12 * (1 - 1.01**-36) / 0.01
    assert round(annuity, 2) == 250_895.88
    assert limits.tolist() == [
        200_000.0,  # capped at 20% of revenue (the annuity would be 250,896)
        20_000.0,  # 20% of a revenue of 100,000
        0.0,  # PD at the 30% cut-off
        0.0,  # no EBITDA to service debt with
        0.0,  # no books
        0.0,  # no positive revenue
        100_000.0,  # at a 0% rate 36 payments of 8,333.33 = 300,000, capped at 20% of 500,000
    ]
    terms = LendingTerms(revenue_cap=1.0, dscr=2.0, term_months=12)
    wider = credit_limit(features.iloc[:1], pd_12m.iloc[:1], rate.iloc[:1], terms)
    assert wider.tolist() == [math.floor(125_000 / 2 / 12 * (1 - 1.01**-12) / 0.01 / 100) * 100]


def test_indicative_rate_is_expected_loss_plus_funding_operating_and_capital_costs_capped() -> None:
    rates = indicative_rate(pd.Series([0.0, 0.02, 0.1, 0.9]))

    assert rates.tolist() == pytest.approx([0.085, 0.45 * 0.02 + 0.085, 0.13, 0.35])
    custom = LendingTerms(loss_given_default=0.6, funding_cost=0.04, operating_cost=0.01, capital_charge=0.02)
    assert indicative_rate(pd.Series([0.1]), custom).tolist() == pytest.approx([0.13])


def test_the_hint_names_the_strongest_action_and_whether_it_is_enough() -> None:
    contributions = pd.DataFrame({"HIGH_LEVERAGE": [0.0, 2.0, 0.2, 0.0], "NO_TAX_DATA": [0.0, 0.4, 0.1, 0.0]})
    hints = improvement_hints(pd.Series([0.005, 0.2, 0.05, 0.05]), contributions)

    assert hints.tolist() == [
        "Grade A is the best grade.",
        "To reach grade D (PD below 15%): reduce liabilities or add equity; this alone would be enough.",
        "To reach grade B (PD below 3%): reduce liabilities or add equity; this alone would not be enough.",
        "To reach grade B (PD below 3%) the evidence must improve broadly.",
    ]


def test_the_hint_of_every_grade_reads_only_codes_with_an_action_and_ties_go_to_the_first() -> None:
    contributions = pd.DataFrame(
        {
            "NOT_A_HINT": [9.0, 9.0, 9.0, 9.0],
            "LOW_MARGINS": [0.5, 0.0, 0.06, 0.0],
            "NO_SURVEY": [0.5, 0.01, 0.05, 0.2],
        }
    )
    hints = improvement_hints(pd.Series([0.5, 0.1, 0.02, 0.012]), contributions)

    # Enough means the contribution covers logit(pd) - logit(target): 1.73, -, 0.70 and 0.18 here.
    assert hints.tolist() == [
        "To reach grade D (PD below 15%): keep more of each sale as profit (prices, costs); "
        "this alone would not be enough.",
        "To reach grade C (PD below 7%) the evidence must improve broadly.",
        "To reach grade A (PD below 1%): keep more of each sale as profit (prices, costs); "
        "this alone would not be enough.",
        "To reach grade A (PD below 1%): agree to a field visit; this alone would be enough.",
    ]
    unexplained = improvement_hints(pd.Series([0.2, 0.001]), contributions[["NOT_A_HINT"]].iloc[:2])
    assert unexplained.tolist() == [
        "To reach grade D (PD below 15%) the evidence must improve broadly.",
        "Grade A is the best grade.",
    ]


def _markdown_rows(text: str) -> dict[str, list[str]]:
    """Table rows of a Markdown text keyed by their first cell."""
    rows = {}
    for line in text.splitlines():
        if line.startswith("| ") and not line.startswith("|---"):
            cells = [cell.strip() for cell in line.strip().strip("|").split(" | ")]
            rows.setdefault(cells[0], []).append(cells)
    return rows


def test_scoring_md_states_the_weights_features_and_texts_in_use() -> None:
    text = (Path(evaluation.__file__).parent / "SCORING.md").read_text()
    rows = _markdown_rows(text)

    for factor in SCORECARD.factors:
        factor_row, text_row = rows[factor.code]
        assert factor_row[1] == factor.feature
        assert float(factor_row[5]) == factor.weight
        assert text_row[1] == REASON_TEXTS[factor.code]
    for penalty in SCORECARD.absence_penalties:
        penalty_row, text_row = rows[penalty.code]
        assert (penalty_row[1], float(penalty_row[2])) == (penalty.source, penalty.weight)
        assert text_row[1] == REASON_TEXTS[penalty.code]
    assert f"logit     = {SCORECARD.intercept} + " in text
