"""Outcomes lenders report (repaid, defaulted, current, with a date), checked against what they were delivered.

A lender reports on a dossier it was delivered (``dossier_id``) or on an SME one of whose dossiers
it was delivered (``sme_id``; the outcome is then pinned to the latest dossier of that SME delivered
to it on or before ``outcome_date``, else the earliest delivered). Nobody reports on a dossier
that went to another lender. Every row of a file is checked before any is written, and the first
bad one is named (file, row, field); a file is taken whole or not at all. Reporting the same
lender, dossier, outcome and date again updates the amount, so an import may be repeated.

CSV header (order free): ``lender_id`` (optional; else ``--lender``), ``dossier_id`` or ``sme_id``
(at least one column; each row names one), ``outcome``, ``outcome_date`` (YYYY-MM-DD), ``amount``
(optional, not negative).
"""

from __future__ import annotations

import csv
import datetime as dt
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from warehouse.errors import DossierError
from warehouse.models import Delivery, DossierVersion, Lender, Outcome

OUTCOMES = ("repaid", "defaulted", "current")
"""What a lender may report: repaid in full, defaulted, or still current (performing)."""
REQUIRED = ("outcome", "outcome_date")
OPTIONAL = ("lender_id", "dossier_id", "sme_id", "amount")
EXPORT_COLUMNS = (
    "lender_id",
    "dossier_id",
    "sme_id",
    "outcome",
    "outcome_date",
    "amount",
    "as_of_date",
    "model_version",
    "pd_12m",
    "grade",
)
"""Columns of ``dossier outcomes export``: the outcome beside the score of the dossier it is judged on."""


class OutcomeError(DossierError):
    """A reported outcome refused; the message names the place (file and row, or record) and the field."""


@dataclass(frozen=True)
class Reported:
    """One outcome as reported, before it is checked against the deliveries."""

    where: str
    lender_id: str
    dossier_id: str | None
    sme_id: str | None
    outcome: str
    outcome_date: dt.date
    amount: float | None


def parse_row(where: str, row: Mapping[str, Any], lender: str | None) -> Reported:
    """Check one reported row's values (not yet the deliveries); ``where`` prefixes every error.

    >>> parse_row("f.csv: row 2", {"sme_id": "SME-1", "outcome": "Repaid", "outcome_date": "2026-10-01"}, "nw")
    Reported(where='f.csv: row 2', lender_id='nw', dossier_id=None, sme_id='SME-1', outcome='repaid', outcome_date=datetime.date(2026, 10, 1), amount=None)
    >>> parse_row("f.csv: row 3", {"sme_id": "SME-1", "outcome": "late", "outcome_date": "2026-10-01"}, "nw")
    Traceback (most recent call last):
    ...
    warehouse.outcomes.OutcomeError: f.csv: row 3: field outcome: 'late' is not one of repaid, defaulted, current
    """

    def text(field: str) -> str:
        value = row.get(field)
        return "" if value is None else str(value).strip()

    def fail(field: str, message: str) -> OutcomeError:
        return OutcomeError(f"{where}: field {field}: {message}")

    given_lender = text("lender_id")
    if given_lender and lender and given_lender != lender:
        raise fail("lender_id", f"{given_lender!r} is not the lender reporting ({lender!r})")
    lender_id = given_lender or lender or ""
    if not lender_id:
        raise fail("lender_id", "empty, and no --lender was given")
    dossier_id, sme_id = text("dossier_id") or None, text("sme_id") or None
    if not dossier_id and not sme_id:
        raise fail("dossier_id", "empty, and so is sme_id: name the dossier or the SME")
    outcome = text("outcome").lower()
    if outcome not in OUTCOMES:
        raise fail("outcome", f"{text('outcome')!r} is not one of {', '.join(OUTCOMES)}")
    try:
        outcome_date = dt.date.fromisoformat(text("outcome_date"))
    except ValueError:
        raise fail("outcome_date", f"{text('outcome_date')!r} is not a date YYYY-MM-DD") from None
    if outcome_date > dt.datetime.now(dt.UTC).date():
        raise fail("outcome_date", f"{outcome_date} is in the future")
    amount: float | None = None
    if text("amount"):
        try:
            amount = float(text("amount"))
        except ValueError:
            raise fail("amount", f"{text('amount')!r} is not a number") from None
        if not math.isfinite(amount) or amount < 0:
            raise fail("amount", f"{text('amount')!r} is not an amount of zero or more")
    return Reported(where, lender_id, dossier_id, sme_id, outcome, outcome_date, amount)


