"""Warehouse tables as typed SQLAlchemy 2 models.

Each model names its natural key (a unique constraint) so that every write can be an upsert and a
re-run changes nothing. ``consent_events`` is append-only and hash-chained per consent. The schema
is created and evolved only by the Alembic migrations in ``warehouse/migrations``
(``dossier db upgrade``).
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Date,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column
from sqlalchemy.types import TypeDecorator

from warehouse.shards import shard_key

NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


class UTCDateTime(TypeDecorator[dt.datetime]):
    """Timezone-aware UTC instants on every backend (SQLite keeps no zone, so it is restored on read)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: dt.datetime | None, dialect: Any) -> dt.datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError(f"naive datetime {value!r}: the warehouse stores UTC instants only")
        return value.astimezone(dt.UTC)

    def process_result_value(self, value: dt.datetime | None, dialect: Any) -> dt.datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=dt.UTC) if value.tzinfo is None else value.astimezone(dt.UTC)


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)
    type_annotation_map = {  # noqa: RUF012
        dict[str, Any]: JSON,
        list[str]: JSON,
        dt.datetime: UTCDateTime(),
    }


class Sme(Base):
    """An SME that asked for a dossier."""

    __tablename__ = "smes"

    sme_id: Mapped[str] = mapped_column(String(32), primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    industry: Mapped[str] = mapped_column(String(64))
    region: Mapped[str] = mapped_column(String(64))
    size_band: Mapped[str] = mapped_column(String(16))
    founded_year: Mapped[int | None]
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    erased_at: Mapped[dt.datetime | None]
    """When the SME's data was erased at its request (``dossier consent erase``); its name is gone too."""


class Lender(Base):
    """A lending platform that may receive dossiers."""

    __tablename__ = "lenders"

    lender_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)


class Consent(Base):
    """An SME's permission: which sources, for which recipients, why, how far back, until when."""

    __tablename__ = "consents"
    __table_args__ = (Index("ix_consents_sme_status", "sme_id", "status"),)

    consent_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    sme_id: Mapped[str] = mapped_column(ForeignKey("smes.sme_id"), index=True)
    purpose: Mapped[str] = mapped_column(String(200))
    sources: Mapped[list[str]]
    recipients: Mapped[list[str]]
    history_months: Mapped[int]
    granted_at: Mapped[dt.datetime]
    expires_at: Mapped[dt.datetime]
    status: Mapped[str] = mapped_column(String(16))
    revoked_at: Mapped[dt.datetime | None]
    reconfirmed_at: Mapped[dt.datetime | None]
    """When the SME last reconfirmed this access (None: not since the grant)."""
    reconfirm_by: Mapped[dt.datetime] = mapped_column(index=True)
    """Access stops here unless reconfirmed: 90 days after the grant or the last reconfirmation."""
    updated_at: Mapped[dt.datetime] = mapped_column(default=utcnow, onupdate=utcnow)


