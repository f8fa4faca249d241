"""bench/RESULTS.md is built from the results JSON files alone: whole table rows from a fixture folder."""

from __future__ import annotations

import json
from pathlib import Path

from bench.report import main, render

MACHINE = {
    "python": "3.11.7",
    "platform": "Linux-test",
    "cpus": 2,
    "load_average_1m_before_and_after": [1.5, 2.25],
}


def _write(folder: Path, name: str, data: dict) -> None:
    (folder / f"{name}.json").write_text(json.dumps(data))


def _fixture(folder: Path) -> None:
    folder.mkdir()
    _write(
        folder,
        "core_pipeline",
        {
            "measured_at": "2026-12-02T02:04:37+00:00",
            "machine": MACHINE,
            "results": [
                {
                    "smes": 100000,
                    "shards": 8,
                    "core_seconds": 46.1,
                    "floor_seconds": 1.98,
                    "core_over_floor": 23.28,
                    "core_smes_per_second": 2169.2,
                    "core_peak_rss_mib": 1290.5,
                    "measured_at": "2026-12-02T02:04:37+00:00",
                    "shard_workers": 1,
                    "load_average_1m": {"start": 0.5, "end": 1.25},
                    "incremental": {
                        "changed_smes": 1000,
                        "incremental_run": {"seconds": 30.5},
                        "full_run": {"seconds": 45.0},
                        "incremental_over_full": 0.6778,
                        "incremental_over_full_cpu": 0.7,
                        "identical_scores": True,
                        "peak_rss_mib": 1301.2,
                    },
                }
            ],
        },
    )
    _write(
        folder,
        "lender_feed",
        {
            "measured_at": "2026-12-02T02:16:35+00:00",
            "machine": {"python": "3.11.7", "cpus": 2},
            "results": [
                {
                    "delivered_versions": 114997,
                    "latency_by_load": [
                        {
                            "workers": 2,
                            "clients": 50,
                            "accept_encoding": "gzip",
                            "first_read": {"page_p50_ms": 696.4, "page_p99_ms": 1932.1},
                            "repeat": {"page_p50_ms": 131.0, "page_p99_ms": 461.1, "pages_per_second": 236.7},
                        },
                        {
                            "workers": 2,
                            "clients": 50,
                            "format": "parquet",
                            "accept_encoding": "identity",
                            "first_read": {"page_p50_ms": 40.2, "page_p99_ms": 95.0},
                            "repeat": {"page_p50_ms": 12.5, "page_p99_ms": 61.3, "pages_per_second": 870.1},
                        },
                    ],
                }
            ],
        },
    )
    _write(
        folder,
        "webhooks",
        {
            "measured_at": "2026-12-01T19:38:55+00:00",
            "machine": {"python": "3.11.7", "cpus": 2, "load_average_1m_before": 14.8},
            "results": [
                {
                    "scenario": "workers_8",
                    "messages": 2000,
                    "sending_threads": 8,
                    "messages_per_second": 107.2,
                    "attempt_p50_ms": 11,
                    "attempt_p99_ms": 312,
                    "delivered": 2000,
                    "failed": 0,
                }
            ],
        },
    )
    _write(
        folder,
        "format_parsing",
        {
            "measured_at": "2026-12-01T23:39:09+00:00",
            "machine": MACHINE,
            "results": {
                "saft": [
                    {
                        "file_mb": 200.0,
                        "parser": {"seconds": 91.895, "mb_per_second": 2.18, "peak_rss_mib": 133.0},
                        "floor": {"seconds": 60.184},
                        "parser_over_floor_seconds": 1.53,
                    }
                ],
                "saft_memory_growth": {"file_ratio": 10.0},
            },
        },
    )
    _write(
        folder,
        "statement_model",
        {
            "machine": {"python": "3.11.7"},
            "held_out": {
                "data": {"held_out_rows": 1109},
                "held_out": {"statement_model": {"roc_auc": 0.8998, "brier": 0.042}},
            },
            "sandbox": [
                {"seed": 1, "smes": 400, "default_rate": 0.12, "scorecard-1.0.0": {"roc_auc": 0.8696}}
            ],
        },
    )
    _write(
        folder,
        "airflow_overhead",
        {
            "measured_at": "2026-12-02T05:36:34+00:00",
            "machine": MACHINE,
            "results": [
                {
                    "items": 64,
                    "queued_to_done_seconds": {"mean": 1.925, "median": 3.593, "p90": 4.385},
                    "running_seconds": {"median": 0.201},
                    "slot_seconds_per_task": 4.316,
                    "run_wall_seconds": 139.973,
                    "run_wall_seconds_per_task": 2.187,
                }
            ],
            "shard_size": {
                "seconds_per_sme": 0.005495,
                "overhead_share_at_most": 0.05,
                "by_measure": {
                    "mean_queued_to_done_seconds": {"overhead_seconds": 1.925, "smallest_shard_smes": 7006}
                },
                "overhead_seconds": 1.925,
                "smallest_shard_smes": 7006,
            },
        },
    )


def _rows(text: str) -> list[str]:
    return [line for line in text.splitlines() if line.startswith(("| ", "`", "Headline"))]


