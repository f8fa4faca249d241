"""Seeding the warehouse from a universe, on SQLite and PostgreSQL: complete, idempotent, consent mix."""

from __future__ import annotations

import collections
import datetime as dt
from typing import Any

import pytest
import requests
from sqlalchemy import Engine, select

from connectors.sandbox.auth import SandboxCredentials, issue_credentials
from connectors.sandbox.seed import (
    CONSENT_MIX,
    LENDERS,
    PROVIDER_NAMES,
    PURPOSE,
    consent_plan,
    seed_warehouse,
)
from connectors.sandbox.server import SandboxServer
from connectors.sandbox.universe import Universe
from warehouse import consent
from warehouse.canonical import SOURCES
from warehouse.db import session_scope
from warehouse.models import Consent, ConsentEvent, Lender, Sme, SourceConnection, Subscription

SEED = 20261125
AS_OF = dt.date(2026, 11, 25)
NOW = dt.datetime(2026, 11, 25, 7, 30, tzinfo=dt.UTC)


@pytest.fixture(scope="module")
def small() -> Universe:
    return Universe(SEED, 60, AS_OF)


def _snapshot(engine: Engine) -> dict[str, list[tuple[Any, ...]]]:
    """Every seeded row, as plain tuples, for before/after comparisons."""
    tables = {
        "smes": (Sme, [Sme.sme_id, Sme.name, Sme.industry, Sme.region, Sme.size_band, Sme.founded_year, Sme.created_at]),
        "lenders": (Lender, [Lender.lender_id, Lender.name, Lender.created_at]),
        "subscriptions": (Subscription, [Subscription.id, Subscription.lender_id, Subscription.name,
                                         Subscription.filters, Subscription.active, Subscription.cursor]),
        "connections": (SourceConnection, [SourceConnection.sme_id, SourceConnection.source, SourceConnection.provider,
                                           SourceConnection.account_ref, SourceConnection.credentials,
                                           SourceConnection.status, SourceConnection.connected_at]),
        "consents": (Consent, [Consent.consent_id, Consent.sme_id, Consent.sources, Consent.recipients,
                               Consent.granted_at, Consent.expires_at, Consent.status, Consent.revoked_at]),
        "events": (ConsentEvent, [ConsentEvent.consent_id, ConsentEvent.sequence, ConsentEvent.event_type,
                                  ConsentEvent.occurred_at, ConsentEvent.hash]),
    }  # fmt: skip
    with session_scope(engine) as session:
        return {
            name: sorted(tuple(row) for row in session.execute(select(*columns)).all())
            for name, (_, columns) in tables.items()
        }


def test_seed_registers_smes_lenders_subscriptions_and_connections(
    warehouse_engine: Engine, small: Universe
) -> None:
    with session_scope(warehouse_engine) as session:
        counts = seed_warehouse(session, small, now=NOW)
    categories = collections.Counter(consent_plan(SEED, s).category for s in small.sme_ids)
    assert counts == {
        "smes": 60,
        "lenders": 3,
        "subscriptions": 3,
        "source_connections": 240,
        "consents": {name: categories.get(name, 0) for name in CONSENT_MIX},
        "consents_created": 60 - categories["no_consent"],
    }
    profiles = small.profiles().set_index("sme_id")
    with session_scope(warehouse_engine) as session:
        smes = {s.sme_id: s for s in session.scalars(select(Sme))}
        assert sorted(smes) == small.sme_ids
        first = smes["SME-000001"]
        expected = profiles.loc["SME-000001"]
        assert (first.name, first.industry, first.region, first.size_band, first.founded_year) == (
            expected["name"], expected.industry, expected.region, expected.size_band, expected.founded_year,
        )  # fmt: skip
        assert {(row.lender_id, row.name) for row in session.scalars(select(Lender))} == set(LENDERS.items())
        subscriptions = session.scalars(select(Subscription)).all()
        assert sorted((s.lender_id, s.name, s.filters, s.active, s.cursor) for s in subscriptions) == [
            (lender, "default", {}, True, 0) for lender in sorted(LENDERS)
        ]
        connection = session.get(SourceConnection, ("SME-000002", "tax"))
        assert (connection.provider, connection.account_ref, connection.status) == (
            PROVIDER_NAMES["tax"], profiles.loc["SME-000002"].vrn, "connected",
        )  # fmt: skip
        assert connection.credentials == issue_credentials(SEED, "tax", profiles.loc["SME-000002"].vrn)
        survey = session.get(SourceConnection, ("SME-000002", "survey"))
        assert set(survey.credentials) == {"api_token", "asset_uid"}


