"""The ``dossier`` command, run as a user would (in-process, or as a real subprocess for the server)."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests

from dossier.cli import main
from dossier.settings import Settings


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str]:
    capsys.readouterr()
    code = main(list(argv))
    return code, capsys.readouterr().out


def test_db_upgrade_then_current(capsys, home: Settings) -> None:
    code, out = run(capsys, "db", "upgrade")
    assert code == 0
    assert "at revision" in out
    code, out = run(capsys, "db", "current")
    assert code == 0
    assert "current revision: 0004" in out


def test_seed_then_inspect_consents_lenders_status_and_quarantine(capsys, home: Settings) -> None:
    code, out = run(capsys, "sandbox", "seed", "--smes", "12")
    counts = json.loads(out)
    assert code == 0
    assert (counts["smes"], counts["lenders"], counts["source_connections"]) == (12, 3, 48)
    code, again = run(capsys, "sandbox", "seed", "--smes", "12")
    assert json.loads(again)["consents_created"] == 0

    code, out = run(capsys, "lender", "list")
    assert code == 0
    assert all(name in out for name in ("northwind-capital", "harbor-credit", "kestrel-finance"))
    code, out = run(capsys, "consent", "list", "--sme", "SME-000001")
    assert code == 0
    assert "SME-000001" in out
    code, out = run(capsys, "quarantine", "--as-of", "2026-11-01")
    assert code == 0
    assert "0 entries" in out
    code, out = run(capsys, "status", "--as-of", "2026-11-01")
    assert code == 0
    assert "registered" in out
    assert "12" in out


def test_subscribe_sets_filters_and_pull_refuses_unknown_lenders(
    capsys, home: Settings, tmp_path: Path
) -> None:
    run(capsys, "sandbox", "seed", "--smes", "4")
    code, out = run(capsys, "lender", "subscribe", "--lender", "harbor-credit", "--grades", "A,B")
    assert code == 0
    assert out == "subscription default of harbor-credit: grades all -> A, B\n"
    code, out = run(capsys, "lender", "status", "--lender", "harbor-credit")
    assert json.loads(out)["subscriptions"][0]["filters"] == {"grades": ["A", "B"]}
    capsys.readouterr()
    assert main(["lender", "pull", "--lender", "no-such-lender", "--out", str(tmp_path)]) == 2
    assert capsys.readouterr().err == "dossier: error: unknown lender 'no-such-lender'\n"


def test_schema_prints_both_schemas(capsys) -> None:
    code, canonical = run(capsys, "schema", "canonical")
    assert code == 0
    assert "### `monthly_financials` (accounting)" in canonical
    code, dossier = run(capsys, "schema", "dossier")
    assert code == 0
    assert "| `pd_12m` | double |" in dossier


def test_every_command_answers_help(capsys) -> None:
    for argv in (["--help"], ["lender", "pull", "--help"], ["sandbox", "serve", "--help"], ["run", "--help"]):
        with pytest.raises(SystemExit) as exit_info:
            main(argv)
        assert exit_info.value.code == 0
        assert "usage: dossier" in capsys.readouterr().out


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_sandbox_serve_answers_over_http(tmp_path: Path) -> None:
    port = _free_port()
    env = {**os.environ, "DOSSIER_HOME": str(tmp_path / "var"), "DOSSIER_SANDBOX_SMES": "5"}
    server = subprocess.Popen(
        [sys.executable, "-m", "dossier.cli", "sandbox", "serve", "--port", str(port), "--fault-rate", "0"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                answer = requests.get(f"http://127.0.0.1:{port}/health", timeout=2)
                break
            except requests.ConnectionError:
                assert server.poll() is None, server.stdout.read().decode()
                assert time.monotonic() < deadline, "sandbox did not start within 60 s"
                time.sleep(0.3)
        assert answer.status_code == 200
    finally:
        server.terminate()
        server.wait(timeout=30)
