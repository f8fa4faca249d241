"""Erasure: remove one SME's data from the store and the warehouse, keeping only the facts.

Called by :func:`warehouse.consent.erase` after every consent of the SME is revoked. What goes:

* raw payloads landed for the SME (a content-addressed file is kept only while another SME's run
  still refers to the same bytes), their ``raw_payloads`` rows and the SME's ``ingestion_runs``;
* the SME's rows in every canonical table and staged file, of every as-of date;
* its rows in every published dossier part (each rewritten, and its manifest updated), its
  catalog rows marked unpublished - they stay only so that every lender that received one gets
  its withdrawal (reason ``erased``) at its next pull;
* its quarantine entries and source connections (credentials); its name (``smes.erased_at`` set);
* the rows its lenders' feed log events kept (``feed_events.dossier_json``, ``offer_json``; the
  events stay) and what its offers held of its data (:func:`warehouse.offers.erase`).

What stays: the SME's id, the consents and their hash-chained events (the fact of the grant,
revocation and erasure), the connector links with their ledger (what was asked and shown), deliveries and withdrawals (the fact of what was handed over).
"""

from __future__ import annotations

import datetime as dt
import io
import posixpath
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from sqlalchemy import delete, select, update
from sqlalchemy.orm import Session

from warehouse import offers
from warehouse.models import (
    DossierVersion,
    FeedEvent,
    IngestionRun,
    OAuthRequest,
    ProviderToken,
    QuarantineEntry,
    RawPayload,
    Sme,
    SmePageKey,
    SourceConnection,
    Upload,
)
from warehouse.storage import Store

ERASED_NAME = "(erased)"


def _without_sme(store: Store, path: str, sme_id: str) -> pa.Table | None:
    """The table at ``path`` without ``sme_id``'s rows, or None when it held none of them."""
    table = store.read_table(path)
    if "sme_id" not in table.column_names:
        return None
    keep = pc.invert(pc.equal(table.column("sme_id"), pa.scalar(sme_id, table.schema.field("sme_id").type)))
    keep = pc.fill_null(keep, True)
    if pc.all(keep).as_py():
        return None
    return table.filter(keep)


def _rewrite_tables(store: Store, directory: str, sme_id: str) -> int:
    """Rewrite every Parquet file under ``directory`` that holds ``sme_id``; returns rows removed."""
    removed = 0
    for path in store.walk(directory, suffix=".parquet"):
        before = pq.ParquetFile(io.BytesIO(store.read_bytes(path))).metadata.num_rows
        kept = _without_sme(store, path, sme_id)
        if kept is not None:
            store.write_table(path, kept)
            removed += before - kept.num_rows
    return removed


def _rewrite_dossiers(store: Store, sme_id: str) -> int:
    """Remove the SME from every dossier part and bring each manifest in line; rows removed."""
    removed = 0
    listed: set[str] = set()
    manifests_root = posixpath.join(store.root, "manifests", "dossiers")
    for manifest_path in store.walk(manifests_root, suffix=".json"):
        manifest = store.read_json(manifest_path)
        changed = False
        for entry in manifest["files"]:
            path = posixpath.join(store.root, entry["path"])
            listed.add(path)
            if not store.exists(path):
                continue
            kept = _without_sme(store, path, sme_id)
            if kept is None:
                continue
            # The part keeps its schema metadata (descriptions, versions): rewrite it as read.
            sha256 = store.write_table(path, kept)
            removed += entry["rows"] - kept.num_rows
            entry["rows"], entry["sha256"] = kept.num_rows, sha256
            changed = True
        if changed:
            manifest["rows"] = sum(entry["rows"] for entry in manifest["files"])
            store.write_json(manifest_path, manifest)
    # Parts no manifest lists (left by a publish that was killed) are scrubbed too.
    for path in store.walk(store.layout.dossier_root, suffix=".parquet"):
        if path not in listed:
            kept = _without_sme(store, path, sme_id)
            if kept is not None:
                store.write_table(path, kept)
    return removed


