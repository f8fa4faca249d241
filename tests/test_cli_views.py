"""The views say what is true: a date that never ran, failed pulls, quarantine in full and as JSON."""

from __future__ import annotations

import datetime as dt
import json

import pytest

from dossier.cli import main
from dossier.report import OUTCOMES, pipeline_report
from dossier.settings import Settings
from warehouse import consent
from warehouse.db import session_scope
from warehouse.models import IngestionRun, QuarantineEntry

AS_OF = dt.date(2026, 11, 25)
SOURCES = ("accounting", "tax", "utility", "survey")
LONG_RECORD = "page=3/reports[11]/balance_sheet/inventory/" + "deeply/nested/" * 6 + "value"
LONG_REASON = "not a number: " + "'12,3x'" * 20


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> str:
    capsys.readouterr()
    assert main(list(argv)) == 0
    return capsys.readouterr().out


@pytest.fixture
def seeded(capsys: pytest.CaptureFixture[str], home: Settings) -> Settings:
    run(capsys, "sandbox", "seed", "--smes", "8")
    return home


def add_runs(statuses: dict[str, dict[str, str]]) -> None:
    now = dt.datetime.combine(AS_OF, dt.time(6), tzinfo=dt.UTC)
    with session_scope() as session:
        for sme_id, by_source in statuses.items():
            for source, status in by_source.items():
                session.add(
                    IngestionRun(
                        sme_id=sme_id,
                        source=source,
                        as_of_date=AS_OF,
                        status=status,
                        error_class="retriable" if status == "failed" else None,
                        started_at=now,
                        finished_at=now,
                    )
                )


def test_status_of_a_date_that_never_ran_says_so(capsys, seeded: Settings) -> None:
    out = run(capsys, "status", "--as-of", "2026-11-02")
    text = " ".join(out.split())
    assert "No run recorded for as-of 2026-11-02: nothing was pulled, evaluated or published" in text
    assert "Run it with: dossier run --as-of 2026-11-02" in text
    assert "withheld" not in text


def test_failed_pulls_have_their_own_row_and_the_summary_adds_up(capsys, seeded: Settings) -> None:
    at = dt.datetime.combine(AS_OF, dt.time(), tzinfo=dt.UTC)
    with session_scope() as session:
        smes = [f"SME-{n:06d}" for n in range(1, 9)]
        coverage = {s for s, terms in consent.terms_of(session, smes, active_at=(at,)).items() if terms}
    add_runs(
        {
            "SME-000001": dict.fromkeys(SOURCES, "pulled"),
            "SME-000002": {"accounting": "failed", "tax": "failed"},
            "SME-000003": {"accounting": "skipped_no_consent"},
            "SME-000004": {"accounting": "quarantined", "tax": "pulled"},
            "SME-000005": {"accounting": "pulled", "tax": "failed"},
        }
    )
    untouched = ["SME-000006", "SME-000007", "SME-000008"]
    consenting_untouched = sum(sme in coverage for sme in untouched)

    report = pipeline_report(AS_OF)

    assert report["ran"] is True
    assert report["outcomes"] == {
        "published": 0,
        "evaluated_not_published": 0,
        "held": 0,
        "quarantined": 1,
        "pulled_not_evaluated": 2,
        "pull_failed": 1,
        "no_active_consent": 1 + len(untouched) - consenting_untouched,
        "not_pulled": consenting_untouched,
    }
    assert sum(report["outcomes"].values()) == report["smes_registered"] == 8
    out = run(capsys, "status", "--as-of", AS_OF.isoformat()).split("Pulls by source")[0]
    rows = {
        cells[0]: cells[1]
        for line in out.splitlines()
        if line.startswith("│") and len(cells := [c.strip() for c in line.strip("│").split("│")]) == 2
    }
    assert rows == {
        **{label: str(report["outcomes"][key]) for key, label in OUTCOMES.items()},
        "registered": "8",
        "dossier versions published (one per consent scope)": "0",
        "new or changed on this date": "0",
        "kept from an earlier date (unchanged)": "0",
        "dossier versions held (a consented source failed to pull)": "0",
    }


