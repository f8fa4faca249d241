"""The Delta Sharing routes over HTTP: names and listings, versions, metadata, queries, the change
data feed, signed file URLs checked at download, the profile, and every bad request.

The stock client's own test is ``test_delta_sharing_client.py``; these read the protocol's JSON
lines directly. Dossiers published by the real publish into a temporary store; both backends.
"""

from __future__ import annotations

import datetime as dt
import doctest
import io
import json
import sys
import time
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest
from fastapi.testclient import TestClient

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "warehouse"))
from test_dossier_store import NOW, expected_row, give_consent, run_publish, scored, seed

from dossier.cli import EXIT_ERROR, EXIT_OK, main
from dossier.settings import Settings, for_home
from dossier.web.app import create_app
from dossier.web.sharing import URL_LIFETIME
from warehouse import consent, keys, sharing
from warehouse.db import make_engine, session_scope
from warehouse.dossier_schema import ALL_COLUMNS
from warehouse.feed import subscribe

SHARE = "/delta-sharing/shares/northwind"
TABLE = f"{SHARE}/schemas/credit/tables/dossiers"


@pytest.fixture
def service(warehouse_url: str, tmp_path: Path) -> Any:
    """SME 1 and 3 consent to northwind, SME 2 to harbor only; all three published.

    Yields (client, engine, {lender: auth headers})."""
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
        yield client, engine, headers
    engine.dispose()


def test_the_docstring_examples_hold() -> None:
    outcome = doctest.testmod(sharing, optionflags=doctest.ELLIPSIS)
    assert (outcome.attempted > 0, outcome.failed) == (True, 0)


def lines(answer: Any) -> list[dict[str, Any]]:
    assert (answer.status_code, answer.headers["content-type"]) == (
        200,
        "application/x-ndjson; charset=utf-8",
    )
    return [json.loads(line) for line in answer.text.splitlines()]


def file_rows(client: TestClient, url: str) -> list[dict[str, Any]]:
    answer = client.get(url)
    assert answer.status_code == 200
    return pq.read_table(io.BytesIO(answer.content)).to_pylist()


def test_a_lender_sees_one_share_with_one_schema_and_one_table(service: Any) -> None:
    client, _engine, headers = service
    auth = headers["northwind"]
    share_id = sharing.table_id("northwind:share")
    table = {
        "name": "dossiers",
        "schema": "credit",
        "share": "northwind",
        "shareId": share_id,
        "id": sharing.table_id("northwind"),
    }
    assert client.get("/delta-sharing/shares", headers=auth).json() == {
        "items": [{"name": "northwind", "id": share_id}]
    }
    assert client.get(SHARE, headers=auth).json() == {"share": {"name": "northwind", "id": share_id}}
    assert client.get("/delta-sharing/shares/NorthWind", headers=auth).status_code == 200
    assert client.get(f"{SHARE}/schemas", headers=auth).json() == {
        "items": [{"name": "credit", "share": "northwind"}]
    }
    assert client.get(f"{SHARE}/schemas/credit/tables", headers=auth).json() == {"items": [table]}
    assert client.get(f"{SHARE}/all-tables", headers=auth).json() == {"items": [table]}
    assert client.get("/delta-sharing/shares", params={"maxResults": 0}, headers=auth).json() == {
        "items": [],
        "nextPageToken": "0",
    }
    assert client.get("/delta-sharing/shares", params={"pageToken": "1"}, headers=auth).json() == {
        "items": []
    }
    harbor = client.get("/delta-sharing/shares", headers=headers["harbor"]).json()
    assert [s["name"] for s in harbor["items"]] == ["harbor"]


