"""Lenders and their API keys: registration, hashing, rotation with grace, revocation, the 401/403
answers of the lender routes, and the ``dossier lender`` key commands; both backends."""

from __future__ import annotations

import datetime as dt
import doctest
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select

from dossier.cli import EXIT_ERROR, EXIT_OK, main
from dossier.settings import Settings, for_home
from dossier.web.app import create_app
from warehouse import keys
from warehouse.db import make_engine, session_scope
from warehouse.errors import InputError
from warehouse.models import Lender, LenderKey

T0 = dt.datetime(2026, 11, 2, 9, 0, tzinfo=dt.UTC)


def test_the_docstring_examples_hold() -> None:
    outcome = doctest.testmod(keys)
    assert (outcome.attempted > 0, outcome.failed) == (True, 0)


def test_a_lender_is_registered_with_one_key_stored_only_as_its_hash(warehouse_url: str) -> None:
    engine = make_engine(warehouse_url)
    with session_scope(engine) as session:
        token, _lender = keys.add_lender(session, "northwind", name="Northwind Capital", at=T0)
    with session_scope(engine) as session:
        (row,) = session.scalars(select(LenderKey)).all()
        stored = {c.key: getattr(row, c.key) for c in LenderKey.__table__.columns}
        assert session.get(Lender, "northwind").name == "Northwind Capital"
        assert keys.authenticate(session, token, at=T0).lender_id == "northwind"
    engine.dispose()
    prefix = token.split("_")[1]
    assert stored == {
        "id": row.id,
        "lender_id": "northwind",
        "prefix": prefix,
        "key_sha256": keys.hash_token(token),
        "created_at": T0,
        "expires_at": None,
        "revoked_at": None,
    }
    assert token not in str(stored)


@pytest.mark.parametrize(
    ("lender_id", "message"),
    [
        ("Northwind", "is not valid"),
        ("../etc", "is not valid"),
        ("n", "is not valid"),
        ("northwind", "already registered"),
    ],
)
def test_bad_or_taken_lender_ids_are_refused(warehouse_url: str, lender_id: str, message: str) -> None:
    engine = make_engine(warehouse_url)
    with session_scope(engine) as session:
        keys.add_lender(session, "northwind", at=T0)
    with session_scope(engine) as session, pytest.raises(InputError, match=message):
        keys.add_lender(session, lender_id, at=T0)
    with session_scope(engine) as session:
        assert session.scalars(select(Lender.lender_id)).all() == ["northwind"]
    engine.dispose()


def test_rotation_keeps_the_old_key_for_its_grace_period_and_revocation_ends_a_key(
    warehouse_url: str,
) -> None:
    engine = make_engine(warehouse_url)
    grace = dt.timedelta(hours=2)
    with session_scope(engine) as session:
        old, _lender = keys.add_lender(session, "northwind", at=T0)
        new, fresh = keys.rotate_key(session, "northwind", at=T0 + dt.timedelta(hours=1), grace=grace)
    during, after = T0 + dt.timedelta(hours=2), T0 + dt.timedelta(hours=3)
    with session_scope(engine) as session:
        assert [(k.status, k.expires_at) for k in keys.list_keys(session, "northwind", at=during)] == [
            ("expiring", T0 + dt.timedelta(hours=3)),
            ("active", None),
        ]
        assert keys.authenticate(session, old, at=during).prefix == old.split("_")[1]
        with pytest.raises(keys.KeyNotValid, match="expired after its rotation"):
            keys.authenticate(session, old, at=after)
        assert keys.authenticate(session, new, at=after).prefix == fresh.prefix
        keys.revoke_key(session, fresh.prefix, at=after)
        with pytest.raises(keys.KeyNotValid, match="was revoked"):
            keys.authenticate(session, new, at=after)
        with pytest.raises(keys.UnknownKey):
            keys.authenticate(session, new + "x", at=after)
        assert [k.status for k in keys.list_keys(session, "northwind", at=after)] == ["expired", "revoked"]
        with pytest.raises(InputError, match="grace period"):
            keys.rotate_key(session, "northwind", at=after, grace=dt.timedelta(days=31))
    engine.dispose()


