"""The contract every registered connector keeps, checked against the real sandbox over HTTP.

For each source: the shard files have exactly the canonical schema; for SMEs whose served data is
clean they hold exactly the universe's ground truth; no request leaves for an SME without an
active consent covering the source (revoked, expired, partial and absent consents alike) and
every request carries the timeout; 429/5xx faults are retried to the same rows; an access token
that expires mid-pull is refreshed; a malformed record quarantines the SME and source, naming
record and field, with the raw payload kept; re-running a shard changes nothing; a provider's fix
resolves the quarantine; ingestion records the same on SQLite and PostgreSQL.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import threading
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa
import pytest
import requests
from connector_fixtures import AS_OF, FIXED_MIX, NOW, SEED, SIZE, FakeClock, ObservedSessions, Seeded
from sqlalchemy import select

from connectors.core.connector import Connection, HttpContext, PullWindow
from connectors.core.http import make_session
from connectors.core.parsing import SmePages
from connectors.ingest import ingest_shard
from connectors.registry import CONNECTORS, connector_for
from connectors.sandbox.auth import OAUTH_SOURCES, SandboxCredentials
from connectors.sandbox.seed import consent_plan
from connectors.sandbox.server import SandboxServer
from connectors.sandbox.universe import SOURCES_REFS, Universe
from warehouse.canonical import TABLES_BY_SOURCE, CanonicalTable
from warehouse.models import IngestionRun, QuarantineEntry, RawPayload
from warehouse.shards import shard_of

SOURCES = sorted(CONNECTORS)
BREAKS = {
    "accounting": {"malformed_accounting"},
    "tax": set(),
    "utility": {"malformed_utility"},
    "survey": {"malformed_survey"},
}
"""Defects that make a source's payload unparseable: the SME is quarantined for that source."""
DIFFERS = {"accounting": {"duplicate_conflicting"}}
"""Defects whose served data is not the truth: a conflicting repeat is kept for validation."""
LINEAGE = ["source_record", "raw_sha256"]


def ingest(
    seeded: Seeded,
    server: SandboxServer,
    source: str,
    shard: int,
    *,
    sessions: ObservedSessions | None = None,
) -> dict[str, Any]:
    clock = sessions.clock if sessions else FakeClock()
    return ingest_shard(
        source,
        shard,
        AS_OF,
        session_factory=seeded.sessions,
        store=seeded.store,
        base_url=f"{server.url}/{source}",
        now=NOW + dt.timedelta(hours=12),
        clock=clock,
        http_session_factory=sessions or ObservedSessions(clock),
    )


def ingest_all(seeded: Seeded, server: SandboxServer, source: str, **kwargs: Any) -> list[dict[str, Any]]:
    return [ingest(seeded, server, source, shard, **kwargs) for shard in range(seeded.settings.shard_count)]


def read_table(seeded: Seeded, summaries: list[dict[str, Any]], table: CanonicalTable) -> pa.Table:
    return pa.concat_tables([seeded.store.read_table(s["paths"][table.name]) for s in summaries])


def runs(seeded: Seeded, source: str) -> dict[str, IngestionRun]:
    with seeded.sessions() as session:
        rows = session.scalars(select(IngestionRun).where(IngestionRun.source == source)).all()
    return {row.sme_id: row for row in rows}


def covered(sme_id: str, source: str) -> bool:
    """Whether the seeded consent of ``sme_id`` is active at the run's instant and covers ``source``."""
    plan = consent_plan(SEED, sme_id)
    return plan.category not in ("no_consent", "revoked", "expired") and source in plan.sources


def profiles(universe: Universe) -> pd.DataFrame:
    return universe.profiles().set_index("sme_id")


