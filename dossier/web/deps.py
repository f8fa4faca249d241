"""Dependencies shared by the routers: settings, a warehouse session per request, the clock,
authentication (operator token, lender API keys), per-key rate limits and list paging.

Rate limits (:class:`RateLimiter`) count each lender API key's requests in fixed one-minute
windows with the ``limits`` library, in this process's memory or, for several service processes,
in Redis (``DOSSIER_RATE_LIMIT_STORAGE_URL``). Every response to a counted request carries the
``RateLimit-Policy`` and ``RateLimit`` fields of the IETF RateLimit header fields draft; a request
past the limit gets a 429 problem with ``Retry-After``.

Lists are paged (:class:`Paging`): ``limit`` (1 to :data:`MAX_LIST_PAGE`) and an opaque
``cursor``; the body stays the JSON array of the page, and when more follow the response carries
``Link: <...>; rel="next"`` (RFC 8288) and ``Next-Cursor``.
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import hmac
import json
import logging
import math
import time
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass
from typing import Annotated, Any, TypeVar
from urllib.parse import urlencode

import anyio
import anyio.to_thread
from fastapi import Depends, FastAPI, HTTPException, Query, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.routing import APIRoute
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from limits import RateLimitItemPerMinute
from limits.storage import MemoryStorage, storage_from_string
from limits.strategies import FixedWindowRateLimiter
from sqlalchemy.orm import Session, sessionmaker
from starlette.concurrency import run_in_threadpool

from dossier.settings import Settings
from dossier.web import problems
from warehouse import keys
from warehouse.db import make_engine
from warehouse.models import LenderKey
from warehouse.storage import Store

log = logging.getLogger(__name__)

bearer = HTTPBearer(auto_error=False)


async def settings_of(request: Request) -> Settings:
    """The settings the application was built with."""
    return request.app.state.settings


def sessions(app: Any) -> sessionmaker[Session]:
    """The application's session factory, made once: a factory per request would make a new
    ``Session`` class each time, and SQLAlchemy sets up its event dispatch per class."""
    state = app.state
    made = getattr(state, "sessions", None)
    if made is None or made.kw.get("bind") is not state.engine:
        made = state.sessions = sessionmaker(bind=state.engine, expire_on_commit=False)
    return made


def _finish(opened: Session, failed: bool) -> None:
    try:
        if failed:
            opened.rollback()
        else:
            opened.commit()
    finally:
        opened.close()


async def session(request: Request) -> AsyncIterator[Session]:
    """One warehouse transaction per request: committed when the route returns, rolled back on error.

    Opening it does no I/O (it connects at its first query, in the thread that runs it), so it is
    made on the event loop; the commit or rollback runs on the thread pool, as every query does.
    Dependencies and routes that do no I/O are ``async`` for the same reason: each sync one costs a
    trip through the thread pool.
    """
    opened = sessions(request.app)()
    # the end runs outside the thread pool's limit, as FastAPI runs a sync dependency's exit: a
    # request holding a pooled connection must be able to give it back while every thread of the
    # pool waits for one
    own = anyio.CapacityLimiter(1)
    try:
        yield opened
    except Exception:
        await _end(opened, True, own)
        raise
    await _end(opened, False, own)


async def _end(opened: Session, failed: bool, limiter: anyio.CapacityLimiter) -> None:
    """Commit or roll back on the thread pool; a session with no transaction left (the route
    ended it in its own thread, as the feed routes do to save a trip) is only closed, which does
    no I/O."""
    if opened.in_transaction():
        await anyio.to_thread.run_sync(_finish, opened, failed, limiter=limiter)
    else:
        opened.close()


async def store(request: Request) -> Store:
    return request.app.state.store


async def now() -> dt.datetime:
    """The instant a request is served at (UTC). Tests that play a clock of their own override it:
    ``app.dependency_overrides[deps.now] = lambda: instant``."""
    return dt.datetime.now(dt.UTC)


def operator(
    request: Request, credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)]
) -> str:
    """Require the operator's bearer token (``DOSSIER_OPERATOR_TOKEN``); returns the actor name."""
    expected = request.app.state.settings.kept_secret("operator_token")
    if credentials is None:
        raise HTTPException(401, "operator token required", headers={"WWW-Authenticate": "Bearer"})
    if not hmac.compare_digest(credentials.credentials.encode(), expected.encode()):
        raise HTTPException(403, "operator token not valid")
    return "operator"


