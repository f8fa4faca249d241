"""Declarative streams: an endpoint, how it pages, and the raw pages it yields.

A :class:`Stream` names a provider path (a template filled from the SME's account) and a
:class:`Paginator` that, given the request just made and its response, says what to ask next.
Streams yield :class:`RawPage` objects - the untouched response body plus where it came from - and
never interpret records: landing stores the pages first, and parsers read them afterwards.

Paginators for the shapes our providers use:

* :class:`PageNumberPaginator` - ``page=N&page_size=K`` until ``total_pages``;
* :class:`NextLinkPaginator` - follow whatever link the body names (JSON ``next``, Atom
  ``<link rel="next">``);
* :class:`StartLimitPaginator` - ``start=N&limit=K`` until the body's ``next`` is empty;
* :func:`date_windows` splits a date range into windows a provider accepts (HMRC: <= 366 days),
  each of which is then paged on its own.

>>> [(str(a), str(b)) for a, b in date_windows(dt.date(2023, 1, 1), dt.date(2024, 12, 31), 366)]
[('2023-01-01', '2024-01-01'), ('2024-01-02', '2024-12-31')]
"""

from __future__ import annotations

import datetime as dt
import functools
import hashlib
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import requests

from connectors.core.errors import FatalAPIError
from connectors.core.http import ProviderClient, describe_request

MAX_PAGES = 10_000
"""A stream that pages further than this is looping; it is stopped as a fatal provider fault."""


@dataclass(frozen=True)
class RawPage:
    """One response body exactly as received, with the request and a short label for lineage.

    ``label`` is what a parser prefixes to ``source_record`` (e.g. ``page=2``), so an error names
    the page a record sits in.
    """

    stream: str
    label: str
    request: str
    body: bytes
    media_type: str

    @functools.cached_property
    def sha256(self) -> str:
        return hashlib.sha256(self.body).hexdigest()


@dataclass(frozen=True)
class PageRequest:
    """What to ask for: a provider path or a link it returned, query parameters, and a label."""

    target: str
    params: Mapping[str, str] = field(default_factory=dict)
    label: str = ""


class Paginator(ABC):
    """Turns the first request of a stream into the sequence of page requests."""

    @abstractmethod
    def first(self, target: str, params: Mapping[str, str]) -> PageRequest: ...

    @abstractmethod
    def next(self, current: PageRequest, response: requests.Response) -> PageRequest | None: ...


class SinglePage(Paginator):
    """An endpoint that answers in one response."""

    def __init__(self, label: str = "") -> None:
        self.label = label

    def first(self, target: str, params: Mapping[str, str]) -> PageRequest:
        return PageRequest(target, dict(params), self.label)

    def next(self, current: PageRequest, response: requests.Response) -> PageRequest | None:
        return None


def _json_body(response: requests.Response) -> Any:
    """The body as JSON, or None when it is not (the parser, not the pager, reports bad bodies)."""
    try:
        return response.json()
    except ValueError:
        return None


class PageNumberPaginator(Paginator):
    """``page=1,2,...`` with a fixed page size, until the body's ``total_pages`` is reached."""

    def __init__(
        self,
        page_size: int,
        *,
        page_param: str = "page",
        size_param: str = "page_size",
        total_pages_key: str = "total_pages",
    ) -> None:
        self.page_size = page_size
        self.page_param = page_param
        self.size_param = size_param
        self.total_pages_key = total_pages_key

    def _request(self, target: str, params: Mapping[str, str], page: int) -> PageRequest:
        merged = {**params, self.page_param: str(page), self.size_param: str(self.page_size)}
        return PageRequest(target, merged, f"{self.page_param}={page}")

    def first(self, target: str, params: Mapping[str, str]) -> PageRequest:
        return self._request(target, params, 1)

    def next(self, current: PageRequest, response: requests.Response) -> PageRequest | None:
        body = _json_body(response)
        total = body.get(self.total_pages_key) if isinstance(body, Mapping) else None
        page = int(current.params[self.page_param])
        if not isinstance(total, int) or page >= total:
            return None
        return self._request(current.target, current.params, page + 1)


