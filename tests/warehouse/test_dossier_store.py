"""Publishing the dossier store: parts, manifest last, catalog, entitlement; on SQLite and PostgreSQL.

The helpers at the top (SMEs, consents, scored frames, the rows a publish must write) are shared
with ``test_feed.py``.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import math
import re
import shutil
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import duckdb
import pandas as pd
import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from sqlalchemy import Engine, select

from warehouse import consent
from warehouse.db import make_engine, session_scope
from warehouse.dossier_schema import ALL_COLUMNS, FEATURE_COLUMNS, SCHEMA_VERSION, SCORE_COLUMNS, build_schema
from warehouse.dossier_store import (
    DossierStoreError,
    content_hashes,
    content_sha256,
    publish,
    read_manifest,
    read_published,
)
from warehouse.migrate import upgrade
from warehouse.models import DossierVersion, Lender, Publish, Sme
from warehouse.storage import Store

AS_OF = dt.date(2026, 11, 1)
NOW = dt.datetime(2026, 11, 2, 9, 30, tzinfo=dt.UTC)
MODEL = "logit-2026.11"
BOOKS_AND_VAT = ("accounting", "tax")

SMES: dict[str, tuple[str, str, str, str, int | None]] = {
    "SME-000001": ("Acme Bakery", "food_service", "North", "micro", 2011),
    "SME-000002": ("Birch Joinery", "construction", "South", "small", None),
    "SME-000003": ("Cobalt Print", "manufacturing", "North", "medium", 1998),
    "SME-000004": ("Dune Cafe", "food_service", "East", "micro", 2019),
    "SME-000005": ("Elm Logistics", "transport", "South", "small", 2004),
    "SME-000006": ("Fern Florists", "retail", "East", "micro", 2015),
}
LENDERS = {"northwind": "Northwind Capital", "harbor": "Harbor Credit"}
GRADES = "ABCDE"
HISTORY = 24


def scope_of(sources: Iterable[str], months: int = HISTORY) -> str:
    """The scope key of a dossier computed from ``sources`` over ``months``."""
    return f"{'+'.join(sorted(sources))}@{months}m"


# --- shared helpers -------------------------------------------------------------------------------


def seed(engine: Engine) -> None:
    """The SMEs and lenders every test starts from."""
    with session_scope(engine) as session:
        session.add_all(
            Sme(sme_id=sme_id, name=name, industry=industry, region=region, size_band=size, founded_year=year)
            for sme_id, (name, industry, region, size, year) in SMES.items()
        )
        session.add_all(Lender(lender_id=lender_id, name=name) for lender_id, name in LENDERS.items())


def give_consent(
    session: Any,
    consent_id: str,
    sme_id: str,
    *,
    sources: tuple[str, ...] = BOOKS_AND_VAT,
    recipients: tuple[str, ...] = ("northwind",),
    granted_at: dt.datetime = NOW - dt.timedelta(days=30),
    expires_at: dt.datetime = NOW + dt.timedelta(days=365),
    history_months: int = HISTORY,
) -> None:
    consent.grant(
        session,
        consent_id=consent_id,
        sme_id=sme_id,
        sources=sources,
        recipients=recipients,
        purpose="credit_decision",
        history_months=history_months,
        granted_at=granted_at,
        expires_at=expires_at,
    )


def scored_row(sme_id: str, *, sources: tuple[str, ...] = BOOKS_AND_VAT, bump: float = 0.0) -> dict[str, Any]:
    """What evaluation hands over for one SME: deterministic values derived from its number."""
    n = int(sme_id[-6:])
    row: dict[str, Any] = {
        "sme_id": sme_id,
        "scope": scope_of(sources),
        "history_months": HISTORY,
        "sources_used": sorted(sources),
    }
    for k, column in enumerate(FEATURE_COLUMNS):
        if column.nullable and n % 2 == 0 and column.name.startswith("survey_"):
            row[column.name] = None
        elif pa.types.is_floating(column.type):
            row[column.name] = round(0.013 * n * (k + 1), 6)
        elif pa.types.is_integer(column.type):
            row[column.name] = 10 * n + k
        else:
            row[column.name] = "GBP"
    row.update(
        pd_12m=0.011 * n + bump,
        score=820 - 15 * n,
        grade=GRADES[(n - 1) % len(GRADES)],
        reason_codes=[f"R{n:02d}", "VAT_LATE"],
        reason_texts=[f"Reason {n}", "VAT returns filed late"],
        credit_limit=2500.0 * n,
        indicative_rate=0.07 + 0.005 * n,
        pd_low=0.009 * n + bump,
        pd_high=0.02 * n + bump,
        coverage=round(1.0 - 0.05 * n, 4),
        improvement_hint=f"Hint {n}",
        consistency_score=None if n % 3 == 0 else round(1.0 - 0.1 * n, 4),
        discrepancy_codes=["BOOKS_ABOVE_VAT"] if n % 2 else [],
    )
    return row


def scored(
    sme_ids: list[str], *, sources: dict[str, tuple[str, ...]] | None = None, bump: float = 0.0
) -> pd.DataFrame:
    """A scored frame (one shard) for ``sme_ids``, in the order given."""
    sources = sources or {}
    return pd.DataFrame(
        [scored_row(s, sources=sources.get(s, BOOKS_AND_VAT), bump=bump) for s in sme_ids],
        columns=[
            "sme_id",
            "scope",
            "history_months",
            "sources_used",
            *(c.name for c in FEATURE_COLUMNS + SCORE_COLUMNS),
        ],
    )


def expected_row(
    sme_id: str,
    *,
    published_at: dt.datetime,
    sources: tuple[str, ...] = BOOKS_AND_VAT,
    bump: float = 0.0,
    model_version: str = MODEL,
    as_of: dt.date = AS_OF,
) -> dict[str, Any]:
    """The whole dossier row a publish must write for ``sme_id``, in schema column order."""
    name, industry, region, size, year = SMES[sme_id]
    row = {
        "dossier_id": f"{sme_id}:{as_of.isoformat()}:v3:{scope_of(sources)}",
        "sme_id": sme_id,
        "sme_name": name,
        "industry": industry,
        "region": region,
        "size_band": size,
        "founded_year": year,
        "as_of_date": as_of,
        "schema_version": 3,
        "model_version": model_version,
        "sources_used": sorted(sources),
        "published_at": published_at,
        **scored_row(sme_id, sources=sources, bump=bump),
    }
    return {column.name: row[column.name] for column in ALL_COLUMNS}


def parquet_type(arrow_type: pa.DataType) -> pa.DataType:
    """How Parquet stores ``arrow_type``: it has no second unit, so second timestamps read back as ms."""
    if pa.types.is_timestamp(arrow_type) and arrow_type.unit == "s":
        return pa.timestamp("ms", tz=arrow_type.tz)
    return arrow_type


def file_rows(path: Path | str) -> list[dict[str, Any]]:
    return pq.read_table(path).to_pylist()


def part_path(store: Store, part: int, as_of: dt.date = AS_OF) -> Path:
    """Part ``part`` of the date: the file the manifest lists, else the one file of that number."""
    manifest = read_manifest(store, as_of)
    if manifest is not None and part < len(manifest["files"]):
        return Path(store.root) / manifest["files"][part]["path"]
    folder = Path(store.layout.dossier_partition(SCHEMA_VERSION, as_of.isoformat()))
    (found,) = sorted(folder.glob(f"part-{part:04d}-*.parquet"))
    return found


def listed_parts(store: Store, as_of: dt.date = AS_OF) -> list[str]:
    """The manifest's files, each checked to be named ``part-NNNN-<attempt>.parquet``."""
    paths = [entry["path"] for entry in read_manifest(store, as_of)["files"]]
    for number, path in enumerate(paths):
        assert re.fullmatch(
            rf"dossiers/schema={SCHEMA_VERSION}/as_of={as_of.isoformat()}/part-{number:04d}-[0-9a-f]{{12}}\.parquet",
            path,
        ), path
    return paths


