"""Ingest one source for one shard of SMEs: consent, pull, land, parse, record, write.

:func:`ingest_shard` is what the Airflow ingest task calls, once per (source, shard). For every SME
of the shard that has a connection to the source it:

1. checks consent **first** (:func:`warehouse.consent.pull_window`), again for every SME just
   before its requests: without one consent covering the source that is active both at the as-of
   instant and now, no request is made and the run is recorded as ``skipped_no_consent``;
   otherwise that consent's history window bounds what is asked for (the longest such window);
2. pulls the source's streams (a small thread pool, one ``requests.Session`` per thread), landing
   every response body immutably before anything reads it;
3. parses the landed pages, many SMEs at a time; a bad record quarantines the SME and source (stage
   ``ingest``, naming record, field and payload) and contributes no rows; a clean re-run resolves
   those entries;
4. upserts one ``ingestion_runs`` row per (SME, source, as-of date) with its ``raw_payloads``.

An SME whose source comes from files it uploaded through a connector link instead (no provider
connection, or an upload newer than it; :func:`connectors.uploads.uploads_to_use`) is not pulled:
:func:`ingest_uploads` reads its files under the same consent rule and records the run alike
(status ``uploaded``, ``unreadable`` or ``quarantined``), the files as its raw payloads.

**Incremental pulls.** A successful pull leaves a cursor (``pull_cursors``, written with its run
record): the as-of date it served, the first day its rows cover and the end of the last month it
pulled. The next pull of a later date asks the provider only from ``DOSSIER_PULL_REVISION_MONTHS``
months before that end (providers revise recent months), or from the earliest row the provider may
still change (:meth:`~connectors.core.connector.Connector.unsettled`), and keeps the SME's rows of
the earlier months from the cursor's canonical partition, cut to the consent window as it is now.
The whole window is pulled when there is no cursor, the consent now reaches further back than the
rows cover, the SME reconnected (another provider, account or own connection), the date's shard
count differs from the cursor's date's (:mod:`warehouse.shard_plans`) or the source's connector
does not allow it, the cursor's partition is gone, the SME's data was
erased since, on a re-run or backfill of a date not after the cursor's (which never moves it back),
and with ``full=True``. A failed or quarantined pull never advances the cursor; one for the
cursor's own date drops it, since that partition no longer holds the SME's rows.

The shard count is the date's recorded plan (:func:`warehouse.shard_plans.plan_date`: decided by
the date's first step, from its SMEs, and read by every later one).

It then writes each of the source's canonical tables for the shard as one Parquet file (replacing
the previous one; empty tables keep the schema). One SME failing, for whatever reason, never stops
the others. A re-run of the same shard and date gives the same files and the same rows.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import logging
import threading
import traceback
from collections.abc import Callable, Collection, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from typing import Any

import pandas as pd
import pyarrow as pa
import requests
from cryptography.fernet import Fernet, InvalidToken
from sqlalchemy import bindparam, delete, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from connectors import uploads
from connectors.authorization import fernet_for
from connectors.core.auth import OAuth2RefreshAuth
from connectors.core.connector import Connection, Connector, HttpContext, PullWindow, add_months
from connectors.core.errors import AuthError, ConnectorError
from connectors.core.http import SYSTEM_CLOCK, Clock, make_session
from connectors.core.landing import LandedPayload, land_page, record_payloads, run_hash
from connectors.core.parsing import ParseResult, SmePages, no_rejects
from connectors.core.streams import RawPage
from connectors.registry import connector_for, provider_endpoint
from connectors.tax.fraud_prevention import FraudPrevention
from dossier.settings import get_settings
from warehouse import shard_plans
from warehouse.canonical import TABLES_BY_SOURCE
from warehouse.canonical_files import write_canonical
from warehouse.consent import as_of_instant, pull_window, pull_windows
from warehouse.db import in_chunks, session_scope, upsert
from warehouse.models import (
    IngestionRun,
    ProviderToken,
    PullCursor,
    QuarantineEntry,
    Sme,
    SourceConnection,
    utcnow,
)
from warehouse.shards import shard_range
from warehouse.storage import Store

log = logging.getLogger(__name__)

PULL_THREADS = 4
"""SMEs pulled at once within a shard (each thread keeps its own HTTP sessions)."""
PARSE_BATCH = 256
"""SMEs pulled, then parsed together: bounds the raw pages held in memory and amortises pandas."""

STAGE = "ingest"

SessionFactory = Callable[[], AbstractContextManager[Session]]
"""Yields a session that commits on clean exit (like :func:`warehouse.db.session_scope`)."""


@dataclass
class Pulled:
    """One SME's pull: the pages received and landed, or the error that stopped it."""

    connection: Connection
    started_at: dt.datetime
    finished_at: dt.datetime
    pages: list[RawPage] = field(default_factory=list)
    landed: list[LandedPayload] = field(default_factory=list)
    error: ConnectorError | None = None
    rotated_credentials: dict[str, Any] | None = None
    no_consent: bool = False
    """Consent was re-read just before the first request and no longer allows the pull."""
    token_update: dict[str, Any] | None = None
    """New encrypted tokens for the SME's ``provider_tokens`` row (its own OAuth connection)."""
    token_refused: str | None = None
    """The provider refused the SME's stored token: reauthorization is needed (why)."""
    window: PullWindow | None = None
    """What was asked for (from the cursor on, for an incremental pull)."""
    covered_from: dt.date | None = None
    """First day of the consent window the SME's rows cover (the whole window's start)."""


