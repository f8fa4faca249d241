"""The sandbox HTTP server: four provider APIs over one universe, on a real socket.

Each provider lives under its source's prefix (``/accounting``, ``/tax``, ``/utility``,
``/survey``) and speaks the wire shape of ``connectors/PROVIDERS.md``: OAuth2 refresh-token grants
with short-lived bearer tokens (accounting, tax, utility), a KoboToolbox API token (survey), paging,
the HMRC 366-day range rule, HMRC's fraud-prevention headers (``BATCH_PROCESS_DIRECT``,
:mod:`connectors.sandbox.fraud_check`) and HMRC's error bodies. With ``fault_rate`` > 0 a share of responses
is a 429 with ``Retry-After`` or a transient 5xx, decided by a hash of (``fault_seed``, request,
attempt number), so a run is reproducible and a retried request eventually gets through.

Use it as a context manager in tests and the demo::

    with SandboxServer(universe) as server:
        base_url = server.url          # e.g. http://127.0.0.1:41237
        ...

or run :func:`serve_forever` (``dossier sandbox serve``).
"""

from __future__ import annotations

import base64
import datetime as dt
import functools
import hashlib
import hmac
import html
import json
import re
import socket
import threading
import time
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any
from urllib.parse import parse_qs

import uvicorn
from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from connectors.core.http import UNKNOWN_ACCOUNT
from connectors.sandbox import fraud_check, providers
from connectors.sandbox.auth import (
    SCOPES,
    AccessCheck,
    SandboxCredentials,
    TokenIssuer,
    issue_credentials,
    kobo_asset_uid,
)
from connectors.sandbox.authorize import (
    CODE_TTL_SECONDS,
    OAUTH_SOURCES,
    AuthorizationCodes,
    PendingCode,
    approval_page,
    authorize_error,
    redirect_target,
)
from connectors.sandbox.universe import SOURCES_REFS, SmeRecord, Universe

HMRC_ACCEPT = "application/vnd.hmrc.1.0+json"
MAX_VAT_RANGE_DAYS = 366
ACCOUNTING_MAX_PAGE_SIZE = 100
ESPI_DEFAULT_RESULTS, ESPI_MAX_RESULTS = 50, 500
KOBO_DEFAULT_LIMIT, KOBO_MAX_LIMIT = 100, 1000
FAULT_STATUSES = (429, 429, 500, 502, 503, 504)
"""Fault mix: a third are 429 (with Retry-After 0-1 s), the rest transient 5xx."""

Scope = MutableMapping[str, Any]
Route = tuple[str, str, Callable[[Request], Awaitable[Response]]]
"""(method, path under the provider prefix, handler)."""
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


def _json(status: int, payload: object, headers: dict[str, str] | None = None) -> Response:
    return Response(providers.json_bytes(payload), status, headers=headers, media_type="application/json")


class ProviderError(Exception):
    """An error answer in the provider's own shape."""

    def __init__(self, status: int, payload: object, headers: dict[str, str] | None = None) -> None:
        super().__init__(status, payload)
        self.response = _json(status, payload, headers)


def _hmrc_error(status: int, code: str, message: str) -> ProviderError:
    return ProviderError(status, {"code": code, "message": message})


def _problem(status: int, code: str, message: str) -> ProviderError:
    return ProviderError(status, {"code": code, "message": message})


def _bearer_challenge(problem: str) -> ProviderError:
    return ProviderError(
        401,
        {"error": "invalid_token", "error_description": problem},
        {"WWW-Authenticate": f'Bearer error="invalid_token", error_description="{problem}"'},
    )


