"""With ``DOSSIER_AIRFLOW_API_URL`` set, a grant triggers a DAG run scoped to its SME through a real
Airflow 3 API server (``airflow api-server`` on 127.0.0.1, simple auth manager, JWT from
``/auth/token``); the run carries the conf the DAGs scope themselves by."""

from __future__ import annotations

import datetime as dt
import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
from fastapi.testclient import TestClient
from sqlalchemy import select

from connectors.sandbox.seed import seed_warehouse
from connectors.sandbox.universe import Universe
from dossier.grant_runs import airflow_password
from dossier.settings import child_process_environment, for_home
from dossier.web.app import create_app
from warehouse.db import make_engine, session_scope
from warehouse.migrate import upgrade
from warehouse.models import GrantRun

pytestmark = [pytest.mark.airflow, pytest.mark.slow]

AIRFLOW = Path(sys.executable).parent / "airflow"
TOKEN = "operator-secret-for-airflow-runs"


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture
def airflow_api(tmp_path: Path) -> Iterator[dict[str, Any]]:
    """Airflow's metadata migrated, the DAGs serialized, and its API server on a free port."""
    port = _free_port()
    settings = for_home(tmp_path / "var", airflow_api_url=f"http://127.0.0.1:{port}", operator_token=TOKEN)
    settings.airflow_home.mkdir(parents=True)
    env = child_process_environment(settings) | {
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": "admin:admin",
        "AIRFLOW__API__PORT": str(port),
        "AIRFLOW__API__HOST": "127.0.0.1",
    }
    for args in (["db", "migrate"], ["dags", "reserialize"]):
        subprocess.run([str(AIRFLOW), *args], env=env, check=True, capture_output=True, timeout=900)
    log = (tmp_path / "api-server.log").open("w")
    server = subprocess.Popen(
        [str(AIRFLOW), "api-server", "--host", "127.0.0.1", "--port", str(port)],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:
            try:
                if requests.get(f"http://127.0.0.1:{port}/api/v2/monitor/health", timeout=5).ok:
                    break
            except requests.ConnectionError:
                pass
            assert server.poll() is None, (tmp_path / "api-server.log").read_text()[-2000:]
            time.sleep(1)
        else:
            pytest.fail("the Airflow API server did not start")
        yield {"settings": settings, "url": f"http://127.0.0.1:{port}"}
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)
            server.wait()
        log.close()


def test_a_grant_triggers_a_scoped_dag_run_through_the_airflow_api(airflow_api: dict[str, Any]) -> None:
    settings = airflow_api["settings"]
    engine = make_engine(settings.warehouse_url)
    upgrade(engine)
    with session_scope(engine) as session:
        seed_warehouse(
            session, Universe(20261125, 3, dt.datetime.now(dt.UTC).date()), now=dt.datetime.now(dt.UTC)
        )
    with TestClient(create_app(settings), raise_server_exceptions=False) as client:
        made = client.post(
            "/v1/operator/links",
            json={
                "sme_id": "SME-000002",
                "sources": ["accounting", "tax"],
                "recipients": ["northwind-capital"],
                "purpose": "credit_decision",
                "history_months": 12,
                "consent_days": 30,
            },
            headers={"Authorization": f"Bearer {TOKEN}"},
        ).json()
        path = "/" + made["url"].split("/", 3)[3]
        form = dict(re.findall(r'name="(csrf_token|text_sha256)" value="([^"]+)"', client.get(path).text))
        granted = client.post(path, data={**form, "decision": "grant"})
        assert granted.status_code == 200
    with session_scope(engine) as session:
        run = session.scalars(select(GrantRun)).one()
        assert (run.sme_id, run.runner, run.status) == ("SME-000002", "airflow", "submitted")
        run_id, requested = run.airflow_run_id, run.started_at
    engine.dispose()
    login = requests.post(
        f"{airflow_api['url']}/auth/token",
        json={"username": "admin", "password": airflow_password(settings)},
        timeout=30,
    )
    headers = {"Authorization": f"Bearer {login.json()['access_token']}"}
    dag_run = requests.get(
        f"{airflow_api['url']}/api/v2/dags/sme_ingest/dagRuns/{run_id}", headers=headers, timeout=30
    ).json()
    assert (dag_run["dag_id"], dag_run["triggered_by"], dag_run["note"]) == (
        "sme_ingest",
        "rest_api",
        "started by a grant",
    )
    assert dag_run["conf"] == {
        "sme_ids": ["SME-000002"],
        "as_of": requested.date().isoformat(),
        "consent_at": requested.isoformat(),
    }
