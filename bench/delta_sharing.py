"""Delta Sharing benchmark: the cost of a lender's table over a long feed log.

A SQLite warehouse gets one lender whose feed log holds ``events`` events (every 20th a withdrawal
of an earlier delivery, the rest deliveries of a full dossier row), written straight into the
log. Then, in process (:mod:`warehouse.sharing`, what the routes run besides the feed's sync):

* ``snapshot_files``: listing the files of the latest version (one per block of 1,000 positions);
* ``build_block``: building one snapshot block's Parquet file from the log (cold, no cache);
* ``build_all``: building every block of the latest version;
* ``change_files_1000``: listing the change files of the last 1,000 versions;
* ``build_change``: building one version's change file.

Each is timed ``repeat`` times (median and max, seconds). Results go to
``bench/results/delta_sharing.json``. Run: ``python -m bench.delta_sharing --events 20000``.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import platform
import sqlite3
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import pyarrow as pa

RESULTS = Path(__file__).resolve().parent / "results"


def _row(n: int) -> dict[str, Any]:
    from warehouse.dossier_schema import ALL_COLUMNS

    row: dict[str, Any] = {}
    for k, column in enumerate(ALL_COLUMNS):
        kind = column.type
        if pa.types.is_floating(kind):
            row[column.name] = 0.001 * n + k
        elif pa.types.is_integer(kind):
            row[column.name] = n + k
        elif pa.types.is_list(kind):
            row[column.name] = ["accounting", "tax"]
        elif pa.types.is_date(kind):
            row[column.name] = dt.date(2026, 11, 1)
        elif pa.types.is_timestamp(kind):
            row[column.name] = dt.datetime(2026, 11, 2, 9, 30, tzinfo=dt.UTC)
        else:
            row[column.name] = f"{column.name}-{n}"
    row["dossier_id"] = f"SME-{n:06d}:2026-11-01:v2:accounting+tax@24m"
    row["sme_id"] = f"SME-{n:06d}"
    return row


def _fill(path: Path, events: int) -> None:
    from warehouse.events import row_json

    start = dt.datetime(2026, 11, 2, 9, 30)
    rows = []
    delivered: list[int] = []
    for seq in range(1, events + 1):
        at = (start + dt.timedelta(seconds=seq)).isoformat(sep=" ")
        if seq % 20 == 0 and delivered:
            gone = delivered.pop(len(delivered) // 2)
            rows.append(
                (
                    "bench",
                    seq,
                    "withdrawn",
                    gone,
                    f"SME-{gone:06d}:x",
                    f"SME-{gone:06d}",
                    at,
                    "consent_revoked",
                    "",
                    None,
                )
            )
        else:
            delivered.append(seq)
            rows.append(
                (
                    "bench",
                    seq,
                    "delivered",
                    seq,
                    f"SME-{seq:06d}:x",
                    f"SME-{seq:06d}",
                    at,
                    None,
                    f"{seq:064d}",
                    row_json(_row(seq)),
                )
            )
    with sqlite3.connect(path) as db:
        db.execute(
            "INSERT INTO lenders (lender_id, name, created_at) VALUES ('bench', 'Bench', ?)", (str(start),)
        )
        db.executemany(
            "INSERT INTO feed_events (lender_id, seq, kind, dossier_version_id, dossier_id, sme_id, "
            "pull_id, occurred_at, reason, content_sha256, dossier_json) VALUES (?, ?, ?, ?, ?, ?, 'p', ?, ?, ?, ?)",
            rows,
        )


def _timed(repeat: int, run: Any) -> dict[str, float]:
    spent = []
    for _ in range(repeat):
        started = time.perf_counter()
        run()
        spent.append(time.perf_counter() - started)
    return {"median_s": round(statistics.median(spent), 4), "max_s": round(max(spent), 4)}


def benchmark(events: int, repeat: int, work: Path) -> dict[str, Any]:
    from warehouse import sharing
    from warehouse.db import make_engine, session_scope
    from warehouse.migrate import upgrade

    path = work / "warehouse.db"
    engine = make_engine(f"sqlite:///{path}")
    upgrade(engine)
    _fill(path, events)
    with session_scope(engine) as session:
        latest = sharing.latest_version(session, "bench")
        files = sharing.snapshot_files(session, "bench", latest)
        changes = sharing.change_files(session, "bench", latest - 999, latest)
        block = files[len(files) // 2]
        results = {
            "snapshot_files": _timed(repeat, lambda: sharing.snapshot_files(session, "bench", latest)),
            "build_block": _timed(repeat, lambda: sharing.file_bytes(session, "bench", block.id)),
            "build_all": _timed(
                max(1, repeat // 5), lambda: [sharing.file_bytes(session, "bench", f.id) for f in files]
            ),
            "change_files_1000": _timed(
                repeat, lambda: sharing.change_files(session, "bench", latest - 999, latest)
            ),
            "build_change": _timed(repeat, lambda: sharing.file_bytes(session, "bench", changes[-1].id)),
        }
        size = len(sharing.file_bytes(session, "bench", block.id) or b"")
    engine.dispose()
    return {
        "benchmark": "delta_sharing",
        "events": events,
        "latest_version": latest,
        "snapshot_file_count": len(files),
        "rows_per_block_file": block.num_records,
        "block_file_bytes": size,
        "change_files_in_last_1000": len(changes),
        "repeat": repeat,
        "timings": results,
        "machine": {"python": platform.python_version(), "cpus": __import__("os").cpu_count()},
        "measured_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.delta_sharing", description=__doc__.splitlines()[0]
    )
    parser.add_argument("--events", type=int, default=20_000, help="feed events in the lender's log")
    parser.add_argument("--repeat", type=int, default=5, help="timed runs of each step")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="bench-sharing-") as work:
        result = benchmark(args.events, args.repeat, Path(work))
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "delta_sharing.json").write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
