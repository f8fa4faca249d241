"""Outcomes lenders report, through ``dossier outcomes import|export``, on a published and pulled warehouse.

Two SMEs are published (:mod:`published_world`); SME-000001's dossier is delivered to northwind,
SME-000002's to harbor. A good file is stored whole and again without duplicates; each kind of bad
input is refused in one line naming file, row and field, with exit 2 and nothing stored; harbor's
dossier cannot be reported on by northwind.
"""

from __future__ import annotations

import csv
import datetime as dt
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from published_world import NOW, publish_books
from sqlalchemy import select

from dossier.cli import main
from dossier.settings import for_home, override
from evaluation.statement_scoring import ADJUSTMENT_INPUTS
from evaluation.train import read_outcomes
from warehouse.db import make_engine, session_scope
from warehouse.feed import pull
from warehouse.models import DossierVersion, Outcome
from warehouse.storage import Store

RECIPIENTS = {"SME-000001": "northwind", "SME-000002": "harbor"}


@pytest.fixture
def world(warehouse_url: str, tmp_path: Path) -> Iterator[dict[str, Any]]:
    settings = for_home(tmp_path / "var", warehouse_url=warehouse_url, shard_count=1)
    engine = make_engine(warehouse_url)
    with override(settings):
        store = Store.from_settings()
        publish_books(engine, store, {"SME-000001": 0.1, "SME-000002": -0.1}, RECIPIENTS)
        for lender in ("northwind", "harbor"):
            with session_scope(engine) as session:
                pull(
                    session,
                    store,
                    lender_id=lender,
                    out_dir=tmp_path / lender,
                    now=NOW + dt.timedelta(hours=1),
                )
        with session_scope(engine) as session:
            versions = {v.sme_id: v for v in session.scalars(select(DossierVersion))}
            dossiers = {s: (v.dossier_id, v.pd_12m, v.grade, v.model_version) for s, v in versions.items()}
        yield {"dir": tmp_path, "dossiers": dossiers}
    engine.dispose()


def write(path: Path, rows: list[dict[str, str]], header: list[str] | None = None) -> Path:
    with path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=header or list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return path


def stored() -> list[tuple]:
    with session_scope() as session:
        return [
            (o.lender_id, o.sme_id, o.dossier_id, o.outcome, o.outcome_date, o.amount)
            for o in session.scalars(select(Outcome).order_by(Outcome.dossier_id, Outcome.outcome_date))
        ]


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    capsys.readouterr()
    status = main(list(argv))
    out, err = capsys.readouterr()
    return status, out, err


def test_a_good_file_is_stored_and_a_repeat_changes_nothing(world, capsys) -> None:
    dossier_id = world["dossiers"]["SME-000001"][0]
    good = write(
        world["dir"] / "outcomes.csv",
        [
            {
                "dossier_id": dossier_id,
                "sme_id": "",
                "outcome": "current",
                "outcome_date": "2026-11-20",
                "amount": "5000",
            },
            {
                "dossier_id": "",
                "sme_id": "SME-000001",
                "outcome": "Repaid",
                "outcome_date": "2026-11-25",
                "amount": "",
            },
        ],
    )
    assert run(capsys, "outcomes", "import", str(good), "--lender", "northwind") == (
        0,
        f"outcomes from {good}: 2 new, 0 updated, 0 already recorded\n",
        "",
    )
    expected = [
        ("northwind", "SME-000001", dossier_id, "current", dt.date(2026, 11, 20), 5000.0),
        ("northwind", "SME-000001", dossier_id, "repaid", dt.date(2026, 11, 25), None),
    ]
    assert stored() == expected
    assert run(capsys, "outcomes", "import", str(good), "--lender", "northwind")[1] == (
        f"outcomes from {good}: 0 new, 0 updated, 2 already recorded\n"
    )
    assert stored() == expected

    out = world["dir"] / "export.csv"
    assert run(capsys, "outcomes", "export", str(out)) == (0, f"2 outcomes written to {out}\n", "")
    _id, pd_12m, grade, model_version = world["dossiers"]["SME-000001"]
    with out.open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert rows == [
        {
            "lender_id": "northwind",
            "dossier_id": dossier_id,
            "sme_id": "SME-000001",
            "outcome": outcome,
            "outcome_date": day,
            "amount": amount,
            "as_of_date": "2026-11-01",
            "model_version": model_version,
            "pd_12m": str(pd_12m),
            "grade": grade,
            # The inputs of the behavioural adjustments, from the published dossier (books only).
            "months_of_accounts": "30",
            **dict.fromkeys(ADJUSTMENT_INPUTS[1:], ""),
        }
        for outcome, day, amount in (("current", "2026-11-20", "5000.0"), ("repaid", "2026-11-25", ""))
    ]
    assert read_outcomes(out)[["dossier_id", "outcome", "pd_12m", "months_of_accounts"]].to_dict(
        "records"
    ) == [
        {"dossier_id": dossier_id, "outcome": outcome, "pd_12m": pd_12m, "months_of_accounts": 30.0}
        for outcome in ("current", "repaid")
    ]


