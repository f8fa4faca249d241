"""The lender feed over HTTP: pages of deliveries and tombstones from the feed log, stable cursors,
the Parquet page, one dossier, bad cursors, and one delivery state shared with the file pull.

Dossiers are published by the real publish into a temporary store; both backends.
"""

from __future__ import annotations

import datetime as dt
import io
import json
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest
import uvicorn
from fastapi.testclient import TestClient
from sqlalchemy import select

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "warehouse"))
from test_dossier_store import NOW, expected_row, give_consent, run_publish, scored, seed

from dossier.cli import EXIT_ERROR, EXIT_OK, main
from dossier.settings import for_home
from dossier.web.app import create_app
from warehouse import consent, keys
from warehouse.db import make_engine, session_scope
from warehouse.dossier_schema import ALL_COLUMNS
from warehouse.feed import pull, subscribe
from warehouse.models import Delivery, DossierVersion, FeedEvent


@pytest.fixture
def service(warehouse_url: str, tmp_path: Path) -> Any:
    """SME 1 and 3 consent to northwind, SME 2 to harbor only; all three published.

    Yields (client, engine, {lender: auth headers}, settings)."""
    settings = for_home(tmp_path / "var", warehouse_url=warehouse_url, operator_token="operator-secret")
    engine = make_engine(warehouse_url)
    seed(engine)
    headers = {}
    with session_scope(engine) as session:
        give_consent(session, "C-1", "SME-000001")
        give_consent(session, "C-2", "SME-000002", recipients=("harbor",))
        give_consent(session, "C-3", "SME-000003", recipients=("northwind", "harbor"))
        for lender_id in ("northwind", "harbor"):
            subscribe(session, lender_id)
            token, _ = keys.issue_key(session, lender_id, at=NOW)
            headers[lender_id] = {"Authorization": f"Bearer {token}"}
    app = create_app(settings)
    run_publish(engine, app.state.store, [scored(["SME-000001", "SME-000002"]), scored(["SME-000003"])])
    with TestClient(app, raise_server_exceptions=False) as client:
        yield client, engine, headers, settings
    engine.dispose()


def dossier_id(engine: Any, sme_id: str) -> str:
    with session_scope(engine) as session:
        return session.scalars(select(DossierVersion.dossier_id).where(DossierVersion.sme_id == sme_id)).one()


def parquet_page(client: TestClient, auth: dict[str, str], **params: Any) -> tuple[list[dict[str, Any]], Any]:
    answer = client.get("/v1/feed.parquet", params=params, headers=auth)
    assert (answer.status_code, answer.headers["content-type"]) == (200, "application/vnd.apache.parquet")
    table = pq.read_table(io.BytesIO(answer.content))
    return table.to_pylist(), answer


def test_the_feed_pages_deliveries_in_order_with_stable_cursors(service: Any) -> None:
    client, engine, headers, _settings = service
    auth = headers["northwind"]
    first = client.get("/v1/feed", params={"limit": 1}, headers=auth)
    assert first.status_code == 200
    body = first.json()
    one, three = dossier_id(engine, "SME-000001"), dossier_id(engine, "SME-000003")
    assert [(e["seq"], e["event"], e["dossier_id"], e["reason"]) for e in body["events"]] == [
        (1, "delivered", one, None)
    ]
    assert (body["next_cursor"], body["has_more"]) == ("1", True)
    second = client.get("/v1/feed", params={"cursor": "1", "limit": 1}, headers=auth).json()
    assert [(e["seq"], e["dossier_id"]) for e in second["events"]] == [(2, three)]
    assert (second["next_cursor"], second["has_more"]) == ("2", False)
    assert client.get("/v1/feed", params={"limit": 1}, headers=auth).json() == body
    assert client.get("/v1/feed", params={"cursor": "1", "limit": 1}, headers=auth).json() == second
    end = client.get("/v1/feed", params={"cursor": "2"}, headers=auth).json()
    assert end == {"events": [], "next_cursor": "2", "has_more": False}
    row = body["events"][0]["dossier"]
    assert (row["dossier_id"], row["sme_id"], row["as_of_date"]) == (one, "SME-000001", "2026-11-01")

    harbor = client.get("/v1/feed", headers=headers["harbor"]).json()
    assert [(e["seq"], e["sme_id"]) for e in harbor["events"]] == [(1, "SME-000002"), (2, "SME-000003")]
    with session_scope(engine) as session:
        held = session.execute(select(Delivery.lender_id, Delivery.dossier_version_id)).all()
    assert len(held) == 4


