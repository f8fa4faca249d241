"""Parser of HMRC Making Tax Digital VAT JSON (obligations and returns) into ``vat_returns``.

Two payload kinds, told apart by content so a file needs no label:

* an obligations list ``{"obligations": [{"start", "end", "due", "status", "periodKey",
  "received"?}]}`` - one entry per VAT period, ``F`` (fulfilled) or ``O`` (open);
* a return ``{"periodKey", "vatDueSales", ... "totalAcquisitionsExVAT"}`` - the nine boxes of one
  filed period.

Each obligation becomes one row; a filed one takes its boxes from the return with the same
``periodKey``. A filed row's lineage is its return (``source_record`` = the return page's label,
e.g. ``returns/18A1``); any other row's is its obligation entry (``obligations[...]/obligations[i]``).
An obligation listed twice (overlapping request windows) is one record and is dropped as an exact
duplicate; a return that matches no obligation, an unknown status or a non-numeric box is a reject
naming record and field.

>>> obligations = b'{"obligations": [{"start": "2017-01-01", "end": "2017-03-31", "due": "2017-05-07",'
>>> obligations += b' "status": "O", "periodKey": "18A1"}]}'
>>> result = parse_bytes(obligations, sme_id="SME-000001")
>>> result.tables["vat_returns"][["period_key", "status", "due_date"]].values.tolist()
[['18A1', 'O', datetime.date(2017, 5, 7)]]
"""

from __future__ import annotations

import json
from collections.abc import Sequence

import pandas as pd

from connectors.core.parsing import (
    JsonRecords,
    ParseResult,
    SmePages,
    build_result,
    combine_rejects,
    money,
    page_reject,
    rejects_where,
    single,
    to_choice,
    to_date,
    to_number,
    to_text,
)
from warehouse.canonical import VAT_RETURNS

SOURCE = "tax"

BOX_FIELDS: dict[str, str] = {
    "vat_due_sales": "vatDueSales",
    "vat_due_acquisitions": "vatDueAcquisitions",
    "total_vat_due": "totalVatDue",
    "vat_reclaimed": "vatReclaimedCurrPeriod",
    "net_vat_due": "netVatDue",
    "total_sales_ex_vat": "totalValueSalesExVAT",
    "total_purchases_ex_vat": "totalValuePurchasesExVAT",
    "total_goods_supplied_ex_vat": "totalValueGoodsSuppliedExVAT",
    "total_acquisitions_ex_vat": "totalAcquisitionsExVAT",
}
"""Canonical column -> HMRC return field (boxes 1 to 9)."""

OBLIGATION_STATUSES = ("F", "O")
LINEAGE = ["sme_id", "source_record", "raw_sha256"]


def read_pages(batch: Sequence[SmePages]) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame, dict[str, int]]:
    """(obligations frame, returns frame, rejects, records per SME) from a mix of payloads."""
    obligations = JsonRecords("obligations")
    returns: list[dict[str, object]] = []
    rejects: list[pd.DataFrame] = []
    for item in batch:
        for page in item.pages:
            try:
                document = json.loads(page.body)
            except ValueError as error:
                rejects.append(page_reject(item.sme_id, page, "", f"not JSON: {error}"))
                continue
            if isinstance(document, dict) and "obligations" in document:
                obligations.add(item.sme_id, page, document)
            elif isinstance(document, dict) and "periodKey" in document:
                returns.append(
                    {
                        **document,
                        "sme_id": item.sme_id,
                        "source_record": page.label,
                        "raw_sha256": page.sha256,
                    }
                )
            else:
                rejects.append(
                    page_reject(item.sme_id, page, "", "neither a VAT obligations list nor a VAT return")
                )
    counts = dict(obligations.counts)
    for row in returns:
        counts[str(row["sme_id"])] = counts.get(str(row["sme_id"]), 0) + 1
    returns_frame = pd.DataFrame(returns) if returns else pd.DataFrame(columns=["periodKey", *LINEAGE])
    return obligations.frame(), returns_frame, combine_rejects([obligations.all_rejects(), *rejects]), counts


