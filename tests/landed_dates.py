"""Helpers of the tests that run the pipeline over several landed dates (incremental runs)."""

from __future__ import annotations

import datetime as dt

from sqlalchemy import select

from warehouse import consent
from warehouse.canonical import TABLES
from warehouse.canonical_files import write_canonical
from warehouse.db import session_scope
from warehouse.models import Lender
from warehouse.storage import Store


def land_again(day: dt.date, later: dt.date, shards: int) -> None:
    """Write ``day``'s canonical files again for ``later``, as ingest writes them (with sidecars)."""
    store = Store.from_settings()
    for shard in range(shards):
        for name in TABLES:
            source = store.layout.canonical(name, day.isoformat(), shard)
            if store.exists(source):
                write_canonical(store, name, later, shard, store.read_table(source))


def grant_accounting_scope(consent_id: str, sme_id: str, months: int, *, granted: dt.date) -> None:
    """A year's consent from ``granted`` giving the first lender ``sme_id``'s accounting over ``months``."""
    start = dt.datetime.combine(granted, dt.time(), tzinfo=dt.UTC)
    with session_scope() as session:
        lender = session.scalars(select(Lender.lender_id).order_by(Lender.lender_id)).first()
        consent.grant(
            session,
            consent_id=consent_id,
            sme_id=sme_id,
            sources=["accounting"],
            recipients=[lender],
            purpose="credit_decision",
            history_months=months,
            granted_at=start,
            expires_at=start + dt.timedelta(days=365),
        )