def test_the_parquet_page_holds_the_delivered_rows_as_published(service: Any) -> None:
    client, _engine, headers, _settings = service
    rows, answer = parquet_page(client, headers["northwind"])
    assert (answer.headers["feed-next-cursor"], answer.headers["feed-has-more"]) == ("2", "false")
    event_columns = ("feed_seq", "feed_event", "event_at", "withdrawal_reason")
    assert [{k: r[k] for k in event_columns[:2] + event_columns[3:]} for r in rows] == [
        {"feed_seq": 1, "feed_event": "delivered", "withdrawal_reason": None},
        {"feed_seq": 2, "feed_event": "delivered", "withdrawal_reason": None},
    ]
    assert [{k: v for k, v in r.items() if k not in event_columns} for r in rows] == [
        expected_row("SME-000001", published_at=NOW),
        expected_row("SME-000003", published_at=NOW),
    ]
    schema = pq.read_schema(io.BytesIO(answer.content))
    described = {f.name: f.metadata[b"description"].decode() for f in schema}
    assert {c.name: c.description for c in ALL_COLUMNS}.items() <= described.items()
    assert set(described) == {*event_columns, *(c.name for c in ALL_COLUMNS)}
    assert (schema.metadata[b"next_cursor"], schema.metadata[b"dossier_schema_version"]) == (b"2", b"3")
    again, _ = parquet_page(client, headers["northwind"])
    assert again == rows


def test_a_revocation_appears_as_a_tombstone_and_the_row_leaves_every_page(service: Any) -> None:
    client, engine, headers, _settings = service
    auth = headers["northwind"]
    assert len(client.get("/v1/feed", headers=auth).json()["events"]) == 2
    one, three = dossier_id(engine, "SME-000001"), dossier_id(engine, "SME-000003")
    assert client.get(f"/v1/dossiers/{one}", headers=auth).json()["sme_id"] == "SME-000001"
    revoked_at = dt.datetime.now(dt.UTC).replace(microsecond=0)
    with session_scope(engine) as session:
        consent.revoke(session, "C-1", at=revoked_at)
    gone = client.get(f"/v1/dossiers/{one}", headers=auth)
    assert (gone.status_code, gone.json()["detail"]) == (404, f"you hold no dossier {one!r}")
    after = client.get("/v1/feed", params={"cursor": "2"}, headers=auth).json()
    assert [(e["seq"], e["event"], e["dossier_id"], e["reason"], e["dossier"]) for e in after["events"]] == [
        (3, "withdrawn", one, "consent_revoked", None)
    ]
    assert dt.datetime.fromisoformat(after["events"][0]["occurred_at"]) == revoked_at
    replay = client.get("/v1/feed", headers=auth).json()["events"]
    assert [(e["seq"], e["event"], e["dossier"] is None) for e in replay] == [
        (1, "delivered", True),
        (2, "delivered", False),
        (3, "withdrawn", True),
    ]
    assert client.get(f"/v1/dossiers/{three}", headers=auth).json()["dossier_id"] == three
    rows, _ = parquet_page(client, auth, cursor="2")
    assert [
        (r["feed_seq"], r["feed_event"], r["dossier_id"], r["withdrawal_reason"], r["grade"]) for r in rows
    ] == [(3, "withdrawn", one, "consent_revoked", None)]


