"""``python -m bench.report``: write ``bench/RESULTS.md`` from the JSON files in ``bench/results/``.

One short table per benchmark with its headline numbers, each under the JSON's ``measured_at`` and
the machine it describes (python, platform, cpus, load average when recorded). Every number comes
from the JSON files; a benchmark without a results file is listed as not measured.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"
OUT = HERE / "RESULTS.md"
MISSING = "–"


def value(data: Any, *path: str | int) -> Any:
    """``data[path[0]][path[1]]...``, or None where any step is missing."""
    for step in path:
        try:
            data = data[step]
        except (KeyError, IndexError, TypeError):
            return None
    return data


def cell(number: Any) -> str:
    """A number as the JSON has it (integers with thousands separators); missing as a dash."""
    if number is None:
        return MISSING
    if isinstance(number, bool):
        return "yes" if number else "no"
    if isinstance(number, int):
        return f"{number:,}"
    if isinstance(number, list):
        return " / ".join(cell(item) for item in number)
    return str(number)


def table(header: list[str], rows: list[list[Any]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(cell(item) for item in row) + " |" for row in rows]
    return lines


def machine(data: dict[str, Any]) -> str:
    """The provenance line: measured_at and the machine description as recorded."""
    described = data.get("machine") or {}
    parts = [f"measured_at {data.get('measured_at') or 'not recorded'}"]
    for key in ("python", "platform"):
        if key in described:
            parts.append(f"{key} {described[key]}")
    cpus = described.get("cpus", described.get("cpu_count"))
    if cpus is not None:
        parts.append(f"cpus {cpus}")
    for key, recorded in described.items():
        if key.startswith("load_average"):
            parts.append(f"{key.replace('_', ' ')} {cell(recorded)}")
    return "; ".join(parts)


def _load(row: dict[str, Any]) -> str | None:
    """A core row's 1-minute load average at its start and end (None: not recorded)."""
    load = row.get("load_average_1m")
    return None if not load else f"{cell(load.get('start'))} / {cell(load.get('end'))}"


def core_pipeline(data: dict[str, Any]) -> list[str]:
    results = data.get("results", [])
    rows = [
        [
            row.get("smes"),
            row.get("shards"),
            row.get("shard_workers"),
            row.get("core_seconds"),
            row.get("floor_seconds"),
            row.get("core_over_floor"),
            row.get("core_smes_per_second"),
            row.get("core_peak_rss_mib"),
            _load(row),
            row.get("measured_at"),
        ]
        for row in results
    ]
    header = [
        "SMEs",
        "shards",
        "shard workers",
        "core s",
        "floor s",
        "core / floor",
        "SMEs / s",
        "peak MiB",
        "load 1m (start / end)",
        "measured at",
    ]
    lines = table(header, rows)
    incremental = [
        [
            row.get("smes"),
            value(row, "incremental", "changed_smes"),
            value(row, "incremental", "incremental_run", "seconds"),
            value(row, "incremental", "full_run", "seconds"),
            value(row, "incremental", "incremental_over_full"),
            value(row, "incremental", "incremental_over_full_cpu"),
            value(row, "incremental", "identical_scores"),
            value(row, "incremental", "peak_rss_mib"),
        ]
        for row in results
        if row.get("incremental")
    ]
    if incremental:
        lines += ["", "The next date with 1% of the SMEs changed, run incrementally and in full:", ""]
        lines += table(
            [
                "SMEs",
                "changed SMEs",
                "incremental s",
                "full s",
                "incremental / full",
                "incremental / full (CPU)",
                "identical scores",
                "peak MiB (one process, every shard)",
            ],
            incremental,
        )
    return lines


def lender_feed(data: dict[str, Any]) -> list[str]:
    rows = []
    for result in data.get("results", []):
        for load in result.get("latency_by_load", []):
            rows.append(
                [
                    result.get("delivered_versions"),
                    load.get("workers"),
                    load.get("clients"),
                    load.get("format", "json"),
                    load.get("accept_encoding", "identity"),
                    value(load, "first_read", "page_p50_ms"),
                    value(load, "first_read", "page_p99_ms"),
                    value(load, "repeat", "page_p50_ms"),
                    value(load, "repeat", "page_p99_ms"),
                    value(load, "repeat", "pages_per_second"),
                ]
            )
    header = [
        "delivered versions",
        "workers",
        "clients",
        "page",
        "accept-encoding",
        "first read p50 ms",
        "first read p99 ms",
        "repeat p50 ms",
        "repeat p99 ms",
        "repeat pages / s",
    ]
    return table(header, rows)


def webhooks(data: dict[str, Any]) -> list[str]:
    rows = [
        [
            row.get("scenario"),
            row.get("messages"),
            row.get("sending_threads"),
            row.get("messages_per_second"),
            row.get("attempt_p50_ms"),
            row.get("attempt_p99_ms"),
            row.get("delivered"),
            row.get("failed"),
        ]
        for row in data.get("results", [])
    ]
    header = [
        "scenario",
        "messages",
        "threads",
        "messages / s",
        "attempt p50 ms",
        "attempt p99 ms",
        "delivered",
        "failed",
    ]
    return table(header, rows)


