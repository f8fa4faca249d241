"""The lender's share read with the stock ``delta-sharing`` client from PyPI, over real HTTP.

The client pins pandas below 3 and pyarrow at most 23, so it runs in its own small virtual
environment (made once with uv and kept in ``~/.cache/sme-dossier/``, keyed by the client's
version) as a subprocess against a live service on a free loopback port. The test skips, saying
so, only when the package registry cannot be reached to make that environment.

Both backends; dossiers published by the real publish into a temporary store.
"""

from __future__ import annotations

import datetime as dt
import fcntl
import json
import os
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn
from fastapi.testclient import TestClient

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "warehouse"))
from test_dossier_store import NOW, expected_row, give_consent, run_publish, scored, seed

from dossier.settings import for_home
from dossier.web.app import create_app
from warehouse import consent, keys
from warehouse.db import make_engine, session_scope
from warehouse.dossier_schema import ALL_COLUMNS
from warehouse.feed import subscribe

CLIENT = "delta-sharing==1.4.2"
CLIENT_HOME = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "sme-dossier"
CLIENT_VENV = CLIENT_HOME / f"{CLIENT.replace('==', '-')}-py{sys.version_info.major}{sys.version_info.minor}"
UNREACHABLE = ("Failed to fetch", "dns error", "Connection refused", "error sending request", "timed out")

CLIENT_SCRIPT = r"""
import datetime, json, math, sys
import delta_sharing
import pandas


def plain(value):
    if value is None or value is pandas.NaT:
        return None
    if hasattr(value, "tolist"):  # numpy arrays and scalars
        return plain(value.tolist())
    if isinstance(value, list):
        return [plain(v) for v in value]
    if isinstance(value, (datetime.date, datetime.datetime)):
        return value.isoformat()
    if isinstance(value, float) and math.isnan(value):
        return None
    return value


for line in sys.stdin:
    profile, table, kind, options = json.loads(line)
    url = f"{profile}#{table}"
    if kind == "tables":
        tables = delta_sharing.SharingClient(profile).list_all_tables()
        out = [f"{t.share}.{t.schema}.{t.name}" for t in tables]
    elif kind == "version":
        out = delta_sharing.get_table_version(url)
    else:
        load = delta_sharing.load_as_pandas if kind == "snapshot" else delta_sharing.load_table_changes_as_pandas
        frame = load(url, **options)
        rows = frame.astype(object).to_dict("records")
        out = {"columns": list(frame.columns), "rows": [{k: plain(v) for k, v in r.items()} for r in rows]}
    print(json.dumps(out), flush=True)
"""