def test_quarantine_lists_every_field_in_full_and_as_json(capsys, seeded: Settings) -> None:
    with session_scope() as session:
        session.add(
            QuarantineEntry(
                sme_id="SME-000002",
                as_of_date=AS_OF,
                stage="ingest",
                source="accounting",
                table_name="monthly_financials",
                record=LONG_RECORD,
                field="balance_sheet.inventory",
                reason=LONG_REASON,
                raw_sha256="ab" * 32,
            )
        )

    rows = json.loads(run(capsys, "quarantine", "--as-of", AS_OF.isoformat(), "--json"))
    assert rows == [
        {
            "sme_id": "SME-000002",
            "stage": "ingest",
            "source": "accounting",
            "table_name": "monthly_financials",
            "record": LONG_RECORD,
            "field": "balance_sheet.inventory",
            "reason": LONG_REASON,
            "raw_sha256": "ab" * 32,
            "resolved_at": None,
        }
    ]
    table = run(capsys, "quarantine", "--as-of", AS_OF.isoformat())
    assert "…" not in table
    cells: dict[int, str] = {}
    for line in table.splitlines():
        if line.startswith("│"):
            for i, cell in enumerate(line.strip("│").split("│")):
                cells[i] = cells.get(i, "") + cell.strip()
    assert cells[4] == LONG_RECORD
    assert cells[6].replace(" ", "") == LONG_REASON.replace(" ", "")
    assert table.rstrip().endswith("1 entries")
    assert (
        json.loads(run(capsys, "quarantine", "--as-of", AS_OF.isoformat(), "--sme", "SME-000001", "--json"))
        == []
    )


def test_a_corrupt_canonical_file_fails_naming_the_step_and_the_file(seeded: Settings) -> None:
    from dossier.pipeline import validate
    from dossier.tasks import StepError, run_step
    from warehouse.storage import Store

    store = Store.from_settings()
    path = store.layout.canonical("monthly_financials", AS_OF.isoformat(), 0)
    store.write_bytes(path, b"PAR1 this is not parquet")

    with pytest.raises(StepError) as raised:
        run_step(f"validate shard 0 as of {AS_OF}", validate, 0, AS_OF)

    assert str(raised.value).startswith(
        f"validate shard 0 as of {AS_OF}: {path}: not a readable Parquet file ("
    )
    assert str(raised.value).endswith("); delete it and re-run the step that writes it")


def test_status_says_the_dates_shard_count_and_why(capsys, seeded: Settings) -> None:
    import dataclasses

    from dossier import pipeline
    from dossier.settings import override

    text = " ".join(run(capsys, "status", "--as-of", "2026-11-02").split())
    assert "Shards: not planned yet for 2026-11-02 (its first step plans them)." in text
    now = dt.datetime.now(dt.UTC)
    with session_scope() as session:
        smes = [f"SME-{n:06d}" for n in range(1, 9)]
        consenting = sum(bool(t) for t in consent.terms_of(session, smes, active_at=(now,)).values())
    assert consenting > 1
    earlier = AS_OF - dt.timedelta(days=1)
    with override(dataclasses.replace(seeded, shard_count=None, shard_size=1)):
        assert pipeline.plan_shards(earlier) == list(range(consenting))
    assert pipeline.plan_shards(AS_OF) == [0, 1]  # the fixture's DOSSIER_SHARD_COUNT=2
    text = " ".join(run(capsys, "status", "--as-of", earlier.isoformat()).split())
    assert f"Shards: {consenting} shards: planned from {consenting} SMEs, size 1" in text
    text = " ".join(run(capsys, "status", "--as-of", AS_OF.isoformat()).split())
    assert f"Shards: 2 shards: DOSSIER_SHARD_COUNT=2 ({consenting} SMEs)" in text
