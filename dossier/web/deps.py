"""Dependencies shared by the routers: settings, a warehouse session per request, authentication."""

from __future__ import annotations

import hmac
from collections.abc import Iterator
from typing import Annotated

from fastapi import Depends, HTTPException, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy.orm import Session

from dossier.settings import Settings
from warehouse.db import make_engine, session_scope
from warehouse.storage import Store

bearer = HTTPBearer(auto_error=False)


def settings_of(request: Request) -> Settings:
    """The settings the application was built with."""
    return request.app.state.settings


def session(request: Request) -> Iterator[Session]:
    """One warehouse transaction per request: committed when the route returns, rolled back on error."""
    engine = request.app.state.engine
    with session_scope(engine) as opened:
        yield opened


def store(request: Request) -> Store:
    return request.app.state.store


def operator(
    request: Request, credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)]
) -> str:
    """Require the operator's bearer token (``DOSSIER_OPERATOR_TOKEN``); returns the actor name."""
    expected = request.app.state.settings.kept_secret("operator_token")
    if credentials is None:
        raise HTTPException(401, "operator token required", headers={"WWW-Authenticate": "Bearer"})
    if not hmac.compare_digest(credentials.credentials.encode(), expected.encode()):
        raise HTTPException(403, "operator token not valid")
    return "operator"


def engine_for(settings: Settings):
    return make_engine(settings.warehouse_url)


SessionDep = Annotated[Session, Depends(session, scope="function")]
"""A session committed when the route returns, before the response is sent (so the next request sees it)."""
StoreDep = Annotated[Store, Depends(store)]
Operator = Annotated[str, Depends(operator)]
