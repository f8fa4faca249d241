"""SAF-T (PT) billing files -> ``sales_documents`` and ``monthly_sales``.

Portuguese certified invoicing software exports its sales documents as SAF-T (PT) (``urn:OECD:
StandardAuditFile-Tax:PT_1.04_01``), usually in Windows-1252 as its XML declaration says. The file
is streamed; each ``SourceDocuments/SalesInvoices/Invoice`` gives one document: number, type (FT
invoice, FS simplified invoice, FR invoice-receipt, ND debit note, NC credit note), status, date and
its ``DocumentTotals`` (``NetTotal``, ``TaxPayable``, ``GrossTotal``).

Monthly sales add the net totals of invoices and debit notes and subtract credit notes, per
calendar month of ``InvoiceDate``; annulled documents (status ``A``) are listed but count for
nothing. The header's ``NumberOfEntries`` should count every document, and its ``TotalCredit``
(``TotalDebit``) the lines' ``CreditAmount`` (``DebitAmount``) of the documents not annulled:
a mismatch is a warning.
"""

from __future__ import annotations

from typing import Any

import pandas as pd

from connectors.formats.base import (
    DEFAULT_LIMITS,
    Budget,
    FormatError,
    Limits,
    Parsed,
    Source,
    iso_date,
    iter_xml,
    local,
    number,
    text_of,
)

NAME = "saft-pt"
NAMESPACE_PREFIX = "urn:OECD:StandardAuditFile-Tax:PT_"
SALES_TYPES = ("FT", "FS", "FR", "ND")
CREDIT_TYPES = ("NC",)
ANNULLED = "A"
TOLERANCE = 0.01


def _document(element: Any, record: str) -> dict[str, Any]:
    number_text = text_of(element, "InvoiceNo")
    record = f"Invoice[{number_text}]" if number_text else record
    if not number_text:
        raise FormatError("missing", record=record, field="InvoiceNo")
    kind = text_of(element, "InvoiceType")
    if kind not in (*SALES_TYPES, *CREDIT_TYPES):
        raise FormatError(f"unknown document type {kind!r}", record=record, field="InvoiceType")
    status = text_of(element, "DocumentStatus", "InvoiceStatus")
    if not status:
        raise FormatError("missing", record=record, field="DocumentStatus/InvoiceStatus")
    totals = next((child for child in element if local(child.tag) == "DocumentTotals"), None)
    if totals is None:
        raise FormatError("missing", record=record, field="DocumentTotals")
    line_debit = line_credit = 0.0
    for line in (child for child in element if local(child.tag) == "Line"):
        line_record = f"{record}/Line[{text_of(line, 'LineNumber') or '?'}]"
        line_debit += (
            number(text_of(line, "DebitAmount"), record=line_record, field="DebitAmount", required=False)
            or 0.0
        )
        line_credit += (
            number(text_of(line, "CreditAmount"), record=line_record, field="CreditAmount", required=False)
            or 0.0
        )
    return {
        "document_no": number_text,
        "line_debit": line_debit,
        "line_credit": line_credit,
        "document_type": kind,
        "status": status,
        "document_date": iso_date(text_of(element, "InvoiceDate"), record=record, field="InvoiceDate"),
        "customer_id": text_of(element, "CustomerID"),
        "net_total": number(text_of(totals, "NetTotal"), record=record, field="DocumentTotals/NetTotal"),
        "tax_payable": number(
            text_of(totals, "TaxPayable"), record=record, field="DocumentTotals/TaxPayable"
        ),
        "gross_total": number(
            text_of(totals, "GrossTotal"), record=record, field="DocumentTotals/GrossTotal"
        ),
        "source_record": record,
    }