def engine_for(settings: Settings):
    return make_engine(settings.warehouse_url)


SessionDep = Annotated[Session, Depends(session, scope="function")]
"""A session committed when the route returns, before the response is sent (so the next request sees it)."""
StoreDep = Annotated[Store, Depends(store)]
Operator = Annotated[str, Depends(operator)]
Now = Annotated[dt.datetime, Depends(now)]


# --- rate limits ----------------------------------------------------------------------------------

POLICY = "per-key"
"""The name of the one rate-limit policy, as the ``RateLimit-Policy`` and ``RateLimit`` fields give it."""


@dataclass(frozen=True)
class Quota:
    """Where one key stands in its current window after a request."""

    limit: int
    remaining: int
    reset_seconds: int
    """Whole seconds until the window ends (at least 1)."""
    window_seconds: int = 60

    def headers(self) -> dict[str, str]:
        """The RateLimit header fields (draft-ietf-httpapi-ratelimit-headers)."""
        return {
            "RateLimit-Policy": f'"{POLICY}";q={self.limit};w={self.window_seconds}',
            "RateLimit": f'"{POLICY}";r={self.remaining};t={self.reset_seconds}',
        }


class RateLimiter:
    """Fixed one-minute windows of ``per_minute`` requests per identity, counted in ``storage_url``
    (``memory://`` or ``redis://...``); ``per_minute`` 0 means no limit.

    >>> limiter = RateLimiter(2, "memory://")
    >>> [(allowed, quota.remaining) for allowed, quota in (limiter.hit("k"), limiter.hit("k"), limiter.hit("k"))]
    [(True, 1), (True, 0), (False, 0)]
    >>> limiter.hit("other")[0]
    True
    """

    def __init__(self, per_minute: int, storage_url: str, *, namespace: str = "sme-dossier") -> None:
        self.per_minute = per_minute
        self.namespace = namespace
        self.item = RateLimitItemPerMinute(per_minute) if per_minute else None
        self.storage = storage_from_string(storage_url) if per_minute else None
        self.strategy = FixedWindowRateLimiter(self.storage) if self.storage is not None else None
        self.local = self.storage is None or isinstance(self.storage, MemoryStorage)
        """True when counting does no I/O (no limit, or counters in this process's memory)."""

    @classmethod
    def of(cls, settings: Settings) -> RateLimiter:
        return cls(settings.rate_limit_per_minute, settings.rate_limit_storage_url)

    def hit(self, identity: str) -> tuple[bool, Quota | None]:
        """Count one request of ``identity``: whether it is allowed, and the quota left (None when
        there is no limit, or when the counter store cannot be reached: then the request is let
        through and a warning logged, so a Redis outage does not stop the API)."""
        if self.strategy is None or self.item is None:
            return True, None
        try:
            allowed = self.strategy.hit(self.item, self.namespace, identity)
            stats = self.strategy.get_window_stats(self.item, self.namespace, identity)
        except Exception as error:  # the counter store is down: serve rather than refuse everyone
            log.warning("rate-limit store unavailable (%s); request of %s not counted", error, identity)
            return True, None
        reset = max(1, math.ceil(stats.reset_time - time.time()))
        return allowed, Quota(self.per_minute, stats.remaining, min(reset, 60))

    def clear(self, identity: str) -> None:
        if self.strategy is not None and self.item is not None:
            self.strategy.clear(self.item, self.namespace, identity)


