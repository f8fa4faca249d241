"""Both DAGs run in-process (``dag.test()``, Airflow metadata on SQLite) against the sandbox over HTTP.

One scenario, driven through the ``dossier`` command where a user would use it: seed the sandbox's
SMEs and consents, run the pipeline, pull as a lender, withdraw a consent, pull again, re-run.
"""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import duckdb
import pandas as pd
import pyarrow.parquet as pq
import pytest
from sqlalchemy import select

from dossier.cli import main
from dossier.demo import run_pipeline
from dossier.settings import for_home, override
from warehouse import consent
from warehouse.db import session_scope
from warehouse.dossier_schema import SCHEMA_VERSION
from warehouse.dossier_store import read_published
from warehouse.models import Consent, DossierVersion, IngestionRun, QuarantineEntry
from warehouse.storage import Store

pytestmark = [pytest.mark.airflow, pytest.mark.slow]

SMES = 36


def _catalog() -> list[tuple]:
    with session_scope() as session:
        return session.execute(
            select(
                DossierVersion.dossier_id, DossierVersion.feed_seq, DossierVersion.content_sha256
            ).order_by(DossierVersion.dossier_id)
        ).all()


def test_dags_pull_validate_evaluate_publish_and_feed_lenders(tmp_path: Path, capsys) -> None:
    as_of = dt.datetime.now(dt.UTC).date()
    settings = for_home(tmp_path / "var", shard_count=2, sandbox_smes=SMES, sandbox_fault_rate=0.03)
    with override(settings):
        assert main(["sandbox", "seed"]) == 0
        first = run_pipeline(as_of=as_of)
        assert [(r["dag_id"], r["state"], r["failed_tasks"]) for r in first["runs"]] == [
            ("sme_ingest", "success", []),
            ("sme_dossier_publish", "success", []),
        ]

        at = dt.datetime.combine(as_of, dt.time(), tzinfo=dt.UTC)
        with session_scope() as session:
            smes = session.scalars(select(Consent.sme_id).distinct()).all()
            terms = consent.terms_of(session, smes, active_at=(at, dt.datetime.now(dt.UTC)))
            runs = session.execute(
                select(IngestionRun.sme_id, IngestionRun.source, IngestionRun.status)
            ).all()
            quarantined = set(
                session.scalars(select(QuarantineEntry.sme_id).where(QuarantineEntry.resolved_at.is_(None)))
            )
        # Consent is law before a pull: a source is pulled only where an active consent covers it.
        for sme_id, source, status in runs:
            covered = any(source in t.sources for t in terms.get(sme_id, []))
            assert (status != "skipped_no_consent") == covered, (sme_id, source, status)
        assert {status for *_, status in runs} >= {"pulled", "skipped_no_consent"}

        published = read_published(Store.from_settings(), as_of=as_of)
        assert len(published) > SMES // 2
        # ... and at publishing: every dossier has a lender entitled to all the sources it used.
        for row in published.itertuples():
            assert any(
                set(row.sources_used) <= t.sources and row.history_months <= t.history_months
                for t in terms[row.sme_id]
            )
        assert not set(published["sme_id"]) & quarantined
        assert published["grade"].isin(list("ABCDE")).all()
        assert published["pd_12m"].between(0, 1).all()

        assert (settings.data_docs_dir / "uncommitted" / "data_docs" / "local_site" / "index.html").is_file()

        lender = "northwind-capital"
        out = tmp_path / "pulls"
        capsys.readouterr()
        assert main(["lender", "pull", "--lender", lender, "--out", str(out)]) == 0
        pulled = json.loads(capsys.readouterr().out)
        files = sorted(out.glob(f"{lender}-*.parquet"))
        assert pulled["delivered"] > 0
        assert [str(f) for f in files] == [pulled["file"]]
        frame = pd.read_parquet(files[0])
        assert duckdb.sql(f"select count(*) from read_parquet('{files[0]}')").fetchall() == [(len(frame),)]
        assert all(
            any(lender in t.recipients and set(u) <= t.sources for t in terms[s])
            for s, u in zip(frame["sme_id"], frame["sources_used"], strict=True)
        )
        assert pq.read_schema(files[0]).field("pd_12m").metadata[b"description"]

        withdrawn_sme = frame["sme_id"].iloc[0]
        with session_scope() as session:
            consent_id = session.scalars(
                select(Consent.consent_id).where(Consent.sme_id == withdrawn_sme, Consent.status == "active")
            ).first()
        assert main(["consent", "revoke", consent_id, "--reason", "SME changed lender"]) == 0
        capsys.readouterr()
        assert main(["lender", "pull", "--lender", lender, "--out", str(out)]) == 0
        second_pull = json.loads(capsys.readouterr().out)
        withdrawals = pd.read_parquet(second_pull["withdrawals_file"])
        assert (second_pull["delivered"], withdrawals["sme_id"].tolist()) == (0, [withdrawn_sme])

        # A re-run of the same day changes nothing a lender can see: same catalog, nothing redelivered.
        catalog = _catalog()
        raw_files = sorted((settings.home / "raw").rglob("*.*"))
        partition = sorted(
            Path(Store.from_settings().layout.dossier_partition(2, as_of.isoformat())).glob("*.parquet")
        )
        before = {p.name: p.read_bytes() for p in partition}
        second = run_pipeline(as_of=as_of)
        assert [r["state"] for r in second["runs"]] == ["success", "success"]
        assert _catalog() == catalog
        capsys.readouterr()
        assert main(["lender", "pull", "--lender", lender, "--out", str(out)]) == 0
        assert json.loads(capsys.readouterr().out)["delivered"] == 0
        republished = read_published(Store.from_settings(), as_of=as_of)
        assert withdrawn_sme not in set(republished["sme_id"])
        unchanged = {p.name: p.read_bytes() for p in partition if p.exists()}
        assert set(unchanged) <= set(before)
        # Sandbox payloads carry no port or clock: the re-run landed no new raw file.
        assert sorted((settings.home / "raw").rglob("*.*")) == raw_files

        # Every SME of the day is counted once in the status summary.
        capsys.readouterr()
        assert main(["status", "--as-of", as_of.isoformat()]) == 0
        assert "registered" in capsys.readouterr().out
        from dossier.report import pipeline_report

        report = pipeline_report(as_of)
        assert sum(report["outcomes"].values()) == report["smes_registered"] == SMES

        # dossier verify: clean now; then names a damaged raw payload and a damaged dossier part.
        capsys.readouterr()
        assert main(["verify"]) == 0
        assert capsys.readouterr().out.startswith(f"verified {len(raw_files)} raw payloads")
        damaged_raw = raw_files[len(raw_files) // 2]
        damaged_raw.write_bytes(damaged_raw.read_bytes()[:-1])
        damaged_part = sorted(
            Path(Store.from_settings().layout.dossier_partition(SCHEMA_VERSION, as_of.isoformat())).glob(
                "*.parquet"
            )
        )[0]
        damaged_part.write_bytes(b"not parquet")
        assert main(["verify", "--json"]) == 1
        found = json.loads(capsys.readouterr().out)
        assert [(p["kind"], p["path"]) for p in found["problems"]] == [
            ("raw_mismatch", str(damaged_raw)),
            ("dossier_mismatch", str(damaged_part)),
        ]
