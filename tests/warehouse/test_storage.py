"""The storage layout and atomic writes (local folder; the same code drives S3 through fsspec)."""

from __future__ import annotations

import pyarrow as pa
import pytest

from warehouse.storage import Layout, Store, sha256_hex


def test_layout_paths() -> None:
    layout = Layout("/data")
    assert layout.raw("tax", "ab" + "0" * 62, "json") == f"/data/raw/tax/ab/ab{'0' * 62}.json"
    assert (
        layout.canonical("vat_returns", "2026-11-01", 3)
        == "/data/canonical/vat_returns/as_of=2026-11-01/shard=0003.parquet"
    )
    assert (
        layout.staging("scores", "2026-11-01", 12)
        == "/data/staging/scores/as_of=2026-11-01/shard=0012.parquet"
    )
    assert (
        layout.dossier_part(1, "2026-11-01", 0)
        == "/data/dossiers/schema=1/as_of=2026-11-01/part-0000.parquet"
    )
    assert layout.manifest(1, "2026-11-01") == "/data/manifests/dossiers/schema=1/as_of=2026-11-01.json"


def test_immutable_put_keeps_the_first_copy(tmp_path) -> None:
    store = Store(str(tmp_path))
    data = b'{"periodKey": "24A1"}'
    path = store.layout.raw("tax", sha256_hex(data), "json")
    assert store.put_immutable(path, data) is True
    assert store.put_immutable(path, data) is False
    assert store.read_bytes(path) == data


def test_table_round_trip_leaves_no_temporary_files(tmp_path) -> None:
    store = Store(str(tmp_path))
    table = pa.table({"sme_id": ["SME-000001", "SME-000002"], "revenue": [1.5, 2.5]})
    path = store.layout.canonical("monthly_financials", "2026-11-01", 0)
    digest = store.write_table(path, table)
    assert digest == sha256_hex(store.read_bytes(path))
    assert store.read_table(path).to_pylist() == table.to_pylist()
    assert store.list(store.layout.canonical_dir("monthly_financials", "2026-11-01")) == [path]
    assert [p.name for p in (tmp_path / "canonical/monthly_financials/as_of=2026-11-01").iterdir()] == [
        "shard=0000.parquet"
    ]


def test_failed_write_keeps_the_previous_file(tmp_path, monkeypatch: pytest.MonkeyPatch) -> None:
    store = Store(str(tmp_path))
    path = f"{tmp_path}/x.json"
    store.write_json(path, {"version": 1})

    def crash(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(store.fs, "mv", crash)
    with pytest.raises(OSError, match="disk full"):
        store.write_json(path, {"version": 2})
    assert store.read_json(path) == {"version": 1}
