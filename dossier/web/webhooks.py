"""The lender's webhooks under ``/v1/webhooks``: endpoints, their secrets, the delivery log, replays.

Every route takes the lender's API key (:func:`dossier.web.lender.lender_key`: 401 without a valid
key, 403 for a revoked or expired one) and reaches only the lender's own endpoints: another
lender's endpoint or message is answered 404, as one that does not exist. Nothing is sent here: the
routes queue messages and the webhook worker (:mod:`warehouse.webhooks`, started by
``dossier serve`` or ``dossier webhooks send``) sends them.
"""

from __future__ import annotations

import datetime as dt
from typing import Annotated

from fastapi import APIRouter, Depends, HTTPException, Path, Query, Response
from pydantic import AwareDatetime, BaseModel, ConfigDict, Field

from dossier.settings import Settings
from dossier.web.deps import SessionDep, settings_of
from dossier.web.lender import LenderKeyDep
from warehouse import webhooks
from warehouse.models import WebhookAttempt, WebhookEndpoint, WebhookMessage

router = APIRouter(prefix="/v1/webhooks", tags=["webhooks"])

SettingsDep = Annotated[Settings, Depends(settings_of)]
EndpointId = Annotated[str, Path(pattern=r"^ep_[0-9a-f]{24}$", description="The endpoint's id.")]
MessageId = Annotated[str, Path(pattern=r"^msg_[0-9a-f]{32}$", description="The message's webhook-id.")]
MAX_PAGE = 200
EventType = Annotated[str, Field(examples=[webhooks.DELIVERED])]


class EndpointBody(BaseModel):
    """A new endpoint: where to post, and which event types (default: all)."""

    model_config = ConfigDict(extra="forbid")

    url: str = Field(max_length=webhooks.MAX_URL, examples=["https://lender.example/hooks/dossiers"])
    event_types: list[EventType] | None = Field(
        None, description=f"Any of: {', '.join(webhooks.EVENT_TYPES.values())} (default: all)."
    )
    description: str = Field("", max_length=200)


class EndpointChange(BaseModel):
    """A change: what is given replaces what is there; ``enabled: true`` re-enables an endpoint a
    410 answer disabled."""

    model_config = ConfigDict(extra="forbid")

    url: str | None = Field(None, max_length=webhooks.MAX_URL)
    event_types: list[EventType] | None = None
    description: str | None = Field(None, max_length=200)
    enabled: bool | None = None


class EndpointView(BaseModel):
    """An endpoint as the lender sees it (never its secret)."""

    endpoint_id: str
    url: str
    description: str
    event_types: list[str]
    enabled: bool
    disabled_reason: str | None = Field(description="Why it is disabled (a 410 answer, or the lender).")
    last_seq: int = Field(description="The last feed event queued for it.")
    previous_secret_expires_at: dt.datetime | None = Field(
        description="After a rotation: until when the previous secret signs too."
    )
    created_at: dt.datetime
    updated_at: dt.datetime

    @classmethod
    def of(cls, row: WebhookEndpoint) -> EndpointView:
        return cls(
            endpoint_id=row.endpoint_id,
            url=row.url,
            description=row.description,
            event_types=list(row.event_types),
            enabled=row.enabled,
            disabled_reason=row.disabled_reason,
            last_seq=row.last_seq,
            previous_secret_expires_at=row.previous_secret_expires_at,
            created_at=row.created_at,
            updated_at=row.updated_at,
        )


class NewEndpoint(EndpointView):
    """An endpoint just made: ``secret`` (``whsec_...``) is shown this once."""

    secret: str


class Rotation(BaseModel):
    """How long the current secret keeps signing beside the new one."""

    model_config = ConfigDict(extra="forbid")

    grace_hours: float = Field(
        webhooks.DEFAULT_GRACE.total_seconds() / 3600, ge=0, le=webhooks.MAX_GRACE.total_seconds() / 3600
    )


class NewSecret(BaseModel):
    """A secret just made, shown this once."""

    secret: str
    previous_secret_expires_at: dt.datetime


