"""A grant runs the pipeline for its SME now, and the dossier reaches the lender's feed; a
revocation sends the tombstone. Real service, real sandbox over HTTP, real pipeline steps; both
warehouse backends.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select

from connectors.sandbox.seed import seed_warehouse
from connectors.sandbox.server import SandboxServer
from connectors.sandbox.universe import Universe
from dossier import pipeline
from dossier.settings import for_home, override
from dossier.web.app import create_app
from warehouse import keys
from warehouse.db import make_engine, session_scope
from warehouse.dossier_schema import SCHEMA_VERSION
from warehouse.dossier_store import read_published
from warehouse.models import Consent, DossierVersion, GrantRun, SourceConnection
from warehouse.storage import Store

TOKEN = "operator-secret-for-grant-runs"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
LENDER = "northwind-capital"


@pytest.fixture
def world(warehouse_url: str, tmp_path: Path) -> Iterator[dict[str, Any]]:
    """A seeded sandbox of 4 SMEs served on 127.0.0.1, the web service over it, a lender key."""
    today = dt.datetime.now(dt.UTC).date()
    with SandboxServer(Universe(20261125, 4, today)) as sandbox:
        engine = make_engine(warehouse_url)
        with session_scope(engine) as session:
            seed_warehouse(session, sandbox.universe, now=dt.datetime.now(dt.UTC))
            token, _ = keys.issue_key(session, LENDER, at=dt.datetime.now(dt.UTC))
        settings = for_home(
            tmp_path / "var",
            warehouse_url=warehouse_url,
            operator_token=TOKEN,
            sandbox_url=sandbox.url,
            shard_count=2,
            sandbox_fault_rate=0.0,
        )
        with override(settings), TestClient(create_app(settings), raise_server_exceptions=False) as client:
            yield {
                "client": client,
                "engine": engine,
                "settings": settings,
                "lender": {"Authorization": f"Bearer {token}"},
            }
        engine.dispose()


def _grant(client: TestClient, sme_id: str, sources: list[str]) -> tuple[str, str]:
    """Make a link, open it and agree; (consent id, the SME's page path)."""
    made = client.post(
        "/v1/operator/links",
        json={
            "sme_id": sme_id,
            "sources": sources,
            "recipients": [LENDER],
            "purpose": "credit_decision",
            "history_months": 24,
            "consent_days": 90,
        },
        headers=AUTH,
    ).json()
    path = "/" + made["url"].split("/", 3)[3]
    form = dict(re.findall(r'name="(csrf_token|text_sha256)" value="([^"]+)"', client.get(path).text))
    granted = client.post(path, data={**form, "decision": "grant"})
    assert granted.status_code == 200, granted.text
    assert "Your dossier is being prepared: waiting to start." in granted.text
    page = re.search(r'<a href="http://127.0.0.1:8000(/sme/[^"]+)">Your page</a>', granted.text).group(1)
    return f"C-{sme_id}-{made['link_id']}", page.replace("&amp;", "&")


def _feed(client: TestClient, headers: dict[str, str]) -> list[dict[str, Any]]:
    return client.get("/v1/feed", headers=headers, params={"limit": 1000}).json()["events"]


def test_a_grant_runs_the_pipeline_and_the_dossier_reaches_the_lender(world: dict[str, Any]) -> None:
    client, engine = world["client"], world["engine"]
    with session_scope(engine) as session:
        sme_ids = sorted(set(session.scalars(select(SourceConnection.sme_id))))
    sme_id, bystander = sme_ids[0], sme_ids[1]
    assert _feed(client, world["lender"]) == []

    consent_id, page = _grant(client, sme_id, ["accounting", "tax"])
    assert client.app.state.grant_runs.wait(timeout=300)

    with session_scope(engine) as session:
        run = session.scalars(select(GrantRun)).one()
        assert (run.sme_id, run.consent_id, run.runner, run.status, run.as_of_date) == (
            sme_id,
            consent_id,
            "in_process",
            "done",
            dt.datetime.now(dt.UTC).date(),
        )
        versions = session.scalars(select(DossierVersion).order_by(DossierVersion.dossier_id)).all()
        published_smes = {v.sme_id for v in versions}
    assert published_smes == {sme_id}, "only the SME that granted is run"
    events = _feed(client, world["lender"])
    scope = "accounting+tax@24m"
    delivered = [(e["event"], e["sme_id"], e["dossier_id"]) for e in events]
    assert (
        "delivered",
        sme_id,
        f"{sme_id}:{run.as_of_date.isoformat()}:v{SCHEMA_VERSION}:{scope}",
    ) in delivered
    assert {e["sme_id"] for e in events} == {sme_id}
    ours = next(e for e in events if e["dossier_id"].endswith(scope))
    assert ours["dossier"]["sources_used"] == ["accounting", "tax"]

    own = client.get(page)
    assert "Your dossier is ready and has been delivered to the lenders you chose." in own.text
    assert 'http-equiv="refresh"' not in own.text

    # A second grant, for another SME: the first SME's published version stays as it was.
    first = {v.dossier_id: (v.feed_seq, v.content_sha256, v.published_at) for v in versions}
    _grant(client, bystander, ["accounting"])
    assert client.app.state.grant_runs.wait(timeout=300)
    with session_scope(engine) as session:
        after = {
            v.dossier_id: (v.feed_seq, v.content_sha256, v.published_at)
            for v in session.scalars(select(DossierVersion))
        }
        assert [r.status for r in session.scalars(select(GrantRun).order_by(GrantRun.id))] == ["done", "done"]
    assert {k: after[k] for k in first} == first
    assert {k.split(":")[0] for k in after} == {sme_id, bystander}
    with override(world["settings"]):
        published = read_published(Store.from_settings())
    assert set(published["sme_id"]) == {sme_id, bystander}
    seen = {e["seq"] for e in events}
    news = [e for e in _feed(client, world["lender"]) if e["seq"] not in seen]
    assert {(e["event"], e["sme_id"]) for e in news} == {("delivered", bystander)}

    # Revoking on the SME's page: the lender's next read has the tombstone.
    html = client.get(page).text
    csrf = re.search(r'name="csrf_token" value="([^"]+)"', html).group(1)
    key = re.search(r'name="key" value="([^"]+)"', html).group(1)
    revoked = client.post(
        page.split("?")[0] + "/revoke", data={"csrf_token": csrf, "key": key, "everything": "1"}
    )
    assert revoked.status_code == 200
    with session_scope(engine) as session:
        assert session.get(Consent, consent_id).status == "revoked"
    tombstones = [
        (e["event"], e["dossier_id"], e["reason"])
        for e in _feed(client, world["lender"])
        if e["event"] == "withdrawn"
    ]
    assert tombstones == [
        ("withdrawn", ours["dossier_id"], "consent_revoked"),
    ]


def test_the_scoped_steps_keep_the_other_smes_rows(world: dict[str, Any]) -> None:
    """A run for one SME after a full-shard ingest: the other SMEs' canonical rows stay."""
    settings = world["settings"]
    with session_scope(world["engine"]) as session:
        sme_ids = sorted(set(session.scalars(select(SourceConnection.sme_id))))
    as_of = dt.datetime.now(dt.UTC).date()
    with override(settings):
        store = Store.from_settings()
        for shard in range(settings.shard_count):
            pipeline.ingest("accounting", shard, as_of, consent_at=dt.datetime.now(dt.UTC))
        path = {
            s: store.layout.canonical(
                "monthly_financials", as_of.isoformat(), pipeline.shards_of([s], as_of)[0]
            )
            for s in sme_ids
        }
        before = {p: store.read_table(p).to_pandas() for p in set(path.values())}
        target = sme_ids[0]
        pipeline.ingest(
            "accounting",
            pipeline.shards_of([target], as_of)[0],
            as_of,
            sme_ids=[target],
            consent_at=dt.datetime.now(dt.UTC),
        )
        after = store.read_table(path[target]).to_pandas()
    old = before[path[target]]
    assert sorted(after["sme_id"].unique()) == sorted(old["sme_id"].unique())
    others_before = old[old["sme_id"] != target].reset_index(drop=True)
    others_after = after[after["sme_id"] != target].reset_index(drop=True)
    assert others_after.equals(others_before)


def test_a_double_submitted_grant_runs_once_and_airflow_refusals_are_recorded(
    world: dict[str, Any],
) -> None:
    """With DOSSIER_AIRFLOW_API_URL set the grant's run goes to Airflow; one that cannot be reached
    leaves the grant recorded and the run failed, saying why; a second submit adds no run."""
    import dataclasses
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        closed = probe.getsockname()[1]
    settings = dataclasses.replace(
        world["settings"], airflow_api_url=f"http://127.0.0.1:{closed}", airflow_password="secret"
    )
    with TestClient(create_app(settings), raise_server_exceptions=False) as client:
        made = client.post(
            "/v1/operator/links",
            json={
                "sme_id": "SME-000003",
                "sources": ["accounting"],
                "recipients": [LENDER],
                "purpose": "credit_decision",
                "history_months": 12,
                "consent_days": 30,
            },
            headers=AUTH,
        ).json()
        path = "/" + made["url"].split("/", 3)[3]
        form = dict(re.findall(r'name="(csrf_token|text_sha256)" value="([^"]+)"', client.get(path).text))
        first = client.post(path, data={**form, "decision": "grant"})
        again = client.post(path, data={**form, "decision": "grant"})
        assert (first.status_code, again.status_code) == (200, 200)
        page = re.search(r'<a href="http://127.0.0.1:8000(/sme/[^"]+)">Your page</a>', first.text).group(1)
        own = client.get(page.replace("&amp;", "&")).text
    with session_scope(world["engine"]) as session:
        runs = session.scalars(select(GrantRun)).all()
        assert session.get(Consent, f"C-SME-000003-{made['link_id']}").status == "active"
        assert [(r.runner, r.status, r.airflow_run_id) for r in runs] == [("airflow", "failed", None)]
        assert runs[0].detail.startswith(f"cannot reach Airflow at http://127.0.0.1:{closed}: ")
    assert "Preparing your dossier did not finish" in own