@pytest.mark.parametrize(
    "path",
    [
        "/delta-sharing/shares/harbor",
        "/delta-sharing/shares/harbor/schemas",
        "/delta-sharing/shares/harbor/all-tables",
        "/delta-sharing/shares/harbor/schemas/credit/tables",
        "/delta-sharing/shares/harbor/schemas/credit/tables/dossiers/version",
        "/delta-sharing/shares/harbor/schemas/credit/tables/dossiers/metadata",
        "/delta-sharing/shares/harbor/schemas/credit/tables/dossiers/changes?startingVersion=0",
        f"{SHARE}/schemas/other/tables",
        f"{SHARE}/schemas/credit/tables/other/version",
    ],
)
def test_another_lenders_share_and_unknown_names_are_404(service: Any, path: str) -> None:
    client, _engine, headers = service
    answer = client.get(path, headers=headers["northwind"])
    body = answer.json()
    assert (answer.status_code, answer.headers["content-type"], body["errorCode"], body["status"]) == (
        404,
        "application/problem+json",
        "RESOURCE_DOES_NOT_EXIST",
        404,
    )
    assert body["message"] == body["detail"]
    query = client.post(
        "/delta-sharing/shares/harbor/schemas/credit/tables/dossiers/query",
        json={},
        headers=headers["northwind"],
    )
    assert query.status_code == 404


def test_every_route_needs_a_valid_key(service: Any) -> None:
    client, engine, headers = service
    routes = [
        ("GET", "/delta-sharing/shares"),
        ("GET", SHARE),
        ("GET", f"{SHARE}/schemas"),
        ("GET", f"{SHARE}/all-tables"),
        ("GET", f"{TABLE}/version"),
        ("HEAD", TABLE),
        ("GET", f"{TABLE}/metadata"),
        ("POST", f"{TABLE}/query"),
        ("GET", f"{TABLE}/changes?startingVersion=0"),
        ("GET", "/v1/sharing/profile"),
    ]
    for method, path in routes:
        assert client.request(method, path).status_code == 401, path
        unknown = client.request(method, path, headers={"Authorization": "Bearer sdk_000000000000_x"})
        assert unknown.status_code == 401, path
    with session_scope(engine) as session:
        prefix = keys.list_keys(session, "northwind", at=NOW)[0].prefix
        keys.revoke_key(session, prefix, at=dt.datetime.now(dt.UTC))
    for method, path in routes:
        assert client.request(method, path, headers=headers["northwind"]).status_code == 403, path
    assert client.get("/delta-sharing/shares", headers=headers["harbor"]).status_code == 200


def test_versions_follow_the_feed_and_a_withdrawal_makes_the_next(service: Any) -> None:
    client, engine, headers = service
    auth = headers["northwind"]
    answer = client.get(f"{TABLE}/version", headers=auth)
    assert (answer.status_code, answer.headers["delta-table-version"], answer.content) == (200, "2", b"")
    assert client.head(TABLE, headers=auth).headers["delta-table-version"] == "2"
    with session_scope(engine) as session:
        consent.revoke(session, "C-1", at=dt.datetime.now(dt.UTC))
    assert client.get(f"{TABLE}/version", headers=auth).headers["delta-table-version"] == "3"
    early = client.get(f"{TABLE}/version", params={"startingTimestamp": "2000-01-01T00:00:00Z"}, headers=auth)
    assert early.headers["delta-table-version"] == "0"


