"""The lender API under ``/v1``: a lender's own identity, keys, subscriptions and feed.

Every route requires the lender's API key as a bearer token (:func:`lender_key`): no key or a key
nobody issued gets 401, a revoked key or one whose rotation grace period is over gets 403, and a
lender reaches only its own data (another lender's key prefix: 403). Keys are made by
``dossier lender add`` and stored hashed (:mod:`warehouse.keys`).

Subscriptions are made and changed by :func:`warehouse.feed.subscribe`, their filter values
checked by :func:`warehouse.feed.check_filters` (the same as ``dossier lender subscribe``): what a
subscription receives is decided by the feed alone, never here.

The feed (``GET /v1/feed``, ``GET /v1/feed.parquet``) pages the lender's feed log
(:mod:`warehouse.events`). Each read first runs :func:`warehouse.feed.refresh`: when anything that
can change the lender's deliveries changed since its last sync (a publish, a consent change, a
consent starting or expiring, the SME register, a subscription), the feed's own planning runs in
the request's transaction, so what a consent no longer allows is withdrawn before any page is
served; otherwise the read costs one query on the feed's state (:func:`warehouse.feed.fresh_state`)
and the page, which is built once per state and then served as kept bytes (:class:`PageCache`).
The events themselves never change order or identity, so a full page read again with the same
cursor is the same page (a delivered row withdrawn since comes back without its row).
"""

from __future__ import annotations

import datetime as dt
import gzip
import io
import threading
from collections import OrderedDict
from collections.abc import Callable
from typing import Annotated, Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from fastapi import APIRouter, Depends, HTTPException, Path, Query, Request, Response
from pydantic import BaseModel, ConfigDict, Field, field_validator
from sqlalchemy import func, select
from sqlalchemy.orm import Session
from starlette.concurrency import run_in_threadpool

from dossier.web.deps import (
    LIST_RESPONSES,
    LenderKeyDep,
    Now,
    PagingDep,
    SessionDep,
    StoreDep,
    bad_cursor,
)
from dossier.web.deps import lender_key as lender_key
from warehouse import events, keys
from warehouse.canonical import SOURCES
from warehouse.consent import DEFAULT_PURPOSE, PURPOSES
from warehouse.dossier_schema import ALL_COLUMNS, SCHEMA_VERSION
from warehouse.feed import FeedState, check_filters, fresh_state, refresh, subscribe
from warehouse.models import Delivery, Lender, Subscription

router = APIRouter(prefix="/v1", tags=["lender"])


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


@router.get("/keys", response_model=list[KeyView], responses=LIST_RESPONSES)
def list_keys(
    request: Request, response: Response, session: SessionDep, key: LenderKeyDep, at: Now, paging: PagingDep
) -> list[KeyView]:
    """The lender's keys, oldest first, by prefix and status (never the keys themselves)."""
    listed = keys.list_keys(session, key.lender_id, at=at)
    after = paging.after(1)
    if after is not None:
        prefixes = [v.prefix for v in listed]
        if after[0] not in prefixes:
            raise bad_cursor("not a cursor this list returned")
        listed = listed[prefixes.index(after[0]) + 1 :]
    found = paging.page(request, response, listed[: paging.limit + 1], lambda v: [v.prefix])
    return [KeyView.of(v) for v in found]


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
    """What a subscription restricts (an empty or absent list, or a null ``min_grade``, lets every
    value through).

    Values are checked against their vocabulary: grades A-E, size bands micro/small/medium, the
    sources, and the regions and industries of the registered SMEs; they match regardless of case.
    """

    model_config = ConfigDict(extra="forbid")

    grades: list[str] = Field(default_factory=list, examples=[["A", "B"]])
    industries: list[str] = Field(default_factory=list)
    regions: list[str] = Field(default_factory=list, examples=[["London"]])
    size_bands: list[str] = Field(default_factory=list, examples=[["micro", "small"]])
    min_grade: str | None = Field(
        None,
        examples=["B"],
        description="The worst grade delivered: grades run from A (best) to E; B lets A and B through.",
    )
    required_sources: list[str] = Field(
        default_factory=list,
        examples=[["accounting", "tax"]],
        description=f"Sources a dossier must have used, all of them (of: {', '.join(SOURCES)}).",
    )


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

    filters: dict[str, list[str] | str | None] = Field(
        default_factory=dict, examples=[{"grades": ["A", "B", "C"]}, {"min_grade": "C"}]
    )
    purpose: str | None = None

    _purpose = field_validator("purpose")(_check_purpose)

    @field_validator("filters")
    @classmethod
    def _known_keys(cls, value: dict[str, Any]) -> dict[str, Any]:
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


