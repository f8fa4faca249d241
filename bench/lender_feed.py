"""Lender feed benchmark: ``GET /v1/feed`` pages of 1,000 versions under 50 concurrent lender clients
against a feed of 100,000 delivered versions, over loopback HTTP against a real uvicorn.

**Building the feed** (not timed as latency; its own timings are reported). A feed of 100,000
delivered versions needs 100,000 dossier versions that became current one after the other, so the
benchmark uses the warehouse's own functions directly rather than the whole pipeline:

1. ``smes`` SMEs are registered (one bulk insert), one lender with an API key and a subscription,
   and one consent per SME naming the lender (:func:`warehouse.consent.grant`);
2. for each of ``dates`` consecutive as-of dates, one synthetic scored frame per shard (values
   derived deterministically from the SME and the date, every column of the dossier schema filled)
   is published by the real publish (:func:`warehouse.dossier_store.publish`: Parquet parts,
   manifest, catalog), then the lender's feed is synced (:func:`warehouse.feed.refresh`), which
   delivers the new current version of every SME into its feed log.

The feed then holds ``smes x dates`` delivered versions (default 5,000 x 20 = 100,000).

**Measured**, over real HTTP (``requests``) against uvicorn on a free loopback port:

* ``sync_reads``: the cost of a read that has to plan: the first read after one more publish
  (it delivers ``smes`` new versions) and the first read after one consent is revoked (it plans
  over the whole catalog and appends one tombstone);
* ``one_client``: one client reading pages of ``limit`` events, alone (warm);
* ``concurrent``: ``clients`` client **processes** (so that their own work does not share the
  server's interpreter), started and connected first and then released together, each reading ``pages`` consecutive pages of ``limit`` events from its own
  starting cursor (spread over the whole feed); every page request's latency (p50, p99, max),
  the pages and megabytes per second overall. Clients take the next cursor from the
  ``Feed-Next-Cursor`` header and check each page's size; the first page of every client is also
  parsed and checked in full.

* ``concurrent_repeat``: the same clients read the same pages again. Nothing changed in between,
  so every page is served from the service's cache of encoded pages (``dossier.web.lender.PageCache``,
  keyed on the feed's state): what a lender pays when it, or another of its consumers, reads a page
  again (a retry, a second system of the same lender, a replay).

Nothing changes between the concurrent reads, so each costs the key check, the rate limit and one
query on the feed's state (:func:`warehouse.feed.fresh_state`), plus, the first time a page is read
under a state, its query and encoding. The starting cursors are spread over the feed without
regard to page boundaries, so the first pass builds every page it reads (the cache does not help
it). Results go to ``bench/results/lender_feed.json``.
Run: ``python -m bench.lender_feed`` (full size) or ``--smes 500 --dates 4 --clients 8`` (a quick look).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import multiprocessing
import os
import platform
import statistics
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from bench import core_pipeline

RESULTS = Path(__file__).resolve().parent / "results"
CONSENT_LEAD = dt.timedelta(days=30)
"""How long before the first as-of date the SMEs' consents are granted."""


def first_as_of(dates: int) -> dt.date:
    """The first as-of date of a feed of ``dates`` dates built today: recent enough that every
    consent (granted :data:`CONSENT_LEAD` before it) is still inside its 90-day reconfirmation
    window (:data:`warehouse.consent.RECONFIRM_AFTER`) when the feed is read, so the reads serve
    delivered rows rather than the tombstones of lapsed consents."""
    return dt.datetime.now(dt.UTC).date() - dt.timedelta(days=dates + 10)


LENDER = "bench-lender"
SOURCES_USED = ("accounting", "tax")
HISTORY_MONTHS = 24
MODEL_VERSION = "bench-synthetic"
GRADES = "ABCDE"


def _percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(share * len(ordered)))]


def _ms(seconds: float) -> float:
    return round(seconds * 1000, 1)