def test_metadata_describes_every_column(service: Any) -> None:
    client, _engine, headers = service
    answer = client.get(
        f"{TABLE}/metadata",
        headers={**headers["northwind"], "delta-sharing-capabilities": "responseformat=delta,parquet"},
    )
    assert (answer.headers["delta-table-version"], answer.headers["delta-sharing-capabilities"]) == (
        "2",
        "responseformat=parquet",
    )
    protocol, metadata = lines(answer)
    assert protocol == {"protocol": {"minReaderVersion": 1}}
    meta = metadata["metaData"]
    schema = json.loads(meta.pop("schemaString"))
    assert meta == {
        "id": sharing.table_id("northwind"),
        "name": "dossiers",
        "description": "The dossier versions delivered to you and still held; withdrawals are deletes.",
        "format": {"provider": "parquet"},
        "partitionColumns": [],
        "configuration": {"enableChangeDataFeed": "true"},
    }
    delta_only = client.get(
        f"{TABLE}/metadata",
        headers={
            **headers["northwind"],
            "delta-sharing-capabilities": "responseformat=delta;readerfeatures=x",
        },
    )
    assert (delta_only.status_code, delta_only.json()["errorCode"], delta_only.json()["detail"]) == (
        400,
        "INVALID_PARAMETER_VALUE",
        "delta-sharing-capabilities: responseformat=delta is not served here; "
        "this server answers in responseformat=parquet",
    )
    fields = {f["name"]: (f["type"], f["metadata"]["comment"]) for f in schema["fields"]}
    assert [f["name"] for f in schema["fields"]] == [
        "feed_seq",
        "delivered_at",
        "withdrawal_reason",
        *(c.name for c in ALL_COLUMNS),
    ]
    assert {c.name: c.description for c in ALL_COLUMNS}.items() <= {
        k: v[1] for k, v in fields.items()
    }.items()
    assert (
        fields["feed_seq"][0],
        fields["as_of_date"][0],
        fields["published_at"][0],
        fields["pd_12m"][0],
    ) == (
        "long",
        "date",
        "timestamp",
        "double",
    )
    assert fields["sources_used"][0] == {"type": "array", "elementType": "string", "containsNull": True}


def test_a_query_lists_signed_files_that_stay_the_same_until_the_table_changes(service: Any) -> None:
    client, engine, headers = service
    auth = headers["northwind"]
    first = client.post(
        f"{TABLE}/query", json={"predicateHints": ["grade = 'A'"], "limitHint": 1}, headers=auth
    )
    assert first.headers["delta-table-version"] == "2"
    protocol, _metadata, *files = lines(first)
    assert protocol == {"protocol": {"minReaderVersion": 1}}
    assert [sorted(f["file"]) for f in files] == [
        ["expirationTimestamp", "id", "partitionValues", "size", "stats", "url"]
    ]
    action = files[0]["file"]
    assert (action["partitionValues"], json.loads(action["stats"])) == ({}, {"numRecords": 2})
    again = lines(client.post(f"{TABLE}/query", headers=auth))[2]["file"]
    assert again["id"] == action["id"]
    content = client.get(action["url"])
    assert (content.status_code, len(content.content), content.headers["content-type"]) == (
        200,
        action["size"],
        "application/vnd.apache.parquet",
    )
    assert client.get(again["url"]).content == content.content
    rows = pq.read_table(io.BytesIO(content.content)).to_pylist()
    assert [
        {k: v for k, v in r.items() if k not in ("feed_seq", "delivered_at", "withdrawal_reason")}
        for r in rows
    ] == [expected_row("SME-000001", published_at=NOW), expected_row("SME-000003", published_at=NOW)]
    assert [(r["feed_seq"], r["withdrawal_reason"]) for r in rows] == [(1, None), (2, None)]

    tail = client.get(action["url"], headers={"Range": "bytes=-8"})
    assert (tail.status_code, tail.content, tail.headers["content-range"]) == (
        206,
        content.content[-8:],
        f"bytes {len(content.content) - 8}-{len(content.content) - 1}/{len(content.content)}",
    )
    head = client.head(action["url"])
    assert (head.status_code, head.headers["content-length"], head.content) == (200, str(action["size"]), b"")

    with session_scope(engine) as session:
        consent.revoke(session, "C-1", at=dt.datetime.now(dt.UTC))
    gone = client.get(action["url"])
    assert (gone.status_code, gone.json()["errorCode"]) == (410, "RESOURCE_DOES_NOT_EXIST")
    after = lines(client.post(f"{TABLE}/query", headers=auth))
    assert len(after) == 3
    assert after[2]["file"]["id"] != action["id"]
    assert [(r["feed_seq"], r["sme_id"]) for r in file_rows(client, after[2]["file"]["url"])] == [
        (2, "SME-000003")
    ]


