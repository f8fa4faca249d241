"""build_data_docs confirms the shards' stored evidence with GX once per table and renders the Data Docs site."""

from __future__ import annotations

import datetime as dt
import re

from expectation_frames import AS_OF, clean_tables, edit, frames, row_sets

from dossier.settings import Settings
from expectations.runner import build_data_docs, gx_results_path, record_validation, validate_shard
from warehouse.db import make_engine, session_scope
from warehouse.models import Sme
from warehouse.storage import Store


def _text(html: str) -> str:
    return re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", html))


def test_data_docs_site_is_built_from_every_shard(home: Settings) -> None:
    store = Store.from_settings()
    engine = make_engine(home.warehouse_url)
    rows = row_sets(["SME-000001", "SME-000002"])
    edit(rows["monthly_financials"], "SME-000002", {"period_month": dt.date(2026, 8, 1)}, equity=9000.0)
    shards = [
        validate_shard(frames(rows), as_of=AS_OF, shard=0),
        validate_shard(clean_tables(["SME-000003"]), as_of=AS_OF, shard=1),
    ]
    with session_scope(engine) as session:
        session.add_all(
            [
                Sme(sme_id=s, name=s, industry="retail", region="UKI", size_band="micro")
                for s in ("SME-000001", "SME-000002", "SME-000003")
            ]
        )
    for validation in shards:
        with session_scope(engine) as session:
            record_validation(session, validation)
    assert all(store.exists(gx_results_path(store, AS_OF, shard)) for shard in (0, 1))

    index = build_data_docs(AS_OF)

    assert index == home.data_docs_dir / "uncommitted" / "data_docs" / "local_site" / "index.html"
    site = index.parent
    pages = sorted(p.relative_to(site).as_posix() for p in site.glob("validations/**/*.html"))
    assert len(pages) == 7
    assert "validations/monthly_financials/as_of=2026-11-01/20261101T000000.000000Z/shards=all.html" in pages
    assert sorted(p.name for p in site.glob("expectations/*.html")) == [
        "bank_transactions.html",
        "monthly_financials.html",
        "survey_submissions.html",
        "survey_visits.html",
        "utility_bills.html",
        "utility_readings.html",
        "vat_returns.html",
    ]
    failed = _text(
        (
            site / "validations/monthly_financials/as_of=2026-11-01/20261101T000000.000000Z/shards=all.html"
        ).read_text()
    )
    assert "SME-000002" in failed
    assert "reports[1]" in failed
    assert "SME-000003" not in failed
    assert "monthly_financials" in _text(index.read_text())

    again = build_data_docs(AS_OF)
    assert again == index
    assert len(list(site.glob("validations/**/*.html"))) == 7
    engine.dispose()
