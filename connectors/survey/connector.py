"""Survey connector: the field-visit form's submissions for one SME, from KoboToolbox API v2.

``GET /api/v2/assets/{asset_uid}/data/?format=json&query=...&start=N&limit=K`` with
``Authorization: Token <api_token>``. The query (KoboToolbox's Mongo-style filter) asks for the
SME's submissions (``sme_code``, the connection's ``account_ref``) received within the consent's
history window, up to the end of the as-of day. The API token and the form's asset uid are the
connection's credentials.

Whatever the form, every submission is a ``survey_submissions`` row; the submissions of a form
with a mapping (``connectors/survey/mappings/``) are also ``survey_visits``. A form without a
mapping is stored and pulled as an unmapped survey: the SME's pull is not failed for it.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from urllib.parse import quote

import pandas as pd

from connectors.core.auth import KoboTokenAuth, require_credential
from connectors.core.connector import Connection, Connector, HttpContext, PullWindow, day_of
from connectors.core.http import ProviderClient
from connectors.core.parsing import ParseResult, SmePages
from connectors.core.streams import RawPage, StartLimitPaginator, Stream
from connectors.survey.kobo import parse_batch

LIMIT = 100


def submissions_query(sme_code: str, window: PullWindow) -> str:
    """The ``query`` parameter: this SME's submissions received inside the window (UTC times)."""
    received = {
        "$gte": f"{window.start.isoformat()}T00:00:00",
        "$lte": f"{window.as_of.isoformat()}T23:59:59",
    }
    return json.dumps({"sme_code": sme_code, "_submission_time": received}, separators=(",", ":"))


class SurveyConnector(Connector):
    source = "survey"

    def __init__(self, limit: int = LIMIT) -> None:
        self.submissions = Stream(
            name="submissions",
            path="/api/v2/assets/{asset_uid}/data/",
            paginator=StartLimitPaginator(limit),
        )

    def authenticate(self, connection: Connection, http: HttpContext) -> KoboTokenAuth:
        token = require_credential(
            connection.credentials, "api_token", sme_id=connection.sme_id, source=self.source
        )
        return KoboTokenAuth(token)

    def pull(self, client: ProviderClient, connection: Connection, window: PullWindow) -> Iterator[RawPage]:
        asset_uid = require_credential(
            connection.credentials, "asset_uid", sme_id=connection.sme_id, source=self.source
        )
        yield from self.submissions.pages(
            client,
            path_values={"asset_uid": quote(asset_uid, safe="")},
            params={"format": "json", "query": submissions_query(connection.account_ref, window)},
        )

    def row_dates(self, table: str, frame: pd.DataFrame) -> pd.Series | None:
        """Submissions are asked by the time the platform received them."""
        if table in ("survey_visits", "survey_submissions"):
            return day_of(frame["submitted_at"])
        return None

    def parse(self, batch: Sequence[SmePages]) -> ParseResult:
        return parse_batch(batch)
