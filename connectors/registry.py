"""Which connector serves which source kind, and where each provider lives.

There is exactly one connector per source in :data:`warehouse.canonical.SOURCES`;
:func:`provider_endpoint` is the single place that turns settings into a provider's endpoints
(``DOSSIER_PROVIDERS`` per source; by default the bundled sandbox, which serves every provider
under one server, prefixed by the source kind).

>>> sorted(CONNECTORS) == sorted(SOURCES)
True
>>> from dossier.settings import Settings
>>> provider_base_url("tax", Settings.from_env({"DOSSIER_SANDBOX_URL": "http://127.0.0.1:8000/"}))
'http://127.0.0.1:8000/tax'
"""

from __future__ import annotations

from connectors.accounting.connector import AccountingConnector
from connectors.core.connector import Connector
from connectors.core.providers import ProviderEndpoint
from connectors.survey.connector import SurveyConnector
from connectors.tax.connector import TaxConnector
from connectors.utility.connector import UtilityConnector
from dossier.settings import Settings, get_settings
from warehouse.canonical import SOURCES

CONNECTORS: dict[str, Connector] = {
    connector.source: connector
    for connector in (AccountingConnector(), TaxConnector(), UtilityConnector(), SurveyConnector())
}

if sorted(CONNECTORS) != sorted(SOURCES):
    raise RuntimeError(
        f"connectors {sorted(CONNECTORS)} do not match the canonical sources {sorted(SOURCES)}"
    )


def connector_for(source: str) -> Connector:
    """The connector of ``source``; ``ValueError`` naming the known sources otherwise."""
    try:
        return CONNECTORS[source]
    except KeyError:
        raise ValueError(f"unknown source {source!r}; known sources: {list(SOURCES)}") from None


def provider_endpoint(source: str, settings: Settings | None = None) -> ProviderEndpoint:
    """``source``'s provider as configured (``DOSSIER_PROVIDERS``, else the bundled sandbox layout)."""
    settings = settings or get_settings()
    connector_for(source)
    return settings.provider(source)


def provider_base_url(source: str, settings: Settings | None = None) -> str:
    """Base URL of ``source``'s provider ('' when none is configured): :func:`provider_endpoint`'s."""
    return provider_endpoint(source, settings).base_url
