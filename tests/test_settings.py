"""The settings module: defaults are embedded, the environment wires production."""

from __future__ import annotations

import ast
from pathlib import Path

from dossier.settings import ENVIRONMENT, Settings, for_home, get_settings, override

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ["dossier", "connectors", "evaluation", "expectations", "warehouse", "dags", "bench"]


def test_defaults_are_the_embedded_setup() -> None:
    settings = Settings.from_env({"DOSSIER_HOME": "/srv/dossier"})
    assert (settings.home, settings.warehouse_url, settings.store_url) == (
        Path("/srv/dossier"),
        "sqlite:////srv/dossier/warehouse.db",
        "/srv/dossier",
    )
    assert settings.is_local_store
    assert settings.storage_options() == {}
    assert (settings.shard_count, settings.http_timeout, settings.http_retries, settings.sandbox_url) == (
        None,
        10.0,
        5,
        "",
    )
    assert (settings.shard_size, settings.max_shards) == (10_000, 256)


def test_production_wiring_by_environment_alone() -> None:
    settings = Settings.from_env(
        {
            "DOSSIER_HOME": "/srv/dossier",
            "DOSSIER_WAREHOUSE_URL": "postgresql+psycopg://dossier@db/dossier",
            "DOSSIER_STORE_URL": "s3://dossiers/prod",
            "DOSSIER_S3_ENDPOINT_URL": "http://minio:9000",
            "DOSSIER_S3_KEY": "key",
            "DOSSIER_S3_SECRET": "secret",
            "DOSSIER_SHARD_COUNT": "64",
            "DOSSIER_SANDBOX_URL": "http://providers.internal/",
        }
    )
    assert settings.warehouse_url == "postgresql+psycopg://dossier@db/dossier"
    assert not settings.is_local_store
    assert settings.storage_options() == {
        "key": "key",
        "secret": "secret",
        "client_kwargs": {"endpoint_url": "http://minio:9000"},
    }
    assert (settings.shard_count, settings.sandbox_url) == (64, "http://providers.internal")


def test_override_nests_and_restores() -> None:
    outer = get_settings()
    with override(for_home("/tmp/a")) as first:
        assert get_settings() is first
        with override(shard_count=3) as second:
            assert (get_settings().shard_count, get_settings().home) == (3, Path("/tmp/a"))
            assert second is get_settings()
        assert get_settings() is first
    assert get_settings() is outer


def test_airflow_environment_points_at_this_projects_dags() -> None:
    env = for_home("/srv/dossier").airflow_environment()
    assert env["AIRFLOW_HOME"] == "/srv/dossier/airflow"
    assert env["AIRFLOW__CORE__DAGS_FOLDER"] == str(ROOT / "dags")
    assert env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"] == "sqlite:////srv/dossier/airflow/airflow.db"
    assert env["DOSSIER_WAREHOUSE_URL"] == "sqlite:////srv/dossier/warehouse.db"


def test_every_variable_is_documented_with_a_default() -> None:
    names = [v.name for v in ENVIRONMENT]
    assert len(names) == len(set(names))
    assert all(v.name.startswith("DOSSIER_") and v.help for v in ENVIRONMENT)


def test_only_the_settings_module_reads_the_environment() -> None:
    offenders = []
    for package in PACKAGES:
        for path in (ROOT / package).rglob("*.py"):
            if path == ROOT / "dossier" / "settings.py":
                continue
            tree = ast.parse(path.read_text(), filename=str(path))
            for node in ast.walk(tree):
                if isinstance(node, ast.Attribute) and node.attr in {"environ", "getenv"}:
                    offenders.append(f"{path.relative_to(ROOT)}:{node.lineno}")
    assert offenders == []
