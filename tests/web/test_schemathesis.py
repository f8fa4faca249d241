"""schemathesis against the service's own OpenAPI document: no 500s and no response its schema
does not describe (status code, content type, headers, body), for every operation, with a valid
lender key, another lender's key, an unknown key, a revoked key, no key and the operator token.

The service runs over ASGI in process on a SQLite warehouse seeded with SMEs, consents, lenders,
keys and a real publish, so the feed and the dossier routes have something to serve. CI's budget
is ``DOSSIER_SCHEMATHESIS_EXAMPLES`` examples per operation and mode (default 20), positive and
negative, each sent with one of the credentials (drawn).
"""

from __future__ import annotations

import datetime as dt
import os
import sys
import tempfile
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "warehouse"))
from test_dossier_store import NOW, give_consent, run_publish, scored, seed

from dossier.settings import for_home
from dossier.web.app import create_app
from warehouse import keys
from warehouse.db import make_engine, session_scope
from warehouse.feed import subscribe
from warehouse.migrate import upgrade

EXAMPLES = int(os.environ.get("DOSSIER_SCHEMATHESIS_EXAMPLES", "20"))
OPERATOR_TOKEN = "operator-secret"


@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory) -> Any:
    """The app over a seeded warehouse; yields (app, {credential name: headers})."""
    home = tmp_path_factory.mktemp("schemathesis") / "var"
    home.mkdir(parents=True)
    url = f"sqlite:///{home / 'warehouse.db'}"
    engine = make_engine(url)
    upgrade(engine)
    seed(engine)
    tokens: dict[str, str] = {}
    with session_scope(engine) as session:
        give_consent(session, "C-1", "SME-000001")
        give_consent(session, "C-3", "SME-000003", recipients=("northwind", "harbor"))
        subscribe(session, "northwind")
        tokens["lender"], _ = keys.issue_key(session, "northwind", at=NOW)
        tokens["other lender"], _ = keys.issue_key(session, "harbor", at=NOW)
        revoked, key = keys.issue_key(session, "northwind", at=NOW)
        keys.revoke_key(session, key.prefix, at=NOW)
        tokens["revoked key"] = revoked
    # No rate limit here: the generated requests of one operation would soon exhaust it.
    settings_ = for_home(home, warehouse_url=url, operator_token=OPERATOR_TOKEN, rate_limit_per_minute=0)
    app = create_app(settings_)
    run_publish(engine, app.state.store, [scored(["SME-000001", "SME-000002"]), scored(["SME-000003"])])
    engine.dispose()
    headers = {name: {"Authorization": f"Bearer {token}"} for name, token in tokens.items()}
    headers["unknown key"] = {"Authorization": "Bearer sdk_000000000000_not-a-key"}
    headers["operator"] = {"Authorization": f"Bearer {OPERATOR_TOKEN}"}
    headers["no key"] = {}
    yield app, headers
    app.state.engine.dispose()


@pytest.fixture(scope="module")
def api_schema(service: Any) -> Any:
    app, _headers = service
    return schemathesis.openapi.from_asgi("/openapi.json", app)


def _operations() -> list[tuple[str, str]]:
    """Every (method, path) of the OpenAPI document (read from an app that is never served)."""
    with tempfile.TemporaryDirectory() as scratch:
        app = create_app(for_home(Path(scratch) / "var"))
        document = app.openapi()
        app.state.engine.dispose()
    return [(m.upper(), p) for p, ops in document["paths"].items() for m in ops]


OPERATIONS = _operations()
NOT_CHECKED = [schemathesis.checks.positive_data_acceptance, schemathesis.checks.negative_data_rejection]
"""Not asked: that every request fitting the schema succeeds (cursors are valid only as a page gave
them, and SME, consent and lender ids only when registered, which no schema can say: such requests
get the 400 naming the field or the 404/422 they document), nor that every request outside it is
refused (query parameters the API does not know are ignored, as HTTP APIs do, and this test sets
the credential itself). Bad values of the parameters the API knows are refused with a 400 naming
them: tests/web/test_paging.py."""
CREDENTIALS = ("lender", "other lender", "revoked key", "unknown key", "no key", "operator")


