"""The HTTP core over a real socket: retries and their waits, classification, timeouts, origins."""

from __future__ import annotations

import pytest
import requests
from connector_fixtures import FakeClock, ObservedSessions, Reply, ScriptedServer

from connectors.core.errors import AuthError, ConfigError, FatalAPIError, RetriableAPIError
from connectors.core.http import ProviderClient, classify_response, describe_request, make_session


def client_for(url: str, clock: FakeClock, attempts: int = 4, timeout: float = 2.0) -> ProviderClient:
    return ProviderClient(
        url,
        sme_id="SME-000007",
        source="accounting",
        session=make_session(attempts, clock),
        auth=None,
        timeout=timeout,
    )


def test_429_and_503_are_retried_waiting_as_told_then_the_body_comes_back(
    scripted: ScriptedServer, clock: FakeClock
) -> None:
    scripted.script(
        "GET",
        "/accounting/v1/data",
        Reply(429, {"code": "MESSAGE_THROTTLED_OUT"}, {"Retry-After": "7"}),
        Reply(503, {"code": "SERVER_ERROR"}),
        Reply(200, {"ok": True}),
    )
    response = client_for(scripted.url + "/accounting", clock).get("/v1/data", {"page": "1"})

    assert response.json() == {"ok": True}
    assert len(scripted.requests_to("/accounting/v1/data")) == 3
    assert clock.slept[0] == 7
    # the second consecutive fault: urllib3's backoff 0.5 * 2**1, plus up to 0.5 s of jitter
    assert 1.0 <= clock.slept[1] <= 1.5
    assert len(clock.slept) == 2


def test_faults_that_outlast_every_attempt_are_retriable_and_say_where(
    scripted: ScriptedServer, clock: FakeClock
) -> None:
    scripted.script("GET", "/v1/data", Reply(502, {"code": "SERVER_ERROR", "message": "upstream"}))

    with pytest.raises(RetriableAPIError) as caught:
        client_for(scripted.url, clock, attempts=3).get("/v1/data")

    assert caught.value.kind == "retriable"
    assert caught.value.status_code == 502
    assert str(caught.value) == (
        "SME-000007/accounting: GET /v1/data answered 502 (SERVER_ERROR: upstream) after every retry"
    )
    assert len(scripted.requests_to("/v1/data")) == 3


@pytest.mark.parametrize("status", [400, 403, 404, 422])
def test_client_errors_are_fatal_at_once_with_the_providers_words(
    scripted: ScriptedServer, clock: FakeClock, status: int
) -> None:
    scripted.script("GET", "/v1/data", Reply(status, {"code": "NOT_FOUND", "message": "no such period"}))

    with pytest.raises(FatalAPIError) as caught:
        client_for(scripted.url, clock).get("/v1/data")

    assert caught.value.kind == "fatal"
    assert (
        str(caught.value)
        == f"SME-000007/accounting: GET /v1/data answered {status} (NOT_FOUND: no such period)"
    )
    assert len(scripted.requests_to("/v1/data")) == 1
    assert clock.slept == []


def test_a_read_timeout_is_retried_then_retriable(scripted: ScriptedServer, clock: FakeClock) -> None:
    scripted.script("GET", "/slow", Reply(200, {"late": True}, delay=0.6))

    with pytest.raises(RetriableAPIError) as caught:
        client_for(scripted.url, clock, attempts=2, timeout=0.15).get("/slow")

    assert "failed after every retry" in str(caught.value)
    assert len(scripted.requests_to("/slow")) == 2


def test_a_refused_connection_is_retriable(clock: FakeClock) -> None:
    with pytest.raises(RetriableAPIError) as caught:
        client_for("http://127.0.0.1:9", clock, attempts=3).get("/v1/data")
    assert caught.value.sme_id == "SME-000007"
    # urllib3 retries the first failure at once, then backs off 0.5 * 2**1 s plus jitter
    assert len(clock.slept) == 1
    assert 1.0 <= clock.slept[0] <= 1.5


def test_every_request_leaves_with_the_configured_timeout(scripted: ScriptedServer, clock: FakeClock) -> None:
    scripted.script("GET", "/v1/data", Reply(503), Reply(200, {"ok": True}))
    observed = ObservedSessions(clock, attempts=3)
    client = ProviderClient(
        scripted.url, sme_id="SME-1", source="tax", session=observed(True), auth=None, timeout=3.5
    )
    client.get("/v1/data")
    client.get("/v1/data")

    assert [timeout for _, _, timeout in observed.sent] == [3.5, 3.5]


def test_links_are_resolved_against_the_provider_and_may_not_leave_its_origin(clock: FakeClock) -> None:
    client = client_for("http://127.0.0.1:8000/accounting", clock)

    assert client.url_for("/v1/tenants/t/reports") == "http://127.0.0.1:8000/accounting/v1/tenants/t/reports"
    assert client.url_for("/accounting/v1/x?page=2") == "http://127.0.0.1:8000/accounting/v1/x?page=2"
    assert client.url_for("http://127.0.0.1:8000/survey/next") == "http://127.0.0.1:8000/survey/next"
    with pytest.raises(FatalAPIError, match="leaves the provider's origin"):
        client.url_for("https://elsewhere.example/steal")


def test_a_missing_base_url_is_a_configuration_error(clock: FakeClock) -> None:
    with pytest.raises(ConfigError) as caught:
        client_for("", clock)
    assert caught.value.kind == "config"
    assert str(caught.value) == "SME-000007/accounting: no provider base URL is configured"


def test_classification_of_final_statuses() -> None:
    assert classify_response(204, "S", "tax", "GET /x", "") is None
    assert isinstance(classify_response(401, "S", "tax", "GET /x", ""), AuthError)
    assert classify_response(429, "S", "tax", "GET /x", "").kind == "retriable"
    assert classify_response(418, "S", "tax", "GET /x", "teapot").kind == "fatal"
    assert describe_request("GET", "http://h:1/a/b?c=1") == "GET /a/b?c=1"


def test_sessions_retry_only_what_is_safe_to_repeat() -> None:
    data = make_session(5).get_adapter("http://").max_retries
    token = make_session(5, retry_reads=False).get_adapter("http://").max_retries
    assert (data.total, data.read, sorted(data.status_forcelist)) == (4, None, [429, 500, 502, 503, 504])
    assert token.read == 0
    assert isinstance(make_session(1), requests.Session)
