"""The HTTP client every connector speaks through: timeouts, retries, and one verdict per outcome.

Retrying is urllib3's job: each session mounts an ``HTTPAdapter`` whose :class:`ClockedRetry` (a
``urllib3.util.Retry``) retries 429 and 5xx answers, timeouts and dropped connections with
exponential backoff plus jitter, honouring ``Retry-After``. The only change to urllib3's policy is
*how* it waits: through a :class:`Clock`, so tests run the whole retry dance without sleeping.

:class:`ProviderClient` adds what urllib3 cannot know: a timeout on every call, the provider's base
URL, the SME and source for error messages, and the classification of what came back
(:func:`classify_response`): 2xx is data, 429/5xx after every retry is ``retriable``, 401 (after the
auth object refreshed its token once) means the SME must reconnect, any other 4xx is ``fatal``.

>>> classify_response(404, "SME-1", "tax", "GET /x", '{"code": "NOT_FOUND"}').kind
'fatal'
>>> classify_response(503, "SME-1", "tax", "GET /x", "").kind
'retriable'
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Mapping
from typing import Any, Protocol
from urllib.parse import urljoin, urlsplit

import requests
from requests.adapters import HTTPAdapter
from urllib3.util.retry import Retry

from connectors.core.errors import (
    AuthError,
    ConfigError,
    ConnectorError,
    FatalAPIError,
    RetriableAPIError,
)

RETRY_STATUSES = frozenset({429, 500, 502, 503, 504})
"""Answers that mean "not now": retried with backoff, ``retriable`` once retries run out."""

BACKOFF_FACTOR = 0.5
"""Seconds; urllib3 waits factor * 2**(n-1) before the n-th consecutive retry (none before the first)."""
BACKOFF_JITTER = 0.5
"""Up to this many random seconds added to each backoff, so parallel pulls do not retry in step."""
BACKOFF_MAX = 30.0
RETRY_AFTER_MAX = 120.0
"""A provider asking us to wait longer than this gets waited on for this long, then asked again."""


class Clock(Protocol):
    """What the HTTP layer needs of time: waiting, and a monotonic reading for token expiry."""

    def sleep(self, seconds: float) -> None: ...

    def monotonic(self) -> float: ...


class SystemClock:
    """The real clock."""

    def sleep(self, seconds: float) -> None:
        time.sleep(seconds)

    def monotonic(self) -> float:
        return time.monotonic()


SYSTEM_CLOCK = SystemClock()


class ClockedRetry(Retry):
    """urllib3's ``Retry`` whose waits (``Retry-After`` or backoff) go through a :class:`Clock`."""

    def __init__(self, *args: Any, clock: Clock | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.clock: Clock = clock or SYSTEM_CLOCK

    def new(self, **kwargs: Any) -> ClockedRetry:
        retry = super().new(**kwargs)
        retry.clock = self.clock
        return retry

    def sleep(self, response: Any = None) -> None:
        """Wait as the server asked (``Retry-After``), else the exponential backoff with jitter."""
        wait = None
        if self.respect_retry_after_header and response is not None:
            wait = self.get_retry_after(response)
        if wait is None:
            wait = self.get_backoff_time()
        if wait > 0:
            self.clock.sleep(wait)


def retry_policy(attempts: int, clock: Clock | None = None, *, retry_reads: bool = True) -> ClockedRetry:
    """At most ``attempts`` tries of a request (so ``attempts - 1`` retries).

    ``retry_reads=False`` stops a request from being repeated after the server may already have
    acted on it (a read timeout): right for a token refresh, whose refresh token may be single-use.
    """
    if attempts < 1:
        raise ValueError(f"attempts must be at least 1, got {attempts}")
    return ClockedRetry(
        total=attempts - 1,
        read=None if retry_reads else 0,
        status_forcelist=RETRY_STATUSES,
        allowed_methods=frozenset({"GET", "HEAD", "POST"}),
        backoff_factor=BACKOFF_FACTOR,
        backoff_jitter=BACKOFF_JITTER,
        backoff_max=BACKOFF_MAX,
        retry_after_max=RETRY_AFTER_MAX,
        respect_retry_after_header=True,
        raise_on_status=False,
        raise_on_redirect=False,
        clock=clock,
    )


def make_session(attempts: int, clock: Clock | None = None, *, retry_reads: bool = True) -> requests.Session:
    """A ``requests.Session`` whose adapters retry by :func:`retry_policy`. Use one per thread."""
    session = requests.Session()
    adapter = HTTPAdapter(max_retries=retry_policy(attempts, clock, retry_reads=retry_reads))
    session.mount("http://", adapter)
    session.mount("https://", adapter)
    return session


UNKNOWN_ACCOUNT = "unknown_account"
"""Error code of a 404 meaning the credential is genuine but names no account the provider has."""


def provider_error_text(body: str) -> str:
    """The provider's own error words: ``CODE: message`` from a JSON error body, else the body's start."""
    try:
        payload = json.loads(body)
    except ValueError:
        return body.strip()[:200]
    if isinstance(payload, Mapping):
        code = payload.get("code") or payload.get("error") or ""
        message = payload.get("message") or payload.get("error_description") or payload.get("detail") or ""
        text = ": ".join(str(part) for part in (code, message) if part)
        errors = payload.get("errors")
        if text and isinstance(errors, list):
            named = [
                f"{e.get('code', '')} {','.join(map(str, e.get('headers') or [e.get('path', '')]))}".strip()
                for e in errors
                if isinstance(e, Mapping)
            ]
            text += f" ({'; '.join(named)})" if named else ""
        if text:
            return text
    return body.strip()[:200]


def classify_response(
    status: int, sme_id: str, source: str, request: str, body: str
) -> ConnectorError | None:
    """The error a final (post-retry) HTTP status means, or None for success."""
    if 200 <= status < 300:
        return None
    detail = provider_error_text(body)
    message = f"{request} answered {status}" + (f" ({detail})" if detail else "")
    if status in RETRY_STATUSES:
        return RetriableAPIError(
            message + " after every retry", sme_id=sme_id, source=source, status_code=status
        )
    if status == 404 and detail.startswith(f"{UNKNOWN_ACCOUNT}:"):
        return ConfigError(
            message + ": the provider has never heard of this SME's account; the connection points at a "
            "provider (or sandbox universe) that does not know it",
            sme_id=sme_id,
            source=source,
            status_code=status,
        )
    if status == 401:
        return AuthError(
            message + " even with a fresh token: the SME has to reconnect this source",
            sme_id=sme_id,
            source=source,
            status_code=status,
        )
    return FatalAPIError(message, sme_id=sme_id, source=source, status_code=status)


def describe_request(method: str, url: str) -> str:
    """``GET /path?query`` without scheme and host: what raw payload rows and messages record."""
    parts = urlsplit(url)
    return f"{method} {parts.path}" + (f"?{parts.query}" if parts.query else "")


class ProviderClient:
    """Requests to one provider on behalf of one SME and source.

    Every call carries ``timeout``; ``auth`` (a ``requests.auth.AuthBase``) signs each request and
    refreshes its own token. Paths are resolved against ``base_url``; absolute links (a ``next``
    page) must stay on the provider's origin, so credentials never travel elsewhere.
    """

    def __init__(
        self,
        base_url: str,
        *,
        sme_id: str,
        source: str,
        session: requests.Session,
        auth: requests.auth.AuthBase | None,
        timeout: float,
        headers: Mapping[str, str] | None = None,
        fresh_headers: Callable[[], Mapping[str, str]] | None = None,
    ) -> None:
        if not base_url:
            raise ConfigError("no provider base URL is configured", sme_id=sme_id, source=source)
        self.base_url = base_url.rstrip("/")
        self.sme_id = sme_id
        self.source = source
        self.session = session
        self.auth = auth
        self.timeout = timeout
        self.headers = dict(headers or {})
        self.fresh_headers = fresh_headers
        """Headers collected anew just before each request (HMRC's fraud-prevention headers)."""

    def url_for(self, path_or_url: str) -> str:
        """Absolute URL of a provider path (``/v1/...``) or of a link the provider returned."""
        base = urlsplit(self.base_url)
        target = urlsplit(path_or_url)
        if target.scheme or target.netloc:
            if (target.scheme, target.netloc) != (base.scheme, base.netloc):
                raise FatalAPIError(
                    f"provider link {path_or_url!r} leaves the provider's origin {base.scheme}://{base.netloc}",
                    sme_id=self.sme_id,
                    source=self.source,
                )
            return path_or_url
        if path_or_url.startswith(base.path.rstrip("/") + "/") and base.path not in ("", "/"):
            return urljoin(self.base_url + "/", path_or_url)
        return self.base_url + "/" + path_or_url.lstrip("/")

    def get(self, path_or_url: str, params: Mapping[str, str] | None = None) -> requests.Response:
        """GET and return a 2xx response, or raise the classified :class:`ConnectorError`."""
        url = self.url_for(path_or_url)
        headers = {**self.headers, **(self.fresh_headers() if self.fresh_headers else {})}
        try:
            response = self.session.get(
                url, params=params, auth=self.auth, headers=headers, timeout=self.timeout
            )
        except ConnectorError:
            raise
        except (requests.Timeout, requests.ConnectionError, requests.exceptions.RetryError) as error:
            raise RetriableAPIError(
                f"GET {urlsplit(url).path} failed after every retry: {type(error).__name__}: {error}",
                sme_id=self.sme_id,
                source=self.source,
            ) from error
        except requests.exceptions.ChunkedEncodingError as error:
            raise RetriableAPIError(
                f"GET {urlsplit(url).path} broke off mid-body: {error}",
                sme_id=self.sme_id,
                source=self.source,
            ) from error
        except (requests.exceptions.InvalidURL, requests.exceptions.MissingSchema) as error:
            raise ConfigError(
                f"bad provider URL {url!r}: {error}", sme_id=self.sme_id, source=self.source
            ) from error
        request = describe_request("GET", response.url)
        error = classify_response(response.status_code, self.sme_id, self.source, request, response.text)
        if error is not None:
            raise error
        return response
