"""The 90-day reconfirmation rule: access not reconfirmed for 90 days stops, like an expiry.

On both backends: the law in ``warehouse.consent`` (pulls, entitlement, the withdrawal of what
was delivered, the ledger), the operator's list of consents about to lapse (CLI and API), and the
SME's one-click reconfirmation on its own page (CSRF-protected, recorded in the link ledger).
"""

from __future__ import annotations

import datetime as dt
import json
import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from consent_world import Data, World, opened
from fastapi.testclient import TestClient
from sqlalchemy import Engine, select

from dossier.cli import main
from dossier.settings import for_home, override
from dossier.web.app import create_app
from warehouse import consent, links
from warehouse.db import session_scope
from warehouse.models import Consent, ConsentEvent, LinkEvent, ShownText

T0 = dt.datetime(2026, 9, 1, tzinfo=dt.UTC)
DAY = dt.timedelta(days=1)
BOOKS = frozenset({"accounting"})


@pytest.fixture
def world(warehouse_url: str, tmp_path: Path) -> Iterator[World]:
    with opened(warehouse_url, tmp_path, migrate=False) as w:
        w.add_smes(["SME-000001", "SME-000002", "SME-000003"])
        w.add_lenders(["northwind"])
        yield w


def give(
    world: World, consent_id: str, sme_id: str, *, granted_at: dt.datetime = T0, days: int = 365
) -> None:
    world.grant(
        consent_id,
        sme_id,
        sources=BOOKS,
        recipients=["northwind"],
        purpose="credit_decision",
        months=12,
        granted_at=granted_at,
        expires_at=granted_at + days * DAY,
    )


def row(engine: Engine, consent_id: str) -> Consent:
    with session_scope(engine) as session:
        found = session.get(Consent, consent_id)
        session.expunge(found)
        return found


def test_access_stops_90_days_after_the_grant_unless_reconfirmed(world: World) -> None:
    give(world, "C-1", "SME-000001")
    granted = row(world.engine, "C-1")
    assert (granted.reconfirmed_at, granted.reconfirm_by) == (None, T0 + 90 * DAY)
    lapse = T0 + 90 * DAY
    with session_scope(world.engine) as session:
        window = consent.pull_window(
            session, "SME-000001", "accounting", then=T0 + DAY, now=lapse - dt.timedelta(seconds=1)
        )
        assert window == 12
        assert consent.pull_window(session, "SME-000001", "accounting", then=T0 + DAY, now=lapse) is None
        before = consent.entitlement(session, ["SME-000001"], at=lapse - dt.timedelta(seconds=1))
        after = consent.entitlement(session, ["SME-000001"], at=lapse)
        assert before.allows("SME-000001", "northwind", "credit_decision", ["accounting"], 12)
        assert not after.allows("SME-000001", "northwind", "credit_decision", ["accounting"], 12)
        terms = consent.Terms.of(session.get(Consent, "C-1"))
        assert consent.status_at(terms, lapse - DAY) == "active"
        assert consent.status_at(terms, lapse) == "lapsed"
        assert consent.why_not([terms], "northwind", "credit_decision", ["accounting"], 12, lapse + DAY) == (
            "consent_expired",
            lapse,
        )
        with pytest.raises(
            consent.ConsentError, match=r"^consent C-1 is lapsed at .*; it cannot be reconfirmed$"
        ):
            consent.reconfirm(session, "C-1", at=lapse + DAY)