class AttemptView(BaseModel):
    """One attempt to deliver a message."""

    attempted_at: dt.datetime
    status_code: int | None = Field(description="The receiver's status; null when it did not answer.")
    error: str | None
    duration_ms: int
    next_attempt_at: dt.datetime | None = Field(description="When it is tried again; null when not.")

    @classmethod
    def of(cls, row: WebhookAttempt) -> AttemptView:
        return cls(
            attempted_at=row.attempted_at,
            status_code=row.status_code,
            error=row.error,
            duration_ms=row.duration_ms,
            next_attempt_at=row.next_attempt_at,
        )


class MessageView(BaseModel):
    """One message to the endpoint and where its delivery stands."""

    message_id: str = Field(description="The webhook-id header it is sent with (the same on every attempt).")
    event_type: str
    seq: int | None = Field(description="The feed event it carries; null for a test message.")
    status: str = Field(description="pending, delivered or failed.")
    attempts: int = Field(description="Attempts of the current round (a replay starts a new one).")
    next_attempt_at: dt.datetime | None
    last_status_code: int | None
    last_error: str | None
    created_at: dt.datetime
    updated_at: dt.datetime

    @classmethod
    def of(cls, row: WebhookMessage) -> MessageView:
        return cls(
            message_id=row.message_id,
            event_type=row.event_type,
            seq=row.seq,
            status=row.status,
            attempts=row.attempts,
            next_attempt_at=row.next_attempt_at,
            last_status_code=row.last_status_code,
            last_error=row.last_error,
            created_at=row.created_at,
            updated_at=row.updated_at,
        )


class MessageDetail(MessageView):
    """A message with every attempt, oldest first."""

    attempt_log: list[AttemptView]


class DeliveryPage(BaseModel):
    """A page of the delivery log, newest first."""

    deliveries: list[MessageView]
    next_cursor: str | None = Field(description="Pass as cursor for the next (older) page; null at the end.")


class RangeReplay(BaseModel):
    """Send again the feed events of the endpoint's types that occurred in ``[since, until)``."""

    model_config = ConfigDict(extra="forbid")

    since: AwareDatetime
    until: AwareDatetime
    only_failed: bool = Field(False, description="Only messages whose attempts all failed.")


class Queued(BaseModel):
    queued: int = Field(description="Messages queued to be sent by the worker.")


def _endpoint(session: SessionDep, key: LenderKeyDep, endpoint_id: EndpointId) -> WebhookEndpoint:
    try:
        return webhooks.get_endpoint(session, endpoint_id, lender_id=key.lender_id)
    except webhooks.UnknownEndpoint as error:
        raise HTTPException(404, str(error)) from None


OwnEndpoint = Annotated[WebhookEndpoint, Depends(_endpoint)]


@router.post("", response_model=NewEndpoint, status_code=201)
def create_endpoint(
    body: EndpointBody, session: SessionDep, key: LenderKeyDep, settings: SettingsDep
) -> NewEndpoint:
    """Register an endpoint; it receives the feed events appended from now on. A URL whose host
    resolves to a loopback, private, link-local or other non-global address is refused (400 naming
    ``url``) unless the service allows private destinations (DOSSIER_WEBHOOK_ALLOW_PRIVATE)."""
    secret, row = webhooks.create_endpoint(
        session,
        key.lender_id,
        body.url,
        secret_key=settings.kept_secret("secret_key"),
        event_types=body.event_types,
        description=body.description,
        allow_private=settings.webhook_allow_private,
    )
    return NewEndpoint(**EndpointView.of(row).model_dump(), secret=secret)


@router.get("", response_model=list[EndpointView])
def list_endpoints(session: SessionDep, key: LenderKeyDep) -> list[EndpointView]:
    return [EndpointView.of(row) for row in webhooks.endpoints_of(session, key.lender_id)]


@router.get("/{endpoint_id}", response_model=EndpointView)
def get_endpoint(endpoint: OwnEndpoint) -> EndpointView:
    return EndpointView.of(endpoint)