def _synthetic_scored(sme_ids: list[str], day: int) -> Any:
    """A scored frame (what evaluation hands over) for ``sme_ids`` on as-of day ``day``."""
    import pandas as pd
    import pyarrow as pa

    from warehouse.dossier_schema import FEATURE_COLUMNS, SCORE_COLUMNS

    rows = []
    scope = f"{'+'.join(SOURCES_USED)}@{HISTORY_MONTHS}m"
    for sme_id in sme_ids:
        n = int(sme_id[-6:])
        row: dict[str, Any] = {
            "sme_id": sme_id,
            "scope": scope,
            "history_months": HISTORY_MONTHS,
            "sources_used": list(SOURCES_USED),
        }
        for k, column in enumerate(FEATURE_COLUMNS):
            if pa.types.is_floating(column.type):
                row[column.name] = round(0.0137 * n * (k + 1) + 0.001 * day, 6)
            elif pa.types.is_integer(column.type):
                row[column.name] = (10 * n + k + day) % 1000
            else:
                row[column.name] = "GBP"
        pd_12m = ((n * 7919 + day * 104729) % 1000) / 4000
        row.update(
            pd_12m=pd_12m,
            score=int(900 - 1000 * pd_12m),
            grade=GRADES[min(4, int(pd_12m * 20))],
            reason_codes=[f"R{n % 50:02d}", "VAT_LATE"],
            reason_texts=[f"Reason {n % 50}", "VAT returns filed late"],
            credit_limit=2500.0 * (n % 40 + 1),
            indicative_rate=round(0.07 + pd_12m / 10, 6),
            pd_low=round(pd_12m * 0.8, 6),
            pd_high=round(min(1.0, pd_12m * 1.25), 6),
            coverage=1.0,
            improvement_hint="File VAT returns on time",
            consistency_score=round(1 - pd_12m / 2, 6),
            discrepancy_codes=[] if n % 10 else ["BOOKS_ABOVE_VAT"],
        )
        rows.append(row)
    columns = [
        "sme_id",
        "scope",
        "history_months",
        "sources_used",
        *(c.name for c in FEATURE_COLUMNS + SCORE_COLUMNS),
    ]
    return pd.DataFrame(rows, columns=columns)


def build_feed(home: Path, smes: int, dates: int, shards: int) -> dict[str, Any]:
    """Register, publish ``dates`` dates and sync the lender after each (see the module text)."""
    from sqlalchemy import insert

    from dossier.settings import for_home, override
    from warehouse import consent, keys
    from warehouse.db import get_engine, session_scope
    from warehouse.dossier_store import publish
    from warehouse.feed import refresh, subscribe
    from warehouse.migrate import upgrade
    from warehouse.models import Lender, Sme
    from warehouse.storage import Store

    home.mkdir(parents=True, exist_ok=True)
    settings = for_home(home, rate_limit_per_minute=0)
    timings: dict[str, Any] = {"publish_seconds": [], "sync_seconds": []}
    with override(settings):
        engine = get_engine()
        upgrade(engine)
        store = Store(settings.store_url, settings.storage_options())
        sme_ids = [f"SME-{n:06d}" for n in range(1, smes + 1)]
        first = first_as_of(dates)
        start = dt.datetime.combine(first, dt.time(), tzinfo=dt.UTC) - CONSENT_LEAD
        started = time.perf_counter()
        with session_scope(engine) as session:
            session.add(Lender(lender_id=LENDER, name="Bench Lender"))
            session.flush()
            session.execute(
                insert(Sme),
                [
                    {
                        "sme_id": sme_id,
                        "name": f"Bench SME {sme_id}",
                        "industry": ("retail", "construction", "hospitality")[i % 3],
                        "region": ("London", "Wales", "Scotland", "North West")[i % 4],
                        "size_band": ("micro", "small", "medium")[i % 3],
                        "founded_year": 1990 + i % 30,
                    }
                    for i, sme_id in enumerate(sme_ids)
                ],
            )
            for sme_id in sme_ids:
                consent.grant(
                    session,
                    consent_id=f"C-{sme_id}",
                    sme_id=sme_id,
                    sources=SOURCES_USED,
                    recipients=[LENDER],
                    purpose="credit_decision",
                    history_months=HISTORY_MONTHS,
                    granted_at=start,
                    expires_at=start + dt.timedelta(days=3650),
                )
            subscribe(session, LENDER)
            token, _key = keys.issue_key(session, LENDER, at=start)
        timings["register_seconds"] = round(time.perf_counter() - started, 2)
        shard_ids = [sme_ids[s::shards] for s in range(shards)]
        for day in range(dates):
            as_of = first + dt.timedelta(days=day)
            at = dt.datetime.combine(as_of, dt.time(6), tzinfo=dt.UTC) + dt.timedelta(days=1)
            started = time.perf_counter()
            with session_scope(engine) as session:
                publish(
                    session,
                    store,
                    as_of=as_of,
                    scored=(_synthetic_scored(ids, day) for ids in shard_ids),
                    model_version=MODEL_VERSION,
                    now=at,
                )
            timings["publish_seconds"].append(round(time.perf_counter() - started, 2))
            started = time.perf_counter()
            with session_scope(engine) as session:
                refresh(session, store, LENDER, now=at + dt.timedelta(minutes=5))
            timings["sync_seconds"].append(round(time.perf_counter() - started, 2))
            print(
                f"date {day + 1}/{dates}: publish {timings['publish_seconds'][-1]} s, "
                f"sync {timings['sync_seconds'][-1]} s",
                flush=True,
            )
    return {"token": token, "timings": timings, "next_day": dates, "first_as_of": first.isoformat()}


