"""Every pipeline step records its counts and timing in ``stage_runs``; ``dossier status`` shows them."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest

from dossier import pipeline
from dossier.cli import main
from dossier.pipeline import record_stage, recorded, stage_runs, stage_summary
from dossier.settings import Settings
from warehouse.db import session_scope
from warehouse.errors import DossierError

AS_OF = dt.date(2026, 11, 25)
STARTED = dt.datetime(2026, 11, 25, 6, tzinfo=dt.UTC)


@recorded("validate")
def validate_step(shard: int, as_of: dt.date, *, fail: bool = False) -> dict[str, Any]:
    if fail:
        raise DossierError(
            "canonical/vat_returns/as_of=2026-11-25/shard=0002.parquet: not a readable Parquet file"
        )
    return {"shard": shard, "as_of": as_of.isoformat(), "smes": 3, "passed": 2, "failed": 1, "path": "p"}


@recorded("ingest")
def ingest_step(
    source: str, shard: int, as_of: dt.date, *, sme_ids: list[str] | None = None
) -> dict[str, Any]:
    return {"source": source, "shard": shard, "pulled": len(sme_ids or ()), "failed": 0, "ok": True}


def runs() -> list[dict[str, Any]]:
    with session_scope() as session:
        return stage_runs(session, AS_OF)


def without_times(run: dict[str, Any]) -> dict[str, Any]:
    started, finished, seconds = run["started_at"], run["finished_at"], run["seconds"]
    assert seconds >= 0
    assert started <= finished <= dt.datetime.now(dt.UTC)
    assert abs((finished - started).total_seconds() - seconds) < 0.01
    return {k: v for k, v in run.items() if k not in ("started_at", "finished_at", "seconds")}


def test_a_step_records_its_counts_and_a_rerun_replaces_them(home_on: Settings, warehouse_url: str) -> None:
    assert validate_step(2, AS_OF) == {
        "shard": 2,
        "as_of": "2026-11-25",
        "smes": 3,
        "passed": 2,
        "failed": 1,
        "path": "p",
    }
    assert [without_times(r) for r in runs()] == [
        {
            "as_of_date": AS_OF,
            "stage": "validate",
            "source": "",
            "shard": 2,
            "status": "succeeded",
            "counts": {"smes": 3, "passed": 2, "failed": 1},
            "error": "",
            "attempts": 1,
        }
    ]

    with pytest.raises(DossierError, match=r"shard=0002\.parquet: not a readable Parquet file"):
        validate_step(2, AS_OF, fail=True)
    assert [without_times(r) for r in runs()] == [
        {
            "as_of_date": AS_OF,
            "stage": "validate",
            "source": "",
            "shard": 2,
            "status": "failed",
            "counts": {},
            "error": "canonical/vat_returns/as_of=2026-11-25/shard=0002.parquet: not a readable Parquet file",
            "attempts": 2,
        }
    ]


def test_per_source_steps_and_scoped_runs_have_their_own_rows(home_on: Settings, warehouse_url: str) -> None:
    ingest_step("tax", 1, AS_OF)
    ingest_step("accounting", 1, AS_OF, sme_ids=["SME-2", "SME-1", "SME-2"])
    validate_step(0, AS_OF)
    assert [without_times(r) for r in runs()] == [
        {
            "as_of_date": AS_OF,
            "stage": "ingest",
            "source": source,
            "shard": 1,
            "status": "succeeded",
            "counts": counts,
            "error": "",
            "attempts": 1,
        }
        for source, counts in [
            ("accounting", {"pulled": 3, "failed": 0, "scoped_smes": 2}),
            ("tax", {"pulled": 0, "failed": 0}),
        ]
    ] + [
        {
            "as_of_date": AS_OF,
            "stage": "validate",
            "source": "",
            "shard": 0,
            "status": "succeeded",
            "counts": {"smes": 3, "passed": 2, "failed": 1},
            "error": "",
            "attempts": 1,
        }
    ]


def test_the_pipeline_publish_records_its_run(home: Settings) -> None:
    summary = pipeline.publish(AS_OF, now=STARTED)
    (run,) = runs()
    assert without_times(run) == {
        "as_of_date": AS_OF,
        "stage": "publish",
        "source": "",
        "shard": -1,
        "status": "succeeded",
        "counts": {
            "schema_version": summary["schema_version"],
            "rows": 0,
            "new_or_changed": 0,
            "unchanged": 0,
            "kept": 0,
            "current": 0,
            "unpublished": 0,
            "withheld_no_consent.count": 0,
        },
        "error": "",
        "attempts": 1,
    }


def record(
    stage: str, source: str, shard: int, seconds: float, counts: dict[str, int], status: str = "succeeded"
) -> None:
    with session_scope() as session:
        record_stage(
            session,
            as_of=AS_OF,
            stage=stage,
            source=source,
            shard=shard,
            status=status,
            started_at=STARTED,
            seconds=seconds,
            counts=counts,
            error="" if status == "succeeded" else "boom",
        )


def test_status_shows_each_step_with_its_tasks_seconds_and_counts(
    capsys: pytest.CaptureFixture[str], home: Settings
) -> None:
    record("publish", "", -1, 1.25, {"rows": 7})
    for shard, seconds in enumerate((2.0, 3.5)):
        record("ingest", "tax", shard, seconds, {"pulled": 4, "failed": shard})
        record("validate", "", shard, 1.0, {"smes": 4}, status="failed" if shard else "succeeded")
    assert stage_summary(runs()) == [
        {"stage": "ingest", "source": "tax", "tasks": 2, "failed": 0, "seconds": 5.5, "slowest": 3.5,
         "counts": {"pulled": 8, "failed": 1}},
        {"stage": "validate", "source": "", "tasks": 2, "failed": 1, "seconds": 2.0, "slowest": 1.0,
         "counts": {"smes": 8}},
        {"stage": "publish", "source": "", "tasks": 1, "failed": 0, "seconds": 1.25, "slowest": 1.25,
         "counts": {"rows": 7}},
    ]  # fmt: skip

    capsys.readouterr()
    assert main(["status", "--as-of", AS_OF.isoformat()]) == 0
    out = capsys.readouterr().out.split("Pipeline steps")[1]
    lines = [" ".join(line.replace("│", " ").split()) for line in out.splitlines()]
    assert [line for line in lines if line.startswith(("ingest", "validate", "publish"))] == [
        "ingest tax 2 0 5.50 3.50 pulled 8, failed 1",
        "validate 2 1 2.00 1.00 smes 8",
        "publish 1 0 1.25 1.25 rows 7",
    ]


def test_status_of_a_date_without_steps_says_so(capsys: pytest.CaptureFixture[str], home: Settings) -> None:
    capsys.readouterr()
    assert main(["status", "--as-of", "2026-11-02"]) == 0
    assert "No pipeline step recorded for 2026-11-02" in " ".join(capsys.readouterr().out.split())


def test_a_count_missing_for_every_sme_of_a_shard_is_staged_as_the_schema_types_it() -> None:
    """Staged score files of every shard have the same types: the dossier schema's integer counts
    stay integers where a shard's values made them floating point or left them all missing."""
    import pyarrow as pa

    from dossier.pipeline import _dossier_integers

    staged = pa.table(
        {
            "sme_id": ["SME-000001", "SME-000002"],
            "survey_visits": pa.array([None, None], pa.null()),
            "vat_returns_due": pa.array([12.0, None], pa.float64()),
            "pd_12m": pa.array([0.02, None], pa.float64()),
        }
    )
    typed = _dossier_integers(staged)
    assert typed.schema == pa.schema(
        [
            ("sme_id", pa.string()),
            ("survey_visits", pa.int32()),
            ("vat_returns_due", pa.int32()),
            ("pd_12m", pa.float64()),
        ]
    )
    assert typed.to_pylist() == [
        {"sme_id": "SME-000001", "survey_visits": None, "vat_returns_due": 12, "pd_12m": 0.02},
        {"sme_id": "SME-000002", "survey_visits": None, "vat_returns_due": None, "pd_12m": None},
    ]
