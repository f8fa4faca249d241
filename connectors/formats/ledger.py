"""General-ledger and trial-balance exports (CSV or XLSX) -> ``trial_balance`` (and monthly statements).

Bookkeeping programs export their ledger as a table: one row per posting (account code, name,
date, an amount or a debit and a credit column) or, for a trial balance, one row per account with
its balance. The columns are found by their header names (:data:`ALIASES`, English and
Scandinavian names, any case) or given as ``columns={"account": "Konto", ...}``.

* CSV: encoding from the BOM, else UTF-8, else Windows-1252; the delimiter sniffed among
  ``, ; TAB |``. XLSX: the first sheet, read with ``openpyxl`` in read-only mode (formulas as
  their cached values).
* Amounts: ``1234.50``, ``1 234,50``, ``1.234,50``, ``(12.00)`` (negative) are all read.
* Dates: ISO ``2024-03-31``, or day first ``31.03.2024`` / ``31/03/2024`` (one format for the column).

A ledger with dates gives a ``trial_balance`` per account per month; with a ``currency`` (a column
or the ``currency`` argument) it is also mapped through the standard account groupings of
:mod:`connectors.formats.saft_no` (the first two digits of the account code) into
``monthly_financials``. A trial balance without dates gives one ``trial_balance`` row per account.
"""

from __future__ import annotations

import csv
import io
import re
from typing import Any

import pandas as pd

from connectors.formats import saft_no
from connectors.formats.base import (
    DEFAULT_LIMITS,
    FIRST_YEAR,
    LAST_YEAR,
    Budget,
    FormatError,
    Limits,
    Parsed,
    Source,
    canonical_frame,
    decode_text,
    read_all,
)
from warehouse.canonical import MONTHLY_FINANCIALS

NAME = "ledger"
ALIASES: dict[str, tuple[str, ...]] = {
    "account": (
        "account",
        "account code",
        "account_code",
        "account id",
        "accountid",
        "account_id",
        "account no",
        "account number",
        "gl account",
        "gl code",
        "konto",
        "kontonr",
        "kontonummer",
        "code",
    ),
    "name": (
        "account name",
        "account_name",
        "name",
        "account description",
        "accountdescription",
        "kontonavn",
        "beskrivelse",
        "description",
    ),
    "date": (
        "date",
        "posting date",
        "transaction date",
        "transactiondate",
        "entry date",
        "dato",
        "bilagsdato",
        "posteringsdato",
    ),
    "amount": ("amount", "net amount", "beløp", "belop", "belopp", "value", "sum"),
    "debit": ("debit", "debit amount", "dr", "debet"),
    "credit": ("credit", "credit amount", "cr", "kredit"),
    "balance": ("balance", "closing balance", "ending balance", "saldo", "closing", "utgående balanse"),
    "currency": ("currency", "currency code", "valuta"),
}
"""Canonical ledger column -> header names it is recognised by (compared lower-cased and trimmed)."""

AMOUNT = re.compile(r"^\(?-?[\d.,'\s]+\)?-?$")
DATE_FORMATS = ("%Y-%m-%d", "%d.%m.%Y", "%d/%m/%Y", "%Y/%m/%d", "%d-%m-%Y", "%Y%m%d")


