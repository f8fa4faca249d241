"""Incremental pull benchmark: requests, bytes and seconds of a daily pull from the cursors against a
whole re-pull, for every source, against the bundled sandbox on loopback.

A migrated SQLite warehouse holds a sandbox universe of ``smes`` SMEs (one shard); every source is
pulled whole for ``day`` (which writes the cursors), then incrementally for the next day, then
whole again for that next day (``full=True``), each with the production HTTP sessions, counting
every request and response body. The canonical rows of the incremental and the whole pull of the
next day are compared (lineage columns aside): the benchmark fails if they differ.

Results go to ``bench/results/incremental_pull.json``. Run: ``python -m bench.incremental_pull --smes 300``.
"""

from __future__ import annotations

import argparse
import datetime as dt
import functools
import json
import platform
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import pandas as pd
import requests

from connectors.core.http import SYSTEM_CLOCK, make_session
from connectors.ingest import ingest_shard
from connectors.sandbox.seed import seed_warehouse
from connectors.sandbox.server import SandboxServer
from connectors.sandbox.universe import Universe
from dossier.settings import for_home, override
from warehouse.canonical import TABLES_BY_SOURCE
from warehouse.db import make_engine, session_scope
from warehouse.migrate import upgrade
from warehouse.storage import Store

RESULTS = Path(__file__).resolve().parent / "results"
SOURCES = ("accounting", "tax", "utility", "survey")
SEED = 20261125
DAY = dt.date(2026, 11, 24)
NEXT_DAY = dt.date(2026, 11, 25)
NOW = dt.datetime(2026, 11, 25, 12, tzinfo=dt.UTC)
LINEAGE = ["source_record", "raw_sha256"]


class Counted:
    """``factory(retry_reads)`` for ``ingest_shard``: production sessions counting requests and bytes."""

    def __init__(self) -> None:
        self.requests = 0
        self.bytes = 0
        self.lock = threading.Lock()

    def __call__(self, retry_reads: bool) -> requests.Session:
        session = make_session(3, SYSTEM_CLOCK, retry_reads=retry_reads)

        def count(response: requests.Response, *args: Any, **kwargs: Any) -> None:
            with self.lock:
                self.requests += 1
                self.bytes += len(response.content)

        session.hooks["response"].append(count)
        return session


def _canonical(store: Store, source: str, as_of: dt.date) -> dict[str, pd.DataFrame]:
    frames = {}
    for table in TABLES_BY_SOURCE[source]:
        frame = store.read_table(store.layout.canonical(table.name, as_of.isoformat(), 0)).to_pandas()
        frames[table.name] = (
            frame.drop(columns=LINEAGE).sort_values(list(table.key), kind="stable").reset_index(drop=True)
        )
    return frames


def run(smes: int, work: Path) -> dict[str, Any]:
    url = f"sqlite:///{work / 'bench.db'}"
    engine = make_engine(url)
    upgrade(engine)
    universe = Universe(SEED, smes, NEXT_DAY)
    with session_scope(engine) as session:
        seed_warehouse(session, universe, now=NOW - dt.timedelta(hours=12))
    store = Store(str(work / "store"))
    settings = for_home(work / "var", warehouse_url=url, shard_count=1, http_retries=3)
    results: dict[str, Any] = {}
    with override(settings), SandboxServer(universe) as server:

        def pull(source: str, as_of: dt.date, full: bool) -> dict[str, Any]:
            counted = Counted()
            started = time.perf_counter()
            summary = ingest_shard(
                source,
                0,
                as_of,
                session_factory=functools.partial(session_scope, engine),
                store=store,
                base_url=f"{server.url}/{source}",
                consent_at=NOW - dt.timedelta(hours=12),
                now=NOW,
                http_session_factory=counted,
                full=full,
            )
            return {
                "seconds": round(time.perf_counter() - started, 3),
                "requests": counted.requests,
                "bytes": counted.bytes,
                "pulled": summary["pulled"],
                "incremental": summary["incremental"],
            }

        for source in SOURCES:
            pull(source, DAY, True)
            incremental = pull(source, NEXT_DAY, False)
            step_rows = _canonical(store, source, NEXT_DAY)
            whole = pull(source, NEXT_DAY, True)
            for name, frame in _canonical(store, source, NEXT_DAY).items():
                pd.testing.assert_frame_equal(step_rows[name], frame)
            results[source] = {
                "incremental": incremental,
                "full": whole,
                "ratio": {
                    key: round(incremental[key] / whole[key], 3) if whole[key] else None
                    for key in ("requests", "bytes", "seconds")
                },
            }
    engine.dispose()
    totals = {
        kind: {key: sum(results[s][kind][key] for s in SOURCES) for key in ("requests", "bytes", "seconds")}
        for kind in ("incremental", "full")
    }
    ratio = {
        key: round(totals["incremental"][key] / totals["full"][key], 3)
        for key in ("requests", "bytes", "seconds")
    }
    return {"sources": results, "totals": totals, "ratio": ratio}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--smes", type=int, default=300)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        measured = run(args.smes, Path(tmp))
    report = {
        "benchmark": "incremental_pull",
        "smes": args.smes,
        "day": DAY.isoformat(),
        "next_day": NEXT_DAY.isoformat(),
        "revision_months": for_home(Path(tempfile.gettempdir())).pull_revision_months,
        "machine": {"python": platform.python_version(), "platform": platform.platform()},
        "measured_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        **measured,
    }
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "incremental_pull.json").write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps({"ratio": measured["ratio"], "totals": measured["totals"]}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