def read_file(path: Path, lender: str | None) -> list[Reported]:
    """Every row of an outcomes CSV, checked on its own (:func:`parse_row`); raises on the first bad one."""
    try:
        with path.open(newline="", encoding="utf-8-sig") as handle:
            reader = csv.DictReader(handle)
            header = [h.strip() for h in reader.fieldnames or []]
            missing = [c for c in REQUIRED if c not in header]
            if not header:
                raise OutcomeError(f"{path}: empty file, expected a header row")
            if missing:
                raise OutcomeError(f"{path}: header: missing column {', '.join(missing)}")
            if "dossier_id" not in header and "sme_id" not in header:
                raise OutcomeError(f"{path}: header: needs a dossier_id or an sme_id column")
            unknown = [h for h in header if h not in REQUIRED + OPTIONAL]
            if unknown:
                raise OutcomeError(
                    f"{path}: header: unknown column {', '.join(unknown)} "
                    f"(known: {', '.join(REQUIRED + OPTIONAL)})"
                )
            reader.fieldnames = header
            rows = [
                parse_row(f"{path}: row {reader.line_num}", row, lender)
                for row in reader
                if any((v or "").strip() for v in row.values() if isinstance(v, str))
            ]
    except UnicodeDecodeError:
        raise OutcomeError(f"{path}: not UTF-8 text") from None
    except FileNotFoundError:
        raise OutcomeError(f"{path}: no such file") from None
    except IsADirectoryError:
        raise OutcomeError(f"{path}: is a folder, expected a CSV file") from None
    if not rows:
        raise OutcomeError(f"{path}: no outcome rows after the header")
    return rows


def _delivered(session: Session, lender_ids: Iterable[str]) -> dict[str, list[tuple[str, str, dt.date]]]:
    """Per lender, the dossiers delivered to it: ``(dossier_id, sme_id, as_of_date)``, oldest first."""
    delivered: dict[str, list[tuple[str, str, dt.date]]] = {}
    query = (
        select(
            Delivery.lender_id, DossierVersion.dossier_id, DossierVersion.sme_id, DossierVersion.as_of_date
        )
        .join(DossierVersion, DossierVersion.id == Delivery.dossier_version_id)
        .where(Delivery.lender_id.in_(sorted(set(lender_ids))))
        .order_by(DossierVersion.as_of_date, DossierVersion.dossier_id)
    )
    for lender_id, dossier_id, sme_id, as_of in session.execute(query):
        delivered.setdefault(lender_id, []).append((dossier_id, sme_id, as_of))
    return delivered


