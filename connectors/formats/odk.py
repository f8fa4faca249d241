"""ODK: Central CSV exports, XML submission instances, and the XForm / XLSForm that define a form.

* **Central CSV export** (``<form>.csv`` plus one ``<form>-<repeat>.csv`` per repeat group, as
  files beside it or inside Central's zip): columns are group paths joined by ``-``; each repeat
  row has ``PARENT_KEY`` (the row it belongs to) and ``KEY`` (``uuid:.../group/repeat[n]``).
  Repeat rows join their submission by the instance id their ``KEY`` starts with; their answers
  take the repeat path from ``KEY`` (renumbered from 0, as KoboToolbox's are). A repeat row whose
  parent is missing is an error naming file, row and ``PARENT_KEY``.
* **XML submission instances** (what ODK Collect sends): the root element carries the form ``id``
  and ``version``, ``meta/instanceID`` names the submission; a file may hold one instance or a
  wrapper of several. Repeated sibling elements are numbered. Duplicates by instance id count once.
* **XForm** (``h:html`` with an XForms model) and **XLSForm** written as CSV (``survey``,
  ``choices``, ``settings`` sections): the form's fields with their types, as ``form_fields``.

Submissions become :data:`~warehouse.canonical.SURVEY_SUBMISSIONS` rows, and those of a form
with a mapping also ``survey_visits`` (see :mod:`connectors.formats.kobo`, which does the mapping).
"""

from __future__ import annotations

import csv
import io
import re
import zipfile
from collections import Counter
from typing import Any

import pandas as pd

from connectors.formats import kobo
from connectors.formats.base import (
    DEFAULT_LIMITS,
    Budget,
    FormatError,
    Limits,
    Parsed,
    Source,
    canonical_frame,
    decode_text,
    iter_xml,
    local,
    read_all,
)
from warehouse.canonical import SURVEY_SUBMISSIONS, SURVEY_VISITS

NAME_CSV = "odk-csv"
NAME_XML = "odk-xml"
XFORMS_NS = "http://www.w3.org/2002/xforms"
XHTML_NS = "http://www.w3.org/1999/xhtml"
CENTRAL_METADATA = (
    "SubmissionDate",
    "KEY",
    "SubmitterID",
    "SubmitterName",
    "AttachmentsPresent",
    "AttachmentsExpected",
    "Status",
    "ReviewState",
    "DeviceID",
    "Edits",
    "FormVersion",
    "meta-instanceID",
    "meta-instanceName",
    "PARENT_KEY",
)
REPEAT_INDEX = re.compile(r"\[(\d+)\]")


def _zero_based(path: str) -> str:
    """``a/rep[1]/b`` -> ``a/rep[0]/b`` (ODK numbers repeats from 1)."""
    return REPEAT_INDEX.sub(lambda m: f"[{int(m.group(1)) - 1}]", path)


def _read_csv(data: bytes, name: str, limits: Limits) -> list[dict[str, str]]:
    text = decode_text(data)
    reader = csv.DictReader(io.StringIO(text))
    rows = []
    try:
        for row in reader:
            if len(rows) >= limits.max_records:
                raise FormatError(
                    f"more than {limits.max_records} records (limit)", record=f"{name} row {len(rows) + 2}"
                )
            if None in row:
                raise FormatError("more cells than header columns", record=f"{name} row {reader.line_num}")
            rows.append(row)
    except csv.Error as error:
        raise FormatError(f"not readable CSV: {error}", record=f"{name} row {reader.line_num}") from None
    if reader.fieldnames is None:
        raise FormatError("empty file", record=name)
    return rows


def _instance(key: str) -> str:
    return key.split("/", 1)[0]


def _wide(row: dict[str, Any]) -> dict[str, Any]:
    """A Central row as KoboToolbox-style keys, so the same mapping code reads it."""
    instance = row.get("meta-instanceID") or row.get("KEY") or ""
    start = next(
        (v for k, v in row.items() if k == "start" or k.endswith("-start") or k.endswith("starttime_auto")),
        None,
    )
    end = next((v for k, v in row.items() if k == "end" or k.endswith("-end")), None)
    answers = {
        k.replace("-", "/"): v for k, v in row.items() if k not in CENTRAL_METADATA and v not in (None, "")
    }
    present = row.get("AttachmentsPresent") or "0"
    return {
        **answers,
        "_uuid": _instance(instance).removeprefix("uuid:"),
        "_submission_time": row.get("SubmissionDate") or None,
        "_submitted_by": row.get("SubmitterName") or row.get("SubmitterID") or None,
        "__version__": row.get("FormVersion") or None,
        "start": start,
        "end": end,
        "_attachments": [{}] * (int(present) if present.isdigit() else 0),
    }


