"""An unchanged SME keeps its dossier version across dates: no catalog row, no feed_seq, no feed
event, nothing in the later date's partition; changed SMEs get new versions; consent still decides
what a lender may hold. Publishes by the real publish, the lender reads ``GET /v1/feed`` over the
real application; both backends.
"""

from __future__ import annotations

import datetime as dt
import io
import sys
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "warehouse"))
from test_dossier_store import (
    AS_OF,
    MODEL,
    NOW,
    catalog,
    expected_row,
    give_consent,
    listed_parts,
    part_path,
    run_publish,
    scored,
    seed,
)

from dossier.settings import for_home
from dossier.web.app import create_app
from warehouse import consent, keys
from warehouse.db import make_engine, session_scope
from warehouse.dossier_schema import build_schema
from warehouse.dossier_store import (
    content_hashes,
    content_sha256,
    read_as_of,
    read_manifest,
    read_published,
    versions_as_of,
)
from warehouse.feed import pull, subscribe
from warehouse.models import FeedEvent, Publish

DOSSIER_ROW = build_schema(MODEL).remove_metadata()
NEXT = AS_OF + dt.timedelta(days=1)
NEXT_NOW = NOW + dt.timedelta(days=1)
SMES = ["SME-000001", "SME-000002", "SME-000003", "SME-000004", "SME-000005"]
CHANGED = {"SME-000002": 0.004, "SME-000004": 0.002}
"""The SMEs whose staged content differs on NEXT, and by how much their PD moved."""


def frames(bumps: dict[str, float] | None = None) -> list[pd.DataFrame]:
    """Two shards of scored rows, each SME moved by ``bumps`` (default: the first date's rows)."""
    bumps = bumps or {}
    shards = [SMES[:3], SMES[3:]]
    return [
        pd.concat([scored([s], bump=bumps.get(s, 0.0)) for s in shard], ignore_index=True) for shard in shards
    ]


@pytest.fixture
def service(warehouse_url: str, tmp_path: Path) -> Any:
    """SMEs 1-5 consent to northwind, which reads its feed over the API. Yields (client, engine, auth)."""
    settings = for_home(tmp_path / "var", warehouse_url=warehouse_url, operator_token="operator-secret")
    engine = make_engine(warehouse_url)
    seed(engine)
    with session_scope(engine) as session:
        for n, sme_id in enumerate(SMES, start=1):
            give_consent(session, f"C-{n}", sme_id)
        subscribe(session, "northwind")
        token, _ = keys.issue_key(session, "northwind", at=NOW)
    app = create_app(settings)
    with TestClient(app, raise_server_exceptions=False) as client:
        yield client, engine, {"Authorization": f"Bearer {token}"}
    engine.dispose()


def feed_rows(client: TestClient, auth: dict[str, str], cursor: str) -> tuple[list[dict[str, Any]], str]:
    """The lender's feed page after ``cursor`` as rows (event columns and the dossier), its next cursor."""
    answer = client.get("/v1/feed.parquet", params={"cursor": cursor}, headers=auth)
    assert answer.status_code == 200, answer.text
    rows = pq.read_table(io.BytesIO(answer.content)).to_pylist()
    return rows, answer.headers["feed-next-cursor"]


def delivered(row: dict[str, Any], seq: int) -> dict[str, Any]:
    """A delivered feed row without its event instant."""
    return {"feed_seq": seq, "feed_event": "delivered", "withdrawal_reason": None, **row}


def records(frame: pd.DataFrame) -> list[dict[str, Any]]:
    """Dossier rows read into pandas, as the Parquet files hold them."""
    return pa.Table.from_pandas(frame, schema=DOSSIER_ROW, preserve_index=False).to_pylist()


def without_event_at(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{k: v for k, v in r.items() if k != "event_at"} for r in rows]