@pytest.fixture
def service(warehouse_url: str, tmp_path: Path) -> Any:
    """The web service with two lenders; yields (client, {lender: token})."""
    engine = make_engine(warehouse_url)
    tokens = {}
    with session_scope(engine) as session:
        for lender_id in ("northwind", "kestrel"):
            tokens[lender_id], _ = keys.add_lender(session, lender_id, at=dt.datetime.now(dt.UTC))
    engine.dispose()
    settings = for_home(tmp_path / "var", warehouse_url=warehouse_url, operator_token="operator-secret")
    with TestClient(create_app(settings), raise_server_exceptions=False) as client:
        yield client, tokens


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def test_lender_routes_answer_401_without_a_known_key_and_403_for_a_revoked_one(service: Any) -> None:
    client, tokens = service
    missing = client.get("/v1/lender")
    unknown = client.get("/v1/lender", headers=bearer("sdk_000000000000_nope"))
    operator = client.get("/v1/lender", headers=bearer("operator-secret"))
    assert [
        (r.status_code, r.headers["content-type"], r.headers.get("www-authenticate"))
        for r in (missing, unknown, operator)
    ] == [(401, "application/problem+json", "Bearer")] * 3
    assert (missing.json()["detail"], unknown.json()["detail"]) == ("API key required", "API key not known")
    me = client.get("/v1/lender", headers=bearer(tokens["northwind"]))
    prefix = tokens["northwind"].split("_")[1]
    assert (me.status_code, me.json()) == (
        200,
        {"lender_id": "northwind", "name": "northwind", "key_prefix": prefix},
    )
    revoked = client.post(f"/v1/keys/{prefix}/revoke", headers=bearer(tokens["northwind"]))
    assert (revoked.status_code, revoked.json()["status"]) == (200, "revoked")
    after = client.get("/v1/lender", headers=bearer(tokens["northwind"]))
    assert (after.status_code, after.json()["detail"]) == (403, f"API key {prefix} was revoked")
    assert client.get("/v1/lender", headers=bearer(tokens["kestrel"])).json()["lender_id"] == "kestrel"


def test_a_lender_sees_and_revokes_only_its_own_keys(service: Any) -> None:
    client, tokens = service
    other = tokens["kestrel"].split("_")[1]
    refused = client.post(f"/v1/keys/{other}/revoke", headers=bearer(tokens["northwind"]))
    assert (refused.status_code, refused.json()["detail"]) == (
        403,
        f"key {other!r} is not a key of lender 'northwind'",
    )
    missing = client.post("/v1/keys/ffffffffffff/revoke", headers=bearer(tokens["northwind"]))
    assert missing.status_code == 404
    listed = client.get("/v1/keys", headers=bearer(tokens["northwind"])).json()
    assert [(k["prefix"], k["status"]) for k in listed] == [(tokens["northwind"].split("_")[1], "active")]
    assert client.get("/v1/lender", headers=bearer(tokens["kestrel"])).status_code == 200


def test_rotation_over_the_api_returns_a_working_key_once(service: Any) -> None:
    client, tokens = service
    old = tokens["northwind"]
    rotated = client.post("/v1/keys/rotate", json={"grace_hours": 0}, headers=bearer(old))
    assert rotated.status_code == 201
    body = rotated.json()
    assert body["key"].startswith(f"sdk_{body['prefix']}_")
    assert client.get("/v1/lender", headers=bearer(old)).status_code == 403
    listed = client.get("/v1/keys", headers=bearer(body["key"])).json()
    assert [k["status"] for k in listed] == ["expired", "active"]
    assert all("key" not in k for k in listed)
    too_long = client.post("/v1/keys/rotate", json={"grace_hours": 10_000}, headers=bearer(body["key"]))
    assert (too_long.status_code, too_long.json()["detail"].split(":")[0]) == (400, "grace_hours")


