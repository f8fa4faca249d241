"""What happened on an as-of date, read back from the warehouse and the store (``dossier status``)."""

from __future__ import annotations

import datetime as dt
import re
from collections import Counter
from pathlib import Path
from typing import Any

import pandas as pd
from rich.console import Console
from rich.table import Table
from sqlalchemy import select

from dossier.monitoring import read_stability
from dossier.pipeline import HOLD_STAGE, SCORES_STEP, as_of_instant
from warehouse import consent
from warehouse.canonical import SOURCES
from warehouse.db import session_scope
from warehouse.dossier_schema import SCHEMA_VERSION
from warehouse.dossier_store import read_as_of, versions_as_of
from warehouse.models import Consent, IngestionRun, Lender, Publish, QuarantineEntry, Sme
from warehouse.storage import Store

SHOWN_COLUMNS = [
    "sme_id",
    "industry",
    "grade",
    "pd_12m",
    "coverage",
    "credit_limit",
    "indicative_rate",
    "consistency_score",
    "reason_codes",
]


def quarantine_entries(
    as_of: dt.date, *, sme_id: str | None = None, include_resolved: bool = False
) -> list[dict]:
    """Quarantine entries of ``as_of`` (open ones unless ``include_resolved``), oldest first."""
    with session_scope() as session:
        query = (
            select(QuarantineEntry)
            .where(QuarantineEntry.as_of_date == as_of)
            .order_by(QuarantineEntry.sme_id, QuarantineEntry.id)
        )
        if sme_id:
            query = query.where(QuarantineEntry.sme_id == sme_id)
        if not include_resolved:
            query = query.where(QuarantineEntry.resolved_at.is_(None))
        return [
            {
                c: getattr(entry, c)
                for c in (
                    "sme_id",
                    "stage",
                    "source",
                    "table_name",
                    "record",
                    "field",
                    "reason",
                    "raw_sha256",
                    "resolved_at",
                )
            }
            for entry in session.scalars(query)
        ]


def reason_label(entry: dict) -> str:
    """A reason without its record-specific values, so that like reasons group together."""
    sentence = re.search(r"field [^:]+: (.*?) \[", entry["reason"])
    reason = sentence.group(1) if sentence else entry["reason"]
    reason = re.sub(r"'[^']*'|\"[^\"]*\"|\b\d[\d.,:\-T]*\b", "…", reason)
    place = ".".join(p for p in (entry["table_name"] or entry["source"], entry["field"]) if p)
    return f"{entry['stage']} · {place}: {reason[:90]}"


OUTCOMES: dict[str, str] = {
    "published": "published",
    "evaluated_not_published": "evaluated, not published (no lender consent covers it)",
    "held": "held: a consented source failed to pull",
    "quarantined": "quarantined (ingest or validation), not evaluated",
    "pulled_not_evaluated": "pulled, not evaluated (the publish DAG has not run)",
    "pull_failed": "pulls failed, none succeeded (see ingestion_runs)",
    "no_active_consent": "no active consent for any source: nothing pulled",
    "not_pulled": "active consent, no pull recorded",
}
"""Where each registered SME ended up on an as-of date, furthest step first; they add up to the SMEs registered."""


def sme_outcomes(
    *,
    registered: set[str],
    consenting: set[str],
    runs: list[Any],
    held: set[str],
    quarantined: set[str],
    evaluated: set[str],
    published: set[str],
) -> dict[str, int]:
    """Count each registered SME once, under the furthest step it reached (:data:`OUTCOMES`).

    ``runs`` are ``(sme_id, source, status)`` rows of ``ingestion_runs``. An SME some of whose
    pulls failed but one of which succeeded (``pulled``, or ``uploaded``: read from its files) counts as pulled; one whose every pull failed counts
    under ``pull_failed``; one whose pulls were all skipped for want of consent (``skipped_no_consent``)
    under ``no_active_consent``; one with a dossier held back because a consented source failed
    (``held``) under ``held``.

    >>> sme_outcomes(registered={"a", "b", "c", "d"}, consenting={"a", "b", "c"},
    ...              runs=[("a", "tax", "pulled"), ("b", "tax", "failed"), ("c", "tax", "skipped_no_consent")],
    ...              held=set(), quarantined=set(),
    ...              evaluated={"a"}, published={"a"})
    {'published': 1, 'evaluated_not_published': 0, 'held': 0, 'quarantined': 0, 'pulled_not_evaluated': 0, 'pull_failed': 1, 'no_active_consent': 2, 'not_pulled': 0}
    """
    statuses: dict[str, set[str]] = {}
    for sme, _source, status in runs:
        statuses.setdefault(sme, set()).add(status)
    counts = dict.fromkeys(OUTCOMES, 0)
    for sme in registered:
        seen = statuses.get(sme, set())
        if sme in published:
            counts["published"] += 1
        elif sme in evaluated:
            counts["evaluated_not_published"] += 1
        elif sme in held:
            counts["held"] += 1
        elif sme in quarantined or "quarantined" in seen:
            counts["quarantined"] += 1
        elif seen & {"pulled", "uploaded"}:
            counts["pulled_not_evaluated"] += 1
        elif "failed" in seen:
            counts["pull_failed"] += 1
        elif seen or sme not in consenting:
            counts["no_active_consent"] += 1
        else:
            counts["not_pulled"] += 1
    return counts


