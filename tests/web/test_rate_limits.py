"""Rate limits of the lender API: per key, from the settings, counted in memory or in Redis; the
RateLimit fields on every counted answer (a model, a Parquet file or a problem), and past the
limit a 429 problem with Retry-After. Redis is the local server named by
``DOSSIER_TEST_REDIS_URL`` (default ``redis://127.0.0.1:6379/15``; ``skip`` skips those runs)."""

from __future__ import annotations

import datetime as dt
import logging
import os
import re
import socket
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from dossier.settings import Settings, SettingsError, for_home
from dossier.web.app import create_app
from dossier.web.deps import RateLimiter
from warehouse import keys
from warehouse.db import make_engine, session_scope
from warehouse.feed import subscribe
from warehouse.migrate import upgrade

REDIS_URL = os.environ.get("DOSSIER_TEST_REDIS_URL", "redis://127.0.0.1:6379/15")
LIMIT = 3


@pytest.fixture(params=["memory", "redis"])
def storage_url(request: pytest.FixtureRequest) -> str:
    if request.param == "memory":
        return "memory://"
    if REDIS_URL == "skip":
        pytest.skip("DOSSIER_TEST_REDIS_URL=skip: Redis runs disabled on this machine")
    return REDIS_URL


@pytest.fixture
def warehouse(tmp_path: Path) -> tuple[str, dict[str, str]]:
    """A migrated SQLite warehouse with lenders northwind (two keys) and kestrel; their tokens."""
    url = f"sqlite:///{tmp_path / 'warehouse.db'}"
    engine = make_engine(url)
    upgrade(engine)
    now = dt.datetime.now(dt.UTC)
    tokens = {}
    with session_scope(engine) as session:
        tokens["northwind"], _ = keys.add_lender(session, "northwind", at=now)
        tokens["northwind second key"], _ = keys.issue_key(session, "northwind", at=now)
        tokens["kestrel"], _ = keys.add_lender(session, "kestrel", at=now)
        subscribe(session, "northwind")
    engine.dispose()
    return url, tokens


def app_for(tmp_path: Path, url: str, **changes: Any) -> Any:
    settings = for_home(tmp_path / "var", warehouse_url=url, operator_token="operator-secret", **changes)
    return create_app(settings)


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def quota(answer: Any) -> tuple[str, int, int]:
    """(policy field, remaining, seconds to reset) of an answer's RateLimit fields."""
    remaining, reset = re.fullmatch(r'"per-key";r=(\d+);t=(\d+)', answer.headers["ratelimit"]).groups()
    return answer.headers["ratelimit-policy"], int(remaining), int(reset)


def test_each_key_gets_its_limit_then_429_with_retry_after(
    tmp_path: Path, warehouse: tuple[str, dict[str, str]], storage_url: str
) -> None:
    url, tokens = warehouse
    app = app_for(tmp_path, url, rate_limit_per_minute=LIMIT, rate_limit_storage_url=storage_url)
    with TestClient(app, raise_server_exceptions=False) as client:
        answers = [
            client.get("/v1/lender", headers=bearer(tokens["northwind"])),
            client.get("/v1/feed.parquet", headers=bearer(tokens["northwind"])),
            client.get("/v1/feed", params={"cursor": "x"}, headers=bearer(tokens["northwind"])),
            client.get("/v1/subscriptions", headers=bearer(tokens["northwind"])),
        ]
        others = [
            client.get("/v1/lender", headers=bearer(tokens["northwind second key"])),
            client.get("/v1/lender", headers=bearer(tokens["kestrel"])),
        ]
        uncounted = [client.get("/v1/lender"), client.get("/v1/lender", headers=bearer("sdk_0_unknown"))]
    assert [a.status_code for a in answers] == [200, 200, 400, 429]
    assert [quota(a)[:2] for a in answers] == [(f'"per-key";q={LIMIT};w=60', r) for r in (2, 1, 0, 0)]
    assert all(1 <= quota(a)[2] <= 60 for a in answers)
    refused = answers[-1]
    assert refused.headers["content-type"] == "application/problem+json"
    assert refused.headers["retry-after"] == str(quota(refused)[2])
    assert refused.json() == {
        "type": "about:blank",
        "title": refused.json()["title"],
        "status": 429,
        "detail": f"rate limit of {LIMIT} requests per minute for this key reached; retry in "
        f"{quota(refused)[2]} s",
        "instance": "/v1/subscriptions",
    }
    assert [(a.status_code, quota(a)[1]) for a in others] == [(200, LIMIT - 1), (200, LIMIT - 1)]
    assert [(a.status_code, "ratelimit" in a.headers) for a in uncounted] == [(401, False), (401, False)]
    app.state.rate_limiter.clear(tokens["northwind"].split("_")[1])


def test_redis_counts_the_requests_of_every_service_process_together(
    tmp_path: Path, warehouse: tuple[str, dict[str, str]]
) -> None:
    if REDIS_URL == "skip":
        pytest.skip("DOSSIER_TEST_REDIS_URL=skip: Redis runs disabled on this machine")
    url, tokens = warehouse
    auth = bearer(tokens["northwind"])
    first = app_for(tmp_path, url, rate_limit_per_minute=LIMIT, rate_limit_storage_url=REDIS_URL)
    second = app_for(tmp_path, url, rate_limit_per_minute=LIMIT, rate_limit_storage_url=REDIS_URL)
    with TestClient(first) as one, TestClient(second) as two:
        statuses = [client.get("/v1/lender", headers=auth).status_code for client in (one, two, one, two)]
    assert statuses == [200, 200, 200, 429]
    first.state.rate_limiter.clear(tokens["northwind"].split("_")[1])


