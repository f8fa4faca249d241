"""The one place that reads the environment.

Every other module asks :func:`get_settings` for configuration; nothing else touches
``os.environ``. Defaults are the embedded setup (SQLite and local folders under ``./var``);
pointing ``DOSSIER_WAREHOUSE_URL`` at PostgreSQL and ``DOSSIER_STORE_URL`` at ``s3://bucket/prefix``
runs the same code at scale.

The variables are declared once, typed and bounded, in :class:`Environment` (pydantic-settings);
a value that does not fit is refused when the settings are first read, naming the variable:

>>> s = Settings.from_env({"DOSSIER_HOME": "/tmp/x"})
>>> s.warehouse_url
'sqlite:////tmp/x/warehouse.db'
>>> s.store_url
'/tmp/x'
>>> Settings.from_env({"DOSSIER_SHARD_COUNT": "abc"})
Traceback (most recent call last):
...
dossier.settings.SettingsError: DOSSIER_SHARD_COUNT='abc' is not valid: Input should be a valid integer, unable to parse string as an integer; set a whole number at least 1 (default empty), or unset it
"""

from __future__ import annotations

import dataclasses
import functools
import json
import os
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import Field, ValidationError, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from warehouse.errors import DossierError

if TYPE_CHECKING:
    from connectors.core.providers import ProviderEndpoint
    from warehouse.shard_plans import ShardPolicy

ENV_PREFIX = "DOSSIER_"
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
RATE_LIMIT_STORAGES = ("memory", "redis", "rediss", "redis+unix")


class SettingsError(DossierError, ValueError):
    """A ``DOSSIER_*`` variable holds a value the settings cannot use."""


