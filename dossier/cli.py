"""The ``dossier`` command: operate the warehouse, the sandbox, the pipeline and the lender feed.

Every subcommand has ``--help``; the README lists them all (a test keeps the two in step).

Every expected failure takes one path (:func:`main`): a bad argument, a bad setting, one of the
project's errors (:class:`~warehouse.errors.DossierError`), a database or provider that cannot be
reached, or a path that cannot be used prints one line on stderr saying what was wrong and how to
fix it, and exits with :data:`EXIT_ERROR`; ``-v`` adds the traceback. The exit statuses:

* ``0`` (:data:`EXIT_OK`): done;
* ``1`` (:data:`EXIT_FAILED`): the command ran but its outcome is a failure (a DAG run failed,
  the warehouse schema is behind, ``dossier verify`` found damage);
* ``2`` (:data:`EXIT_ERROR`): nothing was done, because of the input, the settings or the
  environment (the line says which);
* ``3`` (:data:`EXIT_BUG`): an unexpected error (a defect: run again with ``-v`` and report the traceback);
* ``130``: interrupted (Ctrl-C).
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime as dt
import json
import logging
import os
import sys
import traceback
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any, NoReturn

from rich.console import Console
from rich.table import Column, Table

from dossier.settings import Settings, export_environment, get_settings, override, record_sandbox
from warehouse.errors import DossierError

EXIT_OK, EXIT_FAILED, EXIT_ERROR, EXIT_BUG, EXIT_INTERRUPTED = 0, 1, 2, 3, 130

console = Console()
if not console.is_terminal:
    console = Console(width=140)


class CommandLineError(DossierError):
    """The command line itself is wrong: an unknown command, a missing or malformed argument."""


class _Parser(argparse.ArgumentParser):
    """An argument parser whose mistakes go through :func:`main`'s one error path."""

    def error(self, message: str) -> NoReturn:
        raise CommandLineError(f"{self.prog}: {message} (see: {self.prog} --help)")


def out_folder(value: str) -> Path:
    """``--out``: a folder that exists and is writable, or can be created (not a file)."""
    path = Path(value).expanduser()
    if path.exists() and not path.is_dir():
        raise argparse.ArgumentTypeError(f"{value!r} is a file, not a folder; name a folder to write into")
    existing = next(p for p in (path, *path.parents) if p.exists())
    if not existing.is_dir() or not os.access(existing, os.W_OK | os.X_OK):
        raise argparse.ArgumentTypeError(f"cannot write into {str(existing)!r} (permission denied)")
    return path


def out_file(value: str) -> Path:
    """``--out`` for a file: not a folder, in a folder that exists and is writable or can be made."""
    path = Path(value).expanduser()
    if path.is_dir():
        raise argparse.ArgumentTypeError(f"{value!r} is a folder; name a file to write")
    out_folder(str(path.parent))
    return path


def positive(value: str) -> int:
    """A whole number of at least 1."""
    if not value.isdigit() or int(value) < 1:
        raise argparse.ArgumentTypeError(f"{value!r} is not a whole number of at least 1")
    return int(value)


def grace_hours(value: str) -> float:
    """A grace period in hours, 0 to 720."""
    try:
        hours = float(value)
    except ValueError:
        hours = -1.0
    if not 0 <= hours <= 720:
        raise argparse.ArgumentTypeError(f"{value!r} is not a number of hours between 0 and 720")
    return hours


def port_number(value: str) -> int:
    """A TCP port, 0 (any free port) to 65535."""
    if not value.isdigit() or int(value) > 65535:
        raise argparse.ArgumentTypeError(f"{value!r} is not a port number (0-65535)")
    return int(value)


def share(value: str) -> float:
    """A share between 0 and 1."""
    try:
        number = float(value)
    except ValueError:
        number = -1.0
    if not 0 <= number <= 1:
        raise argparse.ArgumentTypeError(f"{value!r} is not a share between 0 and 1")
    return number


def _as_of(value: str | None) -> dt.date:
    from dossier.pipeline import parse_as_of

    return parse_as_of(value)


def _known_sme(sme_id: str) -> None:
    """Refuse an SME id the warehouse does not know (rather than answer with an empty list)."""
    from warehouse.db import session_scope
    from warehouse.models import Sme

    with session_scope() as session:
        if session.get(Sme, sme_id) is None:
            raise CommandLineError(
                f"unknown SME {sme_id!r}; SME ids look like SME-000042 (see: dossier status)"
            )


def _print_json(payload: Any) -> None:
    console.print_json(json.dumps(payload, default=str))


# --- agents ---------------------------------------------------------------------------------------


def _agent_tables(as_of: dt.date) -> dict[str, Any]:
    """``survey_visits`` and ``monthly_financials`` of every shard at ``as_of`` (empty when none)."""
    import pandas as pd

    from warehouse import shard_plans
    from warehouse.canonical import TABLES
    from warehouse.db import session_scope
    from warehouse.storage import Store

    store = Store.from_settings()
    with session_scope() as session:
        plan = shard_plans.recorded(session, as_of)
    tables = {}
    for name in ("survey_visits", "monthly_financials"):
        frames = [
            store.read_table(path).to_pandas()
            for shard in ([] if plan is None else plan.shards)
            if store.exists(path := store.layout.canonical(name, as_of.isoformat(), shard))
        ]
        tables[name] = pd.concat(frames, ignore_index=True) if frames else TABLES[name].empty_frame()
    return tables


def _agent_rows(session: Any, as_of: dt.date) -> tuple[list[dict[str, Any]], Any, Any]:
    """Every known agent (visits at ``as_of`` or any decision) with scores, flags and status."""
    from evaluation.collusion import detect
    from warehouse import agents

    tables = _agent_tables(as_of)
    report = detect(tables["survey_visits"], tables["monthly_financials"])
    suspended = {row["agent_id"]: row for row in agents.suspended_agents(session)}
    decided = {event["agent_id"] for event in agents.history(session)}
    scored = {row["agent_id"]: row for row in report.agents.to_dict("records")}
    rows = []
    for agent_id in sorted(set(scored) | decided):
        row = scored.get(agent_id, {})
        rows.append(
            {
                "agent_id": agent_id,
                "status": "suspended" if agent_id in suspended else "active",
                "visits": int(row.get("visits", 0)),
                "smes": int(row.get("smes", 0)),
                "score": float(row.get("score", 0.0)),
                "flags": list(row.get("flags", [])),
                "recommend_suspend": bool(row.get("recommend_suspend", False)),
                "contradictions": int(row.get("contradictions", 0)),
                "contradiction_p": float(row.get("contradiction_p", 1.0)),
                "suspended_at": suspended[agent_id]["suspended_at"] if agent_id in suspended else None,
                "reason": suspended[agent_id]["reason"] if agent_id in suspended else None,
            }
        )
    return rows, report, tables["survey_visits"]


def _known_agent(agent_id: str, rows: list[dict[str, Any]]) -> None:
    if agent_id not in {row["agent_id"] for row in rows}:
        raise CommandLineError(
            f"unknown agent {agent_id!r}: no survey visit at this as-of date and no decision recorded "
            "(see: dossier agents list)"
        )


def _rescore(sme_ids: list[str], as_of: dt.date, enabled: bool) -> dict[str, Any] | None:
    """Re-run the pipeline for the SMEs that relied on an agent's visits (None when skipped)."""
    if not sme_ids or not enabled:
        return None
    from dossier.pipeline import run_for_smes

    return run_for_smes(sme_ids, as_of=as_of)


def cmd_agents_list(args: argparse.Namespace) -> int:
    from warehouse.db import session_scope

    with session_scope() as session:
        rows, _, _ = _agent_rows(session, _as_of(args.as_of))
    if args.json:
        _print_json(rows)
        return 0
    table = Table("agent", "status", "visits", "smes", "score", "flags", "recommend")
    for row in rows:
        table.add_row(
            row["agent_id"],
            row["status"],
            str(row["visits"]),
            str(row["smes"]),
            f"{row['score']:.2f}",
            ", ".join(row["flags"]),
            "suspend" if row["recommend_suspend"] and row["status"] == "active" else "",
        )
    console.print(table)
    return 0


