"""Population stability at every publish: bin counts staged per shard, PSI written with the publish.

The evaluate step counts its rows into the training reference's bins
(:func:`evaluation.monitoring.bin_counts`: the PD and every statement ratio) and stages the counts
as ``staging/psi/as_of=<d>/shard=<k>.json``; publish adds the shards' counts, computes the PSI of
each against the artifact's reference (:func:`evaluation.monitoring.stability`) and writes
``monitoring/psi/as_of=<d>.json`` in the store, which the demo summary shows.
"""

from __future__ import annotations

import datetime as dt
import posixpath
from typing import Any

import pandas as pd

from warehouse.storage import Store

PSI_STEP = "psi"


def _reference() -> tuple[str, dict[str, Any]]:
    from evaluation.statement_model import default_metadata

    meta = default_metadata()  # the JSON only: publishing never needs LightGBM
    return meta["version"], meta["reference"]["psi"]


def psi_path(store: Store, as_of: dt.date) -> str:
    """Where the PSI of ``as_of``'s publish is written."""
    return posixpath.join(store.root, "monitoring", "psi", f"as_of={as_of.isoformat()}.json")


def stage_counts(store: Store, as_of: dt.date, shard: int, scored: pd.DataFrame) -> str:
    """Count one shard's evaluated rows into the reference bins and stage the counts; returns the path."""
    from evaluation.monitoring import bin_counts

    _version, reference = _reference()
    path = posixpath.join(store.layout.staging_dir(PSI_STEP, as_of.isoformat()), f"shard={shard:04d}.json")
    store.write_json(path, {"rows": len(scored), "counts": bin_counts(scored, reference)})
    return path


def publish_stability(store: Store, as_of: dt.date) -> dict[str, Any]:
    """Add the staged counts of every shard, compute each PSI and write them; returns what was written."""
    from evaluation.monitoring import add_counts, stability, verdict

    version, reference = _reference()
    parts = [
        store.read_json(p)
        for p in store.list(store.layout.staging_dir(PSI_STEP, as_of.isoformat()), suffix=".json")
    ]
    counts = add_counts(part["counts"] for part in parts)
    psi = stability(counts, reference)
    result = {
        "as_of": as_of.isoformat(),
        "reference": version,
        "rows": sum(part["rows"] for part in parts),
        "psi": psi,
        "verdicts": {name: verdict(value) for name, value in psi.items()},
    }
    store.write_json(psi_path(store, as_of), result)
    return result


def read_stability(store: Store, as_of: dt.date) -> dict[str, Any] | None:
    """The PSI written by ``as_of``'s publish, or None."""
    path = psi_path(store, as_of)
    return store.read_json(path) if store.exists(path) else None


__all__ = ["PSI_STEP", "psi_path", "publish_stability", "read_stability", "stage_counts"]