class Environment(BaseSettings):
    """Every ``DOSSIER_*`` variable with its type, bounds, default and meaning.

    An empty variable means its default. The README's environment table is generated from these
    fields (``python -m dossier.readme``).
    """

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX, env_ignore_empty=True, extra="ignore", frozen=True
    )

    home: str = Field(
        "./var", description="Working folder: warehouse.db, raw landing, dossiers, Data Docs, Airflow home."
    )
    warehouse_url: str = Field(
        "sqlite:///$DOSSIER_HOME/warehouse.db",
        description="SQLAlchemy URL of the warehouse (SQLite or PostgreSQL).",
    )
    store_url: str = Field(
        "$DOSSIER_HOME",
        description="Root of raw landing, canonical tables and the dossier store: a folder or s3://bucket/prefix.",
    )
    s3_endpoint_url: str = Field(
        "", description="Endpoint of an S3-compatible store (MinIO, Ceph); empty means AWS."
    )
    s3_key: str = Field(
        "", description="Access key for the S3-compatible store (empty: the usual AWS credential chain)."
    )
    s3_secret: str = Field("", description="Secret key for the S3-compatible store.")
    sandbox_url: str = Field(
        "",
        description="Base URL of the provider APIs; empty means the demo starts the bundled sandbox on a free port.",
    )
    sandbox_smes: int = Field(
        300,
        ge=1,
        description="Size of the sandbox universe: the SMEs it serves and that `dossier sandbox seed` "
        "registers (unset: the size the home was last seeded with, else 300).",
    )
    sandbox_seed: int = Field(
        20261125,
        ge=0,
        description="Seed of the sandbox universe: the same seed gives the same SMEs and data "
        "(unset: the seed the home was last seeded with).",
    )
    sandbox_fault_rate: float = Field(
        0.02,
        ge=0,
        le=1,
        description="Share of sandbox responses that are a 429 with Retry-After or a transient 5xx.",
    )
    shard_count: int | None = Field(
        None,
        ge=1,
        description="An explicit shard count for the dates not yet planned (tests, benchmarks); empty: each "
        "date's count is planned from its SMEs with DOSSIER_SHARD_SIZE and DOSSIER_MAX_SHARDS. A date keeps "
        "the count its first step recorded (`shard_plans`), whatever this says later.",
    )
    shard_size: int = Field(
        10_000,
        ge=1,
        description="SMEs a shard is planned to hold: a date's shard count is its SMEs with an active consent "
        "divided by this, rounded up (the previous date's count is kept while it gives 0.5-2 x this per shard). "
        "At about 3 s of Airflow overhead per mapped task, 10,000 keeps that overhead under 5% of a task.",
    )
    max_shards: int = Field(
        256,
        ge=1,
        le=1024,
        description="Most shards a date is planned with (mapped tasks per step), well under Airflow's "
        "max_map_length (1024); past it shards grow beyond DOSSIER_SHARD_SIZE.",
    )
    oauth_client_id: str = Field(
        "sme-dossier",
        description="OAuth2 client id this application is registered under at the providers (default: the sandbox's).",
    )
    oauth_client_secret: str = Field(
        "sme-dossier-sandbox-secret", description="OAuth2 client secret matching DOSSIER_OAUTH_CLIENT_ID."
    )
    providers: str = Field(
        "",
        description="Per-source provider configuration as a JSON object, e.g. "
        '`{"tax": {"base_url": "https://api.service.hmrc.gov.uk", "token_url": "…", "client_id": "…", '
        '"client_secret": "…"}}`; keys per source: base_url, authorize_url, token_url, client_id, '
        "client_secret, each optional (unset: `$DOSSIER_SANDBOX_URL/<source>`, its /oauth/authorize and "
        "/oauth/token, DOSSIER_OAUTH_CLIENT_ID and _SECRET).",
    )
    hmrc_device_id: str = Field(
        "",
        description="UUID this installation sends HMRC as Gov-Client-Device-ID (empty: a random UUID kept in "
        "$DOSSIER_HOME/device.id, made on first use).",
    )
    vendor_license_ids: str = Field(
        "",
        description="Licence keys of the software, `name=key` pairs separated by commas; HMRC receives their "
        "SHA-256 hashes as Gov-Vendor-License-IDs (empty: the header carries no pair).",
    )
    http_timeout: float = Field(
        10, gt=0, description="Seconds before a provider request times out (connect and read)."
    )
    http_retries: int = Field(
        5, ge=1, description="Attempts per provider request for retriable errors (429, 5xx, timeouts)."
    )
    pull_revision_months: int = Field(
        2,
        ge=0,
        description="Daily pulls ask each provider only for what is new since the SME's last successful pull, plus"
        " this many of the latest months already pulled (providers still revise recent months: late filings,"
        " payments, corrections); 0 re-pulls only the months after the last pull. The whole consent window is"
        " pulled when there is no earlier pull, the consent now reaches further back, the SME reconnected, or a"
        ' full re-pull is asked for (the `sme_ingest` DAG conf `{"full": true}`).',
    )
    history_months: int = Field(
        36, ge=1, le=120, description="Months of history a consent asks for when none is given."
    )
    log_level: str = Field("INFO", description="Log level of the dossier command and tasks.")
    web_host: str = Field("127.0.0.1", description="Interface the web service (`dossier serve`) binds to.")
    web_port: int = Field(8000, ge=1, le=65535, description="Port of the web service.")
    public_url: str = Field(
        "",
        description="Base URL people and lenders reach the web service at (empty: http://WEB_HOST:WEB_PORT).",
    )
    secret_key: str = Field(
        "",
        description="Key that signs links and encrypts stored provider tokens (empty: a random key kept in "
        "$DOSSIER_HOME/secret.key, made on first use).",
    )
    operator_token: str = Field(
        "",
        description="Bearer token of the operator API (empty: a random token kept in "
        "$DOSSIER_HOME/operator.token, made on first use).",
    )
    lender_api_url: str = Field(
        "",
        description="Base URL of the broker's lender API that `dossier lender pull --api` reads "
        "(empty: this installation's own web service, DOSSIER_PUBLIC_URL).",
    )
    lender_api_key: str = Field(
        "",
        description="The lender's API key that `dossier lender pull --api` sends (made by `dossier lender add`).",
    )
    upload_max_bytes: int = Field(
        20 * 1024 * 1024, ge=1, description="Largest file an SME may upload through a connector link (bytes)."
    )
    webhook_retry_schedule: str = Field(
        "0,5,300,1800,7200,18000,36000,36000",
        description="Seconds before each webhook attempt, comma-separated: the first counted from when the "
        "event is queued, each next one from the failure before it (default: the Standard Webhooks example, immediately, 5 s, 5 min, 30 min, 2 h, 5 h, "
        "10 h, 10 h); when it runs out the message has failed.",
    )
    webhook_timeout: float = Field(
        15, gt=0, description="Seconds a webhook receiver has to answer one attempt."
    )
    webhook_workers: int = Field(
        8, ge=1, le=64, description="Webhook attempts sent at once (threads of the sending worker)."
    )
    webhook_poll_seconds: float = Field(
        2,
        gt=0,
        description="Seconds between two steps of the webhook worker (queue new feed events, send what is due).",
    )
    webhook_sync_seconds: float = Field(
        30,
        ge=0,
        description="Seconds between two runs of the feed's delivery for the lenders with a webhook endpoint "
        "(new versions and withdrawals reach their feed, and so their webhooks, without a feed read).",
    )
    webhook_allow_private: bool = Field(
        False,
        description="Let webhook endpoints be on loopback, private, link-local or other non-global addresses "
        "(tests and local development); by default such a URL is refused when an endpoint is registered or "
        "changed, and again when the worker connects.",
    )
    airflow_api_url: str = Field(
        "",
        description="Base URL of an Airflow 3 API server (e.g. http://127.0.0.1:8080): a grant then triggers "
        "a DAG run scoped to its SME there; empty: the web service runs the pipeline for it in-process.",
    )
    airflow_username: str = Field("admin", description="Airflow user the web service logs in as (JWT).")
    airflow_password: str = Field(
        "",
        description="Password of DOSSIER_AIRFLOW_USERNAME (empty: the one `make airflow` generated in "
        "$DOSSIER_HOME/airflow/simple_auth_manager_passwords.json.generated).",
    )
    rate_limit_per_minute: int = Field(
        600,
        ge=0,
        description="Requests one lender API key may make per minute (0: no limit); past it the API "
        "answers 429 with Retry-After.",
    )
    rate_limit_storage_url: str = Field(
        "memory://",
        description="Where the rate-limit counters are kept: memory:// (this service process) or a "
        "redis://host:port/db URL shared by every service process.",
    )
    lending_dscr: float = Field(
        1.25,
        gt=0,
        description="Debt-service coverage the recommended limit keeps: annual service at most EBITDA / this.",
    )
    lending_term_months: int = Field(
        36, ge=1, description="Loan term (months) the recommended limit is sized for."
    )
    lending_revenue_cap: float = Field(
        0.20,
        ge=0,
        description="The recommended limit never exceeds this share of the last 12 months' revenue.",
    )
    lending_loss_given_default: float = Field(
        0.45, ge=0, le=1, description="Loss given default in the indicative rate (PD x this)."
    )
    lending_funding_cost: float = Field(0.05, ge=0, description="Annual funding cost in the indicative rate.")
    lending_operating_cost: float = Field(
        0.02, ge=0, description="Annual operating cost in the indicative rate."
    )
    lending_capital_charge: float = Field(
        0.015, ge=0, description="Annual capital charge in the indicative rate."
    )
    lending_max_rate: float = Field(0.35, gt=0, description="Cap of the indicative rate.")
    lending_max_pd: float = Field(
        0.30, gt=0, le=1, description="No limit is recommended at or above this PD."
    )

    @field_validator("warehouse_url")
    @classmethod
    def _sqlalchemy_url(cls, value: str) -> str:
        from sqlalchemy.engine import make_url
        from sqlalchemy.exc import ArgumentError

        try:
            make_url(value.replace("$DOSSIER_HOME", "/home"))
        except ArgumentError as error:
            raise ValueError(f"not a SQLAlchemy URL ({error})") from None
        return value

    @field_validator("sandbox_url", "s3_endpoint_url", "public_url", "airflow_api_url")
    @classmethod
    def _http_url(cls, value: str) -> str:
        if value and not value.startswith(("http://", "https://")):
            raise ValueError("expected an http:// or https:// URL")
        return value

    @field_validator("webhook_retry_schedule")
    @classmethod
    def _retry_schedule(cls, value: str) -> str:
        from warehouse.errors import InputError
        from warehouse.webhooks import parse_schedule

        try:
            parse_schedule(value)
        except InputError as error:
            raise ValueError(str(error).split(": ", 1)[1]) from None
        return value

    @field_validator("rate_limit_storage_url")
    @classmethod
    def _limits_storage(cls, value: str) -> str:
        if value.split("://", 1)[0] not in RATE_LIMIT_STORAGES or "://" not in value:
            raise ValueError(
                f"expected a URL starting with one of {', '.join(s + '://' for s in RATE_LIMIT_STORAGES)}"
            )
        return value

    @field_validator("providers")
    @classmethod
    def _providers(cls, value: str) -> str:
        parse_providers(value)
        return value

    @field_validator("hmrc_device_id")
    @classmethod
    def _device_id(cls, value: str) -> str:
        if value:
            import uuid

            try:
                uuid.UUID(value)
            except ValueError:
                raise ValueError("expected a UUID such as beec798b-b366-47fa-b1f8-92cede14a1ce") from None
        return value

    @field_validator("vendor_license_ids")
    @classmethod
    def _license_ids(cls, value: str) -> str:
        parse_license_ids(value)
        return value

    @field_validator("log_level")
    @classmethod
    def _log_level(cls, value: str) -> str:
        if value.upper() not in LOG_LEVELS:
            raise ValueError(f"expected one of {', '.join(LOG_LEVELS)}")
        return value.upper()


