"""Delta Sharing for lenders: each lender's delivered dossiers as a share, read with the stock client.

The routes under ``/delta-sharing`` follow the Delta Sharing REST protocol (its ``PROTOCOL.md``):
list shares, get a share, list schemas and tables, the table version, metadata, a snapshot query
and the change data feed, answered in the protocol's ``parquet`` response format. The bearer token
is the lender's API key (:func:`dossier.web.lender.lender_key`: 401 without a known key, 403 for a
revoked or expired one); a lender sees one share, named by its lender id, holding schema
``credit`` with table ``dossiers`` (:mod:`warehouse.sharing`), and any other name is 404.

The table is the lender's feed log read as a Delta table: version *v* is feed position *v*, so
its entitlement is exactly the feed's. Like a feed read, every table read first runs
:func:`warehouse.feed.sync`, so what a consent no longer allows is withdrawn before anything is
served.

Files are served by this service at signed, expiring URLs (HMAC-SHA256 with the secret key,
:data:`URL_LIFETIME`). A download checks entitlement again (:func:`warehouse.sharing.is_current`):
the file must be what the log holds now and the consent law must still allow each of its rows, else
410 Gone, so an old URL never hands out what the law took back, even before the next feed read
records the withdrawal. Built files are kept in a small
per-process cache by id (an id always names the same content), so repeated queries are cheap.

``GET /v1/sharing/profile`` returns the profile file the client reads (``endpoint`` and
``bearerToken``: the key of the request).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import json
import threading
import time
from collections import OrderedDict
from typing import Annotated, Any
from urllib.parse import quote

from fastapi import APIRouter, Depends, FastAPI, Header, Query, Request, Response
from fastapi.responses import JSONResponse
from fastapi.security import HTTPAuthorizationCredentials
from pydantic import BaseModel, ConfigDict, Field

from dossier.web import problems
from dossier.web.deps import SessionDep, StoreDep, bearer
from dossier.web.lender import LenderKeyDep
from warehouse import sharing
from warehouse.errors import InputError
from warehouse.feed import sync
from warehouse.models import Lender

PREFIX = "/delta-sharing"
NDJSON = "application/x-ndjson; charset=utf-8"
CAPABILITIES = "delta-sharing-capabilities"
VERSION_HEADER = "delta-table-version"
URL_LIFETIME = dt.timedelta(minutes=15)
"""How long a file URL a query hands out stays valid."""
MAX_RESULTS = 1000
CACHE_BYTES = 64 * 1024 * 1024

router = APIRouter(tags=["delta sharing"])


class SharingProblem(Exception):
    """An error answered as problem details with the protocol's ``errorCode`` and ``message``."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status, self.code, self.message = status, code, message


def install(app: FastAPI) -> None:
    """Register the sharing routes, their error handlers and the file cache on ``app``."""
    app.state.sharing_files = FileCache(CACHE_BYTES)

    @app.exception_handler(SharingProblem)
    async def _problem(request: Request, error: SharingProblem) -> JSONResponse:
        return problems.problem(
            error.status,
            error.code,
            error.message,
            instance=request.url.path,
            errorCode=error.code,
            message=error.message,
        )

    @app.exception_handler(sharing.VersionError)
    async def _version(request: Request, error: sharing.VersionError) -> JSONResponse:
        return problems.problem(
            400,
            "INVALID_PARAMETER_VALUE",
            str(error),
            instance=request.url.path,
            errorCode="INVALID_PARAMETER_VALUE",
            message=str(error),
        )

    app.include_router(router)


class FileCache:
    """Built Parquet files by (lender, file id), least recently used dropped past ``limit`` bytes."""

    def __init__(self, limit: int) -> None:
        self.limit, self.size = limit, 0
        self._files: OrderedDict[tuple[str, str], bytes] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: tuple[str, str]) -> bytes | None:
        with self._lock:
            found = self._files.get(key)
            if found is not None:
                self._files.move_to_end(key)
            return found

    def put(self, key: tuple[str, str], content: bytes) -> None:
        with self._lock:
            if key in self._files or len(content) > self.limit:
                return
            self._files[key] = content
            self.size += len(content)
            while self.size > self.limit:
                _, dropped = self._files.popitem(last=False)
                self.size -= len(dropped)


# --- names ----------------------------------------------------------------------------------------


def _own_share(share: str, lender_id: str) -> str:
    if share.lower() != lender_id.lower():
        raise SharingProblem(404, "RESOURCE_DOES_NOT_EXIST", f"no share named {share!r}")
    return lender_id


