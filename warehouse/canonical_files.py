"""Canonical shard files and their per-SME digests: the one writer and the one reader.

Every canonical file (``canonical/<table>/as_of=<d>/shard=<NNNN>.parquet``) is written by
:func:`write_canonical`, which also writes its **digest sidecar**
(``canonical/<table>/as_of=<d>/_digests/shard=<NNNN>.parquet``): one row per SME with the number of
its rows and two 64-bit sums of their row hashes (:func:`sme_digests`; order-free, date-free: a
date is hashed as its value, never against an as-of day). The sidecar names the sha256 of the
file it describes, so a file rewritten by anything else (an erasure, a hand copy) is noticed and
its digests are computed from its rows instead: the digests read are always those of the file.

What reads a shard's canonical tables for the pipeline opens them with :class:`CanonicalShard`:
the digests of every SME first (from the sidecars), then the rows of only the SMEs it needs.
"""

from __future__ import annotations

import datetime as dt
import io
from collections.abc import Iterable
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from warehouse.canonical import TABLES
from warehouse.storage import Store, parquet_table, sha256_hex

HASH_KEYS = ("sme-dossier-fpA0", "sme-dossier-fpB1")
"""The two 16-byte hash keys of the digest lanes (``pandas.util.hash_pandas_object``)."""

DIGEST_COLUMNS = ("rows", "h0", "h1")
"""Per SME: its row count and the sums (mod 2**64) of its rows' hashes in each lane."""

FILE_SHA256 = b"canonical_sha256"
"""Sidecar schema metadata: the sha256 of the canonical file's bytes the digests describe."""

ROW_GROUP_ROWS = 8192
"""Rows per Parquet row group of a canonical file: its rows are sorted by SME, so a reader of a few
SMEs reads only the groups whose ``sme_id`` statistics hold them."""

_SCHEMA = pa.schema(
    [
        pa.field("sme_id", pa.string()),
        pa.field("rows", pa.int64()),
        pa.field("h0", pa.uint64()),
        pa.field("h1", pa.uint64()),
    ]
)


def digests_path(store: Store, table: str, as_of: dt.date, shard: int) -> str:
    """Where the digest sidecar of one canonical file lives (a folder datasets skip: ``_digests``)."""
    return f"{store.layout.canonical_dir(table, as_of.isoformat())}/_digests/shard={shard:04d}.parquet"


def instants(values: pd.Series) -> np.ndarray | None:
    """``values`` as naive UTC ``datetime64[ns]`` when the column holds dates or instants, else None."""
    if pd.api.types.is_datetime64_any_dtype(values.dtype):
        series = values.dt.tz_convert("UTC").dt.tz_localize(None) if values.dt.tz is not None else values
        return series.to_numpy(dtype="datetime64[ns]")
    if values.dtype == object:
        first = values.dropna()
        if len(first) and isinstance(first.iloc[0], dt.date):
            return pd.to_datetime(values, utc=True).dt.tz_localize(None).to_numpy(dtype="datetime64[ns]")
    return None


def hashable(frame: pd.DataFrame) -> pd.DataFrame:
    """``frame`` with its dates and instants as integers (nanoseconds, missing as the minimum)."""
    columns: dict[str, object] = {}
    for name in frame.columns:
        found = instants(frame[name])
        columns[name] = frame[name].to_numpy() if found is None else found.view(np.int64)
    return pd.DataFrame(columns)


def sme_digests(frame: pd.DataFrame) -> pd.DataFrame:
    """Per SME of ``frame`` (index ``sme_id``, sorted): :data:`DIGEST_COLUMNS` of its rows."""
    if frame.empty:
        empty = pd.DataFrame(
            {
                "rows": pd.Series(dtype=np.int64),
                "h0": pd.Series(dtype=np.uint64),
                "h1": pd.Series(dtype=np.uint64),
            }
        )
        empty.index = pd.Index([], name="sme_id", dtype=object)
        return empty
    codes, ids = pd.factorize(frame["sme_id"].astype(object), sort=True)
    rows = hashable(frame.reset_index(drop=True))
    columns: dict[str, np.ndarray] = {"rows": np.bincount(codes, minlength=len(ids)).astype(np.int64)}
    for lane, key in enumerate(HASH_KEYS):
        hashes = pd.util.hash_pandas_object(rows, index=False, hash_key=key).to_numpy(dtype=np.uint64)
        total = np.zeros(len(ids), dtype=np.uint64)
        with np.errstate(over="ignore"):
            np.add.at(total, codes, hashes)
        columns[f"h{lane}"] = total
    return pd.DataFrame(columns, index=pd.Index(np.asarray(ids, dtype=object), name="sme_id"))