def catalog(engine: Engine) -> list[dict[str, Any]]:
    """The catalog rows, ordered by feed_seq, as dicts of every column."""
    with session_scope(engine) as session:
        rows = session.scalars(select(DossierVersion).order_by(DossierVersion.feed_seq)).all()
        return [{c.key: getattr(row, c.key) for c in DossierVersion.__table__.columns} for row in rows]


def run_publish(
    engine: Engine,
    store: Store,
    frames: Iterable[pd.DataFrame],
    *,
    now: dt.datetime = NOW,
    as_of: dt.date = AS_OF,
    model_version: str = MODEL,
) -> dict[str, Any]:
    """One publish in its own transaction, as the pipeline runs it."""
    with session_scope(engine) as session:
        return publish(session, store, as_of=as_of, scored=frames, model_version=model_version, now=now)


@pytest.fixture
def store(tmp_path: Path) -> Store:
    return Store(str(tmp_path / "store"))


@pytest.fixture
def sqlite_engine(tmp_path: Path) -> Iterator[Engine]:
    """One SQLite warehouse, for checks that do not depend on the backend."""
    engine = make_engine(f"sqlite:///{tmp_path / 'one.db'}")
    upgrade(engine)
    yield engine
    engine.dispose()


# --- publish --------------------------------------------------------------------------------------