def _decide(args: argparse.Namespace, action: str) -> int:
    from warehouse import agents
    from warehouse.db import session_scope

    as_of = _as_of(args.as_of)
    with session_scope() as session:
        rows, report, visits = _agent_rows(session, as_of)
        _known_agent(args.agent, rows)
        affected = agents.smes_visited_by(visits, args.agent)
        try:
            if action == agents.SUSPEND:
                scored = report.agents[report.agents["agent_id"] == args.agent].to_dict("records")
                evidence = {"detector": _plain(scored[0])} if scored else {}
                agents.suspend(
                    session,
                    args.agent,
                    actor=args.actor,
                    reason=args.reason,
                    evidence=evidence,
                    sme_ids=affected,
                )
            else:
                agents.reinstate(session, args.agent, actor=args.actor, reason=args.reason, sme_ids=affected)
        except agents.AgentError as error:
            raise CommandLineError(str(error)) from None
    summary = _rescore(affected, as_of, not args.no_rescore)
    done = "suspended" if action == agents.SUSPEND else "reinstated"
    console.print(
        f"agent {args.agent} {done}; {len(affected)} SME(s) relied on their visits"
        + (f", re-scored and published ({summary['new_or_changed']} new or changed)" if summary else "")
    )
    return 0


def _plain(row: dict[str, Any]) -> dict[str, Any]:
    """A detector row with plain JSON values (numpy scalars and arrays made Python)."""
    return json.loads(json.dumps(row, default=lambda v: v.item() if hasattr(v, "item") else list(v)))


def cmd_agents_suspend(args: argparse.Namespace) -> int:
    from warehouse.agents import SUSPEND

    return _decide(args, SUSPEND)


def cmd_agents_reinstate(args: argparse.Namespace) -> int:
    from warehouse.agents import REINSTATE

    return _decide(args, REINSTATE)


def cmd_agents_detect(args: argparse.Namespace) -> int:
    from warehouse import agents
    from warehouse.db import session_scope

    as_of = _as_of(args.as_of)
    with session_scope() as session:
        rows, report, visits = _agent_rows(session, as_of)
        candidates = [r["agent_id"] for r in rows if r["recommend_suspend"] and r["status"] == "active"]
        affected: set[str] = set()
        if args.apply:
            by_agent = report.agents.set_index("agent_id")
            for agent_id in candidates:
                smes = agents.smes_visited_by(visits, agent_id)
                affected.update(smes)
                agents.suspend(
                    session,
                    agent_id,
                    actor=args.actor,
                    reason="collusion detector: " + ", ".join(by_agent.loc[agent_id, "flags"]),
                    evidence={"detector": _plain({"agent_id": agent_id, **by_agent.loc[agent_id].to_dict()})},
                    sme_ids=smes,
                )
    summary = _rescore(sorted(affected), as_of, args.apply and not args.no_rescore)
    result = {
        "as_of": as_of.isoformat(),
        "population_contradiction_rate": report.population_contradiction_rate,
        "threshold_p": report.threshold_p,
        "recommended": candidates,
        "suspended": candidates if args.apply else [],
        "affected_smes": sorted(affected),
        "rescored": summary is not None,
        "evidence": report.evidence[report.evidence["agent_id"].isin(candidates)].to_dict("records"),
    }
    if args.json:
        _print_json(result)
        return 0
    verb = "suspended" if args.apply else "recommended for suspension (run again with --apply)"
    console.print(f"{len(candidates)} agent(s) {verb}: {', '.join(candidates) or 'none'}")
    return 0


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
    import socket

    from connectors.sandbox.server import serve_forever

    with socket.socket() as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((args.host, args.port))
        except OSError as error:
            raise CommandLineError(
                f"cannot listen on {args.host}:{args.port} ({error.strerror}); pick another --port"
            ) from None
    universe = _universe(args.smes)
    rate = get_settings().sandbox_fault_rate if args.fault_rate is None else args.fault_rate
    console.print(f"sandbox: {universe.size} SMEs (seed {universe.seed}) on http://{args.host}:{args.port}")
    serve_forever(universe, host=args.host, port=args.port, fault_rate=rate)
    return 0


def cmd_sandbox_seed(args: argparse.Namespace) -> int:
    from connectors.sandbox.seed import seed_warehouse
    from warehouse.db import get_engine, session_scope
    from warehouse.migrate import upgrade

    settings = get_settings()
    settings.home.mkdir(parents=True, exist_ok=True)
    upgrade(get_engine())
    universe = _universe(args.smes)
    with session_scope() as session:
        counts = seed_warehouse(session, universe, now=dt.datetime.now(dt.UTC))
    record_sandbox(dataclasses.replace(settings, sandbox_smes=universe.size, sandbox_seed=universe.seed))
    _print_json(counts)
    return 0


# --- pipeline ---------------------------------------------------------------------------------------


def cmd_run(args: argparse.Namespace) -> int:
    from dossier.demo import run_pipeline

    result = run_pipeline(as_of=_as_of(args.as_of), dags=args.dag, full=args.full)
    _print_json(result)
    return 0 if all(r["state"] == "success" for r in result["runs"]) else 1


def cmd_demo(args: argparse.Namespace) -> int:
    from dossier.demo import demo

    return demo(smes=args.smes or get_settings().sandbox_smes, as_of=_as_of(args.as_of), console=console)


def cmd_status(args: argparse.Namespace) -> int:
    from dossier.pipeline import stage_runs, stage_summary
    from dossier.report import pipeline_report, render_report
    from warehouse import shard_plans
    from warehouse.db import session_scope

    as_of = _as_of(args.as_of)
    render_report(pipeline_report(as_of), console)
    with session_scope() as session:
        steps = stage_summary(stage_runs(session, as_of))
        plan = shard_plans.recorded(session, as_of)
    if plan is None:
        console.print(f"Shards: not planned yet for {as_of.isoformat()} (its first step plans them).")
    else:
        console.print(f"Shards: {plan.describe()}")
    render_steps(steps, as_of)
    return 0


def render_steps(steps: list[dict[str, Any]], as_of: dt.date) -> None:
    """The recorded pipeline steps of ``as_of`` (``stage_runs``): tasks, failures, seconds and counts."""
    if not steps:
        console.print(f"No pipeline step recorded for {as_of.isoformat()} (stage_runs is empty for it).")
        return
    table = Table(
        "step",
        "source",
        "tasks",
        "failed",
        "seconds",
        "slowest",
        Column("counts", overflow="fold"),
        title="Pipeline steps",
        title_justify="left",
    )
    for step in steps:
        table.add_row(
            step["stage"],
            step["source"],
            str(step["tasks"]),
            str(step["failed"]),
            f"{step['seconds']:.2f}",
            f"{step['slowest']:.2f}",
            ", ".join(f"{name} {value}" for name, value in step["counts"].items()),
        )
    console.print(table)


def cmd_quarantine(args: argparse.Namespace) -> int:
    from dossier.report import quarantine_entries

    as_of = _as_of(args.as_of)
    if args.sme:
        _known_sme(args.sme)
    rows = quarantine_entries(as_of, sme_id=args.sme, include_resolved=args.all)
    if args.json:
        print(json.dumps(rows, default=str, indent=2))
        return 0
    table = Table(
        *(
            Column(name, overflow="fold")
            for name in ("sme", "stage", "source", "table", "record", "field", "reason", "resolved")
        )
    )
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


def cmd_consent_lapsing(args: argparse.Namespace) -> int:
    from warehouse import consent
    from warehouse.db import session_scope

    if args.days < 0:
        raise consent.ConsentError(f"--days must be 0 or more, not {args.days}")
    now = dt.datetime.now(dt.UTC)
    with session_scope() as session:
        found = consent.lapsing(session, at=now, within=dt.timedelta(days=args.days))
    if args.json:
        _print_json(
            [
                {
                    "consent_id": c.consent_id,
                    "sme_id": c.sme_id,
                    "reconfirm_by": c.lapses_at.isoformat(),
                    "days_left": (c.lapses_at - now).days,
                    "sources": sorted(c.sources),
                    "recipients": sorted(c.recipients),
                    "expires_at": c.expires_at.isoformat(),
                }
                for c in found
            ]
        )
        return 0
    table = Table("consent", "sme", "reconfirm by", "days left", "sources", "recipients")
    for c in found:
        table.add_row(
            c.consent_id,
            c.sme_id,
            f"{c.lapses_at:%Y-%m-%d %H:%M}",
            str((c.lapses_at - now).days),
            ",".join(sorted(c.sources)),
            ",".join(sorted(c.recipients)),
        )
    console.print(table)
    console.print(f"{len(found)} consent(s) stop within {args.days} days unless the SME reconfirms")
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
    _refresh_feeds(granted.recipients)
    return 0


def _refresh_feeds(lender_ids: Iterable[str]) -> None:
    """After a committed consent change, sync the API feeds of the lenders it concerns."""
    from dossier.pipeline import refresh_feeds
    from warehouse.storage import Store

    refresh_feeds(Store.from_settings(), sorted(set(lender_ids)))


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
        concerned = {lender for c in changed for lender in c.recipients}
    if changed:
        _refresh_feeds(concerned | ({args.lender} if args.lender else set()))
    return 0


