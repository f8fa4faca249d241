"""One task per shard: ``validate_and_evaluate`` reads each canonical file of the shard once and
stages exactly what the two steps stage on their own (and what a full run stages)."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from pathlib import Path

import pyarrow as pa
import pytest
from landed_dates import grant_accounting_scope, land_again
from sqlalchemy import select

from bench.core_pipeline import AS_OF, NEXT, _settings, land_next_date, prepare
from dossier import pipeline
from dossier.settings import override
from warehouse.canonical import TABLES
from warehouse.db import session_scope
from warehouse.models import StageRun
from warehouse.storage import Store

SHARDS = 2


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """30 SMEs landed on AS_OF and, with 30% of them changed, on NEXT."""
    path = tmp_path_factory.mktemp("fused") / "home"
    prepare(path, 30, SHARDS)
    land_next_date(path, SHARDS, 0.3)
    with override(_settings(path, SHARDS)):
        yield path


def files_of(day: dt.date, shard: int) -> int:
    store = Store.from_settings()
    return sum(store.exists(store.layout.canonical(name, day.isoformat(), shard)) for name in TABLES)


def staged(day: dt.date) -> list[pa.Table]:
    store = Store.from_settings()
    return [
        store.read_table(store.layout.staging(step, day.isoformat(), shard))
        for step in (pipeline.VALIDATION_STEP, pipeline.SCORES_STEP)
        for shard in range(SHARDS)
    ]


def run_fused(day: dt.date) -> list[dict]:
    return [pipeline.validate_and_evaluate(shard, day) for shard in range(SHARDS)]


def run_apart_in_full(day: dt.date) -> list[pa.Table]:
    for shard in range(SHARDS):
        assert pipeline.validate(shard, day, full=True)["carried"] == 0
        assert pipeline.evaluate(shard, day, full=True)["carried"] == 0
    return staged(day)


def test_each_file_is_read_once_and_the_staged_rows_are_a_full_runs(home: Path) -> None:
    # the first date: every SME validated and scored, each file read once
    first = run_fused(AS_OF)
    for shard, done in enumerate(first):
        assert done["file_reads"] == files_of(AS_OF, shard) > 0
        assert done["validate"]["validated"] == done["validate"]["smes"] > 0
        assert done["evaluate"]["scored"] == done["evaluate"]["evaluated"] > 0
    with session_scope() as session:
        recorded = session.execute(
            select(StageRun.stage, StageRun.shard, StageRun.status).where(StageRun.as_of_date == AS_OF)
        ).all()
    assert sorted(r for r in recorded if r.stage in ("validate", "evaluate")) == [
        (stage, shard, "succeeded") for stage in ("evaluate", "validate") for shard in range(SHARDS)
    ]

    # the next date, incrementally: the changed SMEs and those whose scores fell due are read
    # once, by the validation, and the evaluation finds their rows read
    incremental = run_fused(NEXT)
    for shard, done in enumerate(incremental):
        assert done["file_reads"] == files_of(NEXT, shard)
        assert done["validate"]["carried"] > 0
        assert done["evaluate"]["carried"] > 0
    assert sum(d["evaluate"]["scored"] for d in incremental) > 0
    fused = staged(NEXT)
    assert all(a.equals(b) for a, b in zip(fused, run_apart_in_full(NEXT), strict=True))


def test_an_sme_scored_but_not_validated_again_is_read_then(home: Path) -> None:
    """A new consent scope re-scores an SME whose rows did not change and that is not validated
    again: its rows are read for the evaluation (a file read more), and the result is still a full
    run's."""
    later = NEXT + dt.timedelta(days=1)
    run_fused(NEXT)  # the date before, whatever ran before this test
    land_again(NEXT, later, SHARDS)
    store = Store.from_settings()
    # an SME that passed, with nothing due on the later date: neither validated nor scored again
    checked, scores = (
        store.read_table(store.layout.staging(step, NEXT.isoformat(), 0)).to_pandas()
        for step in (pipeline.VALIDATION_STEP, pipeline.SCORES_STEP)
    )
    due = set(checked.loc[~checked["passed"] | (checked["carry_until"] <= later), "sme_id"])
    due |= set(scores.loc[scores["carry_until"] <= later, "sme_id"])
    sme = sorted(set(scores["sme_id"]) - due)[0]
    grant_accounting_scope("fused-new-scope", sme, 5, granted=AS_OF)
    done = run_fused(later)
    assert done[0]["validate"]["validated"] < done[0]["validate"]["smes"]
    assert done[0]["evaluate"]["scored"] >= 1
    # what the validation read (if anything) did not hold the SME: its rows are read once more
    once = files_of(later, 0)
    assert done[0]["file_reads"] == (2 * once if done[0]["validate"]["validated"] else once)
    fused = staged(later)
    new = fused[SHARDS].filter(pa.compute.equal(fused[SHARDS].column("scope"), "accounting@5m"))
    assert new.column("sme_id").to_pylist() == [sme]
    assert all(a.equals(b) for a, b in zip(fused, run_apart_in_full(later), strict=True))
