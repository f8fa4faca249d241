"""Raw landing: every response body is stored first, immutable and content-addressed.

A body lands at ``layout.raw(source, sha256, ext)`` through :meth:`warehouse.storage.Store.put_immutable`,
so the same bytes are stored once however often they are pulled, and nothing ever overwrites them.
Each ingestion run records its bodies as ``raw_payloads`` rows in the order they were received;
the run's ``raw_sha256`` (:func:`run_hash`) is a hash over that ordered list, so two runs that
received the same bodies in the same order have the same hash.

>>> run_hash([]) is None
True
>>> run_hash(["ab", "cd"]) == run_hash(["ab", "cd"]) != run_hash(["cd", "ab"])
True
"""

from __future__ import annotations

import datetime as dt
import hashlib
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from sqlalchemy import func, insert, select
from sqlalchemy.orm import Session

from connectors.core.streams import RawPage
from warehouse.db import in_chunks
from warehouse.models import RawPayload
from warehouse.storage import Store, sha256_hex

log = logging.getLogger(__name__)

EXTENSIONS = {
    "application/json": "json",
    "application/vnd.hmrc.1.0+json": "json",
    "application/atom+xml": "xml",
    "application/xml": "xml",
    "text/xml": "xml",
    "text/csv": "csv",
}


def extension_for(media_type: str) -> str:
    """File extension for a media type (``+json``/``+xml`` suffixes count; anything else is ``bin``)."""
    if media_type in EXTENSIONS:
        return EXTENSIONS[media_type]
    for suffix in ("json", "xml"):
        if media_type.endswith(f"+{suffix}"):
            return suffix
    return "bin"


@dataclass(frozen=True)
class LandedPayload:
    """Where one raw body was landed and what it was; becomes one ``raw_payloads`` row."""

    sequence: int
    sha256: str
    path: str
    request: str
    media_type: str
    size_bytes: int
    landed_at: dt.datetime


def land_page(store: Store, source: str, page: RawPage, sequence: int) -> LandedPayload:
    """Store ``page.body`` content-addressed (once) and describe where it went.

    An object already at the address is trusted only once its bytes hash to that address again;
    a damaged one (changed or truncated since it landed) is replaced by the bytes just received,
    which do, and the repair is logged with its path.
    """
    path = store.layout.raw(source, page.sha256, extension_for(page.media_type))
    if not store.put_immutable(path, page.body) and sha256_hex(store.read_bytes(path)) != page.sha256:
        log.warning(
            "%s: landed bytes no longer match their sha256 address; replaced with the payload just received",
            path,
        )
        store.write_bytes(path, page.body)
    return LandedPayload(
        sequence=sequence,
        sha256=page.sha256,
        path=path,
        request=page.request[:1024],
        media_type=page.media_type[:64],
        size_bytes=len(page.body),
        landed_at=dt.datetime.now(dt.UTC),
    )


def run_hash(payload_hashes: Sequence[str]) -> str | None:
    """sha256 over the ordered payload hashes of a run (None for a run that received nothing)."""
    if not payload_hashes:
        return None
    return hashlib.sha256("\n".join(payload_hashes).encode()).hexdigest()


def record_payloads(session: Session, landed_by_run: Mapping[int, Sequence[LandedPayload]]) -> None:
    """Record each run's ``landed`` list as a new **attempt** of that run: lineage is never overwritten.

    A run's first pull is attempt 1; a re-run of the same SME, source and date adds attempt 2, and
    so on, each with the payloads it used in order (``sequence``). Earlier attempts keep their rows.
    """
    latest: dict[int, int] = {}
    for chunk in in_chunks(landed_by_run):
        latest.update(
            session.execute(
                select(RawPayload.ingestion_run_id, func.max(RawPayload.attempt))
                .where(RawPayload.ingestion_run_id.in_(chunk))
                .group_by(RawPayload.ingestion_run_id)
            ).all()
        )
    rows = [
        {
            "ingestion_run_id": run_id,
            "attempt": latest.get(run_id, 0) + 1,
            "sequence": payload.sequence,
            "sha256": payload.sha256,
            "path": payload.path,
            "request": payload.request,
            "media_type": payload.media_type,
            "size_bytes": payload.size_bytes,
            "landed_at": payload.landed_at,
        }
        for run_id, landed in landed_by_run.items()
        for payload in landed
    ]
    if rows:
        session.execute(insert(RawPayload), rows)
