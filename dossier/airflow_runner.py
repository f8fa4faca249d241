"""Running this project's DAGs: in-process (``dag.test()``, for the demo and tests) or under Airflow.

Airflow reads its configuration when it is first imported, so :func:`prepare` puts the embedded
wiring (``AIRFLOW_HOME`` under the home folder, SQLite metadata, this project's ``dags/``) into the
environment first and then migrates Airflow's metadata database.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import functools
import logging
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from dossier.settings import Settings, apply_airflow_environment, child_process_environment, get_settings

DAGS_FOLDER = Path(__file__).resolve().parent.parent / "dags"
INGEST_DAG = "sme_ingest"
PUBLISH_DAG = "sme_dossier_publish"


def prepare(settings: Settings | None = None) -> None:
    """Wire Airflow to the settings' home and bring its metadata database to the current schema."""
    settings = settings or get_settings()
    settings.airflow_home.mkdir(parents=True, exist_ok=True)
    apply_airflow_environment(settings)
    with quiet_airflow():
        from airflow.utils.db import upgradedb

        upgradedb()


@functools.cache
def _log_sink(log_file: Path | None) -> Any:
    """One sink per file for the life of the process: Airflow's handlers keep the stream they saw."""
    if log_file is None:
        return open(os.devnull, "w")
    log_file.parent.mkdir(parents=True, exist_ok=True)
    return open(log_file, "a", buffering=1)


@contextlib.contextmanager
def quiet_airflow(log_file: Path | None = None) -> Iterator[None]:
    """Send Airflow's console chatter to ``log_file`` (or nowhere) while the block runs."""
    sink = _log_sink(log_file)
    root = logging.getLogger()
    saved_level = root.level
    root.setLevel(logging.WARNING)
    try:
        with contextlib.redirect_stdout(sink), contextlib.redirect_stderr(sink):
            yield
    finally:
        root.setLevel(saved_level)
        sink.flush()


def load_dags() -> dict[str, Any]:
    """Parse the DAG folder; raises with the file and error if any DAG fails to import."""
    from airflow.dag_processing.dagbag import DagBag

    bag = DagBag(str(DAGS_FOLDER))
    if bag.import_errors:
        details = "\n".join(f"{path}: {error}" for path, error in bag.import_errors.items())
        raise RuntimeError(f"DAG import errors:\n{details}")
    return bag.dags


def run_dag(dag_id: str, *, as_of: dt.date, log_file: Path | None = None) -> dict[str, Any]:
    """Run one DAG to completion in this process for ``as_of``; returns its state and failed tasks."""
    dags = load_dags()
    dag = dags[dag_id]
    with quiet_airflow(log_file):
        dag_run = dag.test(run_conf={"as_of": as_of.isoformat()})
    failed = [
        ti.task_id + ("" if ti.map_index < 0 else f"[{ti.map_index}]")
        for ti in dag_run.get_task_instances()
        if ti.state == "failed"
    ]
    return {"dag_id": dag_id, "run_id": dag_run.run_id, "state": str(dag_run.state), "failed_tasks": failed}


def standalone(extra_args: list[str] | None = None) -> int:
    """Run an ``airflow`` command (default ``standalone``) with this project's DAGs and settings.

    When no provider URL is configured (``DOSSIER_SANDBOX_URL`` empty), the bundled sandbox is served
    from this process for as long as Airflow runs, so the DAGs have providers to pull from.
    """
    import dataclasses

    from dossier.demo import sandbox_running

    settings = get_settings()
    settings.airflow_home.mkdir(parents=True, exist_ok=True)
    args = extra_args or ["standalone"]
    with sandbox_running(settings, dt.datetime.now(dt.UTC).date()) as wired:
        env = child_process_environment(dataclasses.replace(settings, sandbox_url=wired.sandbox_url))
        if args[0] == "standalone":
            port = env.setdefault("AIRFLOW__API__PORT", "8080")
            print(f"Airflow home: {settings.airflow_home}")
            print(f"Providers (sandbox): {wired.sandbox_url}")
            print(
                f"Starting Airflow; its UI will be at http://localhost:{port} (user admin; the password is "
                f"printed below and kept in {settings.airflow_home}/simple_auth_manager_passwords.json.generated). "
                "The DAGs start paused: unpause sme_ingest and sme_dossier_publish in the UI."
            )
        command = [str(Path(sys.executable).with_name("airflow")), *args]
        return subprocess.call(command, env=env)
