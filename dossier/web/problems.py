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
from pydantic import BaseModel, ConfigDict, Field
from starlette.exceptions import HTTPException as StarletteHTTPException

from warehouse.consent import ConsentError
from warehouse.errors import DossierError
from warehouse.feed import FeedError
from warehouse.offers import OfferError

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
        if isinstance(error, OfferError):  # its status depends on what was refused; it names the field
            message = str(error).split(": ", 1)[-1]
            return problem(
                error.status,
                type(error).__name__,
                str(error),
                instance=request.url.path,
                errors=[{"field": error.field, "message": message}],
            )
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


# --- the OpenAPI description of the errors ---------------------------------------------------------


class FieldError(BaseModel):
    """One field of a request that does not fit, and why."""

    field: str = Field(description="Where: query.limit, path.name, filters.grades, ...")
    message: str


class Problem(BaseModel):
    """An RFC 9457 problem: ``detail`` says what went wrong; for a 400, naming the field first."""

    model_config = ConfigDict(extra="allow")

    type: str = Field("about:blank", examples=["about:blank"])
    title: str
    status: int = Field(ge=400, le=599)
    detail: str
    instance: str | None = Field(None, description="The path of the request.")
    errors: list[FieldError] | None = Field(None, description="For a 400: every field that does not fit.")


ERRORS: dict[str, str] = {
    "400": "Invalid request: the detail names the field (query, path or body) that does not fit.",
    "401": "No credential, or one nobody issued.",
    "403": "A credential that is not valid (any more) or not allowed here.",
    "404": "Nothing there, or nothing this credential may see.",
    "409": "The request conflicts with what is recorded.",
    "422": "Understood but refused by the rules (e.g. the consent law).",
    "429": "Too many requests for this key: wait Retry-After seconds.",
    "500": "An unexpected error; it was logged.",
}


PAGE = {"text/html": {"schema": {"type": "string"}}}
PAGES_TAG = "sme"
"""The tag of the pages for people (:mod:`dossier.web.sme`), which answer in HTML."""


def _problem_response(status: str, existing: dict[str, Any] | None) -> dict[str, Any]:
    described = (existing or {}).get("description")
    if not described or described in ("Additional Response", "Validation Error"):
        described = ERRORS.get(status, "A problem.")
    return {
        **(existing or {}),
        "description": described,
        "content": {MEDIA_TYPE: {"schema": {"$ref": "#/components/schemas/Problem"}}},
    }


def complete_openapi(schema: dict[str, Any], rate_limited: set[tuple[str, str]]) -> dict[str, Any]:
    """Describe the errors every operation of ``schema`` can answer, as problem details.

    FastAPI documents a 422 with its own validation body, which this service never sends (it
    answers 400 with a problem naming the field); that goes, and each operation gets: 400 when it
    takes parameters or a body, 401 and 403 when it needs a credential, 404 when its path has
    parameters, 422 when it changes consents (an operator route that is not a read), 429 when
    it is rate limited (``rate_limited``: (method, path) pairs), 500 always,
    and every error response it declares itself as ``application/problem+json``. The pages for
    people (tagged :data:`PAGES_TAG`) answer other refusals with an HTML page (``4XX``).
    """
    components = schema.setdefault("components", {}).setdefault("schemas", {})
    components["Problem"] = Problem.model_json_schema(ref_template="#/components/schemas/{model}")
    components.update(components["Problem"].pop("$defs", {}))
    for path, operations in schema.get("paths", {}).items():
        for method, operation in operations.items():
            responses = operation.setdefault("responses", {})
            validation = responses.get("422", {})
            if "HTTPValidationError" in str(validation.get("content", "")):
                del responses["422"]
            wanted = {"500"}
            if operation.get("parameters") or operation.get("requestBody"):
                wanted.add("400")
            if PAGES_TAG in operation.get("tags", []):
                # A page for people: its refusals are pages too (a request that does not fit its
                # parameters may also get a problem, like everywhere); 500 is a problem.
                responses.setdefault(
                    "4XX", {"description": "A page saying what went wrong.", "content": PAGE}
                )
                for status in sorted(wanted):
                    responses[status] = _problem_response(status, responses.get(status))
                if "400" in responses:
                    responses["400"]["content"].update(PAGE)
                continue
            if path.startswith("/v1/operator/") and method != "get":
                wanted.add("422")
            if operation.get("security"):
                wanted |= {"401", "403"}
            if any(p.get("in") == "path" for p in operation.get("parameters", [])):
                wanted.add("404")
            if (method.upper(), path) in rate_limited:
                wanted.add("429")
            for status in sorted(wanted | {s for s in responses if s[0] in "45"}):
                responses[status] = _problem_response(status, responses.get(status))
    for unused in ("HTTPValidationError", "ValidationError"):
        if unused not in str(schema.get("paths", {})):
            components.pop(unused, None)
    return schema