def test_publish_writes_parts_manifest_and_catalog(warehouse_engine: Engine, store: Store) -> None:
    seed(warehouse_engine)
    with_utility = ("accounting", "tax", "utility")
    with session_scope(warehouse_engine) as session:
        give_consent(session, "C-1", "SME-000001")
        give_consent(session, "C-2", "SME-000002", recipients=("harbor",))
        give_consent(session, "C-3", "SME-000003", sources=with_utility, recipients=("northwind", "harbor"))
    frames = [
        scored(["SME-000004", "SME-000001"]),
        scored(["SME-000003", "SME-000002"], sources={"SME-000003": with_utility}),
    ]

    summary = run_publish(warehouse_engine, store, frames)

    parts = listed_parts(store)
    assert len({path.rsplit("-", 1)[1] for path in parts}) == 1  # one attempt wrote both
    assert summary == {
        "as_of": "2026-11-01",
        "schema_version": 3,
        "model_version": MODEL,
        "published_at": "2026-11-02T09:30:00+00:00",
        "rows": 3,
        "new_or_changed": 3,
        "unchanged": 0,
        "kept": 0,
        "current": 3,
        "unpublished": 0,
        "withheld_no_consent": {"count": 1, "examples": ["SME-000004:2026-11-01:v3:accounting+tax@24m"]},
        "files": parts,
        "manifest": "manifests/dossiers/schema=3/as_of=2026-11-01.json",
        "grades": {"A": 1, "B": 1, "C": 1},
    }
    assert json.loads(json.dumps(summary)) == summary
    assert file_rows(part_path(store, 0)) == [expected_row("SME-000001", published_at=NOW)]
    assert file_rows(part_path(store, 1)) == [
        expected_row("SME-000002", published_at=NOW),
        expected_row("SME-000003", published_at=NOW, sources=with_utility),
    ]
    root = Path(store.root)
    assert read_manifest(store, AS_OF) == {
        "dataset": "dossiers",
        "schema_version": 3,
        "model_version": MODEL,
        "as_of": "2026-11-01",
        "published_at": "2026-11-02T09:30:00+00:00",
        "rows": 3,
        "files": [
            {
                "path": parts[0],
                "rows": 1,
                "sha256": hashlib.sha256((root / parts[0]).read_bytes()).hexdigest(),
            },
            {
                "path": parts[1],
                "rows": 2,
                "sha256": hashlib.sha256((root / parts[1]).read_bytes()).hexdigest(),
            },
        ],
    }

    with session_scope(warehouse_engine) as session:
        publish_row = session.scalars(select(Publish)).one()
        assert (
            publish_row.as_of_date,
            publish_row.schema_version,
            publish_row.model_version,
            publish_row.manifest_path,
            publish_row.files,
            publish_row.rows,
            publish_row.published_at,
        ) == (AS_OF, SCHEMA_VERSION, MODEL, summary["manifest"], 2, 3, NOW)
        publish_id = publish_row.id
    hashes = content_sha256(pq.read_table(part_path(store, 0))) + content_sha256(
        pq.read_table(part_path(store, 1))
    )
    keys = (
        content_hashes(pq.read_table(part_path(store, 0)))[1]
        + content_hashes(pq.read_table(part_path(store, 1)))[1]
    )
    rows = catalog(warehouse_engine)
    assert [{k: v for k, v in row.items() if k != "id"} for row in rows] == [
        {
            "dossier_id": "SME-000001:2026-11-01:v3:accounting+tax@24m",
            "sme_id": "SME-000001",
            "as_of_date": AS_OF,
            "schema_version": 3,
            "model_version": MODEL,
            "sources_used": ["accounting", "tax"],
            "scope": "accounting+tax@24m",
            "history_months": 24,
            "publish_id": publish_id,
            "file_path": parts[0],
            "content_sha256": hashes[0],
            "content_key": keys[0],
            "current_through": AS_OF,
            "grade": "A",
            "pd_12m": 0.011,
            "feed_seq": 1,
            "published_at": NOW,
        },
        {
            "dossier_id": "SME-000002:2026-11-01:v3:accounting+tax@24m",
            "sme_id": "SME-000002",
            "as_of_date": AS_OF,
            "schema_version": 3,
            "model_version": MODEL,
            "sources_used": ["accounting", "tax"],
            "scope": "accounting+tax@24m",
            "history_months": 24,
            "publish_id": publish_id,
            "file_path": parts[1],
            "content_sha256": hashes[1],
            "content_key": keys[1],
            "current_through": AS_OF,
            "grade": "B",
            "pd_12m": 0.022,
            "feed_seq": 2,
            "published_at": NOW,
        },
        {
            "dossier_id": "SME-000003:2026-11-01:v3:accounting+tax+utility@24m",
            "sme_id": "SME-000003",
            "as_of_date": AS_OF,
            "schema_version": 3,
            "model_version": MODEL,
            "sources_used": ["accounting", "tax", "utility"],
            "scope": "accounting+tax+utility@24m",
            "history_months": 24,
            "publish_id": publish_id,
            "file_path": parts[1],
            "content_sha256": hashes[2],
            "content_key": keys[2],
            "current_through": AS_OF,
            "grade": "C",
            "pd_12m": 0.033,
            "feed_seq": 3,
            "published_at": NOW,
        },
    ]
    assert len(set(hashes)) == 3
    assert len(set(keys) | set(hashes)) == 6


