"""Canonical tables: the contract between connectors and everything after them.

Connectors (and the sandbox's ground truth) produce exactly these tables; validation, evaluation and
publishing read nothing else. Every table has a grain (one sentence), a natural key and a column list
with units. Money is in the currency's major unit (e.g. pounds, not pence) as float64 rounded to
cents; dates are calendar dates; instants are UTC timestamps.

Every row carries its lineage: ``source_record`` locates the record inside the raw payload (for
error messages) and ``raw_sha256`` names the immutable raw payload it came from.

>>> MONTHLY_FINANCIALS.key
('sme_id', 'period_month')
>>> sorted(TABLES)
['bank_transactions', 'monthly_financials', 'survey_submissions', 'survey_visits', 'utility_bills', 'utility_readings', 'vat_returns']
"""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd
import pyarrow as pa

SOURCES = ("accounting", "tax", "utility", "survey")
"""Source kinds an SME can connect; each is one connector package and one consent scope."""


@dataclass(frozen=True)
class Column:
    name: str
    type: pa.DataType
    description: str
    nullable: bool = False


@dataclass(frozen=True)
class CanonicalTable:
    name: str
    source: str
    grain: str
    key: tuple[str, ...]
    columns: tuple[Column, ...]

    @property
    def schema(self) -> pa.Schema:
        """Arrow schema with each column's description in its field metadata."""
        return pa.schema(
            [
                pa.field(c.name, c.type, nullable=c.nullable, metadata={"description": c.description})
                for c in self.columns
            ],
            metadata={"table": self.name, "grain": self.grain, "key": ",".join(self.key)},
        )

    @property
    def column_names(self) -> list[str]:
        return [c.name for c in self.columns]

    def empty_frame(self) -> pd.DataFrame:
        return self.schema.empty_table().to_pandas()

    def to_arrow(self, frame: pd.DataFrame) -> pa.Table:
        """Cast a frame to this table's schema; raises if a column is missing or cannot be cast."""
        missing = [c for c in self.column_names if c not in frame.columns]
        if missing:
            raise ValueError(f"{self.name}: missing columns {missing}")
        return pa.Table.from_pandas(frame[self.column_names], schema=self.schema, preserve_index=False)


def _money(name: str, what: str, nullable: bool = False) -> Column:
    return Column(name, pa.float64(), f"{what}, in the currency's major unit.", nullable)


SME_ID = Column("sme_id", pa.string(), "Our identifier of the SME (e.g. SME-000042).")
LINEAGE = (
    Column("source_record", pa.string(), "Where the row sits in the raw payload (page, path or record id)."),
    Column("raw_sha256", pa.string(), "sha256 of the immutable raw payload the row was parsed from."),
)

MONTHLY_FINANCIALS = CanonicalTable(
    name="monthly_financials",
    source="accounting",
    grain="One row per SME per calendar month of its books: the month's P&L flows and month-end balances.",
    key=("sme_id", "period_month"),
    columns=(
        SME_ID,
        Column("period_month", pa.date32(), "First day of the accounting month."),
        Column("currency", pa.string(), "ISO 4217 code of every amount in the row."),
        _money("revenue", "Turnover (net sales) of the month"),
        _money("cost_of_sales", "Direct costs of the goods and services sold in the month"),
        _money("operating_expenses", "Overheads of the month (wages, rent, utilities, other)"),
        _money("depreciation", "Depreciation and amortisation of the month"),
        _money("interest_expense", "Interest paid or accrued in the month"),
        _money("tax_expense", "Corporate income tax of the month"),
        _money("net_profit", "Revenue minus all expenses of the month"),
        _money("cash", "Cash and bank balances at month end"),
        _money("receivables", "Trade receivables at month end"),
        _money("inventory", "Inventory at month end"),
        _money("current_assets", "All current assets at month end"),
        _money("total_assets", "All assets at month end"),
        _money("current_liabilities", "Liabilities due within a year at month end"),
        _money("total_liabilities", "All liabilities at month end"),
        _money("equity", "Total assets minus total liabilities at month end"),
        *LINEAGE,
    ),
)

