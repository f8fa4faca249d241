"""Incremental pulls against the sandbox: a pull from the cursor on, plus the earlier rows kept, gives
the canonical rows a whole re-pull gives; cursors never move back and never follow a failed pull."""

from __future__ import annotations

import dataclasses
import datetime as dt
from typing import Any

import pandas as pd
import pytest
from connector_fixtures import NOW, FakeClock, ObservedSessions, Seeded
from sqlalchemy import select

from connectors.core.connector import PullWindow
from connectors.ingest import connections_in_shard, incremental_plan, ingest_shard, load_cursors
from connectors.registry import connector_for
from connectors.sandbox.server import SandboxServer
from dossier.settings import override
from warehouse.canonical import TABLES_BY_SOURCE
from warehouse.canonical_files import FILE_SHA256, CanonicalShard, digests_path, sme_digests
from warehouse.consent import pull_windows
from warehouse.models import PullCursor
from warehouse.storage import sha256_hex

SOURCES = ("accounting", "tax", "utility", "survey")
LINEAGE = ["source_record", "raw_sha256"]
"""Where a row sits in which raw payload: a kept row names the payload it was first pulled from."""
PULLED_AT = NOW + dt.timedelta(hours=12)


def pull(
    seeded: Seeded, server: SandboxServer, source: str, as_of: dt.date, *, full: bool = False, shard: int = 0
) -> tuple[dict[str, Any], ObservedSessions]:
    sessions = ObservedSessions(FakeClock())
    summary = ingest_shard(
        source,
        shard,
        as_of,
        session_factory=seeded.sessions,
        store=seeded.store,
        base_url=f"{server.url}/{source}",
        consent_at=NOW,
        now=PULLED_AT,
        clock=FakeClock(),
        http_session_factory=sessions,
        full=full,
    )
    return summary, sessions


def canonical(seeded: Seeded, source: str, as_of: dt.date, shard: int = 0) -> dict[str, pd.DataFrame]:
    frames = {}
    for table in TABLES_BY_SOURCE[source]:
        path = seeded.store.layout.canonical(table.name, as_of.isoformat(), shard)
        frame = seeded.store.read_table(path).to_pandas()
        frames[table.name] = frame.sort_values(list(table.key), kind="stable").reset_index(drop=True)
    return frames


def cursors(seeded: Seeded, source: str) -> dict[str, tuple[dt.date, dt.date, dt.date]]:
    with seeded.sessions() as session:
        return {
            sme: (as_of, covered, through)
            for sme, as_of, covered, through in session.execute(
                select(
                    PullCursor.sme_id,
                    PullCursor.as_of_date,
                    PullCursor.covered_from,
                    PullCursor.pulled_through,
                ).where(PullCursor.source == source)
            )
        }


@pytest.mark.parametrize("source", SOURCES)
@pytest.mark.parametrize(
    ("day", "next_day"),
    [(dt.date(2026, 10, 31), dt.date(2026, 11, 1)), (dt.date(2026, 11, 24), dt.date(2026, 11, 25))],
    ids=["next-month", "same-month"],
)
def test_an_incremental_pull_gives_the_rows_of_a_whole_re_pull(
    seeded: Seeded, sandbox: SandboxServer, source: str, day: dt.date, next_day: dt.date
) -> None:
    first, _ = pull(seeded, sandbox, source, day)
    assert first["incremental"] == 0
    assert first["pulled"] > 0
    earlier = canonical(seeded, source, day)
    before = cursors(seeded, source)
    assert {as_of for as_of, _, _ in before.values()} == {day}

    step, step_requests = pull(seeded, sandbox, source, next_day)
    assert step["incremental"] == step["pulled"] == first["pulled"]
    incremental = canonical(seeded, source, next_day)
    after = cursors(seeded, source)
    assert set(after) == set(before)
    assert {as_of for as_of, _, _ in after.values()} == {next_day}

    whole, whole_requests = pull(seeded, sandbox, source, next_day, full=True)
    assert whole["incremental"] == 0
    assert whole["pulled"] == step["pulled"]
    full = canonical(seeded, source, next_day)

    kept = 0
    for name, frame in full.items():
        pd.testing.assert_frame_equal(incremental[name].drop(columns=LINEAGE), frame.drop(columns=LINEAGE))
        # Rows nobody asked the provider for again come, lineage and all, from the earlier partition.
        from_earlier = incremental[name].merge(earlier[name], how="inner")
        kept += len(from_earlier)
    assert kept > 0
    asked = [url for _, url, _ in step_requests.sent]
    asked_whole = [url for _, url, _ in whole_requests.sent]
    assert len(asked) <= len(asked_whole)
    assert asked != asked_whole