class FaultInjector:
    """ASGI middleware answering a share of requests with 429 or a transient 5xx.

    The decision for the n-th attempt at one (method, path, query) is a hash of the fault seed,
    the request and n, so the sequence of faults is the same on every run, whatever the order in
    which concurrent requests arrive.
    """

    def __init__(self, app: ASGIApp, rate: float, seed: int) -> None:
        if not 0.0 <= rate < 1.0:
            raise ValueError(f"fault_rate must be in [0, 1), got {rate}")
        self.app, self.rate, self.seed = app, rate, seed
        self.attempts: dict[str, int] = {}
        self.injected = 0
        self.requests = 0
        self._lock = threading.Lock()

    def _draw(self, key: str) -> tuple[float, int]:
        with self._lock:
            attempt = self.attempts.get(key, 0)
            self.attempts[key] = attempt + 1
        digest = hashlib.sha256(f"{self.seed}|{key}|{attempt}".encode()).digest()
        return int.from_bytes(digest[:8], "big") / 2**64, digest[8]

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or self.rate == 0.0 or scope["path"] == "/health":
            await self.app(scope, receive, send)
            return
        self.requests += 1
        key = f"{scope['method']} {scope['path']}?{scope.get('query_string', b'').decode()}"
        draw, pick = self._draw(key)
        if draw >= self.rate:
            await self.app(scope, receive, send)
            return
        self.injected += 1
        status = FAULT_STATUSES[pick % len(FAULT_STATUSES)]
        headers = [(b"content-type", b"application/json")]
        if status == 429:
            headers.append((b"retry-after", str(pick % 2).encode()))
            body = {
                "code": "MESSAGE_THROTTLED_OUT",
                "message": "Too many requests; retry after the given delay.",
            }
        else:
            body = {
                "code": "SERVER_ERROR",
                "message": f"Transient upstream failure ({status}); please retry.",
            }
        payload = providers.json_bytes(body)
        headers.append((b"content-length", str(len(payload)).encode()))
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": payload})


