"""Consent ledger and the two checks, on SQLite and PostgreSQL."""

from __future__ import annotations

import datetime as dt

import pytest
from sqlalchemy import Engine, select, update

from warehouse import consent
from warehouse.db import session_scope
from warehouse.models import Consent, ConsentEvent, Lender, Sme

T0 = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)


def _seed(engine: Engine) -> None:
    with session_scope(engine) as session:
        session.add_all(
            [
                Sme(
                    sme_id="SME-1",
                    name="Acme Bakery",
                    industry="food_service",
                    region="North",
                    size_band="micro",
                ),
                Lender(lender_id="northwind", name="Northwind Capital"),
                Lender(lender_id="harbor", name="Harbor Credit"),
            ]
        )


def _grant(session, **changes):
    terms = dict(
        consent_id="C-1",
        sme_id="SME-1",
        sources=["tax", "accounting"],
        recipients=["northwind"],
        purpose="working-capital credit assessment",
        history_months=24,
        granted_at=T0,
        expires_at=T0 + dt.timedelta(days=365),
    )
    terms.update(changes)
    return consent.grant(session, **terms)


def test_grant_records_terms_and_one_event(warehouse_engine: Engine) -> None:
    _seed(warehouse_engine)
    with session_scope(warehouse_engine) as session:
        _grant(session)
        _grant(session)  # same terms again: no new event
    with session_scope(warehouse_engine) as session:
        row = session.get(Consent, "C-1")
        assert (row.sources, row.recipients, row.history_months, row.status, row.granted_at) == (
            ["accounting", "tax"],
            ["northwind"],
            24,
            "active",
            T0,
        )
        events = session.scalars(select(ConsentEvent)).all()
        assert [(e.consent_id, e.sequence, e.event_type, e.prev_hash) for e in events] == [
            ("C-1", 1, "granted", consent.GENESIS_HASH)
        ]


def test_source_check_and_history_window(warehouse_engine: Engine) -> None:
    _seed(warehouse_engine)
    with session_scope(warehouse_engine) as session:
        _grant(session)
        _grant(session, consent_id="C-2", sources=["tax"], history_months=36)
    with session_scope(warehouse_engine) as session:
        at = T0 + dt.timedelta(days=10)
        assert consent.require_source(session, "SME-1", "tax", at) == 36
        assert consent.require_source(session, "SME-1", "accounting", at) == 24
        with pytest.raises(consent.ConsentError, match="SME-1: no active consent covers the utility source"):
            consent.require_source(session, "SME-1", "utility", at)
        with pytest.raises(consent.ConsentError):
            consent.require_source(session, "SME-1", "tax", T0 - dt.timedelta(seconds=1))
        with pytest.raises(consent.ConsentError):
            consent.require_source(session, "SME-1", "tax", T0 + dt.timedelta(days=366))
        assert consent.source_coverage(session, at) == {"SME-1": {"accounting": 24, "tax": 36}}
        assert consent.source_coverage(session, at, sme_ids=["SME-1"]) == {
            "SME-1": {"accounting": 24, "tax": 36}
        }
        assert consent.source_coverage(session, at, sme_ids=["SME-2"]) == {}


def test_entitlement_needs_recipient_and_every_source(warehouse_engine: Engine) -> None:
    _seed(warehouse_engine)
    with session_scope(warehouse_engine) as session:
        _grant(session)
    at = T0 + dt.timedelta(days=1)
    with session_scope(warehouse_engine) as session:
        assert consent.entitled_lenders(session, "SME-1", ["accounting", "tax"], at) == {"northwind"}
        assert consent.entitled_lenders(session, "SME-1", ["accounting", "tax", "utility"], at) == set()
        grants = consent.entitlement_map(session, at)["SME-1"]
        assert consent.is_entitled(grants, "northwind", ["tax"])
        assert not consent.is_entitled(grants, "harbor", ["tax"])
        assert not consent.is_entitled(grants, "northwind", ["survey"])


def test_revoke_ends_access_and_extends_the_chain(warehouse_engine: Engine) -> None:
    _seed(warehouse_engine)
    with session_scope(warehouse_engine) as session:
        _grant(session)
        consent.revoke(session, "C-1", at=T0 + dt.timedelta(days=2), reason="changed my mind")
        consent.revoke(session, "C-1", at=T0 + dt.timedelta(days=3))  # twice: no new event
    with session_scope(warehouse_engine) as session:
        assert consent.entitled_lenders(session, "SME-1", ["tax"], T0 + dt.timedelta(days=5)) == set()
        assert consent.source_coverage(session, T0 + dt.timedelta(days=5)) == {}
        events = session.scalars(select(ConsentEvent).order_by(ConsentEvent.sequence)).all()
        assert [(e.sequence, e.event_type, e.details) for e in events][1] == (
            2,
            "revoked",
            {"reason": "changed my mind"},
        )
        assert events[1].prev_hash == events[0].hash
        assert consent.verify_chain(session, "C-1")


def test_tampered_history_is_detected(warehouse_engine: Engine) -> None:
    _seed(warehouse_engine)
    with session_scope(warehouse_engine) as session:
        _grant(session)
        consent.revoke(session, "C-1", at=T0 + dt.timedelta(days=2))
    with session_scope(warehouse_engine) as session:
        session.execute(update(ConsentEvent).where(ConsentEvent.sequence == 1).values(actor="someone-else"))
    with session_scope(warehouse_engine) as session:
        assert not consent.verify_chain(session, "C-1")


def test_grant_rejects_unknown_sources_and_inverted_dates(warehouse_engine: Engine) -> None:
    _seed(warehouse_engine)
    with session_scope(warehouse_engine) as session:
        with pytest.raises(ValueError, match=r"consent C-1: unknown sources \['bank'\]"):
            _grant(session, sources=["bank"])
        with pytest.raises(ValueError, match="is not after granted_at"):
            _grant(session, expires_at=T0)