def test_parquet_metadata_describes_every_column(sqlite_engine: Engine, store: Store) -> None:
    seed(sqlite_engine)
    with session_scope(sqlite_engine) as session:
        give_consent(session, "C-1", "SME-000001")
    run_publish(sqlite_engine, store, [scored(["SME-000001"])])

    schema = pq.read_schema(part_path(store, 0))
    assert schema.names == [c.name for c in ALL_COLUMNS]
    assert {f.name: f.metadata[b"description"].decode() for f in schema} == {
        c.name: c.description for c in ALL_COLUMNS
    }
    assert {f.name: (f.type, f.nullable) for f in schema} == {
        c.name: (parquet_type(c.type), c.nullable) for c in ALL_COLUMNS
    }
    assert schema.metadata == {
        b"dossier_schema_version": b"3",
        b"model_version": MODEL.encode(),
        b"grain": b"One row per SME per as-of date.",
    }


def test_dataset_folder_reads_as_is_with_pandas_duckdb_and_polars(
    sqlite_engine: Engine, store: Store
) -> None:
    seed(sqlite_engine)
    with session_scope(sqlite_engine) as session:
        for n in (1, 2, 3):
            give_consent(session, f"C-{n}", f"SME-00000{n}")
    run_publish(sqlite_engine, store, [scored(["SME-000001"]), scored(["SME-000002", "SME-000003"])])
    later = dt.date(2026, 12, 1)
    run_publish(
        sqlite_engine,
        store,
        [scored(["SME-000001"]), scored(["SME-000002"], bump=0.001)],
        as_of=later,
        now=NOW + dt.timedelta(days=30),
    )
    folder = store.layout.dossier_root
    # SME-000001 did not change: it keeps its version of November, in November's partition.
    expected = [
        ("SME-000001", "2026-11-01", 0.011),
        ("SME-000002", "2026-11-01", 0.022),
        ("SME-000002", "2026-12-01", 0.023),
        ("SME-000003", "2026-11-01", 0.033),
    ]

    frame = pd.read_parquet(folder).sort_values(["sme_id", "as_of_date"])
    assert list(zip(frame["sme_id"], frame["as_of"].astype(str), frame["pd_12m"], strict=True)) == expected
    assert set(frame["schema"].astype(str)) == {str(SCHEMA_VERSION)}

    rows = duckdb.sql(
        f"SELECT sme_id, CAST(as_of AS VARCHAR), pd_12m, \"schema\" FROM read_parquet('{folder}/**/*.parquet', "
        "hive_partitioning=true) ORDER BY sme_id, as_of"
    ).fetchall()
    assert rows == [(*row, SCHEMA_VERSION) for row in expected]

    lazy = pl.scan_parquet(f"{folder}/**/*.parquet", hive_partitioning=True)
    polars_rows = (
        lazy.select("sme_id", pl.col("as_of").cast(pl.String), "pd_12m").sort("sme_id", "as_of").collect()
    )
    assert polars_rows.rows() == expected


