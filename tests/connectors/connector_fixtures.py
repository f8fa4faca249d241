"""Helpers of the connector tests: real HTTP servers, a clock that does not sleep, observed sessions.

* :class:`ScriptedServer` - a small real HTTP server (``http.server`` on a free port) answering each
  path from a script of responses and recording every request, for driving the HTTP core through
  exact fault sequences;
* :class:`FakeClock` - records the waits the retry policy asks for instead of sleeping, and gives
  a monotonic reading the test controls (for token expiry);
* :class:`ObservedSessions` - real ``requests`` sessions (with the production retry policy) that
  record every request leaving them, with the timeout it was sent with;
* :class:`Seeded` - a warehouse holding a sandbox universe's SMEs, with the store and settings an
  ingest run uses.
"""

from __future__ import annotations

import datetime as dt
import functools
import json
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

import requests
from requests.adapters import HTTPAdapter
from sqlalchemy import Engine

from connectors.core.http import make_session
from connectors.sandbox.population import PopulationMix
from dossier.settings import Settings
from warehouse.db import session_scope
from warehouse.storage import Store

SEED = 20261125
AS_OF = dt.date(2026, 11, 25)
NOW = dt.datetime.combine(AS_OF, dt.time(), tzinfo=dt.UTC)
SIZE = 48
CONTRACT_MIX = PopulationMix(
    duplicate_rate=0.25,
    malformed_accounting_rate=0.08,
    malformed_utility_rate=0.08,
    malformed_survey_rate=0.08,
)
"""More defects than the default mix, so 48 SMEs include every kind a connector must handle."""
FIXED_MIX = PopulationMix(
    duplicate_rate=0.25, malformed_accounting_rate=0.0, malformed_utility_rate=0.0, malformed_survey_rate=0.0
)
"""The same universe after the providers fixed their malformed records (draws do not depend on rates)."""


# --- a scripted HTTP server ---------------------------------------------------------------------------


@dataclass
class Reply:
    status: int = 200
    body: bytes | str | dict[str, Any] | list[Any] = b""
    headers: dict[str, str] = field(default_factory=dict)
    delay: float = 0.0

    def payload(self) -> tuple[bytes, str]:
        if isinstance(self.body, dict | list):
            return json.dumps(self.body).encode(), "application/json"
        if isinstance(self.body, str):
            return self.body.encode(), "text/plain"
        return self.body, "application/octet-stream"


@dataclass
class Seen:
    method: str
    path: str
    query: dict[str, list[str]]
    headers: dict[str, str]
    body: bytes


class QuietServer(ThreadingHTTPServer):
    """Does not print the broken pipe of a client that timed out before a slow reply."""

    daemon_threads = True

    def handle_error(self, request: Any, client_address: Any) -> None:
        return


class ScriptedServer:
    """Answers ``(method, path)`` from a queue of :class:`Reply` (the last one repeats)."""

    def __init__(self) -> None:
        self.scripts: dict[tuple[str, str], list[Reply]] = {}
        self.seen: list[Seen] = []
        self.lock = threading.Lock()
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def _answer(self) -> None:
                parts = urlsplit(self.path)
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                with owner.lock:
                    owner.seen.append(
                        Seen(self.command, parts.path, parse_qs(parts.query), dict(self.headers), body)
                    )
                    queue = owner.scripts.get((self.command, parts.path))
                    reply = (
                        (queue.pop(0) if len(queue) > 1 else queue[0])
                        if queue
                        else Reply(404, {"code": "NO_SCRIPT"})
                    )
                if reply.delay:
                    threading.Event().wait(reply.delay)
                payload, media_type = reply.payload()
                self.send_response(reply.status)
                headers = {"Content-Type": media_type, **reply.headers, "Content-Length": str(len(payload))}
                for name, value in headers.items():
                    self.send_header(name, value)
                self.end_headers()
                self.wfile.write(payload)

            do_GET = _answer
            do_POST = _answer

            def log_message(self, *args: Any) -> None:
                return

        self.httpd = QuietServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, args=(0.05,), daemon=True)

    def script(self, method: str, path: str, *replies: Reply) -> None:
        self.scripts[(method, path)] = list(replies)

    def requests_to(self, path: str) -> list[Seen]:
        return [s for s in self.seen if s.path == path]


class FakeClock:
    """A clock whose ``sleep`` only records and whose ``monotonic`` moves when the test says."""

    def __init__(self) -> None:
        self.slept: list[float] = []
        self.now = 1000.0
        self.lock = threading.Lock()

    def sleep(self, seconds: float) -> None:
        with self.lock:
            self.slept.append(seconds)

    def monotonic(self) -> float:
        return self.now


class RecordingAdapter(HTTPAdapter):
    """The real adapter (same retry policy), noting each request it sends and its timeout."""

    def __init__(self, log: list[tuple[str, str, Any]], lock: threading.Lock, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.log = log
        self.lock = lock

    def send(self, request: requests.PreparedRequest, **kwargs: Any) -> requests.Response:  # type: ignore[override]
        with self.lock:
            self.log.append((request.method or "", request.url or "", kwargs.get("timeout")))
        return super().send(request, **kwargs)


class ObservedSessions:
    """``factory(retry_reads)`` for ``ingest_shard``: production sessions that log every request."""

    def __init__(self, clock: FakeClock, attempts: int = 5) -> None:
        self.clock = clock
        self.attempts = attempts
        self.sent: list[tuple[str, str, Any]] = []
        self.lock = threading.Lock()

    def __call__(self, retry_reads: bool) -> requests.Session:
        session = make_session(self.attempts, self.clock, retry_reads=retry_reads)
        policy = session.get_adapter("http://").max_retries
        adapter = RecordingAdapter(self.sent, self.lock, max_retries=policy)
        session.mount("http://", adapter)
        session.mount("https://", adapter)
        return session

    def urls(self) -> list[str]:
        return [url for _, url, _ in self.sent]


@dataclass
class Seeded:
    """A warehouse holding the universe's SMEs, plus the store and settings an ingest run uses."""

    engine: Engine
    store: Store
    settings: Settings
    summary: dict[str, Any]

    @property
    def sessions(self) -> Callable[[], Any]:
        return functools.partial(session_scope, self.engine)
