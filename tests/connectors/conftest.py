"""Fixtures for the connector tests (helpers in ``connector_fixtures``).

* ``scripted`` - a real HTTP server answering from a script; ``clock`` - a clock that records waits;
  ``observed`` - production sessions that log each request and its timeout;
* ``sandbox`` - the bundled provider sandbox over a small universe (one per session), and
  ``seeded`` - a migrated warehouse (SQLite and PostgreSQL in turn) holding that universe's SMEs,
  connections and consents, with its own store.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from connector_fixtures import (
    AS_OF,
    CONTRACT_MIX,
    NOW,
    SEED,
    SIZE,
    FakeClock,
    ObservedSessions,
    ScriptedServer,
    Seeded,
)
from hypothesis import HealthCheck, settings

from connectors.sandbox.seed import seed_warehouse
from connectors.sandbox.server import SandboxServer
from connectors.sandbox.universe import Universe
from dossier.settings import for_home, override
from warehouse.db import make_engine, session_scope
from warehouse.migrate import upgrade
from warehouse.storage import Store

# Fuzz budgets: "ci" (the default) keeps the suite quick; ``--hypothesis-profile=fuzz`` searches long.
settings.register_profile("ci", max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.register_profile(
    "fuzz", max_examples=3000, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
settings.load_profile("ci")


@pytest.fixture
def scripted() -> Iterator[ScriptedServer]:
    server = ScriptedServer()
    server.thread.start()
    try:
        yield server
    finally:
        server.httpd.shutdown()
        server.httpd.server_close()


# --- time and sessions --------------------------------------------------------------------------------


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def observed(clock: FakeClock) -> ObservedSessions:
    return ObservedSessions(clock)


# --- the sandbox and a seeded warehouse ---------------------------------------------------------------


@pytest.fixture(scope="session")
def universe() -> Universe:
    return Universe(SEED, SIZE, AS_OF, mix=CONTRACT_MIX)


@pytest.fixture(scope="session")
def sandbox(universe: Universe) -> Iterator[SandboxServer]:
    with SandboxServer(universe) as server:
        yield server


def _seeded(url: str, universe: Universe, tmp_path: Path) -> Iterator[Seeded]:
    engine = make_engine(url)
    upgrade(engine)
    settings = for_home(tmp_path / "var", warehouse_url=url, shard_count=2, http_retries=5, http_timeout=5.0)
    with session_scope(engine) as session:
        summary = seed_warehouse(session, universe, now=NOW)
    try:
        with override(settings):
            yield Seeded(engine, Store(str(tmp_path / "store")), settings, summary)
    finally:
        engine.dispose()


@pytest.fixture
def seeded(universe: Universe, tmp_path: Path) -> Iterator[Seeded]:
    """The universe registered in a SQLite warehouse (the quick default)."""
    yield from _seeded(f"sqlite:///{tmp_path / 'seeded.db'}", universe, tmp_path)


@pytest.fixture
def seeded_postgres(postgres_url: str, universe: Universe, tmp_path: Path) -> Iterator[Seeded]:
    """The universe registered in a PostgreSQL warehouse (SQLite is ``seeded``)."""
    yield from _seeded(postgres_url, universe, tmp_path)
