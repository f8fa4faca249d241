"""The one place that reads the environment.

Every other module asks :func:`get_settings` for configuration; nothing else touches
``os.environ``. Defaults are the embedded setup (SQLite and local folders under ``./var``);
pointing ``DOSSIER_WAREHOUSE_URL`` at PostgreSQL and ``DOSSIER_STORE_URL`` at ``s3://bucket/prefix``
runs the same code at scale.

>>> s = Settings.from_env({"DOSSIER_HOME": "/tmp/x"})
>>> s.warehouse_url
'sqlite:////tmp/x/warehouse.db'
>>> s.store_url
'/tmp/x'
"""

from __future__ import annotations

import dataclasses
import functools
import os
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

ENV_PREFIX = "DOSSIER_"


@dataclass(frozen=True)
class EnvVar:
    """One documented environment variable (the README's table is checked against these)."""

    name: str
    default: str
    help: str


ENVIRONMENT: tuple[EnvVar, ...] = (
    EnvVar(
        "DOSSIER_HOME",
        "./var",
        "Working folder: warehouse.db, raw landing, dossiers, Data Docs, Airflow home.",
    ),
    EnvVar(
        "DOSSIER_WAREHOUSE_URL",
        "sqlite:///$DOSSIER_HOME/warehouse.db",
        "SQLAlchemy URL of the warehouse (SQLite or PostgreSQL).",
    ),
    EnvVar(
        "DOSSIER_STORE_URL",
        "$DOSSIER_HOME",
        "Root of raw landing, canonical tables and the dossier store: a folder or s3://bucket/prefix.",
    ),
    EnvVar(
        "DOSSIER_S3_ENDPOINT_URL", "", "Endpoint of an S3-compatible store (MinIO, Ceph); empty means AWS."
    ),
    EnvVar(
        "DOSSIER_S3_KEY",
        "",
        "Access key for the S3-compatible store (empty: the usual AWS credential chain).",
    ),
    EnvVar("DOSSIER_S3_SECRET", "", "Secret key for the S3-compatible store."),
    EnvVar(
        "DOSSIER_SANDBOX_URL",
        "",
        "Base URL of the provider APIs; empty means the demo starts the bundled sandbox on a free port.",
    ),
    EnvVar(
        "DOSSIER_SANDBOX_SMES",
        "300",
        "Size of the sandbox universe: the SMEs it serves and that `dossier sandbox seed` registers.",
    ),
    EnvVar(
        "DOSSIER_SANDBOX_SEED",
        "20261125",
        "Seed of the sandbox universe: the same seed gives the same SMEs and data.",
    ),
    EnvVar(
        "DOSSIER_SANDBOX_FAULT_RATE",
        "0.02",
        "Share of sandbox responses that are a 429 with Retry-After or a transient 5xx.",
    ),
    EnvVar(
        "DOSSIER_SHARD_COUNT",
        "8",
        "SMEs are split into this many shards; each is one mapped Airflow task per step.",
    ),
    EnvVar(
        "DOSSIER_OAUTH_CLIENT_ID",
        "sme-dossier",
        "OAuth2 client id this application is registered under at the providers (default: the sandbox's).",
    ),
    EnvVar(
        "DOSSIER_OAUTH_CLIENT_SECRET",
        "sme-dossier-sandbox-secret",
        "OAuth2 client secret matching DOSSIER_OAUTH_CLIENT_ID.",
    ),
    EnvVar("DOSSIER_HTTP_TIMEOUT", "10", "Seconds before a provider request times out (connect and read)."),
    EnvVar(
        "DOSSIER_HTTP_RETRIES",
        "5",
        "Attempts per provider request for retriable errors (429, 5xx, timeouts).",
    ),
    EnvVar("DOSSIER_HISTORY_MONTHS", "36", "Months of history a consent asks for when none is given."),
    EnvVar("DOSSIER_LOG_LEVEL", "INFO", "Log level of the dossier command and tasks."),
)


def _expand(value: str, home: str) -> str:
    return value.replace("$DOSSIER_HOME", home)


