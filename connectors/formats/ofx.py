"""OFX bank statements (1.x SGML with unclosed tags, 2.x XML) -> ``bank_transactions``.

``ofxtools`` reads the header and the markup of both generations and types every value. Each
statement (``STMTRS`` for bank accounts, ``CCSTMTRS`` for credit cards; a file may hold several)
gives one row per ``STMTTRN`` (entry id ``FITID``, signed ``TRNAMT``) and one row per balance it
reports (``LEDGERBAL``, ``AVAILBAL``; entry id = the as-of date). Dates (``DTPOSTED``,
``DTASOF``) are the bank's calendar dates as written (``20090401122017.000[-5:EST]`` is
2009-04-01), not shifted to UTC. Payee and
memo are trimmed (CDATA often carries trailing blanks).

Warnings: a transaction id seen twice in one account (the repeat is dropped when equal, an error
when different), and a statement whose balance is missing.

>>> detect(b"OFXHEADER:100\\nDATA:OFXSGML\\n", ("", ""))
True
"""

from __future__ import annotations

import io
import logging
import re
import warnings as python_warnings
from typing import Any

import pandas as pd

from connectors.formats.base import (
    DEFAULT_LIMITS,
    Budget,
    FormatError,
    Limits,
    Parsed,
    Source,
    canonical_frame,
    decode_text,
    read_all,
    sha256_of,
)
from warehouse.canonical import BANK_TRANSACTIONS

NAME = "ofx"
logging.getLogger("ofxtools").setLevel(logging.WARNING)  # it logs every aggregate it converts at INFO
ACCOUNT_TYPES = {
    "CHECKING": "checking",
    "SAVINGS": "savings",
    "MONEYMRKT": "money_market",
    "CREDITLINE": "credit_line",
    "CD": "savings",
}
OFX_DATE = re.compile(r"^\s*(\d{4})(\d{2})(\d{2})")
UNSAFE = re.compile(rb"<!(DOCTYPE|ENTITY)", re.I)


def _ofx_tree(data: bytes) -> Any:
    from ofxtools.Parser import OFXTree

    if UNSAFE.search(data):
        raise FormatError("a document type or entity declaration is not accepted in OFX files")
    # ofxtools reads text; an SGML file declares its charset in the header (CHARSET:1252).
    tree = OFXTree()
    try:
        with python_warnings.catch_warnings():
            python_warnings.simplefilter("ignore")
            tree.parse(io.BytesIO(data))
            converted = tree.convert()
    except FormatError:
        raise
    except Exception as error:  # the library's errors on a broken file are many and untyped
        reason = str(error).splitlines()[0][:160] if str(error) else type(error).__name__
        raise FormatError(f"not a readable OFX statement ({type(error).__name__}: {reason})") from None
    return tree, converted


def _raw_dates(tree: Any) -> dict[int, dict[str, Any]]:
    """Dates as written, per statement position: DTPOSTED in transaction order, each balance's DTASOF."""
    out: dict[int, dict[str, Any]] = {}
    statements = [e for e in tree.getroot().iter() if e.tag in ("STMTRS", "CCSTMTRS")]
    for position, statement in enumerate(statements):
        out[position] = {
            "posted": [(t.findtext("DTPOSTED") or "") for t in statement.iter("STMTTRN")],
            "ledgerbal": statement.findtext("LEDGERBAL/DTASOF"),
            "availbal": statement.findtext("AVAILBAL/DTASOF"),
        }
    return out


def _date(text: str | None, fallback: Any, *, record: str, field: str) -> Any:
    match = OFX_DATE.match(text or "")
    if match:
        try:
            return pd.Timestamp(int(match.group(1)), int(match.group(2)), int(match.group(3))).date()
        except ValueError:
            raise FormatError(f"impossible date: {text!r}", record=record, field=field) from None
    if fallback is None:
        raise FormatError("missing", record=record, field=field)
    return fallback.date()


def _text(value: Any) -> str | None:
    if value is None:
        return None
    text = " ".join(str(value).split())
    return text or None


