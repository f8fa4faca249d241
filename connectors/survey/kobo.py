"""Parser of KoboToolbox JSON exports of field-visit submissions into ``survey_visits``.

KoboToolbox writes each submission as a flat object: answers under their group path
(``group_premises/premises_found``), answers as strings (``"yes"``, ``"3"``, a geopoint
``"lat lon alt accuracy"``), skipped questions absent, and platform metadata under a leading
underscore (``_uuid``, ``_submission_time`` in UTC, ``_submitted_by``, ``_attachments``) beside the
form's own ``start`` (device-local time with its offset) and ``__version__``.

Which key holds which answer is a :class:`SurveyForm`; :data:`FIELD_VISIT_FORM` is the field-visit
form the survey team uses. Both the API's paged list (``{"results": [...]}``) and a formpack-style
export (``{"submissions": [...]}``) are read. Records are located as ``start=N/results[i]``.

>>> split_geopoint(pd.Series(["13.42 -25.43", "12.43 -24.54 1 0", "north"])).values.tolist()
[[13.42, -25.43], [12.43, -24.54], [nan, nan]]
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from connectors.core.parsing import (
    JsonRecords,
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
from warehouse.canonical import SURVEY_VISITS

SOURCE = "survey"
LIST_KEYS = ("results", "submissions")
YES = ("yes", "true", "1")
NO = ("no", "false", "0")
STOCK_LEVELS = ("none", "low", "normal", "high")


@dataclass(frozen=True)
class SurveyForm:
    """Where an export keeps each value a visit needs (KoboToolbox export keys, group paths included).

    The first five are KoboToolbox's own metadata and the form's ``start`` time; the rest are the
    form's questions.
    """

    visit_id: str = "_uuid"
    form_version: str = "__version__"
    agent_id: str = "_submitted_by"
    visited_at: str = "start"
    submitted_at: str = "_submission_time"
    premises_found: str = "group_premises/premises_found"
    business_operating: str = "group_premises/business_operating"
    location: str = "group_premises/location"
    employees_observed: str = "group_observation/employees_observed"
    customers_observed: str = "group_observation/customers_observed"
    stock_level: str = "group_observation/stock_level"
    reported_monthly_revenue: str = "group_owner/reported_monthly_revenue"
    notes: str = "notes"


FIELD_VISIT_FORM = SurveyForm()


def submissions_frame(batch: Sequence[SmePages]) -> tuple[pd.DataFrame, pd.DataFrame, dict[str, int]]:
    """Every submission of every page as one frame, export keys as columns (nested values as objects)."""
    records: dict[str, JsonRecords] = {key: JsonRecords(key, flatten=False) for key in LIST_KEYS}
    rejects = []
    for item in batch:
        for page in item.pages:
            try:
                document = json.loads(page.body)
            except ValueError as error:
                rejects.append(page_reject(item.sme_id, page, "", f"not JSON: {error}"))
                continue
            list_key = next(
                (k for k in LIST_KEYS if isinstance(document, dict) and k in document), LIST_KEYS[0]
            )
            records[list_key].add(item.sme_id, page, document)
    frames = [r.frame() for r in records.values() if r.objects]
    wide = pd.concat(frames, ignore_index=True) if frames else records[LIST_KEYS[0]].frame()
    counts: dict[str, int] = {}
    for collected in records.values():
        rejects.append(collected.all_rejects())
        for sme_id, count in collected.counts.items():
            counts[sme_id] = counts.get(sme_id, 0) + count
    return wide, combine_rejects(rejects), counts


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


def parse_batch(batch: Sequence[SmePages], *, form: SurveyForm = FIELD_VISIT_FORM) -> ParseResult:
    """The submission pages of many SMEs -> ``survey_visits`` (SMEs with a bad field: rejects only)."""
    wide, page_rejects, counts = submissions_frame(batch)
    frame, field_rejects = to_canonical(wide, form=form)
    return build_result(
        SOURCE, {SURVEY_VISITS.name: frame}, combine_rejects([page_rejects, field_rejects]), counts
    )


def parse_bytes(
    body: bytes, *, sme_id: str, label: str = "", form: SurveyForm = FIELD_VISIT_FORM
) -> ParseResult:
    """One KoboToolbox JSON export (a page or a formpack file) of one SME -> ``survey_visits``."""
    return parse_batch(
        single(sme_id, body, source=SOURCE, label=label, media_type="application/json"), form=form
    )