def _own_schema(share: str, schema: str, lender_id: str) -> str:
    _own_share(share, lender_id)
    if schema.lower() != sharing.SCHEMA_NAME:
        raise SharingProblem(404, "RESOURCE_DOES_NOT_EXIST", f"no schema named {schema!r} in share {share!r}")
    return lender_id


def _own_table(share: str, schema: str, table: str, lender_id: str) -> str:
    _own_schema(share, schema, lender_id)
    if table.lower() != sharing.TABLE_NAME:
        raise SharingProblem(
            404, "RESOURCE_DOES_NOT_EXIST", f"no table named {table!r} in schema {share}.{schema}"
        )
    return lender_id


def _share_id(lender_id: str) -> str:
    return sharing.table_id(lender_id + ":share")


class ShareItem(BaseModel):
    name: str
    id: str


class SchemaItem(BaseModel):
    name: str
    share: str


class TableItem(BaseModel):
    name: str
    schema_: str = Field(alias="schema", serialization_alias="schema")
    share: str
    shareId: str
    id: str


class ShareList(BaseModel):
    items: list[ShareItem]
    nextPageToken: str | None = None


class ShareView(BaseModel):
    share: ShareItem


class SchemaList(BaseModel):
    items: list[SchemaItem]
    nextPageToken: str | None = None


class TableList(BaseModel):
    items: list[TableItem]
    nextPageToken: str | None = None


MaxResults = Annotated[
    int | None, Query(alias="maxResults", ge=0, le=MAX_RESULTS, description="Items per page (0 to 1000).")
]
PageToken = Annotated[
    str | None, Query(alias="pageToken", max_length=20, description="The nextPageToken of the previous page.")
]


def _page(items: list[Any], max_results: int | None, token: str | None) -> tuple[list[Any], str | None]:
    """One page of ``items``; the token is the offset of the next page."""
    if token in (None, ""):
        start = 0
    elif token.isdigit() and int(token) <= len(items):
        start = int(token)
    else:
        raise InputError(f"pageToken: {token!r} is not a page token this list returned")
    size = MAX_RESULTS if max_results is None else max_results
    end = start + size
    return items[start:end], (str(end) if end < len(items) else None)


def _table_item(lender_id: str) -> TableItem:
    return TableItem(
        name=sharing.TABLE_NAME,
        schema=sharing.SCHEMA_NAME,
        share=lender_id,
        shareId=_share_id(lender_id),
        id=sharing.table_id(lender_id),
    )


@router.get(f"{PREFIX}/shares", response_model=ShareList, response_model_exclude_none=True)
def list_shares(key: LenderKeyDep, max_results: MaxResults = None, page_token: PageToken = None) -> ShareList:
    """The shares this key reads: the lender's own, named by its lender id."""
    items, token = _page(
        [ShareItem(name=key.lender_id, id=_share_id(key.lender_id))], max_results, page_token
    )
    return ShareList(items=items, nextPageToken=token)


@router.get(f"{PREFIX}/shares/{{share}}", response_model=ShareView)
def get_share(share: str, key: LenderKeyDep) -> ShareView:
    lender_id = _own_share(share, key.lender_id)
    return ShareView(share=ShareItem(name=lender_id, id=_share_id(lender_id)))


@router.get(f"{PREFIX}/shares/{{share}}/schemas", response_model=SchemaList, response_model_exclude_none=True)
def list_schemas(
    share: str, key: LenderKeyDep, max_results: MaxResults = None, page_token: PageToken = None
) -> SchemaList:
    lender_id = _own_share(share, key.lender_id)
    items, token = _page([SchemaItem(name=sharing.SCHEMA_NAME, share=lender_id)], max_results, page_token)
    return SchemaList(items=items, nextPageToken=token)


@router.get(
    f"{PREFIX}/shares/{{share}}/schemas/{{schema}}/tables",
    response_model=TableList,
    response_model_exclude_none=True,
    response_model_by_alias=True,
)
def list_tables(
    share: str, schema: str, key: LenderKeyDep, max_results: MaxResults = None, page_token: PageToken = None
) -> TableList:
    lender_id = _own_schema(share, schema, key.lender_id)
    items, token = _page([_table_item(lender_id)], max_results, page_token)
    return TableList(items=items, nextPageToken=token)


