"""Tax connector: HMRC MTD VAT obligations, paged in windows of at most 366 days, then each filed return.

``GET /organisations/vat/{vrn}/obligations?from=&to=`` rejects ranges over 366 days, so the
consent's history window - through the as-of date itself, so the period in progress and its
open obligation are seen - is cut into such windows (each one a request); every fulfilled (``F``)
obligation's return is then fetched once from ``GET /organisations/vat/{vrn}/returns/{periodKey}``.
The VRN is the connection's ``account_ref``. Every request carries HMRC's fraud-prevention headers
for a batch process (:mod:`connectors.tax.fraud_prevention`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from urllib.parse import quote

import pandas as pd

from connectors.core.connector import Connection, HttpContext, OAuth2Connector, PullWindow, day_of
from connectors.core.http import ProviderClient
from connectors.core.parsing import ParseResult, SmePages
from connectors.core.streams import RawPage, SinglePage, Stream, date_windows
from connectors.tax.fraud_prevention import FraudPrevention
from connectors.tax.hmrc_vat import filed_period_keys, parse_batch

MAX_WINDOW_DAYS = 366
HMRC_MEDIA_TYPE = "application/vnd.hmrc.1.0+json"


class TaxConnector(OAuth2Connector):
    source = "tax"
    headers = {"Accept": HMRC_MEDIA_TYPE}  # noqa: RUF012 - read-only class constant

    obligations = Stream(
        name="obligations",
        path="/organisations/vat/{vrn}/obligations",
        paginator=SinglePage(),
        media_type=HMRC_MEDIA_TYPE,
    )
    returns = Stream(
        name="returns",
        path="/organisations/vat/{vrn}/returns/{period_key}",
        paginator=SinglePage(),
        media_type=HMRC_MEDIA_TYPE,
    )

    def fresh_headers(self, http: HttpContext) -> Callable[[], Mapping[str, str]]:
        """HMRC's fraud-prevention headers (``BATCH_PROCESS_DIRECT``), collected for each request."""
        return (http.fraud_prevention or FraudPrevention.of_this_machine()).headers

    def pull(self, client: ProviderClient, connection: Connection, window: PullWindow) -> Iterator[RawPage]:
        vrn = quote(connection.account_ref, safe="")
        filed: list[str] = []
        for start, end in date_windows(window.start, window.as_of, MAX_WINDOW_DAYS):
            for page in self.obligations.pages(
                client,
                path_values={"vrn": vrn},
                params={"from": start.isoformat(), "to": end.isoformat()},
                label_prefix=f"obligations[{start.isoformat()}..{end.isoformat()}]",
            ):
                yield page
                filed += filed_period_keys(page.body)
        for period_key in dict.fromkeys(filed):
            yield from self.returns.pages(
                client,
                path_values={"vrn": vrn, "period_key": quote(period_key, safe="")},
                label_prefix=f"returns/{period_key}",
            )

    def row_dates(self, table: str, frame: pd.DataFrame) -> pd.Series | None:
        """Obligations are asked by overlap: one is returned when its period ends on or after ``from``."""
        return day_of(frame["period_end"]) if table == "vat_returns" else None

    def unsettled(self, table: str, frame: pd.DataFrame) -> pd.Series:
        """An open obligation may be filed at any time: it is asked for again until it is."""
        return frame["status"] != "F"

    def parse(self, batch: Sequence[SmePages]) -> ParseResult:
        return parse_batch(batch)
