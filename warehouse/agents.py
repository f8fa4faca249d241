"""Field agents' suspensions: recorded with who, when and why, reversible, history kept.

Every decision is one :class:`~warehouse.models.AgentEvent` row (``suspend`` or ``reinstate``);
rows are only added, so an agent's status is the action of their latest event and the history of
every suspension and reinstatement stays readable (``history``). A suspended agent's visits stop
counting as verification: :func:`mark_suspended_visits` marks them in a ``survey_visits`` frame
(column ``agent_suspended``) before evaluation, and ``evaluation.features`` leaves marked visits
out of the visit verification.

Errors a person can cause (an unknown agent, suspending twice, reinstating someone who is not
suspended, an empty reason) raise :class:`AgentError` with a one-line message.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable
from typing import Any

import pandas as pd
from sqlalchemy import select
from sqlalchemy.orm import Session

from warehouse.models import AgentEvent, utcnow

SUSPEND = "suspend"
REINSTATE = "reinstate"


class AgentError(ValueError):
    """A request about an agent that cannot be carried out (message names the agent)."""


def _latest(session: Session) -> dict[str, AgentEvent]:
    """Each agent's latest event (ties on the instant broken by insertion order)."""
    latest: dict[str, AgentEvent] = {}
    for event in session.scalars(select(AgentEvent).order_by(AgentEvent.at, AgentEvent.id)):
        latest[event.agent_id] = event
    return latest


def status(session: Session, agent_id: str) -> str:
    """``suspended`` or ``active`` (an agent never decided about is active)."""
    event = _latest(session).get(agent_id)
    return "suspended" if event is not None and event.action == SUSPEND else "active"


def _reason(reason: str, agent_id: str) -> str:
    text = (reason or "").strip()
    if not text:
        raise AgentError(f"agent {agent_id}: a reason is required")
    return text


def suspend(
    session: Session,
    agent_id: str,
    *,
    actor: str,
    reason: str,
    evidence: dict[str, Any] | None = None,
    sme_ids: Iterable[str] = (),
    at: dt.datetime | None = None,
) -> AgentEvent:
    """Suspend ``agent_id``; ``sme_ids`` are the SMEs whose dossiers relied on their visits."""
    if status(session, agent_id) == "suspended":
        raise AgentError(f"agent {agent_id} is already suspended")
    event = AgentEvent(
        agent_id=agent_id,
        action=SUSPEND,
        actor=actor,
        reason=_reason(reason, agent_id),
        at=at or utcnow(),
        evidence=evidence or {},
        sme_ids=sorted(set(sme_ids)),
    )
    session.add(event)
    session.flush()
    return event


def reinstate(
    session: Session,
    agent_id: str,
    *,
    actor: str,
    reason: str,
    sme_ids: Iterable[str] = (),
    at: dt.datetime | None = None,
) -> AgentEvent:
    """Lift ``agent_id``'s suspension (their visits count again); the suspension stays in history."""
    if status(session, agent_id) != "suspended":
        raise AgentError(f"agent {agent_id} is not suspended")
    event = AgentEvent(
        agent_id=agent_id,
        action=REINSTATE,
        actor=actor,
        reason=_reason(reason, agent_id),
        at=at or utcnow(),
        evidence={},
        sme_ids=sorted(set(sme_ids)),
    )
    session.add(event)
    session.flush()
    return event


def _row(event: AgentEvent) -> dict[str, Any]:
    return {
        "agent_id": event.agent_id,
        "action": event.action,
        "actor": event.actor,
        "reason": event.reason,
        "at": event.at.isoformat(),
        "evidence": event.evidence,
        "sme_ids": list(event.sme_ids),
    }


def history(session: Session, agent_id: str | None = None) -> list[dict[str, Any]]:
    """Every event (of one agent, or all), oldest first."""
    query = select(AgentEvent).order_by(AgentEvent.at, AgentEvent.id)
    if agent_id is not None:
        query = query.where(AgentEvent.agent_id == agent_id)
    return [_row(e) for e in session.scalars(query)]


def suspended_agents(session: Session) -> list[dict[str, Any]]:
    """Agents suspended now, by agent id: who suspended them, when, why, the evidence and SMEs.

    Each dict: ``agent_id``, ``suspended_at`` (ISO instant), ``actor``, ``reason``, ``evidence``,
    ``sme_ids``.
    """
    rows = []
    for agent_id, event in sorted(_latest(session).items()):
        if event.action == SUSPEND:
            rows.append(
                {
                    "agent_id": agent_id,
                    "suspended_at": event.at.isoformat(),
                    "actor": event.actor,
                    "reason": event.reason,
                    "evidence": event.evidence,
                    "sme_ids": list(event.sme_ids),
                }
            )
    return rows


def suspended_ids(session: Session) -> set[str]:
    """Ids of the agents suspended now."""
    return {a for a, e in _latest(session).items() if e.action == SUSPEND}


def mark_suspended_visits(visits: pd.DataFrame, suspended: Iterable[str]) -> pd.DataFrame:
    """``visits`` (``survey_visits`` rows) with ``agent_suspended``: the visit's agent is suspended."""
    agents = set(suspended)
    return visits.assign(agent_suspended=visits["agent_id"].isin(agents).to_numpy(dtype=bool))


def smes_visited_by(visits: pd.DataFrame, agent_id: str) -> list[str]:
    """SMEs with at least one visit by ``agent_id``, sorted: the dossiers relying on that agent."""
    return sorted(set(visits.loc[visits["agent_id"] == agent_id, "sme_id"].astype(str)))
