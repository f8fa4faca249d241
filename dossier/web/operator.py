"""The operator API under ``/v1/operator``: consents (the same functions as ``dossier consent``),
the connector links made (``POST /v1/operator/links`` lives with the SME pages in
:mod:`dossier.web.sme`) and erasure. Lists are paged (:class:`dossier.web.deps.Paging`)."""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Annotated

from fastapi import APIRouter, Query, Request, Response
from pydantic import AwareDatetime, BaseModel, Field
from sqlalchemy import select, tuple_

from dossier.web import links_api
from dossier.web.deps import LIST_RESPONSES, Now, Operator, PagingDep, SessionDep, StoreDep
from warehouse import consent
from warehouse.models import Consent

router = APIRouter(prefix="/v1/operator", tags=["operator"])
REFUSED = "Refused by the consent law (unknown SME or consent, terms it does not allow)."


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


SmeFilter = Annotated[str | None, Query(max_length=64, description="Only this SME's.")]


@router.get("/consents", response_model=list[ConsentView], responses=LIST_RESPONSES)
def list_consents(
    request: Request,
    response: Response,
    session: SessionDep,
    actor: Operator,
    at: Now,
    paging: PagingDep,
    sme_id: SmeFilter = None,
) -> list[ConsentView]:
    """Consents by SME and consent id, with their status now."""
    query = select(Consent)
    if sme_id:
        query = query.where(Consent.sme_id == sme_id)
    after = paging.after(2)
    if after is not None:
        query = query.where(tuple_(Consent.sme_id, Consent.consent_id) > after)
    query = query.order_by(Consent.sme_id, Consent.consent_id).limit(paging.limit + 1)
    rows = paging.page(request, response, session.scalars(query).all(), lambda r: [r.sme_id, r.consent_id])
    return [ConsentView.of(row, at) for row in rows]


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


@router.post(
    "/consents", response_model=ConsentView, status_code=201, responses={422: {"description": REFUSED}}
)
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


@router.post(
    "/consents/{consent_id}/revoke", response_model=ConsentView, responses={422: {"description": REFUSED}}
)
def revoke_consent(consent_id: str, body: Withdrawal, session: SessionDep, actor: Operator) -> ConsentView:
    now = dt.datetime.now(dt.UTC)
    return ConsentView.of(consent.revoke(session, consent_id, at=now, actor=actor, reason=body.reason), now)


class Erasure(BaseModel):
    """What an erasure did: the consents it revoked and the rows and files it removed, by kind."""

    sme_id: str
    consents_revoked: int
    removed: dict[str, int]


@router.post("/smes/{sme_id}/erase", response_model=Erasure, responses={422: {"description": "Unknown SME."}})
def erase_sme(sme_id: str, session: SessionDep, store: StoreDep, actor: Operator) -> Erasure:
    """Revoke every consent of the SME, then remove its data everywhere (lenders get tombstones)."""
    return Erasure(**consent.erase(session, store, sme_id, at=dt.datetime.now(dt.UTC), actor=actor))


# --- connector links ------------------------------------------------------------------------------


@router.post("/links", response_model=links_api.LinkMade, status_code=201)
def create_link(
    body: links_api.LinkRequest, request: Request, session: SessionDep, actor: Operator
) -> links_api.LinkMade:
    """Ask an SME for a consent with these terms; the URL is shown once."""
    return links_api.make(session, request, body, actor)


@router.get("/links", response_model=links_api.LinkPage)
def list_links(
    session: SessionDep, actor: Operator, cursor: links_api.Cursor = None, limit: links_api.Limit = 100
) -> links_api.LinkPage:
    """Every link, oldest first, with its status and whether a field visit was asked for."""
    return links_api.page_of(session, created_by=None, cursor=cursor, limit=limit)