def assert_canonical(file: pa.Table, table: CanonicalTable) -> None:
    """The file has the table's columns, order, nullability, descriptions and types.

    Parquet has no second-resolution timestamps (pyarrow stores them as milliseconds), so those
    columns must cast back to seconds without loss.
    """
    assert file.schema.names == table.column_names
    for field, expected in zip(file.schema, table.schema, strict=True):
        assert field.nullable == expected.nullable, field.name
        assert field.metadata[b"description"] == expected.metadata[b"description"]
        if pa.types.is_timestamp(expected.type):
            assert (field.type.tz, field.type.unit) == (expected.type.tz, "ms"), field.name
        else:
            assert field.type == expected.type, field.name
    assert (
        file.cast(table.schema.remove_metadata(), safe=True)
        .schema.remove_metadata()
        .equals(table.schema.remove_metadata())
    )


def rows_without_lineage(frame: pd.DataFrame, table: CanonicalTable) -> list[dict[str, Any]]:
    """The rows as plain values (nulls as None), lineage dropped, in key order."""
    ordered = frame.sort_values(list(table.key)).assign(source_record="", raw_sha256="")
    return table.to_arrow(ordered).drop_columns(LINEAGE).to_pylist()


def submissions_of(visits: pd.DataFrame, ours: pd.DataFrame) -> pd.DataFrame:
    """The generic rows the field-visit form's submissions make: the visits' values, mapped.

    The universe's truth is visits; a submission row carries the same ids, agent, times, location
    and attachments, its own ``end`` time, form id (the asset uid) and answers, which are taken from
    what was pulled only after checking each names the visit's answers.
    """
    pulled = ours.set_index(["sme_id", "submission_id"])
    expected = pd.DataFrame(
        {
            "sme_id": visits["sme_id"],
            "submission_id": visits["visit_id"],
            "form_version": visits["form_version"],
            "agent_id": visits["agent_id"],
            "started_at": visits["visited_at"],
            "submitted_at": visits["submitted_at"],
            "latitude": visits["latitude"],
            "longitude": visits["longitude"],
            "attachments": visits["photo_count"],
            "mapping": "field_visit",
            "source_record": "",
            "raw_sha256": "",
        }
    )
    own = pulled.reindex(list(zip(expected["sme_id"], expected["submission_id"], strict=True)))
    for visit, answers in zip(visits.itertuples(), own["answers"], strict=True):
        found = json.loads(answers)["group_premises/premises_found"]
        assert found == ("yes" if visit.premises_found else "no"), visit.visit_id
    assert own["form_id"].notna().all()
    return expected.assign(
        form_id=own["form_id"].to_numpy(),
        ended_at=own["ended_at"].to_numpy(),
        answers=own["answers"].to_numpy(),
    )


@pytest.mark.parametrize("source", SOURCES)
def test_output_is_canonical_and_equals_the_truth_for_clean_smes(
    source: str, seeded: Seeded, sandbox: SandboxServer, universe: Universe
) -> None:
    summaries = ingest_all(seeded, sandbox, source)
    statuses = {sme_id: run.status for sme_id, run in runs(seeded, source).items()}
    defects = profiles(universe)["defects"].map(set)
    consenting = sorted(s for s in universe.sme_ids if covered(s, source))
    broken = {s for s in consenting if defects[s] & BREAKS[source]}

    assert statuses == {
        s: "skipped_no_consent" if not covered(s, source) else "quarantined" if s in broken else "pulled"
        for s in universe.sme_ids
    }
    clean = [s for s in consenting if not defects[s] & (BREAKS[source] | DIFFERS.get(source, set()))]
    truth = universe.truth(clean)
    for table in TABLES_BY_SOURCE[source]:
        files = [seeded.store.read_table(s["paths"][table.name]) for s in summaries]
        for file in files:
            assert_canonical(file, table)
        ours = pa.concat_tables(files).to_pandas()
        assert set(ours["sme_id"]) <= {s for s, status in statuses.items() if status == "pulled"}
        expected = truth[table.name]
        if table.source == "survey":  # the connector asks for submissions received by the as-of day
            visits = truth["survey_visits"]
            visits = visits[visits["submitted_at"] < pd.Timestamp(AS_OF + dt.timedelta(days=1), tz="UTC")]
            expected = visits if table.name == "survey_visits" else submissions_of(visits, ours)
        assert rows_without_lineage(ours[ours["sme_id"].isin(clean)], table) == rows_without_lineage(
            expected, table
        )
        assert (ours["source_record"] != "").all()
        for sha in set(ours["raw_sha256"]):
            (landed,) = Path(seeded.store.root, "raw", source, sha[:2]).glob(f"{sha}.*")
            assert hashlib.sha256(landed.read_bytes()).hexdigest() == sha


