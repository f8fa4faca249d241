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
import signal
import subprocess
import sys
import time
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
    """Send Airflow's console chatter and the tasks' INFO lines to ``log_file`` (or nowhere) while the block runs.

    The root logger's own handlers (the console of ``dossier run``) are set aside meanwhile, so the
    console shows only what the command prints.
    """
    sink = _log_sink(log_file)
    root = logging.getLogger()
    saved_level, saved_handlers = root.level, root.handlers[:]
    handler = logging.StreamHandler(sink)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root.handlers = [handler]
    root.setLevel(logging.INFO)
    try:
        with contextlib.redirect_stdout(sink), contextlib.redirect_stderr(sink):
            yield
    finally:
        root.handlers = saved_handlers
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


def run_dag(
    dag_id: str, *, as_of: dt.date, log_file: Path | None = None, conf: dict[str, Any] | None = None
) -> dict[str, Any]:
    """Run one DAG to completion in this process for ``as_of`` (with more ``conf``, e.g. the
    ``sme_ids`` of a grant's run); returns its state and failed tasks."""
    dags = load_dags()
    dag = dags[dag_id]
    with quiet_airflow(log_file):
        dag_run = dag.test(run_conf={"as_of": as_of.isoformat(), **(conf or {})})
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
        port = env.setdefault("AIRFLOW__API__PORT", "8080")
        host = env.setdefault("AIRFLOW__API__HOST", "127.0.0.1")
        # Task processes reach the API server where it listens (not "localhost", which may be ::1).
        env.setdefault("AIRFLOW__CORE__EXECUTION_API_SERVER_URL", f"http://{host}:{port}/execution/")
        if args[0] == "standalone":
            print(f"Airflow home: {settings.airflow_home}")
            print(f"Providers (sandbox): {wired.sandbox_url}")
            print(
                f"Starting Airflow; its UI will be at http://{host}:{port} (user admin; the password is "
                f"printed below and kept in {settings.airflow_home}/simple_auth_manager_passwords.json.generated). "
                "The DAGs start paused: unpause sme_ingest and sme_dossier_publish in the UI."
            )
        command = [str(Path(sys.executable).with_name("airflow")), *args]
        return run_until_interrupted(command, env)


STOP_GRACE_SECONDS = 30.0
"""How long Airflow gets to stop its scheduler, API server, DAG processor and workers after Ctrl-C."""


def run_until_interrupted(command: list[str], env: dict[str, str], grace: float = STOP_GRACE_SECONDS) -> int:
    """Run ``command`` in its own process group until it exits; on Ctrl-C (or SIGTERM) stop the whole group.

    Airflow standalone starts several processes, which start task processes of their own; they all
    share the group started here. Interrupting sends SIGINT to the group (Airflow's own clean
    shutdown), then SIGTERM, then SIGKILL to whatever is still there, so nothing outlives the command.
    """
    # Ctrl-C must reach this process even when it was started with SIGINT ignored (a background job);
    # the child then starts with the default disposition too, so Airflow can shut down cleanly.
    previous = {
        signal.SIGINT: signal.signal(signal.SIGINT, signal.default_int_handler),
        signal.SIGTERM: signal.signal(signal.SIGTERM, _raise_interrupt),
    }
    try:
        child = subprocess.Popen(command, env=env, start_new_session=True)
        try:
            return child.wait()
        except KeyboardInterrupt:
            stop_group(child, grace)
            return 130
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _raise_interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def _group_alive(group: int) -> bool:
    try:
        os.killpg(group, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def stop_group(child: subprocess.Popen[bytes], grace: float) -> None:
    """SIGINT, then SIGTERM, then SIGKILL to ``child``'s process group, until no member is left."""
    group = child.pid
    for sig, wait in ((signal.SIGINT, grace), (signal.SIGTERM, grace / 3), (signal.SIGKILL, grace / 3)):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(group, sig)
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            with contextlib.suppress(subprocess.TimeoutExpired):
                child.wait(timeout=0.2)
            if child.poll() is not None and not _group_alive(group):
                return
