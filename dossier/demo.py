"""``dossier demo`` and ``dossier run``: the whole product on the embedded defaults.

The demo migrates the warehouse, starts the bundled sandbox on a free port, registers its SMEs with
their consents, runs both DAGs in this process (``dag.test()``, Airflow metadata on SQLite), pulls
as every lender and prints what happened. Running it again gives the same result: every step is
idempotent, and lenders receive nothing twice.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from sqlalchemy import func, select

from dossier.settings import Settings, get_settings, override, record_sandbox


@contextlib.contextmanager
def sandbox_running(settings: Settings, as_of: dt.date) -> Iterator[Settings]:
    """Settings whose ``sandbox_url`` points at a provider sandbox: the configured one, else a bundled one."""
    if settings.sandbox_url:
        yield settings
        return
    from connectors.sandbox.server import SandboxServer
    from connectors.sandbox.universe import Universe

    universe = Universe(settings.sandbox_seed, settings.sandbox_smes, as_of)
    server = SandboxServer(universe, fault_rate=settings.sandbox_fault_rate, fault_seed=settings.sandbox_seed)
    with server, override(dataclasses.replace(settings, sandbox_url=server.url)) as wired:
        yield wired


def run_pipeline(
    *, as_of: dt.date, dags: str = "all", on_progress: Any = None, full: bool = False
) -> dict[str, Any]:
    """Run the ingest and/or publish DAG in-process for ``as_of`` (starting the sandbox when needed);
    ``full`` pulls every SME's whole consent window and validates and scores every SME again."""
    from dossier import airflow_runner
    from warehouse.db import get_engine
    from warehouse.migrate import upgrade

    settings = get_settings()
    settings.home.mkdir(parents=True, exist_ok=True)
    upgrade(get_engine())
    dag_ids = {
        "all": [airflow_runner.INGEST_DAG, airflow_runner.PUBLISH_DAG],
        "ingest": [airflow_runner.INGEST_DAG],
        "publish": [airflow_runner.PUBLISH_DAG],
    }[dags]
    runs = []
    with sandbox_running(settings, as_of) as wired:
        airflow_runner.prepare(wired)
        log_file = wired.airflow_home / "dag-runs.log"
        for dag_id in dag_ids:
            if on_progress:
                on_progress(dag_id, "start")
            conf = {"full": True} if full else None
            runs.append(airflow_runner.run_dag(dag_id, as_of=as_of, log_file=log_file, conf=conf))
            if on_progress:
                on_progress(dag_id, "end")
    return {"as_of": as_of.isoformat(), "runs": runs, "log": str(log_file)}


def _count_finished_pulls(as_of: dt.date, since: dt.datetime) -> int:
    from warehouse.db import session_scope
    from warehouse.models import IngestionRun

    with session_scope() as session:
        return (
            session.scalar(
                select(func.count())
                .select_from(IngestionRun)
                .where(IngestionRun.as_of_date == as_of, IngestionRun.finished_at >= since)
            )
            or 0
        )


def _expected_pulls() -> int:
    from warehouse.db import session_scope
    from warehouse.models import SourceConnection

    with session_scope() as session:
        return session.scalar(select(func.count()).select_from(SourceConnection)) or 0


def demo(*, smes: int, as_of: dt.date, console: Console) -> int:
    """The end-to-end demo; returns the process exit code."""
    from connectors.sandbox.seed import seed_warehouse
    from connectors.sandbox.universe import Universe
    from dossier.report import pipeline_report, pull_all_lenders, render_report
    from warehouse.db import get_engine, session_scope
    from warehouse.migrate import upgrade

    settings = dataclasses.replace(get_settings(), sandbox_smes=smes)
    started = time.monotonic()
    with override(settings):
        console.rule("[bold]sme-dossier demo")
        console.print(f"home {settings.home}  ·  warehouse {settings.warehouse_url}  ·  as of {as_of}")
        settings.home.mkdir(parents=True, exist_ok=True)
        upgrade(get_engine())
        with console.status("Registering the sandbox's SMEs, lenders and consents..."):
            universe = Universe(settings.sandbox_seed, smes, as_of)
            with session_scope() as session:
                seeded = seed_warehouse(
                    session, universe, now=dt.datetime.combine(as_of, dt.time(), tzinfo=dt.UTC)
                )
        record_sandbox(settings)
        console.print(f"[green]✓[/] seeded {smes} SMEs: {_inline(seeded)}")

        expected = _expected_pulls()
        since = dt.datetime.now(dt.UTC)
        with Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            console=console,
            transient=False,
        ) as progress:
            ingest_bar = progress.add_task("Ingesting sources (sme_ingest)", total=expected)
            publish_bar = progress.add_task(
                "Validating, evaluating, publishing (sme_dossier_publish)", total=1, visible=False
            )
            stop = threading.Event()

            def watch() -> None:
                with override(settings):
                    while not stop.wait(0.5):
                        progress.update(
                            ingest_bar, completed=min(expected, _count_finished_pulls(as_of, since))
                        )

            def on_progress(dag_id: str, phase: str) -> None:
                if dag_id == "sme_dossier_publish" and phase == "start":
                    progress.update(ingest_bar, completed=expected)
                    progress.update(publish_bar, visible=True)
                if dag_id == "sme_dossier_publish" and phase == "end":
                    progress.update(publish_bar, completed=1)

            watcher = threading.Thread(target=watch, daemon=True)
            watcher.start()
            try:
                result = run_pipeline(as_of=as_of, on_progress=on_progress)
            finally:
                stop.set()
                watcher.join()
        failed = [run for run in result["runs"] if run["state"] != "success"]
        for run in result["runs"]:
            mark = "[green]✓[/]" if run["state"] == "success" else "[red]✗[/]"
            console.print(
                f"{mark} {run['dag_id']}: {run['state']}"
                + (f" (failed: {', '.join(run['failed_tasks'])})" if run["failed_tasks"] else "")
            )
        if failed:
            console.print(f"[red]A DAG failed; task logs are in {result['log']}")
            return 1

        pulls_dir = settings.home / "pulls"
        pulls = pull_all_lenders(pulls_dir)
        render_report(pipeline_report(as_of), console, pulls=pulls)
        from dossier.offers_round import run_round

        with console.status("Sandbox lenders answer their feeds with offers; an SME compares and accepts..."):
            market = run_round(settings)
        render_round(market, console)
        from dossier.disclose import build as build_disclosure

        disclosure = settings.home / "disclosure"
        build_disclosure(
            disclosure, as_of=as_of, market=market["market"] if market["market"]["offers"] else None
        )
        console.print(f"[green]✓[/] disclosure report: {disclosure / 'index.html'}")
        console.print(f"\nFinished in {time.monotonic() - started:.0f} s. Airflow task logs: {result['log']}")
        console.print(_next_steps())
    return 0