class SandboxServer:
    """The four sandbox providers over ``universe``, served by uvicorn in a background thread.

    ``start()`` binds ``host``:``port`` (``port=0``: a free port) and returns the base URL; every
    provider's base URL is that plus its source prefix (``/accounting`` ...).
    """

    def __init__(
        self,
        universe: Universe,
        *,
        fault_rate: float = 0.0,
        token_ttl_seconds: float = 300,
        fault_seed: int = 0,
        credentials: SandboxCredentials | None = None,
        host: str = "127.0.0.1",
        port: int = 0,
    ) -> None:
        if token_ttl_seconds <= 0:
            raise ValueError(f"token_ttl_seconds must be positive, got {token_ttl_seconds}")
        self.universe = universe
        self.fault_rate = fault_rate
        self.token_ttl_seconds = token_ttl_seconds
        self.fault_seed = fault_seed
        self.credentials = credentials or SandboxCredentials()
        self.host, self.port = host, port
        self.issuer = TokenIssuer(universe.seed)
        self.asset_uid = kobo_asset_uid(universe.seed)
        self.faults = FaultInjector(self._build_app(), fault_rate, fault_seed)
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None
        self._url: str | None = None
        self._reports = functools.lru_cache(maxsize=4096)(self._render_reports)
        self._entries = functools.lru_cache(maxsize=4096)(self._render_entries)
        self._submissions = functools.lru_cache(maxsize=4096)(self._render_submissions)
        self._kobo_tokens: dict[str, str] | None = None
        self.codes = AuthorizationCodes()

    # -- lifecycle ------------------------------------------------------------------------------------------

    @property
    def app(self) -> ASGIApp:
        """The ASGI application (with fault injection), for serving it some other way."""
        return self.faults

    @property
    def url(self) -> str:
        if self._url is None:
            raise RuntimeError("the sandbox server is not running: call start() first")
        return self._url

    def start(self, timeout: float = 15.0) -> str:
        """Serve in a background thread; returns the base URL once the socket accepts connections."""
        if self._thread is not None:
            return self.url
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((self.host, self.port))
        host, port = sock.getsockname()[:2]
        config = uvicorn.Config(
            self.app, log_level="warning", access_log=False, lifespan="off", timeout_keep_alive=30
        )
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(
            target=self._server.run, kwargs={"sockets": [sock]}, name="sandbox-server", daemon=True
        )
        self._thread.start()
        deadline = time.monotonic() + timeout
        while not self._server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"the sandbox server did not start on {host}:{port} within {timeout}s")
            time.sleep(0.01)
        self._url = f"http://{host}:{port}"
        return self._url

    def stop(self) -> None:
        """Stop serving and wait for the thread to end."""
        if self._server is not None:
            self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(timeout=15)
        self._server = self._thread = None
        self._url = None

    def __enter__(self) -> SandboxServer:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- what the seed needs ----------------------------------------------------------------------------

    def credentials_for(self, sme_id: str) -> dict[str, dict[str, str]]:
        """Per source, the credentials a connector uses for ``sme_id`` (as the seed stores them)."""
        profile = self.universe.sme(sme_id).profile
        return {
            source: issue_credentials(self.universe.seed, source, getattr(profile, ref))
            for source, ref in SOURCES_REFS.items()
        }

    # -- cached renderings --------------------------------------------------------------------------------

    def _render_reports(self, index: int) -> list[dict[str, object]]:
        return providers.accounting_reports(self.universe.sme(index), self.universe.seed)

    def _render_entries(self, index: int, resource_url: str) -> list[providers.EspiEntry]:
        record = self.universe.sme(index)
        return providers.espi_entries(
            record,
            resource_url=resource_url,
            subscription_id=record.profile.subscription_id,
            seed=self.universe.seed,
        )

    def _render_submissions(self, index: int, attachment_url: str) -> list[dict[str, object]]:
        return providers.kobo_submissions(
            self.universe.sme(index),
            asset_uid=self.asset_uid,
            attachment_url=attachment_url,
            seed=self.universe.seed,
            as_of=self.universe.as_of,
        )

    # -- auth helpers -----------------------------------------------------------------------------------------

    def _now_ms(self) -> int:
        return int(time.time() * 1000)

    async def _token(self, request: Request, source: str) -> Response:
        """RFC 6749 refresh-token grant; client credentials in the form body or HTTP Basic."""
        form = {k: v[0] for k, v in parse_qs((await request.body()).decode("utf-8", "replace")).items()}
        client_id, client_secret = form.get("client_id"), form.get("client_secret")
        authorization = request.headers.get("authorization", "")
        if authorization.lower().startswith("basic "):
            try:
                client_id, _, client_secret = base64.b64decode(authorization[6:]).decode().partition(":")
            except ValueError:
                client_id = client_secret = None
        if not self.credentials.matches(client_id, client_secret):
            return _json(
                401,
                {"error": "invalid_client", "error_description": "unknown client or wrong client secret"},
                {"WWW-Authenticate": 'Basic realm="sandbox"'},
            )
        if form.get("grant_type") == "authorization_code":
            account, problem = self.codes.redeem(
                source,
                form.get("code", ""),
                client_id or "",
                form.get("redirect_uri", ""),
                form.get("code_verifier", ""),
            )
            if account is None:
                return _json(400, {"error": "invalid_grant", "error_description": problem})
            refresh = self.issuer.refresh_token(source, account)
        elif form.get("grant_type") != "refresh_token":
            return _json(
                400,
                {
                    "error": "unsupported_grant_type",
                    "error_description": "only grant_type=refresh_token or authorization_code is supported",
                },
            )
        else:
            refresh = form.get("refresh_token", "")
        account = self.issuer.refresh_account(source, refresh)
        if account is not None and self.universe.account_index(source, account) is None:
            return self._unknown_account(source, account)
        if account is None:
            return _json(
                400,
                {
                    "error": "invalid_grant",
                    "error_description": f"refresh token not valid for the {source} provider",
                },
            )
        expires_at_ms = self._now_ms() + int(self.token_ttl_seconds * 1000)
        return _json(
            200,
            {
                "access_token": self.issuer.access_token(source, account, expires_at_ms),
                "token_type": "Bearer",
                "expires_in": max(1, int(self.token_ttl_seconds)),
                "refresh_token": refresh,
                "scope": SCOPES[source],
            },
            {"Cache-Control": "no-store"},
        )

    def _unknown_account(self, source: str, account: str) -> Response:
        """404 for a genuine credential of an account this universe does not have (a configuration error)."""
        return _json(
            404,
            {
                "error": UNKNOWN_ACCOUNT,
                "error_description": f"no account {account!r} at the {source} provider: this sandbox "
                f"serves a universe of {self.universe.size} SMEs (seed {self.universe.seed})",
            },
        )

    def _bearer(self, request: Request, source: str) -> AccessCheck:
        authorization = request.headers.get("authorization", "")
        if not authorization.lower().startswith("bearer "):
            return AccessCheck(None, "missing bearer token")
        return self.issuer.check_access(source, authorization[7:].strip(), self._now_ms())

    def _account_record(self, source: str, account_ref: str) -> SmeRecord | None:
        return self.universe.lookup(source, account_ref)

    # -- the application ------------------------------------------------------------------------------------

    def _build_app(self) -> FastAPI:
        app = FastAPI(title="sme-dossier provider sandbox", openapi_url=None, docs_url=None, redoc_url=None)

        @app.exception_handler(ProviderError)
        async def provider_error(_: Request, error: ProviderError) -> Response:
            return error.response

        @app.get("/health")
        async def health() -> Response:
            return _json(
                200,
                {
                    "status": "ok",
                    "seed": self.universe.seed,
                    "smes": self.universe.size,
                    "as_of": self.universe.as_of.isoformat(),
                    "providers": ["/accounting", "/tax", "/utility", "/survey"],
                },
            )

        # Plain Starlette routes: handlers parse their own parameters so errors keep each provider's shape.
        for prefix, routes in (
            ("/accounting", self._accounting_routes()),
            ("/tax", self._tax_routes()),
            ("/utility", self._utility_routes()),
            ("/survey", self._survey_routes()),
        ):
            for method, path, endpoint in routes:
                app.add_route(prefix + path, endpoint, methods=[method])
        for source in OAUTH_SOURCES:
            app.add_route(
                f"/{source}/oauth/authorize", self._authorize_endpoint(source), methods=["GET", "POST"]
            )
        return app

    def _authorize_endpoint(self, source: str) -> Callable[[Request], Awaitable[Response]]:
        """The provider's authorization endpoint: its approval page (GET) and the holder's answer (POST)."""

        async def authorize(request: Request) -> Response:
            if request.method == "POST":
                body = parse_qs((await request.body()).decode("utf-8", "replace"))
                params = {k: v[0] for k, v in body.items()}
            else:
                params = dict(request.query_params)
            account = params.get("login_hint", "")
            known = bool(account) and self.universe.account_index(source, account) is not None
            problem = authorize_error(params, self.credentials.client_id, known)
            if problem:
                return HTMLResponse(
                    f"<!doctype html><title>Request refused</title><p>{html.escape(problem)}</p>", 400
                )
            if request.method == "GET":
                return HTMLResponse(approval_page(source, params, SCOPES[source]))
            if params.get("decision") != "approve":
                return RedirectResponse(redirect_target(params, error="access_denied"), 303)
            code = self.codes.issue(
                PendingCode(
                    source,
                    account,
                    params["client_id"],
                    params["redirect_uri"],
                    params["code_challenge"],
                    time.time() + CODE_TTL_SECONDS,
                )
            )
            return RedirectResponse(redirect_target(params, code=code), 303)

        return authorize

    def _accounting_routes(self) -> list[Route]:

        async def token(request: Request) -> Response:
            return await self._token(request, "accounting")

        def tenant(request: Request) -> tuple[SmeRecord, str | None, str | None]:
            """The tenant the bearer token grants, and the ``from``/``to`` months asked for."""
            tenant_id = request.path_params["tenant_id"]
            access = self._bearer(request, "accounting")
            if access.account_ref is None:
                raise _bearer_challenge(access.problem)
            if access.account_ref != tenant_id:
                raise _problem(403, "forbidden", f"the access token does not grant tenant {tenant_id}")
            record = self._account_record("accounting", tenant_id)
            if record is None:
                raise _problem(404, "tenant_not_found", f"no tenant {tenant_id}")
            query = request.query_params
            period_from, period_to = query.get("from"), query.get("to")
            for name, value in (("from", period_from), ("to", period_to)):
                if value is not None and not re.fullmatch(r"\d{4}-(0[1-9]|1[0-2])", value):
                    raise _problem(400, "invalid_parameter", f"{name}={value!r} is not a month YYYY-MM")
            return record, period_from, period_to

        async def saft_export(request: Request) -> Response:
            record, period_from, period_to = tenant(request)
            body = providers.saft_export(record, period_from=period_from, period_to=period_to)
            return Response(body, 200, media_type="application/xml")

        async def bank_statement(request: Request) -> Response:
            record, period_from, period_to = tenant(request)
            body = providers.ofx_statement(
                record, self.universe.seed, period_from=period_from, period_to=period_to
            )
            return Response(body, 200, media_type="application/x-ofx")

        async def monthly_reports(request: Request) -> Response:
            record, period_from, period_to = tenant(request)
            tenant_id = request.path_params["tenant_id"]
            query = request.query_params
            page = _int_param(query.get("page"), 1, "page", 1, None)
            page_size = _int_param(query.get("page_size"), 12, "page_size", 1, ACCOUNTING_MAX_PAGE_SIZE)
            payload = providers.accounting_page(
                self._reports(record.index),
                tenant_id=tenant_id,
                path=request.url.path,
                period_from=period_from,
                period_to=period_to,
                page=page,
                page_size=page_size,
            )
            return _json(200, payload)

        return [
            ("POST", "/oauth/token", token),
            ("GET", "/v1/tenants/{tenant_id}/reports/monthly", monthly_reports),
            ("GET", "/v1/tenants/{tenant_id}/exports/saft", saft_export),
            ("GET", "/v1/tenants/{tenant_id}/bank/statement.ofx", bank_statement),
        ]

    def _tax_routes(self) -> list[Route]:

        async def token(request: Request) -> Response:
            return await self._token(request, "tax")

        def authorise(request: Request, vrn: str) -> SmeRecord:
            if HMRC_ACCEPT not in request.headers.get("accept", ""):
                raise _hmrc_error(406, "ACCEPT_HEADER_INVALID", "The accept header is missing or invalid")
            access = self._bearer(request, "tax")
            if access.account_ref is None:
                if access.problem == "missing bearer token":
                    raise _hmrc_error(
                        401, "MISSING_CREDENTIALS", "Authentication information is not provided"
                    )
                raise _hmrc_error(401, "INVALID_CREDENTIALS", "Invalid Authentication information provided")
            wrong_headers = fraud_check.problems(request.headers)
            if wrong_headers:
                raise ProviderError(400, fraud_check.error_body(wrong_headers))
            if not re.fullmatch(r"\d{9}", vrn):
                raise _hmrc_error(400, "VRN_INVALID", "The provided VRN is invalid")
            if access.account_ref != vrn:
                raise _hmrc_error(
                    403, "CLIENT_OR_AGENT_NOT_AUTHORISED", "The client and/or agent is not authorised"
                )
            record = self._account_record("tax", vrn)
            if record is None:
                raise _hmrc_error(404, "NOT_FOUND", "The requested resource could not be found")
            return record

        async def obligations(request: Request) -> Response:
            record = authorise(request, request.path_params["vrn"])
            query = request.query_params
            status = query.get("status")
            if status is not None and status not in ("F", "O"):
                raise _hmrc_error(
                    400, "INVALID_STATUS", "The provided data is failed validation, invalid status"
                )
            date_from = _hmrc_date(
                query.get("from"), "INVALID_DATE_FROM", "The provided from date is invalid", status
            )
            date_to = _hmrc_date(
                query.get("to"), "INVALID_DATE_TO", "The provided to date is invalid", status
            )
            if (
                date_from is not None
                and date_to is not None
                and (date_to < date_from or (date_to - date_from).days > MAX_VAT_RANGE_DAYS)
            ):
                raise _hmrc_error(400, "INVALID_DATE_RANGE", "Invalid date range, must be 366 days or less")
            found = providers.vat_obligations(record, date_from=date_from, date_to=date_to, status=status)
            return _json(200, {"obligations": found}, _correlation(request))

        async def vat_return(request: Request) -> Response:
            record = authorise(request, request.path_params["vrn"])
            period_key = request.path_params["period_key"]
            if not re.fullmatch(r"[A-Za-z0-9#]{4}", period_key):
                raise _hmrc_error(400, "PERIOD_KEY_INVALID", "Invalid period key")
            found = providers.vat_return(record, period_key)
            if found is None:
                raise _hmrc_error(404, "NOT_FOUND", "The requested resource could not be found")
            return _json(200, found, _correlation(request))

        return [
            ("POST", "/oauth/token", token),
            ("GET", "/organisations/vat/{vrn}/obligations", obligations),
            ("GET", "/organisations/vat/{vrn}/returns/{period_key}", vat_return),
        ]

    def _utility_routes(self) -> list[Route]:

        async def token(request: Request) -> Response:
            return await self._token(request, "utility")

        async def subscription(request: Request) -> Response:
            subscription_id = request.path_params["subscription_id"]
            access = self._bearer(request, "utility")
            if access.account_ref is None:
                raise _bearer_challenge(access.problem)
            if access.account_ref != subscription_id:
                raise ProviderError(
                    403,
                    {
                        "error": "insufficient_scope",
                        "error_description": "token does not cover this subscription",
                    },
                )
            record = self._account_record("utility", subscription_id)
            if record is None:
                raise ProviderError(
                    404, {"error": "not_found", "error_description": f"no subscription {subscription_id}"}
                )
            query = request.query_params
            published_min = _espi_instant(query.get("published-min"), "published-min")
            published_max = _espi_instant(query.get("published-max"), "published-max")
            start_index = _int_param(query.get("start-index"), 1, "start-index", 1, None, espi=True)
            max_results = _int_param(
                query.get("max-results"), ESPI_DEFAULT_RESULTS, "max-results", 1, ESPI_MAX_RESULTS, espi=True
            )
            base = _mount(request)
            entries = [
                e
                for e in self._entries(record.index, f"{base}/utility/espi/1_1/resource")
                if not e.filterable
                or (
                    (published_min is None or e.published >= published_min)
                    and (published_max is None or e.published <= published_max)
                )
            ]
            page = entries[start_index - 1 : start_index - 1 + max_results]
            self_url = _relative(request.url)
            next_url = None
            if start_index - 1 + max_results < len(entries):
                next_url = _relative(
                    request.url.include_query_params(**{"start-index": start_index + max_results})
                )
            feed = providers.espi_feed(
                page,
                feed_id=providers.stable_uuid(self.universe.seed, "feed", subscription_id),
                updated=int(dt.datetime.combine(self.universe.as_of, dt.time(), dt.UTC).timestamp()),
                self_url=self_url,
                next_url=next_url,
            )
            return Response(feed.encode(), 200, media_type="application/atom+xml")

        return [
            ("POST", "/oauth/token", token),
            ("GET", "/espi/1_1/resource/Batch/Subscription/{subscription_id}", subscription),
        ]

    def _survey_routes(self) -> list[Route]:

        async def data(request: Request) -> Response:
            asset_uid = request.path_params["asset_uid"]
            authorization = request.headers.get("authorization", "")
            if not authorization.lower().startswith("token "):
                raise ProviderError(401, {"detail": "Authentication credentials were not provided."})
            token = authorization[6:].strip()
            sme_code = self._kobo_token_owner(token)
            if sme_code is None:
                asked = _queried_sme_code(request.query_params.get("query"))
                if asked is not None and hmac.compare_digest(self.issuer.api_token(asked), token):
                    return self._unknown_account("survey", asked)
                raise ProviderError(401, {"detail": "Invalid token."})
            if asset_uid != self.asset_uid:
                raise ProviderError(404, {"detail": "Not found."})
            query = request.query_params
            if query.get("format", "json") != "json":
                raise ProviderError(400, {"detail": "Only format=json is served."})
            start = _int_param(query.get("start"), 0, "start", 0, None, kobo=True)
            limit = _int_param(query.get("limit"), KOBO_DEFAULT_LIMIT, "limit", 1, KOBO_MAX_LIMIT, kobo=True)
            raw_query = query.get("query")
            conditions: dict[str, object] = {}
            if raw_query is not None:
                try:
                    conditions = json.loads(raw_query)
                except ValueError as error:
                    raise ProviderError(400, {"detail": f"Invalid query: {error}"}) from error
                if not isinstance(conditions, dict):
                    raise ProviderError(400, {"detail": "Invalid query: expected a JSON object"})
            record = self._account_record("survey", sme_code)
            base = _mount(request)
            data_url = f"{base}/survey/api/v2/assets/{asset_uid}/data"
            submissions = [] if record is None else self._submissions(record.index, data_url)
            try:
                matching = [s for s in submissions if _matches(s, conditions)]
            except ValueError as error:
                raise ProviderError(400, {"detail": f"Invalid query: {error}"}) from error
            return _json(
                200,
                providers.kobo_page(
                    matching, data_url=f"{data_url}/", query=raw_query, start=start, limit=limit
                ),
            )

        return [("GET", "/api/v2/assets/{asset_uid}/data/", data)]

    def _kobo_token_owner(self, token: str) -> str | None:
        """The ``sme_code`` whose submissions ``token`` may read (index built once per server)."""
        if self._kobo_tokens is None:
            codes = self.universe.accounts("survey")
            self._kobo_tokens = {self.issuer.api_token(code): code for code in codes}
        return self._kobo_tokens.get(token)


