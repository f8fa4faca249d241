"""Shard plans: a date's shard count is counted from its SMEs once, recorded, and used by every step of
the date; the count keeps the previous date's while it stays within the hysteresis band."""

from __future__ import annotations

import dataclasses
import datetime as dt
from pathlib import Path

import pytest
from sqlalchemy import Engine, insert, select, update

from dossier import pipeline
from dossier.settings import Settings, for_home, override
from warehouse import shard_plans
from warehouse.db import make_engine, session_scope
from warehouse.migrate import upgrade
from warehouse.models import Consent, ShardPlan, Sme, StageRun
from warehouse.shard_plans import ShardPolicy, decide
from warehouse.shards import shard_of

AT = dt.datetime(2026, 11, 1, 9, tzinfo=dt.UTC)
DAY = dt.date(2026, 11, 1)
POLICY = ShardPolicy(shard_size=10, max_shards=6)


@pytest.mark.parametrize(
    ("smes", "previous", "expected"),
    [
        (0, None, (1, "size")),
        (1, None, (1, "size")),
        (10, None, (1, "size")),
        (11, None, (2, "size")),
        (60, None, (6, "size")),
        (61, None, (6, "cap")),
        (10_000, None, (6, "cap")),
        # previous 3: kept from 0.5 x 10 x 3 = 15 to 2 x 10 x 3 = 60 SMEs
        (15, 3, (3, "kept")),
        (14, 3, (2, "size")),
        (60, 3, (3, "kept")),
        (61, 3, (6, "cap")),
        (41, 2, (5, "size")),
        (40, 2, (2, "kept")),
        (9, 2, (1, "size")),
        # a previous count above the cap is never kept
        (70, 8, (6, "cap")),
    ],
)
def test_the_count_from_the_sizes(smes: int, previous: int | None, expected: tuple[int, str]) -> None:
    assert decide(smes, POLICY, previous=previous) == expected


def test_an_explicit_count_wins_over_size_cap_and_hysteresis() -> None:
    fixed = dataclasses.replace(POLICY, fixed=9)
    assert [decide(smes, fixed, previous=3) for smes in (0, 30, 10_000)] == [(9, "override")] * 3


def _consenting(engine: Engine, count: int, *, start: int = 0, at: dt.datetime = AT) -> list[str]:
    """``count`` more SMEs, each with one consent active at ``at``; plus, for the first batch, SMEs whose
    consent is revoked, expired or not yet granted (they do not count)."""
    ids = [f"SME-{n:06d}" for n in range(start, start + count)]
    others = [] if start else ["SME-900001", "SME-900002", "SME-900003"]
    with session_scope(engine) as session:
        session.execute(
            insert(Sme),
            [
                {"sme_id": s, "name": s, "industry": "retail", "region": "North", "size_band": "micro"}
                for s in ids + others
            ],
        )
        day = dt.timedelta(days=1)
        rows = [_consent(s, "active", at - day, at + 30 * day) for s in ids]
        if others:
            rows += [
                _consent(others[0], "revoked", at - day, at + 30 * day),
                _consent(others[1], "active", at - 60 * day, at - day),
                _consent(others[2], "active", at + 100 * day, at + 130 * day),
            ]
        # a second consent of an SME counts the SME once
        rows.append({**_consent(ids[0], "active", at - day, at + 9 * day), "consent_id": f"C2-{ids[0]}"})
        session.execute(insert(Consent), rows)
    return ids


def _consent(sme_id: str, status: str, granted: dt.datetime, expires: dt.datetime) -> dict[str, object]:
    return {
        "consent_id": f"C-{sme_id}",
        "sme_id": sme_id,
        "purpose": "credit_decision",
        "sources": ["tax"],
        "recipients": ["northwind-capital"],
        "history_months": 12,
        "granted_at": granted,
        "expires_at": expires,
        "status": status,
        "reconfirm_by": granted + dt.timedelta(days=90),
    }


def _rows(engine: Engine) -> list[dict[str, object]]:
    columns = [c.key for c in ShardPlan.__table__.columns]
    with session_scope(engine) as session:
        plans = session.scalars(select(ShardPlan).order_by(ShardPlan.as_of_date)).all()
        return [{c: getattr(p, c) for c in columns} for p in plans]


def _row(
    day: dt.date, count: int, basis: str, smes: int, previous: tuple[dt.date, int] | None, at: dt.datetime
) -> dict[str, object]:
    return {
        "as_of_date": day,
        "shard_count": count,
        "basis": basis,
        "smes": smes,
        "shard_size": 10,
        "max_shards": 6,
        "previous_as_of": None if previous is None else previous[0],
        "previous_count": None if previous is None else previous[1],
        "planned_at": at,
    }


