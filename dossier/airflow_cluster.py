"""Airflow 3 on the Celery executor as separate processes, against a PostgreSQL and a Redis.

What ``docker-compose.yml`` wires, without Docker: an api-server, a scheduler, a DAG processor and a
Celery worker, each in its own process group logging to its own file, sharing one JWT secret and
the execution API URL. The distributed-run test and the Airflow overhead benchmark both start
Airflow this way.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import signal
import socket
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import requests

COMPONENTS = ("api-server", "scheduler", "dag-processor", "worker")


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@contextlib.contextmanager
def fresh_database(server_url: str) -> Iterator[str]:
    """A new PostgreSQL database on the server of ``server_url`` (for Airflow's metadata and the
    Celery result backend), dropped afterwards; yields its URL."""
    from sqlalchemy import create_engine, text

    name = f"airflow_{uuid.uuid4().hex[:10]}"
    admin = create_engine(server_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.execute(text(f'CREATE DATABASE "{name}"'))
    base = server_url.rsplit("/", 1)[0]
    try:
        yield f"{base}/{name}"
    finally:
        with admin.connect() as connection:
            connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


@contextlib.contextmanager
def empty_redis_db(db: int, host: str = "127.0.0.1", port: int = 6379) -> Iterator[str]:
    """A Redis database for the Celery broker, emptied before and after; yields its URL.

    Raises ``ConnectionError`` when no Redis answers at ``host:port``.
    """
    import redis

    client = redis.Redis(host=host, port=port, db=db)
    try:
        client.ping()
    except redis.ConnectionError as error:
        raise ConnectionError(f"Redis is not running on {host}:{port}") from error
    client.flushdb()
    try:
        yield f"redis://{host}:{port}/{db}"
    finally:
        client.flushdb()
        client.close()


def celery_environment(
    base_env: dict[str, str],
    *,
    metadata_url: str,
    broker_url: str,
    port: int,
    concurrency: int = 2,
    parallelism: int = 4,
    dags_folder: Path | None = None,
) -> dict[str, str]:
    """``base_env`` plus the wiring of an Airflow on the Celery executor listening on ``port``."""
    base = f"http://127.0.0.1:{port}"
    env = base_env | {
        "AIRFLOW__CORE__EXECUTOR": "CeleryExecutor",
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": metadata_url,
        # psycopg 3 serves Airflow's async engine too (no asyncpg needed).
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN_ASYNC": metadata_url.replace(
            "+psycopg://", "+psycopg_async://", 1
        ),
        "AIRFLOW__CELERY__BROKER_URL": broker_url,
        "AIRFLOW__CELERY__RESULT_BACKEND": "db+" + metadata_url,
        "AIRFLOW__CELERY__WORKER_CONCURRENCY": str(concurrency),
        "AIRFLOW__API_AUTH__JWT_SECRET": secrets.token_urlsafe(32),
        "AIRFLOW__API__SECRET_KEY": secrets.token_urlsafe(32),
        "AIRFLOW__API__PORT": str(port),
        "AIRFLOW__API__HOST": "127.0.0.1",
        "AIRFLOW__API__BASE_URL": base,
        "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"{base}/execution/",
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS": "True",
        "AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION": "True",
        "AIRFLOW__CORE__PARALLELISM": str(parallelism),
        "AIRFLOW__CORE__MAX_ACTIVE_TASKS_PER_DAG": str(parallelism),
        "AIRFLOW__SCHEDULER__ENABLE_HEALTH_CHECK": "False",
        "AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL": "5",
    }
    if dags_folder is not None:
        env["AIRFLOW__CORE__DAGS_FOLDER"] = str(dags_folder)
    return env


class Processes:
    """Airflow components started as their own process groups, each logging to a file."""

    def __init__(self, env: dict[str, str], logs: Path) -> None:
        self.env, self.logs = env, logs
        self.started: dict[str, subprocess.Popen[bytes]] = {}
        logs.mkdir(parents=True, exist_ok=True)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.env['AIRFLOW__API__PORT']}"

    def run(self, *args: str, timeout: float = 300) -> None:
        """Run ``airflow ARGS`` to completion; ``RuntimeError`` with its last output if it fails."""
        result = subprocess.run(["airflow", *args], env=self.env, capture_output=True, timeout=timeout)
        if result.returncode != 0:
            raise RuntimeError(f"airflow {' '.join(args)}: {result.stderr.decode()[-3000:]}")

    def start(self, name: str, *args: str) -> None:
        log = (self.logs / f"{name}.log").open("wb")
        self.started[name] = subprocess.Popen(
            ["airflow", *args], env=self.env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )

    def start_all(self, concurrency: int = 2) -> None:
        """The api-server, scheduler, DAG processor and a Celery worker of ``concurrency`` slots."""
        port = self.env["AIRFLOW__API__PORT"]
        self.start("api-server", "api-server", "--port", port, "--host", "127.0.0.1")
        self.start("scheduler", "scheduler")
        self.start("dag-processor", "dag-processor")
        self.start("worker", "celery", "worker", "--concurrency", str(concurrency))

    def log(self, name: str) -> str:
        return (self.logs / f"{name}.log").read_text(errors="replace")

    def check_alive(self) -> None:
        """``AssertionError`` naming the first component that has exited, with its last log lines."""
        for name, process in self.started.items():
            if process.poll() is not None:
                raise AssertionError(f"{name} exited with {process.returncode}:\n{self.log(name)[-3000:]}")

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


def api_session(base: str) -> requests.Session:
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


def wait_for(
    what: str, check: Callable[[], Any], processes: Processes, timeout: float, every: float = 2.0
) -> Any:
    """Poll ``check`` until it returns something truthy (which is returned); ``AssertionError`` if a
    component exits or ``timeout`` seconds pass first. Request errors count as not yet."""
    deadline = time.monotonic() + timeout
    while True:
        processes.check_alive()
        with contextlib.suppress(requests.RequestException):
            value = check()
            if value:
                return value
        if time.monotonic() >= deadline:
            raise AssertionError(f"{what}: not within {timeout} s")
        time.sleep(every)


def wait_until_serving(
    processes: Processes, dag_ids: tuple[str, ...], timeout: float = 240
) -> requests.Session:
    """Wait for the api-server to be healthy and every DAG in ``dag_ids`` parsed; an API session."""
    base = processes.base_url
    wait_for(
        "api-server healthy",
        lambda: requests.get(f"{base}/api/v2/monitor/health", timeout=5).ok,
        processes,
        180,
    )
    api = api_session(base)
    for dag_id in dag_ids:
        wait_for(
            f"{dag_id} parsed",
            lambda d=dag_id: api.get(f"{base}/api/v2/dags/{d}", timeout=5).ok,
            processes,
            timeout,
        )
    return api
