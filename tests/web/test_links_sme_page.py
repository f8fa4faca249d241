"""The SME's own page: consents, who pulled which dossier version, revocation and key rotation; both backends.

The dossier is published and pulled by the real store and feed (``warehouse.dossier_store.publish``,
``warehouse.feed.pull``), from the scored frames the store's own tests use.
"""

from __future__ import annotations

import datetime as dt
import importlib.util
import re
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select

from dossier.settings import for_home
from dossier.web.app import create_app
from warehouse import links
from warehouse.db import make_engine, session_scope
from warehouse.feed import pull, subscribe
from warehouse.models import Consent, ConsentEvent
from warehouse.storage import Store

_spec = importlib.util.spec_from_file_location(
    "dossier_store_helpers", Path(__file__).parents[1] / "warehouse" / "test_dossier_store.py"
)
helpers = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(helpers)

PULL_AT = helpers.NOW + dt.timedelta(hours=1)


@pytest.fixture
def world(warehouse_url: str, tmp_path: Path) -> Any:
    """SME-000001 consents to northwind; its dossier is published and pulled once by northwind."""
    engine = make_engine(warehouse_url)
    settings = for_home(tmp_path / "var", warehouse_url=warehouse_url, operator_token="t")
    store = Store(settings.store_url, settings.storage_options())
    helpers.seed(engine)
    with session_scope(engine) as session:
        helpers.give_consent(session, "C-1", "SME-000001")
        subscribe(session, "northwind")
    helpers.run_publish(engine, store, [helpers.scored(["SME-000001"])])
    with session_scope(engine) as session:
        pull(session, store, lender_id="northwind", out_dir=tmp_path / "pulls", now=PULL_AT)
    with session_scope(engine) as session:
        key = links.issue_page_key(session, settings.kept_secret("secret_key"), "SME-000001")
    with TestClient(create_app(settings), raise_server_exceptions=False) as client:
        yield {"client": client, "key": key, "engine": engine, "store": store, "pulls": tmp_path / "pulls"}
    engine.dispose()


def csrf_of(html: str) -> str:
    return re.search(r'name="csrf_token" value="([^"]+)"', html).group(1)


def rows_of(html: str, caption: str) -> list[list[str]]:
    table = html.split(f"<caption>{caption}</caption>", 1)[1].split("</table>", 1)[0]
    body = table.split("<tbody>", 1)[1]
    return [re.findall(r"<td>(.*?)</td>", row) for row in body.split("</tr>") if "<td>" in row]


def test_the_page_shows_consents_and_who_pulled_which_version(world: dict[str, Any]) -> None:
    page = world["client"].get("/sme/SME-000001", params={"key": world["key"]})
    assert page.status_code == 200
    assert rows_of(page.text, "Each consent, what it covers and its status today") == [
        ["C-1", "accounting, tax (24 months)", "northwind", "credit_decision", "active", "02 November 2027"]
    ]
    assert rows_of(page.text, "Each dossier version a lender pulled, when, and what it said") == [
        [
            "northwind",
            "SME-000001:2026-11-01:v3:accounting+tax@24m",
            "02 November 2026 10:30 UTC",
            "A",
            "1.1 %",
        ]
    ]
    buttons = re.findall(r'<button class="secondary" type="submit">(.*?)</button>', page.text)
    assert buttons == [
        "Stop sharing accounting",
        "Stop sharing tax",
        "Stop sharing with northwind",
        "Take back every consent",
        "Replace this page's link with a new one",
    ]


def test_revoking_a_lender_takes_effect_at_the_next_pull(world: dict[str, Any]) -> None:
    client = world["client"]
    page = client.get("/sme/SME-000001", params={"key": world["key"]})
    form = {"key": world["key"], "csrf_token": csrf_of(page.text), "lender": "northwind"}
    done = client.post("/sme/SME-000001/revoke", data=form)
    assert done.status_code == 200
    assert "Done: you stopped sharing with northwind (1 consent(s) changed)." in done.text
    with session_scope(world["engine"]) as session:
        assert session.get(Consent, "C-1").status == "revoked"
        last = session.scalars(select(ConsentEvent).order_by(ConsentEvent.sequence.desc())).first()
        assert (last.event_type, last.actor, last.details) == (
            "revoked",
            "sme",
            {"reason": "withdrawn by the SME on its page"},
        )
        summary = pull(session, world["store"], lender_id="northwind", out_dir=world["pulls"])
    assert summary["withdrawals"] == 1
    tombstones = pq.read_table(next(world["pulls"].glob("*-withdrawals.parquet"))).to_pylist()
    assert [(t["dossier_id"], t["reason"]) for t in tombstones] == [
        ("SME-000001:2026-11-01:v3:accounting+tax@24m", "consent_revoked")
    ]


def test_forms_need_the_csrf_token_and_one_choice(world: dict[str, Any]) -> None:
    client = world["client"]
    page = client.get("/sme/SME-000001", params={"key": world["key"]})
    forged = client.post(
        "/sme/SME-000001/revoke", data={"key": world["key"], "csrf_token": "x", "everything": "1"}
    )
    assert forged.status_code == 403
    two = {"key": world["key"], "csrf_token": csrf_of(page.text), "lender": "northwind", "source": "tax"}
    assert client.post("/sme/SME-000001/revoke", data=two).status_code == 400
    unknown = {"key": world["key"], "csrf_token": csrf_of(page.text), "source": "astrology"}
    refused = client.post("/sme/SME-000001/revoke", data=unknown)
    assert refused.status_code == 422
    assert "unknown source &#39;astrology&#39;; known: accounting, survey, tax, utility." in refused.text
    with session_scope(world["engine"]) as session:
        assert session.get(Consent, "C-1").status == "active"


def test_bad_page_keys_get_a_404_and_rotation_retires_the_old_key(world: dict[str, Any]) -> None:
    client = world["client"]
    for sme_id, key in [("SME-000002", world["key"]), ("SME-000001", world["key"][:-4]), ("SME-000001", "")]:
        page = client.get(f"/sme/{sme_id}", params={"key": key})
        assert page.status_code == 404
        assert "This page link is not valid (it may have been replaced by a newer one)." in page.text
    page = client.get("/sme/SME-000001", params={"key": world["key"]})
    rotated = client.post(
        "/sme/SME-000001/rotate", data={"key": world["key"], "csrf_token": csrf_of(page.text)}
    )
    assert rotated.status_code == 200
    new_key = re.search(
        r"the old one no longer works: http://127.0.0.1:8000/sme/SME-000001\?key=(\S+)</p>", rotated.text
    )
    assert client.get("/sme/SME-000001", params={"key": world["key"]}).status_code == 404
    assert client.get("/sme/SME-000001", params={"key": new_key.group(1)}).status_code == 200