def cmd_consent_erase(args: argparse.Namespace) -> int:
    from sqlalchemy import select

    from warehouse import consent
    from warehouse.db import session_scope
    from warehouse.models import Consent
    from warehouse.storage import Store

    with session_scope() as session:
        concerned = {
            lender
            for recipients in session.scalars(select(Consent.recipients).where(Consent.sme_id == args.sme))
            for lender in recipients
        }
        result = consent.erase(
            session, Store.from_settings(), args.sme, at=dt.datetime.now(dt.UTC), actor=args.actor
        )
    _refresh_feeds(concerned)
    _print_json(result)
    return 0


def cmd_consent_verify(args: argparse.Namespace) -> int:
    from warehouse.db import session_scope
    from warehouse.links import verify_ledgers

    with session_scope() as session:
        checked, broken = verify_ledgers(session)
    for found in broken:
        console.print(f"broken: {found}", markup=False)
    console.print(f"{checked} ledger chain(s) checked, {len(broken)} broken", markup=False)
    return EXIT_FAILED if broken else EXIT_OK


def cmd_link_create(args: argparse.Namespace) -> int:
    from dossier.web.sme import link_url
    from warehouse import links
    from warehouse.db import session_scope

    settings = get_settings()
    with session_scope() as session:
        made = links.create_link(
            session,
            settings.kept_secret("secret_key"),
            sme_id=args.sme,
            sources=_csv(args.sources),
            recipients=_csv(args.lenders),
            purpose=args.purpose,
            history_months=args.months,
            consent_days=args.consent_days,
            valid_days=args.valid_days,
            actor=args.actor,
        )
        console.print(
            f"link {made.link.link_id} for {made.link.sme_id}, valid until {made.link.expires_at:%Y-%m-%d %H:%M} UTC:",
            markup=False,
        )
    print(link_url(settings, args.sme, made.token))
    return 0


def cmd_link_list(args: argparse.Namespace) -> int:
    from sqlalchemy import select

    from warehouse import links
    from warehouse.db import session_scope
    from warehouse.models import ConnectorLink, FieldVisitRequest, GrantRun

    if args.sme:
        _known_sme(args.sme)
    now = dt.datetime.now(dt.UTC)
    with session_scope() as session:
        query = select(ConnectorLink).order_by(ConnectorLink.created_at, ConnectorLink.link_id)
        if args.sme:
            query = query.where(ConnectorLink.sme_id == args.sme)
        visits = {v.link_id: v for v in session.scalars(select(FieldVisitRequest))}
        runs = {r.consent_id: r for r in session.scalars(select(GrantRun))}
        rows = [
            {
                "link_id": link.link_id,
                "sme_id": link.sme_id,
                "created_by": link.created_by,
                "status": links.status_at(link, now),
                "sources": list(link.sources),
                "recipients": list(link.recipients),
                "expires_at": link.expires_at.isoformat(),
                "consent_id": link.consent_id,
                "pipeline": runs[link.consent_id].status if link.consent_id in runs else None,
                "field_visit": visits[link.link_id].status if link.link_id in visits else None,
                "field_visit_requested_at": visits[link.link_id].requested_at.isoformat()
                if link.link_id in visits
                else None,
                "field_visit_note": visits[link.link_id].note if link.link_id in visits else None,
            }
            for link in session.scalars(query)
        ]
    if args.visits:
        rows = [row for row in rows if row["field_visit"]]
    if args.json:
        _print_json(rows)
        return 0
    table = Table("link", "sme", "asked by", "status", "sources", "recipients", "pipeline", "field visit")
    for row in rows:
        visit = f"{row['field_visit']} {row['field_visit_requested_at'][:10]}" if row["field_visit"] else ""
        if row["field_visit_note"]:
            visit += f" ({row['field_visit_note']})"
        table.add_row(
            row["link_id"],
            row["sme_id"],
            row["created_by"],
            row["status"],
            ",".join(row["sources"]),
            ",".join(row["recipients"]),
            row["pipeline"] or "",
            visit,
        )
    console.print(table)
    console.print(f"{len(rows)} link(s)", markup=False)
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
    if args.api:
        return _lender_pull_api(args)
    if args.api_url or args.api_key:
        raise CommandLineError("--api-url and --api-key go with --api (a pull over the lender API)")
    if not args.lender:
        raise CommandLineError(
            "dossier lender pull: name the lender with --lender, or pull over the lender API with --api"
        )
    from warehouse.db import session_scope
    from warehouse.feed import pull
    from warehouse.storage import Store

    with session_scope() as session:
        result = pull(
            session,
            Store.from_settings(),
            lender_id=args.lender,
            out_dir=args.out,
            subscription=args.subscription,
        )
    _print_json(result)
    if result.get("file") is None and not result.get("withdrawals"):
        print(
            f"dossier: nothing new for {args.lender} since its previous pull (each dossier is delivered once); "
            "the next publish brings new ones (see: dossier lender status)",
            file=sys.stderr,
        )
    return 0


def _lender_pull_api(args: argparse.Namespace) -> int:
    from dossier.lender_client import pull_over_api

    if args.lender or args.subscription:
        raise CommandLineError(
            "--lender and --subscription are for a local pull; over the API the key names the lender "
            "and every active subscription feeds one feed"
        )
    settings = get_settings()
    result = pull_over_api(
        args.api_url or settings.lender_api_url or settings.base_url,
        args.api_key or settings.lender_api_key,
        args.out,
    )
    _print_json(result)
    if not result["files"]:
        print(
            f"dossier: nothing new for {result['lender_id']} since cursor {result['cursor_from'] or 'start'}",
            file=sys.stderr,
        )
    return 0


def cmd_lender_status(args: argparse.Namespace) -> int:
    from warehouse.db import session_scope
    from warehouse.feed import lender_status

    with session_scope() as session:
        _print_json(lender_status(session, args.lender))
    return 0


def cmd_lender_add(args: argparse.Namespace) -> int:
    from warehouse.db import session_scope
    from warehouse.keys import add_lender

    with session_scope() as session:
        token, lender = add_lender(session, args.lender_id, name=args.name, at=dt.datetime.now(dt.UTC))
    print(token)
    print(
        f"dossier: registered lender {lender.lender_id}; the line above is its API key, shown only this "
        "once (the broker keeps its hash): give it to the lender",
        file=sys.stderr,
    )
    return 0


def cmd_lender_share_profile(args: argparse.Namespace) -> int:
    from warehouse.db import session_scope
    from warehouse.feed import FeedError
    from warehouse.keys import authenticate, issue_key
    from warehouse.models import Lender
    from warehouse.sharing import SCHEMA_NAME, TABLE_NAME, profile

    now = dt.datetime.now(dt.UTC)
    with session_scope() as session:
        if session.get(Lender, args.lender_id) is None:
            raise FeedError(
                f"unknown lender {args.lender_id!r}; register it first: dossier lender add {args.lender_id}"
            )
        if args.key:
            key = authenticate(session, args.key, at=now)
            if key.lender_id != args.lender_id:
                raise CommandLineError(f"--key is a key of {key.lender_id}, not of {args.lender_id}")
            token = args.key
        else:
            token, key = issue_key(session, args.lender_id, at=now)
        expires_at = key.expires_at
    out: Path = args.out
    out.parent.mkdir(parents=True, exist_ok=True)
    out.touch(mode=0o600)
    out.write_text(
        json.dumps(profile(get_settings().base_url + "/delta-sharing", token, expires_at), indent=2) + "\n"
    )
    print(out)
    made = "its new API key" if not args.key else "the key given"
    print(
        f"dossier: wrote the Delta Sharing profile of {args.lender_id} with {made} (keep it secret); "
        f"read the table as {out}#{args.lender_id}.{SCHEMA_NAME}.{TABLE_NAME}",
        file=sys.stderr,
    )
    return 0


def cmd_lender_keys(args: argparse.Namespace) -> int:
    from warehouse.db import session_scope
    from warehouse.feed import FeedError
    from warehouse.keys import list_keys
    from warehouse.models import Lender

    now = dt.datetime.now(dt.UTC)
    with session_scope() as session:
        if session.get(Lender, args.lender) is None:
            raise FeedError(f"unknown lender {args.lender!r}")
        table = Table("prefix", "status", "created", "expires", "revoked")
        for key in list_keys(session, args.lender, at=now):
            table.add_row(
                key.prefix,
                key.status,
                f"{key.created_at:%Y-%m-%d %H:%M}",
                f"{key.expires_at:%Y-%m-%d %H:%M}" if key.expires_at else "",
                f"{key.revoked_at:%Y-%m-%d %H:%M}" if key.revoked_at else "",
            )
    console.print(table)
    return 0