def test_only_changed_smes_get_new_versions_and_the_lender_receives_only_them(service: Any) -> None:
    client, engine, auth = service
    store = client.app.state.store
    first = run_publish(engine, store, frames())
    assert (first["rows"], first["new_or_changed"], first["kept"], first["current"]) == (5, 5, 0, 5)
    rows, cursor = feed_rows(client, auth, "0")
    assert without_event_at(rows) == [
        delivered(expected_row(sme_id, published_at=NOW), seq) for seq, sme_id in enumerate(SMES, start=1)
    ]
    assert cursor == "5"
    before = catalog(engine)

    summary = run_publish(engine, store, frames(CHANGED), as_of=NEXT, now=NEXT_NOW)

    parts = listed_parts(store, NEXT)
    assert summary == {
        "as_of": NEXT.isoformat(),
        "schema_version": 3,
        "model_version": MODEL,
        "published_at": NEXT_NOW.isoformat(),
        "rows": 2,
        "new_or_changed": 2,
        "unchanged": 0,
        "kept": 3,
        "current": 5,
        "unpublished": 0,
        "withheld_no_consent": {"count": 0, "examples": []},
        "files": parts,
        "manifest": f"manifests/dossiers/schema=3/as_of={NEXT.isoformat()}.json",
        "grades": {"A": 1, "B": 1, "C": 1, "D": 1, "E": 1},
    }
    # NEXT's partition holds the two new versions only, one per shard.
    new_rows = {
        sme_id: expected_row(sme_id, published_at=NEXT_NOW, bump=bump, as_of=NEXT)
        for sme_id, bump in CHANGED.items()
    }
    assert pq.read_table(part_path(store, 0, NEXT)).to_pylist() == [new_rows["SME-000002"]]
    assert pq.read_table(part_path(store, 1, NEXT)).to_pylist() == [new_rows["SME-000004"]]
    assert [e["rows"] for e in read_manifest(store, NEXT)["files"]] == [1, 1]
    with session_scope(engine) as session:
        assert session.execute(
            select(Publish.as_of_date, Publish.rows).order_by(Publish.as_of_date)
        ).all() == [
            (AS_OF, 5),
            (NEXT, 2),
        ]
        publish_id = session.scalar(select(Publish.id).where(Publish.as_of_date == NEXT))

    # The catalog: the kept versions are current through NEXT, two new rows, nothing else changed.
    kept = {"SME-000001", "SME-000003", "SME-000005"}
    after = catalog(engine)
    assert after[:5] == [
        {**row, "current_through": NEXT if row["sme_id"] in kept else AS_OF} for row in before
    ]
    sha256s = content_sha256(pq.read_table(part_path(store, 0, NEXT))) + content_sha256(
        pq.read_table(part_path(store, 1, NEXT))
    )
    keys_ = (
        content_hashes(pq.read_table(part_path(store, 0, NEXT)))[1]
        + content_hashes(pq.read_table(part_path(store, 1, NEXT)))[1]
    )
    assert [{k: v for k, v in row.items() if k != "id"} for row in after[5:]] == [
        {
            "dossier_id": f"{sme_id}:{NEXT.isoformat()}:v3:accounting+tax@24m",
            "sme_id": sme_id,
            "as_of_date": NEXT,
            "schema_version": 3,
            "model_version": MODEL,
            "sources_used": ["accounting", "tax"],
            "scope": "accounting+tax@24m",
            "history_months": 24,
            "publish_id": publish_id,
            "file_path": parts[part],
            "content_sha256": sha256s[part],
            "content_key": keys_[part],
            "current_through": NEXT,
            "grade": new_rows[sme_id]["grade"],
            "pd_12m": new_rows[sme_id]["pd_12m"],
            "feed_seq": seq,
            "published_at": NEXT_NOW,
        }
        for part, (sme_id, seq) in enumerate([("SME-000002", 6), ("SME-000004", 7)])
    ]

    # The lender's feed: the two new versions, nothing for the SMEs that did not change.
    rows, cursor = feed_rows(client, auth, cursor)
    assert without_event_at(rows) == [
        delivered(new_rows["SME-000002"], 6),
        delivered(new_rows["SME-000004"], 7),
    ]
    assert cursor == "7"
    with session_scope(engine) as session:
        logged = session.execute(
            select(FeedEvent.lender_id, FeedEvent.seq, FeedEvent.kind, FeedEvent.dossier_id).order_by(
                FeedEvent.seq
            )
        ).all()
    assert logged[5:] == [
        ("northwind", 6, "delivered", f"SME-000002:{NEXT.isoformat()}:v3:accounting+tax@24m"),
        ("northwind", 7, "delivered", f"SME-000004:{NEXT.isoformat()}:v3:accounting+tax@24m"),
    ]

    # What each date stands on: NEXT has every SME, three of them by their first date's version.
    with session_scope(engine) as session:
        assert records(read_as_of(session, store, NEXT)) == [
            new_rows.get(sme_id) or expected_row(sme_id, published_at=NOW) for sme_id in SMES
        ]
        assert records(read_as_of(session, store, AS_OF)) == [
            expected_row(sme_id, published_at=NOW) for sme_id in SMES
        ]
        assert versions_as_of(session, NEXT)["dossier_id"].tolist() == [
            f"{s}:{(NEXT if s in CHANGED else AS_OF).isoformat()}:v3:accounting+tax@24m" for s in SMES
        ]
    assert read_published(store, NEXT)["sme_id"].tolist() == ["SME-000002", "SME-000004"]

    # The same publish again writes nothing and keeps the same versions.
    files = {p: p.read_bytes() for p in Path(store.root).rglob("*") if p.is_file()}
    again = run_publish(engine, store, frames(CHANGED), as_of=NEXT, now=NEXT_NOW + dt.timedelta(hours=3))
    assert again == {**summary, "unchanged": 2, "new_or_changed": 0}
    assert catalog(engine) == after
    assert {p: p.read_bytes() for p in Path(store.root).rglob("*") if p.is_file()} == files
    assert feed_rows(client, auth, cursor) == ([], "7")


