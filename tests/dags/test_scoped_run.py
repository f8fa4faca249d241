"""The DAGs accept a grant's conf (``sme_ids``, ``consent_at``) and run for those SMEs alone:
both DAGs in-process (``dag.test()``) against the sandbox over HTTP, on SQLite."""

from __future__ import annotations

import datetime as dt
import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import select

from connectors.sandbox.seed import seed_warehouse
from connectors.sandbox.server import SandboxServer
from connectors.sandbox.universe import Universe
from dossier import airflow_runner
from dossier.settings import for_home, override
from warehouse.db import make_engine, session_scope
from warehouse.migrate import upgrade
from warehouse.models import DossierVersion, IngestionRun

pytestmark = [pytest.mark.airflow, pytest.mark.slow]


@pytest.fixture
def restored_environment() -> Iterator[None]:
    saved = dict(os.environ)
    try:
        yield
    finally:
        os.environ.clear()
        os.environ.update(saved)


@pytest.mark.usefixtures("restored_environment")
def test_a_scoped_conf_runs_both_dags_for_those_smes_only(tmp_path: Path) -> None:
    today = dt.datetime.now(dt.UTC).date()
    with SandboxServer(Universe(20261125, 6, today)) as sandbox:
        settings = for_home(tmp_path / "var", sandbox_url=sandbox.url, shard_count=2, sandbox_fault_rate=0.0)
        settings.home.mkdir(parents=True)
        engine = make_engine(settings.warehouse_url)
        upgrade(engine)
        with session_scope(engine) as session:
            seed_warehouse(session, sandbox.universe, now=dt.datetime.now(dt.UTC))
        conf = {"sme_ids": ["SME-000002"], "consent_at": dt.datetime.now(dt.UTC).isoformat()}
        with override(settings):
            airflow_runner.prepare(settings)
            runs = [
                airflow_runner.run_dag(dag_id, as_of=today, conf=conf)
                for dag_id in (airflow_runner.INGEST_DAG, airflow_runner.PUBLISH_DAG)
            ]
        assert [(r["state"], r["failed_tasks"]) for r in runs] == [("success", []), ("success", [])]
        with session_scope(engine) as session:
            pulled = {(r.sme_id, r.status) for r in session.scalars(select(IngestionRun))}
            published = {v.sme_id for v in session.scalars(select(DossierVersion))}
        engine.dispose()
    assert {sme for sme, _ in pulled} == {"SME-000002"}
    assert ("SME-000002", "pulled") in pulled
    assert published == {"SME-000002"}
