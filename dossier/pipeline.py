"""The pipeline's steps as plain functions: what each Airflow task calls, and what the bench times.

Each step is a transaction over one partition (a shard of SMEs for one as-of date): it reads files
from the store, writes its output atomically to one path and records what happened in the
warehouse. Steps return small JSON-serialisable summaries (paths and counts), never frames, so
they can travel through XCom.

    ingest(source, shard)  ->  canonical/<table>/as_of=<d>/shard=<k>.parquet
    validate(shard)        ->  staging/validation/...   (+ validation_results, quarantine)
    evaluate(shard)        ->  staging/scores/...
    publish()              ->  dossiers/schema=<v>/as_of=<d>/part-*.parquet, then the manifest
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Iterator
from typing import Any

import pandas as pd
import pyarrow as pa
from sqlalchemy import select

from dossier.settings import get_settings
from warehouse import consent
from warehouse.canonical import SOURCES, TABLES
from warehouse.db import session_scope
from warehouse.models import IngestionRun, QuarantineEntry, Sme
from warehouse.storage import Store

log = logging.getLogger(__name__)

VALIDATION_STEP = "validation"
SCORES_STEP = "scores"


def parse_as_of(value: str | dt.date | dt.datetime | None) -> dt.date:
    """The as-of date of a run: an explicit date, else today (UTC).

    A string must be a whole ISO date, nothing before or after it:

    >>> parse_as_of("2026-12-01")
    datetime.date(2026, 12, 1)
    >>> parse_as_of("2026-02-30")
    Traceback (most recent call last):
    ...
    warehouse.errors.InputError: as-of date '2026-02-30' is not a date of the calendar (day is out of range for month); give YYYY-MM-DD
    """
    if value is None or value == "":
        return dt.datetime.now(dt.UTC).date()
    if isinstance(value, dt.datetime):
        return value.astimezone(dt.UTC).date()
    if isinstance(value, dt.date):
        return value
    import re

    from warehouse.errors import InputError

    text = str(value)
    if not re.fullmatch(r"\d{4}-\d{2}-\d{2}", text):
        raise InputError(f"as-of date {text!r} is not an ISO date; give YYYY-MM-DD, e.g. 2026-12-01")
    try:
        return dt.date.fromisoformat(text)
    except ValueError as error:
        raise InputError(
            f"as-of date {text!r} is not a date of the calendar ({error}); give YYYY-MM-DD"
        ) from None


def as_of_instant(as_of: dt.date) -> dt.datetime:
    """Consent is evaluated at the start of the as-of day (UTC), so re-runs of a day agree."""
    return dt.datetime.combine(as_of, dt.time(), tzinfo=dt.UTC)


def _without_pandas_metadata(frame: pd.DataFrame) -> pa.Table:
    """Arrow table of ``frame`` typed by its values alone (pandas' dtype notes do not survive list columns)."""
    return pa.Table.from_pandas(frame, preserve_index=False).replace_schema_metadata(None)


def plan_shards() -> list[int]:
    """Shard numbers to map over (``DOSSIER_SHARD_COUNT``)."""
    return list(range(get_settings().shard_count))


def ingest(source: str, shard: int, as_of: dt.date) -> dict[str, Any]:
    """Pull one source for every consenting SME of one shard and write its canonical table(s)."""
    from connectors.ingest import ingest_shard

    return ingest_shard(source, shard, as_of)


def read_shard_tables(store: Store, as_of: dt.date, shard: int) -> dict[str, pd.DataFrame]:
    """Every canonical table of one shard (empty, correctly typed frames where a source wrote none)."""
    tables: dict[str, pd.DataFrame] = {}
    for name, table in TABLES.items():
        path = store.layout.canonical(name, as_of.isoformat(), shard)
        if store.exists(path):
            tables[name] = store.read_table(path).to_pandas()
        else:
            tables[name] = table.empty_frame()
    return tables


def ingest_quarantined(session: Any, as_of: dt.date, sme_ids: list[str]) -> dict[str, list[str]]:
    """Open ingest-stage quarantine reasons of the given SMEs for ``as_of``."""
    reasons: dict[str, list[str]] = {}
    rows = session.execute(
        select(QuarantineEntry.sme_id, QuarantineEntry.source, QuarantineEntry.reason).where(
            QuarantineEntry.as_of_date == as_of,
            QuarantineEntry.stage == "ingest",
            QuarantineEntry.resolved_at.is_(None),
            QuarantineEntry.sme_id.in_(sme_ids),
        )
    )
    for sme_id, source, reason in rows:
        reasons.setdefault(sme_id, []).append(f"{source}: {reason}")
    return reasons


def validate(shard: int, as_of: dt.date) -> dict[str, Any]:
    """Run every suite once on the shard's tables; quarantine failing SMEs; stage the outcome."""
    from expectations.runner import record_validation, validate_shard

    store = Store.from_settings()
    tables = read_shard_tables(store, as_of, shard)
    validation = validate_shard(tables, as_of=as_of, shard=shard)
    status = validation.sme_status
    path = store.layout.staging(VALIDATION_STEP, as_of.isoformat(), shard)
    store.write_table(path, _without_pandas_metadata(status[["sme_id", "passed", "reasons"]]))
    with session_scope() as session:
        record_validation(session, validation)
    failed = int((~status["passed"]).sum()) if len(status) else 0
    return {
        "shard": shard,
        "as_of": as_of.isoformat(),
        "smes": len(status),
        "passed": len(status) - failed,
        "failed": failed,
        "path": path,
    }


def smes_to_evaluate(session: Any, store: Store, as_of: dt.date, shard: int) -> pd.DataFrame:
    """SMEs of the shard that were pulled, passed validation and have no open ingest quarantine.

    Columns: sme_id, history_months (widest consented window), plus the SME's profile.
    """
    path = store.layout.staging(VALIDATION_STEP, as_of.isoformat(), shard)
    status = (
        store.read_table(path).to_pandas()
        if store.exists(path)
        else pd.DataFrame(columns=["sme_id", "passed"])
    )
    passed = set(status.loc[status["passed"].astype(bool), "sme_id"])
    held = ingest_quarantined(session, as_of, sorted(passed))
    candidates = sorted(passed - set(held))
    coverage = consent.source_coverage(session, as_of_instant(as_of), sme_ids=candidates)
    profiles = pd.DataFrame(
        session.execute(
            select(Sme.sme_id, Sme.industry, Sme.region, Sme.size_band, Sme.founded_year).where(
                Sme.sme_id.in_(candidates)
            )
        ).all(),
        columns=["sme_id", "industry", "region", "size_band", "founded_year"],
    )
    profiles["history_months"] = [
        max(coverage.get(sme_id, {}).values(), default=get_settings().history_months)
        for sme_id in profiles["sme_id"]
    ]
    return profiles.sort_values("sme_id", ignore_index=True)


def evaluate(shard: int, as_of: dt.date) -> dict[str, Any]:
    """Score the shard's validated SMEs and stage their features and scores."""
    import evaluation

    store = Store.from_settings()
    with session_scope() as session:
        smes = smes_to_evaluate(session, store, as_of, shard)
    tables = read_shard_tables(store, as_of, shard)
    scored = evaluation.evaluate(tables, smes, as_of=as_of)
    path = store.layout.staging(SCORES_STEP, as_of.isoformat(), shard)
    store.write_table(path, _without_pandas_metadata(scored))
    return {
        "shard": shard,
        "as_of": as_of.isoformat(),
        "evaluated": len(scored),
        "model_version": evaluation.MODEL_VERSION,
        "path": path,
    }


def staged_scores(store: Store, as_of: dt.date) -> Iterator[pd.DataFrame]:
    """The staged score frames of every shard, one at a time (bounded memory)."""
    for path in store.list(store.layout.staging_dir(SCORES_STEP, as_of.isoformat()), suffix=".parquet"):
        yield store.read_table(path).to_pandas()


def publish(as_of: dt.date) -> dict[str, Any]:
    """Publish the staged dossiers of every shard to lenders' store, manifest last, then the catalog."""
    import evaluation
    from warehouse.dossier_store import publish as publish_dossiers

    store = Store.from_settings()
    with session_scope() as session:
        summary = publish_dossiers(
            session,
            store,
            as_of=as_of,
            scored=staged_scores(store, as_of),
            model_version=evaluation.MODEL_VERSION,
            now=dt.datetime.now(dt.UTC),
        )
    return summary


def build_data_docs(as_of: dt.date) -> dict[str, Any]:
    """Render the Great Expectations Data Docs of ``as_of``'s validations into the home folder."""
    from expectations.runner import build_data_docs as build

    index = build(as_of=as_of)
    return {"as_of": as_of.isoformat(), "data_docs": str(index)}


def ingestion_summary(as_of: dt.date) -> dict[str, dict[str, int]]:
    """Counts of ingestion outcomes per source for ``as_of``: {source: {status: n}}."""
    counts: dict[str, dict[str, int]] = {s: {} for s in SOURCES}
    with session_scope() as session:
        for source, status in session.execute(
            select(IngestionRun.source, IngestionRun.status).where(IngestionRun.as_of_date == as_of)
        ):
            counts.setdefault(source, {})
            counts[source][status] = counts[source].get(status, 0) + 1
    return counts
