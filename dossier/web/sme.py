"""The SME's pages: answer a connector link, see its consents and deliveries, take consent back.

Server-rendered (Jinja2 templates in ``dossier/web/templates``), no JavaScript. Every form carries
a CSRF token: an HMAC, keyed by the service's secret key, of a random nonce kept in a
``SameSite=Strict`` cookie (double submit). What a link allows and what a consent covers is
decided by :mod:`warehouse.links` and :mod:`warehouse.consent`; this module only renders and
records. The operator's API to make links (``POST /v1/operator/links``) lives here too.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import secrets
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import quote

from fastapi import APIRouter, BackgroundTasks, File, Form, Request, UploadFile
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from fastapi.templating import Jinja2Templates
from sqlalchemy import select

from connectors import authorization, uploads
from connectors.sandbox.authorize import OAUTH_SOURCES
from dossier import grant_runs
from dossier.settings import Settings
from dossier.web.deps import SessionDep
from warehouse import consent, links, offers
from warehouse.feed import refresh
from warehouse.models import (
    ConnectorLink,
    Consent,
    Delivery,
    DossierVersion,
    FieldVisitRequest,
    OAuthRequest,
    SourceConnection,
    Upload,
)

router = APIRouter()
templates = Jinja2Templates(directory=Path(__file__).parent / "templates")
CSRF_COOKIE = "dossier_csrf"


def link_url(settings: Settings, sme_id: str, token: str) -> str:
    """Where an SME answers the link ``token``."""
    return f"{settings.base_url}/connect/{quote(sme_id)}/{token}"


def page_url(settings: Settings, sme_id: str, key: str) -> str:
    """The SME's own page, reached with its page ``key``."""
    return f"{settings.base_url}/sme/{quote(sme_id)}?key={key}"


def _key(request: Request) -> str:
    return request.app.state.settings.kept_secret("secret_key")


def _client(request: Request) -> str:
    return request.client.host if request.client else "unknown"


def _csrf_value(key: str, nonce: str) -> str:
    return hmac.new(key.encode(), f"csrf:{nonce}".encode(), hashlib.sha256).hexdigest()


def _csrf_pair(request: Request) -> tuple[str, str]:
    """The cookie nonce (the request's, else a new one) and the form token that goes with it."""
    nonce = request.cookies.get(CSRF_COOKIE) or secrets.token_urlsafe(16)
    return nonce, _csrf_value(_key(request), nonce)


def _csrf_ok(request: Request, token: str) -> bool:
    nonce = request.cookies.get(CSRF_COOKIE)
    return bool(nonce) and hmac.compare_digest(token.encode(), _csrf_value(_key(request), nonce).encode())


def _page(
    request: Request, name: str, status: int = 200, nonce: str | None = None, **context: Any
) -> Response:
    response = templates.TemplateResponse(request, name, context, status_code=status)
    response.headers["Cache-Control"] = "no-store"
    response.headers["Referrer-Policy"] = "no-referrer"
    if nonce:
        response.set_cookie(CSRF_COOKIE, nonce, httponly=True, samesite="strict", path="/")
    return response


def _problem_page(request: Request, title: str, detail: str, status: int) -> Response:
    return _page(request, "problem.html", status, title=title, detail=detail)


_FORM_EXPIRED = "This form has expired or did not come from this site. Open the link again and answer there."


# --- connector links ------------------------------------------------------------------------------


