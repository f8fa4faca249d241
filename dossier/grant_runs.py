"""A grant runs the pipeline for its SME now: in the web service's own worker, or through Airflow.

When an SME grants a link, :func:`record` adds a ``grant_runs`` row (status ``queued``) in the
grant's own transaction; once that transaction has committed, the web service hands the run to
its :class:`GrantRunner` (:meth:`GrantRunner.submit`, which only enqueues: the request never waits
for the pipeline).

* **Embedded default** (no ``DOSSIER_AIRFLOW_API_URL``): one worker thread takes the queued runs,
  as many as are waiting at once, and runs :func:`dossier.pipeline.run_for_smes` for their SMEs:
  the same ingest, validate, evaluate and publish steps the DAGs call, scoped to those SMEs at
  today's as-of date. The row goes ``running`` (``detail`` names the step) and then ``done`` or
  ``failed``. Runs still queued or running when the service stopped are taken up again when it
  starts (:meth:`GrantRunner.resume`).
* **Airflow** (``DOSSIER_AIRFLOW_API_URL`` set): the run is a DAG run of ``sme_ingest`` triggered
  through Airflow's REST API (``POST /api/v2/dags/sme_ingest/dagRuns``, a JWT from
  ``POST /auth/token``) with the conf ``{"sme_ids": [...], "as_of": ..., "consent_at": ...}``; the
  ingest DAG passes the scope on to ``sme_dossier_publish`` through its Asset events. The row
  goes ``submitted`` with the DAG run id (or ``failed`` naming why Airflow refused).
"""

from __future__ import annotations

import json
import logging
import queue
import threading
import time
from pathlib import Path
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from dossier.settings import Settings, override
from warehouse.db import session_scope
from warehouse.models import DossierVersion, GrantRun, utcnow

log = logging.getLogger(__name__)

INGEST_DAG = "sme_ingest"
IN_PROCESS = "in_process"
AIRFLOW = "airflow"
OPEN_STATUSES = ("queued", "running")
WAITING = ("queued", "running", "submitted")
"""Statuses of a run the SME is still waiting for (its page refreshes itself meanwhile)."""
STEP_WORDS = {
    "ingest": "collecting your data from your providers",
    "validate": "checking the data",
    "evaluate": "preparing your dossier",
    "publish": "delivering your dossier",
}


class AirflowError(RuntimeError):
    """Airflow's REST API refused or could not be reached; the message says which and why."""


def runner_kind(settings: Settings) -> str:
    return AIRFLOW if settings.airflow_api_url else IN_PROCESS


def record(
    session: Session, settings: Settings, *, sme_id: str, consent_id: str, link_id: str | None
) -> GrantRun:
    """The run for a consent just granted (one per consent: a second call returns the first)."""
    existing = session.scalars(select(GrantRun).where(GrantRun.consent_id == consent_id)).first()
    if existing is not None:
        return existing
    run = GrantRun(
        sme_id=sme_id,
        consent_id=consent_id,
        link_id=link_id,
        runner=runner_kind(settings),
        status="queued",
        requested_at=utcnow(),
        detail="",
    )
    session.add(run)
    session.flush()
    return run


def progress(session: Session, sme_id: str) -> list[dict[str, Any]]:
    """What the SME's page says about its runs, newest first: status, words, when.

    A run submitted to Airflow counts as done once a dossier version of the SME has been
    published since it was requested.
    """
    runs = session.scalars(
        select(GrantRun)
        .where(GrantRun.sme_id == sme_id)
        .order_by(GrantRun.requested_at.desc(), GrantRun.id.desc())
    ).all()
    views = []
    for run in runs:
        status = run.status
        if status == "submitted":
            published = session.scalar(
                select(DossierVersion.id)
                .where(DossierVersion.sme_id == sme_id, DossierVersion.published_at >= run.requested_at)
                .limit(1)
            )
            status = "done" if published is not None else "submitted"
        views.append(
            {"consent_id": run.consent_id, "status": status, "words": words(run, status), "run": run}
        )
    return views


