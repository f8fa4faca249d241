"""The production shape without Docker: Airflow 3 on the Celery executor, PostgreSQL and Redis.

Airflow's api-server, scheduler, DAG processor and a Celery worker run as separate processes against
the PostgreSQL (127.0.0.1:5432) and Redis (127.0.0.1:6379) of this machine, sharing one JWT secret
and the execution API URL, exactly as ``docker-compose.yml`` wires them. The test triggers
``sme_ingest`` through the REST API, lets the scheduler start ``sme_dossier_publish`` from the
Assets it updates, waits for both, checks that the Celery worker ran the tasks and that the
dossiers reached the warehouse, and shuts every process down.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import os
import secrets
import signal
import socket
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
import requests
from sqlalchemy import create_engine, text

from dossier.cli import main
from dossier.settings import child_process_environment, for_home, override

pytestmark = [pytest.mark.airflow, pytest.mark.slow, pytest.mark.postgres]

POSTGRES = os.environ.get("DOSSIER_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test")
REDIS_DB = 11
SMES = 12
DEADLINE = 900  # seconds for the whole run on a loaded 2-core machine


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture
def airflow_database() -> Iterator[str]:
    """A fresh PostgreSQL database for Airflow's metadata (and the Celery result backend)."""
    if POSTGRES == "skip":
        pytest.skip("DOSSIER_TEST_POSTGRES_URL=skip: PostgreSQL runs disabled on this machine")
    name = f"airflow_{uuid.uuid4().hex[:10]}"
    admin = create_engine(POSTGRES, isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.execute(text(f'CREATE DATABASE "{name}"'))
    base = POSTGRES.rsplit("/", 1)[0]
    try:
        yield f"{base}/{name}"
    finally:
        with admin.connect() as connection:
            connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


@pytest.fixture
def broker() -> Iterator[str]:
    """A Redis database for the Celery broker, emptied before and after."""
    client = redis.Redis(host="127.0.0.1", port=6379, db=REDIS_DB)
    try:
        client.ping()
    except redis.ConnectionError:
        pytest.fail("Redis is not running on 127.0.0.1:6379 (the distributed test needs it)")
    client.flushdb()
    yield f"redis://127.0.0.1:6379/{REDIS_DB}"
    client.flushdb()
    client.close()


class Processes:
    """Airflow components started as their own process groups, each logging to a file."""

    def __init__(self, env: dict[str, str], logs: Path) -> None:
        self.env, self.logs = env, logs
        self.started: dict[str, subprocess.Popen[bytes]] = {}
        logs.mkdir(parents=True, exist_ok=True)

    def run(self, *args: str, timeout: float = 300) -> None:
        result = subprocess.run(["airflow", *args], env=self.env, capture_output=True, timeout=timeout)
        assert result.returncode == 0, result.stderr.decode()[-3000:]

    def start(self, name: str, *args: str) -> None:
        log = (self.logs / f"{name}.log").open("wb")
        self.started[name] = subprocess.Popen(
            ["airflow", *args], env=self.env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )

    def log(self, name: str) -> str:
        return (self.logs / f"{name}.log").read_text(errors="replace")

    def check_alive(self) -> None:
        for name, process in self.started.items():
            assert process.poll() is None, (
                f"{name} exited with {process.returncode}:\n{self.log(name)[-3000:]}"
            )

    def stop(self) -> dict[str, int | None]:
        """SIGTERM each group, then SIGKILL what is left after a grace period; the exit codes."""
        for process in self.started.values():
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGTERM)
        deadline = time.monotonic() + 60
        for process in self.started.values():
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.wait(timeout=max(0.1, deadline - time.monotonic()))
        for process in self.started.values():
            if process.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(process.pid, signal.SIGKILL)
                process.wait(timeout=30)
        return {name: process.returncode for name, process in self.started.items()}


def _api(base: str) -> requests.Session:
    """A session with a token from the simple auth manager (every user an admin here)."""
    session = requests.Session()
    reply = session.get(f"{base}/auth/token", timeout=10)
    if reply.status_code >= 400:
        reply = session.post(
            f"{base}/auth/token", json={"username": "admin", "password": "admin"}, timeout=10
        )
    reply.raise_for_status()
    session.headers["Authorization"] = f"Bearer {reply.json()['access_token']}"
    return session


def _wait(what: str, check: Any, processes: Processes, timeout: float, every: float = 2.0) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        processes.check_alive()
        with contextlib.suppress(requests.RequestException):
            value = check()
            if value:
                return value
        assert time.monotonic() < deadline, f"{what}: not within {timeout} s"
        time.sleep(every)


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

        port = _free_port()
        base = f"http://127.0.0.1:{port}"
        metadata = airflow_database
        env = child_process_environment(settings) | {
            "AIRFLOW__CORE__EXECUTOR": "CeleryExecutor",
            "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": metadata,
            # psycopg 3 serves Airflow's async engine too (no asyncpg needed).
            "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN_ASYNC": metadata.replace(
                "+psycopg://", "+psycopg_async://", 1
            ),
            "AIRFLOW__CELERY__BROKER_URL": broker,
            "AIRFLOW__CELERY__RESULT_BACKEND": "db+" + metadata,
            "AIRFLOW__CELERY__WORKER_CONCURRENCY": "2",
            "AIRFLOW__API_AUTH__JWT_SECRET": secrets.token_urlsafe(32),
            "AIRFLOW__API__SECRET_KEY": secrets.token_urlsafe(32),
            "AIRFLOW__API__PORT": str(port),
            "AIRFLOW__API__HOST": "127.0.0.1",
            "AIRFLOW__API__BASE_URL": base,
            "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"{base}/execution/",
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS": "True",
            "AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION": "True",
            "AIRFLOW__CORE__PARALLELISM": "4",
            "AIRFLOW__CORE__MAX_ACTIVE_TASKS_PER_DAG": "4",
            "AIRFLOW__SCHEDULER__ENABLE_HEALTH_CHECK": "False",
            "AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL": "5",
        }
        processes = Processes(env, tmp_path / "logs")
        processes.run("db", "migrate")
        try:
            processes.start("api-server", "api-server", "--port", str(port), "--host", "127.0.0.1")
            processes.start("scheduler", "scheduler")
            processes.start("dag-processor", "dag-processor")
            processes.start("worker", "celery", "worker", "--concurrency", "2")

            _wait(
                "api-server healthy",
                lambda: requests.get(f"{base}/api/v2/monitor/health", timeout=5).ok,
                processes,
                180,
            )
            api = _api(base)
            for dag_id in ("sme_ingest", "sme_dossier_publish"):
                _wait(
                    f"{dag_id} parsed",
                    lambda d=dag_id: api.get(f"{base}/api/v2/dags/{d}", timeout=5).ok,
                    processes,
                    240,
                )
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

            _wait(
                "sme_ingest succeeds", lambda: state("sme_ingest", ingest_run), processes, DEADLINE, every=5
            )

            def publish_run() -> str | None:
                runs = api.get(f"{base}/api/v2/dags/sme_dossier_publish/dagRuns", timeout=10).json()[
                    "dag_runs"
                ]
                return runs[0]["dag_run_id"] if runs else None

            run_id = _wait("the Assets start sme_dossier_publish", publish_run, processes, 300)
            _wait(
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
