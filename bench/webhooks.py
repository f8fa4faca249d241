"""Webhook delivery benchmark: signed messages per second from the worker to a receiver on loopback.

The benchmark makes a migrated SQLite warehouse with one lender, ``messages`` published dossier
versions and as many ``delivered`` events in the lender's feed log (each holding a dossier row of
the real schema, so bodies are the real size), and a receiver (``http.server`` on a free loopback
port) that verifies every signature with the ``standardwebhooks`` package and answers 204. It then
queues every event for one endpoint (:func:`warehouse.webhooks.enqueue`) and runs
:func:`warehouse.webhooks.send_due` until nothing is due, as the worker does (without the feed's
delivery the worker runs first, which the lender feed benchmark measures), measuring:

* ``workers_1`` and ``workers_8``: every message delivered, with 1 and 8 sending threads;
* ``workers_8_with_hangs``: the same while ``hanging`` of the messages get no answer until the
  per-request timeout (2 s) - they are retried and delivered at their second attempt, and the
  others are not held up behind them.

Results go to ``bench/results/webhooks.json``. Run: ``python -m bench.webhooks --messages 2000``.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import multiprocessing
import os
import platform
import tempfile
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from bench import core_pipeline

RESULTS = Path(__file__).resolve().parent / "results"
SECRET_KEY = "bench-secret-key"
TIMEOUT = 2.0
"""Seconds per attempt (a hanging first attempt takes this long; retries follow at once)."""


def _serve(secret: str, hang: set[int], port: Any, verified: Any, failed: Any, timeout: float) -> None:
    """The receiver process: verifies every request; the first attempt of each message in ``hang``
    gets no answer for longer than the sender's timeout."""
    from standardwebhooks import Webhook, WebhookVerificationError

    lock = threading.Lock()
    webhook = Webhook(secret)

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args: Any) -> None:
            pass

        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers["content-length"]))
            try:
                payload = webhook.verify(body, dict(self.headers.items()))
            except WebhookVerificationError:
                payload = None
            seq = payload["data"]["seq"] if payload else None
            with lock:
                hanging = seq in hang
                hang.discard(seq)
            if hanging:
                time.sleep(timeout * 2)
                return
            with verified.get_lock(), failed.get_lock():
                if payload is None:
                    failed.value += 1
                else:
                    verified.value += 1
            self.send_response(204 if payload else 400)
            self.send_header("content-length", "0")
            self.end_headers()

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    port.value = server.server_port
    server.serve_forever()


class _Receiver:
    """The receiver in its own process (so that it does not share the sender's interpreter)."""

    def __init__(self, secret: str, hang: set[int], timeout: float) -> None:
        context = multiprocessing.get_context("fork")
        self.port, self.verified, self.failed = (
            context.Value("i", 0),
            context.Value("i", 0),
            context.Value("i", 0),
        )
        self.process = context.Process(
            target=_serve, args=(secret, hang, self.port, self.verified, self.failed, timeout), daemon=True
        )
        self.process.start()
        while not self.port.value:
            time.sleep(0.01)
        self.url = f"http://127.0.0.1:{self.port.value}/hooks"

    def close(self) -> None:
        self.process.terminate()
        self.process.join()


def _row(n: int, as_of: dt.date) -> dict[str, Any]:
    """A dossier row of the real schema with made-up values (for the body's size)."""
    import pyarrow as pa

    from warehouse.dossier_schema import ALL_COLUMNS

    row: dict[str, Any] = {}
    for k, column in enumerate(ALL_COLUMNS):
        if pa.types.is_floating(column.type):
            row[column.name] = round(0.0137 * (n + k), 6)
        elif pa.types.is_integer(column.type):
            row[column.name] = n + k
        elif pa.types.is_list(column.type):
            row[column.name] = ["accounting", "tax"]
        elif pa.types.is_date(column.type):
            row[column.name] = as_of
        elif pa.types.is_timestamp(column.type):
            row[column.name] = dt.datetime(2026, 11, 2, 9, 30, tzinfo=dt.UTC)
        else:
            row[column.name] = f"value-{n}-{k}"
    row["dossier_id"] = f"SME-{n:06d}:{as_of.isoformat()}:v2:accounting+tax@24m"
    row["sme_id"] = f"SME-{n:06d}"
    return row


def _prepare(url: str, messages: int) -> None:
    """One lender, ``messages`` catalog rows and one delivered feed event each."""
    from warehouse import events
    from warehouse.db import make_engine, session_scope
    from warehouse.migrate import upgrade
    from warehouse.models import DossierVersion, FeedEvent, Lender, Publish, Sme

    engine = make_engine(url)
    upgrade(engine)
    as_of, now = dt.date(2026, 11, 1), dt.datetime.now(dt.UTC)
    with session_scope(engine) as session:
        session.add(Lender(lender_id="northwind", name="Northwind"))
        publish = Publish(
            as_of_date=as_of,
            schema_version=2,
            model_version="bench",
            manifest_path="-",
            files=1,
            rows=messages,
        )
        session.add(publish)
        session.add_all(
            Sme(sme_id=f"SME-{n:06d}", name=f"SME {n}", industry="retail", region="North", size_band="micro")
            for n in range(1, messages + 1)
        )
        session.flush()
        rows = [_row(n, as_of) for n in range(1, messages + 1)]
        session.add_all(
            DossierVersion(
                dossier_id=row["dossier_id"],
                sme_id=row["sme_id"],
                as_of_date=as_of,
                schema_version=2,
                model_version="bench",
                sources_used=["accounting", "tax"],
                publish_id=publish.id,
                file_path="-",
                content_sha256="0" * 64,
                grade="B",
                pd_12m=0.02,
                feed_seq=n,
            )
            for n, row in enumerate(rows, start=1)
        )
        session.flush()
        session.add_all(
            FeedEvent(
                lender_id="northwind",
                seq=n,
                kind=events.DELIVERED,
                dossier_version_id=n,
                dossier_id=row["dossier_id"],
                sme_id=row["sme_id"],
                pull_id="bench",
                occurred_at=now,
                content_sha256="0" * 64,
                dossier_json=events.row_json(row),
            )
            for n, row in enumerate(rows, start=1)
        )
    engine.dispose()


