"""The sandbox server over real HTTP: auth, each provider's shapes and rules, paging, faults."""

from __future__ import annotations

import base64
import collections
import datetime as dt
import json
import time
from pathlib import Path
from typing import Any
from urllib.parse import urljoin

import requests
from hmrc_headers import BATCH_HEADERS
from lxml import etree

from connectors.sandbox.auth import SandboxCredentials
from connectors.sandbox.server import SandboxServer
from connectors.sandbox.universe import Universe

ATOM = "{http://www.w3.org/2005/Atom}"
ESPI = "{http://naesb.org/espi}"
HMRC = {"Accept": "application/vnd.hmrc.1.0+json", **BATCH_HEADERS}


def _sme_with(universe: Universe, *, defect: str | None = None, gas: bool | None = None) -> str:
    broken = ("malformed_accounting", "malformed_utility", "malformed_survey", "duplicate_identical")
    for sme_id in universe.sme_ids:
        record = universe.sme(sme_id)
        defects = record.profile.defects
        if defect is not None and defect not in defects:
            continue
        if defect is None and any(b in defects for b in broken):
            continue
        if gas is not None and (len(record.meters) == 2) != gas:
            continue
        return sme_id
    raise AssertionError(f"no SME with defect={defect} gas={gas}")


def test_health_names_the_universe(server: SandboxServer) -> None:
    answer = requests.get(f"{server.url}/health").json()
    assert answer == {
        "status": "ok",
        "seed": 20261125,
        "smes": 240,
        "as_of": "2026-11-25",
        "providers": ["/accounting", "/tax", "/utility", "/survey"],
    }


# --- OAuth -------------------------------------------------------------------------------------------------


def test_token_endpoint_follows_rfc_6749(server: SandboxServer, client: Any) -> None:
    session = client("SME-000002")
    refresh = session.credentials["accounting"]["refresh_token"]
    good = SandboxCredentials()
    url = f"{server.url}/accounting/oauth/token"
    form = {"grant_type": "refresh_token", "refresh_token": refresh, "client_id": good.client_id}

    answer = requests.post(url, data=form | {"client_secret": good.client_secret})
    assert answer.status_code == 200
    body = answer.json()
    assert set(body) == {"access_token", "token_type", "expires_in", "refresh_token", "scope"}
    assert (body["token_type"], body["expires_in"], body["refresh_token"]) == ("Bearer", 300, refresh)

    basic = base64.b64encode(f"{good.client_id}:{good.client_secret}".encode()).decode()
    as_basic = requests.post(url, data={"grant_type": "refresh_token", "refresh_token": refresh},
                             headers={"Authorization": f"Basic {basic}"})  # fmt: skip
    assert as_basic.status_code == 200

    wrong_secret = requests.post(url, data=form | {"client_secret": "nope"})
    assert (wrong_secret.status_code, wrong_secret.json()["error"]) == (401, "invalid_client")
    other_provider = requests.post(
        f"{server.url}/tax/oauth/token", data=form | {"client_secret": good.client_secret}
    )
    assert (other_provider.status_code, other_provider.json()["error"]) == (400, "invalid_grant")
    forged = requests.post(
        url, data=form | {"client_secret": good.client_secret, "refresh_token": refresh[:-1] + "0"}
    )
    assert (forged.status_code, forged.json()["error"]) == (400, "invalid_grant")
    password = requests.post(url, data=form | {"client_secret": good.client_secret, "grant_type": "password"})
    assert (password.status_code, password.json()["error"]) == (400, "unsupported_grant_type")


