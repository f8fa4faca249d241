"""A feed read plans only when something that can change the lender's deliveries changed since its
last sync: the change counters (triggers of migration 0007), the consent boundaries in time, and one
planner at a time per lender. Runs on SQLite and PostgreSQL; dossiers published by the real publish.
"""

from __future__ import annotations

import datetime as dt
import threading
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, delete, select, update
from test_dossier_store import NOW, give_consent, run_publish, scored, seed

from warehouse import consent
from warehouse.db import session_scope
from warehouse.feed import changes, lock_lender, pull, refresh, refresh_lenders, subscribe
from warehouse.models import FeedEvent, FeedWatermark, Lender, Sme, Subscription
from warehouse.storage import Store

T1 = NOW + dt.timedelta(hours=1)
NOTHING = {"delivered": 0, "withdrawn": 0, "unavailable": 0}


@pytest.fixture
def store(tmp_path: Path) -> Store:
    return Store(str(tmp_path / "store"))


def three(engine: Engine, store: Store) -> None:
    """SME 1 and 3 consent to northwind (SME 2 to harbor only), all three published."""
    seed(engine)
    with session_scope(engine) as session:
        give_consent(session, "C-1", "SME-000001")
        give_consent(session, "C-2", "SME-000002", recipients=("harbor",))
        give_consent(session, "C-3", "SME-000003", recipients=("northwind", "harbor"))
        subscribe(session, "northwind")
    run_publish(engine, store, [scored(["SME-000001", "SME-000002"]), scored(["SME-000003"])])


def read(engine: Engine, store: Store, at: dt.datetime, lender: str = "northwind") -> dict[str, int] | None:
    with session_scope(engine) as session:
        return refresh(session, store, lender, now=at)


def feed(engine: Engine, lender: str = "northwind") -> list[tuple[int, str, str, str | None]]:
    with session_scope(engine) as session:
        rows = session.execute(
            select(FeedEvent.seq, FeedEvent.kind, FeedEvent.sme_id, FeedEvent.reason)
            .where(FeedEvent.lender_id == lender)
            .order_by(FeedEvent.seq)
        ).all()
    return [tuple(row) for row in rows]


def counted(engine: Engine) -> int:
    with session_scope(engine) as session:
        return changes(session)


def test_a_read_plans_again_only_after_a_change(warehouse_engine: Engine, store: Store) -> None:
    engine = warehouse_engine
    three(engine, store)
    assert read(engine, store, T1) == {**NOTHING, "delivered": 2}
    delivered = [(1, "delivered", "SME-000001", None), (2, "delivered", "SME-000003", None)]
    assert feed(engine) == delivered
    assert read(engine, store, T1 + dt.timedelta(minutes=5)) is None
    assert read(engine, store, T1 + dt.timedelta(days=30)) is None

    with session_scope(engine) as session:
        consent.revoke(session, "C-1", at=T1 + dt.timedelta(days=31))
    assert read(engine, store, T1 + dt.timedelta(days=31)) == {**NOTHING, "withdrawn": 1}
    assert read(engine, store, T1 + dt.timedelta(days=31)) is None
    withdrawn = [*delivered, (3, "withdrawn", "SME-000001", "consent_revoked")]
    assert feed(engine) == withdrawn

    run_publish(engine, store, [scored(["SME-000003"], bump=0.01)], now=T1 + dt.timedelta(days=32))
    assert read(engine, store, T1 + dt.timedelta(days=32)) == {**NOTHING, "delivered": 1}
    assert read(engine, store, T1 + dt.timedelta(days=32)) is None
    assert feed(engine) == [*withdrawn, (4, "delivered", "SME-000003", None)]

    with session_scope(engine) as session:
        subscribe(session, "northwind", filters={"grades": ["E"]})
    assert read(engine, store, T1 + dt.timedelta(days=33)) == NOTHING
    with session_scope(engine) as session:
        session.execute(update(Sme).where(Sme.sme_id == "SME-000001").values(region="Wales"))
    assert read(engine, store, T1 + dt.timedelta(days=33)) == NOTHING
    assert read(engine, store, T1 + dt.timedelta(days=33)) is None
    assert len(feed(engine)) == 4