@dataclass
class SmeOutcome:
    """What happened to one SME; becomes its ``ingestion_runs`` row, payload rows and quarantine."""

    connection: Connection
    status: str
    started_at: dt.datetime
    finished_at: dt.datetime
    error_class: str | None = None
    error_message: str | None = None
    landed: list[LandedPayload] = field(default_factory=list)
    parsed: bool = False
    records_raw: int = 0
    records_canonical: int = 0
    rejects: pd.DataFrame = field(default_factory=no_rejects)
    rotated_credentials: dict[str, Any] | None = None
    token_update: dict[str, Any] | None = None
    token_refused: str | None = None
    window: PullWindow | None = None
    covered_from: dt.date | None = None


REAUTHORIZE = "reauthorization needed"
"""Start of the reason an SME's own provider connection stopped working (it has to reconnect)."""


@dataclass(frozen=True)
class StoredToken:
    """An SME's own provider tokens (``provider_tokens``), decrypted for one run."""

    refresh_token: str
    access_token: str | None
    access_expires_at: dt.datetime | None
    refused: str | None
    """Why the provider refused the refresh token, when it did and the SME has not reconnected since."""
    obtained_at: dt.datetime | None = None
    """When the SME connected (a reconnection during the run makes these tokens stale)."""


def stored_tokens(
    session: Session, source: str, sme_ids: Sequence[str], box: Fernet
) -> dict[str, StoredToken]:
    """The decrypted ``provider_tokens`` of ``sme_ids`` at ``source`` (one query per chunk).

    A token this installation's key cannot decrypt (the secret key changed) counts as refused.
    """
    found: dict[str, StoredToken] = {}
    for chunk in in_chunks(list(sme_ids)):
        rows = session.scalars(
            select(ProviderToken).where(ProviderToken.source == source, ProviderToken.sme_id.in_(chunk))
        )
        for row in rows:
            refused = row.refused_reason or REAUTHORIZE if row.refused_at is not None else None
            try:
                refresh = box.decrypt(row.refresh_token_encrypted.encode()).decode()
                access = (
                    box.decrypt(row.access_token_encrypted.encode()).decode()
                    if row.access_token_encrypted
                    else None
                )
            except InvalidToken:
                refresh, access = "", None
                refused = f"{REAUTHORIZE}: the stored {source} token cannot be decrypted with this installation's secret key"
            found[row.sme_id] = StoredToken(refresh, access, row.access_expires_at, refused, row.obtained_at)
    return found


def with_stored_token(connection: Connection, token: StoredToken) -> Connection:
    """The connection authenticating with the SME's own tokens instead of the registration's."""
    credentials: dict[str, Any] = {"refresh_token": token.refresh_token}
    if token.access_token and token.access_expires_at is not None:
        credentials["access_token"] = token.access_token
        credentials["access_expires_at"] = token.access_expires_at.astimezone(dt.UTC).isoformat()
    return dataclasses.replace(connection, credentials=credentials, stored_token=True)


class HttpSessions:
    """One pair of ``requests`` sessions per thread (data and token), closed together at the end."""

    def __init__(self, factory: Callable[[bool], requests.Session]) -> None:
        self.factory = factory
        self.local = threading.local()
        self.opened: list[requests.Session] = []
        self.lock = threading.Lock()

    def pair(self) -> tuple[requests.Session, requests.Session]:
        if not hasattr(self.local, "pair"):
            pair = (self.factory(True), self.factory(False))
            with self.lock:
                self.opened.extend(pair)
            self.local.pair = pair
        return self.local.pair

    def close(self) -> None:
        for session in self.opened:
            session.close()


def connections_in_shard(session: Session, source: str, shard: int, shard_count: int) -> list[Connection]:
    """The shard's SMEs that have a connection to ``source``, sorted by SME id.

    Only the shard's own rows are read: one range of the indexed ``shard_key``
    (:func:`warehouse.shards.shard_range`).
    """
    low, high = shard_range(shard, shard_count)
    rows = session.execute(
        select(
            SourceConnection.sme_id,
            SourceConnection.provider,
            SourceConnection.account_ref,
            SourceConnection.credentials,
        )
        .where(
            SourceConnection.source == source,
            SourceConnection.shard_key >= low,
            SourceConnection.shard_key < high,
        )
        .order_by(SourceConnection.sme_id)
    )
    return [
        Connection(
            sme_id=sme_id,
            source=source,
            provider=provider,
            account_ref=account_ref,
            credentials=dict(credentials or {}),
        )
        for sme_id, provider, account_ref, credentials in rows
    ]


def _rotated(connection: Connection, auth: object) -> dict[str, Any] | None:
    """New credentials when the provider rotated the refresh token during the pull."""
    if isinstance(auth, OAuth2RefreshAuth) and auth.rotated:
        return {**connection.credentials, "refresh_token": auth.refresh_token}
    return None


def pull_one(
    connector: Connector,
    connection: Connection,
    window: PullWindow,
    http: HttpContext,
    store: Store,
    box: Fernet | None = None,
) -> Pulled:
    """Pull and land one SME's source; a failure is recorded in the result, never raised.

    With the SME's own stored tokens (``connection.stored_token``), a refreshed access token comes
    back encrypted with ``box`` in :attr:`Pulled.token_update`, and a refused one as
    :attr:`Pulled.token_refused` (the SME has to reconnect).
    """
    pulled = Pulled(connection, utcnow(), utcnow())
    auth = None
    try:
        client = connector.client(connection, http)
        auth = client.auth
        for page in connector.pull(client, connection, window):
            pulled.landed.append(land_page(store, connector.source, page, len(pulled.landed)))
            pulled.pages.append(page)
    except AuthError as error:
        log.warning("%s", error)
        pulled.error = error
        if connection.stored_token:
            pulled.token_refused = f"{REAUTHORIZE}: {error.message}"
    except ConnectorError as error:
        log.warning("%s", error)
        pulled.error = error
    except Exception as error:  # one SME's surprise must not stop the shard; the trace is logged
        log.error(
            "%s/%s: unexpected failure\n%s", connection.sme_id, connector.source, traceback.format_exc()
        )
        pulled.error = ConnectorError(
            f"unexpected {type(error).__name__}: {error}", sme_id=connection.sme_id, source=connector.source
        )
    if connection.stored_token:
        pulled.token_update = _token_update(auth, box)
    else:
        pulled.rotated_credentials = _rotated(connection, auth)
    pulled.finished_at = utcnow()
    return pulled