@pytest.mark.parametrize("source", SOURCES)
def test_no_request_leaves_without_consent_and_each_has_a_timeout(
    source: str, seeded: Seeded, sandbox: SandboxServer, universe: Universe, observed: ObservedSessions
) -> None:
    ingest_all(seeded, sandbox, source, sessions=observed)
    refs = profiles(universe)[SOURCES_REFS[source]]
    requested = {s for s in universe.sme_ids if any(refs[s] in url for url in observed.urls())}
    categories = {consent_plan(SEED, s).category for s in universe.sme_ids if not covered(s, source)}

    assert requested == {s for s in universe.sme_ids if covered(s, source)}
    assert {"no_consent", "revoked", "expired"} <= categories
    assert {timeout for _, _, timeout in observed.sent} == {seeded.settings.http_timeout}
    skipped = [r for r in runs(seeded, source).values() if r.status == "skipped_no_consent"]
    assert {(r.records_raw, r.raw_sha256) for r in skipped} == {(0, None)}


@pytest.mark.parametrize("source", SOURCES)
def test_faults_are_retried_and_give_the_same_rows(
    source: str, seeded: Seeded, sandbox: SandboxServer, universe: Universe, clock: FakeClock
) -> None:
    # 30% faults: ten attempts make a request that fails every time vanishingly unlikely
    observed = ObservedSessions(clock, attempts=10)
    calm = ingest(seeded, sandbox, source, 0)
    calm_tables = {t.name: seeded.store.read_table(calm["paths"][t.name]) for t in TABLES_BY_SOURCE[source]}

    with SandboxServer(universe, fault_rate=0.3, fault_seed=7) as stormy:
        summary = ingest(seeded, stormy, source, 0, sessions=observed)
        injected = stormy.faults.injected

    assert injected > 0
    assert observed.clock.slept  # Retry-After and backoff waits went through the clock
    assert {k: v for k, v in summary.items() if k != "failed"} == {
        k: v for k, v in calm.items() if k != "failed"
    }
    assert summary["failed"] == 0
    for name, table in calm_tables.items():
        # bodies name the server's own address (links), so only their hashes may differ
        stormy_table = seeded.store.read_table(summary["paths"][name])
        assert stormy_table.drop_columns(["raw_sha256"]).equals(table.drop_columns(["raw_sha256"]))


@pytest.mark.parametrize("source", [s for s in SOURCES if s in OAUTH_SOURCES])
def test_an_access_token_expiring_mid_pull_is_refreshed(source: str, universe: Universe) -> None:
    sme_id = next(s for s in universe.sme_ids if covered(s, source) and not profiles(universe)["defects"][s])
    clock = FakeClock()  # never moves: the connector trusts its token until the provider says otherwise
    token_session = make_session(3, clock, retry_reads=False)
    paused = threading.Event()

    def outlive_the_token(response: requests.Response, **_: Any) -> requests.Response:
        if not paused.is_set():
            paused.set()
            threading.Event().wait(1.2)
        return response

    token_session.hooks["response"].append(outlive_the_token)
    with SandboxServer(universe, token_ttl_seconds=1) as server:
        connector = connector_for(source)
        http = HttpContext(
            f"{server.url}/{source}",
            make_session(3, clock),
            token_session,
            5.0,
            clock,
            client_id=SandboxCredentials().client_id,
            client_secret=SandboxCredentials().client_secret,
        )
        ref = profiles(universe)[SOURCES_REFS[source]][sme_id]
        connection = Connection(sme_id, source, "sandbox", ref, server.credentials_for(sme_id)[source])
        client = connector.client(connection, http)
        pages = list(connector.pull(client, connection, PullWindow.for_history(AS_OF, 36)))

    assert client.auth.refreshes == 2
    result = connector.parse([SmePages(sme_id, pages)])
    assert result.ok
    assert result.records_canonical(sme_id) > 0