def cmd_lender_rotate_key(args: argparse.Namespace) -> int:
    from warehouse.db import session_scope
    from warehouse.keys import rotate_key

    now = dt.datetime.now(dt.UTC)
    grace = dt.timedelta(hours=args.grace_hours)
    with session_scope() as session:
        token, _key = rotate_key(session, args.lender, at=now, grace=grace)
    print(token)
    print(
        f"dossier: new API key for {args.lender} above, shown only this once; its previous keys stay "
        f"valid until {now + grace:%Y-%m-%d %H:%M} UTC",
        file=sys.stderr,
    )
    return 0


def cmd_lender_revoke_key(args: argparse.Namespace) -> int:
    from warehouse.db import session_scope
    from warehouse.keys import revoke_key

    with session_scope() as session:
        key = revoke_key(session, args.prefix, at=dt.datetime.now(dt.UTC))
        console.print(
            f"key {key.prefix} of {key.lender_id}: revoked at {key.revoked_at:%Y-%m-%d %H:%M:%S} UTC"
        )
    return 0


SUBSCRIBE_OPTIONS = {
    "grades": "--grades",
    "industries": "--industries",
    "regions": "--regions",
    "size_bands": "--size-bands",
    "min_grade": "--min-grade",
    "required_sources": "--required-sources",
}


def _shown(value: Any) -> str:
    """A filter's value as said back: its values listed, or ``all`` when it lets everything through."""
    if not value:
        return "all"
    return value if isinstance(value, str) else ", ".join(value)


ALWAYS_DESCRIBED = ("grades", "industries", "regions", "size_bands")
"""Filters said back even when they let everything through (the others only when set)."""


def _describe_filters(filters: dict[str, Any]) -> str:
    return "; ".join(
        f"{key} {_shown(filters.get(key))}"
        for key in SUBSCRIBE_OPTIONS
        if key in ALWAYS_DESCRIBED or filters.get(key)
    )


def cmd_lender_subscribe(args: argparse.Namespace) -> int:
    from sqlalchemy import select

    from warehouse.consent import DEFAULT_PURPOSE
    from warehouse.db import session_scope
    from warehouse.feed import check_filters, subscribe
    from warehouse.models import Subscription

    given: dict[str, Any] = {}
    for key in SUBSCRIBE_OPTIONS:
        value = getattr(args, key)
        if value is not None and key == "min_grade":
            given[key] = value.strip() or None
        elif value is not None:
            given[key] = [v.strip() for v in value.split(",") if v.strip()]
    with session_scope() as session:
        given = check_filters(session, given)
        existing = session.scalars(
            select(Subscription).where(Subscription.lender_id == args.lender, Subscription.name == args.name)
        ).first()
        before = dict(existing.filters or {}) if existing is not None else {}
        purpose_before = existing.purpose if existing is not None else None
        if args.mode == "add":  # a minimum grade has one value: the one given replaces it
            added = {k: v if k == "min_grade" else sorted({*before.get(k, []), *v}) for k, v in given.items()}
            after = {**before, **added}
        elif args.mode == "replace" or not before:
            after = given
        elif given != before:
            raise CommandLineError(
                f"subscription {args.name!r} of {args.lender!r} already has filters ({_describe_filters(before)}); "
                "pass --add to add these values to them or --replace to replace them all"
            )
        else:
            after = given
        purpose = args.purpose or purpose_before or DEFAULT_PURPOSE
        subscription = subscribe(session, args.lender, name=args.name, filters=after, purpose=purpose)
        after = dict(subscription.filters or {})
        if existing is None:
            change = f"created with purpose {subscription.purpose}; {_describe_filters(after)}"
        elif after == before and subscription.purpose == purpose_before:
            change = f"unchanged (purpose {subscription.purpose}; {_describe_filters(after)})"
        else:
            changes = (
                [f"purpose {purpose_before} -> {subscription.purpose}"]
                if subscription.purpose != purpose_before
                else []
            )
            changes += [
                f"{key} {_shown(before.get(key))} -> {_shown(after.get(key))}"
                for key in SUBSCRIBE_OPTIONS
                if before.get(key) != after.get(key)
            ]
            change = "; ".join(changes)
        console.print(
            f"subscription {subscription.name} of {subscription.lender_id}: {change}", soft_wrap=True
        )
    return 0


# --- webhooks ---------------------------------------------------------------------------------------


def instant(value: str) -> dt.datetime:
    """An ISO 8601 instant; one without a zone is read as UTC."""
    try:
        parsed = dt.datetime.fromisoformat(value)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{value!r} is not an ISO 8601 instant, e.g. 2026-11-02T09:30:00Z"
        ) from None
    return parsed if parsed.tzinfo is not None else parsed.replace(tzinfo=dt.UTC)


def cmd_webhooks_list(args: argparse.Namespace) -> int:
    from warehouse import webhooks
    from warehouse.db import session_scope

    with session_scope() as session:
        rows = [
            {
                "endpoint_id": e.endpoint_id,
                "lender_id": e.lender_id,
                "url": e.url,
                "description": e.description,
                "event_types": list(e.event_types),
                "enabled": e.enabled,
                "disabled_reason": e.disabled_reason,
                "last_seq": e.last_seq,
            }
            for e in webhooks.endpoints_of(session, args.lender)
        ]
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    table = Table(
        Column("endpoint", no_wrap=True),
        "lender",
        Column("url", overflow="fold"),
        "events",
        "enabled",
        "last seq",
        "disabled because",
    )
    for row in rows:
        table.add_row(
            row["endpoint_id"],
            row["lender_id"],
            row["url"],
            ", ".join(row["event_types"]),
            "yes" if row["enabled"] else "no",
            str(row["last_seq"]),
            row["disabled_reason"] or "",
        )
    console.print(table)
    return 0


def cmd_webhooks_add(args: argparse.Namespace) -> int:
    from warehouse import webhooks
    from warehouse.db import session_scope

    types = [t.strip() for t in args.events.split(",") if t.strip()] if args.events else None
    with session_scope() as session:
        secret, endpoint = webhooks.create_endpoint(
            session,
            args.lender,
            args.url,
            secret_key=get_settings().kept_secret("secret_key"),
            event_types=types,
            description=args.description or "",
            allow_private=get_settings().webhook_allow_private,
        )
    console.print(
        f"endpoint {endpoint.endpoint_id} of {endpoint.lender_id} for {', '.join(endpoint.event_types)} "
        f"at {endpoint.url}; its signing secret (shown only this once):"
    )
    print(secret)
    return 0


def cmd_webhooks_remove(args: argparse.Namespace) -> int:
    from warehouse import webhooks
    from warehouse.db import session_scope

    with session_scope() as session:
        endpoint = webhooks.get_endpoint(session, args.endpoint)
        webhooks.delete_endpoint(session, endpoint)
    console.print(f"endpoint {args.endpoint} removed with its delivery log")
    return 0


def cmd_webhooks_test(args: argparse.Namespace) -> int:
    from warehouse import webhooks
    from warehouse.db import session_scope

    with session_scope() as session:
        message = webhooks.send_test(session, webhooks.get_endpoint(session, args.endpoint))
    console.print(f"test message {message.message_id} queued; the webhook worker sends it")
    return 0


def cmd_webhooks_deliveries(args: argparse.Namespace) -> int:
    from warehouse import webhooks
    from warehouse.db import session_scope

    with session_scope() as session:
        endpoint = webhooks.get_endpoint(session, args.endpoint)
        found = webhooks.messages_of(session, endpoint, status=args.status, limit=args.limit)
        rows = [
            {
                "message_id": m.message_id,
                "event_type": m.event_type,
                "seq": m.seq,
                "status": m.status,
                "attempts": m.attempts,
                "last_status_code": m.last_status_code,
                "last_error": m.last_error,
                "next_attempt_at": m.next_attempt_at.isoformat() if m.next_attempt_at else None,
                "created_at": m.created_at.isoformat(),
            }
            for m in found
        ]
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    table = Table(
        Column("message", no_wrap=True), "event", "seq", "status", "attempts", "last answer", "next attempt"
    )
    for row in rows:
        answer = str(row["last_status_code"] or "") or (row["last_error"] or "")
        table.add_row(
            row["message_id"],
            row["event_type"],
            "" if row["seq"] is None else str(row["seq"]),
            row["status"],
            str(row["attempts"]),
            answer,
            row["next_attempt_at"] or "",
        )
    console.print(table)
    return 0