def test_a_changed_amount_is_updated_not_duplicated(world, capsys) -> None:
    first = write(
        world["dir"] / "a.csv",
        [
            {
                "lender_id": "northwind",
                "sme_id": "SME-000001",
                "outcome": "defaulted",
                "outcome_date": "2026-11-20",
                "amount": "100",
            }
        ],
    )
    assert run(capsys, "outcomes", "import", str(first))[0] == 0
    again = write(
        world["dir"] / "b.csv",
        [
            {
                "lender_id": "northwind",
                "sme_id": "SME-000001",
                "outcome": "defaulted",
                "outcome_date": "2026-11-20",
                "amount": "250.5",
            }
        ],
    )
    assert (
        run(capsys, "outcomes", "import", str(again))[1]
        == f"outcomes from {again}: 0 new, 1 updated, 0 already recorded\n"
    )
    dossier_id = world["dossiers"]["SME-000001"][0]
    assert stored() == [("northwind", "SME-000001", dossier_id, "defaulted", dt.date(2026, 11, 20), 250.5)]


ROW = {
    "lender_id": "northwind",
    "dossier_id": "",
    "sme_id": "SME-000001",
    "outcome": "repaid",
    "outcome_date": "2026-11-20",
    "amount": "10",
}


@pytest.mark.parametrize(
    ("change", "field", "message"),
    [
        ({"outcome": "late"}, "outcome", "'late' is not one of repaid, defaulted, current"),
        ({"outcome_date": "20/11/2026"}, "outcome_date", "'20/11/2026' is not a date YYYY-MM-DD"),
        ({"outcome_date": "2999-01-01"}, "outcome_date", "2999-01-01 is in the future"),
        ({"amount": "ten"}, "amount", "'ten' is not a number"),
        ({"amount": "-5"}, "amount", "'-5' is not an amount of zero or more"),
        ({"amount": "nan"}, "amount", "'nan' is not an amount of zero or more"),
        ({"sme_id": ""}, "dossier_id", "empty, and so is sme_id: name the dossier or the SME"),
        ({"lender_id": ""}, "lender_id", "empty, and no --lender was given"),
        ({"lender_id": "nobody"}, "lender_id", "no lender 'nobody'"),
        (
            {"sme_id": "SME-000009"},
            "sme_id",
            "no dossier of 'SME-000009' was delivered to lender 'northwind'",
        ),
        (
            {"dossier_id": "SME-000001:nope"},
            "dossier_id",
            "'SME-000001:nope' was not delivered to lender 'northwind'",
        ),
    ],
)
def test_each_bad_row_is_named_and_nothing_is_stored(world, capsys, change, field, message) -> None:
    good = dict(ROW, outcome_date="2026-11-19")
    path = write(world["dir"] / "bad.csv", [good, dict(ROW, **change)])
    assert run(capsys, "outcomes", "import", str(path)) == (
        2,
        "",
        f"dossier: error: {path}: row 3: field {field}: {message}\n",
    )
    assert stored() == []


def test_another_lenders_dossier_is_refused(world, capsys) -> None:
    theirs = world["dossiers"]["SME-000002"][0]
    path = write(world["dir"] / "o.csv", [dict(ROW, sme_id="", dossier_id=theirs)])
    assert run(capsys, "outcomes", "import", str(path)) == (
        2,
        "",
        f"dossier: error: {path}: row 2: field dossier_id: {theirs!r} was not delivered to lender 'northwind'\n",
    )
    by_sme = write(world["dir"] / "s.csv", [dict(ROW, sme_id="SME-000002")])
    assert run(capsys, "outcomes", "import", str(by_sme))[2] == (
        f"dossier: error: {by_sme}: row 2: field sme_id: no dossier of 'SME-000002' was delivered to lender 'northwind'\n"
    )
    mismatch = write(world["dir"] / "m.csv", [dict(ROW, lender_id="harbor")])
    assert run(capsys, "outcomes", "import", str(mismatch), "--lender", "northwind")[2] == (
        f"dossier: error: {mismatch}: row 2: field lender_id: 'harbor' is not the lender reporting ('northwind')\n"
    )
    assert stored() == []


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("", "empty file, expected a header row"),
        ("sme_id,outcome\nSME-000001,repaid\n", "header: missing column outcome_date"),
        ("outcome,outcome_date\nrepaid,2026-11-01\n", "header: needs a dossier_id or an sme_id column"),
        (
            "sme_id,outcome,outcome_date,colour\nSME-000001,repaid,2026-11-01,red\n",
            "header: unknown column colour (known: outcome, outcome_date, lender_id, dossier_id, sme_id, amount)",
        ),
        ("sme_id,outcome,outcome_date\n", "no outcome rows after the header"),
    ],
)
def test_a_bad_file_is_named_in_one_line(world, capsys, content, message) -> None:
    path = world["dir"] / "f.csv"
    path.write_text(content)
    assert run(capsys, "outcomes", "import", str(path), "--lender", "northwind") == (
        2,
        "",
        f"dossier: error: {path}: {message}\n",
    )


def test_a_missing_or_binary_file_is_named(world, capsys) -> None:
    missing = world["dir"] / "absent.csv"
    assert run(capsys, "outcomes", "import", str(missing))[1:] == (
        "",
        f"dossier: error: {missing}: no such file\n",
    )
    binary = world["dir"] / "x.csv"
    binary.write_bytes(b"\xff\xfe\x00garbage")
    assert run(capsys, "outcomes", "import", str(binary))[1:] == (
        "",
        f"dossier: error: {binary}: not UTF-8 text\n",
    )
