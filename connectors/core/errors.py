"""Connector errors, classified by what the caller should do about them.

Every error carries ``kind``, the one decision the caller needs:

* ``fatal``      - this SME and source cannot be pulled as things stand (a 4xx, a payload that does
  not parse); record it, quarantine where data was bad, and carry on with the next SME;
* ``retriable``  - a transient fault (429, 5xx, timeout, dropped connection) that outlived every
  retry; the next run may well succeed;
* ``ignorable``  - nothing is lost (an exact duplicate record); log it and continue;
* ``config``     - the connection itself is wrong (missing credentials, a revoked refresh token, no
  base URL); someone has to fix the setup or the SME has to reconnect.

Every message names the SME and the source and, where there is one, the record and the field, so a
log line alone says where to look:

>>> str(ParseReject("not a number: 'abc'", sme_id="SME-000001", source="accounting",
...                 record="page=2/reports[5]", field="profit_and_loss.revenue"))
"SME-000001/accounting: page=2/reports[5] field profit_and_loss.revenue: not a number: 'abc'"
>>> ParseReject("x", sme_id="S", source="tax").kind
'fatal'
"""

from __future__ import annotations

from typing import ClassVar, Literal

ErrorKind = Literal["fatal", "retriable", "ignorable", "config"]
ERROR_KINDS: tuple[ErrorKind, ...] = ("fatal", "retriable", "ignorable", "config")


class ConnectorError(Exception):
    """Base of every connector error; ``kind`` tells the caller what to do (see the module doc)."""

    default_kind: ClassVar[ErrorKind] = "fatal"

    def __init__(
        self,
        message: str,
        *,
        sme_id: str,
        source: str,
        record: str = "",
        field: str = "",
        kind: ErrorKind | None = None,
        status_code: int | None = None,
    ) -> None:
        self.message = message
        self.sme_id = sme_id
        self.source = source
        self.record = record
        self.field = field
        self.kind: ErrorKind = kind or self.default_kind
        self.status_code = status_code
        super().__init__(self.describe())

    def describe(self) -> str:
        """``SME/source: record field F: message``, leaving out the parts that do not apply."""
        where = f"{self.sme_id}/{self.source}"
        detail = " ".join(part for part in (self.record, f"field {self.field}" if self.field else "") if part)
        return f"{where}: {detail}: {self.message}" if detail else f"{where}: {self.message}"


class ConfigError(ConnectorError):
    """The connection is set up wrongly (missing credentials or account, unknown source, no URL)."""

    default_kind = "config"


class FatalAPIError(ConnectorError):
    """The provider refused the request for good (400/403/404/422, or 401 after a token refresh)."""

    default_kind = "fatal"


class AuthError(ConnectorError):
    """The provider would not issue an access token: the SME has to reconnect the source."""

    default_kind = "config"


class RetriableAPIError(ConnectorError):
    """A transient fault (429, 5xx, timeout, connection) that was still there after every retry."""

    default_kind = "retriable"


class ParseReject(ConnectorError):
    """A raw payload holds a record that cannot become a canonical row (bad or missing field)."""

    default_kind = "fatal"


class DuplicateRecord(ConnectorError):
    """An exact duplicate of a record already read: dropped, nothing lost."""

    default_kind = "ignorable"
