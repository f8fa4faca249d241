"""Offers by API: a lender answers a dossier version delivered to it with an indicative offer.

``POST /v1/offers`` posts one, ``GET /v1/offers`` lists the lender's own (paged, by status or
dossier), ``GET /v1/offers/{offer_id}`` shows one (``?schedule=true`` with its month-by-month
schedule), ``PATCH`` amends an open one and ``POST .../withdraw`` takes it back. What may be offered
on, and every refusal with the field it names, is :mod:`warehouse.offers`; the schedule, totals and
APR the broker shows the SME are computed there by one method (``evaluation/APR.md``), whatever the
lender computed. Every route first refreshes the lender's feed (a version whose consent ended is
withdrawn, and its open offers lapse) and lapses offers past their validity. A lender never sees
another lender's offers: they are not found.

What became of an offer reaches the lender in its feed (``offer_accepted``, ``offer_declined``,
``offer_closed``, ``offer_lapsed`` events carrying the offer) and as ``offer.*`` webhooks.
"""

from __future__ import annotations

import datetime as dt
from decimal import Decimal
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Path, Query, Request, Response
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import select

from dossier.web.deps import LIST_RESPONSES, LenderKeyDep, PagingDep, SessionDep, StoreDep, bad_cursor
from evaluation.credit_cost import PROFILES, schedule
from warehouse import offers
from warehouse.feed import refresh
from warehouse.models import Offer

router = APIRouter(prefix="/v1", tags=["lender"])

Money = Annotated[Decimal, Field(allow_inf_nan=False, max_digits=14, decimal_places=2)]
Rate = Annotated[Decimal, Field(allow_inf_nan=False, max_digits=8, decimal_places=6)]
Profile = Literal["annuity", "equal_principal", "bullet", "revenue_share"]
assert set(Profile.__args__) == set(PROFILES)  # type: ignore[attr-defined]

REFUSALS: dict[int | str, dict[str, Any]] = {
    404: {"description": "The dossier (or offer) is not one this lender holds (or made)."},
    409: {"description": "The dossier or offer is in a state that does not allow it; the detail says which."},
    422: {"description": "A term outside what an offer may be; the detail names the field."},
}


class OfferBody(BaseModel):
    """An indicative offer on a dossier version delivered to you. Amounts in the dossier's currency,
    rates as fractions a year (0.085 is 8.5 %). ``revenue_share`` offers repay ``revenue_share`` of
    the SME's monthly revenue until ``repayment_cap`` times the amount is repaid; the schedule
    assumes the dossier's own revenue (``revenue_12m`` / 12)."""

    model_config = ConfigDict(extra="forbid")

    dossier_id: str = Field(min_length=1, max_length=160, description="The dossier version priced.")
    amount: Money = Field(description="The principal offered.")
    currency: str = Field(pattern=r"^[A-Z]{3}$", description="ISO 4217; the dossier's currency.")
    term_months: int = Field(description="1 to 360.")
    nominal_rate: Rate = Field(description="Annual nominal rate, a fraction; 0 for revenue share.")
    upfront_fee: Money = Field(default=Decimal(0), description="Paid at drawdown.")
    periodic_fee: Money = Field(default=Decimal(0), description="Added to every monthly instalment.")
    profile: Profile = "annuity"
    revenue_share: Rate | None = Field(
        default=None, description="revenue_share only: share of monthly revenue."
    )
    repayment_cap: Rate | None = Field(default=None, description="revenue_share only: total repaid / amount.")
    conditions: str = Field(default="", max_length=offers.MAX_CONDITIONS)
    valid_until: dt.date = Field(description="The last day the SME may accept it.")


class OfferChange(BaseModel):
    """What changes in an open offer; everything else stays."""

    model_config = ConfigDict(extra="forbid")

    amount: Money | None = None
    term_months: int | None = None
    nominal_rate: Rate | None = None
    upfront_fee: Money | None = None
    periodic_fee: Money | None = None
    profile: Profile | None = None
    revenue_share: Rate | None = None
    repayment_cap: Rate | None = None
    conditions: str | None = Field(default=None, max_length=offers.MAX_CONDITIONS)
    valid_until: dt.date | None = None


class InstalmentView(BaseModel):
    month: int
    principal: str
    interest: str
    fee: str
    payment: str
    balance: str


class OfferView(BaseModel):
    """An offer with what the broker computed from its terms (money and rates as decimal text)."""

    offer_id: str
    lender_id: str
    sme_id: str
    dossier_id: str
    status: str = Field(description="open, accepted, declined, withdrawn, lapsed or closed.")
    status_reason: str | None = Field(
        description="For lapsed: expired or version_withdrawn; for closed: another_offer_accepted."
    )
    currency: str
    amount: str
    term_months: int
    nominal_rate: str
    upfront_fee: str
    periodic_fee: str
    profile: str
    revenue_share: str | None
    repayment_cap: str | None
    expected_monthly_revenue: str | None = Field(
        description="revenue_share: the revenue the schedule assumes."
    )
    conditions: str
    valid_until: dt.date
    monthly_payment: str | None = Field(description="The first regular instalment.")
    total_repayable: str | None = Field(description="Every payment, fees included.")
    total_cost: str | None = Field(description="total_repayable - amount: the total cost of credit.")
    apr: str | None = Field(
        description="Annual percentage rate (EU CCD method, evaluation/APR.md), a fraction. The figures "
        "of a revenue-share offer follow from the SME's revenue: null once you no longer hold its dossier."
    )
    revision: int
    created_at: dt.datetime
    updated_at: dt.datetime
    decided_at: dt.datetime | None
    schedule: list[InstalmentView] | None = Field(default=None, description="With ?schedule=true.")