def _render_link(
    request: Request, session: SessionDep, link: ConnectorLink, token: str, *, now: dt.datetime, **extra: Any
) -> Response:
    """The link page (recording that its text was shown) with the uploads made so far."""
    paragraphs, digest = links.show(session, link, at=now, client=_client(request))
    nonce, csrf = _csrf_pair(request)
    uploaded = session.scalars(select(Upload).where(Upload.link_id == link.link_id).order_by(Upload.id)).all()
    action = f"/connect/{quote(link.sme_id)}/{token}"
    return _page(
        request,
        "link.html",
        extra.pop("status", 200),
        nonce=nonce,
        title="A request to share your data",
        paragraphs=paragraphs,
        text_sha256=digest,
        csrf_token=csrf,
        action=action,
        upload_action=f"{action}/upload",
        sources=[(source, links.SOURCE_WORDS.get(source, source)) for source in link.sources],
        connectable=[
            source
            for source in link.sources
            if _provider(request.app.state.settings, source) and _account_at(session, link.sme_id, source)
        ],
        connections={
            r.source: r
            for r in session.scalars(
                select(OAuthRequest)
                .where(OAuthRequest.link_id == link.link_id, OAuthRequest.outcome.is_not(None))
                .order_by(OAuthRequest.answered_at)
            )
        },
        uploads=uploaded,
        visit_action=f"{action}/visit" if links.VISIT_SOURCE in link.sources else "",
        visit=session.scalars(
            select(FieldVisitRequest).where(FieldVisitRequest.link_id == link.link_id)
        ).first(),
        **extra,
    )


@router.get("/connect/{sme_id}/{token}", response_class=HTMLResponse, tags=["sme"])
def show_link(sme_id: str, token: str, request: Request, session: SessionDep) -> Response:
    """The page an SME opens from a link: the terms in plain words, uploads, grant and decline."""
    now = dt.datetime.now(dt.UTC)
    try:
        link = links.open_link(session, _key(request), sme_id, token, now=now)
    except links.LinkError as error:
        return _problem_page(request, "This link cannot be used", str(error), error.status)
    return _render_link(request, session, link, token, now=now)


@router.post("/connect/{sme_id}/{token}/upload", response_class=HTMLResponse, tags=["sme"])
def upload_file(
    sme_id: str,
    token: str,
    request: Request,
    session: SessionDep,
    file: Annotated[UploadFile, File()],
    source: Annotated[str, Form()] = "",
    csrf_token: Annotated[str, Form()] = "",
) -> Response:
    """Upload a file for one source: landed raw first, then read; the page says what was understood."""
    settings: Settings = request.app.state.settings
    if not _csrf_ok(request, csrf_token):
        return _problem_page(request, "Your file was not received", _FORM_EXPIRED, 403)
    now = dt.datetime.now(dt.UTC)
    try:
        link = links.open_link(session, _key(request), sme_id, token, now=now)
    except links.LinkError as error:
        return _problem_page(request, "This link cannot be used", str(error), error.status)
    data = file.file.read(settings.upload_max_bytes + 1)
    try:
        upload = uploads.receive(
            session,
            request.app.state.store,
            link,
            source=source,
            filename=file.filename or "",
            data=data,
            max_bytes=settings.upload_max_bytes,
            at=now,
        )
    except uploads.UploadError as error:
        return _render_link(request, session, link, token, now=now, status=error.status, problem=str(error))
    links.append_event(
        session,
        link.link_id,
        "uploaded",
        now,
        "sme",
        {"source": source, "sha256": upload.sha256, "status": upload.status, "client": _client(request)},
    )
    status = 422 if upload.status == "rejected" else 200
    return _render_link(
        request, session, link, token, now=now, status=status, latest=upload, feedback=feedback(upload)
    )


@router.post("/connect/{sme_id}/{token}/visit", response_class=HTMLResponse, tags=["sme"])
def request_visit(
    sme_id: str,
    token: str,
    request: Request,
    session: SessionDep,
    csrf_token: Annotated[str, Form()] = "",
    note: Annotated[str, Form()] = "",
) -> Response:
    """Ask for a field visit (the survey source); asking twice keeps the first request."""
    if not _csrf_ok(request, csrf_token):
        return _problem_page(request, "No visit was requested", _FORM_EXPIRED, 403)
    now = dt.datetime.now(dt.UTC)
    try:
        link = links.open_link(session, _key(request), sme_id, token, now=now)
    except links.LinkError as error:
        return _problem_page(request, "This link cannot be used", str(error), error.status)
    try:
        visit, new = links.request_field_visit(session, link, at=now, client=_client(request), note=note)
    except links.LinkError as error:
        return _render_link(request, session, link, token, now=now, status=error.status, problem=str(error))
    message = (
        "Your field visit is requested; the operator will contact you to arrange it."
        if new
        else f"You already asked for a field visit on {visit.requested_at:%d %B %Y}; it is still requested."
    )
    return _render_link(request, session, link, token, now=now, visit_message=message)


