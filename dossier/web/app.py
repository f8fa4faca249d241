"""The FastAPI application: one router per audience, problem-details errors, settings passed in.

>>> from dossier.settings import for_home
>>> app = create_app(for_home("/tmp/sme-dossier-doctest"))
>>> sorted(route.path for route in app.routes if route.path.startswith("/v1/operator"))[:2]
['/v1/operator/consents', '/v1/operator/consents']
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

from fastapi import FastAPI

from dossier.grant_runs import GrantRunner
from dossier.settings import Settings, get_settings
from dossier.web import deps, lender, links_api, offers, operator, outcomes, problems, sharing, sme, webhooks
from dossier.web.deps import engine_for
from warehouse.storage import Store

API_VERSION = "1"


def create_app(settings: Settings | None = None, *, resume_grant_runs: bool = True) -> FastAPI:
    """The web service for ``settings`` (default: the environment's). At startup it takes up the
    grant runs a stopped service left open, unless ``resume_grant_runs`` is False (one of several
    service processes: :func:`worker_app`)."""
    settings = settings or get_settings()

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        if resume_grant_runs:
            app.state.grant_runs.resume()
        try:
            yield
        finally:
            app.state.grant_runs.close()

    app = FastAPI(
        title="sme-dossier",
        version=API_VERSION,
        summary="Consent-driven credit dossiers for off-platform SMEs: connector links, lender API, operator API.",
        lifespan=lifespan,
    )
    app.state.settings = settings
    app.state.engine = engine_for(settings)
    app.state.grant_runs = GrantRunner(settings, app.state.engine)
    app.state.store = Store(settings.store_url, settings.storage_options())
    problems.install(app)
    deps.install(app)

    @app.get("/health", tags=["service"])
    def health() -> dict[str, str]:
        return {"status": "ok"}

    app.include_router(operator.router)
    app.include_router(lender.router)
    app.include_router(outcomes.router)
    app.include_router(offers.router)
    app.include_router(webhooks.router)
    app.include_router(links_api.router)
    app.include_router(sme.router)
    sharing.install(app)
    return app


def worker_app() -> FastAPI:
    """The app of one of the processes of ``dossier serve --workers N``, built from the environment
    the command set up. The command itself takes up the grant runs a stopped service left open,
    once, rather than each process; the objects made while building the app are moved out of the
    garbage collector's reach (``gc.freeze``), so its full collections do not walk them again."""
    import gc

    app = create_app(resume_grant_runs=False)
    gc.collect()
    gc.freeze()
    return app
