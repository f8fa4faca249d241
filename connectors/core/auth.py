"""Authentication as its own object: each one a ``requests.auth.AuthBase`` that signs requests.

* :class:`OAuth2RefreshAuth` - OAuth2 refresh-token grant (accounting, tax, utility). It uses a
  still-valid access token it is given (one stored from an earlier run), else fetches one before the
  first request, again shortly before the token expires, and once more
  when the provider answers 401 anyway (the request is then re-sent once with the new token, the
  way ``requests``' own digest auth handles its 401 challenge). A provider that rotates refresh
  tokens hands back a new one; :attr:`OAuth2RefreshAuth.refresh_token` always holds the latest, and
  :attr:`OAuth2RefreshAuth.rotated` says whether the stored credentials need updating.
* :class:`KoboTokenAuth` - KoboToolbox's static ``Authorization: Token <api_token>``.

:func:`require_credential` reads one field of ``source_connections.credentials`` or says which is missing.
"""

from __future__ import annotations

import datetime as dt
import math
import threading
from collections.abc import Mapping
from typing import Any

import requests
from requests.auth import AuthBase

from connectors.core.errors import AuthError, ConfigError, RetriableAPIError
from connectors.core.http import SYSTEM_CLOCK, Clock, classify_response, provider_error_text

EXPIRY_LEEWAY_SECONDS = 15.0
"""Refresh this long (at most a tenth of the token's life) before the provider's stated expiry, so
no request leaves with a dying token."""


class OAuth2RefreshAuth(AuthBase):
    """Bearer tokens from ``POST {token_url}`` with ``grant_type=refresh_token``."""

    def __init__(
        self,
        token_url: str,
        *,
        client_id: str,
        client_secret: str,
        refresh_token: str,
        session: requests.Session,
        timeout: float,
        sme_id: str,
        source: str,
        clock: Clock | None = None,
        access_token: str | None = None,
        access_valid_for: float | None = None,
    ) -> None:
        self.token_url = token_url
        self.client_id = client_id
        self.client_secret = client_secret
        self.refresh_token = refresh_token
        self.session = session
        self.timeout = timeout
        self.sme_id = sme_id
        self.source = source
        self.clock = clock or SYSTEM_CLOCK
        self.access_token: str | None = None
        self.refresh_at = 0.0
        self.refreshes = 0
        self.rotated = False
        self.access_expires_at: dt.datetime | None = None
        """Wall-clock expiry of the latest token this object obtained (None: unstated, or none obtained)."""
        self._lock = threading.Lock()
        if access_token and access_valid_for is not None and access_valid_for > EXPIRY_LEEWAY_SECONDS:
            # A still-valid access token from an earlier run is used until shortly before it expires.
            self.access_token = access_token
            self.refresh_at = self._refresh_time(access_valid_for)

    def _needs_refresh(self) -> bool:
        return self.access_token is None or self.clock.monotonic() >= self.refresh_at

    def refresh(self) -> str:
        """Exchange the refresh token for a new access token (and maybe a new refresh token)."""
        with self._lock:
            try:
                response = self.session.post(
                    self.token_url,
                    data={
                        "grant_type": "refresh_token",
                        "refresh_token": self.refresh_token,
                        "client_id": self.client_id,
                        "client_secret": self.client_secret,
                    },
                    headers={"Accept": "application/json"},
                    timeout=self.timeout,
                )
            except (requests.Timeout, requests.ConnectionError, requests.exceptions.RetryError) as error:
                raise RetriableAPIError(
                    f"token refresh failed after every retry: {type(error).__name__}: {error}",
                    sme_id=self.sme_id,
                    source=self.source,
                ) from error
            if response.status_code in (400, 401, 403):
                raise AuthError(
                    f"the provider refused the refresh token ({response.status_code} "
                    f"{provider_error_text(response.text)}): the SME has to reconnect this source",
                    sme_id=self.sme_id,
                    source=self.source,
                    status_code=response.status_code,
                )
            error = classify_response(
                response.status_code, self.sme_id, self.source, "POST oauth/token", response.text
            )
            if error is not None:
                raise error
            token = self._read_token(response)
            self.access_token = str(token["access_token"])
            self.refresh_at = self._refresh_time(token.get("expires_in"))
            lifetime = token.get("expires_in")
            self.access_expires_at = (
                dt.datetime.now(dt.UTC) + dt.timedelta(seconds=float(lifetime))
                if lifetime is not None
                else None
            )
            new_refresh = token.get("refresh_token")
            if new_refresh and new_refresh != self.refresh_token:
                self.refresh_token = str(new_refresh)
                self.rotated = True
            self.refreshes += 1
            return self.access_token

    def _refresh_time(self, expires_in: object) -> float:
        """When to refresh: shortly before expiry; never ahead of time when the lifetime is unstated."""
        if expires_in is None:
            return math.inf
        try:
            lifetime = float(expires_in)  # type: ignore[arg-type]
        except (TypeError, ValueError):
            raise AuthError(
                f"token endpoint answered a non-numeric expires_in: {expires_in!r}",
                sme_id=self.sme_id,
                source=self.source,
                record="oauth/token",
                field="expires_in",
            ) from None
        return self.clock.monotonic() + lifetime - min(EXPIRY_LEEWAY_SECONDS, lifetime / 10)

    def _read_token(self, response: requests.Response) -> Mapping[str, Any]:
        try:
            token = response.json()
        except ValueError as error:
            raise AuthError(
                f"token endpoint answered non-JSON: {response.text[:120]!r}",
                sme_id=self.sme_id,
                source=self.source,
                record="oauth/token",
            ) from error
        if not isinstance(token, Mapping) or not token.get("access_token"):
            raise AuthError(
                "token endpoint answered without an access_token",
                sme_id=self.sme_id,
                source=self.source,
                record="oauth/token",
                field="access_token",
            )
        return token

    def __call__(self, request: requests.PreparedRequest) -> requests.PreparedRequest:
        if self._needs_refresh():
            self.refresh()
        request.headers["Authorization"] = f"Bearer {self.access_token}"
        request.register_hook("response", self._retry_once_on_401)
        return request

    def _retry_once_on_401(self, response: requests.Response, **send_kwargs: Any) -> requests.Response:
        """On a 401, refresh the token and re-send the request once; a second 401 stands.

        The re-sent request goes straight to the adapter, which dispatches no hooks, so this runs
        at most once per request.
        """
        if response.status_code != 401:
            return response
        response.content  # noqa: B018 - drain the body so the connection goes back to the pool
        response.close()
        self.refresh()
        retry = response.request.copy()
        retry.headers["Authorization"] = f"Bearer {self.access_token}"
        second = response.connection.send(retry, **send_kwargs)
        second.history.append(response)
        second.request = retry
        return second


class KoboTokenAuth(AuthBase):
    """``Authorization: Token <api_token>`` on every request (KoboToolbox API v2)."""

    def __init__(self, api_token: str) -> None:
        self.api_token = api_token

    def __call__(self, request: requests.PreparedRequest) -> requests.PreparedRequest:
        request.headers["Authorization"] = f"Token {self.api_token}"
        return request


def require_credential(credentials: Mapping[str, Any], name: str, *, sme_id: str, source: str) -> str:
    """The named credential as a string, or a ``config`` error naming the SME, source and field."""
    value = credentials.get(name)
    if not value or not isinstance(value, str):
        raise ConfigError(
            f"source connection has no {name!r} credential",
            sme_id=sme_id,
            source=source,
            record="source_connections.credentials",
            field=name,
        )
    return value
