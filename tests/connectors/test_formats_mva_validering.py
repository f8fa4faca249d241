"""The tax authority's validation result of an mva-melding: verdict -> the return's status, deviations."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from connectors.formats import detect, mva_validering, parse, parse_path
from connectors.formats.base import FormatError
from dossier.cli import main

FIXTURES = Path(__file__).parent / "fixtures"
RESULT = (FIXTURES / "mva_valideringsresultat.xml").read_bytes()
NS = "no:skatteetaten:fastsetting:avgift:mva:valideringsresultat:v1"


def verdict_only(verdict: str, namespace: str = NS) -> bytes:
    return (
        f'<?xml version="1.0"?><valideringsresultat xmlns="{namespace}">'
        f"<avvikVedMeldingslevering>{verdict}</avvikVedMeldingslevering></valideringsresultat>"
    ).encode()


def test_deviations_are_read_with_their_place_rule_and_severity() -> None:
    parsed = mva_validering.parse(RESULT, sme_id="SME-1", raw_sha256="h")

    assert detect(RESULT).name == parsed.format == "mva-validering"
    assert parsed.totals == {"status": "rejected", "errors": 1, "deviations": 2}
    assert parsed.warnings == []
    assert parsed.tables["vat_return_status"].to_dict("records") == [
        {
            "sme_id": "SME-1",
            "status": "rejected",
            "verdict": "ugyldig skattemelding",
            "errors": 1,
            "warnings": 1,
            "source_record": "valideringsresultat",
            "raw_sha256": "h",
        }
    ]
    rows = parsed.tables["vat_return_deviations"].astype(object).where(lambda f: f.notna(), None)
    assert rows.to_dict("records") == [
        {
            "sme_id": "SME-1",
            "path": "//skattegrunnlagOgBeregnetSkatt/fastsattMerverdiavgift",
            "vat_code": None,
            "xml_line": None,
            "xml_position": None,
            "severity": "ugyldig skattemelding",
            "code": "MVA_MELDINGSINNHOLD_SUM_AVGIFT_ULIK_FASTSATT",
            "rule": "R018",
            "reason": "Summen av merverdiavgift for hver avgiftslinje er ikke lik feltet fastsattMerverdiavgift",
            "details": None,
            "source_record": "avvik[0]/avviksinformasjon[0]",
            "raw_sha256": "h",
        },
        {
            "sme_id": "SME-1",
            "path": "//mvaSpesifikasjonslinje[2]/grunnlag",
            "vat_code": "3",
            "xml_line": 14,
            "xml_position": 22,
            "severity": "avvikende skattemelding",
            "code": "MVA_MELDINGSINNHOLD_UTGAAENDE_MOTSATT_FORTEGN_MERKNAD_MANGLER",
            "rule": "R020",
            "reason": "Merknad til beløp med motsatt fortegn som gjelder grunnlag og utgående avgift mangler",
            "details": "grunnlag -1200",
            "source_record": "avvik[1]/avviksinformasjon[0]",
            "raw_sha256": "h",
        },
    ]


@pytest.mark.parametrize(
    ("verdict", "status"),
    [
        ("ingen avvik", "accepted"),
        ("ok", "accepted"),
        ("avvikende skattemelding", "accepted_with_deviations"),
        ("mangelfull skattemelding", "incomplete"),
        ("Ugyldig skattemelding", "rejected"),
    ],
)
def test_each_verdict_is_a_status(verdict: str, status: str) -> None:
    parsed = parse(verdict_only(verdict, NS.replace(":v1", ":v0.1")))
    assert parsed.totals["status"] == status
    assert parsed.tables["vat_return_deviations"].empty


def test_an_unknown_verdict_or_a_missing_one_names_the_field() -> None:
    with pytest.raises(FormatError) as caught:
        parse(verdict_only("kanskje"))
    assert str(caught.value).startswith(
        "record valideringsresultat, field avvikVedMeldingslevering: unknown verdict 'kanskje'"
    )
    with pytest.raises(FormatError, match="field avvikVedMeldingslevering: missing"):
        parse(f'<valideringsresultat xmlns="{NS}"/>'.encode())
    with pytest.raises(FormatError, match="field xmlLinjenummer: not a whole number: 'fjorten'"):
        parse(RESULT.replace(b">14<", b">fjorten<"))


def test_a_return_read_from_disk_takes_the_status_of_its_validation_result(tmp_path: Path) -> None:
    melding = tmp_path / "mva_2024_02.xml"
    shutil.copy(FIXTURES / "mva_melding_monthly.xml", melding)
    alone = parse_path(melding).tables["vat_return_no"].iloc[0]
    assert (alone["status"], alone["validation_errors"]) == ("not_validated", None)

    (tmp_path / "mva_2024_02.valideringsresultat.xml").write_bytes(RESULT)
    validated = parse_path(melding)

    head = validated.tables["vat_return_no"].iloc[0]
    assert (head["status"], head["validation_errors"], head["validation_warnings"]) == ("rejected", 1, 1)
    assert validated.totals["status"] == "rejected"
    assert validated.tables["vat_return_deviations"]["rule"].tolist() == ["R018", "R020"]


def test_dossier_parse_prints_the_status(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "result.xml"
    path.write_bytes(RESULT)
    assert main(["parse", str(path), "--out", str(tmp_path / "out")]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed == {
        "format": "mva-validering",
        "tables": {"vat_return_status": 1, "vat_return_deviations": 2},
        "status": "rejected",
        "errors": 1,
        "deviations": 2,
        "warnings": [],
    }