def test_crash_before_the_manifest_leaves_the_partition_unread(
    warehouse_engine: Engine, store: Store
) -> None:
    seed(warehouse_engine)
    with session_scope(warehouse_engine) as session:
        give_consent(session, "C-1", "SME-000001")
        give_consent(session, "C-2", "SME-000002")

    def dies_after_first_shard() -> Iterator[pd.DataFrame]:
        yield scored(["SME-000001"])
        raise RuntimeError("evaluation of shard 1 died")

    with pytest.raises(RuntimeError, match="shard 1 died"):
        run_publish(warehouse_engine, store, dies_after_first_shard())
    assert part_path(store, 0).exists()
    assert read_manifest(store, AS_OF) is None
    assert read_published(store, AS_OF).empty
    assert read_published(store).empty
    assert catalog(warehouse_engine) == []

    frames = [scored(["SME-000001"]), scored(["SME-000002"])]
    run_publish(warehouse_engine, store, frames)
    published = read_published(store, AS_OF)
    assert published["sme_id"].tolist() == ["SME-000001", "SME-000002"]

    # A re-publish that dies half way leaves the previous version readable, catalog and manifest
    # agreeing; the run to the end removes what the dead attempt left.
    before, listed = catalog(warehouse_engine), listed_parts(store)
    previous = read_published(store, AS_OF)
    changed = [scored(["SME-000001"], bump=0.01), scored(["SME-000002"])]

    def dies_again() -> Iterator[pd.DataFrame]:
        yield changed[0]
        raise RuntimeError("evaluation of shard 1 died")

    with pytest.raises(RuntimeError, match="shard 1 died"):
        run_publish(warehouse_engine, store, dies_again(), now=NOW + dt.timedelta(hours=1))
    assert read_published(store, AS_OF)["sme_id"].tolist() == ["SME-000001", "SME-000002"]
    assert (catalog(warehouse_engine), listed_parts(store)) == (before, listed)
    folder = Path(store.layout.dossier_partition(SCHEMA_VERSION, AS_OF.isoformat()))
    assert len(list(folder.glob("*.parquet"))) == 3  # the orphan of the dead attempt
    run_publish(warehouse_engine, store, changed, now=NOW + dt.timedelta(hours=2))
    now_published = read_published(store, AS_OF)
    assert now_published["pd_12m"].iloc[0] != previous["pd_12m"].iloc[0]
    assert now_published["pd_12m"].iloc[1] == previous["pd_12m"].iloc[1]
    assert sorted(folder.glob("*.parquet")) == sorted(Path(store.root) / p for p in listed_parts(store))


