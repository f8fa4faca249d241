"""Uploaded files feed the pipeline: an SME without any provider connection uploads a Green Button
file and a ledger export on its connector link, grants, and the lender's feed has its dossier.
Real web service (TestClient), real pipeline (``run_for_smes`` from the grant), both backends.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select

from connectors.core.connector import PullWindow, add_months
from connectors.core.landing import run_hash
from dossier.settings import for_home, override
from dossier.web.app import create_app
from warehouse import keys
from warehouse.db import make_engine, session_scope
from warehouse.feed import subscribe
from warehouse.models import GrantRun, IngestionRun, RawPayload, Sme, SourceConnection
from warehouse.storage import Store

TOKEN = "operator-secret-for-upload-runs"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
LENDER = "northwind-capital"
SME = "SME-UP-1"
HISTORY = 12
SPAN = 15
"""Months of data in the files: the 3 oldest lie outside the consented 12."""


def month_starts(today: dt.date, count: int) -> list[dt.date]:
    """The first days of the ``count`` complete months before ``today``'s month, oldest first."""
    first = today.replace(day=1)
    return [add_months(first, -n) for n in range(count, 0, -1)]


def green_button(today: dt.date) -> bytes:
    """An ESPI usage point with one weekly electricity reading (kWh, GBP) per week of ``SPAN`` months."""
    start = dt.datetime.combine(month_starts(today, SPAN)[0], dt.time(), tzinfo=dt.UTC)
    end = dt.datetime.combine(today.replace(day=1), dt.time(), tzinfo=dt.UTC)
    week = 7 * 86400
    readings = []
    at = start
    while at + dt.timedelta(seconds=week) <= end:
        readings.append(
            f"<espi:IntervalReading><espi:cost>{4_200_000 + len(readings) * 1000}</espi:cost>"
            f"<espi:timePeriod><espi:duration>{week}</espi:duration>"
            f"<espi:start>{int(at.timestamp())}</espi:start></espi:timePeriod>"
            f"<espi:value>{300 + len(readings) % 7}</espi:value></espi:IntervalReading>"
        )
        at += dt.timedelta(seconds=week)
    return (
        '<?xml version="1.0" encoding="UTF-8"?>\n'
        '<espi:UsagePoint xmlns:espi="http://naesb.org/espi">'
        "<espi:ServiceCategory><espi:kind>0</espi:kind></espi:ServiceCategory><espi:MeterReading>"
        "<espi:ReadingType><espi:accumulationBehaviour>4</espi:accumulationBehaviour>"
        f"<espi:currency>826</espi:currency><espi:intervalLength>{week}</espi:intervalLength>"
        "<espi:powerOfTenMultiplier>0</espi:powerOfTenMultiplier><espi:uom>72</espi:uom></espi:ReadingType>"
        f"<espi:IntervalBlock><espi:interval><espi:duration>{int((at - start).total_seconds())}</espi:duration>"
        f"<espi:start>{int(start.timestamp())}</espi:start></espi:interval>{''.join(readings)}"
        "</espi:IntervalBlock></espi:MeterReading></espi:UsagePoint>\n"
    ).encode()


def ledger(today: dt.date) -> bytes:
    """A general-ledger export (GBP): a month of sales, purchases and rent for each of ``SPAN`` months."""
    lines = ["Account Code,Account Name,Date,Debit,Credit,Currency"]
    for n, month in enumerate(month_starts(today, SPAN)):
        day = month.replace(day=15).isoformat()
        sales, purchases, rent = 12000 + 100 * n, 5000 + 40 * n, 1500
        lines += [
            f"1920,Bank,{day},{sales}.00,,GBP",
            f"3000,Sales,{day},,{sales}.00,GBP",
            f"4000,Purchases,{day},{purchases}.00,,GBP",
            f"1920,Bank,{day},,{purchases}.00,GBP",
            f"6300,Rent,{day},{rent}.00,,GBP",
            f"1920,Bank,{day},,{rent}.00,GBP",
        ]
    return ("\n".join(lines) + "\n").encode()