def test_access_tokens_only_open_their_own_account(server: SandboxServer, client: Any) -> None:
    mine, theirs = client("SME-000003"), client("SME-000004")
    reports = f"{server.url}/accounting/v1/tenants/{theirs.profile.tenant_id}/reports/monthly"
    assert requests.get(reports, headers=mine.bearer("accounting")).status_code == 403
    unknown = requests.get(reports, headers={"Authorization": "Bearer at1.accounting.x.1.y"})
    assert unknown.status_code == 401
    assert unknown.headers["WWW-Authenticate"].startswith('Bearer error="invalid_token"')
    vat = f"{server.url}/tax/organisations/vat/{theirs.profile.vrn}/obligations?status=O"
    forbidden = requests.get(vat, headers=mine.bearer("tax"))
    assert (forbidden.status_code, forbidden.json()["code"]) == (403, "CLIENT_OR_AGENT_NOT_AUTHORISED")
    missing = requests.get(vat, headers=HMRC)
    assert (missing.status_code, missing.json()["code"]) == (401, "MISSING_CREDENTIALS")
    feed = f"{server.url}/utility/espi/1_1/resource/Batch/Subscription/{theirs.profile.subscription_id}"
    assert requests.get(feed, headers=mine.bearer("utility")).status_code == 403


def test_expired_access_token_gets_401_and_refresh_recovers(universe: Universe) -> None:
    with SandboxServer(universe, token_ttl_seconds=0.5) as short:
        profile = universe.sme("SME-000005").profile
        refresh = short.credentials_for("SME-000005")["tax"]["refresh_token"]
        form = {"grant_type": "refresh_token", "refresh_token": refresh, **SandboxCredentials().__dict__}

        def token() -> dict[str, str]:
            return {
                "Authorization": f"Bearer {requests.post(f'{short.url}/tax/oauth/token', data=form).json()['access_token']}"
            }

        url = f"{short.url}/tax/organisations/vat/{profile.vrn}/obligations?status=O"
        headers = token() | HMRC
        assert requests.get(url, headers=headers).status_code == 200
        time.sleep(0.6)
        expired = requests.get(url, headers=headers)
        assert (expired.status_code, expired.json()["code"]) == (401, "INVALID_CREDENTIALS")
        assert requests.get(url, headers=token() | HMRC).status_code == 200


# --- accounting ------------------------------------------------------------------------------------------


def test_accounting_pages_and_filters(server: SandboxServer, client: Any, universe: Universe) -> None:
    session = client(_sme_with(universe))
    headers = session.bearer("accounting")
    path = f"{server.url}/accounting/v1/tenants/{session.profile.tenant_id}/reports/monthly"
    first = requests.get(
        path, params={"from": "2025-01", "to": "2025-12", "page_size": 5}, headers=headers
    ).json()
    assert (first["page"], first["page_size"], first["total_items"], first["total_pages"]) == (1, 5, 12, 3)
    assert first["next"] == (
        f"/accounting/v1/tenants/{session.profile.tenant_id}/reports/monthly?from=2025-01&to=2025-12&page=2&page_size=5"
    )
    last = requests.get(server.url + first["next"].replace("page=2", "page=3"), headers=headers).json()
    assert last["next"] is None
    assert [r["period"] for r in last["reports"]] == ["2025-11", "2025-12"]
    report = first["reports"][0]
    assert set(report) == {"report_id", "period", "profit_and_loss", "balance_sheet"}
    assert all(isinstance(v, str) for v in report["profit_and_loss"].values())
    for params, problem in (
        ({"page_size": 101}, "page_size"),
        ({"from": "2025-13"}, "from"),
        ({"page": 0}, "page"),
    ):
        bad = requests.get(path, params=params, headers=headers)
        assert bad.status_code == 400
        assert bad.json()["code"] == "invalid_parameter"
        assert problem in bad.json()["message"]
    unknown = requests.get(path.replace(session.profile.tenant_id, "ten_000000000000"), headers=headers)
    assert unknown.status_code == 403


# --- HMRC VAT ---------------------------------------------------------------------------------------------


