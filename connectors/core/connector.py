"""The shape every source connector has: authenticate, pull raw pages, parse them.

A connector is a small declarative object (its streams are class attributes) with three verbs:

* :meth:`Connector.authenticate` builds the ``requests`` auth object from the SME's stored
  credentials;
* :meth:`Connector.pull` yields :class:`~connectors.core.streams.RawPage` objects for the
  :class:`PullWindow` the consent allows - nothing else is requested;
* :meth:`Connector.parse` turns the pages of many SMEs into canonical frames (a pure function of
  bytes, batched so the cost is per shard, not per SME).

A connector whose provider filters by date says, per canonical row, which day that filter applies
to (:meth:`Connector.row_dates`) and which rows the provider may still change however old they are
(:meth:`Connector.unsettled`): with them, a daily pull asks only for the months since the last one
(:meth:`PullWindow.since`) and keeps the earlier rows it already holds.

The ingestion loop (``connectors.ingest``) owns everything around them: consent, landing,
quarantine, run records and the shard's files.

>>> window = PullWindow.for_history(dt.date(2026, 11, 1), 3)
>>> (str(window.start), str(window.end), window.first_month, window.last_month)
('2026-08-01', '2026-10-31', '2026-08', '2026-10')
>>> str(window.since(dt.date(2026, 10, 1)).start), str(window.since(dt.date(2026, 1, 1)).start)
('2026-10-01', '2026-08-01')
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar

import pandas as pd
import requests

from connectors.core.auth import OAuth2RefreshAuth, require_credential
from connectors.core.http import SYSTEM_CLOCK, Clock, ProviderClient
from connectors.core.parsing import ParseResult, SmePages
from connectors.core.streams import RawPage

if TYPE_CHECKING:
    from connectors.tax.fraud_prevention import FraudPrevention


def add_months(day: dt.date, months: int) -> dt.date:
    """The first day of the month ``months`` after ``day``'s month (negative goes back)."""
    index = day.year * 12 + (day.month - 1) + months
    return dt.date(index // 12, index % 12 + 1, 1)


@dataclass(frozen=True)
class PullWindow:
    """The calendar range a pull may ask for: whole months, ending with the month before ``as_of``.

    ``history_months`` comes from the consent: the SME allowed that many months of history.
    """

    as_of: dt.date
    start: dt.date
    end: dt.date

    @classmethod
    def for_history(cls, as_of: dt.date, history_months: int) -> PullWindow:
        first_of_as_of_month = as_of.replace(day=1)
        return cls(
            as_of=as_of,
            start=add_months(first_of_as_of_month, -history_months),
            end=first_of_as_of_month - dt.timedelta(days=1),
        )

    def since(self, start: dt.date) -> PullWindow:
        """The same window asked only from ``start`` on (never before its own start)."""
        return dataclasses.replace(self, start=max(self.start, start))

    @property
    def first_month(self) -> str:
        return self.start.strftime("%Y-%m")

    @property
    def last_month(self) -> str:
        return self.end.strftime("%Y-%m")


def day_of(values: pd.Series) -> pd.Series:
    """Dates or UTC instants as the midnight of their (UTC) day, ``datetime64`` without a zone."""
    moments = pd.to_datetime(values, utc=True)
    return moments.dt.tz_localize(None).dt.floor("D")


@dataclass(frozen=True)
class Connection:
    """How to reach one SME's account at one provider (a ``source_connections`` row)."""

    sme_id: str
    source: str
    provider: str
    account_ref: str
    credentials: Mapping[str, Any] = field(default_factory=dict)
    stored_token: bool = False
    """The credentials are the SME's own OAuth tokens from connecting through its link
    (``provider_tokens``, decrypted), not the registration's ``source_connections.credentials``."""


@dataclass(frozen=True)
class HttpContext:
    """The HTTP plumbing a pull uses: sessions (one thread's), timeout, clock, the provider's URL and
    this application's OAuth2 client registration (``client_id``, ``client_secret``)."""

    base_url: str
    session: requests.Session
    token_session: requests.Session
    timeout: float
    clock: Clock = SYSTEM_CLOCK
    client_id: str = ""
    client_secret: str = ""
    token_url: str = ""
    """The provider's OAuth token endpoint; empty: ``{base_url}/oauth/token``."""
    fraud_prevention: FraudPrevention | None = None
    """What the HMRC connector sends as fraud-prevention headers (None: this machine's defaults)."""


class Connector(ABC):
    """One source kind: its streams, its auth, its parser."""

    source: ClassVar[str]
    headers: ClassVar[Mapping[str, str]] = {"Accept": "application/json"}

    @abstractmethod
    def authenticate(self, connection: Connection, http: HttpContext) -> requests.auth.AuthBase: ...

    @abstractmethod
    def pull(
        self, client: ProviderClient, connection: Connection, window: PullWindow
    ) -> Iterator[RawPage]: ...

    @abstractmethod
    def parse(self, batch: Sequence[SmePages]) -> ParseResult: ...

    def row_dates(self, table: str, frame: pd.DataFrame) -> pd.Series | None:
        """Per row of canonical ``table``, the day the provider's date filter applies to (midnight,
        ``datetime64``): a pull whose window starts on day S returns exactly the rows dated S or
        later (up to the window's end). None (the default): this source is always pulled whole."""
        return None

    def unsettled(self, table: str, frame: pd.DataFrame) -> pd.Series:
        """Rows of ``table`` the provider may still change however old they are (an open VAT
        obligation, an unpaid bill): an incremental pull reaches back to the earliest. None by default."""
        return pd.Series(False, index=frame.index)

    def client(self, connection: Connection, http: HttpContext) -> ProviderClient:
        """A client for this SME's provider account, authenticated and with this source's headers."""
        return ProviderClient(
            http.base_url,
            sme_id=connection.sme_id,
            source=self.source,
            session=http.session,
            auth=self.authenticate(connection, http),
            timeout=http.timeout,
            headers=self.headers,
            fresh_headers=self.fresh_headers(http),
        )

    def fresh_headers(self, http: HttpContext) -> Callable[[], Mapping[str, str]] | None:
        """Headers this source's provider wants collected anew for each request (none by default)."""
        return None


class OAuth2Connector(Connector):
    """A connector whose provider issues bearer tokens from ``POST {base}/oauth/token``."""

    token_path: ClassVar[str] = "/oauth/token"

    def authenticate(self, connection: Connection, http: HttpContext) -> OAuth2RefreshAuth:
        """Refresh-token auth; the client id and secret are the application's unless the connection
        carries its own (a provider where the SME registered a private app)."""
        client = {"client_id": http.client_id, "client_secret": http.client_secret}
        credentials = {**client, **connection.credentials}

        def credential(name: str) -> str:
            return require_credential(credentials, name, sme_id=connection.sme_id, source=self.source)

        expires = connection.credentials.get("access_expires_at")
        valid_for = (
            (dt.datetime.fromisoformat(expires) - dt.datetime.now(dt.UTC)).total_seconds()
            if isinstance(expires, str) and expires
            else None
        )
        access = connection.credentials.get("access_token")
        return OAuth2RefreshAuth(
            http.token_url or http.base_url.rstrip("/") + self.token_path,
            client_id=credential("client_id"),
            client_secret=credential("client_secret"),
            refresh_token=credential("refresh_token"),
            session=http.token_session,
            timeout=http.timeout,
            sme_id=connection.sme_id,
            source=self.source,
            clock=http.clock,
            access_token=access if isinstance(access, str) else None,
            access_valid_for=valid_for,
        )
