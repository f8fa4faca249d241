"""Airflow's per-task overhead on the Celery executor, and the shard size it implies.

Starts Airflow 3 as the distributed-run test does (api-server, scheduler, DAG processor and one
Celery worker as processes, metadata on the local PostgreSQL, broker on the local Redis; see
``dossier.airflow_cluster``), with the DAGs folder pointed at ``bench/airflow_overhead_dags/``: one
task mapped over N trivial items. Each run is triggered through the REST API; the task instances'
``queued_when``, ``start_date`` and ``end_date`` come from the REST API too.

Reported per N:

* ``queued_to_done_seconds``: per mapped task instance, end minus queued (mean, median, p90, max); with
  N tasks over ``concurrency`` worker slots this includes waiting for a slot;
* ``running_seconds``: per mapped task instance, end minus start (the task process's own life);
* ``slot_seconds_per_task``: the mapped phase (first queued to last done) times the worker
  concurrency over N: the worker time one trivial task costs, all of it overhead;
* ``run_wall_seconds`` and ``run_wall_seconds_per_task``: the DAG run's start to end, over N.

The shard size: with ``c`` = the core pipeline's seconds per SME (``core_seconds / smes`` of
``bench/results/core_pipeline.json``) and ``o`` the per-task overhead, a shard of ``s`` SMEs does
``s * c`` seconds of work, so the overhead is at most 5% of it when ``s >= o / (0.05 * c)``.

Run: ``python -m bench.airflow_overhead`` (a few minutes); writes ``bench/results/airflow_overhead.json``.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import math
import os
import platform
import statistics
import sys
import tempfile
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"
DAGS = HERE / "airflow_overhead_dags"
DAG_ID = "bench_airflow_overhead"
MAPPED_TASK = "touch"
OVERHEAD_SHARE = 0.05
POSTGRES = "postgresql+psycopg://postgres@127.0.0.1:5432/test"
REDIS_DB = 12
RUN_TIMEOUT = 900.0


def _time(value: str | None) -> dt.datetime | None:
    return dt.datetime.fromisoformat(value) if value else None


def _quantile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, math.ceil(q * len(ordered)) - 1))]


def _summary(values: list[float]) -> dict[str, float]:
    return {
        "mean": round(statistics.fmean(values), 3),
        "median": round(statistics.median(values), 3),
        "p90": round(_quantile(values, 0.9), 3),
        "max": round(max(values), 3),
    }


def task_instances(api: Any, base: str, run_id: str) -> list[dict[str, Any]]:
    """Every task instance of the run (mapped ones included), paging through the REST API."""
    found: list[dict[str, Any]] = []
    while True:
        reply = api.get(
            f"{base}/api/v2/dags/{DAG_ID}/dagRuns/{run_id}/taskInstances",
            params={"limit": 100, "offset": len(found)},
            timeout=30,
        )
        reply.raise_for_status()
        body = reply.json()
        found.extend(body["task_instances"])
        if not body["task_instances"] or len(found) >= body["total_entries"]:
            return found


def measure(
    dag_run: dict[str, Any], instances: list[dict[str, Any]], items: int, concurrency: int
) -> dict[str, Any]:
    """The per-task figures of one finished run (see the module docstring)."""
    mapped = [ti for ti in instances if ti["task_id"] == MAPPED_TASK]
    if len(mapped) != items or {ti["state"] for ti in mapped} != {"success"}:
        raise RuntimeError(
            f"{DAG_ID}: expected {items} successful {MAPPED_TASK} instances, got {len(mapped)}"
        )
    queued = [_time(ti["queued_when"]) for ti in mapped]
    started = [_time(ti["start_date"]) for ti in mapped]
    ended = [_time(ti["end_date"]) for ti in mapped]
    queued_to_done = [(e - q).total_seconds() for q, e in zip(queued, ended, strict=True)]
    queued_to_start = [(s - q).total_seconds() for q, s in zip(queued, started, strict=True)]
    running = [(e - s).total_seconds() for s, e in zip(started, ended, strict=True)]
    phase = (max(ended) - min(queued)).total_seconds()
    wall = (_time(dag_run["end_date"]) - _time(dag_run["start_date"])).total_seconds()
    return {
        "items": items,
        "dag_run_id": dag_run["dag_run_id"],
        "queued_to_done_seconds": _summary(queued_to_done),
        "queued_to_start_seconds": _summary(queued_to_start),
        "running_seconds": _summary(running),
        "mapped_phase_seconds": round(phase, 3),
        "slot_seconds_per_task": round(phase * concurrency / items, 3),
        # Little's law: tasks queued or running on average during the mapped phase.
        "mean_tasks_in_flight": round(sum(queued_to_done) / phase, 2),
        "run_wall_seconds": round(wall, 3),
        "run_wall_seconds_per_task": round(wall / items, 3),
    }


def run_once(api: Any, base: str, items: int, processes: Any) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Trigger one run for ``items`` items and wait for it; the finished run and its task instances."""
    from dossier.airflow_cluster import wait_for

    logical = dt.datetime.now(dt.UTC).isoformat()
    started = api.post(
        f"{base}/api/v2/dags/{DAG_ID}/dagRuns",
        json={"logical_date": logical, "conf": {"items": items}},
        timeout=30,
    )
    started.raise_for_status()
    run_id = started.json()["dag_run_id"]

    def finished() -> dict[str, Any] | None:
        run = api.get(f"{base}/api/v2/dags/{DAG_ID}/dagRuns/{run_id}", timeout=10).json()
        if run["state"] == "failed":
            raise RuntimeError(f"{DAG_ID} {run_id} failed:\n{processes.log('worker')[-3000:]}")
        return run if run["state"] == "success" else None

    run = wait_for(f"{DAG_ID} with {items} items", finished, processes, RUN_TIMEOUT, every=1.0)
    return run, task_instances(api, base, run_id)