def test_vat_obligations_follow_hmrc_rules(server: SandboxServer, client: Any, hmrc_validator: Any) -> None:
    session = client("SME-000006")
    headers = session.bearer("tax")
    url = f"{server.url}/tax/organisations/vat/{session.profile.vrn}/obligations"
    year = requests.get(url, params={"from": "2025-01-01", "to": "2026-01-01"}, headers=headers)
    assert year.status_code == 200
    hmrc_validator(year.json(), "Obligations")
    obligations = year.json()["obligations"]
    assert [o["start"] for o in obligations] == sorted(o["start"] for o in obligations)
    assert all(o["end"] >= "2025-01-01" and o["start"] <= "2026-01-01" for o in obligations)
    for o in obligations:
        end = dt.date.fromisoformat(o["end"])
        month_after = (end.replace(day=1) + dt.timedelta(days=62)).replace(day=1) - dt.timedelta(days=1)
        assert o["due"] == (month_after + dt.timedelta(days=7)).isoformat()
        assert ("received" in o) == (o["status"] == "F")

    too_long = requests.get(url, params={"from": "2025-01-01", "to": "2026-01-03"}, headers=headers)
    assert too_long.status_code == 400
    assert too_long.json() == {
        "code": "INVALID_DATE_RANGE",
        "message": "Invalid date range, must be 366 days or less",
    }
    for params, code in (
        ({"from": "2025-02-01", "to": "2025-01-01"}, "INVALID_DATE_RANGE"),
        ({"to": "2025-01-01"}, "INVALID_DATE_FROM"),
        ({"from": "2025-01-01", "to": "01/02/2025"}, "INVALID_DATE_TO"),
        ({"from": "2025-01-01", "to": "2025-06-01", "status": "X"}, "INVALID_STATUS"),
    ):
        answer = requests.get(url, params=params, headers=headers)
        assert (answer.status_code, answer.json()["code"]) == (400, code)
    opened = requests.get(url, params={"status": "O"}, headers=headers).json()["obligations"]
    assert opened
    assert {o["status"] for o in opened} == {"O"}
    no_accept = requests.get(url, params={"status": "O"}, headers={"Authorization": headers["Authorization"]})
    assert (no_accept.status_code, no_accept.json()["code"]) == (406, "ACCEPT_HEADER_INVALID")
    bad_vrn = requests.get(url.replace(session.profile.vrn, "12345"), params={"status": "O"}, headers=headers)
    assert (bad_vrn.status_code, bad_vrn.json()["code"]) == (400, "VRN_INVALID")


def test_vat_returns_match_hmrc_schema(
    server: SandboxServer, client: Any, hmrc_validator: Any, shared_data: Path
) -> None:
    session = client("SME-000007")
    headers = session.bearer("tax")
    base = f"{server.url}/tax/organisations/vat/{session.profile.vrn}"
    obligations = requests.get(f"{base}/obligations", params={"from": "2025-06-01", "to": "2026-06-01"},
                               headers=headers).json()["obligations"]  # fmt: skip
    filed = [o for o in obligations if o["status"] == "F"]
    example = json.loads(
        (shared_data / "realdata" / "tax" / "hmrc_vat_return_view_200_examples.json").read_text()
    )
    for obligation in filed:
        answer = requests.get(f"{base}/returns/{obligation['periodKey']}", headers=headers)
        assert answer.status_code == 200
        vat_return = answer.json()
        hmrc_validator(vat_return, "SubmitVAT")
        assert list(vat_return) == list(example["example-1"]["value"])
        for key in (
            "vatDueSales",
            "vatDueAcquisitions",
            "totalVatDue",
            "vatReclaimedCurrPeriod",
            "netVatDue",
        ):
            assert round(vat_return[key], 2) == vat_return[key]
        assert vat_return["totalVatDue"] == vat_return["vatDueSales"] + vat_return["vatDueAcquisitions"]
        assert isinstance(vat_return["totalValueSalesExVAT"], int)
    opened = requests.get(f"{base}/obligations", params={"status": "O"}, headers=headers).json()[
        "obligations"
    ]
    not_filed = requests.get(f"{base}/returns/{opened[0]['periodKey']}", headers=headers)
    assert not_filed.status_code == 404
    assert not_filed.json() == {"code": "NOT_FOUND", "message": "The requested resource could not be found"}
    assert requests.get(f"{base}/returns/TOO-LONG", headers=headers).json()["code"] == "PERIOD_KEY_INVALID"


# --- Green Button ESPI --------------------------------------------------------------------------------------


def _feed_pages(session: Any, params: dict[str, str]) -> list[Any]:
    headers = session.bearer("utility")
    url = f"{session.base}/utility/espi/1_1/resource/Batch/Subscription/{session.profile.subscription_id}"
    pages = []
    while url:
        answer = requests.get(url, params=params, headers=headers)
        assert answer.status_code == 200
        assert answer.headers["content-type"] == "application/atom+xml"
        pages.append(etree.fromstring(answer.content))
        nxt = pages[-1].find(f"{ATOM}link[@rel='next']")
        url, params = (None if nxt is None else urljoin(answer.url, nxt.get("href"))), {}
    return pages