def _save(session: Session, lender_id: str, name: str, filters: dict[str, Any], purpose: str) -> Subscription:
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


@router.get("/subscriptions", response_model=list[SubscriptionView], responses=LIST_RESPONSES)
def list_subscriptions(
    request: Request, response: Response, session: SessionDep, key: LenderKeyDep, paging: PagingDep
) -> list[SubscriptionView]:
    """The lender's subscriptions by name."""
    query = select(Subscription).where(Subscription.lender_id == key.lender_id)
    after = paging.after(1)
    if after is not None:
        query = query.where(Subscription.name > after[0])
    rows = session.scalars(query.order_by(Subscription.name).limit(paging.limit + 1)).all()
    return [SubscriptionView.of(r) for r in paging.page(request, response, rows, lambda r: [r.name])]


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


# --- the feed -------------------------------------------------------------------------------------

MAX_PAGE = 1000
"""The most events one feed page holds."""

Cursor = Annotated[
    str | None,
    Query(
        max_length=20, description="The next_cursor of the previous page; empty for the start of the feed."
    ),
]
Limit = Annotated[int, Query(ge=1, le=MAX_PAGE, description=f"Events per page (1 to {MAX_PAGE}).")]


class FeedEventView(BaseModel):
    """One feed event: a version delivered to the lender, the tombstone of a withdrawn one, or what
    became of an offer the lender made on a version."""

    seq: int = Field(description="Position in the lender's feed; a cursor names the last one read.")
    event: str = Field(
        description="delivered or withdrawn; offer_accepted, offer_declined, offer_closed or offer_lapsed."
    )
    dossier_id: str
    sme_id: str
    occurred_at: dt.datetime = Field(description="When it was delivered, or when its consent ended.")
    reason: str | None = Field(
        description="For withdrawn: consent_revoked, consent_expired, consent_no_longer_covers or erased; "
        "for offer_lapsed: expired or version_withdrawn; for offer_closed: another_offer_accepted."
    )
    dossier: dict[str, Any] | None = Field(
        description="For delivered, while the lender still holds it: the dossier row (the dossier "
        "schema; values JSON cannot carry, such as NaN, as null)."
    )
    offer: dict[str, Any] | None = Field(
        default=None,
        description="For offer_accepted, offer_declined, offer_closed and offer_lapsed: your offer as it "
        "stood then (the body of GET /v1/offers/{offer_id}).",
    )


class FeedPage(BaseModel):
    """A page of the feed and the cursor of the next one."""

    events: list[FeedEventView]
    next_cursor: str = Field(description="Pass as cursor to read on; the same cursor returns the same page.")
    has_more: bool = Field(description="True when more events follow this page now.")


class PageCache:
    """Encoded feed pages kept in this process, at most ``max_bytes`` of them, least recently
    read dropped first; thread-safe (sync routes run on a thread pool).

    A page is kept under (lender, format, position, limit, :class:`~warehouse.feed.FeedState`):
    the state names every change that can alter a page (an event appended, a row emptied by a
    withdrawal or an erasure), so a page found under the state a read finds is exactly the page
    the read would build, and nothing needs invalidating: a changed feed simply has a new key.
    Only pages read from a feed that was already fresh are kept, never one built inside a
    transaction that has just synced (it might still roll back). Each server process keeps its
    own cache; several workers stay exact because the key comes from the warehouse, not the process.
    """

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self._pages: OrderedDict[tuple[Any, ...], tuple[bytes, dict[str, str]]] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()

    def get(self, key: tuple[Any, ...]) -> tuple[bytes, dict[str, str]] | None:
        """The body and headers kept under ``key`` (now the most recently read), or None."""
        with self._lock:
            found = self._pages.get(key)
            if found is not None:
                self._pages.move_to_end(key)
            return found

    def put(self, key: tuple[Any, ...], body: bytes, headers: dict[str, str]) -> None:
        """Keep ``body`` and ``headers`` under ``key``, dropping the least recently read beyond the bound."""
        if len(body) > self.max_bytes:
            return
        with self._lock:
            if key in self._pages:
                return
            self._pages[key] = (body, headers)
            self._bytes += len(body)
            while self._bytes > self.max_bytes:
                _, (dropped, _) = self._pages.popitem(last=False)
                self._bytes -= len(dropped)

    def __len__(self) -> int:
        return len(self._pages)

    def clear(self) -> None:
        """Forget every page."""
        with self._lock:
            self._pages.clear()
            self._bytes = 0