def test_a_consent_starting_or_ending_between_reads_plans_again(
    warehouse_engine: Engine, store: Store
) -> None:
    engine = warehouse_engine
    seed(engine)
    ends, starts = T1 + dt.timedelta(hours=2), T1 + dt.timedelta(hours=3)
    with session_scope(engine) as session:
        give_consent(session, "C-1", "SME-000001", expires_at=ends)
        give_consent(session, "C-3", "SME-000003", recipients=("harbor",))  # published for harbor
        give_consent(session, "C-4", "SME-000003", granted_at=starts)  # and northwind from then on
        subscribe(session, "northwind")
    run_publish(engine, store, [scored(["SME-000001", "SME-000003"])])
    assert read(engine, store, T1) == {**NOTHING, "delivered": 1}
    assert read(engine, store, ends - dt.timedelta(seconds=1)) is None
    assert read(engine, store, ends) == {**NOTHING, "withdrawn": 1}
    assert read(engine, store, starts - dt.timedelta(seconds=1)) is None
    assert read(engine, store, starts) == {**NOTHING, "delivered": 1}
    assert read(engine, store, starts + dt.timedelta(days=1)) is None
    assert feed(engine) == [
        (1, "delivered", "SME-000001", None),
        (2, "withdrawn", "SME-000001", "consent_expired"),
        (3, "delivered", "SME-000003", None),
    ]
    # a read at an instant before the last sync cannot rely on it: it plans (the law at T1)
    assert read(engine, store, T1) == {**NOTHING, "delivered": 1, "withdrawn": 1}


def test_every_watched_table_counts_its_changes_and_the_cursor_does_not(warehouse_engine: Engine) -> None:
    engine = warehouse_engine
    seed(engine)
    before = counted(engine)
    with session_scope(engine) as session:
        give_consent(session, "C-1", "SME-000001")
    after_grant = counted(engine)
    assert after_grant > before
    with session_scope(engine) as session:
        subscribe(session, "northwind")
    after_subscribe = counted(engine)
    assert after_subscribe > after_grant
    with session_scope(engine) as session:
        session.execute(update(Subscription).values(cursor=7))
        session.execute(update(Lender).values(name="Renamed"))
    assert counted(engine) == after_subscribe
    with session_scope(engine) as session:
        session.execute(update(Subscription).values(active=False))
    after_pause = counted(engine)
    assert after_pause > after_subscribe
    with session_scope(engine) as session:
        session.execute(delete(Subscription))
    after_delete = counted(engine)
    assert after_delete > after_pause
    with session_scope(engine) as session:
        session.add(
            Sme(sme_id="SME-000009", name="New", industry="retail", region="Wales", size_band="micro")
        )
    assert counted(engine) > after_delete


def test_concurrent_readers_of_a_stale_feed_wait_for_one_sync(warehouse_engine: Engine, store: Store) -> None:
    engine = warehouse_engine
    three(engine, store)
    first = session_scope(engine)
    session = first.__enter__()
    assert refresh(session, store, "northwind", now=T1) == {**NOTHING, "delivered": 2}
    answers: list[Any] = []
    second = threading.Thread(target=lambda: answers.append(read(engine, store, T1)))
    second.start()
    second.join(timeout=2)
    assert second.is_alive()  # queued on the lender, not planning beside it
    assert answers == []
    first.__exit__(None, None, None)
    second.join(timeout=60)
    assert answers == [None]
    assert [e[0] for e in feed(engine)] == [1, 2]


def test_refresh_lenders_syncs_the_lenders_that_read_the_feed_and_leaves_file_pullers_alone(
    warehouse_engine: Engine, store: Store, tmp_path: Path
) -> None:
    engine = warehouse_engine
    three(engine, store)
    with session_scope(engine) as session:
        subscribe(session, "harbor")
    assert read(engine, store, T1) == {**NOTHING, "delivered": 2}  # northwind reads the feed
    with session_scope(engine) as session:
        consent.revoke(session, "C-3", at=T1)
    later = T1 + dt.timedelta(minutes=1)
    assert refresh_lenders(engine, store, now=later) == {"northwind": {**NOTHING, "withdrawn": 1}}
    with session_scope(engine) as session:
        marks = session.execute(
            select(FeedWatermark.lender_id, FeedWatermark.changes, FeedWatermark.synced_at)
        ).all()
        total = changes(session)
    assert [tuple(m) for m in marks] == [("northwind", total, later)]
    assert read(engine, store, later) is None  # the read after it only reads
    assert refresh_lenders(engine, store, lender_ids=["northwind", "harbor"], now=later) == {
        "northwind": None
    }
    # harbor takes file pulls: its dossiers are in its pull file, not taken by a sync
    with session_scope(engine) as session:
        pulled = pull(session, store, lender_id="harbor", out_dir=tmp_path / "inbox", now=later)
    assert pulled["delivered"] == 1
    with session_scope(engine) as session:
        lock_lender(session, "harbor")  # a lock only: changes nothing
    assert counted(engine) == total