def malformed_smes(universe: Universe, source: str) -> list[str]:
    defects = profiles(universe)["defects"].map(set)
    return [s for s in universe.sme_ids if covered(s, source) and defects[s] & BREAKS[source]]


QUARANTINE_FIELDS = {
    "accounting": ("page=1/reports[", "profit_and_loss.|balance_sheet."),
    "utility": ("entry[urn:uuid:", "value"),
    "survey": ("start=0/results[", "group_observation/employees_observed|group_premises/location"),
}


@pytest.mark.parametrize("source", sorted(QUARANTINE_FIELDS))
def test_a_malformed_record_quarantines_the_sme_and_keeps_the_raw_payload(
    source: str, seeded: Seeded, sandbox: SandboxServer, universe: Universe
) -> None:
    summaries = ingest_all(seeded, sandbox, source)
    bad = malformed_smes(universe, source)
    record_prefix, fields = QUARANTINE_FIELDS[source]

    with seeded.sessions() as session:
        entries = session.scalars(select(QuarantineEntry).where(QuarantineEntry.source == source)).all()
        payloads = {
            (run.sme_id, p.sha256): p.path
            for run, p in session.execute(
                select(IngestionRun, RawPayload).join(
                    RawPayload, RawPayload.ingestion_run_id == IngestionRun.id
                )
            )
        }
    assert bad
    assert sorted({e.sme_id for e in entries}) == bad
    for entry in entries:
        assert (entry.stage, entry.as_of_date, entry.resolved_at) == ("ingest", AS_OF, None)
        assert entry.record.startswith(record_prefix)
        assert pd.Series([entry.field]).str.fullmatch(f"({fields}).*").all()
        assert entry.reason.startswith(("not a number: ", "not a geopoint"))
        landed = Path(payloads[(entry.sme_id, entry.raw_sha256)])
        assert hashlib.sha256(landed.read_bytes()).hexdigest() == entry.raw_sha256
    run_rows = runs(seeded, source)
    for sme_id in bad:
        run = run_rows[sme_id]
        assert (run.status, run.error_class, run.records_canonical) == ("quarantined", "fatal", 0)
        assert run.error_message.startswith(f"{sme_id}/{source}: {record_prefix}")
        assert run.records_rejected >= 1
    for table in TABLES_BY_SOURCE[source]:
        assert not set(bad) & set(read_table(seeded, summaries, table).column("sme_id").to_pylist())


