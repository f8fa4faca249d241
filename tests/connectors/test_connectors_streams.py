"""Declarative streams over a real socket: each paginator, loop detection, date windows."""

from __future__ import annotations

import datetime as dt
import itertools

import pytest
from connector_fixtures import FakeClock, Reply, ScriptedServer

from connectors.core.errors import FatalAPIError
from connectors.core.http import ProviderClient, make_session
from connectors.core.streams import (
    NextLinkPaginator,
    PageNumberPaginator,
    SinglePage,
    StartLimitPaginator,
    Stream,
    date_windows,
    json_next_link,
)


def client(server: ScriptedServer, clock: FakeClock) -> ProviderClient:
    return ProviderClient(
        server.url + "/acc",
        sme_id="SME-1",
        source="accounting",
        session=make_session(2, clock),
        auth=None,
        timeout=2.0,
    )


def test_page_numbers_run_until_total_pages(scripted: ScriptedServer, clock: FakeClock) -> None:
    scripted.script(
        "GET",
        "/acc/v1/t/ten_1/reports",
        Reply(200, {"total_pages": 2, "reports": [1]}),
        Reply(200, {"total_pages": 2, "reports": [2]}),
    )
    stream = Stream("reports", "/v1/t/{tenant}/reports", PageNumberPaginator(5))

    pages = list(
        stream.pages(client(scripted, clock), path_values={"tenant": "ten_1"}, params={"from": "2024-01"})
    )

    assert [(p.label, p.request, p.media_type) for p in pages] == [
        ("page=1", "GET /acc/v1/t/ten_1/reports?from=2024-01&page=1&page_size=5", "application/json"),
        ("page=2", "GET /acc/v1/t/ten_1/reports?from=2024-01&page=2&page_size=5", "application/json"),
    ]
    assert [p.body for p in pages] == [
        b'{"total_pages": 2, "reports": [1]}',
        b'{"total_pages": 2, "reports": [2]}',
    ]


def test_next_links_are_followed_on_the_providers_origin(scripted: ScriptedServer, clock: FakeClock) -> None:
    scripted.script("GET", "/acc/feed", Reply(200, {"next": scripted.url + "/acc/feed2?cursor=b"}))
    scripted.script("GET", "/acc/feed2", Reply(200, {"next": None}))
    stream = Stream("feed", "/feed", NextLinkPaginator(json_next_link()))

    pages = list(stream.pages(client(scripted, clock), params={"q": "1"}))

    assert [(p.label, p.request) for p in pages] == [
        ("page=1", "GET /acc/feed?q=1"),
        ("page=2", "GET /acc/feed2?cursor=b"),
    ]


def test_start_and_limit_advance_while_a_next_page_is_named(
    scripted: ScriptedServer, clock: FakeClock
) -> None:
    scripted.script(
        "GET",
        "/acc/data/",
        Reply(200, {"count": 3, "next": "x", "results": [1, 2]}),
        Reply(200, {"count": 3, "next": None, "results": [3]}),
    )
    pages = list(Stream("data", "/data/", StartLimitPaginator(2)).pages(client(scripted, clock)))

    assert [p.label for p in pages] == ["start=0", "start=2"]
    assert [s.query for s in scripted.requests_to("/acc/data/")] == [
        {"start": ["0"], "limit": ["2"]},
        {"start": ["2"], "limit": ["2"]},
    ]


def test_a_provider_that_pages_in_a_loop_is_stopped(scripted: ScriptedServer, clock: FakeClock) -> None:
    scripted.script("GET", "/acc/feed", Reply(200, {"next": "/acc/feed"}))
    stream = Stream("feed", "/feed", NextLinkPaginator(json_next_link()))

    with pytest.raises(FatalAPIError, match="pages in a loop") as caught:
        list(stream.pages(client(scripted, clock)))
    assert caught.value.record == "page=2"


def test_a_single_page_is_labelled_by_its_caller(scripted: ScriptedServer, clock: FakeClock) -> None:
    scripted.script("GET", "/acc/returns/18A1", Reply(200, {"periodKey": "18A1"}))
    pages = list(
        Stream("returns", "/returns/{key}", SinglePage()).pages(
            client(scripted, clock), path_values={"key": "18A1"}, label_prefix="returns/18A1"
        )
    )
    assert [(p.label, p.stream) for p in pages] == [("returns/18A1", "returns")]


def test_date_windows_cover_the_range_without_gaps_or_overlong_windows() -> None:
    windows = date_windows(dt.date(2023, 11, 1), dt.date(2026, 11, 25), 366)

    assert windows == [
        (dt.date(2023, 11, 1), dt.date(2024, 10, 31)),
        (dt.date(2024, 11, 1), dt.date(2025, 11, 1)),
        (dt.date(2025, 11, 2), dt.date(2026, 11, 2)),
        (dt.date(2026, 11, 3), dt.date(2026, 11, 25)),
    ]
    assert all((end - start).days + 1 <= 366 for start, end in windows)
    assert all(b[0] - a[1] == dt.timedelta(days=1) for a, b in itertools.pairwise(windows))
    assert date_windows(dt.date(2024, 1, 2), dt.date(2024, 1, 1), 366) == []