def format_parsing(data: dict[str, Any]) -> list[str]:
    rows = []
    for name, runs in (data.get("results") or {}).items():
        if not isinstance(runs, list):
            continue
        for run in runs:
            rows.append(
                [
                    name,
                    run.get("file_mb"),
                    value(run, "parser", "seconds"),
                    value(run, "floor", "seconds"),
                    run.get("parser_over_floor_seconds"),
                    value(run, "parser", "mb_per_second"),
                    value(run, "parser", "peak_rss_mib"),
                ]
            )
    header = [
        "format",
        "file MB",
        "parser s",
        "floor s",
        "parser / floor",
        "parser MB / s",
        "parser peak MiB",
    ]
    return table(header, rows)


def statement_model(data: dict[str, Any]) -> list[str]:
    held_out = value(data, "held_out", "held_out") or {}
    rows = [
        [
            name,
            "held out",
            value(data, "held_out", "data", "held_out_rows"),
            metrics.get("roc_auc"),
            metrics.get("brier"),
        ]
        for name, metrics in held_out.items()
    ]
    for universe in data.get("sandbox", []):
        for name, metrics in universe.items():
            if isinstance(metrics, dict) and "roc_auc" in metrics:
                rows.append(
                    [
                        name,
                        f"sandbox seed {universe.get('seed')}",
                        universe.get("smes"),
                        metrics["roc_auc"],
                        None,
                    ]
                )
    return table(["model", "data", "rows", "ROC AUC", "Brier"], rows)


def airflow_overhead(data: dict[str, Any]) -> list[str]:
    rows = [
        [
            row.get("items"),
            value(row, "queued_to_done_seconds", "mean"),
            value(row, "queued_to_done_seconds", "median"),
            value(row, "queued_to_done_seconds", "p90"),
            value(row, "running_seconds", "median"),
            row.get("slot_seconds_per_task"),
            row.get("run_wall_seconds"),
            row.get("run_wall_seconds_per_task"),
        ]
        for row in data.get("results", [])
    ]
    header = [
        "mapped tasks N",
        "queued to done s (mean)",
        "queued to done s (median)",
        "queued to done s (p90)",
        "running s (median)",
        "worker slot s / task",
        "run wall s",
        "run wall s / N",
    ]
    lines = table(header, rows)
    shard = data.get("shard_size") or {}
    measures = shard.get("by_measure") or {}
    if measures:
        lines += [
            "",
            f"Headline: at most {cell(shard.get('overhead_share_at_most'))} of a shard's work goes to Airflow "
            f"from {cell(shard.get('smallest_shard_smes'))} SMEs per shard "
            f"({cell(shard.get('overhead_seconds'))} s of overhead per task).",
            "",
        ]
        lines += table(
            [
                "overhead measure",
                "overhead s",
                "core s / SME",
                "overhead share at most",
                "smallest shard (SMEs)",
            ],
            [
                [
                    name.replace("_", " "),
                    measure.get("overhead_seconds"),
                    shard.get("seconds_per_sme"),
                    shard.get("overhead_share_at_most"),
                    measure.get("smallest_shard_smes"),
                ]
                for name, measure in measures.items()
            ],
        )
    return lines


SECTIONS: dict[str, tuple[str, Callable[[dict[str, Any]], list[str]]]] = {
    "core_pipeline": (
        "Core pipeline (validate + evaluate + publish) against the pyarrow floor",
        core_pipeline,
    ),
    "core_pipeline_postgresql": (
        "Core pipeline on PostgreSQL (python -m bench.core_pipeline --warehouse-url URL)",
        core_pipeline,
    ),
    "lender_feed": ("Lender feed latency", lender_feed),
    "webhooks": ("Webhooks throughput", webhooks),
    "format_parsing": ("Format parsing against a bare lxml pass", format_parsing),
    "statement_model": ("Statement model", statement_model),
    "airflow_overhead": ("Airflow per-task overhead on Celery, and the shard size", airflow_overhead),
}


def render(results: Path) -> str:
    lines = [
        "# Benchmark results",
        "",
        "Generated by `python -m bench.report` from `bench/results/*.json` (run `python -m bench` to measure). "
        "Every number below is copied from those files.",
    ]
    for name, (title, build) in SECTIONS.items():
        path = results / f"{name}.json"
        lines += ["", f"## {title}", ""]
        if not path.exists():
            lines.append(f"Not measured yet (no `bench/results/{name}.json`).")
            continue
        try:
            data = json.loads(path.read_text())
        except json.JSONDecodeError as error:
            raise ValueError(f"{path}: not valid JSON ({error})") from None
        lines += [f"`{name}.json`: {machine(data)}.", ""]
        lines += build(data)
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.report", description=__doc__.split("\n")[0])
    parser.add_argument("--results", type=Path, default=RESULTS, help="folder of the results JSON files")
    parser.add_argument("--out", type=Path, default=OUT, help="Markdown file to write")
    args = parser.parse_args(argv)
    try:
        text = render(args.results)
    except (OSError, ValueError) as error:
        print(f"bench.report: {error}", file=sys.stderr)
        return 2
    args.out.write_text(text)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
