"""The Airflow overhead benchmark's arithmetic, on task instances as the REST API returns them."""

from __future__ import annotations

import pytest

from bench.airflow_overhead import measure, shard_size, shard_smes


def _ti(index: int, queued: str, start: str, end: str, task_id: str = "touch") -> dict:
    day = "2026-12-02T05:00:"
    return {
        "task_id": task_id,
        "map_index": index,
        "state": "success",
        "queued_when": f"{day}{queued}+00:00",
        "start_date": f"{day}{start}+00:00",
        "end_date": f"{day}{end}+00:00",
    }


RUN = {
    "dag_run_id": "manual__1",
    "start_date": "2026-12-02T04:59:58+00:00",
    "end_date": "2026-12-02T05:00:12+00:00",
}
INSTANCES = [
    _ti(-1, "00.000", "00.500", "01.000", task_id="items"),
    _ti(0, "02.000", "03.000", "04.000"),
    _ti(1, "02.000", "05.000", "06.000"),
    _ti(2, "04.000", "07.000", "08.000"),
    _ti(3, "06.000", "09.000", "10.000"),
]


def test_measure_reads_queued_start_and_end_of_the_mapped_instances_only() -> None:
    assert measure(RUN, INSTANCES, 4, concurrency=2) == {
        "items": 4,
        "dag_run_id": "manual__1",
        "queued_to_done_seconds": {"mean": 3.5, "median": 4.0, "p90": 4.0, "max": 4.0},
        "queued_to_start_seconds": {"mean": 2.5, "median": 3.0, "p90": 3.0, "max": 3.0},
        "running_seconds": {"mean": 1.0, "median": 1.0, "p90": 1.0, "max": 1.0},
        "mapped_phase_seconds": 8.0,
        "slot_seconds_per_task": 4.0,
        "mean_tasks_in_flight": 1.75,
        "run_wall_seconds": 14.0,
        "run_wall_seconds_per_task": 3.5,
    }


def test_measure_refuses_a_run_with_missing_or_failed_mapped_instances() -> None:
    with pytest.raises(RuntimeError, match="expected 5 successful touch instances, got 4"):
        measure(RUN, INSTANCES, 5, concurrency=2)
    failed = [*INSTANCES[:-1], {**INSTANCES[-1], "state": "failed"}]
    with pytest.raises(RuntimeError, match="expected 4 successful"):
        measure(RUN, failed, 4, concurrency=2)


def test_the_smallest_shard_keeps_overhead_at_most_five_percent_of_its_work() -> None:
    # 3 s of overhead at 5 ms per SME: 3 / (0.05 * 0.005) = 12,000 SMEs exactly.
    assert shard_smes(3.0, 0.005) == 12000
    assert shard_smes(3.0001, 0.005) == 12001
    small = {
        "items": 16,
        "queued_to_done_seconds": {"mean": 2.5, "median": 2.0},
        "slot_seconds_per_task": 3.0,
        "run_wall_seconds": 30.0,
    }
    large = {
        "items": 64,
        "queued_to_done_seconds": {"mean": 3.5, "median": 3.0},
        "slot_seconds_per_task": 4.0,
        "run_wall_seconds": 126.0,
    }
    assert shard_size([small, large], 0.005) == {
        "overhead_share_at_most": 0.05,
        "rule": "smallest s with overhead_seconds <= overhead_share_at_most * s * seconds_per_sme",
        "seconds_per_sme": 0.005,
        "items": 64,
        "by_measure": {
            "mean_queued_to_done_seconds": {"overhead_seconds": 3.5, "smallest_shard_smes": 14000},
            "median_queued_to_done_seconds": {"overhead_seconds": 3.0, "smallest_shard_smes": 12000},
            "slot_seconds_per_task": {"overhead_seconds": 4.0, "smallest_shard_smes": 16000},
            "marginal_run_wall_seconds_per_task": {"overhead_seconds": 2.0, "smallest_shard_smes": 8000},
        },
        "overhead_seconds": 3.5,
        "smallest_shard_smes": 14000,
    }