def test_read_published_trusts_only_the_files_its_manifest_lists(sqlite_engine: Engine, store: Store) -> None:
    seed(sqlite_engine)
    with session_scope(sqlite_engine) as session:
        give_consent(session, "C-1", "SME-000001")
        give_consent(session, "C-2", "SME-000002")
    run_publish(sqlite_engine, store, [scored(["SME-000001"]), scored(["SME-000002"])])
    files = pa.concat_tables([pq.read_table(part_path(store, 0)), pq.read_table(part_path(store, 1))])
    declared = files.to_pandas()
    pd.testing.assert_frame_equal(read_published(store, AS_OF), declared)
    pd.testing.assert_frame_equal(read_published(store), declared)

    # A part no manifest lists (what a killed publish leaves) is not read.
    extra = part_path(store, 0).with_name("part-0007-0123456789ab.parquet")
    shutil.copy(part_path(store, 0), extra)
    pd.testing.assert_frame_equal(read_published(store, AS_OF), declared)
    extra.unlink()
    # A part the manifest lists that is missing hides the partition.
    missing = part_path(store, 1)
    kept = missing.read_bytes()
    missing.unlink()
    assert read_published(store, AS_OF).empty
    missing.write_bytes(kept)

    part_path(store, 1).write_bytes(part_path(store, 0).read_bytes())
    with pytest.raises(
        DossierStoreError, match=r"part-0001-[0-9a-f]+\.parquet: sha256 .* differs from its manifest"
    ):
        read_published(store, AS_OF)


@pytest.mark.parametrize(
    ("case", "terms"),
    [
        ("revoked", {"revoke": True}),
        ("expired", {"expires_at": NOW - dt.timedelta(days=1)}),
        ("not yet granted", {"granted_at": NOW + dt.timedelta(days=1)}),
        ("covers only some sources", {"sources": ("accounting",)}),
        ("allows a shorter history window", {"history_months": 12}),
    ],
)
def test_dossiers_without_a_consent_covering_a_lender_and_all_sources_are_withheld(
    warehouse_engine: Engine, store: Store, case: str, terms: dict[str, Any]
) -> None:
    seed(warehouse_engine)
    terms = dict(terms)
    revoke = terms.pop("revoke", False)
    with session_scope(warehouse_engine) as session:
        give_consent(session, "C-1", "SME-000001")
        give_consent(
            session,
            "C-2",
            "SME-000002",
            granted_at=terms.pop("granted_at", NOW - dt.timedelta(days=400)),
            **terms,
        )
        if revoke:
            consent.revoke(session, "C-2", at=NOW - dt.timedelta(hours=1))

    summary = run_publish(warehouse_engine, store, [scored(["SME-000001", "SME-000002"])])

    withheld = ["SME-000002:2026-11-01:v3:accounting+tax@24m"]
    assert summary["withheld_no_consent"] == {"count": 1, "examples": withheld}, case
    assert file_rows(part_path(store, 0)) == [expected_row("SME-000001", published_at=NOW)]
    assert [row["sme_id"] for row in catalog(warehouse_engine)] == ["SME-000001"]


def test_republishing_the_same_content_is_idempotent(warehouse_engine: Engine, store: Store) -> None:
    seed(warehouse_engine)
    with session_scope(warehouse_engine) as session:
        for n in (1, 2, 3):
            give_consent(session, f"C-{n}", f"SME-00000{n}")
    frames = [scored(["SME-000001", "SME-000002"]), scored(["SME-000003"])]
    first = run_publish(warehouse_engine, store, frames)
    files = {p: p.read_bytes() for p in Path(store.root).rglob("*") if p.is_file()}
    catalog_before = catalog(warehouse_engine)

    again = run_publish(
        warehouse_engine,
        store,
        [scored(["SME-000002", "SME-000001"]), scored(["SME-000003"])],
        now=NOW + dt.timedelta(days=1),
    )

    assert {p: p.read_bytes() for p in Path(store.root).rglob("*") if p.is_file()} == files
    assert catalog(warehouse_engine) == catalog_before
    assert again == {**first, "new_or_changed": 0, "unchanged": 3}
    with session_scope(warehouse_engine) as session:
        assert session.scalars(select(Publish.published_at)).all() == [NOW]