def test_a_backfill_pulls_its_whole_window_and_never_moves_the_cursor_back(
    seeded: Seeded, sandbox: SandboxServer
) -> None:
    later, earlier_day = dt.date(2026, 11, 25), dt.date(2026, 9, 15)
    pull(seeded, sandbox, "accounting", dt.date(2026, 11, 24))
    pull(seeded, sandbox, "accounting", later)
    at_later = cursors(seeded, "accounting")
    backfill, _ = pull(seeded, sandbox, "accounting", earlier_day)
    assert backfill["incremental"] == 0
    assert backfill["pulled"] > 0
    assert cursors(seeded, "accounting") == at_later
    filled = canonical(seeded, "accounting", earlier_day)
    _whole, _ = pull(seeded, sandbox, "accounting", earlier_day, full=True)
    pd.testing.assert_frame_equal(
        filled["monthly_financials"], canonical(seeded, "accounting", earlier_day)["monthly_financials"]
    )
    months = filled["monthly_financials"]["period_month"]
    assert max(months) == dt.date(2026, 8, 1)
    # A backfill range, day by day after the cursor's date, pulls incrementally from it.
    step, _ = pull(seeded, sandbox, "accounting", dt.date(2026, 11, 26))
    assert step["incremental"] == step["pulled"] > 0


def test_a_wider_consent_or_another_shard_count_pulls_the_whole_window(
    seeded: Seeded, sandbox: SandboxServer
) -> None:
    pull(seeded, sandbox, "tax", dt.date(2026, 11, 24))
    with seeded.sessions() as session:
        session.execute(
            PullCursor.__table__.update().values(covered_from=dt.date(2026, 11, 1))  # type: ignore[attr-defined]
        )
    again, _ = pull(seeded, sandbox, "tax", dt.date(2026, 11, 25))
    assert again["incremental"] == 0
    assert again["pulled"] > 0
    with override(dataclasses.replace(seeded.settings, shard_count=3)):
        wider, _ = pull(seeded, sandbox, "tax", dt.date(2026, 11, 26))
    assert wider["incremental"] == 0


def test_a_failed_pull_never_advances_the_cursor(seeded: Seeded, sandbox: SandboxServer) -> None:
    day = dt.date(2026, 11, 24)
    pull(seeded, sandbox, "survey", day)
    at_day = cursors(seeded, "survey")
    assert at_day
    assert {as_of for as_of, _, _ in at_day.values()} == {day}

    def unreachable(as_of: dt.date) -> dict[str, Any]:
        return ingest_shard(
            "survey",
            0,
            as_of,
            session_factory=seeded.sessions,
            store=seeded.store,
            base_url="http://127.0.0.1:9/survey",  # the discard port: nothing answers
            consent_at=NOW,
            now=PULLED_AT,
            clock=FakeClock(),
            http_session_factory=ObservedSessions(FakeClock(), attempts=1),
        )

    failed = unreachable(dt.date(2026, 11, 25))
    assert failed["failed"] == len(at_day)
    assert failed["pulled"] == 0
    assert cursors(seeded, "survey") == at_day
    # The next day starts from the last pull that succeeded.
    step, _ = pull(seeded, sandbox, "survey", dt.date(2026, 11, 26))
    assert step["incremental"] == step["pulled"] == len(at_day)
    # A failed re-run of the cursor's own date leaves its partition without the rows: the cursor goes.
    unreachable(dt.date(2026, 11, 26))
    assert cursors(seeded, "survey") == {}


