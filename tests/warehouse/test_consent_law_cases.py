"""The ten ways data went further than the consent allowed (issue "Consent is law"), one test each.

Black-box: each test drives the product's actions (grant, revoke, erase, subscribe, ingest,
evaluate, publish, pull) on SQLite and on PostgreSQL, and judges what lenders received with the
independent oracle of ``tests/consent_oracle.py`` plus the case's own expectations. Cases 2, 5
and 10 pull from the bundled provider sandbox over HTTP.
"""

from __future__ import annotations

import datetime as dt
import functools
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest
import requests
from consent_oracle import canonical_tables, months_before, stage_shard, synthetic_rows
from consent_world import Data, World, opened
from sqlalchemy import text

from connectors.core.http import SYSTEM_CLOCK, make_session
from connectors.ingest import ingest_shard
from connectors.sandbox.auth import issue_credentials
from connectors.sandbox.seed import PROVIDER_NAMES
from connectors.sandbox.server import SandboxServer
from connectors.sandbox.universe import SOURCES_REFS, Universe
from dossier.cli import main
from warehouse import consent
from warehouse.canonical import TABLES
from warehouse.db import session_scope
from warehouse.models import IngestionRun, Sme, SourceConnection

AS_OF = dt.date(2026, 6, 1)
GRANTED = dt.datetime(2026, 4, 15, tzinfo=dt.UTC)
"""Within the 90 days before reconfirmation is due, for every instant these cases look at around AS_OF."""
EXPIRES = dt.datetime(2027, 6, 1, tzinfo=dt.UTC)
PUBLISH_AT = dt.datetime(2026, 6, 1, 6, tzinfo=dt.UTC)
PULL_AT = dt.datetime(2026, 6, 1, 9, tzinfo=dt.UTC)
CREDIT = "credit_decision"
MONITORING = "facility_monitoring"
EVERY_SOURCE = frozenset({"accounting", "tax", "utility", "survey"})
BOOKS = frozenset({"accounting"})


@pytest.fixture
def world(warehouse_url: str, tmp_path: Path) -> Iterator[World]:
    """A migrated warehouse (each backend in turn) with SMEs 1-4 and lenders northwind and harbor."""
    with opened(warehouse_url, tmp_path, migrate=False) as w:
        w.add_smes([f"SME-00000{n}" for n in range(1, 5)])
        w.add_lenders(["northwind", "harbor"])
        yield w


def grant(world: World, consent_id: str, sme_id: str, **terms: Any) -> None:
    """A grant with the defaults of these cases: northwind, books, credit decision, 24 months."""
    world.grant(
        consent_id,
        sme_id,
        sources=terms.pop("sources", BOOKS),
        recipients=terms.pop("recipients", ("northwind",)),
        purpose=terms.pop("purpose", CREDIT),
        months=terms.pop("months", 24),
        granted_at=terms.pop("granted_at", GRANTED),
        expires_at=terms.pop("expires_at", EXPIRES),
        **terms,
    )