def test_a_kept_page_is_never_served_after_a_withdrawal_or_an_erasure(service: Any) -> None:
    """Pages are kept encoded (``PageCache``) under the feed's state; a revocation and an erasure
    change that state, so the page read next is built again and lacks the rows the law took away."""
    client, engine, headers, _settings = service
    auth = headers["northwind"]
    one, three = dossier_id(engine, "SME-000001"), dossier_id(engine, "SME-000003")

    def page(path: str = "/v1/feed") -> bytes:
        answer = client.get(path, params={"limit": 10}, headers=auth)
        assert answer.status_code == 200
        return answer.content

    def shape(body: bytes) -> list[tuple[int, str, str, str | None, bool]]:
        return [
            (e["seq"], e["event"], e["dossier_id"], e["reason"], e["dossier"] is not None)
            for e in json.loads(body)["events"]
        ]

    page()  # the first read syncs the feed: that page is not kept
    held = page()
    assert page() == held
    pages = client.app.state.feed_pages
    assert len(pages) == 1
    assert shape(held) == [(1, "delivered", one, None, True), (2, "delivered", three, None, True)]
    parquet = page("/v1/feed.parquet")
    assert page("/v1/feed.parquet") == parquet
    assert len(pages) == 2

    with session_scope(engine) as session:
        consent.revoke(session, "C-1", at=dt.datetime.now(dt.UTC))
    revoked = page()
    assert shape(revoked) == [
        (1, "delivered", one, None, False),
        (2, "delivered", three, None, True),
        (3, "withdrawn", one, "consent_revoked", False),
    ]
    assert page() == revoked

    erased = client.post(
        "/v1/operator/smes/SME-000003/erase", headers={"Authorization": "Bearer operator-secret"}
    )
    assert erased.status_code == 200
    assert shape(page()) == [
        (1, "delivered", one, None, False),
        (2, "delivered", three, None, False),
        (3, "withdrawn", one, "consent_revoked", False),
        (4, "withdrawn", three, "erased", False),
    ]
    rows = pq.read_table(io.BytesIO(page("/v1/feed.parquet"))).to_pylist()
    assert [(r["feed_seq"], r["feed_event"], r["dossier_id"], r["grade"]) for r in rows] == [
        (1, "delivered", one, None),
        (2, "delivered", three, None),
        (3, "withdrawn", one, None),
        (4, "withdrawn", three, None),
    ]


def test_erasure_empties_the_rows_the_feed_log_kept(service: Any) -> None:
    client, engine, headers, _settings = service
    auth = headers["northwind"]
    client.get("/v1/feed", headers=auth)
    erased = client.post(
        "/v1/operator/smes/SME-000003/erase", headers={"Authorization": "Bearer operator-secret"}
    )
    assert erased.status_code == 200
    with session_scope(engine) as session:
        kept = session.execute(
            select(FeedEvent.lender_id, FeedEvent.seq, FeedEvent.dossier_json.is_not(None)).where(
                FeedEvent.sme_id == "SME-000003"
            )
        ).all()
    assert sorted(tuple(k) for k in kept) == [("northwind", 2, False)]
    events = client.get("/v1/feed", params={"cursor": "2"}, headers=auth).json()["events"]
    assert [(e["seq"], e["event"], e["sme_id"], e["reason"]) for e in events] == [
        (3, "withdrawn", "SME-000003", "erased")
    ]


def test_the_file_pull_and_the_api_share_one_delivery_state_and_one_log(service: Any, tmp_path: Path) -> None:
    client, engine, headers, _settings = service
    app_store = client.app.state.store
    with session_scope(engine) as session:
        summary = pull(
            session, app_store, lender_id="harbor", out_dir=tmp_path / "inbox", now=dt.datetime.now(dt.UTC)
        )
    assert summary["delivered"] == 2
    page = client.get("/v1/feed", headers=headers["harbor"]).json()
    assert [(e["seq"], e["event"], e["sme_id"]) for e in page["events"]] == [
        (1, "delivered", "SME-000002"),
        (2, "delivered", "SME-000003"),
    ]
    with session_scope(engine) as session:
        again = pull(
            session, app_store, lender_id="harbor", out_dir=tmp_path / "inbox", now=dt.datetime.now(dt.UTC)
        )
    assert again["delivered"] == 0