def test_seeded_consents_follow_each_smes_plan(warehouse_engine: Engine, small: Universe) -> None:
    with session_scope(warehouse_engine) as session:
        seed_warehouse(session, small, now=NOW)
    with session_scope(warehouse_engine) as session:
        for sme_id in small.sme_ids:
            plan = consent_plan(SEED, sme_id)
            row = session.get(Consent, f"{sme_id}-C1")
            if plan.category == "no_consent":
                assert row is None
                assert consent.active_consents(session, sme_id, NOW) == []
                continue
            assert consent.verify_chain(session, row.consent_id)
            assert (row.purpose, row.history_months, row.sources, row.recipients) == (
                PURPOSE, 36, sorted(plan.sources), sorted(plan.recipients),
            )  # fmt: skip
            assert row.expires_at - row.granted_at == dt.timedelta(days=365)
            active = consent.status_at(row, NOW) == "active"
            assert active == (plan.category in ("full_one_lender", "full_two_lenders", "partial_sources"))
            if plan.category == "revoked":
                assert (row.status, row.revoked_at < NOW) == ("revoked", True)
            if plan.category == "expired":
                assert row.expires_at < NOW
            if active:
                rule = consent.entitlement(session, [sme_id], at=NOW)
                entitled = {
                    lender for lender in LENDERS if rule.allows(sme_id, lender, PURPOSE, plan.sources, 36)
                }
                assert entitled == set(plan.recipients)
                for source in set(SOURCES) - set(plan.sources):
                    with pytest.raises(consent.ConsentError, match=source):
                        consent.require_source(session, sme_id, source, then=NOW, now=NOW)


def test_seeding_twice_changes_nothing(warehouse_engine: Engine, small: Universe) -> None:
    with session_scope(warehouse_engine) as session:
        seed_warehouse(session, small, now=NOW)
    before = _snapshot(warehouse_engine)
    with session_scope(warehouse_engine) as session:
        again = seed_warehouse(session, small, now=NOW + dt.timedelta(days=2))
    assert again["consents_created"] == 0
    assert _snapshot(warehouse_engine) == before


def test_seed_refuses_a_naive_now(warehouse_engine: Engine, small: Universe) -> None:
    with session_scope(warehouse_engine) as session, pytest.raises(ValueError, match="timezone-aware"):
        seed_warehouse(session, small, now=dt.datetime(2026, 11, 25))


def test_consent_mix_is_deterministic_and_close_to_its_shares() -> None:
    plans = [consent_plan(SEED, f"SME-{i:06d}") for i in range(1, 2001)]
    assert plans == [consent_plan(SEED, f"SME-{i:06d}") for i in range(1, 2001)]
    shares = collections.Counter(p.category for p in plans)
    for category, share in CONSENT_MIX.items():
        assert abs(shares[category] / len(plans) - share) < 0.03, category
    for plan in plans:
        assert set(plan.recipients) <= set(LENDERS)
        assert len(set(plan.recipients)) == len(plan.recipients)
        assert len(plan.recipients) == {"full_two_lenders": 2, "no_consent": 0}.get(plan.category, 1)
        assert (plan.sources == SOURCES) == (plan.category not in ("partial_sources", "no_consent"))
    assert len({p.recipients[0] for p in plans if p.recipients}) == 3


def test_seeded_credentials_open_the_servers_doors(tmp_path: Any, server: SandboxServer) -> None:
    from warehouse.db import make_engine
    from warehouse.migrate import upgrade

    engine = make_engine(f"sqlite:///{tmp_path / 'w.db'}")
    upgrade(engine)
    universe = server.universe
    with session_scope(engine) as session:
        seed_warehouse(session, Universe(universe.seed, 8, universe.as_of), now=NOW)
    client = SandboxCredentials()
    with session_scope(engine) as session:
        connections = session.scalars(
            select(SourceConnection).where(SourceConnection.sme_id == "SME-000008")
        ).all()
        for connection in connections:
            if connection.source == "survey":
                asset = connection.credentials["asset_uid"]
                answer = requests.get(
                    f"{server.url}/survey/api/v2/assets/{asset}/data/",
                    headers={"Authorization": f"Token {connection.credentials['api_token']}"},
                )
                assert answer.json()["count"] == len(universe.sme("SME-000008").visits)
                continue
            answer = requests.post(
                f"{server.url}/{connection.source}/oauth/token",
                data={
                    "grant_type": "refresh_token",
                    "refresh_token": connection.credentials["refresh_token"],
                    "client_id": client.client_id,
                    "client_secret": client.client_secret,
                },
            )
            assert answer.status_code == 200, connection.source
    engine.dispose()