VAT_RETURNS = CanonicalTable(
    name="vat_returns",
    source="tax",
    grain="One row per SME per VAT obligation period, filed or still open (HMRC MTD VAT obligations and returns).",
    key=("sme_id", "period_key"),
    columns=(
        SME_ID,
        Column("period_key", pa.string(), "Tax authority's key of the obligation period (e.g. 18A1)."),
        Column("period_start", pa.date32(), "First day of the VAT period."),
        Column("period_end", pa.date32(), "Last day of the VAT period."),
        Column("due_date", pa.date32(), "Date the return was due."),
        Column("status", pa.string(), "F when the return is filed (fulfilled), O when still open."),
        Column(
            "received_date",
            pa.date32(),
            "Date the tax authority received the return; empty while open.",
            True,
        ),
        _money("vat_due_sales", "Box 1: VAT due on sales and other outputs", True),
        _money("vat_due_acquisitions", "Box 2: VAT due on acquisitions", True),
        _money("total_vat_due", "Box 3: total VAT due (box 1 + box 2)", True),
        _money("vat_reclaimed", "Box 4: VAT reclaimed on purchases and other inputs", True),
        _money("net_vat_due", "Box 5: net VAT to pay or reclaim (|box 3 - box 4|)", True),
        _money("total_sales_ex_vat", "Box 6: total value of sales excluding VAT", True),
        _money("total_purchases_ex_vat", "Box 7: total value of purchases excluding VAT", True),
        _money("total_goods_supplied_ex_vat", "Box 8: goods supplied to other states excluding VAT", True),
        _money("total_acquisitions_ex_vat", "Box 9: acquisitions from other states excluding VAT", True),
        *LINEAGE,
    ),
)

UTILITY_READINGS = CanonicalTable(
    name="utility_readings",
    source="utility",
    grain="One row per SME per meter (usage point) per reading interval: metered consumption and its cost.",
    key=("sme_id", "usage_point_id", "interval_start"),
    columns=(
        SME_ID,
        Column("usage_point_id", pa.string(), "The utility's identifier of the meter / service point."),
        Column("commodity", pa.string(), "electricity, gas or water."),
        Column("interval_start", pa.timestamp("s", tz="UTC"), "Start of the reading interval."),
        Column("interval_seconds", pa.int64(), "Length of the reading interval in seconds."),
        Column("consumption", pa.float64(), "Consumption in the interval, in `unit`."),
        Column("unit", pa.string(), "kWh for electricity, therm for gas, m3 for water."),
        _money("cost", "Cost of the interval's consumption", True),
        Column("currency", pa.string(), "ISO 4217 code of `cost`."),
        *LINEAGE,
    ),
)

UTILITY_BILLS = CanonicalTable(
    name="utility_bills",
    source="utility",
    grain="One row per SME per meter per billing period: the amount billed, when it was due and when it was paid.",
    key=("sme_id", "usage_point_id", "period_start"),
    columns=(
        SME_ID,
        Column("usage_point_id", pa.string(), "The utility's identifier of the meter / service point."),
        Column("period_start", pa.timestamp("s", tz="UTC"), "Start of the billing period."),
        Column("period_seconds", pa.int64(), "Length of the billing period in seconds."),
        _money("amount_due", "Amount billed for the period"),
        Column("currency", pa.string(), "ISO 4217 code of `amount_due`."),
        Column("due_date", pa.date32(), "Date payment was due."),
        Column("paid_date", pa.date32(), "Date the bill was paid in full; empty while unpaid.", True),
        *LINEAGE,
    ),
)

SURVEY_VISITS = CanonicalTable(
    name="survey_visits",
    source="survey",
    grain="One row per field-agent visit to an SME's premises (one form submission).",
    key=("sme_id", "visit_id"),
    columns=(
        SME_ID,
        Column("visit_id", pa.string(), "Submission uuid on the survey platform."),
        Column("form_version", pa.string(), "Version of the form the agent filled in."),
        Column("agent_id", pa.string(), "Field agent who made the visit."),
        Column("visited_at", pa.timestamp("s", tz="UTC"), "When the visit started (form start time)."),
        Column("submitted_at", pa.timestamp("s", tz="UTC"), "When the platform received the submission."),
        Column("premises_found", pa.bool_(), "The agent found the business at its declared address."),
        Column("business_operating", pa.bool_(), "The business was open and trading during the visit."),
        Column("employees_observed", pa.int64(), "People seen working during the visit.", True),
        Column("customers_observed", pa.int64(), "Customers seen during the visit.", True),
        Column("stock_level", pa.string(), "none, low, normal or high, as judged by the agent.", True),
        _money("reported_monthly_revenue", "Monthly revenue the owner stated to the agent", True),
        Column("latitude", pa.float64(), "Latitude of the visit (WGS84 degrees).", True),
        Column("longitude", pa.float64(), "Longitude of the visit (WGS84 degrees).", True),
        Column("photo_count", pa.int64(), "Photos attached to the submission."),
        Column("notes", pa.string(), "The agent's free-text remarks.", True),
        *LINEAGE,
    ),
)

