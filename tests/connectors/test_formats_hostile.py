"""Hostile and broken input: every parser refuses it in one line or warns, never raises anything else.

The fuzz tests run a bounded number of examples in CI (hypothesis profile ``ci``, the default,
registered in ``tests/connectors/conftest.py``);
``pytest --hypothesis-profile=fuzz tests/connectors/test_formats_hostile.py`` runs many more.
"""

from __future__ import annotations

import codecs
import io
import json
import zipfile
from decimal import Decimal
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from connectors.formats import FORMATS, FORMATS_BY_NAME, detect, parse
from connectors.formats.base import FormatError, Limits, Parsed

FIXTURES = Path(__file__).parent / "fixtures"

FIXTURE_FORMATS = {
    "saft_no_v130.xml": "saft-no",
    "saft_pt_cp1252.xml": "saft-pt",
    "ofx1_cp1252.ofx": "ofx",
    "ofx2_creditcard.ofx": "ofx",
    "ledger_gl_no.csv": "ledger",
    "ledger_tb.csv": "ledger",
    "hmrc_vat_bundle.json": "hmrc-vat",
    "mva_melding_monthly.xml": "mva-melding",
    "mva_valideringsresultat.xml": "mva-validering",
    "espi_containerized_root.xml": "espi",
    "kobo_field_visit.json": "kobo",
    "odk_submissions.xml": "odk-xml",
    "odk_central_shops.csv": "odk-csv",
}
XML_FORMATS = ("saft-no", "saft-pt", "mva-melding", "mva-validering", "espi", "odk-xml")

LAUGHS = b"""<?xml version="1.0"?>
<!DOCTYPE AuditFile [
 <!ENTITY lol "lol">
 <!ENTITY lol2 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">
 <!ENTITY lol3 "&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;">
 <!ENTITY lol4 "&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;">
]>
<AuditFile xmlns="urn:StandardAuditFile-Taxation-Financial:NO"><Header><DefaultCurrencyCode>&lol4;</DefaultCurrencyCode></Header></AuditFile>
"""
EXTERNAL = b"""<?xml version="1.0"?>
<!DOCTYPE AuditFile [<!ENTITY secret SYSTEM "file:///etc/passwd">]>
<AuditFile xmlns="urn:StandardAuditFile-Taxation-Financial:NO"><Header><DefaultCurrencyCode>&secret;</DefaultCurrencyCode></Header></AuditFile>
"""
UNDECLARED = b"""<AuditFile xmlns="urn:StandardAuditFile-Taxation-Financial:NO"><Header>&secret;</Header></AuditFile>"""


def outcome(
    body: bytes, format_name: str | None = None, limits: Limits | None = None
) -> Parsed | FormatError:
    """A parse that may refuse the file (FormatError) but must not fail in any other way."""
    try:
        return parse(body, format_name=format_name, limits=limits or Limits())
    except FormatError as error:
        refused = error
    assert "\n" not in str(refused)
    return refused


@pytest.mark.parametrize("format_name", [*XML_FORMATS, None])
@pytest.mark.parametrize("body", [LAUGHS, EXTERNAL], ids=["entity-expansion", "external-entity"])
def test_doctype_entities_are_refused_by_every_xml_parser(body: bytes, format_name: str | None) -> None:
    result = outcome(body, format_name)
    assert isinstance(result, FormatError)
    if format_name is None:
        assert "DTD" in str(result) or "unrecognised" not in str(result)
    else:
        assert "document type declaration" in str(result) or "unsafe XML refused" in str(result)
    assert "root:" not in str(result)  # nothing of /etc/passwd leaks into the message


def test_undeclared_entity_is_refused() -> None:
    result = outcome(UNDECLARED, "saft-no")
    assert isinstance(result, FormatError)
    assert "entity" in str(result).lower()


def test_ofx_with_a_doctype_is_refused_before_parsing() -> None:
    body = b'<?xml version="1.0"?><!DOCTYPE OFX [<!ENTITY x SYSTEM "file:///etc/passwd">]><?OFX OFXHEADER="200" VERSION="220"?><OFX>&x;</OFX>'
    result = outcome(body, "ofx")
    assert isinstance(result, FormatError)
    assert "document type or entity declaration" in str(result)


def test_deep_nesting_is_refused() -> None:
    body = (
        b'<AuditFile xmlns="urn:StandardAuditFile-Taxation-Financial:NO">'
        + b"<a>" * 100
        + b"</a>" * 100
        + b"</AuditFile>"
    )
    result = outcome(body)
    assert isinstance(result, FormatError)
    assert "nested deeper than 64 levels" in str(result)
    deep_json = b'{"results": ' + b"[" * 5000 + b"]" * 5000 + b"}"
    result = outcome(deep_json, "kobo")
    assert isinstance(result, FormatError)
    assert "nested deeper" in str(result)


