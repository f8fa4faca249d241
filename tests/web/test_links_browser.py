"""An SME in headless Chromium: opens a link, connects accounting on the sandbox provider's own
approval page, uploads a Green Button file, asks for a field visit, grants, watches its own page
until the dossier is ready, sees it in the lender's pull (``GET /v1/feed``), and takes the consent
back on its own page; the lender's next pull has the tombstone.

Real components only: the web service and the sandbox are served over HTTP on 127.0.0.1, the
browser is Debian's ``chromium`` driven by Playwright, and axe-core (from npm, pinned in
``tests/web/browser/package.json``) runs inside every page; no serious or critical violation is
allowed. Screenshots go to ``var/screenshots/``. The set-up installs what is missing (``apt-get
install chromium``, ``npm install``).
"""

from __future__ import annotations

import datetime as dt
import shutil
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import uvicorn
from sqlalchemy import select

from connectors.sandbox.seed import seed_warehouse
from connectors.sandbox.server import SandboxServer
from connectors.sandbox.universe import Universe
from dossier.settings import for_home
from dossier.web.app import create_app
from warehouse import keys
from warehouse.db import make_engine, session_scope
from warehouse.migrate import upgrade
from warehouse.models import Consent, ProviderToken, SourceConnection, Upload

ROOT = Path(__file__).resolve().parents[2]
CHROMIUM = Path("/usr/bin/chromium")
BROWSER_DIR = Path(__file__).parent / "browser"
AXE = BROWSER_DIR / "node_modules" / "axe-core" / "axe.min.js"
SCREENSHOTS = ROOT / "var" / "screenshots"
GREEN_BUTTON = Path(__file__).parents[1] / "connectors" / "fixtures" / "espi_containerized_root.xml"
TOKEN = "operator-secret-for-browser"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"]


def _install_chromium() -> None:
    if CHROMIUM.exists():
        return
    if shutil.which("apt-get") is None:
        pytest.fail(
            "chromium is missing and apt-get is not available to install it (apt-get install chromium)"
        )
    subprocess.run(["apt-get", "update", "-qq"], check=True)
    subprocess.run(
        ["apt-get", "install", "-y", "-qq", "chromium"],
        check=True,
        env={"DEBIAN_FRONTEND": "noninteractive", "PATH": "/usr/sbin:/usr/bin:/sbin:/bin"},
    )


def _install_axe() -> None:
    if AXE.exists():
        return
    if shutil.which("npm") is None:
        pytest.fail(
            "axe-core is missing and npm is not available to install it (npm install in tests/web/browser)"
        )
    subprocess.run(["npm", "install", "--no-audit", "--no-fund"], cwd=BROWSER_DIR, check=True)


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    _install_chromium()
    _install_axe()
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(
            executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS
        )
        yield launched
        launched.close()


@pytest.fixture
def service(tmp_path: Path) -> Iterator[dict[str, Any]]:
    """The sandbox and the web service, each on its own port of 127.0.0.1, on a seeded SQLite warehouse."""
    with SandboxServer(Universe(20261125, 4, dt.datetime.now(dt.UTC).date())) as sandbox:
        port = _free_port()
        url = f"sqlite:///{tmp_path / 'warehouse.db'}"
        engine = make_engine(url)
        upgrade(engine)
        with session_scope(engine) as session:
            seed_warehouse(session, sandbox.universe, now=dt.datetime.now(dt.UTC))
            lender_key, _ = keys.issue_key(session, "harbor-credit", at=dt.datetime.now(dt.UTC))
            other_key, _ = keys.issue_key(session, "kestrel-finance", at=dt.datetime.now(dt.UTC))
        settings = for_home(
            tmp_path / "var",
            warehouse_url=url,
            operator_token=TOKEN,
            sandbox_url=sandbox.url,
            public_url=f"http://127.0.0.1:{port}",
        )
        server = uvicorn.Server(
            uvicorn.Config(create_app(settings), host="127.0.0.1", port=port, log_level="warning")
        )
        thread = threading.Thread(target=server.run, daemon=True)
        thread.start()
        deadline = time.monotonic() + 15
        while not server.started and time.monotonic() < deadline:
            time.sleep(0.05)
        assert server.started, "the web service did not start"
        try:
            yield {
                "base": settings.base_url,
                "engine": engine,
                "settings": settings,
                "lender": {"Authorization": f"Bearer {lender_key}"},
                "other_lender": {"Authorization": f"Bearer {other_key}"},
            }
        finally:
            server.should_exit = True
            thread.join(timeout=10)
            engine.dispose()