def _token_update(auth: object, box: Fernet | None) -> dict[str, Any] | None:
    """The encrypted new tokens after a refresh during the pull (None when none happened)."""
    if (
        not isinstance(auth, OAuth2RefreshAuth)
        or auth.refreshes == 0
        or auth.access_token is None
        or box is None
    ):
        return None
    update: dict[str, Any] = {
        "access_token_encrypted": box.encrypt(auth.access_token.encode()).decode(),
        "access_expires_at": auth.access_expires_at,
        "refreshed_at": utcnow(),
    }
    if auth.rotated:
        update["refresh_token_encrypted"] = box.encrypt(auth.refresh_token.encode()).decode()
    return update


def parse_pulled(
    connector: Connector, pulled: Sequence[Pulled]
) -> tuple[list[SmeOutcome], ParseResult | None]:
    """Parse the successful pulls of a chunk together and turn every pull into its outcome.

    Should the batch parse itself break (a parser bug met by odd data), each SME is parsed alone
    so that only the SME that triggers it fails.
    """
    fine = [p for p in pulled if p.error is None and not p.no_consent]
    results: dict[str, ParseResult | Exception] = {}
    batch_result: ParseResult | None = None
    try:
        batch_result = connector.parse([SmePages(p.connection.sme_id, p.pages) for p in fine])
        results = dict.fromkeys((p.connection.sme_id for p in fine), batch_result)
    except Exception:
        log.error("%s: batch parse failed, parsing SME by SME\n%s", connector.source, traceback.format_exc())
        for p in fine:
            try:
                results[p.connection.sme_id] = connector.parse([SmePages(p.connection.sme_id, p.pages)])
            except Exception as error:
                results[p.connection.sme_id] = error
    outcomes = [_outcome(connector.source, p, results.get(p.connection.sme_id)) for p in pulled]
    if batch_result is None:
        parts = [r for r in results.values() if isinstance(r, ParseResult)]
        batch_result = _merge_results(connector.source, parts) if parts else None
    return outcomes, batch_result


def _merge_results(source: str, parts: Sequence[ParseResult]) -> ParseResult:
    tables = {name: pd.concat([p.tables[name] for p in parts], ignore_index=True) for name in parts[0].tables}
    rejects = pd.concat([p.rejects for p in parts], ignore_index=True)
    raw = {k: v for p in parts for k, v in p.records_raw.items()}
    dropped = {k: v for p in parts for k, v in p.duplicates_dropped.items()}
    return ParseResult(source, tables, rejects, raw, dropped)


def _outcome(source: str, pulled: Pulled, parsed: ParseResult | Exception | None) -> SmeOutcome:
    sme_id = pulled.connection.sme_id
    outcome = SmeOutcome(
        pulled.connection,
        "failed",
        pulled.started_at,
        pulled.finished_at,
        landed=pulled.landed,
        rotated_credentials=pulled.rotated_credentials,
        token_update=pulled.token_update,
        token_refused=pulled.token_refused,
        window=pulled.window,
        covered_from=pulled.covered_from,
    )
    if pulled.no_consent:
        outcome.status = "skipped_no_consent"
        return outcome
    if pulled.error is not None:
        outcome.error_class, outcome.error_message = pulled.error.kind, str(pulled.error)
        if pulled.token_refused:
            outcome.error_message = f"{sme_id}/{source}: {pulled.token_refused}"
        return outcome
    if not isinstance(parsed, ParseResult):
        outcome.error_class = "fatal"
        outcome.error_message = f"{sme_id}/{source}: parser failed: {type(parsed).__name__}: {parsed}"
        return outcome
    outcome.parsed = True
    outcome.records_raw = parsed.records_raw.get(sme_id, 0)
    if sme_id in parsed.quarantined:
        errors = parsed.errors(sme_id)
        more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
        outcome.status = "quarantined"
        outcome.error_class = errors[0].kind
        outcome.error_message = f"{errors[0]}{more}"
        outcome.rejects = parsed.rejects_of(sme_id)
        log.warning("quarantined: %s%s", errors[0], more)
        return outcome
    outcome.status = "pulled"
    outcome.records_canonical = parsed.records_canonical(sme_id)
    return outcome


def _run_row(outcome: SmeOutcome, source: str, as_of: dt.date) -> dict[str, Any]:
    return {
        "sme_id": outcome.connection.sme_id,
        "source": source,
        "as_of_date": as_of,
        "status": outcome.status,
        "error_class": outcome.error_class,
        "error_message": outcome.error_message,
        "records_raw": outcome.records_raw,
        "records_canonical": outcome.records_canonical,
        "records_rejected": len(outcome.rejects),
        "raw_sha256": run_hash([p.sha256 for p in outcome.landed]),
        "started_at": outcome.started_at,
        "finished_at": outcome.finished_at,
    }


def _quarantine_rows(outcome: SmeOutcome, source: str, as_of: dt.date) -> list[dict[str, Any]]:
    tables = ",".join(t.name for t in TABLES_BY_SOURCE[source])
    rejects = outcome.rejects
    return [
        {
            "sme_id": outcome.connection.sme_id,
            "as_of_date": as_of,
            "stage": STAGE,
            "source": source,
            "table_name": tables,
            "record": str(record)[:256],
            "field": str(field_name)[:128],
            "reason": str(reason)[:512],
            "raw_sha256": raw_sha256,
            "resolved_at": None,
        }
        for record, field_name, reason, raw_sha256 in zip(
            rejects["record"], rejects["field"], rejects["reason"], rejects["raw_sha256"], strict=True
        )
    ]