SURVEY_SUBMISSIONS = CanonicalTable(
    name="survey_submissions",
    source="survey",
    grain=(
        "One row per SME per form submission, of any form (KoboToolbox, ODK): platform metadata and"
        " every answer by field path. Submissions of a form with a mapping are also survey_visits rows;"
        " the others are unmapped surveys, kept but giving no visit verification."
    ),
    key=("sme_id", "submission_id"),
    columns=(
        SME_ID,
        Column("submission_id", pa.string(), "The submission's instance id (uuid), duplicates removed."),
        Column("form_id", pa.string(), "The form's id (XForm id, KoboToolbox id_string or asset uid).", True),
        Column("form_version", pa.string(), "Version of the form.", True),
        Column("agent_id", pa.string(), "Who submitted it (submitter id or name, device user).", True),
        Column("started_at", pa.timestamp("s", tz="UTC"), "Form start time.", True),
        Column("ended_at", pa.timestamp("s", tz="UTC"), "Form end time.", True),
        Column("submitted_at", pa.timestamp("s", tz="UTC"), "When the server received it.", True),
        Column("latitude", pa.float64(), "Latitude of the first geopoint answer (WGS84).", True),
        Column("longitude", pa.float64(), "Longitude of the first geopoint answer (WGS84).", True),
        Column("attachments", pa.int64(), "Files (photos, audio) attached to the submission."),
        Column("answers", pa.string(), "JSON object: field path -> answer text (repeats numbered)."),
        Column(
            "mapping",
            pa.string(),
            "The form mapping that made it a survey_visits row; empty for an unmapped survey.",
            True,
        ),
        *LINEAGE,
    ),
)

BANK_TRANSACTIONS = CanonicalTable(
    name="bank_transactions",
    source="accounting",
    grain=(
        "One row per SME per bank account per statement entry: a posted transaction, or a balance the"
        " statement reports (ledger or available) as of a date. Read from bank statements (OFX) of"
        " firms without bookkeeping software."
    ),
    key=("sme_id", "account_id", "entry_type", "entry_id"),
    columns=(
        SME_ID,
        Column(
            "account_id", pa.string(), "The bank's identifier of the account (as the statement writes it)."
        ),
        Column(
            "account_type", pa.string(), "checking, savings, credit_line, money_market or credit_card.", True
        ),
        Column(
            "entry_type",
            pa.string(),
            "transaction, ledger_balance (the booked closing balance) or available_balance.",
        ),
        Column("entry_id", pa.string(), "The bank's transaction id (FITID), or the balance's as-of date."),
        Column("booked_date", pa.date32(), "Date the transaction was posted, or the balance's as-of date."),
        _money("amount", "Signed amount (credits positive) of the transaction, or the balance"),
        Column("currency", pa.string(), "ISO 4217 code of `amount`."),
        Column(
            "transaction_type", pa.string(), "The bank's type of a transaction (OFX TRNTYPE, e.g. POS).", True
        ),
        Column("description", pa.string(), "Payee and memo of a transaction, as the bank writes them.", True),
        *LINEAGE,
    ),
)

TABLES: dict[str, CanonicalTable] = {
    t.name: t
    for t in (
        MONTHLY_FINANCIALS,
        VAT_RETURNS,
        UTILITY_READINGS,
        UTILITY_BILLS,
        SURVEY_VISITS,
        BANK_TRANSACTIONS,
        SURVEY_SUBMISSIONS,
    )
}

TABLES_BY_SOURCE: dict[str, tuple[CanonicalTable, ...]] = {
    source: tuple(t for t in TABLES.values() if t.source == source) for source in SOURCES
}


def money_columns(table: CanonicalTable) -> tuple[str, ...]:
    """The amount columns of ``table``, in schema order.

    >>> money_columns(VAT_RETURNS)[:2]
    ('vat_due_sales', 'vat_due_acquisitions')
    """
    return tuple(
        c.name for c in table.columns if c.type == pa.float64() and c.description.endswith("major unit.")
    )


def describe_markdown() -> str:
    """The canonical schema as Markdown (the README embeds this; a test keeps them in step)."""
    lines: list[str] = []
    for table in TABLES.values():
        lines += [
            f"### `{table.name}` ({table.source})",
            "",
            table.grain,
            "",
            f"Key: `{', '.join(table.key)}`",
            "",
        ]
        lines += ["| column | type | description |", "|---|---|---|"]
        for c in table.columns:
            lines.append(
                f"| `{c.name}` | {c.type}{'' if not c.nullable else ', nullable'} | {c.description} |"
            )
        lines.append("")
    return "\n".join(lines)
