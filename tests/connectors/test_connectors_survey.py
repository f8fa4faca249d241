"""The KoboToolbox export parser: field-visit submissions of our own, formpack's published exports."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import pandas as pd

from connectors.core.parsing import SmePages
from connectors.core.streams import RawPage
from connectors.survey.kobo import SurveyForm, parse_batch, parse_bytes, split_geopoint, submissions_frame
from warehouse.canonical import SURVEY_VISITS

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


def test_formpack_exports_are_read_record_by_record(shared_data: Path) -> None:
    batch = [
        SmePages(
            "S1",
            [
                RawPage(
                    "f",
                    "restaurant",
                    "",
                    formpack(shared_data, "kobo_formpack_restaurant_profile_v4.json"),
                    "",
                )
            ],
        ),
        SmePages(
            "S2",
            [
                RawPage(
                    "f",
                    "nests",
                    "",
                    formpack(shared_data, "kobo_formpack_nested_grouped_repeatable_v1.json"),
                    "",
                )
            ],
        ),
        SmePages(
            "S3",
            [RawPage("f", "sites", "", formpack(shared_data, "kobo_formpack_site_inspection_v1.json"), "")],
        ),
    ]
    wide, rejects, counts = submissions_frame(batch)

    assert rejects.empty
    assert counts == {"S1": 4, "S2": 2, "S3": 2}
    restaurants = wide[wide["sme_id"] == "S1"]
    assert split_geopoint(restaurants["location"]).values.tolist() == [
        [13.42, -25.43],
        [12.43, -24.53],
        [12.43, -24.54],
        [12.43, -24.54],
    ]
    assert restaurants["eatery_type"].tolist()[:3] == ["takeaway sit_down", "sit_down", ""]
    trees = wide.loc[wide["sme_id"] == "S2", "group_tree"].map(len).tolist()
    assert trees == [2, 1]


def test_formpack_visits_map_where_the_fields_exist_and_name_what_is_missing(shared_data: Path) -> None:
    nests = parse_bytes(
        formpack(shared_data, "kobo_formpack_nested_grouped_repeatable_v1.json"), sme_id="S", label="nests"
    )
    assert sorted(set(zip(nests.rejects["field"], nests.rejects["reason"], strict=True))) == [
        ("_submitted_by", "missing"),
        ("group_premises/business_operating", "missing"),
        ("group_premises/premises_found", "missing"),
    ]

    inspection_form = SurveyForm(
        visit_id="meta/instanceID",
        agent_id="inspector",
        premises_found="did_you_find_the_site",
        business_operating="is_the_gate_secure",
    )
    sites = parse_bytes(
        formpack(shared_data, "kobo_formpack_site_inspection_v1.json"), sme_id="S", form=inspection_form
    )
    missing = sites.rejects.groupby("record")["field"].agg(sorted).to_dict()
    assert missing == {
        "submissions[0]": ["__version__", "_submission_time", "meta/instanceID", "start"],
        "submissions[1]": [
            "__version__",
            "_submission_time",
            "is_the_gate_secure",
            "meta/instanceID",
            "start",
        ],
    }

    restaurant_form = SurveyForm(location="location")
    restaurants = parse_bytes(
        formpack(shared_data, "kobo_formpack_restaurant_profile_v4.json"), sme_id="S", form=restaurant_form
    )
    assert "location" not in set(restaurants.rejects["field"])