PROVIDER_KEYS = ("base_url", "authorize_url", "token_url", "client_id", "client_secret")
"""What ``DOSSIER_PROVIDERS`` may say about each source's provider."""


def parse_providers(value: str) -> dict[str, dict[str, str]]:
    """``DOSSIER_PROVIDERS`` as ``{source: {key: value}}``; ``ValueError`` saying what is wrong.

    >>> parse_providers('{"tax": {"base_url": "https://api.example/"}}')
    {'tax': {'base_url': 'https://api.example'}}
    >>> parse_providers('{"bank": {}}')
    Traceback (most recent call last):
    ...
    ValueError: unknown source 'bank' (known: accounting, survey, tax, utility)
    """
    if not value:
        return {}
    from warehouse.canonical import SOURCES

    try:
        document = json.loads(value)
    except ValueError as error:
        raise ValueError(f"not JSON ({error})") from None
    if not isinstance(document, dict):
        raise ValueError("expected a JSON object keyed by source")
    parsed: dict[str, dict[str, str]] = {}
    for source, entry in document.items():
        if source not in SOURCES:
            raise ValueError(f"unknown source {source!r} (known: {', '.join(sorted(SOURCES))})")
        if not isinstance(entry, dict):
            raise ValueError(f"{source}: expected an object with keys among {', '.join(PROVIDER_KEYS)}")
        unknown = sorted(set(entry) - set(PROVIDER_KEYS))
        if unknown:
            raise ValueError(f"{source}: unknown key {unknown[0]!r} (known: {', '.join(PROVIDER_KEYS)})")
        for key, item in entry.items():
            if not isinstance(item, str):
                raise ValueError(f"{source}.{key}: expected a string")
            if key.endswith("_url") and item and not item.startswith(("http://", "https://")):
                raise ValueError(f"{source}.{key}: expected an http:// or https:// URL")
        parsed[source] = {k: (v.rstrip("/") if k.endswith("_url") else v) for k, v in entry.items()}
    return parsed


