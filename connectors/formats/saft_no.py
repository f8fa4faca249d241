"""SAF-T Financial (Norway, v1.10 and v1.30) -> trial balance per month -> ``monthly_financials``.

The file is streamed (``iterparse``; each account and transaction is cleared once read), so memory
holds the per-account, per-month sums, never the tree. From the master files it takes each general
ledger account's opening and closing balance and its standard grouping (v1.30 ``GroupingCode``,
v1.10 ``StandardAccountID``, else the first digits of ``AccountID``); from the general-ledger
entries every line's debit or credit, by the calendar month of its transaction date.

It then builds the trial balance (opening, debit, credit and closing per account per month) and
maps it through the standard account groupings into one ``monthly_financials`` row per month; the
mapping is written down in ``connectors/formats/SAFT_NO_MAPPING.md`` (:data:`GROUPS`).

Checks, reported as warnings (the data is still usable; validation and a reader decide): the
ledger's debits equal its credits, each transaction balances, the header's ``NumberOfEntries``,
``TotalDebit`` and ``TotalCredit`` equal the lines, and each account's opening balance plus its
movements equals its closing balance. A line without an amount, an amount that is not a number or
a transaction without a readable date is an error naming the transaction, line and field.

>>> group_of("1920", None, None)
'19'
>>> GROUPS["19"]
('cash', 'current_assets', 'total_assets')
"""

from __future__ import annotations

import functools
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

import pandas as pd

from connectors.formats.base import (
    DEFAULT_LIMITS,
    Budget,
    FormatError,
    Limits,
    Parsed,
    Source,
    XmlTags,
    canonical_frame,
    iso_date,
    iter_xml,
    local,
    number,
    text_of,
)
from warehouse.canonical import MONTHLY_FINANCIALS

NAME = "saft-no"
NAMESPACE = "urn:StandardAuditFile-Taxation-Financial:NO"
NS = "{" + NAMESPACE + "}"

HANDLED = (
    "DefaultCurrencyCode",
    "AuditFileVersion",
    "Account",
    "NumberOfEntries",
    "TotalDebit",
    "TotalCredit",
    "JournalID",
    "Transaction",
    "Customers",
    "Suppliers",
    "TaxTable",
    "Customer",
    "Supplier",
    "TaxTableEntry",
    "GeneralLedgerAccounts",
    "AnalysisTypeTable",
    "Owners",
)
"""Elements the stream acts on (all others are read inside their Account or Transaction)."""
TOLERANCE = 0.005

GROUPS: dict[str, tuple[str, ...]] = {
    **{f"1{d}": ("current_assets", "total_assets") for d in "678"},
    **{f"1{d}": ("total_assets",) for d in "0123"},
    "14": ("inventory", "current_assets", "total_assets"),
    "15": ("receivables", "current_assets", "total_assets"),
    "19": ("cash", "current_assets", "total_assets"),
    **{f"2{d}": ("total_liabilities",) for d in "12"},
    **{f"2{d}": ("current_liabilities", "total_liabilities") for d in "3456789"},
    **{f"3{d}": ("revenue",) for d in "0123456789"},
    **{f"4{d}": ("cost_of_sales",) for d in "0123456789"},
    **{f"5{d}": ("operating_expenses",) for d in "0123456789"},
    "60": ("depreciation",),
    **{f"6{d}": ("operating_expenses",) for d in "123456789"},
    **{f"7{d}": ("operating_expenses",) for d in "0123456789"},
    **{f"8{d}": ("interest_expense",) for d in "012"},
    **{f"8{d}": ("tax_expense",) for d in "36"},
    **{f"8{d}": ("operating_expenses",) for d in "457"},
}
"""Two-digit standard account group (NS 4102 classes) -> the canonical columns it adds to.

Groups 20 (equity) and 88-89 (the year's result and its transfers) add to none: equity is total
assets minus total liabilities, and closing transfers are not the month's profit.
"""

FLOWS = ("revenue", "cost_of_sales", "operating_expenses", "depreciation", "interest_expense", "tax_expense")
BALANCES = ("cash", "receivables", "inventory", "current_assets", "total_assets")
LIABILITIES = ("current_liabilities", "total_liabilities")
REVENUE_LIKE = ("revenue",)
"""Credit-normal flow columns: shown as positive when credited."""


def group_of(account_id: str, standard: str | None, grouping_code: str | None) -> str | None:
    """The two-digit standard group of an account: grouping code, standard account, else its own id."""
    for candidate in (grouping_code, standard, account_id):
        if candidate and candidate[:2].isdigit() and len(candidate) >= 2:
            return candidate[:2]
    return None


@dataclass
class Account:
    account_id: str
    description: str | None
    group: str | None
    opening: float
    closing: float | None