def shard_smes(overhead_seconds: float, seconds_per_sme: float) -> int:
    """The smallest shard (SMEs) whose work is at least overhead / 5%."""
    # Rounded first, so that float noise (12000.000000001) does not add an SME.
    return math.ceil(round(overhead_seconds / (OVERHEAD_SHARE * seconds_per_sme), 6))


def shard_size(runs: list[dict[str, Any]], seconds_per_sme: float) -> dict[str, Any]:
    """The smallest shard for each measure of the per-task overhead; the headline is the mean
    queued-to-done time of a task at the largest N (the latency a shard task pays on average). On
    2 cores the overhead is a throughput limit: raising the parallelism to 16 left the wall time per
    task near 1.9 s and stretched queued-to-done, so the figures hold for this machine's CPU."""
    largest = max(runs, key=lambda row: row["items"])
    smallest = min(runs, key=lambda row: row["items"])
    measures = {
        "mean_queued_to_done_seconds": largest["queued_to_done_seconds"]["mean"],
        "median_queued_to_done_seconds": largest["queued_to_done_seconds"]["median"],
        "slot_seconds_per_task": largest["slot_seconds_per_task"],
    }
    if largest["items"] > smallest["items"]:
        # Each task added to a run adds this much wall time: the DAG run's fixed cost cancels.
        measures["marginal_run_wall_seconds_per_task"] = round(
            (largest["run_wall_seconds"] - smallest["run_wall_seconds"])
            / (largest["items"] - smallest["items"]),
            3,
        )
    return {
        "overhead_share_at_most": OVERHEAD_SHARE,
        "rule": "smallest s with overhead_seconds <= overhead_share_at_most * s * seconds_per_sme",
        "seconds_per_sme": seconds_per_sme,
        "items": largest["items"],
        "by_measure": {
            name: {"overhead_seconds": seconds, "smallest_shard_smes": shard_smes(seconds, seconds_per_sme)}
            for name, seconds in measures.items()
        },
        "overhead_seconds": measures["mean_queued_to_done_seconds"],
        "smallest_shard_smes": shard_smes(measures["mean_queued_to_done_seconds"], seconds_per_sme),
    }


