"""The KoboToolbox export parser: every form into survey_submissions, mapped forms into survey_visits."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import pandas as pd

from connectors.core.parsing import SmePages
from connectors.core.streams import RawPage
from connectors.survey.kobo import parse_batch, parse_bytes, split_geopoint
from evaluation.features import compute_features
from warehouse.canonical import SURVEY_SUBMISSIONS, SURVEY_VISITS

FORMPACK = Path("realdata") / "field_survey"


def submission(visit: str, **changes: object) -> dict[str, object]:
    answers: dict[str, object] = {
        "_id": 11,
        "formhub/uuid": "f0",
        "start": "2026-05-03T10:15:00.000+01:00",
        "end": "2026-05-03T10:40:00.000+01:00",
        "sme_code": "sc2345",
        "group_premises/premises_found": "yes",
        "group_premises/business_operating": "no",
        "group_premises/location": "51.507400 -0.127800 12.0 4.5",
        "group_observation/employees_observed": "3",
        "group_observation/stock_level": "low",
        "group_owner/reported_monthly_revenue": "12500",
        "notes": "Quiet during the visit.",
        "__version__": "vForm2",
        "_uuid": visit,
        "_attachments": [{"id": 1}, {"id": 2}],
        "_geolocation": [51.5074, -0.1278],
        "_submission_time": "2026-05-03T09:41:07",
        "_validation_status": {},
        "_submitted_by": "agent_007",
    }
    for key, value in changes.items():
        if value is None:
            answers.pop(key, None)
        else:
            answers[key] = value
    return answers


def page(label: str, *submissions: dict[str, object]) -> RawPage:
    body = {"count": len(submissions), "next": None, "previous": None, "results": list(submissions)}
    return RawPage("submissions", label, "", json.dumps(body).encode(), "application/json")


def test_a_submission_becomes_one_visit_in_utc() -> None:
    listing = page(
        "start=0",
        submission("uuid-1"),
        submission("uuid-2", **{"group_observation/employees_observed": None}),
    )

    result = parse_batch([SmePages("SME-000012", [listing])])

    rows = SURVEY_VISITS.to_arrow(result.tables["survey_visits"]).to_pylist()
    assert rows[0] == {
        "sme_id": "SME-000012",
        "visit_id": "uuid-1",
        "form_version": "vForm2",
        "agent_id": "agent_007",
        "visited_at": dt.datetime(2026, 5, 3, 9, 15, tzinfo=dt.UTC),
        "submitted_at": dt.datetime(2026, 5, 3, 9, 41, 7, tzinfo=dt.UTC),
        "premises_found": True,
        "business_operating": False,
        "employees_observed": 3,
        "customers_observed": None,
        "stock_level": "low",
        "reported_monthly_revenue": 12500.0,
        "latitude": 51.5074,
        "longitude": -0.1278,
        "photo_count": 2,
        "notes": "Quiet during the visit.",
        "source_record": "start=0/results[0]",
        "raw_sha256": listing.sha256,
    }
    assert (rows[1]["visit_id"], rows[1]["employees_observed"]) == ("uuid-2", None)
    assert result.records_raw == {"SME-000012": 2}


def test_answers_that_do_not_fit_the_form_are_rejects() -> None:
    listing = page(
        "start=0",
        submission(
            "uuid-1",
            **{
                "group_observation/employees_observed": "a few",
                "group_premises/location": "not captured",
                "group_premises/business_operating": "maybe",
                "start": None,
            },
        ),
    )
    result = parse_batch([SmePages("SME-000013", [listing])])

    assert sorted(zip(result.rejects["field"], result.rejects["reason"], strict=True)) == [
        ("group_observation/employees_observed", "not a number: 'a few'"),
        ("group_premises/business_operating", "not one of yes, true, 1, no, false, 0: 'maybe'"),
        ("group_premises/location", "not a geopoint 'lat lon [alt [accuracy]]': not captured"),
        ("start", "missing"),
    ]
    assert set(result.rejects["record"]) == {"start=0/results[0]"}
    assert result.tables["survey_visits"].empty


def test_geopoints_keep_latitude_and_longitude_whatever_follows() -> None:
    points = split_geopoint(pd.Series(["13.42 -25.43", "12.43 -24.54 1 0", "95 10", ""]))
    assert points.iloc[:2].values.tolist() == [[13.42, -25.43], [12.43, -24.54]]
    assert points.iloc[2:].isna().all().all()  # latitude 95 is off the globe; an empty answer is no point


def formpack(shared_data: Path, name: str) -> bytes:
    return (shared_data / FORMPACK / name).read_bytes()


def test_every_submission_is_also_a_generic_row_naming_its_mapping() -> None:
    listing = page("start=0", submission("uuid-1"))

    result = parse_batch([SmePages("SME-000012", [listing])])

    (row,) = SURVEY_SUBMISSIONS.to_arrow(result.tables["survey_submissions"]).to_pylist()
    answers = json.loads(row.pop("answers"))
    assert row == {
        "sme_id": "SME-000012",
        "submission_id": "uuid-1",
        "form_id": None,
        "form_version": "vForm2",
        "agent_id": "agent_007",
        "started_at": dt.datetime(2026, 5, 3, 9, 15, tzinfo=dt.UTC),
        "ended_at": dt.datetime(2026, 5, 3, 9, 40, tzinfo=dt.UTC),
        "submitted_at": dt.datetime(2026, 5, 3, 9, 41, 7, tzinfo=dt.UTC),
        "latitude": 51.5074,
        "longitude": -0.1278,
        "attachments": 2,
        "mapping": "field_visit",
        "source_record": "start=0/results[0]",
        "raw_sha256": listing.sha256,
    }
    assert answers == {
        "group_observation/employees_observed": "3",
        "group_observation/stock_level": "low",
        "group_owner/reported_monthly_revenue": "12500",
        "group_premises/business_operating": "no",
        "group_premises/location": "51.507400 -0.127800 12.0 4.5",
        "group_premises/premises_found": "yes",
        "notes": "Quiet during the visit.",
        "sme_code": "sc2345",
    }


def test_a_form_without_a_mapping_is_stored_not_rejected() -> None:
    other_form = {
        "_uuid": "uuid-9",
        "_submission_time": "2026-05-04T08:00:00",
        "_submitted_by": "agent_007",
        "shop/sign_visible": "yes",
        "shop/photos": [{"shop/photos/caption": "front"}, {"shop/photos/caption": "till"}],
    }
    mapped = page("start=0", submission("uuid-1"))
    unmapped = page("start=0", other_form)

    result = parse_batch([SmePages("SME-1", [mapped]), SmePages("SME-2", [unmapped])])

    assert result.ok
    assert result.records_raw == {"SME-1": 1, "SME-2": 1}
    submissions = result.tables["survey_submissions"]
    assert submissions[["sme_id", "submission_id"]].values.tolist() == [
        ["SME-1", "uuid-1"],
        ["SME-2", "uuid-9"],
    ]
    assert submissions["mapping"].fillna("").tolist() == ["field_visit", ""]
    assert json.loads(submissions["answers"].iloc[1]) == {
        "shop/photos[0]/caption": "front",
        "shop/photos[1]/caption": "till",
        "shop/sign_visible": "yes",
    }
    assert result.tables["survey_visits"]["sme_id"].tolist() == ["SME-1"]


def test_an_unreadable_platform_time_is_a_reject_of_any_form() -> None:
    listing = page("start=0", {"_uuid": "u", "_submission_time": "yesterday", "q": "1"})

    result = parse_batch([SmePages("SME-3", [listing])])

    assert result.rejects[["record", "field", "reason"]].values.tolist() == [
        ["start=0/results[0]", "_submission_time", "not an ISO 8601 time: 'yesterday'"]
    ]
    assert result.tables["survey_submissions"].empty


def test_formpack_exports_are_unmapped_surveys_record_by_record(shared_data: Path) -> None:
    files = {
        "S1": "kobo_formpack_restaurant_profile_v4.json",
        "S2": "kobo_formpack_nested_grouped_repeatable_v1.json",
        "S3": "kobo_formpack_site_inspection_v1.json",
    }
    batch = [
        SmePages(sme_id, [RawPage("f", sme_id, "", formpack(shared_data, name), "")])
        for sme_id, name in files.items()
    ]

    result = parse_batch(batch)

    assert result.ok
    assert result.records_raw == {"S1": 4, "S2": 2, "S3": 2}
    assert result.tables["survey_visits"].empty
    submissions = result.tables["survey_submissions"]
    assert submissions.groupby("sme_id").size().to_dict() == {"S1": 4, "S2": 2, "S3": 2}
    assert submissions["mapping"].isna().all()
    restaurants = submissions[submissions["sme_id"] == "S1"].sort_values("source_record")
    assert restaurants[["latitude", "longitude"]].values.tolist() == [
        [13.42, -25.43],
        [12.43, -24.53],
        [12.43, -24.54],
        [12.43, -24.54],
    ]
    eatery = [json.loads(a).get("eatery_type") for a in restaurants["answers"]]
    assert eatery[:3] == ["takeaway sit_down", "sit_down", ""]
    nests = submissions[submissions["sme_id"] == "S2"].sort_values("source_record")
    shapes = []
    for text in nests["answers"]:
        paths = json.loads(text)
        shapes.append(
            (
                len({p.split("/")[0] for p in paths if p.startswith("group_tree[")}),
                len({"/".join(p.split("/")[:2]) for p in paths if "/group_nest[" in p}),
                sum(p.endswith("/Describe_the_egg") for p in paths),
            )
        )
    assert shapes == [(2, 3, 6), (1, 1, 1)]


def test_one_file_of_a_real_form_parses_alone(shared_data: Path) -> None:
    result = parse_bytes(
        formpack(shared_data, "kobo_formpack_site_inspection_v1.json"), sme_id="S", label="sites"
    )
    assert result.ok
    assert sorted(result.tables["survey_submissions"]["source_record"]) == [
        "sites/submissions[0]",
        "sites/submissions[1]",
    ]


def test_an_unmapped_survey_gives_no_visit_verification_and_no_error() -> None:
    other_form = {"_uuid": "u-1", "_submission_time": "2026-05-04T08:00:00", "shop/sign_visible": "yes"}
    mapped = page("start=0", submission("uuid-1"))
    result = parse_batch([SmePages("SME-1", [mapped]), SmePages("SME-2", [page("start=0", other_form)])])
    smes = pd.DataFrame({"sme_id": ["SME-1", "SME-2"], "history_months": [24, 24]})

    features = compute_features(result.tables, smes, as_of=dt.date(2026, 6, 1))

    survey = features[["survey_visits", "survey_verified_rate"]]
    assert survey.iloc[0].tolist() == [1.0, 0.0]
    assert survey.iloc[1].isna().all()
    assert ["survey" in used for used in features["sources_used"]] == [True, False]