@router.get(
    f"{PREFIX}/shares/{{share}}/all-tables",
    response_model=TableList,
    response_model_exclude_none=True,
    response_model_by_alias=True,
)
def list_all_tables(
    share: str, key: LenderKeyDep, max_results: MaxResults = None, page_token: PageToken = None
) -> TableList:
    lender_id = _own_share(share, key.lender_id)
    items, token = _page([_table_item(lender_id)], max_results, page_token)
    return TableList(items=items, nextPageToken=token)


# --- the table ------------------------------------------------------------------------------------

TABLE = f"{PREFIX}/shares/{{share}}/schemas/{{schema}}/tables/{{table}}"
NDJSON_RESPONSE: dict[int | str, dict[str, Any]] = {
    200: {
        "content": {"application/x-ndjson": {}},
        "description": "Newline-delimited JSON actions (the protocol's parquet response format); "
        "the version in the Delta-Table-Version header.",
    }
}
VERSION_RESPONSE: dict[int | str, dict[str, Any]] = {
    200: {"description": "Empty; the table version in the Delta-Table-Version header."}
}


def response_format(
    capabilities: Annotated[
        str | None,
        Header(
            alias=CAPABILITIES,
            max_length=1000,
            description="Capabilities the client reads, e.g. responseformat=delta,parquet; "
            "the answer is always in the parquet response format.",
        ),
    ] = None,
) -> str:
    """The response format: parquet, unless the client reads only formats other than parquet (400)."""
    for capability in (capabilities or "").split(";"):
        name, _, values = capability.partition("=")
        if name.strip().lower() == "responseformat":
            formats = {v.strip().lower() for v in values.split(",") if v.strip()}
            if formats and "parquet" not in formats:
                raise SharingProblem(
                    400,
                    "INVALID_PARAMETER_VALUE",
                    f"{CAPABILITIES}: responseformat={values.strip()} is not served here; "
                    "this server answers in responseformat=parquet",
                )
    return "parquet"


PARQUET_ONLY = [Depends(response_format)]


def _ndjson(lines: list[dict[str, Any]], version: int) -> Response:
    body = "".join(json.dumps(line, separators=(",", ":")) + "\n" for line in lines)
    headers = {VERSION_HEADER: str(version), CAPABILITIES: "responseformat=parquet"}
    return Response(body, media_type=NDJSON, headers=headers)


def _ms(instant: dt.datetime) -> int:
    return int(instant.timestamp() * 1000)


def _protocol() -> dict[str, Any]:
    return {"protocol": {"minReaderVersion": 1}}


def _metadata(lender_id: str, version: int | None = None) -> dict[str, Any]:
    meta: dict[str, Any] = {
        "id": sharing.table_id(lender_id),
        "name": sharing.TABLE_NAME,
        "description": "The dossier versions delivered to you and still held; withdrawals are deletes.",
        "format": {"provider": "parquet"},
        "schemaString": sharing.delta_schema_string(),
        "partitionColumns": [],
        "configuration": {"enableChangeDataFeed": "true"},
    }
    if version is not None:
        meta["version"] = version
    return {"metaData": meta}


def _synced(session: Any, store: Any, lender_id: str) -> int:
    sync(session, store, lender_id)
    return sharing.latest_version(session, lender_id)


def _base_url(request: Request) -> str:
    return request.app.state.settings.public_url or str(request.base_url).rstrip("/")


def _signature(request: Request, lender_id: str, file_id: str, expires: int) -> str:
    secret = request.app.state.settings.kept_secret("secret_key")
    message = f"delta-sharing-file:{lender_id}:{file_id}:{expires}".encode()
    return hmac.new(secret.encode(), message, hashlib.sha256).hexdigest()


def _content(request: Request, session: Any, lender_id: str, file_id: str) -> bytes | None:
    cache: FileCache = request.app.state.sharing_files
    found = cache.get((lender_id, file_id))
    if found is None:
        found = sharing.file_bytes(session, lender_id, file_id)
        if found is not None:
            cache.put((lender_id, file_id), found)
    return found


class _Changed(Exception):
    """A file just listed no longer matches the log: a withdrawal committed meanwhile."""


def _listing(build: Any) -> list[dict[str, Any]]:
    """The lines ``build()`` makes, made again when the log changed while it ran (a concurrent
    withdrawal), so a listing never names a file that cannot be downloaded."""
    for _attempt in range(3):
        try:
            return build()
        except _Changed:
            continue
    raise SharingProblem(
        503, "TEMPORARILY_UNAVAILABLE", "the table kept changing while it was read: try again"
    )


