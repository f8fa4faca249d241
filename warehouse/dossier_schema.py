"""The credit dossier: one row per SME per as-of date, the product lenders pull.

The schema is versioned (:data:`SCHEMA_VERSION`); every column carries a description in its Parquet
field metadata, and the file metadata names the schema and model versions. Evaluation returns a
frame with :data:`FEATURE_COLUMNS` and :data:`SCORE_COLUMNS`; publishing adds the identity and
provenance columns and writes :data:`DOSSIER_SCHEMA` exactly.

>>> DOSSIER_SCHEMA.field("pd_12m").metadata[b"description"][:30]
b'Probability that the SME defau'
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from warehouse.canonical import SOURCES, Column

SCHEMA_VERSION = 3
"""Bump on any change a reader would notice (new, renamed, retyped or re-meant column)."""

ALL_USED = "*"
"""``derives_from`` of a column computed from every source the dossier used (the score columns)."""


@dataclass(frozen=True)
class DossierColumn(Column):
    """A dossier column and the sources its value derives from.

    ``derives_from`` names source kinds (``warehouse.canonical.SOURCES``), or is :data:`ALL_USED`
    for values computed from every source in ``sources_used``; identity and provenance columns
    derive from none. The consent rule reads this: a column whose sources are not all in a
    dossier's ``sources_used`` must be empty (:func:`blank_outside_sources`).
    """

    derives_from: tuple[str, ...] | str = ()

    def sources(self, sources_used: frozenset[str] | set[str]) -> frozenset[str]:
        """The sources this column's value derives from in a dossier that used ``sources_used``."""
        if self.derives_from == ALL_USED:
            return frozenset(sources_used)
        return frozenset(self.derives_from)


def _column(
    name: str,
    arrow_type: pa.DataType,
    description: str,
    nullable: bool = False,
    derives_from: tuple[str, ...] | str = (),
) -> DossierColumn:
    return DossierColumn(name, arrow_type, description, nullable, derives_from)


IDENTITY_COLUMNS: tuple[DossierColumn, ...] = (
    _column(
        "dossier_id",
        pa.string(),
        "Stable id of this dossier version: <sme_id>:<as_of_date>:v<schema_version>:<scope>.",
    ),
    _column("sme_id", pa.string(), "Our identifier of the SME."),
    _column("sme_name", pa.string(), "Registered name of the SME."),
    _column("industry", pa.string(), "Industry sector of the SME."),
    _column("region", pa.string(), "Region where the SME trades."),
    _column("size_band", pa.string(), "micro, small or medium, by headcount."),
    _column("founded_year", pa.int32(), "Year the SME started trading.", True),
    _column("as_of_date", pa.date32(), "Date the dossier describes: data up to the month before this date."),
    _column("schema_version", pa.int32(), "Version of this dossier schema."),
    _column("model_version", pa.string(), "Version of the scoring model that produced the score columns."),
    _column("sources_used", pa.list_(pa.string()), "Source kinds whose data went into this dossier."),
    _column(
        "scope",
        pa.string(),
        "The consent scope the dossier was computed under: its sources and history window "
        "(e.g. accounting+tax@36m). Every value comes from those sources and months only.",
    ),
    _column(
        "history_months",
        pa.int32(),
        "Months of history before the as-of month that the scope allows; no value uses older data.",
    ),
    _column("published_at", pa.timestamp("ms", tz="UTC"), "When this dossier version was published."),
)

