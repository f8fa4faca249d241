"""The Norwegian Tax Administration's validation result for an mva-melding (``valideringsresultat``).

Skatteetaten's validation service (and the Altinn submission's feedback) answers a submitted VAT
return with an XML document in the namespace
``no:skatteetaten:fastsetting:avgift:mva:valideringsresultat:v1`` (schema
``no.skatteetaten.fastsetting.avgift.mva.valideringsresultat.v1.xsd``; early test environments
wrote ``…:v0.1``):

* ``avvikVedMeldingslevering`` - the verdict on the whole return: ``ingen avvik`` (also written
  ``ok``), ``avvikende skattemelding`` (deviating: accepted, but a caseworker may follow up),
  ``mangelfull skattemelding`` (incomplete) or ``ugyldig skattemelding`` (invalid: not accepted);
* one ``avvik`` per place at fault: ``stiTilAvvik`` (path in the return), ``mvaKode``,
  ``xmlLinjenummer``, ``xmlPosisjonPaaLinje``, and one or more ``avviksinformasjon``: ``begrunnelse``
  (the reason, in Norwegian), ``avvikstype`` (severity, same values as the verdict), ``avvikKode``,
  ``regelDefinisjon`` (the rule, e.g. ``R018``) and ``detaljer``.

The verdict becomes the return's status (:data:`STATUSES`); a deviation of severity ``ugyldig
skattemelding`` is an *error*, the others *warnings* (``dossier parse`` prints ``status``,
``errors`` and ``deviations``, the count of both). ``dossier parse`` reads such a file alone, and
a return parsed from disk picks up its validation result beside it (``<stem>.valideringsresultat.xml``
or ``<stem>-valideringsresultat.xml``, see :func:`with_validation`).

>>> parsed = parse(EXAMPLE)
>>> parsed.totals["status"], parsed.totals["errors"], parsed.tables["vat_return_deviations"]["rule"].tolist()
('rejected', 1, ['R018'])
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
    iter_xml,
    local,
    text_of,
)

NAME = "mva-validering"
NAMESPACE_PREFIX = "no:skatteetaten:fastsetting:avgift:mva:valideringsresultat:"
STATUSES = {
    "ingen avvik": "accepted",
    "ok": "accepted",
    "avvikende skattemelding": "accepted_with_deviations",
    "mangelfull skattemelding": "incomplete",
    "ugyldig skattemelding": "rejected",
}
"""Verdict (``avvikVedMeldingslevering``) -> the VAT return's status."""
ERROR = "ugyldig skattemelding"

EXAMPLE = b"""<?xml version="1.0" encoding="UTF-8"?>
<valideringsresultat xmlns="no:skatteetaten:fastsetting:avgift:mva:valideringsresultat:v1">
  <avvikVedMeldingslevering>ugyldig skattemelding</avvikVedMeldingslevering>
  <avvik>
    <stiTilAvvik>//skattegrunnlagOgBeregnetSkatt/fastsattMerverdiavgift</stiTilAvvik>
    <avviksinformasjon>
      <begrunnelse>Summen av merverdiavgift for hver avgiftslinje er ikke lik fastsattMerverdiavgift</begrunnelse>
      <avvikstype>ugyldig skattemelding</avvikstype>
      <avvikKode>MVA_MELDINGSINNHOLD_SUM_AVGIFT</avvikKode>
      <regelDefinisjon>R018</regelDefinisjon>
    </avviksinformasjon>
  </avvik>
</valideringsresultat>
"""

DEVIATION_COLUMNS = [
    "sme_id",
    "path",
    "vat_code",
    "xml_line",
    "xml_position",
    "severity",
    "code",
    "rule",
    "reason",
    "details",
    "source_record",
    "raw_sha256",
]


def _status(verdict: str | None, *, record: str, field: str) -> str:
    key = (verdict or "").strip().lower()
    if key not in STATUSES:
        known = ", ".join(sorted({k for k in STATUSES if k != "ok"}))
        raise FormatError(
            f"unknown verdict {verdict!r} (expected one of {known})", record=record, field=field
        )
    return STATUSES[key]


def _whole(text: str | None, *, record: str, field: str) -> int | None:
    if text is None or not text.strip():
        return None
    try:
        return int(text.strip())
    except ValueError:
        raise FormatError(f"not a whole number: {text.strip()[:40]!r}", record=record, field=field) from None


