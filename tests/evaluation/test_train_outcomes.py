"""``make train --outcomes``: the behavioural adjustments refitted on lender outcomes.

Outcomes are drawn from known adjustment coefficients on synthetic dossiers whose PD was written by
the expert rules, as a real export's would be; the refit must recover those coefficients. Too few
outcomes keep the expert rules, and a refit written to the artifact is what scores dossiers.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from evaluation.statement_model import STATEMENT_MODEL_VERSION, default_statement_model
from evaluation.statement_scoring import (
    ADJUSTMENT_INPUTS,
    EXPERT_CODES,
    EXPERT_VERSION,
    UNTRUSTED_SHARE,
    StatementScoring,
    adjustment_sets,
    default_statement_scoring,
    scoring_with,
)
from evaluation.train import (
    MIN_DEFAULTS,
    OutcomesError,
    main,
    read_outcomes,
    refit_adjustments,
    write_adjustments,
)

TRUE = {
    "SHORT_BOOKS_HISTORY": 0.9,
    "VAT_FILED_LATE": 1.0,
    "VAT_BOOKS_MISMATCH": 1.5,
    "UTILITY_PAID_LATE": 0.3,
    "UTILITY_USAGE_FALLING": 0.6,
    "USAGE_BELOW_BOOKS_GROWTH": 0.5,
    "SURVEY_NOT_VERIFIED": 2.0,
    "SURVEY_REVENUE_MISMATCH": 0.4,
    "NO_TAX_DATA": 0.7,
    "NO_UTILITY_DATA": 0.1,
    "NO_SURVEY": 0.35,
    UNTRUSTED_SHARE: 0.6,
    "intercept": -0.3,
}
"""The coefficients the synthetic outcomes are drawn from (none equal to its expert value)."""


def synthetic_dossiers(rows: int, seed: int) -> tuple[pd.DataFrame, np.ndarray]:
    """Adjustment inputs of ``rows`` dossiers, varied enough that every signal fires, and their
    statement logits."""
    g = np.random.default_rng(seed)
    books = g.random(rows) > 0.1
    tax, utility, survey = g.random(rows) > 0.2, g.random(rows) > 0.25, g.random(rows) > 0.4

    def where(mask: np.ndarray, values: np.ndarray) -> np.ndarray:
        return np.where(mask, values, np.nan)

    features = pd.DataFrame(
        {
            "months_of_accounts": np.where(books, g.integers(1, 37, rows), 0).astype(np.float64),
            "vat_returns_due": where(tax, np.full(rows, 8.0)),
            "vat_on_time_rate": where(tax, g.choice([1.0, 1.0, 0.875, 0.75, 0.5, 0.25], rows)),
            "vat_books_revenue_ratio": where(tax & books, np.exp(g.normal(0.0, 0.2, rows))),
            "utility_bills_due": where(utility, np.full(rows, 12.0)),
            "utility_on_time_rate": where(utility, g.choice([1.0, 1.0, 0.9, 0.75, 0.5], rows)),
            "utility_usage_trend": where(utility, g.normal(-0.1, 0.2, rows)),
            "utility_books_revenue_ratio": where(utility & books, g.uniform(0.3, 1.3, rows)),
            "survey_visits": where(survey, np.full(rows, 2.0)),
            "survey_verified_rate": where(survey, g.choice([1.0, 1.0, 1.0, 0.5, 0.0], rows)),
            "survey_revenue_ratio": where(survey & books, np.exp(g.normal(0.0, 0.5, rows))),
        }
    )
    statement = default_statement_model()
    base = float(np.log(statement.base_rate / (1 - statement.base_rate)))
    logit = np.where(books, g.normal(-3.5, 1.2, rows), base)
    return features[list(ADJUSTMENT_INPUTS)], logit


def export_of(features: pd.DataFrame, statement_logit: np.ndarray, seed: int) -> pd.DataFrame:
    """What ``dossier outcomes export`` writes for these dossiers: the expert rules' PD, and an
    outcome drawn from :data:`TRUE` (a default six months after the as-of date, else a repayment)."""
    statement = default_statement_model()
    expert_pd = 1 / (1 + np.exp(-StatementScoring(statement).adjusted(features, statement_logit)[0]))
    truth = scoring_with(statement, "truth", TRUE)
    true_pd = 1 / (1 + np.exp(-truth.adjusted(features, statement_logit)[0]))
    defaulted = np.random.default_rng([seed, 1]).random(len(features)) < true_pd
    return pd.DataFrame(
        {
            "lender_id": "northwind",
            "dossier_id": [f"SME-{i:06d}:2025-01-01:v3:all@36m" for i in range(len(features))],
            "sme_id": [f"SME-{i:06d}" for i in range(len(features))],
            "outcome": np.where(defaulted, "defaulted", "repaid"),
            "outcome_date": np.where(defaulted, "2025-07-01", "2025-09-01"),
            "amount": "",
            "as_of_date": "2025-01-01",
            "model_version": f"{STATEMENT_MODEL_VERSION}+{EXPERT_VERSION}",
            "pd_12m": expert_pd,
            "grade": "C",
        }
    ).join(features)


@pytest.fixture(scope="module")
def large_export(tmp_path_factory) -> Path:
    features, logit = synthetic_dossiers(30_000, seed=5)
    path = tmp_path_factory.mktemp("outcomes") / "outcomes.csv"
    export_of(features, logit, seed=5).to_csv(path, index=False)
    return path


def test_the_statement_logit_is_recovered_from_the_pd_the_expert_rules_wrote() -> None:
    features, logit = synthetic_dossiers(2_000, seed=3)
    scorer = StatementScoring(default_statement_model())
    pd_12m = 1 / (1 + np.exp(-scorer.adjusted(features, logit)[0]))

    recovered = scorer.statement_logit_of(features, pd_12m)

    # Books wholly contradicted by VAT whose statement logit lay below the no-books one gave up all
    # their credit: every such logit gives the same PD, so it cannot be told.
    whole = np.isnan(recovered)
    base = np.log(scorer.statement.base_rate / (1 - scorer.statement.base_rate))
    distrust = scorer.adjusted(features, logit)[2]
    assert np.array_equal(whole, (distrust >= 1 - 1e-6) & (logit < base))
    assert 0 < whole.sum() < 200
    assert recovered[~whole] == pytest.approx(logit[~whole], abs=1e-6)


def test_the_refit_recovers_the_coefficients_the_outcomes_were_drawn_from(large_export: Path) -> None:
    result = refit_adjustments(
        read_outcomes(large_export), default_statement_model(), adjustment_sets(Path("/nonexistent"))
    )

    assert result["status"] == "refit"
    assert result["version"].startswith("refit-")
    by_code = {row["code"]: row for row in result["table"]} | {"intercept": result["intercept"]}
    assert list(by_code) == [*EXPERT_CODES, UNTRUSTED_SHARE, "intercept"]
    for code, true in TRUE.items():
        row = by_code[code]
        assert row["used"] == pytest.approx(true, abs=0.3), code
        assert row["ci_95"][0] - 0.1 < true < row["ci_95"][1] + 0.1, code
        assert row["expert"] != pytest.approx(true, abs=0.05) or code == "NO_UTILITY_DATA"
    assert result["coefficients"] == {code: by_code[code]["used"] for code in TRUE}
    assert result["outcomes"]["used"] + result["outcomes"]["left_out_books_wholly_contradicted"] == 30_000


def test_too_few_outcomes_keep_the_expert_rules_and_the_card_says_so(tmp_path: Path) -> None:
    from evaluation.train import adjustments_section

    features, logit = synthetic_dossiers(150, seed=8)
    path = tmp_path / "few.csv"
    export_of(features, logit, seed=8).to_csv(path, index=False)
    artifacts = _artifacts(tmp_path)

    result = write_adjustments(path, artifacts)

    parquet = tmp_path / "few.parquet"
    export_of(features, logit, seed=8).to_parquet(parquet)
    assert read_outcomes(parquet).equals(read_outcomes(path))
    expert = adjustment_sets(tmp_path / "absent.json")[EXPERT_VERSION]
    assert result["status"] == "expert"
    assert result["version"] == EXPERT_VERSION
    assert result["coefficients"] == expert
    defaults = result["outcomes"]["used_defaults"]
    assert result["why"] == (
        f"too few outcomes: {result['outcomes']['used']} dossiers with a known outcome and {defaults} "
        f"defaults (at least 200 and {MIN_DEFAULTS} needed)"
    )
    assert [row["used"] for row in result["table"]] == [expert[c] for c in (*EXPERT_CODES, UNTRUSTED_SHARE)]
    assert all(row["refit"] is None for row in result["table"])
    scorer = default_statement_scoring(artifacts / f"{STATEMENT_MODEL_VERSION}-adjustments.json")
    assert scorer.version == f"{STATEMENT_MODEL_VERSION}+{EXPERT_VERSION}"
    assert adjustments_section(result).startswith(
        f"**Refit on outcomes: expert rules kept** (too few outcomes: {result['outcomes']['used']} dossiers"
    )


def _artifacts(tmp_path: Path) -> Path:
    """A copy of the committed statement artifact, to write adjustments beside."""
    import shutil

    from evaluation.statement_model import artifact_paths

    folder = tmp_path / "artifacts"
    folder.mkdir()
    for path in artifact_paths(STATEMENT_MODEL_VERSION):
        shutil.copy(path, folder / path.name)
    return folder


def test_a_written_refit_scores_dossiers_and_keeps_the_refit_it_replaces(
    large_export: Path, tmp_path: Path
) -> None:
    artifacts = _artifacts(tmp_path)
    file = artifacts / f"{STATEMENT_MODEL_VERSION}-adjustments.json"

    first = write_adjustments(large_export, artifacts)

    assert json.loads(file.read_text()) == first
    scorer = default_statement_scoring(file)
    assert scorer.version == f"{STATEMENT_MODEL_VERSION}+{first['version']}"
    features, _ = synthetic_dossiers(500, seed=11)
    ratios = pd.DataFrame(np.nan, index=features.index, columns=[f"attr{i}" for i in range(1, 65)])
    ratios["attr1"] = np.linspace(-0.3, 0.3, len(features))
    statement_logit = scorer.statement.score(ratios).logit.to_numpy()
    books = features["months_of_accounts"].to_numpy() > 0
    base = np.log(scorer.statement.base_rate / (1 - scorer.statement.base_rate))
    statement_logit = np.where(books, statement_logit, base)
    c = first["coefficients"]
    from evaluation.statement_scoring import adjustment_signals

    signals = adjustment_signals(features)
    expected = (
        statement_logit
        + c["intercept"]
        + sum(c[code] * signals[code].to_numpy() for code in EXPERT_CODES)
        + c[UNTRUSTED_SHARE]
        * signals["VAT_BOOKS_MISMATCH"].to_numpy()
        * np.maximum(base - statement_logit, 0)
    )

    predicted = scorer.predict(features.join(ratios))

    assert predicted.pd_12m.to_numpy() == pytest.approx(1 / (1 + np.exp(-expected)))
    assert predicted.pd_12m.to_numpy() != pytest.approx(
        StatementScoring(scorer.statement).predict(features.join(ratios)).pd_12m.to_numpy()
    )
    # The same outcomes again give the same refit; fewer of them another, which keeps the first on record.
    assert write_adjustments(large_export, artifacts) == first | {"previous": {}}
    half = tmp_path / "half.csv"
    pd.read_csv(large_export, dtype=str).iloc[:15_000].to_csv(half, index=False)
    second = write_adjustments(half, artifacts)
    assert second["status"] == "refit"
    assert second["version"] != first["version"]
    assert second["previous"] == {first["version"]: first["coefficients"]}
    assert adjustment_sets(file)[first["version"]] == first["coefficients"]


def test_without_outcomes_train_removes_a_refit(tmp_path: Path) -> None:
    artifacts = _artifacts(tmp_path)
    file = artifacts / f"{STATEMENT_MODEL_VERSION}-adjustments.json"
    file.write_text("{}")

    assert write_adjustments(None, artifacts) is None
    assert not file.exists()


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (
            lambda f: f.drop(columns=["survey_verified_rate"]),
            "header: missing column survey_verified_rate (write it with: dossier outcomes export)",
        ),
        (lambda f: f.assign(pd_12m=["0.1", "x"]), "row 3: field pd_12m: 'x' is not a number"),
        (lambda f: f.assign(pd_12m=["0.1", "1.5"]), "row 3: field pd_12m: 1.5 is not in [0, 1]"),
        (
            lambda f: f.assign(outcome=["repaid", "late"]),
            "row 3: field outcome: 'late' is not one of repaid, defaulted, current",
        ),
        (
            lambda f: f.assign(as_of_date=["2025-01-01", "01/01/2025"]),
            "row 3: field as_of_date: '01/01/2025' is not a date YYYY-MM-DD",
        ),
        (
            lambda f: f.assign(vat_on_time_rate=["0.5", "often"]),
            "row 3: field vat_on_time_rate: 'often' is not a number",
        ),
    ],
)
def test_a_bad_outcomes_file_is_one_line_naming_row_and_field_and_exit_2(
    tmp_path: Path, capsys, change, message
) -> None:
    features, logit = synthetic_dossiers(2, seed=1)
    path = tmp_path / "bad.csv"
    change(export_of(features, logit, seed=1)).to_csv(path, index=False)

    assert main(["--data", str(path), "--outcomes", str(path)]) == 2

    assert capsys.readouterr().err == f"train: {path}: {message}\n"
    with pytest.raises(OutcomesError):
        read_outcomes(path)


def test_a_current_loan_within_the_horizon_is_not_yet_an_outcome() -> None:
    from evaluation.train import outcome_labels

    frame = pd.DataFrame(
        {
            "dossier_id": ["a", "a", "b", "c", "d", "e"],
            "outcome": ["current", "defaulted", "current", "current", "repaid", "defaulted"],
            "outcome_date": pd.to_datetime(
                ["2025-03-01", "2025-11-01", "2025-06-01", "2026-02-01", "2025-04-01", "2026-03-01"]
            ),
            "as_of_date": pd.to_datetime(["2025-01-01"] * 6),
            "model_version": "m",
            "pd_12m": 0.1,
        }
    )

    labelled, counts = outcome_labels(frame)

    assert labelled[["dossier_id", "defaulted"]].to_dict("records") == [
        {"dossier_id": "a", "defaulted": 1},
        {"dossier_id": "c", "defaulted": 0},
        {"dossier_id": "d", "defaulted": 0},
        {"dossier_id": "e", "defaulted": 0},
    ]
    assert counts == {"reports": 6, "dossiers": 5, "not_yet_known": 1, "labelled": 4, "defaults": 1}


def test_the_sandbox_effect_tables_are_generated_from_the_bench_result() -> None:
    from evaluation.train import EFFECT_END, EFFECT_START, EFFECTS, effect_table

    root = Path(__file__).resolve().parents[2]
    result = json.loads(EFFECTS.read_text())
    table = effect_table(result)

    assert [row["code"] for row in result["adjustments"]] == [*EXPERT_CODES, UNTRUSTED_SHARE]
    for document in ("evaluation/MODEL_CARD.md", "evaluation/SCORING.md"):
        text = (root / document).read_text()
        assert text[text.index(EFFECT_START) : text.index(EFFECT_END) + len(EFFECT_END)] == table
    assert "| `VAT_FILED_LATE` | 0.6 |" in table


def test_switching_one_adjustment_off_changes_only_its_share_of_the_logit() -> None:
    from bench.evaluation_adjustments import without

    features, logit = synthetic_dossiers(400, seed=2)
    model = StatementScoring(default_statement_model())
    total, contributions, _, withdrawn = model.adjusted(features, logit)

    for code in ("VAT_FILED_LATE", "NO_SURVEY"):
        assert without(model, code).adjusted(features, logit)[0] == pytest.approx(
            total - contributions[code].to_numpy()
        )
    assert without(model, UNTRUSTED_SHARE).adjusted(features, logit)[0] == pytest.approx(total - withdrawn)


def test_the_statement_logit_is_recovered_from_the_columns_of_evaluated_sandbox_dossiers() -> None:
    import datetime as dt

    from connectors.sandbox.universe import Universe
    from evaluation import RATIO_COLUMNS, evaluate

    as_of = dt.date(2026, 11, 1)
    universe = Universe(seed=20261125, size=60, as_of=as_of)
    smes = universe.profiles()[["sme_id"]].assign(history_months=universe.max_months)
    scored = evaluate(universe.truth(), smes, as_of=as_of, with_ratios=True)
    scorer = default_statement_scoring()
    direct = scorer.statement.score(scored[list(RATIO_COLUMNS)]).logit.to_numpy()

    # Only what a dossier carries: its PD and the adjustment inputs.
    recovered = scorer.statement_logit_of(scored[list(ADJUSTMENT_INPUTS)], scored["pd_12m"].to_numpy())

    known = ~np.isnan(recovered)
    assert known.sum() >= 55
    assert recovered[known] == pytest.approx(direct[known], abs=1e-6)