def parse(
    source: Source, *, sme_id: str = "", raw_sha256: str = "", limits: Limits = DEFAULT_LIMITS
) -> Parsed:
    """An OFX file -> ``bank_transactions`` with totals ``transactions``, ``net_amount``, ``closing_balance``."""
    data = read_all(source, limits)
    if not data.strip():
        raise FormatError("empty file")
    decode_text(data[:4096].split(b"<", 1)[0] or b" ")  # a binary header fails here, with its reason
    raw_sha256 = raw_sha256 or sha256_of(data)
    tree, converted = _ofx_tree(data)
    raw_dates = _raw_dates(tree)
    budget = Budget(limits)
    rows: list[dict[str, Any]] = []
    warnings: list[str] = []
    statements = list(getattr(converted, "statements", []) or [])
    if not statements:
        raise FormatError("no bank or credit-card statement (STMTRS/CCSTMTRS) in the file", field="STMTRS")
    closing = 0.0
    for position, statement in enumerate(statements):
        account = statement.account
        account_id = _text(getattr(account, "acctid", None))
        where = f"STMTRS[{position}]"
        if not account_id:
            raise FormatError("missing", record=where, field="ACCTID")
        kind = type(statement).__name__
        account_type = (
            "credit_card" if kind == "CCSTMTRS" else ACCOUNT_TYPES.get(str(getattr(account, "accttype", "")))
        )
        currency = _text(getattr(statement, "curdef", None))
        if not currency:
            raise FormatError("missing", record=where, field="CURDEF")
        common = {
            "sme_id": sme_id,
            "account_id": account_id,
            "account_type": account_type,
            "currency": currency,
        }
        transactions = statement.banktranlist if statement.banktranlist is not None else []
        seen: dict[str, dict[str, Any]] = {}
        for index, transaction in enumerate(transactions):
            record = f"{where}/STMTTRN[{index}]"
            budget.count(record)
            fitid = _text(transaction.fitid)
            if not fitid:
                raise FormatError("missing", record=record, field="FITID")
            if transaction.trnamt is None:
                raise FormatError("missing", record=record, field="TRNAMT")
            amount = float(transaction.trnamt)
            if abs(amount) > 1e12:
                raise FormatError(f"absurd amount: {amount}", record=record, field="TRNAMT")
            written = raw_dates.get(position, {}).get("posted", [])
            row = {
                **common,
                "entry_type": "transaction",
                "entry_id": fitid,
                "booked_date": _date(
                    written[index] if index < len(written) else None,
                    transaction.dtposted,
                    record=record,
                    field="DTPOSTED",
                ),
                "amount": round(amount, 2),
                "transaction_type": _text(transaction.trntype),
                "description": " / ".join(t for t in (_text(transaction.name), _text(transaction.memo)) if t)
                or None,
                "source_record": f"{record}[FITID={fitid}]",
                "raw_sha256": raw_sha256,
            }
            earlier = seen.get(fitid)
            if earlier is not None:
                same = {k: v for k, v in earlier.items() if k != "source_record"} == {
                    k: v for k, v in row.items() if k != "source_record"
                }
                if not same:
                    raise FormatError(
                        f"two different transactions with FITID {fitid}", record=record, field="FITID"
                    )
                warnings.append(
                    f"account {account_id}: transaction {fitid} listed twice; the repeat was dropped"
                )
                continue
            seen[fitid] = row
            rows.append(row)
        for field, entry_type in (("ledgerbal", "ledger_balance"), ("availbal", "available_balance")):
            balance = getattr(statement, field, None)
            if balance is None:
                if entry_type == "ledger_balance":
                    warnings.append(f"account {account_id}: the statement states no ledger balance")
                continue
            record = f"{where}/{field.upper()}"
            booked = _date(
                raw_dates.get(position, {}).get(field), balance.dtasof, record=record, field="DTASOF"
            )
            amount = round(float(balance.balamt), 2)
            rows.append(
                {
                    **common,
                    "entry_type": entry_type,
                    "entry_id": booked.isoformat(),
                    "booked_date": booked,
                    "amount": amount,
                    "transaction_type": None,
                    "description": None,
                    "source_record": record,
                    "raw_sha256": raw_sha256,
                }
            )
            if entry_type == "ledger_balance":
                closing += amount
    frame = pd.DataFrame(rows, columns=BANK_TRANSACTIONS.column_names)
    posted = frame[frame["entry_type"] == "transaction"]
    return Parsed(
        format=NAME,
        tables={BANK_TRANSACTIONS.name: canonical_frame(BANK_TRANSACTIONS, frame)},
        totals={
            "transactions": len(posted),
            "net_amount": round(float(posted["amount"].sum()), 2),
            "closing_balance": round(closing, 2),
        },
        warnings=warnings,
    )


def detect(head: bytes, root: tuple[str, str]) -> bool:
    start = head.lstrip(b"\xef\xbb\xbf \t\r\n")
    return start.startswith(b"OFXHEADER:") or b"<?OFX " in head[:1024] or root[1] == "OFX"
