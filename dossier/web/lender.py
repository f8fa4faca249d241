"""The lender API under ``/v1``: a lender's own identity, keys and subscriptions.

Every route requires the lender's API key as a bearer token (:func:`lender_key`): no key or a key
nobody issued gets 401, a revoked key or one whose rotation grace period is over gets 403, and a
lender reaches only its own data (another lender's key prefix: 403). Keys are made by
``dossier lender add`` and stored hashed (:mod:`warehouse.keys`).

Subscriptions are made and changed by :func:`warehouse.feed.subscribe`, their filter values
checked by :func:`warehouse.feed.check_filters` (the same as ``dossier lender subscribe``): what a
subscription receives is decided by the feed alone, never here.
"""

from __future__ import annotations

import datetime as dt
from typing import Annotated

from fastapi import APIRouter, Depends, HTTPException, Path, Response
from fastapi.security import HTTPAuthorizationCredentials
from pydantic import BaseModel, ConfigDict, Field, field_validator
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from dossier.web.deps import SessionDep, bearer
from warehouse import keys
from warehouse.consent import DEFAULT_PURPOSE, PURPOSES
from warehouse.feed import check_filters, subscribe
from warehouse.models import Delivery, Lender, LenderKey, Subscription

router = APIRouter(prefix="/v1", tags=["lender"])


def lender_key(
    session: SessionDep, credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)]
) -> LenderKey:
    """Require a valid lender API key (``Authorization: Bearer sdk_...``); returns the key."""
    challenge = {"WWW-Authenticate": "Bearer"}
    if credentials is None:
        raise HTTPException(401, "API key required", headers=challenge)
    try:
        return keys.authenticate(session, credentials.credentials, at=dt.datetime.now(dt.UTC))
    except keys.UnknownKey as error:
        raise HTTPException(401, str(error), headers=challenge) from None
    except keys.KeyNotValid as error:
        raise HTTPException(403, str(error)) from None


LenderKeyDep = Annotated[LenderKey, Depends(lender_key)]


class LenderView(BaseModel):
    """The lender the key belongs to."""

    lender_id: str
    name: str
    key_prefix: str = Field(description="Prefix of the key this request used.")


class KeyView(BaseModel):
    """One API key: its prefix and its life, never the key itself."""

    prefix: str
    created_at: dt.datetime
    expires_at: dt.datetime | None
    revoked_at: dt.datetime | None
    status: str = Field(description="active, expiring (rotated, in its grace period), expired or revoked.")

    @classmethod
    def of(cls, view: keys.KeyView) -> KeyView:
        return cls(
            prefix=view.prefix,
            created_at=view.created_at,
            expires_at=view.expires_at,
            revoked_at=view.revoked_at,
            status=view.status,
        )


class Rotation(BaseModel):
    """How long the keys valid now stay valid beside the new one."""

    grace_hours: float = Field(
        keys.DEFAULT_GRACE.total_seconds() / 3600, ge=0, le=keys.MAX_GRACE.total_seconds() / 3600
    )


class NewKey(BaseModel):
    """A key just issued: ``key`` is shown this once and cannot be read again."""

    key: str
    prefix: str
    created_at: dt.datetime
    previous_keys_expire_at: dt.datetime


@router.get("/lender", response_model=LenderView)
def who_am_i(session: SessionDep, key: LenderKeyDep) -> LenderView:
    lender = session.get(Lender, key.lender_id)
    return LenderView(
        lender_id=key.lender_id, name=lender.name if lender else key.lender_id, key_prefix=key.prefix
    )


@router.get("/keys", response_model=list[KeyView])
def list_keys(session: SessionDep, key: LenderKeyDep) -> list[KeyView]:
    return [KeyView.of(v) for v in keys.list_keys(session, key.lender_id, at=dt.datetime.now(dt.UTC))]


