"""Survey forms: answers by field path, and the per-form mappings onto canonical survey visits.

Any KoboToolbox or ODK form - whatever its questions - becomes rows of the generic
``survey_submissions`` table (:data:`warehouse.canonical.SURVEY_SUBMISSIONS`): one per
submission, with its platform metadata (ids, form, agent, times, location, attachments) and
``answers``, a JSON object of every answer keyed by its field path. Repeats are numbered in the
path (``group_tree[1]/group_nest[0]/How_high``), so nothing of the form is lost and no column
depends on the form.

A *mapping* (``connectors/survey/mappings/<name>.json``, documented in ``MAPPINGS.md`` there)
says which field path holds each canonical ``survey_visits`` value; its keys are those of
:class:`SurveyForm`. A mapping applies to a submission whose form id it lists, or - for platforms
that name a form by an opaque asset uid - whose answers contain the paths it maps the required
visit questions (``premises_found``, ``business_operating``) to. A submission no mapping fits is
kept in the submissions table only: an unmapped survey, not a reject.

>>> flatten_answers({"g/q": "1", "g/rep": [{"g/rep/a": "x"}, {"g/rep/a": "y"}], "_id": 5})
{'g/q': '1', 'g/rep[0]/a': 'x', 'g/rep[1]/a': 'y'}
>>> mapping_for("field_visit", set())[0], mapping_for("restaurant_profile", {"location"})
('field_visit', None)
"""

from __future__ import annotations

import json
from dataclasses import dataclass, fields
from functools import cache
from pathlib import Path
from typing import Any

MAPPINGS_DIR = Path(__file__).parent / "mappings"


@dataclass(frozen=True)
class SurveyForm:
    """Where an export keeps each value a visit needs (KoboToolbox export keys, group paths included).

    The first five are KoboToolbox's own metadata and the form's ``start`` time; the rest are the
    form's questions. The defaults are the field-visit form the survey team uses.
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

METADATA_PREFIXES = ("_", "meta/", "formhub/")
METADATA_KEYS = {"__version__", "start", "end", "today", "deviceid", "username", "SubmissionDate", "KEY"}


def flatten_answers(submission: dict[str, Any], prefix: str = "") -> dict[str, str]:
    """Answers keyed by field path, repeats numbered, platform metadata left out (see the module doc)."""
    out: dict[str, str] = {}
    for key, value in submission.items():
        if not prefix and (key.startswith(METADATA_PREFIXES) or key in METADATA_KEYS):
            continue
        name = key[len(prefix) :].lstrip("/") if prefix and key.startswith(prefix) else key
        path = f"{prefix}/{name}" if prefix else name
        if isinstance(value, list) and all(isinstance(item, dict) for item in value):
            for index, item in enumerate(value):
                # Kobo writes nested keys with the full group path; renumber the repeat in it.
                inner = flatten_answers(item, key)
                for inner_key, inner_value in inner.items():
                    out[
                        f"{path}[{index}]{inner_key[len(path) :]}"
                        if inner_key.startswith(path)
                        else inner_key
                    ] = inner_value
        elif isinstance(value, dict):
            out.update(flatten_answers(value, path))
        elif value is not None:
            out[path] = value if isinstance(value, str) else json.dumps(value)
    return out


@cache
def mappings() -> dict[str, dict[str, Any]]:
    """Every mapping file by its name: ``form_ids`` it applies to and ``fields`` (SurveyForm keys -> paths)."""
    loaded = {}
    known = {f.name for f in fields(SurveyForm)}
    for path in sorted(MAPPINGS_DIR.glob("*.json")):
        document = json.loads(path.read_text())
        unknown = set(document["fields"]) - known
        if unknown:
            raise ValueError(f"{path.name}: not survey-visit fields: {sorted(unknown)}")
        loaded[path.stem] = document
    return loaded


REQUIRED_QUESTIONS = ("premises_found", "business_operating")
"""Visit fields every submission of a mapped form answers (their canonical columns are required)."""


def mapping_for(form_id: str | None, keys: set[str]) -> tuple[str, SurveyForm] | None:
    """The mapping that fits a submission (by form id, else by its required question paths), or None."""
    for name, document in mappings().items():
        questions = {document["fields"][k] for k in REQUIRED_QUESTIONS if k in document["fields"]}
        if (form_id and form_id in document.get("form_ids", [])) or (questions and questions <= keys):
            return name, SurveyForm(**document["fields"])
    return None