RETURN_COOKIE = "dossier_return"


def _provider(settings: Settings, source: str) -> authorization.Provider | None:
    """The OAuth provider of ``source`` as configured (``DOSSIER_PROVIDERS``, else the sandbox)."""
    provider = settings.provider(source)
    if not provider.configured or source not in OAUTH_SOURCES:
        return None
    return provider


def _account_at(session: SessionDep, sme_id: str, source: str) -> str | None:
    connection = session.get(SourceConnection, (sme_id, source))
    return connection.account_ref if connection else None


@router.post("/connect/{sme_id}/{token}/provider/{source}", tags=["sme"])
def connect_provider(
    sme_id: str,
    token: str,
    source: str,
    request: Request,
    session: SessionDep,
    csrf_token: Annotated[str, Form()] = "",
) -> Response:
    """Send the browser to the provider's approval page (authorization code, ``state``, PKCE S256)."""
    settings: Settings = request.app.state.settings
    if not _csrf_ok(request, csrf_token):
        return _problem_page(request, "Nothing was connected", _FORM_EXPIRED, 403)
    now = dt.datetime.now(dt.UTC)
    try:
        link = links.open_link(session, _key(request), sme_id, token, now=now)
    except links.LinkError as error:
        return _problem_page(request, "This link cannot be used", str(error), error.status)
    provider = _provider(settings, source)
    account = _account_at(session, sme_id, source)
    if provider is None or account is None:
        return _problem_page(
            request, "Nothing was connected", f"No {source} provider can be connected here.", 400
        )
    try:
        target = authorization.start(
            session,
            link,
            source,
            provider,
            redirect_uri=f"{settings.base_url}/oauth/callback",
            login_hint=account,
            at=now,
        )
    except authorization.AuthorizationError as error:
        return _problem_page(request, "Nothing was connected", str(error), 400)
    links.append_event(
        session, link.link_id, "connect_started", now, "sme", {"source": source, "client": _client(request)}
    )
    response = RedirectResponse(target, 303)
    response.set_cookie(
        RETURN_COOKIE, f"/connect/{quote(sme_id)}/{token}", httponly=True, samesite="lax", path="/oauth"
    )
    return response


@router.get("/oauth/callback", tags=["sme"])
def oauth_callback(
    request: Request, session: SessionDep, state: str = "", code: str = "", error: str = ""
) -> Response:
    """The provider's redirect back: checked against the request ``state`` names, then the code is traded."""
    settings: Settings = request.app.state.settings
    now = dt.datetime.now(dt.UTC)
    try:
        pending = authorization.pending(session, state, now)
    except authorization.AuthorizationError as failure:
        return _problem_page(request, "Nothing was connected", str(failure), 400)
    link = session.get(ConnectorLink, pending.link_id)
    provider = _provider(settings, pending.source)
    try:
        if link is None or link.outcome is not None or link.expires_at <= now or provider is None:
            raise authorization.AuthorizationError(
                "The link this connection belongs to can no longer be used."
            )
        authorization.finish(
            session,
            pending,
            provider,
            code=code,
            error=error,
            secret_key=_key(request),
            at=now,
            timeout=settings.http_timeout,
        )
    except authorization.AuthorizationError as failure:
        pending.outcome = pending.outcome or "refused"
        pending.detail = pending.detail or str(failure)
        pending.answered_at = now
        links.append_event(
            session,
            pending.link_id,
            "connect_refused",
            now,
            "sme",
            {"source": pending.source, "reason": str(failure), "client": _client(request)},
        )
        return _problem_page(request, "Nothing was connected", str(failure), 400)
    links.append_event(
        session,
        pending.link_id,
        "connected",
        now,
        "sme",
        {"source": pending.source, "client": _client(request)},
    )
    back = request.cookies.get(RETURN_COOKIE, "")
    if back.startswith(f"/connect/{quote(pending.sme_id)}/"):
        return RedirectResponse(back, 303)
    return _page(
        request,
        "problem.html",
        title="Connected",
        detail=f"Your {pending.source} provider is connected. Go back to your link to finish.",
    )


