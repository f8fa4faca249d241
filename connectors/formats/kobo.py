"""KoboToolbox JSON exports -> ``survey_submissions`` (any form) and ``survey_visits`` (mapped forms).

Reads the API's paged list (``{"results": [...]}``), a formpack-style file (``{"id_string",
"version", "content": {"survey", "choices"}, "submissions": [...]}``) or a bare list of
submissions. Every submission becomes a generic row (:mod:`connectors.formats.submissions`); the
submissions of a form with a mapping also go through the survey connector's parser
(:func:`connectors.survey.kobo.to_canonical`) into ``survey_visits``. Submissions repeated with the
same ``_uuid`` count once (a warning says how many were dropped).

Geopoints come as ``"lat lon [alt [accuracy]]"``; the location of a submission is its
``_geolocation`` or else its first ``geopoint`` question (from ``content.survey`` when the file
carries the form). A select_multiple answer stays the space-separated text Kobo writes.
"""

from __future__ import annotations

import hashlib
import json
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
from connectors.formats.submissions import SUBMISSIONS, flatten_answers, mapping_for
from connectors.survey import kobo as kobo_connector
from warehouse.canonical import SURVEY_VISITS

NAME = "kobo"
LIST_KEYS = ("results", "submissions")


def _time(value: Any, *, record: str, field: str) -> pd.Timestamp | None:
    if value in (None, ""):
        return None
    stamp = pd.to_datetime(str(value), utc=True, errors="coerce", format="ISO8601")
    if pd.isna(stamp):
        raise FormatError(f"not an ISO 8601 time: {str(value)[:40]!r}", record=record, field=field)
    return stamp.floor("s")


def geopoint(text: Any) -> tuple[float | None, float | None]:
    """``"lat lon [alt [acc]]"`` -> (lat, lon); (None, None) when unreadable or out of range.

    >>> geopoint("12.43 -24.54 1"), geopoint("north")
    ((12.43, -24.54), (None, None))
    """
    parts = str(text or "").split()
    try:
        latitude, longitude = float(parts[0]), float(parts[1])
    except (IndexError, ValueError):
        return None, None
    if -90 <= latitude <= 90 and -180 <= longitude <= 180:
        return latitude, longitude
    return None, None


def geopoint_paths(content: Any) -> list[str]:
    """Field paths of the form's geopoint questions, from an XLSForm-as-JSON ``survey`` list."""
    paths, groups = [], []
    for row in (content or {}).get("survey", []) if isinstance(content, dict) else []:
        if not isinstance(row, dict):
            continue
        kind = str(row.get("type", "")).split()[0] if row.get("type") else ""
        name = row.get("name") or row.get("$autoname")
        if kind in ("begin_group", "begin_repeat") and name:
            groups.append(name)
        elif kind in ("end_group", "end_repeat") and groups:
            groups.pop()
        elif kind == "geopoint" and name:
            paths.append("/".join([*groups, name]))
    return paths


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
    """The generic ``survey_submissions`` row of one KoboToolbox submission."""
    answers = flatten_answers(submission)
    instance = str(submission.get("meta/instanceID") or "").removeprefix("uuid:")
    submission_id = str(submission.get("_uuid") or instance or submission.get("_id") or "")
    if not submission_id:
        # No platform id at all (a hand-made export): name it by its content, so a repeat is one.
        content = json.dumps(submission, sort_keys=True, ensure_ascii=False, default=str).encode()
        submission_id = "sha256:" + hashlib.sha256(content).hexdigest()[:32]
    latitude = longitude = None
    located = submission.get("_geolocation")
    if isinstance(located, list) and len(located) == 2 and all(isinstance(v, int | float) for v in located):
        latitude, longitude = geopoint(f"{located[0]} {located[1]}")
    for path in geo if latitude is None else []:
        if path in answers:
            latitude, longitude = geopoint(answers[path])
            break
    attachments = submission.get("_attachments")
    return {
        "sme_id": sme_id,
        "submission_id": submission_id,
        "form_id": str(submission.get("_xform_id_string") or form_id or "") or None,
        "form_version": str(submission.get("__version__") or version or "") or None,
        "agent_id": str(submission.get("_submitted_by") or "") or None,
        "started_at": _time(submission.get("start"), record=record, field="start"),
        "ended_at": _time(submission.get("end"), record=record, field="end"),
        "submitted_at": _time(submission.get("_submission_time"), record=record, field="_submission_time"),
        "latitude": latitude,
        "longitude": longitude,
        "attachments": len(attachments) if isinstance(attachments, list) else 0,
        "answers": json.dumps(answers, ensure_ascii=False, sort_keys=True),
        "mapping": None,
        "source_record": record,
        "raw_sha256": raw_sha256,
    }


def submissions_to_tables(
    items: list[tuple[str, dict[str, Any]]], rows: list[dict[str, Any]], *, sme_id: str, raw_sha256: str
) -> tuple[pd.DataFrame, pd.DataFrame, list[str]]:
    """De-duplicated submissions and the survey visits of the mapped ones (records as given)."""
    warnings: list[str] = []
    frame = pd.DataFrame(rows, columns=SUBMISSIONS.column_names)
    repeated = frame.duplicated("submission_id", keep="first")
    if repeated.any():
        warnings.append(
            f"{int(repeated.sum())} submissions repeat an instance id already read; repeats dropped"
        )
    keep = ~repeated.to_numpy()
    frame = frame[keep].reset_index(drop=True)
    kept = [item for item, k in zip(items, keep, strict=True) if k]
    groups: dict[str, tuple[kobo_connector.SurveyForm, list[int]]] = {}
    for position, ((_, submission), form_id) in enumerate(zip(kept, frame["form_id"], strict=True)):
        found = mapping_for(form_id, set(submission))
        if found:
            name, form = found
            groups.setdefault(name, (form, []))[1].append(position)
            frame.loc[position, "mapping"] = name
    visits = []
    for _name, (form, positions) in groups.items():
        wide = pd.DataFrame([kept[p][1] for p in positions])
        wide["sme_id"] = sme_id
        wide["source_record"] = [kept[p][0] for p in positions]
        wide["raw_sha256"] = raw_sha256
        mapped, rejects = kobo_connector.to_canonical(wide, form=form)
        if len(rejects):
            first = rejects.iloc[0]
            raise FormatError(str(first["reason"]), record=str(first["record"]), field=str(first["field"]))
        visits.append(mapped)
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
    visits_frame = pd.concat(visits, ignore_index=True) if visits else SURVEY_VISITS.empty_frame()
    return frame, visits_frame, warnings


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
            SUBMISSIONS.name: canonical_frame(SUBMISSIONS, frame),
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