def record_outcomes(
    session: Session,
    source: str,
    as_of: dt.date,
    outcomes: Sequence[SmeOutcome],
    *,
    resolved_at: dt.datetime,
    obtained: Mapping[str, dt.datetime] | None = None,
    shard_count: int | None = None,
) -> None:
    """Upsert runs, their raw payloads, quarantine entries (opened, or resolved at ``resolved_at``),
    rotated refresh tokens and, with ``shard_count``, the pull cursors of the successful pulls, in a
    few batched statements however many SMEs the shard holds."""
    if not outcomes:
        return
    if shard_count is not None:
        record_cursors(session, source, as_of, outcomes, shard_count, obtained or {}, at=resolved_at)
    upsert(
        session,
        IngestionRun,
        [_run_row(o, source, as_of) for o in outcomes],
        key=("sme_id", "source", "as_of_date"),
    )
    run_ids: dict[str, int] = {}
    for chunk in in_chunks([o.connection.sme_id for o in outcomes]):
        run_ids.update(
            session.execute(
                select(IngestionRun.sme_id, IngestionRun.id).where(
                    IngestionRun.source == source,
                    IngestionRun.as_of_date == as_of,
                    IngestionRun.sme_id.in_(chunk),
                )
            ).all()
        )
    record_payloads(session, {run_ids[o.connection.sme_id]: o.landed for o in outcomes})
    _record_quarantine(session, source, as_of, outcomes, resolved_at)
    rotated = [
        {"match_sme": o.connection.sme_id, "match_source": source, "new_credentials": o.rotated_credentials}
        for o in outcomes
        if o.rotated_credentials is not None
    ]
    if rotated:
        session.connection().execute(
            update(SourceConnection)
            .where(
                SourceConnection.sme_id == bindparam("match_sme"),
                SourceConnection.source == bindparam("match_source"),
            )
            .values(credentials=bindparam("new_credentials")),
            rotated,
        )
    _record_tokens(session, source, outcomes, at=resolved_at, obtained=obtained or {})


def _record_tokens(
    session: Session,
    source: str,
    outcomes: Sequence[SmeOutcome],
    *,
    at: dt.datetime,
    obtained: Mapping[str, dt.datetime],
) -> None:
    """Store refreshed tokens (encrypted) and mark refused ones, in a few batched statements.

    Only the connection the run read is changed: an SME that reconnected meanwhile (a newer
    ``obtained_at``) keeps its new tokens.
    """
    groups: dict[tuple[str, ...], list[dict[str, Any]]] = {}
    for o in outcomes:
        if o.token_update is not None and o.connection.sme_id in obtained:
            changes = {**o.token_update, "refused_at": None, "refused_reason": ""}
            groups.setdefault(tuple(sorted(changes)), []).append(
                {"match_sme": o.connection.sme_id, "match_obtained": obtained[o.connection.sme_id], **changes}
            )
    same_connection = (
        ProviderToken.sme_id == bindparam("match_sme"),
        ProviderToken.source == source,
        ProviderToken.obtained_at == bindparam("match_obtained", type_=ProviderToken.obtained_at.type),
    )
    for columns, rows in groups.items():
        session.connection().execute(
            update(ProviderToken)
            .where(*same_connection)
            .values({column: bindparam(column) for column in columns}),
            rows,
        )
    refused = [
        {
            "match_sme": o.connection.sme_id,
            "match_obtained": obtained[o.connection.sme_id],
            "why": o.token_refused,
        }
        for o in outcomes
        if o.token_refused is not None and o.connection.sme_id in obtained
    ]
    if refused:
        session.connection().execute(
            update(ProviderToken)
            .where(*same_connection, ProviderToken.refused_at.is_(None))
            .values(refused_at=at, refused_reason=bindparam("why")),
            refused,
        )


def record_cursors(
    session: Session,
    source: str,
    as_of: dt.date,
    outcomes: Sequence[SmeOutcome],
    shard_count: int,
    obtained: Mapping[str, dt.datetime],
    *,
    at: dt.datetime,
) -> None:
    """Advance the cursor of every successful pull (never back to an earlier as-of date); drop the
    cursor of an SME whose run of the cursor's own date did not pull (its partition lost the rows)."""
    rows = [
        {
            "sme_id": o.connection.sme_id,
            "source": source,
            "as_of_date": as_of,
            "covered_from": o.covered_from,
            "pulled_through": o.window.end,
            "provider": o.connection.provider,
            "account_ref": o.connection.account_ref,
            "connected_at": obtained.get(o.connection.sme_id) if o.connection.stored_token else None,
            "shard_count": shard_count,
            "updated_at": at,
        }
        for o in outcomes
        if o.status == "pulled" and o.window is not None and o.covered_from is not None
    ]
    lost = [o.connection.sme_id for o in outcomes if o.status != "pulled"]
    for chunk in in_chunks(lost):
        session.execute(
            delete(PullCursor).where(
                PullCursor.source == source, PullCursor.as_of_date == as_of, PullCursor.sme_id.in_(chunk)
            )
        )
    if not rows:
        return
    insert_factory = {"sqlite": sqlite.insert, "postgresql": postgresql.insert}[
        session.get_bind().dialect.name
    ]
    statement = insert_factory(PullCursor)
    statement = statement.on_conflict_do_update(
        index_elements=["sme_id", "source"],
        set_={c: statement.excluded[c] for c in rows[0] if c not in ("sme_id", "source")},
        where=PullCursor.as_of_date <= statement.excluded.as_of_date,
    )
    session.execute(statement, rows)