def _pct(value: Any) -> str:
    return "-" if value is None else f"{float(value) * 100:.2f}%"


def render_round(market: dict[str, Any], console: Console) -> None:
    """Print the offers round (:func:`dossier.offers_round.run_round`): what each lender posted, the
    offers one SME compared side by side and the one it accepted, who was told, and the market."""
    from rich.table import Table

    for lender in market["lenders"]:
        refused = f", {len(lender['refused'])} refused" if lender["refused"] else ""
        console.print(
            f"[green]✓[/] {lender['lender_id']} ({lender['policy']}): {len(lender['posted'])} offer(s) posted "
            f"on {lender['held']} dossier(s) held, {lender['passed']} outside its appetite, "
            f"{lender['already']} answered before{refused}"
        )
    choice = market["choice"]
    if choice is None:
        console.print("No SME has two or more offers yet, so none was compared.")
    else:
        table = Table(
            "lender",
            "amount",
            "term",
            "monthly",
            "total repayable",
            "APR",
            "status",
            title=f"Offers to {choice['sme_id']}, compared by APR (cheapest first)",
        )
        for o in choice["offers"]:
            table.add_row(
                o["lender_id"],
                f"{o['currency']} {float(o['amount']):,.0f}",
                f"{o['term_months']} m {o['profile'].replace('_', ' ')}",
                f"{float(o['monthly_payment']):,.2f}",
                f"{float(o['total_repayable']):,.2f}",
                _pct(o["apr"]),
                o["status"],
            )
        console.print(table)
        console.print(f"[green]✓[/] {choice['message']}")
        told = ", ".join(f"{lender} read {kind}" for lender, kind in market["told"])
        if told:
            console.print(f"  in the lenders' feeds: {told}")
        console.print(f"  the SME's page: {choice['page_url']} (with `make serve`)")
    stats = market["market"]
    share = stats["share_smes_2plus"]
    console.print(
        f"Market: {stats['offers']} offers on {stats['smes']} SMEs with a delivered dossier; "
        f"{'-' if share is None else f'{share * 100:.0f}%'} of them have two or more; median best APR minus "
        f"the broker's indicative rate {_pct(stats['best_vs_indicative'])}"
    )
    for grade, g in stats["by_grade"].items():
        if g["offers"]:
            console.print(
                f"  grade {grade}: {g['offers']} offers, median APR {_pct(g['median_apr'])}, "
                f"spread {_pct(g['min_apr'])} to {_pct(g['max_apr'])}"
            )


def _next_steps() -> str:
    """How to reach the ``dossier`` command from a shell, and what to try with it."""
    bin_dir = Path(sys.executable).parent
    activate = bin_dir / "activate"
    on_path = f"source {activate}" if activate.exists() else f"export PATH={bin_dir}:$PATH"
    return (
        f"Next: `{on_path}` puts the dossier command on the PATH; then try `dossier status`, "
        "`dossier lender status --lender northwind-capital` and the README's lender walkthrough."
    )


def _inline(counts: dict[str, Any]) -> str:
    return ", ".join(
        f"{k.replace('_', ' ')} {v}" for k, v in counts.items() if not isinstance(v, dict | list)
    )


__all__ = ["demo", "run_pipeline", "sandbox_running"]