FEATURE_COLUMNS: tuple[DossierColumn, ...] = (
    _column(
        "months_of_accounts",
        pa.int32(),
        "Months of bookkeeping data available (up to the consent's history window).",
        derives_from=("accounting",),
    ),
    _column(
        "currency",
        pa.string(),
        "ISO 4217 code of every amount in the dossier (that of the latest month of books; empty without books).",
        True,
        derives_from=("accounting",),
    ),
    _column(
        "revenue_12m",
        pa.float64(),
        "Revenue over the last 12 months of books.",
        True,
        derives_from=("accounting",),
    ),
    _column(
        "revenue_growth_yoy",
        pa.float64(),
        "Last 12 months' revenue over the 12 months before, minus 1.",
        True,
        derives_from=("accounting",),
    ),
    _column(
        "revenue_trend_slope",
        pa.float64(),
        "Least-squares slope of monthly revenue over the last 12 months, as a share of its mean per month.",
        True,
        derives_from=("accounting",),
    ),
    _column(
        "revenue_volatility",
        pa.float64(),
        "Coefficient of variation of monthly revenue over the last 12 months.",
        True,
        derives_from=("accounting",),
    ),
    _column(
        "gross_margin",
        pa.float64(),
        "(revenue - cost of sales) / revenue over the last 12 months.",
        True,
        derives_from=("accounting",),
    ),
    _column(
        "operating_margin",
        pa.float64(),
        "(revenue - cost of sales - operating expenses - depreciation) / revenue, last 12 months.",
        True,
        derives_from=("accounting",),
    ),
    _column(
        "net_margin",
        pa.float64(),
        "Net profit / revenue over the last 12 months.",
        True,
        derives_from=("accounting",),
    ),
    _column(
        "current_ratio",
        pa.float64(),
        "Current assets / current liabilities at the latest month end.",
        True,
        derives_from=("accounting",),
    ),
    _column(
        "quick_ratio",
        pa.float64(),
        "(Current assets - inventory) / current liabilities at the latest month end.",
        True,
        derives_from=("accounting",),
    ),
    _column(
        "cash_to_monthly_costs",
        pa.float64(),
        "Cash at the latest month end / average monthly cash costs (months of runway).",
        True,
        derives_from=("accounting",),
    ),
    _column(
        "debt_to_assets",
        pa.float64(),
        "Total liabilities / total assets at the latest month end.",
        True,
        derives_from=("accounting",),
    ),
    _column(
        "interest_coverage",
        pa.float64(),
        "Operating profit / interest expense over the last 12 months (capped at 50).",
        True,
        derives_from=("accounting",),
    ),
    _column(
        "ebitda_12m",
        pa.float64(),
        "Revenue - cost of sales - operating expenses (before depreciation, interest and tax), last 12 months.",
        True,
        derives_from=("accounting",),
    ),
    _column(
        "vat_returns_due",
        pa.int32(),
        "VAT returns that fell due in the last 24 months.",
        True,
        derives_from=("tax",),
    ),
    _column(
        "vat_on_time_rate",
        pa.float64(),
        "Share of those returns received by their due date.",
        True,
        derives_from=("tax",),
    ),
    _column(
        "vat_books_revenue_ratio",
        pa.float64(),
        "Sales ex VAT declared to the tax authority / revenue in the books, same periods (1 = consistent).",
        True,
        derives_from=("tax", "accounting"),
    ),
    _column(
        "utility_bills_due",
        pa.int32(),
        "Utility bills that fell due in the last 12 months.",
        True,
        derives_from=("utility",),
    ),
    _column(
        "utility_on_time_rate",
        pa.float64(),
        "Share of those bills paid by their due date.",
        True,
        derives_from=("utility",),
    ),
    _column(
        "utility_usage_trend",
        pa.float64(),
        "Last 6 months' metered consumption over the same 6 months a year earlier, minus 1 (activity proxy).",
        True,
        derives_from=("utility",),
    ),
    _column(
        "utility_books_revenue_ratio",
        pa.float64(),
        "Consumption growth against revenue growth: (1 + usage trend) / (1 + revenue growth over the same months).",
        True,
        derives_from=("utility", "accounting"),
    ),
    _column("survey_visits", pa.int32(), "Field visits on record.", True, derives_from=("survey",)),
    _column(
        "survey_verified_rate",
        pa.float64(),
        "Share of visits that found the business at its address and trading.",
        True,
        derives_from=("survey",),
    ),
    _column(
        "survey_revenue_ratio",
        pa.float64(),
        "Monthly revenue stated to the field agent / average monthly revenue in the books.",
        True,
        derives_from=("survey", "accounting"),
    ),
)