def parse_license_ids(value: str) -> dict[str, str]:
    """``DOSSIER_VENDOR_LICENSE_IDS`` (``name=key,name=key``) as a mapping; ``ValueError`` when malformed.

    >>> parse_license_ids("sme-dossier=ABC-123")
    {'sme-dossier': 'ABC-123'}
    """
    pairs: dict[str, str] = {}
    for item in filter(None, (part.strip() for part in value.split(","))):
        name, sep, key = item.partition("=")
        if not sep or not name.strip() or not key.strip():
            raise ValueError(f"expected name=key pairs separated by commas, got {item!r}")
        pairs[name.strip()] = key.strip()
    return pairs


class _GivenEnvironment(Environment):
    """The same variables read from a given mapping only (``Settings.from_env(mapping)``)."""

    @classmethod
    def settings_customise_sources(
        cls, settings_cls: Any, init_settings: Any, **others: Any
    ) -> tuple[Any, ...]:
        return (init_settings,)


HINTS: dict[Any, str] = {int: "a whole number", int | None: "a whole number", float: "a number"}
FIELD_HINTS: dict[str, str] = {
    "providers": 'a JSON object such as {"tax": {"base_url": "https://…"}}',
    "vendor_license_ids": "name=key pairs separated by commas",
}
SECRET_FIELDS = frozenset({"providers", "vendor_license_ids", "oauth_client_secret", "s3_secret"})
"""Variables whose value an error message does not repeat (it may hold a secret)."""


