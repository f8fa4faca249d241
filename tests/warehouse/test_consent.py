"""The consent module: ledger, validation, the pull window, scopes and the delivery rule; both backends."""

from __future__ import annotations

import datetime as dt

import pytest
from sqlalchemy import Engine, select, update

from warehouse import consent
from warehouse.consent import Scope
from warehouse.db import session_scope
from warehouse.models import Consent, ConsentEvent, Lender, Sme

T0 = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
DAY = dt.timedelta(days=1)


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
        purpose="credit_decision",
        history_months=24,
        granted_at=T0,
        expires_at=T0 + 365 * DAY,
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
        assert (row.sources, row.recipients, row.purpose, row.history_months, row.status, row.granted_at) == (
            ["accounting", "tax"],
            ["northwind"],
            "credit_decision",
            24,
            "active",
            T0,
        )
        events = session.scalars(select(ConsentEvent)).all()
        assert [(e.consent_id, e.sequence, e.event_type, e.prev_hash) for e in events] == [
            ("C-1", 1, "granted", consent.GENESIS_HASH)
        ]


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"sme_id": "SME-9"}, "unknown SME 'SME-9'"),
        ({"sources": ["bank"]}, "unknown source bank; known: accounting, survey, tax, utility"),
        ({"sources": []}, "a consent needs at least one source"),
        ({"recipients": ["nobody"]}, "unknown lender nobody; see: dossier lender list"),
        ({"recipients": []}, "a consent needs at least one recipient lender"),
        (
            {"purpose": "marketing"},
            "unknown purpose 'marketing'; known: credit_decision, facility_monitoring",
        ),
        ({"history_months": 0}, "history_months must be between 1 and 120, not 0"),
        ({"expires_at": T0}, "is not after granted_at"),
    ],
)
def test_grant_refuses_bad_terms_and_changes_nothing(
    warehouse_engine: Engine, changes: dict, message: str
) -> None:
    _seed(warehouse_engine)
    with session_scope(warehouse_engine) as session, pytest.raises(consent.ConsentError, match=message):
        _grant(session, **changes)
    with session_scope(warehouse_engine) as session:
        assert session.scalars(select(Consent)).all() == []
        assert session.scalars(select(ConsentEvent)).all() == []


def test_pull_window_needs_one_consent_active_at_the_as_of_instant_and_now(warehouse_engine: Engine) -> None:
    """Case 2 of the rule: an expired 36-month consent and an active 12-month one never pull 36 months."""
    _seed(warehouse_engine)
    as_of = T0 + 60 * DAY  # within the 90 days before reconfirmation is due
    with session_scope(warehouse_engine) as session:
        _grant(session, consent_id="C-old", history_months=36, expires_at=as_of + 10 * DAY)
        _grant(session, consent_id="C-new", history_months=12, granted_at=as_of - 5 * DAY)
    now = as_of + 30 * DAY  # C-old has expired by now; C-new holds at both moments
    with session_scope(warehouse_engine) as session:
        assert consent.pull_window(session, "SME-1", "accounting", then=as_of, now=now) == 12
        assert consent.pull_window(session, "SME-1", "accounting", then=as_of, now=as_of + DAY) == 36
        assert consent.pull_window(session, "SME-1", "utility", then=as_of, now=now) is None
        # A consent granted after the as-of instant does not cover a backfill of that date.
        assert consent.pull_window(session, "SME-1", "tax", then=as_of - 10 * DAY, now=now) is None
        assert consent.pull_windows(session, "tax", ["SME-1", "SME-2"], then=as_of, now=now) == {"SME-1": 12}
        with pytest.raises(consent.ConsentError, match=r"SME-1: no consent active at .* covers the utility"):
            consent.require_source(session, "SME-1", "utility", then=as_of, now=now)


def test_each_consent_scope_gives_one_version_shared_by_its_lenders(warehouse_engine: Engine) -> None:
    _seed(warehouse_engine)
    with session_scope(warehouse_engine) as session:
        _grant(session, consent_id="C-1", sources=["accounting"], history_months=36)
        _grant(session, consent_id="C-2", sources=["accounting", "tax"], history_months=12)
        _grant(session, consent_id="C-3", recipients=["harbor"], history_months=24)
        _grant(
            session, consent_id="C-4", recipients=["harbor"], purpose="facility_monitoring", history_months=6
        )
    at = T0 + 10 * DAY
    with session_scope(warehouse_engine) as session:
        scopes = consent.evaluation_scopes(session, ["SME-1", "SME-2"], then=at, now=at)
    assert scopes == {
        "SME-1": {
            Scope(frozenset({"accounting"}), 36): {("northwind", "credit_decision")},
            Scope(frozenset({"accounting", "tax"}), 12): {("northwind", "credit_decision")},
            Scope(frozenset({"accounting", "tax"}), 24): {("harbor", "credit_decision")},
            Scope(frozenset({"accounting", "tax"}), 6): {("harbor", "facility_monitoring")},
        }
    }


