"""``consent.grant_many`` writes exactly what ``grant`` and ``revoke`` write one consent at a time;
both backends."""

from __future__ import annotations

import datetime as dt

import pytest
from sqlalchemy import Engine, delete, select

from warehouse import consent
from warehouse.consent import ConsentError, NewGrant
from warehouse.db import session_scope
from warehouse.models import Consent, ConsentEvent, Lender, Sme

T0 = dt.datetime(2026, 3, 1, 9, 30, 15, 700000, tzinfo=dt.UTC)
DAY = dt.timedelta(days=1)


def _seed(engine: Engine) -> None:
    with session_scope(engine) as session:
        session.add_all(
            [
                Sme(sme_id=f"SME-{i}", name=f"Firm {i}", industry="retail", region="North", size_band="micro")
                for i in range(4)
            ]
            + [Lender(lender_id="northwind", name="Northwind"), Lender(lender_id="harbor", name="Harbor")]
        )


GRANTS = [
    NewGrant(
        "C-0", "SME-0", ("tax", "accounting"), ("northwind",), "credit_decision", 24, T0, T0 + 180 * DAY
    ),
    NewGrant(
        "C-1",
        "SME-1",
        ("utility",),
        ("harbor", "northwind"),
        "credit_decision",
        12,
        T0 - 9 * DAY,
        T0 + 30 * DAY,
        revoked_at=T0 - 2 * DAY,
        reason="SME withdrew consent",
    ),
    NewGrant("C-2", "SME-1", ("accounting",), ("harbor",), "facility_monitoring", 36, T0, T0 + 365 * DAY),
    NewGrant("C-3", "SME-2", ("survey", "tax"), ("harbor",), "credit_decision", 6, T0 + DAY, T0 + 90 * DAY),
]


def _one_at_a_time(session, grants: list[NewGrant]) -> None:
    """The oracle: the public single-consent functions."""
    for g in grants:
        consent.grant(
            session,
            consent_id=g.consent_id,
            sme_id=g.sme_id,
            sources=g.sources,
            recipients=g.recipients,
            purpose=g.purpose,
            history_months=g.history_months,
            granted_at=g.granted_at,
            expires_at=g.expires_at,
        )
        if g.revoked_at is not None:
            consent.revoke(session, g.consent_id, at=g.revoked_at, reason=g.reason)


def _rows(engine: Engine) -> tuple[list[tuple], list[tuple]]:
    with session_scope(engine) as session:
        consents = [
            (
                c.consent_id,
                c.sme_id,
                c.purpose,
                c.sources,
                c.recipients,
                c.history_months,
                c.granted_at,
                c.expires_at,
                c.status,
                c.revoked_at,
                c.reconfirmed_at,
                c.reconfirm_by,
            )
            for c in session.scalars(select(Consent).order_by(Consent.consent_id))
        ]
        events = [
            (e.consent_id, e.sequence, e.event_type, e.occurred_at, e.actor, e.details, e.prev_hash, e.hash)
            for e in session.scalars(
                select(ConsentEvent).order_by(ConsentEvent.consent_id, ConsentEvent.sequence)
            )
        ]
        assert all(consent.verify_chain(session, c[0]) for c in consents)
    return consents, events


def _clear(engine: Engine) -> None:
    with session_scope(engine) as session:
        session.execute(delete(ConsentEvent))
        session.execute(delete(Consent))


def test_grant_many_writes_what_grant_and_revoke_write(warehouse_engine: Engine) -> None:
    _seed(warehouse_engine)
    with session_scope(warehouse_engine) as session:
        _one_at_a_time(session, GRANTS)
    expected = _rows(warehouse_engine)
    _clear(warehouse_engine)
    with session_scope(warehouse_engine) as session:
        assert consent.grant_many(session, GRANTS) == 4
    assert _rows(warehouse_engine) == expected
    assert [row[8] for row in expected[0]] == ["active", "revoked", "active", "active"]
    assert len(expected[1]) == 5  # four grants and one revocation


def test_grant_many_on_recorded_consents_appends_to_their_chains(warehouse_engine: Engine) -> None:
    _seed(warehouse_engine)
    renewed = NewGrant("C-0", "SME-0", ("tax",), ("northwind",), "credit_decision", 24, T0, T0 + 180 * DAY)
    with session_scope(warehouse_engine) as session:
        _one_at_a_time(session, [GRANTS[0], GRANTS[0], renewed])
    expected = _rows(warehouse_engine)
    _clear(warehouse_engine)
    with session_scope(warehouse_engine) as session:
        consent.grant_many(session, [GRANTS[0]])
        consent.grant_many(session, [GRANTS[0], renewed])  # a repeat changes nothing, new terms append
    assert _rows(warehouse_engine) == expected
    assert [e[2] for e in expected[1]] == ["granted", "granted"]


@pytest.mark.parametrize(
    ("bad", "message"),
    [
        (
            NewGrant("C-9", "SME-7", ("tax",), ("harbor",), "credit_decision", 6, T0, T0 + DAY),
            "unknown SME 'SME-7'",
        ),
        (
            NewGrant("C-9", "SME-3", ("tax",), ("acme",), "credit_decision", 6, T0, T0 + DAY),
            "unknown lender acme",
        ),
        (
            NewGrant("C-9", "SME-3", ("tax",), ("harbor",), "credit_decision", 0, T0, T0 + DAY),
            "history_months",
        ),
        (NewGrant("C-9", "SME-3", ("tax",), ("harbor",), "credit_decision", 6, T0, T0), "is not after"),
    ],
)
def test_grant_many_refuses_what_grant_refuses_and_writes_nothing(
    warehouse_engine: Engine, bad: NewGrant, message: str
) -> None:
    _seed(warehouse_engine)
    with pytest.raises(ConsentError, match=message), session_scope(warehouse_engine) as session:
        consent.grant_many(session, [GRANTS[0], bad])
    assert _rows(warehouse_engine) == ([], [])