def _location(row: dict[str, str]) -> tuple[float | None, float | None]:
    for column, value in row.items():
        if column.endswith("-Latitude") and value:
            longitude = row.get(column[: -len("Latitude")] + "Longitude")
            return kobo.geopoint(f"{value} {longitude}")
    return None, None


def split_zip(data: bytes, limits: Limits) -> tuple[str, bytes, dict[str, bytes]]:
    """(main file name, its bytes, repeat files) of a Central CSV zip (the shortest CSV is the main one)."""
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            infos = [i for i in archive.infolist() if i.filename.lower().endswith(".csv") and not i.is_dir()]
            if sum(i.file_size for i in infos) > limits.max_bytes:
                raise FormatError(f"archive expands beyond {limits.max_bytes} bytes (limit)")
            files = {i.filename.rsplit("/", 1)[-1]: archive.read(i) for i in infos}
    except (zipfile.BadZipFile, OSError, RuntimeError) as error:
        raise FormatError(f"not a readable zip archive: {error}") from None
    if not files:
        raise FormatError("no CSV file in the archive")
    main = min(files, key=lambda n: (len(n), n))
    return main, files.pop(main), files


def parse_csv(
    source: Source,
    *,
    sme_id: str = "",
    raw_sha256: str = "",
    limits: Limits = DEFAULT_LIMITS,
    companions: dict[str, bytes] | None = None,
    form_id: str | None = None,
    name: str = "main",
) -> Parsed:
    """An ODK Central CSV export (main table, with repeat tables as ``companions`` or in a zip)."""
    data = read_all(source, limits)
    if data[:4] == b"PK\x03\x04":
        name, data, companions = split_zip(data, limits)
    form_id = form_id or (name.removesuffix(".csv") if name != "main" else None)
    main = _read_csv(data, name, limits)
    budget = Budget(limits)
    if main and "PARENT_KEY" in main[0]:
        raise FormatError(
            "a repeat table of an ODK Central export: parse the main table (or the export's zip)",
            record=f"{name} row 1",
            field="PARENT_KEY",
        )
    if main and "KEY" not in main[0]:
        raise FormatError("no KEY column: not an ODK Central export", record=f"{name} row 1", field="KEY")
    rows = {}
    for index, row in enumerate(main):
        record = f"{name} row {index + 2}"
        budget.count(record)
        key = row.get("KEY") or ""
        if not key:
            raise FormatError("missing", record=record, field="KEY")
        rows.setdefault(key, (record, _wide(row), _location(row)))
    repeat_rows = 0
    for file_name, body in sorted((companions or {}).items()):
        keys_seen = set()
        for index, row in enumerate(_read_csv(body, file_name, limits)):
            record = f"{file_name} row {index + 2}"
            budget.count(record)
            parent, key = row.get("PARENT_KEY") or "", row.get("KEY") or ""
            if not parent or not key:
                raise FormatError("missing", record=record, field="PARENT_KEY" if not parent else "KEY")
            instance = _instance(key)
            if instance not in rows or (
                parent != instance and parent not in keys_seen and _instance(parent) not in rows
            ):
                raise FormatError(
                    f"points to no submission: {parent[:80]!r}", record=record, field="PARENT_KEY"
                )
            keys_seen.add(key)
            path = _zero_based(key.split("/", 1)[1]) if "/" in key else file_name
            wide = rows[instance][1]
            for column, value in row.items():
                if column not in ("PARENT_KEY", "KEY") and value not in (None, ""):
                    wide[f"{path}/{column.replace('-', '/')}"] = value
            repeat_rows += 1
    items, generic = [], []
    for record, wide, (latitude, longitude) in rows.values():
        row = kobo.submission_row(
            wide, sme_id=sme_id, record=record, raw_sha256=raw_sha256, form_id=form_id, version=None, geo=[]
        )
        row["latitude"], row["longitude"] = row["latitude"] or latitude, row["longitude"] or longitude
        items.append((record, wide))
        generic.append(row)
    frame, visits, warnings = kobo.submissions_to_tables(items, generic, sme_id=sme_id, raw_sha256=raw_sha256)
    if len(rows) < len(main):
        warnings.insert(0, f"{len(main) - len(rows)} rows repeat a KEY already read; repeats dropped")
    return Parsed(
        format=NAME_CSV,
        tables={
            SURVEY_SUBMISSIONS.name: canonical_frame(SURVEY_SUBMISSIONS, frame),
            SURVEY_VISITS.name: canonical_frame(SURVEY_VISITS, visits),
        },
        totals={"submissions": len(main), "unique_submissions": len(frame), "repeat_rows": repeat_rows},
        warnings=warnings,
    )