def test_the_delivery_rule_checks_lender_purpose_sources_window_and_time(warehouse_engine: Engine) -> None:
    _seed(warehouse_engine)
    with session_scope(warehouse_engine) as session:
        _grant(session)
    with session_scope(warehouse_engine) as session:
        rule = consent.entitlement(session, ["SME-1"], at=T0 + DAY)
        before = consent.entitlement(session, ["SME-1"], at=T0 - DAY)
        after = consent.entitlement(session, ["SME-1"], at=T0 + 400 * DAY)
    assert rule.allows("SME-1", "northwind", "credit_decision", ["accounting", "tax"], 24)
    assert rule.allows("SME-1", "northwind", "credit_decision", ["tax"], 12)
    assert not rule.allows("SME-1", "harbor", "credit_decision", ["tax"], 12)
    assert not rule.allows("SME-1", "northwind", "facility_monitoring", ["tax"], 12)
    assert not rule.allows("SME-1", "northwind", "credit_decision", ["tax", "utility"], 12)
    assert not rule.allows("SME-1", "northwind", "credit_decision", ["tax"], 36)
    assert not rule.allows("SME-2", "northwind", "credit_decision", ["tax"], 12)
    assert not before.allows("SME-1", "northwind", "credit_decision", ["tax"], 12)
    assert not after.allows("SME-1", "northwind", "credit_decision", ["tax"], 12)
    assert rule.any_recipient("SME-1", ["accounting"], 24)
    assert not rule.any_recipient("SME-1", ["utility"], 24)


def test_revoke_ends_access_and_extends_the_chain(warehouse_engine: Engine) -> None:
    _seed(warehouse_engine)
    with session_scope(warehouse_engine) as session:
        _grant(session)
        consent.revoke(session, "C-1", at=T0 + 2 * DAY, reason="changed my mind")
        consent.revoke(session, "C-1", at=T0 + 3 * DAY)  # twice: no new event
        with pytest.raises(consent.ConsentError, match="consent 'NOPE' does not exist"):
            consent.revoke(session, "NOPE", at=T0)
    with session_scope(warehouse_engine) as session:
        rule = consent.entitlement(session, ["SME-1"], at=T0 + 5 * DAY)
        assert not rule.allows("SME-1", "northwind", "credit_decision", ["tax"], 1)
        assert consent.status_at(session.get(Consent, "C-1"), T0 + DAY) == "revoked"
        events = session.scalars(select(ConsentEvent).order_by(ConsentEvent.sequence)).all()
        assert [(e.sequence, e.event_type, e.details) for e in events][1] == (
            2,
            "revoked",
            {"reason": "changed my mind"},
        )
        assert events[1].prev_hash == events[0].hash
        assert consent.verify_chain(session, "C-1")


def test_status_is_computed_at_the_moment_asked(warehouse_engine: Engine) -> None:
    _seed(warehouse_engine)
    with session_scope(warehouse_engine) as session:
        row = _grant(session)
        assert [consent.status_at(row, at) for at in (T0 - DAY, T0, T0 + 365 * DAY)] == [
            "pending",
            "active",
            "expired",
        ]


def test_withdraw_narrows_or_revokes_by_lender_and_source(warehouse_engine: Engine) -> None:
    _seed(warehouse_engine)
    with session_scope(warehouse_engine) as session:
        _grant(session, consent_id="C-1", recipients=["northwind", "harbor"])
        _grant(session, consent_id="C-2", sources=["tax"], recipients=["harbor"])
    at = T0 + DAY
    with session_scope(warehouse_engine) as session:
        changed = consent.withdraw(session, sme_id="SME-1", lender="harbor", at=at, reason="no longer")
        assert [(c.consent_id, c.status, c.recipients) for c in changed] == [
            ("C-1", "active", ["northwind"]),
            ("C-2", "revoked", ["harbor"]),
        ]
        changed = consent.withdraw(session, sme_id="SME-1", source="tax", at=at)
        assert [(c.consent_id, c.status, c.sources) for c in changed] == [("C-1", "active", ["accounting"])]
        with pytest.raises(consent.ConsentError, match="unknown source 'bank'"):
            consent.withdraw(session, sme_id="SME-1", source="bank", at=at)
        with pytest.raises(consent.ConsentError, match="unknown lender 'nobody'"):
            consent.withdraw(session, sme_id="SME-1", lender="nobody", at=at)
    with session_scope(warehouse_engine) as session:
        kinds = session.scalars(
            select(ConsentEvent.event_type)
            .where(ConsentEvent.consent_id == "C-1")
            .order_by(ConsentEvent.sequence)
        ).all()
        assert kinds == ["granted", "narrowed", "narrowed"]
        assert consent.verify_chain(session, "C-1")


def test_tampered_history_is_detected(warehouse_engine: Engine) -> None:
    _seed(warehouse_engine)
    with session_scope(warehouse_engine) as session:
        _grant(session)
        consent.revoke(session, "C-1", at=T0 + 2 * DAY)
    with session_scope(warehouse_engine) as session:
        session.execute(update(ConsentEvent).where(ConsentEvent.sequence == 1).values(actor="someone-else"))
    with session_scope(warehouse_engine) as session:
        assert not consent.verify_chain(session, "C-1")
