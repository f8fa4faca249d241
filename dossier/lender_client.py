"""``dossier lender pull --api``: a lender's incremental pull over the lender API, local or remote.

It reads ``GET /v1/feed.parquet`` page after page from the cursor kept in a state file in the
output folder (``.<lender>-feed-cursor.json``), writes each non-empty page as
``<lender>-feed-<first seq>-<last seq>.parquet`` (under a temporary name, then renamed) and only
then records the page's next cursor. A crash between the two reads the same page again next time
(the same cursor returns the same page) and writes the same file: nothing is lost or doubled.
It needs only the base URL and the lender's API key; nothing of the broker's warehouse. Past the
key's rate limit it waits as the 429's ``Retry-After`` says and goes on.
"""

from __future__ import annotations

import io
import json
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import requests

from warehouse.errors import DossierError


class LenderApiError(DossierError):
    """The lender API could not be reached, or refused the request (its problem detail says why)."""


PAGE = 1000
RATE_LIMIT_WAITS = 5
"""How many 429 answers in a row a pull waits out, each for its ``Retry-After`` (at most a minute)."""


def _retry_after(answer: requests.Response) -> float:
    try:
        return min(max(float(answer.headers.get("Retry-After", "1")), 0.0), 60.0)
    except ValueError:
        return 1.0


def _get(
    session: requests.Session, url: str, *, sleep: Callable[[float], None] = time.sleep, **params: Any
) -> requests.Response:
    for waited in range(RATE_LIMIT_WAITS + 1):
        try:
            answer = session.get(url, params=params, timeout=60)
        except requests.RequestException as error:
            raise LenderApiError(
                f"cannot reach the lender API at {url} ({type(error).__name__}); check --api-url or "
                "DOSSIER_LENDER_API_URL and that the service is up"
            ) from None
        if answer.status_code != 429 or waited == RATE_LIMIT_WAITS:
            break
        sleep(_retry_after(answer))
    if answer.status_code != 200:
        try:
            detail = answer.json().get("detail", answer.text)
        except ValueError:
            detail = answer.text.strip()[:200]
        hint = "; check --api-key or DOSSIER_LENDER_API_KEY" if answer.status_code in (401, 403) else ""
        raise LenderApiError(f"the lender API at {url} answered {answer.status_code}: {detail}{hint}")
    return answer


def state_path(out_dir: Path, lender_id: str) -> Path:
    return out_dir / f".{lender_id}-feed-cursor.json"


def read_cursor(out_dir: Path, lender_id: str, api_url: str) -> str:
    """The cursor this folder reached on ``api_url`` ("" before the first page)."""
    path = state_path(out_dir, lender_id)
    if not path.exists():
        return ""
    try:
        state = json.loads(path.read_text())
        cursor = str(state["cursor"])
    except (ValueError, KeyError, TypeError):
        raise LenderApiError(
            f'{path}: not a feed cursor file (expected {{"cursor": ...}}); delete it to start over'
        ) from None
    if state.get("api_url") != api_url:
        raise LenderApiError(
            f"{path}: its cursor is for {state.get('api_url')!r}, not {api_url!r}; use another --out folder"
        )
    return cursor


def _replace(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def pull_over_api(
    api_url: str, api_key: str, out_dir: Path, *, sleep: Callable[[float], None] = time.sleep
) -> dict[str, Any]:
    """Read the lender's feed from its cursor to the end into ``out_dir``; returns a summary.

    A 429 (the key's rate limit) is waited out for its ``Retry-After`` and the request sent again,
    up to :data:`RATE_LIMIT_WAITS` times in a row (``sleep`` waits)."""
    if not api_url:
        raise LenderApiError("no lender API URL: pass --api-url or set DOSSIER_LENDER_API_URL")
    if not api_key:
        raise LenderApiError("no API key: pass --api-key or set DOSSIER_LENDER_API_KEY")
    api_url = api_url.rstrip("/")
    session = requests.Session()
    session.headers["Authorization"] = f"Bearer {api_key}"
    lender_id = _get(session, f"{api_url}/v1/lender", sleep=sleep).json()["lender_id"]
    out_dir.mkdir(parents=True, exist_ok=True)
    cursor = cursor_from = read_cursor(out_dir, lender_id, api_url)
    files, delivered, withdrawn = [], 0, 0
    while True:
        answer = _get(session, f"{api_url}/v1/feed.parquet", sleep=sleep, cursor=cursor, limit=PAGE)
        table = pq.read_table(io.BytesIO(answer.content))
        next_cursor = answer.headers["Feed-Next-Cursor"]
        if table.num_rows:
            seqs = table.column("feed_seq").to_pylist()
            path = out_dir / f"{lender_id}-feed-{seqs[0]:08d}-{seqs[-1]:08d}.parquet"
            _replace(path, answer.content)
            files.append(str(path))
            kinds = table.column("feed_event").to_pylist()
            delivered += kinds.count("delivered")
            withdrawn += kinds.count("withdrawn")
        state = json.dumps({"api_url": api_url, "cursor": next_cursor}) + "\n"
        _replace(state_path(out_dir, lender_id), state.encode())
        cursor = next_cursor
        if answer.headers.get("Feed-Has-More") != "true":
            break
    return {
        "lender_id": lender_id,
        "api_url": api_url,
        "cursor_from": cursor_from,
        "cursor_to": cursor,
        "delivered": delivered,
        "withdrawals": withdrawn,
        "files": files,
    }
