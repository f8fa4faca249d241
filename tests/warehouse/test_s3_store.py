"""The store on an S3-compatible object store: a real S3 server on loopback (moto's server mode).

Raw landing, canonical tables, staging, the dossier store and its manifests go through
:class:`warehouse.storage.Store` only, so the same code runs on a folder and on a bucket. These tests
run it on a bucket: first the store's own operations, then the whole pipeline (both DAGs, in-process)
with ``DOSSIER_STORE_URL=s3://...``, a lender pull and ``dossier verify`` reading it back.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import socket
from collections.abc import Iterator
from pathlib import Path

import boto3
import pyarrow as pa
import pytest
from moto.server import ThreadedMotoServer

from dossier.settings import Settings, for_home, override
from warehouse.storage import Store, StoreError

KEY, SECRET, BUCKET = "dossier-test", "dossier-test-secret", "sme-dossier"


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture(scope="module")
def s3_endpoint() -> Iterator[str]:
    """A moto S3 server on 127.0.0.1, stopped after the module."""
    port = _free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.stop()


@pytest.fixture
def bucket(s3_endpoint: str, request: pytest.FixtureRequest) -> str:
    """A fresh, empty bucket for the test; its name."""
    name = f"{BUCKET}-{abs(hash(request.node.nodeid)) % 10**8}"
    client = boto3.client(
        "s3",
        endpoint_url=s3_endpoint,
        aws_access_key_id=KEY,
        aws_secret_access_key=SECRET,
        region_name="us-east-1",
    )
    client.create_bucket(Bucket=name)
    return name


def _s3_settings(tmp_path: Path, endpoint: str, bucket: str, **changes: object) -> Settings:
    return for_home(
        tmp_path / "var",
        store_url=f"s3://{bucket}/store",
        s3_endpoint_url=endpoint,
        s3_key=KEY,
        s3_secret=SECRET,
        **changes,
    )


def test_store_operations_on_a_bucket(tmp_path: Path, s3_endpoint: str, bucket: str) -> None:
    settings = _s3_settings(tmp_path, s3_endpoint, bucket)
    store = Store(settings.store_url, settings.storage_options())
    assert not store.is_local
    assert store.root == f"{bucket}/store"

    raw = store.layout.raw("utility", "ab" * 32, "xml")
    assert store.put_immutable(raw, b"<feed/>") is True
    assert store.put_immutable(raw, b"<other/>") is False  # immutable: the first bytes stay
    assert store.read_bytes(raw) == b"<feed/>"

    table = pa.table({"sme_id": ["SME-1", "SME-2"], "revenue": [10.5, None]})
    path = store.layout.canonical("monthly_financials", "2026-11-01", 0)
    digest = store.write_table(path, table)
    assert len(digest) == 64
    assert store.read_table(path).to_pylist() == table.to_pylist()
    assert store.read_table(path, columns=["sme_id"]).column_names == ["sme_id"]

    manifest = store.layout.manifest(2, "2026-11-01")
    store.write_json(manifest, {"files": [path], "rows": 2})
    assert store.read_json(manifest) == {"files": [path], "rows": 2}

    assert store.list(store.layout.canonical_dir("monthly_financials", "2026-11-01")) == [path]
    assert store.walk(f"{store.root}/raw") == [raw]
    store.write_bytes(path, b"not parquet")
    with pytest.raises(StoreError, match="not a readable Parquet file"):
        store.read_table(path)
    store.delete(path)
    assert not store.exists(path)
    assert store.list(store.layout.canonical_dir("monthly_financials", "2026-11-01")) == []


def test_the_settings_hand_the_bucket_to_airflow_processes(
    tmp_path: Path, s3_endpoint: str, bucket: str
) -> None:
    """A task process started by Airflow reads its settings from the environment: the endpoint and
    credentials must travel with the store URL, or a worker would write to the wrong place."""
    env = _s3_settings(tmp_path, s3_endpoint, bucket).airflow_environment()
    assert (env["DOSSIER_STORE_URL"], env["DOSSIER_S3_ENDPOINT_URL"], env["DOSSIER_S3_KEY"]) == (
        f"s3://{bucket}/store",
        s3_endpoint,
        KEY,
    )
    assert env["DOSSIER_S3_SECRET"] == SECRET


@pytest.fixture
def restored_environment() -> Iterator[None]:
    saved = dict(os.environ)
    try:
        yield
    finally:
        os.environ.clear()
        os.environ.update(saved)


@pytest.mark.airflow
@pytest.mark.slow
@pytest.mark.usefixtures("restored_environment")
def test_pipeline_lands_and_publishes_into_the_bucket(
    tmp_path: Path, s3_endpoint: str, bucket: str, capsys: pytest.CaptureFixture[str]
) -> None:
    from dossier.cli import main
    from dossier.demo import run_pipeline
    from warehouse.dossier_schema import SCHEMA_VERSION

    as_of = dt.datetime.now(dt.UTC).date()
    settings = _s3_settings(
        tmp_path, s3_endpoint, bucket, shard_count=2, sandbox_smes=12, sandbox_fault_rate=0.0
    )
    with override(settings):
        assert main(["db", "upgrade"]) == 0
        assert main(["sandbox", "seed"]) == 0
        result = run_pipeline(as_of=as_of)
        assert [(r["dag_id"], r["state"]) for r in result["runs"]] == [
            ("sme_ingest", "success"),
            ("sme_dossier_publish", "success"),
        ]
        store = Store(settings.store_url, settings.storage_options())
        # Nothing was written to the local folder that the embedded default would use.
        assert not (settings.home / "store").exists()
        assert store.walk(f"{store.root}/raw"), "raw payloads landed in the bucket"
        parts = store.list(store.layout.dossier_partition(SCHEMA_VERSION, as_of.isoformat()), ".parquet")
        assert parts
        manifest = store.read_json(store.layout.manifest(SCHEMA_VERSION, as_of.isoformat()))
        listed = sorted(f"{store.root}/{entry['path']}" for entry in manifest["files"])
        assert listed == sorted(parts)

        capsys.readouterr()
        assert (
            main(["lender", "pull", "--lender", "northwind-capital", "--out", str(tmp_path / "inbox")]) == 0
        )
        pulled = json.loads(capsys.readouterr().out)
        assert pulled["delivered"] > 0
        assert main(["verify"]) == 0