class NextLinkPaginator(Paginator):
    """Follows the link ``next_link(response)`` extracts, labelling pages ``page=1,2,...``."""

    def __init__(self, next_link: Callable[[requests.Response], str | None]) -> None:
        self.next_link = next_link

    def first(self, target: str, params: Mapping[str, str]) -> PageRequest:
        return PageRequest(target, dict(params), "page=1")

    def next(self, current: PageRequest, response: requests.Response) -> PageRequest | None:
        link = self.next_link(response)
        if not link:
            return None
        page = int(current.label.removeprefix("page=") or 1) + 1
        return PageRequest(link, {}, f"page={page}")


def json_next_link(key: str = "next") -> Callable[[requests.Response], str | None]:
    """Extractor for a JSON body's ``next`` link (absent, null or empty ends the stream)."""

    def extract(response: requests.Response) -> str | None:
        body = _json_body(response)
        link = body.get(key) if isinstance(body, Mapping) else None
        return link if isinstance(link, str) and link else None

    return extract


class StartLimitPaginator(Paginator):
    """``start=0,K,2K,...&limit=K`` while the body names a ``next`` page."""

    def __init__(
        self, limit: int, *, start_param: str = "start", limit_param: str = "limit", next_key: str = "next"
    ) -> None:
        self.limit = limit
        self.start_param = start_param
        self.limit_param = limit_param
        self.next_key = next_key

    def _request(self, target: str, params: Mapping[str, str], start: int) -> PageRequest:
        merged = {**params, self.start_param: str(start), self.limit_param: str(self.limit)}
        return PageRequest(target, merged, f"{self.start_param}={start}")

    def first(self, target: str, params: Mapping[str, str]) -> PageRequest:
        return self._request(target, params, 0)

    def next(self, current: PageRequest, response: requests.Response) -> PageRequest | None:
        body = _json_body(response)
        if not isinstance(body, Mapping) or not body.get(self.next_key):
            return None
        return self._request(
            current.target, current.params, int(current.params[self.start_param]) + self.limit
        )


def date_windows(start: dt.date, end: dt.date, max_days: int) -> list[tuple[dt.date, dt.date]]:
    """Consecutive inclusive windows covering ``start..end``, none spanning more than ``max_days`` days."""
    if end < start:
        return []
    windows: list[tuple[dt.date, dt.date]] = []
    window_start = start
    while window_start <= end:
        window_end = min(end, window_start + dt.timedelta(days=max_days - 1))
        windows.append((window_start, window_end))
        window_start = window_end + dt.timedelta(days=1)
    return windows


def media_type_of(response: requests.Response, default: str) -> str:
    """The response's media type without parameters (``application/json``), else ``default``."""
    content_type = response.headers.get("Content-Type", "")
    return content_type.split(";", 1)[0].strip().lower() or default


@dataclass(frozen=True)
class Stream:
    """One provider endpoint: ``path`` (a ``str.format`` template), its paginator and media type."""

    name: str
    path: str
    paginator: Paginator
    media_type: str = "application/json"

    def pages(
        self,
        client: ProviderClient,
        *,
        path_values: Mapping[str, str] | None = None,
        params: Mapping[str, str] | None = None,
        label_prefix: str = "",
    ) -> Iterator[RawPage]:
        """Request page after page and yield each body untouched.

        ``label_prefix`` distinguishes pages of the same stream asked with different parameters
        (a date window, a period key). A paginator that asks for a page it already fetched, or
        pages past :data:`MAX_PAGES`, is a provider fault and raises :class:`FatalAPIError`.
        """
        target = self.path.format(**(path_values or {}))
        request: PageRequest | None = self.paginator.first(target, params or {})
        seen: set[tuple[str, tuple[tuple[str, str], ...]]] = set()
        while request is not None:
            identity = (client.url_for(request.target), tuple(sorted(request.params.items())))
            if identity in seen or len(seen) >= MAX_PAGES:
                raise FatalAPIError(
                    f"stream {self.name} pages in a loop or past {MAX_PAGES} pages at {request.target}",
                    sme_id=client.sme_id,
                    source=client.source,
                    record=request.label,
                )
            seen.add(identity)
            response = client.get(request.target, request.params)
            label = "/".join(part for part in (label_prefix, request.label) if part)
            yield RawPage(
                stream=self.name,
                label=label,
                request=describe_request("GET", response.url),
                body=response.content,
                media_type=media_type_of(response, self.media_type),
            )
            request = self.paginator.next(request, response)
