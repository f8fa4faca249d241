"""Making and listing connector links over the API: the operator's (``/v1/operator/links``) and a
lender's own (``/v1/links``, with its API key).

Both make links with :func:`warehouse.links.create_link`, so a link's terms are checked alike
(:func:`warehouse.consent.check_terms`); a lender's link must name the lender among its recipients,
says to the SME that the lender asks (``created_by`` is the lender id), and a lender lists only
the links it made. The link URL holds the token and is shown once, in the answer to the POST.
"""

from __future__ import annotations

import datetime as dt
from typing import Annotated

from fastapi import APIRouter, HTTPException, Query, Request
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import and_, or_, select
from sqlalchemy.orm import Session

from dossier.web.deps import SessionDep
from dossier.web.lender import LenderKeyDep
from dossier.web.sme import link_url
from warehouse import consent, links
from warehouse.models import ConnectorLink, FieldVisitRequest

router = APIRouter(prefix="/v1", tags=["lender"])

MAX_PAGE = 500


class LinkRequest(BaseModel):
    """The terms an SME is asked to grant, and how long the link can be answered."""

    model_config = ConfigDict(extra="forbid")

    sme_id: str = Field(max_length=32, examples=["SME-000042"])
    sources: list[str] = Field(min_length=1, examples=[["accounting", "utility"]])
    recipients: list[str] = Field(min_length=1, examples=[["northwind-capital"]])
    purpose: str = Field(examples=["credit_decision"])
    history_months: int = Field(ge=1, le=consent.MAX_HISTORY_MONTHS, examples=[24])
    consent_days: int = Field(ge=1, le=links.MAX_CONSENT_DAYS, examples=[365])
    valid_days: int = Field(links.DEFAULT_VALID_DAYS, ge=1, le=links.MAX_VALID_DAYS)


class LinkMade(BaseModel):
    """A link made: its id, where the SME answers it (shown once; only its hash is kept), its expiry."""

    link_id: str
    sme_id: str
    url: str
    expires_at: dt.datetime


class LinkView(BaseModel):
    """A link as its maker sees it later (never its token or URL)."""

    link_id: str
    sme_id: str
    sources: list[str]
    recipients: list[str]
    purpose: str
    history_months: int
    consent_days: int
    created_by: str
    created_at: dt.datetime
    expires_at: dt.datetime
    status: str = Field(description="open, expired, granted or declined.")
    answered_at: dt.datetime | None
    consent_id: str | None
    field_visit_requested_at: dt.datetime | None = Field(
        description="When the SME asked for a field visit through this link (none: not asked)."
    )

    @classmethod
    def of(cls, link: ConnectorLink, visit: FieldVisitRequest | None, at: dt.datetime) -> LinkView:
        return cls(
            link_id=link.link_id,
            sme_id=link.sme_id,
            sources=link.sources,
            recipients=link.recipients,
            purpose=link.purpose,
            history_months=link.history_months,
            consent_days=link.consent_days,
            created_by=link.created_by,
            created_at=link.created_at,
            expires_at=link.expires_at,
            status=links.status_at(link, at),
            answered_at=link.answered_at,
            consent_id=link.consent_id,
            field_visit_requested_at=visit.requested_at if visit else None,
        )


class LinkPage(BaseModel):
    """A page of links, oldest first, and the cursor of the next page."""

    links: list[LinkView]
    next_cursor: str | None = Field(description="Pass as cursor to read on; null when this is the last page.")


def make(session: Session, request: Request, body: LinkRequest, actor: str) -> LinkMade:
    """A link with ``body``'s terms asked by ``actor`` (``operator`` or a lender id)."""
    made = links.create_link(
        session,
        request.app.state.settings.kept_secret("secret_key"),
        sme_id=body.sme_id,
        sources=body.sources,
        recipients=body.recipients,
        purpose=body.purpose,
        history_months=body.history_months,
        consent_days=body.consent_days,
        valid_days=body.valid_days,
        actor=actor,
    )
    return LinkMade(
        link_id=made.link.link_id,
        sme_id=made.link.sme_id,
        url=link_url(request.app.state.settings, body.sme_id, made.token),
        expires_at=made.link.expires_at,
    )


Cursor = Annotated[
    str | None,
    Query(max_length=32, description="The next_cursor of the previous page; empty: the first page."),
]
Limit = Annotated[int, Query(ge=1, le=MAX_PAGE, description=f"Links per page (1 to {MAX_PAGE}).")]


def page_of(session: Session, *, created_by: str | None, cursor: str | None, limit: int) -> LinkPage:
    """Links (of ``created_by``, or all), ordered by creation then id, after the link ``cursor``."""
    query = select(ConnectorLink)
    if created_by is not None:
        query = query.where(ConnectorLink.created_by == created_by)
    if cursor:
        last = session.get(ConnectorLink, cursor)
        if last is None or (created_by is not None and last.created_by != created_by):
            raise HTTPException(400, f"cursor {cursor!r} is not a link of this list; start again without one")
        query = query.where(
            or_(
                ConnectorLink.created_at > last.created_at,
                and_(ConnectorLink.created_at == last.created_at, ConnectorLink.link_id > last.link_id),
            )
        )
    rows = session.scalars(
        query.order_by(ConnectorLink.created_at, ConnectorLink.link_id).limit(limit + 1)
    ).all()
    shown = rows[:limit]
    visits = {
        v.link_id: v
        for v in session.scalars(
            select(FieldVisitRequest).where(FieldVisitRequest.link_id.in_([r.link_id for r in shown]))
        )
    }
    now = dt.datetime.now(dt.UTC)
    return LinkPage(
        links=[LinkView.of(r, visits.get(r.link_id), now) for r in shown],
        next_cursor=shown[-1].link_id if len(rows) > limit else None,
    )


@router.post(
    "/links",
    response_model=LinkMade,
    status_code=201,
    responses={
        422: {
            "description": "Refused by the link rules (unknown SME or lender, terms the consent law does not allow)."
        }
    },
)
def create_lender_link(
    body: LinkRequest, request: Request, session: SessionDep, key: LenderKeyDep
) -> LinkMade:
    """Ask an SME for a consent; the calling lender must be one of the recipients."""
    if key.lender_id not in body.recipients:
        raise HTTPException(
            422,
            f"recipients must include the lender asking ({key.lender_id}); they are {', '.join(body.recipients)}",
        )
    return make(session, request, body, key.lender_id)


@router.get("/links", response_model=LinkPage)
def list_lender_links(
    session: SessionDep, key: LenderKeyDep, cursor: Cursor = None, limit: Limit = 100
) -> LinkPage:
    """The links this lender made, oldest first, with their status."""
    return page_of(session, created_by=key.lender_id, cursor=cursor, limit=limit)
