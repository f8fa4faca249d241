"""``dossier score-ratios``: a file laid out like the public one, scored and written back."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest

from dossier.cli import main
from evaluation.ratios import ratios_from_items
from evaluation.score_ratios import score_ratios_file
from evaluation.statement_model import STATEMENT_CODES

HEADER = [f"attr{i}" for i in range(1, 65)] + ["bankrupt", "firm"]


def _row(values: dict[str, str], firm: str) -> dict[str, str]:
    row = dict.fromkeys(HEADER, "")
    return row | values | {"firm": firm, "bankrupt": "0"}


def _ratios(year: dict[str, float], balances: dict[str, float], sales_prev: float) -> dict[str, str]:
    """The model's ratios of one year of statements, as the text cells of a CSV row."""
    values = ratios_from_items(
        {k: np.array([v]) for k, v in year.items()},
        {k: np.array([v]) for k, v in balances.items()},
        sales_prev=np.array([sales_prev]),
        gross_profit_3y=np.array([np.nan]),
    )
    return {k: "" if np.isnan(v[0]) else repr(float(v[0])) for k, v in values.items()}


# A profitable, modestly indebted firm and a loss-making one whose liabilities exceed its assets.
SOUND = _ratios(
    {"revenue": 120e3, "cost_of_sales": 72e3, "operating_expenses": 24e3, "depreciation": 6e3}
    | {"interest_expense": 3e3, "tax_expense": 3e3, "net_profit": 12e3},
    {"total_assets": 50e3, "total_liabilities": 30e3, "current_assets": 20e3, "current_liabilities": 10e3}
    | {"inventory": 7e3, "receivables": 8e3, "cash": 5e3, "equity": 20e3},
    sales_prev=96e3,
)
WEAK = _ratios(
    {"revenue": 100e3, "cost_of_sales": 80e3, "operating_expenses": 25e3, "depreciation": 5e3}
    | {"interest_expense": 4e3, "tax_expense": 0.0, "net_profit": -14e3},
    {"total_assets": 50e3, "total_liabilities": 55e3, "current_assets": 12e3, "current_liabilities": 30e3}
    | {"inventory": 6e3, "receivables": 5e3, "cash": 500.0, "equity": -5e3},
    sales_prev=125e3,
)


def _write(path: Path, rows: list[dict[str, str]]) -> Path:
    with path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=HEADER)
        writer.writeheader()
        writer.writerows(rows)
    return path


def _read(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as handle:
        return list(csv.DictReader(handle))


def test_rows_are_scored_and_written_back_with_every_input_column(tmp_path: Path) -> None:
    source = _write(
        tmp_path / "in.csv",
        [
            _row(SOUND, "sound, Ltd"),
            _row(WEAK, "weak"),
            _row(SOUND | {"attr5": "n/a", "attr7": "oops"}, "typo"),
            _row({"attr5": "3.1"}, "nothing the model reads"),
        ],
    )

    assert score_ratios_file(source, tmp_path / "out.csv") == (4, 2)

    rows = _read(tmp_path / "out.csv")
    assert list(rows[0]) == [*HEADER, "pd_12m", "grade", "reason_codes", "score_error"]
    assert [r["firm"] for r in rows] == ["sound, Ltd", "weak", "typo", "nothing the model reads"]
    assert rows[2]["attr5"] == "n/a"
    assert rows[3]["attr5"] == "3.1"
    sound, weak, typo, empty = rows
    assert 0 < float(sound["pd_12m"]) < float(weak["pd_12m"]) < 1
    assert sound["grade"] in "ABC"
    assert weak["grade"] in "DE"
    codes = weak["reason_codes"].split(";")
    assert 1 <= len(codes) <= 4
    assert set(codes) <= set(STATEMENT_CODES)
    assert sound["score_error"] == weak["score_error"] == ""
    assert typo | {"pd_12m": "", "grade": "", "reason_codes": ""} == typo
    assert typo["score_error"] == "attr7: 'oops' is not a finite number"
    assert empty["score_error"] == "no ratio the model reads is present"
    assert empty["pd_12m"] == ""


def test_the_command_reports_what_it_scored(tmp_path: Path, capsys) -> None:
    source = _write(tmp_path / "in.csv", [_row(SOUND, "a"), _row({"attr2": "inf"}, "b")])

    assert main(["score-ratios", str(source), str(tmp_path / "out.csv")]) == 0

    assert (
        capsys.readouterr().out.strip()
        == f"scored 1 of 2 rows into {tmp_path / 'out.csv'} (1 with a score_error)"
    )
    assert _read(tmp_path / "out.csv")[1]["score_error"] == "attr2: 'inf' is not a finite number"


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (None, "no such file"),
        ("firm,bankrupt\nx,0\n", "no ratio column (attr1..attr64) in the header"),
        ("", "not a readable CSV file"),
    ],
)
def test_an_unusable_file_is_one_line_and_exit_2(tmp_path: Path, capsys, content, message) -> None:
    source = tmp_path / "in.csv"
    if content is not None:
        source.write_text(content)

    assert main(["score-ratios", str(source), str(tmp_path / "out.csv")]) == 2

    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert message in err
    assert str(source) in err
    assert not (tmp_path / "out.csv").exists()
