"""The credit dossier: one row per SME per as-of date, the product lenders pull.

The schema is versioned (:data:`SCHEMA_VERSION`); every column carries a description in its Parquet
field metadata, and the file metadata names the schema and model versions. Evaluation returns a
frame with :data:`FEATURE_COLUMNS` and :data:`SCORE_COLUMNS`; publishing adds the identity and
provenance columns and writes :data:`DOSSIER_SCHEMA` exactly.

>>> DOSSIER_SCHEMA.field("pd_12m").metadata[b"description"][:30]
b'Probability that the SME defau'
"""

from __future__ import annotations

import pyarrow as pa

from warehouse.canonical import Column

SCHEMA_VERSION = 1
"""Bump on any change a reader would notice (new, renamed, retyped or re-meant column)."""

IDENTITY_COLUMNS: tuple[Column, ...] = (
    Column(
        "dossier_id",
        pa.string(),
        "Stable id of this dossier version: <sme_id>:<as_of_date>:v<schema_version>.",
    ),
    Column("sme_id", pa.string(), "Our identifier of the SME."),
    Column("sme_name", pa.string(), "Registered name of the SME."),
    Column("industry", pa.string(), "Industry sector of the SME."),
    Column("region", pa.string(), "Region where the SME trades."),
    Column("size_band", pa.string(), "micro, small or medium, by headcount."),
    Column("founded_year", pa.int32(), "Year the SME started trading.", True),
    Column("as_of_date", pa.date32(), "Date the dossier describes: data up to the month before this date."),
    Column("schema_version", pa.int32(), "Version of this dossier schema."),
    Column("model_version", pa.string(), "Version of the scoring model that produced the score columns."),
    Column("sources_used", pa.list_(pa.string()), "Source kinds whose data went into this dossier."),
    Column("published_at", pa.timestamp("ms", tz="UTC"), "When this dossier version was published."),
)

FEATURE_COLUMNS: tuple[Column, ...] = (
    Column(
        "months_of_accounts",
        pa.int32(),
        "Months of bookkeeping data available (up to the consent's history window).",
    ),
    Column(
        "currency",
        pa.string(),
        "ISO 4217 code of every amount in the dossier (that of the latest month of books; empty without books).",
        True,
    ),
    Column("revenue_12m", pa.float64(), "Revenue over the last 12 months of books.", True),
    Column(
        "revenue_growth_yoy",
        pa.float64(),
        "Last 12 months' revenue over the 12 months before, minus 1.",
        True,
    ),
    Column(
        "revenue_trend_slope",
        pa.float64(),
        "Least-squares slope of monthly revenue over the last 12 months, as a share of its mean per month.",
        True,
    ),
    Column(
        "revenue_volatility",
        pa.float64(),
        "Coefficient of variation of monthly revenue over the last 12 months.",
        True,
    ),
    Column(
        "gross_margin", pa.float64(), "(revenue - cost of sales) / revenue over the last 12 months.", True
    ),
    Column(
        "operating_margin",
        pa.float64(),
        "(revenue - cost of sales - operating expenses - depreciation) / revenue, last 12 months.",
        True,
    ),
    Column("net_margin", pa.float64(), "Net profit / revenue over the last 12 months.", True),
    Column(
        "current_ratio", pa.float64(), "Current assets / current liabilities at the latest month end.", True
    ),
    Column(
        "quick_ratio",
        pa.float64(),
        "(Current assets - inventory) / current liabilities at the latest month end.",
        True,
    ),
    Column(
        "cash_to_monthly_costs",
        pa.float64(),
        "Cash at the latest month end / average monthly cash costs (months of runway).",
        True,
    ),
    Column("debt_to_assets", pa.float64(), "Total liabilities / total assets at the latest month end.", True),
    Column(
        "interest_coverage",
        pa.float64(),
        "Operating profit / interest expense over the last 12 months (capped at 50).",
        True,
    ),
    Column("vat_returns_due", pa.int32(), "VAT returns that fell due in the last 24 months.", True),
    Column("vat_on_time_rate", pa.float64(), "Share of those returns received by their due date.", True),
    Column(
        "vat_books_revenue_ratio",
        pa.float64(),
        "Sales ex VAT declared to the tax authority / revenue in the books, same periods (1 = consistent).",
        True,
    ),
    Column("utility_bills_due", pa.int32(), "Utility bills that fell due in the last 12 months.", True),
    Column("utility_on_time_rate", pa.float64(), "Share of those bills paid by their due date.", True),
    Column(
        "utility_usage_trend",
        pa.float64(),
        "Last 6 months' metered consumption over the same 6 months a year earlier, minus 1 (activity proxy).",
        True,
    ),
    Column(
        "utility_books_revenue_ratio",
        pa.float64(),
        "Consumption growth against revenue growth: (1 + usage trend) / (1 + revenue growth over the same months).",
        True,
    ),
    Column("survey_visits", pa.int32(), "Field visits on record.", True),
    Column(
        "survey_verified_rate",
        pa.float64(),
        "Share of visits that found the business at its address and trading.",
        True,
    ),
    Column(
        "survey_revenue_ratio",
        pa.float64(),
        "Monthly revenue stated to the field agent / average monthly revenue in the books.",
        True,
    ),
)

SCORE_COLUMNS: tuple[Column, ...] = (
    Column("pd_12m", pa.float64(), "Probability that the SME defaults within 12 months (0 to 1)."),
    Column(
        "score", pa.int32(), "Points on a 300-850 scale: higher is safer (a monotone transform of pd_12m)."
    ),
    Column("grade", pa.string(), "Risk grade A (best) to E (worst), from pd_12m bands."),
    Column(
        "reason_codes",
        pa.list_(pa.string()),
        "Codes of the factors that raised the PD most, strongest first.",
    ),
    Column(
        "reason_texts", pa.list_(pa.string()), "Plain-language explanation of each reason code, same order."
    ),
    Column("credit_limit", pa.float64(), "Recommended maximum short-term credit, in `currency`."),
    Column(
        "indicative_rate",
        pa.float64(),
        "Indicative annual interest rate for the recommended limit (0.12 = 12%).",
    ),
)

ALL_COLUMNS: tuple[Column, ...] = IDENTITY_COLUMNS + FEATURE_COLUMNS + SCORE_COLUMNS


def build_schema(model_version: str) -> pa.Schema:
    """Arrow schema of a dossier file: described columns, schema and model version in the file metadata."""
    return pa.schema(
        [
            pa.field(c.name, c.type, nullable=c.nullable, metadata={"description": c.description})
            for c in ALL_COLUMNS
        ],
        metadata={
            "dossier_schema_version": str(SCHEMA_VERSION),
            "model_version": model_version,
            "grain": "One row per SME per as-of date.",
        },
    )


DOSSIER_SCHEMA = build_schema("unset")


def describe_markdown() -> str:
    """The dossier schema as Markdown (the README embeds this; a test keeps them in step)."""
    lines = [
        f"Schema version {SCHEMA_VERSION}. One row per SME per as-of date.",
        "",
        "| column | type | description |",
        "|---|---|---|",
    ]
    for c in ALL_COLUMNS:
        lines.append(f"| `{c.name}` | {c.type}{', nullable' if c.nullable else ''} | {c.description} |")
    return "\n".join(lines) + "\n"