@pytest.mark.parametrize("name", sorted(FIXTURE_FORMATS))
def test_truncated_files_are_refused_or_read_in_part_never_crash(name: str) -> None:
    body = (FIXTURES / name).read_bytes()
    for cut in (len(body) // 3, len(body) // 2, len(body) - 20):
        result = outcome(body[:cut], FIXTURE_FORMATS[name])
        if name.endswith(".xml"):
            assert isinstance(result, FormatError), cut
            assert "not well-formed XML" in str(result)


@pytest.mark.parametrize("format_name", [f.name for f in FORMATS])
def test_empty_and_binary_files_are_refused_by_every_parser(format_name: str) -> None:
    for body in (b"", b"   \n", bytes(range(256)) * 4, b"\x89PNG\r\n\x1a\n" + b"\x00" * 100):
        result = outcome(body, format_name)
        assert isinstance(result, FormatError), (format_name, body[:10])


def test_detection_refuses_what_it_does_not_know() -> None:
    for body in (b"", b"hello world\n", b"<html><body/></html>", b'{"foo": 1}', b"\x00\x01\x02"):
        with pytest.raises(FormatError):
            detect(body)


def test_byte_order_marks_and_legacy_encodings() -> None:
    csv_text = (FIXTURES / "ledger_gl_no.csv").read_bytes().decode("utf-8-sig")
    for encoded in (
        codecs.BOM_UTF16_LE + csv_text.encode("utf-16-le"),
        codecs.BOM_UTF8 + csv_text.encode("utf-8"),
        csv_text.encode("cp1252"),
    ):
        parsed = parse(encoded, format_name="ledger")
        assert parsed.tables["trial_balance"]["description"].str.contains("Varekjøp").any()
    xml = (FIXTURES / "saft_no_v130.xml").read_text(encoding="utf-8")
    undeclared = xml.replace('<?xml version="1.0" encoding="UTF-8"?>', "").encode("cp1252")
    assert parse(undeclared).totals["lines"] == 10  # sniffed as Windows-1252
    utf16 = codecs.BOM_UTF16_LE + xml.replace('encoding="UTF-8"', 'encoding="UTF-16"').encode("utf-16-le")
    assert parse(utf16).totals["lines"] == 10


def test_archives_that_expand_too_far_are_refused() -> None:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("form.csv", b"KEY,SubmissionDate\n" + b"x" * 2_000_000)
    result = outcome(buffer.getvalue(), "odk-csv", Limits(max_bytes=1_000_000))
    assert isinstance(result, FormatError)
    assert "expands beyond" in str(result)


# --- fuzzing -------------------------------------------------------------------------------------------

mutation = st.lists(
    st.tuples(
        st.integers(min_value=0, max_value=1 << 20),
        st.sampled_from(["flip", "drop", "insert", "cut"]),
        st.binary(max_size=8),
    ),
    min_size=1,
    max_size=6,
)


def mutate(body: bytes, edits: list[tuple[int, str, bytes]]) -> bytes:
    data = bytearray(body)
    for position, kind, chunk in edits:
        if not data:
            break
        at = position % len(data)
        if kind == "flip":
            data[at] ^= (chunk[0] if chunk else 0xFF) or 0x20
        elif kind == "drop":
            del data[at : at + 1 + len(chunk)]
        elif kind == "insert":
            data[at:at] = chunk or b"<"
        else:
            del data[at:]
    return bytes(data)


@pytest.mark.parametrize("name", sorted(FIXTURE_FORMATS))
@given(edits=mutation, forced=st.booleans())
def test_fuzz_every_parser_with_mutated_files(
    name: str, edits: list[tuple[int, str, bytes]], forced: bool
) -> None:
    body = mutate((FIXTURES / name).read_bytes(), edits)
    outcome(body, FIXTURE_FORMATS[name] if forced else None)


amounts = st.decimals(min_value=Decimal("0.01"), max_value=Decimal("99999999.99"), places=2)


@given(
    transactions=st.lists(
        st.tuples(
            st.integers(min_value=1, max_value=12),
            st.integers(min_value=1, max_value=28),
            st.sampled_from(["1920", "3000", "4000", "2400", "6300"]),
            st.sampled_from(["1500", "1920", "2400"]),
            amounts,
        ),
        min_size=1,
        max_size=30,
    )
)
def test_fuzz_saft_structure_totals_and_balance(
    transactions: list[tuple[int, int, str, str, Decimal]],
) -> None:
    """Generated balanced ledgers: totals equal the lines, debits equal credits, profit = flows."""
    body = [
        '<AuditFile xmlns="urn:StandardAuditFile-Taxation-Financial:NO"><Header><DefaultCurrencyCode>NOK</DefaultCurrencyCode></Header>'
    ]
    body.append("<GeneralLedgerEntries><Journal><JournalID>J</JournalID>")
    total = Decimal(0)
    for index, (month, day, debit_account, credit_account, amount) in enumerate(transactions):
        total += amount
        body.append(
            f"<Transaction><TransactionID>{index}</TransactionID><TransactionDate>2024-{month:02d}-{day:02d}</TransactionDate>"
            f"<Line><AccountID>{debit_account}</AccountID><DebitAmount><Amount>{amount}</Amount></DebitAmount></Line>"
            f"<Line><AccountID>{credit_account}</AccountID><CreditAmount><Amount>{amount}</Amount></CreditAmount></Line>"
            "</Transaction>"
        )
    body.append("</Journal></GeneralLedgerEntries></AuditFile>")
    parsed = parse("".join(body).encode(), format_name="saft-no")
    assert (parsed.totals["entries"], parsed.totals["lines"]) == (len(transactions), 2 * len(transactions))
    assert parsed.totals["total_debit"] == parsed.totals["total_credit"] == float(total)
    assert not any("does not equal" in w for w in parsed.warnings)
    books = parsed.tables["monthly_financials"]
    expenses = books[
        ["cost_of_sales", "operating_expenses", "depreciation", "interest_expense", "tax_expense"]
    ].sum(axis=1)
    assert ((books["net_profit"] - (books["revenue"] - expenses)).abs() < 0.011).all()


@given(
    rows=st.lists(
        st.tuples(
            st.decimals(min_value=Decimal("-99999.99"), max_value=Decimal("99999.99"), places=2),
            st.text(alphabet="ABCDEFGHIJ KLMNOP", max_size=20),
        ),
        max_size=25,
    )
)
def test_fuzz_ofx_structure_net_amount(rows: list[tuple[Decimal, str]]) -> None:
    """Generated SGML statements: every transaction is read and the net amount is their sum."""
    lines = "".join(
        f"<STMTTRN><TRNTYPE>OTHER<DTPOSTED>20240110<TRNAMT>{amount}<FITID>F{index}<NAME>{name.strip() or 'x'}</STMTTRN>"
        for index, (amount, name) in enumerate(rows)
    )
    body = (
        "OFXHEADER:100\nDATA:OFXSGML\nVERSION:102\nSECURITY:NONE\nENCODING:USASCII\nCHARSET:1252\nCOMPRESSION:NONE\n"
        "OLDFILEUID:NONE\nNEWFILEUID:NONE\n\n<OFX><SIGNONMSGSRSV1><SONRS><STATUS><CODE>0<SEVERITY>INFO</STATUS>"
        "<DTSERVER>20240201<LANGUAGE>ENG</SONRS></SIGNONMSGSRSV1><BANKMSGSRSV1><STMTTRNRS><TRNUID>1<STATUS><CODE>0<SEVERITY>INFO</STATUS>"
        "<STMTRS><CURDEF>EUR<BANKACCTFROM><BANKID>1<ACCTID>2<ACCTTYPE>SAVINGS</BANKACCTFROM>"
        f"<BANKTRANLIST><DTSTART>20240101<DTEND>20240131{lines}</BANKTRANLIST>"
        "<LEDGERBAL><BALAMT>10.00<DTASOF>20240131</LEDGERBAL></STMTRS></STMTTRNRS></BANKMSGSRSV1></OFX>"
    )
    parsed = parse(body.encode("cp1252"), format_name="ofx")
    assert parsed.totals["transactions"] == len(rows)
    assert parsed.totals["net_amount"] == float(sum((a for a, _ in rows), Decimal(0)))
    assert parsed.totals["closing_balance"] == 10.0


def test_every_registered_format_is_fuzzed() -> None:
    assert set(FIXTURE_FORMATS.values()) == set(FORMATS_BY_NAME)


def test_command_line_path_streams_and_still_sniffs_legacy_text(tmp_path: Path) -> None:
    from connectors.formats import parse_path

    xml = (FIXTURES / "saft_no_v130.xml").read_text(encoding="utf-8")
    legacy = tmp_path / "legacy.xml"
    legacy.write_bytes(xml.replace('<?xml version="1.0" encoding="UTF-8"?>', "").encode("cp1252"))
    declared = tmp_path / "declared.xml"
    declared.write_bytes(xml.encode("utf-8"))
    for path in (legacy, declared):
        parsed = parse_path(path)
        assert parsed.totals["lines"] == 10
        assert parsed.tables["trial_balance"]["description"].str.contains("Bakeri|Leverandørgjeld").any()


def test_time_budget_is_a_limit() -> None:
    lines = "".join(
        f"<Transaction><TransactionID>{i}</TransactionID><TransactionDate>2024-01-02</TransactionDate>"
        f"<Line><AccountID>1920</AccountID><DebitAmount><Amount>1</Amount></DebitAmount></Line>"
        f"<Line><AccountID>3000</AccountID><CreditAmount><Amount>1</Amount></CreditAmount></Line></Transaction>"
        for i in range(1100)
    )
    body = (
        '<AuditFile xmlns="urn:StandardAuditFile-Taxation-Financial:NO"><Header><DefaultCurrencyCode>NOK'
        f"</DefaultCurrencyCode></Header><GeneralLedgerEntries><Journal><JournalID>J</JournalID>{lines}"
        "</Journal></GeneralLedgerEntries></AuditFile>"
    ).encode()
    assert parse(body).totals["lines"] == 2200
    result = outcome(body, "saft-no", Limits(max_seconds=0.0))
    assert isinstance(result, FormatError)
    assert "longer than 0 s (limit)" in str(result)


def test_xlsx_with_entities_inside_is_refused() -> None:
    from openpyxl import Workbook

    workbook = Workbook()
    workbook.active.append(["Account", "Balance"])
    workbook.active.append(["1920", 10])
    buffer = io.BytesIO()
    workbook.save(buffer)
    poisoned = io.BytesIO()
    with zipfile.ZipFile(io.BytesIO(buffer.getvalue())) as source, zipfile.ZipFile(poisoned, "w") as target:
        for info in source.infolist():
            body = source.read(info)
            if info.filename == "xl/worksheets/sheet1.xml":
                body = body.replace(
                    b"<worksheet",
                    b'<!DOCTYPE worksheet [<!ENTITY x SYSTEM "file:///etc/passwd">]><worksheet',
                    1,
                ).replace(b">1920<", b">&x;<")
            target.writestr(info, body)
    result = outcome(poisoned.getvalue(), "ledger")
    assert isinstance(result, FormatError)
    assert "not a readable XLSX workbook" in str(result)


def _workbook_bytes() -> bytes:
    from openpyxl import Workbook

    workbook = Workbook()
    for row in (
        ["Account", "Name", "Date", "Amount", "Currency"],
        ["1920", "Bank", "2024-03-01", 120.5, "GBP"],
    ):
        workbook.active.append(row)
    buffer = io.BytesIO()
    workbook.save(buffer)
    return buffer.getvalue()


WORKBOOK = _workbook_bytes()


@given(edits=mutation)
def test_fuzz_xlsx_ledger(edits: list[tuple[int, str, bytes]]) -> None:
    outcome(mutate(WORKBOOK, edits), "ledger")


def test_a_repeated_or_blank_header_name_is_not_a_crash() -> None:
    # Found by coverage-guided fuzzing: a CSV whose header names one column twice.
    body = (
        b'Account Code,Account Code,Account Name,Balance\n1200,Bank,"12,500.00"\n'
        b'1100,Trade debtors,3500.00\n2100,Trade cr,Trade creditre capital,"(12,000.00)"\n'
    )
    result = outcome(body, "ledger")
    assert isinstance(result, FormatError | Parsed)
    blank = parse(b"Account,,Balance,\n1200,x,100.00,\n", format_name="ledger")
    assert blank.tables["trial_balance"]["account_id"].tolist() == ["1200"]


def test_a_date_thousands_of_years_away_is_refused_not_a_calendar_to_fill() -> None:
    # Found by coverage-guided fuzzing: one year 7813 made the monthly statements run for minutes.
    ledger = (FIXTURES / "ledger_gl_no.csv").read_bytes().replace(b"15.01.2024", b"15.01.7813", 1)
    result = outcome(ledger, "ledger")
    assert isinstance(result, FormatError)
    assert "implausible date '15.01.7813' (outside 1900-2100)" in str(result)
    saft = (FIXTURES / "saft_no_v130.xml").read_bytes().replace(b"2024-01-15", b"7813-01-15", 1)
    result = outcome(saft, "saft-no")
    assert isinstance(result, FormatError)
    assert str(result).endswith("field TransactionDate: implausible date 7813-01-15 (outside 1900-2100)")


def test_a_return_with_an_unknown_nested_field_is_not_a_crash() -> None:
    # Found by coverage-guided fuzzing: a list under an unknown key of a VAT return.
    bundle = json.loads((FIXTURES / "hmrc_vat_bundle.json").read_bytes())
    assert "periodKey" in bundle[1]
    bundle[1]["vatRpayments"] = [{"amount": 1500.25, "received": "2024-05-21"}]
    result = outcome(json.dumps(bundle).encode(), "hmrc-vat")
    assert isinstance(result, Parsed)
    assert result.totals["returns"] == 1
