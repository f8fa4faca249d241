"""Parser of KoboToolbox JSON exports: every submission of any form, and the visits of mapped forms.

KoboToolbox writes each submission as a flat object: answers under their group path
(``group_premises/premises_found``), answers as strings (``"yes"``, ``"3"``, a geopoint
``"lat lon alt accuracy"``), skipped questions absent, repeats as lists of objects, and platform
metadata under a leading underscore (``_uuid``, ``_submission_time`` in UTC, ``_submitted_by``,
``_attachments``) beside the form's own ``start`` (device-local time with its offset) and
``__version__``.

Every submission becomes a generic ``survey_submissions`` row (:mod:`connectors.survey.forms`):
metadata and every answer by field path, whatever the form. A submission whose form has a mapping
(``connectors/survey/mappings/``) is also read into ``survey_visits`` through that mapping's
:class:`~connectors.survey.forms.SurveyForm`; a bad answer to a mapped question is a reject (the
SME's pull is quarantined). A submission of a form without a mapping is stored as an unmapped
survey: never a reject for lacking visit questions.

Both the API's paged list (``{"results": [...]}``) and a formpack-style export (``{"id_string",
"version", "content": {"survey", ...}, "submissions": [...]}``) are read; records are located as
``start=N/results[i]``. The location of a submission is its ``_geolocation`` or else its first
``geopoint`` question (from ``content.survey`` when the page carries the form).

>>> split_geopoint(pd.Series(["13.42 -25.43", "12.43 -24.54 1 0", "north"])).values.tolist()
[[13.42, -25.43], [12.43, -24.54], [nan, nan]]
>>> geopoint("12.43 -24.54 1"), geopoint("north")
((12.43, -24.54), (None, None))
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from connectors.core.parsing import (
    ParseResult,
    SmePages,
    build_result,
    combine_rejects,
    money,
    page_reject,
    rejects_where,
    single,
    to_choice,
    to_datetime,
    to_number,
    to_text,
)
from connectors.survey.forms import FIELD_VISIT_FORM, SurveyForm, flatten_answers, mapping_for
from warehouse.canonical import SURVEY_SUBMISSIONS, SURVEY_VISITS

SOURCE = "survey"
LIST_KEYS = ("results", "submissions")
YES = ("yes", "true", "1")
NO = ("no", "false", "0")
STOCK_LEVELS = ("none", "low", "normal", "high")

__all__ = ["FIELD_VISIT_FORM", "SurveyForm", "parse_batch", "parse_bytes"]


def split_geopoint(text: pd.Series) -> pd.DataFrame:
    """``"lat lon [altitude [accuracy]]"`` -> latitude and longitude columns (NaN when unreadable)."""
    parts = text.astype("str").str.strip().str.split(r"\s+", expand=True, regex=True)
    parts = parts.reindex(columns=range(2))
    latitude = pd.to_numeric(parts[0], errors="coerce")
    longitude = pd.to_numeric(parts[1], errors="coerce")
    in_range = latitude.between(-90, 90) & longitude.between(-180, 180)
    return pd.DataFrame(
        {"latitude": latitude.where(in_range), "longitude": longitude.where(in_range)}, index=text.index
    ).astype("float64")


def _yes_no(frame: pd.DataFrame, column: str) -> tuple[pd.Series, pd.DataFrame]:
    text, rejects = to_choice(
        frame.assign(**{column: frame[column].astype("str").str.lower()}) if column in frame else frame,
        column,
        column,
        YES + NO,
    )
    return text.isin(YES), rejects


def _whole_number(frame: pd.DataFrame, column: str) -> tuple[pd.Series, pd.DataFrame]:
    values, rejects = to_number(frame, column, column, required=False)
    fractional = values.notna() & (values != np.floor(values))
    rejects = combine_rejects(
        [rejects, rejects_where(frame, fractional, column, "not a whole number: " + values.astype("str"))]
    )
    return values.where(~fractional).astype("Int64"), rejects


def _location(frame: pd.DataFrame, column: str) -> tuple[pd.DataFrame, pd.DataFrame]:
    if column in frame:
        text = frame[column]
        points = split_geopoint(text.fillna(""))
        unreadable = text.notna() & (text.astype("str").str.strip() != "") & points["latitude"].isna()
        reasons = "not a geopoint 'lat lon [alt [accuracy]]': " + text.astype("str").str.slice(0, 60)
        return points, rejects_where(frame, unreadable, column, reasons)
    if "_geolocation" in frame:
        pairs = frame["_geolocation"].map(
            lambda v: v if isinstance(v, list) and len(v) == 2 else [None, None]
        )
        points = pd.DataFrame(pairs.tolist(), index=frame.index, columns=["latitude", "longitude"])
        return points.apply(pd.to_numeric, errors="coerce").astype("float64"), combine_rejects([])
    empty = pd.DataFrame({"latitude": np.nan, "longitude": np.nan}, index=frame.index)
    return empty, combine_rejects([])


def _photo_count(frame: pd.DataFrame) -> tuple[pd.Series, pd.DataFrame]:
    if "_attachments" not in frame:
        return pd.Series(0, index=frame.index, dtype="int64"), combine_rejects([])
    attachments = frame["_attachments"]
    not_list = attachments.notna() & ~attachments.map(lambda v: isinstance(v, list))
    counts = attachments.map(lambda v: len(v) if isinstance(v, list) else 0).astype("int64")
    return counts, rejects_where(frame, not_list, "_attachments", "not a list of attachments")


def to_canonical(
    wide: pd.DataFrame, *, form: SurveyForm = FIELD_VISIT_FORM
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """``survey_visits`` columns from the flat submissions, and every field that failed."""
    visit_id, visit_rejects = to_text(wide, form.visit_id, form.visit_id)
    version, version_rejects = to_text(wide, form.form_version, form.form_version)
    agent, agent_rejects = to_text(wide, form.agent_id, form.agent_id)
    visited, visited_rejects = to_datetime(wide, form.visited_at, form.visited_at)
    submitted, submitted_rejects = to_datetime(wide, form.submitted_at, form.submitted_at)
    found, found_rejects = _yes_no(wide, form.premises_found)
    operating, operating_rejects = _yes_no(wide, form.business_operating)
    employees, employees_rejects = _whole_number(wide, form.employees_observed)
    customers, customers_rejects = _whole_number(wide, form.customers_observed)
    stock, stock_rejects = to_choice(wide, form.stock_level, form.stock_level, STOCK_LEVELS, required=False)
    revenue, revenue_rejects = to_number(
        wide, form.reported_monthly_revenue, form.reported_monthly_revenue, required=False
    )
    notes, _ = to_text(wide, form.notes, form.notes, required=False)
    points, location_rejects = _location(wide, form.location)
    photos, photo_rejects = _photo_count(wide)
    frame = pd.DataFrame(
        {
            "sme_id": wide["sme_id"],
            "visit_id": visit_id,
            "form_version": version,
            "agent_id": agent,
            "visited_at": visited.dt.floor("s"),
            "submitted_at": submitted.dt.floor("s"),
            "premises_found": found,
            "business_operating": operating,
            "employees_observed": employees,
            "customers_observed": customers,
            "stock_level": stock,
            "reported_monthly_revenue": money(revenue),
            "latitude": points["latitude"],
            "longitude": points["longitude"],
            "photo_count": photos,
            "notes": notes,
            "source_record": wide["source_record"],
            "raw_sha256": wide["raw_sha256"],
        }
    )
    rejects = [
        visit_rejects,
        version_rejects,
        agent_rejects,
        visited_rejects,
        submitted_rejects,
        found_rejects,
        operating_rejects,
        employees_rejects,
        customers_rejects,
        stock_rejects,
        revenue_rejects,
        location_rejects,
        photo_rejects,
    ]
    return frame, combine_rejects(rejects)


def geopoint(text: Any) -> tuple[float | None, float | None]:
    """``"lat lon [alt [acc]]"`` -> (lat, lon); (None, None) when unreadable or out of range."""
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


def _time(value: Any) -> pd.Timestamp | str | None:
    """A UTC instant to the second; None when absent; the reason when unreadable."""
    if value in (None, ""):
        return None
    stamp = pd.to_datetime(str(value), utc=True, errors="coerce", format="ISO8601")
    if pd.isna(stamp):
        return f"not an ISO 8601 time: {str(value)[:40]!r}"
    return stamp.floor("s")


def submission_row(
    submission: dict[str, Any],
    *,
    sme_id: str,
    record: str,
    raw_sha256: str,
    form_id: str | None,
    version: str | None,
    geo: Sequence[str] = (),
) -> tuple[dict[str, Any], list[tuple[str, str]]]:
    """The generic ``survey_submissions`` row of one submission, and its (field, reason) problems.

    Only the platform's own times can be a problem (an unreadable ``start``, ``end`` or
    ``_submission_time``); answers are kept as written, whatever the form.
    """
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
    for path in geo if latitude is None else ():
        if path in answers:
            latitude, longitude = geopoint(answers[path])
            break
    problems: list[tuple[str, str]] = []
    times: dict[str, pd.Timestamp | None] = {}
    for column, key in (("started_at", "start"), ("ended_at", "end"), ("submitted_at", "_submission_time")):
        value = _time(submission.get(key))
        if isinstance(value, str):
            problems.append((key, value))
            value = None
        times[column] = value
    attachments = submission.get("_attachments")
    row = {
        "sme_id": sme_id,
        "submission_id": submission_id,
        "form_id": str(submission.get("_xform_id_string") or form_id or "") or None,
        "form_version": str(submission.get("__version__") or version or "") or None,
        "agent_id": str(submission.get("_submitted_by") or "") or None,
        **times,
        "latitude": latitude,
        "longitude": longitude,
        "attachments": len(attachments) if isinstance(attachments, list) else 0,
        "answers": json.dumps(answers, ensure_ascii=False, sort_keys=True),
        "mapping": None,
        "source_record": record,
        "raw_sha256": raw_sha256,
    }
    return row, problems


@dataclass
class Submissions:
    """Submissions read so far: (record lineage, the submission as exported) and generic rows."""

    items: list[tuple[str, str, str, dict[str, Any]]] = field(default_factory=list)
    rows: list[dict[str, Any]] = field(default_factory=list)
    problems: list[dict[str, str]] = field(default_factory=list)

    def add(
        self,
        submission: dict[str, Any],
        *,
        sme_id: str,
        record: str,
        raw_sha256: str,
        form_id: str | None = None,
        version: str | None = None,
        geo: Sequence[str] = (),
        row: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        """Add one submission (``row``: its generic row when the caller built it); the row back."""
        if row is None:
            row, problems = submission_row(
                submission,
                sme_id=sme_id,
                record=record,
                raw_sha256=raw_sha256,
                form_id=form_id,
                version=version,
                geo=geo,
            )
            for field_name, reason in problems:
                self.problems.append(
                    {
                        "sme_id": sme_id,
                        "record": record,
                        "field": field_name,
                        "reason": reason,
                        "raw_sha256": raw_sha256,
                    }
                )
        self.items.append((sme_id, record, raw_sha256, submission))
        self.rows.append(row)
        return row

    def tables(self) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
        """``survey_submissions`` (mapping named), ``survey_visits`` of the mapped ones, and rejects."""
        frame = pd.DataFrame(self.rows, columns=SURVEY_SUBMISSIONS.column_names)
        groups: dict[str, tuple[SurveyForm, list[int]]] = {}
        for position, (item, form_id) in enumerate(zip(self.items, frame["form_id"], strict=True)):
            found = mapping_for(form_id, set(item[3]))
            if found:
                name, form = found
                groups.setdefault(name, (form, []))[1].append(position)
        visits, rejects = [], [pd.DataFrame(self.problems)] if self.problems else []
        for name, (form, positions) in groups.items():
            frame.loc[positions, "mapping"] = name
            wide = pd.DataFrame([self.items[p][3] for p in positions])
            wide["sme_id"] = [self.items[p][0] for p in positions]
            wide["source_record"] = [self.items[p][1] for p in positions]
            wide["raw_sha256"] = [self.items[p][2] for p in positions]
            mapped, mapped_rejects = to_canonical(wide, form=form)
            visits.append(mapped)
            rejects.append(mapped_rejects)
        visits_frame = pd.concat(visits, ignore_index=True) if visits else SURVEY_VISITS.empty_frame()
        return frame, visits_frame, combine_rejects(rejects)


def read_pages(batch: Sequence[SmePages]) -> tuple[Submissions, pd.DataFrame, dict[str, int]]:
    """Every submission of every page (any form), page-level rejects, and records per SME."""
    read = Submissions()
    rejects: list[pd.DataFrame] = []
    counts: dict[str, int] = {}
    for item in batch:
        for page in item.pages:
            try:
                document = json.loads(page.body)
            except ValueError as error:
                rejects.append(page_reject(item.sme_id, page, "", f"not JSON: {error}"))
                continue
            if isinstance(document, list):
                key, listed, meta = "", document, {}
            elif isinstance(document, dict):
                key = next((k for k in LIST_KEYS if k in document), LIST_KEYS[0])
                listed, meta = document.get(key), document
            else:
                key, listed, meta = LIST_KEYS[0], None, {}
            if not isinstance(listed, list):
                rejects.append(page_reject(item.sme_id, page, key, "missing or not a list"))
                continue
            counts[item.sme_id] = counts.get(item.sme_id, 0) + len(listed)
            form_id = meta.get("id_string") if isinstance(meta.get("id_string"), str) else None
            version = meta.get("version") if isinstance(meta.get("version"), str) else None
            geo = geopoint_paths(meta.get("content"))
            prefix = f"{page.label}/" if page.label else ""
            for position, submission in enumerate(listed):
                record = f"{prefix}{key}[{position}]"
                if not isinstance(submission, dict):
                    rejects.append(page_reject(item.sme_id, page, "", "not an object", record))
                    continue
                read.add(
                    submission,
                    sme_id=item.sme_id,
                    record=record,
                    raw_sha256=page.sha256,
                    form_id=form_id,
                    version=version,
                    geo=geo,
                )
    return read, combine_rejects(rejects), counts


def parse_batch(batch: Sequence[SmePages]) -> ParseResult:
    """The submission pages of many SMEs -> ``survey_submissions`` and ``survey_visits``.

    Submissions of unmapped forms are kept (``survey_submissions`` only); an SME with a bad page,
    an unreadable platform time or a bad answer to a mapped question gets rejects only.
    """
    read, page_rejects, counts = read_pages(batch)
    submissions, visits, field_rejects = read.tables()
    return build_result(
        SOURCE,
        {SURVEY_SUBMISSIONS.name: submissions, SURVEY_VISITS.name: visits},
        combine_rejects([page_rejects, field_rejects]),
        counts,
    )


def parse_bytes(body: bytes, *, sme_id: str, label: str = "") -> ParseResult:
    """One KoboToolbox JSON export (a page or a formpack file) of one SME."""
    return parse_batch(single(sme_id, body, source=SOURCE, label=label, media_type="application/json"))