@pytest.fixture
def world(warehouse_url: str, tmp_path: Path) -> Iterator[dict[str, Any]]:
    """The web service over a warehouse holding one SME with no provider connection, and a lender key."""
    engine = make_engine(warehouse_url)
    with session_scope(engine) as session:
        session.add(
            Sme(sme_id=SME, name="Upload Bakery", industry="retail", region="North", size_band="micro")
        )
        token, _ = keys.add_lender(session, LENDER, name="Northwind Capital", at=dt.datetime.now(dt.UTC))
        subscribe(session, LENDER)
    settings = for_home(tmp_path / "var", warehouse_url=warehouse_url, operator_token=TOKEN, shard_count=2)
    with override(settings), TestClient(create_app(settings), raise_server_exceptions=False) as client:
        yield {
            "client": client,
            "engine": engine,
            "store": Store(settings.store_url),
            "lender": {"Authorization": f"Bearer {token}"},
        }
    engine.dispose()


def open_link(client: TestClient, sources: list[str]) -> dict[str, Any]:
    made = client.post(
        "/v1/operator/links",
        json={
            "sme_id": SME,
            "sources": sources,
            "recipients": [LENDER],
            "purpose": "credit_decision",
            "history_months": HISTORY,
            "consent_days": 90,
        },
        headers=AUTH,
    )
    assert made.status_code == 201, made.text
    path = "/" + made.json()["url"].split("/", 3)[3]
    form = dict(re.findall(r'name="(csrf_token|text_sha256)" value="([^"]+)"', client.get(path).text))
    return {"path": path, "form": form}


def upload(client: TestClient, link: dict[str, Any], source: str, name: str, data: bytes) -> str:
    page = client.post(
        link["path"] + "/upload",
        data={"source": source, "csrf_token": link["form"]["csrf_token"]},
        files={"file": (name, data, "application/octet-stream")},
    )
    assert page.status_code == 200, page.text
    return page.text


def answer(client: TestClient, link: dict[str, Any], decision: str) -> None:
    page = client.post(link["path"], data={**link["form"], "decision": decision})
    assert page.status_code == 200, page.text


def feed(client: TestClient, headers: dict[str, str]) -> list[dict[str, Any]]:
    return client.get("/v1/feed", headers=headers, params={"limit": 1000}).json()["events"]


def runs_of(engine: Any) -> dict[str, tuple]:
    with session_scope(engine) as session:
        return {
            run.source: (
                run.status,
                run.error_class,
                run.error_message,
                run.records_raw,
                run.records_canonical,
                run.records_rejected,
                run.raw_sha256,
            )
            for run in session.scalars(select(IngestionRun).where(IngestionRun.sme_id == SME))
        }