def feedback(upload: Upload) -> str:
    """What the SME is told about an upload it just made, in one sentence or two."""
    if upload.status == "parsed":
        rows = ", ".join(f"{count} {table.replace('_', ' ')}" for table, count in upload.tables.items())
        note = f" Note: {upload.detail}" if upload.detail else ""
        return f"{upload.filename}: understood as {upload.format}: {rows}.{note}"
    if upload.status == "unreadable":
        return f"{upload.filename}: received, not yet readable. {upload.detail}"
    return f"{upload.filename}: not accepted. {upload.detail}"


@router.post("/connect/{sme_id}/{token}", response_class=HTMLResponse, tags=["sme"])
def answer_link(
    sme_id: str,
    token: str,
    request: Request,
    session: SessionDep,
    background: BackgroundTasks,
    decision: Annotated[str, Form()] = "",
    csrf_token: Annotated[str, Form()] = "",
    text_sha256: Annotated[str, Form()] = "",
) -> Response:
    """Grant or decline a link (once; submitting the same answer again shows it again).

    A grant records a run of the pipeline for the SME in the same transaction; the run is handed
    to the service's runner once the transaction has committed (a background task after the
    response), so the answer never waits for the pipeline.
    """
    settings: Settings = request.app.state.settings
    if not _csrf_ok(request, csrf_token):
        return _problem_page(request, "Your answer was not recorded", _FORM_EXPIRED, 403)
    if decision not in ("grant", "decline"):
        return _problem_page(request, "Your answer was not recorded", "Choose to agree or to decline.", 400)
    now = dt.datetime.now(dt.UTC)
    try:
        link = links.open_link(session, _key(request), sme_id, token, now=now)
    except links.LinkError as error:
        repeated = _repeated_answer(session, request, sme_id, token, decision)
        if repeated is not None:
            return repeated
        return _problem_page(request, "This link cannot be used", str(error), error.status)
    try:
        links.answer(
            session, link, grant=decision == "grant", text_sha256=text_sha256, at=now, client=_client(request)
        )
    except links.LinkError as error:
        return _problem_page(request, "Your answer was not recorded", str(error), error.status)
    except consent.ConsentError as error:
        return _problem_page(request, "Your answer was not recorded", f"{error}.", 422)
    run_words = ""
    if link.outcome == "granted" and link.consent_id:
        run = grant_runs.record(
            session, settings, sme_id=sme_id, consent_id=link.consent_id, link_id=link.link_id
        )
        background.add_task(request.app.state.grant_runs.submit, run.id)
        run_words = grant_runs.words(run)
    key = links.issue_page_key(session, _key(request), sme_id, at=now)
    return _page(
        request,
        "answered.html",
        title="Your answer is recorded",
        outcome=link.outcome,
        consent_id=link.consent_id,
        page_url=page_url(settings, sme_id, key),
        run_words=run_words,
    )


