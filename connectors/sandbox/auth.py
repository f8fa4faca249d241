"""Credentials the sandbox issues and accepts, checked statelessly with an HMAC keyed by the seed.

The OAuth providers (accounting, tax, utility) each take ``POST {base}/oauth/token`` with the
client's :class:`SandboxCredentials` and an SME's refresh token, and answer a short-lived bearer
token. Both tokens name the source and the SME's account, and carry a signature, so the server
needs no token store: a refresh token only works at its own provider, an access token only for
its own account and only until it expires. The survey provider (KoboToolbox) takes a per-SME API
token instead, as ``Authorization: Token <api_token>``; it sees only that SME's submissions.

:func:`issue_credentials` is what the seed stores in ``source_connections.credentials``.

>>> issuer = TokenIssuer(seed=1)
>>> token = issuer.refresh_token("tax", "123456789")
>>> issuer.refresh_account("tax", token), issuer.refresh_account("accounting", token)
('123456789', None)
"""

from __future__ import annotations

import functools
import hashlib
import hmac
from dataclasses import dataclass

from warehouse.canonical import SOURCES

OAUTH_SOURCES = ("accounting", "tax", "utility")
"""Sources whose provider uses OAuth2 refresh tokens; ``survey`` uses an API token."""

SCOPES = {
    "accounting": "reports.read",
    "tax": "read:vat",
    "utility": "FB=1_3_4_5_13_14_15_39;IntervalDuration=Monthly;BlockDuration=Monthly;HistoryLength=36",
}


@dataclass(frozen=True)
class SandboxCredentials:
    """The OAuth client (the connector application) registered with every sandbox provider."""

    client_id: str = "sme-dossier"
    client_secret: str = "sme-dossier-sandbox-secret"

    def matches(self, client_id: str | None, client_secret: str | None) -> bool:
        return hmac.compare_digest(client_id or "", self.client_id) and hmac.compare_digest(
            client_secret or "", self.client_secret
        )


@dataclass(frozen=True)
class AccessCheck:
    """Outcome of checking a bearer token: the account it grants, or why it grants nothing."""

    account_ref: str | None
    problem: str = ""


def kobo_asset_uid(seed: int) -> str:
    """The uid of the field-visit form (a KoboToolbox asset) in the universe of ``seed``."""
    digest = hashlib.sha256(f"kobo-asset|{seed}".encode()).digest()
    alphabet = "ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz23456789"
    return "a" + "".join(alphabet[b % len(alphabet)] for b in digest[:21])


class TokenIssuer:
    """Mints and verifies every token of one universe (keyed by its seed)."""

    def __init__(self, seed: int) -> None:
        self._key = hashlib.sha256(f"sme-dossier-sandbox|{seed}".encode()).digest()

    def _sign(self, *parts: str) -> str:
        return hmac.new(self._key, "|".join(parts).encode(), hashlib.sha256).hexdigest()[:32]

    def refresh_token(self, source: str, account_ref: str) -> str:
        """The long-lived refresh token of ``account_ref`` at ``source``'s provider."""
        return f"rt1.{source}.{account_ref}.{self._sign('refresh', source, account_ref)}"

    def refresh_account(self, source: str, token: str) -> str | None:
        """The account a refresh token belongs to, or None if it is not a valid token for ``source``."""
        parts = token.split(".")
        if len(parts) != 4 or parts[0] != "rt1" or parts[1] != source:
            return None
        expected = self._sign("refresh", source, parts[2])
        return parts[2] if hmac.compare_digest(parts[3], expected) else None

    def access_token(self, source: str, account_ref: str, expires_at_ms: int) -> str:
        """A bearer token for ``account_ref`` at ``source`` valid until ``expires_at_ms`` (epoch ms)."""
        signature = self._sign("access", source, account_ref, str(expires_at_ms))
        return f"at1.{source}.{account_ref}.{expires_at_ms}.{signature}"

    def check_access(self, source: str, token: str, now_ms: int) -> AccessCheck:
        """Which account ``token`` grants at ``source`` now, or the reason it grants none."""
        parts = token.split(".")
        if len(parts) != 5 or parts[0] != "at1" or parts[1] != source or not parts[3].isdigit():
            return AccessCheck(None, "unknown access token")
        if not hmac.compare_digest(parts[4], self._sign("access", source, parts[2], parts[3])):
            return AccessCheck(None, "unknown access token")
        if int(parts[3]) <= now_ms:
            return AccessCheck(None, "access token expired")
        return AccessCheck(parts[2])

    def api_token(self, sme_code: str) -> str:
        """The KoboToolbox API token (40 hex characters) that sees the submissions of ``sme_code``."""
        return hmac.new(self._key, f"kobo|{sme_code}".encode(), hashlib.sha1).hexdigest()


@functools.cache
def issuer_for(seed: int) -> TokenIssuer:
    """The (shared) issuer of the universe of ``seed``."""
    return TokenIssuer(seed)


def issue_credentials(seed: int, source: str, account_ref: str) -> dict[str, str]:
    """What a connector needs to reach ``account_ref`` at ``source``'s provider in universe ``seed``.

    ``{"refresh_token": ...}`` for the OAuth providers; ``{"api_token": ..., "asset_uid": ...}`` for
    the survey platform (the form's asset uid is part of the data URL).

    >>> sorted(issue_credentials(1, "survey", "sc23456789"))
    ['api_token', 'asset_uid']
    """
    if source not in SOURCES:
        raise ValueError(f"unknown source {source!r}; known: {list(SOURCES)}")
    issuer = issuer_for(seed)
    if source == "survey":
        return {"api_token": issuer.api_token(account_ref), "asset_uid": kobo_asset_uid(seed)}
    return {"refresh_token": issuer.refresh_token(source, account_ref)}