def rate_limiter(request: Request) -> RateLimiter:
    """The application's limiter, made from its settings on first use."""
    state = request.app.state
    limiter = getattr(state, "rate_limiter", None)
    if limiter is None:
        limiter = state.rate_limiter = RateLimiter.of(state.settings)
    return limiter


def count_request(request: Request, identity: str) -> None:
    """Count a request of ``identity`` (a key prefix); past the limit, a 429 with ``Retry-After``.

    The quota goes into the request state, and :class:`RateLimitHeaders` puts it on the response
    (whatever the route returns: a model, a Parquet file or a problem).
    """
    allowed, quota = rate_limiter(request).hit(identity)
    if quota is None:
        return
    request.state.rate_limit = quota
    if not allowed:
        raise HTTPException(
            429,
            f"rate limit of {quota.limit} requests per minute for this key reached; retry in "
            f"{quota.reset_seconds} s",
            headers={"Retry-After": str(quota.reset_seconds)},
        )


class RateLimitHeaders:
    """ASGI middleware: adds the RateLimit fields of a counted request to its response."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def sending(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                quota = scope.get("state", {}).get("rate_limit")
                if quota is not None:
                    extra = [(k.lower().encode(), v.encode()) for k, v in quota.headers().items()]
                    message = {**message, "headers": [*message.get("headers", []), *extra]}
            await send(message)

        await self.app(scope, receive, sending)


def _uses(dependant: Any, call: Callable[..., Any]) -> bool:
    return dependant.call is call or any(_uses(d, call) for d in dependant.dependencies)


def install(app: FastAPI) -> None:
    """Add what the dependencies need around the application: the rate-limit headers, and an
    OpenAPI document whose operations describe their errors (:func:`problems.complete_openapi`;
    429 on every route that takes a lender key)."""
    app.add_middleware(RateLimitHeaders)
    generate = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            limited = {
                (method, route.path)
                for route in app.routes
                if isinstance(route, APIRoute) and _uses(route.dependant, lender_key)
                for method in route.methods
            }
            app.openapi_schema = problems.complete_openapi(generate(), limited)
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]


# --- lender keys ----------------------------------------------------------------------------------


KEY_CACHE_SECONDS = 1.0
"""How long a service process trusts a key it verified without asking the warehouse again: the
bound on how long a key revoked (or rotated out) by another process (``dossier lender
revoke-key``, another worker) still works here. Revocations and rotations made through this
process take effect here at once (:class:`warehouse.keys.KeyCache`)."""


def key_cache(request: Request) -> keys.KeyCache:
    """The application's verified keys (:class:`warehouse.keys.KeyCache`), made on first use."""
    state = request.app.state
    cache = getattr(state, "key_cache", None)
    if cache is None:
        cache = state.key_cache = keys.KeyCache(KEY_CACHE_SECONDS)
    return cache


def _verify(session: Session, cache: keys.KeyCache, token: str, at: dt.datetime) -> LenderKey:
    seen = keys.generation()
    key = keys.authenticate(session, token, at=at)
    cache.put(token, key, at=at, seen=seen)
    return key


async def lender_key(
    request: Request,
    session: SessionDep,
    at: Now,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)],
) -> LenderKey:
    """Require a valid lender API key (``Authorization: Bearer sdk_...``); returns the key.

    No key or an unknown one: 401; a revoked key or one past its rotation grace period: 403. Each
    request of a valid key is counted against the key's rate limit (:func:`count_request`).

    A key verified in the last :data:`KEY_CACHE_SECONDS` by this process is taken from its
    :func:`key_cache` on the event loop; otherwise the warehouse is asked, on the thread pool. The
    rate limit is counted on the event loop when its counters are in this process's memory.
    """
    challenge = {"WWW-Authenticate": "Bearer"}
    if credentials is None:
        raise HTTPException(401, "API key required", headers=challenge)
    cache = key_cache(request)
    try:
        key = cache.get(credentials.credentials, at=at)
        if key is None:
            key = await run_in_threadpool(_verify, session, cache, credentials.credentials, at)
    except keys.UnknownKey as error:
        raise HTTPException(401, str(error), headers=challenge) from None
    except keys.KeyNotValid as error:
        raise HTTPException(403, str(error)) from None
    if rate_limiter(request).local:
        count_request(request, key.prefix)
    else:
        await run_in_threadpool(count_request, request, key.prefix)
    return key