def _file_action(
    request: Request, session: Any, lender_id: str, data: sharing.DataFile, expires: int
) -> dict[str, Any]:
    content = _content(request, session, lender_id, data.id)
    if content is None:
        raise _Changed(data.id)
    signature = _signature(request, lender_id, data.id, expires)
    url = (
        f"{_base_url(request)}{PREFIX}/files/{quote(lender_id)}/{data.id}.parquet"
        f"?expires={expires}&signature={signature}"
    )
    return {
        "url": url,
        "id": data.id,
        "partitionValues": {},
        "size": len(content),
        "stats": json.dumps({"numRecords": data.num_records}),
        "expirationTimestamp": expires * 1000,
    }


def _expiry() -> int:
    return int(time.time() + URL_LIFETIME.total_seconds())


def _change_lines(
    request: Request, session: Any, lender_id: str, start: int, end: int
) -> list[dict[str, Any]]:
    expires = _expiry()
    instants = sharing.commit_instants(session, lender_id, start, end)
    lines = []
    for data in sharing.change_files(session, lender_id, start, end):
        action = _file_action(request, session, lender_id, data, expires)
        action.pop("stats")
        lines.append({"cdf": {**action, "timestamp": _ms(instants[data.version]), "version": data.version}})
    return lines


@router.head(TABLE, responses=VERSION_RESPONSE)
def table_version_head(
    share: str, schema: str, table: str, session: SessionDep, store: StoreDep, key: LenderKeyDep
) -> Response:
    """The table's current version (the protocol's deprecated HEAD form)."""
    lender_id = _own_table(share, schema, table, key.lender_id)
    return Response(headers={VERSION_HEADER: str(_synced(session, store, lender_id))})


@router.get(f"{TABLE}/version", responses=VERSION_RESPONSE, response_class=Response)
def table_version(
    share: str,
    schema: str,
    table: str,
    session: SessionDep,
    store: StoreDep,
    key: LenderKeyDep,
    starting_timestamp: Annotated[
        str | None,
        Query(alias="startingTimestamp", max_length=40, description="The earliest version at or after this."),
    ] = None,
) -> Response:
    """The table's current version, or the earliest made at or after ``startingTimestamp``."""
    lender_id = _own_table(share, schema, table, key.lender_id)
    version = _synced(session, store, lender_id)
    if starting_timestamp is not None:
        instant = sharing.parse_timestamp(starting_timestamp, "startingTimestamp")
        version = sharing.version_from(session, lender_id, instant)
    return Response(headers={VERSION_HEADER: str(version)})


def _as_of(session: Any, lender_id: str, version: int | None, timestamp: str | None, latest: int) -> int:
    if version is not None and timestamp is not None:
        raise sharing.VersionError("version and timestamp: give at most one of them")
    if version is not None:
        return sharing.check_version(session, lender_id, version)
    if timestamp is not None:
        return sharing.version_as_of(session, lender_id, sharing.parse_timestamp(timestamp, "timestamp"))
    return latest


@router.get(
    f"{TABLE}/metadata", responses=NDJSON_RESPONSE, response_class=Response, dependencies=PARQUET_ONLY
)
def table_metadata(
    share: str,
    schema: str,
    table: str,
    session: SessionDep,
    store: StoreDep,
    key: LenderKeyDep,
    version: Annotated[int | None, Query(ge=0)] = None,
    timestamp: Annotated[str | None, Query(max_length=40)] = None,
) -> Response:
    """The table's protocol and metadata (schema with every column described); answered in the
    parquet response format whatever format the capabilities header asks for."""
    lender_id = _own_table(share, schema, table, key.lender_id)
    latest = _synced(session, store, lender_id)
    at = _as_of(session, lender_id, version, timestamp, latest)
    return _ndjson([_protocol(), _metadata(lender_id, at if at != latest else None)], at)


class QueryBody(BaseModel):
    """A table query: a snapshot (latest, ``version`` or ``timestamp``) or, with
    ``startingVersion``, the changes since then. Predicate and limit hints are hints: the files
    returned may hold more rows than they select."""

    model_config = ConfigDict(extra="ignore", populate_by_name=True)

    predicate_hints: list[str] | None = Field(None, alias="predicateHints")
    json_predicate_hints: str | None = Field(None, alias="jsonPredicateHints")
    limit_hint: int | None = Field(None, alias="limitHint", ge=0)
    version: int | None = Field(None, ge=0)
    timestamp: str | None = Field(None, max_length=40)
    starting_version: int | None = Field(None, alias="startingVersion", ge=0)
    ending_version: int | None = Field(None, alias="endingVersion", ge=0)