def _repeated_answer(
    session: SessionDep, request: Request, sme_id: str, token: str, decision: str
) -> Response | None:
    """A double submit of the answer already recorded shows that answer again (idempotent)."""
    read = links.read_token(_key(request), sme_id, token)
    link = session.get(ConnectorLink, read[0]) if read else None
    if link is None or link.token_sha256 != links.token_hash(token):
        return None
    if link.outcome != {"grant": "granted", "decline": "declined"}[decision]:
        return None
    return _page(
        request,
        "answered.html",
        title="Your answer is recorded",
        outcome=link.outcome,
        consent_id=link.consent_id,
        page_url=None,
    )


# --- the SME's own page ---------------------------------------------------------------------------


def _sme_view(session: SessionDep, sme_id: str, now: dt.datetime) -> dict[str, Any]:
    consents = [
        {
            **vars(t),
            "status": consent.status_at(t, now),
            "sources": sorted(t.sources),
            "recipients": sorted(t.recipients),
            "reconfirm_text": consent.reconfirm_wording(t) if consent.reconfirmable(t, now) else "",
        }
        for t in (
            consent.Terms.of(c)
            for c in session.scalars(
                select(Consent)
                .where(Consent.sme_id == sme_id)
                .order_by(Consent.granted_at, Consent.consent_id)
            )
        )
    ]
    deliveries = [
        {
            "lender_id": delivery.lender_id,
            "dossier_id": version.dossier_id,
            "delivered_at": delivery.delivered_at,
            "grade": version.grade,
            "pd_12m": version.pd_12m,
        }
        for delivery, version in session.execute(
            select(Delivery, DossierVersion)
            .join(DossierVersion, Delivery.dossier_version_id == DossierVersion.id)
            .where(DossierVersion.sme_id == sme_id)
            .order_by(Delivery.delivered_at, Delivery.id)
        )
    ]
    active = [c for c in consents if c["status"] == "active"]
    choices = [
        {"field": "source", "value": s, "label": f"Stop sharing {s}"}
        for s in sorted({s for c in active for s in c["sources"]})
    ]
    choices += [
        {"field": "lender", "value": r, "label": f"Stop sharing with {r}"}
        for r in sorted({r for c in active for r in c["recipients"]})
    ]
    if active:
        choices.append({"field": "everything", "value": "1", "label": "Take back every consent"})
    runs = grant_runs.progress(session, sme_id)
    listed = offers.of_sme(session, sme_id)
    open_offers = [offers.view(o) | {"basis": o.basis} for o in listed if o.status == offers.OPEN]
    decided = [offers.view(o) | {"basis": o.basis} for o in listed if o.status != offers.OPEN]
    latest = max((o.basis for o in listed), key=lambda b: str(b.get("as_of_date") or ""), default=None)
    return {
        "offers": open_offers,
        "decided_offers": sorted(decided, key=lambda o: o["updated_at"] or "", reverse=True),
        "broker": latest,
        "reason_words": offers.REASON_WORDS,
        "consents": consents,
        "deliveries": deliveries,
        "revoke_choices": choices,
        "runs": runs,
        "visits": session.scalars(
            select(FieldVisitRequest)
            .where(FieldVisitRequest.sme_id == sme_id)
            .order_by(FieldVisitRequest.requested_at)
        ).all(),
        "refresh_seconds": 5 if any(r["status"] in grant_runs.WAITING for r in runs) else 0,
    }


def _render_sme_page(
    request: Request, session: SessionDep, sme_id: str, key: str, message: str = ""
) -> Response:
    nonce, csrf = _csrf_pair(request)
    return _page(
        request,
        "sme_page.html",
        nonce=nonce,
        title=f"Your data sharing ({sme_id})",
        message=message,
        key=key,
        csrf_token=csrf,
        revoke_action=f"/sme/{quote(sme_id)}/revoke",
        rotate_action=f"/sme/{quote(sme_id)}/rotate",
        reconfirm_action=f"/sme/{quote(sme_id)}/reconfirm",
        offer_action=f"/sme/{quote(sme_id)}/offers",
        **_sme_view(session, sme_id, dt.datetime.now(dt.UTC)),
    )


