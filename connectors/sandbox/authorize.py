"""The sandbox providers' authorization endpoint: RFC 6749 authorization code with PKCE (RFC 7636).

Like a real provider, each OAuth source (accounting, tax, utility) serves its own approval page at
``GET /<source>/oauth/authorize``; the account holder approves or denies with a form
(``POST``), and the provider redirects back to the client's ``redirect_uri`` with a one-time
``code`` (or ``error=access_denied``) and the client's ``state``. The token endpoint then trades
the code, with the ``code_verifier`` whose S256 hash was the ``code_challenge``, for the account's
refresh and access tokens. A code lives 10 minutes and works once.

The sandbox has no user logins: ``login_hint`` names the account being approved, as an SSO hint
would at a real provider.

>>> s256("dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk")
'E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM'
"""

from __future__ import annotations

import hmac
import html
import secrets
import time
from dataclasses import dataclass
from urllib.parse import urlencode

from connectors.authorization import s256

CODE_TTL_SECONDS = 600
OAUTH_SOURCES = ("accounting", "tax", "utility")


@dataclass(frozen=True)
class PendingCode:
    source: str
    account: str
    client_id: str
    redirect_uri: str
    code_challenge: str
    expires_at: float


class AuthorizationCodes:
    """One-time authorization codes, kept in memory by the running sandbox."""

    def __init__(self) -> None:
        self._codes: dict[str, PendingCode] = {}

    def issue(self, pending: PendingCode) -> str:
        code = secrets.token_urlsafe(24)
        self._codes[code] = pending
        return code

    def redeem(
        self, source: str, code: str, client_id: str, redirect_uri: str, verifier: str
    ) -> tuple[str | None, str]:
        """``(account, "")`` for a good code, else ``(None, why)`` (an ``invalid_grant``); a code is
        spent by its first use, good or bad."""
        pending = self._codes.pop(code, None)
        if pending is None or pending.source != source:
            return None, "authorization code not valid (unknown, already used, or for another provider)"
        if pending.expires_at < time.time():
            return None, "authorization code expired"
        if pending.client_id != client_id or pending.redirect_uri != redirect_uri:
            return None, "redirect_uri or client does not match the authorization request"
        if not verifier or not hmac.compare_digest(s256(verifier), pending.code_challenge):
            return None, "code_verifier does not match the code_challenge (PKCE)"
        return pending.account, ""


def authorize_error(params: dict[str, str], client_id: str, known_account: bool) -> str | None:
    """Why an authorization request cannot be shown to the account holder (None when it can)."""
    if params.get("response_type") != "code":
        return "response_type must be code"
    if params.get("client_id") != client_id:
        return "unknown client_id"
    if not params.get("redirect_uri", "").startswith(("http://", "https://")):
        return "redirect_uri must be an absolute http(s) URL"
    if params.get("code_challenge_method") != "S256" or len(params.get("code_challenge", "")) < 43:
        return "PKCE is required: code_challenge with code_challenge_method=S256"
    if not params.get("state"):
        return "state is required"
    if not known_account:
        return "login_hint does not name an account at this provider"
    return None


FIELDS = (
    "response_type",
    "client_id",
    "redirect_uri",
    "state",
    "code_challenge",
    "code_challenge_method",
    "login_hint",
)


def approval_page(source: str, params: dict[str, str], scope: str) -> str:
    """The provider's own page asking the account holder to approve access."""
    hidden = "\n".join(
        f'<input type="hidden" name="{name}" value="{html.escape(params.get(name, ""))}">' for name in FIELDS
    )
    account = html.escape(params.get("login_hint", ""))
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>Sandbox {source} provider: approve access</title>
<style>body{{font-family:system-ui,sans-serif;max-width:40rem;margin:0 auto;padding:1rem;color:#111;background:#fff}}
button{{font:inherit;padding:.6rem 1.2rem;margin:.3rem .5rem .3rem 0;border:2px solid #1d5c2e;border-radius:.3rem}}
.approve{{background:#1d5c2e;color:#fff}}.deny{{background:#fff;color:#1d5c2e}}</style></head>
<body><main><h1>Sandbox {source} provider</h1>
<p>The application <strong>{html.escape(params.get("client_id", ""))}</strong> asks to read the data of
account <strong>{account}</strong> ({html.escape(scope)}).</p>
<form method="post">
{hidden}
<button class="approve" type="submit" name="decision" value="approve">Approve access</button>
<button class="deny" type="submit" name="decision" value="deny">Deny</button>
</form></main></body></html>"""


def redirect_target(params: dict[str, str], **answer: str) -> str:
    """``redirect_uri`` with ``answer`` and the client's ``state`` in its query."""
    separator = "&" if "?" in params["redirect_uri"] else "?"
    return params["redirect_uri"] + separator + urlencode({**answer, "state": params["state"]})