def test_a_plan_is_recorded_once_and_the_next_dates_keep_or_change_its_count(
    warehouse_engine: Engine,
) -> None:
    _consenting(warehouse_engine, 25)
    day2, day3, day0 = DAY + dt.timedelta(days=1), DAY + dt.timedelta(days=2), DAY - dt.timedelta(days=1)
    with session_scope(warehouse_engine) as session:
        first = shard_plans.plan_date(session, DAY, POLICY, at=AT)
    assert first.shards == [0, 1, 2]
    _consenting(warehouse_engine, 20, start=25)  # 45 SMEs now
    with session_scope(warehouse_engine) as session:
        # a re-run of the date, with other settings and more SMEs, keeps its plan
        again = shard_plans.plan_date(session, DAY, ShardPolicy(shard_size=1, max_shards=100, fixed=7), at=AT)
        assert again == first
        kept = shard_plans.plan_date(session, day2, POLICY, at=AT + dt.timedelta(days=1))
    _consenting(warehouse_engine, 30, start=45)  # 75 SMEs: 25 per shard of 3, past 2 x 10
    with session_scope(warehouse_engine) as session:
        grown = shard_plans.plan_date(session, day3, POLICY, at=AT + dt.timedelta(days=2))
        backfill = shard_plans.plan_date(session, day0, POLICY, at=AT + dt.timedelta(days=3))
    assert (kept.shard_count, grown.shard_count, backfill.shard_count) == (3, 6, 6)
    assert _rows(warehouse_engine) == [
        _row(day0, 6, "cap", 75, None, AT + dt.timedelta(days=3)),
        _row(DAY, 3, "size", 25, None, AT),
        _row(day2, 3, "kept", 45, (DAY, 3), AT + dt.timedelta(days=1)),
        _row(day3, 6, "cap", 75, (day2, 3), AT + dt.timedelta(days=2)),
    ]
    assert [p.describe() for p in (first, kept)] == [
        "3 shards: planned from 25 SMEs, size 10",
        "3 shards: kept the 2026-11-01 count (45 SMEs, 15 per shard, within 0.5-2 x the size 10)",
    ]


def test_a_date_run_before_plans_were_recorded_keeps_the_count_it_ran_with(warehouse_engine: Engine) -> None:
    _consenting(warehouse_engine, 25)
    with session_scope(warehouse_engine) as session:
        session.execute(
            insert(StageRun),
            [
                {
                    "as_of_date": DAY,
                    "stage": stage,
                    "source": source,
                    "shard": shard,
                    "status": "succeeded",
                    "started_at": AT,
                    "finished_at": AT,
                    "seconds": 1.0,
                    "counts": {},
                    "error": "",
                    "attempts": 1,
                }
                for stage, source, shard in [("ingest", "tax", 7), ("ingest", "tax", 2), ("publish", "", -1)]
            ],
        )
    with session_scope(warehouse_engine) as session:
        plan = shard_plans.plan_date(session, DAY, dataclasses.replace(POLICY, fixed=2), at=AT)
    assert _rows(warehouse_engine) == [_row(DAY, 8, "earlier_runs", 25, None, AT)]
    assert plan.describe() == "8 shards: the count the date's steps ran with before shard plans were recorded"


def test_only_a_date_planned_with_the_same_count_shares_the_layout(warehouse_engine: Engine) -> None:
    _consenting(warehouse_engine, 25)
    day2, day3 = DAY + dt.timedelta(days=1), DAY + dt.timedelta(days=2)
    with session_scope(warehouse_engine) as session:
        shard_plans.plan_date(session, DAY, POLICY, at=AT)
        shard_plans.plan_date(session, day2, POLICY, at=AT)  # kept: 3
        assert shard_plans.same_layout(session, DAY, day2, POLICY)
        assert not shard_plans.same_layout(session, day2, day3, dataclasses.replace(POLICY, fixed=4))
        # a date never planned is another layout
        assert not shard_plans.same_layout(session, DAY - dt.timedelta(days=9), DAY, POLICY)


@pytest.fixture
def planned_home(warehouse_url: str, tmp_path: Path) -> Settings:
    settings = for_home(tmp_path / "var", warehouse_url=warehouse_url, shard_size=10, max_shards=6)
    assert settings.shard_count is None
    engine = make_engine(settings.warehouse_url)
    upgrade(engine)
    _consenting(engine, 25, at=dt.datetime.now(dt.UTC))  # the steps plan at the current instant
    engine.dispose()
    return settings


