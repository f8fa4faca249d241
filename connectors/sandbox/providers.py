"""Wire payloads of the four providers, rendered from one SME's generated record (pure functions).

Each provider speaks the shape documented in ``connectors/PROVIDERS.md`` and in this package's
README: a bookkeeping platform's paged JSON reports, HMRC's MTD VAT obligations and returns, a
Green Button (NAESB ESPI) Atom feed, and KoboToolbox's JSON export of form submissions. The server
only authenticates, filters and pages; everything here is deterministic given the record.

Money on the wire is exact: the universe keeps pence as integers and renders them as decimal
strings (accounting), two-decimal numbers (HMRC) or ESPI's 1/100000 of the currency unit.

>>> pence_text(-1234)
'-12.34'
>>> espi_time(0)
'1970-01-01T00:00:00Z'
"""

from __future__ import annotations

import datetime as dt
import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from urllib.parse import urlencode
from xml.sax.saxutils import escape, quoteattr

import numpy as np

from connectors.sandbox.universe import (
    BALANCE_FIELDS,
    PNL_FIELDS,
    Meter,
    SmeRecord,
    Visit,
    stable_hex,
    stable_uuid,
)

ATOM_NS = "http://www.w3.org/2005/Atom"
ESPI_NS = "http://naesb.org/espi"
BILLING_NS = "urn:sme-dossier:sandbox:billing:1"
"""Namespace of the payment-due date carried in ``espi:extension`` (ESPI has no due-date element)."""
GBP_ISO_4217 = 826
ESPI_COST_SCALE = 1000
"""ESPI costs are in 1/100000 of the currency unit: pence x 1000."""
NOMINAL_MONTH_SECONDS = 2_592_000
PAYMENT_ITEM_KIND = 9
"""ESPI ``ItemKind`` 9: "Payment. A payment for a previous billing."."""


def pence_text(pence: int) -> str:
    """Exact decimal string of an amount in pence."""
    sign = "-" if pence < 0 else ""
    whole, cents = divmod(abs(int(pence)), 100)
    return f"{sign}{whole}.{cents:02d}"