PAGE_CACHE_BYTES = 512 * 1024 * 1024
"""The most encoded page bytes one server process keeps (a page of 1,000 versions is about 1.5 MB)."""


async def page_cache(request: Request) -> PageCache:
    """The app's encoded feed pages (:class:`PageCache`), made at its first feed read: one per app
    and process, so never shared between two warehouses. It runs on the event loop (no thread pool
    trip), where nothing else runs at the same time."""
    state = request.app.state
    if getattr(state, "feed_pages", None) is None:
        state.feed_pages = PageCache(PAGE_CACHE_BYTES)
    return state.feed_pages


PagesDep = Annotated[PageCache, Depends(page_cache)]


def _position(
    session: Session, store: Any, lender_id: str, cursor: str | None, at: dt.datetime
) -> tuple[int, int, FeedState | None]:
    """Refresh the lender's feed as of ``at`` when it is stale, then (the position ``cursor``
    names, the newest event, the feed's state when it was fresh already so pages may be cached)."""
    state = fresh_state(session, lender_id, at)
    if state is None:
        refresh(session, store, lender_id, now=at)
        newest = events.last_seq(session, lender_id)
    else:
        newest = state.newest
    return events.parse_cursor(cursor, newest), newest, state


def _cached(
    pages: PageCache,
    form: str,
    session: Session,
    store: Any,
    lender_id: str,
    cursor: str | None,
    limit: int,
    at: dt.datetime,
    build: Callable[[int, int], tuple[bytes, int]],
    *,
    gzipped: bool = False,
) -> tuple[bytes, dict[str, str]]:
    """A feed page's body and headers in ``form``: from ``pages`` when the feed was fresh and
    the page was built before under the same state, else ``build(after, newest)`` (the body and
    the last ``seq`` it holds), kept when the feed was fresh. Pages stop at the newest event the
    state names, so an event appended meanwhile waits for the next page.

    With ``gzipped``, the body is the page's gzip encoding (``Content-Encoding: gzip``): kept as
    a variant of its own, compressed once, from the kept page when there is one. Compression is
    deterministic (no timestamp in the gzip header), so every process sends the same bytes."""
    after, newest, state = _position(session, store, lender_id, cursor, at)
    key = (lender_id, form, after, limit, state) if state is not None else None
    if key is not None:
        found = pages.get((*key, GZIP)) if gzipped else None
        if found is not None:
            return found
        found = pages.get(key)
    else:
        found = None
    if found is None:
        body, last = build(after, newest)
        headers = {"Feed-Next-Cursor": str(last), "Feed-Has-More": str(last < newest).lower()}
        if key is not None and not gzipped:
            pages.put(key, body, headers)
    else:
        body, headers = found
    if not gzipped:
        return body, headers
    packed = gzip.compress(body, compresslevel=GZIP_LEVEL, mtime=0)
    headers = {**headers, "Content-Encoding": GZIP}
    if key is not None:
        pages.put((*key, GZIP), packed, headers)
    return packed, headers


def _served(
    session: Session, serve: Callable[[], tuple[bytes, dict[str, str]]]
) -> tuple[bytes, dict[str, str]]:
    """``serve()`` then the commit of the request's transaction, in one trip to the thread pool
    (the session dependency then only closes the session): what a feed read synced is committed
    before its page is sent, as any route's work is."""
    served = serve()
    session.commit()
    return served