@pytest.mark.parametrize(
    ("params", "detail"),
    [
        ({"cursor": "abc"}, "cursor: 'abc' is not a cursor this feed returned (expected a whole number)"),
        ({"cursor": "-1"}, "cursor: '-1' is not a cursor this feed returned (expected a whole number)"),
        ({"cursor": "9"}, "cursor: 9 is beyond the end of this feed (its newest event is 2)"),
        ({"limit": "0"}, "limit: Input should be greater than or equal to 1"),
        ({"limit": "1001"}, "limit: Input should be less than or equal to 1000"),
        ({"limit": "many"}, "limit: Input should be a valid integer, unable to parse string as an integer"),
    ],
)
def test_bad_cursors_and_limits_are_400_naming_the_field(
    service: Any, params: dict[str, str], detail: str
) -> None:
    client, _engine, headers, _settings = service
    for route in ("/v1/feed", "/v1/feed.parquet"):
        answer = client.get(route, params=params, headers=headers["northwind"])
        assert (answer.status_code, answer.headers["content-type"], answer.json()["detail"]) == (
            400,
            "application/problem+json",
            f"query.{detail}" if detail.startswith("limit") else detail,
        )


def test_feed_routes_need_a_key_and_show_no_other_lenders_dossier(service: Any) -> None:
    client, engine, headers, _settings = service
    for route in ("/v1/feed", "/v1/feed.parquet", "/v1/dossiers/x"):
        assert client.get(route).status_code == 401
    two = dossier_id(engine, "SME-000002")
    client.get("/v1/feed", headers=headers["harbor"])
    assert client.get(f"/v1/dossiers/{two}", headers=headers["harbor"]).status_code == 200
    assert client.get(f"/v1/dossiers/{two}", headers=headers["northwind"]).status_code == 404


@pytest.fixture
def served(service: Any) -> Any:
    """The same service over real HTTP on a free loopback port; yields (base url, engine, headers)."""
    client, engine, headers, _settings = service
    config = uvicorn.Config(client.app, host="127.0.0.1", port=0, log_level="warning")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    for _ in range(200):
        if server.started:
            break
        time.sleep(0.05)
    port = server.servers[0].sockets[0].getsockname()[1]
    yield f"http://127.0.0.1:{port}", engine, headers
    server.should_exit = True
    thread.join(timeout=10)


