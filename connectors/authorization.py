"""Connecting an SME's provider from a connector link: OAuth 2.0 authorization code with PKCE.

:func:`start` makes the request: a random ``state`` (which also names the request) and a PKCE
``code_verifier`` are kept server-side (``oauth_requests``), and the browser is sent to the
provider's authorization endpoint with the verifier's S256 ``code_challenge``. The provider shows
its own approval page and redirects back; :func:`finish` accepts the callback only for a known,
unanswered ``state`` of the same SME's open link, trades the code and the verifier for tokens at
the provider's token endpoint, and keeps the refresh and access tokens **encrypted at rest** (Fernet,
keyed from the service's secret key: :func:`fernet_for`); the ingest then pulls with them
(:mod:`connectors.ingest`). A wrong ``state``, an error from the provider
or a refused exchange raises :class:`AuthorizationError` and is recorded on the request.

>>> box = fernet_for("a secret key")
>>> box.decrypt(box.encrypt(b"rt1.accounting.ACC-1.sig")).decode()
'rt1.accounting.ACC-1.sig'
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import secrets
from urllib.parse import urlencode

import requests
from cryptography.fernet import Fernet
from sqlalchemy.orm import Session

from connectors.core.providers import ProviderEndpoint
from warehouse.errors import DossierError
from warehouse.models import ConnectorLink, OAuthRequest, ProviderToken

REQUEST_TTL = dt.timedelta(minutes=15)


class AuthorizationError(DossierError):
    """A provider connection that did not complete (one line saying why)."""


def s256(verifier: str) -> str:
    """The PKCE S256 code challenge of ``verifier``: base64url(sha256(verifier)) without padding (RFC 7636)."""
    return base64.urlsafe_b64encode(hashlib.sha256(verifier.encode("ascii")).digest()).decode().rstrip("=")


def fernet_for(secret_key: str) -> Fernet:
    """The Fernet box that encrypts provider tokens, derived from the service's secret key."""
    digest = hashlib.sha256(f"provider-tokens|{secret_key}".encode()).digest()
    return Fernet(base64.urlsafe_b64encode(digest))


Provider = ProviderEndpoint
"""Where one source's provider is reached and who we are to it (from settings)."""


def start(
    session: Session,
    link: ConnectorLink,
    source: str,
    provider: Provider,
    *,
    redirect_uri: str,
    login_hint: str,
    at: dt.datetime,
) -> str:
    """Record a new authorization request for ``source`` of ``link`` and return the URL to send the browser to."""
    if source not in link.sources:
        raise AuthorizationError(f"This link does not ask for {source} data.")
    state = secrets.token_urlsafe(32)
    verifier = secrets.token_urlsafe(64)
    session.add(
        OAuthRequest(
            state=state,
            link_id=link.link_id,
            sme_id=link.sme_id,
            source=source,
            code_verifier=verifier,
            redirect_uri=redirect_uri,
            created_at=at,
            detail="",
        )
    )
    session.flush()
    query = {
        "response_type": "code",
        "client_id": provider.client_id,
        "redirect_uri": redirect_uri,
        "state": state,
        "code_challenge": s256(verifier),
        "code_challenge_method": "S256",
        "login_hint": login_hint,
    }
    return f"{provider.authorize_url}?{urlencode(query)}"


def pending(session: Session, state: str, at: dt.datetime) -> OAuthRequest:
    """The unanswered, unexpired request ``state`` names; :class:`AuthorizationError` otherwise."""
    request = session.get(OAuthRequest, state) if state else None
    if request is None:
        raise AuthorizationError("The provider answered a request this service did not make (unknown state).")
    if request.outcome is not None:
        raise AuthorizationError("This provider answer was already used.")
    if request.created_at + REQUEST_TTL < at:
        raise AuthorizationError("The connection took too long; start it again from your link.")
    return request


def finish(
    session: Session,
    request: OAuthRequest,
    provider: Provider,
    *,
    code: str,
    error: str,
    secret_key: str,
    at: dt.datetime,
    timeout: float = 10.0,
) -> ProviderToken:
    """Trade the callback's ``code`` for tokens and keep the refresh token encrypted; record the outcome."""
    request.answered_at = at

    def refuse(why: str) -> AuthorizationError:
        request.outcome, request.detail = "refused", why
        session.flush()
        return AuthorizationError(why)

    if error:
        raise refuse(f"The provider did not grant access ({error}).")
    if not code:
        raise refuse("The provider's answer has no authorization code.")
    try:
        response = requests.post(
            provider.token_url,
            data={
                "grant_type": "authorization_code",
                "code": code,
                "redirect_uri": request.redirect_uri,
                "code_verifier": request.code_verifier,
                "client_id": provider.client_id,
                "client_secret": provider.client_secret,
            },
            timeout=timeout,
        )
    except requests.RequestException as failure:
        raise refuse(f"The provider could not be reached ({type(failure).__name__}).") from None
    body = response.json() if response.headers.get("content-type", "").startswith("application/json") else {}
    if response.status_code != 200 or not body.get("refresh_token"):
        description = body.get("error_description") or body.get("error") or f"HTTP {response.status_code}"
        raise refuse(f"The provider refused the exchange: {description}.")
    token = session.get(ProviderToken, (request.sme_id, request.source)) or ProviderToken(
        sme_id=request.sme_id, source=request.source
    )
    box = fernet_for(secret_key)
    token.provider_url = provider.base_url
    token.refresh_token_encrypted = box.encrypt(str(body["refresh_token"]).encode()).decode()
    token.obtained_at = at
    token.access_token_encrypted = None
    token.access_expires_at = None
    if body.get("access_token") and isinstance(body.get("expires_in"), int | float):
        token.access_token_encrypted = box.encrypt(str(body["access_token"]).encode()).decode()
        token.access_expires_at = at + dt.timedelta(seconds=float(body["expires_in"]))
    token.refreshed_at = None
    token.refused_at = None
    token.refused_reason = ""
    session.add(token)
    request.outcome, request.detail = "connected", ""
    session.flush()
    return token
