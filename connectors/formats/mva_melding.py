"""Norwegian VAT return (mva-melding, ``mvaMeldingDto`` v1.0 XML) -> ``vat_return_no`` and its lines.

One return: the taxable period (``skattleggingsperiode``: a month, two months such as
``mars-april``, a half year or the whole ``aar``), the VAT assessed (``fastsattMerverdiavgift``),
the taxpayer (``organisasjonsnummer``), the category (``meldingskategori``) and one
``mvaSpesifikasjonslinje`` per VAT code and specification (``grunnlag`` base, ``sats`` rate,
``merverdiavgift`` VAT, negative for input VAT).

Declared turnover is the base of the sales codes (:data:`SALES_CODES`: domestic sales at every
rate, zero-rated and exempt supplies, exports), except withdrawals (``spesifikasjon`` ``uttak``),
which are not sales. A return whose lines do not add up to ``fastsattMerverdiavgift`` gets a
warning. The return carries no due or filing date, so it is not a ``vat_returns`` row (whose
due date is required); it is written as ``vat_return_no`` and ``vat_return_lines``. Its ``status``
is ``not_validated`` until the tax authority's validation result is read with it
(:mod:`connectors.formats.mva_validering`).
"""

from __future__ import annotations

import datetime as dt
from typing import Any

import pandas as pd

from connectors.formats.base import (
    DEFAULT_LIMITS,
    Budget,
    FormatError,
    Limits,
    Parsed,
    Source,
    iter_xml,
    local,
    number,
    text_of,
)

NAME = "mva-melding"
NOT_VALIDATED = "not_validated"
"""The return's ``status`` until its validation result is read (:mod:`connectors.formats.mva_validering`)."""
NAMESPACE_PREFIX = "no:skatteetaten:fastsetting:avgift:mva:skattemeldingformerverdiavgift:"
MONTHS = (
    "januar",
    "februar",
    "mars",
    "april",
    "mai",
    "juni",
    "juli",
    "august",
    "september",
    "oktober",
    "november",
    "desember",
)
SALES_CODES = frozenset({"3", "31", "32", "33", "5", "51", "52", "6"})
"""Standard VAT codes of supplies (SAF-T Standard Tax Codes): their base is turnover."""
TOLERANCE = 0.5


def decimal(text: str | None, *, record: str, field: str, required: bool = True) -> float | None:
    """A number as the return writes it (``11,11`` or ``11.11``)."""
    return number(
        text.replace(",", ".") if text and "." not in text else text,
        record=record,
        field=field,
        required=required,
    )


def period_bounds(kind: str, value: str | None, year: int, *, record: str) -> tuple[dt.date, dt.date]:
    """First and last day of a taxable period named the way mva-melding names it.

    >>> period_bounds("skattleggingsperiodeToMaaneder", "mars-april", 2021, record="r")
    (datetime.date(2021, 3, 1), datetime.date(2021, 4, 30))
    """
    names = (value or "").lower().split("-") if value else []
    try:
        if kind == "aar" or not names:
            first, last = 1, 12
        else:
            first, last = MONTHS.index(names[0]) + 1, MONTHS.index(names[-1]) + 1
    except ValueError:
        raise FormatError(f"unknown period {value!r}", record=record, field=kind) from None
    end = (pd.Timestamp(year, last, 1) + pd.offsets.MonthEnd(0)).date()
    return dt.date(year, first, 1), end