def cmd_webhooks_replay(args: argparse.Namespace) -> int:
    from warehouse import webhooks
    from warehouse.db import session_scope

    if bool(args.message) == bool(args.since or args.until):
        raise CommandLineError(
            "dossier webhooks replay: give --message MSG_ID, or --since and --until (see: --help)"
        )
    with session_scope() as session:
        endpoint = webhooks.get_endpoint(session, args.endpoint)
        if args.message:
            webhooks.replay(session, endpoint, args.message)
            queued = 1
        else:
            if not (args.since and args.until):
                raise CommandLineError("dossier webhooks replay: --since and --until go together")
            queued = webhooks.replay_range(
                session, endpoint, since=args.since, until=args.until, only_failed=args.only_failed
            )
    console.print(f"{queued} message(s) of {args.endpoint} queued again; the webhook worker sends them")
    return 0


def cmd_webhooks_send(args: argparse.Namespace) -> int:
    import threading

    from warehouse import webhooks
    from warehouse.db import get_engine
    from warehouse.storage import Store

    settings = get_settings()
    engine, store, config = get_engine(), Store.from_settings(), settings.webhook_config()
    if args.once:
        counts = webhooks.run_once(engine, store, config)
        console.print(
            "webhooks: {appended} feed events appended, {queued} queued, {claimed} sent: {delivered} "
            "delivered, {retrying} to retry, {failed} failed".format(**counts)
            + (f"; disabled (410): {', '.join(counts['disabled'])}" if counts["disabled"] else "")
        )
        return EXIT_OK
    worker = webhooks.Worker(
        engine, store, config, poll=settings.webhook_poll_seconds, sync_every=settings.webhook_sync_seconds
    ).start()
    console.print(f"sending webhooks every {settings.webhook_poll_seconds:g} s until interrupted (Ctrl-C)")
    try:
        threading.Event().wait()
    finally:
        worker.stop()
    return EXIT_OK


# --- verify -----------------------------------------------------------------------------------------


def cmd_verify(args: argparse.Namespace) -> int:
    from warehouse.db import session_scope
    from warehouse.storage import Store
    from warehouse.verify import verify_store

    with session_scope() as session:
        result = verify_store(Store.from_settings(), session)
    if args.json:
        print(json.dumps(result.as_dict(), indent=2))
        return EXIT_OK if result.ok else EXIT_FAILED
    checked = (
        f"{result.raw_files} raw payloads ({result.raw_rows} recorded by ingestion runs), "
        f"{result.dossier_files} dossier files in {result.manifests} manifests"
    )
    if result.ok:
        console.print(f"verified {checked}: every file matches its address or manifest")
        return EXIT_OK
    for problem in result.problems:
        print(f"{problem.kind}: {problem.path}: {problem.detail}")
    console.print(f"{len(result.problems)} problems in {checked}; re-run the dates concerned to repair them")
    return EXIT_FAILED


# --- schema -----------------------------------------------------------------------------------------


SERVE_LINK_SOURCES = ["accounting", "tax", "utility", "survey"]


def sandbox_link(settings: Settings) -> tuple[str, str, list[str]] | None:
    """A ready connector link for a sandbox SME with no active consent (else the first SME), asking
    for every source on behalf of the sandbox's lenders: (SME id, URL, lenders); None when the
    warehouse has no SMEs or none of the sandbox's lenders (not seeded)."""
    from sqlalchemy import select

    from connectors.sandbox.seed import LENDERS, PURPOSE
    from dossier.web.sme import link_url
    from warehouse import links
    from warehouse.consent import active_consents
    from warehouse.db import session_scope
    from warehouse.models import Lender, Sme

    with session_scope() as session:
        lenders = sorted(session.scalars(select(Lender.lender_id).where(Lender.lender_id.in_(list(LENDERS)))))
        smes = session.scalars(
            select(Sme.sme_id).where(Sme.erased_at.is_(None)).order_by(Sme.sme_id).limit(200)
        )
        candidates = list(smes)
        if not lenders or not candidates:
            return None
        now = dt.datetime.now(dt.UTC)
        sme_id = next((s for s in candidates if not active_consents(session, s, now)), candidates[0])
        made = links.create_link(
            session,
            settings.kept_secret("secret_key"),
            sme_id=sme_id,
            sources=SERVE_LINK_SOURCES,
            recipients=lenders,
            purpose=PURPOSE,
            history_months=24,
            consent_days=365,
            actor="operator",
        )
        return sme_id, link_url(settings, sme_id, made.token), lenders


def cmd_serve(args: argparse.Namespace) -> int:
    import dataclasses
    import gc

    import uvicorn

    from dossier.demo import sandbox_running
    from dossier.web.app import create_app

    settings = get_settings()
    changes = {k: v for k, v in (("web_host", args.host), ("web_port", args.port)) if v is not None}
    settings = dataclasses.replace(settings, **changes)
    with sandbox_running(settings, dt.datetime.now(dt.UTC).date()) as wired, override(wired):
        app = create_app(wired)
        token_file = wired.home / "operator.token"
        print(
            f"sme-dossier web service at {wired.base_url} (API docs {wired.base_url}/docs); "
            f"operator token: {'DOSSIER_OPERATOR_TOKEN' if wired.operator_token else token_file}",
            flush=True,
        )
        print(
            f"providers: {wired.sandbox_url}"
            + (
                " (DOSSIER_SANDBOX_URL)"
                if settings.sandbox_url
                else " (the bundled sandbox, started beside the service)"
            ),
            flush=True,
        )
        wired.kept_secret("operator_token")
        if not args.no_link:
            ready = sandbox_link(wired)
            if ready is None:
                print(
                    "no sandbox SMEs registered yet; run `dossier sandbox seed` for a ready link",
                    flush=True,
                )
            else:
                sme_id, url, lenders = ready
                print(
                    f"a connector link for sandbox SME {sme_id} (recipients {', '.join(lenders)}); open it in a browser:",
                    flush=True,
                )
                print(url, flush=True)
        worker = None
        if not args.no_webhooks:
            from warehouse import webhooks

            worker = webhooks.Worker(
                app.state.engine,
                app.state.store,
                wired.webhook_config(),
                poll=wired.webhook_poll_seconds,
                sync_every=wired.webhook_sync_seconds,
            ).start()
        try:
            if args.workers == 1:
                gc.collect()
                gc.freeze()  # what the app was built of is never garbage: full collections skip it
                uvicorn.run(app, host=wired.web_host, port=wired.web_port, log_level="warning")
            else:
                # each process builds its own app (dossier.web.app.worker_app) from the
                # environment, which carries what this command resolved; the grant runs a
                # stopped service left open are taken up here, once
                export_environment(
                    {
                        "DOSSIER_WEB_HOST": wired.web_host,
                        "DOSSIER_WEB_PORT": str(wired.web_port),
                        "DOSSIER_SANDBOX_URL": wired.sandbox_url,
                    }
                )
                app.state.grant_runs.resume()
                uvicorn.run(
                    "dossier.web.app:worker_app",
                    factory=True,
                    workers=args.workers,
                    host=wired.web_host,
                    port=wired.web_port,
                    log_level="warning",
                )
        finally:
            if worker is not None:
                worker.stop()
            if args.workers > 1:
                app.state.grant_runs.close()
    return 0


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


# --- outcomes --------------------------------------------------------------------------------------


def cmd_outcomes_import(args: argparse.Namespace) -> int:
    """Store a lender's outcomes file (all rows or none); the first bad row is named, exit 2."""
    from warehouse.db import session_scope
    from warehouse.outcomes import import_file

    with session_scope() as session:
        counts = import_file(session, Path(args.file), lender=args.lender)
    print(
        f"outcomes from {args.file}: {counts['inserted']} new, {counts['updated']} updated, "
        f"{counts['unchanged']} already recorded"
    )
    return EXIT_OK


def cmd_outcomes_export(args: argparse.Namespace) -> int:
    """Write the stored outcomes beside the scores of their dossiers and the inputs of their
    behavioural adjustments, read from the published dossiers (the input of train --outcomes; an
    erased or withdrawn dossier leaves those inputs empty)."""
    import pandas as pd

    from evaluation.statement_scoring import ADJUSTMENT_INPUTS
    from warehouse.db import session_scope
    from warehouse.dossier_store import read_published
    from warehouse.outcomes import EXPORT_COLUMNS, export_rows, write_export
    from warehouse.storage import Store

    with session_scope() as session:
        rows = export_rows(session, lender=args.lender)
    store, wanted, inputs = Store.from_settings(), {r["dossier_id"] for r in rows}, {}
    for as_of in sorted({r["as_of_date"] for r in rows}):
        published = read_published(store, as_of)
        chosen = published[published["dossier_id"].isin(wanted)][["dossier_id", *ADJUSTMENT_INPUTS]]
        for record in chosen.to_dict("records"):
            inputs[record.pop("dossier_id")] = {k: None if pd.isna(v) else v for k, v in record.items()}
    none = dict.fromkeys(ADJUSTMENT_INPUTS)
    rows = [row | inputs.get(row["dossier_id"], none) for row in rows]
    write_export(rows, Path(args.out), columns=(*EXPORT_COLUMNS, *ADJUSTMENT_INPUTS))
    print(f"{len(rows)} outcomes written to {args.out}")
    return EXIT_OK