@dataclass(frozen=True)
class EnvVar:
    """One documented environment variable (the README's table is checked against these)."""

    name: str
    default: str
    help: str


def _environment() -> tuple[EnvVar, ...]:
    return tuple(
        EnvVar(
            ENV_PREFIX + name.upper(),
            "" if info.default is None else str(info.default),
            info.description or "",
        )
        for name, info in Environment.model_fields.items()
    )


ENVIRONMENT: tuple[EnvVar, ...] = _environment()

SANDBOX_RECORD = "sandbox-universe.json"
"""File in the home folder recording the sandbox universe (seed and size) the warehouse was seeded with."""


def _hint(name: str) -> str:
    """What a valid value of variable ``name`` looks like, from its type and bounds."""
    field_name = name.removeprefix(ENV_PREFIX).lower()
    info = Environment.model_fields[field_name]
    kind = FIELD_HINTS.get(field_name) or HINTS.get(info.annotation, "a value")  # type: ignore[arg-type]
    bounds = []
    for rule in info.metadata:
        for attribute, word in (("ge", "at least"), ("gt", "above"), ("le", "at most"), ("lt", "below")):
            if getattr(rule, attribute, None) is not None:
                bounds.append(f"{word} {getattr(rule, attribute)}")
    default = info.default if info.default not in ("", None) else "empty"
    return f"set {kind}{' ' + ' and '.join(bounds) if bounds else ''} (default {default}), or unset it"


def _settings_error(error: ValidationError, env: Mapping[str, str]) -> SettingsError:
    """One line naming each variable that failed, its value, why, and what would do."""
    parts = []
    for problem in error.errors():
        name = ENV_PREFIX + str(problem["loc"][0]).upper()
        message = str(problem["msg"]).removeprefix("Value error, ")
        shown = "(value not shown)" if str(problem["loc"][0]) in SECRET_FIELDS else repr(env.get(name, ""))
        parts.append(f"{name}={shown} is not valid: {message}; {_hint(name)}")
    return SettingsError("; ".join(parts))


def _expand(value: str, home: str) -> str:
    return value.replace("$DOSSIER_HOME", home)


def _parse(environ: Mapping[str, str] | None) -> tuple[Environment, dict[str, str]]:
    """Validated variables: from the process environment (pydantic-settings), or from ``environ``."""
    env = dict(os.environ if environ is None else environ)
    try:
        if environ is None:
            return Environment(), env
        values = {
            key.removeprefix(ENV_PREFIX).lower(): value
            for key, value in env.items()
            if key.startswith(ENV_PREFIX) and value != ""
        }
        return _GivenEnvironment(**values), env
    except ValidationError as error:
        raise _settings_error(error, env) from None


def recorded_sandbox(home: Path) -> dict[str, int]:
    """The sandbox universe ``home`` was last seeded with (``{"seed": .., "smes": ..}``), or ``{}``.

    ``dossier sandbox seed`` and ``dossier demo`` record it (:func:`record_sandbox`), so that every
    later command in the same home serves and expects the same universe without repeating it.
    """
    path = home / SANDBOX_RECORD
    try:
        recorded = json.loads(path.read_text())
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as error:
        raise SettingsError(
            f"{path} is not readable JSON ({error}); delete it and run: dossier sandbox seed"
        ) from None
    if not isinstance(recorded, dict) or not all(
        isinstance(recorded.get(key), int) for key in ("seed", "smes")
    ):
        raise SettingsError(
            f'{path} should hold {{"seed": N, "smes": N}}; delete it and run: dossier sandbox seed'
        )
    return {"seed": recorded["seed"], "smes": recorded["smes"]}