def check_page(page: Any, name: str) -> None:
    """Screenshot the page and run axe-core in it: no serious or critical violation."""
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SCREENSHOTS / f"{name}.png"), full_page=True)
    page.add_script_tag(path=str(AXE))
    results = page.evaluate("async () => await axe.run(document, {resultTypes: ['violations']})")
    serious = [
        (v["id"], v["impact"], v["help"], [n["target"] for n in v["nodes"]])
        for v in results["violations"]
        if v["impact"] in ("serious", "critical")
    ]
    assert serious == [], f"{name}: {serious}"


def test_an_sme_connects_uploads_grants_and_revokes_in_a_browser(
    browser: Any, service: dict[str, Any]
) -> None:
    import requests

    engine = service["engine"]
    with session_scope(engine) as session:
        sme_id = session.scalars(
            select(SourceConnection.sme_id)
            .where(SourceConnection.source == "accounting")
            .order_by(SourceConnection.sme_id)
        ).first()
    made = requests.post(
        f"{service['base']}/v1/operator/links",
        json={
            "sme_id": sme_id,
            "sources": ["accounting", "utility", "survey"],
            "recipients": ["harbor-credit", "kestrel-finance"],
            "purpose": "credit_decision",
            "history_months": 12,
            "consent_days": 90,
        },
        headers={"Authorization": f"Bearer {TOKEN}"},
        timeout=10,
    ).json()
    page = browser.new_page()
    page.goto(made["url"])
    assert page.title() == "A request to share your data · sme-dossier"
    check_page(page, "01-link")

    page.get_by_role("button", name="Connect your accounting provider").click()
    page.wait_for_load_state()
    assert page.title() == "Sandbox accounting provider: approve access"
    check_page(page, "02-provider-approval")
    page.get_by_role("button", name="Approve access").click()
    page.wait_for_url(made["url"])
    assert page.get_by_text("Accounting: connected.").is_visible()

    page.get_by_label("A file with your utility bills and meter readings").set_input_files(str(GREEN_BUTTON))
    page.get_by_role("button", name="Upload utility file").click()
    page.wait_for_load_state()
    assert page.get_by_text(
        "espi_containerized_root.xml: understood as espi: 3 utility readings"
    ).is_visible()
    check_page(page, "03-uploaded")

    page.get_by_label("When suits you (optional)").fill("weekday mornings")
    page.get_by_role("button", name="Request a field visit").click()
    page.wait_for_load_state()
    assert page.get_by_text("Your field visit is requested").is_visible()
    check_page(page, "03b-visit-requested")

    page.get_by_role("button", name="I agree to share this data").click()
    page.wait_for_load_state()
    assert page.get_by_role("heading", name="Your answer is recorded").is_visible()
    assert page.get_by_text("Your dossier is being prepared").is_visible()
    check_page(page, "04-granted")

    page.get_by_role("link", name="Your page").click()
    page.wait_for_load_state()
    # The page refreshes itself while the dossier is prepared (no JavaScript: a meta refresh).
    page.get_by_text("Your dossier is ready and has been delivered to the lenders you chose.").wait_for(
        timeout=300_000
    )
    assert page.get_by_text("Field visit: requested on").is_visible()
    check_page(page, "05-own-page")
    feed = requests.get(f"{service['base']}/v1/feed", headers=service["lender"], timeout=60).json()
    delivered = [e for e in feed["events"] if e["event"] == "delivered" and e["sme_id"] == sme_id]
    assert len(delivered) == 1
    assert delivered[0]["dossier"]["sme_id"] == sme_id

    # Two lenders offer on the same dossier; the SME compares them by APR and accepts the cheaper.
    dossier = delivered[0]["dossier"]
    valid_until = (dt.datetime.now(dt.UTC).date() + dt.timedelta(days=14)).isoformat()
    terms = {"dossier_id": dossier["dossier_id"], "currency": dossier["currency"], "valid_until": valid_until}
    cheaper = requests.post(
        f"{service['base']}/v1/offers",
        json={**terms, "amount": "8000", "term_months": 12, "nominal_rate": "0.11", "conditions": "None."},
        headers=service["lender"],
        timeout=60,
    )
    dearer = requests.post(
        f"{service['base']}/v1/offers",
        json={**terms, "amount": "8000", "term_months": 12, "nominal_rate": "0.09", "upfront_fee": "400"},
        headers=service["other_lender"],
        timeout=60,
    )
    assert (cheaper.status_code, dearer.status_code) == (201, 201), (cheaper.text, dearer.text)
    assert float(cheaper.json()["apr"]) < float(dearer.json()["apr"])
    page.reload()
    page.wait_for_load_state()
    table = page.get_by_role("table", name="Open offers, cheapest first (by APR)")
    rows = table.get_by_role("row").all_inner_texts()
    assert [r.split("\t")[0] for r in rows[1:]] == ["harbor-credit", "kestrel-finance"]
    assert f"{float(cheaper.json()['apr']) * 100:.2f} %" in rows[1]
    check_page(page, "05b-offers")
    page.get_by_role("button", name="Accept harbor-credit's offer").click()
    page.wait_for_load_state()
    assert page.get_by_text("You accepted harbor-credit's offer of GBP 8000.00").is_visible()
    assert page.get_by_role("table", name="Earlier offers and what became of them").is_visible()
    check_page(page, "05c-accepted")
    told = {}
    for lender, headers in (
        ("harbor-credit", service["lender"]),
        ("kestrel-finance", service["other_lender"]),
    ):
        events = requests.get(
            f"{service['base']}/v1/feed", params={"limit": 1000}, headers=headers, timeout=60
        ).json()["events"]
        told[lender] = [(e["event"], e["reason"]) for e in events if e["event"].startswith("offer_")]
    assert told == {
        "harbor-credit": [("offer_accepted", None)],
        "kestrel-finance": [("offer_closed", "another_offer_accepted")],
    }
    feed = requests.get(f"{service['base']}/v1/feed", headers=service["lender"], timeout=60).json()

    page.get_by_role("button", name="Take back every consent").click()
    page.wait_for_load_state()
    with session_scope(engine) as session:
        active = session.scalars(select(Consent).where(Consent.sme_id == sme_id)).all()
    assert page.get_by_text(
        f"Done: you stopped every consent ({len(active)} consent(s) changed)."
    ).is_visible()
    check_page(page, "06-revoked")
    page.close()
    after = requests.get(
        f"{service['base']}/v1/feed",
        params={"cursor": feed["next_cursor"]},
        headers=service["lender"],
        timeout=60,
    ).json()
    assert [(e["event"], e["dossier_id"], e["reason"]) for e in after["events"]] == [
        ("withdrawn", delivered[0]["dossier_id"], "consent_revoked")
    ]

    with session_scope(engine) as session:
        consent = session.scalars(select(Consent).where(Consent.consent_id.like(f"C-{sme_id}-%"))).one()
        assert (consent.sources, consent.recipients, consent.status) == (
            ["accounting", "survey", "utility"],
            ["harbor-credit", "kestrel-finance"],
            "revoked",
        )
        assert session.get(ProviderToken, (sme_id, "accounting")) is not None
        assert [(u.source, u.status) for u in session.scalars(select(Upload))] == [("utility", "parsed")]