@router.post(f"{TABLE}/query", responses=NDJSON_RESPONSE, response_class=Response, dependencies=PARQUET_ONLY)
def query_table(
    share: str,
    schema: str,
    table: str,
    request: Request,
    session: SessionDep,
    store: StoreDep,
    key: LenderKeyDep,
    body: QueryBody | None = None,
) -> Response:
    """The files of the table at the version asked (latest by default), at signed URLs."""
    body = body or QueryBody()
    lender_id = _own_table(share, schema, table, key.lender_id)
    latest = _synced(session, store, lender_id)
    if body.starting_version is not None:
        if body.version is not None or body.timestamp is not None:
            raise sharing.VersionError("startingVersion: give it without version or timestamp")
        start, end = _range(
            session, lender_id, body.starting_version, None, body.ending_version, None, latest
        )
        changes = _listing(lambda: _change_lines(request, session, lender_id, start, end))
        return _ndjson([_protocol(), _metadata(lender_id), *changes], start)
    at = _as_of(session, lender_id, body.version, body.timestamp, latest)
    travel = body.version is not None or body.timestamp is not None
    instants = sharing.commit_instants(session, lender_id, at, at) if travel else {}

    def files() -> list[dict[str, Any]]:
        expires, records, found = _expiry(), 0, []
        for data in sharing.snapshot_files(session, lender_id, at):
            if body.limit_hint is not None and records >= body.limit_hint:
                break
            action = _file_action(request, session, lender_id, data, expires)
            if travel:
                action.update(version=at, timestamp=_ms(instants[at]))
            found.append({"file": action})
            records += data.num_records
        return found

    return _ndjson([_protocol(), _metadata(lender_id, at if travel else None), *_listing(files)], at)


def _range(
    session: Any,
    lender_id: str,
    starting_version: int | None,
    starting_timestamp: str | None,
    ending_version: int | None,
    ending_timestamp: str | None,
    latest: int,
) -> tuple[int, int]:
    if (starting_version is None) == (starting_timestamp is None):
        raise sharing.VersionError("startingVersion or startingTimestamp: give exactly one of them")
    if ending_version is not None and ending_timestamp is not None:
        raise sharing.VersionError("endingVersion and endingTimestamp: give at most one of them")
    if starting_version is not None:
        start = sharing.check_version(session, lender_id, starting_version, "startingVersion")
    else:
        start = sharing.version_from(
            session, lender_id, sharing.parse_timestamp(starting_timestamp or "", "startingTimestamp")
        )
    end = latest
    if ending_version is not None:
        end = min(ending_version, latest)
    elif ending_timestamp is not None:
        instant = sharing.parse_timestamp(ending_timestamp, "endingTimestamp")
        end = sharing.version_as_of(session, lender_id, instant, "endingTimestamp")
    if end < start:
        raise sharing.VersionError(f"the range ends (version {end}) before it starts (version {start})")
    return start, end


@router.get(f"{TABLE}/changes", responses=NDJSON_RESPONSE, response_class=Response, dependencies=PARQUET_ONLY)
def table_changes(
    share: str,
    schema: str,
    table: str,
    request: Request,
    session: SessionDep,
    store: StoreDep,
    key: LenderKeyDep,
    starting_version: Annotated[int | None, Query(alias="startingVersion", ge=0)] = None,
    starting_timestamp: Annotated[str | None, Query(alias="startingTimestamp", max_length=40)] = None,
    ending_version: Annotated[int | None, Query(alias="endingVersion", ge=0)] = None,
    ending_timestamp: Annotated[str | None, Query(alias="endingTimestamp", max_length=40)] = None,
    include_historical_metadata: Annotated[bool | None, Query(alias="includeHistoricalMetadata")] = None,
) -> Response:
    """The change data feed from the starting to the ending version (inclusive; default: the
    latest): each delivery an ``insert``, each withdrawal a ``delete`` of the row it withdraws,
    with ``_commit_version`` and ``_commit_timestamp`` from the file actions."""
    lender_id = _own_table(share, schema, table, key.lender_id)
    latest = _synced(session, store, lender_id)
    start, end = _range(
        session, lender_id, starting_version, starting_timestamp, ending_version, ending_timestamp, latest
    )
    changes = _listing(lambda: _change_lines(request, session, lender_id, start, end))
    return _ndjson([_protocol(), _metadata(lender_id), *changes], start)