def amount(text: Any, *, record: str, field: str) -> float | None:
    """One amount as bookkeeping exports write it.

    >>> [amount(t, record="r", field="f") for t in ("1 234,50", "1.234,50", "1,234.50", "(12.00)", "-7", "")]
    [1234.5, 1234.5, 1234.5, -12.0, -7.0, None]
    """
    if text is None or (isinstance(text, float) and text != text):
        return None
    if isinstance(text, int | float):
        return float(text)
    value = str(text).strip().replace("\u00a0", " ")
    if not value:
        return None
    if not AMOUNT.match(value):
        raise FormatError(f"not an amount: {value[:40]!r}", record=record, field=field)
    negative = (value.startswith("(") and value.endswith(")")) or value.endswith("-")
    digits = value.strip("()").rstrip("-").replace(" ", "").replace("'", "")
    if "," in digits and "." in digits:
        decimal = "," if digits.rfind(",") > digits.rfind(".") else "."
    elif "," in digits:
        decimal = "," if re.search(r",\d{1,2}$", digits) else ""
    else:
        decimal = "." if re.search(r"\.\d{1,2}$", digits) or digits.count(".") == 1 else ""
    thousands = {",": ".", ".": ",", "": ",."}[decimal]
    for mark in thousands:
        digits = digits.replace(mark, "")
    digits = digits.replace(",", ".")
    try:
        number = float(digits)
    except ValueError:
        raise FormatError(f"not an amount: {value[:40]!r}", record=record, field=field) from None
    if abs(number) > 1e15:
        raise FormatError(f"absurd amount: {value[:40]!r}", record=record, field=field)
    return -abs(number) if negative else number


def read_table(data: bytes, limits: Limits) -> pd.DataFrame:
    """The export as text cells (first row = header), CSV or XLSX."""
    if data[:4] == b"PK\x03\x04":
        return _read_xlsx(data, limits)
    text = decode_text(data)
    if not text.strip():
        raise FormatError("empty file")
    sample = text[:8192]
    try:
        dialect = csv.Sniffer().sniff(sample, delimiters=",;\t|")
        delimiter = dialect.delimiter
    except csv.Error:
        delimiter = ","
    rows = []
    reader = csv.reader(io.StringIO(text), delimiter=delimiter)
    try:
        for index, row in enumerate(reader):
            if index > limits.max_records:
                raise FormatError(
                    f"more than {limits.max_records} records (limit)", record=f"row {index + 1}"
                )
            rows.append(row)
    except csv.Error as error:
        raise FormatError(f"not readable CSV: {error}", record=f"row {reader.line_num}") from None
    return _frame(rows)


def _read_xlsx(data: bytes, limits: Limits) -> pd.DataFrame:
    import zipfile

    from openpyxl import load_workbook

    rows = []
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            expanded = sum(info.file_size for info in archive.infolist())
        if expanded > limits.max_bytes:
            raise FormatError(f"workbook expands beyond {limits.max_bytes} bytes (limit)")
        # openpyxl reads the workbook's XML through defusedxml (DTDs and entities refused).
        workbook = load_workbook(io.BytesIO(data), read_only=True, data_only=True)
        sheet = workbook.worksheets[0]
        for index, row in enumerate(sheet.iter_rows(values_only=True)):  # read-only sheets parse lazily
            if index > limits.max_records:
                raise FormatError(
                    f"more than {limits.max_records} records (limit)", record=f"row {index + 1}"
                )
            rows.append(
                ["" if v is None else (v.isoformat()[:10] if hasattr(v, "isoformat") else v) for v in row]
            )
        workbook.close()
    except FormatError:
        raise
    except Exception as error:  # openpyxl signals a broken workbook with many exception types
        raise FormatError(f"not a readable XLSX workbook ({type(error).__name__})") from None
    return _frame(rows)


def _frame(rows: list[list[Any]]) -> pd.DataFrame:
    rows = [row for row in rows if any(str(cell).strip() for cell in row)]
    if len(rows) < 2:
        raise FormatError("no header and data rows")
    header = _unique_header([str(cell).strip() for cell in rows[0]])
    width = len(header)
    body = [list(row[:width]) + [""] * (width - len(row)) for row in rows[1:]]
    return pd.DataFrame(body, columns=header, dtype="object")


def _unique_header(names: list[str]) -> list[str]:
    """Header names made unique: a blank one is ``column N``, a repeat ``Name (2)`` (the first keeps its name).

    >>> _unique_header(["Account", "Account", "", "Amount", ""])
    ['Account', 'Account (2)', 'column 3', 'Amount', 'column 5']
    """
    seen: dict[str, int] = {}
    unique = []
    for position, name in enumerate(names, start=1):
        name = name or f"column {position}"
        seen[name] = seen.get(name, 0) + 1
        unique.append(name if seen[name] == 1 else f"{name} ({seen[name]})")
    return unique