def _publish_one_more(home: Path, smes: int, first: dt.date, day: int, shards: int) -> None:
    from dossier.settings import for_home, override
    from warehouse.db import get_engine, session_scope
    from warehouse.dossier_store import publish
    from warehouse.storage import Store

    settings = for_home(home, rate_limit_per_minute=0)
    with override(settings):
        store = Store(settings.store_url, settings.storage_options())
        sme_ids = [f"SME-{n:06d}" for n in range(1, smes + 1)]
        as_of = first + dt.timedelta(days=day)
        with session_scope(get_engine()) as session:
            publish(
                session,
                store,
                as_of=as_of,
                scored=(_synthetic_scored(sme_ids[s::shards], day) for s in range(shards)),
                model_version=MODEL_VERSION,
                now=dt.datetime.now(dt.UTC),
            )


def _revoke_one(home: Path, consent_id: str) -> None:
    from dossier.settings import for_home, override
    from warehouse import consent
    from warehouse.db import get_engine, session_scope

    with override(for_home(home, rate_limit_per_minute=0)), session_scope(get_engine()) as session:
        consent.revoke(session, consent_id, at=dt.datetime.now(dt.UTC), reason="benchmark")


def _client(
    url: str, token: str, cursor: str, limit: int, pages: int, results: Any, ready: Any, go: Any
) -> None:
    """One lender client (its own process): once started and connected it reports ``ready`` and
    waits for ``go``, so that no page is timed while other clients are still starting; then
    ``pages`` page requests from ``cursor``; latencies out."""
    try:
        import requests

        session = requests.Session()
        session.headers["Authorization"] = f"Bearer {token}"
        session.get(f"{url}/v1/lender", timeout=600).raise_for_status()  # connected, key checked
        ready.put(True)
        go.wait()
        results.put(_read_pages(session, url, cursor, limit, pages))
    except Exception as error:  # reported by the parent, which waits for every client
        ready.put(True)
        results.put({"error": f"{type(error).__name__}: {error}"})


def _read_pages(session: Any, url: str, cursor: str, limit: int, pages: int) -> dict[str, Any]:
    latencies, sizes, events = [], 0, 0
    for number in range(pages):
        started = time.perf_counter()
        answer = session.get(f"{url}/v1/feed", params={"cursor": cursor, "limit": limit}, timeout=600)
        body = answer.content
        latencies.append(time.perf_counter() - started)
        answer.raise_for_status()
        sizes += len(body)
        if number == 0:
            page = json.loads(body)
            assert page["next_cursor"] == answer.headers["feed-next-cursor"], "cursor header differs"
            seqs = [e["seq"] for e in page["events"]]
            assert seqs == list(range(int(cursor or 0) + 1, int(cursor or 0) + 1 + len(seqs))), "not in order"
            assert len(seqs) == limit or not page["has_more"], "short page"
            events += len(page["events"])
        cursor = answer.headers["feed-next-cursor"]
        if answer.headers["feed-has-more"] != "true":
            break
    return {"latencies": latencies, "bytes": sizes, "checked_events": events}