@dataclass
class Ledger:
    """What the stream yields: header facts, accounts, and sums per (account, month)."""

    currency: str | None = None
    version: str | None = None
    accounts: dict[str, Account] = field(default_factory=dict)
    debit: dict[tuple[str, pd.Timestamp], float] = field(default_factory=lambda: defaultdict(float))
    credit: dict[tuple[str, pd.Timestamp], float] = field(default_factory=lambda: defaultdict(float))
    header_entries: int | None = None
    header_debit: float | None = None
    header_credit: float | None = None
    entries: int = 0
    lines: int = 0
    total_debit: float = 0.0
    total_credit: float = 0.0
    unbalanced: list[str] = field(default_factory=list)
    unknown_accounts: set[str] = field(default_factory=set)
    first_record: dict[pd.Timestamp, str] = field(default_factory=dict)


def _balance(element: object, kind: str, record: str) -> float | None:
    debit = number(
        text_of(element, f"{kind}DebitBalance"), record=record, field=f"{kind}DebitBalance", required=False
    )
    credit = number(
        text_of(element, f"{kind}CreditBalance"), record=record, field=f"{kind}CreditBalance", required=False
    )
    if debit is None and credit is None:
        return None
    return (debit or 0.0) - (credit or 0.0)


def _account(element: object) -> Account:
    account_id = text_of(element, "AccountID")
    record = f"Account[{account_id or '?'}]"
    if not account_id:
        raise FormatError("missing", record=record, field="AccountID")
    return Account(
        account_id=account_id,
        description=text_of(element, "AccountDescription"),
        group=group_of(account_id, text_of(element, "StandardAccountID"), text_of(element, "GroupingCode")),
        opening=_balance(element, "Opening", record) or 0.0,
        closing=_balance(element, "Closing", record),
    )


@functools.cache
def _month(year: int, month: int) -> pd.Timestamp:
    return pd.Timestamp(year, month, 1)


LINE = NS + "Line"
RECORD_ID = NS + "RecordID"
ACCOUNT_ID = NS + "AccountID"
DEBIT = f"{NS}DebitAmount/{NS}Amount"
CREDIT = f"{NS}CreditAmount/{NS}Amount"
HAS_DEBIT = NS + "DebitAmount"
HAS_CREDIT = NS + "CreditAmount"


def _line_record(record: str, line: Any, position: int) -> str:
    return f"{record}/Line[{(line.findtext(RECORD_ID) or '').strip() or position}]"


def _line_amount(text: str, record: str, line: Any, position: int, field: str) -> float | None:
    """A line's amount: plain decimals on the fast path; :func:`number` (and its errors) otherwise."""
    try:
        value = float(text)
    except ValueError:
        pass
    else:
        if value == value and abs(value) <= 1e15:
            return value
    return number(text, record=_line_record(record, line, position), field=field, required=False)


def _transaction(element: Any, journal: str, ledger: Ledger, budget: Budget) -> None:
    """Add one transaction's lines to the ledger.

    Fields are found by libxml2 (``findtext`` on namespaced paths), not by a Python loop over each
    child, and a line's record name is only built when something about it is wrong.
    """
    transaction_id = (element.findtext(NS + "TransactionID") or "").strip() or "?"
    record = f"Journal[{journal}]/Transaction[{transaction_id}]"
    date_text = (element.findtext(NS + "TransactionDate") or "").strip() or (
        element.findtext(NS + "GLPostingDate") or ""
    ).strip()
    date = iso_date(date_text or None, record=record, field="TransactionDate")
    month = _month(date.year, date.month)
    ledger.first_record.setdefault(month, record)
    debit_sum = credit_sum = 0.0
    debits, credits = ledger.debit, ledger.credit
    lines = 0
    for position, line in enumerate(element.iterchildren(LINE), start=1):
        account_id = (line.findtext(ACCOUNT_ID) or "").strip()
        debit_text, credit_text = line.findtext(DEBIT), line.findtext(CREDIT)
        if not account_id or (debit_text is None and credit_text is None):
            line_record = _line_record(record, line, position)
            if not account_id:
                raise FormatError("missing", record=line_record, field="AccountID")
            if line.find(HAS_DEBIT) is None and line.find(HAS_CREDIT) is None:
                raise FormatError(
                    "a line needs a DebitAmount or a CreditAmount", record=line_record, field="Amount"
                )
        debit = credit = None
        if debit_text is not None:
            debit = _line_amount(debit_text, record, line, position, "DebitAmount/Amount")
        if credit_text is not None:
            credit = _line_amount(credit_text, record, line, position, "CreditAmount/Amount")
        if debit:
            debits[(account_id, month)] += debit
            debit_sum += debit
        if credit:
            credits[(account_id, month)] += credit
            credit_sum += credit
        lines += 1
    if lines:
        budget.count(record, lines)
    ledger.lines += lines
    ledger.entries += 1
    ledger.total_debit += debit_sum
    ledger.total_credit += credit_sum
    if abs(debit_sum - credit_sum) > TOLERANCE:
        ledger.unbalanced.append(transaction_id)


