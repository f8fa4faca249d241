"""A connection the provider has never heard of is a configuration error, not an expired token."""

from __future__ import annotations

import pytest
from connector_fixtures import AS_OF, SEED, FakeClock

from connectors.core.connector import Connection, HttpContext, PullWindow
from connectors.core.errors import ConfigError
from connectors.core.http import make_session
from connectors.registry import connector_for
from connectors.sandbox.auth import SandboxCredentials
from connectors.sandbox.server import SandboxServer
from connectors.sandbox.universe import SOURCES_REFS, Universe
from warehouse.canonical import SOURCES


@pytest.fixture(scope="module")
def smaller_sandbox() -> SandboxServer:
    """The sandbox of the same seed serving 3 SMEs, where the warehouse was seeded with 5."""
    with SandboxServer(Universe(SEED, 3, AS_OF), fault_rate=0.0) as server:
        yield server


@pytest.mark.parametrize("source", SOURCES)
def test_an_sme_beyond_the_served_universe_is_a_configuration_error(
    source: str, smaller_sandbox: SandboxServer
) -> None:
    seeded = SandboxServer(Universe(SEED, 5, AS_OF))  # not started: only its credentials are used
    sme_id = "SME-000005"
    ref = getattr(seeded.universe.sme(sme_id).profile, SOURCES_REFS[source])
    connection = Connection(sme_id, source, "sandbox", ref, seeded.credentials_for(sme_id)[source])
    clock = FakeClock()
    http = HttpContext(
        f"{smaller_sandbox.url}/{source}",
        make_session(2, clock),
        make_session(2, clock, retry_reads=False),
        5.0,
        clock,
        client_id=SandboxCredentials().client_id,
        client_secret=SandboxCredentials().client_secret,
    )
    connector = connector_for(source)

    with pytest.raises(ConfigError) as raised:
        list(
            connector.pull(connector.client(connection, http), connection, PullWindow.for_history(AS_OF, 12))
        )

    assert raised.value.kind == "config"
    assert str(raised.value).startswith(f"{sme_id}/{source}: ")
    assert f"unknown_account: no account {ref!r} at the {source} provider" in str(raised.value)
    assert "never heard of this SME's account" in str(raised.value)
    assert "reconnect" not in str(raised.value)
