"""``docker-compose.yml``, ``Dockerfile`` and ``.env.example`` checked structurally (no Docker engine here).

The production shape: PostgreSQL, Redis, an S3-compatible store, Airflow 3's api-server, scheduler,
DAG processor, triggerer and Celery worker from one image built on the official one with this
project installed, the web service and the sandbox. These tests read the files as data and check
what would otherwise only fail on a real deployment: missing services or health checks, dependencies
on services that do not exist, components that disagree on the JWT secret or the database, commands
the official image's entrypoint would misread, and settings that ``.env.example`` forgets.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from dossier import readme
from dossier.settings import ENVIRONMENT

ROOT = Path(__file__).resolve().parent.parent
COMPOSE: dict[str, Any] = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
SERVICES: dict[str, dict[str, Any]] = COMPOSE["services"]
AIRFLOW = (
    "airflow-apiserver",
    "airflow-scheduler",
    "airflow-dag-processor",
    "airflow-triggerer",
    "airflow-worker",
)
ONE_SHOT = ("create-bucket", "airflow-init")


def test_every_component_of_the_production_shape_is_a_service() -> None:
    assert set(SERVICES) >= {"postgres", "redis", "minio", "web", "sandbox", *AIRFLOW, *ONE_SHOT}


@pytest.mark.parametrize("name", sorted(set(SERVICES) - set(ONE_SHOT) - {"airflow-cli"}))
def test_every_long_running_service_has_a_health_check(name: str) -> None:
    check = SERVICES[name].get("healthcheck")
    assert check, name
    assert check["test"], name
    assert check["test"][0] in {"CMD", "CMD-SHELL"}


@pytest.mark.parametrize("name", sorted(SERVICES))
def test_dependencies_name_services_that_exist_with_a_condition_they_can_meet(name: str) -> None:
    for other, rule in (SERVICES[name].get("depends_on") or {}).items():
        assert other in SERVICES, (name, other)
        if other in ONE_SHOT:
            assert rule["condition"] == "service_completed_successfully", (name, other)
        else:
            assert rule["condition"] == "service_healthy", (name, other)
            assert "healthcheck" in SERVICES[other], (name, other)


def test_airflow_components_share_one_image_executor_database_and_jwt_secret() -> None:
    environments = [SERVICES[name]["environment"] for name in AIRFLOW]
    for key in (
        "AIRFLOW__CORE__EXECUTOR",
        "AIRFLOW__API_AUTH__JWT_SECRET",
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN",
        "AIRFLOW__CELERY__BROKER_URL",
        "AIRFLOW__CORE__EXECUTION_API_SERVER_URL",
        "DOSSIER_WAREHOUSE_URL",
        "DOSSIER_STORE_URL",
    ):
        values = {env[key] for env in environments}
        assert len(values) == 1, key
    env = environments[0]
    assert env["AIRFLOW__CORE__EXECUTOR"] == "CeleryExecutor"
    assert env["AIRFLOW__CELERY__BROKER_URL"].startswith("redis://redis:")
    assert env["AIRFLOW__CORE__EXECUTION_API_SERVER_URL"].startswith("http://airflow-apiserver:8080/")
    assert env["DOSSIER_STORE_URL"].startswith("s3://")
    assert env["DOSSIER_S3_ENDPOINT_URL"] == "http://minio:9000"
    assert {SERVICES[name]["image"] for name in (*AIRFLOW, "web", "sandbox")} == {"sme-dossier:latest"}


def test_the_image_is_the_official_airflow_of_the_locked_version_with_the_project_installed() -> None:
    dockerfile = (ROOT / "Dockerfile").read_text()
    base = re.search(r"^FROM apache/airflow:(\S+)-python3\.11$", dockerfile, flags=re.M)
    locked = re.search(r"^apache-airflow==(\S+)$", (ROOT / "requirements.lock").read_text(), flags=re.M)
    assert base
    assert locked
    assert base.group(1) == locked.group(1)
    assert "requirements.lock" in dockerfile
    assert "apache-airflow-providers-celery" in dockerfile
    for package in ("dossier", "connectors", "evaluation", "expectations", "warehouse", "dags"):
        assert re.search(rf"^COPY .* {package} /opt/sme-dossier/{package}$", dockerfile, flags=re.M), package


@pytest.mark.parametrize("name", sorted(set(SERVICES) - {"postgres", "redis", "minio", "create-bucket"}))
def test_commands_are_ones_the_official_entrypoint_runs(name: str) -> None:
    """The official image runs ``airflow <args>`` unless the command starts with bash or python."""
    command = SERVICES[name]["command"]
    words = command.split() if isinstance(command, str) else command
    assert words[0] in {"airflow", "bash", "python"}, (name, command)


def test_the_services_reach_each_other_by_the_ports_they_listen_on() -> None:
    env = SERVICES["web"]["environment"]
    assert env["DOSSIER_SANDBOX_URL"] == "http://sandbox:8765"
    assert "--port 8765" in SERVICES["sandbox"]["command"]
    assert "--port 8000" in SERVICES["web"]["command"]
    assert "8000:8000" in SERVICES["web"]["ports"]
    assert "8080:8080" in SERVICES["airflow-apiserver"]["ports"]
    sql = (ROOT / "warehouse" / "docker" / "create-dossier-db.sql").read_text()
    assert "CREATE DATABASE dossier" in sql
    assert env["DOSSIER_WAREHOUSE_URL"].endswith("@postgres:5432/dossier")


def test_env_example_lists_every_setting_and_is_generated_from_the_code() -> None:
    text = (ROOT / ".env.example").read_text()
    assert text == readme.env_example(), "run: python -m dossier.readme"
    for variable in ENVIRONMENT:
        assert re.search(rf"^# {variable.name}=", text, flags=re.M), variable.name
    # Every variable the compose file reads from .env has a line there.
    read = set(re.findall(r"\$\{([A-Z_]+):-", (ROOT / "docker-compose.yml").read_text()))
    given = set(re.findall(r"^#? ?([A-Z_]+)=", text, flags=re.M))
    assert read <= given, sorted(read - given)
