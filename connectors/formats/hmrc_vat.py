"""HMRC MTD VAT JSON files -> ``vat_returns`` (through :mod:`connectors.tax.hmrc_vat`), liabilities, payments.

A file holds one API response - obligations, a return, liabilities or payments - or several: a
JSON list of them, or the published spec's examples layout ``{name: {"description", "value"}}``.
Obligations and returns go through the tax connector's parser (one row per obligation, boxes
from its return). A return whose period has no obligation in the file cannot be a canonical row
(no due date): it is kept in ``vat_return_boxes`` and said in a warning. Liabilities and payments
become ``vat_liabilities`` and ``vat_payments``.

Totals: ``returns`` (returns read), ``total_vat_due`` (box 3 summed), ``declared_turnover`` (box 6
summed) and ``filed_late`` (fulfilled obligations received after their due date).
"""

from __future__ import annotations

import json
from typing import Any

import pandas as pd

from connectors.core.parsing import SmePages
from connectors.core.streams import RawPage
from connectors.formats._connector_results import raise_first_reject
from connectors.formats.base import DEFAULT_LIMITS, FormatError, Limits, Parsed, Source, load_json, read_all
from connectors.tax import hmrc_vat
from warehouse.canonical import VAT_RETURNS

NAME = "hmrc-vat"
KINDS = ("obligations", "periodKey", "liabilities", "payments")


def documents(document: Any) -> list[tuple[str, dict[str, Any]]]:
    """``(label, payload)`` of every API payload in a file (list, examples layout, or one payload)."""
    if isinstance(document, list):
        return [(f"[{i}]", item) for i, item in enumerate(document) if isinstance(item, dict)]
    if isinstance(document, dict) and any(key in document for key in KINDS):
        return [("", document)]
    if isinstance(document, dict) and all(isinstance(v, dict) and "value" in v for v in document.values()):
        return [(name, v["value"]) for name, v in document.items() if isinstance(v["value"], dict)]
    return []


def _flat(payloads: list[tuple[str, dict[str, Any]]], key: str) -> pd.DataFrame:
    rows = []
    for label, payload in payloads:
        for index, item in enumerate(payload.get(key) or []):
            if isinstance(item, dict):
                rows.append(
                    {
                        **pd.json_normalize(item, sep=".").iloc[0].to_dict(),
                        "source_record": f"{label}/{key}[{index}]",
                    }
                )
    return pd.DataFrame(rows)


def parse(
    source: Source, *, sme_id: str = "", raw_sha256: str = "", limits: Limits = DEFAULT_LIMITS
) -> Parsed:
    """An HMRC VAT JSON file -> ``vat_returns`` and the side tables, totals and warnings."""
    data = read_all(source, limits)
    payloads = documents(load_json(data, limits))
    if not payloads:
        raise FormatError(
            "neither VAT obligations, a VAT return, liabilities nor payments", field="obligations"
        )
    obligations = [(label, p) for label, p in payloads if "obligations" in p]
    returns = [(label, p) for label, p in payloads if "periodKey" in p]
    keys = {
        str(o.get("periodKey"))
        for _, p in obligations
        for o in (p.get("obligations") or [])
        if isinstance(o, dict)
    }
    attached = [(label, p) for label, p in returns if str(p.get("periodKey")) in keys]
    loose = [(label, p) for label, p in returns if str(p.get("periodKey")) not in keys]
    pages = [
        RawPage(hmrc_vat.SOURCE, label or "file", "", json.dumps(p).encode(), "application/json")
        for label, p in (*obligations, *attached)
    ]
    result = hmrc_vat.parse_batch([SmePages(sme_id, pages)])
    raise_first_reject(result)
    table = result.tables[VAT_RETURNS.name].assign(raw_sha256=raw_sha256)
    warnings = [
        f"return {p.get('periodKey')} ({label or 'file'}) has no obligation in the file: kept in vat_return_boxes only"
        for label, p in loose
    ]
    boxes = pd.DataFrame()
    if loose:
        frame = pd.DataFrame(
            [
                {**p, "sme_id": sme_id, "source_record": label or "file", "raw_sha256": raw_sha256}
                for label, p in loose
            ]
        )
        boxes, rejects = hmrc_vat.returns_to_columns(frame)
        if len(rejects):
            first = rejects.iloc[0]
            raise FormatError(str(first["reason"]), record=str(first["record"]), field=str(first["field"]))
        boxes = boxes.rename(columns={"return_record": "source_record", "return_sha256": "raw_sha256"})
    filed = table[table["status"] == "F"]
    late = int((pd.to_datetime(filed["received_date"]) > pd.to_datetime(filed["due_date"])).sum())
    all_boxes = pd.concat([table, boxes], ignore_index=True) if len(boxes) else table
    returns_read = int(table["total_vat_due"].notna().sum()) + len(boxes)
    tables = {VAT_RETURNS.name: table}
    if len(boxes):
        tables["vat_return_boxes"] = boxes
    for key in ("liabilities", "payments"):
        side = _flat(payloads, key)
        if len(side):
            tables[f"vat_{key}"] = side.assign(sme_id=sme_id, raw_sha256=raw_sha256)
    return Parsed(
        format=NAME,
        tables=tables,
        totals={
            "returns": returns_read,
            "total_vat_due": round(float(all_boxes["total_vat_due"].fillna(0).sum()), 2),
            "declared_turnover": round(float(all_boxes["total_sales_ex_vat"].fillna(0).sum()), 2),
            "filed_late": late,
        },
        warnings=warnings,
    )


def detect(head: bytes, root: tuple[str, str]) -> bool:
    start = head.lstrip(b"\xef\xbb\xbf \t\r\n")
    if start[:1] not in (b"{", b"["):
        return False
    return any(
        marker in head
        for marker in (b'"obligations"', b'"periodKey"', b'"vatDueSales"', b'"liabilities"', b'"payments"')
    )
