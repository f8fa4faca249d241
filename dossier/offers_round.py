"""A round of the offers market on the sandbox: lenders answer their feeds, an SME accepts one offer.

What ``make demo`` does after the lenders' pulls, all over HTTP against the real web service (run
on a free loopback port for the round):

1. each seeded sandbox lender prices the dossiers delivered to it with its own policy
   (:data:`connectors.sandbox.lenders.SEEDED_POLICIES`: a cautious bank, a fintech with a wider
   appetite, a revenue-share lender) through ``/v1/feed`` and ``POST /v1/offers``
   (:func:`connectors.sandbox.lenders.answer_feed`), with an API key issued for the round and
   revoked after it;
2. the SME with the most open offers opens its page, which lists them cheapest first by APR, and
   accepts the first one with the page's own form (page key and CSRF token as a browser sends
   them); the chosen lender and the others read ``offer_accepted`` and ``offer_closed`` in their
   feeds.

Run again, it posts nothing twice (the lenders read back what they answered) and the SME that
accepted has accepted already.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import re
import threading
import time
from collections.abc import Iterator
from typing import Any

import requests

from dossier.settings import Settings

TIMEOUT = 30.0


@contextlib.contextmanager
def serving(settings: Settings) -> Iterator[str]:
    """The web service for ``settings`` on a free loopback port, for the ``with`` block; its base URL."""
    import uvicorn

    from dossier.web.app import create_app

    server = uvicorn.Server(
        uvicorn.Config(create_app(settings), host="127.0.0.1", port=0, log_level="warning")
    )
    thread = threading.Thread(target=server.run, name="offers-round-web", daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("the web service did not start on a loopback port")
        time.sleep(0.05)
    port = server.servers[0].sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=15)


def _answer_lenders(base_url: str) -> list[dict[str, Any]]:
    from connectors.sandbox.lenders import POLICIES, SEEDED_POLICIES, answer_feed
    from warehouse import keys
    from warehouse.db import session_scope
    from warehouse.models import Lender

    answered = []
    for lender_id, policy_name in SEEDED_POLICIES.items():
        now = dt.datetime.now(dt.UTC)
        with session_scope() as session:
            if session.get(Lender, lender_id) is None:
                continue
            token, key = keys.issue_key(session, lender_id, at=now)
            prefix = key.prefix
        try:
            summary = answer_feed(base_url, token, POLICIES[policy_name])
        finally:
            with session_scope() as session:
                keys.revoke_key(session, prefix, at=dt.datetime.now(dt.UTC))
        answered.append({**summary, "policy": POLICIES[policy_name].name})
    return answered


def _chooser(session: Any) -> str | None:
    """The SME that accepted already, else the one with the most open offers (two or more)."""
    from sqlalchemy import func, select

    from warehouse.models import Offer

    accepted = session.scalars(
        select(Offer.sme_id).where(Offer.status == "accepted").order_by(Offer.sme_id)
    ).first()
    if accepted is not None:
        return accepted
    counted = session.execute(
        select(Offer.sme_id, func.count())
        .where(Offer.status == "open")
        .group_by(Offer.sme_id)
        .order_by(func.count().desc(), Offer.sme_id)
        .limit(1)
    ).first()
    return counted[0] if counted is not None and counted[1] >= 2 else None


def _accept_on_page(base_url: str, settings: Settings, sme_id: str) -> dict[str, Any]:
    """Open the SME's page with a fresh page key, read its offers in the order shown and accept the
    first (cheapest) with the page's form; the offers as listed before and the page's answer back."""
    from warehouse import links, offers
    from warehouse.db import session_scope

    with session_scope() as session:
        key = links.issue_page_key(session, settings.kept_secret("secret_key"), sme_id)
        listed = [offers.view(o) for o in offers.of_sme(session, sme_id)]
    browser = requests.Session()
    page = browser.get(f"{base_url}/sme/{sme_id}", params={"key": key}, timeout=TIMEOUT)
    page.raise_for_status()
    shown = re.findall(r'action="/sme/[^"]+/offers/(off_\w+)/accept"', page.text)
    csrf = re.search(r'name="csrf_token" value="([^"]+)"', page.text)
    accepted = next((o for o in listed if o["status"] == "accepted"), None)
    message = ""
    if accepted is None and shown and csrf:
        answer = browser.post(
            f"{base_url}/sme/{sme_id}/offers/{shown[0]}/accept",
            data={"key": key, "csrf_token": csrf.group(1)},
            timeout=TIMEOUT,
        )
        answer.raise_for_status()
        notice = re.search(r'<div class="notice" role="status"><p>(.*?)</p>', answer.text, re.S)
        message = re.sub(r"&#39;", "'", notice.group(1)) if notice else ""
        accepted = next(o for o in listed if o["offer_id"] == shown[0])
    elif accepted is not None:
        message = f"{sme_id} had already accepted {accepted['lender_id']}'s offer."
    compared = [o for o in listed if o["status"] in ("open", "accepted", "closed")]
    return {
        "sme_id": sme_id,
        "page_url": f"{settings.base_url}/sme/{sme_id}?key={key}",
        "offers": compared,
        "accepted": accepted,
        "message": message,
    }


def _told(sme_id: str) -> list[tuple[str, str]]:
    """What each lender with an offer on the SME reads about it in its feed (its ``offer_*`` events)."""
    from sqlalchemy import select

    from warehouse.db import session_scope
    from warehouse.events import OFFER_KINDS
    from warehouse.models import FeedEvent

    with session_scope() as session:
        rows = session.execute(
            select(FeedEvent.lender_id, FeedEvent.kind)
            .where(FeedEvent.sme_id == sme_id, FeedEvent.kind.in_(OFFER_KINDS))
            .order_by(FeedEvent.lender_id, FeedEvent.seq)
        ).all()
    return [(lender, kind) for lender, kind in rows]


def run_round(settings: Settings) -> dict[str, Any]:
    """Serve the API, let the sandbox lenders answer, let the chosen SME accept; what happened back:
    ``lenders`` (each lender's :func:`~connectors.sandbox.lenders.answer_feed` summary), ``choice``
    (the SME, the offers it compared, the one accepted, the page's message) and ``told`` (the
    offer events in the lenders' feeds about that SME), and ``market``
    (:func:`evaluation.market.market_stats`)."""
    from evaluation.market import market_stats
    from warehouse.db import session_scope
    from warehouse.offers import market_frames

    with serving(settings) as base_url:
        lenders = _answer_lenders(base_url)
        with session_scope() as session:
            sme_id = _chooser(session)
        choice = _accept_on_page(base_url, settings, sme_id) if sme_id else None
    told = _told(sme_id) if sme_id else []
    with session_scope() as session:
        offers_frame, dossiers = market_frames(session)
    return {
        "lenders": lenders,
        "choice": choice,
        "told": told,
        "market": market_stats(offers_frame, dossiers),
    }
