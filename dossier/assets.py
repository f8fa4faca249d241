"""Assets that link the DAGs: each source's canonical tables, and the published dossier store.

Imported by the DAG files; declaring an Asset does no I/O.
"""

from __future__ import annotations

from airflow.sdk import Asset

from warehouse.canonical import SOURCES

CANONICAL = {
    source: Asset(name=f"canonical_{source}", uri=f"sme-dossier://canonical/{source}") for source in SOURCES
}
"""Updated when a source's canonical tables for an as-of date are complete (every shard ingested)."""

DOSSIERS = Asset(name="dossiers", uri="sme-dossier://dossiers")
"""Updated when a publish of the dossier store completes (its manifest is written)."""
