"""Real providers are configuration, and the HMRC connector sends the fraud-prevention headers.

Over the wire against the sandbox: the ingest reaches each provider at the base URL and token
endpoint the settings name, with the client id and secret they name; every HMRC VAT request
carries the ``BATCH_PROCESS_DIRECT`` headers, percent-encoded, and the sandbox refuses requests
without them in HMRC's own error shape.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import getpass
import hashlib
import importlib.metadata
import json
import re
import threading
from typing import Any
from urllib.parse import quote, unquote

import pytest
import requests
from connector_fixtures import AS_OF, NOW, FakeClock, Seeded
from hmrc_headers import BATCH_HEADERS
from requests.adapters import HTTPAdapter

from connectors.core.connector import Connection, HttpContext, PullWindow
from connectors.core.errors import FatalAPIError
from connectors.core.http import make_session
from connectors.ingest import ingest_shard
from connectors.sandbox.auth import SandboxCredentials
from connectors.sandbox.server import SandboxServer
from connectors.tax.connector import TaxConnector
from connectors.tax.fraud_prevention import FraudPrevention
from dossier.settings import Settings, SettingsError, override
from warehouse.models import IngestionRun

DEVICE = "3f2b8c1e-9d4a-4c7b-8e21-5a6f0b9c7d12"
SPEC_HEADERS = {
    "gov-client-connection-method",
    "gov-client-device-id",
    "gov-client-local-ips",
    "gov-client-local-ips-timestamp",
    "gov-client-mac-addresses",
    "gov-client-timezone",
    "gov-client-user-agent",
    "gov-client-user-ids",
    "gov-vendor-license-ids",
    "gov-vendor-product-name",
    "gov-vendor-version",
}
"""HMRC's list for batch process direct, written out from the specification."""
UNRESERVED_OR_ESCAPE = r"(?:[A-Za-z0-9\-._~]|%[0-9A-F]{2})*"