def _queried_sme_code(raw_query: str | None) -> str | None:
    """The ``sme_code`` a Kobo ``query`` asks for, if it names one."""
    try:
        conditions = json.loads(raw_query or "")
    except ValueError:
        return None
    code = conditions.get("sme_code") if isinstance(conditions, dict) else None
    return code if isinstance(code, str) else None


QUERY_OPERATORS: dict[str, Callable[[Any, Any], bool]] = {
    "$eq": lambda value, operand: value == operand,
    "$ne": lambda value, operand: value != operand,
    "$gt": lambda value, operand: value is not None and value > operand,
    "$gte": lambda value, operand: value is not None and value >= operand,
    "$lt": lambda value, operand: value is not None and value < operand,
    "$lte": lambda value, operand: value is not None and value <= operand,
    "$in": lambda value, operand: value in operand,
}
"""The subset of KoboToolbox's Mongo query language the sandbox understands (top-level fields)."""


def _matches(submission: dict[str, object], conditions: dict[str, object]) -> bool:
    """Whether a submission satisfies a Kobo ``query``: equality or ``{"$op": operand}`` per field."""
    for field, condition in conditions.items():
        value = submission.get(field)
        if not isinstance(condition, dict):
            if value != condition:
                return False
            continue
        for operator, operand in condition.items():
            if operator not in QUERY_OPERATORS:
                raise ValueError(f"unsupported operator {operator!r}; supported: {sorted(QUERY_OPERATORS)}")
            try:
                if not QUERY_OPERATORS[operator](value, operand):
                    return False
            except TypeError as error:
                raise ValueError(f"cannot compare {field}={value!r} with {operator} {operand!r}") from error
    return True