def _delete_raw(session: Session, store: Store, sme_id: str) -> int:
    run_ids = select(IngestionRun.id).where(IngestionRun.sme_id == sme_id)
    payloads = session.execute(
        select(RawPayload.id, RawPayload.sha256, RawPayload.path).where(
            RawPayload.ingestion_run_id.in_(run_ids)
        )
    ).all()
    files = 0
    for _payload_id, sha256, path in {(r.id, r.sha256, r.path) for r in payloads}:
        # another SME's payload with the same bytes keeps the file (a subquery: no id list to bind)
        shared = session.scalar(
            select(RawPayload.id)
            .where(RawPayload.sha256 == sha256, RawPayload.ingestion_run_id.not_in(run_ids))
            .limit(1)
        )
        if shared is None and store.exists(path):
            store.delete(path)
            files += 1
    session.execute(delete(RawPayload).where(RawPayload.ingestion_run_id.in_(run_ids)))
    session.execute(delete(IngestionRun).where(IngestionRun.sme_id == sme_id))
    return files


def _delete_uploads(session: Session, store: Store, sme_id: str) -> int:
    """Remove the files ``sme_id`` uploaded (unless another SME's upload or payload has the same bytes)."""
    uploads = session.execute(
        select(Upload.id, Upload.sha256, Upload.raw_path).where(Upload.sme_id == sme_id)
    ).all()
    files = 0
    for _upload_id, sha256, path in uploads:
        shared = session.scalar(
            select(Upload.id).where(Upload.sha256 == sha256, Upload.sme_id != sme_id).limit(1)
        ) or session.scalar(select(RawPayload.id).where(RawPayload.sha256 == sha256).limit(1))
        if shared is None and store.exists(path):
            store.delete(path)
            files += 1
    session.execute(delete(Upload).where(Upload.sme_id == sme_id))
    return files


def erase_sme_data(session: Session, store: Store, sme_id: str, *, at: dt.datetime) -> dict[str, Any]:
    """Remove ``sme_id``'s data (see the module docstring); returns what was removed, by kind."""
    raw_files = _delete_raw(session, store, sme_id)
    uploaded_files = _delete_uploads(session, store, sme_id)
    canonical_rows = _rewrite_tables(store, posixpath.join(store.root, "canonical"), sme_id)
    staged_rows = _rewrite_tables(store, posixpath.join(store.root, "staging"), sme_id)
    dossier_rows = _rewrite_dossiers(store, sme_id)
    versions = session.execute(
        update(DossierVersion).where(DossierVersion.sme_id == sme_id).values(file_path="")
    ).rowcount
    quarantine = session.execute(delete(QuarantineEntry).where(QuarantineEntry.sme_id == sme_id)).rowcount
    connections = session.execute(delete(SourceConnection).where(SourceConnection.sme_id == sme_id)).rowcount
    tokens = session.execute(delete(ProviderToken).where(ProviderToken.sme_id == sme_id)).rowcount
    session.execute(delete(OAuthRequest).where(OAuthRequest.sme_id == sme_id))
    session.execute(delete(SmePageKey).where(SmePageKey.sme_id == sme_id))
    session.execute(
        update(FeedEvent).where(FeedEvent.sme_id == sme_id).values(dossier_json=None, offer_json=None)
    )
    offers_changed = offers.erase(session, sme_id)
    session.execute(update(Sme).where(Sme.sme_id == sme_id).values(name=ERASED_NAME, erased_at=at))
    session.flush()
    return {
        "raw_files": raw_files,
        "uploaded_files": uploaded_files,
        "canonical_rows": canonical_rows,
        "staged_rows": staged_rows,
        "dossier_rows": dossier_rows,
        "dossier_versions": versions,
        "quarantine_entries": quarantine,
        "source_connections": connections,
        "provider_tokens": tokens,
        "offers": offers_changed,
    }
