"""The dossier's model: the trained statement model plus the documented expert adjustments."""

from __future__ import annotations

import datetime as dt
import math

import numpy as np
import pytest

from evaluation import MODEL_VERSION, evaluate
from evaluation.ratios import statement_ratios
from evaluation.scoring import REASON_TEXTS, ScoringModel
from evaluation.statement_model import STATEMENT_CODES, STATEMENT_TEXTS, default_statement_model
from evaluation.statement_scoring import EXPERT_CODES, StatementScoring, default_statement_scoring

AS_OF = dt.date(2026, 1, 1)

# Expert adjustments of the hand-built SMEs, by the anchors and weights of SCORING.md §3 (the same
# values test_evaluation_evaluate.py derives for the scorecard, restricted to EXPERT_CODES).
SME_A_EXPERT = {
    "VAT_FILED_LATE": 0.6 * (1 - 5 / 8) / 0.5,
    "VAT_BOOKS_MISMATCH": 2.5
    * (math.log(1 / 0.9) - math.log(1 / 0.92))
    / (math.log(1 / 0.75) - math.log(1 / 0.92)),
    "UTILITY_PAID_LATE": 0.6 * (1 - 8 / 12) / 0.5,
    "USAGE_BELOW_BOOKS_GROWTH": 1.0 * (0.85 - 1.075 / 1.85) / 0.35,
    "SURVEY_NOT_VERIFIED": 1.2 * 0.5,
}
SME_B_EXPERT = {"NO_TAX_DATA": 0.4, "NO_UTILITY_DATA": 0.2, "NO_SURVEY": 0.2}
SME_C_EXPERT = {
    "SHORT_BOOKS_HISTORY": 0.6 * 6 / 12,
    "NO_TAX_DATA": 0.4,
    "NO_UTILITY_DATA": 0.2,
    "NO_SURVEY": 0.2,
}


def _sigmoid(x: float) -> float:
    return 1 / (1 + math.exp(-x))


def test_it_is_a_scoring_model_whose_every_code_has_a_text() -> None:
    model = default_statement_scoring()

    assert isinstance(model, ScoringModel)
    assert model.version == MODEL_VERSION == "statement-model-1.1.0+expert-1"
    assert model.codes == [*STATEMENT_CODES, "NO_BOOKS", *EXPERT_CODES]
    assert set(model.texts) == set(model.codes)
    assert all(model.texts[c] == REASON_TEXTS[c] for c in ("NO_BOOKS", *EXPERT_CODES))
    assert all(model.texts[c] == STATEMENT_TEXTS[c] for c in STATEMENT_CODES)


def test_the_pd_is_the_statement_logit_plus_the_expert_adjustments(hand_built) -> None:
    tables, smes = hand_built
    statement = default_statement_model()
    ratios = statement_ratios(tables["monthly_financials"], smes, as_of=AS_OF)
    statement_logit = statement.score(ratios.drop(columns=["sme_id"])).logit.to_numpy()
    base = math.log(statement.base_rate / (1 - statement.base_rate))

    result = evaluate(tables, smes, as_of=AS_OF, model=StatementScoring(statement))

    # SME-A's VAT sales are 90% of its books: that badness withdraws the same share of the credit
    # its books earn below the no-books logit.
    distrust = SME_A_EXPERT["VAT_BOOKS_MISMATCH"] / 2.5
    withdrawn = distrust * max(base - statement_logit[0], 0.0)
    expected = [
        _sigmoid(statement_logit[0] + sum(SME_A_EXPERT.values()) + withdrawn),
        _sigmoid(base + sum(SME_B_EXPERT.values())),  # no books: the training population's rate
        _sigmoid(statement_logit[2] + sum(SME_C_EXPERT.values())),
    ]
    assert result["pd_12m"].tolist() == pytest.approx(expected)
    assert result["model_version"].tolist() == ["statement-model-1.1.0+expert-1"] * 3
    assert result["reason_codes"].iloc[1] == ["NO_BOOKS", "NO_TAX_DATA", "NO_UTILITY_DATA", "NO_SURVEY"]
    assert result["reason_texts"].iloc[1][0] == "No bookkeeping data was shared."