def test_no_limit_when_the_setting_is_zero(tmp_path: Path, warehouse: tuple[str, dict[str, str]]) -> None:
    url, tokens = warehouse
    with TestClient(app_for(tmp_path, url, rate_limit_per_minute=0)) as client:
        answers = [client.get("/v1/lender", headers=bearer(tokens["northwind"])) for _ in range(LIMIT + 2)]
    assert [(a.status_code, "ratelimit" in a.headers) for a in answers] == [(200, False)] * (LIMIT + 2)


def test_an_unreachable_redis_lets_requests_through_with_a_warning(
    tmp_path: Path, warehouse: tuple[str, dict[str, str]], caplog: pytest.LogCaptureFixture
) -> None:
    url, tokens = warehouse
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        closed_port = probe.getsockname()[1]
    app = app_for(
        tmp_path, url, rate_limit_per_minute=1, rate_limit_storage_url=f"redis://127.0.0.1:{closed_port}/0"
    )
    with caplog.at_level(logging.WARNING, logger="dossier.web.deps"), TestClient(app) as client:
        answers = [client.get("/v1/lender", headers=bearer(tokens["northwind"])) for _ in range(3)]
    assert [(a.status_code, "ratelimit" in a.headers) for a in answers] == [(200, False)] * 3
    assert sum("rate-limit store unavailable" in r.getMessage() for r in caplog.records) == 3


def test_the_limiter_counts_per_identity_in_fixed_windows() -> None:
    limiter = RateLimiter(2, "memory://")
    seen = [limiter.hit("a") for _ in range(3)] + [limiter.hit("b")]
    assert [(allowed, q.limit, q.remaining) for allowed, q in seen] == [
        (True, 2, 1),
        (True, 2, 0),
        (False, 2, 0),
        (True, 2, 1),
    ]
    assert RateLimiter(0, "memory://").hit("a") == (True, None)


@pytest.mark.parametrize(
    ("variable", "value", "message"),
    [
        ("DOSSIER_RATE_LIMIT_PER_MINUTE", "-1", "greater than or equal to 0"),
        ("DOSSIER_RATE_LIMIT_PER_MINUTE", "many", "valid integer"),
        ("DOSSIER_RATE_LIMIT_STORAGE_URL", "memcached://127.0.0.1:11211", "memory://, redis://"),
        ("DOSSIER_RATE_LIMIT_STORAGE_URL", "redis", "memory://, redis://"),
    ],
)
def test_bad_rate_limit_settings_name_the_variable(variable: str, value: str, message: str) -> None:
    with pytest.raises(SettingsError, match=f"{variable}={value!r} is not valid: .*{re.escape(message)}"):
        Settings.from_env({"DOSSIER_HOME": "/tmp/x", variable: value})
    assert Settings.from_env({"DOSSIER_HOME": "/tmp/x", variable: "0" if "MINUTE" in variable else REDIS_URL})


def test_the_docstring_examples_hold() -> None:
    import doctest

    from dossier.web import deps

    outcome = doctest.testmod(deps)
    assert (outcome.attempted > 0, outcome.failed) == (True, 0)


@pytest.fixture
def served(tmp_path: Path, warehouse: tuple[str, dict[str, str]]) -> Any:
    """The service with a limit of one request a minute, over real HTTP on a free loopback port;
    yields (base url, app, tokens)."""
    import threading
    import time

    import uvicorn

    url, tokens = warehouse
    app = app_for(tmp_path, url, rate_limit_per_minute=1)
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    for _ in range(200):
        if server.started:
            break
        time.sleep(0.05)
    port = server.servers[0].sockets[0].getsockname()[1]
    yield f"http://127.0.0.1:{port}", app, tokens
    server.should_exit = True
    thread.join(timeout=10)


def test_the_pull_client_waits_out_a_429_for_its_retry_after(served: Any, tmp_path: Path) -> None:
    from dossier.lender_client import pull_over_api

    base, app, tokens = served
    prefix = tokens["northwind"].split("_")[1]
    waits: list[float] = []

    def window_passes(seconds: float) -> None:
        waits.append(seconds)
        app.state.rate_limiter.clear(prefix)

    summary = pull_over_api(base, tokens["northwind"], tmp_path / "inbox", sleep=window_passes)
    assert (summary["lender_id"], summary["cursor_to"], summary["files"]) == ("northwind", "0", [])
    assert len(waits) == 1
    assert 1 <= waits[0] <= 60


def test_the_pull_client_gives_up_after_waiting_out_five_429s(served: Any, tmp_path: Path) -> None:
    from dossier.lender_client import RATE_LIMIT_WAITS, LenderApiError, pull_over_api

    base, _app, tokens = served
    waits: list[float] = []
    with pytest.raises(LenderApiError, match=r"answered 429: rate limit of 1 requests per minute"):
        pull_over_api(base, tokens["northwind"], tmp_path / "inbox", sleep=waits.append)
    assert len(waits) == RATE_LIMIT_WAITS