@dataclass(frozen=True)
class KnownCursor:
    """An SME's ``pull_cursors`` row as read before its pull, with when its data was last erased."""

    as_of: dt.date
    covered_from: dt.date
    pulled_through: dt.date
    provider: str
    account_ref: str
    connected_at: dt.datetime | None
    shard_count: int
    updated_at: dt.datetime
    erased_at: dt.datetime | None


def load_cursors(session: Session, source: str, sme_ids: Sequence[str]) -> dict[str, KnownCursor]:
    """The cursors of ``sme_ids`` at ``source`` (one query per chunk)."""
    found: dict[str, KnownCursor] = {}
    for chunk in in_chunks(list(sme_ids)):
        for row in session.execute(
            select(
                PullCursor.sme_id,
                PullCursor.as_of_date,
                PullCursor.covered_from,
                PullCursor.pulled_through,
                PullCursor.provider,
                PullCursor.account_ref,
                PullCursor.connected_at,
                PullCursor.shard_count,
                PullCursor.updated_at,
                Sme.erased_at,
            )
            .join(Sme, Sme.sme_id == PullCursor.sme_id)
            .where(PullCursor.source == source, PullCursor.sme_id.in_(chunk))
        ):
            found[row[0]] = KnownCursor(*row[1:])
    return found


@dataclass
class EarlierRows:
    """What an incremental pull keeps: per SME, the day its pull starts from; per table, the
    candidate rows of the SMEs' earlier partitions (with their provider day in ``_day``)."""

    restart: dict[str, dt.date] = field(default_factory=dict)
    covered_from: dict[str, dt.date] = field(default_factory=dict)
    tables: dict[str, list[pd.DataFrame]] = field(default_factory=dict)


DAY = "_day"


def incremental_plan(
    connector: Connector,
    store: Store,
    shard: int,
    as_of: dt.date,
    connections: Sequence[Connection],
    cursors: Mapping[str, KnownCursor],
    windows: Mapping[str, int],
    tokens: Mapping[str, StoredToken],
    *,
    shard_count: int,
    revision_months: int,
) -> EarlierRows:
    """Which of ``connections`` can be pulled incrementally, from when, and the rows they keep.

    An SME qualifies when its cursor is for an earlier date, was written for the same connection and
    shard count, its rows cover the consent window's start, its data was not erased since, and the
    connector dates every row of the source; its partition must still exist.
    """
    plan = EarlierRows()
    tables = TABLES_BY_SOURCE[connector.source]
    if any(connector.row_dates(t.name, t.empty_frame()) is None for t in tables):
        return plan
    groups: dict[dt.date, dict[str, dt.date]] = {}
    for connection in connections:
        sme_id = connection.sme_id
        cursor, months = cursors.get(sme_id), windows.get(sme_id)
        if cursor is None or months is None:
            continue
        token = tokens.get(sme_id)
        start = PullWindow.for_history(as_of, months).start
        if (
            cursor.as_of >= as_of
            or cursor.shard_count != shard_count
            or cursor.provider != connection.provider
            or cursor.account_ref != connection.account_ref
            or cursor.connected_at != (token.obtained_at if token is not None else None)
            or (cursor.erased_at is not None and cursor.erased_at >= cursor.updated_at)
            or start < cursor.covered_from
        ):
            continue
        restart = add_months(cursor.pulled_through.replace(day=1), 1 - revision_months)
        groups.setdefault(cursor.as_of, {})[sme_id] = restart
        plan.covered_from[sme_id] = start
    for earlier, restarts in groups.items():
        paths = [store.layout.canonical(t.name, earlier.isoformat(), shard) for t in tables]
        if not all(store.exists(path) for path in paths):
            continue  # the partition is gone: these SMEs are pulled whole
        frames: dict[str, pd.DataFrame] = {}
        for table, path in zip(tables, paths, strict=True):
            frame = store.read_table(path).to_pandas()
            frame = frame[frame["sme_id"].isin(restarts.keys())].reset_index(drop=True)
            frame[DAY] = connector.row_dates(table.name, frame).to_numpy()
            frames[table.name] = frame
            # Only the consent window's rows count: older ones are cut, whatever becomes of them.
            inside = frame[DAY] >= frame["sme_id"].map(
                {s: pd.Timestamp(plan.covered_from[s]) for s in restarts}
            )
            unsettled = frame[connector.unsettled(table.name, frame).to_numpy(dtype=bool) & inside.to_numpy()]
            for sme_id, day in unsettled.groupby("sme_id")[DAY].min().items():
                if pd.notna(day):
                    first = dt.date(day.year, day.month, 1)
                    restarts[sme_id] = min(restarts[sme_id], first)
        for sme_id, restart in restarts.items():
            if restart > plan.covered_from[sme_id]:
                plan.restart[sme_id] = restart
        for name, frame in frames.items():
            plan.tables.setdefault(name, []).append(frame[frame["sme_id"].isin(plan.restart.keys())])
    return plan


