"""``dossier link create`` prints a link that opens; ``dossier consent verify`` names a broken chain."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select

from dossier.cli import EXIT_ERROR, EXIT_FAILED, EXIT_OK, main
from dossier.settings import Settings
from dossier.web.app import create_app
from warehouse.db import make_engine, session_scope
from warehouse.models import ConnectorLink, ConsentEvent

ARGS = ["--sources", "accounting,utility", "--lenders", "harbor-credit", "--purpose", "credit_decision"]
ARGS += ["--months", "12", "--consent-days", "90"]


@pytest.fixture
def seeded(capsys: pytest.CaptureFixture[str], home: Settings) -> Settings:
    assert main(["sandbox", "seed", "--smes", "3"]) == 0
    capsys.readouterr()
    return home


def test_link_create_prints_a_url_that_opens_the_link(capsys, seeded: Settings) -> None:
    assert main(["link", "create", "--sme", "SME-000001", *ARGS]) == EXIT_OK
    out = capsys.readouterr().out.splitlines()
    url = out[-1]
    assert url.startswith("http://127.0.0.1:8000/connect/SME-000001/")
    assert out[0].startswith("link ")
    assert " for SME-000001, valid until " in out[0]
    engine = make_engine(seeded.warehouse_url)
    with session_scope(engine) as session:
        link = session.scalars(select(ConnectorLink)).one()
        assert (link.sme_id, link.sources, link.recipients, link.history_months, link.consent_days) == (
            "SME-000001",
            ["accounting", "utility"],
            ["harbor-credit"],
            12,
            90,
        )
        assert (link.expires_at - link.created_at).days == 14
    engine.dispose()
    with TestClient(create_app(seeded)) as client:
        page = client.get("/" + url.split("/", 3)[3])
    assert page.status_code == 200
    assert "asks" in page.text
    assert "(harbor-credit). Nobody else does." in page.text


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--sme", "NOPE", *ARGS], "dossier: error: unknown SME 'NOPE'"),
        (["--sme", "SME-000001", *ARGS, "--valid-days", "0"], "valid_days must be between 1 and 90, not 0"),
        (
            ["--sme", "SME-000001", *ARGS[:-2], "--consent-days", "0"],
            "consent_days must be at least 1, not 0",
        ),
    ],
)
def test_link_create_refuses_bad_arguments_in_one_line(capsys, seeded: Settings, argv, message) -> None:
    capsys.readouterr()
    assert main(["link", "create", *argv]) == EXIT_ERROR
    err = capsys.readouterr().err
    assert len(err.splitlines()) == 1
    assert message in err


def test_consent_verify_names_the_first_broken_event(capsys, seeded: Settings) -> None:
    assert main(["consent", "verify"]) == EXIT_OK
    checked = capsys.readouterr().out.strip().splitlines()[-1]
    assert checked.endswith("ledger chain(s) checked, 0 broken")
    engine = make_engine(seeded.warehouse_url)
    with session_scope(engine) as session:
        event = session.scalars(
            select(ConsentEvent).order_by(ConsentEvent.consent_id, ConsentEvent.sequence)
        ).first()
        event.actor = "someone-else"
        consent_id = event.consent_id
    engine.dispose()
    assert main(["consent", "verify"]) == EXIT_FAILED
    out = capsys.readouterr().out.splitlines()
    assert out[0] == (
        f"broken: consent {consent_id}: event 1 (granted) was altered after it was written (its hash differs)"
    )
    assert out[-1].endswith("ledger chain(s) checked, 1 broken")
