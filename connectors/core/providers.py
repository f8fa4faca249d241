"""Where one source's provider lives and who this application is to it: plain values, from settings.

Connectors never read configuration themselves; the application builds a :class:`ProviderEndpoint`
per source (``dossier.settings.Settings.provider``) and passes it down. An endpoint left without
its own OAuth URLs uses the usual ``{base_url}/oauth/authorize`` and ``{base_url}/oauth/token``:

>>> endpoint = ProviderEndpoint("tax", "http://127.0.0.1:9000/tax", client_id="app", client_secret="s")
>>> endpoint.authorize_url, endpoint.token_url
('http://127.0.0.1:9000/tax/oauth/authorize', 'http://127.0.0.1:9000/tax/oauth/token')
>>> ProviderEndpoint("tax", "https://api.example", token_endpoint="https://auth.example/token").token_url
'https://auth.example/token'
"""

from __future__ import annotations

from dataclasses import dataclass

AUTHORIZE_PATH = "/oauth/authorize"
TOKEN_PATH = "/oauth/token"


@dataclass(frozen=True)
class ProviderEndpoint:
    """One source's provider: its API base URL, OAuth 2.0 endpoints and this application's client."""

    source: str
    base_url: str
    client_id: str = ""
    client_secret: str = ""
    authorize_endpoint: str = ""
    """Absolute URL of the authorization endpoint; empty: ``{base_url}/oauth/authorize``."""
    token_endpoint: str = ""
    """Absolute URL of the token endpoint; empty: ``{base_url}/oauth/token``."""

    @property
    def authorize_url(self) -> str:
        return self.authorize_endpoint or f"{self.base_url.rstrip('/')}{AUTHORIZE_PATH}"

    @property
    def token_url(self) -> str:
        return self.token_endpoint or f"{self.base_url.rstrip('/')}{TOKEN_PATH}"

    @property
    def configured(self) -> bool:
        """Whether the provider can be reached at all (a base URL is known)."""
        return bool(self.base_url)