@router.patch("/{endpoint_id}", response_model=EndpointView)
def change_endpoint(
    body: EndpointChange, endpoint: OwnEndpoint, session: SessionDep, settings: SettingsDep
) -> EndpointView:
    webhooks.change_endpoint(
        endpoint,
        url=body.url,
        event_types=body.event_types,
        description=body.description,
        enabled=body.enabled,
        allow_private=settings.webhook_allow_private,
    )
    session.flush()
    return EndpointView.of(endpoint)


@router.delete("/{endpoint_id}", status_code=204)
def delete_endpoint(endpoint: OwnEndpoint, session: SessionDep) -> Response:
    """Remove the endpoint with its delivery log."""
    webhooks.delete_endpoint(session, endpoint)
    return Response(status_code=204)


@router.post("/{endpoint_id}/rotate-secret", response_model=NewSecret, status_code=201)
def rotate_secret(
    body: Rotation, endpoint: OwnEndpoint, session: SessionDep, settings: SettingsDep
) -> NewSecret:
    """A new secret; the current one keeps signing beside it for ``grace_hours``."""
    secret = webhooks.rotate_secret(
        endpoint, secret_key=settings.kept_secret("secret_key"), grace=dt.timedelta(hours=body.grace_hours)
    )
    session.flush()
    return NewSecret(secret=secret, previous_secret_expires_at=endpoint.previous_secret_expires_at)


@router.post("/{endpoint_id}/test", response_model=MessageView, status_code=202)
def send_test(endpoint: OwnEndpoint, session: SessionDep) -> MessageView:
    """Queue a ``webhook.test`` message (no dossier in it); the worker sends it at its next step."""
    return MessageView.of(webhooks.send_test(session, endpoint))


Cursor = Annotated[str | None, Query(max_length=20, description="The next_cursor of the previous page.")]


@router.get("/{endpoint_id}/deliveries", response_model=DeliveryPage)
def list_deliveries(
    endpoint: OwnEndpoint,
    session: SessionDep,
    cursor: Cursor = None,
    limit: Annotated[int, Query(ge=1, le=MAX_PAGE)] = 50,
    status: Annotated[str | None, Query(description="pending, delivered or failed.")] = None,
) -> DeliveryPage:
    """The endpoint's messages, newest first, with where each delivery stands."""
    if cursor is not None and not cursor.isdigit():
        raise HTTPException(400, f"cursor: {cursor!r} is not a cursor this log returned")
    found = webhooks.messages_of(
        session, endpoint, status=status, before=int(cursor) if cursor else None, limit=limit + 1
    )
    page = found[:limit]
    more = len(found) > limit
    return DeliveryPage(
        deliveries=[MessageView.of(m) for m in page], next_cursor=str(page[-1].id) if more else None
    )


def _message(session: SessionDep, endpoint: WebhookEndpoint, message_id: str) -> WebhookMessage:
    try:
        return webhooks.get_message(session, endpoint, message_id)
    except webhooks.UnknownEndpoint as error:
        raise HTTPException(404, str(error)) from None


@router.get("/{endpoint_id}/deliveries/{message_id}", response_model=MessageDetail)
def get_delivery(message_id: MessageId, endpoint: OwnEndpoint, session: SessionDep) -> MessageDetail:
    message = _message(session, endpoint, message_id)
    return MessageDetail(
        **MessageView.of(message).model_dump(),
        attempt_log=[AttemptView.of(a) for a in webhooks.attempts_of(session, message)],
    )


@router.post("/{endpoint_id}/deliveries/{message_id}/replay", response_model=MessageView, status_code=202)
def replay_delivery(message_id: MessageId, endpoint: OwnEndpoint, session: SessionDep) -> MessageView:
    """Send one message again (a new round of the retry schedule, the same webhook-id)."""
    message = _message(session, endpoint, message_id)
    webhooks.replay(session, endpoint, message.message_id)
    return MessageView.of(message)


@router.post("/{endpoint_id}/replay", response_model=Queued, status_code=202)
def replay_range(body: RangeReplay, endpoint: OwnEndpoint, session: SessionDep) -> Queued:
    """Send again the feed events of the endpoint's types that occurred in ``[since, until)``,
    including those from before the endpoint existed."""
    return Queued(
        queued=webhooks.replay_range(
            session, endpoint, since=body.since, until=body.until, only_failed=body.only_failed
        )
    )