def _view(session: SessionDep, offer: Offer, *, with_schedule: bool = False) -> OfferView:
    shown = OfferView(**offers.lender_views(session, offer.lender_id, [offer])[0])
    if with_schedule and shown.monthly_payment is not None:
        rows = schedule(offers.offer_terms(offer)).instalments
        shown.schedule = [
            InstalmentView(
                month=i.month,
                principal=str(i.principal),
                interest=str(i.interest),
                fee=str(i.fee),
                payment=str(i.payment),
                balance=str(i.balance),
            )
            for i in rows
        ]
    return shown


def _fresh(session: SessionDep, store: StoreDep, lender_id: str, now: dt.datetime) -> None:
    refresh(session, store, lender_id, now=now)
    offers.lapse_due(session, now, lender_id=lender_id)


OfferId = Annotated[str, Path(max_length=32, description="The offer's id (off_...).")]


@router.post("/offers", response_model=OfferView, status_code=201, responses=REFUSALS)
def post_offer(body: OfferBody, session: SessionDep, store: StoreDep, key: LenderKeyDep) -> OfferView:
    """Post an indicative offer on a dossier version you hold (the newest of that SME delivered to you)."""
    now = dt.datetime.now(dt.UTC)
    _fresh(session, store, key.lender_id, now)
    posted = offers.Posted(**body.model_dump())
    offer = offers.post(session, key.lender_id, posted, at=now)
    return _view(session, offer)


@router.get("/offers", response_model=list[OfferView], responses=LIST_RESPONSES)
def list_offers(
    request: Request,
    response: Response,
    session: SessionDep,
    store: StoreDep,
    key: LenderKeyDep,
    paging: PagingDep,
    status: Annotated[
        Literal["open", "accepted", "declined", "withdrawn", "lapsed", "closed"] | None,
        Query(description="Only offers in this status."),
    ] = None,
    dossier_id: Annotated[
        str | None, Query(max_length=160, description="Only offers on this version.")
    ] = None,
) -> list[OfferView]:
    """Your offers, oldest first."""
    _fresh(session, store, key.lender_id, dt.datetime.now(dt.UTC))
    query = select(Offer).where(Offer.lender_id == key.lender_id)
    if status is not None:
        query = query.where(Offer.status == status)
    if dossier_id is not None:
        query = query.where(Offer.dossier_id == dossier_id)
    after = paging.after(2)
    if after is not None:
        if not after[0].isdigit():
            raise bad_cursor("not a cursor this list returned")
        created = dt.datetime.fromtimestamp(int(after[0]) / 1e6, dt.UTC)
        query = query.where(
            (Offer.created_at > created) | ((Offer.created_at == created) & (Offer.offer_id > after[1]))
        )
    rows = session.scalars(query.order_by(Offer.created_at, Offer.offer_id).limit(paging.limit + 1)).all()

    def position(offer: Offer) -> list[str]:
        stamp = offer.created_at.astimezone(dt.UTC)
        return [str(int(stamp.timestamp()) * 1_000_000 + stamp.microsecond), offer.offer_id]

    found = paging.page(request, response, rows, position)
    return [OfferView(**shown) for shown in offers.lender_views(session, key.lender_id, found)]


@router.get("/offers/{offer_id}", response_model=OfferView, responses=REFUSALS)
def get_offer(
    offer_id: OfferId,
    session: SessionDep,
    store: StoreDep,
    key: LenderKeyDep,
    schedule: Annotated[bool, Query(description="Include the month-by-month schedule.")] = False,
) -> OfferView:
    """One of your offers (another lender's is not found)."""
    _fresh(session, store, key.lender_id, dt.datetime.now(dt.UTC))
    return _view(session, offers.get(session, offer_id, lender_id=key.lender_id), with_schedule=schedule)


@router.patch("/offers/{offer_id}", response_model=OfferView, responses=REFUSALS)
def amend_offer(
    offer_id: OfferId, body: OfferChange, session: SessionDep, store: StoreDep, key: LenderKeyDep
) -> OfferView:
    """Amend an open offer: its figures are computed again and its revision goes up."""
    now = dt.datetime.now(dt.UTC)
    _fresh(session, store, key.lender_id, now)
    changes = body.model_dump(exclude_unset=True)
    nulls = [k for k, v in changes.items() if v is None and k not in ("revenue_share", "repayment_cap")]
    if nulls:
        raise offers.OfferError(nulls[0], "cannot be null")
    return _view(session, offers.amend(session, key.lender_id, offer_id, changes, at=now))


@router.post("/offers/{offer_id}/withdraw", response_model=OfferView, responses=REFUSALS)
def withdraw_offer(offer_id: OfferId, session: SessionDep, store: StoreDep, key: LenderKeyDep) -> OfferView:
    """Withdraw an open offer (withdrawing it again changes nothing; an accepted one cannot be)."""
    now = dt.datetime.now(dt.UTC)
    _fresh(session, store, key.lender_id, now)
    return _view(session, offers.withdraw(session, key.lender_id, offer_id, at=now))
