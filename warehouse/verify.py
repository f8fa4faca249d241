"""Check that what the store holds is still what was written: ``dossier verify``.

Two kinds of object carry their own proof of integrity:

* a **raw payload** is content-addressed: ``raw/<source>/<sha256[:2]>/<sha256>.<ext>`` must hold
  bytes whose sha256 is the one in its name, and every ``raw_payloads`` row must point at a file
  that exists;
* a **published dossier partition** has a manifest (``manifests/dossiers/schema=<v>/as_of=<date>.json``)
  listing each Parquet part with its sha256 and row count: every listed part must exist with those
  bytes and rows, and the partition folder must hold no part the manifest does not list.

:func:`verify_store` walks both and returns every :class:`Problem` found, each naming the path;
nothing is repaired here (a re-run of the date re-lands or re-publishes what is damaged).
"""

from __future__ import annotations

import io
import json
import posixpath
from collections.abc import Iterable
from dataclasses import dataclass, field

import pyarrow.parquet as pq
from sqlalchemy import select
from sqlalchemy.orm import Session

from warehouse.models import RawPayload
from warehouse.storage import Store, sha256_hex

PROBLEM_KINDS = {
    "raw_mismatch": "a raw payload whose bytes no longer hash to its content address",
    "raw_missing": "a raw payload an ingestion run recorded that is not in the store",
    "raw_misnamed": "a file under raw/ whose name is not a sha256 content address",
    "manifest_unreadable": "a dossier manifest that is not readable JSON in the manifest's shape",
    "dossier_missing": "a dossier part a manifest lists that is not in the store",
    "dossier_mismatch": "a dossier part whose bytes differ from its manifest's sha256",
    "dossier_rows": "a dossier part whose row count differs from its manifest's",
    "dossier_unlisted": "a dossier part its manifest does not list (left by an interrupted publish; "
    "the next publish of that date removes it)",
}
"""Every kind of problem :func:`verify_store` reports, with what it means."""


@dataclass(frozen=True)
class Problem:
    """One thing wrong in the store: its kind (:data:`PROBLEM_KINDS`), the path, and the detail."""

    kind: str
    path: str
    detail: str


@dataclass
class Verification:
    """What was checked and what was wrong; ``ok`` when nothing was."""

    raw_files: int = 0
    raw_rows: int = 0
    manifests: int = 0
    dossier_files: int = 0
    problems: list[Problem] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    def as_dict(self) -> dict[str, object]:
        return {
            "ok": self.ok,
            "raw_files": self.raw_files,
            "raw_rows": self.raw_rows,
            "manifests": self.manifests,
            "dossier_files": self.dossier_files,
            "problems": [problem.__dict__ for problem in self.problems],
        }


def _files_under(store: Store, directory: str) -> list[str]:
    """Every file below ``directory`` (recursively, sorted), skipping temporary dot-files."""
    if not store.exists(directory):
        return []
    return sorted(p for p in store.fs.find(directory) if not posixpath.basename(p).startswith("."))


def check_raw_file(store: Store, path: str) -> Problem | None:
    """The problem with one raw payload file, if any: its name must be the sha256 of its bytes."""
    address = posixpath.basename(path).split(".", 1)[0]
    if len(address) != 64 or any(c not in "0123456789abcdef" for c in address):
        return Problem("raw_misnamed", path, "the file name is not a sha256 content address")
    actual = sha256_hex(store.read_bytes(path))
    if actual != address:
        return Problem("raw_mismatch", path, f"bytes hash to {actual}, not to the address {address}")
    return None


def verify_raw(store: Store, session: Session, result: Verification) -> None:
    """Re-hash every raw payload under ``raw/`` and check every ``raw_payloads`` row has its file."""
    present = _files_under(store, posixpath.join(store.root, "raw"))
    result.raw_files = len(present)
    for path in present:
        problem = check_raw_file(store, path)
        if problem is not None:
            result.problems.append(problem)
    known = set(present)
    recorded = session.execute(select(RawPayload.path, RawPayload.sha256).distinct()).all()
    result.raw_rows = len(recorded)
    for path, sha256 in sorted(recorded):
        if path not in known and not store.exists(path):
            result.problems.append(
                Problem("raw_missing", path, f"recorded by an ingestion run with sha256 {sha256}")
            )


def _manifest_entries(manifest: object) -> list[dict[str, object]] | None:
    if not isinstance(manifest, dict) or not isinstance(manifest.get("files"), list):
        return None
    entries = manifest["files"]
    if not all(isinstance(e, dict) and {"path", "sha256", "rows"} <= e.keys() for e in entries):
        return None
    return entries


def verify_manifest(store: Store, manifest_path: str, result: Verification) -> None:
    """Check one dossier partition against its manifest (files present, sha256 and rows, nothing extra)."""
    try:
        manifest = json.loads(store.read_bytes(manifest_path))
    except ValueError as error:
        result.problems.append(Problem("manifest_unreadable", manifest_path, f"not JSON: {error}"))
        return
    entries = _manifest_entries(manifest)
    if entries is None:
        result.problems.append(
            Problem("manifest_unreadable", manifest_path, "expected files: [{path, sha256, rows}, ...]")
        )
        return
    listed = set()
    for entry in entries:
        path = posixpath.join(store.root, str(entry["path"]))
        listed.add(path)
        result.dossier_files += 1
        if not store.exists(path):
            result.problems.append(Problem("dossier_missing", path, f"listed in {manifest_path}"))
            continue
        data = store.read_bytes(path)
        if sha256_hex(data) != entry["sha256"]:
            result.problems.append(
                Problem(
                    "dossier_mismatch",
                    path,
                    f"bytes hash to {sha256_hex(data)}, the manifest {manifest_path} says {entry['sha256']}",
                )
            )
            continue
        rows = pq.ParquetFile(io.BytesIO(data)).metadata.num_rows
        if rows != entry["rows"]:
            result.problems.append(
                Problem(
                    "dossier_rows", path, f"{rows} rows, the manifest {manifest_path} says {entry['rows']}"
                )
            )
    for path in _partition_parts(store, listed):
        if path not in listed:
            result.problems.append(Problem("dossier_unlisted", path, f"not listed in {manifest_path}"))


def _partition_parts(store: Store, listed: Iterable[str]) -> list[str]:
    folders = {posixpath.dirname(p) for p in listed}
    return sorted(p for folder in folders for p in store.list(folder, suffix=".parquet"))


def verify_store(store: Store, session: Session) -> Verification:
    """Every raw payload and every published dossier part checked; see the module docstring."""
    result = Verification()
    verify_raw(store, session, result)
    manifests = [
        p
        for p in _files_under(store, posixpath.join(store.root, "manifests", "dossiers"))
        if p.endswith(".json")
    ]
    result.manifests = len(manifests)
    for manifest_path in manifests:
        verify_manifest(store, manifest_path, result)
    return result