def _depth_of(element: Any) -> int:
    return sum(1 for _ in element.iterancestors()) + 1


def read_ledger(source: Source, limits: Limits) -> Ledger:
    """Stream one SAF-T Financial file into a :class:`Ledger` (raises :class:`FormatError`)."""
    ledger = Ledger()
    budget = Budget(limits)
    journal = "?"
    seen_root = False
    handled = {NS + name for name in HANDLED}
    tags = XmlTags(source, limits, root=NS + "AuditFile", tags=sorted(handled))
    events = tags if tags.fast else ((e, x) for e, x, _ in iter_xml(tags.stream, limits, events=("end",)))
    for event, element in events:
        if event == "start":
            seen_root = True
            if element.tag != NS + "AuditFile":
                raise FormatError(f"not a Norwegian SAF-T Financial file (root element {element.tag})")
            continue
        tag = element.tag
        if tag not in handled:
            continue  # most elements: read as part of their Account or Transaction
        name = tag[len(NS) :]
        parent = element.getparent()
        parent_name = local(parent.tag) if parent is not None else ""
        if parent_name == "Header":
            if name == "DefaultCurrencyCode":
                ledger.currency = (element.text or "").strip() or None
            elif name == "AuditFileVersion":
                ledger.version = (element.text or "").strip() or None
            continue
        if name == "Account" and parent_name == "GeneralLedgerAccounts":
            if tags.fast:
                tags.check_depth(element, _depth_of(element))
            account = _account(element)
            ledger.accounts[account.account_id] = account
            budget.count(f"Account[{account.account_id}]")
        elif parent_name == "GeneralLedgerEntries" and name in (
            "NumberOfEntries",
            "TotalDebit",
            "TotalCredit",
        ):
            value = number(element.text, record="GeneralLedgerEntries", field=name)
            if name == "NumberOfEntries":
                ledger.header_entries = int(value or 0)
            elif name == "TotalDebit":
                ledger.header_debit = value
            else:
                ledger.header_credit = value
            continue
        elif name == "JournalID" and parent_name == "Journal":
            journal = (element.text or "").strip() or "?"
            continue
        elif name == "Transaction" and parent_name == "Journal":
            if tags.fast:
                tags.check_depth(element, _depth_of(element))
            _transaction(element, journal, ledger, budget)
        elif parent_name not in ("MasterFiles", "Customers", "Suppliers", "TaxTable"):
            continue
        # Read: drop the element and the siblings before it, so the tree never grows.
        element.clear(keep_tail=False)
        while element.getprevious() is not None:
            del parent[0]
    if not seen_root:
        raise FormatError("no XML element found")
    if ledger.currency is None:
        raise FormatError("missing", record="Header", field="DefaultCurrencyCode")
    return ledger


def trial_balance(ledger: Ledger) -> pd.DataFrame:
    """One row per account per month from the first to the last month with entries.

    Columns: ``account_id``, ``description``, ``group``, ``period_month``, ``opening``, ``debit``,
    ``credit``, ``closing`` (debit-positive balances).
    """
    keys = set(ledger.debit) | set(ledger.credit)
    months = sorted({month for _, month in keys})
    if not months:
        return pd.DataFrame(
            columns=[
                "account_id",
                "description",
                "group",
                "period_month",
                "opening",
                "debit",
                "credit",
                "closing",
            ]
        )
    calendar = pd.date_range(months[0], months[-1], freq="MS")
    accounts = sorted(set(ledger.accounts) | {account for account, _ in keys})
    rows = []
    for account_id in accounts:
        known = ledger.accounts.get(account_id)
        balance = known.opening if known else 0.0
        for month in calendar:
            debit = ledger.debit.get((account_id, month), 0.0)
            credit = ledger.credit.get((account_id, month), 0.0)
            closing = balance + debit - credit
            rows.append(
                (
                    account_id,
                    known.description if known else None,
                    known.group if known else group_of(account_id, None, None),
                    month,
                    round(balance, 2),
                    round(debit, 2),
                    round(credit, 2),
                    round(closing, 2),
                )
            )
            balance = closing
    return pd.DataFrame(
        rows,
        columns=[
            "account_id",
            "description",
            "group",
            "period_month",
            "opening",
            "debit",
            "credit",
            "closing",
        ],
    )