def core_cost() -> dict[str, Any]:
    """Seconds per SME of the core pipeline, from its largest measured size."""
    core = json.loads((RESULTS / "core_pipeline.json").read_text())
    largest = max(core["results"], key=lambda row: row["smes"])
    return {
        "from": "bench/results/core_pipeline.json",
        "measured_at": core.get("measured_at"),
        "smes": largest["smes"],
        "core_seconds": largest["core_seconds"],
        "seconds_per_sme": round(largest["core_seconds"] / largest["smes"], 6),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.airflow_overhead", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--items", type=int, nargs="+", default=[16, 64], help="N per measured run")
    parser.add_argument("--concurrency", type=int, default=2, help="Celery worker slots")
    parser.add_argument(
        "--parallelism", type=int, default=4, help="task instances queued or running at once (as in the test)"
    )
    parser.add_argument("--postgres", default=POSTGRES, help="PostgreSQL server URL (a database is created)")
    parser.add_argument("--out", type=Path, default=RESULTS / "airflow_overhead.json")
    args = parser.parse_args(argv)

    from dossier.airflow_cluster import (
        Processes,
        celery_environment,
        empty_redis_db,
        free_port,
        fresh_database,
        wait_until_serving,
    )
    from dossier.settings import child_process_environment, for_home

    cost = core_cost()
    load_before = round(os.getloadavg()[0], 2)
    runs: list[dict[str, Any]] = []
    warm_up: dict[str, Any] = {}
    with (
        tempfile.TemporaryDirectory(prefix="airflow-overhead-") as scratch,
        fresh_database(args.postgres) as metadata,
        empty_redis_db(REDIS_DB) as broker,
    ):
        settings = for_home(Path(scratch) / "var")
        settings.airflow_home.mkdir(parents=True)
        port = free_port()
        env = celery_environment(
            child_process_environment(settings),
            metadata_url=metadata,
            broker_url=broker,
            port=port,
            concurrency=args.concurrency,
            parallelism=args.parallelism,
            dags_folder=DAGS,
        )
        processes = Processes(env, Path(scratch) / "logs")
        processes.run("db", "migrate")
        try:
            processes.start_all(concurrency=args.concurrency)
            api = wait_until_serving(processes, (DAG_ID,))
            base = processes.base_url
            if not api.patch(f"{base}/api/v2/dags/{DAG_ID}", json={"is_paused": False}, timeout=10).ok:
                raise RuntimeError(f"could not unpause {DAG_ID}")
            # The worker's first tasks pay its imports; measured, reported apart, not counted.
            run, instances = run_once(api, base, 2, processes)
            warm_up = measure(run, instances, 2, args.concurrency)
            for items in args.items:
                run, instances = run_once(api, base, items, processes)
                runs.append(measure(run, instances, items, args.concurrency))
                print(json.dumps(runs[-1]), flush=True)
        finally:
            processes.stop()

    shard = shard_size(runs, cost["seconds_per_sme"])
    result = {
        "benchmark": "airflow_overhead",
        "measured_at": dt.datetime.now(dt.UTC).replace(microsecond=0).isoformat(),
        "machine": {
            "python": platform.python_version(),
            "platform": platform.platform(),
            "cpus": os.cpu_count(),
            "load_average_1m_before_and_after": [load_before, round(os.getloadavg()[0], 2)],
        },
        "note": (
            "Airflow 3 api-server, scheduler, dag-processor and one Celery worker as processes on this "
            "machine (metadata and result backend on PostgreSQL 127.0.0.1:5432, broker Redis "
            "127.0.0.1:6379); one task mapped over N trivial items, times from the task instances' "
            "queued_when/start_date/end_date via the REST API. slot_seconds_per_task = (last end - first "
            "queued) * concurrency / N: the worker time a task costs when its work is nil. A warm-up run "
            "of 2 items is reported apart. Shared 2-core machine (see the load average)."
        ),
        "airflow": _airflow_version(),
        "concurrency": args.concurrency,
        "parallelism": args.parallelism,
        "core_pipeline": cost,
        "warm_up": warm_up,
        "results": runs,
        "shard_size": shard,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.out}")
    return 0


def _airflow_version() -> str:
    from importlib.metadata import version

    return version("apache-airflow")


if __name__ == "__main__":
    sys.exit(main())