def client_python() -> Path:
    """The Python of the client's own environment, made on first use (under a lock, for parallel runs)."""
    python = CLIENT_VENV / "bin" / "python"
    CLIENT_HOME.mkdir(parents=True, exist_ok=True)
    with open(CLIENT_HOME / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if (CLIENT_VENV / ".complete").exists():
            return python
        shutil.rmtree(CLIENT_VENV, ignore_errors=True)
        uv = shutil.which("uv", path=str(Path(sys.executable).parent)) or shutil.which("uv")
        if uv is None:
            pytest.fail("uv is not installed beside the test Python (make install puts it in .venv)")
        subprocess.run([uv, "venv", "-q", "--python", sys.executable, str(CLIENT_VENV)], check=True)
        made = subprocess.run(
            [uv, "pip", "install", "-q", "--python", str(python), CLIENT],
            capture_output=True,
            text=True,
            timeout=600,
        )
        if made.returncode != 0:
            shutil.rmtree(CLIENT_VENV, ignore_errors=True)
            if any(marker in made.stderr for marker in UNREACHABLE):
                pytest.skip(
                    f"the package registry cannot be reached to install {CLIENT}: {made.stderr[-300:]}"
                )
            pytest.fail(f"installing {CLIENT} failed:\n{made.stderr}")
        (CLIENT_VENV / ".complete").write_text(CLIENT + "\n")
    return python


class Client:
    """The client script in its own environment, answering one JSON line per request on stdin."""

    def __init__(self) -> None:
        self.process = subprocess.Popen(
            [str(client_python()), "-u", "-c", CLIENT_SCRIPT],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env={**os.environ, "NO_PROXY": "127.0.0.1", "no_proxy": "127.0.0.1"},
        )

    def __call__(self, profile: Path, table: str, kind: str, **options: Any) -> Any:
        assert self.process.stdin is not None
        assert self.process.stdout is not None
        self.process.stdin.write(json.dumps([str(profile), table, kind, options]) + "\n")
        self.process.stdin.flush()
        line = self.process.stdout.readline()
        if not line:
            self.process.wait(timeout=30)
            pytest.fail(f"the client failed:\n{self.process.stderr.read() if self.process.stderr else ''}")
        return json.loads(line)

    def close(self) -> None:
        if self.process.stdin is not None:
            self.process.stdin.close()
        self.process.wait(timeout=60)


@pytest.fixture
def client() -> Any:
    running = Client()
    yield running
    running.close()


@pytest.fixture
def live(warehouse_url: str, tmp_path: Path) -> Any:
    """SME 1 and 3 consent to northwind, SME 2 to harbor only; all three published; the service
    on a free loopback port. Yields (base url, engine, {lender: API key})."""
    settings = for_home(tmp_path / "var", warehouse_url=warehouse_url, operator_token="operator-secret")
    engine = make_engine(warehouse_url)
    seed(engine)
    tokens = {}
    with session_scope(engine) as session:
        give_consent(session, "C-1", "SME-000001")
        give_consent(session, "C-2", "SME-000002", recipients=("harbor",))
        give_consent(session, "C-3", "SME-000003", recipients=("northwind", "harbor"))
        for lender_id in ("northwind", "harbor"):
            subscribe(session, lender_id)
            tokens[lender_id], _ = keys.issue_key(session, lender_id, at=NOW)
    app = create_app(settings)
    run_publish(engine, app.state.store, [scored(["SME-000001", "SME-000002"]), scored(["SME-000003"])])
    with TestClient(app):
        server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning"))
        thread = threading.Thread(target=server.run, daemon=True)
        thread.start()
        for _ in range(200):
            if server.started:
                break
            time.sleep(0.05)
        port = server.servers[0].sockets[0].getsockname()[1]
        yield f"http://127.0.0.1:{port}", engine, tokens
        server.should_exit = True
        thread.join(timeout=10)
    engine.dispose()


def profile_file(url: str, token: str, path: Path) -> Path:
    answer = httpx.get(f"{url}/v1/sharing/profile", headers={"Authorization": f"Bearer {token}"})
    assert answer.status_code == 200
    assert answer.json() == {
        "shareCredentialsVersion": 1,
        "endpoint": f"{url}/delta-sharing",
        "bearerToken": token,
    }
    path.write_bytes(answer.content)
    return path


DOSSIER = [c.name for c in ALL_COLUMNS]
COLUMNS = ["feed_seq", "delivered_at", "withdrawal_reason", *DOSSIER]
CDF = ["_change_type", "_commit_version", "_commit_timestamp"]


def as_json(row: dict[str, Any]) -> dict[str, Any]:
    """A dossier row as the client script prints the client's frame (dates and instants in ISO)."""
    return {k: v.isoformat() if isinstance(v, dt.date) else v for k, v in row.items()}


def differences(got: dict[str, Any], wanted: dict[str, Any]) -> dict[str, tuple[Any, Any]]:
    """The columns where two whole rows differ (empty when they are the same row)."""
    return {k: (got.get(k), wanted.get(k)) for k in {*got, *wanted} if got.get(k) != wanted.get(k)}


def dossier_part(row: dict[str, Any]) -> dict[str, Any]:
    return {k: row[k] for k in DOSSIER}


def key_only(sme_id: str) -> dict[str, Any]:
    """A row whose consent has ended, as a version that held it still names it: only its keys."""
    whole = expected_row(sme_id, published_at=NOW)
    return {k: (whole[k] if k in ("dossier_id", "sme_id") else None) for k in DOSSIER}


def test_the_stock_client_reads_the_share_and_sees_a_withdrawal_as_a_delete(
    live: Any, client: Client, tmp_path: Path
) -> None:
    url, engine, tokens = live
    profile = profile_file(url, tokens["northwind"], tmp_path / "northwind.share")
    table = "northwind.credit.dossiers"
    assert client(profile, table, "tables") == [table]
    assert client(profile, table, "version") == 2
    first = client(profile, table, "snapshot")
    assert first["columns"] == COLUMNS
    rows = first["rows"]
    assert [(r["feed_seq"], r["withdrawal_reason"]) for r in rows] == [(1, None), (2, None)]
    wanted = [as_json(expected_row(s, published_at=NOW)) for s in ("SME-000001", "SME-000003")]
    assert [differences(dossier_part(r), w) for r, w in zip(rows, wanted, strict=True)] == [{}, {}]
    delivered_at = rows[0]["delivered_at"]
    assert rows[1]["delivered_at"] == delivered_at

    before = httpx.post(
        f"{url}/delta-sharing/shares/northwind/schemas/credit/tables/dossiers/query",
        json={},
        headers={"Authorization": f"Bearer {tokens['northwind']}"},
    )
    old_url = json.loads(before.text.splitlines()[2])["file"]["url"]
    assert httpx.get(old_url).status_code == 200

    with session_scope(engine) as session:
        consent.revoke(session, "C-1", at=dt.datetime.now(dt.UTC))
    stopped = httpx.get(old_url)
    assert (stopped.status_code, stopped.headers["content-type"]) == (410, "application/problem+json")

    assert client(profile, table, "version") == 3
    now = client(profile, table, "snapshot")
    assert [(r["feed_seq"], dossier_part(r)) for r in now["rows"]] == [(2, wanted[1])]
    at_2 = client(profile, table, "snapshot", version=2)
    assert [(r["feed_seq"], dossier_part(r)) for r in at_2["rows"]] == [
        (1, key_only("SME-000001")),
        (2, wanted[1]),
    ]
    changes = client(profile, table, "changes", starting_version=0)
    assert changes["columns"] == COLUMNS + CDF
    assert [
        (r["_change_type"], r["_commit_version"], r["feed_seq"], r["withdrawal_reason"], dossier_part(r))
        for r in changes["rows"]
    ] == [
        ("insert", 1, 1, None, key_only("SME-000001")),
        ("insert", 2, 2, None, wanted[1]),
        ("delete", 3, 1, "consent_revoked", key_only("SME-000001")),
    ]
    stamps = [r["_commit_timestamp"] for r in changes["rows"]]
    assert stamps == sorted(stamps)
    last = client(profile, table, "changes", starting_version=3, ending_version=3)
    assert [(r["_change_type"], r["sme_id"]) for r in last["rows"]] == [("delete", "SME-000001")]
    assert httpx.get(old_url).status_code == 410

    harbor = profile_file(url, tokens["harbor"], tmp_path / "harbor.share")
    assert [r["sme_id"] for r in client(harbor, "harbor.credit.dossiers", "snapshot")["rows"]] == [
        "SME-000002",
        "SME-000003",
    ]