def _answers(element: Any, prefix: str = "") -> dict[str, Any]:
    """Leaf answers of an instance element by path; repeated siblings numbered from 0."""
    out: dict[str, Any] = {}
    children = [c for c in element if isinstance(c.tag, str)]
    counts = Counter(local(c.tag) for c in children)
    seen: Counter[str] = Counter()
    for child in children:
        name = local(child.tag)
        step = f"{name}[{seen[name]}]" if counts[name] > 1 else name
        seen[name] += 1
        path = f"{prefix}/{step}" if prefix else step
        if len([c for c in child if isinstance(c.tag, str)]):
            out.update(_answers(child, path))
        elif child.text and child.text.strip():
            out[path] = child.text.strip()
    return out


def _submission(element: Any, record: str) -> dict[str, Any]:
    answers = _answers(element)
    instance = answers.pop("meta/instanceID", "") or ""
    if not instance:
        raise FormatError("missing", record=record, field="meta/instanceID")
    return {
        **{k: v for k, v in answers.items() if not k.startswith("meta/")},
        "_uuid": instance.removeprefix("uuid:"),
        "_xform_id_string": element.get("id"),
        "__version__": element.get("version"),
        "_submitted_by": answers.get("username") or answers.get("meta/username") or answers.get("deviceid"),
        "start": answers.get("start") or answers.get("start_time"),
        "end": answers.get("end") or answers.get("end_time"),
        "_attachments": [{}]
        * sum(
            1
            for v in answers.values()
            if isinstance(v, str) and re.search(r"\.(jpe?g|png|m4a|mp4|amr|3gp)$", v, re.I)
        ),
    }


def parse_xml(
    source: Source, *, sme_id: str = "", raw_sha256: str = "", limits: Limits = DEFAULT_LIMITS
) -> Parsed:
    """ODK XML: submission instance(s) -> submissions (and visits); an XForm -> ``form_fields``."""
    budget = Budget(limits)
    root = None
    for _event, element, depth in iter_xml(source, limits, events=("start",)):
        if depth == 1:
            root = element
        elif depth > 1:
            budget.count("element")
    if root is None:
        raise FormatError("no XML element found")
    if local(root.tag) == "html":
        return _xform(root, sme_id=sme_id, raw_sha256=raw_sha256)
    instances = [root] if root.get("id") else [c for c in root if isinstance(c.tag, str) and c.get("id")]
    if not instances:
        raise FormatError("no ODK submission (an element with a form id attribute)", field="id")
    items, rows = [], []
    for index, element in enumerate(instances):
        record = f"{local(element.tag)}[{index}]" if element is not root else local(root.tag)
        wide = _submission(element, record)
        items.append((record, wide))
        rows.append(
            kobo.submission_row(
                wide,
                sme_id=sme_id,
                record=record,
                raw_sha256=raw_sha256,
                form_id=element.get("id"),
                version=None,
                geo=[],
            )
        )
        if rows[-1]["latitude"] is None:
            point = next(
                (
                    v
                    for v in wide.values()
                    if isinstance(v, str) and kobo.geopoint(v)[0] is not None and len(v.split()) == 4
                ),
                None,
            )
            if point:
                rows[-1]["latitude"], rows[-1]["longitude"] = kobo.geopoint(point)
    frame, visits, warnings = kobo.submissions_to_tables(items, rows, sme_id=sme_id, raw_sha256=raw_sha256)
    return Parsed(
        format=NAME_XML,
        tables={
            SURVEY_SUBMISSIONS.name: canonical_frame(SURVEY_SUBMISSIONS, frame),
            SURVEY_VISITS.name: canonical_frame(SURVEY_VISITS, visits),
        },
        totals={"submissions": len(instances), "unique_submissions": len(frame)},
        warnings=warnings,
    )


FORM_FIELD_COLUMNS = [
    "sme_id",
    "form_id",
    "path",
    "type",
    "required",
    "relevant",
    "source_record",
    "raw_sha256",
]