def test_changed_content_takes_the_next_feed_seq(warehouse_engine: Engine, store: Store) -> None:
    seed(warehouse_engine)
    with session_scope(warehouse_engine) as session:
        for n in (1, 2):
            give_consent(session, f"C-{n}", f"SME-00000{n}")
    run_publish(warehouse_engine, store, [scored(["SME-000001", "SME-000002"])])
    before = {row["sme_id"]: row for row in catalog(warehouse_engine)}
    later = NOW + dt.timedelta(days=1)

    changed = pd.concat([scored(["SME-000001"], bump=0.004), scored(["SME-000002"])], ignore_index=True)
    summary = run_publish(warehouse_engine, store, [changed], now=later)

    assert (summary["new_or_changed"], summary["unchanged"], summary["published_at"]) == (
        1,
        1,
        later.isoformat(),
    )
    assert file_rows(part_path(store, 0)) == [
        expected_row("SME-000001", published_at=later, bump=0.004),
        expected_row("SME-000002", published_at=NOW),
    ]
    after = {row["sme_id"]: row for row in catalog(warehouse_engine)}
    # The unchanged version keeps its seq and time; it moved with its part to the part's new file.
    new_file = listed_parts(store)[0]
    assert after["SME-000002"] == {**before["SME-000002"], "file_path": new_file}
    assert after["SME-000001"] == {
        **before["SME-000001"],
        "file_path": new_file,
        "feed_seq": 3,
        "published_at": later,
        "pd_12m": 0.011 + 0.004,
        "content_sha256": content_sha256(pq.read_table(part_path(store, 0)))[0],
        "content_key": content_hashes(pq.read_table(part_path(store, 0)))[1][0],
    }
    assert after["SME-000001"]["content_sha256"] != before["SME-000001"]["content_sha256"]


def test_fewer_frames_remove_stale_parts_and_unpublish_missing_dossiers(
    warehouse_engine: Engine, store: Store
) -> None:
    seed(warehouse_engine)
    with session_scope(warehouse_engine) as session:
        for n in (1, 2, 3):
            give_consent(session, f"C-{n}", f"SME-00000{n}")
    run_publish(
        warehouse_engine, store, [scored(["SME-000001"]), scored(["SME-000002"]), scored(["SME-000003"])]
    )
    with session_scope(warehouse_engine) as session:
        consent.revoke(session, "C-3", at=NOW + dt.timedelta(minutes=5))

    later = NOW + dt.timedelta(hours=1)
    summary = run_publish(
        warehouse_engine, store, [scored(["SME-000001", "SME-000003"]), scored(["SME-000002"])], now=later
    )

    assert summary["unpublished"] == 1
    assert summary["withheld_no_consent"] == {
        "count": 1,
        "examples": ["SME-000003:2026-11-01:v3:accounting+tax@24m"],
    }
    parts = listed_parts(store)
    assert sorted(p.name for p in part_path(store, 0).parent.iterdir()) == sorted(
        p.rsplit("/", 1)[1] for p in parts
    )
    assert read_published(store, AS_OF)["sme_id"].tolist() == ["SME-000001", "SME-000002"]
    by_sme = {row["sme_id"]: (row["file_path"], row["feed_seq"]) for row in catalog(warehouse_engine)}
    assert by_sme == {
        "SME-000001": (parts[0], 1),
        "SME-000002": (parts[1], 2),
        "SME-000003": ("", 3),
    }

    # Consent given again: the same content is published anew, so lenders past seq 3 receive it.
    with session_scope(warehouse_engine) as session:
        give_consent(session, "C-3b", "SME-000003", granted_at=later)
    again = NOW + dt.timedelta(hours=2)
    run_publish(
        warehouse_engine, store, [scored(["SME-000001", "SME-000003"]), scored(["SME-000002"])], now=again
    )
    row = next(r for r in catalog(warehouse_engine) if r["sme_id"] == "SME-000003")
    assert (row["file_path"], row["feed_seq"], row["published_at"]) == (listed_parts(store)[0], 4, again)


