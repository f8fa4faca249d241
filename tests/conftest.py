"""Fixtures shared by every test package.

* ``warehouse_engine`` runs a test on SQLite **and** on PostgreSQL (a fresh schema per test in the
  database named by ``DOSSIER_TEST_POSTGRES_URL``, default the local server's ``test`` database).
  PostgreSQL is required: set ``DOSSIER_TEST_POSTGRES_URL=skip`` to skip those runs on a machine
  without it (CI never does).
* ``home`` gives each test its own embedded settings (warehouse and store in ``tmp_path``).
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from postgres_schema import fresh_postgres_schema
from sqlalchemy import Engine

from dossier.settings import Settings, apply_airflow_environment, for_home, override
from warehouse.db import make_engine
from warehouse.migrate import upgrade


def pytest_configure(config: pytest.Config) -> None:
    """Point Airflow (configured at import) and the default settings at a private folder per test process."""
    scratch = Path(tempfile.mkdtemp(prefix="sme-dossier-tests-"))
    settings = for_home(scratch / "var")
    settings.airflow_home.mkdir(parents=True)
    apply_airflow_environment(settings)
    os.environ["DOSSIER_HOME"] = str(scratch / "var")


POSTGRES_URL = os.environ.get(
    "DOSSIER_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test"
)
SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """``../shared/data`` beside the checkout; tests that need it skip with a clear message when absent."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"shared data folder {SHARED_DATA} is not present on this machine")
    return SHARED_DATA


@pytest.fixture
def postgres_url() -> Iterator[str]:
    """URL of a fresh, empty PostgreSQL schema, dropped after the test."""
    with fresh_postgres_schema() as url:
        yield url


@pytest.fixture(params=["sqlite", "postgresql"])
def warehouse_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A migrated, empty warehouse on each backend in turn."""
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'warehouse.db'}"
    else:
        url = request.getfixturevalue("postgres_url")
    engine = make_engine(url)
    upgrade(engine)
    engine.dispose()
    return url


@pytest.fixture
def warehouse_engine(warehouse_url: str) -> Iterator[Engine]:
    engine = make_engine(warehouse_url)
    yield engine
    engine.dispose()


@pytest.fixture
def home(tmp_path: Path) -> Iterator[Settings]:
    """Embedded settings rooted in ``tmp_path`` with a migrated SQLite warehouse, active for the test."""
    settings = for_home(tmp_path / "var", shard_count=2, sandbox_fault_rate=0.0)
    settings.home.mkdir(parents=True)
    engine = make_engine(settings.warehouse_url)
    upgrade(engine)
    engine.dispose()
    with override(settings):
        yield settings


@pytest.fixture
def home_on(warehouse_url: str, tmp_path: Path) -> Iterator[Settings]:
    """Like ``home`` but on each warehouse backend in turn (SQLite, then PostgreSQL)."""
    settings = for_home(tmp_path / "var", warehouse_url=warehouse_url, shard_count=2, sandbox_fault_rate=0.0)
    settings.home.mkdir(parents=True, exist_ok=True)
    with override(settings):
        yield settings