def test_uploads_and_a_grant_deliver_a_dossier_to_the_lender(world: dict[str, Any]) -> None:
    client, engine, store = world["client"], world["engine"], world["store"]
    today = dt.datetime.now(dt.UTC).date()
    meter, books = green_button(today), ledger(today)
    letter = b"A letter from my accountant, typed out.\n"
    with session_scope(engine) as session:
        assert session.scalars(select(SourceConnection).where(SourceConnection.sme_id == SME)).all() == []

    link = open_link(client, ["utility", "accounting"])
    assert "understood as espi" in upload(client, link, "utility", "meter.xml", meter)
    assert "understood as ledger" in upload(client, link, "accounting", "ledger.csv", books)
    assert "received, not yet readable" in upload(client, link, "accounting", "letter.txt", letter)
    assert feed(client, world["lender"]) == []
    answer(client, link, "grant")
    assert client.app.state.grant_runs.wait(timeout=300)

    with session_scope(engine) as session:
        run = session.scalars(select(GrantRun)).one()
        assert (run.sme_id, run.status) == (SME, "done"), run.detail
        as_of = run.as_of_date

    # The lender's feed has the dossier, computed from the two uploaded sources.
    events = feed(client, world["lender"])
    assert [(e["event"], e["sme_id"]) for e in events] == [("delivered", SME)]
    [event] = events
    assert event["dossier_id"].startswith(f"{SME}:{as_of.isoformat()}:")
    assert event["dossier_id"].endswith(f":accounting+utility@{HISTORY}m")
    assert event["dossier"]["sources_used"] == ["accounting", "utility"]

    # Recorded like a pull, with the files as the runs' raw payloads.
    window = PullWindow.for_history(as_of, HISTORY)
    meter_sha, books_sha = hashlib.sha256(meter).hexdigest(), hashlib.sha256(books).hexdigest()
    weeks = meter.count(b"<espi:IntervalReading>")
    first_week = dt.datetime.combine(month_starts(today, SPAN)[0], dt.time(), tzinfo=dt.UTC)
    window_start = dt.datetime.combine(window.start, dt.time(), tzinfo=dt.UTC)
    weeks_inside = sum(first_week + dt.timedelta(days=7 * i) >= window_start for i in range(weeks))
    canonical = {
        name: pd.concat(
            [
                store.read_table(p).to_pandas()
                for p in store.list(
                    f"{store.root}/canonical/{name}/as_of={as_of.isoformat()}", suffix=".parquet"
                )
            ],
            ignore_index=True,
        )
        for name in ("monthly_financials", "utility_readings")
    }
    months = canonical["monthly_financials"]
    months = months[months["sme_id"] == SME]
    assert sorted(months["period_month"]) == month_starts(today, HISTORY)
    assert set(months["raw_sha256"]) == {books_sha}
    readings = canonical["utility_readings"]
    readings = readings[readings["sme_id"] == SME]
    assert len(readings) == weeks_inside > 0
    assert (readings["interval_start"] >= pd.Timestamp(window_start)).all()
    assert set(readings["raw_sha256"]) == {meter_sha}
    assert runs_of(engine) == {
        "accounting": (
            "uploaded",
            None,
            f"{SPAN - HISTORY} rows outside the consented window not used; "
            "received, not yet readable: letter.txt",
            SPAN,
            HISTORY,
            0,
            run_hash([books_sha]),
        ),
        "utility": (
            "uploaded",
            None,
            f"{weeks - weeks_inside} rows outside the consented window not used",
            weeks,
            weeks_inside,
            0,
            run_hash([meter_sha]),
        ),
    }
    with session_scope(engine) as session:
        payloads = session.execute(
            select(IngestionRun.source, RawPayload.attempt, RawPayload.sequence, RawPayload.sha256)
            .join(RawPayload, RawPayload.ingestion_run_id == IngestionRun.id)
            .where(IngestionRun.sme_id == SME)
            .order_by(IngestionRun.source)
        ).all()
    assert [tuple(p) for p in payloads] == [("accounting", 1, 0, books_sha), ("utility", 1, 0, meter_sha)]


def canonical_rows(store: Store, name: str, as_of: dt.date) -> pd.DataFrame:
    """The SME's rows of canonical table ``name`` over every shard of ``as_of``."""
    folder = f"{store.root}/canonical/{name}/as_of={as_of.isoformat()}"
    frames = [store.read_table(p).to_pandas() for p in store.list(folder, suffix=".parquet")]
    frame = pd.concat(frames, ignore_index=True)
    return frame[frame["sme_id"] == SME].reset_index(drop=True)


def test_an_upload_of_a_source_no_consent_covers_is_not_read(world: dict[str, Any]) -> None:
    """Files uploaded on a declined link: only the source a granted consent covers is used."""
    client, engine, store = world["client"], world["engine"], world["store"]
    today = dt.datetime.now(dt.UTC).date()
    books = ledger(today)
    declined = open_link(client, ["utility", "accounting"])
    upload(client, declined, "utility", "meter.xml", green_button(today))
    upload(client, declined, "accounting", "ledger.csv", books)
    answer(client, declined, "decline")
    granted = open_link(client, ["accounting"])
    answer(client, granted, "grant")
    assert client.app.state.grant_runs.wait(timeout=300)
    with session_scope(engine) as session:
        run = session.scalars(select(GrantRun)).one()
        assert run.status == "done", run.detail
        as_of = run.as_of_date
    books_sha = hashlib.sha256(books).hexdigest()
    assert runs_of(engine) == {
        "accounting": (
            "uploaded",
            None,
            f"{SPAN - HISTORY} rows outside the consented window not used",
            SPAN,
            HISTORY,
            0,
            run_hash([books_sha]),
        ),
        "utility": ("skipped_no_consent", None, None, 0, 0, 0, None),
    }
    assert canonical_rows(store, "utility_readings", as_of).empty
    [event] = feed(client, world["lender"])
    assert (event["event"], event["dossier_id"].split(":")[-1]) == ("delivered", f"accounting@{HISTORY}m")
    assert event["dossier"]["sources_used"] == ["accounting"]