def test_espi_feed_is_valid_against_the_espi_xsd(client: Any, universe: Universe, espi_schema: Any) -> None:
    for sme_id in (_sme_with(universe, gas=True), _sme_with(universe, gas=False)):
        pages = _feed_pages(client(sme_id), {"max-results": "40"})
        assert len(pages) > 1
        for page in pages:
            assert espi_schema.validate(page), espi_schema.error_log.last_error


def test_espi_units_namespaces_and_payment_dates(client: Any, universe: Universe) -> None:
    sme_id = _sme_with(universe, gas=True)
    pages = _feed_pages(client(sme_id), {"max-results": "500"})
    assert len(pages) == 1
    contents = [entry.find(f"{ATOM}content")[0] for entry in pages[0].findall(f"{ATOM}entry")]
    kinds = sorted(
        int(c.findtext(f"{ESPI}ServiceCategory/{ESPI}kind")) for c in contents if c.tag == f"{ESPI}UsagePoint"
    )
    assert kinds == [0, 1]
    reading_types = {
        (c.findtext(f"{ESPI}uom"), c.findtext(f"{ESPI}powerOfTenMultiplier"), c.findtext(f"{ESPI}currency"))
        for c in contents
        if c.tag == f"{ESPI}ReadingType"
    }
    assert reading_types == {("72", "0", "826"), ("169", "-3", "826")}
    record = universe.sme(sme_id)
    electricity = record.meters[0]
    block = next(c for c in contents if c.tag == f"{ESPI}IntervalBlock")
    assert int(block.findtext(f"{ESPI}IntervalReading/{ESPI}value")) == electricity.quantity[0] * 1000
    assert int(block.findtext(f"{ESPI}IntervalReading/{ESPI}cost")) == electricity.cost_pence[0] * 1000
    summary = next(c for c in contents if c.tag == f"{ESPI}UsageSummary")
    due = summary.findtext(
        f"{ESPI}extension/{{urn:sme-dossier:sandbox:billing:1}}billing/{{urn:sme-dossier:sandbox:billing:1}}paymentDueDate"
    )
    assert due == str(electricity.bill_due[0])
    payment = summary.find(f"{ESPI}costAdditionalDetailLastPeriod")
    assert payment.findtext(f"{ESPI}itemKind") == "9"
    assert int(payment.findtext(f"{ESPI}amount")) == -int(summary.findtext(f"{ESPI}billLastPeriod"))
    paid = dt.datetime.fromtimestamp(int(payment.findtext(f"{ESPI}dateTime")), dt.UTC).date()
    assert paid.isoformat() == str(electricity.bill_paid[0])


def test_espi_paging_and_published_window(client: Any, universe: Universe) -> None:
    session = client(_sme_with(universe, gas=False))
    everything = _feed_pages(session, {"max-results": "500"})[0].findall(f"{ATOM}entry")
    paged = [e for page in _feed_pages(session, {"max-results": "7"}) for e in page.findall(f"{ATOM}entry")]
    assert [e.findtext(f"{ATOM}id") for e in paged] == [e.findtext(f"{ATOM}id") for e in everything]
    window = _feed_pages(
        session, {"published-min": "2026-01-01T00:00:00Z", "published-max": "2026-03-31T23:59:59Z"}
    )
    entries = window[0].findall(f"{ATOM}entry")
    published = sorted(e.findtext(f"{ATOM}published") for e in entries[3:])
    assert len(entries) == 3 + 6  # usage point, meter reading, reading type + 3 blocks + 3 bills
    assert published[0] >= "2026-01-01"
    assert published[-1] <= "2026-03-31T23:59:59Z"
    headers = session.bearer("utility")
    url = f"{session.base}/utility/espi/1_1/resource/Batch/Subscription/{session.profile.subscription_id}"
    for params in ({"max-results": "501"}, {"start-index": "0"}, {"published-min": "yesterday"}):
        answer = requests.get(url, params=params, headers=headers)
        assert (answer.status_code, answer.json()["error"]) == (400, "invalid_request")