def test_time_travel_serves_only_keys_of_rows_withdrawn_since(service: Any) -> None:
    client, engine, headers = service
    auth = headers["northwind"]
    client.get(f"{TABLE}/version", headers=auth)
    between = dt.datetime.now(dt.UTC)
    time.sleep(1.1)  # the withdrawal's instant is kept to the second
    with session_scope(engine) as session:
        consent.revoke(session, "C-1", at=dt.datetime.now(dt.UTC))
    old = client.post(f"{TABLE}/query", json={"version": 2}, headers=auth)
    assert old.headers["delta-table-version"] == "2"
    _protocol, metadata, file = lines(old)
    assert metadata["metaData"]["version"] == 2
    assert file["file"]["version"] == 2
    rows = file_rows(client, file["file"]["url"])
    assert [(r["feed_seq"], r["sme_id"], r["grade"], r["pd_12m"]) for r in rows] == [
        (1, "SME-000001", None, None),
        (2, "SME-000003", expected_row("SME-000003", published_at=NOW)["grade"], pytest.approx(0.033)),
    ]
    by_time = client.post(f"{TABLE}/query", json={"timestamp": between.isoformat()}, headers=auth)
    assert by_time.headers["delta-table-version"] == "2"
    assert lines(by_time)[2]["file"]["id"] == file["file"]["id"]
    empty = client.post(f"{TABLE}/query", json={"version": 0}, headers=auth)
    assert len(lines(empty)) == 2


def test_the_change_data_feed_lists_one_file_per_version(service: Any) -> None:
    client, engine, headers = service
    auth = headers["northwind"]
    client.get(f"{TABLE}/version", headers=auth)
    with session_scope(engine) as session:
        consent.revoke(session, "C-1", at=dt.datetime.now(dt.UTC))
    answer = client.get(f"{TABLE}/changes", params={"startingVersion": 1, "endingVersion": 9}, headers=auth)
    assert answer.headers["delta-table-version"] == "1"
    _protocol, _metadata, *actions = lines(answer)
    assert [(sorted(a), a["cdf"]["version"]) for a in actions] == [(["cdf"], 1), (["cdf"], 2), (["cdf"], 3)]
    stamps = [a["cdf"]["timestamp"] for a in actions]
    assert stamps == sorted(stamps)
    deleted = file_rows(client, actions[2]["cdf"]["url"])
    assert [
        (r["_change_type"], r["feed_seq"], r["dossier_id"], r["sme_id"], r["withdrawal_reason"], r["grade"])
        for r in deleted
    ] == [
        (
            "delete",
            1,
            expected_row("SME-000001", published_at=NOW)["dossier_id"],
            "SME-000001",
            "consent_revoked",
            None,
        )
    ]
    inserted = file_rows(client, actions[1]["cdf"]["url"])
    assert [{k: v for k, v in r.items() if k in {c.name for c in ALL_COLUMNS}} for r in inserted] == [
        expected_row("SME-000003", published_at=NOW)
    ]
    assert inserted[0]["_change_type"] == "insert"
    streamed = lines(client.post(f"{TABLE}/query", json={"startingVersion": 3}, headers=auth))
    assert [a["cdf"]["id"] for a in streamed[2:]] == [actions[2]["cdf"]["id"]]


def test_erasure_stops_every_url_that_held_the_sme(service: Any) -> None:
    client, _engine, headers = service
    auth = headers["northwind"]
    snapshot = lines(client.post(f"{TABLE}/query", headers=auth))[2]["file"]["url"]
    insert = lines(client.get(f"{TABLE}/changes", params={"startingVersion": 2}, headers=auth))[2]["cdf"][
        "url"
    ]
    assert client.get(insert).status_code == 200
    erased = client.post(
        "/v1/operator/smes/SME-000003/erase", headers={"Authorization": "Bearer operator-secret"}
    )
    assert erased.status_code == 200
    assert (client.get(snapshot).status_code, client.get(insert).status_code) == (410, 410)
    now = lines(client.post(f"{TABLE}/query", headers=auth))
    assert [r["sme_id"] for r in file_rows(client, now[2]["file"]["url"])] == ["SME-000001"]


