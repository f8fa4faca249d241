"""
### Ingest SME sources

Pulls every consenting SME's **accounting**, **tax** (VAT), **utility** and **survey** data from the
providers, one mapped task per source per shard of SMEs.

* `resolve_as_of`: the as-of date of the run (the `as_of` param, else the run's logical date, else today).
* `plan_shards`: the date's shard plan: decided by the date's first run from its SMEs with an active
  consent (`DOSSIER_SHARD_SIZE` per shard, at most `DOSSIER_MAX_SHARDS`, the previous date's count kept
  while it stays within 0.5-2 x the size; `DOSSIER_SHARD_COUNT` fixes it) and recorded in `shard_plans`;
  every later run of the date uses it. Its log says the count and why.
* `ingest_<source>` (mapped over shards): checks consent first (no request without an active consent covering
  the source), pulls with retries, lands each raw payload immutable and content-addressed, parses it into the
  canonical tables and writes one Parquet file per table per shard. An SME that fails is recorded in
  `ingestion_runs` and, for bad payloads, in `quarantine`; the others go on.
* `complete_<source>`: sums the shards and updates the source's Asset, which schedules `sme_dossier_publish`.

Re-running a date replaces the same files and rows (idempotent). Backfill a date by triggering with
`{"as_of": "YYYY-MM-DD"}` (a date range: one run per date).

**Incremental pulls**: an SME pulled successfully before is asked only for the months since its last pull
(plus the `DOSSIER_PULL_REVISION_MONTHS` latest ones) and keeps its earlier rows; a backfill of an earlier
date pulls that date's whole window and leaves the cursor where it is. `{"full": true}` pulls every SME's
whole consent window.

**A run for some SMEs** (what a grant triggers through the REST API): the conf
`{"sme_ids": ["SME-000042"], "as_of": "YYYY-MM-DD", "consent_at": "<ISO instant>"}` pulls only those SMEs
(in the shards that hold them), keeps the other SMEs' canonical rows, reads consents at `consent_at`, and
passes the scope on to `sme_dossier_publish` in the Asset events.
"""

from __future__ import annotations

import logging

import pendulum
from airflow.sdk import Param, dag, task

from dossier.assets import CANONICAL
from warehouse.canonical import SOURCES


@dag(
    dag_id="sme_ingest",
    schedule="@daily",
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    max_active_runs=1,
    doc_md=__doc__,
    tags=["sme-dossier", "ingest"],
    default_args={"retries": 2, "retry_delay": pendulum.duration(minutes=1)},
    params={
        "as_of": Param(None, type=["null", "string"], format="date", description="As-of date (YYYY-MM-DD)"),
        "sme_ids": Param(None, type=["null", "array"], description="Only these SMEs (a grant's run)"),
        "consent_at": Param(None, type=["null", "string"], description="Instant consents are read at"),
        "full": Param(False, type="boolean", description="Pull every SME's whole consent window"),
    },
)
def sme_ingest() -> None:
    @task
    def resolve_as_of(params: dict | None = None, dag_run=None) -> str:
        from dossier.pipeline import parse_as_of

        explicit = (params or {}).get("as_of")
        moment = getattr(dag_run, "logical_date", None) or getattr(dag_run, "run_after", None)
        return parse_as_of(explicit or moment).isoformat()

    @task
    def resolve_scope(params: dict | None = None) -> dict:
        from dossier.pipeline import run_scope

        return run_scope((params or {}).get("sme_ids"), (params or {}).get("consent_at"))

    @task
    def plan_shards(scope: dict, as_of: str) -> list[int]:
        from dossier.pipeline import parse_as_of, scoped_shards

        return scoped_shards(scope, parse_as_of(as_of))

    @task(map_index_template="{{ shard_label }}")
    def ingest(source: str, shard: int, as_of: str, scope: dict, params: dict | None = None) -> dict:
        import functools

        from airflow.sdk import get_current_context

        from dossier.pipeline import ingest as run_ingest
        from dossier.pipeline import parse_as_of, scope_arguments
        from dossier.tasks import run_step

        get_current_context()["shard_label"] = f"{source} shard {shard}"  # type: ignore[typeddict-unknown-key]
        full = bool((params or {}).get("full"))
        step = functools.partial(run_ingest, **scope_arguments(scope), full=full)
        return run_step(
            f"ingest {source} shard {shard} as of {as_of}", step, source, shard, parse_as_of(as_of)
        )

    @task
    def complete(source: str, as_of: str, scope: dict, results: list[dict], outlet_events=None) -> dict:
        from dossier.tasks import counts

        totals: dict[str, int] = {}
        # One slice read of the mapped results: iterating would probe past the last shard's XCom.
        for result in results[:]:
            for key, value in result.items():
                if isinstance(value, int) and not isinstance(value, bool) and key != "shard":
                    totals[key] = totals.get(key, 0) + value
        carried = {k: v for k, v in scope.items() if v is not None}
        outlet_events[CANONICAL[source]].extra = {"as_of": as_of, **carried, **totals}
        summary = {"source": source, "as_of": as_of, "shards": len(results), **totals}
        logging.getLogger("dossier.tasks").info("complete %s as of %s: %s", source, as_of, counts(summary))
        return summary

    as_of = resolve_as_of()
    scope = resolve_scope()
    shards = plan_shards(scope, as_of)
    for source in SOURCES:
        results = (
            ingest.override(task_id=f"ingest_{source}")
            .partial(source=source, as_of=as_of, scope=scope)
            .expand(shard=shards)
        )
        complete.override(task_id=f"complete_{source}", outlets=[CANONICAL[source]])(
            source=source, as_of=as_of, scope=scope, results=results
        )


sme_ingest()
