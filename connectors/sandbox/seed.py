"""Register a sandbox universe in the warehouse: SMEs, lenders, subscriptions, connections, consents.

Seeding is idempotent: every row is upserted by its natural key and a consent that already exists
is left as it is, so seeding twice (even at another ``now``) changes nothing. The consent mix is
deterministic per SME (its own stream, ``default_rng([seed, index, 1])``):

=================  =======  ============================================================
category           share    what the SME did
=================  =======  ============================================================
full_one_lender    45%      granted all four sources to one lender
full_two_lenders   20%      granted all four sources to two lenders
partial_sources    12%      granted only some sources to one lender
no_consent          8%      connected its accounts but granted nothing
revoked             7%      granted all four sources, then revoked
expired             8%      granted all four sources over a year ago; the consent lapsed
=================  =======  ============================================================

Every SME connects all four sources (``source_connections``), so the pipeline meets connections
that no active consent covers and must leave them alone.
"""

from __future__ import annotations

import datetime as dt
from collections import Counter
from dataclasses import dataclass

import numpy as np
from sqlalchemy import select
from sqlalchemy.orm import Session

from connectors.sandbox.auth import issue_credentials
from connectors.sandbox.universe import SOURCES_REFS, Universe, index_of
from warehouse import consent
from warehouse.canonical import SOURCES
from warehouse.db import upsert
from warehouse.models import Consent, Lender, Sme, SourceConnection, Subscription

LENDERS: dict[str, str] = {
    "northwind-capital": "Northwind Capital",
    "harbor-credit": "Harbor Credit",
    "kestrel-finance": "Kestrel Finance",
}
LENDER_WEIGHTS = (0.45, 0.35, 0.20)
PURPOSE = "credit_decision"
HISTORY_MONTHS = 36
CONSENT_DAYS = 365
PROVIDER_NAMES: dict[str, str] = {
    "accounting": "sandbox-books",
    "tax": "hmrc-mtd-vat",
    "utility": "green-button-cmd",
    "survey": "kobotoolbox",
}
"""``source_connections.provider`` of each source in the sandbox."""

CONSENT_MIX: dict[str, float] = {
    "full_one_lender": 0.45,
    "full_two_lenders": 0.20,
    "partial_sources": 0.12,
    "no_consent": 0.08,
    "revoked": 0.07,
    "expired": 0.08,
}
PARTIAL_SOURCE_SETS = (
    ("accounting", "tax"),
    ("accounting", "tax", "utility"),
    ("tax", "utility", "survey"),
    ("accounting",),
)


@dataclass(frozen=True)
class ConsentPlan:
    """What one SME consents to: a category, and for all but ``no_consent`` one consent's terms."""

    sme_id: str
    category: str
    sources: tuple[str, ...]
    recipients: tuple[str, ...]
    granted_days_ago: int
    revoked_days_ago: int | None

    @property
    def consent_id(self) -> str:
        return f"{self.sme_id}-C1"


def consent_plan(seed: int, sme_id: str) -> ConsentPlan:
    """The deterministic consent behaviour of ``sme_id`` in the universe of ``seed``."""
    rng = np.random.default_rng([seed, index_of(sme_id), 1])
    draws = rng.random(6)
    categories = list(CONSENT_MIX)
    category = categories[
        min(int(np.searchsorted(np.cumsum(list(CONSENT_MIX.values())), draws[0], "right")), 5)
    ]
    lenders = list(LENDERS)
    first = int(np.searchsorted(np.cumsum(LENDER_WEIGHTS), draws[1], "right").clip(0, 2))
    recipients: tuple[str, ...] = (lenders[first],)
    if category == "full_two_lenders":
        recipients = (lenders[first], lenders[(first + 1 + int(draws[2] * 2)) % 3])
    sources: tuple[str, ...] = SOURCES
    if category == "partial_sources":
        sources = PARTIAL_SOURCE_SETS[int(draws[3] * len(PARTIAL_SOURCE_SETS))]
    granted_days_ago = 1 + int(draws[4] * 60)
    revoked_days_ago = None
    if category == "expired":
        granted_days_ago = CONSENT_DAYS + 1 + int(draws[4] * 200)
    if category == "revoked":
        granted_days_ago = 20 + int(draws[4] * 40)
        revoked_days_ago = 1 + int(draws[5] * 15)
    if category == "no_consent":
        sources, recipients = (), ()
    return ConsentPlan(sme_id, category, sources, recipients, granted_days_ago, revoked_days_ago)


def seed_warehouse(session: Session, universe: Universe, *, now: dt.datetime) -> dict[str, object]:
    """Upsert the universe's SMEs and everything around them; returns counts by category.

    ``now`` (timezone-aware) anchors grant, revocation and expiry instants of consents created by
    this call. The caller commits (``session_scope``).
    """
    if now.tzinfo is None:
        raise ValueError(f"now={now!r} must be timezone-aware (UTC)")
    now = now.astimezone(dt.UTC).replace(microsecond=0)
    profiles = universe.profiles()

    upsert(
        session,
        Sme,
        [
            {
                "sme_id": p.sme_id,
                "name": p.name,
                "industry": p.industry,
                "region": p.region,
                "size_band": p.size_band,
                "founded_year": int(p.founded_year),
            }
            for p in profiles.itertuples()
        ],
        key=["sme_id"],
    )
    upsert(session, Lender, [{"lender_id": k, "name": v} for k, v in LENDERS.items()], key=["lender_id"])
    upsert(
        session,
        Subscription,
        [{"lender_id": k, "name": "default", "filters": {}, "active": True} for k in LENDERS],
        key=["lender_id", "name"],
        update=[],
    )
    connections = [
        {
            "sme_id": p.sme_id,
            "source": source,
            "provider": PROVIDER_NAMES[source],
            "account_ref": getattr(p, ref),
            "credentials": issue_credentials(universe.seed, source, getattr(p, ref)),
            "status": "connected",
            "connected_at": now,
            "updated_at": now,
        }
        for p in profiles.itertuples()
        for source, ref in SOURCES_REFS.items()
    ]
    upsert(
        session,
        SourceConnection,
        connections,
        key=["sme_id", "source"],
        update=["provider", "account_ref", "credentials"],
    )

    existing = set(session.scalars(select(Consent.consent_id)))
    categories: Counter[str] = Counter()
    grants: list[consent.NewGrant] = []
    for sme_id in profiles.sme_id:
        plan = consent_plan(universe.seed, sme_id)
        categories[plan.category] += 1
        if plan.category == "no_consent" or plan.consent_id in existing:
            continue
        granted_at = now - dt.timedelta(days=plan.granted_days_ago)
        revoked = plan.revoked_days_ago is not None
        grants.append(
            consent.NewGrant(
                consent_id=plan.consent_id,
                sme_id=sme_id,
                sources=tuple(plan.sources),
                recipients=tuple(plan.recipients),
                purpose=PURPOSE,
                history_months=HISTORY_MONTHS,
                granted_at=granted_at,
                expires_at=granted_at + dt.timedelta(days=CONSENT_DAYS),
                revoked_at=now - dt.timedelta(days=plan.revoked_days_ago) if revoked else None,
                reason="SME withdrew consent" if revoked else "",
            )
        )
    created = consent.grant_many(session, grants)
    return {
        "smes": len(profiles),
        "lenders": len(LENDERS),
        "subscriptions": len(LENDERS),
        "source_connections": len(connections),
        "consents": {name: categories.get(name, 0) for name in CONSENT_MIX},
        "consents_created": created,
    }
