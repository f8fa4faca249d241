"""The production shape without Docker: Airflow 3 on the Celery executor, PostgreSQL and Redis.

Airflow's api-server, scheduler, DAG processor and a Celery worker run as separate processes against
the PostgreSQL (127.0.0.1:5432) and Redis (127.0.0.1:6379) of this machine, sharing one JWT secret
and the execution API URL, exactly as ``docker-compose.yml`` wires them. The test triggers
``sme_ingest`` through the REST API, lets the scheduler start ``sme_dossier_publish`` from the
Assets it updates, waits for both, checks that the Celery worker ran the tasks and that the
dossiers reached the warehouse, and shuts every process down.
"""

from __future__ import annotations

import datetime as dt
import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text

from dossier.airflow_cluster import (
    Processes,
    celery_environment,
    empty_redis_db,
    free_port,
    fresh_database,
    wait_for,
    wait_until_serving,
)
from dossier.cli import main
from dossier.settings import child_process_environment, for_home, override

pytestmark = [pytest.mark.airflow, pytest.mark.slow, pytest.mark.postgres]

POSTGRES = os.environ.get("DOSSIER_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test")
REDIS_DB = 11
SMES = 12
DEADLINE = 900  # seconds for the whole run on a loaded 2-core machine


@pytest.fixture
def airflow_database() -> Iterator[str]:
    """A fresh PostgreSQL database for Airflow's metadata (and the Celery result backend)."""
    if POSTGRES == "skip":
        pytest.skip("DOSSIER_TEST_POSTGRES_URL=skip: PostgreSQL runs disabled on this machine")
    with fresh_database(POSTGRES) as url:
        yield url


@pytest.fixture
def broker() -> Iterator[str]:
    """A Redis database for the Celery broker, emptied before and after."""
    try:
        with empty_redis_db(REDIS_DB) as url:
            yield url
    except ConnectionError as error:
        pytest.fail(f"{error} (the distributed test needs it)")


def test_pipeline_runs_on_celery_with_postgres_and_redis(
    postgres_url: str, airflow_database: str, broker: str, tmp_path: Path
) -> None:
    from connectors.sandbox.server import SandboxServer
    from connectors.sandbox.universe import Universe

    as_of = dt.datetime.now(dt.UTC).date()
    universe = Universe(20261125, SMES, as_of)
    with SandboxServer(universe, fault_rate=0.0, fault_seed=1) as sandbox:
        settings = for_home(
            tmp_path / "var",
            warehouse_url=postgres_url,
            shard_count=1,
            sandbox_smes=SMES,
            sandbox_fault_rate=0.0,
            sandbox_url=sandbox.url,
        )
        settings.airflow_home.mkdir(parents=True)
        with override(settings):
            assert main(["db", "upgrade"]) == 0
            assert main(["sandbox", "seed"]) == 0

        port = free_port()
        base = f"http://127.0.0.1:{port}"
        env = celery_environment(
            child_process_environment(settings), metadata_url=airflow_database, broker_url=broker, port=port
        )
        processes = Processes(env, tmp_path / "logs")
        processes.run("db", "migrate")
        try:
            processes.start_all(concurrency=2)
            api = wait_until_serving(processes, ("sme_ingest", "sme_dossier_publish"))
            # Triggered while paused, for the date the scheduler would pick on unpausing, so that
            # unpausing starts this run rather than a second, scheduled one.
            midnight = dt.datetime.combine(as_of, dt.time(), tzinfo=dt.UTC).isoformat()
            started = api.post(
                f"{base}/api/v2/dags/sme_ingest/dagRuns",
                json={"logical_date": midnight, "conf": {"as_of": as_of.isoformat()}},
                timeout=30,
            )
            assert started.status_code == 200, started.text
            for dag_id in ("sme_dossier_publish", "sme_ingest"):
                assert api.patch(f"{base}/api/v2/dags/{dag_id}", json={"is_paused": False}, timeout=10).ok
            ingest_run = started.json()["dag_run_id"]

            def state(dag_id: str, run_id: str) -> str | None:
                reply = api.get(f"{base}/api/v2/dags/{dag_id}/dagRuns/{run_id}", timeout=10)
                current = reply.json()["state"]
                assert current != "failed", f"{dag_id} {run_id} failed:\n{processes.log('worker')[-4000:]}"
                return current if current == "success" else None

            wait_for(
                "sme_ingest succeeds", lambda: state("sme_ingest", ingest_run), processes, DEADLINE, every=5
            )

            def publish_run() -> str | None:
                runs = api.get(f"{base}/api/v2/dags/sme_dossier_publish/dagRuns", timeout=10).json()[
                    "dag_runs"
                ]
                return runs[0]["dag_run_id"] if runs else None

            run_id = wait_for("the Assets start sme_dossier_publish", publish_run, processes, 300)
            wait_for(
                "sme_dossier_publish succeeds",
                lambda: state("sme_dossier_publish", run_id),
                processes,
                DEADLINE,
                every=5,
            )

            # Every task instance ran on the Celery executor's worker and succeeded.
            for dag_id, dag_run in (("sme_ingest", ingest_run), ("sme_dossier_publish", run_id)):
                instances = api.get(
                    f"{base}/api/v2/dags/{dag_id}/dagRuns/{dag_run}/taskInstances", timeout=10
                ).json()["task_instances"]
                assert instances
                assert {ti["state"] for ti in instances} == {"success"}, dag_id
                assert {ti["queue"] for ti in instances} == {"default"}, dag_id
                assert all(ti["hostname"] for ti in instances), dag_id
            assert "celery@" in processes.log("worker")
            ingest_runs = api.get(f"{base}/api/v2/dags/sme_ingest/dagRuns", timeout=10).json()["dag_runs"]
            # catchup=False: no run of an earlier interval appears. A day that begins while the
            # test runs may add its own scheduled run; that run is the schedule working, not catchup.
            others = [run for run in ingest_runs if run["dag_run_id"] != ingest_run]
            assert [run["dag_run_id"] for run in ingest_runs if run["dag_run_id"] == ingest_run] == [
                ingest_run
            ]
            assert all(
                run["run_type"] == "scheduled"
                and dt.datetime.fromisoformat(run["logical_date"]).date() > as_of
                for run in others
            ), others
        finally:
            codes = processes.stop()
        assert all(code is not None for code in codes.values()), codes

    # What the worker computed is in the warehouse: published dossiers for the as-of date.
    engine = create_engine(postgres_url)
    with engine.connect() as connection:
        published = connection.execute(
            text("SELECT count(*) FROM dossier_versions WHERE as_of_date = :d"), {"d": as_of}
        ).scalar_one()
        pulled = connection.execute(
            text("SELECT count(*) FROM ingestion_runs WHERE status = 'pulled'")
        ).scalar_one()
    engine.dispose()
    assert pulled > 0
    assert published > 0