def test_empty_frames_write_empty_parts(sqlite_engine: Engine, store: Store) -> None:
    seed(sqlite_engine)
    summary = run_publish(sqlite_engine, store, [pd.DataFrame(), scored(["SME-000001"])])
    assert (summary["rows"], summary["withheld_no_consent"]["count"]) == (0, 1)
    assert [entry["rows"] for entry in read_manifest(store, AS_OF)["files"]] == [0, 0]
    assert pq.read_schema(part_path(store, 0)).metadata == build_schema(MODEL).metadata
    assert read_published(store, AS_OF).columns.tolist() == [c.name for c in ALL_COLUMNS]


def _without(column: str) -> list[pd.DataFrame]:
    return [scored(["SME-000001"]).drop(columns=column)]


def _with(sme_id: str, **values: Any) -> list[pd.DataFrame]:
    rows = [scored_row(s) for s in ("SME-000001", "SME-000002")]
    for row in rows:
        if row["sme_id"] == sme_id:
            row.update(values)
    return [pd.DataFrame(rows)]


@pytest.mark.parametrize(
    ("frames", "message"),
    [
        (_without("grade"), r"scored frame 0 \(part-0000\): missing columns \['grade'\]"),
        ([scored(["SME-000001", "SME-000009"])], r"SMEs not in the smes table: SME-000009"),
        ([scored(["SME-000001", "SME-000001"])], r"SMEs appear more than once in one scope: SME-000001"),
        (
            [scored(["SME-000001"]), scored(["SME-000002", "SME-000001"])],
            r"scored frame 1 \(part-0001\): SMEs already in an earlier frame: SME-000001",
        ),
        (_with("SME-000002", pd_12m=None), r"field pd_12m is null for SMEs SME-000002"),
        (_with("SME-000002", sources_used=[]), r"field sources_used is empty for SMEs SME-000002"),
        (
            _with("SME-000001", sources_used=["accounting", "bank"]),
            r"field sources_used names unknown sources bank for SMEs SME-000001",
        ),
        (_with("SME-000002", score="high"), r"scored frame 0 \(part-0000\): .*score"),
    ],
)
def test_bad_scored_frames_fail_naming_frame_sme_and_field(
    sqlite_engine: Engine, store: Store, frames: list[pd.DataFrame], message: str
) -> None:
    seed(sqlite_engine)
    with session_scope(sqlite_engine) as session:
        give_consent(session, "C-1", "SME-000001")
        give_consent(session, "C-2", "SME-000002")
    with pytest.raises(ValueError, match=message):
        run_publish(sqlite_engine, store, frames)
    assert catalog(sqlite_engine) == []
    assert read_manifest(store, AS_OF) is None


def test_content_hash_ignores_publish_time_and_sees_every_value() -> None:
    schema = build_schema(MODEL)
    base = expected_row("SME-000001", published_at=NOW)

    def digest(**changes: Any) -> str:
        return content_sha256(pa.Table.from_pylist([{**base, **changes}], schema=schema))[0]

    original = digest()
    assert digest(published_at=NOW + dt.timedelta(days=3)) == original
    assert digest(pd_12m=math.nextafter(base["pd_12m"], 1.0)) != original
    assert digest(revenue_12m=None) != original
    assert digest(reason_codes=[]) != digest(reason_codes=[""])
    assert digest(reason_codes=["R01VAT_LATE"]) != original
    assert digest(sme_name="Acme", region="BakeryNorth") != digest(sme_name="AcmeBakery", region="North")
    assert digest(model_version="logit-2026.12") != original
    assert len({digest(), digest(founded_year=None), digest(founded_year=2012)}) == 3