def digest_columns(digests: dict[str, pd.DataFrame], sme_ids: Iterable[str]) -> pd.DataFrame:
    """Per SME of ``sme_ids`` (the index, sorted) and table of ``digests`` (table -> :func:`sme_digests`):
    ``<table>.rows``, ``<table>.h0``, ``<table>.h1`` (0 where the SME has no rows)."""
    index = pd.Index(sorted(set(sme_ids)), name="sme_id", dtype=object)
    columns: dict[str, np.ndarray] = {}
    for name in sorted(digests):
        found = digests[name].reindex(index)
        for column in DIGEST_COLUMNS:
            kind = np.int64 if column == "rows" else np.uint64
            columns[f"{name}.{column}"] = found[column].fillna(0).to_numpy().astype(kind)
    return pd.DataFrame(columns, index=index)


def write_canonical(store: Store, table: str, as_of: dt.date, shard: int, data: pa.Table) -> str:
    """Write one canonical shard file and its digest sidecar (digests of the rows as read back); its path."""
    path = store.layout.canonical(table, as_of.isoformat(), shard)
    sha256 = store.write_table(path, data, row_group_size=ROW_GROUP_ROWS)
    digests = sme_digests(data.to_pandas())
    sidecar = pa.Table.from_pandas(digests.reset_index(), schema=_SCHEMA, preserve_index=False)
    store.write_table(
        digests_path(store, table, as_of, shard), sidecar.replace_schema_metadata({FILE_SHA256: sha256})
    )
    return path


@dataclass
class _File:
    path: str
    data: bytes | None
    digests: pd.DataFrame
    frame: pd.DataFrame | None = None
    kept: tuple[frozenset[str] | None, pd.DataFrame] | None = None
    """With :attr:`CanonicalShard.keep_rows`: the SMEs of the last read (None: all) and its rows."""