@pytest.mark.parametrize("ended", ["revoked", "expired", "narrowed"])
def test_a_kept_version_whose_consent_ended_is_withdrawn(service: Any, tmp_path: Path, ended: str) -> None:
    client, engine, auth = service
    store = client.app.state.store
    run_publish(engine, store, frames())
    with session_scope(engine) as session:
        subscribe(session, "harbor")
        give_consent(session, "C-h", "SME-000003", recipients=("harbor",))
        first = pull(
            session, store, lender_id="harbor", out_dir=tmp_path / "pulls", now=NOW + dt.timedelta(hours=1)
        )
    assert first["delivered"] == 1
    assert len(feed_rows(client, auth, "0")[0]) == 5
    between = NOW + dt.timedelta(hours=12)
    with session_scope(engine) as session:
        if ended == "revoked":
            consent.revoke(session, "C-1", at=between)
        elif ended == "expired":
            give_consent(session, "C-1", "SME-000001", expires_at=between)
        else:
            give_consent(session, "C-1", "SME-000001", sources=("accounting",), granted_at=between)

    summary = run_publish(engine, store, frames(), as_of=NEXT, now=NEXT_NOW)

    one = f"SME-000001:{AS_OF.isoformat()}:v3:accounting+tax@24m"
    assert (summary["rows"], summary["kept"], summary["withheld_no_consent"]) == (
        0,
        4,
        {"count": 1, "examples": [f"SME-000001:{NEXT.isoformat()}:v3:accounting+tax@24m"]},
    )
    # No new version of any SME; SME 1's version stands for its first date only.
    assert [row["feed_seq"] for row in catalog(engine)] == [1, 2, 3, 4, 5]
    with session_scope(engine) as session:
        assert versions_as_of(session, NEXT)["sme_id"].tolist() == SMES[1:]
    reasons = {
        "revoked": "consent_revoked",
        "expired": "consent_expired",
        "narrowed": "consent_no_longer_covers",
    }
    rows, cursor = feed_rows(client, auth, "5")
    assert [
        (r["feed_seq"], r["feed_event"], r["dossier_id"], r["withdrawal_reason"], r["grade"]) for r in rows
    ] == [(6, "withdrawn", one, reasons[ended], None)]
    # The other lender, whose consent still covers SME 3's kept version, keeps it: nothing moves.
    with session_scope(engine) as session:
        later = pull(
            session,
            store,
            lender_id="harbor",
            out_dir=tmp_path / "pulls",
            now=NEXT_NOW + dt.timedelta(hours=1),
        )
    assert (later["delivered"], later["withdrawals"], later["current"]) == (0, 0, 1)
    assert feed_rows(client, auth, cursor) == ([], "6")


# --- a version is kept only across consecutive published dates -------------------------------------

THIRD = NEXT + dt.timedelta(days=1)
THIRD_NOW = NEXT_NOW + dt.timedelta(days=1)


def frames_without(missing: set[str], bumps: dict[str, float] | None = None) -> list[pd.DataFrame]:
    """:func:`frames` without the SMEs ``missing`` (not staged on that date)."""
    return [frame[~frame["sme_id"].isin(missing)].reset_index(drop=True) for frame in frames(bumps)]


def stands_on(engine: Any, as_of: dt.date) -> list[str]:
    """The dossier ids ``as_of`` stands on (:func:`versions_as_of`)."""
    with session_scope(engine) as session:
        return versions_as_of(session, as_of)["dossier_id"].tolist()


