"""The operator API: consents (the same functions as ``dossier consent``), under ``/v1/operator``."""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Annotated

from fastapi import APIRouter, Query
from pydantic import AwareDatetime, BaseModel, Field
from sqlalchemy import select

from dossier.web.deps import Operator, SessionDep, StoreDep
from warehouse import consent
from warehouse.models import Consent

router = APIRouter(prefix="/v1/operator", tags=["operator"])


class ConsentGrant(BaseModel):
    """A consent to record on an SME's behalf."""

    sme_id: str = Field(examples=["SME-000042"])
    sources: list[str] = Field(min_length=1, examples=[["accounting", "tax"]])
    recipients: list[str] = Field(min_length=1, examples=[["northwind-capital"]])
    purpose: str = Field(examples=["credit_decision"])
    history_months: int = Field(ge=1, le=consent.MAX_HISTORY_MONTHS, examples=[24])
    expires_at: AwareDatetime
    consent_id: str | None = Field(None, max_length=64)


class ConsentView(BaseModel):
    """A consent, its scope and its status at the moment asked."""

    consent_id: str
    sme_id: str
    scope: str
    sources: list[str]
    recipients: list[str]
    purpose: str
    history_months: int
    granted_at: dt.datetime
    expires_at: dt.datetime
    revoked_at: dt.datetime | None
    reconfirm_by: dt.datetime
    status: str

    @classmethod
    def of(cls, row: Consent, at: dt.datetime) -> ConsentView:
        terms = consent.Terms.of(row)
        return cls(
            consent_id=terms.consent_id,
            sme_id=terms.sme_id,
            scope=terms.scope.key,
            sources=sorted(terms.sources),
            recipients=sorted(terms.recipients),
            purpose=terms.purpose,
            history_months=terms.history_months,
            granted_at=terms.granted_at,
            expires_at=terms.expires_at,
            revoked_at=terms.revoked_at,
            reconfirm_by=terms.lapses_at,
            status=consent.status_at(terms, at),
        )


class LapsingView(BaseModel):
    """A consent that stops unless the SME reconfirms it (the 90-day reconfirmation rule)."""

    consent_id: str
    sme_id: str
    sources: list[str]
    recipients: list[str]
    reconfirm_by: dt.datetime
    expires_at: dt.datetime


class Withdrawal(BaseModel):
    """What to stop: one consent, or an SME's consents naming a lender or covering a source."""

    reason: str = Field("", max_length=500)


@router.get("/consents", response_model=list[ConsentView])
def list_consents(session: SessionDep, actor: Operator, sme_id: str | None = None) -> list[ConsentView]:
    query = select(Consent).order_by(Consent.sme_id, Consent.consent_id)
    if sme_id:
        query = query.where(Consent.sme_id == sme_id)
    now = dt.datetime.now(dt.UTC)
    return [ConsentView.of(row, now) for row in session.scalars(query)]


@router.get("/consents/lapsing", response_model=list[LapsingView])
def lapsing_consents(
    session: SessionDep, actor: Operator, days: Annotated[int, Query(ge=0, le=90)] = 14
) -> list[LapsingView]:
    """Active consents whose access stops within ``days`` unless the SME reconfirms, soonest first."""
    found = consent.lapsing(session, at=dt.datetime.now(dt.UTC), within=dt.timedelta(days=days))
    return [
        LapsingView(
            consent_id=t.consent_id,
            sme_id=t.sme_id,
            sources=sorted(t.sources),
            recipients=sorted(t.recipients),
            reconfirm_by=t.lapses_at,
            expires_at=t.expires_at,
        )
        for t in found
    ]


@router.post("/consents", response_model=ConsentView, status_code=201)
def grant_consent(body: ConsentGrant, session: SessionDep, actor: Operator) -> ConsentView:
    now = dt.datetime.now(dt.UTC)
    row = consent.grant(
        session,
        consent_id=body.consent_id or f"C-{body.sme_id}-{uuid.uuid4().hex[:8]}",
        sme_id=body.sme_id,
        sources=body.sources,
        recipients=body.recipients,
        purpose=body.purpose,
        history_months=body.history_months,
        granted_at=now,
        expires_at=body.expires_at,
        actor=actor,
    )
    return ConsentView.of(row, now)


@router.post("/consents/{consent_id}/revoke", response_model=ConsentView)
def revoke_consent(consent_id: str, body: Withdrawal, session: SessionDep, actor: Operator) -> ConsentView:
    now = dt.datetime.now(dt.UTC)
    return ConsentView.of(consent.revoke(session, consent_id, at=now, actor=actor, reason=body.reason), now)


@router.post("/smes/{sme_id}/erase")
def erase_sme(sme_id: str, session: SessionDep, store: StoreDep, actor: Operator) -> dict:
    return consent.erase(session, store, sme_id, at=dt.datetime.now(dt.UTC), actor=actor)
