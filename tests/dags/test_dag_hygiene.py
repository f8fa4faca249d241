"""Every DAG file imports cleanly, follows the house rules and does no I/O at parse time."""

from __future__ import annotations

import socket
import sqlite3
from pathlib import Path

import pytest

from dossier.airflow_runner import DAGS_FOLDER

EXPECTED_DAGS = {"sme_ingest", "sme_dossier_publish"}


class ParseTimeIO(AssertionError):
    pass


@pytest.fixture(scope="module")
def dagbag():
    """The DagBag, parsed while any network, database, Variable or store access raises."""
    from airflow.dag_processing.dagbag import DagBag
    from airflow.sdk import Variable

    import warehouse.db
    import warehouse.storage

    def forbidden(what: str):
        def raise_(*args, **kwargs):
            raise ParseTimeIO(f"{what} at DAG parse time")

        return raise_

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(socket.socket, "connect", forbidden("network access"))
        patch.setattr(sqlite3, "connect", forbidden("SQLite access"))
        patch.setattr(Variable, "get", forbidden("Variable.get"))
        patch.setattr(warehouse.db, "make_engine", forbidden("warehouse access"))
        patch.setattr(warehouse.storage.Store, "__init__", forbidden("store access"))
        return DagBag(str(DAGS_FOLDER))


def test_every_dag_file_imports_without_error_or_parse_time_io(dagbag) -> None:
    assert dagbag.import_errors == {}
    assert set(dagbag.dag_ids) == EXPECTED_DAGS
    assert {Path(p).name for p in DAGS_FOLDER.glob("*.py")} == {"sme_ingest.py", "sme_dossier_publish.py"}


@pytest.mark.parametrize("dag_id", sorted(EXPECTED_DAGS))
def test_dag_follows_the_house_rules(dagbag, dag_id: str) -> None:
    dag = dagbag.dags[dag_id]
    assert dag.catchup is False
    assert dag.start_date.tzinfo is not None
    assert dag.doc_md
    assert dag.doc_md.strip().startswith("###")
    assert "sme-dossier" in dag.tags
    assert dag.max_active_runs == 1
    for task in dag.tasks:
        assert task.retries >= 1, f"{dag_id}.{task.task_id} has no retries"


def test_publish_dag_is_scheduled_by_every_source_asset(dagbag) -> None:
    from dossier.assets import CANONICAL

    ingest = dagbag.dags["sme_ingest"]
    publish = dagbag.dags["sme_dossier_publish"]
    produced = {outlet.uri for task in ingest.tasks for outlet in task.outlets}
    assert produced == {asset.uri for asset in CANONICAL.values()}
    consumed = {asset.uri for asset in publish.timetable.asset_condition.objects}
    assert consumed == produced


def test_ingest_maps_one_task_per_source_over_shards(dagbag) -> None:
    from warehouse.canonical import SOURCES

    ingest = dagbag.dags["sme_ingest"]
    mapped = {t.task_id for t in ingest.tasks if t.task_id.startswith("ingest_")}
    assert mapped == {f"ingest_{s}" for s in SOURCES}
    assert all(ingest.get_task(t).is_mapped for t in mapped)


def test_publish_dag_sends_webhooks_right_after_the_publish(dagbag) -> None:
    publish = dagbag.dags["sme_dossier_publish"]
    assert publish.get_task("send_webhooks").upstream_task_ids == {"publish", "resolve_as_of"}
    assert publish.get_task("send_webhooks").downstream_task_ids == set()
