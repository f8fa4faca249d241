"""Every ``dossier`` command answers a person's mistake with one line and a documented exit status.

The commands run in-process (``dossier.cli.main``) against a seeded warehouse, and a few through a
real subprocess for the settings, which a process reads once from its environment. A traceback, a
second line, or an exit status other than the documented one fails the test.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

import pytest

from dossier.cli import EXIT_ERROR, EXIT_OK, build_parser, main
from dossier.settings import Settings, override

BAD_DATES = ["2026-13-01", "01/12/2026", "yesterday", "2026-02-30", "2026-12-01garbage", "2026-1-5"]
DATED_COMMANDS = [["status"], ["quarantine"], ["run"], ["demo"]]


def leaf_commands(parser: argparse.ArgumentParser | None = None, prefix: tuple[str, ...] = ()) -> list[tuple]:
    """Every runnable command path of the parser, e.g. ``("lender", "pull")``."""
    parser = parser or build_parser()
    found: list[tuple] = []
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                found += leaf_commands(sub, (*prefix, name))
    return found or [prefix]


def one_line_error(capsys: pytest.CaptureFixture[str], argv: list[str]) -> tuple[int, str]:
    """Run ``argv`` and return its status and its single stderr line (asserting there is one)."""
    capsys.readouterr()
    code = main(argv)
    err = capsys.readouterr().err
    assert "Traceback" not in err, err
    lines = err.splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("dossier: error: "), err
    return code, lines[0]


@pytest.fixture
def seeded(capsys: pytest.CaptureFixture[str], home: Settings) -> Settings:
    assert main(["sandbox", "seed", "--smes", "6"]) == 0
    capsys.readouterr()
    return home


def test_every_command_refuses_an_unknown_option_in_one_line(capsys, seeded: Settings) -> None:
    commands = leaf_commands()
    assert {("lender", "subscribe"), ("consent", "revoke"), ("verify",), ("airflow",)} <= set(commands)
    for command in commands:
        if command == ("airflow",):  # passes every argument on to airflow itself
            continue
        code, line = one_line_error(capsys, [*command, "--no-such-option"])
        assert code == EXIT_ERROR, command
        assert (
            "unrecognized arguments: --no-such-option" in line
            or "the following arguments are required" in line
        ), line


@pytest.mark.parametrize("command", DATED_COMMANDS, ids=lambda c: c[0])
@pytest.mark.parametrize("date", BAD_DATES)
def test_malformed_and_impossible_dates_are_refused(
    capsys, seeded: Settings, command: list[str], date: str
) -> None:
    code, line = one_line_error(capsys, [*command, "--as-of", date])
    assert code == EXIT_ERROR
    assert line.startswith(f"dossier: error: as-of date {date!r} is not ")
    assert line.endswith("give YYYY-MM-DD") or line.endswith("give YYYY-MM-DD, e.g. 2026-12-01")


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["lender", "status", "--lender", "nobody"], "unknown lender 'nobody'"),
        (["lender", "subscribe", "--lender", "nobody", "--grades", "A"], "unknown lender 'nobody'"),
        (
            ["lender", "subscribe", "--lender", "harbor-credit", "--grades", "Z,a"],
            "grades 'Z' not known; valid grades: A, B, C, D, E",
        ),
        (
            ["lender", "subscribe", "--lender", "harbor-credit", "--size-bands", "huge"],
            "size_bands 'huge' not known; valid size_bands: micro, small, medium",
        ),
        (
            ["lender", "subscribe", "--lender", "harbor-credit", "--regions", "Narnia"],
            "regions 'Narnia' not known",
        ),
        (
            ["lender", "subscribe", "--lender", "harbor-credit", "--industries", "piracy"],
            "industries 'piracy' not known",
        ),
        (
            ["lender", "subscribe", "--lender", "harbor-credit", "--add", "--replace"],
            "argument --replace: not allowed with argument --add",
        ),
        (["consent", "revoke", "NOPE"], "consent 'NOPE' does not exist"),
        (["consent", "erase", "--sme", "NOPE"], "NOPE"),
        (
            [
                "consent",
                "grant",
                "--sme",
                "SME-000001",
                "--sources",
                "tax",
                "--lenders",
                "harbor-credit",
                "--purpose",
                "credit_decision",
                "--months",
                "12",
                "--expires",
                "2026-13-01",
            ],
            "2026-13-01",
        ),
        (["quarantine", "--sme", "NOPE"], "unknown SME 'NOPE'"),
        (["sandbox", "seed", "--smes", "0"], "argument --smes: '0' is not a whole number of at least 1"),
        (["sandbox", "serve", "--port", "http"], "argument --port: 'http' is not a port number (0-65535)"),
        (
            ["sandbox", "serve", "--fault-rate", "2"],
            "argument --fault-rate: '2' is not a share between 0 and 1",
        ),
        (["demo", "--smes", "-3"], "argument --smes: '-3' is not a whole number of at least 1"),
        (["run", "--dag", "everything"], "argument --dag: invalid choice: 'everything'"),
        (["schema", "tables"], "argument which: invalid choice: 'tables'"),
        (["lender"], "dossier lender: the following arguments are required: COMMAND"),
        (["nope"], "argument COMMAND: invalid choice: 'nope'"),
    ],
    ids=lambda v: " ".join(v) if isinstance(v, list) else None,
)
def test_unknown_ids_and_out_of_vocabulary_values(
    capsys, seeded: Settings, argv: list[str], message: str
) -> None:
    code, line = one_line_error(capsys, argv)
    assert code == EXIT_ERROR
    assert message in line, line


def test_regions_error_lists_the_regions_registered_smes_use(capsys, seeded: Settings) -> None:
    from sqlalchemy import select

    from warehouse.db import session_scope
    from warehouse.models import Sme

    with session_scope() as session:
        regions = sorted(set(session.scalars(select(Sme.region))))
    _, line = one_line_error(
        capsys, ["lender", "subscribe", "--lender", "harbor-credit", "--regions", "Narnia"]
    )
    assert line == f"dossier: error: regions 'Narnia' not known; valid regions: {', '.join(regions)}"


def test_pull_out_must_be_a_folder(capsys, seeded: Settings, tmp_path: Path) -> None:
    a_file = tmp_path / "inbox"
    a_file.write_text("not a folder")
    code, line = one_line_error(capsys, ["lender", "pull", "--lender", "harbor-credit", "--out", str(a_file)])
    assert code == EXIT_ERROR
    assert line == (
        f"dossier: error: dossier lender pull: argument --out: {str(a_file)!r} is a file, not a folder; "
        "name a folder to write into (see: dossier lender pull --help)"
    )
    code, line = one_line_error(
        capsys, ["lender", "pull", "--lender", "harbor-credit", "--out", str(a_file / "below")]
    )
    assert code == EXIT_ERROR
    assert "is a file, not a folder" in line or "cannot write into" in line


@pytest.mark.skipif(os.geteuid() == 0, reason="root can write into any folder")
def test_pull_out_must_be_writable(capsys, seeded: Settings, tmp_path: Path) -> None:
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o500)
    code, line = one_line_error(
        capsys, ["lender", "pull", "--lender", "harbor-credit", "--out", str(locked / "inbox")]
    )
    assert code == EXIT_ERROR
    assert f"cannot write into {str(locked)!r} (permission denied)" in line


def test_subscribe_needs_add_or_replace_to_change_existing_filters(capsys, seeded: Settings) -> None:
    def subscribe(*extra: str) -> str:
        capsys.readouterr()
        assert main(["lender", "subscribe", "--lender", "kestrel-finance", *extra]) == EXIT_OK
        return capsys.readouterr().out

    assert subscribe("--grades", "a,B") == "subscription default of kestrel-finance: grades all -> A, B\n"
    code, line = one_line_error(
        capsys, ["lender", "subscribe", "--lender", "kestrel-finance", "--grades", "C"]
    )
    assert code == EXIT_ERROR
    assert line == (
        "dossier: error: subscription 'default' of 'kestrel-finance' already has filters (grades A, B; "
        "industries all; regions all; size_bands all); pass --add to add these values to them or "
        "--replace to replace them all"
    )
    assert (
        subscribe("--grades", "C", "--add")
        == "subscription default of kestrel-finance: grades A, B -> A, B, C\n"
    )
    assert subscribe("--grades", "C", "--add") == (
        "subscription default of kestrel-finance: unchanged (purpose credit_decision; grades A, B, C; "
        "industries all; regions all; "
        "size_bands all)\n"
    )
    assert subscribe("--size-bands", "micro", "--replace") == (
        "subscription default of kestrel-finance: grades A, B, C -> all; size_bands all -> micro\n"
    )
    assert subscribe("--replace") == "subscription default of kestrel-finance: size_bands micro -> all\n"


def test_a_warehouse_without_schema_says_to_upgrade(capsys, tmp_path: Path) -> None:
    from dossier.settings import for_home

    with override(for_home(tmp_path / "fresh")):
        code, line = one_line_error(capsys, ["lender", "list"])
        assert code == EXIT_ERROR
        assert line.startswith(
            f"dossier: error: the warehouse at sqlite:///{tmp_path}/fresh/warehouse.db has no"
        )
        assert line.endswith("; run: dossier db upgrade")
        code, line = one_line_error(capsys, ["db", "current"])
        assert code == EXIT_ERROR
        assert line.endswith("; run: dossier db upgrade")


def test_an_unreachable_warehouse_is_one_line(capsys, home: Settings) -> None:
    url = "postgresql+psycopg://nobody@127.0.0.1:1/none"
    with override(warehouse_url=url):
        code, line = one_line_error(capsys, ["lender", "list"])
    assert code == EXIT_ERROR
    assert line.startswith(f"dossier: error: cannot use the warehouse at {url}: ")
    assert line.endswith("; check DOSSIER_WAREHOUSE_URL and that the database is up")


def test_verbose_adds_the_traceback(capsys, seeded: Settings) -> None:
    capsys.readouterr()
    assert main(["-v", "lender", "status", "--lender", "nobody"]) == EXIT_ERROR
    err = capsys.readouterr().err
    assert err.startswith("Traceback (most recent call last):")
    assert err.endswith("dossier: error: unknown lender 'nobody'\n")


# --- real processes: settings are read from the environment once per process ------------------------


def dossier(env: dict[str, str], *argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "dossier.cli", *argv],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.mark.parametrize(
    ("variable", "value", "message"),
    [
        ("DOSSIER_SHARD_COUNT", "abc", "Input should be a valid integer"),
        ("DOSSIER_SHARD_COUNT", "0", "Input should be greater than or equal to 1"),
        ("DOSSIER_SANDBOX_FAULT_RATE", "2", "Input should be less than or equal to 1"),
        ("DOSSIER_HTTP_TIMEOUT", "soon", "Input should be a valid number"),
        ("DOSSIER_LOG_LEVEL", "LOUD", "expected one of DEBUG, INFO, WARNING, ERROR, CRITICAL"),
        ("DOSSIER_WAREHOUSE_URL", "warehouse.db", "not a SQLAlchemy URL"),
        ("DOSSIER_SANDBOX_URL", "localhost:8765", "expected an http:// or https:// URL"),
    ],
)
def test_a_bad_setting_is_named_at_start_up(tmp_path: Path, variable: str, value: str, message: str) -> None:
    done = dossier({"DOSSIER_HOME": str(tmp_path / "var"), variable: value}, "status")
    assert done.returncode == EXIT_ERROR
    assert done.stdout == ""
    assert done.stderr.startswith(f"dossier: error: {variable}={value!r} is not valid: ")
    assert message in done.stderr
    assert done.stderr.count("\n") == 1


def test_a_home_that_is_a_file_is_named(tmp_path: Path) -> None:
    (tmp_path / "home").write_text("a file")
    done = dossier({"DOSSIER_HOME": str(tmp_path / "home")}, "db", "upgrade")
    assert (done.returncode, done.stderr) == (
        EXIT_ERROR,
        f"dossier: error: DOSSIER_HOME={str(tmp_path / 'home')!r} is a file; name a folder (it is created if "
        "missing)\n",
    )


def test_a_real_process_answers_a_bad_date_and_an_unknown_lender(tmp_path: Path) -> None:
    env = {"DOSSIER_HOME": str(tmp_path / "var")}
    assert dossier(env, "db", "upgrade").returncode == EXIT_OK
    done = dossier(env, "status", "--as-of", "2026-02-30")
    assert (done.returncode, done.stderr) == (
        EXIT_ERROR,
        "dossier: error: as-of date '2026-02-30' is not a date of the calendar (day is out of range for month); "
        "give YYYY-MM-DD\n",
    )
    done = dossier(env, "lender", "pull", "--lender", "nobody", "--out", str(tmp_path / "inbox"))
    assert (done.returncode, done.stderr) == (EXIT_ERROR, "dossier: error: unknown lender 'nobody'\n")


def test_sandbox_serve_on_a_port_in_use_is_one_line(capsys, home: Settings) -> None:
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        code, line = one_line_error(capsys, ["sandbox", "serve", "--port", str(port), "--smes", "2"])
    assert code == EXIT_ERROR
    assert (
        line
        == f"dossier: error: cannot listen on 127.0.0.1:{port} (Address already in use); pick another --port"
    )
