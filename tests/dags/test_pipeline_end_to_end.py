"""Both DAGs run in-process (``dag.test()``, Airflow metadata on SQLite) against the sandbox over HTTP.

One scenario, driven through the ``dossier`` command where a user would use it: seed the sandbox's
SMEs and consents, run the pipeline, pull as every lender, withdraw consents, pull again, re-run.
It runs with the warehouse on SQLite and on PostgreSQL. What lenders received is judged by the
independent oracle (``tests/consent_oracle.py``) from the ``consents`` table read by plain SQL and
the pull files alone, never by the consent code under test.
"""

from __future__ import annotations

import datetime as dt
import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import duckdb
import pandas as pd
import pyarrow.parquet as pq
import pytest
from consent_oracle import (
    Oracle,
    as_of_instant,
    ledger_from_sql,
    pull_instant,
    read_rows,
    subscription_purposes,
    utc_instant,
)
from sqlalchemy import select, text

import evaluation
from dossier.cli import main
from dossier.demo import run_pipeline
from dossier.monitoring import read_stability
from dossier.settings import for_home, override
from evaluation.statement_model import RATIOS
from warehouse.db import make_engine, session_scope
from warehouse.dossier_schema import SCHEMA_VERSION
from warehouse.models import DossierVersion
from warehouse.storage import Store

pytestmark = [pytest.mark.airflow, pytest.mark.slow]

SMES = 36
LENDERS = ("northwind-capital", "harbor-credit", "kestrel-finance")


def _catalog() -> list[tuple]:
    with session_scope() as session:
        return session.execute(
            select(
                DossierVersion.dossier_id, DossierVersion.feed_seq, DossierVersion.content_sha256
            ).order_by(DossierVersion.dossier_id)
        ).all()


def _shard_plan(engine: Any, as_of: dt.date) -> tuple:
    with engine.connect() as connection:
        row = connection.execute(
            text(
                "SELECT shard_count, basis, smes, shard_size, max_shards FROM shard_plans "
                "WHERE as_of_date = :d"
            ),
            {"d": as_of},
        ).one()
    return tuple(row)


def _consenting(ledger: Any, at: dt.datetime) -> int:
    """SMEs with a consent active at ``at``, by the oracle's ledger (read from the table by plain SQL)."""
    return len({e.terms.sme_id for history in ledger.episodes.values() for e in history if e.active_at(at)})


def _stage_shards(engine: Any, as_of: dt.date) -> dict[str, list[int]]:
    """The shards each per-shard step of ``as_of`` recorded a run of."""
    with engine.connect() as connection:
        rows = connection.execute(
            text("SELECT DISTINCT stage, shard FROM stage_runs WHERE as_of_date = :d AND shard >= 0"),
            {"d": as_of},
        ).all()
    found: dict[str, list[int]] = {}
    for stage, shard in sorted(rows):
        found.setdefault(stage, []).append(shard)
    return found


class Lenders:
    """Pulls through the command, each judged by the oracle against the consents table as it is then."""

    def __init__(self, url: str, out: Path, capsys: pytest.CaptureFixture[str]) -> None:
        self.engine = make_engine(url)
        self.out = out
        self.capsys = capsys
        with self.engine.connect() as connection:
            self.oracle = Oracle(ledger_from_sql(connection))
            for lender, purpose in subscription_purposes(connection).items():
                self.oracle.subscribed(lender, purpose)

    def pull(self, lender: str) -> tuple[dict[str, Any], list[dict[str, Any]], list[dict[str, Any]]]:
        self.capsys.readouterr()
        assert main(["lender", "pull", "--lender", lender, "--out", str(self.out)]) == 0
        summary = json.loads(self.capsys.readouterr().out)
        with self.engine.connect() as connection:
            self.oracle.ledger = ledger_from_sql(connection)
        dossiers, withdrawals = read_rows(summary["file"]), read_rows(summary["withdrawals_file"])
        at = pull_instant(summary["pull_id"])
        assert self.oracle.pulled(lender, at, dossiers, withdrawals, summary["pull_id"]) == []
        return summary, dossiers, withdrawals


@pytest.fixture
def restored_environment() -> Iterator[None]:
    """Running the DAGs wires Airflow through this process's environment (the warehouse URL among
    others); put it back, so later tests and the processes they start never see a dropped schema."""
    saved = dict(os.environ)
    try:
        yield
    finally:
        os.environ.clear()
        os.environ.update(saved)