def resolve(session: Session, reported: list[Reported]) -> list[dict[str, Any]]:
    """The rows to store: each reported outcome pinned to a dossier delivered to its lender.

    Raises :class:`OutcomeError` naming the row for an unknown lender, a dossier or SME never
    delivered to the reporting lender (another lender's dossier included), or an ``sme_id`` that
    contradicts the ``dossier_id`` of the same row.
    """
    lenders = set(
        session.scalars(select(Lender.lender_id).where(Lender.lender_id.in_({r.lender_id for r in reported})))
    )
    delivered = _delivered(session, lenders)
    rows = []
    for r in reported:
        if r.lender_id not in lenders:
            raise OutcomeError(f"{r.where}: field lender_id: no lender {r.lender_id!r}")
        mine = delivered.get(r.lender_id, [])
        if r.dossier_id:
            match = [d for d in mine if d[0] == r.dossier_id]
            if not match:
                raise OutcomeError(
                    f"{r.where}: field dossier_id: {r.dossier_id!r} was not delivered to lender {r.lender_id!r}"
                )
            if r.sme_id and match[0][1] != r.sme_id:
                raise OutcomeError(
                    f"{r.where}: field sme_id: {r.sme_id!r} is not the SME of dossier {r.dossier_id!r} ({match[0][1]})"
                )
            dossier_id, sme_id = match[0][0], match[0][1]
        else:
            of_sme = [d for d in mine if d[1] == r.sme_id]
            if not of_sme:
                raise OutcomeError(
                    f"{r.where}: field sme_id: no dossier of {r.sme_id!r} was delivered to lender {r.lender_id!r}"
                )
            before = [d for d in of_sme if d[2] <= r.outcome_date]
            dossier_id, sme_id = (before[-1] if before else of_sme[0])[:2]
        rows.append(
            {
                "lender_id": r.lender_id,
                "sme_id": sme_id,
                "dossier_id": dossier_id,
                "outcome": r.outcome,
                "outcome_date": r.outcome_date,
                "amount": r.amount,
            }
        )
    return rows


def store(session: Session, rows: list[dict[str, Any]], source: str) -> dict[str, int]:
    """Insert the rows, or update the amount of those already reported; returns the counts."""
    counts = {"inserted": 0, "updated": 0, "unchanged": 0}
    seen: dict[tuple, Outcome] = {}
    for row in rows:
        key = (row["lender_id"], row["dossier_id"], row["outcome"], row["outcome_date"])
        existing = (
            seen.get(key)
            or session.scalars(
                select(Outcome).where(
                    Outcome.lender_id == key[0],
                    Outcome.dossier_id == key[1],
                    Outcome.outcome == key[2],
                    Outcome.outcome_date == key[3],
                )
            ).first()
        )
        if existing is None:
            existing = Outcome(**row, source=source)
            session.add(existing)
            counts["inserted"] += 1
        elif existing.amount != row["amount"]:
            existing.amount = row["amount"]
            existing.source = source
            counts["updated"] += 1
        else:
            counts["unchanged"] += 1
        seen[key] = existing
    session.flush()
    return counts


def import_file(session: Session, path: Path, lender: str | None = None) -> dict[str, int]:
    """Check every row of ``path`` and store them all (or none); returns inserted/updated/unchanged counts."""
    return store(session, resolve(session, read_file(path, lender)), source=path.name)


def export_rows(session: Session, lender: str | None = None) -> list[dict[str, Any]]:
    """Every stored outcome beside the score of its dossier (:data:`EXPORT_COLUMNS`), for training."""
    query = (
        select(Outcome, DossierVersion)
        .join(DossierVersion, DossierVersion.dossier_id == Outcome.dossier_id)
        .order_by(Outcome.lender_id, Outcome.dossier_id, Outcome.outcome_date, Outcome.outcome)
    )
    if lender:
        query = query.where(Outcome.lender_id == lender)
    return [
        {
            "lender_id": o.lender_id,
            "dossier_id": o.dossier_id,
            "sme_id": o.sme_id,
            "outcome": o.outcome,
            "outcome_date": o.outcome_date.isoformat(),
            "amount": o.amount,
            "as_of_date": v.as_of_date.isoformat(),
            "model_version": v.model_version,
            "pd_12m": v.pd_12m,
            "grade": v.grade,
        }
        for o, v in session.execute(query)
    ]


def write_export(rows: list[dict[str, Any]], path: Path, columns: Sequence[str] = EXPORT_COLUMNS) -> None:
    """Write :func:`export_rows` as CSV (header ``columns``: :data:`EXPORT_COLUMNS` and any the
    caller added to the rows)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(columns))
        writer.writeheader()
        writer.writerows(rows)


__all__ = [
    "EXPORT_COLUMNS",
    "OUTCOMES",
    "OutcomeError",
    "Reported",
    "export_rows",
    "import_file",
    "parse_row",
    "read_file",
    "resolve",
    "store",
    "write_export",
]