GZIP = "gzip"
GZIP_LEVEL = 6
"""zlib's default level: a page of 1,000 versions (1.7 MB of JSON) becomes about 190 kB, compressed
in about 15 ms once per kept page; level 1 saves half of that once but makes every client's
decompression slower (more bytes to inflate)."""


def accepts_gzip(accept_encoding: str | None) -> bool:
    """Whether an ``Accept-Encoding`` field value (RFC 9110, section 12.5.3) accepts gzip: the
    ``gzip`` (or ``x-gzip``) coding, or ``*``, with a weight above 0 (absent: 1).

    >>> [accepts_gzip(v) for v in (None, "", "gzip", "br, gzip;q=0.5", "gzip;q=0", "*", "identity", "GZip ; Q=1.0")]
    [False, False, True, True, False, True, False, True]
    >>> accepts_gzip("*, gzip;q=0"), accepts_gzip("gzip;q=nonsense")
    (False, False)
    """
    if not accept_encoding:
        return False
    weights: dict[str, float] = {}
    for item in accept_encoding.split(","):
        coding, _, params = item.partition(";")
        weight = 1.0
        for param in params.split(";"):
            name, _, value = param.partition("=")
            if name.strip().lower() == "q":
                try:
                    weight = float(value.strip())
                except ValueError:
                    weight = 0.0
        weights[coding.strip().lower()] = weight
    for coding in ("gzip", "x-gzip"):
        if coding in weights:
            return weights[coding] > 0
    return weights.get("*", 0.0) > 0


@router.get(
    "/feed",
    response_model=FeedPage,
    responses={
        200: {
            "headers": {
                "Feed-Next-Cursor": {"description": "The page's next_cursor.", "schema": {"type": "string"}},
                "Feed-Has-More": {"description": "true or false, as has_more.", "schema": {"type": "string"}},
            }
        }
    },
)
async def read_feed(
    request: Request,
    session: SessionDep,
    store: StoreDep,
    key: LenderKeyDep,
    pages: PagesDep,
    at: Now,
    cursor: Cursor = None,
    limit: Limit = 100,
) -> Response:
    """The versions newly delivered to this lender and the tombstones of withdrawn ones, in order
    (a :class:`FeedPage`; the next cursor is also in the ``Feed-Next-Cursor`` header). Sent
    gzip-compressed (``Content-Encoding: gzip``, about a ninth of the bytes) to a client that
    sends ``Accept-Encoding: gzip``."""
    gzipped = accepts_gzip(request.headers.get("accept-encoding"))

    def build(after: int, newest: int) -> tuple[bytes, int]:
        rows = events.page_rows(session, key.lender_id, after=after, limit=limit, upto=newest)
        last = rows[-1][0] if rows else after
        return events.page_json(rows, next_cursor=str(last), has_more=last < newest), last

    def serve() -> tuple[bytes, dict[str, str]]:
        return _cached(
            pages, "json", session, store, key.lender_id, cursor, limit, at, build, gzipped=gzipped
        )

    body, headers = await run_in_threadpool(_served, session, serve)
    return Response(body, media_type="application/json", headers={**headers, "Vary": "Accept-Encoding"})


EVENT_FIELDS = [
    pa.field(
        "feed_seq", pa.int64(), nullable=False, metadata={"description": "Position in the lender's feed."}
    ),
    pa.field("feed_event", pa.string(), nullable=False, metadata={"description": "delivered or withdrawn."}),
    pa.field(
        "event_at",
        pa.timestamp("s", tz="UTC"),
        nullable=False,
        metadata={"description": "When it was delivered, or when the consent that covered it ended."},
    ),
    pa.field(
        "withdrawal_reason",
        pa.string(),
        metadata={
            "description": "For withdrawn rows: consent_revoked, consent_expired, consent_no_longer_covers or erased."
        },
    ),
]


DOSSIER_FIELDS = pa.schema([pa.field(c.name, c.type) for c in ALL_COLUMNS])
"""The dossier columns of a Parquet feed page, after its event columns (:func:`page_schema`)."""


