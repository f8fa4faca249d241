"""A publish killed with SIGKILL leaves the previous version of its date readable and complete.

A real child process publishes a changed version of a date that is already published, and is
killed with SIGKILL at a chosen point: after it wrote its first new part, and after it committed the
catalog but before it replaced the manifest. Each time the previous version must still be readable
from the store, every file the catalog and the manifest name must exist, and the retry (the same
scored frames, in this process) must finish the publish without adding a duplicate version.
The child stops itself at the chosen point (it wraps the store's write calls, in the child only)
and waits there to be killed, so the kill lands exactly where the test says.
"""

from __future__ import annotations

import datetime as dt
import os
import signal
import subprocess
import sys
import textwrap
import time
from collections import Counter
from pathlib import Path

import pytest
from sqlalchemy import Engine
from test_dossier_store import (
    AS_OF,
    NOW,
    catalog,
    give_consent,
    listed_parts,
    run_publish,
    scored,
    seed,
)

from warehouse.db import make_engine, session_scope
from warehouse.dossier_schema import SCHEMA_VERSION
from warehouse.dossier_store import read_manifest, read_published
from warehouse.storage import Store

HERE = Path(__file__).resolve().parent

CHILD = textwrap.dedent(
    """
    import sys, time, datetime as dt
    sys.path.insert(0, sys.argv[1])
    from pathlib import Path
    from test_dossier_store import NOW, run_publish, scored
    from warehouse.db import make_engine
    from warehouse.storage import Store

    url, root, point, marker = sys.argv[2:6]
    real_bytes, real_json = Store.write_bytes, Store.write_json

    def stop_here():
        Path(marker).write_text("ready")
        time.sleep(600)  # killed here

    def write_bytes(self, path, data):
        real_bytes(self, path, data)
        if point == "after-first-part" and "/dossiers/" in path:
            stop_here()

    def write_json(self, path, payload):
        if point == "before-manifest" and "/manifests/" in path:
            stop_here()
        real_json(self, path, payload)

    Store.write_bytes, Store.write_json = write_bytes, write_json
    frames = [scored(["SME-000001", "SME-000002"], bump=0.01), scored(["SME-000003"], bump=0.01)]
    run_publish(make_engine(url), Store(root), frames, now=NOW + dt.timedelta(hours=1))
    print("publish finished: the kill point was never reached", file=sys.stderr)
    sys.exit(3)
    """
)


def _files_exist(store: Store, engine: Engine) -> None:
    """Every file the manifest lists and every file a published catalog row names exists."""
    root = Path(store.root)
    for path in listed_parts(store):
        assert (root / path).is_file(), path
    for row in catalog(engine):
        if row["file_path"]:
            assert (root / row["file_path"]).is_file(), row


@pytest.mark.parametrize("point", ["after-first-part", "before-manifest"])
def test_a_publish_killed_midway_leaves_the_previous_version_and_the_retry_adds_no_duplicate(
    warehouse_url: str, tmp_path: Path, point: str
) -> None:
    engine = make_engine(warehouse_url)
    store = Store(str(tmp_path / "store"))
    seed(engine)
    with session_scope(engine) as session:
        for n in (1, 2, 3):
            give_consent(session, f"C-{n}", f"SME-00000{n}")
    run_publish(engine, store, [scored(["SME-000001", "SME-000002"]), scored(["SME-000003"])])
    previous = read_published(store, AS_OF)
    before = catalog(engine)
    assert len(previous) == 3

    marker = tmp_path / "ready"
    child = subprocess.Popen(
        [sys.executable, "-c", CHILD, str(HERE), warehouse_url, str(store.root), point, str(marker)],
        stderr=subprocess.PIPE,
    )
    deadline = time.monotonic() + 180
    while not marker.exists():
        assert child.poll() is None, child.stderr.read().decode()[-3000:]
        assert time.monotonic() < deadline, "the child never reached its kill point"
        time.sleep(0.05)
    os.kill(child.pid, signal.SIGKILL)
    assert child.wait(timeout=30) == -signal.SIGKILL
    child.stderr.close()

    # The previous version is readable and complete; catalog and manifest name files that exist.
    after_kill = catalog(engine)
    assert read_published(store, AS_OF).equals(previous)
    _files_exist(store, engine)
    if point == "after-first-part":
        assert after_kill == before  # nothing was committed
    else:
        # Committed: new versions of the three dossiers; the manifest still lists the old files.
        assert sorted(r["feed_seq"] for r in after_kill) == [4, 5, 6]
        assert {r["file_path"] for r in after_kill}.isdisjoint(listed_parts(store))
    folder = Path(store.layout.dossier_partition(SCHEMA_VERSION, AS_OF.isoformat()))
    assert len(list(folder.glob("*.parquet"))) > len(listed_parts(store))  # the dead attempt's parts

    # The retry finishes: the changed content once, no duplicate version, no orphaned part.
    frames = [scored(["SME-000001", "SME-000002"], bump=0.01), scored(["SME-000003"], bump=0.01)]
    summary = run_publish(engine, store, frames, now=NOW + dt.timedelta(hours=2))
    rows = catalog(engine)
    assert Counter(r["dossier_id"] for r in rows) == Counter(r["dossier_id"] for r in before)
    assert sorted(r["feed_seq"] for r in rows) == [4, 5, 6]
    assert summary["new_or_changed"] == (3 if point == "after-first-part" else 0)
    retried = read_published(store, AS_OF)
    assert len(retried) == 3
    assert not retried["pd_12m"].equals(previous["pd_12m"])
    assert sorted(folder.glob("*.parquet")) == sorted(Path(store.root) / p for p in listed_parts(store))
    assert {r["file_path"] for r in rows} == set(listed_parts(store))
    assert read_manifest(store, AS_OF)["rows"] == 3
    _files_exist(store, engine)
    engine.dispose()
