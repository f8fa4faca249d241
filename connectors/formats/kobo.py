"""KoboToolbox JSON exports -> ``survey_submissions`` (any form) and ``survey_visits`` (mapped forms).

Reads the API's paged list (``{"results": [...]}``), a formpack-style file (``{"id_string",
"version", "content": {"survey", "choices"}, "submissions": [...]}``) or a bare list of
submissions, with the survey connector's one parser (:mod:`connectors.survey.kobo`): every
submission becomes a generic row (:mod:`connectors.survey.forms`), and the submissions of a form
with a mapping also ``survey_visits`` rows. Submissions repeated with the same ``_uuid`` count once
(a warning says how many were dropped). A file is accepted only whole: the first bad field (an
unreadable platform time, a bad answer to a mapped question) is its :class:`FormatError`.

>>> parsed = parse(b'[{"_uuid": "u1", "start": "2026-01-02T10:00:00+01:00", "shop/open": "yes"}]')
>>> parsed.totals, parsed.tables["survey_submissions"][["submission_id", "answers"]].values.tolist()
({'submissions': 1, 'unique_submissions': 1}, [['u1', '{"shop/open": "yes"}']])
"""

from __future__ import annotations

from typing import Any

import pandas as pd

from connectors.formats.base import (
    DEFAULT_LIMITS,
    Budget,
    FormatError,
    Limits,
    Parsed,
    Source,
    canonical_frame,
    load_json,
    read_all,
)
from connectors.survey import kobo as kobo_connector
from connectors.survey.kobo import geopoint, geopoint_paths
from warehouse.canonical import SURVEY_SUBMISSIONS, SURVEY_VISITS

NAME = "kobo"
LIST_KEYS = kobo_connector.LIST_KEYS

__all__ = ["geopoint", "geopoint_paths", "parse", "submission_row", "submissions_to_tables"]


def submission_row(
    submission: dict[str, Any],
    *,
    sme_id: str,
    record: str,
    raw_sha256: str,
    form_id: str | None,
    version: str | None,
    geo: list[str],
) -> dict[str, Any]:
    """The generic ``survey_submissions`` row of one submission; :class:`FormatError` on a bad time."""
    row, problems = kobo_connector.submission_row(
        submission,
        sme_id=sme_id,
        record=record,
        raw_sha256=raw_sha256,
        form_id=form_id,
        version=version,
        geo=geo,
    )
    if problems:
        field, reason = problems[0]
        raise FormatError(reason, record=record, field=field)
    return row


def submissions_to_tables(
    items: list[tuple[str, dict[str, Any]]], rows: list[dict[str, Any]], *, sme_id: str, raw_sha256: str
) -> tuple[pd.DataFrame, pd.DataFrame, list[str]]:
    """De-duplicated submissions and the survey visits of the mapped ones (records as given)."""
    warnings: list[str] = []
    seen: set[str] = set()
    read = kobo_connector.Submissions()
    for (record, submission), row in zip(items, rows, strict=True):
        if row["submission_id"] in seen:
            continue
        seen.add(row["submission_id"])
        read.add(submission, sme_id=sme_id, record=record, raw_sha256=raw_sha256, row=row)
    if len(rows) > len(read.rows):
        warnings.append(
            f"{len(rows) - len(read.rows)} submissions repeat an instance id already read; repeats dropped"
        )
    frame, visits, rejects = read.tables()
    if len(rejects):
        first = rejects.iloc[0]
        raise FormatError(str(first["reason"]), record=str(first["record"]), field=str(first["field"]))
    unnamed = int(frame["submission_id"].str.startswith("sha256:").sum())
    if unnamed:
        warnings.append(
            f"{unnamed} submissions carry no _uuid or meta/instanceID: identified by a hash of their content"
        )
    unmapped = int(frame["mapping"].isna().sum())
    if unmapped:
        warnings.append(
            f"{unmapped} submissions of forms without a mapping: kept as unmapped survey submissions"
        )
    return frame, visits, warnings


def parse(
    source: Source, *, sme_id: str = "", raw_sha256: str = "", limits: Limits = DEFAULT_LIMITS
) -> Parsed:
    """A KoboToolbox JSON export -> ``survey_submissions`` and ``survey_visits``."""
    document = load_json(read_all(source, limits), limits)
    if isinstance(document, list):
        listed, key, meta = document, "", {}
    elif isinstance(document, dict):
        key = next((k for k in LIST_KEYS if k in document), "")
        listed, meta = document.get(key), document
    else:
        listed, key, meta = None, "", {}
    if not isinstance(listed, list):
        raise FormatError("no list of submissions (results or submissions)", field="submissions")
    form_id = meta.get("id_string") if isinstance(meta.get("id_string"), str) else None
    version = meta.get("version") if isinstance(meta.get("version"), str) else None
    geo = geopoint_paths(meta.get("content"))
    budget = Budget(limits)
    items, rows = [], []
    for index, submission in enumerate(listed):
        record = f"{key}[{index}]" if key else f"[{index}]"
        budget.count(record)
        if not isinstance(submission, dict):
            raise FormatError("not an object", record=record)
        items.append((record, submission))
        rows.append(
            submission_row(
                submission,
                sme_id=sme_id,
                record=record,
                raw_sha256=raw_sha256,
                form_id=form_id,
                version=version,
                geo=geo,
            )
        )
    frame, visits, warnings = submissions_to_tables(items, rows, sme_id=sme_id, raw_sha256=raw_sha256)
    return Parsed(
        format=NAME,
        tables={
            SURVEY_SUBMISSIONS.name: canonical_frame(SURVEY_SUBMISSIONS, frame),
            SURVEY_VISITS.name: canonical_frame(SURVEY_VISITS, visits),
        },
        totals={"submissions": len(listed), "unique_submissions": len(frame)},
        warnings=warnings,
    )


def detect(head: bytes, root: tuple[str, str]) -> bool:
    start = head.lstrip(b"\xef\xbb\xbf \t\r\n")
    if start[:1] not in (b"{", b"["):
        return False
    return any(
        marker in head for marker in (b'"_uuid"', b'"_submission_time"', b'"submissions"', b'"id_string"')
    )