def test_contributions_hold_the_statement_reasons_the_no_books_term_and_each_adjustment(hand_built) -> None:
    tables, smes = hand_built
    model = default_statement_scoring()
    features = evaluate(tables, smes, as_of=AS_OF)  # any model: only the features are reused
    ratios = statement_ratios(tables["monthly_financials"], smes, as_of=AS_OF).drop(columns=["sme_id"])

    prediction = model.predict(features.join(ratios))

    frame = prediction.contributions
    assert list(frame.columns) == model.codes
    assert (frame.to_numpy() >= 0).all()
    base = math.log(model.statement.base_rate / (1 - model.statement.base_rate))
    statement_logit = model.statement.score(ratios.iloc[[0]]).logit.iloc[0]
    withdrawn = SME_A_EXPERT["VAT_BOOKS_MISMATCH"] / 2.5 * max(base - statement_logit, 0.0)
    sme_a = SME_A_EXPERT | {"VAT_BOOKS_MISMATCH": SME_A_EXPERT["VAT_BOOKS_MISMATCH"] + withdrawn}
    for row, expert in enumerate([sme_a, SME_B_EXPERT, SME_C_EXPERT]):
        got = frame.iloc[row][list(EXPERT_CODES)]
        assert got[got > 0].to_dict() == pytest.approx(expert)
    assert frame["NO_BOOKS"].tolist() == pytest.approx([0.0, base - model.statement.reference_logit, 0.0])
    assert (frame.iloc[1][list(STATEMENT_CODES)] == 0).all()


def test_features_without_the_statement_ratios_are_refused(hand_built) -> None:
    tables, smes = hand_built
    features = evaluate(tables, smes, as_of=AS_OF)

    with pytest.raises(ValueError, match=r"features lack the statement ratios \['attr1'"):
        default_statement_scoring().predict(features)


def test_books_the_vat_returns_contradict_earn_no_credit(hand_built) -> None:
    tables, smes = hand_built
    model = default_statement_scoring()
    features = evaluate(tables, smes, as_of=AS_OF)
    ratios = statement_ratios(tables["monthly_financials"], smes, as_of=AS_OF).drop(columns=["sme_id"])
    frame = features.join(ratios).iloc[[0, 0, 0]].reset_index(drop=True)
    frame["vat_books_revenue_ratio"] = [1.0, 0.85, 0.6]  # matching, half-way, beyond the 0.75 anchor
    base = math.log(model.statement.base_rate / (1 - model.statement.base_rate))
    statement_logit = model.statement.score(ratios.iloc[[0]]).logit.iloc[0]
    others = sum(v for k, v in SME_A_EXPERT.items() if k != "VAT_BOOKS_MISMATCH")

    pd_12m = model.predict(frame).pd_12m

    assert statement_logit < base, "SME-A's books are better than no books"
    assert pd_12m[0] == pytest.approx(_sigmoid(statement_logit + others))
    assert pd_12m[0] < pd_12m[1] < pd_12m[2]
    assert pd_12m[2] == pytest.approx(_sigmoid(base + 2.5 + others))  # the books count for nothing


def test_worse_books_never_lower_the_pd(hand_built) -> None:
    tables, smes = hand_built
    books = tables["monthly_financials"].copy()
    worse = books.assign(
        net_profit=books["net_profit"] - 200.0,
        operating_expenses=books["operating_expenses"] + 200.0,
        total_liabilities=books["total_liabilities"] * 1.5,
    )

    before = evaluate(tables, smes, as_of=AS_OF, model=default_statement_scoring())
    after = evaluate(
        tables | {"monthly_financials": worse}, smes, as_of=AS_OF, model=default_statement_scoring()
    )

    assert (after["pd_12m"].to_numpy() >= before["pd_12m"].to_numpy() - 1e-12).all()
    assert after["pd_12m"].iloc[0] > before["pd_12m"].iloc[0]
    assert np.isclose(after["pd_12m"].iloc[1], before["pd_12m"].iloc[1])