def monthly_statements(balance: pd.DataFrame, currency: str) -> pd.DataFrame:
    """The trial balance mapped through :data:`GROUPS` into ``monthly_financials`` columns (no lineage)."""
    columns = {
        name: pd.Series(0.0, index=pd.DatetimeIndex(sorted(balance["period_month"].unique())))
        for name in (*FLOWS, *BALANCES, *LIABILITIES)
    }
    movement = balance["debit"] - balance["credit"]
    for (group, month), value in movement.groupby([balance["group"], balance["period_month"]]).sum().items():
        for column in GROUPS.get(group, ()):
            if column in FLOWS:
                columns[column][month] += -value if column in REVENUE_LIKE else value
    for (group, month), value in balance.groupby(["group", "period_month"])["closing"].sum().items():
        for column in GROUPS.get(group, ()):
            if column in BALANCES:
                columns[column][month] += value
            elif column in LIABILITIES:
                columns[column][month] += -value
    frame = pd.DataFrame(columns)
    frame["net_profit"] = frame["revenue"] - frame[[c for c in FLOWS if c != "revenue"]].sum(axis=1)
    frame["equity"] = frame["total_assets"] - frame["total_liabilities"]
    frame = frame.round(2)
    frame.index.name = "period_month"
    frame = frame.reset_index()
    frame["currency"] = currency
    return frame


def checks(ledger: Ledger, balance: pd.DataFrame) -> list[str]:
    """Warnings: debits vs credits, header totals vs lines, unbalanced transactions, account roll-forward."""
    warnings = []
    if abs(ledger.total_debit - ledger.total_credit) > TOLERANCE:
        warnings.append(
            f"total debit {ledger.total_debit:.2f} does not equal total credit {ledger.total_credit:.2f}"
        )
    if ledger.header_entries is not None and ledger.header_entries != ledger.entries:
        warnings.append(f"header NumberOfEntries {ledger.header_entries} but {ledger.entries} transactions")
    for label, stated, actual in (
        ("TotalDebit", ledger.header_debit, ledger.total_debit),
        ("TotalCredit", ledger.header_credit, ledger.total_credit),
    ):
        if stated is not None and abs(stated - actual) > TOLERANCE:
            warnings.append(f"header {label} {stated:.2f} but the lines sum to {actual:.2f}")
    if ledger.unbalanced:
        shown = ", ".join(ledger.unbalanced[:5])
        warnings.append(
            f"{len(ledger.unbalanced)} transactions whose debits do not equal their credits: {shown}"
        )
    unknown = sorted({a for a, _ in (*ledger.debit, *ledger.credit)} - set(ledger.accounts))
    if unknown:
        warnings.append(f"lines post to accounts not in the master files: {', '.join(unknown[:10])}")
    ungrouped = sorted(set(balance.loc[balance["group"].isna(), "account_id"]))
    if ungrouped:
        warnings.append(
            f"accounts without a standard grouping (left out of the statements): {', '.join(ungrouped[:10])}"
        )
    final = balance.groupby("account_id")["closing"].last() if len(balance) else pd.Series(dtype="float64")
    for account_id, account in ledger.accounts.items():
        if account.closing is None:
            continue
        computed = float(final.get(account_id, account.opening))
        if abs(computed - account.closing) > TOLERANCE:
            warnings.append(
                f"account {account_id}: opening {account.opening:.2f} plus movements gives"
                f" {computed:.2f}, but the closing balance is {account.closing:.2f}"
            )
    return warnings


def parse(
    source: Source, *, sme_id: str = "", raw_sha256: str = "", limits: Limits = DEFAULT_LIMITS
) -> Parsed:
    """A SAF-T Financial file -> ``monthly_financials`` and its ``trial_balance``, totals and warnings."""
    ledger = read_ledger(source, limits)
    balance = trial_balance(ledger)
    statements = monthly_statements(balance, (ledger.currency or "").upper())
    statements["sme_id"] = sme_id
    statements["source_record"] = [
        f"GeneralLedgerEntries/month={m:%Y-%m} (from {ledger.first_record.get(m, 'opening balances')})"
        for m in statements["period_month"]
    ]
    statements["raw_sha256"] = raw_sha256
    statements["period_month"] = statements["period_month"].dt.date
    balance.insert(0, "sme_id", sme_id)
    balance["period_month"] = pd.to_datetime(balance["period_month"]).dt.date
    return Parsed(
        format=NAME,
        tables={
            MONTHLY_FINANCIALS.name: canonical_frame(MONTHLY_FINANCIALS, statements),
            "trial_balance": balance.reset_index(drop=True),
        },
        totals={
            "entries": ledger.entries,
            "lines": ledger.lines,
            "total_debit": round(ledger.total_debit, 2),
            "total_credit": round(ledger.total_credit, 2),
        },
        warnings=checks(ledger, balance),
    )


def detect(head: bytes, root: tuple[str, str]) -> bool:
    return root == (NAMESPACE, "AuditFile")
