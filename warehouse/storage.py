"""The one module that owns the storage layout (raw landing, canonical tables, dossier store).

Everything is addressed relative to the store root (``DOSSIER_STORE_URL``): a local folder by
default, ``s3://bucket/prefix`` at scale, through fsspec. Writes are atomic: local files are written
to a temporary name and renamed; object stores publish an object only when its upload completes.

Layout under the root::

    raw/<source>/<sha256[:2]>/<sha256>.<ext>            immutable, content-addressed payloads
    canonical/<table>/as_of=<date>/shard=<NNNN>.parquet  one file per table per shard per as-of date
    canonical/<table>/as_of=<date>/_digests/shard=<NNNN>.parquet  its per-SME digests (warehouse.canonical_files)
    staging/<step>/as_of=<date>/shard=<NNNN>.parquet     validation outcomes and scores per shard
    dossiers/schema=<v>/as_of=<date>/part-<NNNN>-<attempt>.parquet  the published dossier dataset
    manifests/dossiers/schema=<v>/as_of=<date>.json      written last: files, row counts, sha256

>>> layout = Layout("/data")
>>> layout.canonical("vat_returns", "2026-11-01", 3)
'/data/canonical/vat_returns/as_of=2026-11-01/shard=0003.parquet'
"""

from __future__ import annotations

import hashlib
import io
import json
import posixpath
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import fsspec
import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from warehouse.errors import DossierError


class StoreError(DossierError, OSError):
    """A file in the store that cannot be read as what it should be (named in the message)."""


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def parquet_table(path: str, source: Any, **options: Any) -> pa.Table:
    """``pyarrow.parquet.read_table(source, **options)`` of the file at ``path`` (its handle or bytes);
    :class:`StoreError` naming the file when it is not readable Parquet."""
    try:
        return pq.read_table(source, **options)
    except (pa.ArrowInvalid, pa.ArrowTypeError, OSError) as error:
        raise StoreError(
            f"{path}: not a readable Parquet file ({error}); delete it and re-run the step that writes it"
        ) from error


@dataclass(frozen=True)
class Layout:
    """Paths of every kind of object, relative to ``root`` (no I/O)."""

    root: str

    def _join(self, *parts: str) -> str:
        return posixpath.join(self.root, *parts)

    def raw(self, source: str, sha256: str, extension: str) -> str:
        return self._join("raw", source, sha256[:2], f"{sha256}.{extension.lstrip('.')}")

    def canonical_dir(self, table: str, as_of: str) -> str:
        return self._join("canonical", table, f"as_of={as_of}")

    def canonical(self, table: str, as_of: str, shard: int) -> str:
        return posixpath.join(self.canonical_dir(table, as_of), f"shard={shard:04d}.parquet")

    def staging_dir(self, step: str, as_of: str) -> str:
        return self._join("staging", step, f"as_of={as_of}")

    def staging(self, step: str, as_of: str, shard: int) -> str:
        return posixpath.join(self.staging_dir(step, as_of), f"shard={shard:04d}.parquet")

    @property
    def dossier_root(self) -> str:
        return self._join("dossiers")

    def dossier_partition(self, schema_version: int, as_of: str) -> str:
        return self._join("dossiers", f"schema={schema_version}", f"as_of={as_of}")

    def dossier_part(self, schema_version: int, as_of: str, part: int, attempt: str = "") -> str:
        """Part ``part`` of a partition; ``attempt`` (the publish that wrote it) keeps the files of
        two publishes of one date apart, so a new one never overwrites what the manifest lists."""
        name = f"part-{part:04d}-{attempt}.parquet" if attempt else f"part-{part:04d}.parquet"
        return posixpath.join(self.dossier_partition(schema_version, as_of), name)

    def manifest(self, schema_version: int, as_of: str) -> str:
        return self._join("manifests", "dossiers", f"schema={schema_version}", f"as_of={as_of}.json")


class Store:
    """A filesystem rooted at the store URL, with atomic writes and the :class:`Layout`."""

    def __init__(self, url: str, storage_options: dict[str, Any] | None = None) -> None:
        self.fs, root = fsspec.core.url_to_fs(url, **(storage_options or {}))
        self.root = root.rstrip("/") or "/"
        self.layout = Layout(self.root)
        self.is_local = "file" in (
            self.fs.protocol if isinstance(self.fs.protocol, tuple) else (self.fs.protocol,)
        )

    @classmethod
    def from_settings(cls) -> Store:
        from dossier.settings import get_settings

        settings = get_settings()
        return cls(settings.store_url, settings.storage_options())

    @property
    def arrow_fs(self) -> pafs.FileSystem:
        return pafs.PyFileSystem(pafs.FSSpecHandler(self.fs))

    def exists(self, path: str) -> bool:
        return self.fs.exists(path)

    def read_bytes(self, path: str) -> bytes:
        return self.fs.cat_file(path)

    def _tmp_name(self, path: str) -> str:
        head, tail = posixpath.split(path)
        return posixpath.join(head, f".{tail}.{uuid.uuid4().hex}.tmp")

    def write_bytes(self, path: str, data: bytes) -> None:
        """Write ``data`` at ``path`` atomically, replacing what was there."""
        self.fs.makedirs(posixpath.dirname(path), exist_ok=True)
        if not self.is_local:
            self.fs.pipe_file(path, data)
            return
        tmp = self._tmp_name(path)
        with self.fs.open(tmp, "wb") as handle:
            handle.write(data)
        self.fs.mv(tmp, path)

    def write_json(self, path: str, payload: Any) -> None:
        self.write_bytes(path, json.dumps(payload, indent=2, sort_keys=True, default=str).encode())

    def read_json(self, path: str) -> Any:
        return json.loads(self.read_bytes(path))

    def put_immutable(self, path: str, data: bytes) -> bool:
        """Store content-addressed ``data`` once; returns False when it was already there."""
        if self.fs.exists(path):
            return False
        self.write_bytes(path, data)
        return True

    def write_table(self, path: str, table: pa.Table, **parquet_options: Any) -> str:
        """Write one Parquet file atomically and return the sha256 of its bytes."""
        buffer = io.BytesIO()
        pq.write_table(table, buffer, **parquet_options)
        data = buffer.getvalue()
        self.write_bytes(path, data)
        return sha256_hex(data)

    def read_table(self, path: str, columns: list[str] | None = None) -> pa.Table:
        """The Parquet file at ``path``; :class:`StoreError` naming the file when it is not readable Parquet."""
        with self.fs.open(path, "rb") as handle:
            return parquet_table(path, handle, columns=columns)

    def read_tables(self, paths: Iterable[str], columns: list[str] | None = None) -> list[pa.Table]:
        return [self.read_table(p, columns) for p in paths if self.fs.exists(p)]

    def list(self, directory: str, suffix: str = "") -> list[str]:
        """Files directly under ``directory`` (sorted), skipping temporary files."""
        if not self.fs.exists(directory):
            return []
        names = self.fs.ls(directory, detail=False)
        return sorted(n for n in names if n.endswith(suffix) and not posixpath.basename(n).startswith("."))

    def walk(self, directory: str, suffix: str = "") -> list[str]:
        """Every file under ``directory``, at any depth (sorted), skipping temporary files."""
        if not self.fs.exists(directory):
            return []
        names = self.fs.find(directory)
        return sorted(n for n in names if n.endswith(suffix) and not posixpath.basename(n).startswith("."))

    def delete(self, path: str) -> None:
        if self.fs.exists(path):
            self.fs.rm(path, recursive=True)