def pipeline_report(as_of: dt.date) -> dict[str, Any]:
    """Counts and samples describing the run of ``as_of``."""
    store = Store.from_settings()
    at = as_of_instant(as_of)
    with session_scope() as session:
        smes = session.scalars(select(Sme.sme_id)).all()
        coverage = {s for s, terms in consent.terms_of(session, smes, active_at=(at,)).items() if terms}
        held = session.execute(
            select(QuarantineEntry.sme_id, QuarantineEntry.record).where(
                QuarantineEntry.as_of_date == as_of,
                QuarantineEntry.stage == HOLD_STAGE,
                QuarantineEntry.resolved_at.is_(None),
            )
        ).all()
        statuses = Counter(session.scalars(select(Consent.status)).all())
        runs = session.execute(
            select(IngestionRun.sme_id, IngestionRun.source, IngestionRun.status).where(
                IngestionRun.as_of_date == as_of
            )
        ).all()
        current = versions_as_of(session, as_of)  # new versions of the date and those it kept
        published = list(zip(current["sme_id"], current["grade"], strict=True))
        new_versions = int((current["as_of_date"] == as_of).sum())
        publish_row = session.scalars(select(Publish).where(Publish.as_of_date == as_of)).first()
        manifest = f"{store.root}/{publish_row.manifest_path}" if publish_row else None
        lenders = session.scalars(select(Lender.lender_id).order_by(Lender.lender_id)).all()
    entries = quarantine_entries(as_of)

    pulled = {sme for sme, _source, status in runs if status == "pulled"}
    per_source = {s: Counter(status for _sme, source, status in runs if source == s) for s in SOURCES}
    quarantined = {e["sme_id"] for e in entries}
    labels_by_sme: dict[str, set[str]] = {}
    for entry in entries:
        labels_by_sme.setdefault(entry["sme_id"], set()).add(reason_label(entry))
    reasons = Counter(label for labels in labels_by_sme.values() for label in labels)
    evaluated: set[str] = set()
    for path in store.list(store.layout.staging_dir(SCORES_STEP, as_of.isoformat()), suffix=".parquet"):
        evaluated.update(store.read_table(path, columns=["sme_id"]).column("sme_id").to_pylist())
    published_ids = {sme for sme, _grade in published}
    outcomes = sme_outcomes(
        registered=set(smes),
        consenting=set(coverage),
        runs=runs,
        held={sme for sme, _scope in held},
        quarantined=quarantined,
        evaluated=evaluated,
        published=published_ids,
    )
    rows = pd.DataFrame()
    partition = store.layout.dossier_partition(SCHEMA_VERSION, as_of.isoformat())
    try:
        with session_scope() as session:
            frame = read_as_of(session, store, as_of)
        rows = frame[SHOWN_COLUMNS].sort_values("sme_id").head(6)
        rows = rows.assign(
            pd_12m=(rows["pd_12m"] * 100).map("{:.1f}%".format),
            credit_limit=rows["credit_limit"].map("{:,.0f}".format),
            indicative_rate=(rows["indicative_rate"] * 100).map("{:.1f}%".format),
            coverage=rows["coverage"].map("{:.2f}".format),
            consistency_score=rows["consistency_score"].map(lambda v: "-" if pd.isna(v) else f"{v:.2f}"),
            reason_codes=rows["reason_codes"].map(lambda codes: ", ".join(list(codes)[:2])),
        )
        partition = (
            store.layout.dossier_partition(int(frame["schema_version"].iloc[0]), as_of.isoformat())
            if len(frame)
            else partition
        )
    except FileNotFoundError:
        pass
    return {
        "as_of": as_of.isoformat(),
        "ran": bool(runs or publish_row or evaluated),
        "outcomes": outcomes,
        "smes_registered": len(smes),
        "smes_with_active_consent": len(coverage),
        "smes_without_active_consent": len(smes) - len(coverage),
        "consents_by_status": dict(statuses),
        "smes_pulled": len(pulled),
        "pulls_by_source": {s: dict(c) for s, c in per_source.items()},
        "smes_quarantined": len(quarantined),
        "top_quarantine_reasons": reasons.most_common(6),
        "smes_evaluated": len(evaluated),
        "smes_published": len(published_ids),
        "dossiers_published": len(published),
        "dossiers_new_versions": new_versions,
        "dossiers_kept": len(published) - new_versions,
        "dossiers_held": len(set(held)),
        "smes_held": len({sme for sme, _scope in held}),
        "withheld_no_consent": len(smes) - len(coverage) + len(evaluated - published_ids),
        "withheld_no_lender_consent_after_evaluation": len(evaluated - published_ids),
        "grades": dict(sorted(Counter(grade for _sme, grade in published).items())),
        "dossier_partition": partition,
        "manifest": manifest,
        "lenders": list(lenders),
        "sample_rows": rows,
        "stability": read_stability(store, as_of),
    }