def column_map(headers: list[str], given: dict[str, str] | None = None) -> dict[str, str]:
    """Ledger column -> header of the file: ``given`` first, then :data:`ALIASES`.

    >>> column_map(["Konto", "Kontonavn", "Dato", "Debet", "Kredit"])
    {'account': 'Konto', 'name': 'Kontonavn', 'date': 'Dato', 'debit': 'Debet', 'credit': 'Kredit'}
    """
    found: dict[str, str] = {}
    lowered = {h.lower().strip().lstrip("\ufeff"): h for h in headers}
    for column, names in ALIASES.items():
        if given and column in given:
            if given[column] not in headers:
                raise FormatError(
                    f"no column {given[column]!r} in the header", record="row 1", field=given[column]
                )
            found[column] = given[column]
            continue
        for name in names:
            if name in lowered and lowered[name] not in found.values():
                found[column] = lowered[name]
                break
    if "account" not in found:
        raise FormatError(f"no account column found among {headers[:12]}", record="row 1")
    if not ({"amount"} <= set(found) or {"debit", "credit"} <= set(found) or "balance" in found):
        raise FormatError("no amount, debit and credit, or balance column found", record="row 1")
    return found


def _dates(values: pd.Series) -> tuple[pd.Series, str]:
    text = values.astype("str").str.strip()
    present = text[text != ""]
    for fmt in DATE_FORMATS:
        parsed = pd.to_datetime(present, format=fmt, errors="coerce")
        if parsed.notna().all():
            outside = parsed[(parsed.dt.year < FIRST_YEAR) | (parsed.dt.year > LAST_YEAR)]
            if len(outside):
                row = int(outside.index[0]) + 2
                raise FormatError(
                    f"implausible date {present[outside.index[0]][:40]!r} (outside {FIRST_YEAR}-{LAST_YEAR})",
                    record=f"row {row}",
                    field=values.name,
                )
            return pd.to_datetime(text.where(text != ""), format=fmt, errors="coerce"), fmt
    bad = present[pd.to_datetime(present, format=DATE_FORMATS[0], errors="coerce").isna()]
    row = int(bad.index[0]) + 2
    raise FormatError(f"not a date: {bad.iloc[0][:40]!r}", record=f"row {row}", field=values.name)


