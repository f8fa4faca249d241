"""
### Validate, evaluate and publish SME dossiers

Runs when every source's canonical tables are updated (the Assets written by `sme_ingest`), or by hand
with `{"as_of": "YYYY-MM-DD"}`.

* `resolve_as_of`: the as-of date (the `as_of` param, else the one carried by the triggering Asset events,
  else the run's logical date).
* `plan_shards`: the shards of the date's plan (recorded by `sme_ingest`; see its `plan_shards`).
* `validate_and_evaluate` (mapped over shards): reads the shard's canonical tables once, then
  * validates: checks each table against its Great Expectations suite with the compiled check plan (GX
    itself is not loaded here), attributes failing rows to their SME, quarantines those SMEs with the
    reasons and stages the outcome;
  * evaluates: computes features and the score (PD, grade, reason codes, limit, rate) of every SME that
    was pulled, passed validation and has no open quarantine, and stages the scores.

  Each part records its own `validate` and `evaluate` row in `stage_runs`. Both carry forward the SMEs
  whose inputs did not change since the previous date's run (same input fingerprint) under the same
  shard count; a date whose count differs from the previous date's is validated and scored in full.
  `{"full": true}` validates and scores every SME again.
* `publish`: writes the dossier Parquet partition, the manifest last, and the catalog; only SMEs whose
  consent covers the sources used and at least one lender are published. Updates the `dossiers` Asset.
* `build_data_docs`: confirms the date's validation with Great Expectations (once per table, over
  the failing rows and a sample) and renders it as Data Docs under `var/gx`.
* `send_webhooks`: after the publish, pushes the lenders' new feed events to their webhook endpoints (one
  send pass of the webhook worker), so a deployment without the web service still pushes.

**A run for some SMEs**: when every triggering Asset event carries `sme_ids` (a grant's ingest run), or the
conf names them, only the shards that hold them are validated, only those SMEs are evaluated (the other SMEs'
staged scores stay), consents are read at `consent_at`, and the publish gives new versions to those SMEs alone.
"""

from __future__ import annotations

import pendulum
from airflow.sdk import Param, dag, task

from dossier.assets import CANONICAL, DOSSIERS


@dag(
    dag_id="sme_dossier_publish",
    schedule=list(CANONICAL.values()),
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    max_active_runs=1,
    doc_md=__doc__,
    tags=["sme-dossier", "publish"],
    default_args={"retries": 2, "retry_delay": pendulum.duration(minutes=1)},
    params={
        "as_of": Param(None, type=["null", "string"], format="date", description="As-of date (YYYY-MM-DD)"),
        "sme_ids": Param(None, type=["null", "array"], description="Only these SMEs (a grant's run)"),
        "consent_at": Param(None, type=["null", "string"], description="Instant consents are read at"),
        "full": Param(False, type="boolean", description="Validate and score every SME again"),
    },
)
def sme_dossier_publish() -> None:
    @task
    def resolve_as_of(params: dict | None = None, triggering_asset_events=None, dag_run=None) -> str:
        from dossier.pipeline import parse_as_of

        explicit = (params or {}).get("as_of")
        if explicit:
            return parse_as_of(explicit).isoformat()
        carried = sorted(
            event.extra["as_of"]
            for events in (triggering_asset_events or {}).values()
            for event in events
            if event.extra and event.extra.get("as_of")
        )
        if carried:
            return carried[-1]
        moment = getattr(dag_run, "logical_date", None) or getattr(dag_run, "run_after", None)
        return parse_as_of(moment).isoformat()

    @task
    def resolve_scope(params: dict | None = None, triggering_asset_events=None) -> dict:
        from dossier.pipeline import carried_scope, run_scope

        explicit = (params or {}).get("sme_ids")
        if explicit:
            return run_scope(explicit, (params or {}).get("consent_at"))
        events = [event for found in (triggering_asset_events or {}).values() for event in found]
        return carried_scope(event.extra for event in events) if events else run_scope()

    @task
    def plan_shards(scope: dict, as_of: str) -> list[int]:
        from dossier.pipeline import parse_as_of, scoped_shards

        return scoped_shards(scope, parse_as_of(as_of))

    @task(map_index_template="{{ shard_label }}")
    def validate_and_evaluate(shard: int, as_of: str, scope: dict, params: dict | None = None) -> dict:
        import functools

        from airflow.sdk import get_current_context

        from dossier.pipeline import parse_as_of, scope_arguments
        from dossier.pipeline import validate_and_evaluate as run_shard
        from dossier.tasks import run_step

        get_current_context()["shard_label"] = f"shard {shard}"  # type: ignore[typeddict-unknown-key]
        full = bool((params or {}).get("full"))
        step = functools.partial(run_shard, **scope_arguments(scope), full=full)
        return run_step(f"validate and evaluate shard {shard} as of {as_of}", step, shard, parse_as_of(as_of))

    @task(outlets=[DOSSIERS])
    def publish(as_of: str, evaluations: list[dict], outlet_events=None) -> dict:
        from dossier.pipeline import parse_as_of
        from dossier.pipeline import publish as run_publish
        from dossier.tasks import run_step

        summary = run_step(f"publish as of {as_of}", run_publish, parse_as_of(as_of))
        outlet_events[DOSSIERS].extra = {"as_of": as_of, "rows": summary.get("rows", 0)}
        return summary

    @task
    def build_data_docs(as_of: str, published: dict) -> dict:
        from dossier.pipeline import build_data_docs as build
        from dossier.pipeline import parse_as_of
        from dossier.tasks import run_step

        return run_step(f"build_data_docs as of {as_of}", build, parse_as_of(as_of))

    @task
    def send_webhooks(as_of: str, published: dict) -> dict:
        from dossier.pipeline import push_webhooks
        from dossier.tasks import run_step

        return run_step(f"send webhooks after the publish as of {as_of}", push_webhooks)

    as_of = resolve_as_of()
    scope = resolve_scope()
    shards = plan_shards(scope, as_of)
    evaluations = validate_and_evaluate.partial(as_of=as_of, scope=scope).expand(shard=shards)
    published = publish(as_of, evaluations)
    build_data_docs(as_of, published)
    send_webhooks(as_of, published)


sme_dossier_publish()
