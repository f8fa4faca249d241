"""Fixtures for the sandbox tests: one small universe, a running server, and the published schemas."""

from __future__ import annotations

import copy
import datetime as dt
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
from hmrc_headers import BATCH_HEADERS

from connectors.sandbox.auth import SandboxCredentials
from connectors.sandbox.server import SandboxServer
from connectors.sandbox.universe import Universe

SEED = 20261125
AS_OF = dt.date(2026, 11, 25)
SIZE = 240

XML_XSD_STUB = """<?xml version="1.0"?>
<xs:schema xmlns:xs="http://www.w3.org/2001/XMLSchema" targetNamespace="http://www.w3.org/XML/1998/namespace">
  <xs:attribute name="base" type="xs:anyURI"/>
  <xs:attribute name="lang" type="xs:language"/>
</xs:schema>
"""
"""The two attributes of the W3C ``xml:`` namespace that atom.xsd imports (from the web otherwise)."""


@pytest.fixture(scope="session")
def universe() -> Universe:
    return Universe(SEED, SIZE, AS_OF)


@pytest.fixture(scope="session")
def server(universe: Universe) -> Iterator[SandboxServer]:
    with SandboxServer(universe) as running:
        yield running


class ProviderSession:
    """A client of the running sandbox for one SME: tokens, headers and URLs, over real HTTP."""

    def __init__(self, server: SandboxServer, sme_id: str) -> None:
        self.server = server
        self.base = server.url
        self.profile = server.universe.sme(sme_id).profile
        self.credentials = server.credentials_for(sme_id)
        self.http = requests.Session()

    def token(self, source: str) -> str:
        client = SandboxCredentials()
        response = self.http.post(
            f"{self.base}/{source}/oauth/token",
            data={
                "grant_type": "refresh_token",
                "refresh_token": self.credentials[source]["refresh_token"],
                "client_id": client.client_id,
                "client_secret": client.client_secret,
            },
        )
        assert response.status_code == 200, response.text
        return response.json()["access_token"]

    def bearer(self, source: str) -> dict[str, str]:
        headers = {"Authorization": f"Bearer {self.token(source)}"}
        if source == "tax":
            headers["Accept"] = "application/vnd.hmrc.1.0+json"
            headers.update(BATCH_HEADERS)
        return headers

    def kobo(self) -> dict[str, str]:
        return {"Authorization": f"Token {self.credentials['survey']['api_token']}"}

    def survey_url(self) -> str:
        return f"{self.base}/survey/api/v2/assets/{self.credentials['survey']['asset_uid']}/data/"


@pytest.fixture
def client(server: SandboxServer) -> Any:
    """``client(sme_id)`` -> a :class:`ProviderSession` on the running server."""
    return lambda sme_id: ProviderSession(server, sme_id)


@pytest.fixture(scope="session")
def espi_schema(shared_data: Path, tmp_path_factory: pytest.TempPathFactory) -> Any:
    """The ESPI 3.3 usage schema (with its Atom import) as an lxml validator, built offline."""
    etree = pytest.importorskip("lxml.etree")
    source = shared_data / "realdata" / "utility"
    folder = tmp_path_factory.mktemp("espi-xsd")
    atom = (source / "ESPI_v3.3_atom.xsd").read_text(encoding="utf-8")
    atom = atom.replace('schemaLocation="https://www.w3.org/2001/03/xml.xsd"', 'schemaLocation="xml.xsd"')
    (folder / "atom.xsd").write_text(atom, encoding="utf-8")
    (folder / "xml.xsd").write_text(XML_XSD_STUB, encoding="utf-8")
    (folder / "usage.xsd").write_bytes((source / "ESPI_v3.3_usage.xsd").read_bytes())
    return etree.XMLSchema(etree.parse(str(folder / "usage.xsd")))


def _without_multiple_of(node: Any) -> Any:
    """jsonschema checks float ``multipleOf`` by division and rejects 0.07 as a multiple of 0.01."""
    if isinstance(node, dict):
        return {k: _without_multiple_of(v) for k, v in node.items() if k != "multipleOf"}
    if isinstance(node, list):
        return [_without_multiple_of(v) for v in node]
    return node


@pytest.fixture(scope="session")
def hmrc_validator(shared_data: Path) -> Any:
    """``validate(payload, component)`` against HMRC's published OpenAPI schemas (two-decimal rule aside)."""
    jsonschema = pytest.importorskip("jsonschema")
    spec = json.loads((shared_data / "realdata" / "tax" / "hmrc_vat_api_mtd_v1.0_openapi.json").read_text())
    components = _without_multiple_of(copy.deepcopy(spec["components"]))

    def validate(payload: object, component: str) -> None:
        schema = {"$ref": f"#/components/schemas/{component}", "components": components}
        jsonschema.Draft7Validator(schema).validate(payload)

    return validate
