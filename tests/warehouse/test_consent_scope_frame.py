"""``consent.scope_frame`` (bulk loading for evaluation) gives exactly the scopes of
``consent.evaluation_scopes``, on SQLite and PostgreSQL."""

from __future__ import annotations

import datetime as dt
import random

import pandas as pd
from sqlalchemy import insert

from warehouse import consent
from warehouse.db import make_engine, session_scope
from warehouse.models import Consent, Sme

THEN = dt.datetime(2026, 11, 1, tzinfo=dt.UTC)
NOW = dt.datetime(2026, 11, 2, 9, 30, tzinfo=dt.UTC)
SOURCES = (
    ["accounting", "tax"],
    ["tax", "accounting"],
    ["utility"],
    ["tax"],
    ["accounting", "survey", "utility"],
)


def consents(count: int) -> list[dict[str, object]]:
    rng = random.Random(20261202)
    rows = []
    for n in range(count):
        granted = (
            THEN - dt.timedelta(days=rng.choice([200, 30, 1, 0])) + dt.timedelta(hours=rng.choice([0, 12]))
        )
        rows.append(
            {
                "consent_id": f"C-{n:05d}",
                "sme_id": f"SME-{rng.randrange(60):03d}",
                "purpose": rng.choice(["credit_decision", "facility_monitoring"]),
                "sources": rng.choice(SOURCES),
                "recipients": rng.choice([["harbor"], ["harbor", "quay"], []]),
                "history_months": rng.choice([12, 24, 36]),
                "granted_at": granted,
                "expires_at": granted + dt.timedelta(days=rng.choice([1, 40, 400])),
                "status": rng.choice(["active", "active", "active", "revoked"]),
                "revoked_at": None,
                "reconfirmed_at": None,
                "reconfirm_by": granted + dt.timedelta(days=rng.choice([1, 31, 90])),
                "updated_at": granted,
            }
        )
    return rows


def test_scope_frame_lists_the_scopes_evaluation_scopes_gives(warehouse_url: str) -> None:
    engine = make_engine(warehouse_url)
    ids = [f"SME-{n:03d}" for n in range(70)]
    with engine.begin() as connection:
        connection.execute(
            insert(Sme),
            [
                {"sme_id": s, "name": s, "industry": "retail", "region": "North", "size_band": "micro"}
                for s in ids
            ],
        )
        connection.execute(insert(Consent), consents(400))
    with session_scope(engine) as session:
        expected = consent.evaluation_scopes(session, ids, then=THEN, now=NOW)
        frame = consent.scope_frame(session, ids, then=THEN, now=NOW)
        empty = consent.scope_frame(session, ["SME-999"], then=THEN, now=NOW)
    engine.dispose()
    assert list(frame.columns) == list(consent.SCOPE_COLUMNS)
    assert frame.to_dict("records") == [
        {
            "sme_id": sme_id,
            "scope": scope.key,
            "history_months": scope.months,
            "sources": tuple(sorted(scope.sources)),
        }
        for sme_id in sorted(expected)
        for scope in sorted(expected[sme_id], key=lambda s: s.key)
    ]
    assert len(frame) > 50
    assert frame["sme_id"].nunique() < len(ids)  # some SMEs have no consent active at both instants
    assert empty.empty
    assert list(empty.columns) == list(consent.SCOPE_COLUMNS)


def test_any_recipients_decides_every_row_as_the_rule_does(warehouse_url: str) -> None:
    """The bulk any-lender test of a publish against the rule written out here from the consent
    rows themselves (active at the instant: status, grant, expiry and reconfirmation; every source
    used covered; the window allowed), and against :meth:`consent.Entitlement.any_recipient`."""
    engine = make_engine(warehouse_url)
    ids = [f"SME-{n:03d}" for n in range(70)]
    granted = consents(400)
    with engine.begin() as connection:
        connection.execute(
            insert(Sme),
            [
                {"sme_id": s, "name": s, "industry": "retail", "region": "North", "size_band": "micro"}
                for s in ids
            ],
        )
        connection.execute(insert(Consent), granted)
    rng = random.Random(20261203)
    choices = [["accounting"], ["tax", "accounting"], ["utility"], ["survey", "utility"], ["bank"]]
    dossiers = pd.DataFrame(
        {
            "sme_id": [rng.choice(ids) for _ in range(600)],
            "sources_used": [list(rng.choice(choices)) for _ in range(600)],
            "history_months": [rng.choice([6, 12, 24, 36, 48]) for _ in range(600)],
        }
    )

    def expected(sme_id: str, used: list[str], months: int, at: dt.datetime) -> bool:
        return any(
            c["sme_id"] == sme_id
            and c["status"] == "active"
            and c["granted_at"] <= at < min(c["expires_at"], c["reconfirm_by"])
            and set(used) <= set(c["sources"])
            and months <= c["history_months"]
            for c in granted
        )

    for at in (THEN, NOW):
        with session_scope(engine) as session:
            allowed = consent.any_recipients(session, dossiers, at=at)
            rule = consent.entitlement(session, ids, at=at)
        rows = list(
            zip(dossiers["sme_id"], dossiers["sources_used"], dossiers["history_months"], strict=True)
        )
        assert allowed.tolist() == [expected(s, u, m, at) for s, u, m in rows]
        assert allowed.tolist() == [rule.any_recipient(s, u, m) for s, u, m in rows]
        assert 0 < allowed.sum() < len(allowed)
    with session_scope(engine) as session:
        assert consent.any_recipients(session, dossiers.iloc[:0], at=NOW).tolist() == []
        assert consent.any_recipients(session, dossiers.assign(sme_id="SME-999"), at=NOW).sum() == 0
    engine.dispose()
