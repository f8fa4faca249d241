"""``dossier agents``: list, suspend, reinstate and detect, on a warehouse the real pipeline filled."""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pytest
from sqlalchemy import select

from connectors.sandbox.seed import seed_warehouse
from connectors.sandbox.server import SandboxServer
from connectors.sandbox.universe import Universe
from dossier.cli import main
from dossier.pipeline import run_for_smes
from dossier.settings import Settings, for_home, override
from warehouse import agents
from warehouse.db import make_engine, session_scope
from warehouse.dossier_store import store_absolute
from warehouse.migrate import upgrade
from warehouse.models import DossierVersion
from warehouse.storage import Store

AS_OF = dt.datetime.now(dt.UTC).date()
SMES = 12


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    capsys.readouterr()
    code = main(list(argv))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


@pytest.fixture(scope="module")
def sandbox() -> Iterator[SandboxServer]:
    with SandboxServer(Universe(20261125, SMES, AS_OF)) as server:
        yield server


@pytest.fixture
def filled(sandbox: SandboxServer, tmp_path: Path) -> Iterator[Settings]:
    """A seeded sandbox warehouse whose SMEs went through ingest, validate, evaluate and publish."""
    settings = for_home(tmp_path / "var", sandbox_url=sandbox.url, shard_count=2, sandbox_fault_rate=0.0)
    settings.home.mkdir(parents=True)
    engine = make_engine(settings.warehouse_url)
    upgrade(engine)
    with session_scope(engine) as session:
        seed_warehouse(session, sandbox.universe, now=dt.datetime.now(dt.UTC))
    engine.dispose()
    with override(settings):
        run_for_smes([f"SME-{i:06d}" for i in range(1, SMES + 1)], as_of=AS_OF)
        yield settings


def _visits() -> pd.DataFrame:
    store = Store.from_settings()
    folder = f"{store.root}/canonical/survey_visits/as_of={AS_OF.isoformat()}"
    return pd.concat(
        [store.read_table(p).to_pandas() for p in store.list(folder, suffix=".parquet")], ignore_index=True
    )


def _versions(sme_ids: list[str]) -> dict[str, tuple[int, str]]:
    """dossier id -> (feed sequence, content hash) of the published dossiers of ``sme_ids``."""
    with session_scope() as session:
        rows = session.scalars(select(DossierVersion).where(DossierVersion.sme_id.in_(sme_ids))).all()
        return {row.dossier_id: (row.feed_seq, row.content_sha256) for row in rows}


def _published(dossier_ids: list[str]) -> pd.DataFrame:
    """The published rows of ``dossier_ids``, read from the files the catalog points at."""
    store = Store.from_settings()
    with session_scope() as session:
        paths = set(
            session.scalars(
                select(DossierVersion.file_path).where(DossierVersion.dossier_id.in_(dossier_ids))
            )
        )
    frame = pd.concat(
        [store.read_table(store_absolute(store, p)).to_pandas() for p in sorted(paths)], ignore_index=True
    )
    return frame[frame["dossier_id"].isin(dossier_ids)].reset_index(drop=True)


def test_list_suspend_reinstate_rescores_the_smes_the_agent_visited(capsys, filled: Settings) -> None:
    visits = _visits()
    agent = visits["agent_id"].value_counts().index[0]
    visited = sorted(set(visits.loc[visits["agent_id"] == agent, "sme_id"]))
    before = _versions(visited)

    code, out, _ = run(capsys, "agents", "list", "--as-of", AS_OF.isoformat(), "--json")
    listed = {row["agent_id"]: row for row in json.loads(out)}
    assert code == 0
    assert set(listed) == set(visits["agent_id"])
    assert listed[agent]["status"] == "active"
    assert listed[agent]["visits"] == int((visits["agent_id"] == agent).sum())
    assert listed[agent]["smes"] == len(visited)

    code, out, _ = run(
        capsys, "agents", "suspend", agent, "--reason", "copied visits", "--as-of", AS_OF.isoformat()
    )
    assert code == 0
    assert f"agent {agent} suspended; {len(visited)} SME(s) relied on their visits, re-scored" in out
    with session_scope() as session:
        (suspended,) = agents.suspended_agents(session)
    assert (suspended["agent_id"], suspended["actor"], suspended["reason"]) == (
        agent,
        "operator",
        "copied visits",
    )
    assert suspended["sme_ids"] == visited
    assert suspended["evidence"]["detector"]["agent_id"] == agent
    after = _versions(visited)
    assert before, "the agent's SMEs were published"
    assert set(after) == set(before)
    for dossier_id, (seq, content) in after.items():
        # the visits no longer verify: new content, a new place in the lender feed
        assert seq > before[dossier_id][0], dossier_id
        assert content != before[dossier_id][1], dossier_id
    published = _published(list(after))
    with_survey = published[published["sources_used"].map(lambda used: "survey" in list(used))]
    assert len(with_survey) > 0
    assert (with_survey["survey_verified_rate"] == 0).all(), "a suspended agent's visits verify nothing"
    assert with_survey["survey_revenue_ratio"].isna().all()
    code, out, _ = run(capsys, "agents", "list", "--as-of", AS_OF.isoformat(), "--json")
    assert {r["agent_id"]: r["status"] for r in json.loads(out)}[agent] == "suspended"

    code, out, _ = run(
        capsys,
        "agents",
        "reinstate",
        agent,
        "--reason",
        "reviewed",
        "--no-rescore",
        "--as-of",
        AS_OF.isoformat(),
    )
    assert code == 0
    assert out.strip() == f"agent {agent} reinstated; {len(visited)} SME(s) relied on their visits"
    with session_scope() as session:
        assert [e["action"] for e in agents.history(session, agent)] == ["suspend", "reinstate"]
        assert agents.suspended_agents(session) == []


def test_unknown_agents_and_repeated_decisions_are_one_line_errors(capsys, filled: Settings) -> None:
    code, _, err = run(
        capsys, "agents", "suspend", "agent_999", "--reason", "x", "--as-of", AS_OF.isoformat()
    )
    assert code == 2
    assert err.strip() == (
        "dossier: error: unknown agent 'agent_999': no survey visit at this as-of date and no decision "
        "recorded (see: dossier agents list)"
    )
    agent = _visits()["agent_id"].iloc[0]
    code, _, err = run(capsys, "agents", "reinstate", agent, "--reason", "x", "--as-of", AS_OF.isoformat())
    assert code == 2
    assert err.strip() == f"dossier: error: agent {agent} is not suspended"
    code, _, err = run(capsys, "agents", "suspend", agent, "--as-of", AS_OF.isoformat())
    assert code == 2
    assert "--reason" in err


def test_detect_reports_then_applies(capsys, filled: Settings) -> None:
    code, out, _ = run(capsys, "agents", "detect", "--as-of", AS_OF.isoformat(), "--json")
    result = json.loads(out)
    assert code == 0
    assert result["as_of"] == AS_OF.isoformat()
    assert (result["suspended"], result["rescored"]) == ([], False)
    with session_scope() as session:
        assert agents.history(session) == []

    code, out, _ = run(
        capsys, "agents", "detect", "--apply", "--no-rescore", "--as-of", AS_OF.isoformat(), "--json"
    )
    applied = json.loads(out)
    assert code == 0
    assert applied["suspended"] == result["recommended"]
    with session_scope() as session:
        assert [(e["agent_id"], e["actor"]) for e in agents.history(session)] == [
            (agent_id, "collusion-detector") for agent_id in result["recommended"]
        ]