# --- offers ----------------------------------------------------------------------------------------


def cmd_offers_list(args: argparse.Namespace) -> int:
    """Every offer (of an SME, a lender, a status), lowest APR first within each SME."""
    from sqlalchemy import select

    from warehouse import offers
    from warehouse.db import session_scope
    from warehouse.models import Lender, Offer

    if args.sme:
        _known_sme(args.sme)
    with session_scope() as session:
        if args.lender and session.get(Lender, args.lender) is None:
            raise CommandLineError(f"unknown lender {args.lender!r} (see: dossier lender list)")
        offers.lapse_due(session, dt.datetime.now(dt.UTC))
        query = select(Offer)
        if args.sme:
            query = query.where(Offer.sme_id == args.sme)
        if args.lender:
            query = query.where(Offer.lender_id == args.lender)
        if args.status:
            query = query.where(Offer.status == args.status)
        rows = [
            offers.view(o) for o in session.scalars(query.order_by(Offer.sme_id, Offer.apr, Offer.offer_id))
        ]
    if args.json:
        _print_json(rows)
        return EXIT_OK
    table = Table(
        "sme", "lender", "status", "amount", "term", "monthly", "total repayable", "APR", "valid until"
    )
    for row in rows:
        status = row["status"] + (f" ({row['status_reason']})" if row["status_reason"] else "")
        table.add_row(
            row["sme_id"],
            row["lender_id"],
            status,
            f"{row['currency']} {row['amount']}",
            f"{row['term_months']} m {row['profile'].replace('_', ' ')}",
            row["monthly_payment"],
            row["total_repayable"],
            f"{float(row['apr']) * 100:.2f}%",
            row["valid_until"],
        )
    console.print(table)
    if not rows:
        print("no offers" + (" match" if args.sme or args.lender or args.status else " yet"))
    return EXIT_OK


def cmd_offers_stats(args: argparse.Namespace) -> int:
    """What the market shows (``evaluation.market.market_stats``): offers per SME, APR spread by grade,
    time to first offer, the best offer against the broker's indicative rate."""
    from evaluation.market import market_stats
    from warehouse.db import session_scope
    from warehouse.offers import market_frames

    with session_scope() as session:
        offers_frame, dossiers = market_frames(session)
    stats = market_stats(offers_frame, dossiers)
    if args.json:
        _print_json(stats)
        return EXIT_OK

    def pct(value: float | None) -> str:
        return "-" if value is None else f"{value * 100:.2f}%"

    per_sme = stats["offers_per_sme"]
    hours = stats["time_to_first_offer_hours"]
    share = stats["share_smes_2plus"]
    print(f"SMEs with a delivered dossier: {stats['smes']}; offers posted: {stats['offers']}")
    print(
        "offers per SME: mean "
        + ("-" if per_sme["mean"] is None else f"{per_sme['mean']:.2f}")
        + ", median "
        + ("-" if per_sme["median"] is None else f"{per_sme['median']:g}")
        + "; SMEs with two or more offers: "
        + ("-" if share is None else f"{share * 100:.1f}%")
    )
    print(
        "median time from delivery to first offer: "
        + ("-" if hours is None else f"{hours:.2f} h")
        + "; median best APR minus indicative rate: "
        + pct(stats["best_vs_indicative"])
    )
    table = Table("grade", "offers", "median APR", "p10-p90 spread", "min-max", "best - indicative")
    for grade, g in stats["by_grade"].items():
        table.add_row(
            grade,
            str(g["offers"]),
            pct(g["median_apr"]),
            pct(g["spread_p10_p90"]),
            f"{pct(g['min_apr'])} - {pct(g['max_apr'])}",
            pct(g["best_vs_indicative"]),
        )
    console.print(table)
    return EXIT_OK


# --- disclose --------------------------------------------------------------------------------------


def cmd_disclose(args: argparse.Namespace) -> int:
    """Write the public disclosure report into ``--out``; print where, and what it describes."""
    from dossier.disclose import build

    out = Path(args.out)
    if out.exists() and not out.is_dir():
        print(f"dossier disclose: --out {out}: exists and is not a directory", file=sys.stderr)
        return EXIT_ERROR
    built = build(out, as_of=_as_of(args.as_of) if args.as_of else None)
    described = (
        f"as-of {built['as_of']}, {built['dossiers']} dossiers" if built["as_of"] else "no publish yet"
    )
    print(f"disclosure report for {built['model_version']} ({described}): {built['page']}")
    return EXIT_OK


