"""Benchmark-only DAG: one task mapped over ``items`` trivial items, so that what a mapped task
instance costs is Airflow's own overhead (queueing, the Celery hop, the task runner, the API calls).

Used by ``bench/airflow_overhead.py`` only; the project's DAGs live in ``dags/``.
"""

from __future__ import annotations

import pendulum
from airflow.sdk import Param, dag, task


@dag(
    dag_id="bench_airflow_overhead",
    schedule=None,
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    max_active_runs=1,
    params={"items": Param(16, type="integer", minimum=1)},
    tags=["bench"],
)
def bench_airflow_overhead():
    @task
    def items(params: dict | None = None) -> list[int]:
        return list(range(int((params or {})["items"])))

    @task
    def touch(item: int) -> int:
        return item

    touch.expand(item=items())


bench_airflow_overhead()