def _offers_now(request: Request, session: SessionDep, sme_id: str, now: dt.datetime) -> None:
    """Bring the SME's offers up to date before showing or deciding them: the feeds of the lenders
    with an open offer are refreshed (an offer on a version whose consent ended lapses) and offers
    past their validity lapse."""
    for lender_id in offers.lenders_with_open(session, sme_id):
        refresh(session, request.app.state.store, lender_id, now=now)
    offers.lapse_due(session, now, sme_id=sme_id)


@router.get("/sme/{sme_id}", response_class=HTMLResponse, tags=["sme"])
def sme_page(sme_id: str, request: Request, session: SessionDep, key: str = "") -> Response:
    """The SME's own page: its consents, who pulled which dossier version and when, the lenders'
    offers side by side, revocation."""
    try:
        links.check_page_key(session, _key(request), sme_id, key)
    except links.LinkError as error:
        return _problem_page(request, "This page link cannot be used", str(error), error.status)
    _offers_now(request, session, sme_id, dt.datetime.now(dt.UTC))
    return _render_sme_page(request, session, sme_id, key)


@router.post("/sme/{sme_id}/offers/{offer_id}/{action}", response_class=HTMLResponse, tags=["sme"])
def sme_offer(
    sme_id: str,
    offer_id: str,
    action: str,
    request: Request,
    session: SessionDep,
    key: Annotated[str, Form()] = "",
    csrf_token: Annotated[str, Form()] = "",
) -> Response:
    """Accept one offer (every other open offer closes, every lender is told) or decline it
    (:func:`warehouse.offers.accept`, :func:`warehouse.offers.decline`); recorded in the offer's
    ledger with the client it came from. Doing it again changes nothing."""
    try:
        links.check_page_key(session, _key(request), sme_id, key)
    except links.LinkError as error:
        return _problem_page(request, "This page link cannot be used", str(error), error.status)
    if not _csrf_ok(request, csrf_token):
        return _problem_page(request, "Nothing was changed", _FORM_EXPIRED, 403)
    if action not in ("accept", "decline"):
        return _problem_page(request, "Nothing was changed", "An offer can be accepted or declined.", 404)
    now = dt.datetime.now(dt.UTC)
    _offers_now(request, session, sme_id, now)
    decide = offers.accept if action == "accept" else offers.decline
    try:
        offer, changed = decide(session, sme_id, offer_id, at=now, details={"client": _client(request)})
    except offers.OfferError as error:
        session.commit()  # what lapsed meanwhile stays lapsed
        detail = str(error).split(": ", 1)[-1]
        return _render_sme_page(request, session, sme_id, key, f"Nothing was changed: {detail}.")
    amount = f"{offer.currency} {offers.view(offer)['amount']}"
    if action == "accept":
        message = (
            f"You accepted {offer.lender_id}'s offer of {amount}; {offer.lender_id} has been told and "
            "will contact you to complete the loan. Your other offers are closed."
            if changed
            else f"You had already accepted {offer.lender_id}'s offer of {amount}."
        )
    else:
        message = (
            f"You declined {offer.lender_id}'s offer of {amount}; {offer.lender_id} has been told."
            if changed
            else f"You had already declined {offer.lender_id}'s offer of {amount}."
        )
    return _render_sme_page(request, session, sme_id, key, message)