SCORE_COLUMNS: tuple[DossierColumn, ...] = (
    _column(
        "pd_12m",
        pa.float64(),
        "Probability that the SME defaults within 12 months (0 to 1).",
        derives_from=ALL_USED,
    ),
    _column(
        "score",
        pa.int32(),
        "Points on a 300-850 scale: higher is safer (a monotone transform of pd_12m).",
        derives_from=ALL_USED,
    ),
    _column(
        "grade", pa.string(), "Risk grade A (best) to E (worst), from pd_12m bands.", derives_from=ALL_USED
    ),
    _column(
        "reason_codes",
        pa.list_(pa.string()),
        "Codes of the factors that raised the PD most, strongest first.",
        derives_from=ALL_USED,
    ),
    _column(
        "reason_texts",
        pa.list_(pa.string()),
        "Plain-language explanation of each reason code, same order.",
        derives_from=ALL_USED,
    ),
    _column(
        "credit_limit",
        pa.float64(),
        "Recommended maximum short-term credit, in `currency`.",
        derives_from=ALL_USED,
    ),
    _column(
        "indicative_rate",
        pa.float64(),
        "Indicative annual interest rate for the recommended limit (0.12 = 12%): PD x loss given "
        "default + funding cost + operating cost + capital charge.",
        derives_from=ALL_USED,
    ),
    _column(
        "pd_low",
        pa.float64(),
        "Lower end of the PD interval: the PD had the missing inputs been as good as the reference firms' "
        "(equal to pd_12m when nothing is missing).",
        derives_from=ALL_USED,
    ),
    _column(
        "pd_high",
        pa.float64(),
        "Upper end of the PD interval: wider the less of the evidence was available.",
        derives_from=ALL_USED,
    ),
    _column(
        "coverage",
        pa.float64(),
        "Share of the evidence the model reads that was available, 0 to 1 (books by the weight of "
        "the ratios computed, other sources whole).",
        derives_from=ALL_USED,
    ),
    _column(
        "improvement_hint",
        pa.string(),
        "What would improve the grade: the action on the strongest reason, and whether it alone is enough.",
        derives_from=ALL_USED,
    ),
    _column(
        "consistency_score",
        pa.float64(),
        "Agreement of the books with VAT turnover, metered activity and the field visit, 0 (contradicted) "
        "to 1 (consistent); empty when no independent source could be compared.",
        True,
        derives_from=ALL_USED,
    ),
    _column(
        "discrepancy_codes",
        pa.list_(pa.string()),
        "Machine-readable codes of the cross-source comparisons outside their tolerance (e.g. BOOKS_ABOVE_VAT).",
        derives_from=ALL_USED,
    ),
)

ALL_COLUMNS: tuple[DossierColumn, ...] = IDENTITY_COLUMNS + FEATURE_COLUMNS + SCORE_COLUMNS


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


def _uses(sources_used: pd.Series) -> dict[str, np.ndarray]:
    """Per source, whether each row's ``sources_used`` lists it (an Arrow list column is read in
    Arrow; any other column holds Python containers)."""
    dtype = sources_used.dtype
    if not (isinstance(dtype, pd.ArrowDtype) and pa.types.is_list(dtype.pyarrow_dtype)):
        return {
            source: sources_used.map(lambda used, s=source: s in used).to_numpy(dtype=bool)
            for source in SOURCES
        }
    lists = pa.array(sources_used.array)
    lists = lists.combine_chunks() if isinstance(lists, pa.ChunkedArray) else lists
    names = pc.list_flatten(lists)
    rows = pc.list_parent_indices(lists).to_numpy(zero_copy_only=False)
    uses = {}
    for source in SOURCES:
        used = np.zeros(len(sources_used), dtype=bool)
        used[rows[pc.fill_null(pc.equal(names, source), False).to_numpy(zero_copy_only=False)]] = True
        uses[source] = used
    return uses


def blank_outside_sources(frame: pd.DataFrame) -> pd.DataFrame:
    """``frame`` (dossier rows) with every column whose sources are not all in ``sources_used`` emptied.

    A nullable column becomes null; a required count (``months_of_accounts``) becomes 0. This is
    the last guard of the consent rule on values: nothing derived from a source outside a dossier's
    ``sources_used`` can leave evaluation.

    >>> rows = pd.DataFrame({"sources_used": [["tax"]], "vat_on_time_rate": [1.0], "revenue_12m": [9.0]})
    >>> blank_outside_sources(rows)[["vat_on_time_rate", "revenue_12m"]].to_dict("records")
    [{'vat_on_time_rate': 1.0, 'revenue_12m': nan}]
    """
    uses = _uses(frame["sources_used"])
    blanked = frame.copy()
    for column in FEATURE_COLUMNS + SCORE_COLUMNS:
        if column.derives_from == ALL_USED or column.name not in blanked.columns:
            continue
        outside = ~np.logical_and.reduce([uses[source] for source in column.derives_from])
        if outside.any():
            blanked.loc[outside, column.name] = None if column.nullable else 0
    return blanked
