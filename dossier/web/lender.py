"""The lender API under ``/v1``: a lender's own identity and keys (and, below, its subscriptions).

Every route requires the lender's API key as a bearer token (:func:`lender_key`): no key or a key
nobody issued gets 401, a revoked key or one whose rotation grace period is over gets 403, and a
lender reaches only its own data (another lender's key prefix: 403). Keys are made by
``dossier lender add`` and stored hashed (:mod:`warehouse.keys`).
"""

from __future__ import annotations

import datetime as dt
from typing import Annotated

from fastapi import APIRouter, Depends, HTTPException
from fastapi.security import HTTPAuthorizationCredentials
from pydantic import BaseModel, Field

from dossier.web.deps import SessionDep, bearer
from warehouse import keys
from warehouse.models import Lender, LenderKey

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
