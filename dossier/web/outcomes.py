"""Outcomes by API (``POST /v1/outcomes``, ``GET /v1/outcomes``): the lender's own reports on what became
of the SMEs whose dossiers it was delivered.

The lender is the owner of the key (:func:`dossier.web.deps.lender_key`); the body names no lender.
Each outcome is checked against that lender's deliveries by :mod:`warehouse.outcomes` (the same
checks as ``dossier outcomes import``): a dossier delivered to another lender, or an SME none of
whose dossiers reached this one, is refused with a 400 problem naming ``outcomes[i]`` and the field,
and none of the body is stored. Posting the same outcome again changes nothing (or updates its amount).
"""

from __future__ import annotations

import datetime as dt
from typing import Literal

from fastapi import APIRouter, Request, Response
from pydantic import BaseModel, ConfigDict, Field, model_validator
from sqlalchemy import select

from dossier.web.deps import LIST_RESPONSES, LenderKeyDep, PagingDep, SessionDep, bad_cursor
from warehouse.models import Outcome
from warehouse.outcomes import Reported, resolve, store

router = APIRouter(prefix="/v1", tags=["lender"])


class OutcomeIn(BaseModel):
    """One outcome: name the delivered dossier, or the SME (pinned to its latest dossier delivered by then)."""

    model_config = ConfigDict(extra="forbid")

    dossier_id: str | None = Field(default=None, min_length=1, max_length=160)
    sme_id: str | None = Field(default=None, min_length=1, max_length=32)
    outcome: Literal["repaid", "defaulted", "current"]
    outcome_date: dt.date
    amount: float | None = Field(default=None, ge=0, allow_inf_nan=False)

    @model_validator(mode="after")
    def _names_one(self) -> OutcomeIn:
        if not self.dossier_id and not self.sme_id:
            raise ValueError("name the dossier (dossier_id) or the SME (sme_id)")
        if self.outcome_date > dt.datetime.now(dt.UTC).date():
            raise ValueError(f"outcome_date {self.outcome_date} is in the future")
        return self


class OutcomesBody(BaseModel):
    """Outcomes reported together: stored all or none."""

    model_config = ConfigDict(extra="forbid")

    outcomes: list[OutcomeIn] = Field(min_length=1, max_length=1000)


class OutcomesStored(BaseModel):
    """How many of the posted outcomes were new, changed an amount, or were already recorded."""

    inserted: int
    updated: int
    unchanged: int


class OutcomeView(BaseModel):
    """A stored outcome and the delivered dossier it is judged on."""

    dossier_id: str
    sme_id: str
    outcome: str
    outcome_date: dt.date
    amount: float | None
    source: str = Field(description="Where it was reported from: a file name, or api.")
    reported_at: dt.datetime


@router.post("/outcomes", response_model=OutcomesStored)
def post_outcomes(body: OutcomesBody, session: SessionDep, key: LenderKeyDep) -> OutcomesStored:
    """Store the lender's outcomes on dossiers delivered to it (all or none)."""
    reported = [
        Reported(f"outcomes[{i}]", key.lender_id, o.dossier_id, o.sme_id, o.outcome, o.outcome_date, o.amount)
        for i, o in enumerate(body.outcomes)
    ]
    return OutcomesStored(**store(session, resolve(session, reported), source="api"))


@router.get("/outcomes", response_model=list[OutcomeView], responses=LIST_RESPONSES)
def list_outcomes(
    request: Request, response: Response, session: SessionDep, key: LenderKeyDep, paging: PagingDep
) -> list[OutcomeView]:
    """The lender's stored outcomes, in the order they were first recorded."""
    query = select(Outcome).where(Outcome.lender_id == key.lender_id)
    after = paging.after(1)
    if after is not None:
        if not after[0].isdigit():
            raise bad_cursor("not a cursor this list returned")
        query = query.where(Outcome.id > int(after[0]))
    rows = session.scalars(query.order_by(Outcome.id).limit(paging.limit + 1)).all()
    return [
        OutcomeView(
            dossier_id=r.dossier_id,
            sme_id=r.sme_id,
            outcome=r.outcome,
            outcome_date=r.outcome_date,
            amount=r.amount,
            source=r.source,
            reported_at=r.reported_at,
        )
        for r in paging.page(request, response, rows, lambda r: [str(r.id)])
    ]