def pull_all_lenders(out_dir: Path) -> list[dict[str, Any]]:
    """Pull as every lender with an active subscription into ``out_dir/<lender>/``; returns each pull's summary."""
    from warehouse.feed import lender_status, pull
    from warehouse.models import Subscription

    store = Store.from_settings()
    results = []
    with session_scope() as session:
        lenders = session.scalars(
            select(Subscription.lender_id)
            .where(Subscription.active)
            .distinct()
            .order_by(Subscription.lender_id)
        ).all()
    for lender_id in lenders:
        with session_scope() as session:
            pulled = pull(session, store, lender_id=lender_id, out_dir=out_dir / lender_id)
            status = lender_status(session, lender_id)
        results.append(
            {
                "lender": lender_id,
                "delivered_in_total": status["deliveries"],
                "holding": status["holding"],
                **pulled,
            }
        )
    return results


def render_report(
    report: dict[str, Any], console: Console, pulls: list[dict[str, Any]] | None = None
) -> None:
    """Print the report as readable tables."""
    console.rule(f"[bold]As of {report['as_of']}")
    if not report["ran"]:
        console.print(
            f"No run recorded for as-of {report['as_of']}: nothing was pulled, evaluated or published "
            f"for this date ({report['smes_registered']} SMEs registered, "
            f"{report['smes_with_active_consent']} with an active consent). "
            f"Run it with: dossier run --as-of {report['as_of']}"
        )
        return
    funnel = Table("where each SME ended up", "SMEs", title="What happened to each SME", title_justify="left")
    for key, label in OUTCOMES.items():
        funnel.add_row(label, str(report["outcomes"][key]))
    funnel.add_section()
    funnel.add_row("registered", str(report["smes_registered"]))
    funnel.add_section()
    funnel.add_row("dossier versions published (one per consent scope)", str(report["dossiers_published"]))
    funnel.add_row("  new or changed on this date", str(report["dossiers_new_versions"]))
    funnel.add_row("  kept from an earlier date (unchanged)", str(report["dossiers_kept"]))
    funnel.add_row("dossier versions held (a consented source failed to pull)", str(report["dossiers_held"]))
    console.print(funnel)

    sources = Table("source", "outcomes", title="Pulls by source", title_justify="left")
    for source, outcomes in report["pulls_by_source"].items():
        sources.add_row(source, ", ".join(f"{k} {v}" for k, v in sorted(outcomes.items())) or "none")
    console.print(sources)

    if report["top_quarantine_reasons"]:
        reasons = Table(
            "SMEs",
            "reason",
            title="Top quarantine reasons (dossier quarantine lists all)",
            title_justify="left",
        )
        for label, count in report["top_quarantine_reasons"]:
            reasons.add_row(str(count), label)
        console.print(reasons)

    grades = Table(
        *report["grades"].keys(), title="Grade distribution of published dossiers", title_justify="left"
    )
    grades.add_row(*(str(v) for v in report["grades"].values()))
    console.print(grades)
    console.print(f"Dossier Parquet: {report['dossier_partition']}\nManifest: {report['manifest']}")
    render_stability(report.get("stability"), console)

    if pulls:
        table = Table(
            "lender",
            "purpose",
            "received now",
            "holding",
            "withheld by scope (SMEs)",
            "withdrawals",
            "file",
            title="What lenders pulled (a lender receives only what its consents' scope allows)",
            title_justify="left",
        )
        for p in pulls:
            table.add_row(
                p["lender"],
                p["purpose"],
                str(p["delivered"]),
                str(p["holding"]),
                str(p["not_entitled_smes"]),
                str(p["withdrawals"]),
                str(p["file"] or "-"),
            )
        console.print(table)

    sample: pd.DataFrame = report["sample_rows"]
    if len(sample):
        rows = Table(*sample.columns, title="A few dossier rows", title_justify="left")
        for record in sample.itertuples(index=False):
            rows.add_row(*(_fmt(v) for v in record))
        console.print(rows)


def render_stability(stability: dict[str, Any] | None, console: Console, worst: int = 6) -> None:
    """The publish's population stability: the PD's PSI and the inputs that moved most."""
    if not stability or not stability["psi"]:
        return
    psi = stability["psi"]
    table = Table(
        "input",
        "PSI",
        "reading",
        title="Population stability (PSI) against the training data",
        title_justify="left",
        caption=f"{stability['rows']} dossiers against {stability['reference']}; "
        "below 0.10 stable, above 0.25 shifted",
        caption_justify="left",
    )
    ranked = sorted((k for k in psi if k != "pd_12m"), key=lambda k: -(psi[k] or 0.0))
    for name in ["pd_12m", *ranked[:worst]]:
        if name in psi:
            value = psi[name]
            table.add_row(name, "-" if value is None else f"{value:.2f}", stability["verdicts"][name])
    console.print(table)


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:,.4f}" if abs(value) < 1 else f"{value:,.0f}"
    if hasattr(value, "tolist"):
        value = value.tolist()
    if isinstance(value, list):
        return ", ".join(map(str, value))
    return str(value)