def page_schema(model_version: str) -> pa.Schema:
    """A feed page as Parquet: the event columns, then every dossier column (described as published;
    null in a withdrawn row but for ``dossier_id`` and ``sme_id``)."""
    dossier = [
        pa.field(
            c.name,
            c.type,
            nullable=c.name not in ("dossier_id", "sme_id"),
            metadata={"description": c.description},
        )
        for c in ALL_COLUMNS
    ]
    return pa.schema(
        [*EVENT_FIELDS, *dossier],
        metadata={
            "grain": "One row per feed event: a delivered dossier version or a withdrawn one.",
            "dossier_schema_version": str(SCHEMA_VERSION),
            "model_version": model_version,
        },
    )


@router.get(
    "/feed.parquet",
    response_class=Response,
    responses={
        200: {"content": {"application/vnd.apache.parquet": {}}, "description": "The page as Parquet."}
    },
)
async def read_feed_parquet(
    session: SessionDep,
    store: StoreDep,
    key: LenderKeyDep,
    pages: PagesDep,
    at: Now,
    cursor: Cursor = None,
    limit: Limit = MAX_PAGE,
) -> Response:
    """The same page as ``GET /v1/feed``, as one Parquet file; the next cursor is in the
    ``Feed-Next-Cursor`` header and the file metadata."""

    def build(after: int, newest: int) -> tuple[bytes, int]:
        rows = events.page_rows(session, key.lender_id, after=after, limit=limit, upto=newest)
        last = rows[-1][0] if rows else after
        return _parquet_page(rows, last, last < newest), last

    def serve() -> tuple[bytes, dict[str, str]]:
        return _cached(pages, "parquet", session, store, key.lender_id, cursor, limit, at, build)

    body, headers = await run_in_threadpool(_served, session, serve)
    return Response(body, media_type="application/vnd.apache.parquet", headers=headers)


def _parquet_page(rows: list[tuple[Any, ...]], last: int, more: bool) -> bytes:
    """Feed events (rows of :func:`warehouse.events.page_rows`) as the Parquet file of
    ``GET /v1/feed.parquet`` (:func:`page_schema`): the kept dossier rows are parsed by Arrow's
    JSON reader in one call (:func:`warehouse.events.json_rows_table`); a row no longer held (a
    withdrawal, or a row the law emptied) has only its ``dossier_id`` and ``sme_id``."""
    texts = [
        text if text is not None else events.row_json({"dossier_id": dossier_id, "sme_id": sme_id})
        for _seq, _kind, dossier_id, sme_id, _at, _reason, text, _offer in rows
    ]
    dossiers = events.json_rows_table(texts, DOSSIER_FIELDS)
    models = pc.unique(dossiers.column("model_version").drop_null()).to_pylist()
    schema = page_schema(",".join(sorted(m for m in models if m)))
    fields = {f.name: f for f in schema}
    event_columns = [
        pa.array([row[0] for row in rows], fields["feed_seq"].type),
        pa.array([row[1] for row in rows], fields["feed_event"].type),
        pa.array([row[4] for row in rows], fields["event_at"].type),
        pa.array([row[5] for row in rows], fields["withdrawal_reason"].type),
    ]
    table = pa.Table.from_arrays([*event_columns, *dossiers.columns], schema=schema).replace_schema_metadata(
        {**schema.metadata, b"next_cursor": str(last).encode(), b"has_more": str(more).lower().encode()}
    )
    buffer = io.BytesIO()
    pq.write_table(table, buffer)
    return buffer.getvalue()


@router.get("/dossiers/{dossier_id}", response_model=dict[str, Any])
def read_dossier(dossier_id: str, session: SessionDep, store: StoreDep, key: LenderKeyDep) -> dict[str, Any]:
    """One dossier version as delivered to this lender, while it holds it (else 404); like a feed
    read, it first withdraws what the consents no longer allow."""
    refresh(session, store, key.lender_id)
    row = events.held_row(session, key.lender_id, dossier_id)
    if row is None:
        raise HTTPException(404, f"you hold no dossier {dossier_id!r}")
    return events.json_safe(row)