def test_a_reconfirmation_gives_90_days_from_then_and_is_in_the_ledger(world: World) -> None:
    give(world, "C-1", "SME-000001")
    at = T0 + 80 * DAY
    assert world.reconfirm("C-1", at=at)
    after = row(world.engine, "C-1")
    assert (after.reconfirmed_at, after.reconfirm_by) == (at, at + 90 * DAY)
    with session_scope(world.engine) as session:
        assert (
            consent.pull_window(session, "SME-000001", "accounting", then=T0 + DAY, now=T0 + 120 * DAY) == 12
        )
        events = session.scalars(
            select(ConsentEvent).where(ConsentEvent.consent_id == "C-1").order_by(ConsentEvent.sequence)
        )
        assert [(e.event_type, e.occurred_at, e.actor, e.details) for e in events] == [
            (
                "granted",
                T0,
                "sme",
                {
                    "sources": ["accounting"],
                    "recipients": ["northwind"],
                    "purpose": "credit_decision",
                    "history_months": 12,
                    "expires_at": (T0 + 365 * DAY).isoformat(),
                },
            ),
            ("reconfirmed", at, "sme", {"reconfirm_by": (at + 90 * DAY).isoformat()}),
        ]
        assert consent.verify_chain(session, "C-1")
    # Never past the expiry, and only an active consent can be reconfirmed.
    give(world, "C-short", "SME-000002", days=100)
    assert world.reconfirm("C-short", at=T0 + 85 * DAY)
    with session_scope(world.engine) as session:
        assert (
            consent.pull_window(session, "SME-000002", "accounting", then=T0 + DAY, now=T0 + 100 * DAY)
            is None
        )
        consent.revoke(session, "C-short", at=T0 + 101 * DAY)
    assert not world.reconfirm("C-short", at=T0 + 102 * DAY)
    give(world, "C-later", "SME-000003", granted_at=T0 + 10 * DAY)
    assert not world.reconfirm("C-later", at=T0 + 5 * DAY)


def test_a_lapse_withdraws_delivered_versions_at_the_next_pull_like_an_expiry(world: World) -> None:
    world.subscribe("northwind", "credit_decision")
    give(world, "C-1", "SME-000001")
    give(world, "C-2", "SME-000002")
    assert world.reconfirm("C-2", at=T0 + 85 * DAY)
    data = {"SME-000001": Data(BOOKS, 12), "SME-000002": Data(BOOKS, 12)}
    world.publish(dt.date(2026, 11, 1), data, at=T0 + 70 * DAY)
    first = world.pull("northwind", at=T0 + 71 * DAY)
    assert first.breaches == []
    assert sorted(r["sme_id"] for r in first.dossiers) == ["SME-000001", "SME-000002"]

    later = world.pull("northwind", at=T0 + 91 * DAY)
    assert later.breaches == []
    assert [(w["sme_id"], w["reason"]) for w in later.withdrawals] == [("SME-000001", "consent_expired")]
    again = world.pull("northwind", at=T0 + 92 * DAY)
    assert (again.breaches, again.withdrawals, again.dossiers) == ([], [], [])


def test_lapsing_lists_what_stops_soon_unless_reconfirmed(world: World) -> None:
    give(world, "C-soon", "SME-000001")
    give(world, "C-later", "SME-000002", granted_at=T0 + 10 * DAY)
    give(world, "C-expires-first", "SME-000003", days=80)
    at = T0 + 77 * DAY
    with session_scope(world.engine) as session:
        soon = consent.lapsing(session, at=at, within=14 * DAY)
        assert [(t.consent_id, t.lapses_at) for t in soon] == [("C-soon", T0 + 90 * DAY)]
        assert [t.consent_id for t in consent.lapsing(session, at=at, within=30 * DAY)] == [
            "C-soon",
            "C-later",
        ]
        assert consent.lapsing(session, at=T0 + 70 * DAY, within=14 * DAY) == []
        c_soon = session.get(Consent, "C-soon")
        assert consent.reconfirmable(c_soon, at)
        assert not consent.reconfirmable(c_soon, T0 + 70 * DAY)
        assert not consent.reconfirmable(session.get(Consent, "C-expires-first"), at)