def words(run: GrantRun, status: str | None = None) -> str:
    """The run's state in plain words for the SME."""
    status = status or run.status
    if status in ("queued", "submitted"):
        return "Your dossier is being prepared: waiting to start."
    if status == "running":
        step = STEP_WORDS.get(run.detail, run.detail)
        return f"Your dossier is being prepared: {step}." if step else "Your dossier is being prepared."
    if status == "done":
        return "Your dossier is ready and has been delivered to the lenders you chose."
    return "Preparing your dossier did not finish; the operator has been told and will run it again."


# --- Airflow's REST API ---------------------------------------------------------------------------


def airflow_password(settings: Settings) -> str:
    """``DOSSIER_AIRFLOW_PASSWORD``, else the password Airflow's simple auth manager generated for
    the user in this home's Airflow (``make airflow``)."""
    if settings.airflow_password:
        return settings.airflow_password
    generated = Path(settings.airflow_home) / "simple_auth_manager_passwords.json.generated"
    try:
        passwords = json.loads(generated.read_text())
    except (OSError, ValueError):
        raise AirflowError(
            f"no DOSSIER_AIRFLOW_PASSWORD and no readable {generated}; set DOSSIER_AIRFLOW_PASSWORD"
        ) from None
    if settings.airflow_username not in passwords:
        raise AirflowError(f"{generated} holds no password for user {settings.airflow_username!r}")
    return str(passwords[settings.airflow_username])


def trigger_airflow(settings: Settings, conf: dict[str, Any], *, dag_id: str = INGEST_DAG) -> str:
    """Trigger a run of ``dag_id`` with ``conf`` through Airflow's REST API; its ``dag_run_id``."""
    import requests

    base = settings.airflow_api_url.rstrip("/")
    timeout = settings.http_timeout
    try:
        login = requests.post(
            f"{base}/auth/token",
            json={"username": settings.airflow_username, "password": airflow_password(settings)},
            timeout=timeout,
        )
        if login.status_code not in (200, 201):
            raise AirflowError(
                f"Airflow at {base} refused the login ({login.status_code}: {login.text[:200]})"
            )
        token = login.json()["access_token"]
        answer = requests.post(
            f"{base}/api/v2/dags/{dag_id}/dagRuns",
            json={"logical_date": None, "conf": conf, "note": "started by a grant"},
            headers={"Authorization": f"Bearer {token}"},
            timeout=timeout,
        )
    except requests.RequestException as error:
        raise AirflowError(f"cannot reach Airflow at {base}: {error}") from None
    if answer.status_code not in (200, 201):
        raise AirflowError(
            f"Airflow at {base} refused to run {dag_id} ({answer.status_code}: {answer.text[:200]})"
        )
    return str(answer.json()["dag_run_id"])


# --- the worker -----------------------------------------------------------------------------------