def test_cursors_on_postgresql(seeded_postgres: Seeded, sandbox: SandboxServer) -> None:
    seeded = seeded_postgres
    pull(seeded, sandbox, "utility", dt.date(2026, 11, 24))
    step, _ = pull(seeded, sandbox, "utility", dt.date(2026, 11, 25))
    assert step["incremental"] == step["pulled"] > 0
    incremental = canonical(seeded, "utility", dt.date(2026, 11, 25))
    at_later = cursors(seeded, "utility")
    pull(seeded, sandbox, "utility", dt.date(2026, 10, 1))  # a backfill
    assert cursors(seeded, "utility") == at_later
    pull(seeded, sandbox, "utility", dt.date(2026, 11, 25), full=True)
    for name, frame in canonical(seeded, "utility", dt.date(2026, 11, 25)).items():
        pd.testing.assert_frame_equal(incremental[name].drop(columns=LINEAGE), frame.drop(columns=LINEAGE))


def test_an_open_obligation_inside_the_consent_is_asked_for_again(
    seeded: Seeded, sandbox: SandboxServer
) -> None:
    day, next_day = dt.date(2026, 11, 24), dt.date(2026, 11, 25)
    pull(seeded, sandbox, "tax", day)
    returns = canonical(seeded, "tax", day)["vat_returns"]
    with seeded.sessions() as session:
        connections = connections_in_shard(session, "tax", 0, seeded.settings.shard_count)
        known = load_cursors(session, "tax", [c.sme_id for c in connections])
        windows = pull_windows(session, "tax", [c.sme_id for c in connections], then=NOW, now=PULLED_AT)
    plan = incremental_plan(
        connector_for("tax"),
        seeded.store,
        0,
        next_day,
        connections,
        known,
        windows,
        {},
        shard_count=seeded.settings.shard_count,
        revision_months=2,
    )
    base = dt.date(2026, 9, 1)  # two months back from the end of October, the cursor's last month
    expected = {}
    for sme_id in known:
        covered = PullWindow.for_history(next_day, windows[sme_id]).start
        open_ends = returns[(returns["sme_id"] == sme_id) & (returns["status"] != "F")]["period_end"]
        open_ends = [d for d in open_ends if d >= covered]
        restart = min([base, *(d.replace(day=1) for d in open_ends)])
        if restart > covered:
            expected[sme_id] = restart
    assert plan.restart == expected
    assert any(restart < base for restart in expected.values())


@pytest.mark.parametrize("source", SOURCES)
def test_ingest_writes_each_canonical_file_with_the_digests_of_its_smes(
    seeded: Seeded, sandbox: SandboxServer, source: str
) -> None:
    day = dt.date(2026, 11, 24)
    summary, _ = pull(seeded, sandbox, source, day)
    assert summary["pulled"] > 0
    for table in TABLES_BY_SOURCE[source]:
        path = seeded.store.layout.canonical(table.name, day.isoformat(), 0)
        sidecar = seeded.store.read_table(digests_path(seeded.store, table.name, day, 0))
        assert sidecar.schema.metadata[FILE_SHA256] == sha256_hex(seeded.store.read_bytes(path)).encode()
        frame = seeded.store.read_table(path).to_pandas()
        expected = [
            {"sme_id": sme_id, **digests} for sme_id, digests in sme_digests(frame).to_dict("index").items()
        ]
        assert sidecar.to_pylist() == expected
        assert [row["rows"] for row in expected] == frame.groupby("sme_id").size().tolist()
        # the digests are the shard's: CanonicalShard reads them from the sidecar, not the rows
        opened = CanonicalShard.open(seeded.store, day, 0)
        assert opened.from_sidecars == len(TABLES_BY_SOURCE[source])
        got = opened.digests(frame["sme_id"].unique())
        for column in ("rows", "h0", "h1"):
            assert got[f"{table.name}.{column}"].tolist() == [row[column] for row in expected]