# --- KoboToolbox -------------------------------------------------------------------------------------------


def test_kobo_pages_and_scopes_submissions_to_the_token(
    client: Any, universe: Universe, shared_data: Path
) -> None:
    sme_id = next(s for s in universe.sme_ids if len(universe.sme(s).visits) >= 3)
    session = client(sme_id)
    query = json.dumps({"sme_code": session.profile.sme_code})
    first = requests.get(session.survey_url(), params={"format": "json", "limit": 2, "start": 0, "query": query},
                         headers=session.kobo()).json()  # fmt: skip
    visits = len(universe.sme(sme_id).visits)
    assert first["count"] == visits
    assert first["previous"] is None
    assert len(first["results"]) == 2
    second = requests.get(urljoin(session.survey_url(), first["next"]), headers=session.kobo()).json()
    assert second["previous"] is not None
    assert len(second["results"]) == visits - 2
    submission = first["results"][0]
    sample = json.loads(
        (shared_data / "realdata" / "field_survey" / "kobo_formpack_restaurant_profile_v4.json").read_text()
    )
    assert set(sample["submissions"][0]) - {"restaurant_name", "location", "eatery_type"} <= set(submission)
    assert {"_id", "_uuid", "_submission_time", "_validation_status", "__version__", "_geolocation",
            "_attachments", "_submitted_by", "start", "end"} <= set(submission)  # fmt: skip
    assert submission["group_premises/location"].count(" ") == 3
    assert dt.datetime.fromisoformat(submission["start"]).utcoffset() is not None

    other = next(s for s in universe.sme_ids if s != sme_id)
    others = json.dumps({"sme_code": universe.sme(other).profile.sme_code})
    foreign = requests.get(session.survey_url(), params={"query": others}, headers=session.kobo()).json()
    assert foreign["count"] == 0
    late = json.dumps({"_submission_time": {"$gte": "2099-01-01"}})
    assert (
        requests.get(session.survey_url(), params={"query": late}, headers=session.kobo()).json()["count"]
        == 0
    )
    for params, headers, status in (
        ({}, {}, 401),
        ({}, {"Authorization": "Token " + "0" * 40}, 401),
        ({"query": "{not json"}, session.kobo(), 400),
        ({"query": json.dumps({"x": {"$regex": "a"}})}, session.kobo(), 400),
        ({"limit": "0"}, session.kobo(), 400),
    ):
        assert requests.get(session.survey_url(), params=params, headers=headers).status_code == status
    wrong_asset = session.survey_url().replace(session.credentials["survey"]["asset_uid"], "aNotAForm")
    assert requests.get(wrong_asset, headers=session.kobo()).status_code == 404


# --- faults --------------------------------------------------------------------------------------------


def _statuses(server: SandboxServer, count: int) -> list[tuple[int, str | None]]:
    http = requests.Session()
    seen = []
    for n in range(count):
        answer = http.get(f"{server.url}/tax/organisations/vat/123456789/obligations", params={"n": n % 50})
        seen.append((answer.status_code, answer.headers.get("Retry-After")))
    return seen


def test_fault_injection_rate_kinds_and_determinism(universe: Universe) -> None:
    with SandboxServer(universe, fault_rate=0.25, fault_seed=7) as faulty:
        first = _statuses(faulty, 400)
        assert requests.get(f"{faulty.url}/health").status_code == 200
    with SandboxServer(universe, fault_rate=0.25, fault_seed=7) as again:
        assert _statuses(again, 400) == first
    counts = collections.Counter(status for status, _ in first)
    faults = sum(n for status, n in counts.items() if status != 406)
    assert 0.19 < faults / 400 < 0.31
    assert set(counts) - {406} <= {429, 500, 502, 503, 504}
    assert counts[429] > 0
    assert {retry for status, retry in first if status == 429} <= {"0", "1"}
    assert all(retry is None for status, retry in first if status != 429)


def test_no_faults_when_rate_is_zero(server: SandboxServer) -> None:
    assert {status for status, _ in _statuses(server, 100)} == {406}