def _xform(root: Any, *, sme_id: str, raw_sha256: str) -> Parsed:
    model = next((e for e in root.iter(f"{{{XFORMS_NS}}}model")), None)
    if model is None:
        raise FormatError("an h:html document without an XForms model", field="model")
    instance = next((e for e in model.iter(f"{{{XFORMS_NS}}}instance")), None)
    data = next((c for c in instance if isinstance(c.tag, str)), None) if instance is not None else None
    form_id = data.get("id") if data is not None else None
    rows = []
    for index, bind in enumerate(model.iter(f"{{{XFORMS_NS}}}bind")):
        nodeset = bind.get("nodeset") or ""
        path = "/".join(nodeset.strip("/").split("/")[1:])
        if not path:
            continue
        rows.append(
            {
                "sme_id": sme_id,
                "form_id": form_id,
                "path": path,
                "type": bind.get("type") or "string",
                "required": (bind.get("required") or "").startswith("true"),
                "relevant": bind.get("relevant"),
                "source_record": f"bind[{index}]",
                "raw_sha256": raw_sha256,
            }
        )
    frame = pd.DataFrame(rows, columns=FORM_FIELD_COLUMNS)
    return Parsed(
        format=NAME_XML,
        tables={"form_fields": frame},
        totals={"form_id": form_id, "fields": len(frame), "field_types": dict(Counter(frame["type"]))},
        warnings=[],
    )


def parse_xlsform_csv(text: str, *, sme_id: str, raw_sha256: str) -> Parsed:
    """An XLSForm saved as CSV (section rows ``survey`` / ``choices`` / ``settings``) -> ``form_fields``."""
    section, header, rows, settings = "", [], [], {}
    for index, cells in enumerate(csv.reader(io.StringIO(text))):
        if cells and cells[0].strip():
            section, header = cells[0].strip().lower(), []
            continue
        values = cells[1:]
        if not any(v.strip() for v in values):
            continue
        if not header:
            header = [v.strip() for v in values]
            continue
        row = dict(zip(header, values, strict=False))
        if section == "settings":
            settings.update({k: v for k, v in row.items() if v})
        elif section == "survey" and row.get("type") and row.get("name"):
            rows.append(
                {
                    "sme_id": sme_id,
                    "form_id": None,
                    "path": row["name"].strip(),
                    "type": row["type"].strip(),
                    "required": (row.get("required") or "").strip().lower() in ("yes", "true", "true()"),
                    "relevant": row.get("relevant") or row.get("bind:relevant") or None,
                    "source_record": f"row {index + 1}",
                    "raw_sha256": raw_sha256,
                }
            )
    frame = pd.DataFrame(rows, columns=FORM_FIELD_COLUMNS)
    frame["form_id"] = settings.get("form_id")
    return Parsed(
        format="xlsform",
        tables={"form_fields": frame},
        totals={
            "form_id": settings.get("form_id"),
            "fields": len(frame),
            "field_types": dict(Counter(frame["type"])),
        },
        warnings=[],
    )


def detect_csv(head: bytes, root: tuple[str, str]) -> bool:
    if root[1]:
        return False
    try:
        first = decode_text(head.split(b"\n", 1)[0])
    except FormatError:
        return False
    cells = {c.strip().strip('"') for c in first.split(",")}
    return (
        ("KEY" in cells and ("SubmissionDate" in cells or "PARENT_KEY" in cells))
        or first.startswith('"survey"')
        or first.split(",")[0] == "survey"
    )


def detect_xml(head: bytes, root: tuple[str, str]) -> bool:
    namespace, name = root
    if name == "html" and b"http://www.w3.org/2002/xforms" in head:
        return True
    return (bool(name) and b"instanceID" in head and b" id=" in head and namespace in ("", XFORMS_NS)) or (
        bool(name) and namespace == "" and b"<instanceID>" in head
    )


def parse_any_csv(
    source: Source,
    *,
    sme_id: str = "",
    raw_sha256: str = "",
    limits: Limits = DEFAULT_LIMITS,
    companions: dict[str, bytes] | None = None,
    name: str = "main",
) -> Parsed:
    """A CSV from ODK: an XLSForm (first cell ``survey``) or a Central export."""
    data = read_all(source, limits)
    if data[:4] != b"PK\x03\x04":
        text = decode_text(data)
        if text.lstrip('"').lower().startswith("survey"):
            return parse_xlsform_csv(text, sme_id=sme_id, raw_sha256=raw_sha256)
    return parse_csv(
        data, sme_id=sme_id, raw_sha256=raw_sha256, limits=limits, companions=companions, name=name
    )