@pytest.mark.slow
@pytest.mark.parametrize("mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE])
@pytest.mark.parametrize(("method", "path"), OPERATIONS, ids=[f"{m} {p}" for m, p in OPERATIONS])
def test_every_operation_answers_within_its_schema_for_every_credential(
    api_schema: Any, service: Any, method: str, path: str, mode: GenerationMode
) -> None:
    _app, headers = service
    operation = api_schema[path][method]
    if mode is GenerationMode.NEGATIVE and not (
        operation.definition.raw.get("parameters") or operation.definition.raw.get("requestBody")
    ):
        pytest.skip("nothing to make invalid: the operation takes no parameters and no body")

    @given(case=operation.as_strategy(mode), who=st.sampled_from(CREDENTIALS))
    @settings(
        max_examples=EXAMPLES,
        deadline=None,
        derandomize=True,  # the same cases every run, so CI is reproducible
        database=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
    )
    def answers(case: Any, who: str) -> None:
        given_headers = {k: v for k, v in (case.headers or {}).items() if k.lower() != "authorization"}
        case.call_and_validate(headers={**given_headers, **headers[who]}, excluded_checks=NOT_CHECKED)

    try:
        answers()
    except Unsatisfiable:
        pytest.skip("no request can be made invalid here: its parameters take any string")


UNVERSIONED = ("/connect/", "/sme/", "/oauth/", "/delta-sharing/")


def test_the_schema_is_versioned_and_every_operation_documents_its_problems(service: Any) -> None:
    app, _headers = service
    document = app.openapi()
    assert document["info"]["version"] == "1"
    assert "HTTPValidationError" not in str(document)
    for path, operations in document["paths"].items():
        for method, operation in operations.items():
            where = f"{method.upper()} {path}"
            assert operation.get("tags"), where
            assert operation["responses"]["500"]["content"] == {
                "application/problem+json": {"schema": {"$ref": "#/components/schemas/Problem"}}
            }, where
            if not path.startswith("/v1/"):
                # Outside /v1: the service's health, the SMEs' pages and protocols with paths of their own.
                assert path == "/health" or path.startswith(UNVERSIONED), where
                continue
            success = [s for s in operation["responses"] if s.startswith("2")]
            assert success, where
            assert operation["security"] == [{"HTTPBearer": []}], where
            for status in ("401", "403"):
                assert "application/problem+json" in operation["responses"][status]["content"], where
            lender = operation.get("tags") != ["operator"]
            assert ("429" in operation["responses"]) is lender, where


def test_a_rate_limited_answer_is_a_documented_problem(tmp_path: Path) -> None:
    """A 429 fits the schema too (the main run has no limit)."""
    from fastapi.testclient import TestClient

    home = tmp_path / "var"
    home.mkdir()
    url = f"sqlite:///{home / 'warehouse.db'}"
    engine = make_engine(url)
    upgrade(engine)
    with session_scope(engine) as session:
        token, _ = keys.add_lender(session, "northwind", at=dt.datetime.now(dt.UTC))
    engine.dispose()
    app = create_app(for_home(home, warehouse_url=url, rate_limit_per_minute=1))
    operation = schemathesis.openapi.from_asgi("/openapi.json", app)["/v1/lender"]["GET"]
    with TestClient(app) as client:
        first = client.get("/v1/lender", headers={"Authorization": f"Bearer {token}"})
        second = client.get("/v1/lender", headers={"Authorization": f"Bearer {token}"})
    assert (first.status_code, second.status_code) == (200, 429)
    operation.validate_response(second)
    app.state.engine.dispose()


def test_what_schemathesis_found_stays_fixed(service: Any, tmp_path: Path) -> None:
    """A link asking for a consent of millions of days was a 500 (a date past year 9999); now the
    API refuses it naming the field, and so does the link module itself (the CLI's path)."""
    from fastapi.testclient import TestClient

    from warehouse import links
    from warehouse.links import LinkError

    app, headers = service
    body = {
        "sme_id": "SME-000001",
        "sources": ["accounting"],
        "recipients": ["northwind"],
        "purpose": "credit_decision",
        "history_months": 12,
        "consent_days": 2_912_109,
    }
    with TestClient(app, raise_server_exceptions=False) as client:
        answer = client.post("/v1/operator/links", json=body, headers=headers["operator"])
    assert (answer.status_code, answer.json()["errors"][0]["field"]) == (400, "consent_days")
    engine = make_engine(f"sqlite:///{tmp_path / 'w.db'}")
    upgrade(engine)
    with session_scope(engine) as session, pytest.raises(LinkError, match="at most 3660"):
        links.create_link(session, "k", **{**body, "recipients": ["northwind"]})
    engine.dispose()