LenderKeyDep = Annotated[LenderKey, Depends(lender_key)]


# --- paging ---------------------------------------------------------------------------------------

MAX_LIST_PAGE = 500
"""The most items one page of a list holds."""
DEFAULT_LIST_PAGE = 100

T = TypeVar("T")


def bad_cursor(message: str) -> RequestValidationError:
    """The 400 of a cursor that no page of this list gave (it names ``cursor``)."""
    return RequestValidationError(
        [{"loc": ("query", "cursor"), "msg": message, "type": "value_error", "input": None}]
    )


def encode_cursor(position: Sequence[str]) -> str:
    """The opaque cursor naming the item at ``position`` (its sort key).

    >>> encode_cursor(["SME-000001", "C-1"])
    'WyJTTUUtMDAwMDAxIiwiQy0xIl0'
    >>> decode_cursor(encode_cursor(["SME-000001", "C-1"]), 2)
    ('SME-000001', 'C-1')
    """
    raw = json.dumps(list(position), separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str, width: int) -> tuple[str, ...]:
    """The sort key a cursor of this list names; anything else is a 400 naming ``cursor``."""
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        position = json.loads(raw)
    except (binascii.Error, ValueError):
        raise bad_cursor("not a cursor this list returned") from None
    if (
        not isinstance(position, list)
        or len(position) != width
        or not all(isinstance(p, str) for p in position)
    ):
        raise bad_cursor("not a cursor this list returned")
    return tuple(position)


@dataclass(frozen=True)
class Paging:
    """The page a list request asks for: at most ``limit`` items after the one ``cursor`` names."""

    limit: int
    cursor: str | None

    def after(self, width: int) -> tuple[str, ...] | None:
        """The sort key (``width`` strings) of the last item already read; None for the first page."""
        return None if not self.cursor else decode_cursor(self.cursor, width)

    def page(
        self, request: Request, response: Response, rows: Sequence[T], position: Callable[[T], Sequence[str]]
    ) -> list[T]:
        """The first ``limit`` of ``rows`` (read with ``limit + 1``, in sort-key order); when more
        follow, the ``Link`` (rel="next") and ``Next-Cursor`` headers of the next page go on ``response``."""
        found = list(rows[: self.limit])
        if len(rows) > self.limit:
            cursor = encode_cursor(position(found[-1]))
            params = [(k, v) for k, v in request.query_params.multi_items() if k != "cursor"]
            link = f"{request.url.path}?{urlencode([*params, ('cursor', cursor)])}"
            response.headers["Link"] = f'<{link}>; rel="next"'
            response.headers["Next-Cursor"] = cursor
        return found


def paging(
    limit: Annotated[
        int, Query(ge=1, le=MAX_LIST_PAGE, description=f"Items per page (1 to {MAX_LIST_PAGE}).")
    ] = DEFAULT_LIST_PAGE,
    cursor: Annotated[
        str | None,
        Query(
            max_length=512,
            description='The Next-Cursor of the previous page (also in its Link rel="next"); '
            "absent for the first page.",
        ),
    ] = None,
) -> Paging:
    return Paging(limit, cursor)


PagingDep = Annotated[Paging, Depends(paging)]

LIST_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {
        "description": "One page of the list, in order.",
        "headers": {
            "Link": {
                "description": 'When more items follow: `<URL of the next page>; rel="next"` (RFC 8288).',
                "schema": {"type": "string"},
            },
            "Next-Cursor": {
                "description": "When more items follow: the cursor of the next page.",
                "schema": {"type": "string"},
            },
        },
    }
}
"""The documented response of a paged list route."""
