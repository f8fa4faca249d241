"""The ``dossier`` command: operate the warehouse, the sandbox, the pipeline and the lender feed.

Every subcommand has ``--help``; the README lists them all (a test keeps the two in step).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import logging
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from dossier.settings import get_settings
from warehouse.errors import DossierError

console = Console()
if not console.is_terminal:
    console = Console(width=140)


def _as_of(value: str | None) -> dt.date:
    from dossier.pipeline import parse_as_of

    return parse_as_of(value)


def _print_json(payload: Any) -> None:
    console.print_json(json.dumps(payload, default=str))


# --- db -------------------------------------------------------------------------------------------


def cmd_db_upgrade(args: argparse.Namespace) -> int:
    from warehouse.db import get_engine
    from warehouse.migrate import current_revision, upgrade

    get_settings().home.mkdir(parents=True, exist_ok=True)
    engine = get_engine()
    upgrade(engine)
    console.print(
        f"warehouse {engine.url.render_as_string(hide_password=True)} at revision {current_revision(engine)}"
    )
    return 0


def cmd_db_current(args: argparse.Namespace) -> int:
    from warehouse.db import get_engine
    from warehouse.migrate import current_revision, head_revision

    engine = get_engine()
    current, head = current_revision(engine), head_revision()
    console.print(f"current revision: {current or 'none (run: dossier db upgrade)'}; latest: {head}")
    return 0 if current == head else 1


# --- sandbox ----------------------------------------------------------------------------------------


def _universe(smes: int | None, as_of: dt.date | None = None) -> Any:
    from connectors.sandbox.universe import Universe

    settings = get_settings()
    return Universe(
        settings.sandbox_seed, smes or settings.sandbox_smes, as_of or dt.datetime.now(dt.UTC).date()
    )


def cmd_sandbox_serve(args: argparse.Namespace) -> int:
    from connectors.sandbox.server import serve_forever

    universe = _universe(args.smes)
    rate = get_settings().sandbox_fault_rate if args.fault_rate is None else args.fault_rate
    console.print(f"sandbox: {universe.size} SMEs (seed {universe.seed}) on http://{args.host}:{args.port}")
    serve_forever(universe, host=args.host, port=args.port, fault_rate=rate)
    return 0


def cmd_sandbox_seed(args: argparse.Namespace) -> int:
    from connectors.sandbox.seed import seed_warehouse
    from warehouse.db import get_engine, session_scope
    from warehouse.migrate import upgrade

    get_settings().home.mkdir(parents=True, exist_ok=True)
    upgrade(get_engine())
    universe = _universe(args.smes)
    with session_scope() as session:
        counts = seed_warehouse(session, universe, now=dt.datetime.now(dt.UTC))
    _print_json(counts)
    return 0


# --- pipeline ---------------------------------------------------------------------------------------


def cmd_run(args: argparse.Namespace) -> int:
    from dossier.demo import run_pipeline

    result = run_pipeline(as_of=_as_of(args.as_of), dags=args.dag)
    _print_json(result)
    return 0 if all(r["state"] == "success" for r in result["runs"]) else 1


def cmd_demo(args: argparse.Namespace) -> int:
    from dossier.demo import demo

    return demo(smes=args.smes, as_of=_as_of(args.as_of), console=console)


def cmd_status(args: argparse.Namespace) -> int:
    from dossier.report import pipeline_report, render_report

    render_report(pipeline_report(_as_of(args.as_of)), console)
    return 0


def cmd_quarantine(args: argparse.Namespace) -> int:
    from dossier.report import quarantine_entries

    rows = quarantine_entries(_as_of(args.as_of), sme_id=args.sme, include_resolved=args.all)
    table = Table("sme", "stage", "source", "table", "record", "field", "reason", "resolved")
    for row in rows:
        table.add_row(
            row["sme_id"],
            row["stage"],
            row["source"],
            row["table_name"],
            row["record"],
            row["field"],
            row["reason"],
            "yes" if row["resolved_at"] else "",
        )
    console.print(table)
    console.print(f"{len(rows)} entries")
    return 0


def cmd_airflow(args: argparse.Namespace) -> int:
    from dossier.airflow_runner import standalone

    return standalone(args.airflow_args or ["standalone"])


# --- consent ----------------------------------------------------------------------------------------


def _iso_date(value: str, argument: str) -> dt.date:
    """A whole ISO date (YYYY-MM-DD) given as ``argument``; a one-line error otherwise."""
    from warehouse.consent import ConsentError

    try:
        if len(value) != 10:
            raise ValueError
        return dt.date.fromisoformat(value)
    except ValueError:
        raise ConsentError(f"{argument} {value!r} is not a date YYYY-MM-DD") from None


def _csv(value: str | None) -> list[str]:
    return [v.strip() for v in (value or "").split(",") if v.strip()]


def cmd_consent_list(args: argparse.Namespace) -> int:
    from sqlalchemy import select

    from warehouse.consent import Terms, status_at
    from warehouse.db import session_scope
    from warehouse.models import Consent

    now = dt.datetime.now(dt.UTC)
    with session_scope() as session:
        query = select(Consent).order_by(Consent.sme_id, Consent.consent_id)
        if args.sme:
            query = query.where(Consent.sme_id == args.sme)
        consents = [Terms.of(c) for c in session.scalars(query)]
    if args.json:
        _print_json(
            [
                {
                    "consent_id": c.consent_id,
                    "sme_id": c.sme_id,
                    "status": status_at(c, now),
                    "scope": c.scope.key,
                    "sources": sorted(c.sources),
                    "recipients": sorted(c.recipients),
                    "purpose": c.purpose,
                    "history_months": c.history_months,
                    "granted_at": c.granted_at.isoformat(),
                    "expires_at": c.expires_at.isoformat(),
                    "revoked_at": c.revoked_at.isoformat() if c.revoked_at else None,
                }
                for c in consents
            ]
        )
        return 0
    table = Table("consent", "sme", "status", "sources", "recipients", "purpose", "history", "expires")
    for c in consents:
        table.add_row(
            c.consent_id,
            c.sme_id,
            status_at(c, now),
            ",".join(sorted(c.sources)),
            ",".join(sorted(c.recipients)),
            c.purpose,
            f"{c.history_months} months",
            c.expires_at.date().isoformat(),
        )
    console.print(table)
    return 0


def cmd_consent_grant(args: argparse.Namespace) -> int:
    import uuid

    from warehouse import consent
    from warehouse.db import session_scope

    now = dt.datetime.now(dt.UTC)
    expires = dt.datetime.combine(_iso_date(args.expires, "--expires"), dt.time(), tzinfo=dt.UTC)
    if expires <= now:
        raise consent.ConsentError(f"--expires {args.expires} is not in the future")
    consent_id = args.consent or f"C-{args.sme}-{uuid.uuid4().hex[:8]}"
    with session_scope() as session:
        granted = consent.grant(
            session,
            consent_id=consent_id,
            sme_id=args.sme,
            sources=_csv(args.sources),
            recipients=_csv(args.lenders),
            purpose=args.purpose,
            history_months=args.months,
            granted_at=now,
            expires_at=expires,
            actor=args.actor,
        )
        console.print(
            f"consent {granted.consent_id} of {granted.sme_id} granted: {','.join(granted.sources)} "
            f"to {','.join(granted.recipients)} for {granted.purpose}, {granted.history_months} months "
            f"of history, until {granted.expires_at:%Y-%m-%d}"
        )
    return 0


def cmd_consent_revoke(args: argparse.Namespace) -> int:
    from warehouse import consent
    from warehouse.db import session_scope

    consent_id = args.consent or args.consent_id
    now = dt.datetime.now(dt.UTC)
    if bool(consent_id) == bool(args.sme):
        raise consent.ConsentError(
            "name either a consent (--consent ID) or an SME (--sme ID, with --lender or --source)"
        )
    if consent_id and (args.lender or args.source):
        raise consent.ConsentError("--lender and --source go with --sme, not with a consent id")
    with session_scope() as session:
        if consent_id:
            changed = [consent.revoke(session, consent_id, at=now, actor=args.actor, reason=args.reason)]
        else:
            changed = consent.withdraw(
                session,
                sme_id=args.sme,
                at=now,
                lender=args.lender,
                source=args.source,
                actor=args.actor,
                reason=args.reason,
            )
        if not changed:
            console.print(f"nothing to withdraw: no active consent of {args.sme} matches")
        for c in changed:
            terms = f"{','.join(c.sources)} to {','.join(c.recipients)}"
            console.print(f"consent {c.consent_id} of {c.sme_id}: {c.status} ({terms})")
    return 0


def cmd_consent_erase(args: argparse.Namespace) -> int:
    from warehouse import consent
    from warehouse.db import session_scope
    from warehouse.storage import Store

    with session_scope() as session:
        result = consent.erase(
            session, Store.from_settings(), args.sme, at=dt.datetime.now(dt.UTC), actor=args.actor
        )
    _print_json(result)
    return 0


# --- lender -----------------------------------------------------------------------------------------


def cmd_lender_list(args: argparse.Namespace) -> int:
    from sqlalchemy import select

    from warehouse.db import session_scope
    from warehouse.models import Lender

    with session_scope() as session:
        table = Table("lender", "name")
        for lender in session.scalars(select(Lender).order_by(Lender.lender_id)):
            table.add_row(lender.lender_id, lender.name)
    console.print(table)
    return 0


def cmd_lender_pull(args: argparse.Namespace) -> int:
    from warehouse.db import session_scope
    from warehouse.feed import pull
    from warehouse.storage import Store

    with session_scope() as session:
        result = pull(session, Store.from_settings(), lender_id=args.lender, out_dir=Path(args.out))
    _print_json(result)
    return 0


def cmd_lender_status(args: argparse.Namespace) -> int:
    from warehouse.db import session_scope
    from warehouse.feed import lender_status

    with session_scope() as session:
        _print_json(lender_status(session, args.lender))
    return 0


def cmd_lender_subscribe(args: argparse.Namespace) -> int:
    from warehouse.db import session_scope
    from warehouse.feed import subscribe

    filters: dict[str, list[str]] = {}
    for name in ("grades", "industries", "regions"):
        value = getattr(args, name)
        if value:
            filters[name] = [v.strip() for v in value.split(",") if v.strip()]
    with session_scope() as session:
        subscription = subscribe(session, args.lender, name=args.name, filters=filters, purpose=args.purpose)
        console.print(
            f"subscription {subscription.name} of {subscription.lender_id}: purpose {subscription.purpose}, "
            f"filters {subscription.filters}"
        )
    return 0


# --- schema -----------------------------------------------------------------------------------------


def cmd_schema(args: argparse.Namespace) -> int:
    from warehouse import canonical, dossier_schema

    module = canonical if args.which == "canonical" else dossier_schema
    print(module.describe_markdown(), end="")
    return 0


# --- parse ------------------------------------------------------------------------------------------


def cmd_parse(args: argparse.Namespace) -> int:
    """Parse one source file; print its summary as JSON; exit 2 with one line on stderr if refused."""
    from connectors.formats import parse_path
    from connectors.formats.base import FormatError

    try:
        parsed = parse_path(Path(args.file), format_name=args.format)
    except FormatError as error:
        print(f"dossier parse: {error.where(args.file)}", file=sys.stderr)
        return 2
    if args.out:
        import pyarrow as pa
        import pyarrow.parquet as pq

        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        for name, frame in parsed.tables.items():
            pq.write_table(pa.Table.from_pandas(frame, preserve_index=False), out / f"{name}.parquet")
    print(json.dumps(parsed.summary(), default=str, ensure_ascii=False))
    return 0


# --- score-ratios -----------------------------------------------------------------------------------


def cmd_score_ratios(args: argparse.Namespace) -> int:
    from evaluation.score_ratios import score_ratios_file
    from warehouse.errors import DossierError

    try:
        rows, unscored = score_ratios_file(Path(args.source), Path(args.target))
    except DossierError as error:
        print(f"dossier score-ratios: {error}", file=sys.stderr)
        return 2
    print(f"scored {rows - unscored} of {rows} rows into {args.target} ({unscored} with a score_error)")
    return 0


# --- parser -----------------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="dossier",
        description="Consent-driven credit dossiers for off-platform SMEs: pull, validate, evaluate, publish.",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log debug detail")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def add(
        group: Any, name: str, func: Callable[[argparse.Namespace], int], help_text: str
    ) -> argparse.ArgumentParser:
        sub = group.add_parser(name, help=help_text, description=help_text)
        sub.set_defaults(func=func)
        return sub

    def as_of_option(sub: argparse.ArgumentParser) -> None:
        sub.add_argument("--as-of", help="as-of date YYYY-MM-DD (default: today, UTC)")

    db = commands.add_parser("db", help="warehouse schema migrations").add_subparsers(
        dest="db_command", required=True
    )
    add(db, "upgrade", cmd_db_upgrade, "Create or migrate the warehouse schema to the latest revision.")
    add(db, "current", cmd_db_current, "Show the warehouse's schema revision (exit 1 if behind).")

    sandbox = commands.add_parser("sandbox", help="the bundled provider sandbox").add_subparsers(
        dest="sandbox_command", required=True
    )
    serve = add(
        sandbox, "serve", cmd_sandbox_serve, "Serve the sandbox provider APIs over HTTP until interrupted."
    )
    serve.add_argument("--host", default="127.0.0.1", help="interface to bind (default 127.0.0.1)")
    serve.add_argument("--port", type=int, default=8765, help="port to bind (default 8765)")
    serve.add_argument("--smes", type=int, help="universe size (default DOSSIER_SANDBOX_SMES)")
    serve.add_argument(
        "--fault-rate", type=float, help="share of 429/5xx responses (default DOSSIER_SANDBOX_FAULT_RATE)"
    )
    seed = add(
        sandbox,
        "seed",
        cmd_sandbox_seed,
        "Register the sandbox SMEs, lenders, subscriptions, connections and consents in the warehouse.",
    )
    seed.add_argument("--smes", type=int, help="universe size (default DOSSIER_SANDBOX_SMES)")

    run = add(
        commands,
        "run",
        cmd_run,
        "Run the DAGs in this process for one as-of date (starts the sandbox if DOSSIER_SANDBOX_URL is empty).",
    )
    as_of_option(run)
    run.add_argument("--dag", choices=["all", "ingest", "publish"], default="all", help="which DAG(s) to run")

    demo = add(
        commands,
        "demo",
        cmd_demo,
        "Set up everything on the embedded defaults, run the pipeline, pull as lenders, print a summary.",
    )
    demo.add_argument("--smes", type=int, default=300, help="SMEs in the sandbox universe (default 300)")
    as_of_option(demo)

    status = add(
        commands, "status", cmd_status, "Summarise one as-of date: pulled, validated, quarantined, published."
    )
    as_of_option(status)

    quarantine = add(
        commands, "quarantine", cmd_quarantine, "List quarantined SMEs with source, record, field, reason."
    )
    as_of_option(quarantine)
    quarantine.add_argument("--sme", help="only this SME")
    quarantine.add_argument("--all", action="store_true", help="include entries resolved by a later run")

    consent = commands.add_parser("consent", help="grant, inspect, withdraw and erase").add_subparsers(
        dest="consent_command", required=True
    )
    consent_list = add(
        consent, "list", cmd_consent_list, "List consents with their scope, purpose and status now."
    )
    consent_list.add_argument("--sme", help="only this SME")
    consent_list.add_argument("--json", action="store_true", help="print JSON instead of a table")
    grant = add(consent, "grant", cmd_consent_grant, "Record an SME's consent (appended to the ledger).")
    grant.add_argument("--sme", required=True, help="the SME granting, e.g. SME-000042")
    grant.add_argument(
        "--sources", required=True, help="comma-separated sources: accounting,tax,utility,survey"
    )
    grant.add_argument(
        "--lenders", required=True, help="comma-separated lender ids that may receive the dossier"
    )
    grant.add_argument("--purpose", required=True, help="credit_decision or facility_monitoring")
    grant.add_argument("--months", required=True, type=int, help="months of history allowed (1-120)")
    grant.add_argument("--expires", required=True, help="expiry date YYYY-MM-DD (in the future)")
    grant.add_argument("--consent", help="consent id (default: a new one)")
    grant.add_argument("--actor", default="operator", help="who recorded it (default operator)")
    revoke = add(
        consent,
        "revoke",
        cmd_consent_revoke,
        "Withdraw a consent, or stop an SME's consents naming a lender or covering a source, now.",
    )
    revoke.add_argument("consent_id", nargs="?", help="the consent to withdraw (same as --consent)")
    revoke.add_argument("--consent", help="the consent to withdraw")
    revoke.add_argument("--sme", help="the SME whose consents to narrow or revoke")
    revoke.add_argument("--lender", help="with --sme: stop naming this lender")
    revoke.add_argument("--source", help="with --sme: stop covering this source")
    revoke.add_argument("--reason", default="", help="why, recorded in the ledger")
    revoke.add_argument("--actor", default="operator", help="who withdrew it (default operator)")
    erase = add(
        consent,
        "erase",
        cmd_consent_erase,
        "Revoke every consent of an SME and remove its data; lenders that received it get withdrawals.",
    )
    erase.add_argument("--sme", required=True, help="the SME to erase")
    erase.add_argument("--actor", default="operator", help="who asked (default operator)")

    lender = commands.add_parser("lender", help="lenders, subscriptions and pulls").add_subparsers(
        dest="lender_command", required=True
    )
    add(lender, "list", cmd_lender_list, "List lenders.")
    pull = add(
        lender,
        "pull",
        cmd_lender_pull,
        "Write the dossiers a lender is entitled to, since its last pull, into a local Parquet file.",
    )
    pull.add_argument("--lender", required=True, help="lender id, e.g. northwind-capital")
    pull.add_argument("--out", required=True, help="folder to write the Parquet file(s) into")
    lender_status = add(
        lender, "status", cmd_lender_status, "Show a lender's cursor, deliveries and entitlements."
    )
    lender_status.add_argument("--lender", required=True, help="lender id")
    subscribe = add(
        lender, "subscribe", cmd_lender_subscribe, "Create or update a lender's subscription filters."
    )
    subscribe.add_argument("--lender", required=True, help="lender id")
    subscribe.add_argument("--name", default="default", help="subscription name (default: default)")
    subscribe.add_argument("--grades", help="comma-separated grades, e.g. A,B,C (default: all)")
    subscribe.add_argument("--industries", help="comma-separated industries (default: all)")
    subscribe.add_argument("--regions", help="comma-separated regions (default: all)")
    subscribe.add_argument(
        "--purpose", default="credit_decision", help="credit_decision (default) or facility_monitoring"
    )

    parse = add(
        commands,
        "parse",
        cmd_parse,
        "Parse one source file (SAF-T, OFX, ledger CSV/XLSX, VAT, Green Button, Kobo, ODK) and print its totals as JSON.",
    )
    parse.add_argument("file", help="the file to parse")
    parse.add_argument(
        "--format",
        help="the file's format: saft-no, saft-pt, ledger, ofx, hmrc-vat, mva-melding, espi, kobo, odk-csv, odk-xml"
        " (default: detected from its content)",
    )
    parse.add_argument("--out", help="folder to write each table the file yields as <table>.parquet")

    schema = add(
        commands, "schema", cmd_schema, "Print the canonical tables or the dossier schema as Markdown."
    )
    schema.add_argument("which", choices=["canonical", "dossier"], help="which schema")

    score_ratios = add(
        commands,
        "score-ratios",
        cmd_score_ratios,
        "Score a CSV of financial ratios laid out like the public training file (attr1..attr64) with the "
        "statement model; writes it back with pd_12m, grade, reason_codes and score_error.",
    )
    score_ratios.add_argument("source", metavar="IN.csv", help="CSV with a header and attr1..attr64 columns")
    score_ratios.add_argument("target", metavar="OUT.csv", help="where to write the scored rows")

    airflow = add(
        commands,
        "airflow",
        cmd_airflow,
        "Run an airflow command with this project's DAGs and embedded settings (default: standalone).",
    )
    airflow.add_argument(
        "airflow_args", nargs=argparse.REMAINDER, help="arguments for airflow (default: standalone)"
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    level = logging.DEBUG if args.verbose else getattr(logging, get_settings().log_level, logging.INFO)
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if not args.verbose:
        logging.getLogger("alembic").setLevel(logging.WARNING)
    try:
        return args.func(args)
    except DossierError as error:
        if args.verbose:
            raise
        print(f"dossier: error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        sys.stdout = open(os.devnull, "w")  # noqa: SIM115
        return 0


if __name__ == "__main__":
    sys.exit(main())