@dataclass
class CanonicalShard:
    """Every canonical table of one shard and date: per-SME digests, then the rows wanted.

    A table without a file has no rows (an empty, correctly typed frame); a file whose sidecar is
    missing or describes other bytes is read whole once and digested from its rows.

    With ``keep_rows`` the rows each table's reads return are kept (all columns): a later read of
    SMEs already read is served from them, and only the SMEs not read yet are read from the file
    (the kept rows of a table then are ordered by SME, each SME's rows in file order). The steps
    of one task (validate, then evaluate) read each file once.
    """

    files: dict[str, _File] = field(default_factory=dict)
    from_sidecars: int = 0
    keep_rows: bool = False
    file_reads: int = 0
    """How many times a table's rows were read from its file (not from what was kept)."""

    @classmethod
    def open(cls, store: Store, as_of: dt.date, shard: int) -> CanonicalShard:
        opened = cls()
        for name in TABLES:
            path = store.layout.canonical(name, as_of.isoformat(), shard)
            if not store.exists(path):
                opened.files[name] = _File(path, None, sme_digests(TABLES[name].empty_frame()))
                continue
            data = store.read_bytes(path)
            sidecar = digests_path(store, name, as_of, shard)
            digests = None
            if store.exists(sidecar):
                stored = store.read_table(sidecar)
                if (stored.schema.metadata or {}).get(FILE_SHA256) == sha256_hex(data).encode():
                    digests = stored.to_pandas().set_index("sme_id")
                    digests.index = digests.index.astype(object)
                    opened.from_sidecars += 1
            if digests is None:
                frame = parquet_table(path, io.BytesIO(data)).to_pandas()
                opened.files[name] = _File(path, data, sme_digests(frame), frame)
            else:
                opened.files[name] = _File(path, data, digests)
        return opened

    def smes(self) -> list[str]:
        """Every SME with a row in any table, sorted."""
        found = set()
        for file in self.files.values():
            found.update(file.digests.index)
        return sorted(found)

    def digests(self, sme_ids: Iterable[str]) -> pd.DataFrame:
        """:func:`digest_columns` of ``sme_ids`` over every table of the shard."""
        return digest_columns({name: file.digests for name, file in self.files.items()}, sme_ids)

    def table(
        self,
        name: str,
        sme_ids: Iterable[str] | None = None,
        columns: list[str] | None = None,
        *,
        others: bool = False,
    ) -> pd.DataFrame:
        """One table's rows (of ``sme_ids`` only, when given; ``columns`` only, when given), in file
        order (rows kept from several reads: ordered by SME, each SME's rows in file order).

        With ``others`` the rows may include other SMEs' (a caller that selects its SMEs itself),
        so rows kept from an earlier read of more SMEs are handed over without a copy.
        """
        file = self.files[name]
        if file.data is None:
            frame = TABLES[name].empty_frame()
            return frame if columns is None else frame[columns]
        wanted = None if sme_ids is None else frozenset(sme_ids)
        if self.keep_rows and file.frame is None and file.kept is not None and wanted:
            self._keep_more(file, wanted)
        source = (None, file.frame) if file.frame is not None else file.kept
        if source is not None and (source[0] is None or (wanted is not None and wanted <= source[0])):
            held, frame = source
            if wanted is not None and not others and (held is None or len(wanted) < len(held)):
                frame = frame[frame["sme_id"].isin(wanted)].reset_index(drop=True)
            return frame if columns is None else frame[columns]
        if wanted is not None and not wanted:
            schema = pq.read_schema(io.BytesIO(file.data))
            empty = schema.empty_table().to_pandas()
            return empty if columns is None else empty[columns]
        self.file_reads += 1
        if wanted is None:
            frame = parquet_table(file.path, io.BytesIO(file.data), columns=columns).to_pandas()
        else:
            frame = _rows_of(file.path, file.data, sorted(wanted), columns).to_pandas()
        if self.keep_rows and columns is None:
            file.kept = (wanted, frame)
        return frame

    def _keep_more(self, file: _File, wanted: frozenset[str]) -> None:
        """Add to ``file``'s kept rows those of the SMEs of ``wanted`` it lacks (read from the file):
        the kept rows stay ordered by SME, each SME's rows in file order."""
        if file.kept is None or file.data is None or file.kept[0] is None or wanted <= file.kept[0]:
            return
        held, frame = file.kept
        missing = wanted - held
        self.file_reads += 1
        extra = _rows_of(file.path, file.data, sorted(missing), None).to_pandas()
        merged = pd.concat([frame, extra], ignore_index=True) if len(frame) else extra
        file.kept = (held | missing, merged.sort_values("sme_id", kind="stable", ignore_index=True))

    def frames(
        self, sme_ids: Iterable[str] | None = None, *, others: bool = False
    ) -> dict[str, pd.DataFrame]:
        """Every table's rows (of ``sme_ids`` only, when given; see :meth:`table` for ``others``), in file order."""
        wanted = None if sme_ids is None else sorted(set(sme_ids))
        return {name: self.table(name, wanted, others=others) for name in self.files}


def _rows_of(path: str, data: bytes, wanted: list[str], columns: list[str] | None) -> pa.Table:
    """The rows of ``wanted`` (sorted SME ids) in ``file``: its rows are sorted by SME in row groups
    of :data:`ROW_GROUP_ROWS`, so only the groups whose ``sme_id`` range holds one of them are read."""
    parquet_table(path, io.BytesIO(data), columns=[])  # an unreadable file fails naming it
    reader = pq.ParquetFile(io.BytesIO(data))
    field = reader.schema_arrow.get_field_index("sme_id")
    ids = np.asarray(wanted, dtype=object)
    groups = []
    for number in range(reader.metadata.num_row_groups):
        stats = reader.metadata.row_group(number).column(field).statistics
        if stats is None or not stats.has_min_max:
            groups.append(number)
            continue
        first = np.searchsorted(ids, stats.min, side="left")
        if first < len(ids) and ids[first] <= stats.max:
            groups.append(number)
    table = reader.read_row_groups(groups, columns=columns) if groups else reader.schema_arrow.empty_table()
    if columns is not None and not groups:
        table = table.select(columns)
    keep = pc.fill_null(pc.is_in(table.column("sme_id"), value_set=pa.array(wanted, pa.string())), False)
    return table.filter(keep)