# --- files ----------------------------------------------------------------------------------------

FILE_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {"content": {"application/vnd.apache.parquet": {}}, "description": "The Parquet file."},
    206: {"description": "The byte range asked for."},
    403: {"description": "The URL's signature is wrong or it has expired."},
    410: {"description": "A row of this file was withdrawn or erased since: query the table again."},
}


def _byte_range(header: str | None, size: int) -> tuple[int, int] | None:
    """The (start, end exclusive) a single ``Range: bytes=`` header asks for, None for all."""
    if not header or not header.startswith("bytes=") or "," in header:
        return None
    first, _, last = header.removeprefix("bytes=").strip().partition("-")
    if (
        not (first.isdigit() or last.isdigit())
        or (first and not first.isdigit())
        or (last and not last.isdigit())
    ):
        return None
    if not first:
        return max(0, size - int(last)), size
    start = int(first)
    end = min(size, int(last) + 1) if last else size
    if start >= size or end <= start:
        raise SharingProblem(
            416, "INVALID_PARAMETER_VALUE", f"range {header!r} is outside the file ({size} bytes)"
        )
    return start, end


FILE = f"{PREFIX}/files/{{lender_id}}/{{file_id}}.parquet"


@router.head(FILE, responses=FILE_RESPONSES, response_class=Response, operation_id="file_head")
@router.get(FILE, responses=FILE_RESPONSES, response_class=Response, operation_id="download_file")
def download_file(
    lender_id: str,
    file_id: str,
    request: Request,
    session: SessionDep,
    expires: Annotated[int, Query(ge=0)],
    signature: Annotated[str, Query(max_length=64)],
    range_: Annotated[str | None, Header(alias="range")] = None,
) -> Response:
    """A file a query listed, at its signed URL; checked against the log at download time."""
    expected = _signature(request, lender_id, file_id, expires)
    if not hmac.compare_digest(signature.encode(), expected.encode()):
        raise SharingProblem(403, "PERMISSION_DENIED", "the signature of this file URL is not valid")
    if expires < time.time():
        raise SharingProblem(403, "PERMISSION_DENIED", "this file URL has expired: query the table again")
    if session.get(Lender, lender_id) is None:
        raise SharingProblem(404, "RESOURCE_DOES_NOT_EXIST", "no such file")
    if not sharing.is_current(session, lender_id, file_id, at=dt.datetime.now(dt.UTC)):
        raise SharingProblem(
            410,
            "RESOURCE_DOES_NOT_EXIST",
            "this file no longer exists (a row of it was withdrawn): query again",
        )
    content = _content(request, session, lender_id, file_id) or b""
    headers = {"accept-ranges": "bytes", "cache-control": "private, no-store"}
    span = _byte_range(range_, len(content))
    media = "application/vnd.apache.parquet"
    if span is None:
        body = b"" if request.method == "HEAD" else content
        return Response(body, media_type=media, headers={**headers, "content-length": str(len(content))})
    start, end = span
    headers["content-range"] = f"bytes {start}-{end - 1}/{len(content)}"
    body = b"" if request.method == "HEAD" else content[start:end]
    return Response(
        body, status_code=206, media_type=media, headers={**headers, "content-length": str(end - start)}
    )


# --- the profile ----------------------------------------------------------------------------------


class Profile(BaseModel):
    """A Delta Sharing profile file: save it and pass its path to the client."""

    shareCredentialsVersion: int = 1
    endpoint: str
    bearerToken: str
    expirationTime: str | None = None


@router.get("/v1/sharing/profile", response_model=Profile, response_model_exclude_none=True, tags=["lender"])
def sharing_profile(
    request: Request,
    key: LenderKeyDep,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)],
) -> JSONResponse:
    """The Delta Sharing profile for this key: the endpoint and this key as the bearer token (it
    expires with the key, when the key was rotated). Read the table as
    ``<profile file>#<lender id>.credit.dossiers``."""
    token = credentials.credentials if credentials is not None else ""
    profile = sharing.profile(f"{_base_url(request)}{PREFIX}", token, key.expires_at)
    return JSONResponse(
        profile,
        headers={"content-disposition": f'attachment; filename="{key.lender_id}.share"'},
    )