@pytest.mark.parametrize("source", SOURCES)
def test_rerunning_a_shard_changes_nothing(source: str, seeded: Seeded, sandbox: SandboxServer) -> None:
    def snapshot() -> tuple[Any, ...]:
        raw_files = sorted(
            p.relative_to(seeded.store.root) for p in Path(seeded.store.root, "raw").rglob("*.*")
        )
        files = {
            t.name: hashlib.sha256(Path(first["paths"][t.name]).read_bytes()).hexdigest()
            for t in TABLES_BY_SOURCE[source]
        }
        with seeded.sessions() as session:
            run_rows = [
                (
                    r.id,
                    r.sme_id,
                    r.status,
                    r.error_class,
                    r.error_message,
                    r.records_raw,
                    r.records_canonical,
                    r.records_rejected,
                    r.raw_sha256,
                )
                for r in session.scalars(select(IngestionRun).order_by(IngestionRun.id))
            ]
            payload_rows = session.execute(
                select(
                    RawPayload.id,
                    RawPayload.ingestion_run_id,
                    RawPayload.attempt,
                    RawPayload.sequence,
                    RawPayload.sha256,
                    RawPayload.path,
                ).order_by(RawPayload.id)
            ).all()
            quarantine = session.execute(
                select(
                    QuarantineEntry.id,
                    QuarantineEntry.record,
                    QuarantineEntry.field,
                    QuarantineEntry.resolved_at,
                )
            ).all()
        return raw_files, files, run_rows, payload_rows, quarantine

    first = ingest(seeded, sandbox, source, 1)
    before = snapshot()
    second = ingest(seeded, sandbox, source, 1)
    after = snapshot()

    assert second == first
    # Everything is as it was, except that the re-run's lineage is kept as a second attempt that
    # used exactly the same payloads; the first attempt's rows are untouched.
    assert (after[0], after[1], after[2], after[4]) == (before[0], before[1], before[2], before[4])
    assert [tuple(row) for row in after[3] if row.attempt == 1] == [tuple(row) for row in before[3]]
    assert [(r.ingestion_run_id, r.sequence, r.sha256, r.path) for r in after[3] if r.attempt == 2] == [
        (r.ingestion_run_id, r.sequence, r.sha256, r.path) for r in before[3]
    ]
    assert before[2]
    assert before[3]


def test_a_fixed_payload_resolves_the_quarantine(
    seeded: Seeded, sandbox: SandboxServer, universe: Universe
) -> None:
    bad = malformed_smes(universe, "accounting")
    ingest_all(seeded, sandbox, "accounting")
    fixed = Universe(SEED, SIZE, AS_OF, mix=FIXED_MIX)
    with SandboxServer(fixed) as repaired:
        summaries = ingest_all(seeded, repaired, "accounting")

    with seeded.sessions() as session:
        entries = session.scalars(select(QuarantineEntry).where(QuarantineEntry.source == "accounting")).all()
    assert sorted({e.sme_id for e in entries}) == bad
    assert all(e.resolved_at is not None and e.resolved_at >= e.created_at for e in entries)
    run_rows = runs(seeded, "accounting")
    assert {run_rows[s].status for s in bad} == {"pulled"}
    rows = read_table(seeded, summaries, TABLES_BY_SOURCE["accounting"][0]).column("sme_id").to_pylist()
    assert set(bad) <= set(rows)


@pytest.mark.postgres
@pytest.mark.parametrize("backend", ["seeded", "seeded_postgres"])
def test_ingestion_records_on_sqlite_and_postgresql(
    backend: str, request: pytest.FixtureRequest, sandbox: SandboxServer, universe: Universe
) -> None:
    seeded: Seeded = request.getfixturevalue(backend)
    summary = ingest(seeded, sandbox, "tax", 0)
    shard = [s for s in universe.sme_ids if shard_of(s, 2) == 0]

    run_rows = runs(seeded, "tax")
    assert sorted(run_rows) == shard
    assert summary["smes_considered"] == len(shard)
    with seeded.sessions() as session:
        payloads = session.execute(
            select(RawPayload.ingestion_run_id, RawPayload.sequence, RawPayload.sha256).order_by(
                RawPayload.ingestion_run_id, RawPayload.sequence
            )
        ).all()
    by_run: dict[int, list[str]] = {}
    for run_id, _, sha in payloads:
        by_run.setdefault(run_id, []).append(sha)
    for sme_id, run in run_rows.items():
        assert run.as_of_date == AS_OF
        assert run.finished_at is not None
        assert run.finished_at.tzinfo is not None
        if covered(sme_id, "tax"):
            assert run.status == "pulled"
            assert run.raw_sha256 == hashlib.sha256("\n".join(by_run[run.id]).encode()).hexdigest()
            assert run.records_raw >= run.records_canonical > 0
        else:
            assert (run.status, run.raw_sha256, run.id in by_run) == ("skipped_no_consent", None, False)
    assert json.loads(json.dumps(summary)) == summary