def test_the_key_commands(capsys: pytest.CaptureFixture[str], home: Settings) -> None:
    assert main(["lender", "add", "harbour-bank", "--name", "Harbour Bank"]) == EXIT_OK
    out, err = capsys.readouterr()
    token = out.strip()
    assert token.startswith("sdk_")
    assert "shown only this once" in err
    prefix = token.split("_")[1]
    assert main(["lender", "add", "harbour-bank"]) == EXIT_ERROR
    assert "already registered" in capsys.readouterr().err
    assert main(["lender", "rotate-key", "--lender", "harbour-bank", "--grace-hours", "1"]) == EXIT_OK
    second = capsys.readouterr().out.strip()
    assert second.startswith("sdk_")
    assert second != token
    assert main(["lender", "revoke-key", "--prefix", prefix]) == EXIT_OK
    assert f"key {prefix} of harbour-bank: revoked" in capsys.readouterr().out
    assert main(["lender", "keys", "--lender", "harbour-bank"]) == EXIT_OK
    listing = capsys.readouterr().out
    assert prefix in listing
    assert "revoked" in listing
    assert "active" in listing
    assert token not in listing
    assert second not in listing
    assert main(["lender", "rotate-key", "--lender", "harbour-bank", "--grace-hours", "nan"]) == EXIT_ERROR
    assert "between 0 and 720" in capsys.readouterr().err
    assert main(["lender", "keys", "--lender", "nobody"]) == EXIT_ERROR
    assert "unknown lender 'nobody'" in capsys.readouterr().err


def test_the_openapi_schema_lists_every_lender_route_with_bearer_auth(service: Any) -> None:
    client, _tokens = service
    schema = client.get("/openapi.json").json()
    lender_paths = {p for p in schema["paths"] if p.startswith("/v1/") and not p.startswith("/v1/operator")}
    assert lender_paths == {
        "/v1/lender",
        "/v1/keys",
        "/v1/keys/rotate",
        "/v1/keys/{prefix}/revoke",
        "/v1/subscriptions",
        "/v1/subscriptions/{name}",
        "/v1/subscriptions/{name}/pause",
        "/v1/subscriptions/{name}/resume",
        "/v1/feed",
        "/v1/feed.parquet",
        "/v1/dossiers/{dossier_id}",
        "/v1/links",
        "/v1/outcomes",
        "/v1/offers",
        "/v1/offers/{offer_id}",
        "/v1/offers/{offer_id}/withdraw",
        "/v1/sharing/profile",
        "/v1/webhooks",
        "/v1/webhooks/{endpoint_id}",
        "/v1/webhooks/{endpoint_id}/deliveries",
        "/v1/webhooks/{endpoint_id}/deliveries/{message_id}",
        "/v1/webhooks/{endpoint_id}/deliveries/{message_id}/replay",
        "/v1/webhooks/{endpoint_id}/replay",
        "/v1/webhooks/{endpoint_id}/rotate-secret",
        "/v1/webhooks/{endpoint_id}/test",
    }
    assert schema["info"]["version"] == "1"
    for path in lender_paths:
        for operation in schema["paths"][path].values():
            assert operation["security"] == [{"HTTPBearer": []}], path


def _lender_operations(client: TestClient) -> list[tuple[str, str]]:
    """Every (method, path) of the OpenAPI document that takes a lender key (not the operator's)."""
    schema = client.get("/openapi.json").json()
    return [
        (method.upper(), path)
        for path, operations in schema["paths"].items()
        if path.startswith("/v1/") and not path.startswith("/v1/operator")
        for method, operation in operations.items()
        if operation.get("security")
    ]