def test_file_urls_are_signed_and_expire(service: Any) -> None:
    client, _engine, headers = service
    url = lines(client.post(f"{TABLE}/query", headers=headers["northwind"]))[2]["file"]["url"]
    assert client.get(url).status_code == 200
    path, _, query = url.partition("?")
    params = dict(p.split("=") for p in query.split("&"))
    forged = client.get(path.replace("/northwind/", "/harbor/"), params=params)
    assert (forged.status_code, forged.json()["detail"]) == (
        403,
        "the signature of this file URL is not valid",
    )
    late = int(params["expires"]) - int(URL_LIFETIME.total_seconds()) - 10
    stale = client.get(path, params={**params, "expires": str(late)})
    assert stale.status_code == 403
    bad = client.get(path, params={**params, "signature": "0" * 64})
    assert bad.status_code == 403
    assert client.get(path).status_code == 400


@pytest.mark.parametrize(
    ("method", "path", "params", "detail"),
    [
        (
            "GET",
            "metadata",
            {"version": 9},
            "version: 9 is not a version of this table (its versions are 0 to 2)",
        ),
        ("GET", "metadata", {"version": -1}, "query.version: Input should be greater than or equal to 0"),
        (
            "GET",
            "metadata",
            {"version": 1, "timestamp": "2026-11-01T00:00:00Z"},
            "version and timestamp: give at most one of them",
        ),
        (
            "POST",
            "query",
            {"version": 3},
            "version: 3 is not a version of this table (its versions are 0 to 2)",
        ),
        (
            "POST",
            "query",
            {"version": "x"},
            "version: Input should be a valid integer, unable to parse string as an integer",
        ),
        (
            "POST",
            "query",
            {"timestamp": "yesterday"},
            "timestamp: 'yesterday' is not an ISO 8601 timestamp such as 2026-11-01T00:00:00Z",
        ),
        ("POST", "query", {"timestamp": "2000-01-01T00:00:00Z"}, None),
        ("POST", "query", {"limitHint": -1}, "limitHint: Input should be greater than or equal to 0"),
        ("GET", "changes", {}, "startingVersion or startingTimestamp: give exactly one of them"),
        (
            "GET",
            "changes",
            {"startingVersion": 5},
            "startingVersion: 5 is not a version of this table (its versions are 0 to 2)",
        ),
        (
            "GET",
            "changes",
            {"startingVersion": 2, "endingVersion": 1},
            "the range ends (version 1) before it starts (version 2)",
        ),
        (
            "GET",
            "changes",
            {"startingVersion": "one"},
            "query.startingVersion: Input should be a valid integer, unable to parse string as an integer",
        ),
        (
            "GET",
            "changes",
            {"startingTimestamp": "2999-01-01T00:00:00Z"},
            "startingTimestamp: 2999-01-01T00:00:00+00:00 is after the table's latest version",
        ),
        (
            "GET",
            "version",
            {"startingTimestamp": "soon"},
            "startingTimestamp: 'soon' is not an ISO 8601 timestamp such as 2026-11-01T00:00:00Z",
        ),
    ],
)
def test_bad_versions_and_ranges_are_400_problems(
    service: Any, method: str, path: str, params: dict[str, Any], detail: str | None
) -> None:
    client, _engine, headers = service
    auth = headers["northwind"]
    if method == "POST":
        answer = client.post(f"{TABLE}/{path}", json=params, headers=auth)
    else:
        answer = client.get(f"{TABLE}/{path}", params=params, headers=auth)
    body = answer.json()
    assert (answer.status_code, answer.headers["content-type"]) == (400, "application/problem+json")
    if detail is not None:
        assert body["detail"] == detail
    else:
        assert body["detail"].startswith(
            "timestamp: 2000-01-01T00:00:00+00:00 is before the table's first version"
        )
    bad_page = client.get("/delta-sharing/shares", params={"pageToken": "x"}, headers=auth)
    assert (bad_page.status_code, bad_page.json()["detail"]) == (
        400,
        "pageToken: 'x' is not a page token this list returned",
    )