# --- parser -----------------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="dossier",
        description="Consent-driven credit dossiers for off-platform SMEs: pull, validate, evaluate, publish.",
    )
    parser.add_argument(
        "-v", "--verbose", action="store_true", help="log debug detail and show the traceback of an error"
    )
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
        dest="db_command", required=True, metavar="COMMAND"
    )
    add(db, "upgrade", cmd_db_upgrade, "Create or migrate the warehouse schema to the latest revision.")
    add(db, "current", cmd_db_current, "Show the warehouse's schema revision (exit 1 if behind).")

    sandbox = commands.add_parser("sandbox", help="the bundled provider sandbox").add_subparsers(
        dest="sandbox_command", required=True, metavar="COMMAND"
    )
    serve = add(
        sandbox, "serve", cmd_sandbox_serve, "Serve the sandbox provider APIs over HTTP until interrupted."
    )
    serve.add_argument("--host", default="127.0.0.1", help="interface to bind (default 127.0.0.1)")
    serve.add_argument("--port", type=port_number, default=8765, help="port to bind (default 8765)")
    serve.add_argument(
        "--smes",
        type=positive,
        help="universe size (default: DOSSIER_SANDBOX_SMES, else the size last seeded)",
    )
    serve.add_argument(
        "--fault-rate", type=share, help="share of 429/5xx responses (default DOSSIER_SANDBOX_FAULT_RATE)"
    )
    seed = add(
        sandbox,
        "seed",
        cmd_sandbox_seed,
        "Register the sandbox SMEs, lenders, subscriptions, connections and consents in the warehouse.",
    )
    seed.add_argument(
        "--smes",
        type=positive,
        help="universe size (default: DOSSIER_SANDBOX_SMES, else the size last seeded); recorded in the home "
        "so that later commands serve the same universe",
    )

    run = add(
        commands,
        "run",
        cmd_run,
        "Run the DAGs in this process for one as-of date (starts the sandbox if DOSSIER_SANDBOX_URL is empty).",
    )
    as_of_option(run)
    run.add_argument("--dag", choices=["all", "ingest", "publish"], default="all", help="which DAG(s) to run")
    run.add_argument(
        "--full",
        action="store_true",
        help="pull every SME's whole consent window and validate and score every SME again "
        "(default: only what changed since the last run)",
    )

    demo = add(
        commands,
        "demo",
        cmd_demo,
        "Set up everything on the embedded defaults, run the pipeline, pull as lenders, print a summary.",
    )
    demo.add_argument(
        "--smes",
        type=positive,
        help="SMEs in the sandbox universe (default: DOSSIER_SANDBOX_SMES, else the size last seeded)",
    )
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
    quarantine.add_argument(
        "--json", action="store_true", help="print the entries as a JSON array (every field, in full)"
    )

    consent = commands.add_parser("consent", help="grant, inspect, withdraw and erase").add_subparsers(
        dest="consent_command", required=True, metavar="COMMAND"
    )
    consent_list = add(
        consent, "list", cmd_consent_list, "List consents with their scope, purpose and status now."
    )
    consent_list.add_argument("--sme", help="only this SME")
    consent_list.add_argument("--json", action="store_true", help="print JSON instead of a table")
    lapsing = add(
        consent,
        "lapsing",
        cmd_consent_lapsing,
        "List active consents that stop within --days unless the SME reconfirms them (90-day rule).",
    )
    lapsing.add_argument("--days", type=int, default=14, help="look this many days ahead (default 14)")
    lapsing.add_argument("--json", action="store_true", help="print JSON instead of a table")
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
    add(
        consent,
        "verify",
        cmd_consent_verify,
        "Check every consent and link ledger chain; name the first broken event of each (exit 1).",
    )

    link = commands.add_parser("link", help="connector links sent to SMEs").add_subparsers(
        dest="link_command", required=True, metavar="COMMAND"
    )
    link_create = add(
        link,
        "create",
        cmd_link_create,
        "Make a signed, expiring link asking an SME for a consent; print its URL.",
    )
    link_create.add_argument("--sme", required=True, help="the SME asked, e.g. SME-000042")
    link_create.add_argument(
        "--sources", required=True, help="comma-separated sources: accounting,tax,utility,survey"
    )
    link_create.add_argument(
        "--lenders", required=True, help="comma-separated lender ids that would receive the dossier"
    )
    link_create.add_argument("--purpose", required=True, help="credit_decision or facility_monitoring")
    link_create.add_argument("--months", required=True, type=int, help="months of history asked for (1-120)")
    link_create.add_argument(
        "--consent-days", required=True, type=int, help="days the consent lasts once granted"
    )
    link_create.add_argument(
        "--valid-days", type=int, default=14, help="days the link can be answered (default 14)"
    )
    link_create.add_argument("--actor", default="operator", help="who asks (default operator)")
    link_list = add(
        link,
        "list",
        cmd_link_list,
        "List connector links: who asked, status, the pipeline run a grant started, field visits asked for.",
    )
    link_list.add_argument("--sme", help="only this SME's links")
    link_list.add_argument(
        "--visits", action="store_true", help="only links through which a field visit was requested"
    )
    link_list.add_argument("--json", action="store_true", help="print JSON instead of a table")

    lender = commands.add_parser("lender", help="lenders, subscriptions and pulls").add_subparsers(
        dest="lender_command", required=True, metavar="COMMAND"
    )
    add(lender, "list", cmd_lender_list, "List lenders.")
    lender_add = add(
        lender, "add", cmd_lender_add, "Register a lender and print its API key (shown only this once)."
    )
    lender_add.add_argument("lender_id", metavar="LENDER_ID", help="lender id, e.g. northwind-capital")
    lender_add.add_argument("--name", help="display name (default: the id)")
    share_profile = add(
        lender,
        "share-profile",
        cmd_lender_share_profile,
        "Write a lender's Delta Sharing profile file (endpoint and bearer token; a new API key unless --key).",
    )
    share_profile.add_argument("lender_id", metavar="LENDER_ID", help="lender id, e.g. northwind-capital")
    share_profile.add_argument(
        "--out", required=True, type=out_file, help="the profile file to write, e.g. northwind.share"
    )
    share_profile.add_argument(
        "--key", help="an API key of the lender to put in the profile (default: issue a new one)"
    )
    lender_keys = add(
        lender, "keys", cmd_lender_keys, "List a lender's API keys by prefix, with their status."
    )
    lender_keys.add_argument("--lender", required=True, help="lender id")
    rotate = add(
        lender,
        "rotate-key",
        cmd_lender_rotate_key,
        "Issue a new API key; the lender's current keys stay valid for a grace period.",
    )
    rotate.add_argument("--lender", required=True, help="lender id")
    rotate.add_argument(
        "--grace-hours",
        type=grace_hours,
        default=24.0,
        help="hours the current keys stay valid (0 to 720, default 24)",
    )
    revoke_key = add(lender, "revoke-key", cmd_lender_revoke_key, "Revoke one API key at once.")
    revoke_key.add_argument("--prefix", required=True, help="the key's prefix (see: dossier lender keys)")
    pull = add(
        lender,
        "pull",
        cmd_lender_pull,
        "Write the dossiers a lender is entitled to, since its last pull, into a local Parquet file; "
        "with --api, read them over the lender API as its client.",
    )
    pull.add_argument("--lender", help="lender id, e.g. northwind-capital (a local pull)")
    pull.add_argument(
        "--subscription", help="which of the lender's subscriptions to pull (default: its only one)"
    )
    pull.add_argument(
        "--out", required=True, type=out_folder, help="folder to write the Parquet file(s) into"
    )
    pull.add_argument(
        "--api",
        action="store_true",
        help="pull over the lender API (incremental: the cursor is kept in the --out folder)",
    )
    pull.add_argument(
        "--api-url", help="with --api: the API's base URL (default DOSSIER_LENDER_API_URL, else this service)"
    )
    pull.add_argument("--api-key", help="with --api: the lender's API key (default DOSSIER_LENDER_API_KEY)")
    lender_status = add(
        lender, "status", cmd_lender_status, "Show a lender's cursor, deliveries and entitlements."
    )
    lender_status.add_argument("--lender", required=True, help="lender id")
    subscribe = add(
        lender,
        "subscribe",
        cmd_lender_subscribe,
        "Create a lender's subscription, or change its filters with --add or --replace; says what changed.",
    )
    subscribe.add_argument("--lender", required=True, help="lender id")
    subscribe.add_argument("--name", default="default", help="subscription name (default: default)")
    subscribe.add_argument("--grades", help="comma-separated grades A-E, e.g. A,B,C (default: all)")
    subscribe.add_argument(
        "--industries", help="comma-separated industries of registered SMEs (default: all)"
    )
    subscribe.add_argument("--regions", help="comma-separated regions of registered SMEs (default: all)")
    subscribe.add_argument(
        "--size-bands", help="comma-separated size bands: micro, small, medium (default: all)"
    )
    subscribe.add_argument(
        "--min-grade",
        help="the worst grade delivered, A (best) to E: B delivers A and B (default: every grade)",
    )
    subscribe.add_argument(
        "--required-sources",
        help="comma-separated sources a dossier must have used, all of them: "
        "accounting, tax, utility, survey (default: none required)",
    )
    subscribe.add_argument(
        "--purpose",
        help="credit_decision or facility_monitoring (default: the subscription's current one, else credit_decision)",
    )
    mode = subscribe.add_mutually_exclusive_group()
    mode.add_argument(
        "--add",
        dest="mode",
        action="store_const",
        const="add",
        help="add the values given to the subscription's current filters",
    )
    mode.add_argument(
        "--replace",
        dest="mode",
        action="store_const",
        const="replace",
        help="replace all current filters by those given (a filter not given lets everything through)",
    )

    agents_group = commands.add_parser(
        "agents", help="field agents: collusion scores, suspensions, reinstatements"
    ).add_subparsers(dest="agents_command", required=True, metavar="COMMAND")
    agents_list = add(
        agents_group,
        "list",
        cmd_agents_list,
        "List field agents with their collusion score, flags and status.",
    )
    as_of_option(agents_list)
    agents_list.add_argument("--json", action="store_true", help="print JSON instead of a table")
    for name, func, text in (
        ("suspend", cmd_agents_suspend, "Suspend a field agent: their visits stop counting as verification."),
        (
            "reinstate",
            cmd_agents_reinstate,
            "Reinstate a suspended field agent (the suspension stays in history).",
        ),
    ):
        decide = add(agents_group, name, func, text + " Re-scores the SMEs they visited.")
        decide.add_argument("agent", metavar="AGENT", help="agent id, e.g. agent_013")
        decide.add_argument("--reason", required=True, help="why (recorded)")
        decide.add_argument("--actor", default="operator", help="who decides (default operator)")
        decide.add_argument("--no-rescore", action="store_true", help="only record and flag; re-score later")
        as_of_option(decide)
    detect = add(
        agents_group,
        "detect",
        cmd_agents_detect,
        "Run the collusion detector over the warehouse; with --apply suspend the agents it recommends.",
    )
    detect.add_argument("--apply", action="store_true", help="suspend the recommended agents and re-score")
    detect.add_argument(
        "--actor", default="collusion-detector", help="who decides (default collusion-detector)"
    )
    detect.add_argument("--no-rescore", action="store_true", help="with --apply: only record and flag")
    detect.add_argument("--json", action="store_true", help="print JSON")
    as_of_option(detect)

    verify = add(
        commands,
        "verify",
        cmd_verify,
        "Re-hash raw payloads and published dossier files against their addresses and manifests "
        "(exit 1 when anything is wrong).",
    )
    verify.add_argument("--json", action="store_true", help="print the result as JSON")

    parse = add(
        commands,
        "parse",
        cmd_parse,
        "Parse one source file (SAF-T, OFX, ledger CSV/XLSX, VAT, Green Button, Kobo, ODK) and print its totals as JSON.",
    )
    parse.add_argument("file", help="the file to parse")
    parse.add_argument(
        "--format",
        help="the file's format: saft-no, saft-pt, ledger, ofx, hmrc-vat, mva-melding, mva-validering, espi, kobo, odk-csv, odk-xml"
        " (default: detected from its content)",
    )
    parse.add_argument("--out", help="folder to write each table the file yields as <table>.parquet")

    serve = add(
        commands,
        "serve",
        cmd_serve,
        "Run the web service (connector links, lender API, operator API) until interrupted.",
    )
    serve.add_argument("--host", help="interface to bind (default DOSSIER_WEB_HOST, 127.0.0.1)")
    serve.add_argument("--port", type=int, help="port to bind (default DOSSIER_WEB_PORT, 8000)")
    serve.add_argument(
        "--workers",
        type=positive,
        default=1,
        help="service processes sharing the port (default 1); with more than one, keep the rate-limit "
        "counters in Redis (DOSSIER_RATE_LIMIT_STORAGE_URL) so that they are shared",
    )
    serve.add_argument(
        "--no-webhooks",
        action="store_true",
        help="do not start the webhook worker beside the service (run `dossier webhooks send` instead)",
    )
    serve.add_argument(
        "--no-link", action="store_true", help="do not make and print a connector link for a sandbox SME"
    )

    hooks = commands.add_parser("webhooks", help="lenders' signed webhook endpoints").add_subparsers(
        dest="webhooks_command", required=True, metavar="COMMAND"
    )
    hooks_list = add(hooks, "list", cmd_webhooks_list, "List webhook endpoints, with why any is disabled.")
    hooks_list.add_argument("--lender", help="only this lender's endpoints")
    hooks_list.add_argument("--json", action="store_true", help="print the endpoints as JSON")
    hooks_add = add(
        hooks,
        "add",
        cmd_webhooks_add,
        "Register a lender's webhook endpoint and print its signing secret (shown only this once).",
    )
    hooks_add.add_argument("--lender", required=True, help="lender id")
    hooks_add.add_argument("--url", required=True, help="the receiver's http:// or https:// URL")
    hooks_add.add_argument(
        "--events",
        help="comma-separated: dossier.delivered, dossier.withdrawn, offer.accepted, offer.closed, "
        "offer.declined, offer.lapsed (default: all)",
    )
    hooks_add.add_argument("--description", help="a note for the lender")
    hooks_remove = add(hooks, "remove", cmd_webhooks_remove, "Remove an endpoint with its delivery log.")
    hooks_remove.add_argument(
        "endpoint", metavar="ENDPOINT_ID", help="the endpoint (see: dossier webhooks list)"
    )
    hooks_test = add(hooks, "test", cmd_webhooks_test, "Queue a webhook.test message to an endpoint.")
    hooks_test.add_argument("endpoint", metavar="ENDPOINT_ID", help="the endpoint")
    deliveries = add(
        hooks, "deliveries", cmd_webhooks_deliveries, "Show an endpoint's delivery log, newest first."
    )
    deliveries.add_argument("endpoint", metavar="ENDPOINT_ID", help="the endpoint")
    deliveries.add_argument("--status", choices=["pending", "delivered", "failed"], help="only these")
    deliveries.add_argument("--limit", type=positive, default=20, help="messages shown (default 20)")
    deliveries.add_argument("--json", action="store_true", help="print the log as JSON")
    replay = add(
        hooks,
        "replay",
        cmd_webhooks_replay,
        "Send one message again (--message), or every feed event of a time range (--since, --until).",
    )
    replay.add_argument("endpoint", metavar="ENDPOINT_ID", help="the endpoint")
    replay.add_argument("--message", help="the message's webhook-id (msg_...)")
    replay.add_argument("--since", type=instant, help="start of the range, ISO 8601 (UTC when no zone)")
    replay.add_argument("--until", type=instant, help="end of the range (exclusive)")
    replay.add_argument("--only-failed", action="store_true", help="only messages whose attempts all failed")
    hooks_send = add(
        hooks,
        "send",
        cmd_webhooks_send,
        "Run the webhook worker until interrupted: sync lenders' feeds, queue new events, send what is due.",
    )
    hooks_send.add_argument("--once", action="store_true", help="run one step, print what it did, and exit")

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

    outcomes = commands.add_parser(
        "outcomes", help="outcomes lenders report on the dossiers they were delivered"
    ).add_subparsers(dest="outcomes_command", required=True, metavar="COMMAND")
    outcomes_import = add(
        outcomes,
        "import",
        cmd_outcomes_import,
        "Store a CSV of outcomes (lender_id?, dossier_id or sme_id, outcome repaid|defaulted|current, "
        "outcome_date, amount?) reported by a lender on dossiers delivered to it; repeatable.",
    )
    outcomes_import.add_argument("file", metavar="FILE", help="the outcomes CSV")
    outcomes_import.add_argument(
        "--lender", help="the reporting lender, for a file without a lender_id column"
    )
    outcomes_export = add(
        outcomes,
        "export",
        cmd_outcomes_export,
        "Write the stored outcomes with the PD, grade, model version and behavioural inputs of their "
        "dossiers as CSV (for make train OUTCOMES=OUT.csv).",
    )
    outcomes_export.add_argument("out", metavar="OUT.csv", help="where to write the CSV")
    outcomes_export.add_argument("--lender", help="only this lender's outcomes")

    offers_group = commands.add_parser(
        "offers", help="lenders' offers on delivered dossiers and what the market shows"
    ).add_subparsers(dest="offers_command", required=True, metavar="COMMAND")
    offers_list = add(
        offers_group,
        "list",
        cmd_offers_list,
        "List offers with the broker's figures (monthly payment, total repayable, APR), cheapest first "
        "per SME; offers past their validity lapse first.",
    )
    offers_list.add_argument("--sme", help="only this SME's offers")
    offers_list.add_argument("--lender", help="only this lender's offers")
    offers_list.add_argument(
        "--status",
        choices=("open", "accepted", "declined", "withdrawn", "lapsed", "closed"),
        help="only this status",
    )
    offers_list.add_argument("--json", action="store_true", help="print JSON instead of a table")
    offers_stats = add(
        offers_group,
        "stats",
        cmd_offers_stats,
        "What the market shows: offers per SME, median APR and spread by grade, time from delivery to "
        "first offer, share of SMEs with two or more offers, best offer against the indicative rate.",
    )
    offers_stats.add_argument("--json", action="store_true", help="print JSON instead of tables")

    disclose = add(
        commands,
        "disclose",
        cmd_disclose,
        "Write the public disclosure report (static HTML): model card, calibration, PD bands, grades, "
        "coverage and PSI of the latest publish, suspended agents, and how each dossier column is computed.",
    )
    disclose.add_argument("--out", required=True, metavar="DIR", help="folder to write index.html into")
    disclose.add_argument("--as-of", help="publish to describe, YYYY-MM-DD (default: the latest)")

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