def parse(
    source: Source, *, sme_id: str = "", raw_sha256: str = "", limits: Limits = DEFAULT_LIMITS
) -> Parsed:
    """A ``valideringsresultat`` XML file -> the return's status and one row per deviation."""
    budget = Budget(limits)
    verdict: str | None = None
    rows: list[dict[str, Any]] = []
    seen_root = False
    places = 0
    for event, element, depth in iter_xml(source, limits):
        name = local(element.tag)
        if event == "start":
            if depth == 1:
                seen_root = True
                if name != "valideringsresultat" or not str(element.tag).startswith("{" + NAMESPACE_PREFIX):
                    raise FormatError(f"not an mva-melding validation result (root element {element.tag})")
            continue
        if depth == 2 and name == "avvikVedMeldingslevering":
            verdict = (element.text or "").strip()
        elif depth == 2 and name == "avvik":
            record = f"avvik[{places}]"
            places += 1
            informations = [child for child in element if local(child.tag) == "avviksinformasjon"]
            if not informations:
                raise FormatError("missing", record=record, field="avviksinformasjon")
            for index, information in enumerate(informations):
                detail = f"{record}/avviksinformasjon[{index}]"
                budget.count(detail)
                severity = text_of(information, "avvikstype")
                _status(severity, record=detail, field="avvikstype")
                code = text_of(element, "mvaKode")
                rows.append(
                    {
                        "sme_id": sme_id,
                        "path": text_of(element, "stiTilAvvik"),
                        "vat_code": None if code in (None, "null") else code,
                        "xml_line": _whole(
                            text_of(element, "xmlLinjenummer"), record=record, field="xmlLinjenummer"
                        ),
                        "xml_position": _whole(
                            text_of(element, "xmlPosisjonPaaLinje"),
                            record=record,
                            field="xmlPosisjonPaaLinje",
                        ),
                        "severity": (severity or "").strip().lower(),
                        "code": text_of(information, "avvikKode"),
                        "rule": text_of(information, "regelDefinisjon"),
                        "reason": text_of(information, "begrunnelse"),
                        "details": text_of(information, "detaljer"),
                        "source_record": detail,
                        "raw_sha256": raw_sha256,
                    }
                )
            element.clear(keep_tail=False)
    if not seen_root:
        raise FormatError("no XML element found")
    if verdict is None:
        raise FormatError("missing", record="valideringsresultat", field="avvikVedMeldingslevering")
    status = _status(verdict, record="valideringsresultat", field="avvikVedMeldingslevering")
    deviations = pd.DataFrame(rows, columns=DEVIATION_COLUMNS).astype(
        {"xml_line": "Int64", "xml_position": "Int64"}
    )
    errors = int((deviations["severity"] == ERROR).sum())
    warnings = []
    if status == "accepted" and len(deviations):
        warnings.append(f"the verdict is {verdict!r}, yet {len(deviations)} deviations are listed")
    if status == "rejected" and not errors:
        warnings.append("the verdict is 'ugyldig skattemelding', yet no deviation of that severity is listed")
    result = pd.DataFrame(
        [
            {
                "sme_id": sme_id,
                "status": status,
                "verdict": verdict.lower(),
                "errors": errors,
                "warnings": len(deviations) - errors,
                "source_record": "valideringsresultat",
                "raw_sha256": raw_sha256,
            }
        ]
    )
    return Parsed(
        format=NAME,
        tables={"vat_return_status": result, "vat_return_deviations": deviations},
        totals={"status": status, "errors": errors, "deviations": len(deviations)},
        warnings=warnings,
    )


def with_validation(vat_return: Parsed, validation: Parsed) -> Parsed:
    """The return with its status (and deviations) from its validation result."""
    status = validation.tables["vat_return_status"].iloc[0]
    summary = vat_return.tables["vat_return_no"].assign(
        status=status["status"],
        validation_errors=int(status["errors"]),
        validation_warnings=int(status["warnings"]),
    )
    deviations = validation.tables["vat_return_deviations"].assign(sme_id=summary["sme_id"].iloc[0])
    return Parsed(
        format=vat_return.format,
        tables={**vat_return.tables, "vat_return_no": summary, "vat_return_deviations": deviations},
        totals={**vat_return.totals, "status": status["status"]},
        warnings=[*vat_return.warnings, *validation.warnings],
    )


def detect(head: bytes, root: tuple[str, str]) -> bool:
    return root[0].startswith(NAMESPACE_PREFIX)