def parse(
    source: Source, *, sme_id: str = "", raw_sha256: str = "", limits: Limits = DEFAULT_LIMITS
) -> Parsed:
    """An mva-melding XML file -> the return's summary row and its lines, totals and warnings."""
    budget = Budget(limits)
    lines: list[dict[str, Any]] = []
    facts: dict[str, Any] = {}
    seen_root = False
    for event, element, depth in iter_xml(source, limits):
        name = local(element.tag)
        if event == "start":
            if depth == 1:
                seen_root = True
                if name != "mvaMeldingDto" or not str(element.tag).startswith("{" + NAMESPACE_PREFIX):
                    raise FormatError(f"not an mva-melding (root element {element.tag})")
            continue
        if name == "mvaSpesifikasjonslinje":
            record = f"mvaSpesifikasjonslinje[{len(lines)}]"
            budget.count(record)
            code = text_of(element, "mvaKode")
            if not code:
                raise FormatError("missing", record=record, field="mvaKode")
            lines.append(
                {
                    "vat_code": code,
                    "specification": text_of(element, "spesifikasjon"),
                    "system_code": text_of(element, "mvaKodeRegnskapsystem"),
                    "base": number(
                        text_of(element, "grunnlag"), record=record, field="grunnlag", required=False
                    ),
                    "rate": decimal(text_of(element, "sats"), record=record, field="sats", required=False),
                    "vat": decimal(text_of(element, "merverdiavgift"), record=record, field="merverdiavgift"),
                    "source_record": record,
                }
            )
            element.clear(keep_tail=False)
        elif name == "skattleggingsperiode":
            period = next((child for child in element if local(child.tag) == "periode"), None)
            kind_element = (
                next((child for child in period if isinstance(child.tag, str)), None)
                if period is not None
                else None
            )
            facts["period_kind"] = local(kind_element.tag) if kind_element is not None else "aar"
            facts["period_value"] = (kind_element.text or "").strip() if kind_element is not None else None
            facts["year"] = text_of(element, "aar")
        elif name in ("fastsattMerverdiavgift", "organisasjonsnummer", "meldingskategori"):
            facts[name] = (element.text or "").strip() or None
    if not seen_root:
        raise FormatError("no XML element found")
    year_text = facts.get("year")
    if not year_text or not year_text.isdigit():
        raise FormatError("missing or not a year", record="skattleggingsperiode", field="aar")
    start, end = period_bounds(
        facts["period_kind"], facts["period_value"], int(year_text), record="skattleggingsperiode"
    )
    assessed = number(
        facts.get("fastsattMerverdiavgift"),
        record="skattegrunnlagOgBeregnetSkatt",
        field="fastsattMerverdiavgift",
    )
    frame = pd.DataFrame(
        lines, columns=["vat_code", "specification", "system_code", "base", "rate", "vat", "source_record"]
    )
    frame.insert(0, "sme_id", sme_id)
    frame["raw_sha256"] = raw_sha256
    vat_sum = round(float(frame["vat"].sum()), 2)
    sales = frame["vat_code"].isin(SALES_CODES) & (frame["specification"].fillna("") != "uttak")
    turnover = round(float(frame.loc[sales, "base"].fillna(0).sum()), 2)
    warnings = []
    if assessed is not None and abs(vat_sum - assessed) > TOLERANCE:
        warnings.append(
            f"the lines' merverdiavgift sums to {vat_sum:.2f}, but fastsattMerverdiavgift is {assessed:.2f}"
        )
    summary = pd.DataFrame(
        [
            {
                "sme_id": sme_id,
                "organisation_number": facts.get("organisasjonsnummer"),
                "category": facts.get("meldingskategori"),
                "period_start": start,
                "period_end": end,
                "currency": "NOK",
                "vat_assessed": assessed,
                "vat_lines_total": vat_sum,
                "declared_turnover": turnover,
                "lines": len(frame),
                "status": NOT_VALIDATED,
                "validation_errors": None,
                "validation_warnings": None,
                "source_record": "skattegrunnlagOgBeregnetSkatt",
                "raw_sha256": raw_sha256,
            }
        ]
    )
    return Parsed(
        format=NAME,
        tables={"vat_return_no": summary, "vat_return_lines": frame},
        totals={"returns": 1, "total_vat_due": assessed, "declared_turnover": turnover},
        warnings=warnings,
    )


def detect(head: bytes, root: tuple[str, str]) -> bool:
    return root[0].startswith(NAMESPACE_PREFIX)