def _int_param(
    raw: str | None,
    default: int,
    name: str,
    minimum: int,
    maximum: int | None,
    *,
    espi: bool = False,
    kobo: bool = False,
) -> int:
    """An integer query parameter within bounds, else a 400 in the provider's error shape."""
    if raw is None:
        return default
    valid = raw.isdigit() and int(raw) >= minimum and (maximum is None or int(raw) <= maximum)
    if valid:
        return int(raw)
    bounds = f">= {minimum}" + (f" and <= {maximum}" if maximum is not None else "")
    message = f"{name}={raw!r} must be an integer {bounds}"
    if espi:
        raise ProviderError(400, {"error": "invalid_request", "error_description": message})
    if kobo:
        raise ProviderError(400, {"detail": message})
    raise _problem(400, "invalid_parameter", message)


def _hmrc_date(raw: str | None, code: str, message: str, status: str | None) -> dt.date | None:
    """An HMRC ``from``/``to`` date; mandatory unless only open obligations (``status=O``) are asked for."""
    if raw is None:
        if status == "O":
            return None
        raise _hmrc_error(400, code, message)
    try:
        if not re.fullmatch(r"\d{4}-\d{2}-\d{2}", raw):
            raise ValueError(raw)
        return dt.date.fromisoformat(raw)
    except ValueError as error:
        raise _hmrc_error(400, code, message) from error