def kept_rows(
    source: str, plan: EarlierRows, outcomes: Sequence[SmeOutcome], parts: dict[str, list[pd.DataFrame]]
) -> None:
    """Add to ``parts`` the earlier rows incremental pulls keep: those of the SMEs pulled from a
    later day, dated inside the consent window as it is now and before that day, unless the pull
    just brought a row with the same key."""
    spans = {
        o.connection.sme_id: (o.covered_from, o.window.start)
        for o in outcomes
        if o.status == "pulled"
        and o.window is not None
        and o.covered_from is not None
        and o.window.start > o.covered_from
    }
    if not spans:
        return
    low = {sme: pd.Timestamp(span[0]) for sme, span in spans.items()}
    high = {sme: pd.Timestamp(span[1]) for sme, span in spans.items()}
    for table in TABLES_BY_SOURCE[source]:
        candidates = [f for f in plan.tables.get(table.name, []) if len(f)]
        if not candidates:
            continue
        frame = pd.concat(candidates, ignore_index=True)
        day = frame[DAY]
        keep = (day >= frame["sme_id"].map(low)) & (day < frame["sme_id"].map(high))
        frame = frame[keep.fillna(False).astype(bool)].drop(columns=[DAY])
        fresh = [f for f in parts[table.name] if len(f)]
        if fresh and len(frame):
            new = pd.concat([f[list(table.key)] for f in fresh], ignore_index=True)
            frame = frame[~_key_index(table, frame).isin(_key_index(table, new))]
        if len(frame):
            parts[table.name].append(frame)


def _key_index(table: Any, frame: pd.DataFrame) -> pd.MultiIndex:
    """``table``'s key of every row, dates and instants as epoch nanoseconds (whatever pandas type
    the frame holds them in), the rest as text."""
    temporal = {f.name for f in table.schema if pa.types.is_temporal(f.type)}
    columns = {
        name: pd.to_datetime(frame[name], utc=True).astype("int64")
        if name in temporal
        else frame[name].astype("string")
        for name in table.key
    }
    return pd.MultiIndex.from_frame(pd.DataFrame(columns))


def _reauthorize_row(outcome: SmeOutcome, source: str, as_of: dt.date) -> dict[str, Any]:
    """The quarantine entry of an SME whose own provider connection needs reauthorizing."""
    return {
        "sme_id": outcome.connection.sme_id,
        "as_of_date": as_of,
        "stage": STAGE,
        "source": source,
        "table_name": ",".join(t.name for t in TABLES_BY_SOURCE[source]),
        "record": "provider_tokens",
        "field": "refresh_token",
        "reason": str(outcome.token_refused)[:512],
        "raw_sha256": None,
        "resolved_at": None,
    }


def _record_quarantine(
    session: Session, source: str, as_of: dt.date, outcomes: Sequence[SmeOutcome], resolved_at: dt.datetime
) -> None:
    """Open an entry per reject; resolve earlier entries of SMEs whose payloads now parse cleanly.

    Only runs that got as far as parsing decide: a failed pull says nothing about the data.
    """
    parsed = [o.connection.sme_id for o in outcomes if o.parsed]
    rows = [row for o in outcomes if o.parsed for row in _quarantine_rows(o, source, as_of)]
    rows += [_reauthorize_row(o, source, as_of) for o in outcomes if o.token_refused is not None]
    still_open = {(r["sme_id"], r["record"], r["field"], r["reason"]) for r in rows}
    fixed = [
        entry_id
        for chunk in in_chunks(parsed)
        for entry_id, *entry_key in session.execute(
            select(
                QuarantineEntry.id,
                QuarantineEntry.sme_id,
                QuarantineEntry.record,
                QuarantineEntry.field,
                QuarantineEntry.reason,
            ).where(
                QuarantineEntry.stage == STAGE,
                QuarantineEntry.source == source,
                QuarantineEntry.as_of_date == as_of,
                QuarantineEntry.resolved_at.is_(None),
                QuarantineEntry.sme_id.in_(chunk),
            )
        )
        if tuple(entry_key) not in still_open
    ]
    for chunk in in_chunks(fixed):
        session.execute(
            update(QuarantineEntry).where(QuarantineEntry.id.in_(chunk)).values(resolved_at=resolved_at)
        )
    upsert(
        session,
        QuarantineEntry,
        rows,
        key=("sme_id", "as_of_date", "stage", "source", "record", "field", "reason"),
        update=("table_name", "raw_sha256", "resolved_at"),
    )


def write_tables(
    store: Store, source: str, as_of: dt.date, shard: int, parts: dict[str, list[pd.DataFrame]]
) -> tuple[dict[str, int], dict[str, str]]:
    """One Parquet file per canonical table of ``source`` for the shard, each with its digest sidecar
    (:func:`warehouse.canonical_files.write_canonical`); (rows, paths) per table."""
    rows: dict[str, int] = {}
    paths: dict[str, str] = {}
    for table in TABLES_BY_SOURCE[source]:
        frames = [f for f in parts[table.name] if len(f)]
        frame = pd.concat(frames, ignore_index=True) if frames else table.empty_frame()
        frame = frame.sort_values([*table.key, "source_record"], kind="stable")
        path = write_canonical(store, table.name, as_of, shard, table.to_arrow(frame))
        rows[table.name] = len(frame)
        paths[table.name] = path
    return rows, paths