def test_every_lender_route_answers_bad_credentials_with_401_or_403_and_nothing_else(service: Any) -> None:
    """No key, a malformed header, an unknown key, the operator token: 401 with the Bearer challenge;
    a revoked key or one past its rotation grace: 403; never anything else, whatever the route,
    its parameters or its body (authentication comes first)."""
    client, tokens = service
    northwind = tokens["northwind"]
    rotated = client.post("/v1/keys/rotate", json={"grace_hours": 0}, headers=bearer(northwind)).json()["key"]
    spare = client.post("/v1/keys/rotate", json={"grace_hours": 0}, headers=bearer(rotated)).json()
    revoked = client.post("/v1/keys/rotate", json={"grace_hours": 24}, headers=bearer(spare["key"])).json()
    client.post(f"/v1/keys/{revoked['prefix']}/revoke", headers=bearer(spare["key"]))
    credentials = {
        "no key": ({}, 401),
        "not bearer": ({"Authorization": f"Basic {northwind}"}, 401),
        "unknown key": (bearer("sdk_000000000000_" + "x" * 43), 401),
        "operator token": (bearer("operator-secret"), 401),
        "expired after rotation": (bearer(northwind), 403),
        "revoked": (bearer(revoked["key"]), 403),
    }
    operations = _lender_operations(client)
    assert len(operations) >= 14
    answers = {}
    for method, path in operations:
        url = path.format(
            name="default",
            prefix=revoked["prefix"],
            dossier_id="SME-000001:2026-11-01",
            endpoint_id="wh_0000",
            message_id="msg_0000",
            offer_id="off_0000",
        )
        for who, (headers, _status) in credentials.items():
            answer = client.request(method, url, headers=headers, json={"filters": {"grades": ["Z"]}})
            challenge = answer.headers.get("www-authenticate")
            answers[(method, path, who)] = (answer.status_code, answer.headers["content-type"], challenge)
    assert answers == {
        (method, path, who): (status, "application/problem+json", "Bearer" if status == 401 else None)
        for method, path in operations
        for who, (_headers, status) in credentials.items()
    }


def test_another_lenders_keys_and_data_are_out_of_reach(service: Any) -> None:
    """A lender's key reaches only its own lender's keys and data: another lender's key prefix is
    refused with 403; its subscriptions and its dossiers are, to this lender, ones it does not
    have (the same 404 as for none, so nothing is learned); its lists hold only its own."""
    client, tokens = service
    northwind, kestrel = bearer(tokens["northwind"]), bearer(tokens["kestrel"])
    assert client.put("/v1/subscriptions/kestrel-only", json={}, headers=kestrel).status_code == 201
    kestrel_prefix = tokens["kestrel"].split("_")[1]
    refused = client.post(f"/v1/keys/{kestrel_prefix}/revoke", headers=northwind)
    assert (refused.status_code, refused.headers["content-type"]) == (403, "application/problem+json")
    for method, url in [
        ("GET", "/v1/subscriptions/kestrel-only"),
        ("PATCH", "/v1/subscriptions/kestrel-only"),
        ("POST", "/v1/subscriptions/kestrel-only/pause"),
        ("DELETE", "/v1/subscriptions/kestrel-only"),
    ]:
        answer = client.request(method, url, headers=northwind, json={})
        assert (answer.status_code, answer.json()["detail"]) == (404, "no subscription named 'kestrel-only'")
    assert client.get("/v1/subscriptions", headers=northwind).json() == []
    assert [k["prefix"] for k in client.get("/v1/keys", headers=northwind).json()] == [
        tokens["northwind"].split("_")[1]
    ]
    assert client.get("/v1/keys", headers=kestrel).json()[0]["status"] == "active"
    assert client.get("/v1/subscriptions/kestrel-only", headers=kestrel).json()["active"] is True


