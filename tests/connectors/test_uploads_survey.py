"""Survey files uploaded through a connector link: any real form is kept, mapped forms become visits."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select

from dossier.settings import for_home
from dossier.web.app import create_app
from warehouse.db import make_engine, session_scope
from warehouse.models import Lender, Sme, Upload

FIXTURES = Path(__file__).parent / "fixtures"
TOKEN = "operator-secret-for-tests"


@pytest.fixture
def world(warehouse_url: str, tmp_path: Path) -> Any:
    engine = make_engine(warehouse_url)
    with session_scope(engine) as session:
        session.add(
            Sme(sme_id="SME-1", name="Acme Kiosk", industry="retail", region="North", size_band="micro")
        )
        session.add(Lender(lender_id="northwind", name="Northwind Capital"))
    settings = for_home(tmp_path / "var", warehouse_url=warehouse_url, operator_token=TOKEN)
    with TestClient(create_app(settings), raise_server_exceptions=False) as client:
        made = client.post(
            "/v1/operator/links",
            json={
                "sme_id": "SME-1",
                "sources": ["survey"],
                "recipients": ["northwind"],
                "purpose": "credit_decision",
                "history_months": 24,
                "consent_days": 180,
            },
            headers={"Authorization": f"Bearer {TOKEN}"},
        ).json()
        path = "/" + made["url"].split("/", 3)[3]
        csrf = re.search(r'name="csrf_token" value="([^"]+)"', client.get(path).text).group(1)
        yield {"client": client, "path": path, "csrf": csrf, "engine": engine}
    engine.dispose()


def upload(world: dict[str, Any], name: str, data: bytes) -> Any:
    return world["client"].post(
        world["path"] + "/upload",
        data={"source": "survey", "csrf_token": world["csrf"]},
        files={"file": (name, data, "application/octet-stream")},
    )


def test_mapped_and_unmapped_survey_files_are_both_accepted(world: dict[str, Any]) -> None:
    visits = upload(world, "visits.json", (FIXTURES / "kobo_field_visit.json").read_bytes())
    assert visits.status_code == 200
    assert "visits.json: understood as kobo: 2 survey submissions, 2 survey visits." in visits.text

    shops = upload(world, "shops.csv", (FIXTURES / "odk_central_shops.csv").read_bytes())
    assert shops.status_code == 200
    assert "understood as odk-csv: 2 survey submissions, 0 survey visits." in shops.text
    assert "kept as unmapped survey submissions" in shops.text

    with session_scope(world["engine"]) as session:
        rows = [
            (u.filename, u.format, u.status, u.tables)
            for u in session.scalars(select(Upload).order_by(Upload.id))
        ]
    assert rows == [
        ("visits.json", "kobo", "parsed", {"survey_submissions": 2, "survey_visits": 2}),
        ("shops.csv", "odk-csv", "parsed", {"survey_submissions": 2, "survey_visits": 0}),
    ]
