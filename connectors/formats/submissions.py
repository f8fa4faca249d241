"""The generic survey-submissions table every form parses into, and per-form mappings onto visits.

Any KoboToolbox or ODK form - whatever its questions - becomes rows of :data:`SUBMISSIONS`: one
per submission, with its platform metadata (ids, form, agent, times, location, attachments) and
``answers``, a JSON object of every answer keyed by its field path. Repeats are numbered in the
path (``group_tree[1]/group_nest[0]/How_high``), so nothing of the form is lost and no column
depends on the form.

A *mapping* (``connectors/formats/mappings/<name>.json``, documented in ``MAPPINGS.md``) says
which field path holds each canonical ``survey_visits`` value; the keys are those of
:class:`connectors.survey.kobo.SurveyForm`. A mapping applies to a submission whose form id it
lists, or - for platforms that name a form by an opaque asset uid - whose answers contain the
paths it maps the required visit questions (``premises_found``, ``business_operating``) to. A submission no mapping fits is kept in the submissions table only: an
unmapped survey, not a reject.

>>> flatten_answers({"g/q": "1", "g/rep": [{"g/rep/a": "x"}, {"g/rep/a": "y"}], "_id": 5})
{'g/q': '1', 'g/rep[0]/a': 'x', 'g/rep[1]/a': 'y'}
"""

from __future__ import annotations

import json
from dataclasses import fields
from functools import cache
from pathlib import Path
from typing import Any

import pyarrow as pa

from connectors.survey.kobo import SurveyForm
from warehouse.canonical import LINEAGE, SME_ID, CanonicalTable, Column

MAPPINGS_DIR = Path(__file__).parent / "mappings"
QUESTION_KEYS = tuple(
    f.name
    for f in fields(SurveyForm)
    if f.name not in ("visit_id", "form_version", "agent_id", "visited_at", "submitted_at")
)

SUBMISSIONS = CanonicalTable(
    name="survey_submissions",
    source="survey",
    grain="One row per SME per form submission, of any form: metadata and every answer by field path.",
    key=("sme_id", "submission_id"),
    columns=(
        SME_ID,
        Column("submission_id", pa.string(), "The submission's instance id (uuid), duplicates removed."),
        Column("form_id", pa.string(), "The form's id (XForm id, KoboToolbox id_string or asset uid).", True),
        Column("form_version", pa.string(), "Version of the form.", True),
        Column("agent_id", pa.string(), "Who submitted it (submitter id or name, device user).", True),
        Column("started_at", pa.timestamp("s", tz="UTC"), "Form start time.", True),
        Column("ended_at", pa.timestamp("s", tz="UTC"), "Form end time.", True),
        Column("submitted_at", pa.timestamp("s", tz="UTC"), "When the server received it.", True),
        Column("latitude", pa.float64(), "Latitude of the first geopoint answer (WGS84).", True),
        Column("longitude", pa.float64(), "Longitude of the first geopoint answer (WGS84).", True),
        Column("attachments", pa.int64(), "Files (photos, audio) attached to the submission."),
        Column("answers", pa.string(), "JSON object: field path -> answer text (repeats numbered)."),
        Column(
            "mapping",
            pa.string(),
            "The mapping that turned it into a survey visit; empty when unmapped.",
            True,
        ),
        *LINEAGE,
    ),
)

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
    for path in sorted(MAPPINGS_DIR.glob("*.json")):
        document = json.loads(path.read_text())
        unknown = set(document["fields"]) - {f.name for f in fields(SurveyForm)}
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