def obligations_to_columns(obligations: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Typed obligation columns (period key, dates, status) and the fields that failed."""
    period_key, key_rejects = to_text(obligations, "periodKey", "periodKey")
    start, start_rejects = to_date(obligations, "start", "start", fmt="%Y-%m-%d")
    end, end_rejects = to_date(obligations, "end", "end", fmt="%Y-%m-%d")
    due, due_rejects = to_date(obligations, "due", "due", fmt="%Y-%m-%d")
    received, received_rejects = to_date(obligations, "received", "received", fmt="%Y-%m-%d", required=False)
    status, status_rejects = to_choice(obligations, "status", "status", OBLIGATION_STATUSES)
    frame = pd.DataFrame(
        {
            "sme_id": obligations["sme_id"],
            "period_key": period_key,
            "period_start": start,
            "period_end": end,
            "due_date": due,
            "status": status,
            "received_date": received,
            "source_record": obligations["source_record"],
            "raw_sha256": obligations["raw_sha256"],
        }
    )
    rejects = [key_rejects, start_rejects, end_rejects, due_rejects, received_rejects, status_rejects]
    return frame, combine_rejects(rejects)


def returns_to_columns(returns: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Typed boxes 1-9 per (SME, ``periodKey``) and the fields that failed."""
    period_key, key_rejects = to_text(returns, "periodKey", "periodKey")
    columns: dict[str, pd.Series] = {"sme_id": returns["sme_id"], "period_key": period_key}
    rejects = [key_rejects]
    for column, field in BOX_FIELDS.items():
        values, field_rejects = to_number(returns, field, field)
        columns[column] = money(values)
        rejects.append(field_rejects)
    columns["return_record"] = returns["source_record"]
    columns["return_sha256"] = returns["raw_sha256"]
    return pd.DataFrame(columns), combine_rejects(rejects)


def distinct_returns(returns: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Returns with exact repeats dropped; two *different* returns for one period are rejects."""
    if returns.empty:
        return returns, combine_rejects([])
    content = [c for c in returns.columns if c not in ("source_record", "raw_sha256")]
    # An unexpected nested value (a list or object under an unknown key) is compared as its JSON text.
    comparable = returns[content].map(
        lambda v: json.dumps(v, sort_keys=True) if isinstance(v, list | dict) else v
    )
    returns = returns[~comparable.duplicated()].reset_index(drop=True)
    conflicting = returns.assign(key=returns["periodKey"].astype("str")).duplicated(
        ["sme_id", "key"], keep=False
    )
    rejects = rejects_where(returns, conflicting, "periodKey", "two different returns for one period")
    return returns[~conflicting].reset_index(drop=True), rejects


def to_canonical(obligations: pd.DataFrame, returns: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Obligations left-joined to their returns -> ``vat_returns`` columns, with rejects."""
    periods, obligation_rejects = obligations_to_columns(obligations)
    boxes, box_rejects = returns_to_columns(returns)
    keys = ["sme_id", "period_key"]
    known = boxes[keys].merge(periods[keys].drop_duplicates(), on=keys, how="left", indicator=True)
    orphans = pd.Series(known["_merge"].to_numpy() == "left_only", index=boxes.index)
    orphan_rejects = rejects_where(
        returns, orphans, "periodKey", "a VAT return with no obligation to attach it to"
    )
    joined = periods.merge(boxes[~orphans], on=keys, how="left", validate="many_to_one")
    filed = joined["return_record"].notna()
    return_for_open = filed & (joined["status"] != "F")
    joined["source_record"] = joined["return_record"].where(filed, joined["source_record"])
    joined["raw_sha256"] = joined["return_sha256"].where(filed, joined["raw_sha256"])
    rejects = combine_rejects(
        [
            obligation_rejects,
            box_rejects,
            orphan_rejects,
            rejects_where(
                joined, return_for_open, "status", "a return was filed for an obligation still open"
            ),
        ]
    )
    return joined[VAT_RETURNS.column_names], rejects


def parse_batch(batch: Sequence[SmePages]) -> ParseResult:
    """Obligation and return pages of many SMEs -> ``vat_returns`` (SMEs with a bad field: rejects only)."""
    obligations, returns, page_rejects, counts = read_pages(batch)
    returns, conflict_rejects = distinct_returns(returns)
    frame, rejects = to_canonical(obligations, returns)
    return build_result(
        SOURCE, {VAT_RETURNS.name: frame}, combine_rejects([page_rejects, conflict_rejects, rejects]), counts
    )


def parse_bytes(body: bytes, *, sme_id: str, label: str = "") -> ParseResult:
    """One HMRC VAT payload (obligations or a return) of one SME -> ``vat_returns``."""
    return parse_batch(single(sme_id, body, source=SOURCE, label=label, media_type="application/json"))


def filed_period_keys(body: bytes) -> list[str]:
    """Period keys of the fulfilled obligations in an obligations payload (the returns to fetch).

    Lenient by design: a payload that does not parse yields no keys, and the parser - which reads
    the same landed bytes - reports what is wrong with it.
    """
    try:
        document = json.loads(body)
    except ValueError:
        return []
    entries = document.get("obligations") if isinstance(document, dict) else None
    if not isinstance(entries, list):
        return []
    return [
        str(entry["periodKey"])
        for entry in entries
        if isinstance(entry, dict) and entry.get("status") == "F" and entry.get("periodKey")
    ]