def explain(error: BaseException) -> str | None:
    """The one line that tells a person what went wrong and how to fix it; None for a defect."""
    import requests
    from sqlalchemy import exc as sql

    if isinstance(error, DossierError):
        return str(error)
    if isinstance(error, sql.DBAPIError):
        url = get_settings().warehouse_url
        detail = str(error.orig).strip().splitlines()[0] if error.orig is not None else str(error)
        missing_schema = ("no such table", "no such column", "unable to open database file")
        if any(s in detail for s in missing_schema) or (
            ("relation" in detail or "column" in detail) and "does not exist" in detail
        ):
            return f"the warehouse at {url} has no schema or an older one ({detail}); run: dossier db upgrade"
        return f"cannot use the warehouse at {url}: {detail}; check DOSSIER_WAREHOUSE_URL and that the database is up"
    if isinstance(error, sql.ArgumentError | sql.NoSuchModuleError):
        return f"DOSSIER_WAREHOUSE_URL is not usable: {error}"
    if isinstance(error, requests.ConnectionError):
        url = error.request.url if error.request is not None else get_settings().sandbox_url
        return f"cannot reach the provider at {url}; check DOSSIER_SANDBOX_URL and that the service is up"
    if isinstance(error, OSError) and error.filename is not None:
        return f"{error.strerror or error}: {error.filename}"
    return None


def _one_line(text: str) -> str:
    return " ".join(text.split())


def main(argv: Sequence[str] | None = None) -> int:
    """Run one ``dossier`` command; returns its exit status (see the module docstring)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    verbose = "-v" in argv or "--verbose" in argv
    try:
        args = build_parser().parse_args(argv)
        settings = get_settings()
        level = logging.DEBUG if args.verbose else getattr(logging, settings.log_level, logging.INFO)
        logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
        if not args.verbose:
            logging.getLogger("alembic").setLevel(logging.WARNING)
        return args.func(args)
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED
    except BrokenPipeError:
        sys.stdout = open(os.devnull, "w")  # noqa: SIM115
        return EXIT_OK
    except Exception as error:
        if verbose:
            traceback.print_exc(file=sys.stderr)
        message = explain(error)
        if message is None:
            print(
                f"dossier: unexpected error: {type(error).__name__}: {_one_line(str(error))} "
                "(a defect; run again with -v and report the traceback)",
                file=sys.stderr,
            )
            return EXIT_BUG
        print(f"dossier: error: {_one_line(message)}", file=sys.stderr)
        return EXIT_ERROR


if __name__ == "__main__":
    sys.exit(main())
