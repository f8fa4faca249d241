"""The collusion detector: each signal on hand-made visits, then the sandbox's copying agent."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pandas as pd
import pytest

from connectors.sandbox.population import PopulationMix
from connectors.sandbox.universe import Universe
from evaluation.collusion import AGENT_COLUMNS, EVIDENCE_COLUMNS, detect
from evaluation.features import compute_features
from tests.evaluation.conftest import make_canonical
from warehouse.agents import mark_suspended_visits

VISITED = dt.datetime(2025, 6, 10, 10, tzinfo=dt.UTC)


def _visit(sme: str, agent: str, n: int, **answers: Any) -> dict[str, Any]:
    """One visit of ``sme`` by ``agent``: honest by default (its own place and answers)."""
    return {
        "sme_id": sme,
        "visit_id": f"{sme}-v{n}",
        "agent_id": agent,
        "visited_at": VISITED,
        "submitted_at": VISITED,
        "reported_monthly_revenue": 1000.0,
        "latitude": 51.0 + int(sme[-3:]) * 0.01,
        "longitude": -1.0 - int(sme[-3:]) * 0.01,
        "employees_observed": int(sme[-3:]) % 7,
        "customers_observed": int(sme[-3:]) % 5,
        "stock_level": ("low", "normal", "high")[int(sme[-3:]) % 3],
        "photo_count": 1 + int(sme[-3:]) % 4,
        "notes": f"note {sme}",
    } | answers


def _books(smes: list[str], revenue: float = 1000.0) -> pd.DataFrame:
    return make_canonical(
        "monthly_financials",
        [
            {"sme_id": s, "period_month": dt.date(2025, 6, 1), "currency": "GBP", "revenue": revenue}
            for s in smes
        ],
    )


def _honest_team(agents: int = 10, firms_each: int = 6) -> list[dict[str, Any]]:
    return [
        _visit(f"SME-{a * firms_each + f:03d}", f"agent_{a:03d}", 1)
        for a in range(agents)
        for f in range(firms_each)
    ]


def _row(report, agent: str) -> dict[str, Any]:
    return report.agents.set_index("agent_id").loc[agent].to_dict()


def test_an_honest_team_raises_no_flag_and_the_frames_have_their_columns() -> None:
    rows = _honest_team()
    report = detect(make_canonical("survey_visits", rows), _books([r["sme_id"] for r in rows]))

    assert list(report.agents.columns) == list(AGENT_COLUMNS)
    assert list(report.evidence.columns) == list(EVIDENCE_COLUMNS)
    assert len(report.agents) == 10
    assert report.evidence.empty
    assert report.population_contradiction_rate == 0.0
    assert report.recommended == []
    assert _row(report, "agent_000") == {
        "visits": 6,
        "smes": 6,
        "compared_visits": 6,
        "contradictions": 0,
        "contradiction_rate": 0.0,
        "contradiction_p": 1.0,
        "gps_reused_smes": 0,
        "photo_reused_smes": 0,
        "copied_smes": 0,
        "score": 0.0,
        "flags": [],
        "recommend_suspend": False,
    }


def test_contradicting_the_books_more_than_chance_allows_is_flagged() -> None:
    rows = _honest_team(agents=20)
    # one honest agent contradicts once (chance); agent_019 contradicts on every visit
    rows[0]["reported_monthly_revenue"] = 5000.0
    for row in rows:
        if row["agent_id"] == "agent_019":
            row["reported_monthly_revenue"] = 4000.0
    report = detect(make_canonical("survey_visits", rows), _books([r["sme_id"] for r in rows]))

    assert report.population_contradiction_rate == pytest.approx(7 / 120)
    assert report.threshold_p == pytest.approx(0.01 / 20)
    liar, unlucky = _row(report, "agent_019"), _row(report, "agent_000")
    assert liar["contradictions"] == 6
    assert liar["contradiction_p"] < 1e-6
    assert liar["flags"] == ["CONTRADICTS_BOOKS"]
    assert liar["score"] == 0.25
    assert not liar["recommend_suspend"], "one line of evidence alone does not suspend"
    assert unlucky["contradictions"] == 1
    assert unlucky["flags"] == []
    contradicted = report.evidence[report.evidence["code"] == "CONTRADICTS_BOOKS"]
    assert set(contradicted["agent_id"]) == {"agent_019"}
    assert len(contradicted) == 6


def test_visits_without_books_for_their_month_are_not_compared() -> None:
    rows = _honest_team(agents=2)
    report = detect(make_canonical("survey_visits", rows), None)

    assert report.agents["compared_visits"].tolist() == [0, 0]
    assert report.agents["contradiction_p"].tolist() == [1.0, 1.0]


def test_one_gps_point_for_different_firms_is_reused_even_a_few_metres_apart() -> None:
    rows = _honest_team(agents=3)
    spot = 0
    for row in rows:
        if row["agent_id"] == "agent_002":
            # about 1.1 m apart each: all within 10 m of one another
            row["latitude"], row["longitude"] = 52.5 + spot * 0.00001, -1.5
            spot += 1
    rows[0]["latitude"], rows[0]["longitude"] = 52.5003, -1.5  # 33 m away: a neighbour, not a reuse
    report = detect(make_canonical("survey_visits", rows))

    assert _row(report, "agent_002")["gps_reused_smes"] == 6
    assert _row(report, "agent_002")["flags"] == ["REUSED_GPS"]
    assert _row(report, "agent_000")["gps_reused_smes"] == 0


def test_two_visits_of_one_firm_at_one_point_are_no_reuse() -> None:
    rows = [_visit("SME-001", "agent_001", n) for n in range(5)]
    report = detect(make_canonical("survey_visits", rows))

    assert _row(report, "agent_001")["gps_reused_smes"] == 0


def test_one_photo_attached_to_different_firms_is_reused() -> None:
    rows = _honest_team(agents=2)
    visits = make_canonical("survey_visits", rows)
    visits["photo_hashes"] = [
        ["sha256:same", f"sha256:{i}"] if r["agent_id"] == "agent_001" else [f"sha256:{i}"]
        for i, r in enumerate(rows)
    ]
    report = detect(visits)

    assert _row(report, "agent_001")["photo_reused_smes"] == 6
    assert _row(report, "agent_001")["flags"] == ["REUSED_PHOTO"]
    assert _row(report, "agent_000")["photo_reused_smes"] == 0


def test_near_identical_answer_sets_for_different_firms_are_copies() -> None:
    rows = _honest_team(agents=3)
    copies = [r for r in rows if r["agent_id"] == "agent_001"]
    for i, row in enumerate(copies):
        row.update(
            reported_monthly_revenue=1000.0,
            employees_observed=3,
            customers_observed=2,
            stock_level="normal",
            photo_count=1,
            notes="All fine" if i else "Different note",  # one answer off: still near-identical
        )
    # agent_002's firms share all answers but the revenue: not copies
    for i, row in enumerate(r for r in rows if r["agent_id"] == "agent_002"):
        row.update(reported_monthly_revenue=1000.0 + 50 * i, employees_observed=3, customers_observed=2)
        row.update(stock_level="normal", photo_count=1, notes="All fine")
    report = detect(make_canonical("survey_visits", rows), _books([r["sme_id"] for r in rows]))

    assert _row(report, "agent_001")["copied_smes"] == 6
    assert _row(report, "agent_001")["flags"] == ["COPIED_ANSWERS"]
    assert _row(report, "agent_002")["copied_smes"] == 0


def test_two_lines_of_evidence_recommend_suspension_with_the_visits_behind_them() -> None:
    rows = _honest_team(agents=3, firms_each=4)
    for row in rows:
        if row["agent_id"] == "agent_001":
            row.update(latitude=53.0, longitude=-2.0, employees_observed=2, customers_observed=1)
            row.update(stock_level="normal", photo_count=1, notes="ok")
    report = detect(make_canonical("survey_visits", rows))

    assert report.recommended == ["agent_001"]
    assert _row(report, "agent_001")["flags"] == ["REUSED_GPS", "COPIED_ANSWERS"]
    evidence = report.evidence
    assert sorted(evidence["code"].unique()) == ["COPIED_ANSWERS", "REUSED_GPS"]
    assert evidence.iloc[0].to_dict() == {
        "agent_id": "agent_001",
        "code": "COPIED_ANSWERS",
        "sme_id": "SME-004",
        "visit_id": "SME-004-v1",
        "detail": "answers near-identical to a visit of another firm",
    }


def test_a_missing_column_is_named() -> None:
    visits = make_canonical("survey_visits", [_visit("SME-001", "agent_001", 1)]).drop(columns=["agent_id"])
    with pytest.raises(ValueError, match=r"survey_visits: missing columns \['agent_id'\]"):
        detect(visits)


@pytest.mark.parametrize("seed", [20261125, 7])
def test_the_sandbox_copier_is_caught_and_no_honest_agent_is(seed: int) -> None:
    universe = Universe(seed=seed, size=400, as_of=dt.date(2026, 11, 1))
    truth = universe.truth()
    report = detect(truth["survey_visits"], truth["monthly_financials"])

    assert report.recommended == ["agent_013"]
    copier = _row(report, "agent_013")
    assert copier["flags"] == ["CONTRADICTS_BOOKS", "REUSED_GPS", "COPIED_ANSWERS"]
    honest = report.agents[report.agents["agent_id"] != "agent_013"]
    assert (honest["score"] == 0).all(), honest[honest["score"] > 0].to_dict("records")


def test_a_sandbox_without_copiers_suspends_nobody() -> None:
    universe = Universe(seed=3, size=300, as_of=dt.date(2026, 11, 1), mix=PopulationMix(copier_agents=()))
    truth = universe.truth()

    assert detect(truth["survey_visits"], truth["monthly_financials"]).recommended == []


def test_a_suspended_agents_visit_counts_but_verifies_nothing() -> None:
    smes = pd.DataFrame({"sme_id": ["SME-001", "SME-002"], "history_months": [24, 24]})
    visits = make_canonical(
        "survey_visits",
        [
            _visit("SME-001", "agent_001", 1, premises_found=True, business_operating=True),
            _visit("SME-002", "agent_002", 1, premises_found=True, business_operating=True),
        ],
    )
    books = _books(["SME-001", "SME-002"], revenue=800.0)
    as_of = dt.date(2026, 1, 1)
    columns = ["sme_id", "survey_visits", "survey_verified_rate", "survey_revenue_ratio"]

    trusted = compute_features({"survey_visits": visits, "monthly_financials": books}, smes, as_of=as_of)
    marked = mark_suspended_visits(visits, {"agent_002"})
    after = compute_features({"survey_visits": marked, "monthly_financials": books}, smes, as_of=as_of)

    assert trusted[columns].to_dict("records") == [
        {"sme_id": "SME-001", "survey_visits": 1, "survey_verified_rate": 1.0, "survey_revenue_ratio": 1.25},
        {"sme_id": "SME-002", "survey_visits": 1, "survey_verified_rate": 1.0, "survey_revenue_ratio": 1.25},
    ]
    assert after[columns].fillna(-1).to_dict("records") == [
        {"sme_id": "SME-001", "survey_visits": 1, "survey_verified_rate": 1.0, "survey_revenue_ratio": 1.25},
        {"sme_id": "SME-002", "survey_visits": 1, "survey_verified_rate": 0.0, "survey_revenue_ratio": -1},
    ]
