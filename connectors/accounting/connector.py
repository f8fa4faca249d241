"""Accounting connector: the bookkeeping platform's monthly reports, paged by page number.

``GET /v1/tenants/{tenant_id}/reports/monthly?from=YYYY-MM&to=YYYY-MM&page=N&page_size=K``; the
tenant is the connection's ``account_ref``; ``from``/``to`` are the months of the consent's history
window.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from urllib.parse import quote

from connectors.accounting.monthly_reports import parse_batch
from connectors.core.connector import Connection, OAuth2Connector, PullWindow
from connectors.core.http import ProviderClient
from connectors.core.parsing import ParseResult, SmePages
from connectors.core.streams import PageNumberPaginator, RawPage, Stream

PAGE_SIZE = 50
"""Reports per page (the platform allows up to 100): a 36-month window is one page."""


class AccountingConnector(OAuth2Connector):
    source = "accounting"

    def __init__(self, page_size: int = PAGE_SIZE) -> None:
        self.monthly_reports = Stream(
            name="monthly_reports",
            path="/v1/tenants/{tenant_id}/reports/monthly",
            paginator=PageNumberPaginator(page_size),
        )

    def pull(self, client: ProviderClient, connection: Connection, window: PullWindow) -> Iterator[RawPage]:
        yield from self.monthly_reports.pages(
            client,
            path_values={"tenant_id": quote(connection.account_ref, safe="")},
            params={"from": window.first_month, "to": window.last_month},
        )

    def parse(self, batch: Sequence[SmePages]) -> ParseResult:
        return parse_batch(batch)
