"""A small published warehouse built through the pipeline's own steps (no HTTP, no Great Expectations).

Canonical books are written straight into the store, consent is granted, then ``evaluate`` and
``publish`` run (which write the catalog and the PSI). Used by the disclosure and outcomes tests.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from typing import Any

import pyarrow as pa

from dossier import pipeline
from warehouse import consent
from warehouse.canonical import TABLES
from warehouse.db import session_scope
from warehouse.feed import subscribe
from warehouse.models import Lender, Sme
from warehouse.storage import Store

AS_OF = dt.date(2026, 11, 1)
THEN = consent.as_of_instant(AS_OF)
NOW = THEN + dt.timedelta(hours=6)


def books(sme_id: str, margin: float, months: int = 30) -> list[dict[str, Any]]:
    schema = TABLES["monthly_financials"].schema
    rows = []
    for ago in range(1, months + 1):
        year, month = divmod(AS_OF.year * 12 + AS_OF.month - 1 - ago, 12)
        revenue = 10_000.0 + 100 * (months - ago)
        leverage = 0.3 if margin > 0 else 0.9
        given = {
            "sme_id": sme_id,
            "period_month": dt.date(year, month + 1, 1),
            "currency": "GBP",
            "revenue": revenue,
            "cost_of_sales": revenue * 0.5,
            "operating_expenses": revenue * (0.5 - margin),
            "net_profit": revenue * margin,
            "cash": 20_000.0 if margin > 0 else 1_000.0,
            "current_assets": 40_000.0,
            "total_assets": 80_000.0,
            "current_liabilities": 80_000.0 * leverage * 0.6,
            "total_liabilities": 80_000.0 * leverage,
            "equity": 80_000.0 * (1 - leverage),
            "source_record": f"{sme_id}/{ago}",
            "raw_sha256": "0" * 64,
        }
        rows.append(
            {
                f.name: given.get(f.name, 0.0 if pa.types.is_floating(f.type) else None)
                if f.name in given or not pa.types.is_string(f.type)
                else "x"
                for f in schema
            }
        )
    return rows


def publish_books(
    engine: Any, store: Store, margins: Mapping[str, float], recipients: Mapping[str, str]
) -> None:
    """Books of net margin ``margins[sme]`` for each SME, consent for ``recipients[sme]``, evaluated and
    published for :data:`AS_OF` in shard 0 (the settings must have one shard)."""
    with session_scope(engine) as session:
        session.add_all(
            Sme(sme_id=s, name=f"Firm {s[-1]}", industry="retail", region="North", size_band="micro")
            for s in margins
        )
        session.add_all(
            Lender(lender_id=lender, name=lender.title()) for lender in sorted(set(recipients.values()))
        )
        session.flush()
        for lender in sorted(set(recipients.values())):
            subscribe(session, lender)
        for sme_id, lender in recipients.items():
            consent.grant(
                session,
                consent_id=f"C-{sme_id}",
                sme_id=sme_id,
                sources=["accounting"],
                recipients=[lender],
                purpose="credit_decision",
                history_months=36,
                granted_at=THEN - dt.timedelta(days=30),
                expires_at=THEN + dt.timedelta(days=300),
            )
    day = AS_OF.isoformat()
    schema = TABLES["monthly_financials"].schema
    rows = [r for s, m in margins.items() for r in books(s, m)]
    store.write_table(
        store.layout.canonical("monthly_financials", day, 0), pa.Table.from_pylist(rows, schema=schema)
    )
    status = pa.table(
        {"sme_id": list(margins), "passed": [True] * len(margins), "reasons": [[]] * len(margins)}
    )
    store.write_table(store.layout.staging("validation", day, 0), status)
    pipeline.evaluate(0, AS_OF, now=NOW)
    pipeline.publish(AS_OF, now=NOW)
