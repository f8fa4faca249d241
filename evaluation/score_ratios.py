"""Score a CSV of ratios laid out like the public training file (``dossier score-ratios``).

The input has a header row and columns ``attr1``..``attr64`` (any of them may be empty, or absent:
an absent column is missing in every row), any other columns, and perhaps the ``bankrupt`` label,
which is ignored. The output is the input, every column and cell unchanged, with four columns
appended:

* ``pd_12m``: the statement model's calibrated probability of bankruptcy within 12 months;
* ``grade``: A-E by the published PD bands (``evaluation/MODEL_CARD.md``);
* ``reason_codes``: up to four codes that raised the PD most, strongest first, joined by ``;``;
* ``score_error``: empty when the row was scored; otherwise why it was not (``pd_12m``, ``grade``
  and ``reason_codes`` are then empty): a ratio the model reads that is not a finite number, or a
  row in which no ratio the model reads is present.

An unreadable file, or one without any ``attrN`` column, raises :class:`ScoreRatiosError` naming it.
"""

from __future__ import annotations

import csv
import os
from pathlib import Path

import numpy as np
import pandas as pd

from evaluation.scoring import grade, reason_codes
from evaluation.statement_model import RATIOS, STATEMENT_TEXTS, StatementModel, default_statement_model
from warehouse.errors import DossierError

OUTPUT_COLUMNS = ("pd_12m", "grade", "reason_codes", "score_error")
"""Columns appended to the input, in order."""


class ScoreRatiosError(DossierError, ValueError):
    """The input file cannot be scored at all (unreadable, no header, no ratio column)."""


def _read(path: Path) -> pd.DataFrame:
    """Every cell as text, exactly as written (empty cells stay empty strings)."""
    try:
        frame = pd.read_csv(path, dtype=str, keep_default_na=False, na_filter=False)
    except FileNotFoundError:
        raise ScoreRatiosError(f"{path}: no such file") from None
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as error:
        raise ScoreRatiosError(f"{path}: not a readable CSV file ({str(error).splitlines()[0]})") from None
    if not any(c.startswith("attr") and c[4:].isdigit() for c in frame.columns):
        raise ScoreRatiosError(f"{path}: no ratio column (attr1..attr64) in the header")
    return frame


def parse_ratios(frame: pd.DataFrame) -> tuple[pd.DataFrame, pd.Series]:
    """The model's ratios as floats (empty or absent = missing) and, per row, why it cannot be scored.

    The reason names the row's first bad ratio and its text, e.g. ``attr7: 'n/a' is not a number``;
    it is empty for a usable row.
    """
    problems = pd.Series("", index=frame.index, dtype=object)
    values = {}
    for ratio in RATIOS:
        if ratio.attr not in frame.columns:
            values[ratio.attr] = np.full(len(frame), np.nan)
            continue
        text = frame[ratio.attr].astype(str).str.strip()
        number = pd.to_numeric(text.where(text != "", None), errors="coerce").astype(np.float64)
        bad = (text != "") & ~np.isfinite(number.fillna(0.0))
        bad |= (text != "") & number.isna()
        first = bad & (problems == "")
        problems[first] = [f"{ratio.attr}: {t!r} is not a finite number" for t in text[first]]
        values[ratio.attr] = number.where(~bad).to_numpy()
    ratios = pd.DataFrame(values, index=frame.index)
    empty = ratios.isna().all(axis=1) & (problems == "")
    problems[empty] = "no ratio the model reads is present"
    return ratios, problems


def score_ratio_frame(frame: pd.DataFrame, model: StatementModel | None = None) -> pd.DataFrame:
    """``frame`` with :data:`OUTPUT_COLUMNS` appended (see the module docstring)."""
    model = default_statement_model() if model is None else model
    ratios, problems = parse_ratios(frame)
    usable = (problems == "").to_numpy()
    pd_12m = pd.Series(np.nan, index=frame.index)
    grades = pd.Series("", index=frame.index, dtype=object)
    codes = pd.Series("", index=frame.index, dtype=object)
    if usable.any():
        output = model.score(ratios[usable])
        pd_12m[usable] = output.pd_12m.to_numpy()
        grades[usable] = grade(output.pd_12m).to_numpy(dtype=object)
        reasons = reason_codes(output.contributions, top=4, texts=STATEMENT_TEXTS)["reason_codes"]
        codes[usable] = [";".join(r) for r in reasons.tolist()]
    extra = pd.DataFrame(
        {
            "pd_12m": [f"{p:.6f}" if np.isfinite(p) else "" for p in pd_12m],
            "grade": grades,
            "reason_codes": codes,
            "score_error": problems,
        },
        index=frame.index,
    )
    kept = frame.drop(columns=[c for c in OUTPUT_COLUMNS if c in frame.columns])
    return pd.concat([kept, extra], axis=1)


def score_ratios_file(source: Path, target: Path, model: StatementModel | None = None) -> tuple[int, int]:
    """Score ``source`` into ``target`` (written whole, then renamed); returns (rows, rows not scored)."""
    scored = score_ratio_frame(_read(source), model)
    partial = target.with_name(f".{target.name}.partial")
    try:
        scored.to_csv(partial, index=False, quoting=csv.QUOTE_MINIMAL)
        os.replace(partial, target)
    except OSError as error:
        partial.unlink(missing_ok=True)
        raise ScoreRatiosError(f"{target}: cannot write ({error.strerror})") from None
    return len(scored), int((scored["score_error"] != "").sum())


__all__ = ["OUTPUT_COLUMNS", "ScoreRatiosError", "parse_ratios", "score_ratio_frame", "score_ratios_file"]
