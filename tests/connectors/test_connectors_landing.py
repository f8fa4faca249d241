"""Raw landing: content-addressed, immutable, recorded per run; idempotent on both warehouses."""

from __future__ import annotations

import datetime as dt
import hashlib
from pathlib import Path

from sqlalchemy import Engine, select

from connectors.core.landing import extension_for, land_page, record_payloads, run_hash
from connectors.core.streams import RawPage
from warehouse.db import session_scope
from warehouse.models import IngestionRun, RawPayload, Sme
from warehouse.storage import Store


def page(body: bytes, label: str = "page=1") -> RawPage:
    return RawPage("reports", label, f"GET /v1/x?{label}", body, "application/json")


def test_a_body_lands_once_under_its_hash_and_is_never_rewritten(tmp_path: Path) -> None:
    store = Store(str(tmp_path))
    body = b'{"reports": []}'
    digest = hashlib.sha256(body).hexdigest()

    first = land_page(store, "accounting", page(body), 0)
    second = land_page(store, "accounting", page(body, "page=2"), 1)

    assert first.path == second.path == str(tmp_path / "raw" / "accounting" / digest[:2] / f"{digest}.json")
    assert (first.sha256, first.size_bytes, first.request) == (digest, len(body), "GET /v1/x?page=1")
    assert store.read_bytes(first.path) == body
    assert sorted(p.name for p in (tmp_path / "raw" / "accounting" / digest[:2]).iterdir()) == [
        f"{digest}.json"
    ]


def test_extensions_follow_the_media_type() -> None:
    assert [
        extension_for(m) for m in ("application/vnd.hmrc.1.0+json", "application/atom+xml", "image/png")
    ] == [
        "json",
        "xml",
        "bin",
    ]


def test_the_run_hash_covers_the_ordered_payload_hashes() -> None:
    assert run_hash(["a", "b"]) == hashlib.sha256(b"a\nb").hexdigest()
    assert run_hash(["b", "a"]) != run_hash(["a", "b"])
    assert run_hash([]) is None


def test_every_attempt_of_a_run_keeps_its_own_payload_rows(warehouse_engine: Engine, tmp_path: Path) -> None:
    store = Store(str(tmp_path))
    landed = [land_page(store, "tax", page(f'{{"n": {i}}}'.encode(), f"p{i}"), i) for i in range(3)]
    with session_scope(warehouse_engine) as session:
        session.add(Sme(sme_id="SME-000001", name="A", industry="retail", region="Wales", size_band="micro"))
        session.flush()
        run = IngestionRun(
            sme_id="SME-000001", source="tax", as_of_date=dt.date(2026, 11, 25), status="pulled"
        )
        session.add(run)
        session.flush()
        record_payloads(session, {run.id: landed})
        first = session.scalars(select(RawPayload.id).order_by(RawPayload.sequence)).all()
        record_payloads(session, {run.id: landed[:2]})  # a re-run that received fewer pages
    with session_scope(warehouse_engine) as session:
        rows = session.execute(
            select(RawPayload.id, RawPayload.attempt, RawPayload.sequence, RawPayload.sha256).order_by(
                RawPayload.attempt, RawPayload.sequence
            )
        ).all()
    assert [tuple(r) for r in rows[:3]] == [(first[i], 1, i, landed[i].sha256) for i in range(3)]
    assert [(attempt, sequence, sha) for _id, attempt, sequence, sha in rows[3:]] == [
        (2, i, landed[i].sha256) for i in range(2)
    ]


def test_a_damaged_landed_object_is_rechecked_and_replaced(tmp_path: Path, caplog) -> None:
    store = Store(str(tmp_path))
    body = b'{"reports": [1, 2, 3]}'
    landed = land_page(store, "accounting", page(body), 0)
    Path(landed.path).write_bytes(b'{"reports": [1, 2, 3]')  # truncated behind the store's back

    with caplog.at_level("WARNING", logger="connectors.core.landing"):
        again = land_page(store, "accounting", page(body), 0)

    assert again.path == landed.path
    assert store.read_bytes(landed.path) == body
    assert [r.getMessage() for r in caplog.records] == [
        f"{landed.path}: landed bytes no longer match their sha256 address; replaced with the payload just received"
    ]