def by_sme(rows: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {row["sme_id"]: row for row in rows}


def scope_of(row: dict[str, Any]) -> tuple[list[str], int, int]:
    return sorted(row["sources_used"]), row["history_months"], row["months_of_accounts"]


# --- 1. history window from the widest consent -------------------------------------------------


def test_1_a_lender_granted_12_months_never_receives_a_36_month_dossier(world: World) -> None:
    world.subscribe("northwind", CREDIT)
    world.subscribe("harbor", CREDIT)
    grant(world, "C-12", "SME-000001", months=12, recipients=("northwind",))
    grant(world, "C-36", "SME-000001", months=36, recipients=("harbor",))
    world.publish(AS_OF, {"SME-000001": Data(BOOKS, 36)}, at=PUBLISH_AT)

    northwind = world.pull("northwind", at=PULL_AT)
    harbor = world.pull("harbor", at=PULL_AT)

    assert northwind.breaches == []
    assert harbor.breaches == []
    assert [scope_of(r) for r in northwind.dossiers] == [(["accounting"], 12, 12)]
    assert [scope_of(r) for r in harbor.dossiers] == [(["accounting"], 36, 36)]
    assert northwind.dossiers[0]["dossier_id"] != harbor.dossiers[0]["dossier_id"]


# --- 2. backfill under an expired consent ------------------------------------------------------

UNIVERSE_AS_OF = dt.date(2026, 11, 25)
UNIVERSE_GRANTED = dt.datetime(2026, 11, 1, tzinfo=dt.UTC)
"""Grants of the cases that ingest from the sandbox universe (reconfirmation due 90 days later)."""


@pytest.fixture(scope="module")
def universe() -> Universe:
    return Universe(20261125, 12, UNIVERSE_AS_OF)


@pytest.fixture(scope="module")
def sandbox(universe: Universe) -> Iterator[SandboxServer]:
    with SandboxServer(universe) as server:
        yield server


def clean_smes(universe: Universe, count: int, min_months: int = 24) -> list[str]:
    """SMEs of the universe without data defects and with at least ``min_months`` of books."""
    chosen = [
        s
        for s in universe.sme_ids
        if not universe.sme(s).profile.defects and universe.sme(s).profile.months_of_history >= min_months
    ]
    assert len(chosen) >= count, (
        f"the test's sandbox universe has only {len(chosen)} clean SMEs with {min_months} months; make it larger"
    )
    return chosen[:count]


def connect(world: World, universe: Universe, sme_ids: list[str], sources: tuple[str, ...]) -> None:
    """Register the universe's SMEs and their connections to ``sources`` at the sandbox."""
    with session_scope(world.engine) as session:
        for sme_id in sme_ids:
            profile = universe.sme(sme_id).profile
            if session.get(Sme, sme_id) is None:
                session.add(
                    Sme(
                        sme_id=sme_id,
                        name=profile.name,
                        industry=profile.industry,
                        region=profile.region,
                        size_band=profile.size_band,
                        founded_year=int(profile.founded_year),
                    )
                )
                session.flush()
            for source in sources:
                ref = getattr(profile, SOURCES_REFS[source])
                session.add(
                    SourceConnection(
                        sme_id=sme_id,
                        source=source,
                        provider=PROVIDER_NAMES[source],
                        account_ref=ref,
                        credentials=issue_credentials(universe.seed, source, ref),
                    )
                )


def ingest(
    world: World, source: str, base_url: str, *, now: dt.datetime, factory: Any = None
) -> dict[str, Any]:
    return ingest_shard(
        source,
        0,
        UNIVERSE_AS_OF,
        session_factory=functools.partial(session_scope, world.engine),
        store=world._store(),
        base_url=f"{base_url}/{source}",
        now=now,
        http_session_factory=factory,
        max_workers=1,
    )


def canonical_rows(world: World, table: str, as_of: dt.date = UNIVERSE_AS_OF) -> list[dict[str, Any]]:
    path = world._store().layout.canonical(table, as_of.isoformat(), 0)
    return world._store().read_table(path).to_pylist() if world._store().exists(path) else []


def stage_validation_of_ingested(world: World, as_of: dt.date = UNIVERSE_AS_OF) -> dict[str, frozenset[str]]:
    """A validation outcome (everyone passed) for the SMEs the ingested tables hold; their sources."""
    sources: dict[str, set[str]] = {}
    for name, table in TABLES.items():
        for row in canonical_rows(world, name, as_of):
            sources.setdefault(row["sme_id"], set()).add(table.source)
    store = world._store()
    tables = {
        name: store.read_table(store.layout.canonical(name, as_of.isoformat(), 0))
        if store.exists(store.layout.canonical(name, as_of.isoformat(), 0))
        else TABLES[name].schema.empty_table()
        for name in TABLES
    }
    stage_shard(store, as_of, tables, sources)
    return {sme_id: frozenset(s) for sme_id, s in sources.items()}


def test_2_a_backfill_pulls_only_the_window_of_a_consent_active_then_and_now(
    world: World, universe: Universe, sandbox: SandboxServer
) -> None:
    (sme_id,) = clean_smes(universe, 1)
    connect(world, universe, [sme_id], ("accounting",))
    world.subscribe("northwind", CREDIT)
    as_of_start = dt.datetime.combine(UNIVERSE_AS_OF, dt.time(), tzinfo=dt.UTC)
    # 36 months, active at the as-of instant but expired since; 12 months, active throughout.
    grant(
        world,
        "C-36",
        sme_id,
        months=36,
        expires_at=as_of_start + dt.timedelta(days=1),
        granted_at=UNIVERSE_GRANTED,
    )
    grant(world, "C-12", sme_id, months=12, granted_at=UNIVERSE_GRANTED)
    backfill_at = as_of_start + dt.timedelta(days=10)

    summary = ingest(world, "accounting", sandbox.url, now=backfill_at)

    assert summary["pulled"] == 1
    months = sorted({row["period_month"] for row in canonical_rows(world, "monthly_financials")})
    assert months[0] >= months_before(UNIVERSE_AS_OF, 12)[0], months
    assert len(months) <= 12

    data = stage_validation_of_ingested(world)
    world.run_steps(UNIVERSE_AS_OF, at=backfill_at, data_sources=data)
    pulled = world.pull("northwind", at=backfill_at + dt.timedelta(minutes=5))
    assert pulled.breaches == []
    assert [scope_of(r) for r in pulled.dossiers] == [(["accounting"], 12, 12)]


# --- 3. a feature from a source outside sources_used -------------------------------------------


def test_3_no_tax_derived_value_without_tax_in_sources_used(world: World) -> None:
    as_of = dt.date(2026, 6, 15)
    world.subscribe("northwind", CREDIT)
    world.subscribe("harbor", CREDIT)
    grant(world, "C-books", "SME-000001", sources=BOOKS, recipients=("northwind",))
    grant(world, "C-books-vat", "SME-000001", sources={"accounting", "tax"}, recipients=("harbor",))
    rows = synthetic_rows("SME-000001", BOOKS, 24, as_of)
    # The March-May return was filed early (5 June, before the as-of date) but is due in July.
    rows["vat_returns"] = [
        {
            "sme_id": "SME-000001",
            "period_key": "26A2",
            "period_start": dt.date(2026, 3, 1),
            "period_end": dt.date(2026, 5, 31),
            "due_date": dt.date(2026, 7, 7),
            "status": "F",
            "received_date": dt.date(2026, 6, 5),
            "vat_due_sales": 600.0,
            "vat_due_acquisitions": 0.0,
            "total_vat_due": 600.0,
            "vat_reclaimed": 100.0,
            "net_vat_due": 500.0,
            "total_sales_ex_vat": 3000.0,
            "total_purchases_ex_vat": 500.0,
            "total_goods_supplied_ex_vat": 0.0,
            "total_acquisitions_ex_vat": 0.0,
            "source_record": "vat:early",
            "raw_sha256": "1" * 64,
        }
    ]
    stage_shard(world._store(), as_of, canonical_tables([rows]), ["SME-000001"])
    at = dt.datetime(2026, 6, 15, 6, tzinfo=dt.UTC)
    world.run_steps(as_of, at=at, data_sources={"SME-000001": frozenset({"accounting", "tax"})})

    northwind = world.pull("northwind", at=at + dt.timedelta(hours=1))
    harbor = world.pull("harbor", at=at + dt.timedelta(hours=1))

    assert northwind.breaches == []
    assert harbor.breaches == []
    (row,) = northwind.dossiers
    assert (sorted(row["sources_used"]), row["vat_returns_due"], row["vat_on_time_rate"]) == (
        ["accounting"],
        None,
        None,
    )
    assert row["vat_books_revenue_ratio"] is None
    assert len(harbor.dossiers) == 1


# --- 4. withdrawals judged on what was delivered -----------------------------------------------


def test_4_a_delivered_version_that_lost_its_cover_is_withdrawn_even_if_its_successor_is_filtered_out(
    world: World,
) -> None:
    world.subscribe("northwind", CREDIT)
    grant(world, "C-1", "SME-000001", sources={"accounting", "utility"}, months=24)
    data = {"SME-000001": Data(frozenset({"accounting", "utility"}), 24)}
    world.publish(AS_OF, data, at=PUBLISH_AT)
    first = world.pull("northwind", at=PULL_AT)
    assert first.breaches == []
    (delivered,) = first.dossiers
    assert sorted(delivered["sources_used"]) == ["accounting", "utility"]

    # The SME drops utility; the lender's subscription no longer wants the SME's region.
    narrowed_at = PULL_AT + dt.timedelta(hours=1)
    grant(world, "C-1", "SME-000001", sources=BOOKS, months=24, granted_at=narrowed_at, at=narrowed_at)
    world.subscribe("northwind", CREDIT, filters={"regions": ["Nowhere"]})
    world.publish(AS_OF, data, at=narrowed_at + dt.timedelta(minutes=10))
    second = world.pull("northwind", at=narrowed_at + dt.timedelta(hours=1))

    assert second.breaches == []
    assert [(w["sme_id"], w["dossier_id"]) for w in second.withdrawals] == [
        ("SME-000001", delivered["dossier_id"])
    ]
    assert second.dossiers == []


# --- 5. revocation during a shard's pulls ------------------------------------------------------


def test_5_a_revocation_during_a_shards_pulls_stops_the_next_smes_requests(
    world: World, universe: Universe, sandbox: SandboxServer
) -> None:
    first, second = clean_smes(universe, 2, min_months=12)
    connect(world, universe, [first, second], ("accounting",))
    grant(world, "C-first", first, months=12, granted_at=UNIVERSE_GRANTED)
    grant(world, "C-second", second, months=12, granted_at=UNIVERSE_GRANTED)
    pulled_at = dt.datetime.combine(UNIVERSE_AS_OF, dt.time(8), tzinfo=dt.UTC)
    tenants = {s: universe.sme(s).profile.tenant_id for s in (first, second)}
    urls: list[str] = []

    def revoke_second_while_first_is_pulled(response: requests.Response, *args: Any, **kwargs: Any) -> None:
        urls.append(response.url)
        if tenants[first] in response.url and not any(tenants[second] in u for u in urls):
            with session_scope(world.engine) as session:
                consent.revoke(session, "C-second", at=pulled_at - dt.timedelta(minutes=1))

    def sessions(retry_reads: bool) -> requests.Session:
        session = make_session(3, SYSTEM_CLOCK, retry_reads=retry_reads)
        session.hooks["response"].append(revoke_second_while_first_is_pulled)
        return session

    ingest(world, "accounting", sandbox.url, now=pulled_at, factory=sessions)

    assert any(tenants[first] in u for u in urls)
    assert [u for u in urls if tenants[second] in u] == []
    with session_scope(world.engine) as session:
        statuses = {
            run.sme_id: run.status
            for run in session.query(IngestionRun).filter(IngestionRun.as_of_date == UNIVERSE_AS_OF)
        }
    assert statuses[first] == "pulled"
    assert statuses.get(second) != "pulled"
    assert {row["sme_id"] for row in canonical_rows(world, "monthly_financials")} == {first}


# --- 6. the internal store is internal ---------------------------------------------------------

README = Path(__file__).resolve().parents[2] / "README.md"


def test_6_the_readme_never_sends_lenders_to_the_internal_store() -> None:
    text_ = README.read_text()
    lenders = text_.split("## For lenders", 1)[1].split("\n## ", 1)[0]
    readers = ("read_parquet", "spark.read", "pl.read", "pd.read", "duckdb.sql")
    invitations = [
        line for line in lenders.splitlines() if "var/dossiers" in line and any(r in line for r in readers)
    ]
    assert invitations == []
    assert "read_parquet('var/dossiers" not in text_


def sme_ids_in_parquet(root: Path) -> dict[str, set[str]]:
    """Every Parquet file under ``root`` that has an ``sme_id`` column -> the SME ids it holds."""
    found = {}
    for path in root.rglob("*.parquet"):
        schema = pq.read_schema(path)
        if "sme_id" in schema.names:
            found[str(path.relative_to(root))] = set(
                pq.read_table(path, columns=["sme_id"])["sme_id"].to_pylist()
            )
    return found


def test_6_an_erased_sme_leaves_nothing_in_the_store_and_a_rerun_brings_nothing_back(world: World) -> None:
    world.subscribe("northwind", CREDIT)
    for n in (1, 2):
        grant(world, f"C-{n}", f"SME-00000{n}", sources={"accounting", "tax"})
    data = {s: Data(frozenset({"accounting", "tax"}), 18) for s in ("SME-000001", "SME-000002")}
    earlier = dt.date(2026, 5, 1)
    world.publish(earlier, data, at=PUBLISH_AT - dt.timedelta(days=30))
    world.publish(AS_OF, data, at=PUBLISH_AT)
    received = world.pull("northwind", at=PULL_AT)
    assert received.breaches == []
    assert {r["sme_id"] for r in received.dossiers} == {"SME-000001", "SME-000002"}

    erased_at = PULL_AT + dt.timedelta(hours=1)
    world.erase("SME-000001", at=erased_at)

    holding = {
        path: ids for path, ids in sme_ids_in_parquet(world.settings.home).items() if "SME-000001" in ids
    }
    assert holding == {}
    after = world.pull("northwind", at=erased_at + dt.timedelta(hours=1))
    assert after.breaches == []
    assert sorted((w["sme_id"], w["reason"]) for w in after.withdrawals) == [("SME-000001", "erased")] * len(
        [r for r in received.dossiers if r["sme_id"] == "SME-000001"]
    )

    world.run_steps(earlier, at=erased_at + dt.timedelta(hours=2), data_sources={})
    world.run_steps(AS_OF, at=erased_at + dt.timedelta(hours=2), data_sources={})
    again = world.pull("northwind", at=erased_at + dt.timedelta(hours=3))
    assert again.breaches == []
    assert [r for r in again.dossiers if r["sme_id"] == "SME-000001"] == []
    holding = {
        path: ids for path, ids in sme_ids_in_parquet(world.settings.home).items() if "SME-000001" in ids
    }
    assert holding == {}


# --- 7. new lenders, and rows not yet entitled -------------------------------------------------


def test_7_a_new_subscription_starts_from_the_current_version_not_history(world: World) -> None:
    world.subscribe("northwind", CREDIT)
    grant(world, "C-1", "SME-000001", recipients=("northwind", "harbor"))
    for months_back in (2, 1, 0):  # new books every month: each date has a version of its own
        as_of = months_before(AS_OF, months_back)[0] if months_back else AS_OF
        data = {"SME-000001": Data(BOOKS, 24, level=1000.0 + 100 * months_back)}
        world.publish(as_of, data, at=dt.datetime.combine(as_of, dt.time(6), tzinfo=dt.UTC))
    world.subscribe("harbor", CREDIT)

    first = world.pull("harbor", at=PULL_AT)

    assert first.breaches == []
    assert [(r["sme_id"], r["as_of_date"]) for r in first.dossiers] == [("SME-000001", AS_OF)]


def test_7_an_sme_whose_books_did_not_change_keeps_the_version_first_published(world: World) -> None:
    world.subscribe("northwind", CREDIT)
    grant(world, "C-1", "SME-000001", recipients=("northwind", "harbor"))
    data = {"SME-000001": Data(BOOKS, 24)}
    dates = [*months_before(AS_OF, 2), AS_OF]
    kept = []
    for as_of in dates:  # the same books, shifted a month each time
        at = dt.datetime.combine(as_of, dt.time(6), tzinfo=dt.UTC)
        kept.append(world.publish(as_of, data, at=at)["kept"])
    world.subscribe("harbor", CREDIT)

    first = world.pull("harbor", at=PULL_AT)
    again = world.pull("northwind", at=PULL_AT)

    # May's dossier differs from April's; June's is May's again, so May's version stands for June.
    assert kept == [0, 0, 1]
    assert (first.breaches, again.breaches) == ([], [])
    assert [(r["sme_id"], r["as_of_date"]) for r in first.dossiers] == [("SME-000001", dates[1])]
    assert [(r["sme_id"], r["as_of_date"]) for r in again.dossiers] == [("SME-000001", dates[1])]


def test_7_a_later_grant_delivers_the_current_version_without_a_new_publish(world: World) -> None:
    world.subscribe("northwind", CREDIT)
    world.subscribe("harbor", CREDIT)
    grant(world, "C-n", "SME-000001", recipients=("northwind",))
    world.publish(AS_OF, {"SME-000001": Data(BOOKS, 24)}, at=PUBLISH_AT)
    before = world.pull("harbor", at=PULL_AT)
    assert (before.dossiers, before.breaches) == ([], [])

    later = PULL_AT + dt.timedelta(hours=1)
    grant(world, "C-h", "SME-000001", recipients=("harbor",), granted_at=later, at=later)
    after = world.pull("harbor", at=later + dt.timedelta(hours=1))

    assert after.breaches == []
    assert [(r["sme_id"], r["as_of_date"], r["history_months"]) for r in after.dossiers] == [
        ("SME-000001", AS_OF, 24)
    ]


# --- 8. the lender file and its deliveries commit together -------------------------------------


def _break_deliveries(world: World) -> None:
    """Make the commit of any delivery fail (PostgreSQL: at commit; SQLite: at insert)."""
    with world.engine.begin() as connection:
        if world.engine.dialect.name == "postgresql":
            connection.execute(
                text(
                    "CREATE FUNCTION refuse_delivery() RETURNS trigger LANGUAGE plpgsql AS "
                    "$$ BEGIN RAISE EXCEPTION 'delivery store unavailable'; END $$"
                )
            )
            connection.execute(
                text(
                    "CREATE CONSTRAINT TRIGGER refuse_delivery AFTER INSERT OR UPDATE ON deliveries "
                    "DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION refuse_delivery()"
                )
            )
        else:
            for event in ("INSERT", "UPDATE"):
                connection.execute(
                    text(
                        f"CREATE TRIGGER refuse_delivery_{event.lower()} BEFORE {event} ON deliveries "
                        "BEGIN SELECT RAISE(ABORT, 'delivery store unavailable'); END"
                    )
                )


def _repair_deliveries(world: World) -> None:
    with world.engine.begin() as connection:
        if world.engine.dialect.name == "postgresql":
            connection.execute(text("DROP TRIGGER refuse_delivery ON deliveries"))
        else:
            for event in ("insert", "update"):
                connection.execute(text(f"DROP TRIGGER refuse_delivery_{event}"))


def test_8_a_failed_commit_of_deliveries_leaves_no_file_the_warehouse_does_not_know(world: World) -> None:
    world.subscribe("northwind", CREDIT)
    grant(world, "C-1", "SME-000001")
    world.publish(AS_OF, {"SME-000001": Data(BOOKS, 24)}, at=PUBLISH_AT)
    _break_deliveries(world)

    with pytest.raises(Exception, match="delivery store unavailable"):
        world.pull("northwind", at=PULL_AT)

    visible = sorted(p.name for p in world.out_dir.glob("*") if not p.name.startswith("."))
    assert visible == []
    _repair_deliveries(world)
    retried = world.pull("northwind", at=PULL_AT + dt.timedelta(minutes=5))
    assert retried.breaches == []
    assert [r["sme_id"] for r in retried.dossiers] == ["SME-000001"]
    assert sorted(p.name for p in world.out_dir.iterdir()) == [Path(retried.summary["file"]).name]


# --- 9. no consent, no dossier; purpose is checked ---------------------------------------------


def test_9_without_consent_no_dossier_is_made_at_all(world: World) -> None:
    world.subscribe("northwind", CREDIT)
    world.subscribe("harbor", CREDIT)
    grant(world, "C-1", "SME-000001")
    data = {s: Data(EVERY_SOURCE, 24) for s in ("SME-000001", "SME-000002")}
    world.publish(AS_OF, data, at=PUBLISH_AT)

    northwind = world.pull("northwind", at=PULL_AT)
    harbor = world.pull("harbor", at=PULL_AT)

    assert northwind.breaches == harbor.breaches == []
    assert [r["sme_id"] for r in northwind.dossiers] == ["SME-000001"]
    assert harbor.dossiers == []
    # Its data was there (canonical rows, a passed validation), but nothing was scored or published.
    made = {
        path: ids
        for path, ids in sme_ids_in_parquet(world.settings.home).items()
        if "SME-000002" in ids and not path.startswith(("canonical/", "staging/validation/"))
    }
    assert made == {}


def test_9_purpose_is_checked_at_delivery(world: World) -> None:
    assert {CREDIT, MONITORING} <= set(consent.PURPOSES)
    world.subscribe("northwind", CREDIT)
    world.subscribe("harbor", MONITORING)
    grant(world, "C-1", "SME-000001", recipients=("northwind", "harbor"), purpose=MONITORING)
    world.publish(AS_OF, {"SME-000001": Data(BOOKS, 24)}, at=PUBLISH_AT)

    northwind = world.pull("northwind", at=PULL_AT)
    harbor = world.pull("harbor", at=PULL_AT)

    assert northwind.breaches == harbor.breaches == []
    assert northwind.dossiers == []
    assert [r["sme_id"] for r in harbor.dossiers] == ["SME-000001"]


@pytest.mark.parametrize(
    ("change", "named"),
    [
        ({"purpose": "curiosity"}, "curiosity"),
        ({"sme_id": "SME-999999"}, "SME-999999"),
        ({"recipients": ["nobody"]}, "nobody"),
        ({"sources": ["horoscope"]}, "horoscope"),
        ({"history_months": 0}, "history.months"),
        ({"expires_at": GRANTED}, "expir"),
    ],
)
def test_9_bad_grants_are_one_line_errors_that_change_nothing(
    world: World, change: dict[str, Any], named: str
) -> None:
    terms = {
        "consent_id": "C-bad",
        "sme_id": "SME-000001",
        "sources": ["accounting"],
        "recipients": ["northwind"],
        "purpose": CREDIT,
        "history_months": 12,
        "granted_at": GRANTED,
        "expires_at": EXPIRES,
    } | change
    with session_scope(world.engine) as session, pytest.raises(consent.ConsentError) as raised:
        consent.grant(session, **terms)
    assert re.search(named, str(raised.value)), str(raised.value)
    assert "\n" not in str(raised.value)
    with session_scope(world.engine) as session:
        assert session.execute(text("SELECT count(*) FROM consents")).scalar() == 0


# --- 10. a transient provider failure is not "no data" -----------------------------------------


def test_10_a_provider_failure_holds_the_dossier_and_keeps_the_previous_version(
    world: World, universe: Universe, sandbox: SandboxServer, capsys: pytest.CaptureFixture[str]
) -> None:
    (sme_id,) = clean_smes(universe, 1, min_months=24)
    connect(world, universe, [sme_id], ("accounting", "tax"))
    world.subscribe("northwind", CREDIT)
    grant(world, "C-1", sme_id, sources={"accounting", "tax"}, months=24, granted_at=UNIVERSE_GRANTED)
    day = dt.datetime.combine(UNIVERSE_AS_OF, dt.time(), tzinfo=dt.UTC)

    for source in ("accounting", "tax"):
        ingest(world, source, sandbox.url, now=day + dt.timedelta(hours=1))
    world.run_steps(
        UNIVERSE_AS_OF, at=day + dt.timedelta(hours=2), data_sources=stage_validation_of_ingested(world)
    )
    good = world.pull("northwind", at=day + dt.timedelta(hours=3))
    assert good.breaches == []
    (delivered,) = good.dossiers
    assert delivered["months_of_accounts"] > 0

    # Re-run of the day: the accounting provider answers only transient errors.
    def one_attempt(retry_reads: bool) -> requests.Session:
        return make_session(1, SYSTEM_CLOCK, retry_reads=retry_reads)

    with SandboxServer(universe, fault_rate=0.999999, fault_seed=7) as failing:
        ingest(world, "accounting", failing.url, now=day + dt.timedelta(hours=4), factory=one_attempt)
    ingest(world, "tax", sandbox.url, now=day + dt.timedelta(hours=4))
    world.run_steps(
        UNIVERSE_AS_OF, at=day + dt.timedelta(hours=5), data_sources=stage_validation_of_ingested(world)
    )
    after = world.pull("northwind", at=day + dt.timedelta(hours=6))

    assert after.breaches == []
    assert [r for r in after.dossiers if r["sme_id"] == sme_id] == []
    assert after.withdrawals == []
    capsys.readouterr()
    assert main(["quarantine", "--as-of", UNIVERSE_AS_OF.isoformat(), "--sme", sme_id]) == 0
    listed = capsys.readouterr().out
    assert sme_id in listed
    assert "accounting" in listed