def _espi_instant(raw: str | None, name: str) -> int | None:
    """An ESPI ``published-min``/``published-max`` (ISO 8601 instant, ``Z`` or offset) as epoch seconds."""
    if raw is None:
        return None
    try:
        moment = dt.datetime.fromisoformat(raw)
    except ValueError as error:
        raise ProviderError(
            400,
            {"error": "invalid_request", "error_description": f"{name}={raw!r} is not an ISO 8601 instant"},
        ) from error
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=dt.UTC)
    return int(moment.timestamp())


def _mount(request: Request) -> str:
    """Root path the app is served under (links in payloads are root-relative, so the bytes of a
    payload never depend on the host or port the sandbox happens to listen on)."""
    return str(request.scope.get("root_path", "")).rstrip("/")


def _relative(url: Any) -> str:
    """``path?query`` of a request URL, without scheme, host and port."""
    return f"{url.path}?{url.query}" if url.query else str(url.path)


def _correlation(request: Request) -> dict[str, str]:
    digest = hashlib.sha256(f"{request.url}|{time.time_ns()}".encode()).hexdigest()
    return {"X-CorrelationId": f"{digest[:8]}-{digest[8:12]}-{digest[12:16]}-{digest[16:20]}-{digest[20:32]}"}


def serve_forever(
    universe: Universe,
    host: str = "127.0.0.1",
    port: int = 8765,
    fault_rate: float = 0.0,
    *,
    token_ttl_seconds: float = 300,
    fault_seed: int = 0,
) -> None:
    """Serve ``universe`` on ``host``:``port`` in this thread until interrupted (Ctrl-C)."""
    server = SandboxServer(
        universe, fault_rate=fault_rate, token_ttl_seconds=token_ttl_seconds, fault_seed=fault_seed
    )
    config = uvicorn.Config(
        server.app, host=host, port=port, log_level="warning", access_log=False, lifespan="off"
    )
    uvicorn.Server(config).run()