@dataclass(frozen=True)
class Settings:
    """Resolved configuration. Build with :meth:`from_env`; tests use :func:`override`."""

    home: Path
    warehouse_url: str
    store_url: str
    s3_endpoint_url: str = ""
    s3_key: str = ""
    s3_secret: str = ""
    sandbox_url: str = ""
    sandbox_smes: int = 300
    sandbox_seed: int = 20261125
    sandbox_fault_rate: float = 0.02
    shard_count: int = 8
    oauth_client_id: str = "sme-dossier"
    oauth_client_secret: str = "sme-dossier-sandbox-secret"
    http_timeout: float = 10.0
    http_retries: int = 5
    history_months: int = 36
    log_level: str = "INFO"
    extra: Mapping[str, str] = field(default_factory=dict)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        """Read every ``DOSSIER_*`` variable, falling back to the documented defaults."""
        env = dict(os.environ if environ is None else environ)
        defaults = {var.name: var.default for var in ENVIRONMENT}

        def get(name: str) -> str:
            return env.get(name) or defaults[name]

        home = str(Path(get("DOSSIER_HOME")).expanduser().absolute())
        return cls(
            home=Path(home),
            warehouse_url=_expand(get("DOSSIER_WAREHOUSE_URL"), home),
            store_url=_expand(get("DOSSIER_STORE_URL"), home),
            s3_endpoint_url=get("DOSSIER_S3_ENDPOINT_URL"),
            s3_key=get("DOSSIER_S3_KEY"),
            s3_secret=get("DOSSIER_S3_SECRET"),
            sandbox_url=get("DOSSIER_SANDBOX_URL").rstrip("/"),
            sandbox_smes=int(get("DOSSIER_SANDBOX_SMES")),
            sandbox_seed=int(get("DOSSIER_SANDBOX_SEED")),
            sandbox_fault_rate=float(get("DOSSIER_SANDBOX_FAULT_RATE")),
            shard_count=int(get("DOSSIER_SHARD_COUNT")),
            oauth_client_id=get("DOSSIER_OAUTH_CLIENT_ID"),
            oauth_client_secret=get("DOSSIER_OAUTH_CLIENT_SECRET"),
            http_timeout=float(get("DOSSIER_HTTP_TIMEOUT")),
            http_retries=int(get("DOSSIER_HTTP_RETRIES")),
            history_months=int(get("DOSSIER_HISTORY_MONTHS")),
            log_level=get("DOSSIER_LOG_LEVEL").upper(),
            extra={k: v for k, v in env.items() if k.startswith("AIRFLOW__")},
        )

    @property
    def is_local_store(self) -> bool:
        return "://" not in self.store_url or self.store_url.startswith("file://")

    @property
    def airflow_home(self) -> Path:
        return self.home / "airflow"

    @property
    def data_docs_dir(self) -> Path:
        """Great Expectations project (and its Data Docs site) always lives on local disk."""
        return self.home / "gx"

    def storage_options(self) -> dict[str, object]:
        """fsspec options for the store (credentials and endpoint for S3-compatible stores)."""
        if self.is_local_store:
            return {}
        options: dict[str, object] = {}
        if self.s3_key:
            options["key"] = self.s3_key
            options["secret"] = self.s3_secret
        if self.s3_endpoint_url:
            options["client_kwargs"] = {"endpoint_url": self.s3_endpoint_url}
        return options

    def airflow_environment(self) -> dict[str, str]:
        """Environment for an Airflow process running this project's DAGs on the embedded settings."""
        project_root = Path(__file__).resolve().parent.parent
        env = {
            "AIRFLOW_HOME": str(self.airflow_home),
            "AIRFLOW__CORE__DAGS_FOLDER": str(project_root / "dags"),
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            "AIRFLOW__CORE__UNIT_TEST_MODE": "False",
            "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{self.airflow_home / 'airflow.db'}",
            "AIRFLOW__CORE__EXECUTOR": "LocalExecutor",
            "AIRFLOW__CORE__DAGBAG_IMPORT_TIMEOUT": "120",
            "AIRFLOW__LOGGING__LOGGING_LEVEL": "WARNING",
            "DOSSIER_HOME": str(self.home),
            "DOSSIER_WAREHOUSE_URL": self.warehouse_url,
            "DOSSIER_STORE_URL": self.store_url,
            "DOSSIER_SHARD_COUNT": str(self.shard_count),
            "DOSSIER_SANDBOX_SMES": str(self.sandbox_smes),
            "DOSSIER_SANDBOX_SEED": str(self.sandbox_seed),
            "DOSSIER_SANDBOX_FAULT_RATE": str(self.sandbox_fault_rate),
            "DOSSIER_OAUTH_CLIENT_ID": self.oauth_client_id,
            "DOSSIER_OAUTH_CLIENT_SECRET": self.oauth_client_secret,
        }
        if self.sandbox_url:
            env["DOSSIER_SANDBOX_URL"] = self.sandbox_url
        env.update(self.extra)
        return env


@functools.cache
def _cached() -> Settings:
    return Settings.from_env()


_override: list[Settings] = []


def get_settings() -> Settings:
    """The active settings: the innermost :func:`override`, else the environment (read once)."""
    return _override[-1] if _override else _cached()


class override:
    """Context manager that swaps in other settings, e.g. ``with override(home=tmp_path): ...``."""

    def __init__(self, settings: Settings | None = None, **changes: object) -> None:
        base = settings or get_settings()
        self.settings = dataclasses.replace(base, **changes) if changes else base

    def __enter__(self) -> Settings:
        _override.append(self.settings)
        return self.settings

    def __exit__(self, *exc: object) -> None:
        _override.remove(self.settings)


def for_home(home: str | Path, **changes: object) -> Settings:
    """Embedded settings rooted at ``home`` (what tests and the demo use)."""
    return dataclasses.replace(Settings.from_env({"DOSSIER_HOME": str(home)}), **changes)


def apply_airflow_environment(settings: Settings | None = None) -> dict[str, str]:
    """Put the Airflow wiring of ``settings`` into this process's environment.

    Call before Airflow is imported (its configuration is read at import time); keys already set
    by the operator (``AIRFLOW__*`` in the environment) win.
    """
    wiring = (settings or get_settings()).airflow_environment()
    for key, value in wiring.items():
        if key.startswith("AIRFLOW__") and key in os.environ:
            continue
        os.environ[key] = value
    return wiring


def child_process_environment(settings: Settings | None = None) -> dict[str, str]:
    """This process's environment plus the Airflow wiring, for launching Airflow as a child process.

    The interpreter's own ``bin`` folder leads ``PATH``, so the ``airflow`` processes that Airflow
    itself spawns come from the same virtual environment.
    """
    env = {**os.environ, **(settings or get_settings()).airflow_environment()}
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
    return env