class ConsentEvent(Base):
    """Append-only history of a consent; each event's hash covers the previous one."""

    __tablename__ = "consent_events"
    __table_args__ = (UniqueConstraint("consent_id", "sequence"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    consent_id: Mapped[str] = mapped_column(ForeignKey("consents.consent_id"), index=True)
    sequence: Mapped[int]
    event_type: Mapped[str] = mapped_column(String(32))
    occurred_at: Mapped[dt.datetime]
    actor: Mapped[str] = mapped_column(String(64))
    details: Mapped[dict[str, Any]]
    prev_hash: Mapped[str] = mapped_column(String(64))
    hash: Mapped[str] = mapped_column(String(64))


class SourceConnection(Base):
    """How to reach one source of one SME (provider and the SME's account there)."""

    __tablename__ = "source_connections"
    __table_args__ = (Index("ix_source_connections_shard", "source", "shard_key"),)

    sme_id: Mapped[str] = mapped_column(ForeignKey("smes.sme_id"), primary_key=True)
    source: Mapped[str] = mapped_column(String(32), primary_key=True)
    shard_key: Mapped[int] = mapped_column(
        BigInteger, default=lambda ctx: shard_key(ctx.get_current_parameters()["sme_id"])
    )
    """:func:`warehouse.shards.shard_key` of ``sme_id`` (set on insert): a shard is one range of it."""
    provider: Mapped[str] = mapped_column(String(64))
    account_ref: Mapped[str] = mapped_column(String(128))
    credentials: Mapped[dict[str, Any]]
    status: Mapped[str] = mapped_column(String(16), default="connected")
    connected_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[dt.datetime] = mapped_column(default=utcnow, onupdate=utcnow)


class IngestionRun(Base):
    """One pull of one source for one SME for one as-of date (re-runs update the same row)."""

    __tablename__ = "ingestion_runs"
    __table_args__ = (UniqueConstraint("sme_id", "source", "as_of_date"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    sme_id: Mapped[str] = mapped_column(ForeignKey("smes.sme_id"), index=True)
    source: Mapped[str] = mapped_column(String(32))
    as_of_date: Mapped[dt.date] = mapped_column(Date)
    status: Mapped[str] = mapped_column(String(24))
    error_class: Mapped[str | None] = mapped_column(String(16))
    error_message: Mapped[str | None] = mapped_column(Text)
    records_raw: Mapped[int] = mapped_column(default=0)
    records_canonical: Mapped[int] = mapped_column(default=0)
    records_rejected: Mapped[int] = mapped_column(default=0)
    raw_sha256: Mapped[str | None] = mapped_column(String(64))
    started_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    finished_at: Mapped[dt.datetime | None]


class RawPayload(Base):
    """One immutable, content-addressed response body landed by an ingestion run.

    Every attempt of a run (its first pull, each re-run of the same date) keeps its own rows, so
    the lineage of which payloads each attempt used is never overwritten.
    """

    __tablename__ = "raw_payloads"
    __table_args__ = (UniqueConstraint("ingestion_run_id", "attempt", "sequence"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    ingestion_run_id: Mapped[int] = mapped_column(ForeignKey("ingestion_runs.id"), index=True)
    attempt: Mapped[int] = mapped_column(default=1)
    """1 for a run's first pull, then one more for each re-run of the same SME, source and date."""
    sequence: Mapped[int]
    sha256: Mapped[str] = mapped_column(String(64), index=True)
    path: Mapped[str] = mapped_column(String(512))
    request: Mapped[str] = mapped_column(String(1024))
    media_type: Mapped[str] = mapped_column(String(64))
    size_bytes: Mapped[int]
    landed_at: Mapped[dt.datetime] = mapped_column(default=utcnow)


class QuarantineEntry(Base):
    """Why an SME's data was held back, naming source, record and field; resolved by a clean re-run."""

    __tablename__ = "quarantine"
    __table_args__ = (
        UniqueConstraint("sme_id", "as_of_date", "stage", "source", "record", "field", "reason"),
        Index("ix_quarantine_open", "as_of_date", "resolved_at"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    sme_id: Mapped[str] = mapped_column(ForeignKey("smes.sme_id"), index=True)
    as_of_date: Mapped[dt.date] = mapped_column(Date)
    stage: Mapped[str] = mapped_column(String(16))
    source: Mapped[str] = mapped_column(String(32))
    table_name: Mapped[str] = mapped_column(String(64), default="")
    record: Mapped[str] = mapped_column(String(256), default="")
    field: Mapped[str] = mapped_column(String(128), default="")
    reason: Mapped[str] = mapped_column(String(512))
    raw_sha256: Mapped[str | None] = mapped_column(String(64))
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    resolved_at: Mapped[dt.datetime | None]


class ValidationResult(Base):
    """Outcome of one expectation on one canonical table for one shard and as-of date."""

    __tablename__ = "validation_results"
    __table_args__ = (UniqueConstraint("as_of_date", "table_name", "shard", "expectation"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    as_of_date: Mapped[dt.date] = mapped_column(Date)
    table_name: Mapped[str] = mapped_column(String(64))
    shard: Mapped[int]
    suite: Mapped[str] = mapped_column(String(128))
    expectation: Mapped[str] = mapped_column(String(256))
    success: Mapped[bool] = mapped_column(Boolean)
    element_count: Mapped[int] = mapped_column(default=0)
    unexpected_count: Mapped[int] = mapped_column(default=0)
    failing_smes: Mapped[list[str]]
    run_at: Mapped[dt.datetime] = mapped_column(default=utcnow)


class Publish(Base):
    """One publish of the dossier dataset for an as-of date (its manifest is written last)."""

    __tablename__ = "publishes"
    __table_args__ = (UniqueConstraint("as_of_date", "schema_version"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    as_of_date: Mapped[dt.date] = mapped_column(Date)
    schema_version: Mapped[int]
    model_version: Mapped[str] = mapped_column(String(64))
    manifest_path: Mapped[str] = mapped_column(String(512))
    files: Mapped[int]
    rows: Mapped[int]
    published_at: Mapped[dt.datetime] = mapped_column(default=utcnow)


class DossierVersion(Base):
    """The catalog: one row per published dossier; ``feed_seq`` orders the lender feed."""

    __tablename__ = "dossier_versions"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    dossier_id: Mapped[str] = mapped_column(String(160), unique=True)
    sme_id: Mapped[str] = mapped_column(ForeignKey("smes.sme_id"), index=True)
    as_of_date: Mapped[dt.date] = mapped_column(Date)
    schema_version: Mapped[int]
    model_version: Mapped[str] = mapped_column(String(64))
    sources_used: Mapped[list[str]]
    scope: Mapped[str] = mapped_column(String(96), default="")
    history_months: Mapped[int] = mapped_column(default=0)
    publish_id: Mapped[int] = mapped_column(ForeignKey("publishes.id"))
    file_path: Mapped[str] = mapped_column(String(512))
    content_sha256: Mapped[str] = mapped_column(String(64))
    content_key: Mapped[str | None] = mapped_column(String(64))
    """sha256 of the content without the columns that only restate the date (``dossier_id``,
    ``as_of_date``): equal keys on two dates mean the SME's dossier did not change between them."""
    current_through: Mapped[dt.date | None] = mapped_column(Date)
    """The latest as-of date whose publish staged this content (``as_of_date``, or a later date
    that kept the version); null on rows published before it was kept (read as ``as_of_date``)."""
    grade: Mapped[str] = mapped_column(String(2))
    pd_12m: Mapped[float] = mapped_column(Float)
    feed_seq: Mapped[int] = mapped_column(Integer, unique=True)
    published_at: Mapped[dt.datetime] = mapped_column(default=utcnow)


class Subscription(Base):
    """A lender's standing request for dossiers, with an optional filter and its feed cursor."""

    __tablename__ = "subscriptions"
    __table_args__ = (UniqueConstraint("lender_id", "name"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    lender_id: Mapped[str] = mapped_column(ForeignKey("lenders.lender_id"), index=True)
    name: Mapped[str] = mapped_column(String(64), default="default")
    filters: Mapped[dict[str, Any]]
    purpose: Mapped[str] = mapped_column(String(32), default="credit_decision")
    active: Mapped[bool] = mapped_column(Boolean, default=True)
    cursor: Mapped[int] = mapped_column(default=0)
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[dt.datetime] = mapped_column(default=utcnow, onupdate=utcnow)


class Delivery(Base):
    """A dossier version handed to a lender (by a pull); one row per lender per version."""

    __tablename__ = "deliveries"
    __table_args__ = (UniqueConstraint("lender_id", "dossier_version_id"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    lender_id: Mapped[str] = mapped_column(ForeignKey("lenders.lender_id"), index=True)
    dossier_version_id: Mapped[int] = mapped_column(ForeignKey("dossier_versions.id"))
    subscription_id: Mapped[int] = mapped_column(ForeignKey("subscriptions.id"))
    purpose: Mapped[str] = mapped_column(String(32), default="credit_decision")
    sources_used: Mapped[list[str]] = mapped_column(default=list)
    """The sources of the content handed over (withdrawals are judged on what was delivered)."""
    history_months: Mapped[int] = mapped_column(default=0)
    content_sha256: Mapped[str] = mapped_column(String(64), default="")
    pull_id: Mapped[str] = mapped_column(String(64))
    delivered_at: Mapped[dt.datetime] = mapped_column(default=utcnow)


class Withdrawal(Base):
    """A tombstone: a dossier delivered to a lender whose consent has since ended, reported once.

    ``delivery_pull_id`` names the delivery being withdrawn, so a dossier delivered again later
    (consent granted anew, content changed) is withdrawn again if its consent ends once more.
    """

    __tablename__ = "withdrawals"
    __table_args__ = (UniqueConstraint("lender_id", "dossier_version_id", "delivery_pull_id"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    lender_id: Mapped[str] = mapped_column(ForeignKey("lenders.lender_id"), index=True)
    dossier_version_id: Mapped[int] = mapped_column(ForeignKey("dossier_versions.id"))
    delivery_pull_id: Mapped[str] = mapped_column(String(64))
    reason: Mapped[str] = mapped_column(String(32))
    """``consent_revoked``, ``consent_expired``, ``consent_no_longer_covers`` or ``erased``."""
    withdrawn_at: Mapped[dt.datetime]
    pull_id: Mapped[str] = mapped_column(String(64))
    reported_at: Mapped[dt.datetime] = mapped_column(default=utcnow)


class LenderKey(Base):
    """An API key of a lender, stored as the SHA-256 of the token (``warehouse.keys``); the token is
    shown once. ``expires_at`` is set when the key is rotated (the grace period), ``revoked_at`` when
    it is revoked."""

    __tablename__ = "lender_keys"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    lender_id: Mapped[str] = mapped_column(ForeignKey("lenders.lender_id"), index=True)
    prefix: Mapped[str] = mapped_column(String(16), unique=True)
    key_sha256: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    expires_at: Mapped[dt.datetime | None]
    revoked_at: Mapped[dt.datetime | None]


class FeedEvent(Base):
    """The lender's append-only feed log (``warehouse.events``): one row per delivered version or
    withdrawn delivery, numbered by ``seq`` (1, 2, ... per lender, in commit order), the position a
    feed cursor names. A delivered event keeps the row handed over, so a page reads the same forever."""

    __tablename__ = "feed_events"
    __table_args__ = (
        UniqueConstraint("lender_id", "seq"),
        Index("ix_feed_events_lender_dossier", "lender_id", "dossier_id"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    lender_id: Mapped[str] = mapped_column(ForeignKey("lenders.lender_id"))
    seq: Mapped[int]
    kind: Mapped[str] = mapped_column(String(16))
    """``delivered`` or ``withdrawn``; or, about an offer the lender made, ``offer_accepted``,
    ``offer_declined``, ``offer_closed`` (the SME accepted another) or ``offer_lapsed``."""
    dossier_version_id: Mapped[int] = mapped_column(ForeignKey("dossier_versions.id"))
    dossier_id: Mapped[str] = mapped_column(String(160))
    sme_id: Mapped[str] = mapped_column(String(32))
    pull_id: Mapped[str] = mapped_column(String(64))
    occurred_at: Mapped[dt.datetime]
    reason: Mapped[str | None] = mapped_column(String(32))
    content_sha256: Mapped[str] = mapped_column(String(64), default="")
    dossier_json: Mapped[str | None] = mapped_column(Text)
    """The delivered row as JSON (dates in ISO 8601), for ``delivered`` events."""
    offer_json: Mapped[str | None] = mapped_column(Text)
    """For an ``offer_*`` event: the offer as it stood when the event happened (``warehouse.offers``)."""


class FeedChange(Base):
    """A counter per table whose rows decide what lenders' feeds deliver (``dossier_versions``,
    ``consents``, ``smes``, ``subscriptions``), bumped by a trigger in every transaction that changes
    that table (migration ``0010_feed_watermark``; on PostgreSQL once per transaction and table,
    ``0020_feed_change_once``, on SQLite once per row changed): a lender's feed needs planning again
    only when their sum moved since its last sync (``warehouse.feed.refresh``)."""

    __tablename__ = "feed_changes"

    source: Mapped[str] = mapped_column(String(32), primary_key=True)
    version: Mapped[int] = mapped_column(BigInteger)


class FeedWatermark(Base):
    """When a lender's feed was last synced, against which counters (:class:`FeedChange`), and until
    when that sync holds without a change: the next instant a consent starts or ends, or a retry of
    versions whose files were unavailable."""

    __tablename__ = "feed_watermarks"

    lender_id: Mapped[str] = mapped_column(ForeignKey("lenders.lender_id"), primary_key=True)
    changes: Mapped[int] = mapped_column(BigInteger)
    synced_at: Mapped[dt.datetime]
    valid_until: Mapped[dt.datetime | None]


class ConnectorLink(Base):
    """A request sent to an SME: the terms it is asked to grant, reached by a signed, expiring token.

    Only the sha256 of the token is kept; a link grants (or declines) at most once.
    """

    __tablename__ = "connector_links"

    link_id: Mapped[str] = mapped_column(String(32), primary_key=True)
    token_sha256: Mapped[str] = mapped_column(String(64), unique=True)
    sme_id: Mapped[str] = mapped_column(ForeignKey("smes.sme_id"), index=True)
    sources: Mapped[list[str]]
    recipients: Mapped[list[str]]
    purpose: Mapped[str] = mapped_column(String(32))
    history_months: Mapped[int]
    consent_days: Mapped[int]
    created_by: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    expires_at: Mapped[dt.datetime]
    answered_at: Mapped[dt.datetime | None]
    outcome: Mapped[str | None] = mapped_column(String(16))
    """``granted`` or ``declined`` once the SME answered; the link is spent then."""
    consent_id: Mapped[str | None] = mapped_column(String(64))


class ShownText(Base):
    """Each version of the words an SME was shown, kept once, addressed by its sha256."""

    __tablename__ = "shown_texts"

    sha256: Mapped[str] = mapped_column(String(64), primary_key=True)
    text: Mapped[str] = mapped_column(Text)
    first_shown_at: Mapped[dt.datetime] = mapped_column(default=utcnow)


class LinkEvent(Base):
    """Append-only history of a connector link (requested, shown, granted, declined), hash-chained
    per link like ``consent_events``; ``text_sha256`` names the exact text the SME saw."""

    __tablename__ = "link_events"
    __table_args__ = (UniqueConstraint("link_id", "sequence"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    link_id: Mapped[str] = mapped_column(ForeignKey("connector_links.link_id"), index=True)
    sequence: Mapped[int]
    event_type: Mapped[str] = mapped_column(String(32))
    occurred_at: Mapped[dt.datetime]
    actor: Mapped[str] = mapped_column(String(64))
    details: Mapped[dict[str, Any]]
    prev_hash: Mapped[str] = mapped_column(String(64))
    hash: Mapped[str] = mapped_column(String(64))


class SmePageKey(Base):
    """The SME's own page: the sha256 of its current long-lived key (rotating replaces it)."""

    __tablename__ = "sme_page_keys"

    sme_id: Mapped[str] = mapped_column(ForeignKey("smes.sme_id"), primary_key=True)
    key_sha256: Mapped[str] = mapped_column(String(64), unique=True)
    issued_at: Mapped[dt.datetime] = mapped_column(default=utcnow)


class Upload(Base):
    """A file an SME uploaded for a source through a connector link: landed raw first, then read.

    ``status`` is ``parsed`` (a parser of the source's formats read it), ``unreadable`` (received
    and kept, no parser recognises it yet) or ``rejected`` (another source's format, or a file its
    parser refused: ``detail`` says why, naming the record and field).
    """

    __tablename__ = "uploads"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    link_id: Mapped[str] = mapped_column(ForeignKey("connector_links.link_id"), index=True)
    sme_id: Mapped[str] = mapped_column(ForeignKey("smes.sme_id"), index=True)
    source: Mapped[str] = mapped_column(String(32))
    filename: Mapped[str] = mapped_column(String(255))
    sha256: Mapped[str] = mapped_column(String(64))
    raw_path: Mapped[str] = mapped_column(String(512))
    size_bytes: Mapped[int]
    format: Mapped[str | None] = mapped_column(String(32))
    status: Mapped[str] = mapped_column(String(16))
    detail: Mapped[str] = mapped_column(Text, default="")
    tables: Mapped[dict[str, Any]]
    """Rows understood per canonical table (empty unless parsed)."""
    uploaded_at: Mapped[dt.datetime] = mapped_column(default=utcnow)


class OAuthRequest(Base):
    """An authorization-code request sent to a provider from a connector link (``state`` and the
    PKCE verifier, kept server-side); ``outcome`` records how the callback ended."""

    __tablename__ = "oauth_requests"

    state: Mapped[str] = mapped_column(String(64), primary_key=True)
    link_id: Mapped[str] = mapped_column(ForeignKey("connector_links.link_id"), index=True)
    sme_id: Mapped[str] = mapped_column(ForeignKey("smes.sme_id"))
    source: Mapped[str] = mapped_column(String(32))
    code_verifier: Mapped[str] = mapped_column(String(128))
    redirect_uri: Mapped[str] = mapped_column(String(512))
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    answered_at: Mapped[dt.datetime | None]
    outcome: Mapped[str | None] = mapped_column(String(16))
    detail: Mapped[str] = mapped_column(Text, default="")


class ProviderToken(Base):
    """An SME's provider credential from the authorization-code flow, encrypted at rest (Fernet)."""

    __tablename__ = "provider_tokens"

    sme_id: Mapped[str] = mapped_column(ForeignKey("smes.sme_id"), primary_key=True)
    source: Mapped[str] = mapped_column(String(32), primary_key=True)
    provider_url: Mapped[str] = mapped_column(String(512))
    refresh_token_encrypted: Mapped[str] = mapped_column(Text)
    obtained_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    access_token_encrypted: Mapped[str | None] = mapped_column(Text)
    """The latest access token (Fernet), reused by the ingest until ``access_expires_at``."""
    access_expires_at: Mapped[dt.datetime | None]
    refreshed_at: Mapped[dt.datetime | None]
    """When the ingest last traded the refresh token for a new access token."""
    refused_at: Mapped[dt.datetime | None]
    """When the provider refused the refresh token: the SME has to reconnect (None: not refused)."""
    refused_reason: Mapped[str] = mapped_column(Text, default="")


class WebhookEndpoint(Base):
    """A lender's webhook receiver (``warehouse.webhooks``): where its feed events are pushed, signed
    the Standard Webhooks way with the endpoint's secret (kept encrypted; the previous one signs too
    until ``previous_secret_expires_at`` after a rotation). ``last_seq`` is the lender's last feed
    event already queued for it; a new endpoint starts at the feed's end."""

    __tablename__ = "webhook_endpoints"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    endpoint_id: Mapped[str] = mapped_column(String(32), unique=True)
    lender_id: Mapped[str] = mapped_column(ForeignKey("lenders.lender_id"), index=True)
    url: Mapped[str] = mapped_column(String(2048))
    description: Mapped[str] = mapped_column(String(200), default="")
    event_types: Mapped[list[str]]
    enabled: Mapped[bool] = mapped_column(Boolean, default=True)
    disabled_reason: Mapped[str | None] = mapped_column(String(200))
    secret_encrypted: Mapped[str] = mapped_column(Text)
    previous_secret_encrypted: Mapped[str | None] = mapped_column(Text)
    previous_secret_expires_at: Mapped[dt.datetime | None]
    last_seq: Mapped[int] = mapped_column(default=0)
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[dt.datetime] = mapped_column(default=utcnow, onupdate=utcnow)


class WebhookMessage(Base):
    """One event to push to one endpoint: a feed event (``seq``; its content is read from the feed
    log when sent, so a withdrawn or erased row is never sent) or a test message (``seq`` null,
    ``payload`` kept). ``status``: ``pending`` (``next_attempt_at`` says when), ``delivered``,
    ``failed`` (every attempt of the retry schedule failed, or the endpoint answered 410)."""

    __tablename__ = "webhook_messages"
    __table_args__ = (
        UniqueConstraint("endpoint_id", "seq"),
        Index("ix_webhook_messages_due", "status", "next_attempt_at"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    message_id: Mapped[str] = mapped_column(String(40), unique=True)
    endpoint_id: Mapped[int] = mapped_column(ForeignKey("webhook_endpoints.id", ondelete="CASCADE"))
    lender_id: Mapped[str] = mapped_column(String(64), index=True)
    seq: Mapped[int | None]
    event_type: Mapped[str] = mapped_column(String(32))
    payload: Mapped[str | None] = mapped_column(Text)
    status: Mapped[str] = mapped_column(String(16), default="pending")
    attempts: Mapped[int] = mapped_column(default=0)
    """Attempts of the current round (a replay starts a new round)."""
    next_attempt_at: Mapped[dt.datetime | None]
    last_status_code: Mapped[int | None]
    last_error: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[dt.datetime] = mapped_column(default=utcnow, onupdate=utcnow)


class WebhookAttempt(Base):
    """One HTTP attempt to deliver a webhook message: when, the status code or the error, how long."""

    __tablename__ = "webhook_attempts"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    message_id: Mapped[int] = mapped_column(ForeignKey("webhook_messages.id", ondelete="CASCADE"), index=True)
    attempted_at: Mapped[dt.datetime]
    status_code: Mapped[int | None]
    error: Mapped[str | None] = mapped_column(Text)
    duration_ms: Mapped[int]
    next_attempt_at: Mapped[dt.datetime | None]


class GrantRun(Base):
    """The pipeline run a grant starts for its SME: queued, running, then done or failed.

    ``runner`` is ``in_process`` (the web service's own worker) or ``airflow`` (a DAG run
    triggered through Airflow's REST API, ``airflow_run_id``). One run per consent.
    """

    __tablename__ = "grant_runs"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    sme_id: Mapped[str] = mapped_column(ForeignKey("smes.sme_id"), index=True)
    consent_id: Mapped[str] = mapped_column(String(64), unique=True)
    link_id: Mapped[str | None] = mapped_column(String(32))
    runner: Mapped[str] = mapped_column(String(16))
    status: Mapped[str] = mapped_column(String(16))
    requested_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    started_at: Mapped[dt.datetime | None]
    finished_at: Mapped[dt.datetime | None]
    as_of_date: Mapped[dt.date | None] = mapped_column(Date)
    airflow_run_id: Mapped[str | None] = mapped_column(String(250))
    detail: Mapped[str] = mapped_column(Text, default="")


class FieldVisitRequest(Base):
    """An SME's request, from a connector link, for a field visit (the survey source); one per link."""

    __tablename__ = "field_visit_requests"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    link_id: Mapped[str] = mapped_column(ForeignKey("connector_links.link_id"), unique=True)
    sme_id: Mapped[str] = mapped_column(ForeignKey("smes.sme_id"), index=True)
    requested_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    status: Mapped[str] = mapped_column(String(16), default="requested")
    note: Mapped[str] = mapped_column(Text, default="")


class AgentEvent(Base):
    """One decision about a field agent: ``suspend`` or ``reinstate``, by whom, when and why.

    Rows are never updated or deleted: an agent's status is the action of their latest event
    (``warehouse.agents``), so the whole history of suspensions and reinstatements stays readable.
    ``evidence`` holds the detector's flags and scores behind a suspension (empty for a manual one);
    ``sme_ids`` the SMEs whose dossiers relied on the agent's visits, flagged for re-scoring.
    """

    __tablename__ = "agent_events"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    agent_id: Mapped[str] = mapped_column(String(128), index=True)
    action: Mapped[str] = mapped_column(String(16))
    actor: Mapped[str] = mapped_column(String(128))
    reason: Mapped[str] = mapped_column(Text)
    at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    evidence: Mapped[dict[str, Any]] = mapped_column(default=dict)
    sme_ids: Mapped[list[str]] = mapped_column(default=list)


class Outcome(Base):
    """What a lender reports became of an SME it was delivered a dossier of: repaid, defaulted or current.

    ``dossier_id`` is the delivered dossier the outcome is judged against (given by the lender, or,
    when it named only the SME, the latest dossier of that SME delivered to it on or before
    ``outcome_date``). One row per lender, dossier, outcome and date: reporting it again updates
    the amount, so an import can be repeated (``warehouse.outcomes``).
    """

    __tablename__ = "outcomes"
    __table_args__ = (UniqueConstraint("lender_id", "dossier_id", "outcome", "outcome_date"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    lender_id: Mapped[str] = mapped_column(ForeignKey("lenders.lender_id"), index=True)
    sme_id: Mapped[str] = mapped_column(ForeignKey("smes.sme_id"), index=True)
    dossier_id: Mapped[str] = mapped_column(String(160))
    outcome: Mapped[str] = mapped_column(String(16))
    outcome_date: Mapped[dt.date] = mapped_column(Date)
    amount: Mapped[float | None] = mapped_column(Float, nullable=True)
    source: Mapped[str] = mapped_column(String(512), default="")
    """Where it was reported from: the file name, or ``api``."""
    reported_at: Mapped[dt.datetime] = mapped_column(default=utcnow)


class Offer(Base):
    """An indicative offer a lender posted on a dossier version it was delivered (``warehouse.offers``).

    ``terms`` holds the offer as posted or last amended (every number as decimal text, see
    ``evaluation.credit_cost.OfferTerms``); ``figures`` what the broker computed from them by its one
    method (``monthly_payment``, ``total_repayable``, ``total_cost``, ``apr``, as decimal text) and
    ``apr`` the same APR as a number to sort by. ``basis`` keeps the dossier values the offer was
    priced against (grade, PD, the broker's ``credit_limit`` and ``indicative_rate``).
    ``status``: ``open``, then ``accepted``, ``declined``, ``withdrawn``, ``lapsed`` or ``closed``
    (another offer was accepted); ``status_reason`` says why it lapsed or closed.
    """

    __tablename__ = "offers"
    __table_args__ = (
        Index("ix_offers_lender_dossier", "lender_id", "dossier_id"),
        Index("ix_offers_sme_status", "sme_id", "status"),
    )

    offer_id: Mapped[str] = mapped_column(String(32), primary_key=True)
    lender_id: Mapped[str] = mapped_column(ForeignKey("lenders.lender_id"))
    sme_id: Mapped[str] = mapped_column(String(32))
    dossier_id: Mapped[str] = mapped_column(String(160))
    dossier_version_id: Mapped[int] = mapped_column(ForeignKey("dossier_versions.id"))
    status: Mapped[str] = mapped_column(String(16), default="open")
    status_reason: Mapped[str | None] = mapped_column(String(32))
    currency: Mapped[str] = mapped_column(String(3))
    amount: Mapped[float] = mapped_column(Float)
    apr: Mapped[float] = mapped_column(Float)
    terms: Mapped[dict[str, Any]]
    figures: Mapped[dict[str, Any]]
    basis: Mapped[dict[str, Any]]
    conditions: Mapped[str] = mapped_column(Text, default="")
    valid_until: Mapped[dt.date] = mapped_column(Date)
    revision: Mapped[int] = mapped_column(default=1)
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    decided_at: Mapped[dt.datetime | None]


class OfferEvent(Base):
    """Append-only history of an offer (posted, amended, withdrawn, accepted, declined, lapsed,
    closed), hash-chained per offer like ``consent_events``; ``actor`` is the lender, ``sme`` or
    ``broker``."""

    __tablename__ = "offer_events"
    __table_args__ = (UniqueConstraint("offer_id", "sequence"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    offer_id: Mapped[str] = mapped_column(ForeignKey("offers.offer_id"), index=True)
    sequence: Mapped[int]
    event_type: Mapped[str] = mapped_column(String(32))
    occurred_at: Mapped[dt.datetime]
    actor: Mapped[str] = mapped_column(String(64))
    details: Mapped[dict[str, Any]]
    prev_hash: Mapped[str] = mapped_column(String(64))
    hash: Mapped[str] = mapped_column(String(64))


class StageRun(Base):
    """One run of one pipeline step (ingest, validate, evaluate, publish) for one as-of date, source
    and shard: when it ran, how long it took, how it ended and the counts it returned.

    A re-run of the same step replaces its row (``attempts`` counts the runs). ``source`` is empty
    for the steps that are not per source, ``shard`` is -1 for the steps over the whole date.
    """

    __tablename__ = "stage_runs"
    __table_args__ = (UniqueConstraint("as_of_date", "stage", "source", "shard"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    as_of_date: Mapped[dt.date] = mapped_column(Date, index=True)
    stage: Mapped[str] = mapped_column(String(16))
    source: Mapped[str] = mapped_column(String(32), default="")
    shard: Mapped[int] = mapped_column(default=-1)
    status: Mapped[str] = mapped_column(String(16))
    """``succeeded`` or ``failed``."""
    started_at: Mapped[dt.datetime]
    finished_at: Mapped[dt.datetime]
    seconds: Mapped[float] = mapped_column(Float)
    counts: Mapped[dict[str, Any]]
    """The numbers the step returned (e.g. ``pulled``, ``failed``, ``evaluated``, ``rows``)."""
    error: Mapped[str] = mapped_column(Text, default="")
    attempts: Mapped[int] = mapped_column(default=1)


class PullCursor(Base):
    """How far the last successful pull of one SME's source reached, so the next pull asks only for what
    is new (plus the months a provider may still revise).

    Written with the ``ingestion_runs`` row of a successful pull, in the same transaction; a failed
    or quarantined pull leaves it where it was, and a backfill of an earlier date never moves it
    back. The canonical rows of ``as_of_date`` (its shard's partition) hold what it covers.
    """

    __tablename__ = "pull_cursors"
    __table_args__ = (UniqueConstraint("sme_id", "source"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    sme_id: Mapped[str] = mapped_column(ForeignKey("smes.sme_id"), index=True)
    source: Mapped[str] = mapped_column(String(32))
    as_of_date: Mapped[dt.date] = mapped_column(Date)
    """The as-of date the pull served (its canonical partition holds the rows it covers)."""
    covered_from: Mapped[dt.date] = mapped_column(Date)
    """First day of the consent window those rows cover (an incremental pull keeps the rows since)."""
    pulled_through: Mapped[dt.date] = mapped_column(Date)
    """Last day of the last whole month pulled (the end of the pull's window)."""
    provider: Mapped[str] = mapped_column(String(64))
    account_ref: Mapped[str] = mapped_column(String(128))
    connected_at: Mapped[dt.datetime | None]
    """When the SME connected the provider itself (``provider_tokens.obtained_at``), if it did."""
    shard_count: Mapped[int]
    """The shard count the partition was written under (another count: the SME's rows sit elsewhere)."""
    updated_at: Mapped[dt.datetime] = mapped_column(default=utcnow)


class ShardPlan(Base):
    """How many shards one as-of date is split into, decided once (by the date's first step) and
    used by every step of the date after it: ingest, validate, evaluate, publish, a grant's run, a
    backfill or a re-run (:mod:`warehouse.shard_plans`)."""

    __tablename__ = "shard_plans"

    as_of_date: Mapped[dt.date] = mapped_column(Date, primary_key=True)
    shard_count: Mapped[int]
    basis: Mapped[str] = mapped_column(String(16))
    """Why this count: ``size`` (SMEs / shard size), ``cap`` (DOSSIER_MAX_SHARDS), ``kept`` (the
    previous date's count, still within the hysteresis band), ``override`` (DOSSIER_SHARD_COUNT) or
    ``earlier_runs`` (the count the date's steps ran with before plans were recorded)."""
    smes: Mapped[int]
    """SMEs with an active consent when the plan was made."""
    shard_size: Mapped[int]
    """DOSSIER_SHARD_SIZE when the plan was made."""
    max_shards: Mapped[int]
    """DOSSIER_MAX_SHARDS when the plan was made."""
    previous_as_of: Mapped[dt.date | None] = mapped_column(Date)
    """The latest earlier planned date, whose count the hysteresis compares with (None: none)."""
    previous_count: Mapped[int | None]
    planned_at: Mapped[dt.datetime]
