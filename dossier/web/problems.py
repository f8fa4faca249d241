"""Errors as RFC 9457 problem details (``application/problem+json``), never a stack trace.

Every expected error (:class:`warehouse.errors.DossierError`) becomes a problem with the status
its class says (:data:`STATUS`), a request body that does not fit its model a 400 naming the
field, and anything unexpected a 500 whose detail says only that it was logged.
"""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from warehouse.consent import ConsentError
from warehouse.errors import DossierError
from warehouse.feed import FeedError

log = logging.getLogger(__name__)

MEDIA_TYPE = "application/problem+json"
STATUS: dict[type[DossierError], int] = {ConsentError: 422, FeedError: 404}
"""HTTP status of each expected error class (others: 400)."""


def problem(status: int, title: str, detail: str, **extra: Any) -> JSONResponse:
    """A problem-details response."""
    body = {"type": "about:blank", "title": title, "status": status, "detail": detail, **extra}
    return JSONResponse(body, status_code=status, media_type=MEDIA_TYPE)


def _status_of(error: DossierError) -> int:
    for cls in type(error).__mro__:
        if cls in STATUS:
            return STATUS[cls]
    return 400


def install(app: FastAPI) -> None:
    """Register the problem-details handlers on ``app``."""

    @app.exception_handler(DossierError)
    async def _expected(request: Request, error: DossierError) -> JSONResponse:
        status = _status_of(error)
        return problem(status, type(error).__name__, str(error), instance=request.url.path)

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, error: RequestValidationError) -> JSONResponse:
        errors = [
            {"field": ".".join(str(p) for p in e["loc"] if p != "body"), "message": e["msg"]}
            for e in error.errors()
        ]
        first = errors[0] if errors else {"field": "", "message": "invalid request"}
        return problem(
            400,
            "Invalid request",
            f"{first['field']}: {first['message']}",
            instance=request.url.path,
            errors=errors,
        )

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, error: StarletteHTTPException) -> JSONResponse:
        response = problem(error.status_code, str(error.detail), str(error.detail), instance=request.url.path)
        for name, value in (error.headers or {}).items():
            response.headers[name] = value
        return response

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, error: Exception) -> JSONResponse:
        log.exception("unexpected error serving %s %s", request.method, request.url.path)
        return problem(500, "Internal error", "an unexpected error was logged", instance=request.url.path)