@pytest.mark.usefixtures("restored_environment")
def test_dags_pull_validate_evaluate_publish_and_feed_lenders(
    warehouse_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    as_of = dt.datetime.now(dt.UTC).date()
    settings = for_home(
        tmp_path / "var",
        warehouse_url=warehouse_url,
        shard_size=12,  # the shard count is planned from the SMEs (no DOSSIER_SHARD_COUNT)
        sandbox_smes=SMES,
        sandbox_fault_rate=0.03,
    )
    with override(settings):
        assert main(["sandbox", "seed"]) == 0
        first = run_pipeline(as_of=as_of)
        assert [(r["dag_id"], r["state"], r["failed_tasks"]) for r in first["runs"]] == [
            ("sme_ingest", "success", []),
            ("sme_dossier_publish", "success", []),
        ]
        lenders = Lenders(warehouse_url, tmp_path / "pulls", capsys)
        plan = _shard_plan(lenders.engine, as_of)
        assert plan[:2] == (-(-plan[2] // 12), "size")
        assert plan[1:] == ("size", _consenting(lenders.oracle.ledger, dt.datetime.now(dt.UTC)), 12, 256)
        assert plan[0] > 1
        assert _stage_shards(lenders.engine, as_of) == {
            stage: list(range(plan[0])) for stage in ("ingest", "validate", "evaluate")
        }

        # Consent is law before a pull: a source is pulled only where a consent active at the as-of
        # instant and still active when the run checked covers it (the oracle reads the table).
        with lenders.engine.connect() as connection:
            runs = connection.execute(
                text("SELECT sme_id, source, status, started_at FROM ingestion_runs ORDER BY sme_id, source")
            ).all()
            quarantined = set(
                connection.scalars(text("SELECT sme_id FROM quarantine WHERE resolved_at IS NULL"))
            )
        ledger = lenders.oracle.ledger
        start = as_of_instant(as_of)
        for sme_id, source, status, started in runs:
            covering = [e for e in ledger.of_sme(sme_id) if source in e.terms.sources]
            if status == "pulled":
                assert any(e.active_at(start) and e.active_at(utc_instant(started)) for e in covering), (
                    sme_id,
                    source,
                )
            if not any(e.active_at(start) for e in covering):
                assert status == "skipped_no_consent", (sme_id, source, status)
        assert {status for *_, status, _ in runs} >= {"pulled", "skipped_no_consent"}
        assert (settings.data_docs_dir / "uncommitted" / "data_docs" / "local_site" / "index.html").is_file()

        # At every lender pull: each row is covered by a consent naming that lender (the oracle).
        received: dict[str, list[dict[str, Any]]] = {}
        for lender in LENDERS:
            _summary, dossiers, withdrawals = lenders.pull(lender)
            received[lender] = dossiers
            assert withdrawals == []
        everything = [row for rows in received.values() for row in rows]
        assert len({row["sme_id"] for row in everything}) > SMES // 2
        assert not {row["sme_id"] for row in everything} & quarantined
        assert {row["grade"] for row in everything} <= set("ABCDE")
        assert all(0 <= row["pd_12m"] <= 1 for row in everything)
        # Every published dossier explains and prices itself, and the publish measured stability.
        assert all(row["model_version"] == evaluation.MODEL_VERSION for row in everything)
        assert all(row["improvement_hint"] for row in everything)
        assert all(row["reason_codes"] or row["grade"] in ("A", "B") for row in everything)
        assert all(row["pd_low"] <= row["pd_12m"] <= row["pd_high"] for row in everything)
        assert all(0 <= row["coverage"] <= 1 for row in everything)
        assert all(row["indicative_rate"] >= 0.085 and row["credit_limit"] >= 0 for row in everything)
        stability = read_stability(Store.from_settings(), as_of)
        assert stability["rows"] >= len(everything) // len(LENDERS)
        assert set(stability["psi"]) == {r.attr for r in RATIOS} | {"pd_12m"}

        lender = "northwind-capital"
        files = sorted((tmp_path / "pulls").glob(f"{lender}-*.parquet"))
        assert len(files) == 1
        frame = pd.read_parquet(files[0])
        assert len(frame) == len(received[lender]) > 0
        assert duckdb.sql(f"select count(*) from read_parquet('{files[0]}')").fetchall() == [(len(frame),)]
        assert pq.read_schema(files[0]).field("pd_12m").metadata[b"description"]

        # The SME withdraws every consent that names this lender: the next pull says so, once.
        withdrawn_sme = frame["sme_id"].iloc[0]
        naming = sorted(
            e.terms.consent_id
            for e in lenders.oracle.ledger.of_sme(withdrawn_sme)
            if lender in e.terms.recipients and e.ended_at is None
        )
        assert naming
        for consent_id in naming:
            assert main(["consent", "revoke", "--consent", consent_id, "--reason", "SME changed lender"]) == 0
        second_pull, dossiers, withdrawals = lenders.pull(lender)
        assert (second_pull["delivered"], {w["sme_id"] for w in withdrawals}) == (0, {withdrawn_sme})
        assert dossiers == []

        # A re-run of the same day changes nothing a lender can see: same catalog, nothing redelivered.
        catalog = _catalog()
        partition = sorted(
            Path(Store.from_settings().layout.dossier_partition(SCHEMA_VERSION, as_of.isoformat())).glob(
                "*.parquet"
            )
        )
        before = {p.name: p.read_bytes() for p in partition}
        second = run_pipeline(as_of=as_of)
        assert [r["state"] for r in second["runs"]] == ["success", "success"]
        assert _shard_plan(lenders.engine, as_of) == plan  # the re-run keeps the date's plan
        assert _stage_shards(lenders.engine, as_of) == {
            stage: list(range(plan[0])) for stage in ("ingest", "validate", "evaluate")
        }
        assert [row for row in _catalog() if row[0].split(":")[0] != withdrawn_sme] == [
            row for row in catalog if row[0].split(":")[0] != withdrawn_sme
        ]
        again, dossiers, withdrawals = lenders.pull(lender)
        assert (again["delivered"], withdrawals) == (0, [])
        for other in LENDERS[1:]:
            # Only the SME that changed its consents may reach (or leave) the other lenders now.
            _summary, dossiers, withdrawals = lenders.pull(other)
            assert {row["sme_id"] for row in dossiers + withdrawals} <= {withdrawn_sme}, other
        unchanged = {p.name: p.read_bytes() for p in partition if p.exists()}
        assert set(unchanged) <= set(before)
        # `dossier run --full`: every window pulled, every SME validated and scored again; the same
        # inputs give the same versions
        settled = _catalog()
        full = run_pipeline(as_of=as_of, full=True)
        assert [r["state"] for r in full["runs"]] == ["success", "success"]
        assert _catalog() == settled
        assert lenders.pull(lender)[0]["delivered"] == 0
        lenders.engine.dispose()