class GrantRunner:
    """Runs the queued grant runs of one web service, one batch at a time, off the request path."""

    def __init__(self, settings: Settings, engine: Any) -> None:
        self.settings = settings
        self.engine = engine
        self.queue: queue.Queue[int | None] = queue.Queue()
        self.thread: threading.Thread | None = None
        self.lock = threading.Lock()
        self.pending = 0

    def submit(self, run_id: int) -> None:
        """Hand over a committed run: Airflow's are triggered now, in-process ones are queued."""
        if runner_kind(self.settings) == AIRFLOW:
            self._trigger(run_id)
            return
        with self.lock:
            self.pending += 1
        self._start()
        self.queue.put(run_id)

    def resume(self) -> int:
        """Queue again the in-process runs a stopped service left queued or running; how many.

        A warehouse without the table yet (not upgraded) has none to resume; that is logged.
        """
        from sqlalchemy.exc import DBAPIError

        try:
            with session_scope(self.engine) as session:
                ids = session.scalars(
                    select(GrantRun.id).where(
                        GrantRun.runner == IN_PROCESS, GrantRun.status.in_(OPEN_STATUSES)
                    )
                ).all()
        except DBAPIError as error:
            log.warning(
                "grant runs not resumed: %s", str(error.orig).splitlines()[0] if error.orig else error
            )
            return 0
        if runner_kind(self.settings) == AIRFLOW:
            return 0
        for run_id in ids:
            self.submit(run_id)
        return len(ids)

    def wait(self, timeout: float | None = None) -> bool:
        """Block until nothing is queued or running (tests and the benchmark); False on timeout."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while self.pending:
            if deadline is not None and time.monotonic() > deadline:
                return False
            time.sleep(0.05)
        return True

    def close(self) -> None:
        if self.thread is not None:
            self.queue.put(None)
            self.thread.join(timeout=60)
            self.thread = None

    def _start(self) -> None:
        with self.lock:
            if self.thread is None or not self.thread.is_alive():
                self.thread = threading.Thread(target=self._work, name="grant-runs", daemon=True)
                self.thread.start()

    def _work(self) -> None:
        while True:
            first = self.queue.get()
            if first is None:
                return
            batch, stop = [first], False
            while not self.queue.empty():
                more = self.queue.get()
                if more is None:
                    stop = True
                    break
                batch.append(more)
            try:
                self._run(batch)
            finally:
                with self.lock:
                    self.pending -= len(batch)
            if stop:
                return

    def _set(self, run_ids: list[int], **values: Any) -> None:
        with session_scope(self.engine) as session:
            for run in session.scalars(select(GrantRun).where(GrantRun.id.in_(run_ids))):
                for name, value in values.items():
                    setattr(run, name, value)

    def _run(self, run_ids: list[int]) -> None:
        """One pipeline run for the SMEs of ``run_ids``; a failure is recorded, never raised."""
        from dossier.pipeline import parse_as_of, run_for_smes

        with session_scope(self.engine) as session:
            runs = session.scalars(
                select(GrantRun).where(GrantRun.id.in_(run_ids), GrantRun.status.in_(OPEN_STATUSES))
            ).all()
            sme_ids = sorted({run.sme_id for run in runs})
            run_ids = [run.id for run in runs]
        if not run_ids:
            return
        started = utcnow()
        as_of = parse_as_of(None)
        self._set(run_ids, status="running", started_at=started, as_of_date=as_of, detail="ingest")
        try:
            with override(self.settings):
                summary = run_for_smes(
                    sme_ids,
                    as_of=as_of,
                    consent_at=started,
                    on_step=lambda name: self._set(run_ids, detail=name),
                )
        except Exception as error:  # the run's failure is recorded for the SME and the operator
            log.exception("grant run for %s failed", ", ".join(sme_ids))
            self._set(
                run_ids,
                status="failed",
                finished_at=utcnow(),
                detail=f"{type(error).__name__}: {error}"[:2000],
            )
            return
        log.info("grant run for %s: %s", ", ".join(sme_ids), summary)
        self._set(run_ids, status="done", finished_at=utcnow(), detail=json.dumps(summary)[:2000])

    def _trigger(self, run_id: int) -> None:
        with session_scope(self.engine) as session:
            run = session.get(GrantRun, run_id)
            if run is None or run.status != "queued":
                return
            now = utcnow()
            conf = {"sme_ids": [run.sme_id], "as_of": now.date().isoformat(), "consent_at": now.isoformat()}
            try:
                run.airflow_run_id = trigger_airflow(self.settings, conf)
            except AirflowError as error:
                log.error("grant run %s: %s", run_id, error)
                run.status, run.finished_at, run.detail = "failed", now, str(error)[:2000]
                return
            run.status, run.started_at, run.as_of_date = "submitted", now, now.date()
            run.detail = json.dumps(conf)