def record_sandbox(settings: Settings) -> Path:
    """Remember in the home folder which sandbox universe (seed and size) the warehouse was seeded with."""
    path = settings.home / SANDBOX_RECORD
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"seed": settings.sandbox_seed, "smes": settings.sandbox_smes}) + "\n")
    return path


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
    shard_count: int | None = None
    """An explicit count (``DOSSIER_SHARD_COUNT``), or None: planned per date (:meth:`shard_policy`)."""
    shard_size: int = 10_000
    max_shards: int = 256
    oauth_client_id: str = "sme-dossier"
    oauth_client_secret: str = "sme-dossier-sandbox-secret"
    http_timeout: float = 10.0
    http_retries: int = 5
    pull_revision_months: int = 2
    history_months: int = 36
    log_level: str = "INFO"
    web_host: str = "127.0.0.1"
    web_port: int = 8000
    public_url: str = ""
    secret_key: str = ""
    operator_token: str = ""
    lender_api_url: str = ""
    lender_api_key: str = ""
    upload_max_bytes: int = 20 * 1024 * 1024
    webhook_retry_schedule: str = "0,5,300,1800,7200,18000,36000,36000"
    webhook_timeout: float = 15.0
    webhook_workers: int = 8
    webhook_poll_seconds: float = 2.0
    webhook_sync_seconds: float = 30.0
    webhook_allow_private: bool = False
    airflow_api_url: str = ""
    airflow_username: str = "admin"
    airflow_password: str = ""
    rate_limit_per_minute: int = 600
    rate_limit_storage_url: str = "memory://"
    lending_dscr: float = 1.25
    lending_term_months: int = 36
    lending_revenue_cap: float = 0.20
    lending_loss_given_default: float = 0.45
    lending_funding_cost: float = 0.05
    lending_operating_cost: float = 0.02
    lending_capital_charge: float = 0.015
    lending_max_rate: float = 0.35
    lending_max_pd: float = 0.30
    providers: Mapping[str, Mapping[str, str]] = field(default_factory=dict)
    """Per source, what ``DOSSIER_PROVIDERS`` says of its provider (see :meth:`provider`)."""
    hmrc_device_id: str = ""
    vendor_license_ids: Mapping[str, str] = field(default_factory=dict)
    extra: Mapping[str, str] = field(default_factory=dict)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        """Read and check every ``DOSSIER_*`` variable, falling back to the documented defaults.

        The sandbox's seed and size, when not set, are those the home was last seeded with
        (:func:`recorded_sandbox`). Raises :class:`SettingsError` naming each bad variable.
        """
        parsed, env = _parse(environ)
        home = str(Path(parsed.home).expanduser().absolute())
        if Path(home).exists() and not Path(home).is_dir():
            raise SettingsError(f"DOSSIER_HOME={home!r} is a file; name a folder (it is created if missing)")
        recorded = recorded_sandbox(Path(home))
        given = parsed.model_fields_set
        return cls(
            home=Path(home),
            warehouse_url=_expand(parsed.warehouse_url, home),
            store_url=_expand(parsed.store_url, home),
            s3_endpoint_url=parsed.s3_endpoint_url,
            s3_key=parsed.s3_key,
            s3_secret=parsed.s3_secret,
            sandbox_url=parsed.sandbox_url.rstrip("/"),
            sandbox_smes=parsed.sandbox_smes
            if "sandbox_smes" in given
            else recorded.get("smes", parsed.sandbox_smes),
            sandbox_seed=parsed.sandbox_seed
            if "sandbox_seed" in given
            else recorded.get("seed", parsed.sandbox_seed),
            sandbox_fault_rate=float(parsed.sandbox_fault_rate),
            shard_count=parsed.shard_count,
            shard_size=parsed.shard_size,
            max_shards=parsed.max_shards,
            oauth_client_id=parsed.oauth_client_id,
            oauth_client_secret=parsed.oauth_client_secret,
            http_timeout=float(parsed.http_timeout),
            http_retries=parsed.http_retries,
            pull_revision_months=parsed.pull_revision_months,
            history_months=parsed.history_months,
            log_level=parsed.log_level,
            web_host=parsed.web_host,
            web_port=parsed.web_port,
            public_url=parsed.public_url.rstrip("/"),
            secret_key=parsed.secret_key,
            operator_token=parsed.operator_token,
            lender_api_url=parsed.lender_api_url.rstrip("/"),
            lender_api_key=parsed.lender_api_key,
            upload_max_bytes=parsed.upload_max_bytes,
            webhook_retry_schedule=parsed.webhook_retry_schedule,
            webhook_timeout=float(parsed.webhook_timeout),
            webhook_workers=parsed.webhook_workers,
            webhook_poll_seconds=float(parsed.webhook_poll_seconds),
            webhook_sync_seconds=float(parsed.webhook_sync_seconds),
            webhook_allow_private=parsed.webhook_allow_private,
            airflow_api_url=parsed.airflow_api_url.rstrip("/"),
            airflow_username=parsed.airflow_username,
            airflow_password=parsed.airflow_password,
            rate_limit_per_minute=parsed.rate_limit_per_minute,
            rate_limit_storage_url=parsed.rate_limit_storage_url,
            lending_dscr=float(parsed.lending_dscr),
            lending_term_months=parsed.lending_term_months,
            lending_revenue_cap=float(parsed.lending_revenue_cap),
            lending_loss_given_default=float(parsed.lending_loss_given_default),
            lending_funding_cost=float(parsed.lending_funding_cost),
            lending_operating_cost=float(parsed.lending_operating_cost),
            lending_capital_charge=float(parsed.lending_capital_charge),
            lending_max_rate=float(parsed.lending_max_rate),
            lending_max_pd=float(parsed.lending_max_pd),
            providers=parse_providers(parsed.providers),
            hmrc_device_id=parsed.hmrc_device_id,
            vendor_license_ids=parse_license_ids(parsed.vendor_license_ids),
            extra={k: v for k, v in env.items() if k.startswith("AIRFLOW__")},
        )

    def provider(self, source: str) -> ProviderEndpoint:
        """Where ``source``'s provider is and who we are to it: ``DOSSIER_PROVIDERS``, else the bundled
        sandbox layout (``$DOSSIER_SANDBOX_URL/<source>``) and ``DOSSIER_OAUTH_CLIENT_ID``/``_SECRET``.

        >>> s = Settings.from_env({"DOSSIER_SANDBOX_URL": "http://127.0.0.1:9000",
        ...     "DOSSIER_PROVIDERS": '{"tax": {"base_url": "https://api.example", "client_id": "hmrc-app"}}'})
        >>> s.provider("tax").token_url, s.provider("tax").client_id, s.provider("tax").client_secret
        ('https://api.example/oauth/token', 'hmrc-app', 'sme-dossier-sandbox-secret')
        >>> s.provider("utility").base_url
        'http://127.0.0.1:9000/utility'
        """
        from connectors.core.providers import ProviderEndpoint

        given = self.providers.get(source, {})
        sandbox = f"{self.sandbox_url.rstrip('/')}/{source}" if self.sandbox_url else ""
        return ProviderEndpoint(
            source,
            given.get("base_url") or sandbox,
            client_id=given.get("client_id") or self.oauth_client_id,
            client_secret=given.get("client_secret") or self.oauth_client_secret,
            authorize_endpoint=given.get("authorize_url", ""),
            token_endpoint=given.get("token_url", ""),
        )

    def shard_policy(self) -> ShardPolicy:
        """How a date's shard count is planned (:mod:`warehouse.shard_plans`).

        >>> Settings.from_env({"DOSSIER_SHARD_SIZE": "5000"}).shard_policy()
        ShardPolicy(shard_size=5000, max_shards=256, fixed=None)
        >>> Settings.from_env({"DOSSIER_SHARD_COUNT": "8"}).shard_policy().fixed
        8
        """
        from warehouse.shard_plans import ShardPolicy

        return ShardPolicy(shard_size=self.shard_size, max_shards=self.max_shards, fixed=self.shard_count)

    def device_id(self) -> str:
        """This installation's Gov-Client-Device-ID: as configured, else a UUID kept in the home
        folder (made on first use, never changed after)."""
        if self.hmrc_device_id:
            return self.hmrc_device_id
        import uuid

        path = self.home / "device.id"
        if not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            made = path.with_name(f"device.id.{os.getpid()}.{uuid.uuid4().hex[:8]}")
            made.write_text(f"{uuid.uuid4()}\n")
            try:  # linked whole or not at all: parallel tasks agree on the first one made
                os.link(made, path)
            except FileExistsError:
                pass
            finally:
                made.unlink()
        return path.read_text().strip()

    @property
    def base_url(self) -> str:
        """Where the web service is reached: ``public_url``, else ``http://web_host:web_port``."""
        return self.public_url or f"http://{self.web_host}:{self.web_port}"

    def kept_secret(self, name: str) -> str:
        """The secret ``name`` (``secret_key`` or ``operator_token``): as configured, else a random one
        kept in ``$DOSSIER_HOME/<file>`` (made on first use, readable by the owner only)."""
        configured = {"secret_key": self.secret_key, "operator_token": self.operator_token}[name]
        if configured:
            return configured
        import secrets

        path = self.home / {"secret_key": "secret.key", "operator_token": "operator.token"}[name]
        if not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            path.touch(mode=0o600)
            path.write_text(secrets.token_urlsafe(32) + "\n")
        return path.read_text().strip()

    def webhook_config(self) -> Any:
        """How the webhook worker sends (:class:`warehouse.webhooks.SendConfig`)."""
        from warehouse.webhooks import SendConfig, parse_schedule

        return SendConfig(
            secret_key=self.kept_secret("secret_key"),
            schedule=parse_schedule(self.webhook_retry_schedule),
            timeout=self.webhook_timeout,
            workers=self.webhook_workers,
            allow_private=self.webhook_allow_private,
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
            # Task logs keep their INFO lines (each step's counts); the servers' routine chatter does not.
            "AIRFLOW__LOGGING__LOGGING_LEVEL": "INFO",
            "AIRFLOW__LOGGING__NAMESPACE_LEVELS": (
                "airflow.serialization=WARNING airflow.models.dag=WARNING airflow.dag_processing=WARNING "
                "airflow.jobs=WARNING uvicorn=WARNING sqlalchemy=WARNING"
            ),
            # SQLite takes one writer at a time: a few task processes, not LocalExecutor's default 32.
            "AIRFLOW__CORE__PARALLELISM": "2",
            "AIRFLOW__CORE__MAX_ACTIVE_TASKS_PER_DAG": "2",
            "DOSSIER_HOME": str(self.home),
            "DOSSIER_WAREHOUSE_URL": self.warehouse_url,
            "DOSSIER_STORE_URL": self.store_url,
            "DOSSIER_SHARD_SIZE": str(self.shard_size),
            "DOSSIER_MAX_SHARDS": str(self.max_shards),
            "DOSSIER_SANDBOX_SMES": str(self.sandbox_smes),
            "DOSSIER_SANDBOX_SEED": str(self.sandbox_seed),
            "DOSSIER_SANDBOX_FAULT_RATE": str(self.sandbox_fault_rate),
            "DOSSIER_OAUTH_CLIENT_ID": self.oauth_client_id,
            "DOSSIER_OAUTH_CLIENT_SECRET": self.oauth_client_secret,
        }
        if self.shard_count is not None:
            env["DOSSIER_SHARD_COUNT"] = str(self.shard_count)
        if self.sandbox_url:
            env["DOSSIER_SANDBOX_URL"] = self.sandbox_url
        if not self.is_local_store:
            # A task process must reach the same bucket with the same credentials.
            env["DOSSIER_S3_ENDPOINT_URL"] = self.s3_endpoint_url
            env["DOSSIER_S3_KEY"] = self.s3_key
            env["DOSSIER_S3_SECRET"] = self.s3_secret
        if self.providers:
            env["DOSSIER_PROVIDERS"] = json.dumps(self.providers)
        if self.hmrc_device_id:
            env["DOSSIER_HMRC_DEVICE_ID"] = self.hmrc_device_id
        if self.vendor_license_ids:
            env["DOSSIER_VENDOR_LICENSE_IDS"] = ",".join(
                f"{k}={v}" for k, v in self.vendor_license_ids.items()
            )
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


def export_environment(values: Mapping[str, str]) -> None:
    """Set ``values`` (``DOSSIER_*`` settings) in this process's environment, for the child
    processes it starts to read (``dossier serve --workers N``)."""
    os.environ.update(values)


def fresh_environment(values: Mapping[str, str]) -> dict[str, str]:
    """This process's environment without any ``DOSSIER_*`` variable, plus ``values``: the
    environment of a child process configured by ``values`` alone (the benchmarks' services)."""
    return {k: v for k, v in os.environ.items() if not k.startswith("DOSSIER_")} | dict(values)
