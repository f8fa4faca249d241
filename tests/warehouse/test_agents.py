"""Field agents' suspensions: recorded with who, when and why, reversible, history kept."""

from __future__ import annotations

import datetime as dt

import pandas as pd
import pytest
from sqlalchemy import Engine

from warehouse import agents
from warehouse.db import session_scope

MONDAY = dt.datetime(2026, 11, 2, 9, tzinfo=dt.UTC)


def test_suspend_then_reinstate_keeps_the_whole_history(warehouse_engine: Engine) -> None:
    with session_scope(warehouse_engine) as session:
        agents.suspend(
            session,
            "agent_013",
            actor="alice",
            reason="copied visits",
            evidence={"flags": ["COPIED_ANSWERS"]},
            sme_ids=["SME-000002", "SME-000001", "SME-000002"],
            at=MONDAY,
        )
    with session_scope(warehouse_engine) as session:
        assert agents.status(session, "agent_013") == "suspended"
        assert agents.suspended_ids(session) == {"agent_013"}
        assert agents.suspended_agents(session) == [
            {
                "agent_id": "agent_013",
                "suspended_at": "2026-11-02T09:00:00+00:00",
                "actor": "alice",
                "reason": "copied visits",
                "evidence": {"flags": ["COPIED_ANSWERS"]},
                "sme_ids": ["SME-000001", "SME-000002"],
            }
        ]
        agents.reinstate(
            session, "agent_013", actor="bob", reason="evidence reviewed", at=MONDAY + dt.timedelta(days=1)
        )
    with session_scope(warehouse_engine) as session:
        assert agents.status(session, "agent_013") == "active"
        assert agents.suspended_agents(session) == []
        assert [(e["action"], e["actor"], e["reason"], e["at"]) for e in agents.history(session)] == [
            ("suspend", "alice", "copied visits", "2026-11-02T09:00:00+00:00"),
            ("reinstate", "bob", "evidence reviewed", "2026-11-03T09:00:00+00:00"),
        ]
        agents.suspend(session, "agent_013", actor="carol", reason="again", at=MONDAY + dt.timedelta(days=2))
        assert agents.status(session, "agent_013") == "suspended"
        assert len(agents.history(session, "agent_013")) == 3
        assert agents.history(session, "agent_001") == []


def test_mistakes_are_one_line_errors_naming_the_agent(warehouse_engine: Engine) -> None:
    with session_scope(warehouse_engine) as session:
        with pytest.raises(agents.AgentError, match=r"^agent agent_007 is not suspended$"):
            agents.reinstate(session, "agent_007", actor="a", reason="why")
        with pytest.raises(agents.AgentError, match=r"^agent agent_007: a reason is required$"):
            agents.suspend(session, "agent_007", actor="a", reason="  ")
        agents.suspend(session, "agent_007", actor="a", reason="why")
        with pytest.raises(agents.AgentError, match=r"^agent agent_007 is already suspended$"):
            agents.suspend(session, "agent_007", actor="a", reason="why")


def test_visits_of_suspended_agents_are_marked_and_their_smes_found() -> None:
    visits = pd.DataFrame(
        {"sme_id": ["SME-2", "SME-1", "SME-2", "SME-3"], "agent_id": ["a1", "a1", "a2", None]}
    )

    marked = agents.mark_suspended_visits(visits, {"a1"})

    assert marked["agent_suspended"].tolist() == [True, True, False, False]
    assert agents.smes_visited_by(visits, "a1") == ["SME-1", "SME-2"]
    assert agents.smes_visited_by(visits, "nobody") == []