def test_the_later_of_provider_connection_and_upload_wins_and_unreadable_files_are_reported(
    world: dict[str, Any],
) -> None:
    from connectors.uploads import uploads_to_use

    client, engine = world["client"], world["engine"]
    today = dt.datetime.now(dt.UTC).date()
    link = open_link(client, ["utility", "accounting"])
    upload(client, link, "utility", "meter.xml", green_button(today))
    upload(client, link, "accounting", "letter.txt", b"A letter from my accountant, typed out.\n")

    def chosen() -> dict[str, list[tuple[str, str]]]:
        with session_scope(engine) as session:
            return {
                source: [(f.filename, f.status) for f in uploads_to_use(session, source, 0, 1).get(SME, [])]
                for source in ("utility", "accounting")
            }

    assert chosen() == {"utility": [("meter.xml", "parsed")], "accounting": [("letter.txt", "unreadable")]}
    now = dt.datetime.now(dt.UTC)
    with session_scope(engine) as session:
        for source in ("utility", "accounting"):
            session.add(
                SourceConnection(
                    sme_id=SME,
                    source=source,
                    provider="sandbox",
                    account_ref="ACC-1",
                    credentials={},
                    connected_at=now - dt.timedelta(days=1),
                )
            )
    # Uploaded after the connection: the file wins; a file no parser reads never displaces a provider.
    assert chosen() == {"utility": [("meter.xml", "parsed")], "accounting": []}
    with session_scope(engine) as session:
        for connection in session.scalars(select(SourceConnection)):
            connection.connected_at = now + dt.timedelta(minutes=5)
    assert chosen() == {"utility": [], "accounting": []}


def test_only_unreadable_files_give_no_rows_and_a_changed_raw_copy_quarantines(world: dict[str, Any]) -> None:
    from dossier import pipeline
    from warehouse.models import QuarantineEntry

    client, engine, store = world["client"], world["engine"], world["store"]
    today = dt.datetime.now(dt.UTC).date()
    meter = green_button(today)
    link = open_link(client, ["utility", "accounting"])
    upload(client, link, "utility", "meter.xml", meter)
    upload(client, link, "accounting", "letter.txt", b"A letter from my accountant, typed out.\n")
    answer(client, link, "grant")
    assert client.app.state.grant_runs.wait(timeout=300)
    runs = runs_of(engine)
    assert runs["accounting"] == (
        "unreadable",
        None,
        "received, not yet readable: letter.txt",
        0,
        0,
        0,
        None,
    )
    assert runs["utility"][0] == "uploaded"

    meter_sha = hashlib.sha256(meter).hexdigest()
    with session_scope(engine) as session:
        as_of = session.scalars(select(GrantRun)).one().as_of_date
    store.write_bytes(
        store.layout.raw("utility", meter_sha, "xml"), meter.replace(b"<espi:value>3", b"<espi:value>9")
    )
    summary = pipeline.ingest(
        "utility",
        pipeline.shards_of([SME], as_of)[0],
        as_of,
        sme_ids=[SME],
        consent_at=dt.datetime.now(dt.UTC),
    )
    assert (summary["uploaded"], summary["quarantined"]) == (0, 1)
    reason = "the raw copy no longer matches its sha256 (changed since it was uploaded)"
    assert runs_of(engine)["utility"] == (
        "quarantined",
        "format",
        f"meter.xml: record file: {reason}",
        0,
        0,
        1,
        None,
    )
    assert canonical_rows(store, "utility_readings", as_of).empty
    with session_scope(engine) as session:
        entries = [
            (q.stage, q.source, q.record, q.field, q.reason, q.raw_sha256, q.resolved_at)
            for q in session.scalars(select(QuarantineEntry))
        ]
    assert entries == [("ingest", "utility", "meter.xml: file", "", reason, meter_sha, None)]
