"""Uploads through a connector link: landed raw first, read by the one parser, feedback; both backends."""

from __future__ import annotations

import hashlib
import re
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select

from dossier.settings import for_home
from dossier.web.app import create_app
from warehouse.db import make_engine, session_scope
from warehouse.models import Consent, Lender, LinkEvent, Sme, Upload
from warehouse.storage import Store

FIXTURES = Path(__file__).parents[1] / "connectors" / "fixtures"
GREEN_BUTTON = (FIXTURES / "espi_containerized_root.xml").read_bytes()
LEDGER = (FIXTURES / "ledger_tb.csv").read_bytes()
TOKEN = "operator-secret-for-tests"


@pytest.fixture
def world(warehouse_url: str, tmp_path: Path) -> Any:
    engine = make_engine(warehouse_url)
    with session_scope(engine) as session:
        session.add(
            Sme(sme_id="SME-1", name="Acme Bakery", industry="retail", region="North", size_band="micro")
        )
        session.add(Lender(lender_id="northwind", name="Northwind Capital"))
    settings = for_home(
        tmp_path / "var", warehouse_url=warehouse_url, operator_token=TOKEN, upload_max_bytes=4096
    )
    with TestClient(create_app(settings), raise_server_exceptions=False) as client:
        made = client.post(
            "/v1/operator/links",
            json={
                "sme_id": "SME-1",
                "sources": ["utility", "accounting"],
                "recipients": ["northwind"],
                "purpose": "credit_decision",
                "history_months": 24,
                "consent_days": 180,
            },
            headers={"Authorization": f"Bearer {TOKEN}"},
        ).json()
        path = "/" + made["url"].split("/", 3)[3]
        page = client.get(path)
        csrf = re.search(r'name="csrf_token" value="([^"]+)"', page.text).group(1)
        yield {
            "client": client,
            "path": path,
            "csrf": csrf,
            "engine": engine,
            "store": Store(settings.store_url),
        }
    engine.dispose()


def upload(world: dict[str, Any], source: str, name: str, data: bytes) -> Any:
    return world["client"].post(
        world["path"] + "/upload",
        data={"source": source, "csrf_token": world["csrf"]},
        files={"file": (name, data, "application/octet-stream")},
    )


def uploads_of(world: dict[str, Any]) -> list[tuple]:
    with session_scope(world["engine"]) as session:
        return [
            (u.source, u.filename, u.sha256, u.raw_path, u.size_bytes, u.format, u.status, u.tables)
            for u in session.scalars(select(Upload).order_by(Upload.id))
        ]


def test_a_green_button_file_is_landed_then_parsed(world: dict[str, Any]) -> None:
    page = upload(world, "utility", "meter.xml", GREEN_BUTTON)
    assert page.status_code == 200
    assert "meter.xml: understood as espi:" in page.text
    assert "3 utility readings, 0 utility bills, 1 usage summaries." in page.text
    digest = hashlib.sha256(GREEN_BUTTON).hexdigest()
    raw_path = world["store"].layout.raw("utility", digest, "xml")
    assert uploads_of(world) == [
        (
            "utility",
            "meter.xml",
            digest,
            raw_path,
            len(GREEN_BUTTON),
            "espi",
            "parsed",
            {"utility_readings": 3, "utility_bills": 0, "usage_summaries": 1},
        )
    ]
    assert world["store"].read_bytes(raw_path) == GREEN_BUTTON
    with session_scope(world["engine"]) as session:
        event = session.scalars(select(LinkEvent).where(LinkEvent.event_type == "uploaded")).one()
        assert event.details == {
            "source": "utility",
            "sha256": digest,
            "status": "parsed",
            "client": "testclient",
        }


def test_an_unknown_kind_of_file_is_kept_and_reported_not_yet_readable(world: dict[str, Any]) -> None:
    data = b"This is a scanned letter from my accountant, as text.\n"
    page = upload(world, "accounting", "letter.txt", data)
    assert page.status_code == 200
    assert "letter.txt: received, not yet readable." in page.text
    [(source, _, digest, raw_path, _, fmt, status, tables)] = uploads_of(world)
    assert (source, fmt, status, tables) == ("accounting", None, "unreadable", {})
    assert world["store"].read_bytes(raw_path) == data
    assert digest == hashlib.sha256(data).hexdigest()


def test_another_sources_format_and_a_malformed_file_are_rejected_with_the_reason(
    world: dict[str, Any],
) -> None:
    wrong = upload(world, "accounting", "meter.xml", GREEN_BUTTON)
    assert wrong.status_code == 422
    assert "holds utility data, not accounting data." in wrong.text
    broken = GREEN_BUTTON.replace(b"<espi:value>2<", b"<espi:value>two<", 1)
    malformed = upload(world, "utility", "broken.xml", broken)
    assert malformed.status_code == 422
    assert re.search(
        r"broken.xml: not accepted\. Green Button ESPI .*IntervalReading\[0\], field value: not a number: &#39;two&#39;",
        malformed.text,
    )
    assert [(u[0], u[1], u[5], u[6]) for u in uploads_of(world)] == [
        ("accounting", "meter.xml", "espi", "rejected"),
        ("utility", "broken.xml", "espi", "rejected"),
    ]


def test_empty_oversized_and_unasked_uploads_are_refused_and_nothing_lands(world: dict[str, Any]) -> None:
    first = upload(world, "utility", "meter.xml", GREEN_BUTTON)
    assert first.status_code == 200
    empty = upload(world, "utility", "empty.xml", b"  \n")
    assert (empty.status_code, "The file is empty; nothing was kept." in empty.text) == (400, True)
    big = upload(world, "accounting", "big.csv", LEDGER + b"x" * 5000)
    assert (big.status_code, "larger than the limit of 4,096 bytes; nothing was kept." in big.text) == (
        413,
        True,
    )
    unasked = upload(world, "tax", "vat.json", b'{"periodKey": "24A1"}')
    assert unasked.status_code == 400
    assert "This link does not ask for tax data; it asks for accounting, utility." in unasked.text
    assert [u[1] for u in uploads_of(world)] == ["meter.xml"]
    forged = world["client"].post(
        world["path"] + "/upload",
        data={"source": "utility", "csrf_token": "nope"},
        files={"file": ("m.xml", GREEN_BUTTON, "text/xml")},
    )
    assert forged.status_code == 403
    with session_scope(world["engine"]) as session:
        assert session.scalars(select(Consent)).all() == []
