"""Lender feed benchmark: latency of ``GET /v1/feed`` pages under concurrent lender clients.

The benchmark prepares a home as ``bench.core_pipeline`` does (the sandbox universe's canonical
tables, SMEs, lenders and consents in a SQLite warehouse) and publishes with the pipeline's own
steps; it gives one lender a key, serves the web service with uvicorn on a free loopback port and
then measures, over real HTTP:

* ``first_read``: the first feed read, which delivers every current version the lender may hold
  into its feed log (the feed's planning and the log append, in one request);
* ``one_client``: one client reading the whole feed from the start, 20 times in a row;
* ``pages``: ``clients`` concurrent clients (threads) each reading the whole feed from the start in
  pages of ``limit`` events; the latency of every page request (p50, p99, max).

Every feed read first runs the feed's planning (:func:`warehouse.feed.sync`) over every published
version, so latency grows with the catalog, not with the page. Results go to
``bench/results/lender_feed.json``. Run: ``python -m bench.lender_feed --smes 2000 --clients 50``.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import platform
import statistics
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from bench import core_pipeline

RESULTS = Path(__file__).resolve().parent / "results"


def _percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(share * len(ordered)))]


def _read_all(url: str, key: str, limit: int) -> list[float]:
    import requests

    session = requests.Session()
    session.headers["Authorization"] = f"Bearer {key}"
    cursor, latencies = "", []
    while True:
        started = time.perf_counter()
        answer = session.get(f"{url}/v1/feed", params={"cursor": cursor, "limit": limit}, timeout=600)
        latencies.append(time.perf_counter() - started)
        answer.raise_for_status()
        page = answer.json()
        cursor = page["next_cursor"]
        if not page["has_more"]:
            return latencies


def benchmark(smes: int, clients: int, limit: int, work: Path, shard_count: int) -> dict[str, Any]:
    import uvicorn
    from sqlalchemy import func, select

    from dossier.settings import override
    from dossier.web.app import create_app
    from warehouse import keys
    from warehouse.db import session_scope
    from warehouse.models import Delivery, FeedEvent, Subscription

    home = work / f"feed-{smes}"
    core_pipeline.prepare(home, smes, shard_count)
    settings = core_pipeline._settings(home, shard_count)
    with override(settings):
        if not (home / "published.json").exists():
            core_pipeline.run_core(home, shard_count)
            (home / "published.json").write_text("{}")
        with session_scope() as session:
            lender_id = session.scalars(
                select(Subscription.lender_id).order_by(Subscription.lender_id)
            ).first()
            token, _key = keys.issue_key(session, lender_id, at=dt.datetime.now(dt.UTC))
        app = create_app(settings)
        server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning"))
        thread = threading.Thread(target=server.run, daemon=True)
        thread.start()
        while not server.started:
            time.sleep(0.05)
        url = f"http://127.0.0.1:{server.servers[0].sockets[0].getsockname()[1]}"
        try:
            started = time.perf_counter()
            first = _read_all(url, token, limit)
            first_read = time.perf_counter() - started
            with session_scope() as session:
                events = session.scalar(
                    select(func.count(FeedEvent.id)).where(FeedEvent.lender_id == lender_id)
                )
                delivered = session.scalar(
                    select(func.count(Delivery.id)).where(Delivery.lender_id == lender_id)
                )
            alone = [s for _ in range(20) for s in _read_all(url, token, limit)]
            started = time.perf_counter()
            with ThreadPoolExecutor(clients) as pool:
                runs = list(pool.map(lambda _i: _read_all(url, token, limit), range(clients)))
            wall = time.perf_counter() - started
        finally:
            server.should_exit = True
            thread.join(timeout=30)
    latencies = [s for run in runs for s in run]
    return {
        "smes": smes,
        "lender": lender_id,
        "feed_events": events,
        "delivered_versions": delivered,
        "page_limit": limit,
        "clients": clients,
        "first_read_seconds": round(first_read, 3),
        "first_read_pages": len(first),
        "one_client_page_p50_ms": round(_percentile(alone, 0.50) * 1000, 1),
        "one_client_page_p99_ms": round(_percentile(alone, 0.99) * 1000, 1),
        "page_requests": len(latencies),
        "page_p50_ms": round(_percentile(latencies, 0.50) * 1000, 1),
        "page_p99_ms": round(_percentile(latencies, 0.99) * 1000, 1),
        "page_max_ms": round(max(latencies) * 1000, 1),
        "page_mean_ms": round(statistics.fmean(latencies) * 1000, 1),
        "pages_per_second": round(len(latencies) / wall, 1),
        "targets": {"page_p99_ms_below": 100, "at_delivered_versions": 100_000},
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.lender_feed", description=__doc__)
    parser.add_argument("--smes", type=int, default=2000, help="universe size (default 2000)")
    parser.add_argument("--clients", type=int, default=50, help="concurrent clients (default 50)")
    parser.add_argument("--limit", type=int, default=1000, help="events per page (default 1000)")
    parser.add_argument("--shards", type=int, default=4, help="shards (default 4)")
    parser.add_argument("--work", type=Path, help="scratch folder (default: a temporary one)")
    args = parser.parse_args(argv)
    work = args.work or Path(tempfile.mkdtemp(prefix="sme-dossier-bench-"))
    result = benchmark(args.smes, args.clients, args.limit, work, args.shards)
    report = {
        "benchmark": "lender_feed",
        "measured_at": dt.datetime.now(dt.UTC).replace(microsecond=0).isoformat(),
        "machine": {
            "python": platform.python_version(),
            "platform": platform.platform(),
            "cpus": core_pipeline._cpus(),
        },
        "note": "SQLite warehouse, one uvicorn worker on loopback, clients as threads in the same process; "
        "every read runs the feed's planning over the whole catalog first.",
        "results": [result],
    }
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "lender_feed.json").write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
