"""evaluate(): features, scores and model version in one frame that casts to the dossier schema."""

from __future__ import annotations

import datetime as dt
import math
from dataclasses import dataclass

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest

from evaluation import (
    MODEL_VERSION,
    OUTPUT_COLUMNS,
    Prediction,
    evaluate,
    evaluate_scopes,
    tables_for_sources,
)
from evaluation.scoring import SCORECARD
from warehouse.dossier_schema import ALL_COLUMNS, build_schema

AS_OF = dt.date(2026, 1, 1)


def _sigmoid(logit: float) -> float:
    return 1 / (1 + math.exp(-logit))


def _limit(pd_12m: float, rate: float, revenue_12m: float, ebitda_12m: float) -> float:
    """SCORING.md §4 with the default terms: EBITDA / 1.25 a year, as a 36-month annuity at the
    indicative rate, at most 20% of revenue, none from a PD of 30%."""
    if pd_12m >= 0.30 or ebitda_12m <= 0 or revenue_12m <= 0:
        return 0.0
    monthly = rate / 12
    amount = ebitda_12m / 1.25 / 12 * (1 - (1 + monthly) ** -36) / monthly
    return math.floor(min(amount, 0.20 * revenue_12m) / 100) * 100


def _scores(contributions: dict[str, float], revenue_12m: float, ebitda_12m: float) -> dict[str, object]:
    """Score columns by the formulas of SCORING.md from a row's hand-computed contributions."""
    pd_12m = _sigmoid(-4.6 + sum(contributions.values()))
    rate = 0.45 * pd_12m + 0.05 + 0.02 + 0.015
    logit, anchor = math.log(pd_12m / (1 - pd_12m)), math.log(0.02 / 0.98)
    ranked = sorted(contributions, key=lambda code: -contributions[code])[:4]
    return {
        "pd_12m": pd_12m,
        "score": round(650 - 40 / math.log(2) * (logit - anchor)),
        "grade": "A"
        if pd_12m < 0.01
        else "B"
        if pd_12m < 0.03
        else "C"
        if pd_12m < 0.07
        else "D"
        if pd_12m < 0.15
        else "E",
        "reason_codes": ranked,
        "credit_limit": _limit(pd_12m, rate, revenue_12m, ebitda_12m),
        "indicative_rate": rate,
    }


# Contributions of the hand-built SMEs (features in test_evaluation_features.py), in table order
# so that equal contributions rank as the scorecard ranks them.
SME_A_CONTRIBUTIONS = {
    "LOW_REVENUE": 0.3,  # 18,600 is below the 20,000 "bad" anchor
    "REVENUE_VOLATILE": 0.2 * (100 * math.sqrt(143 / 12) / 1550 - 0.15) / 0.65,
    "LOW_CASH_RUNWAY": 0.5 * (3 - 2000 / 950) / 3,
    "HIGH_LEVERAGE": 0.4 * (0.6 - 0.5) / 0.5,
    "VAT_FILED_LATE": 0.6 * (1 - 5 / 8) / 0.5,
    "VAT_BOOKS_MISMATCH": 2.5
    * (math.log(1 / 0.9) - math.log(1 / 0.92))
    / (math.log(1 / 0.75) - math.log(1 / 0.92)),
    "UTILITY_PAID_LATE": 0.6 * (1 - 8 / 12) / 0.5,
    "USAGE_BELOW_BOOKS_GROWTH": 1.0 * (0.85 - 1.075 / 1.85) / 0.35,
    "SURVEY_NOT_VERIFIED": 1.2 * 0.5,
}
SME_B_CONTRIBUTIONS = {"NO_BOOKS": 2.5, "NO_TAX_DATA": 0.4, "NO_UTILITY_DATA": 0.2, "NO_SURVEY": 0.2}
SME_C_CONTRIBUTIONS = {
    "SHORT_BOOKS_HISTORY": 0.6 * 6 / 12,
    "LOW_REVENUE": 0.3,
    "REVENUE_DECLINING": 0.5 * 0.05 / 0.35,  # no year-earlier months: growth counts as 0
    "LOW_CASH_RUNWAY": 0.5,  # no cash
    "HIGH_LEVERAGE": 0.4 * (0.8 - 0.5) / 0.5,  # no total assets: debt to assets counts as 0.8
    "NO_TAX_DATA": 0.4,
    "NO_UTILITY_DATA": 0.2,
    "NO_SURVEY": 0.2,
}


def test_hand_built_smes_get_hand_computed_scores_from_the_scorecard(hand_built) -> None:
    tables, smes = hand_built

    result = evaluate(tables, smes, as_of=AS_OF, model=SCORECARD)

    expected = [
        _scores(SME_A_CONTRIBUTIONS, 18600.0, 18600.0 - 7440 - 3600),
        _scores(SME_B_CONTRIBUTIONS, 0.0, 0.0),
        _scores(SME_C_CONTRIBUTIONS, 3000.0, 1800.0),
    ]
    codes = [row.pop("reason_codes") for row in expected]
    assert result[list(expected[0])].to_dict("records") == [pytest.approx(row) for row in expected]
    assert result["reason_codes"].tolist() == codes
    assert codes == [
        ["USAGE_BELOW_BOOKS_GROWTH", "SURVEY_NOT_VERIFIED", "VAT_FILED_LATE", "UTILITY_PAID_LATE"],
        ["NO_BOOKS", "NO_TAX_DATA", "NO_UTILITY_DATA", "NO_SURVEY"],
        ["LOW_CASH_RUNWAY", "NO_TAX_DATA", "SHORT_BOOKS_HISTORY", "LOW_REVENUE"],
    ]
    assert result["reason_texts"].iloc[1] == [
        "No bookkeeping data was shared.",
        "No VAT filings were shared to confirm the books.",
        "No utility account was shared to confirm activity.",
        "No field visit has confirmed the business.",
    ]
    assert result["model_version"].tolist() == [SCORECARD.version] * 3


