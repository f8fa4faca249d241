"""Core pipeline benchmark: validate, evaluate and publish from landed canonical data.

For each size the benchmark prepares a home folder (canonical tables written straight from the
sandbox universe, SMEs and consents registered in a SQLite warehouse), then measures in separate
processes, so that each peak resident set size is its own:

* ``core``: the pipeline's own steps (``dossier.pipeline.validate_and_evaluate`` for every shard,
  reading its files once, then ``publish``, then GX's once-per-date confirmation of the check plan), exactly what the
  Airflow tasks run;
* ``floor``: the I/O floor - reading the same canonical files and writing the same dossier rows with
  pyarrow alone.

Results (SMEs per second, seconds, peak memory, core/floor ratio) are written to
``bench/results/core_pipeline.json``. Run: ``python -m bench`` or ``python -m bench.core_pipeline --sizes 10000``.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).resolve().parent / "results"
AS_OF = dt.date(2026, 11, 1)


WAREHOUSE_URL_FILE = "warehouse_url.txt"
"""Written into a home by ``--warehouse-url``: the warehouse every step in that home uses (else the
home's own SQLite file), so the steps' processes find it without being told."""


def _settings(home: Path, shard_count: int) -> Any:
    from dossier.settings import for_home

    changes: dict[str, Any] = {"shard_count": shard_count, "sandbox_fault_rate": 0.0}
    chosen = home / WAREHOUSE_URL_FILE
    if chosen.exists():
        changes["warehouse_url"] = chosen.read_text().strip()
    return for_home(home, **changes)


def prepare(home: Path, size: int, shard_count: int) -> dict[str, Any]:
    """Land canonical tables for ``size`` SMEs and register them with consents (not timed)."""
    import pyarrow as pa
    import pyarrow.compute as pc

    from connectors.sandbox.seed import seed_warehouse
    from connectors.sandbox.universe import Universe
    from dossier.settings import override
    from warehouse.canonical import TABLES
    from warehouse.canonical_files import write_canonical
    from warehouse.db import get_engine, session_scope
    from warehouse.migrate import upgrade
    from warehouse.shards import shard_column
    from warehouse.storage import Store

    marker = home / "prepared.json"
    if marker.exists():
        return json.loads(marker.read_text())
    home.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    with override(_settings(home, shard_count)):
        upgrade(get_engine())
        universe = Universe(20261125, size, AS_OF)
        with session_scope() as session:
            seed_warehouse(session, universe, now=dt.datetime.combine(AS_OF, dt.time(), tzinfo=dt.UTC))
        store = Store.from_settings()
        rows = dict.fromkeys(TABLES, 0)
        ids = universe.profiles()["sme_id"]
        shards = shard_column(ids, shard_count)
        for shard in range(shard_count):  # one shard's SMEs at a time, so memory stays flat in the size
            for name, table in universe.truth_arrow(ids[shards == shard]).items():
                rows[name] += table.num_rows
                column = table.schema.get_field_index("raw_sha256")
                digest = table.column(column)
                filled = pc.if_else(pc.equal(digest, ""), pa.scalar("0" * 64, digest.type), digest)
                table = table.set_column(column, table.schema.field(column), filled)
                write_canonical(store, name, AS_OF, shard, table)
    info = {
        "size": size,
        "shard_count": shard_count,
        "rows": rows,
        "prepare_seconds": time.perf_counter() - started,
    }
    marker.write_text(json.dumps(info))
    return info


def run_core(home: Path, shard_count: int) -> dict[str, Any]:
    """The pipeline's own validate + evaluate (every shard), publish and GX's confirmation, timed in this process."""
    from dossier import pipeline
    from dossier.settings import override
    from expectations.runner import confirm_stored

    with override(_settings(home, shard_count)):
        timings: dict[str, float] = {"validate": 0.0, "evaluate": 0.0}
        started = time.perf_counter()
        for shard in range(shard_count):  # one task per shard: its files read once
            done = pipeline.validate_and_evaluate(shard, AS_OF)
            timings["validate"] += done["seconds"]["validate"]
            timings["evaluate"] += done["seconds"]["evaluate"]
        t = time.perf_counter()
        summary = pipeline.publish(AS_OF)
        timings["publish"] = time.perf_counter() - t
        t = time.perf_counter()
        confirm_stored(AS_OF)  # GX confirms the plan once per table for the date (the Data Docs step)
        timings["confirm"] = time.perf_counter() - t
        total = time.perf_counter() - started
    return {"seconds": total, "steps": timings, "published": summary.get("rows"), **_peak()}


NEXT = AS_OF + dt.timedelta(days=1)
"""The date of the incremental run: the day after :data:`AS_OF`, with 1% of the SMEs changed."""


def land_next_date(
    home: Path, shard_count: int, changed_share: float, *, start: dt.date = AS_OF, end: dt.date = NEXT
) -> list[str]:
    """Land every canonical file of ``start`` again for ``end``, with the monthly books of
    ``changed_share`` of the SMEs changed (revenue and cost of sales up by 1% of the revenue in every
    month, so the books still add up); returns their ids. Files are written as ingest writes them
    (:func:`warehouse.canonical_files.write_canonical`: with their digest sidecars)."""
    import numpy as np
    import pandas as pd

    from dossier.settings import override
    from warehouse.canonical import TABLES
    from warehouse.canonical_files import write_canonical
    from warehouse.storage import Store

    with override(_settings(home, shard_count)):
        store = Store.from_settings()
        ids = sorted(
            {
                sme
                for shard in range(shard_count)
                for sme in store.read_table(
                    store.layout.canonical("monthly_financials", start.isoformat(), shard), columns=["sme_id"]
                )
                .column("sme_id")
                .unique()
                .to_pylist()
            }
        )
        picked = np.random.default_rng(20261202).choice(
            len(ids), max(1, round(len(ids) * changed_share)), replace=False
        )
        changed = sorted(ids[i] for i in picked)
        for shard in range(shard_count):
            for name, table in TABLES.items():
                source = store.layout.canonical(name, start.isoformat(), shard)
                if not store.exists(source):
                    continue
                frame = store.read_table(source).to_pandas()
                if name == "monthly_financials":
                    rows = frame["sme_id"].isin(changed)
                    raised = frame.loc[rows, "revenue"] * 0.01
                    frame.loc[rows, "revenue"] += raised
                    frame.loc[rows, "cost_of_sales"] += raised  # the books still add up
                write_canonical(store, name, end, shard, table.to_arrow(frame))
        del pd
    return changed


def _timed_run(shard_count: int, as_of: dt.date, *, full: bool) -> dict[str, Any]:
    from dossier import pipeline
    from expectations.runner import confirm_stored

    timings: dict[str, float] = {"validate": 0.0, "evaluate": 0.0}
    counts = {"validated": 0, "validation_carried": 0, "scored": 0, "scores_carried": 0}
    started = time.perf_counter()
    for shard in range(shard_count):  # one task per shard: its files read once
        done = pipeline.validate_and_evaluate(shard, as_of, full=full)
        validated, evaluated = done["validate"], done["evaluate"]
        timings["validate"] += done["seconds"]["validate"]
        timings["evaluate"] += done["seconds"]["evaluate"]
        counts["validated"] += validated["validated"]
        counts["validation_carried"] += validated["carried"]
        counts["scored"] += evaluated["scored"]
        counts["scores_carried"] += evaluated["carried"]
    t = time.perf_counter()
    summary = pipeline.publish(as_of)
    timings["publish"] = time.perf_counter() - t
    t = time.perf_counter()
    confirm_stored(as_of)  # GX confirms the re-validated SMEs' failing rows once per table
    timings["confirm"] = time.perf_counter() - t
    return {
        "seconds": time.perf_counter() - started,
        "steps": timings,
        "published": summary.get("rows"),
        "new_or_changed": summary.get("new_or_changed"),
        "kept": summary.get("kept"),
        **counts,
    }


def _staged_scores(as_of: dt.date) -> Any:
    import pyarrow as pa

    from dossier import pipeline
    from warehouse.storage import Store

    store = Store.from_settings()
    tables = [pa.Table.from_pandas(f, preserve_index=False) for f in pipeline.staged_scores(store, as_of)]
    # a shard whose count column is all missing stages it as double, another as int32
    combined = pa.concat_tables(tables, promote_options="permissive")
    return combined.sort_by([("sme_id", "ascending"), ("scope", "ascending")])


def run_next(home: Path, shard_count: int, changed_share: float, *, mode: str) -> dict[str, Any]:
    """After ``core`` on :data:`AS_OF`, the next date in this (cold) process: ``mode`` ``incremental``
    lands it with ``changed_share`` of the SMEs changed and runs it incrementally, keeping its
    staged scores; ``full`` runs the same date in full and tells whether its staged scores equal the
    incremental run's. Both compare with :data:`AS_OF` (the last date before :data:`NEXT`)."""
    import pyarrow.parquet as pq

    from dossier.settings import override

    kept = home / "next-incremental-scores.parquet"
    changed = land_next_date(home, shard_count, changed_share) if mode == "incremental" else []
    with override(_settings(home, shard_count)):
        cpu = _cpu()
        run = _timed_run(shard_count, NEXT, full=mode == "full")
        run["cpu_seconds"] = _cpu() - cpu
        run_peak = _peak()  # the run's: the comparison below holds every shard's scores at once
        scores = _staged_scores(NEXT)
    result: dict[str, Any] = {"run": run, **run_peak, "process_peak_rss_mib": _peak()["peak_rss_mib"]}
    if mode == "incremental":
        pq.write_table(scores, kept)
        result["changed_smes"] = len(changed)
    else:
        result["identical_scores"] = pq.read_table(kept).equals(scores)
    return result


def _cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def run_floor(home: Path, shard_count: int) -> dict[str, Any]:
    """Read the same canonical files and write the same dossier rows with pyarrow alone."""
    import pyarrow.parquet as pq

    from dossier.settings import override
    from warehouse.canonical import TABLES
    from warehouse.dossier_schema import SCHEMA_VERSION
    from warehouse.storage import Store

    with override(_settings(home, shard_count)):
        store = Store.from_settings()
        partition = Path(store.layout.dossier_partition(SCHEMA_VERSION, AS_OF.isoformat()))
        published = sorted(partition.glob("*.parquet"))
        dossiers = [pq.read_table(p) for p in published]
        out = home / "floor"
        out.mkdir(exist_ok=True)
        started = time.perf_counter()
        rows = 0
        for shard in range(shard_count):
            for name in TABLES:
                rows += pq.read_table(store.layout.canonical(name, AS_OF.isoformat(), shard)).num_rows
        for index, table in enumerate(dossiers):
            pq.write_table(table, out / f"part-{index:04d}.parquet")
        total = time.perf_counter() - started
    return {
        "seconds": total,
        "canonical_rows_read": rows,
        "dossier_rows_written": sum(t.num_rows for t in dossiers),
        **_peak(),
    }


def _peak() -> dict[str, float]:
    return {"peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}


def _step_file(home: Path, step: str, mode: str | None) -> Path:
    return home / "steps" / f"{step}{'-' + mode if mode else ''}.json"


def _keep_step(home: Path, step: str, mode: str | None, result: dict[str, Any]) -> None:
    """Keep a finished step's result in the home folder, so ``--resume`` can reuse it."""
    target = _step_file(home, step, mode)
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(json.dumps(result, default=str))


def _in_subprocess(
    step: str, home: Path, shard_count: int, *extra: str, resume: bool = False
) -> dict[str, Any]:
    """Run ``step`` in its own process and return its result; with ``resume``, the kept result of an
    earlier run of the same home when there is one."""
    mode = extra[extra.index("--mode") + 1] if "--mode" in extra else None
    kept = _step_file(home, step, mode)
    if resume and kept.exists():
        print(f"[bench] reusing {kept}", flush=True)
        return json.loads(kept.read_text())
    output = subprocess.run(
        [
            sys.executable,
            "-m",
            "bench.core_pipeline",
            "--step",
            step,
            "--home",
            str(home),
            "--shards",
            str(shard_count),
            *extra,
        ],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    return json.loads(output.strip().splitlines()[-1])


def home_of(work: Path, size: int) -> Path:
    """The home folder a size is prepared into and measured in, under ``work``."""
    return work / f"smes-{size}"


def benchmark(
    sizes: list[int],
    work: Path,
    shard_count: int,
    changed_share: float | None = None,
    *,
    resume: bool = False,
) -> dict[str, Any]:
    results = []
    for size in sizes:
        home = home_of(work, size)
        print(f"[bench] preparing {size:,} SMEs in {home} ...", flush=True)
        prepared = _in_subprocess_prepare(home, size, shard_count)
        load_at_start = round(os.getloadavg()[0], 2)  # how busy the shared machine was
        print(f"[bench] core pipeline on {size:,} SMEs ...", flush=True)
        core = _in_subprocess("core", home, shard_count, resume=resume)
        print(f"[bench] pyarrow I/O floor on {size:,} SMEs ...", flush=True)
        floor = _in_subprocess("floor", home, shard_count, resume=resume)
        result = {
            "smes": size,
            "measured_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
            "shards": shard_count,
            "shard_workers": 1,
            "canonical_rows": prepared["rows"],
            "core_seconds": round(core["seconds"], 3),
            "core_steps_seconds": {k: round(v, 3) for k, v in core["steps"].items()},
            "core_smes_per_second": round(size / core["seconds"], 1),
            "core_peak_rss_mib": round(core["peak_rss_mib"], 1),
            "dossiers_published": core["published"],
            "floor_seconds": round(floor["seconds"], 3),
            "floor_peak_rss_mib": round(floor["peak_rss_mib"], 1),
            "floor_dossier_rows_written": floor["dossier_rows_written"],
            "core_over_floor": round(core["seconds"] / floor["seconds"], 2),
            "targets": {"core_over_floor_at_most": 3.0, "peak_rss_mib_below_at_100k": 2048},
        }
        if changed_share:
            print(
                f"[bench] incremental run with {changed_share:.0%} of {size:,} SMEs changed ...", flush=True
            )
            runs = {
                mode: _in_subprocess(
                    "next", home, shard_count, "--changed", str(changed_share), "--mode", mode, resume=resume
                )
                for mode in ("incremental", "full")
            }
            result["incremental"] = _incremental_result(runs, changed_share)
        result["load_average_1m"] = {"start": load_at_start, "end": round(os.getloadavg()[0], 2)}
        print(json.dumps(result, indent=2), flush=True)
        results.append(result)
    return {
        "benchmark": "core_pipeline",
        "measured_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "machine": {"python": platform.python_version(), "platform": platform.platform(), "cpus": _cpus()},
        "note": "validate + evaluate + publish from landed canonical data vs pyarrow-only read+write of the same data; "
        "ratios are measured in one run on a shared machine. incremental: the next date with 1% of the SMEs' books "
        "changed, run incrementally and in full, each in its own process (imports included, as in a task), "
        "each with GX's once-per-date confirmation of the check plan.",
        "results": results,
    }


def _incremental_result(runs: dict[str, dict[str, Any]], changed_share: float) -> dict[str, Any]:
    """The incremental figures: the next date with ``changed_share`` of the SMEs changed, run
    incrementally and then in full (each in its own process), and the ratios of the two."""

    def rounded(run: dict[str, Any]) -> dict[str, Any]:
        return {
            **run,
            "seconds": round(run["seconds"], 3),
            "cpu_seconds": round(run["cpu_seconds"], 3),
            "steps": {k: round(v, 3) for k, v in run["steps"].items()},
        }

    incremental, full = rounded(runs["incremental"]["run"]), rounded(runs["full"]["run"])
    return {
        "as_of": NEXT.isoformat(),
        "changed_share": changed_share,
        "changed_smes": runs["incremental"]["changed_smes"],
        "incremental_run": incremental,
        "full_run": full,
        "incremental_over_full": round(incremental["seconds"] / full["seconds"], 4),
        "incremental_over_full_cpu": round(incremental["cpu_seconds"] / full["cpu_seconds"], 4),
        "identical_scores": runs["full"]["identical_scores"],
        "peak_rss_mib": round(max(r["peak_rss_mib"] for r in runs.values()), 1),
        "target_incremental_over_full_at_most": 0.05,
    }


def _in_subprocess_prepare(home: Path, size: int, shard_count: int) -> dict[str, Any]:
    output = subprocess.run(
        [
            sys.executable,
            "-m",
            "bench.core_pipeline",
            "--step",
            "prepare",
            "--home",
            str(home),
            "--shards",
            str(shard_count),
            "--size",
            str(size),
        ],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    return json.loads(output.strip().splitlines()[-1])


def _merged(target: Path, fresh: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """``fresh`` results beside the earlier ones in ``target`` for other sizes (a size measured again
    replaces its earlier result), ordered by size."""
    earlier = json.loads(target.read_text())["results"] if target.exists() else []
    sizes = {r["smes"] for r in fresh}
    return sorted([r for r in earlier if r["smes"] not in sizes] + fresh, key=lambda r: r["smes"])


def _cpus() -> int:
    import os

    return len(os.sched_getaffinity(0))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--sizes", default="10000,100000", help="comma-separated SME counts")
    parser.add_argument("--shards", type=int, default=8, help="shards (mapped tasks) per step")
    parser.add_argument("--work", default="var/bench", help="scratch folder (prepared data is reused)")
    parser.add_argument(
        "--changed",
        type=float,
        default=0.01,
        help="share of SMEs changed for the incremental run on the next date (0: no incremental run)",
    )
    parser.add_argument(
        "--resume",
        action="store_true",
        help="reuse the results of steps that finished in an earlier run of the same --work folder",
    )
    parser.add_argument(
        "--warehouse-url",
        help="the warehouse of the run (an empty PostgreSQL database or schema, e.g. "
        "postgresql+psycopg://postgres@127.0.0.1:5432/test?options=-csearch_path%%3Dbench; one size "
        "per database, as each size is prepared into it); results go to "
        "bench/results/core_pipeline_postgresql.json (default: each home's own SQLite file, results "
        "in core_pipeline.json)",
    )
    parser.add_argument("--mode", choices=["incremental", "full"], help=argparse.SUPPRESS)
    parser.add_argument("--step", choices=["prepare", "core", "floor", "next"], help=argparse.SUPPRESS)
    parser.add_argument("--home", help=argparse.SUPPRESS)
    parser.add_argument("--size", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.step:
        home = Path(args.home)
        step = {
            "prepare": lambda: prepare(home, args.size, args.shards),
            "core": lambda: run_core(home, args.shards),
            "floor": lambda: run_floor(home, args.shards),
            "next": lambda: run_next(home, args.shards, args.changed, mode=args.mode),
        }[args.step]
        result = step()
        _keep_step(home, args.step, args.mode, result)
        print(json.dumps(result, default=str))
        return 0
    sizes = [int(s) for s in args.sizes.split(",")]
    work = Path(args.work).absolute()
    if args.warehouse_url:
        for size in sizes:
            home = home_of(work, size)
            home.mkdir(parents=True, exist_ok=True)
            (home / WAREHOUSE_URL_FILE).write_text(args.warehouse_url)
    report = benchmark(sizes, work, args.shards, args.changed or None, resume=args.resume)
    RESULTS.mkdir(parents=True, exist_ok=True)
    target = RESULTS / ("core_pipeline_postgresql.json" if args.warehouse_url else "core_pipeline.json")
    report["warehouse"] = "postgresql" if args.warehouse_url else "sqlite"
    report["results"] = _merged(target, report["results"])
    target.write_text(json.dumps(report, indent=2) + "\n")
    print(f"[bench] results written to {target}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