def parse(
    source: Source, *, sme_id: str = "", raw_sha256: str = "", limits: Limits = DEFAULT_LIMITS
) -> Parsed:
    """A SAF-T (PT) file -> its sales documents and monthly sales, with totals and warnings."""
    budget = Budget(limits)
    documents: list[dict[str, Any]] = []
    header: dict[str, float | None] = {"NumberOfEntries": None, "TotalDebit": None, "TotalCredit": None}
    currency = None
    seen_root = False
    for event, element, depth in iter_xml(source, limits):
        name = local(element.tag)
        if event == "start":
            if depth == 1:
                seen_root = True
                if name != "AuditFile" or not str(element.tag).startswith("{" + NAMESPACE_PREFIX):
                    raise FormatError(f"not a SAF-T (PT) file (root element {element.tag})")
            continue
        parent = element.getparent()
        parent_name = local(parent.tag) if parent is not None else ""
        if parent_name == "Header" and name == "CurrencyCode":
            currency = (element.text or "").strip() or None
        elif parent_name == "SalesInvoices" and name in header:
            header[name] = number(element.text, record="SalesInvoices", field=name)
        elif name == "Invoice" and parent_name == "SalesInvoices":
            record = f"SalesInvoices/Invoice[{len(documents)}]"
            budget.count(record)
            documents.append(_document(element, record))
        if depth == 3 or name == "Invoice":
            element.clear(keep_tail=False)
            while element.getprevious() is not None:
                del parent[0]
    if not seen_root:
        raise FormatError("no XML element found")
    frame = pd.DataFrame(
        documents,
        columns=[
            "document_no",
            "document_type",
            "status",
            "document_date",
            "customer_id",
            "net_total",
            "tax_payable",
            "gross_total",
            "source_record",
            "line_debit",
            "line_credit",
        ],
    )
    frame.insert(0, "sme_id", sme_id)
    frame["currency"] = currency
    frame["raw_sha256"] = raw_sha256
    live = frame[frame["status"] != ANNULLED]
    sign = live["document_type"].map(lambda t: -1.0 if t in CREDIT_TYPES else 1.0)
    month = pd.to_datetime(live["document_date"]).dt.to_period("M").dt.to_timestamp()
    monthly = (
        pd.DataFrame(
            {
                "period_month": month,
                "invoices": (sign > 0).astype(int),
                "credit_notes": (sign < 0).astype(int),
                "net_sales": live["net_total"] * sign,
                "tax": live["tax_payable"] * sign,
                "gross_sales": live["gross_total"] * sign,
            }
        )
        .groupby("period_month", as_index=False)
        .sum()
        .round({"net_sales": 2, "tax": 2, "gross_sales": 2})
    )
    monthly["period_month"] = monthly["period_month"].dt.date
    monthly.insert(0, "sme_id", sme_id)
    monthly["currency"] = currency
    warnings = []
    if header["NumberOfEntries"] is not None and int(header["NumberOfEntries"]) != len(frame):
        warnings.append(f"header NumberOfEntries {int(header['NumberOfEntries'])} but {len(frame)} documents")
    for label, column in (("TotalCredit", "line_credit"), ("TotalDebit", "line_debit")):
        stated = header[label]
        actual = float(live[column].sum())
        if stated is not None and abs(stated - actual) > TOLERANCE:
            warnings.append(
                f"header {label} {stated:.2f} but the non-annulled documents' lines sum to {actual:.2f}"
            )
    frame = frame.drop(columns=["line_debit", "line_credit"])
    return Parsed(
        format=NAME,
        tables={"sales_documents": frame, "monthly_sales": monthly},
        totals={
            "documents": len(frame),
            "invoices": int(frame["document_type"].isin(SALES_TYPES).sum()),
            "credit_notes": int(frame["document_type"].isin(CREDIT_TYPES).sum()),
            "annulled": int((frame["status"] == ANNULLED).sum()),
            "by_type": {k: int(v) for k, v in frame["document_type"].value_counts().sort_index().items()},
            "by_status": {k: int(v) for k, v in frame["status"].value_counts().sort_index().items()},
            "net_sales": round(float(monthly["net_sales"].sum()), 2),
        },
        warnings=warnings,
    )


def detect(head: bytes, root: tuple[str, str]) -> bool:
    return root[1] == "AuditFile" and root[0].startswith(NAMESPACE_PREFIX)