def _concurrent(
    context: Any, url: str, token: str, starts: list[str], limit: int, pages: int
) -> tuple[list[dict[str, Any]], float]:
    """One client process per starting cursor, released together once all are started and
    connected; their results and the wall time from the release."""
    results, ready, go = context.Queue(), context.Queue(), context.Event()
    workers = [
        context.Process(target=_client, args=(url, token, start, limit, pages, results, ready, go))
        for start in starts
    ]
    for worker in workers:
        worker.start()
    for _ in workers:
        ready.get(timeout=600)
    started = time.perf_counter()
    go.set()
    runs = [results.get(timeout=3600) for _ in workers]
    wall = time.perf_counter() - started
    for worker in workers:
        worker.join(timeout=60)
    failed = [run["error"] for run in runs if "error" in run]
    if failed:
        raise RuntimeError(f"{len(failed)} clients failed, first: {failed[0]}")
    return runs, wall


def _summary(runs: list[dict[str, Any]], wall: float, clients: int, pages: int) -> dict[str, Any]:
    latencies = [s for run in runs for s in run["latencies"]]
    return {
        "clients": clients,
        "client_processes": True,
        "pages_per_client": pages,
        "page_requests": len(latencies),
        "page_p50_ms": _ms(_percentile(latencies, 0.50)),
        "page_p99_ms": _ms(_percentile(latencies, 0.99)),
        "page_max_ms": _ms(max(latencies)),
        "page_mean_ms": _ms(statistics.fmean(latencies)),
        "pages_per_second": round(len(latencies) / wall, 1),
        "megabytes_per_second": round(sum(r["bytes"] for r in runs) / wall / 1e6, 1),
        "mean_page_kilobytes": round(sum(r["bytes"] for r in runs) / len(latencies) / 1e3, 1),
        "events_checked_in_full": sum(r["checked_events"] for r in runs),
    }


def _timed_read(url: str, token: str, limit: int) -> float:
    import requests

    started = time.perf_counter()
    answer = requests.get(
        f"{url}/v1/feed",
        params={"cursor": "", "limit": limit},
        headers={"Authorization": f"Bearer {token}"},
        timeout=600,
    )
    answer.raise_for_status()
    return time.perf_counter() - started