def test_the_operator_lists_lapsing_consents(
    world: World, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    now = dt.datetime.now(dt.UTC)
    give(world, "C-due", "SME-000001", granted_at=now - 80 * DAY)
    give(world, "C-fresh", "SME-000002", granted_at=now - DAY)
    settings = for_home(
        tmp_path / "var",
        warehouse_url=str(world.engine.url.render_as_string(hide_password=False)),
        operator_token="op",
    )
    with override(settings):
        assert main(["consent", "lapsing", "--days", "14", "--json"]) == 0
        listed = json.loads(capsys.readouterr().out)
        assert [(c["consent_id"], c["sme_id"], c["days_left"]) for c in listed] == [
            ("C-due", "SME-000001", 9)
        ]
        assert main(["consent", "lapsing", "--days", "-1"]) == 2
        assert capsys.readouterr().err.strip() == "dossier: error: --days must be 0 or more, not -1"
    with TestClient(create_app(settings)) as client:
        answer = client.get(
            "/v1/operator/consents/lapsing", params={"days": 14}, headers={"Authorization": "Bearer op"}
        )
        assert answer.status_code == 200
        assert [(c["consent_id"], c["reconfirm_by"][:10]) for c in answer.json()] == [
            ("C-due", (now + 10 * DAY).date().isoformat())
        ]
        assert client.get("/v1/operator/consents/lapsing").status_code == 401


def test_the_sme_reconfirms_on_its_own_page_in_one_click(world: World, tmp_path: Path) -> None:
    now = dt.datetime.now(dt.UTC)
    url = world.engine.url.render_as_string(hide_password=False)
    settings = for_home(tmp_path / "var", warehouse_url=url, operator_token="op")
    key = settings.kept_secret("secret_key")
    with session_scope(world.engine) as session:
        made = links.create_link(
            session,
            key,
            sme_id="SME-000001",
            sources=["accounting"],
            recipients=["northwind"],
            purpose="credit_decision",
            history_months=12,
            consent_days=365,
            now=now - 80 * DAY,
        )
        link_id = made.link.link_id
        text = links.keep_text(session, "\n\n".join(links.consent_text(session, made.link)), now - 80 * DAY)
        links.answer(session, made.link, grant=True, text_sha256=text, at=now - 80 * DAY, client="test")
        consent_id = made.link.consent_id
        page_key = links.issue_page_key(session, key, "SME-000001")
    with TestClient(create_app(settings)) as client:
        page = client.get("/sme/SME-000001", params={"key": page_key})
        assert page.status_code == 200
        assert "Keep sharing" in page.text
        assert f'name="consent_id" value="{consent_id}"' in page.text
        csrf = re.search(r'name="csrf_token" value="([^"]+)"', page.text).group(1)
        form = {"key": page_key, "consent_id": consent_id}

        forged = client.post("/sme/SME-000001/reconfirm", data={**form, "csrf_token": "forged"})
        assert forged.status_code == 403
        assert row(world.engine, consent_id).reconfirmed_at is None

        done = client.post("/sme/SME-000001/reconfirm", data={**form, "csrf_token": csrf})
        assert done.status_code == 200
        assert "Done: sharing under" in done.text
        reconfirmed = row(world.engine, consent_id)
        assert reconfirmed.reconfirmed_at is not None
        assert reconfirmed.reconfirm_by == reconfirmed.reconfirmed_at + 90 * DAY
        assert f'name="consent_id" value="{consent_id}"' not in done.text  # no longer due

        repeated = client.post("/sme/SME-000001/reconfirm", data={**form, "csrf_token": csrf})
        assert repeated.status_code == 409
        other = client.post("/sme/SME-000002/reconfirm", data={**form, "csrf_token": csrf})
        assert other.status_code in (403, 404)
    with session_scope(world.engine) as session:
        events = session.scalars(
            select(LinkEvent).where(LinkEvent.link_id == link_id).order_by(LinkEvent.sequence)
        ).all()
        assert [e.event_type for e in events][-1] == "reconfirmed"
        last = events[-1]
        assert (last.actor, last.details["consent_id"], last.details["reconfirm_by"]) == (
            "sme",
            consent_id,
            reconfirmed.reconfirm_by.isoformat(),
        )
        shown = session.get(ShownText, last.details["text_sha256"])
        assert shown.text.startswith(
            "Keep sharing your accounting data (12 months of history) with northwind"
        )
        assert links.verify_ledgers(session)[1] == []
