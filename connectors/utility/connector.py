"""Utility connector: a Green Button Connect My Data subscription, as one paged ESPI Atom feed.

``GET /espi/1_1/resource/Batch/Subscription/{subscription_id}?published-min=&published-max=
&start-index=N&max-results=K``, following ``<link rel="next">``. The subscription is the
connection's ``account_ref``. Entries published from the start of the consent's history window to
the end of the as-of day are asked for: readings are published when their interval ends and bills
when they are issued, so the last month's bill (issued early in the as-of month) is included.
"""

from __future__ import annotations

import datetime as dt
import io
from collections.abc import Iterator, Sequence
from urllib.parse import quote
from xml.etree.ElementTree import ParseError

import defusedxml.ElementTree as SafeET
import pandas as pd
import requests
from defusedxml import DefusedXmlException

from connectors.core.connector import Connection, OAuth2Connector, PullWindow, day_of
from connectors.core.http import ProviderClient
from connectors.core.parsing import ParseResult, SmePages
from connectors.core.streams import NextLinkPaginator, RawPage, Stream
from connectors.utility.espi import ATOM, parse_batch

MAX_RESULTS = 200
ATOM_MEDIA_TYPE = "application/atom+xml"


def atom_next_link(response: requests.Response) -> str | None:
    """The href of the feed's ``<link rel="next">`` (None on the last page or an unreadable body).

    Feed-level links come before the first entry, so reading stops there: the page is parsed in
    full only once, by the parser.
    """
    try:
        for _, element in SafeET.iterparse(io.BytesIO(response.content), events=("start",), forbid_dtd=True):
            if element.tag == f"{ATOM}entry":
                return None
            if element.tag == f"{ATOM}link" and element.get("rel") == "next" and element.get("href"):
                return element.get("href")
    except (ParseError, DefusedXmlException):  # the parser reports bad bodies; paging just stops
        return None
    return None


def espi_instant(moment: dt.datetime) -> str:
    return moment.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class UtilityConnector(OAuth2Connector):
    source = "utility"
    headers = {"Accept": ATOM_MEDIA_TYPE}  # noqa: RUF012 - read-only class constant

    def __init__(self, max_results: int = MAX_RESULTS) -> None:
        self.max_results = max_results
        self.subscription = Stream(
            name="subscription",
            path="/espi/1_1/resource/Batch/Subscription/{subscription_id}",
            paginator=NextLinkPaginator(atom_next_link),
            media_type=ATOM_MEDIA_TYPE,
        )

    def pull(self, client: ProviderClient, connection: Connection, window: PullWindow) -> Iterator[RawPage]:
        published_min = dt.datetime.combine(window.start, dt.time(), tzinfo=dt.UTC)
        published_max = dt.datetime.combine(window.as_of, dt.time(23, 59, 59), tzinfo=dt.UTC)
        yield from self.subscription.pages(
            client,
            path_values={"subscription_id": quote(connection.account_ref, safe="")},
            params={
                "published-min": espi_instant(published_min),
                "published-max": espi_instant(published_max),
                "start-index": "1",
                "max-results": str(self.max_results),
            },
        )

    def row_dates(self, table: str, frame: pd.DataFrame) -> pd.Series | None:
        """Entries are asked by publication: a reading is published when its interval ends, a bill when
        it is issued, just after its period ends (the period's end stands for it)."""
        start, seconds = {
            "utility_readings": ("interval_start", "interval_seconds"),
            "utility_bills": ("period_start", "period_seconds"),
        }.get(table, ("", ""))
        if not start:
            return None
        ends = pd.to_datetime(frame[start], utc=True) + pd.to_timedelta(
            frame[seconds].astype("int64"), unit="s"
        )
        return day_of(ends)

    def unsettled(self, table: str, frame: pd.DataFrame) -> pd.Series:
        """An unpaid bill may be paid at any time: it is asked for again until it is."""
        if table == "utility_bills":
            return frame["paid_date"].isna()
        return pd.Series(False, index=frame.index)

    def parse(self, batch: Sequence[SmePages]) -> ParseResult:
        return parse_batch(batch)