def test_result_columns_cast_to_the_dossier_schema(hand_built) -> None:
    tables, smes = hand_built
    schema = build_schema(MODEL_VERSION)

    result = evaluate(tables, smes, as_of=AS_OF)

    assert list(result.columns) == list(OUTPUT_COLUMNS)
    described = {c.name for c in ALL_COLUMNS}
    assert set(OUTPUT_COLUMNS) <= described
    table = pa.Table.from_pandas(
        result, schema=pa.schema([schema.field(name) for name in OUTPUT_COLUMNS]), preserve_index=False
    )
    row = table.slice(2, 1).to_pylist()[0]
    assert row["sources_used"] == ["accounting"]
    assert row["vat_returns_due"] is None
    assert row["months_of_accounts"] == 6
    assert row["currency"] == "KES"
    assert row["reason_codes"] == list(result["reason_codes"].iloc[2])
    # SME-C's December has no total assets, so most ratios are missing and say so first.
    assert row["reason_codes"][0] == "STATEMENT_DATA_MISSING"
    assert row["model_version"] == MODEL_VERSION


@dataclass(frozen=True)
class VatOnlyModel:
    """A different model through the same seam: PD from VAT punctuality alone."""

    version: str = "vat-only-0.1"

    def predict(self, features: pd.DataFrame) -> Prediction:
        lateness = 1.0 - features["vat_on_time_rate"].fillna(1.0)
        return Prediction(
            pd_12m=0.01 + 0.5 * lateness,
            contributions=pd.DataFrame({"VAT_FILED_LATE": lateness}, index=features.index),
        )


def test_another_model_replaces_the_scorecard_without_touching_the_pipeline(hand_built) -> None:
    tables, smes = hand_built

    result = evaluate(tables, smes, as_of=AS_OF, model=VatOnlyModel())

    assert result["model_version"].tolist() == ["vat-only-0.1"] * 3
    assert result["pd_12m"].tolist() == pytest.approx([0.01 + 0.5 * 3 / 8, 0.01, 0.01])
    assert result["grade"].tolist() == ["E", "B", "B"]
    assert result["reason_codes"].tolist() == [["VAT_FILED_LATE"], [], []]


@dataclass(frozen=True)
class BrokenModel:
    version: str = "broken-0"

    def predict(self, features: pd.DataFrame) -> Prediction:
        pd_12m = pd.Series([0.1, np.nan, 1.5], index=features.index)
        return Prediction(pd_12m, pd.DataFrame(index=features.index))


def test_a_model_giving_no_probability_is_an_error_naming_the_smes(hand_built) -> None:
    tables, smes = hand_built

    with pytest.raises(
        ValueError, match=r"model broken-0: pd_12m missing or outside \[0, 1\] for \['SME-B', 'SME-C'\]"
    ):
        evaluate(tables, smes, as_of=AS_OF, model=BrokenModel())


def test_each_scope_is_scored_from_its_own_sources_and_smes_only(hand_built) -> None:
    tables, _ = hand_built
    smes = pd.DataFrame(
        {
            "sme_id": ["SME-A", "SME-C", "SME-A", "SME-B"],
            "scope": ["accounting+tax@36m", "accounting+tax@36m", "survey+utility@24m", "survey+utility@24m"],
            "history_months": [36, 6, 24, 24],
            "sources": [("accounting", "tax")] * 2 + [("survey", "utility")] * 2,
        }
    )

    result = evaluate_scopes(tables, smes, as_of=AS_OF, with_ratios=True)

    expected = []
    for scope, sources, ids in [
        ("accounting+tax@36m", ("accounting", "tax"), ["SME-A", "SME-C"]),
        ("survey+utility@24m", ("survey", "utility"), ["SME-A", "SME-B"]),
    ]:
        members = smes[smes["scope"] == scope].reset_index(drop=True)
        own = {
            name: frame[frame["sme_id"].isin(ids)]
            for name, frame in tables_for_sources(tables, sources).items()
        }
        scored = evaluate(own, members, as_of=AS_OF, with_ratios=True)
        expected.append(scored.assign(scope=scope, history_months=members["history_months"].to_numpy()))
    expected = pd.concat(expected, ignore_index=True)[list(result.columns)]
    pd.testing.assert_frame_equal(result, expected, check_exact=True)
    assert result["sources_used"].tolist() == [
        ["accounting", "tax"],
        ["accounting"],
        ["utility", "survey"],
        [],
    ]
