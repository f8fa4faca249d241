"""Auth objects over a real socket: OAuth2 refresh on expiry and on 401, rotation, refusal; Kobo tokens."""

from __future__ import annotations

from urllib.parse import parse_qs

import pytest
from connector_fixtures import FakeClock, Reply, ScriptedServer

from connectors.core.auth import KoboTokenAuth, OAuth2RefreshAuth, require_credential
from connectors.core.errors import AuthError, ConfigError
from connectors.core.http import ProviderClient, make_session


def oauth_client(server: ScriptedServer, clock: FakeClock) -> tuple[ProviderClient, OAuth2RefreshAuth]:
    auth = OAuth2RefreshAuth(
        server.url + "/oauth/token",
        client_id="app",
        client_secret="secret",
        refresh_token="rt-1",
        session=make_session(3, clock, retry_reads=False),
        timeout=2.0,
        sme_id="SME-000003",
        source="utility",
        clock=clock,
    )
    client = ProviderClient(
        server.url,
        sme_id="SME-000003",
        source="utility",
        session=make_session(3, clock),
        auth=auth,
        timeout=2.0,
    )
    return client, auth


def token(access: str, refresh: str = "rt-1", expires_in: int = 300) -> Reply:
    return Reply(
        200,
        {"access_token": access, "token_type": "Bearer", "expires_in": expires_in, "refresh_token": refresh},
    )


def bearer_of(server: ScriptedServer, path: str) -> list[str]:
    return [seen.headers["Authorization"] for seen in server.requests_to(path)]


def test_one_token_serves_every_request_until_it_nears_expiry(
    scripted: ScriptedServer, clock: FakeClock
) -> None:
    scripted.script("POST", "/oauth/token", token("at-1"), token("at-2"))
    scripted.script("GET", "/data", Reply(200, {"ok": True}))
    client, auth = oauth_client(scripted, clock)

    client.get("/data")
    client.get("/data")
    clock.now += 300 - 14  # within 15 s of expiry: refresh before sending
    client.get("/data")

    assert bearer_of(scripted, "/data") == ["Bearer at-1", "Bearer at-1", "Bearer at-2"]
    form = parse_qs(scripted.requests_to("/oauth/token")[0].body.decode())
    assert form == {
        "grant_type": ["refresh_token"],
        "refresh_token": ["rt-1"],
        "client_id": ["app"],
        "client_secret": ["secret"],
    }
    assert auth.refreshes == 2


def test_a_401_refreshes_the_token_once_and_resends(scripted: ScriptedServer, clock: FakeClock) -> None:
    scripted.script("POST", "/oauth/token", token("at-1"), token("at-2"))
    scripted.script("GET", "/data", Reply(401, {"error": "invalid_token"}), Reply(200, {"page": 1}))
    client, auth = oauth_client(scripted, clock)

    assert client.get("/data").json() == {"page": 1}
    assert bearer_of(scripted, "/data") == ["Bearer at-1", "Bearer at-2"]
    assert auth.refreshes == 2


def test_a_second_401_means_the_sme_must_reconnect(scripted: ScriptedServer, clock: FakeClock) -> None:
    scripted.script("POST", "/oauth/token", token("at-1"), token("at-2"))
    scripted.script("GET", "/data", Reply(401, {"error": "invalid_token", "error_description": "revoked"}))
    client, _ = oauth_client(scripted, clock)

    with pytest.raises(AuthError) as caught:
        client.get("/data")

    assert caught.value.kind == "config"
    assert str(caught.value) == (
        "SME-000003/utility: GET /data answered 401 (invalid_token: revoked) even with a fresh token: "
        "the SME has to reconnect this source"
    )
    assert len(scripted.requests_to("/data")) == 2
    assert len(scripted.requests_to("/oauth/token")) == 2


def test_a_refused_refresh_token_is_a_configuration_error(scripted: ScriptedServer, clock: FakeClock) -> None:
    scripted.script(
        "POST",
        "/oauth/token",
        Reply(400, {"error": "invalid_grant", "error_description": "refresh token expired"}),
    )
    client, _ = oauth_client(scripted, clock)

    with pytest.raises(AuthError) as caught:
        client.get("/data")

    assert caught.value.kind == "config"
    assert "invalid_grant: refresh token expired" in str(caught.value)
    assert scripted.requests_to("/data") == []


def test_a_rotated_refresh_token_is_used_from_then_on(scripted: ScriptedServer, clock: FakeClock) -> None:
    scripted.script("POST", "/oauth/token", token("at-1", refresh="rt-2"), token("at-2", refresh="rt-2"))
    scripted.script("GET", "/data", Reply(200, {}))
    client, auth = oauth_client(scripted, clock)

    client.get("/data")
    auth.refresh()

    sent = [parse_qs(s.body.decode())["refresh_token"] for s in scripted.requests_to("/oauth/token")]
    assert sent == [["rt-1"], ["rt-2"]]
    assert (auth.rotated, auth.refresh_token) == (True, "rt-2")


def test_a_token_answer_without_access_token_is_refused(scripted: ScriptedServer, clock: FakeClock) -> None:
    scripted.script("POST", "/oauth/token", Reply(200, {"token_type": "Bearer"}))
    client, _ = oauth_client(scripted, clock)

    with pytest.raises(AuthError, match="without an access_token") as caught:
        client.get("/data")
    assert (caught.value.record, caught.value.field) == ("oauth/token", "access_token")


def test_kobo_token_auth_signs_every_request(scripted: ScriptedServer, clock: FakeClock) -> None:
    scripted.script("GET", "/api/v2/assets/a1/data/", Reply(200, {"results": []}))
    client = ProviderClient(
        scripted.url,
        sme_id="SME-1",
        source="survey",
        session=make_session(2, clock),
        auth=KoboTokenAuth("tok"),
        timeout=1.0,
    )
    client.get("/api/v2/assets/a1/data/")
    assert bearer_of(scripted, "/api/v2/assets/a1/data/") == ["Token tok"]


def test_a_missing_credential_names_sme_source_and_field() -> None:
    with pytest.raises(ConfigError) as caught:
        require_credential({"asset_uid": "a"}, "api_token", sme_id="SME-000009", source="survey")
    assert str(caught.value) == (
        "SME-000009/survey: source_connections.credentials field api_token: "
        "source connection has no 'api_token' credential"
    )