@router.post("/keys/rotate", response_model=NewKey, status_code=201)
def rotate_key(body: Rotation, session: SessionDep, key: LenderKeyDep) -> NewKey:
    now = dt.datetime.now(dt.UTC)
    grace = dt.timedelta(hours=body.grace_hours)
    token, fresh = keys.rotate_key(session, key.lender_id, at=now, grace=grace)
    return NewKey(
        key=token, prefix=fresh.prefix, created_at=fresh.created_at, previous_keys_expire_at=now + grace
    )


@router.post("/keys/{prefix}/revoke", response_model=KeyView)
def revoke_key(prefix: str, session: SessionDep, key: LenderKeyDep) -> KeyView:
    now = dt.datetime.now(dt.UTC)
    try:
        revoked = keys.revoke_key(session, prefix, at=now, lender_id=key.lender_id)
    except keys.UnknownKey as error:
        raise HTTPException(404, str(error)) from None
    except keys.KeyNotValid as error:
        raise HTTPException(403, str(error)) from None
    return KeyView.of(keys.KeyView.of(revoked, now))


# --- subscriptions --------------------------------------------------------------------------------

SubscriptionName = Annotated[
    str, Path(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$", description="The subscription's name.")
]


class Filters(BaseModel):
    """What a subscription restricts (an empty or absent list lets every value through).

    Values are checked against their vocabulary: grades A-E, size bands micro/small/medium, and the
    regions and industries of the registered SMEs; they match regardless of case.
    """

    model_config = ConfigDict(extra="forbid")

    grades: list[str] = Field(default_factory=list, examples=[["A", "B"]])
    industries: list[str] = Field(default_factory=list)
    regions: list[str] = Field(default_factory=list, examples=[["London"]])
    size_bands: list[str] = Field(default_factory=list, examples=[["micro", "small"]])


def _check_purpose(value: str | None) -> str | None:
    if value is not None and value not in PURPOSES:
        raise ValueError(f"unknown purpose {value!r}; known: {', '.join(sorted(PURPOSES))}")
    return value


class SubscriptionBody(BaseModel):
    """A whole subscription: its filters and the purpose the lender receives dossiers for."""

    model_config = ConfigDict(extra="forbid")

    filters: Filters = Field(default_factory=Filters)
    purpose: str = Field(DEFAULT_PURPOSE, description=f"One of: {', '.join(sorted(PURPOSES))}.")

    _purpose = field_validator("purpose")(_check_purpose)


class SubscriptionChange(BaseModel):
    """A change: each filter given replaces that filter; the purpose, when given, replaces it."""

    model_config = ConfigDict(extra="forbid")

    filters: dict[str, list[str]] = Field(default_factory=dict, examples=[{"grades": ["A", "B", "C"]}])
    purpose: str | None = None

    _purpose = field_validator("purpose")(_check_purpose)

    @field_validator("filters")
    @classmethod
    def _known_keys(cls, value: dict[str, list[str]]) -> dict[str, list[str]]:
        unknown = sorted(set(value) - set(Filters.model_fields))
        if unknown:
            raise ValueError(f"unknown filter {unknown[0]!r}; known: {', '.join(Filters.model_fields)}")
        return value


class SubscriptionView(BaseModel):
    """A subscription as the lender sees it."""

    name: str
    purpose: str
    filters: Filters
    active: bool = Field(description="False while paused: a paused subscription receives nothing.")
    created_at: dt.datetime
    updated_at: dt.datetime

    @classmethod
    def of(cls, row: Subscription) -> SubscriptionView:
        return cls(
            name=row.name,
            purpose=row.purpose,
            filters=Filters(**(row.filters or {})),
            active=row.active,
            created_at=row.created_at,
            updated_at=row.updated_at,
        )


def _own_subscription(session: Session, lender_id: str, name: str) -> Subscription:
    found = session.scalars(
        select(Subscription).where(Subscription.lender_id == lender_id, Subscription.name == name)
    ).first()
    if found is None:
        raise HTTPException(404, f"no subscription named {name!r}")
    return found


def _save(
    session: Session, lender_id: str, name: str, filters: dict[str, list[str]], purpose: str
) -> Subscription:
    """Create or change subscription ``name`` through the feed, keeping a paused one paused."""
    existing = session.scalars(
        select(Subscription).where(Subscription.lender_id == lender_id, Subscription.name == name)
    ).first()
    paused = existing is not None and not existing.active
    saved = subscribe(session, lender_id, name=name, filters=check_filters(session, filters), purpose=purpose)
    if paused:
        saved.active = False
        session.flush()
    return saved


@router.get("/subscriptions", response_model=list[SubscriptionView])
def list_subscriptions(session: SessionDep, key: LenderKeyDep) -> list[SubscriptionView]:
    query = select(Subscription).where(Subscription.lender_id == key.lender_id).order_by(Subscription.name)
    return [SubscriptionView.of(row) for row in session.scalars(query)]


@router.get("/subscriptions/{name}", response_model=SubscriptionView)
def get_subscription(name: SubscriptionName, session: SessionDep, key: LenderKeyDep) -> SubscriptionView:
    return SubscriptionView.of(_own_subscription(session, key.lender_id, name))


@router.put(
    "/subscriptions/{name}",
    response_model=SubscriptionView,
    responses={201: {"model": SubscriptionView, "description": "Created."}},
)
def put_subscription(
    name: SubscriptionName, body: SubscriptionBody, session: SessionDep, key: LenderKeyDep, response: Response
) -> SubscriptionView:
    """Create subscription ``name`` (201) or replace its filters and purpose (200)."""
    existed = session.scalar(
        select(func.count(Subscription.id)).where(
            Subscription.lender_id == key.lender_id, Subscription.name == name
        )
    )
    saved = _save(session, key.lender_id, name, body.filters.model_dump(), body.purpose)
    response.status_code = 200 if existed else 201
    return SubscriptionView.of(saved)


@router.patch("/subscriptions/{name}", response_model=SubscriptionView)
def change_subscription(
    name: SubscriptionName, body: SubscriptionChange, session: SessionDep, key: LenderKeyDep
) -> SubscriptionView:
    current = _own_subscription(session, key.lender_id, name)
    filters = {**(current.filters or {}), **body.filters}
    saved = _save(session, key.lender_id, name, filters, body.purpose or current.purpose)
    return SubscriptionView.of(saved)


@router.post("/subscriptions/{name}/pause", response_model=SubscriptionView)
def pause_subscription(name: SubscriptionName, session: SessionDep, key: LenderKeyDep) -> SubscriptionView:
    """Stop deliveries to this subscription until it is resumed (what it holds stays held)."""
    found = _own_subscription(session, key.lender_id, name)
    found.active = False
    session.flush()
    return SubscriptionView.of(found)


@router.post("/subscriptions/{name}/resume", response_model=SubscriptionView)
def resume_subscription(name: SubscriptionName, session: SessionDep, key: LenderKeyDep) -> SubscriptionView:
    found = _own_subscription(session, key.lender_id, name)
    found.active = True
    session.flush()
    return SubscriptionView.of(found)


@router.delete(
    "/subscriptions/{name}", status_code=204, responses={409: {"description": "It has deliveries."}}
)
def delete_subscription(name: SubscriptionName, session: SessionDep, key: LenderKeyDep) -> Response:
    """Delete a subscription that never delivered anything; one that did can only be paused, since
    its deliveries (and the withdrawals that may follow them) are part of the record."""
    found = _own_subscription(session, key.lender_id, name)
    if session.scalar(select(func.count(Delivery.id)).where(Delivery.subscription_id == found.id)):
        raise HTTPException(409, f"subscription {name!r} has delivered dossiers; pause it instead")
    session.delete(found)
    session.flush()
    return Response(status_code=204)