def _chunks(items: Sequence[Any], size: int) -> Iterator[Sequence[Any]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def ingest_shard(
    source: str,
    shard: int,
    as_of: dt.date,
    *,
    session_factory: SessionFactory | None = None,
    store: Store | None = None,
    base_url: str | None = None,
    consent_at: dt.datetime | None = None,
    now: dt.datetime | None = None,
    clock: Clock | None = None,
    http_session_factory: Callable[[bool], requests.Session] | None = None,
    max_workers: int = PULL_THREADS,
    sme_ids: Collection[str] | None = None,
    token_key: str | None = None,
    full: bool = False,
) -> dict[str, Any]:
    """Ingest ``source`` for every connected SME of ``shard`` as of ``as_of``; a small summary back.

    Each SME with a cursor from an earlier date is pulled incrementally (see the module's
    docstring); ``full=True`` pulls every SME's whole consent window.

    With ``sme_ids``, only those SMEs of the shard are pulled, and the shard's canonical files keep
    the rows the other SMEs already have there (a run for the SMEs that just granted).

    ``session_factory`` (default :func:`warehouse.db.session_scope`) opens warehouse transactions;
    ``store`` defaults to the configured store; the provider (base URL, token endpoint, client id
    and secret) is :func:`provider_endpoint`'s, unless ``base_url`` names another. ``consent_at``
    is the instant consents must be active at (default: the start of the as-of day, UTC, so that
    every re-run of a day decides alike; a revoked consent is never active, whatever the instant).
    The pull happens ``now`` (default: the current instant, read again before each SME), and the
    same consent must be active then too: a backfill of an earlier date never pulls under a consent
    that has since expired, nor with the window of one consent and the currency of another.
    ``clock`` is what HTTP retries wait on, and ``http_session_factory(retry_reads)`` makes each
    thread's sessions (default :func:`connectors.core.http.make_session`); tests pass their own to
    stay fast and to observe every request.

    An SME that connected the source itself (the OAuth flow of its connector link) is pulled with
    its own tokens from ``provider_tokens``, decrypted with ``token_key`` (default: the service's
    secret key): the stored access token while it is valid, else a refresh against the provider's
    token endpoint, whose new token is stored encrypted. A refused refresh fails the pull with
    ``reauthorization needed`` (a quarantine entry, and the SME's dossier is held) until the SME
    reconnects; no further request is made with that token.
    """
    settings = get_settings()
    connector = connector_for(source)
    session_factory = session_factory or session_scope
    with session_factory() as session:
        shard_count = shard_plans.plan_date(session, as_of, settings.shard_policy(), at=now).shard_count
    if not 0 <= shard < shard_count:
        raise ValueError(f"shard {shard} outside 0..{shard_count - 1} (the shard plan of {as_of})")
    store = store or Store.from_settings()
    endpoint = provider_endpoint(source, settings)
    if base_url is not None and base_url != endpoint.base_url:  # a caller's own provider (tests, a backfill)
        endpoint = dataclasses.replace(endpoint, base_url=base_url, token_endpoint="")
    fraud = FraudPrevention.of_this_machine(settings.device_id(), settings.vendor_license_ids)
    consent_at = consent_at or as_of_instant(as_of)
    clock = clock or SYSTEM_CLOCK

    def default_session(retry_reads: bool) -> requests.Session:
        return make_session(settings.http_retries, clock, retry_reads=retry_reads)

    box = fernet_for(token_key if token_key is not None else settings.kept_secret("secret_key"))

    with session_factory() as session:
        connections = connections_in_shard(session, source, shard, shard_count)
        if sme_ids is not None:
            wanted = set(sme_ids)
            connections = [c for c in connections if c.sme_id in wanted]
        uploaded = uploads.uploads_to_use(session, source, shard, shard_count, sme_ids=sme_ids)
        connections = [c for c in connections if c.sme_id not in uploaded]
        windows = pull_windows(
            session, source, [c.sme_id for c in connections], then=consent_at, now=now or utcnow()
        )
        tokens = stored_tokens(session, source, [c.sme_id for c in connections], box)
        cursors = {} if full else load_cursors(session, source, [c.sme_id for c in connections])

    outcomes: list[SmeOutcome] = []
    planned: list[Connection] = []
    for connection in connections:
        token = tokens.get(connection.sme_id)
        if token is not None:
            connection = with_stored_token(connection, token)
        if connection.sme_id not in windows:
            checked = utcnow()
            outcomes.append(SmeOutcome(connection, "skipped_no_consent", checked, checked))
        elif token is not None and token.refused is not None:
            # Held until the SME reconnects: asking the provider again with a refused token is pointless.
            checked = utcnow()
            why = (
                token.refused if token.refused.startswith(REAUTHORIZE) else f"{REAUTHORIZE}: {token.refused}"
            )
            outcomes.append(
                SmeOutcome(
                    connection,
                    "failed",
                    checked,
                    checked,
                    error_class="config",
                    error_message=f"{connection.sme_id}/{source}: {why}",
                    token_refused=why,
                )
            )
        else:
            planned.append(connection)

    plan = incremental_plan(
        connector,
        store,
        shard,
        as_of,
        planned,
        cursors,
        windows,
        tokens,
        shard_count=shard_count,
        revision_months=settings.pull_revision_months,
    )
    sessions = HttpSessions(http_session_factory or default_session)

    def run(connection: Connection) -> Pulled:
        # Consent is read again just before this SME's first request: a revocation since the
        # shard started stops it here, and a narrowed window is honoured.
        with session_factory() as session:
            months = pull_window(session, connection.sme_id, source, then=consent_at, now=now or utcnow())
        if months is None:
            checked = utcnow()
            log.info(
                "%s/%s: consent withdrawn since the shard started; not pulled", connection.sme_id, source
            )
            return Pulled(connection, checked, checked, no_consent=True)
        whole = PullWindow.for_history(as_of, months)
        window = whole
        restart = plan.restart.get(connection.sme_id)
        if restart is not None and whole.start >= plan.covered_from[connection.sme_id]:
            window = whole.since(restart)
        data_session, token_session = sessions.pair()
        http = HttpContext(
            endpoint.base_url,
            data_session,
            token_session,
            settings.http_timeout,
            clock,
            client_id=endpoint.client_id,
            client_secret=endpoint.client_secret,
            token_url=endpoint.token_url,
            fraud_prevention=fraud,
        )
        pulled = pull_one(connector, connection, window, http, store, box)
        pulled.window, pulled.covered_from = window, whole.start
        return pulled

    table_parts: dict[str, list[pd.DataFrame]] = {t.name: [] for t in TABLES_BY_SOURCE[source]}
    with contextlib.closing(sessions), ThreadPoolExecutor(max_workers=max(1, max_workers)) as pool:
        for chunk in _chunks(planned, PARSE_BATCH):
            chunk_outcomes, parsed = parse_pulled(connector, list(pool.map(run, chunk)))
            outcomes.extend(chunk_outcomes)
            if parsed is not None:
                _collect_rows(
                    parsed, table_parts, {o.connection.sme_id for o in chunk_outcomes if o.status == "pulled"}
                )

    outcomes.extend(
        ingest_uploads(
            source,
            as_of,
            uploaded,
            table_parts,
            session_factory=session_factory,
            store=store,
            consent_at=consent_at,
            now=now,
        )
    )
    kept_rows(source, plan, outcomes, table_parts)
    outcomes.sort(key=lambda o: o.connection.sme_id)
    if sme_ids is not None:
        _keep_other_smes(store, source, as_of, shard, set(sme_ids), table_parts)
    rows, paths = write_tables(store, source, as_of, shard, table_parts)
    with session_factory() as session:
        record_outcomes(
            session,
            source,
            as_of,
            outcomes,
            resolved_at=utcnow(),
            obtained={sme: t.obtained_at for sme, t in tokens.items() if t.obtained_at is not None},
            shard_count=shard_count,
        )

    statuses = [o.status for o in outcomes]
    summary = {
        "source": source,
        "shard": shard,
        "as_of": as_of.isoformat(),
        "smes_considered": len(outcomes),
        "pulled": statuses.count("pulled"),
        "skipped_no_consent": statuses.count("skipped_no_consent"),
        "failed": statuses.count("failed"),
        "quarantined": statuses.count("quarantined"),
        "uploaded": statuses.count("uploaded"),
        "incremental": sum(
            1
            for o in outcomes
            if o.window is not None and o.covered_from is not None and o.window.start > o.covered_from
        ),
        "unreadable": statuses.count("unreadable"),
        "rows": rows,
        "paths": paths,
    }
    log.info("ingest %s shard %d as of %s: %s", source, shard, as_of, summary)
    return summary


UPLOAD_PROVIDER = "upload"
"""The ``provider`` of the run of a source read from the SME's uploads."""


def ingest_uploads(
    source: str,
    as_of: dt.date,
    uploaded: dict[str, list[uploads.UploadedFile]],
    parts: dict[str, list[pd.DataFrame]],
    *,
    session_factory: SessionFactory,
    store: Store,
    consent_at: dt.datetime,
    now: dt.datetime | None = None,
) -> list[SmeOutcome]:
    """The source's rows of the SMEs whose ``source`` comes from their uploads (see
    :mod:`connectors.uploads`), added to ``parts``; one outcome per SME, recorded like a pull.

    Consent decides as for a pull (:func:`warehouse.consent.pull_window`, both at ``consent_at``
    and now): without it the run is ``skipped_no_consent`` and no file is read; with it, only rows
    inside its window are used. The outcome is ``uploaded`` (rows from the parsed files, the files
    as the run's raw payloads), ``unreadable`` (only files no parser reads yet: no rows, the files
    named in ``error_message``), or ``quarantined`` (a file its parser now refuses, or whose raw
    copy changed: no rows from any of the SME's files, like a bad provider payload).
    """
    if not uploaded:
        return []
    with session_factory() as session:
        windows = pull_windows(session, source, list(uploaded), then=consent_at, now=now or utcnow())
    outcomes: list[SmeOutcome] = []
    for sme_id, files in sorted(uploaded.items()):
        started = utcnow()
        connection = Connection(sme_id=sme_id, source=source, provider=UPLOAD_PROVIDER, account_ref="")
        outcome = SmeOutcome(connection, "skipped_no_consent", started, started)
        outcomes.append(outcome)
        if sme_id not in windows:
            continue
        read = uploads.read_uploads(
            store, source, sme_id, files, PullWindow.for_history(as_of, windows[sme_id])
        )
        outcome.finished_at = utcnow()
        outcome.landed = read.landed
        outcome.records_raw = read.records_raw
        outcome.error_message = read.notes() or None
        if read.errors:
            outcome.status, outcome.parsed, outcome.error_class = "quarantined", True, "format"
            outcome.error_message = "; ".join(f"{f.filename}: {e}" for f, e in read.errors)
            outcome.rejects = pd.DataFrame(
                {
                    "sme_id": sme_id,
                    "record": [f"{f.filename}: {e.record}" for f, e in read.errors],
                    "field": [e.field for _, e in read.errors],
                    "reason": [e.reason for _, e in read.errors],
                    "raw_sha256": [f.sha256 for f, _ in read.errors],
                }
            )
            log.warning("%s/%s: upload quarantined: %s", sme_id, source, outcome.error_message)
            continue
        if not read.landed:
            outcome.status = "unreadable"
            continue
        outcome.status, outcome.parsed = "uploaded", True
        outcome.records_canonical = read.records_canonical
        for name, frame in read.tables.items():
            parts[name].append(frame)
    return outcomes


def _keep_other_smes(
    store: Store,
    source: str,
    as_of: dt.date,
    shard: int,
    sme_ids: set[str],
    parts: dict[str, list[pd.DataFrame]],
) -> None:
    """Add to ``parts`` the rows of the shard's current files that belong to SMEs not in ``sme_ids``."""
    for table in TABLES_BY_SOURCE[source]:
        path = store.layout.canonical(table.name, as_of.isoformat(), shard)
        if store.exists(path):
            frame = store.read_table(path).to_pandas()
            parts[table.name].append(frame[~frame["sme_id"].isin(sme_ids)])


def _collect_rows(parsed: ParseResult, parts: dict[str, list[pd.DataFrame]], pulled: set[str]) -> None:
    """Keep the rows of SMEs whose pull ended ``pulled`` (a parse result holds no others)."""
    for name, frame in parsed.tables.items():
        parts[name].append(frame[frame["sme_id"].isin(pulled)])
