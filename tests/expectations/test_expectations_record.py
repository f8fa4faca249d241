"""record_validation on SQLite and PostgreSQL: results, quarantine, idempotent re-runs, resolution."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from expectation_frames import AS_OF, edit, frames, row_sets, sha
from sqlalchemy import Engine, select

from expectations.runner import (
    ShardValidation,
    confirm_with_gx,
    gx_results_path,
    read_evidence,
    record_validation,
    validate_shard,
)
from expectations.suites import loaded_suites
from warehouse.db import session_scope
from warehouse.models import QuarantineEntry, Sme, ValidationResult
from warehouse.storage import Store

SMES = ["SME-000001", "SME-000002", "SME-000003"]
OTHER_SHARD_SME = "SME-000099"
T1 = dt.datetime(2026, 11, 1, 6, 0, tzinfo=dt.UTC)
T2 = dt.datetime(2026, 11, 1, 7, 0, tzinfo=dt.UTC)
T3 = dt.datetime(2026, 11, 1, 8, 0, tzinfo=dt.UTC)
NEGATIVE_REVENUE = (
    "monthly_financials record period_month=2026-07-01, source_record=reports[0] field revenue: "
    "revenue cannot be negative and must be a plausible amount. "
    "[expect_column_values_to_be_between(revenue)] observed revenue=-10.0"
)
GPS = (
    "survey_visits record visit_id=visit-SME-000003, source_record=results[3] field latitude: "
    "Latitude is a WGS84 latitude. [expect_column_values_to_be_between(latitude)] observed latitude=95.0"
)


def _validation(*, defects: bool) -> ShardValidation:
    rows = row_sets(SMES)
    if defects:
        edit(
            rows["monthly_financials"],
            "SME-000001",
            {"period_month": dt.date(2026, 7, 1)},
            revenue=-10.0,
            net_profit=-7810.0,
        )
        edit(rows["survey_visits"], "SME-000003", {}, latitude=95.0)
    return validate_shard(frames(rows), as_of=AS_OF, shard=1)


@pytest.fixture(scope="module")
def broken() -> ShardValidation:
    return _validation(defects=True)


@pytest.fixture(scope="module")
def fixed() -> ShardValidation:
    return _validation(defects=False)


@pytest.fixture
def engine(warehouse_engine: Engine) -> Engine:
    with session_scope(warehouse_engine) as session:
        session.add_all(
            [
                Sme(sme_id=s, name=s, industry="retail", region="UKI", size_band="micro")
                for s in [*SMES, OTHER_SHARD_SME]
            ]
        )
    return warehouse_engine


def _quarantine(engine: Engine) -> list[dict[str, Any]]:
    columns = [
        "sme_id",
        "as_of_date",
        "stage",
        "source",
        "table_name",
        "record",
        "field",
        "reason",
        "raw_sha256",
        "resolved_at",
    ]
    with session_scope(engine) as session:
        rows = session.execute(
            select(*(getattr(QuarantineEntry, c) for c in columns)).order_by(
                QuarantineEntry.sme_id, QuarantineEntry.reason
            )
        ).all()
    return [dict(zip(columns, row, strict=True)) for row in rows]


def _results(engine: Engine) -> dict[tuple[str, str], dict[str, Any]]:
    with session_scope(engine) as session:
        rows = session.scalars(select(ValidationResult)).all()
        return {
            (r.table_name, r.expectation): {
                "as_of_date": r.as_of_date,
                "shard": r.shard,
                "suite": r.suite,
                "success": r.success,
                "element_count": r.element_count,
                "unexpected_count": r.unexpected_count,
                "failing_smes": r.failing_smes,
                "run_at": r.run_at,
            }
            for r in rows
        }


def _open(sme_id: str, source: str, table: str, record: str, field: str, reason: str) -> dict[str, Any]:
    return {
        "sme_id": sme_id,
        "as_of_date": AS_OF,
        "stage": "validate",
        "source": source,
        "table_name": table,
        "record": record,
        "field": field,
        "reason": reason,
        "raw_sha256": sha(sme_id, source),
        "resolved_at": None,
    }


EXPECTED_OPEN = [
    _open(
        "SME-000001",
        "accounting",
        "monthly_financials",
        "period_month=2026-07-01, source_record=reports[0]",
        "revenue",
        NEGATIVE_REVENUE,
    ),
    _open(
        "SME-000003",
        "survey",
        "survey_visits",
        "visit_id=visit-SME-000003, source_record=results[3]",
        "latitude",
        GPS,
    ),
]


def test_failing_smes_are_quarantined_with_whole_records(
    engine: Engine, broken: ShardValidation, tmp_path: Path
) -> None:
    store = Store(str(tmp_path / "store"))
    with session_scope(engine) as session:
        summary = record_validation(session, broken, store=store, now=T1)
    expectation_count = sum(len(s.ids) for s in loaded_suites().values())
    assert summary == {
        "validation_results": expectation_count,
        "quarantined": 2,
        "failing_smes": 2,
        "resolved": 0,
        "gx_results": gx_results_path(store, AS_OF, 1),
    }
    assert _quarantine(engine) == EXPECTED_OPEN
    results = _results(engine)
    assert len(results) == expectation_count
    assert results[("monthly_financials", "expect_column_values_to_be_between(revenue)")] == {
        "as_of_date": AS_OF,
        "shard": 1,
        "suite": "monthly_financials",
        "success": False,
        "element_count": 9,
        "unexpected_count": 1,
        "failing_smes": ["SME-000001"],
        "run_at": T1,
    }
    assert results[("survey_visits", "expect_column_values_to_be_between(longitude)")] == {
        "as_of_date": AS_OF,
        "shard": 1,
        "suite": "survey_visits",
        "success": True,
        "element_count": 3,
        "unexpected_count": 0,
        "failing_smes": [],
        "run_at": T1,
    }
    document = store.read_json(gx_results_path(store, AS_OF, 1))
    assert (document["as_of"], document["shard"]) == (AS_OF.isoformat(), 1)
    assert sorted(document["evidence"]) == sorted(loaded_suites())
    stored = read_evidence(store, document["evidence"])
    visits = stored["survey_visits"]
    assert visits.sample.index.tolist() == broken.evidence["survey_visits"].sample.index.tolist()
    pd.testing.assert_frame_equal(visits.sample, broken.evidence["survey_visits"].sample, check_dtype=False)
    assert {i: o.rows.tolist() for i, o in visits.outcomes.items()} == {
        i: o.rows.tolist() for i, o in broken.evidence["survey_visits"].outcomes.items()
    }
    # GX confirms the stored evidence exactly as it confirms the evidence in memory
    assert (
        confirm_with_gx({1: stored}, as_of=AS_OF)["survey_visits"].to_json_dict()["results"]
        == (broken.gx_results["survey_visits"]["results"])
    )
    assert broken.gx_results["survey_visits"]["success"] is False


def test_rerun_changes_nothing(engine: Engine, broken: ShardValidation, tmp_path: Path) -> None:
    store = Store(str(tmp_path / "store"))
    with session_scope(engine) as session:
        first = record_validation(session, broken, store=store, now=T1)
    quarantine, results = _quarantine(engine), _results(engine)
    with session_scope(engine) as session:
        again = record_validation(session, broken, store=store, now=T1)
    assert again == first
    assert _quarantine(engine) == quarantine == EXPECTED_OPEN
    assert _results(engine) == results


def test_fixed_smes_are_resolved_and_reopened_when_they_fail_again(
    engine: Engine, broken: ShardValidation, fixed: ShardValidation, tmp_path: Path
) -> None:
    store = Store(str(tmp_path / "store"))
    other_shard = _open(
        OTHER_SHARD_SME, "tax", "vat_returns", "period_key=26A1", "status", "from another shard"
    )
    with session_scope(engine) as session:
        session.add(QuarantineEntry(**other_shard))
        record_validation(session, broken, store=store, now=T1)
    with session_scope(engine) as session:
        summary = record_validation(session, fixed, store=store, now=T2)
    assert (summary["quarantined"], summary["failing_smes"], summary["resolved"]) == (0, 0, 2)
    assert _quarantine(engine) == [
        {**EXPECTED_OPEN[0], "resolved_at": T2},
        {**EXPECTED_OPEN[1], "resolved_at": T2},
        other_shard,
    ]
    results = _results(engine)
    assert all(r["success"] and r["failing_smes"] == [] and r["run_at"] == T2 for r in results.values())
    with session_scope(engine) as session:
        summary = record_validation(session, broken, store=store, now=T3)
    assert (summary["quarantined"], summary["resolved"]) == (2, 0)
    assert _quarantine(engine) == [*EXPECTED_OPEN, other_shard]


@pytest.fixture(scope="module")
def only_gps() -> ShardValidation:
    rows = row_sets(SMES)
    edit(rows["survey_visits"], "SME-000003", {}, latitude=95.0)
    return validate_shard(frames(rows), as_of=AS_OF, shard=1)


def test_only_the_records_no_longer_failing_are_resolved(
    engine: Engine, broken: ShardValidation, only_gps: ShardValidation, tmp_path: Path
) -> None:
    store = Store(str(tmp_path / "store"))
    with session_scope(engine) as session:
        record_validation(session, broken, store=store, now=T1)
    with session_scope(engine) as session:
        summary = record_validation(session, only_gps, store=store, now=T2)
    assert summary["resolved"] == 1
    assert _quarantine(engine) == [{**EXPECTED_OPEN[0], "resolved_at": T2}, EXPECTED_OPEN[1]]
