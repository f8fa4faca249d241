"""Erasing an SME removes a content-addressed raw file only when no other SME's run refers to it."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

from sqlalchemy import Engine, insert, select

from warehouse.db import session_scope
from warehouse.erasure import erase_sme_data
from warehouse.models import IngestionRun, RawPayload, Sme
from warehouse.storage import Store, sha256_hex

AT = dt.datetime(2026, 11, 2, tzinfo=dt.UTC)
SHARED, OWN = b'{"vat": 1}', b'{"vat": 2}'


def land(engine: Engine, store: Store) -> dict[bytes, str]:
    """SME-1 landed both bodies (on two dates); SME-2 landed the shared one."""
    paths = {body: store.layout.raw("tax", sha256_hex(body), "json") for body in (SHARED, OWN)}
    for body, path in paths.items():
        store.write_bytes(path, body)
    with session_scope(engine) as session:
        session.execute(
            insert(Sme),
            [
                {"sme_id": s, "name": s, "industry": "r", "region": "N", "size_band": "m"}
                for s in ("SME-1", "SME-2")
            ],
        )
        runs = [
            ("SME-1", dt.date(2026, 11, 1), SHARED),
            ("SME-1", dt.date(2026, 10, 1), OWN),
            ("SME-2", dt.date(2026, 11, 1), SHARED),
        ]
        for sme_id, as_of, body in runs:
            run = IngestionRun(sme_id=sme_id, source="tax", as_of_date=as_of, status="pulled")
            session.add(run)
            session.flush()
            session.add(
                RawPayload(
                    ingestion_run_id=run.id,
                    sequence=1,
                    sha256=sha256_hex(body),
                    path=paths[body],
                    request="GET /obligations",
                    media_type="application/json",
                    size_bytes=len(body),
                )
            )
    return paths


def test_a_shared_raw_file_stays_until_its_last_sme_is_erased(
    warehouse_engine: Engine, tmp_path: Path
) -> None:
    store = Store(str(tmp_path / "store"))
    paths = land(warehouse_engine, store)

    with session_scope(warehouse_engine) as session:
        assert erase_sme_data(session, store, "SME-1", at=AT)["raw_files"] == 1
    assert (store.exists(paths[SHARED]), store.exists(paths[OWN])) == (True, False)
    with session_scope(warehouse_engine) as session:
        left = session.execute(
            select(IngestionRun.sme_id, RawPayload.sha256).join(
                RawPayload, RawPayload.ingestion_run_id == IngestionRun.id
            )
        ).all()
    assert [tuple(row) for row in left] == [("SME-2", sha256_hex(SHARED))]

    with session_scope(warehouse_engine) as session:
        assert erase_sme_data(session, store, "SME-2", at=AT)["raw_files"] == 1
    assert store.exists(paths[SHARED]) is False