def through(engine: Any) -> dict[str, dt.date]:
    """Each catalog row's ``current_through``, by dossier id."""
    return {row["dossier_id"]: row["current_through"] for row in catalog(engine)}


def version(sme_id: str, day: dt.date) -> str:
    return f"{sme_id}:{day.isoformat()}:v3:accounting+tax@24m"


def test_an_sme_absent_on_a_date_in_between_gets_a_new_version_when_it_returns(service: Any) -> None:
    _, engine, _ = service
    store = service[0].app.state.store
    run_publish(engine, store, frames())
    between = run_publish(engine, store, frames_without({"SME-000003"}), as_of=NEXT, now=NEXT_NOW)
    assert (between["rows"], between["kept"]) == (0, 4)
    back = run_publish(engine, store, frames(), as_of=THIRD, now=THIRD_NOW)

    assert (back["rows"], back["new_or_changed"], back["kept"]) == (1, 1, 4)
    assert stands_on(engine, NEXT) == [version(s, AS_OF) for s in SMES if s != "SME-000003"]
    assert stands_on(engine, THIRD) == [version(s, THIRD if s == "SME-000003" else AS_OF) for s in SMES]
    assert through(engine) == {
        **{version(s, AS_OF): THIRD for s in SMES if s != "SME-000003"},
        version("SME-000003", AS_OF): AS_OF,
        version("SME-000003", THIRD): THIRD,
    }


def test_an_earlier_date_published_later_ends_the_versions_it_interrupts(service: Any) -> None:
    _, engine, _ = service
    store = service[0].app.state.store
    run_publish(engine, store, frames())
    later = run_publish(engine, store, frames(), as_of=THIRD, now=NEXT_NOW)
    assert (later["rows"], later["kept"]) == (0, 5)
    assert stands_on(engine, NEXT) == [version(s, AS_OF) for s in SMES]  # what the catalog assumed

    # NEXT, published now: SME 3 had no dossier that day, SME 2 a different one.
    backfill = run_publish(
        engine, store, frames_without({"SME-000003"}, {"SME-000002": 0.004}), as_of=NEXT, now=THIRD_NOW
    )
    assert (backfill["rows"], backfill["new_or_changed"], backfill["kept"]) == (1, 1, 3)
    assert stands_on(engine, NEXT) == [
        version("SME-000001", AS_OF),
        version("SME-000002", NEXT),
        version("SME-000004", AS_OF),
        version("SME-000005", AS_OF),
    ]
    # SME 2's first version still stands for THIRD, whose content it is; SME 3's ends at AS_OF,
    # so THIRD no longer claims it until THIRD is published again.
    assert stands_on(engine, THIRD) == [version(s, AS_OF) for s in SMES if s != "SME-000003"]
    assert through(engine)[version("SME-000003", AS_OF)] == AS_OF
    assert through(engine)[version("SME-000002", AS_OF)] == THIRD

    again = run_publish(engine, store, frames(), as_of=THIRD, now=THIRD_NOW)
    assert (again["rows"], again["kept"]) == (2, 3)  # SMEs 2 and 3: not kept across NEXT
    assert stands_on(engine, THIRD) == [
        version(s, THIRD if s in {"SME-000002", "SME-000003"} else AS_OF) for s in SMES
    ]
    assert stands_on(engine, AS_OF) == [version(s, AS_OF) for s in SMES]


@pytest.mark.parametrize("rerun", ["changed", "absent"])
def test_a_rerun_that_no_longer_keeps_a_version_ends_it_at_the_date_before(service: Any, rerun: str) -> None:
    _, engine, _ = service
    store = service[0].app.state.store
    run_publish(engine, store, frames())
    run_publish(engine, store, frames(), as_of=NEXT, now=NEXT_NOW)
    assert through(engine)[version("SME-000001", AS_OF)] == NEXT

    staged = frames({"SME-000001": 0.004}) if rerun == "changed" else frames_without({"SME-000001"})
    run_publish(engine, store, staged, as_of=NEXT, now=NEXT_NOW + dt.timedelta(hours=2))

    assert through(engine)[version("SME-000001", AS_OF)] == AS_OF
    first = [version("SME-000001", NEXT)] if rerun == "changed" else []
    assert stands_on(engine, NEXT) == first + [version(s, AS_OF) for s in SMES[1:]]
    assert stands_on(engine, AS_OF) == [version(s, AS_OF) for s in SMES]