def espi_time(epoch: int) -> str:
    """An epoch second as the Atom ``dateTime`` the feeds use (UTC, ``Z``)."""
    return dt.datetime.fromtimestamp(int(epoch), dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _epoch_of_day(day: np.datetime64, hour: int = 0) -> int:
    return int(day.astype("datetime64[s]").astype(np.int64)) + hour * 3600


# --- accounting: paged monthly reports ---------------------------------------------------------------


def accounting_reports(record: SmeRecord, seed: int) -> list[dict[str, object]]:
    """Every monthly report the platform holds for the SME, oldest first, as served.

    Months missing from the books are absent; a duplicated month appears twice in a row (the second
    copy with its own ``report_id``, identical or with conflicting revenue and net profit); a
    malformed field carries its broken text instead of a decimal string.
    """
    books = record.books
    reports: list[dict[str, object]] = []
    months = np.datetime_as_string(books.months, unit="M")
    for month in np.flatnonzero(books.present):
        amounts = {name: int(books.money[name][month]) for name in (*PNL_FIELDS, *BALANCE_FIELDS)}
        copies = [(0, amounts)]
        duplicate = books.duplicate
        if duplicate is not None and duplicate.month_index == month:
            conflicting = dict(amounts)
            conflicting["revenue"] += duplicate.revenue_delta
            conflicting["net_profit"] += duplicate.revenue_delta
            copies.append((1, conflicting))
        for copy, values in copies:
            texts = {name: pence_text(value) for name, value in values.items()}
            bad = books.malformed
            if bad is not None and bad.record == month and copy == 0:
                texts[bad.field] = bad.text
            reports.append(
                {
                    "report_id": f"rep_{stable_hex(20, seed, record.sme_id, months[month], copy)}",
                    "period": str(months[month]),
                    "profit_and_loss": {name: texts[name] for name in PNL_FIELDS},
                    "balance_sheet": {name: texts[name] for name in BALANCE_FIELDS},
                }
            )
    return reports


SAFT_ACCOUNTS: tuple[tuple[str, str, str], ...] = (
    # (AccountID, description, what it holds); the group is the first two digits (NS 4102).
    ("1200", "Fixed assets", "fixed_assets"),
    ("1400", "Inventory", "inventory"),
    ("1500", "Trade receivables", "receivables"),
    ("1700", "Other current assets", "other_current_assets"),
    ("1920", "Bank deposits", "cash"),
    ("2050", "Other equity", "equity"),
    ("2200", "Long-term liabilities", "long_term_liabilities"),
    ("2400", "Current liabilities", "current_liabilities"),
    ("3000", "Sales revenue", "revenue"),
    ("4000", "Cost of goods sold", "cost_of_sales"),
    ("6000", "Depreciation", "depreciation"),
    ("6300", "Operating expenses", "operating_expenses"),
    ("8150", "Interest expense", "interest_expense"),
    ("8300", "Tax on ordinary result", "tax_expense"),
)
"""The chart the sandbox's SAF-T export books on: one account per canonical amount."""

_CREDIT_NORMAL = {"equity", "long_term_liabilities", "current_liabilities", "revenue"}


def _month_end(month: np.datetime64) -> dt.date:
    return (month + np.timedelta64(1, "M")).astype("datetime64[D]").astype(dt.date) - dt.timedelta(days=1)


def _booked_months(record: SmeRecord, period_from: str | None, period_to: str | None) -> list[int]:
    months = np.datetime_as_string(record.books.months, unit="M")
    return [
        int(m)
        for m in np.flatnonzero(record.books.present)
        if (period_from is None or months[m] >= period_from) and (period_to is None or months[m] <= period_to)
    ]


def _ledger_positions(record: SmeRecord, month: int) -> dict[str, int]:
    """Debit-positive balance (or the month's flow, for P&L accounts) of every SAF-T account, pence."""
    money = {name: int(values[month]) for name, values in record.books.money.items()}
    other = money["current_assets"] - money["cash"] - money["receivables"] - money["inventory"]
    held = {
        "fixed_assets": money["total_assets"] - money["current_assets"],
        "inventory": money["inventory"],
        "receivables": money["receivables"],
        "other_current_assets": other,
        "cash": money["cash"],
        "long_term_liabilities": money["total_liabilities"] - money["current_liabilities"],
        "current_liabilities": money["current_liabilities"],
        **{name: money[name] for name in PNL_FIELDS if name != "net_profit"},
    }
    return {key: -value if key in _CREDIT_NORMAL else value for key, value in held.items()}


def saft_export(record: SmeRecord, *, period_from: str | None = None, period_to: str | None = None) -> bytes:
    """The SME's books as a Norwegian SAF-T Financial v1.30 export (UTF-8 XML).

    Every booked month in ``[period_from, period_to]`` is one transaction dated the month's last day:
    its P&L accounts carry the month's flows, its balance-sheet accounts the change since the last
    booked month (the first booked month posts the whole balances; opening balances are zero), and
    account 2050 (other equity) the difference, so each transaction balances. Parsed with the
    documented mapping (``connectors/formats/SAFT_NO_MAPPING.md``) it gives back the monthly reports'
    figures; a month missing from the books has no transaction.
    """
    months = _booked_months(record, period_from, period_to)
    keys = [key for _, _, key in SAFT_ACCOUNTS]
    previous = dict.fromkeys(keys, 0)
    transactions, total = [], 0
    closing = dict.fromkeys(keys, 0)
    for number, month in enumerate(months, start=1):
        positions = _ledger_positions(record, month)
        lines = {}
        for key in keys:
            if key == "equity":
                continue
            if key in positions and key in PNL_FIELDS:
                lines[key] = positions[key]
            elif key in positions:
                lines[key] = positions[key] - previous[key]
                previous[key] = positions[key]
        lines["equity"] = -sum(lines.values())
        day = _month_end(record.books.months[month])
        rendered = []
        for record_id, (account, _, key) in enumerate(SAFT_ACCOUNTS, start=1):
            amount = lines.get(key, 0)
            if amount == 0:
                continue
            closing[key] += amount
            side = "DebitAmount" if amount > 0 else "CreditAmount"
            total += max(amount, 0)
            rendered.append(
                f"<Line><RecordID>{record_id}</RecordID><AccountID>{account}</AccountID>"
                f"<{side}><Amount>{pence_text(abs(amount))}</Amount></{side}></Line>"
            )
        transactions.append(
            f"<Transaction><TransactionID>{number}</TransactionID><Period>{day.month}</Period>"
            f"<PeriodYear>{day.year}</PeriodYear><TransactionDate>{day.isoformat()}</TransactionDate>"
            f"<Description>Month {day:%Y-%m}</Description>{''.join(rendered)}</Transaction>"
        )
    accounts = []
    for account, description, key in SAFT_ACCOUNTS:
        side = "Credit" if closing[key] < 0 else "Debit"
        accounts.append(
            f"<Account><AccountID>{account}</AccountID><AccountDescription>{description}</AccountDescription>"
            f"<GroupingCategory>RF-1167</GroupingCategory><GroupingCode>{account}</GroupingCode>"
            f"<AccountType>GL</AccountType><Opening{side}Balance>0.00</Opening{side}Balance>"
            f"<Closing{side}Balance>{pence_text(abs(closing[key]))}</Closing{side}Balance></Account>"
        )
    first = _month_end(record.books.months[months[0]]).replace(day=1) if months else None
    last = _month_end(record.books.months[months[-1]]) if months else None
    selection = (
        f"<SelectionCriteria><SelectionStartDate>{first}</SelectionStartDate>"
        f"<SelectionEndDate>{last}</SelectionEndDate></SelectionCriteria>"
        if months
        else ""
    )
    document = (
        '<?xml version="1.0" encoding="UTF-8"?>\n'
        '<AuditFile xmlns="urn:StandardAuditFile-Taxation-Financial:NO">'
        "<Header><AuditFileVersion>1.30</AuditFileVersion><AuditFileCountry>NO</AuditFileCountry>"
        f"<Company><RegistrationNumber>{escape(record.profile.tenant_id)}</RegistrationNumber>"
        f"<Name>{escape(record.profile.name)}</Name></Company>"
        f"<DefaultCurrencyCode>{record.profile.currency}</DefaultCurrencyCode>{selection}</Header>"
        f"<MasterFiles><GeneralLedgerAccounts>{''.join(accounts)}</GeneralLedgerAccounts></MasterFiles>"
        f"<GeneralLedgerEntries><NumberOfEntries>{len(transactions)}</NumberOfEntries>"
        f"<TotalDebit>{pence_text(total)}</TotalDebit><TotalCredit>{pence_text(total)}</TotalCredit>"
        f"<Journal><JournalID>GL</JournalID><Description>General ledger</Description><Type>GL</Type>"
        f"{''.join(transactions)}</Journal></GeneralLedgerEntries></AuditFile>\n"
    )
    return document.encode("utf-8")


def bank_account_id(record: SmeRecord, seed: int) -> str:
    """The SME's business current account at its bank: sort code and account number."""
    digits = str(int(stable_hex(12, seed, "bank", record.sme_id), 16))[-14:].zfill(14)
    return f"{digits[:2]}-{digits[2:4]}-{digits[4:6]} {digits[6:14]}"


def ofx_statement(
    record: SmeRecord, seed: int, *, period_from: str | None = None, period_to: str | None = None
) -> bytes:
    """The SME's business current account as an OFX 2.2 bank statement (XML).

    Each booked month in the range has its takings (the month's revenue, a credit) and its payments
    (a debit: whatever else moved the balance), both posted on the month's last day, so the
    balance after them is the books' month-end cash; the ledger balance is the last month's.
    """
    months = _booked_months(record, period_from, period_to)
    cash = record.books.money["cash"]
    revenue = record.books.money["revenue"]
    rows, balance = [], 0
    for month in months:
        day = _month_end(record.books.months[month]).strftime("%Y%m%d")
        takings = int(revenue[month])
        payments = int(cash[month]) - balance - takings
        balance = int(cash[month])
        for kind, name, amount in (
            ("CREDIT", "Card and cash takings", takings),
            ("DEBIT", "Payments", payments),
        ):
            if amount == 0:
                continue
            fitid = stable_hex(16, seed, record.sme_id, "ofx", day, kind)
            rows.append(
                f"<STMTTRN><TRNTYPE>{kind}</TRNTYPE><DTPOSTED>{day}</DTPOSTED>"
                f"<TRNAMT>{pence_text(amount)}</TRNAMT><FITID>{fitid}</FITID><NAME>{name}</NAME></STMTTRN>"
            )
    start = _month_end(record.books.months[months[0]]).replace(day=1).strftime("%Y%m%d") if months else ""
    end = _month_end(record.books.months[months[-1]]).strftime("%Y%m%d") if months else ""
    ledger = (
        f"<LEDGERBAL><BALAMT>{pence_text(balance)}</BALAMT><DTASOF>{end}</DTASOF></LEDGERBAL>"
        if months
        else ""
    )
    document = (
        '<?xml version="1.0" encoding="UTF-8" standalone="no"?>\n'
        '<?OFX OFXHEADER="200" VERSION="220" SECURITY="NONE" OLDFILEUID="NONE" NEWFILEUID="NONE"?>\n'
        "<OFX><SIGNONMSGSRSV1><SONRS><STATUS><CODE>0</CODE><SEVERITY>INFO</SEVERITY></STATUS>"
        f"<DTSERVER>{end or '19700101'}</DTSERVER><LANGUAGE>ENG</LANGUAGE></SONRS></SIGNONMSGSRSV1>"
        "<BANKMSGSRSV1><STMTTRNRS><TRNUID>1</TRNUID><STATUS><CODE>0</CODE><SEVERITY>INFO</SEVERITY></STATUS>"
        f"<STMTRS><CURDEF>{record.profile.currency}</CURDEF>"
        f"<BANKACCTFROM><BANKID>{bank_account_id(record, seed)[:8]}</BANKID>"
        f"<ACCTID>{bank_account_id(record, seed)}</ACCTID><ACCTTYPE>CHECKING</ACCTTYPE></BANKACCTFROM>"
        f"<BANKTRANLIST><DTSTART>{start or '19700101'}</DTSTART><DTEND>{end or '19700101'}</DTEND>"
        f"{''.join(rows)}</BANKTRANLIST>{ledger}</STMTRS></STMTTRNRS></BANKMSGSRSV1></OFX>\n"
    )
    return document.encode("utf-8")


def accounting_page(
    reports: Sequence[dict[str, object]],
    *,
    tenant_id: str,
    path: str,
    period_from: str | None,
    period_to: str | None,
    page: int,
    page_size: int,
) -> dict[str, object]:
    """One page of the reports whose period lies in ``[period_from, period_to]`` (``YYYY-MM``, inclusive).

    ``next`` is the path of the following page (same filters) or None on the last page.
    """
    selected = [
        r
        for r in reports
        if (period_from is None or str(r["period"]) >= period_from)
        and (period_to is None or str(r["period"]) <= period_to)
    ]
    total_pages = math.ceil(len(selected) / page_size)
    next_link = None
    if page < total_pages:
        query = {k: v for k, v in (("from", period_from), ("to", period_to)) if v is not None}
        query |= {"page": str(page + 1), "page_size": str(page_size)}
        next_link = f"{path}?{urlencode(query)}"
    return {
        "tenant_id": tenant_id,
        "currency": "GBP",
        "page": page,
        "page_size": page_size,
        "total_pages": total_pages,
        "total_items": len(selected),
        "next": next_link,
        "reports": list(selected[(page - 1) * page_size : page * page_size]),
    }


# --- tax: HMRC MTD VAT ------------------------------------------------------------------------------------


def vat_obligations(
    record: SmeRecord, *, date_from: dt.date | None, date_to: dt.date | None, status: str | None
) -> list[dict[str, str]]:
    """Obligations whose period overlaps ``[date_from, date_to]`` (all when omitted), sorted by start.

    Overlap, not containment: a connector paging by year sees a quarter that straddles two years
    in both answers and keeps one per ``periodKey``.
    """
    vat = record.vat
    keep = np.ones(len(vat.period_key), dtype=bool)
    if date_from is not None:
        keep &= vat.end >= np.datetime64(date_from, "D")
    if date_to is not None:
        keep &= vat.start <= np.datetime64(date_to, "D")
    if status is not None:
        keep &= vat.status == status
    obligations = []
    for q in np.flatnonzero(keep):
        obligation = {
            "start": str(vat.start[q]),
            "end": str(vat.end[q]),
            "due": str(vat.due[q]),
            "status": str(vat.status[q]),
            "periodKey": str(vat.period_key[q]),
        }
        if vat.status[q] == "F":
            obligation["received"] = str(vat.received[q])
        obligations.append(obligation)
    return obligations


def vat_return(record: SmeRecord, period_key: str) -> dict[str, object] | None:
    """The filed 9-box return for ``period_key``, or None when no return was filed for it."""
    vat = record.vat
    match = np.flatnonzero((vat.period_key == period_key) & (vat.status == "F"))
    if not len(match):
        return None
    q = int(match[0])

    def money(name: str) -> float:
        return int(vat.boxes[name][q]) / 100

    def whole(name: str) -> int:
        return int(vat.boxes[name][q]) // 100

    return {
        "periodKey": period_key,
        "vatDueSales": money("vat_due_sales"),
        "vatDueAcquisitions": money("vat_due_acquisitions"),
        "totalVatDue": money("total_vat_due"),
        "vatReclaimedCurrPeriod": money("vat_reclaimed"),
        "netVatDue": money("net_vat_due"),
        "totalValueSalesExVAT": whole("total_sales_ex_vat"),
        "totalValuePurchasesExVAT": whole("total_purchases_ex_vat"),
        "totalValueGoodsSuppliedExVAT": whole("total_goods_supplied_ex_vat"),
        "totalAcquisitionsExVAT": whole("total_acquisitions_ex_vat"),
    }


# --- utility: Green Button ESPI Atom feed ------------------------------------------------------------------


@dataclass(frozen=True)
class EspiEntry:
    """One Atom ``<entry>``, pre-rendered; ``published`` (epoch) drives published-min/max filtering."""

    published: int
    filterable: bool
    xml: str


def _link(rel: str, href: str, kind: str) -> str:
    """An Atom link; ``href`` must need no escaping (the feed's own resource paths never do)."""
    return f'<link rel="{rel}" href="{href}" type="{kind}"/>'


def _entry(
    entry_id: str, links: Sequence[str], title: str, content: str, published: int, filterable: bool
) -> EspiEntry:
    when = espi_time(published)
    xml = (
        f"<entry><id>urn:uuid:{entry_id}</id>{''.join(links)}<title>{title}</title>"
        f'<content type="xml">{content}</content><published>{when}</published><updated>{when}</updated></entry>'
    )
    return EspiEntry(published, filterable, xml)


class _EntryIds:
    """Stable entry uuids for one usage point: one hash, then a counter in the last group."""

    def __init__(self, *parts: object) -> None:
        digest = stable_uuid(*parts)
        self.prefix = digest[:24]
        self.node = int(digest[24:], 16)

    def __call__(self, number: int) -> str:
        return f"{self.prefix}{(self.node + number) % 16**12:012x}"


def _interval(duration: int, start: int) -> str:
    return f"<duration>{int(duration)}</duration><start>{int(start)}</start>"


def _reading_type(meter: Meter) -> str:
    electricity = meter.commodity == "electricity"
    return (
        f'<ReadingType xmlns="{ESPI_NS}">'
        "<accumulationBehaviour>4</accumulationBehaviour>"
        f"<commodity>{1 if electricity else 7}</commodity>"
        f"<currency>{GBP_ISO_4217}</currency>"
        "<dataQualifier>12</dataQualifier>"
        "<flowDirection>1</flowDirection>"
        f"<intervalLength>{NOMINAL_MONTH_SECONDS}</intervalLength>"
        "<kind>12</kind>"
        + ("<phase>769</phase>" if electricity else "")
        + f"<powerOfTenMultiplier>{meter.power_of_ten}</powerOfTenMultiplier>"
        "<timeAttribute>0</timeAttribute>"
        f"<uom>{meter.uom}</uom>"
        "</ReadingType>"
    )


def _usage_summary(meter: Meter, bill: int) -> str:
    amount = int(meter.bill_amount_pence[bill]) * ESPI_COST_SCALE
    paid = meter.bill_paid[bill]
    payment = ""
    if not np.isnat(paid):
        payment = (
            "<costAdditionalDetailLastPeriod>"
            f"<amount>{-amount}</amount><dateTime>{_epoch_of_day(paid, 12)}</dateTime>"
            f"<note>Payment received</note><itemKind>{PAYMENT_ITEM_KIND}</itemKind>"
            "</costAdditionalDetailLastPeriod>"
        )
    return (
        f'<UsageSummary xmlns="{ESPI_NS}">'
        f'<extension><billing xmlns="{BILLING_NS}"><paymentDueDate>{meter.bill_due[bill]}</paymentDueDate>'
        "</billing></extension>"
        f"<billingPeriod>{_interval(meter.reading_seconds[bill], meter.reading_start[bill])}</billingPeriod>"
        f"<billLastPeriod>{amount}</billLastPeriod>"
        f"{payment}"
        f"<currency>{GBP_ISO_4217}</currency>"
        "<overallConsumptionLastPeriod>"
        f"<powerOfTenMultiplier>{meter.power_of_ten}</powerOfTenMultiplier><uom>{meter.uom}</uom>"
        f"<value>{int(meter.reading_value[bill])}</value>"
        "</overallConsumptionLastPeriod>"
        f"<statusTimeStamp>{_epoch_of_day(meter.bill_issued[bill])}</statusTimeStamp>"
        f"<commodity>{1 if meter.commodity == 'electricity' else 7}</commodity>"
        "</UsageSummary>"
    )


def espi_entries(record: SmeRecord, *, resource_url: str, subscription_id: str, seed: int) -> list[EspiEntry]:
    """All entries of the SME's subscription feed: per usage point its UsagePoint, MeterReading and
    ReadingType, then one IntervalBlock per month and one UsageSummary per bill.

    ``resource_url`` is the provider's ``.../espi/1_1/resource`` root; every href is absolute and
    names its usage point (``.../UsagePoint/{usage_point_id}/...``).
    """
    entries: list[EspiEntry] = []
    subscription = f"{resource_url}/Subscription/{subscription_id}"
    for meter in record.meters:
        point = f"{subscription}/UsagePoint/{meter.usage_point_id}"
        reading = f"{point}/MeterReading/1"
        reading_type = f"{resource_url}/ReadingType/{meter.usage_point_id}-1"
        electricity = meter.commodity == "electricity"
        first = int(meter.reading_start[0])

        uid = _EntryIds(seed, subscription_id, meter.usage_point_id)
        months = len(meter.reading_start)

        entries.append(
            _entry(
                uid(0),
                [
                    _link("self", point, "espi-entry/UsagePoint"),
                    _link("up", f"{subscription}/UsagePoint", "espi-feed/UsagePoint"),
                    _link("related", f"{point}/MeterReading", "espi-feed/MeterReading"),
                    _link("related", f"{point}/UsageSummary", "espi-feed/UsageSummary"),
                ],
                f"{'Electricity' if electricity else 'Gas'} supply {meter.usage_point_id}",
                f'<UsagePoint xmlns="{ESPI_NS}"><ServiceCategory><kind>{0 if electricity else 1}</kind>'
                "</ServiceCategory></UsagePoint>",
                first,
                False,
            )
        )
        entries.append(
            _entry(
                uid(1),
                [
                    _link("self", reading, "espi-entry/MeterReading"),
                    _link("up", f"{point}/MeterReading", "espi-feed/MeterReading"),
                    _link("related", f"{reading}/IntervalBlock", "espi-feed/IntervalBlock"),
                    _link("related", reading_type, "espi-entry/ReadingType"),
                ],
                f"Monthly {meter.commodity} consumption",
                f'<MeterReading xmlns="{ESPI_NS}"/>',
                first,
                False,
            )
        )
        entries.append(
            _entry(
                uid(2),
                [
                    _link("self", reading_type, "espi-entry/ReadingType"),
                    _link("up", f"{resource_url}/ReadingType", "espi-feed/ReadingType"),
                ],
                "Type of Meter Reading Data",
                _reading_type(meter),
                first,
                False,
            )
        )
        bad = meter.malformed
        for month in range(len(meter.reading_start)):
            start, seconds = int(meter.reading_start[month]), int(meter.reading_seconds[month])
            value = (
                bad.text if bad is not None and bad.record == month else str(int(meter.reading_value[month]))
            )
            block = (
                f'<IntervalBlock xmlns="{ESPI_NS}"><interval>{_interval(seconds, start)}</interval>'
                f"<IntervalReading><cost>{int(meter.cost_pence[month]) * ESPI_COST_SCALE}</cost>"
                f"<timePeriod>{_interval(seconds, start)}</timePeriod><value>{escape(value)}</value>"
                "</IntervalReading></IntervalBlock>"
            )
            entries.append(
                _entry(
                    uid(3 + month),
                    [
                        _link("self", f"{reading}/IntervalBlock/{month + 1}", "espi-entry/IntervalBlock"),
                        _link("up", f"{reading}/IntervalBlock", "espi-feed/IntervalBlock"),
                    ],
                    "",
                    block,
                    start + seconds,
                    True,
                )
            )
        for bill in range(len(meter.bill_amount_pence)):
            entries.append(
                _entry(
                    uid(3 + months + bill),
                    [
                        _link("self", f"{point}/UsageSummary/{bill + 1}", "espi-entry/UsageSummary"),
                        _link("up", f"{point}/UsageSummary", "espi-feed/UsageSummary"),
                    ],
                    "Billing summary",
                    _usage_summary(meter, bill),
                    _epoch_of_day(meter.bill_issued[bill]),
                    True,
                )
            )
    return entries


def espi_feed(
    entries: Sequence[EspiEntry], *, feed_id: str, updated: int, self_url: str, next_url: str | None
) -> str:
    """An Atom ``<feed>`` holding ``entries``, with ``<link rel="next">`` when more pages follow."""
    links = f'<link rel="self" href={quoteattr(self_url)} type="espi-feed/Subscription"/>'
    if next_url is not None:
        links += f'<link rel="next" href={quoteattr(next_url)} type="espi-feed/Subscription"/>'
    body = "".join(e.xml for e in entries)
    return (
        '<?xml version="1.0" encoding="UTF-8"?>\n'
        f'<feed xmlns="{ATOM_NS}"><id>urn:uuid:{feed_id}</id><title>Green Button Subscription Feed</title>'
        f"<updated>{espi_time(updated)}</updated>{links}{body}</feed>"
    )


# --- survey: KoboToolbox submissions ---------------------------------------------------------------------


def _local_time(epoch: int, offset_hours: int) -> str:
    """KoboToolbox's ``start``/``end``: device-local time with milliseconds and offset."""
    zone = dt.timezone(dt.timedelta(hours=offset_hours))
    moment = dt.datetime.fromtimestamp(epoch, zone)
    return (
        moment.strftime("%Y-%m-%dT%H:%M:%S.000") + moment.strftime("%z")[:3] + ":" + moment.strftime("%z")[3:]
    )


def _number_text(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else f"{value:.2f}"


def kobo_submission(
    record: SmeRecord, visit: Visit, *, asset_uid: str, attachment_url: str, seed: int, as_of: dt.date
) -> dict[str, object]:
    """One visit in KoboToolbox's JSON export: group paths as keys, answers as strings, metadata with
    a leading underscore. Questions the form skipped (relevance) are absent. A supervisor has
    approved most visits older than 45 days at ``as_of``.
    """
    formhub = stable_hex(32, seed, "formhub", asset_uid)
    answers: dict[str, object] = {
        "group_premises/premises_found": "yes" if visit.premises_found else "no",
        "group_premises/business_operating": "yes" if visit.business_operating else "no",
        "group_premises/location": f"{visit.latitude:.6f} {visit.longitude:.6f} {visit.altitude:.1f} {visit.accuracy:.1f}",
    }
    if visit.employees_observed is not None:
        answers["group_observation/employees_observed"] = str(visit.employees_observed)
    if visit.customers_observed is not None:
        answers["group_observation/customers_observed"] = str(visit.customers_observed)
    if visit.stock_level is not None:
        answers["group_observation/stock_level"] = visit.stock_level
    if visit.reported_monthly_revenue is not None:
        answers["group_owner/reported_monthly_revenue"] = _number_text(visit.reported_monthly_revenue)
    geolocation: list[float | None] = [visit.latitude, visit.longitude]
    if visit.malformed is not None:
        key = {
            "employees_observed": "group_observation/employees_observed",
            "location": "group_premises/location",
        }[visit.malformed.field]
        answers[key] = visit.malformed.text
        if visit.malformed.field == "location":
            geolocation = [None, None]
    started = dt.datetime.fromtimestamp(
        visit.started_at, dt.timezone(dt.timedelta(hours=visit.utc_offset_hours))
    )
    submitted = dt.datetime.fromtimestamp(visit.submitted_at, dt.UTC)
    attachments = [
        {
            "download_url": f"{attachment_url}/{visit.submission_id}/attachments/{visit.submission_id * 10 + n}/",
            "filename": f"{visit.agent_id}/attachments/{formhub}/{visit.visit_id}/photo_{n}.jpg",
            "instance": visit.submission_id,
            "mimetype": "image/jpeg",
            "xform": 1,
            "id": visit.submission_id * 10 + n,
        }
        for n in range(1, visit.photo_count + 1)
    ]
    validation: dict[str, object] = {}
    if visit.submitted_at + 45 * 86400 < _epoch_of_day(np.datetime64(as_of, "D")) and visit.submission_id % 3:
        validation = {
            "timestamp": visit.submitted_at + 3 * 86400,
            "uid": "validation_status_approved",
            "by_whom": "supervisor_01",
            "color": "#00ff00",
            "label": "Approved",
        }
    submission: dict[str, object] = {
        "_id": visit.submission_id,
        "formhub/uuid": formhub,
        "start": _local_time(visit.started_at, visit.utc_offset_hours),
        "end": _local_time(visit.ended_at, visit.utc_offset_hours),
        "today": started.date().isoformat(),
        "sme_code": record.profile.sme_code,
        **answers,
    }
    if visit.notes is not None:
        submission["notes"] = visit.notes
    submission |= {
        "__version__": visit.form_version,
        "meta/instanceID": f"uuid:{visit.visit_id}",
        "_xform_id_string": asset_uid,
        "_uuid": visit.visit_id,
        "_attachments": attachments,
        "_status": "submitted_via_web",
        "_geolocation": geolocation,
        "_submission_time": submitted.strftime("%Y-%m-%dT%H:%M:%S"),
        "_tags": [],
        "_notes": [],
        "_validation_status": validation,
        "_submitted_by": visit.agent_id,
    }
    return submission


def kobo_submissions(
    record: SmeRecord, *, asset_uid: str, attachment_url: str, seed: int, as_of: dt.date
) -> list[dict[str, object]]:
    """All of the SME's submissions, in ``_id`` order."""
    return [
        kobo_submission(record, v, asset_uid=asset_uid, attachment_url=attachment_url, seed=seed, as_of=as_of)
        for v in record.visits
    ]


def kobo_page(
    submissions: Sequence[dict[str, object]], *, data_url: str, query: str | None, start: int, limit: int
) -> dict[str, object]:
    """KoboToolbox's paged list: ``count`` of all matches, absolute ``next``/``previous`` or null."""

    def link(offset: int) -> str:
        params = {"format": "json", "limit": str(limit), "start": str(offset)}
        if query is not None:
            params["query"] = query
        return f"{data_url}?{urlencode(params)}"

    count = len(submissions)
    return {
        "count": count,
        "next": link(start + limit) if start + limit < count else None,
        "previous": link(max(start - limit, 0)) if start > 0 else None,
        "results": list(submissions[start : start + limit]),
    }


def json_bytes(payload: object) -> bytes:
    """Compact UTF-8 JSON, as the providers send it."""
    return json.dumps(payload, separators=(",", ":"), ensure_ascii=False).encode()