def test_every_step_of_a_date_uses_its_recorded_plan(planned_home: Settings) -> None:
    """The ingest DAG's plan task, a grant's run, the publish DAG's plan task and a re-run with an
    explicit DOSSIER_SHARD_COUNT all see the count the date's first step recorded."""
    from connectors.ingest import ingest_shard

    ids = [f"SME-{n:06d}" for n in range(25)]
    engine = make_engine(planned_home.warehouse_url)
    with override(planned_home):
        assert pipeline.scoped_shards({"sme_ids": None}, DAY) == [0, 1, 2]
    with session_scope(engine) as session:
        session.execute(
            update(Consent).values(status="revoked")
        )  # no SME consents: 1 shard, if planned again
    for later in (planned_home, dataclasses.replace(planned_home, shard_count=5, shard_size=1)):
        with override(later):
            assert pipeline.plan_shards(DAY) == [0, 1, 2]
            assert pipeline.shards_of(ids, DAY) == sorted({shard_of(s, 3) for s in ids})
            assert pipeline.scoped_shards({"sme_ids": [ids[4]]}, DAY) == [shard_of(ids[4], 3)]
            with pytest.raises(ValueError, match=r"shard 3 outside 0\.\.2 \(the shard plan of 2026-11-01\)"):
                ingest_shard("tax", 3, DAY)
    with override(dataclasses.replace(planned_home, shard_count=5)):
        assert pipeline.plan_shards(DAY + dt.timedelta(days=1)) == [0, 1, 2, 3, 4]  # a new date: the override
    planned = [(r["as_of_date"], r["shard_count"], r["basis"], r["smes"]) for r in _rows(engine)]
    engine.dispose()
    assert planned == [(DAY, 3, "size", 25), (DAY + dt.timedelta(days=1), 5, "override", 0)]


def test_a_date_whose_count_differs_from_the_previous_dates_is_validated_and_scored_in_full(
    tmp_path: Path,
) -> None:
    import pandas as pd

    from bench.core_pipeline import AS_OF, _settings, prepare
    from warehouse.canonical import TABLES
    from warehouse.shards import shard_column
    from warehouse.storage import Store

    home = tmp_path / "home"
    prepare(home, 20, 2)
    with override(_settings(home, 2)):
        for shard in range(2):
            pipeline.validate(shard, AS_OF)
            pipeline.evaluate(shard, AS_OF)
    later = AS_OF + dt.timedelta(days=1)
    with override(_settings(home, 3)):
        store = Store.from_settings()
        for name, table in TABLES.items():  # the same rows on the next date, in 3 shards
            frames = [
                store.read_table(path).to_pandas()
                for k in range(2)
                if store.exists(path := store.layout.canonical(name, AS_OF.isoformat(), k))
            ]
            rows = pd.concat(frames, ignore_index=True)
            for k in range(3):
                part = rows[shard_column(rows["sme_id"], 3) == k]
                store.write_table(store.layout.canonical(name, later.isoformat(), k), table.to_arrow(part))
        runs = [(pipeline.validate(k, later), pipeline.evaluate(k, later)) for k in range(3)]
        staged = [
            store.read_table(store.layout.staging(pipeline.SCORES_STEP, later.isoformat(), k)).to_pandas()
            for k in range(3)
        ]
        earlier = [
            store.read_table(store.layout.staging(pipeline.SCORES_STEP, AS_OF.isoformat(), k)).to_pandas()
            for k in range(2)
        ]
        # nothing is carried across the count change; the next date under the same count carries again
        previous = [
            pipeline._previous_staged(store, pipeline.VALIDATION_STEP, "validate", 0, day)
            for day in (later, later + dt.timedelta(days=1))
        ]
    assert previous[0] is None
    assert previous[1] is not None
    assert previous[1][1].num_rows == runs[0][0]["smes"]  # (path, staged rows)
    assert [(v["carried"], v["validated"], e["carried"]) for v, e in runs] == [
        (0, v["smes"], 0) for v, _ in runs
    ]
    for k, frame in enumerate(staged):  # every shard holds its own SMEs only, each once
        assert set(shard_column(frame["sme_id"], 3)) <= {k}
    both = [pd.concat(frames, ignore_index=True) for frames in (staged, earlier)]
    pairs = [sorted(zip(f["sme_id"], f["scope"], strict=True)) for f in both]
    assert pairs[0] == pairs[1]
    assert pairs[0]