def test_the_profile_names_the_endpoint_and_the_key(service: Any) -> None:
    client, _engine, headers = service
    answer = client.get("/v1/sharing/profile", headers=headers["northwind"])
    assert answer.status_code == 200
    assert answer.headers["content-disposition"] == 'attachment; filename="northwind.share"'
    assert answer.json() == {
        "shareCredentialsVersion": 1,
        "endpoint": "http://testserver/delta-sharing",
        "bearerToken": headers["northwind"]["Authorization"].removeprefix("Bearer "),
    }
    schema = client.get("/openapi.json").json()
    assert {
        "/delta-sharing/shares",
        "/delta-sharing/shares/{share}/schemas/{schema}/tables/{table}/changes",
    } <= set(schema["paths"])


def test_the_share_profile_command_writes_a_working_profile(
    capsys: pytest.CaptureFixture[str], home: Settings, tmp_path: Path
) -> None:
    assert main(["lender", "add", "harbour-bank"]) == EXIT_OK
    first_key = capsys.readouterr().out.strip()
    out = tmp_path / "profiles" / "harbour.share"
    assert main(["lender", "share-profile", "harbour-bank", "--out", str(out)]) == EXIT_OK
    printed, err = capsys.readouterr()
    written = json.loads(out.read_text())
    assert (printed.strip(), sorted(written)) == (
        str(out),
        ["bearerToken", "endpoint", "shareCredentialsVersion"],
    )
    assert (written["shareCredentialsVersion"], written["endpoint"]) == (1, f"{home.base_url}/delta-sharing")
    assert written["bearerToken"].startswith("sdk_")
    assert written["bearerToken"] != first_key
    assert err.strip() == (
        "dossier: wrote the Delta Sharing profile of harbour-bank with its new API key (keep it secret); "
        f"read the table as {out}#harbour-bank.credit.dossiers"
    )
    assert out.stat().st_mode & 0o777 == 0o600
    with TestClient(create_app(home)) as client:
        answer = client.get(
            "/delta-sharing/shares", headers={"Authorization": f"Bearer {written['bearerToken']}"}
        )
        assert answer.json()["items"][0]["name"] == "harbour-bank"

    assert main(["lender", "share-profile", "harbour-bank", "--out", str(out), "--key", first_key]) == EXIT_OK
    capsys.readouterr()
    assert json.loads(out.read_text())["bearerToken"] == first_key
    cases = [
        (
            ["nobody", "--out", str(out)],
            "unknown lender 'nobody'; register it first: dossier lender add nobody",
        ),
        (["harbour-bank", "--out", str(out), "--key", "sdk_000000000000_x"], "API key not known"),
        (["harbour-bank", "--out", str(tmp_path)], "is a folder; name a file to write"),
    ]
    for argv, message in cases:
        assert main(["lender", "share-profile", *argv]) == EXIT_ERROR
        assert message in capsys.readouterr().err


def test_a_listing_is_made_again_when_the_log_changes_under_it() -> None:
    from dossier.web.sharing import SharingProblem, _Changed, _listing

    attempts: list[int] = []

    def changing_once() -> list[dict[str, Any]]:
        attempts.append(1)
        if len(attempts) == 1:
            raise _Changed("s0-1-" + "0" * 20)
        return [{"file": {"id": "x"}}]

    assert (_listing(changing_once), len(attempts)) == ([{"file": {"id": "x"}}], 2)

    def always_changing() -> list[dict[str, Any]]:
        raise _Changed("s0-1-" + "0" * 20)

    with pytest.raises(SharingProblem) as raised:
        _listing(always_changing)
    assert (raised.value.status, raised.value.code) == (503, "TEMPORARILY_UNAVAILABLE")