def test_lender_pull_over_the_api_is_incremental_with_its_cursor_in_a_state_file(
    served: Any, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    url, engine, headers = served
    key = headers["northwind"]["Authorization"].removeprefix("Bearer ")
    inbox = tmp_path / "inbox"
    argv = ["lender", "pull", "--api", "--api-url", url, "--api-key", key, "--out", str(inbox)]
    assert main(argv) == EXIT_OK
    first = json.loads(capsys.readouterr().out)
    page = inbox / "northwind-feed-00000001-00000002.parquet"
    assert first == {
        "lender_id": "northwind",
        "api_url": url,
        "cursor_from": "",
        "cursor_to": "2",
        "delivered": 2,
        "withdrawals": 0,
        "files": [str(page)],
    }
    assert json.loads((inbox / ".northwind-feed-cursor.json").read_text()) == {"api_url": url, "cursor": "2"}
    with session_scope(engine) as session:
        logged = session.scalars(select(FeedEvent.seq).where(FeedEvent.lender_id == "northwind")).all()
    assert sorted(logged) == [1, 2]
    rows = pq.read_table(page).to_pylist()
    assert [r["sme_id"] for r in rows] == ["SME-000001", "SME-000003"]

    assert main(argv) == EXIT_OK
    out, err = capsys.readouterr()
    assert (json.loads(out)["files"], err.strip()) == (
        [],
        "dossier: nothing new for northwind since cursor 2",
    )

    with session_scope(engine) as session:
        consent.revoke(session, "C-1", at=dt.datetime.now(dt.UTC))
    assert main(argv) == EXIT_OK
    third = json.loads(capsys.readouterr().out)
    assert (third["cursor_from"], third["cursor_to"], third["withdrawals"]) == ("2", "3", 1)
    tombstone = pq.read_table(inbox / "northwind-feed-00000003-00000003.parquet").to_pylist()
    assert [(r["feed_event"], r["sme_id"], r["withdrawal_reason"]) for r in tombstone] == [
        ("withdrawn", "SME-000001", "consent_revoked")
    ]
    assert sorted(p.name for p in inbox.iterdir()) == [
        ".northwind-feed-cursor.json",
        "northwind-feed-00000001-00000002.parquet",
        "northwind-feed-00000003-00000003.parquet",
    ]


def test_lender_pull_over_the_api_answers_bad_keys_and_urls_in_one_line(
    served: Any, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    url, _engine, _headers = served
    out = str(tmp_path / "inbox")
    cases = [
        (
            ["--api-url", url, "--api-key", "sdk_000000000000_x"],
            f"dossier: error: the lender API at {url}/v1/lender answered 401: API key not known; "
            "check --api-key or DOSSIER_LENDER_API_KEY",
        ),
        (
            ["--api-url", "http://127.0.0.1:9", "--api-key", "k"],
            "dossier: error: cannot reach the lender API at http://127.0.0.1:9/v1/lender (ConnectionError); "
            "check --api-url or DOSSIER_LENDER_API_URL and that the service is up",
        ),
        (
            ["--api-url", url, "--api-key", "k", "--lender", "northwind"],
            "dossier: error: --lender and --subscription are for a local pull; over the API the key names "
            "the lender and every active subscription feeds one feed",
        ),
    ]
    for extra, line in cases:
        assert main(["lender", "pull", "--api", "--out", out, *extra]) == EXIT_ERROR
        assert capsys.readouterr().err.strip() == line


def test_a_page_body_is_the_feed_page_model_with_values_json_cannot_carry_as_null() -> None:
    from dossier.web.lender import FeedPage
    from warehouse import events

    at = dt.datetime(2026, 11, 2, 9, 30, tzinfo=dt.UTC)
    kept = events.row_json({"dossier_id": 'SME-1:"q"', "pd_12m": float("nan"), "name": "NaN Ltd", "n": 2})
    rows = [
        (4, "delivered", 'SME-1:"q"', "SME-1", at, None, kept, None),
        (5, "withdrawn", "SME-2:x", "SME-2", at + dt.timedelta(seconds=1), "consent_revoked", None, None),
        (
            6,
            "offer_lapsed",
            "SME-2:x",
            "SME-2",
            at + dt.timedelta(seconds=1),
            "version_withdrawn",
            None,
            '{"offer_id": "off_1"}',
        ),
    ]
    body = json.loads(events.page_json(rows, next_cursor="5", has_more=False))
    assert body == {
        "events": [
            {
                "seq": 4,
                "event": "delivered",
                "dossier_id": 'SME-1:"q"',
                "sme_id": "SME-1",
                "occurred_at": "2026-11-02T09:30:00Z",
                "reason": None,
                "dossier": {"dossier_id": 'SME-1:"q"', "pd_12m": None, "name": "NaN Ltd", "n": 2},
                "offer": None,
            },
            {
                "seq": 5,
                "event": "withdrawn",
                "dossier_id": "SME-2:x",
                "sme_id": "SME-2",
                "occurred_at": "2026-11-02T09:30:01Z",
                "reason": "consent_revoked",
                "dossier": None,
                "offer": None,
            },
            {
                "seq": 6,
                "event": "offer_lapsed",
                "dossier_id": "SME-2:x",
                "sme_id": "SME-2",
                "occurred_at": "2026-11-02T09:30:01Z",
                "reason": "version_withdrawn",
                "dossier": None,
                "offer": {"offer_id": "off_1"},
            },
        ],
        "next_cursor": "5",
        "has_more": False,
    }
    assert FeedPage.model_validate(body).model_dump(mode="json") == body


def test_a_consent_change_syncs_the_feed_of_a_lender_reading_it_before_its_next_read(
    service: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    from dossier.settings import override

    client, engine, headers, settings = service
    assert len(client.get("/v1/feed", headers=headers["northwind"]).json()["events"]) == 2

    def logged() -> list[tuple[str, int, str, str | None]]:
        with session_scope(engine) as session:
            rows = session.execute(
                select(FeedEvent.lender_id, FeedEvent.seq, FeedEvent.kind, FeedEvent.reason).order_by(
                    FeedEvent.lender_id, FeedEvent.seq
                )
            ).all()
        return [tuple(row) for row in rows]

    with override(settings):
        assert main(["consent", "revoke", "--consent", "C-3"]) == EXIT_OK
    capsys.readouterr()
    # northwind reads its feed: its tombstone is already logged; harbor never read: left to its pulls
    assert logged() == [
        ("northwind", 1, "delivered", None),
        ("northwind", 2, "delivered", None),
        ("northwind", 3, "withdrawn", "consent_revoked"),
    ]
    events = client.get("/v1/feed", params={"cursor": "2"}, headers=headers["northwind"]).json()["events"]
    assert [(e["seq"], e["event"], e["sme_id"]) for e in events] == [(3, "withdrawn", "SME-000003")]


def test_the_page_cache_keeps_at_most_its_bound_dropping_the_least_recently_read() -> None:
    from dossier.web.lender import PageCache

    pages = PageCache(max_bytes=10)
    pages.put(("a",), b"1234", {"h": "a"})
    pages.put(("b",), b"1234", {"h": "b"})
    assert pages.get(("a",)) == (b"1234", {"h": "a"})  # now a was read after b
    pages.put(("c",), b"1234", {"h": "c"})
    assert (pages.get(("a",)), pages.get(("b",)), pages.get(("c",))) == (
        (b"1234", {"h": "a"}),
        None,
        (b"1234", {"h": "c"}),
    )
    pages.put(("huge",), b"x" * 11, {})
    assert (len(pages), pages.get(("huge",))) == (2, None)


def test_a_page_is_sent_gzip_compressed_to_a_client_that_accepts_it(service: Any) -> None:
    import doctest
    import gzip

    from dossier.web import lender

    assert doctest.testmod(lender).failed == 0
    client, _engine, headers, _settings = service
    auth = headers["northwind"]
    client.get("/v1/feed", params={"limit": 10}, headers=auth)  # syncs the feed: not kept

    def raw(accept: str) -> tuple[bytes, dict[str, str]]:
        with client.stream(
            "GET", "/v1/feed", params={"limit": 10}, headers={**auth, "Accept-Encoding": accept}
        ) as answer:
            assert answer.status_code == 200
            return b"".join(answer.iter_raw()), dict(answer.headers)

    plain, plain_headers = raw("identity")
    packed, packed_headers = raw("br;q=1, gzip;q=0.5")
    refused, refused_headers = raw("gzip;q=0, *")
    assert [e["seq"] for e in json.loads(plain)["events"]] == [1, 2]
    assert (gzip.decompress(packed), refused) == (plain, plain)
    assert [
        (h.get("content-encoding"), h["vary"], h["content-length"], h["feed-next-cursor"])
        for h in (plain_headers, packed_headers, refused_headers)
    ] == [
        (None, "Accept-Encoding", str(len(plain)), "2"),
        ("gzip", "Accept-Encoding", str(len(packed)), "2"),
        (None, "Accept-Encoding", str(len(plain)), "2"),
    ]
    pages = client.app.state.feed_pages
    assert len(pages) == 2  # the page and its gzip variant
    assert raw("gzip")[0] == packed  # the kept variant: the same bytes again
    assert len(pages) == 2
    # the client's transparent decoding (requests, httpx, pandas) gives the page itself
    assert client.get("/v1/feed", params={"limit": 10}, headers=auth).content == plain