def test_a_verified_key_is_trusted_for_at_most_the_cache_bound_after_another_process_revokes_it(
    service: Any, warehouse_url: str
) -> None:
    """A revocation written by another process (here: straight into the table, which bumps nothing
    in this process) is seen once the key's verification is older than ``KEY_CACHE_SECONDS``; one
    made through this process is seen at once, and a grace period ends exactly on time."""
    from dossier.web import deps

    client, tokens = service
    clock = {"at": dt.datetime.now(dt.UTC)}
    client.app.dependency_overrides[deps.now] = lambda: clock["at"]
    token, prefix = tokens["northwind"], tokens["northwind"].split("_")[1]
    bound = dt.timedelta(seconds=deps.KEY_CACHE_SECONDS)
    assert client.get("/v1/lender", headers=bearer(token)).status_code == 200
    verified_at = clock["at"]
    engine = make_engine(warehouse_url)
    with session_scope(engine) as session:
        session.query(LenderKey).filter_by(prefix=prefix).update({"revoked_at": verified_at})

    def status_at(at: dt.datetime) -> tuple[int, str | None]:
        clock["at"] = at
        answer = client.get("/v1/lender", headers=bearer(token))
        return answer.status_code, answer.json().get("detail")

    assert status_at(verified_at + bound / 2) == (200, None)  # inside the bound: still trusted here
    assert status_at(verified_at + bound) == (403, f"API key {prefix} was revoked")
    assert status_at(verified_at + bound / 2) == (403, f"API key {prefix} was revoked")

    # a grace period that ends inside the bound ends on time: the kept copy is checked each use
    other, other_prefix = tokens["kestrel"], tokens["kestrel"].split("_")[1]
    start = verified_at + 10 * bound
    with session_scope(engine) as session:
        session.query(LenderKey).filter_by(prefix=other_prefix).update({"expires_at": start + bound / 4})
    clock["at"] = start
    assert client.get("/v1/lender", headers=bearer(other)).status_code == 200
    clock["at"] = start + bound / 4
    expired = client.get("/v1/lender", headers=bearer(other))
    assert (expired.status_code, expired.json()["detail"]) == (
        403,
        f"API key {other_prefix} expired after its rotation; use the new key",
    )

    # a revocation through this process's warehouse code is seen at once, cache or not
    with session_scope(engine) as session:
        token3, _ = keys.issue_key(session, "northwind", at=start)
    prefix3 = token3.split("_")[1]
    clock["at"] = start + bound / 8
    assert client.get("/v1/lender", headers=bearer(token3)).status_code == 200
    assert len(client.app.state.key_cache) == 1
    with session_scope(engine) as session:
        keys.revoke_key(session, prefix3, at=start)
    refused = client.get("/v1/lender", headers=bearer(token3))
    assert (refused.status_code, refused.json()["detail"]) == (403, f"API key {prefix3} was revoked")
    engine.dispose()


def test_the_key_cache_keeps_only_valid_keys_within_its_bound_and_forgets_on_a_change(
    warehouse_url: str,
) -> None:
    engine = make_engine(warehouse_url)
    with session_scope(engine) as session:
        token, _lender = keys.add_lender(session, "northwind", at=T0)
    cache = keys.KeyCache(seconds=2, max_keys=1)
    with session_scope(engine) as session:
        seen = keys.generation()
        key = keys.authenticate(session, token, at=T0)
        cache.put(token, key, at=T0, seen=seen)
        stale = keys.generation()
        keys.changed(session)  # a change while another lookup ran: that lookup is not kept
        cache.put(token, key, at=T0, seen=stale)
    second = dt.timedelta(seconds=1)
    assert cache.get(token, at=T0) is None  # the change emptied it
    cache.put(token, key, at=T0, seen=keys.generation())
    kept = cache.get(token, at=T0 + second)
    assert (kept.lender_id, kept.prefix, kept.revoked_at) == ("northwind", key.prefix, None)
    assert (cache.get(token, at=T0 + 2 * second), cache.get(token, at=T0 - second)) == (None, None)
    assert cache.get("sdk_000000000000_never", at=T0) is None
    off = keys.KeyCache(seconds=0)
    off.put(token, key, at=T0, seen=keys.generation())
    assert (len(off), off.get(token, at=T0)) == (0, None)
    engine.dispose()