def benchmark(
    smes: int,
    dates: int,
    clients: int,
    pages: int,
    limit: int,
    work: Path,
    shards: int,
    *,
    build_only: bool = False,
) -> dict[str, Any]:
    import requests
    import uvicorn
    from sqlalchemy import func, select

    from dossier.settings import for_home, override
    from dossier.web.app import create_app
    from warehouse.db import get_engine, session_scope
    from warehouse.models import Delivery, FeedEvent

    home = work / f"feed-{smes}x{dates}"
    marker = home / "built.json"
    # a home built by an earlier run with the same sizes (--work) is read again, not rebuilt
    built = json.loads(marker.read_text()) if marker.exists() else build_feed(home, smes, dates, shards)
    run = built.get("runs", 0)
    built["runs"] = run + 1  # each run publishes one more date and revokes one more SME's consent
    marker.write_text(json.dumps(built))
    if build_only:
        return {}
    token = built["token"]
    settings = for_home(home, rate_limit_per_minute=0)
    with override(settings):
        with session_scope(get_engine()) as session:
            events = session.scalar(select(func.count(FeedEvent.id)).where(FeedEvent.lender_id == LENDER))
            delivered = session.scalar(select(func.count(Delivery.id)).where(Delivery.lender_id == LENDER))
        app = create_app(settings)
        server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning"))
        thread = threading.Thread(target=server.run, daemon=True)
        thread.start()
        while not server.started:
            time.sleep(0.05)
        url = f"http://127.0.0.1:{server.servers[0].sockets[0].getsockname()[1]}"
        try:
            _timed_read(url, token, limit)  # warms the service (first connection, page cache)
            fresh_read = _timed_read(url, token, limit)
            first = dt.date.fromisoformat(built["first_as_of"])
            _publish_one_more(home, smes, first, built["next_day"] + run, shards)
            after_publish = _timed_read(url, token, limit)
            _revoke_one(home, f"C-SME-{run + 1:06d}")
            after_revoke = _timed_read(url, token, limit)
            with session_scope(get_engine()) as session:
                newest = session.scalar(select(func.max(FeedEvent.seq)).where(FeedEvent.lender_id == LENDER))
            alone = []
            auth = {"Authorization": f"Bearer {token}"}
            with requests.Session() as one:
                cursor = "0"
                for _ in range(pages):
                    started = time.perf_counter()
                    answer = one.get(
                        f"{url}/v1/feed", params={"cursor": cursor, "limit": limit}, headers=auth
                    )
                    _ = answer.content
                    alone.append(time.perf_counter() - started)
                    cursor = answer.headers["feed-next-cursor"]
            span = max(0, newest - pages * limit)
            starts = [str(span * i // max(1, clients - 1)) for i in range(clients)]
            context = multiprocessing.get_context("spawn")
            runs, wall = _concurrent(context, url, token, starts, limit, pages)
            repeat, repeat_wall = _concurrent(context, url, token, starts, limit, pages)
        finally:
            server.should_exit = True
            thread.join(timeout=30)
    return {
        "smes": smes,
        "dates": dates,
        "feed_events": events,
        "delivered_versions": delivered,
        "page_limit": limit,
        "build": built["timings"],
        "sync_reads": {
            "read_nothing_changed_ms": _ms(fresh_read),
            "first_read_after_publish_ms": _ms(after_publish),
            "first_read_after_publish_delivers": smes,
            "first_read_after_one_revocation_ms": _ms(after_revoke),
        },
        "one_client": {
            "pages": len(alone),
            "page_p50_ms": _ms(_percentile(alone, 0.50)),
            "page_p99_ms": _ms(_percentile(alone, 0.99)),
        },
        "concurrent": _summary(runs, wall, clients, pages),
        "concurrent_repeat": _summary(repeat, repeat_wall, clients, pages),
        "targets": {"page_p99_ms_below": 100, "at_delivered_versions": 100_000, "clients": 50},
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.lender_feed", description=__doc__)
    parser.add_argument("--smes", type=int, default=5000, help="SMEs (default 5000)")
    parser.add_argument("--dates", type=int, default=20, help="as-of dates published (default 20)")
    parser.add_argument("--clients", type=int, default=50, help="concurrent client processes (default 50)")
    parser.add_argument("--pages", type=int, default=20, help="pages each client reads (default 20)")
    parser.add_argument("--limit", type=int, default=1000, help="events per page (default 1000)")
    parser.add_argument("--shards", type=int, default=4, help="scored frames per publish (default 4)")
    parser.add_argument("--work", type=Path, help="scratch folder (default: a temporary one)")
    parser.add_argument("--no-write", action="store_true", help="print the results only")
    parser.add_argument("--build-only", action="store_true", help="build the feed in --work and stop")
    args = parser.parse_args(argv)
    work = args.work or Path(tempfile.mkdtemp(prefix="sme-dossier-bench-"))
    load_before = os.getloadavg()
    result = benchmark(
        args.smes,
        args.dates,
        args.clients,
        args.pages,
        args.limit,
        work,
        args.shards,
        build_only=args.build_only,
    )
    if args.build_only:
        return 0
    report = {
        "benchmark": "lender_feed",
        "measured_at": dt.datetime.now(dt.UTC).replace(microsecond=0).isoformat(),
        "machine": {
            "python": platform.python_version(),
            "platform": platform.platform(),
            "cpus": core_pipeline._cpus(),
            "load_average_1m_before_and_after": [round(load_before[0], 1), round(os.getloadavg()[0], 1)],
        },
        "note": "SQLite warehouse; one uvicorn worker on loopback; clients are separate processes on "
        "the same machine (their CPU is shared with the server's, and the machine with other work: "
        "see the load average); the feed is built with the real publish and sync from synthetic "
        "scored frames (see bench/lender_feed.py). A read when nothing changed costs one query on the "
        "feed's state and, the first time a page is read under that state, its query and encoding "
        "(concurrent); a page read again comes from the cache of encoded pages (concurrent_repeat). "
        "A read that has to plan re-plans the whole catalog.",
        "results": [result],
    }
    if not args.no_write:
        RESULTS.mkdir(exist_ok=True)
        (RESULTS / "lender_feed.json").write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