class HeaderLog:
    """``http_session_factory`` for ``ingest_shard``: real sessions that note each request's headers."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, str, dict[str, str]]] = []
        self.lock = threading.Lock()

    def __call__(self, retry_reads: bool) -> requests.Session:
        session = make_session(3, FakeClock(), retry_reads=retry_reads)
        log, lock = self.sent, self.lock

        class Noting(HTTPAdapter):
            def send(self, request: requests.PreparedRequest, **kwargs: Any) -> requests.Response:  # type: ignore[override]
                with lock:
                    log.append((request.method or "", request.url or "", dict(request.headers)))
                return super().send(request, **kwargs)

        adapter = Noting(max_retries=session.get_adapter("http://").max_retries)
        session.mount("http://", adapter)
        return session

    def api_calls(self) -> list[tuple[str, dict[str, str]]]:
        return [(url, headers) for _, url, headers in self.sent if "/oauth/" not in url]

    def token_calls(self) -> list[str]:
        return [url for _, url, _ in self.sent if url.endswith("/oauth/token")]


def run(seeded: Seeded, settings: Settings, source: str, log: HeaderLog, shard: int = 0) -> dict[str, Any]:
    with override(settings):
        return ingest_shard(
            source,
            shard,
            AS_OF,
            session_factory=seeded.sessions,
            store=seeded.store,
            now=NOW + dt.timedelta(hours=12),
            clock=FakeClock(),
            http_session_factory=log,
        )


def statuses(seeded: Seeded, source: str) -> dict[str, tuple[str, str | None]]:
    with seeded.sessions() as session:
        return {
            r.sme_id: (r.status, r.error_message)
            for r in session.query(IngestionRun).filter(IngestionRun.source == source)
        }


# --- configuration ------------------------------------------------------------------------------------


def test_every_source_defaults_to_the_bundled_sandbox() -> None:
    settings = Settings.from_env({"DOSSIER_SANDBOX_URL": "http://127.0.0.1:9000/"})
    assert [dataclasses.astuple(settings.provider(s)) for s in ("accounting", "tax")] == [
        (
            "accounting",
            "http://127.0.0.1:9000/accounting",
            "sme-dossier",
            "sme-dossier-sandbox-secret",
            "",
            "",
        ),
        ("tax", "http://127.0.0.1:9000/tax", "sme-dossier", "sme-dossier-sandbox-secret", "", ""),
    ]
    assert settings.provider("tax").token_url == "http://127.0.0.1:9000/tax/oauth/token"
    assert not Settings.from_env({}).provider("tax").configured


def test_a_provider_is_configured_per_source() -> None:
    settings = Settings.from_env(
        {
            "DOSSIER_SANDBOX_URL": "http://127.0.0.1:9000",
            "DOSSIER_PROVIDERS": json.dumps(
                {
                    "tax": {
                        "base_url": "https://api.service.hmrc.gov.uk/",
                        "authorize_url": "https://www.tax.service.gov.uk/oauth/authorize",
                        "token_url": "https://api.service.hmrc.gov.uk/oauth/token",
                        "client_id": "hmrc-client",
                        "client_secret": "hmrc-secret",
                    },
                    "utility": {"client_id": "green-button"},
                }
            ),
        }
    )
    tax = settings.provider("tax")
    assert (tax.base_url, tax.authorize_url, tax.token_url, tax.client_id, tax.client_secret) == (
        "https://api.service.hmrc.gov.uk",
        "https://www.tax.service.gov.uk/oauth/authorize",
        "https://api.service.hmrc.gov.uk/oauth/token",
        "hmrc-client",
        "hmrc-secret",
    )
    utility = settings.provider("utility")
    assert (utility.base_url, utility.token_url, utility.client_id, utility.client_secret) == (
        "http://127.0.0.1:9000/utility",
        "http://127.0.0.1:9000/utility/oauth/token",
        "green-button",
        "sme-dossier-sandbox-secret",
    )


@pytest.mark.parametrize(
    ("value", "why"),
    [
        ("{not json", "not JSON"),
        ('["tax"]', "expected a JSON object keyed by source"),
        ('{"bank": {}}', "unknown source 'bank'"),
        ('{"tax": {"token": "x"}}', "tax: unknown key 'token'"),
        ('{"tax": {"token_url": "ftp://x", "client_secret": "s3cr3t"}}', "tax.token_url: expected an http"),
        ('{"tax": {"client_id": 7}}', "tax.client_id: expected a string"),
    ],
)
def test_a_bad_provider_configuration_is_one_line_naming_the_variable(value: str, why: str) -> None:
    with pytest.raises(SettingsError) as raised:
        Settings.from_env({"DOSSIER_PROVIDERS": value})
    message = str(raised.value)
    assert message.startswith("DOSSIER_PROVIDERS=(value not shown) is not valid: ")
    assert why in message
    assert "\n" not in message
    assert "s3cr3t" not in message


def test_device_id_and_licence_keys_are_checked() -> None:
    with pytest.raises(SettingsError, match=r"^DOSSIER_HMRC_DEVICE_ID='abc' is not valid: expected a UUID"):
        Settings.from_env({"DOSSIER_HMRC_DEVICE_ID": "abc"})
    with pytest.raises(SettingsError, match=r"^DOSSIER_VENDOR_LICENSE_IDS=\(value not shown\) is not valid"):
        Settings.from_env({"DOSSIER_VENDOR_LICENSE_IDS": "no-equals-sign"})


def test_the_device_id_is_made_once_and_kept(tmp_path: Any) -> None:
    settings = Settings.from_env({"DOSSIER_HOME": str(tmp_path)})
    first = settings.device_id()
    assert re.fullmatch(r"[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}", first)
    assert Settings.from_env({"DOSSIER_HOME": str(tmp_path)}).device_id() == first
    assert (
        Settings.from_env({"DOSSIER_HOME": str(tmp_path), "DOSSIER_HMRC_DEVICE_ID": DEVICE}).device_id()
        == DEVICE
    )


def test_ingest_reaches_the_configured_provider_with_the_configured_client(
    seeded: Seeded, sandbox: SandboxServer
) -> None:
    """No sandbox URL at all: every endpoint comes from DOSSIER_PROVIDERS."""
    providers = {"accounting": {"base_url": f"{sandbox.url}/accounting", "client_id": "sme-dossier"}}
    settings = dataclasses.replace(seeded.settings, sandbox_url="", providers=providers)
    log = HeaderLog()
    summary = run(seeded, settings, "accounting", log)
    assert summary["failed"] == 0
    assert summary["pulled"] > 0
    assert log.api_calls()
    assert all(url.startswith(f"{sandbox.url}/accounting/v1/tenants/") for url, _ in log.api_calls())
    assert set(log.token_calls()) == {f"{sandbox.url}/accounting/oauth/token"}


def test_the_configured_token_endpoint_and_client_are_the_ones_used(
    seeded: Seeded, sandbox: SandboxServer
) -> None:
    """A token endpoint of another provider refuses the refresh token; a wrong client id is refused."""
    elsewhere = {"tax": {"base_url": f"{sandbox.url}/tax", "token_url": f"{sandbox.url}/utility/oauth/token"}}
    log = HeaderLog()
    summary = run(seeded, dataclasses.replace(seeded.settings, providers=elsewhere), "tax", log)
    assert summary["pulled"] == 0
    assert summary["failed"] > 0
    assert set(log.token_calls()) == {f"{sandbox.url}/utility/oauth/token"}
    assert log.api_calls() == []
    failed = [m for s, m in statuses(seeded, "tax").values() if s == "failed"]
    assert failed
    assert all("invalid_grant" in (m or "") and "reconnect" in (m or "") for m in failed)

    stranger = {"tax": {"base_url": f"{sandbox.url}/tax", "client_id": "someone-else"}}
    summary = run(seeded, dataclasses.replace(seeded.settings, providers=stranger), "tax", HeaderLog())
    assert summary["pulled"] == 0
    failed = [m for s, m in statuses(seeded, "tax").values() if s == "failed"]
    assert failed
    assert all("invalid_client" in (m or "") for m in failed)


# --- HMRC fraud-prevention headers ----------------------------------------------------------------------


def test_every_hmrc_request_carries_the_batch_process_headers(seeded: Seeded, sandbox: SandboxServer) -> None:
    settings = dataclasses.replace(
        seeded.settings,
        sandbox_url=sandbox.url,
        hmrc_device_id=DEVICE,
        vendor_license_ids={"sme-dossier": "LICENCE KEY/1"},
    )
    log = HeaderLog()
    summary = run(seeded, settings, "tax", log)
    assert summary["pulled"] > 0
    assert summary["failed"] == 0
    calls = log.api_calls()
    assert calls
    version = importlib.metadata.version("sme-dossier")
    for _, headers in calls:
        sent = {k.lower(): v for k, v in headers.items() if k.lower().startswith("gov-")}
        assert set(sent) == SPEC_HEADERS
        assert sent["gov-client-connection-method"] == "BATCH_PROCESS_DIRECT"
        assert sent["gov-client-device-id"] == DEVICE
        assert sent["gov-client-user-ids"] == "os=" + quote(getpass.getuser(), safe="")
        assert sent["gov-vendor-product-name"] == "sme-dossier"
        assert sent["gov-vendor-version"] == f"sme-dossier={quote(version, safe='')}"
        assert sent["gov-vendor-license-ids"] == "sme-dossier=" + hashlib.sha256(b"LICENCE KEY/1").hexdigest()
        assert re.fullmatch(r"UTC[+-]\d\d:\d\d", sent["gov-client-timezone"])
        assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", sent["gov-client-local-ips-timestamp"])
        for ip in sent["gov-client-local-ips"].split(","):
            assert re.fullmatch(UNRESERVED_OR_ESCAPE, ip)
            assert ":" not in ip
        for mac in sent["gov-client-mac-addresses"].split(","):
            assert re.fullmatch(r"[0-9a-f]{2}(%3A[0-9a-f]{2}){5}", mac)
        agent = dict(pair.split("=", 1) for pair in sent["gov-client-user-agent"].split("&"))
        assert list(agent) == ["os-family", "os-version", "device-manufacturer", "device-model"]
        assert all(re.fullmatch(UNRESERVED_OR_ESCAPE, v) for v in agent.values())
        assert agent["os-family"]
    assert all("gov-client-device-id" not in {k.lower() for k in h} for _, u, h in log.sent if "/oauth/" in u)


def test_values_are_percent_encoded_but_separators_are_not() -> None:
    fraud = FraudPrevention(
        DEVICE,
        {"Books & Co": "k"},
        product_name="SME Dossier",
        version="1.0 beta",
        user_id="DOMAIN\\batch user",
        user_agent={
            "os-family": "Linux",
            "os-version": "6.1",
            "device-manufacturer": "Dell Inc.",
            "device-model": "R&D=1",
        },
        interfaces=lambda: (["10.0.0.5", "fe80::1"], ["aa:bb:cc:dd:ee:ff"]),
        clock=lambda: dt.datetime(2026, 12, 1, 9, 5, 7, 42000, tzinfo=dt.UTC),
    )
    headers = fraud.headers()
    assert {k: v for k, v in headers.items() if k not in ("Gov-Client-Timezone",)} == {
        "Gov-Client-Connection-Method": "BATCH_PROCESS_DIRECT",
        "Gov-Client-Device-ID": DEVICE,
        "Gov-Client-Local-IPs": "10.0.0.5,fe80%3A%3A1",
        "Gov-Client-Local-IPs-Timestamp": "2026-12-01T09:05:07.042Z",
        "Gov-Client-MAC-Addresses": "aa%3Abb%3Acc%3Add%3Aee%3Aff",
        "Gov-Client-User-Agent": "os-family=Linux&os-version=6.1&device-manufacturer=Dell%20Inc.&device-model=R%26D%3D1",
        "Gov-Client-User-IDs": "os=DOMAIN%5Cbatch%20user",
        "Gov-Vendor-License-IDs": "Books%20%26%20Co=" + hashlib.sha256(b"k").hexdigest(),
        "Gov-Vendor-Product-Name": "SME%20Dossier",
        "Gov-Vendor-Version": "SME%20Dossier=1.0%20beta",
    }
    assert unquote(headers["Gov-Client-User-IDs"].split("=", 1)[1]) == "DOMAIN\\batch user"


def _token(sandbox: SandboxServer, seeded: Seeded, sme_id: str) -> tuple[str, str]:
    credentials = sandbox.credentials_for(sme_id)["tax"]
    vrn = sandbox.universe.sme(sme_id).profile.vrn
    form = {"grant_type": "refresh_token", "refresh_token": credentials["refresh_token"]}
    answer = requests.post(
        f"{sandbox.url}/tax/oauth/token", data={**form, **SandboxCredentials().__dict__}, timeout=10
    )
    return answer.json()["access_token"], vrn


def test_the_sandbox_refuses_hmrc_calls_without_the_headers_in_hmrcs_shape(
    seeded: Seeded, sandbox: SandboxServer
) -> None:
    access, vrn = _token(sandbox, seeded, "SME-000001")
    url = f"{sandbox.url}/tax/organisations/vat/{vrn}/obligations?status=O"
    base = {"Authorization": f"Bearer {access}", "Accept": "application/vnd.hmrc.1.0+json"}
    bare = requests.get(url, headers=base, timeout=10)
    assert bare.status_code == 400
    assert bare.json() == {
        "specVersion": "3.3",
        "code": "INVALID_HEADERS",
        "message": "At least 1 header is invalid",
        "errors": [
            {"code": "MISSING_HEADER", "message": "Header required", "headers": [name]}
            for name in sorted(SPEC_HEADERS)
        ],
    }
    wrong = {
        **BATCH_HEADERS,
        "Gov-Client-Timezone": "GMT",
        "Gov-Client-Device-ID": "device-1",
        "Gov-Vendor-Product-Name": "SME Dossier",
        "Gov-Client-Connection-Method": "DESKTOP_APP_DIRECT",
        "Gov-Vendor-License-IDs": "sme-dossier=PLAINKEY",
    }
    answer = requests.get(url, headers={**base, **wrong}, timeout=10)
    assert (answer.status_code, [(e["code"], e["headers"]) for e in answer.json()["errors"]]) == (
        400,
        [
            ("INVALID_HEADER", ["gov-client-connection-method"]),
            ("INVALID_HEADER", ["gov-client-device-id"]),
            ("INVALID_HEADER", ["gov-client-timezone"]),
            ("INVALID_HEADER", ["gov-vendor-license-ids"]),
            ("INVALID_HEADER", ["gov-vendor-product-name"]),
        ],
    )
    assert requests.get(url, headers={**base, **BATCH_HEADERS}, timeout=10).status_code == 200


def test_a_connector_sending_bad_headers_fails_naming_them(seeded: Seeded, sandbox: SandboxServer) -> None:
    sme_id = "SME-000001"
    connection = Connection(
        sme_id,
        "tax",
        "hmrc",
        sandbox.universe.sme(sme_id).profile.vrn,
        sandbox.credentials_for(sme_id)["tax"],
    )
    broken = FraudPrevention("not-a-uuid", interfaces=lambda: (["10.0.0.1"], ["aa:bb:cc:dd:ee:ff"]))
    http = HttpContext(
        f"{sandbox.url}/tax",
        make_session(2, FakeClock()),
        make_session(2, FakeClock(), retry_reads=False),
        10.0,
        FakeClock(),
        client_id="sme-dossier",
        client_secret="sme-dossier-sandbox-secret",
        fraud_prevention=broken,
    )
    connector = TaxConnector()
    with pytest.raises(FatalAPIError) as raised:
        list(
            connector.pull(connector.client(connection, http), connection, PullWindow.for_history(AS_OF, 12))
        )
    assert raised.value.status_code == 400
    assert "INVALID_HEADERS: At least 1 header is invalid (INVALID_HEADER gov-client-device-id)" in str(
        raised.value
    )