def test_every_table_row_and_provenance_line_comes_from_the_json(tmp_path: Path) -> None:
    _fixture(tmp_path / "results")
    assert _rows(render(tmp_path / "results")) == [
        "`core_pipeline.json`: measured_at 2026-12-02T02:04:37+00:00; python 3.11.7; platform Linux-test; "
        "cpus 2; load average 1m before and after 1.5 / 2.25.",
        "| SMEs | shards | shard workers | core s | floor s | core / floor | SMEs / s | peak MiB "
        "| load 1m (start / end) | measured at |",
        "| 100,000 | 8 | 1 | 46.1 | 1.98 | 23.28 | 2169.2 | 1290.5 | 0.5 / 1.25 | 2026-12-02T02:04:37+00:00 |",
        "| SMEs | changed SMEs | incremental s | full s | incremental / full | incremental / full (CPU) "
        "| identical scores | peak MiB (one process, every shard) |",
        "| 100,000 | 1,000 | 30.5 | 45.0 | 0.6778 | 0.7 | yes | 1301.2 |",
        "`lender_feed.json`: measured_at 2026-12-02T02:16:35+00:00; python 3.11.7; cpus 2.",
        "| delivered versions | workers | clients | page | accept-encoding | first read p50 ms "
        "| first read p99 ms | repeat p50 ms | repeat p99 ms | repeat pages / s |",
        "| 114,997 | 2 | 50 | json | gzip | 696.4 | 1932.1 | 131.0 | 461.1 | 236.7 |",
        "| 114,997 | 2 | 50 | parquet | identity | 40.2 | 95.0 | 12.5 | 61.3 | 870.1 |",
        "`webhooks.json`: measured_at 2026-12-01T19:38:55+00:00; python 3.11.7; cpus 2; load average 1m before 14.8.",
        "| scenario | messages | threads | messages / s | attempt p50 ms | attempt p99 ms | delivered | failed |",
        "| workers_8 | 2,000 | 8 | 107.2 | 11 | 312 | 2,000 | 0 |",
        "`format_parsing.json`: measured_at 2026-12-01T23:39:09+00:00; python 3.11.7; platform Linux-test; "
        "cpus 2; load average 1m before and after 1.5 / 2.25.",
        "| format | file MB | parser s | floor s | parser / floor | parser MB / s | parser peak MiB |",
        "| saft | 200.0 | 91.895 | 60.184 | 1.53 | 2.18 | 133.0 |",
        "`statement_model.json`: measured_at not recorded; python 3.11.7.",
        "| model | data | rows | ROC AUC | Brier |",
        "| statement_model | held out | 1,109 | 0.8998 | 0.042 |",
        "| scorecard-1.0.0 | sandbox seed 1 | 400 | 0.8696 | – |",
        "`airflow_overhead.json`: measured_at 2026-12-02T05:36:34+00:00; python 3.11.7; platform Linux-test; "
        "cpus 2; load average 1m before and after 1.5 / 2.25.",
        "| mapped tasks N | queued to done s (mean) | queued to done s (median) | queued to done s (p90) | running s (median) "
        "| worker slot s / task | run wall s | run wall s / N |",
        "| 64 | 1.925 | 3.593 | 4.385 | 0.201 | 4.316 | 139.973 | 2.187 |",
        "Headline: at most 0.05 of a shard's work goes to Airflow from 7,006 SMEs per shard "
        "(1.925 s of overhead per task).",
        "| overhead measure | overhead s | core s / SME | overhead share at most | smallest shard (SMEs) |",
        "| mean queued to done seconds | 1.925 | 0.005495 | 0.05 | 7,006 |",
    ]


def test_a_benchmark_without_results_is_listed_as_not_measured(tmp_path: Path) -> None:
    results = tmp_path / "results"
    results.mkdir()
    _write(results, "webhooks", {"measured_at": "2026-12-01T19:38:55+00:00", "results": []})
    text = render(results)
    assert "Not measured yet (no `bench/results/airflow_overhead.json`)." in text.splitlines()
    assert "Not measured yet (no `bench/results/webhooks.json`)." not in text
    assert _rows(text) == [
        "`webhooks.json`: measured_at 2026-12-01T19:38:55+00:00.",
        "| scenario | messages | threads | messages / s | attempt p50 ms | attempt p99 ms | delivered | failed |",
    ]


def test_main_writes_the_file_and_a_broken_json_is_one_line_with_status_2(tmp_path: Path, capsys) -> None:
    _fixture(tmp_path / "results")
    out = tmp_path / "RESULTS.md"
    assert main(["--results", str(tmp_path / "results"), "--out", str(out)]) == 0
    assert out.read_text() == render(tmp_path / "results")
    capsys.readouterr()
    (tmp_path / "results" / "webhooks.json").write_text("{not json")
    assert main(["--results", str(tmp_path / "results"), "--out", str(tmp_path / "other.md")]) == 2
    error = capsys.readouterr().err
    assert error.startswith(f"bench.report: {tmp_path / 'results' / 'webhooks.json'}: not valid JSON")
    assert error.count("\n") == 1
    assert not (tmp_path / "other.md").exists()