def parse(
    source: Source,
    *,
    sme_id: str = "",
    raw_sha256: str = "",
    limits: Limits = DEFAULT_LIMITS,
    columns: dict[str, str] | None = None,
    currency: str | None = None,
) -> Parsed:
    """A ledger or trial-balance export -> ``trial_balance`` (+ ``monthly_financials`` when dated and priced)."""
    table = read_table(read_all(source, limits), limits)
    mapping = column_map(list(table.columns), columns)
    budget = Budget(limits)
    budget.count("rows", len(table))
    accounts = table[mapping["account"]].astype("str").str.strip()
    missing = accounts == ""
    if missing.any():
        raise FormatError("missing", record=f"row {int(missing.idxmax()) + 2}", field=mapping["account"])

    def values(column: str) -> pd.Series:
        header = mapping[column]
        return pd.Series(
            [
                amount(v, record=f"row {i + 2}", field=header)
                for i, v in zip(table.index, table[header], strict=True)
            ],
            index=table.index,
            dtype="float64",
        )

    if "debit" in mapping:
        debit, credit = values("debit").fillna(0.0), values("credit").fillna(0.0)
    elif "amount" in mapping:
        signed = values("amount").fillna(0.0)
        debit, credit = signed.clip(lower=0), (-signed).clip(lower=0)
    else:
        debit = credit = pd.Series(0.0, index=table.index)
    names = (
        table[mapping["name"]].astype("str").str.strip()
        if "name" in mapping
        else pd.Series(None, index=table.index)
    )
    file_currency = currency
    if not file_currency and "currency" in mapping:
        codes = set(table[mapping["currency"]].astype("str").str.strip().str.upper()) - {""}
        if len(codes) > 1:
            raise FormatError(f"several currencies in one ledger: {sorted(codes)}", field=mapping["currency"])
        file_currency = codes.pop() if codes else None
    warnings: list[str] = []
    if "date" not in mapping:
        if "balance" not in mapping:
            raise FormatError("a ledger without dates needs a balance column (trial balance)", record="row 1")
        balances = values("balance")
        trial = pd.DataFrame(
            {
                "sme_id": sme_id,
                "account_id": accounts,
                "description": names,
                "group": [saft_no.group_of(a, None, None) for a in accounts],
                "period_month": None,
                "opening": None,
                "debit": debit.round(2),
                "credit": credit.round(2),
                "closing": balances.round(2),
            }
        )
        total = float(balances.sum())
        if abs(total) > saft_no.TOLERANCE:
            warnings.append(f"the trial balance does not balance: balances sum to {total:.2f}")
        return Parsed(
            format=NAME,
            tables={"trial_balance": trial},
            totals={
                "entries": 0,
                "lines": len(trial),
                "total_debit": round(float(debit.sum()), 2),
                "total_credit": round(float(credit.sum()), 2),
            },
            warnings=warnings,
        )
    dates, _ = _dates(table[mapping["date"]])
    undated = dates.isna()
    if undated.any():
        raise FormatError("missing", record=f"row {int(undated.idxmax()) + 2}", field=mapping["date"])
    ledger = saft_no.Ledger(currency=file_currency)
    for account_id, name in zip(accounts, names, strict=True):
        if account_id not in ledger.accounts:
            ledger.accounts[account_id] = saft_no.Account(
                account_id,
                name if isinstance(name, str) else None,
                saft_no.group_of(account_id, None, None),
                0.0,
                None,
            )
    months = dates.dt.to_period("M").dt.to_timestamp()
    for (account_id, month), value in debit.groupby([accounts, months]).sum().items():
        ledger.debit[(account_id, month)] += float(value)
    for (account_id, month), value in credit.groupby([accounts, months]).sum().items():
        ledger.credit[(account_id, month)] += float(value)
    ledger.entries = ledger.lines = len(table)
    ledger.total_debit, ledger.total_credit = float(debit.sum()), float(credit.sum())
    trial = saft_no.trial_balance(ledger)
    warnings += saft_no.checks(ledger, trial)
    tables: dict[str, pd.DataFrame] = {}
    if file_currency:
        statements = saft_no.monthly_statements(trial, file_currency)
        statements["sme_id"] = sme_id
        statements["source_record"] = [f"rows of {m:%Y-%m}" for m in statements["period_month"]]
        statements["raw_sha256"] = raw_sha256
        statements["period_month"] = statements["period_month"].dt.date
        tables[MONTHLY_FINANCIALS.name] = canonical_frame(MONTHLY_FINANCIALS, statements)
    else:
        warnings.append("no currency column or --currency: monthly statements not built (trial balance only)")
    trial.insert(0, "sme_id", sme_id)
    trial["period_month"] = pd.to_datetime(trial["period_month"]).dt.date
    tables["trial_balance"] = trial
    return Parsed(
        format=NAME,
        tables=tables,
        totals={
            "entries": len(table),
            "lines": len(table),
            "total_debit": round(ledger.total_debit, 2),
            "total_credit": round(ledger.total_credit, 2),
        },
        warnings=warnings,
    )


def detect(head: bytes, root: tuple[str, str]) -> bool:
    if head[:4] == b"PK\x03\x04":
        return True
    if root[1] or head.lstrip(b"\xef\xbb\xbf \t\r\n")[:1] in (b"{", b"[", b"<"):
        return False
    try:
        first = decode_text(head.split(b"\n", 1)[0]).lower()
    except FormatError:
        return False
    cells = {cell.strip().strip('"').lstrip("\ufeff") for cell in re.split(r"[,;\t|]", first)}
    has_account = bool(cells & set(ALIASES["account"]))
    has_money = bool(cells & {*ALIASES["amount"], *ALIASES["debit"], *ALIASES["credit"], *ALIASES["balance"]})
    return has_account and has_money
