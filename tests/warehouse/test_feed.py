"""The lender feed: entitlement at pull time, cursor, filters, redelivery and withdrawals.

Runs on SQLite and PostgreSQL; dossiers are published by the real publish into a temporary store.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

import duckdb
import pandas as pd
import polars as pl
import pyarrow as pa
import pyarrow.compute
import pyarrow.parquet as pq
import pytest
from sqlalchemy import Engine, select
from test_dossier_store import (
    MODEL,
    NOW,
    expected_row,
    file_rows,
    give_consent,
    parquet_type,
    run_publish,
    scored,
    seed,
)

from warehouse import consent
from warehouse.db import session_scope
from warehouse.dossier_schema import ALL_COLUMNS
from warehouse.feed import FeedError, lender_status, pull, subscribe
from warehouse.models import Delivery, DossierVersion, Subscription, Withdrawal
from warehouse.storage import Store

PULL_AT = NOW + dt.timedelta(hours=1)


@pytest.fixture
def store(tmp_path: Path) -> Store:
    return Store(str(tmp_path / "store"))


@pytest.fixture
def out_dir(tmp_path: Path) -> Path:
    return tmp_path / "pulls"


def run_pull(
    engine: Engine, store: Store, out_dir: Path, *, at: dt.datetime, lender: str = "northwind", **kw: Any
) -> dict[str, Any]:
    """One pull in its own transaction, as the command and the service run it."""
    with session_scope(engine) as session:
        return pull(session, store, lender_id=lender, out_dir=out_dir, now=at, **kw)


def publish_three(engine: Engine, store: Store) -> None:
    """SME 1 and 3 consent to northwind, SME 2 to harbor only; all three published (seq 1, 2, 3)."""
    seed(engine)
    with session_scope(engine) as session:
        give_consent(session, "C-1", "SME-000001")
        give_consent(session, "C-2", "SME-000002", recipients=("harbor",))
        give_consent(session, "C-3", "SME-000003", recipients=("northwind", "harbor"))
        subscribe(session, "northwind")
        subscribe(session, "harbor")
    run_publish(engine, store, [scored(["SME-000001", "SME-000002"]), scored(["SME-000003"])])


def deliveries(engine: Engine) -> list[tuple[str, str, str, str, dt.datetime]]:
    with session_scope(engine) as session:
        rows = session.execute(
            select(
                Delivery.lender_id,
                DossierVersion.dossier_id,
                Subscription.name,
                Delivery.pull_id,
                Delivery.delivered_at,
            )
            .join(DossierVersion, DossierVersion.id == Delivery.dossier_version_id)
            .join(Subscription, Subscription.id == Delivery.subscription_id)
            .order_by(Delivery.lender_id, DossierVersion.feed_seq)
        ).all()
        return [tuple(row) for row in rows]


def cursor_of(engine: Engine, lender: str, name: str = "default") -> int:
    with session_scope(engine) as session:
        return session.scalars(
            select(Subscription.cursor).where(Subscription.lender_id == lender, Subscription.name == name)
        ).one()


def test_pull_writes_the_entitled_dossiers_and_records_deliveries(
    warehouse_engine: Engine, store: Store, out_dir: Path
) -> None:
    publish_three(warehouse_engine, store)

    summary = run_pull(warehouse_engine, store, out_dir, at=PULL_AT)

    path = out_dir / "northwind-20261102T103000000000Z.parquet"
    assert summary == {
        "lender_id": "northwind",
        "subscription": "default",
        "purpose": "credit_decision",
        "pull_id": "20261102T103000000000Z",
        "cursor_from": 0,
        "cursor_to": 3,
        "considered": 3,
        "current": 2,
        "delivered": 2,
        "not_entitled": 1,
        "not_entitled_smes": 1,
        "filtered_out": 0,
        "unavailable": 0,
        "file": str(path),
        "withdrawals": 0,
        "withdrawals_file": None,
        "recovered": {"finished": 0, "discarded": 0},
    }
    assert sorted(p.name for p in out_dir.iterdir()) == [path.name]
    assert file_rows(path) == [
        expected_row("SME-000001", published_at=NOW),
        expected_row("SME-000003", published_at=NOW),
    ]
    schema = pq.read_schema(path)
    assert {f.name: (f.type, f.metadata[b"description"].decode()) for f in schema} == {
        c.name: (parquet_type(c.type), c.description) for c in ALL_COLUMNS
    }
    assert (schema.metadata[b"dossier_schema_version"], schema.metadata[b"model_version"]) == (
        b"3",
        MODEL.encode(),
    )
    assert deliveries(warehouse_engine) == [
        (
            "northwind",
            "SME-000001:2026-11-01:v3:accounting+tax@24m",
            "default",
            "20261102T103000000000Z",
            PULL_AT,
        ),
        (
            "northwind",
            "SME-000003:2026-11-01:v3:accounting+tax@24m",
            "default",
            "20261102T103000000000Z",
            PULL_AT,
        ),
    ]
    assert (cursor_of(warehouse_engine, "northwind"), cursor_of(warehouse_engine, "harbor")) == (3, 0)

    assert pd.read_parquet(path)["sme_id"].tolist() == ["SME-000001", "SME-000003"]
    assert duckdb.sql(f"SELECT sme_id, grade FROM read_parquet('{path}') ORDER BY sme_id").fetchall() == [
        ("SME-000001", "A"),
        ("SME-000003", "C"),
    ]
    assert pl.read_parquet(path).select("sme_id", "pd_12m").rows() == [
        ("SME-000001", 0.011),
        ("SME-000003", 0.033),
    ]


def test_a_second_pull_with_nothing_new_writes_nothing(
    warehouse_engine: Engine, store: Store, out_dir: Path
) -> None:
    publish_three(warehouse_engine, store)
    run_pull(warehouse_engine, store, out_dir, at=PULL_AT)

    again = run_pull(warehouse_engine, store, out_dir, at=PULL_AT + dt.timedelta(minutes=5))

    assert (
        again["delivered"],
        again["current"],
        again["file"],
        again["cursor_from"],
        again["cursor_to"],
    ) == (0, 2, None, 3, 3)
    assert [p.name for p in out_dir.iterdir()] == ["northwind-20261102T103000000000Z.parquet"]
    assert len(deliveries(warehouse_engine)) == 2


@pytest.mark.parametrize(
    ("case", "change"),
    [
        ("revoked after publish", lambda s: consent.revoke(s, "C-1", at=NOW + dt.timedelta(minutes=10))),
        (
            "expired after publish",
            lambda s: give_consent(s, "C-1", "SME-000001", expires_at=NOW + dt.timedelta(minutes=30)),
        ),
        (
            "narrowed to fewer sources",
            lambda s: give_consent(s, "C-1", "SME-000001", sources=("accounting",), granted_at=NOW),
        ),
        (
            "moved to another lender",
            lambda s: give_consent(s, "C-1", "SME-000001", recipients=("harbor",), granted_at=NOW),
        ),
    ],
)
def test_consent_lost_between_publish_and_pull_stops_the_dossier(
    warehouse_engine: Engine, store: Store, out_dir: Path, case: str, change: Any
) -> None:
    publish_three(warehouse_engine, store)
    with session_scope(warehouse_engine) as session:
        change(session)

    summary = run_pull(warehouse_engine, store, out_dir, at=PULL_AT)

    assert (summary["delivered"], summary["not_entitled"], summary["cursor_to"]) == (1, 2, 3), case
    assert [row["sme_id"] for row in file_rows(summary["file"])] == ["SME-000003"]
    assert [row[1] for row in deliveries(warehouse_engine)] == ["SME-000003:2026-11-01:v3:accounting+tax@24m"]


def test_partial_source_consent_and_wrong_recipient_never_reach_the_lender(
    warehouse_engine: Engine, store: Store, out_dir: Path
) -> None:
    seed(warehouse_engine)
    with session_scope(warehouse_engine) as session:
        # SME 5: books and VAT for harbor; books alone for northwind. Its dossier used both.
        give_consent(session, "C-5h", "SME-000005", recipients=("harbor",))
        give_consent(session, "C-5n", "SME-000005", sources=("accounting",), recipients=("northwind",))
        # SME 6: everything, but for harbor only.
        give_consent(
            session, "C-6", "SME-000006", sources=("accounting", "tax", "utility"), recipients=("harbor",)
        )
        subscribe(session, "northwind")
        subscribe(session, "harbor")
    run_publish(warehouse_engine, store, [scored(["SME-000005", "SME-000006"])])

    northwind = run_pull(warehouse_engine, store, out_dir, at=PULL_AT)
    harbor = run_pull(warehouse_engine, store, out_dir, at=PULL_AT, lender="harbor")

    assert (northwind["delivered"], northwind["not_entitled"], northwind["file"]) == (0, 2, None)
    assert [row["sme_id"] for row in file_rows(harbor["file"])] == ["SME-000005", "SME-000006"]
    assert [(row[0], row[1]) for row in deliveries(warehouse_engine)] == [
        ("harbor", "SME-000005:2026-11-01:v3:accounting+tax@24m"),
        ("harbor", "SME-000006:2026-11-01:v3:accounting+tax@24m"),
    ]


def test_filters_restrict_what_a_subscription_receives(
    warehouse_engine: Engine, store: Store, out_dir: Path
) -> None:
    seed(warehouse_engine)
    with session_scope(warehouse_engine) as session:
        for n in (1, 3, 4, 6):
            give_consent(session, f"C-{n}", f"SME-00000{n}")
        # SME 1: grade A, food_service, North; 3: C, manufacturing, North; 4: D, food_service, East; 6: A, retail, East
        subscribe(session, "northwind", filters={"grades": ["A", "D"], "regions": ["East"]})
    run_publish(warehouse_engine, store, [scored(["SME-000001", "SME-000003", "SME-000004", "SME-000006"])])

    summary = run_pull(warehouse_engine, store, out_dir, at=PULL_AT)

    assert (summary["delivered"], summary["filtered_out"], summary["cursor_to"]) == (2, 2, 4)
    assert [row["sme_id"] for row in file_rows(summary["file"])] == ["SME-000004", "SME-000006"]

    with session_scope(warehouse_engine) as session:
        subscribe(session, "northwind", name="food", filters={"industries": ["food_service"]})
    food = run_pull(
        warehouse_engine, store, out_dir, at=PULL_AT + dt.timedelta(minutes=1), subscription="food"
    )
    # Delivery state is per lender and version: SME 4, already held through "default", is not sent again.
    assert [row["sme_id"] for row in file_rows(food["file"])] == ["SME-000001"]
    assert [(row[1], row[2]) for row in deliveries(warehouse_engine)] == [
        ("SME-000001:2026-11-01:v3:accounting+tax@24m", "food"),
        ("SME-000004:2026-11-01:v3:accounting+tax@24m", "default"),
        ("SME-000006:2026-11-01:v3:accounting+tax@24m", "default"),
    ]


def test_minimum_grade_and_required_sources_restrict_what_a_subscription_receives(
    warehouse_engine: Engine, store: Store, out_dir: Path
) -> None:
    seed(warehouse_engine)
    everything = ("accounting", "tax", "utility")
    with session_scope(warehouse_engine) as session:
        for n in (1, 2, 3, 4, 6):
            both = ("northwind", "harbor") if n in (1, 6) else ("northwind",)
            give_consent(session, f"C-{n}", f"SME-00000{n}", sources=everything, recipients=both)
        # grades: SME 1 A, 2 B, 3 C, 4 D, 6 A; SMEs 2, 3 and 4 used the utility source too
        subscribe(session, "northwind", filters={"min_grade": "C", "required_sources": ["tax", "utility"]})
        subscribe(session, "harbor", filters={"min_grade": "A"})
    utility = {"SME-000002": everything, "SME-000003": everything, "SME-000004": everything}
    smes = ["SME-000001", "SME-000002", "SME-000003", "SME-000004", "SME-000006"]
    run_publish(warehouse_engine, store, [scored(smes, sources=utility)])

    summary = run_pull(warehouse_engine, store, out_dir, at=PULL_AT)
    # SME 1 and 6 lack the utility source, SME 4 is worse than C
    assert (summary["delivered"], summary["filtered_out"]) == (2, 3)
    assert [row["sme_id"] for row in file_rows(summary["file"])] == ["SME-000002", "SME-000003"]
    assert [(row["grade"], row["sources_used"]) for row in file_rows(summary["file"])] == [
        ("B", list(everything)),
        ("C", list(everything)),
    ]
    harbor = run_pull(warehouse_engine, store, out_dir, at=PULL_AT, lender="harbor")
    assert [row["sme_id"] for row in file_rows(harbor["file"])] == ["SME-000001", "SME-000006"]


def test_republished_dossiers_reach_lenders_again_only_when_changed(
    warehouse_engine: Engine, store: Store, out_dir: Path
) -> None:
    publish_three(warehouse_engine, store)
    run_pull(warehouse_engine, store, out_dir, at=PULL_AT)
    later = PULL_AT + dt.timedelta(hours=1)

    run_publish(
        warehouse_engine, store, [scored(["SME-000001", "SME-000002"]), scored(["SME-000003"])], now=later
    )
    unchanged = run_pull(warehouse_engine, store, out_dir, at=later + dt.timedelta(minutes=1))
    assert (unchanged["delivered"], unchanged["current"], unchanged["file"]) == (0, 2, None)

    changed = pd.concat([scored(["SME-000001"]), scored(["SME-000002"])], ignore_index=True)
    run_publish(
        warehouse_engine,
        store,
        [changed, scored(["SME-000003"], bump=0.002)],
        now=later + dt.timedelta(hours=1),
    )
    redelivered_at = later + dt.timedelta(hours=2)
    redelivered = run_pull(warehouse_engine, store, out_dir, at=redelivered_at)

    assert (redelivered["delivered"], redelivered["cursor_from"], redelivered["cursor_to"]) == (1, 3, 4)
    assert file_rows(redelivered["file"]) == [
        expected_row("SME-000003", published_at=later + dt.timedelta(hours=1), bump=0.002)
    ]
    assert deliveries(warehouse_engine) == [
        (
            "northwind",
            "SME-000001:2026-11-01:v3:accounting+tax@24m",
            "default",
            "20261102T103000000000Z",
            PULL_AT,
        ),
        (
            "northwind",
            "SME-000003:2026-11-01:v3:accounting+tax@24m",
            "default",
            "20261102T133000000000Z",
            redelivered_at,
        ),
    ]


def test_withdrawn_consent_is_reported_once_per_delivered_dossier(
    warehouse_engine: Engine, store: Store, out_dir: Path
) -> None:
    publish_three(warehouse_engine, store)
    run_pull(warehouse_engine, store, out_dir, at=PULL_AT)
    revoked_at = PULL_AT + dt.timedelta(minutes=20)
    with session_scope(warehouse_engine) as session:
        consent.revoke(session, "C-1", at=revoked_at)
        give_consent(
            session,
            "C-3",
            "SME-000003",
            recipients=("northwind", "harbor"),
            expires_at=PULL_AT + dt.timedelta(minutes=40),
        )

    at = PULL_AT + dt.timedelta(hours=1)
    summary = run_pull(warehouse_engine, store, out_dir, at=at)

    path = out_dir / "northwind-20261102T113000000000Z-withdrawals.parquet"
    assert (summary["delivered"], summary["file"], summary["withdrawals"], summary["withdrawals_file"]) == (
        0,
        None,
        2,
        str(path),
    )
    assert file_rows(path) == [
        {
            "sme_id": "SME-000001",
            "dossier_id": "SME-000001:2026-11-01:v3:accounting+tax@24m",
            "withdrawn_at": revoked_at,
            "reason": "consent_revoked",
        },
        {
            "sme_id": "SME-000003",
            "dossier_id": "SME-000003:2026-11-01:v3:accounting+tax@24m",
            "withdrawn_at": PULL_AT + dt.timedelta(minutes=40),
            "reason": "consent_expired",
        },
    ]
    assert [f.metadata[b"description"] != b"" for f in pq.read_schema(path)] == [True] * 4
    assert pd.read_parquet(path)["reason"].tolist() == ["consent_revoked", "consent_expired"]
    assert duckdb.sql(f"SELECT count(*) FROM read_parquet('{path}')").fetchall() == [(2,)]
    assert pl.read_parquet(path).height == 2
    with session_scope(warehouse_engine) as session:
        recorded = session.execute(
            select(
                Withdrawal.lender_id, Withdrawal.delivery_pull_id, Withdrawal.reason, Withdrawal.pull_id
            ).order_by(Withdrawal.id)
        ).all()
    assert [tuple(r) for r in recorded] == [
        ("northwind", "20261102T103000000000Z", "consent_revoked", "20261102T113000000000Z"),
        ("northwind", "20261102T103000000000Z", "consent_expired", "20261102T113000000000Z"),
    ]

    quiet = run_pull(warehouse_engine, store, out_dir, at=at + dt.timedelta(hours=1))
    assert (quiet["withdrawals"], quiet["withdrawals_file"]) == (0, None)
    assert len(list(out_dir.glob("*-withdrawals.parquet"))) == 1


def test_consent_narrowed_after_delivery_is_a_withdrawal_too(
    warehouse_engine: Engine, store: Store, out_dir: Path
) -> None:
    publish_three(warehouse_engine, store)
    run_pull(warehouse_engine, store, out_dir, at=PULL_AT)
    with session_scope(warehouse_engine) as session:
        give_consent(
            session, "C-1", "SME-000001", recipients=("harbor",), granted_at=PULL_AT + dt.timedelta(minutes=1)
        )

    at = PULL_AT + dt.timedelta(hours=1)
    summary = run_pull(warehouse_engine, store, out_dir, at=at)

    assert file_rows(summary["withdrawals_file"]) == [
        {
            "sme_id": "SME-000001",
            "dossier_id": "SME-000001:2026-11-01:v3:accounting+tax@24m",
            "withdrawn_at": at,
            "reason": "consent_no_longer_covers",
        }
    ]


def test_a_dossier_delivered_again_is_withdrawn_again(
    warehouse_engine: Engine, store: Store, out_dir: Path
) -> None:
    publish_three(warehouse_engine, store)
    run_pull(warehouse_engine, store, out_dir, at=PULL_AT)
    with session_scope(warehouse_engine) as session:
        consent.revoke(session, "C-1", at=PULL_AT + dt.timedelta(minutes=1))
    first = run_pull(warehouse_engine, store, out_dir, at=PULL_AT + dt.timedelta(minutes=2))
    with session_scope(warehouse_engine) as session:
        give_consent(session, "C-1", "SME-000001", granted_at=PULL_AT + dt.timedelta(minutes=3))
    run_publish(
        warehouse_engine,
        store,
        [scored(["SME-000001"], bump=0.001), scored(["SME-000003"])],
        now=PULL_AT + dt.timedelta(minutes=4),
    )
    redelivered = run_pull(warehouse_engine, store, out_dir, at=PULL_AT + dt.timedelta(minutes=5))
    with session_scope(warehouse_engine) as session:
        consent.revoke(session, "C-1", at=PULL_AT + dt.timedelta(minutes=6))
    second = run_pull(warehouse_engine, store, out_dir, at=PULL_AT + dt.timedelta(minutes=7))

    assert (first["withdrawals"], redelivered["delivered"], second["withdrawals"]) == (1, 1, 1)
    assert file_rows(second["withdrawals_file"]) == [
        {
            "sme_id": "SME-000001",
            "dossier_id": "SME-000001:2026-11-01:v3:accounting+tax@24m",
            "withdrawn_at": PULL_AT + dt.timedelta(minutes=6),
            "reason": "consent_revoked",
        }
    ]


def test_unknown_lender_missing_or_ambiguous_subscription_and_bad_filters_are_clear_errors(
    warehouse_engine: Engine, store: Store, out_dir: Path
) -> None:
    seed(warehouse_engine)
    with pytest.raises(FeedError, match="unknown lender 'nobody'"):
        run_pull(warehouse_engine, store, out_dir, at=PULL_AT, lender="nobody")
    with pytest.raises(
        FeedError, match="lender 'harbor' has no active subscription at all; subscribe it first"
    ):
        run_pull(warehouse_engine, store, out_dir, at=PULL_AT, lender="harbor")
    with session_scope(warehouse_engine) as session:
        subscribe(session, "harbor", name="a")
        subscribe(session, "harbor", name="b")
    with pytest.raises(FeedError, match=r"several subscriptions \['a', 'b'\]; name one"):
        run_pull(warehouse_engine, store, out_dir, at=PULL_AT, lender="harbor")
    with pytest.raises(FeedError, match="no active subscription named 'c'"):
        run_pull(warehouse_engine, store, out_dir, at=PULL_AT, lender="harbor", subscription="c")
    with session_scope(warehouse_engine) as session:
        with pytest.raises(FeedError, match="unknown lender 'nobody'"):
            subscribe(session, "nobody")
        with pytest.raises(
            FeedError,
            match="unknown subscription filter 'colour'; known: grades, industries, regions, size_bands, min_grade, ",
        ):
            subscribe(session, "harbor", filters={"colour": ["red"]})
        with pytest.raises(FeedError, match="filter 'grades' must be a list of strings, not 'AB'"):
            subscribe(session, "harbor", filters={"grades": "AB"})
        with pytest.raises(FeedError, match="unknown purpose 'marketing'; known: credit_decision"):
            subscribe(session, "harbor", purpose="marketing")
    assert not out_dir.exists() or list(out_dir.iterdir()) == []


def test_subscribe_updates_filters_and_keeps_the_cursor(
    warehouse_engine: Engine, store: Store, out_dir: Path
) -> None:
    publish_three(warehouse_engine, store)
    run_pull(warehouse_engine, store, out_dir, at=PULL_AT)
    with session_scope(warehouse_engine) as session:
        updated = subscribe(session, "northwind", filters={"grades": ["C", "A", "C"], "regions": []})
        assert (updated.name, updated.filters, updated.cursor, updated.active) == (
            "default",
            {"grades": ["A", "C"]},
            3,
            True,
        )


def test_lender_status_reports_cursor_deliveries_and_entitlement(
    warehouse_engine: Engine, store: Store, out_dir: Path
) -> None:
    publish_three(warehouse_engine, store)
    run_pull(warehouse_engine, store, out_dir, at=PULL_AT)
    with session_scope(warehouse_engine) as session:
        consent.revoke(session, "C-3", at=PULL_AT + dt.timedelta(minutes=1))
    run_pull(warehouse_engine, store, out_dir, at=PULL_AT + dt.timedelta(minutes=2))

    with session_scope(warehouse_engine) as session:
        status = lender_status(session, "northwind", now=PULL_AT + dt.timedelta(minutes=3))
        harbor = lender_status(session, "harbor", now=PULL_AT + dt.timedelta(minutes=3))

    assert status == {
        "lender_id": "northwind",
        "name": "Northwind Capital",
        "subscriptions": [
            {
                "name": "default",
                "active": True,
                "purpose": "credit_decision",
                "filters": {},
                "cursor": 3,
                "entitled_now": 1,
                "pending": 0,
                "withdrawals_pending": 0,
            }
        ],
        "deliveries": 2,
        "holding": 1,
        "last_delivered_at": PULL_AT.isoformat(),
        "withdrawals": 1,
        "entitled_now": 1,
    }
    # harbor: SME 2 is entitled (C-2) and not yet pulled; SME 3's consent was revoked.
    assert (harbor["subscriptions"][0]["pending"], harbor["deliveries"], harbor["entitled_now"]) == (1, 0, 1)
    with session_scope(warehouse_engine) as session, pytest.raises(FeedError, match="unknown lender"):
        lender_status(session, "nobody")


def test_pull_skips_dossiers_whose_file_no_longer_matches_the_catalog(
    warehouse_engine: Engine, store: Store, out_dir: Path
) -> None:
    publish_three(warehouse_engine, store)

    # SME 1's part is changed behind the catalog's back (a damaged or hand-edited file): its
    # content is no longer what the catalog recorded, so it is not handed over.
    with session_scope(warehouse_engine) as session:
        path = session.scalars(
            select(DossierVersion.file_path).where(DossierVersion.sme_id == "SME-000001")
        ).one()
    part = Path(store.root) / path
    table = pq.read_table(part)
    pd_index = table.schema.get_field_index("pd_12m")
    changed = pa.compute.add(table.column("pd_12m"), 0.005)
    pq.write_table(table.set_column(pd_index, table.schema.field("pd_12m"), changed), part)

    summary = run_pull(warehouse_engine, store, out_dir, at=PULL_AT)

    assert (summary["delivered"], summary["unavailable"]) == (1, 1)
    assert [row["sme_id"] for row in file_rows(summary["file"])] == ["SME-000003"]

    # Case 7 of the consent law: the row a failed publish left unavailable is not skipped for good.
    # Once the publish is run again to completion, the next pull delivers SME 1's current version.
    later = PULL_AT + dt.timedelta(minutes=10)
    run_publish(
        warehouse_engine,
        store,
        [scored(["SME-000001", "SME-000002"], bump=0.005), scored(["SME-000003"])],
        now=later,
    )
    after = run_pull(warehouse_engine, store, out_dir, at=later + dt.timedelta(minutes=1))
    assert (after["delivered"], after["unavailable"]) == (1, 0)
    assert file_rows(after["file"]) == [expected_row("SME-000001", published_at=later, bump=0.005)]


def test_a_kept_version_stands_for_the_later_dates_that_kept_it_widest_scope_first(
    warehouse_engine: Engine, store: Store, out_dir: Path
) -> None:
    """SME 1 is evaluated in a wide and a narrow scope; the lender may hold both."""
    seed(warehouse_engine)
    wide, narrow = ("accounting", "tax", "utility"), ("accounting",)
    with session_scope(warehouse_engine) as session:
        give_consent(session, "C-1", "SME-000001", sources=wide)
        subscribe(session, "northwind")

    def frame(*scopes: tuple[tuple[str, ...], float]) -> list[pd.DataFrame]:
        return [
            pd.concat(
                [scored(["SME-000001"], sources={"SME-000001": s}, bump=bump) for s, bump in scopes],
                ignore_index=True,
            )
        ]

    days = [NOW.date() - dt.timedelta(days=2 - k) for k in range(3)]
    publish_at = [NOW - dt.timedelta(hours=3 - k) for k in range(3)]
    pulls = [PULL_AT + dt.timedelta(minutes=k) for k in range(3)]

    # Day 1: both scopes new; the lender receives the wide one.
    run_publish(warehouse_engine, store, frame((wide, 0.0), (narrow, 0.0)), as_of=days[0], now=publish_at[0])
    first = run_pull(warehouse_engine, store, out_dir, at=pulls[0])
    assert file_rows(first["file"]) == [
        expected_row("SME-000001", sources=wide, as_of=days[0], published_at=publish_at[0])
    ]
    # Day 2: the narrow scope changed, the wide one kept its version, which is current on day 2 too
    # and still the widest: the lender already holds it.
    summary = run_publish(
        warehouse_engine, store, frame((wide, 0.0), (narrow, 0.001)), as_of=days[1], now=publish_at[1]
    )
    assert (summary["kept"], summary["new_or_changed"]) == (1, 1)
    second = run_pull(warehouse_engine, store, out_dir, at=pulls[1])
    assert (second["current"], second["delivered"], second["file"]) == (1, 0, None)
    # Day 3: only the narrow scope is staged (the wide one held back) and it is unchanged: its day-2
    # version is the newest the lender may hold, as day 3's publish stood on it alone.
    summary = run_publish(warehouse_engine, store, frame((narrow, 0.001)), as_of=days[2], now=publish_at[2])
    assert (summary["kept"], summary["new_or_changed"], summary["rows"]) == (1, 0, 0)
    third = run_pull(warehouse_engine, store, out_dir, at=pulls[2])
    assert file_rows(third["file"]) == [
        expected_row("SME-000001", sources=narrow, bump=0.001, as_of=days[1], published_at=publish_at[1])
    ]
    with session_scope(warehouse_engine) as session:
        versions = session.execute(
            select(
                DossierVersion.dossier_id, DossierVersion.current_through, DossierVersion.feed_seq
            ).order_by(DossierVersion.feed_seq)
        ).all()
    assert versions == [
        (f"SME-000001:{days[0].isoformat()}:v3:accounting+tax+utility@24m", days[1], 1),
        (f"SME-000001:{days[0].isoformat()}:v3:accounting@24m", days[0], 2),
        (f"SME-000001:{days[1].isoformat()}:v3:accounting@24m", days[2], 3),
    ]