@router.post("/sme/{sme_id}/revoke", response_class=HTMLResponse, tags=["sme"])
def sme_revoke(
    sme_id: str,
    request: Request,
    session: SessionDep,
    key: Annotated[str, Form()] = "",
    csrf_token: Annotated[str, Form()] = "",
    source: Annotated[str | None, Form()] = None,
    lender: Annotated[str | None, Form()] = None,
    everything: Annotated[str | None, Form()] = None,
) -> Response:
    """Take consent back per source, per lender or entirely (:func:`warehouse.consent.withdraw`)."""
    try:
        links.check_page_key(session, _key(request), sme_id, key)
    except links.LinkError as error:
        return _problem_page(request, "This page link cannot be used", str(error), error.status)
    if not _csrf_ok(request, csrf_token):
        return _problem_page(request, "Nothing was changed", _FORM_EXPIRED, 403)
    if sum(value is not None for value in (source, lender, everything)) != 1:
        return _problem_page(request, "Nothing was changed", "Choose one thing to stop sharing.", 400)
    try:
        changed = consent.withdraw(
            session,
            sme_id=sme_id,
            at=dt.datetime.now(dt.UTC),
            lender=lender,
            source=source,
            actor="sme",
            reason="withdrawn by the SME on its page",
        )
    except consent.ConsentError as error:
        return _problem_page(request, "Nothing was changed", f"{error}.", 422)
    what = f"sharing {source}" if source else f"sharing with {lender}" if lender else "every consent"
    message = (
        f"Done: you stopped {what} ({len(changed)} consent(s) changed)." if changed else "Nothing to stop."
    )
    return _render_sme_page(request, session, sme_id, key, message)


@router.post("/sme/{sme_id}/reconfirm", response_class=HTMLResponse, tags=["sme"])
def sme_reconfirm(
    sme_id: str,
    request: Request,
    session: SessionDep,
    key: Annotated[str, Form()] = "",
    csrf_token: Annotated[str, Form()] = "",
    consent_id: Annotated[str, Form()] = "",
) -> Response:
    """One-click reconfirmation (the 90-day rule): :func:`warehouse.consent.reconfirm`, and a
    ``reconfirmed`` event in the link's ledger with the hash of the words the SME agreed to."""
    try:
        links.check_page_key(session, _key(request), sme_id, key)
    except links.LinkError as error:
        return _problem_page(request, "This page link cannot be used", str(error), error.status)
    if not _csrf_ok(request, csrf_token):
        return _problem_page(request, "Nothing was changed", _FORM_EXPIRED, 403)
    row = session.get(Consent, consent_id) if consent_id else None
    now = dt.datetime.now(dt.UTC)
    if row is None or row.sme_id != sme_id or not consent.reconfirmable(row, now):
        return _problem_page(request, "Nothing was changed", "This consent cannot be reconfirmed now.", 409)
    wording = consent.reconfirm_wording(consent.Terms.of(row))
    consent.reconfirm(session, consent_id, at=now, actor="sme")
    link = session.scalars(select(ConnectorLink).where(ConnectorLink.consent_id == consent_id)).first()
    if link is not None:
        links.append_event(
            session,
            link.link_id,
            "reconfirmed",
            now,
            "sme",
            {
                "consent_id": consent_id,
                "text_sha256": links.keep_text(session, wording, now),
                "reconfirm_by": row.reconfirm_by.isoformat(),
                "client": _client(request),
            },
        )
    message = (
        f"Done: sharing under {consent_id} continues until {min(row.reconfirm_by, row.expires_at):%d %B %Y}."
    )
    return _render_sme_page(request, session, sme_id, key, message)


@router.post("/sme/{sme_id}/rotate", response_class=HTMLResponse, tags=["sme"])
def sme_rotate(
    sme_id: str,
    request: Request,
    session: SessionDep,
    key: Annotated[str, Form()] = "",
    csrf_token: Annotated[str, Form()] = "",
) -> Response:
    """Replace the page's link: the old one stops working at once."""
    try:
        links.check_page_key(session, _key(request), sme_id, key)
    except links.LinkError as error:
        return _problem_page(request, "This page link cannot be used", str(error), error.status)
    if not _csrf_ok(request, csrf_token):
        return _problem_page(request, "Nothing was changed", _FORM_EXPIRED, 403)
    new_key = links.issue_page_key(session, _key(request), sme_id)
    url = page_url(request.app.state.settings, sme_id, new_key)
    return _render_sme_page(
        request, session, sme_id, new_key, f"Your page has a new link; the old one no longer works: {url}"
    )