def scenario(work: Path, name: str, messages: int, workers: int, hanging: int) -> dict[str, Any]:
    from sqlalchemy import func, select

    from warehouse import webhooks
    from warehouse.db import make_engine, session_scope
    from warehouse.models import WebhookAttempt, WebhookEndpoint, WebhookMessage

    url = f"sqlite:///{work / f'{name}.db'}"
    _prepare(url, messages)
    engine = make_engine(url)
    config = webhooks.SendConfig(
        secret_key=SECRET_KEY, schedule=(0, 0, 0), timeout=TIMEOUT, workers=workers, allow_private=True
    )
    with session_scope(engine) as session:
        secret, endpoint = webhooks.create_endpoint(
            session,
            "northwind",
            "http://127.0.0.1/",
            secret_key=SECRET_KEY,
            allow_private=True,
            at=dt.datetime.now(dt.UTC),
        )
        endpoint.last_seq = 0  # queue the whole feed: enqueue is part of what is measured
    engine.dispose()
    hang = set(range(1, messages + 1, max(1, messages // hanging))) if hanging else set()
    receiver = _Receiver(secret, hang, TIMEOUT)
    with session_scope(engine) as session:
        session.scalars(select(WebhookEndpoint)).one().url = receiver.url
    try:
        started = time.perf_counter()
        with session_scope(engine) as session:
            queued = webhooks.enqueue(session)
        queue_seconds = time.perf_counter() - started
        started = time.perf_counter()
        rounds = 0
        while True:
            with session_scope(engine) as session:
                report = webhooks.send_due(session, config)
            if not report.claimed:
                break
            rounds += 1
        send_seconds = time.perf_counter() - started
        with session_scope(engine) as session:
            attempts = session.scalar(select(func.count(WebhookAttempt.id)))
            durations = sorted(session.scalars(select(WebhookAttempt.duration_ms)).all())
            statuses = dict(
                session.execute(
                    select(WebhookMessage.status, func.count(WebhookMessage.id)).group_by(
                        WebhookMessage.status
                    )
                ).all()
            )
    finally:
        receiver.close()
        engine.dispose()
    return {
        "scenario": name,
        "messages": queued,
        "sending_threads": workers,
        "hanging_first_attempts": hanging,
        "timeout_seconds": config.timeout,
        "queue_seconds": round(queue_seconds, 3),
        "send_seconds": round(send_seconds, 3),
        "messages_per_second": round(receiver.verified.value / send_seconds, 1),
        "delivered": statuses.get("delivered", 0),
        "failed": statuses.get("failed", 0),
        "attempts": attempts,
        "verified_by_receiver": receiver.verified.value,
        "signature_failures": receiver.failed.value,
        "claim_rounds": rounds,
        "attempt_p50_ms": durations[len(durations) // 2],
        "attempt_p99_ms": durations[min(len(durations) - 1, int(len(durations) * 0.99))],
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.webhooks", description=__doc__)
    parser.add_argument("--messages", type=int, default=2000, help="messages per scenario (default 2000)")
    parser.add_argument(
        "--hanging", type=int, default=20, help="messages whose first attempt hangs (default 20)"
    )
    parser.add_argument("--work", type=Path, help="scratch folder (default: a temporary one)")
    args = parser.parse_args(argv)
    work = args.work or Path(tempfile.mkdtemp(prefix="sme-dossier-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    load_before = os.getloadavg()[0]
    results = [
        scenario(work, "workers_1", args.messages, 1, 0),
        scenario(work, "workers_8", args.messages, 8, 0),
        scenario(work, "workers_8_with_hangs", args.messages, 8, args.hanging),
    ]
    report = {
        "benchmark": "webhooks",
        "measured_at": dt.datetime.now(dt.UTC).replace(microsecond=0).isoformat(),
        "machine": {
            "python": platform.python_version(),
            "platform": platform.platform(),
            "cpus": core_pipeline._cpus(),
            "load_average_1m_before": round(load_before, 1),
            "load_average_1m_after": round(os.getloadavg()[0], 1),
        },
        "note": "SQLite warehouse; sender (warehouse.webhooks.send_due) and receiver (http.server in another "
        "process, verifying every signature with standardwebhooks) on loopback; each attempt is logged and "
        "committed as it ends.",
        "results": results,
    }
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "webhooks.json").write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
